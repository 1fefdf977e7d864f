"""XFS through dissect.xfs.

As for ext, the type comes from the inode's ``di_mode`` (XFS Algorithms &
Data Structures, "On-disk Inode"), never from the directory entry's
``ftype``.  Directory size is checked before listing because dissect.xfs
walks ``di_size / blocksize`` blocks of a block-format directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from dissect.xfs import XFS  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import (
    MAX_DIR_BYTES,
    MAX_LINK_BYTES,
    FileKind,
    Node,
    ReaderAdapter,
    kind_from_mode,
)


class XfsAdapter(ReaderAdapter):
    fs_type = "xfs"

    def __init__(self, fh: BoundedFile) -> None:
        self._fs: Any = XFS(fh)
        self.uuid = str(self._fs.uuid)
        self.label = self._fs.name or None

    @property
    def root(self) -> Node:
        return self._fs.root

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(int(node.inode.di_mode))

    def size(self, node: Node) -> int:
        return int(node.size)

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        if node.size > MAX_DIR_BYTES:
            raise OverflowError(f"directory claims {node.size} bytes")
        for child in node.iterdir():
            name = child.filename
            if name in (".", ".."):
                continue
            yield name, child

    def read_link(self, node: Node) -> bytes:
        if node.size > MAX_LINK_BYTES:
            raise OverflowError(f"symlink target of {node.size} bytes")
        link: str = node.link
        return link.encode("utf-8", "surrogateescape")

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream
