"""FAT12/16/32 through dissect.fat.

A FAT cluster chain is a linked list in the allocation table, and a
corrupt table can make it a cycle: dissect.fat would follow it forever,
growing the run list.  A chain can never be longer than the number of
clusters (Microsoft FAT specification, "FAT Data Structure"), so the
adapter replaces the table object's ``chain`` method on *this instance*
with one that stops with an error after that many steps.

GRUB matches FAT names case-insensitively, long or short (8.3).  The
volume "UUID" is the 32-bit volume serial written ``XXXX-XXXX`` as blkid
and GRUB's ``search --fs-uuid`` spell it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from dissect.fat import FATFS  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import FileKind, ReaderAdapter

if TYPE_CHECKING:
    from pvgrub_py.disk.readers.base import Node


class ClusterChainLoop(ValueError):
    """A FAT cluster chain longer than the table (so it loops)."""


def _bounded_chain(
    chain: Callable[[int], Iterator[int]], limit: int
) -> Callable[[int], Iterator[int]]:
    def bounded(cluster: int) -> Iterator[int]:
        for steps, value in enumerate(chain(cluster)):
            if steps >= limit:
                raise ClusterChainLoop(f"cluster chain from {cluster} is longer than the FAT")
            yield value

    return bounded


class FatAdapter(ReaderAdapter):
    fs_type = "vfat"
    case_insensitive = True

    def __init__(self, fh: BoundedFile) -> None:
        self._fs: Any = FATFS(fh)
        fat: Any = self._fs.fat
        fat.chain = _bounded_chain(fat.chain, int(fat.entry_count))
        serial = int(self._fs.bpb_ext.BS_VolID)
        self.uuid = f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
        label = str(self._fs.volume_label).strip()
        self.label = label if label and label != "NO NAME" else None

    @property
    def root(self) -> Node:
        return self._fs.root

    def kind(self, node: Node) -> FileKind:
        return FileKind.DIRECTORY if node.is_directory() else FileKind.REGULAR

    def size(self, node: Node) -> int:
        return int(node.size)

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        for child in node.iterdir():
            if child.is_volume_id() or child.name in (".", ".."):
                continue
            yield str(child.name), child

    def lookup(self, node: Node, name: str, limit: int) -> Node | None:
        want = name.casefold()
        for count, (entry, child) in enumerate(self.children(node)):
            if count >= limit:
                raise OverflowError(f"directory has more than {limit} entries")
            if want in (entry.casefold(), str(child.short_name).casefold()):
                return child
        return None

    def read_link(self, node: Node) -> bytes:
        raise TypeError("FAT has no symbolic links")

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream
