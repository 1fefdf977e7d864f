"""The PCRs a pv-grub style boot produces, by the README's measurement specification,
computed with hashlib alone: the independent expectation for builder and bootloader tests.

    PCR4 = H(0..0 || H(kernel as measured))
    PCR5 = H(H(0..0 || H(cmdline)) || H(initrd or no bytes))
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

GIB = 1 << 30


def kernel_as_measured(data: bytes) -> bytes:
    """The kernel's bytes as the domain builder receives them: a whole-file gzip
    (1f 8b, at least 6 bytes, ISIZE <= 1 GiB) is inflated (its first member), else as stored."""
    if len(data) >= 6 and data[:2] == b"\x1f\x8b" and int.from_bytes(data[-4:], "little") <= GIB:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    return data


def expected_pcrs(
    kernel: bytes | str | Path,
    cmdline: str,
    initrd: bytes | str | Path | None,
    banks: tuple[str, ...] = ("sha1",),
) -> dict[str, dict[int, bytes]]:
    """{bank: {4: ..., 5: ...}} for a kernel (bytes or a path), a cmdline, an initrd or None."""
    if not isinstance(kernel, bytes):
        kernel = Path(kernel).read_bytes()
    if initrd is not None and not isinstance(initrd, bytes):
        initrd = Path(initrd).read_bytes()
    out: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        zero = bytes(hashlib.new(bank).digest_size)
        pcr4 = _h(bank, zero + _h(bank, kernel_as_measured(kernel)))
        pcr5 = _h(bank, _h(bank, zero + _h(bank, cmdline.encode())) + _h(bank, initrd or b""))
        out[bank] = {4: pcr4, 5: pcr5}
    return out


def _h(bank: str, data: bytes) -> bytes:
    return hashlib.new(bank, data).digest()
