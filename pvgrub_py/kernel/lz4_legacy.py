"""LZ4's legacy frame, the one Linux uses for kernels (``lz4 -l``).

Layout (lz4 programs/lz4io.c "legacy format"; Linux lib/decompress_unlz4.c):
the magic ``02 21 4c 18`` (0x184C2102 LE), then blocks, each a LE32
compressed length and that many bytes of raw LZ4 block data, each
decompressing to at most 8 MiB.  The magic may recur (concatenated
streams).  In a bzImage, Linux's 4-byte size trailer follows the last
block; four bytes left after a block are taken as that trailer.  Blocks
are decoded by python-lz4 (``lz4.block``).
"""

from __future__ import annotations

import struct

from pvgrub_py.errors import InputError
from pvgrub_py.kernel.limits import decompression_bomb

MAGIC = 0x184C2102
BLOCK_MAX = 8 << 20
#: LZ4_compressBound(8 MiB): no valid block is longer.
BLOCK_COMPRESSED_MAX = BLOCK_MAX + BLOCK_MAX // 255 + 16


def decompress(data: bytes | memoryview, label: str, cap: int) -> bytes:
    import lz4.block  # type: ignore[import-untyped]

    view = memoryview(data)
    if len(view) < 4 or struct.unpack_from("<I", view, 0)[0] != MAGIC:
        raise InputError(label, "lz4 payload: missing legacy frame magic 02 21 4c 18")
    out = bytearray()
    pos, blocks = 4, 0
    while pos < len(view):
        remaining = len(view) - pos
        if remaining == 4 and blocks:
            break  # Linux's size_append trailer
        if remaining < 4:
            raise InputError(label, f"lz4 payload offset {pos}: {remaining} stray bytes")
        (length,) = struct.unpack_from("<I", view, pos)
        if length == MAGIC:
            pos += 4
            continue
        if length == 0 or length > BLOCK_COMPRESSED_MAX:
            raise InputError(
                label,
                f"lz4 block length at payload offset {pos}: {length} is not "
                f"a valid legacy block size (1..{BLOCK_COMPRESSED_MAX})",
            )
        if length > remaining - 4:
            raise InputError(
                label,
                f"lz4 block length at payload offset {pos}: {length} bytes "
                f"run past the payload's end ({remaining - 4} left)",
            )
        block = view[pos + 4 : pos + 4 + length]
        try:
            chunk = lz4.block.decompress(block, uncompressed_size=BLOCK_MAX)
        except lz4.block.LZ4BlockError as e:
            raise InputError(label, f"corrupt lz4 block at payload offset {pos}: {e}") from None
        out += chunk
        if len(out) > cap:
            raise decompression_bomb(label, "lz4", cap)
        pos += 4 + length
        blocks += 1
    if not blocks:
        raise InputError(label, "lz4 payload: no blocks")
    return bytes(out)
