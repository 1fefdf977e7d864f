"""LZO-compressed kernels: the lzop container and the LZO1X bitstream.

Linux compresses an LZO bzImage payload with ``lzop -9`` and its
decompressor (lib/decompress_unlzo.c) reads the lzop container: a 9-byte
magic, a header (version-dependent fields, flags, mode, mtime, name,
header checksum), then blocks of ``dst_len``, ``src_len``, optional
checksums and data, ended by ``dst_len == 0``.  A block whose ``src_len``
equals ``dst_len`` is stored; otherwise it is an LZO1X stream, decoded here
as the instruction set Linux documents (Documentation/staging/lzo.rst).

No maintained LZO wheel exists for this Python (python-lzo ships only
sources needing liblzo2-dev), so this is our own decoder, written from the
format description.  Every read and match is bounds-checked; output is
capped per block (its ``dst_len``) and in total (``cap``).
"""

from __future__ import annotations

import zlib

from pvgrub_py.bytecursor import ByteCursor
from pvgrub_py.errors import InputError
from pvgrub_py.kernel.limits import decompression_bomb

LZOP_MAGIC = b"\x89LZO\x00\r\n\x1a\n"
F_ADLER32_D = 0x0001
F_ADLER32_C = 0x0002
F_H_EXTRA_FIELD = 0x0040
F_CRC32_D = 0x0100
F_CRC32_C = 0x0200
F_H_FILTER = 0x0800
F_H_CRC32 = 0x1000
#: lzop's MAX_BLOCK_SIZE.
BLOCK_MAX = 64 << 20
#: LZO1X methods (lzop's M_LZO1X_1, M_LZO1X_1_15, M_LZO1X_999).
LZO1X_METHODS = (1, 2, 3)


class _Reader(ByteCursor[memoryview]):
    """The shared cursor (big-endian, as lzop writes), with errors naming the kernel."""

    __slots__ = ("label",)

    def __init__(self, data: memoryview, label: str) -> None:
        super().__init__(data, "big", self._truncated)
        self.label = label

    def _truncated(self, what: str, at: int, _need: int, _left: int) -> InputError:
        return InputError(self.label, f"lzo {what} at payload offset {at}: truncated")


def decompress_lzop(data: bytes | memoryview, label: str, cap: int) -> bytes:
    r = _Reader(memoryview(data), label)
    if bytes(r.take(9, "magic")) != LZOP_MAGIC:
        raise InputError(label, "lzo payload: missing lzop magic 89 4c 5a 4f 00 0d 0a 1a 0a")
    flags = _header(r)
    out = bytearray()
    while True:
        block_at = r.pos
        dst_len = r.u32("block dst_len")
        if dst_len == 0:
            break
        src_len = r.u32("block src_len")
        if dst_len > BLOCK_MAX or src_len > dst_len or src_len == 0:
            raise InputError(
                label,
                f"lzo block at payload offset {block_at}: lengths "
                f"src {src_len} / dst {dst_len} are invalid",
            )
        d_adler = r.u32("d checksum") if flags & F_ADLER32_D else None
        d_crc = r.u32("d checksum") if flags & F_CRC32_D else None
        if src_len < dst_len:
            if flags & F_ADLER32_C:
                r.u32("c checksum")
            if flags & F_CRC32_C:
                r.u32("c checksum")
        if len(out) + dst_len > cap:
            raise decompression_bomb(label, "lzo", cap)
        src = r.take(src_len, "block data")
        block = (
            bytes(src)
            if src_len == dst_len
            else lzo1x_decompress(src, dst_len, label, r.pos - src_len)
        )
        if d_adler is not None and zlib.adler32(block) != d_adler:
            raise InputError(label, f"lzo block at payload offset {block_at}: adler32 mismatch")
        if d_crc is not None and zlib.crc32(block) != d_crc:
            raise InputError(label, f"lzo block at payload offset {block_at}: crc32 mismatch")
        out += block
    return bytes(out)


