"""Measure a kernel, an initrd and a cmdline held in local files.

This is the whole of pv-grub's ``tpm_hash2pcr()`` except the TPM: it returns
the three `Measurement`s, hashed in every requested bank, in the order they
must be extended.  The bootloader and the domain builder feed the same
function from a guest disk; ``pvgrubctl predict`` feeds it from files.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.measure.digest import hash_bytes, hash_chunks
from pvgrub_py.measure.kernel import KernelMeasurer
from pvgrub_py.measure.plan import CMDLINE_PCR, INITRD_PCR, KERNEL_PCR, Measurement
from pvgrub_py.measure.sources import open_regular, read_chunks
from pvgrub_py.tpm.algorithms import HashAlgorithm

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO


def cmdline_bytes(cmdline: str) -> bytes:
    """The bytes pv-grub hashes: ``strlen(cmdline)`` of them, no NUL.

    The string is encoded as UTF-8; arguments that arrived as undecodable
    bytes (surrogate escapes) go back to those exact bytes.
    """
    data = cmdline.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise UsageError(
            "cmdline contains a NUL byte; the kernel would see only the part before it"
        )
    return data


def measure_kernel(path: str, banks: Sequence[HashAlgorithm]) -> Measurement:
    label = f"kernel {path}"
    with open_regular("kernel", path) as (f, size):
        measurer = KernelMeasurer(banks, label, trailer=read_trailer(f, size, label))
        for chunk in read_chunks(f, label):
            measurer.update(chunk)
    digests, length = measurer.finish()
    return Measurement(KERNEL_PCR, "kernel", path, digests, length)


def read_trailer(f: BinaryIO, size: int, label: str) -> bytes | None:
    """The last four bytes (a gzip ISIZE), then rewind."""
    if size < 6:
        return None
    try:
        f.seek(size - 4)
        trailer = f.read(4)
        f.seek(0)
    except OSError as e:
        raise InputError(label, f"read failed: {e.strerror or e}") from None
    return trailer


def measure_cmdline(cmdline: str, banks: Sequence[HashAlgorithm]) -> Measurement:
    data = cmdline_bytes(cmdline)
    return Measurement(CMDLINE_PCR, "cmdline", cmdline, hash_bytes(data, banks), len(data))


def measure_initrd(path: str | None, banks: Sequence[HashAlgorithm]) -> Measurement:
    """The initrd as stored (libxenguest does not gunzip modules)."""
    if path is None:
        return Measurement(INITRD_PCR, "initrd", None, hash_bytes(b"", banks), 0)
    label = f"initrd {path}"
    with open_regular("initrd", path) as (f, _size):
        digests, length = hash_chunks(read_chunks(f, label), banks)
    return Measurement(INITRD_PCR, "initrd", path, digests, length)


def measure_boot_files(
    kernel: str, initrd: str | None, cmdline: str, banks: Sequence[HashAlgorithm]
) -> list[Measurement]:
    """The three measurements, in extend order."""
    cmd = measure_cmdline(cmdline, banks)  # validate the cheap argument first
    return [measure_kernel(kernel, banks), cmd, measure_initrd(initrd, banks)]
