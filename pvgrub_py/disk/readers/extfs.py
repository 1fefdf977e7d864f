"""ext2/ext3/ext4 through dissect.extfs: no longer what `open_filesystem` picks.

ext volumes are read by our own `pvgrub_py.disk.readers.ext4` (importing
dissect.extfs costs ~45 ms per boot); dissect.extfs stays the tests'
oracle for it.  This adapter is kept only while other modules still name
it (the preload closure check, a test of the child's imports).

The file type is taken from the inode's ``i_mode`` (ext4 "Inode Table",
``i_mode`` at +0x0), not from the directory entry's ``file_type`` byte that
dissect.extfs prefers: a corrupt or hostile directory entry could otherwise
present a device node as a regular file.
"""

from __future__ import annotations

from typing import Any

from dissect.extfs import ExtFS  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import FileKind, Node, kind_from_mode
from pvgrub_py.disk.readers.dissect_base import DissectAdapter


class ExtAdapter(DissectAdapter):
    def __init__(self, fh: BoundedFile, fs_type: str) -> None:
        self._fs: Any = ExtFS(fh)
        self.fs_type = fs_type
        self.uuid = str(self._fs.uuid)
        self.label = self._fs.volume_name or None

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(int(node.inode.i_mode))
