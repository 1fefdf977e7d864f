"""bzImage payload compression: detect by magic, decompress under a cap.

The magics and the order they are tried are Xen's bzImage loader's
(xg_dom_bzimageloader.c), which follows Linux's lib/decompress.c:
gzip ``1f 8b``, bzip2 ``BZh``, xz ``fd 37 7a 58 5a 00``, lzma ``5d 00``,
lzo ``89 4c 5a 4f 00``, lz4 (legacy frame) ``02 21``, zstd ``28 b5 2f fd``.
Linux appends the decompressed size as a little-endian u32 after the
compressed stream (arch/x86/boot/compressed/Makefile, ``size_append``); we
report it, but like Xen we trust the stream, not the trailer.

Decompression stops at ``cap`` bytes of output (``XC_DOM_DECOMPRESS_MAX``,
1 GiB, by default): a payload that inflates further is a decompression
bomb and refused, so memory stays bounded whatever the input says.  Each
decompressor is a well-kept library (zlib, bz2, lzma from the stdlib;
python-zstandard; python-lz4 for the blocks) except LZO, which no
maintained wheel provides for this Python, so `lzo` is our own.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import Any

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import DECOMPRESS_MAX, format_size
from pvgrub_py.kernel import lz4_legacy, lzo
from pvgrub_py.kernel.limits import decompression_bomb

#: (name, magic) in the order Xen's loader tests them.
MAGICS: tuple[tuple[str, bytes], ...] = (
    ("gzip", b"\x1f\x8b"),
    ("bzip2", b"BZh"),
    ("xz", b"\xfd7zXZ\x00"),
    ("lzma", b"\x5d\x00"),
    ("lzo", b"\x89LZO\x00"),
    ("lz4", b"\x02\x21"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
)


def detect(payload: bytes | memoryview) -> str | None:
    head = bytes(payload[:8])
    for name, magic in MAGICS:
        if head.startswith(magic):
            return name
    return None


def declared_size(payload: bytes | memoryview) -> int | None:
    """Linux's ``size_append`` trailer: the size the build says vmlinux has."""
    if len(payload) < 8:
        return None
    (size,) = struct.unpack_from("<I", payload, len(payload) - 4)
    return int(size)


def _capped(decompressor: Any, data: bytes | memoryview, label: str, kind: str, cap: int) -> bytes:
    """zlib/bz2/lzma decompressor objects, told to produce at most cap + 1 bytes."""
    try:
        out: bytes = decompressor.decompress(data, cap + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise InputError(label, f"corrupt {kind} payload: {e}") from None
    if len(out) > cap:
        raise decompression_bomb(label, kind, cap)
    if not decompressor.eof:
        raise InputError(label, f"truncated {kind} payload: the stream ends early")
    return out


def _gzip(data: bytes | memoryview, label: str, cap: int) -> bytes:
    return _capped(zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), data, label, "gzip", cap)


def _bzip2(data: bytes | memoryview, label: str, cap: int) -> bytes:
    return _capped(bz2.BZ2Decompressor(), data, label, "bzip2", cap)


def _xz(data: bytes | memoryview, label: str, cap: int) -> bytes:
    return _capped(lzma.LZMADecompressor(lzma.FORMAT_XZ), data, label, "xz", cap)


def _lzma(data: bytes | memoryview, label: str, cap: int) -> bytes:
    return _capped(lzma.LZMADecompressor(lzma.FORMAT_ALONE), data, label, "lzma", cap)


def _zstd(data: bytes | memoryview, label: str, cap: int) -> bytes:
    """One zstd frame into a buffer of at most ``cap`` bytes.

    Linux's frames carry no content size, so python-zstandard sizes its
    output buffer from ``max_output_size``: the allocation is bounded by the
    cap (`decompress` sets it to the declared size), as Xen's malloc is.
    """
    import zstandard

    try:
        declared = zstandard.get_frame_parameters(data).content_size
        if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > cap:
            raise decompression_bomb(label, "zstd", cap)
        out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=cap)
    except zstandard.ZstdError as e:
        if "too small" in str(e):
            raise decompression_bomb(label, "zstd", cap) from None
        raise InputError(label, f"corrupt zstd payload: {e}") from None
    if len(out) > cap:
        raise decompression_bomb(label, "zstd", cap)
    if not out:
        raise InputError(label, "truncated zstd payload: no frame data")
    return out


