"""What the Dissect-backed adapters (XFS, Btrfs) share.

Each Dissect filesystem object (``self._fs``) has a ``root`` node; each node
has ``size``, ``open()`` and ``iterdir()``.  The checks are the ones every
adapter needs: a directory is listed only below `MAX_DIR_BYTES`, a symlink
target is read only up to `MAX_LINK_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from pvgrub_py.disk.readers.base import MAX_DIR_BYTES, MAX_LINK_BYTES, ReaderAdapter

if TYPE_CHECKING:
    from pvgrub_py.disk.readers.base import Node


def check_dir_size(node: Node) -> None:
    if node.size > MAX_DIR_BYTES:
        raise OverflowError(f"directory claims {node.size} bytes")


def check_link_size(node: Node) -> None:
    if node.size > MAX_LINK_BYTES:
        raise OverflowError(f"symlink target of {node.size} bytes")


def without_dots(entries: Iterable[tuple[str, Node]]) -> Iterator[tuple[str, Node]]:
    """*entries* less ``.`` and ``..``."""
    for name, child in entries:
        if name in (".", ".."):
            continue
        yield name, child


class DissectAdapter(ReaderAdapter):
    """A `ReaderAdapter` over a Dissect filesystem; subclasses say `kind`."""

    _fs: Any

    @property
    def root(self) -> Node:
        return self._fs.root

    def size(self, node: Node) -> int:
        return int(node.size)

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        check_dir_size(node)
        yield from without_dots((child.filename, child) for child in node.iterdir())

    def read_link(self, node: Node) -> bytes:
        check_link_size(node)
        data: bytes = node.open().read(node.size)
        return data

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream
