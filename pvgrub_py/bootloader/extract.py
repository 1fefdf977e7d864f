"""Copy the chosen files out of the guest side and hash them in the same pass.

Every chunk the guest side delivers (`GuestSession.stream`: read from the
disk in-process, or received from the deprivileged child) goes to the
output file and to the hashers of every bank, once: the bytes libxl will
boot are exactly the bytes measured.  The kernel is measured as
libxenguest will load it (whole-file gzip removed, `KernelMeasurer`);
several initrds are concatenated into one ramdisk, as GRUB concatenates
them in memory, and that concatenation is what is measured and booted.
The caps are the host side's own (issue 3: 1 GiB each), whatever the
guest side announces.

``pvgrubctl predict DISK`` runs the same functions with no output file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from pvgrub_py.bootloader.hashing import Fanout
from pvgrub_py.bootloader.transfer import BufferRing, copy_through
from pvgrub_py.errors import InputError
from pvgrub_py.measure.kernel import KernelMeasurer
from pvgrub_py.measure.plan import INITRD_PCR, KERNEL_PCR, Measurement
from pvgrub_py.tpm.algorithms import HashAlgorithm

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, BinaryIO

    # Names only: the bootloader's parent, whose guest side is a sandboxed
    # child, never imports the disk layer's readers (~8 ms of every boot).
    from pvgrub_py.bootloader.guest import GuestSession, Sink
    from pvgrub_py.disk.extents import Extent
    from pvgrub_py.disk.limits import Limits
    from pvgrub_py.disk.locate import BootFile

    #: Where a file goes: a descriptor, a file, or nowhere (``--not-really``).
    Output = int | BinaryIO | None

#: Feeds one file to a sink under a byte cap; returns its length.
Stream = Callable[[Callable[[bytes], object], int], int]


class WriteSink:
    """Writes chunks to an output descriptor or file (or nowhere: ``--not-really``)."""

    def __init__(self, out: Output, label: str) -> None:
        self.out = out
        self.label = label

    def write(self, chunk: bytes | memoryview) -> None:
        out = self.out
        if out is None:
            return
        try:
            if isinstance(out, int):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
            else:
                out.write(chunk)
        except OSError as e:
            raise InputError(self.label, f"cannot write the extracted copy: {e.strerror}") from None


class Feed:
    """The sink one output's files are streamed to: written, then hashed.

    Each chunk goes to the output (`WriteSink`) and then to the hashers
    (*fanout*).  A file the guest side mapped (``depriv.RemoteSession``
    calls `copy_extents` instead of feeding it chunks) is read from the
    image into the few buffers of this output's own `transfer.BufferRing`,
    each written to a regular output file and then hashed, and lent again
    only once every hasher is done with it (`transfer.copy_through`); into
    anything else (no output, a FIFO) it is read with ``pread`` and fed
    here chunk by chunk.  Either way every hasher sees exactly the bytes
    written, in order.  *cap*, if given, bounds the total (the initrds'
    concatenation).
    """

    def __init__(self, out: Output, label: str, fanout: Fanout, cap: int | None = None) -> None:
        self.sink = WriteSink(out, label)
        self.label = label
        self.fanout = fanout
        self.cap = cap
        #: Made on the first mapped file.  One per output, not one shared
        #: by the kernel and the initrds: the initrds must not wait for the
        #: buffers the kernel's (slower, single) hashing thread still holds.
        self.ring: BufferRing | None = None
        #: Bytes written and hashed so far.
        self.length = 0

    def _check_cap(self, more: int) -> None:
        if self.cap is not None and self.length + more > self.cap:
            raise InputError(self.label, "initrds together exceed the 1 GiB cap")

    def __call__(self, chunk: bytes) -> None:
        self._check_cap(len(chunk))
        self.sink.write(chunk)
        self.fanout(chunk)
        self.length += len(chunk)

    def copy_extents(self, fd: int, extents: Sequence[Extent], source: str) -> int:
        """Copy and hash *extents* of the image *fd*; their total length."""
        out = self.sink.out
        if isinstance(out, int) and _regular_file(out):
            self._check_cap(sum(n for _, n in extents))
            if self.ring is None:
                self.ring = BufferRing()
            done = copy_through(fd, extents, self.sink.write, self.fanout, self.ring,
                                source=source)  # fmt: skip
            self.length += done
            return done
        from pvgrub_py.disk.extents import copy_extents

        return copy_extents(fd, extents, self, source=source)


def copy_kernel(
    stream: Stream, path: str, label: str, out: Output, banks: Sequence[HashAlgorithm],
    limits: Limits, *, overlap: Callable[[], object] | None = None,
) -> Measurement:  # fmt: skip
    """PCR 4's measurement of the kernel *stream* delivers, copied to *out*.

    The measurer (every bank, and the gunzip rule) runs in a `Fanout`
    thread while this thread reads and writes.  *overlap*, if given, runs
    once every byte is read and written, while that thread finishes
    hashing (`extract_session_files` streams the initrds there).
    """
    measurer = KernelMeasurer(banks, label)
    with Fanout([measurer.update]) as hash_chunk:
        stream(Feed(out, label, hash_chunk), limits.kernel)
        if overlap is not None:
            overlap()
    digests, length = measurer.finish()
    return Measurement(KERNEL_PCR, "kernel", path, digests, length)


def copy_initrds(
    streams: Sequence[Stream], paths: Sequence[str], label: str, out: Output,
    banks: Sequence[HashAlgorithm], limits: Limits,
) -> Measurement:  # fmt: skip
    """The second PCR 5 measurement: the initrds concatenated, as one ramdisk.

    Each bank hashes in its own `Fanout` thread.
    """
    hashers = [(alg.name, alg.new()) for alg in banks]
    if not streams:
        return Measurement(INITRD_PCR, "initrd", None, _digests(hashers), 0)
    with Fanout([h.update for _, h in hashers]) as hash_chunk:
        feed = Feed(out, label, hash_chunk, cap=limits.initrd)
        for stream in streams:
            stream(feed, limits.initrd - feed.length)
    return Measurement(INITRD_PCR, "initrd", " ".join(paths), _digests(hashers), feed.length)


def _regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _digests(hashers: Sequence[tuple[str, Any]]) -> dict[str, bytes]:
    return {name: bytes(h.digest()) for name, h in hashers}


# -- from a guest session (the bootloader, predict) ----------------------------
def _session_stream(session: GuestSession, index: int) -> Stream:
    return lambda sink, cap: session.stream(index, sink, cap)


def extract_session_kernel(
    session: GuestSession, out: Output, banks: Sequence[HashAlgorithm], limits: Limits,
    *, overlap: Callable[[], object] | None = None,
) -> Measurement:  # fmt: skip
    spec = session.plan.kernel
    if spec is None:
        raise InputError(session.plan.config, "no kernel was chosen")
    stream = _session_stream(session, 0)
    label = f"kernel {spec.where}"
    return copy_kernel(stream, spec.path, label, out, banks, limits, overlap=overlap)


def extract_session_initrds(
    session: GuestSession, out: Output, banks: Sequence[HashAlgorithm], limits: Limits
) -> Measurement:
    initrds = session.plan.initrds
    streams = [_session_stream(session, 1 + k) for k in range(len(initrds))]
    label = f"initrd {initrds[0].where}" if initrds else "initrd"
    return copy_initrds(streams, [f.path for f in initrds], label, out, banks, limits)


def extract_session_files(
    session: GuestSession, kernel_out: Output, initrd_out: Output,
    banks: Sequence[HashAlgorithm], limits: Limits,
) -> tuple[Measurement, Measurement]:  # fmt: skip
    """`extract_session_kernel`, then `extract_session_initrds`, overlapped.

    The kernel's hashing thread lags the copy by up to `hashing.DEPTH`
    chunks; rather than wait for it, this thread goes on to stream the
    initrds (in plan order, as before) and collects the kernel's digests
    after them.  Each file's bytes and digests are what the two calls
    would give; only a kernel error found by its hashers (a corrupt gzip
    stream) is reported after the initrds are copied instead of before.
    """
    initrd: list[Measurement] = []

    def initrds() -> None:
        initrd.append(extract_session_initrds(session, initrd_out, banks, limits))

    kernel = extract_session_kernel(session, kernel_out, banks, limits, overlap=initrds)
    return kernel, initrd[0]


# -- from resolved files on an open disk (the domain builder's simulator path) --
def _file_stream(file: BootFile, role: str) -> Stream:
    from pvgrub_py.disk.extract import stream_file

    def stream(sink: Sink, cap: int) -> int:
        return stream_file(file.filesystem, file.path, sink, role=role, limits=_capped(role, cap))

    return stream


def _capped(role: str, cap: int) -> Limits:
    from pvgrub_py.disk.limits import Limits

    return Limits(kernel=cap) if role == "kernel" else Limits(initrd=cap)


def extract_kernel(
    kernel: BootFile, out: Output, banks: Sequence[HashAlgorithm], limits: Limits
) -> Measurement:
    stream = _file_stream(kernel, "kernel")
    return copy_kernel(stream, kernel.path, f"kernel {kernel.where}", out, banks, limits)


def extract_initrds(
    initrds: Sequence[BootFile], out: Output, banks: Sequence[HashAlgorithm], limits: Limits
) -> Measurement:
    streams = [_file_stream(f, "initrd") for f in initrds]
    label = f"initrd {initrds[0].where}" if initrds else "initrd"
    return copy_initrds(streams, [f.path for f in initrds], label, out, banks, limits)
