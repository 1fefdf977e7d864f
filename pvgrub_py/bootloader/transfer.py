"""A mapped file into its output: read into a few reused buffers, written, hashed.

When the guest side says where a file's bytes lie in the image (a MAP,
`pvgrub_py.disk.extents`), the parent reads them itself.  `copy_extents`
reads every 1 MiB chunk into a fresh ``bytes``: every chunk in flight is
memory the process has not touched yet, and a fresh process pays a page
fault per 4 KiB of it (3,400-8,500 faults, ~10 ms of the ~116 ms of CPU
the bench's 74 MB cost).  Here each chunk is read (``preadv``) into one
of a `BufferRing`'s few buffers (one mapping in transparent huge pages:
~25 faults in all), written to the output, and the same buffer is then
fed to every hasher; it is lent to no other chunk until every hasher is
done with it (``then``, `Fanout`).  So the bytes hashed are the bytes
written, in order, as before: the buffer is the parent's own memory and
nothing writes to it in between.  A hole (an extent at None) is written
and hashed as zeros.

Only into a regular output file (``extract.Feed.copy_extents`` decides);
everything else (``--not-really``, a FIFO, ``DATA`` frames) takes the old
path.

Measured and not done: copying in the kernel (``copy_file_range``, or
``sendfile`` across filesystems, where copy_file_range answers EXDEV) and
hashing a read-only mmap of the output's own pages costs *more* CPU when
the output is on tmpfs, as libxl's /var/run/xen is: reading 74 MB of
4 KiB tmpfs pages back (~11 ms) costs more than the ``pread`` into user
memory it saves (~4.5 ms); the in-kernel copy itself costs what
``write`` does (~22 ms for 60 MB, mostly allocating the tmpfs pages).
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import queue
from collections.abc import Callable, Sequence

from pvgrub_py.bootloader.hashing import Fanout
from pvgrub_py.disk.errors import disk_error

#: Bytes per chunk: as `disk.extents.CHUNK` and pygrub's FS_READ_MAX.
#: Measured (warm process): 256 KiB costs more per chunk, 2 MiB and 4 MiB
#: more CPU (the chunk falls out of the per-core L2 between the write and
#: the hashers).
CHUNK = 1 << 20
#: Chunks in flight per output: the reader runs up to this far ahead of
#: the slowest hasher (as far as `hashing.DEPTH` lets it), which absorbs
#: the scheduler's time slices: three busy threads share two cores.
#: Measured, series of 30 alternated --runas runs into tmpfs: 4, 8 and 16
#: (with DEPTH 16) cost the same CPU; in wall time 8 was as fast as or a
#: little faster than 4 and 16 (within the noise of a shared host); peak
#: RSS 27.6, 35.7 and 45.6 MiB.
SLOTS = 8

Extent = tuple[int | None, int]


class BufferRing:
    """At most *slots* buffers of *size* bytes, each lent to one chunk at a time.

    The buffers are one private anonymous mapping, asked for in
    transparent huge pages (``MADV_HUGEPAGE``, honoured in the THP modes
    ``always`` and ``madvise``): a fresh process faults in 8 MiB of 4 KiB
    pages with 2,048 page faults (measured ~5 ms of CPU), in huge pages
    with 4 (~0.7 ms).  Where the kernel gives no huge pages, they are
    ordinary pages, faulted in as first used.  The mapping goes when the
    ring does.
    """

    def __init__(self, slots: int = SLOTS, size: int = CHUNK) -> None:
        self.size = size
        self._slots = slots
        self._region: memoryview | None = None
        self._used = 0
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()

    def take(self) -> int:
        """A free buffer's number; waits for one if all are lent."""
        if self._free.empty() and self._used < self._slots:
            if self._region is None:
                self._region = _anonymous(self._slots * self.size)
            self._used += 1
            return self._used - 1
        return self._free.get()

    def give(self, slot: int) -> None:
        self._free.put(slot)

    def buffer(self, slot: int) -> memoryview:
        assert self._region is not None
        return self._region[slot * self.size : (slot + 1) * self.size]


def _anonymous(size: int) -> memoryview:
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):  # no THP: ordinary pages
        region.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(region)


def copy_through(
    src: int,
    extents: Sequence[Extent],
    write: Callable[[memoryview | bytes], object],
    fanout: Fanout,
    ring: BufferRing,
    *,
    source: str,
) -> int:
    """Read *extents* of the image *src*, *write* them, feed them to *fanout*.

    Returns their total.  A short read (the image shrank) names *source*,
    as `copy_extents` does; *write* (``extract.WriteSink.write``) reports
    its own failure.
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
                write(zeros)
            else:
                slot = ring.take()
                try:
                    chunk = _read(src, ring.buffer(slot)[:k], where + at, source)
                    write(chunk)
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

