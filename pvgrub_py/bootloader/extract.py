"""Copy the chosen files out of the guest disk and hash them in the same pass.

Every chunk read from the disk goes to the output file and to the hashers
of every bank, once: the bytes libxl will boot are exactly the bytes
measured.  The kernel is measured as libxenguest will load it (whole-file
gzip removed, `KernelMeasurer`); several initrds are concatenated into one
ramdisk, as GRUB concatenates them in memory, and that concatenation is
what is measured and booted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from pvgrub_py.disk.extract import Limits, stream_file
from pvgrub_py.disk.locate import BootFile
from pvgrub_py.errors import InputError
from pvgrub_py.measure.digest import MultiHasher
from pvgrub_py.measure.kernel import KernelMeasurer
from pvgrub_py.measure.plan import INITRD_PCR, KERNEL_PCR, Measurement
from pvgrub_py.tpm.algorithms import HashAlgorithm


class WriteSink:
    def __init__(self, out: BinaryIO | None, label: str) -> None:
        self.out = out
        self.label = label

    def write(self, chunk: bytes) -> None:
        if self.out is None:
            return
        try:
            self.out.write(chunk)
        except OSError as e:
            raise InputError(self.label, f"cannot write the extracted copy: {e.strerror}") from None


def extract_kernel(
    kernel: BootFile, out: BinaryIO | None, banks: Sequence[HashAlgorithm], limits: Limits
) -> Measurement:
    label = f"kernel {kernel.where}"
    measurer = KernelMeasurer(banks, label)
    sink = WriteSink(out, label)

    def feed(chunk: bytes) -> None:
        sink.write(chunk)
        measurer.update(chunk)

    stream_file(kernel.filesystem, kernel.path, feed, role="kernel", limits=limits)
    digests, length = measurer.finish()
    return Measurement(KERNEL_PCR, "kernel", kernel.path, digests, length)


def extract_initrds(
    initrds: Sequence[BootFile],
    out: BinaryIO | None,
    banks: Sequence[HashAlgorithm],
    limits: Limits,
) -> Measurement:
    hasher = MultiHasher(banks)
    if not initrds:
        return Measurement(INITRD_PCR, "initrd", None, hasher.digests(), 0)
    sink = WriteSink(out, f"initrd {initrds[0].where}")

    def feed(chunk: bytes) -> None:
        sink.write(chunk)
        hasher.update(chunk)
        if hasher.length > limits.initrd:
            raise InputError(f"initrd {initrds[0].where}", "initrds together exceed the 1 GiB cap")

    for initrd in initrds:
        stream_file(initrd.filesystem, initrd.path, feed, role="initrd", limits=limits)
    source = " ".join(i.path for i in initrds)
    return Measurement(INITRD_PCR, "initrd", source, hasher.digests(), hasher.length)
