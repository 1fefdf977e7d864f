"""A mapped file into its output: read into a few reused buffers, written, hashed.

When the guest side says where a file's bytes lie in the image (a MAP,
`pvgrub_py.disk.extents`), the parent reads them itself.  Today's
`copy_extents` reads every 1 MiB chunk into a fresh ``bytes``; with the
hashers in other threads dropping the last reference, the allocator hands
those pages back and faults new ones in for the next chunks (~3,500 page
faults and ~10 ms of CPU for the bench's 74 MB, as much as the threads
save on a loaded two-core host).  Here each chunk is read
(``preadv``) into one of a `BufferRing`'s few buffers, written to the
output, and the same buffer is then fed to every hasher; it is lent to no
other chunk until every hasher is done with it (``then``, `Fanout`).  So the
bytes hashed are the bytes written, in order, as before: the buffer is the
parent's own memory and nothing writes to it in between.  A hole (an
extent at None) is written and hashed as zeros.

Only for a regular output file (``Feed.copy_extents`` decides); everything
else (``--not-really``, a FIFO, ``DATA`` frames) takes the old path.

Measured on the bench disk against the copy into a fresh ``bytes`` per
chunk: sendfile/copy_file_range into the output and hashing an mmap of
the output's pages costs *more* CPU when the output is on tmpfs (as
libxl's /var/run/xen is): copy_file_range refuses across filesystems,
and reading 74 MB of 4 KiB tmpfs pages back costs ~11 ms, more than the
``pread`` it saves (~4.5 ms).
"""

from __future__ import annotations

import functools
import os
import queue
from collections.abc import Sequence

from pvgrub_py.bootloader.hashing import Fanout
from pvgrub_py.disk.errors import disk_error
from pvgrub_py.errors import InputError

#: Bytes per chunk: as `disk.extents.CHUNK` and pygrub's FS_READ_MAX.
#: Measured: 256 KiB costs more per chunk, 2 MiB and up fall out of the
#: per-core L2 cache between the write and the hashers.
CHUNK = 1 << 20
#: Buffers at most (CHUNK bytes each, allocated as first needed).
SLOTS = 8

Extent = tuple[int | None, int]


class BufferRing:
    """At most *slots* buffers of *size* bytes, each lent to one chunk at a time."""

    def __init__(self, slots: int = SLOTS, size: int = CHUNK) -> None:
        self.size = size
        self._slots = slots
        self._buffers: list[memoryview] = []
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()

    def take(self) -> int:
        """A free buffer's number; waits for one if all are lent."""
        if self._free.empty() and len(self._buffers) < self._slots:
            self._buffers.append(memoryview(bytearray(self.size)))
            return len(self._buffers) - 1
        return self._free.get()

    def give(self, slot: int) -> None:
        self._free.put(slot)

    def buffer(self, slot: int) -> memoryview:
        return self._buffers[slot]


def copy_through(
    src: int,
    extents: Sequence[Extent],
    out: int,
    fanout: Fanout,
    ring: BufferRing,
    *,
    source: str,
    label: str,
) -> int:
    """Read *extents* of the image *src*, write them to *out*, feed them to *fanout*.

    Returns their total.  A short read (the image shrank) names *source*,
    as `copy_extents` does; a failed write names *label*, as
    ``extract.WriteSink`` does.
    """
    zeros = b""
    done = 0
    for where, n in extents:
        at = 0
        while at < n:
            k = min(ring.size, n - at)
            slot = -1
            if where is None:
                if len(zeros) != k:
                    zeros = bytes(k)
                chunk: memoryview | bytes = zeros
                _write(out, memoryview(zeros), label)
            else:
                slot = ring.take()
                try:
                    chunk = _read(src, ring.buffer(slot)[:k], where + at, source)
                    _write(out, chunk, label)
                except BaseException:
                    ring.give(slot)  # no hasher has seen it
                    raise
            if slot < 0:
                fanout(chunk)
            else:
                fanout(chunk, then=functools.partial(ring.give, slot))
            at += k
            done += k
    return done


def _read(src: int, into: memoryview, offset: int, source: str) -> memoryview:
    got = os.preadv(src, [into], offset)
    if got != len(into):
        raise disk_error(
            source, f"short read: {got} of {len(into)} bytes at image byte {offset} "
            "(the image changed?)",
        )  # fmt: skip
    return into


def _write(out: int, chunk: memoryview, label: str) -> None:
    try:
        view = chunk
        while view:
            view = view[os.write(out, view) :]
    except OSError as e:
        raise InputError(label, f"cannot write the extracted copy: {e.strerror}") from None