def _header(r: _Reader) -> int:
    """Skip the lzop header (lzop's ``p_header``), returning its flags."""
    start = r.pos
    version = r.u16("header version")
    r.u16("header lib_version")
    if version >= 0x0940:
        r.u16("header version_needed")
    method = r.u8("header method")
    if method not in LZO1X_METHODS:
        raise InputError(
            r.label,
            f"lzo header method at payload offset {r.pos - 1}: {method} is not an LZO1X method",
        )
    if version >= 0x0940:
        r.u8("header level")
    flags = r.u32("header flags")
    if flags & F_H_FILTER:
        r.u32("header filter")
    r.u32("header mode")
    r.u32("header mtime")
    if version >= 0x0940:
        r.u32("header mtime_high")
    name_len = r.u8("header name length")
    r.take(name_len, "header name")
    header = bytes(r.data[start : r.pos])
    checksum = r.u32("header checksum")
    expected = zlib.crc32(header) if flags & F_H_CRC32 else zlib.adler32(header)
    if checksum != expected:
        raise InputError(r.label, f"lzo header checksum at payload offset {r.pos - 4}: mismatch")
    if flags & F_H_EXTRA_FIELD:
        length = r.u32("header extra field length")
        r.take(length + 4, "header extra field")
    return flags


def lzo1x_decompress(src: bytes | memoryview, dst_len: int, label: str, at: int = 0) -> bytes:
    """Decode one LZO1X block to exactly ``dst_len`` bytes (lzo.rst's instruction set)."""
    s = bytes(src)
    n = len(s)
    out = bytearray()
    ip = 0

    def fail(problem: str) -> InputError:
        return InputError(label, f"lzo1x block at payload offset {at + ip}: {problem}")

    def byte() -> int:
        nonlocal ip
        if ip >= n:
            raise fail("input ends inside an instruction")
        ip += 1
        return s[ip - 1]

    def zero_run(base: int) -> int:
        nonlocal ip
        extra = 0
        while True:
            if ip >= n:
                raise fail("input ends inside a length")
            b = s[ip]
            ip += 1
            if b:
                return base + extra + b
            extra += 255

    def literals(count: int) -> None:
        nonlocal ip
        if ip + count > n:
            raise fail(f"{count} literals run past the input")
        if len(out) + count > dst_len:
            raise fail("output overrun")
        out.extend(s[ip : ip + count])
        ip += count

    def match(distance: int, length: int) -> None:
        start = len(out) - distance
        if start < 0:
            raise fail(f"match distance {distance} reaches before the output start")
        if len(out) + length > dst_len:
            raise fail("output overrun")
        if distance >= length:
            out.extend(out[start : start + length])
        else:
            pattern = bytes(out[start:])
            out.extend((pattern * (length // distance + 1))[:length])

    state = 0
    if n and s[0] > 17:
        ip = 1
        count = s[0] - 17
        literals(count)
        state = count if count < 4 else 4
    while True:
        inst = byte()
        if inst >= 64:
            length = 5 + ((inst >> 5) & 3) if inst >= 128 else 3 + ((inst >> 5) & 1)
            distance = (byte() << 3) + ((inst >> 2) & 7) + 1
            trailing = inst & 3
        elif inst >= 32:
            length = 2 + ((inst & 31) or zero_run(31))
            lo, hi = byte(), byte()
            distance = ((lo | hi << 8) >> 2) + 1
            trailing = lo & 3
        elif inst >= 16:
            length = 2 + ((inst & 7) or zero_run(7))
            lo, hi = byte(), byte()
            distance = 16384 + ((inst & 8) << 11) + ((lo | hi << 8) >> 2)
            trailing = lo & 3
            if distance == 16384:
                break  # end of stream
        elif state == 0:
            literals(3 + (inst or zero_run(15)))
            state = 4
            continue
        else:
            length = 2 if state < 4 else 3
            distance = (byte() << 2) + ((inst >> 2) & 3) + (1 if state < 4 else 2049)
            trailing = inst & 3
        match(distance, length)
        literals(trailing)
        state = trailing
    if ip != n:
        raise fail(f"{n - ip} bytes after the end-of-stream marker")
    if len(out) != dst_len:
        raise fail(f"decodes to {len(out)} bytes, the block header says {dst_len}")
    return bytes(out)
