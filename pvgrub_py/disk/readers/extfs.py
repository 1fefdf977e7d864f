"""ext2/ext3/ext4 through dissect.extfs.

The file type is taken from the inode's ``i_mode`` (ext4 "Inode Table",
``i_mode`` at +0x0), not from the directory entry's ``file_type`` byte that
dissect.extfs prefers: a corrupt or hostile directory entry could otherwise
present a device node as a regular file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from dissect.extfs import ExtFS  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import (
    MAX_DIR_BYTES,
    MAX_LINK_BYTES,
    FileKind,
    Node,
    ReaderAdapter,
    kind_from_mode,
)


class ExtAdapter(ReaderAdapter):
    def __init__(self, fh: BoundedFile, fs_type: str) -> None:
        self._fs: Any = ExtFS(fh)
        self.fs_type = fs_type
        self.uuid = str(self._fs.uuid)
        self.label = self._fs.volume_name or None

    @property
    def root(self) -> Node:
        return self._fs.root

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(int(node.inode.i_mode))

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
        data: bytes = node.open().read(node.size)
        return data

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream
