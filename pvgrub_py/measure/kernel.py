"""The kernel bytes a measurement covers: the image after a whole-file gunzip.

Both GRUB legacy (whose loader pv-grub used) and libxenguest's
``xc_dom_kernel_mem``/``xc_dom_kernel_file`` remove a gzip wrapper around the
whole kernel file before the loader sees it, so that is what PCR 4 records.
A bzImage's own internal compression is untouched.

When the file is treated as gzip is libxenguest's rule (xg_dom_core.c,
``xc_dom_check_gzip``): at least 6 bytes, the magic ``1f 8b``, and a
little-endian ISIZE trailer (the last four bytes) of at most
``XC_DOM_DECOMPRESS_MAX`` (1 GiB).  Otherwise the file is measured as stored.

We are stricter than libxenguest in one place, on purpose: the inflated
first gzip member must be exactly ISIZE bytes long.  libxenguest allocates
ISIZE + 16 zeroed bytes and accepts any stream that fits, so its
``kernel_size`` is ISIZE + 16 and a stream shorter than its trailer claims
leaves zero padding behind.  A kernel whose trailer disagrees with its
stream is refused rather than measured ambiguously.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pvgrub_py.errors import InputError
from pvgrub_py.measure.digest import CHUNK_SIZE
from pvgrub_py.measure.sources import read_chunks

GZIP_MAGIC = b"\x1f\x8b"
#: XC_DOM_DECOMPRESS_MAX in xenguest.h: larger "unzipped sizes" are taken
#: as a sign the file is not really gzip, and it is loaded as stored.
DECOMPRESS_MAX = 1 << 30


def gzip_isize(f: BinaryIO, size: int) -> int | None:
    """ISIZE if libxenguest would gunzip this file, else None."""
    if size < 6:
        return None
    f.seek(0)
    magic = f.read(2)
    f.seek(size - 4)
    (isize,) = struct.unpack("<I", f.read(4))
    f.seek(0)
    if magic != GZIP_MAGIC or isize > DECOMPRESS_MAX:
        return None
    return int(isize)


def kernel_chunks(f: BinaryIO, label: str, size: int) -> Iterator[bytes | memoryview]:
    """The bytes PCR 4 measures, streamed: inflated if whole-file gzip."""
    isize = gzip_isize(f, size)
    if isize is None:
        yield from read_chunks(f, label)
        return
    yield from _inflate_first_member(f, label, isize)


def _inflate_first_member(f: BinaryIO, label: str, isize: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    produced = 0
    for chunk in read_chunks(f, label):
        data: bytes | memoryview = chunk
        while data and not inflater.eof:
            try:
                out = inflater.decompress(data, CHUNK_SIZE)
            except zlib.error as e:
                if "incorrect length check" in str(e):
                    raise InputError(
                        label, "gzip trailer length disagrees with the stream"
                    ) from None
                raise InputError(label, f"corrupt gzip stream: {e}") from None
            produced += len(out)
            if produced > isize:
                raise InputError(
                    label, f"gzip stream inflates past the {isize} bytes its trailer declares"
                )
            if out:
                yield out
            data = inflater.unconsumed_tail
        if inflater.eof:
            break
    if not inflater.eof:
        raise InputError(label, "truncated gzip stream")
    if produced != isize:
        raise InputError(
            label, f"gzip stream inflates to {produced} bytes but its trailer declares {isize}"
        )
