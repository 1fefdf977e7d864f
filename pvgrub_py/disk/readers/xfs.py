"""XFS through dissect.xfs.

As for ext, the type comes from the inode's ``di_mode`` (XFS Algorithms &
Data Structures, "On-disk Inode"), never from the directory entry's
``ftype``.  Directory size is checked before listing because dissect.xfs
walks ``di_size / blocksize`` blocks of a block-format directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dissect.xfs import XFS  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import FileKind, kind_from_mode
from pvgrub_py.disk.readers.dissect_base import DissectAdapter, check_link_size

if TYPE_CHECKING:
    from pvgrub_py.disk.readers.base import Node


class XfsAdapter(DissectAdapter):
    fs_type = "xfs"

    def __init__(self, fh: BoundedFile) -> None:
        self._fs: Any = XFS(fh)
        self.uuid = str(self._fs.uuid)
        self.label = self._fs.name or None

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(int(node.inode.di_mode))

    def read_link(self, node: Node) -> bytes:
        check_link_size(node)
        link: str = node.link
        return link.encode("utf-8", "surrogateescape")