#: Decoded as Xen does: Linux's size trailer bounds the output (see `decompress`).
SIZED_BY_TRAILER = ("xz", "lzma", "zstd", "lz4")
#: ... and for these libxenguest also refuses output shorter than the trailer
#: (checked against Debian's libxenguest 4.17: a trailer one byte over the real
#: size is "Invalid kernel" for xz, lzma and zstd, accepted for lz4).
FILLS_TRAILER_SIZE = ("xz", "lzma", "zstd")

DECOMPRESSORS: dict[str, Callable[[bytes | memoryview, str, int], bytes]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "xz": _xz,
    "lzma": _lzma,
    "lzo": lzo.decompress_lzop,
    "lz4": lz4_legacy.decompress,
    "zstd": _zstd,
}


#: libxenguest's gunzip buffer: the gzip trailer's ISIZE plus this slack
#: (``xc_dom_check_gzip``).
GZIP_SLACK = 16


def _gzip_like_xen(payload: bytes | memoryview, label: str, cap: int) -> bytes:
    """A gzip bzImage payload, refused where libxenguest refuses it.

    libxenguest trusts the gzip trailer's ISIZE: above the cap it does not
    inflate at all ("looks insane"), and it inflates into ISIZE + 16 bytes,
    so a stream that inflates to more fails (both checked against Debian's
    libxenguest 4.17).
    """
    declared = declared_size(payload)
    if declared is not None and declared > cap:
        raise InputError(
            label,
            f"gzip payload's size trailer declares {declared} bytes, over the "
            f"{format_size(cap)} cap (XC_DOM_DECOMPRESS_MAX)",
        )
    limit = cap if declared is None else min(cap, declared + GZIP_SLACK)
    try:
        return _gzip(payload, label, limit)
    except InputError as e:
        if declared is None or "decompression bomb" not in e.problem:
            raise
        raise InputError(
            label,
            f"gzip payload inflates past the {declared} bytes its size trailer "
            f"declares (+{GZIP_SLACK}, libxenguest's buffer)",
        ) from None


def decompress(
    kind: str, payload: bytes | memoryview, label: str, cap: int = DECOMPRESS_MAX
) -> bytes:
    """Decompress a bzImage payload; for xz, lzma, zstd and lz4, Xen's trailer rule applies.

    libxenguest's decoders for these (``_xc_try_lzma_decode``,
    ``xc_try_zstd_decode``, ``xc_try_lz4_decode``) read Linux's size trailer,
    refuse it above the cap, and decode the bytes before it into a buffer of
    exactly that size: a stream that needs more is refused.  We do the same,
    and also refuse a stream that does not end (Xen would keep what it got).
    """
    if kind == "gzip":
        return _gzip_like_xen(payload, label, cap)
    if kind not in SIZED_BY_TRAILER:
        return DECOMPRESSORS[kind](payload, label, cap)
    declared = declared_size(payload)
    if declared is None:
        raise InputError(
            label, f"{kind} payload of {len(payload)} bytes has no room for Linux's size trailer"
        )
    if declared > cap:
        raise InputError(
            label,
            f"{kind} payload's size trailer declares {declared} bytes, over the "
            f"{format_size(cap)} cap (XC_DOM_DECOMPRESS_MAX)",
        )
    try:
        out = DECOMPRESSORS[kind](memoryview(payload)[:-4], label, declared)
    except InputError as e:
        if "decompression bomb" not in e.problem:
            raise
        limit = f"the {declared} bytes its size trailer declares"
        raise decompression_bomb(label, kind, declared, limit) from None
    if kind in FILLS_TRAILER_SIZE and len(out) < declared:
        raise InputError(
            label,
            f"{kind} payload decodes to {len(out)} bytes, fewer than the {declared} "
            "its size trailer declares (libxenguest refuses such a kernel)",
        )
    return out
