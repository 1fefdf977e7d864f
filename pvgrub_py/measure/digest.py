"""Hash a byte stream once for every bank.

Each chunk is read once and fed to one hashlib object per bank; nothing is
ever held in memory beyond one chunk, so a 1 GiB initrd costs a 1 MiB buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pvgrub_py.tpm.algorithms import HashAlgorithm

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

#: Read size.  1 MiB is the size pygrub copies in (FS_READ_MAX) and large
#: enough that hashlib releases the GIL and per-call overhead vanishes.
CHUNK_SIZE = 1 << 20


class MultiHasher:
    """hashlib for several banks at once, fed by the same chunks."""

    def __init__(self, banks: Sequence[HashAlgorithm]) -> None:
        self._hashers: list[tuple[str, Any]] = [(alg.name, alg.new()) for alg in banks]
        self.length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        for _, h in self._hashers:
            h.update(data)
        self.length += len(data)

    def digests(self) -> dict[str, bytes]:
        return {name: bytes(h.digest()) for name, h in self._hashers}


def hash_chunks(
    chunks: Iterable[bytes | bytearray | memoryview], banks: Sequence[HashAlgorithm]
) -> tuple[dict[str, bytes], int]:
    """Digests per bank and the total length of everything ``chunks`` yields."""
    hasher = MultiHasher(banks)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digests(), hasher.length


def hash_bytes(data: bytes, banks: Sequence[HashAlgorithm]) -> dict[str, bytes]:
    hasher = MultiHasher(banks)
    hasher.update(data)
    return hasher.digests()
