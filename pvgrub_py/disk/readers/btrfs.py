"""Btrfs through dissect.btrfs, with every tree node checked before use.

dissect.btrfs trusts tree nodes completely.  Measured when the readers were
chosen (fuzzed btrfs images): a zeroed node makes its binary search (its
``tree.py``) spin forever (``nritems`` 0 gives ``max_idx`` -1 and the
loop never meets), and that stalled reads can loop too.  So the adapter
subclasses the reader and validates each node as the kernel's
``btrfs_validate_extent_buffer`` does (btrfs documentation, "On-disk
format", Header): the checksum (crc32c over bytes 0x20..nodesize, for
``csum_type`` 0), the node's own logical address (``bytenr`` at +0x30)
equal to the address it was read from, the filesystem UUID (+0x20), a
level below ``BTRFS_MAX_LEVEL`` (8), and 1 <= ``nritems`` <= what fits in
the node.  Random corruption is thereby a clean error instead of a hang.
A *crafted* image with valid checksums can still build a pointer cycle;
that is caught by the disk's time budget (`pvgrub_py.disk.budget`).

Paths are resolved in the top-level subvolume (objectid 5), as upstream
GRUB does; that is why Ubuntu's grub.cfg names ``/@/boot/vmlinuz``.

Compressed extents are bounded: Btrfs never writes a compressed extent
larger than 128 KiB on disk or in memory (``BTRFS_MAX_COMPRESSED``), so a
larger one is corrupt and refused before anything is decompressed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from dissect.btrfs import Btrfs  # type: ignore[import-untyped]
from dissect.btrfs.stream import ExtentStream  # type: ignore[import-untyped]
from dissect.util.hash import crc32c  # type: ignore[import-untyped]

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import FileKind, kind_from_mode
from pvgrub_py.disk.readers.dissect_base import DissectAdapter, without_dots

if TYPE_CHECKING:
    from pvgrub_py.disk.readers.base import Node

HEADER_SIZE = 0x65
ITEM_SIZE = 25  # struct btrfs_item: key (17) + offset (4) + size (4)
KEY_PTR_SIZE = 33  # struct btrfs_key_ptr: key (17) + blockptr (8) + generation (8)
MAX_LEVEL = 8
MAX_COMPRESSED = 128 * 1024
CSUM_CRC32C = 0


class CorruptTreeNode(ValueError):
    """A B-tree node that fails the kernel's validity checks."""


class _CheckedBtrfs(Btrfs):  # type: ignore[misc]
    """dissect's Btrfs whose node reads are validated (see module docstring)."""

    def _read_node(self, address: int) -> bytes:
        data: bytes = super()._read_node(address)
        node_size = int(self.node_size)
        if len(data) != node_size:
            raise CorruptTreeNode(f"tree node at {address:#x}: short read")
        if int(self.sb.csum_type) == CSUM_CRC32C:
            (stored,) = struct.unpack_from("<I", data, 0)
            if crc32c.crc32c(data[0x20:]) != stored:
                raise CorruptTreeNode(f"tree node at {address:#x}: checksum mismatch")
        (bytenr,) = struct.unpack_from("<Q", data, 0x30)
        if bytenr != address:
            raise CorruptTreeNode(f"tree node at {address:#x} claims address {bytenr:#x}")
        fsid = data[0x20:0x30]
        if fsid not in (bytes(self.sb.fsid), bytes(self.sb.metadata_uuid)):
            raise CorruptTreeNode(f"tree node at {address:#x} belongs to another filesystem")
        (nritems,) = struct.unpack_from("<I", data, 0x60)
        level = data[0x64]
        if level >= MAX_LEVEL:
            raise CorruptTreeNode(f"tree node at {address:#x}: level {level}")
        per_item = KEY_PTR_SIZE if level else ITEM_SIZE
        if nritems == 0 or nritems > (node_size - HEADER_SIZE) // per_item:
            raise CorruptTreeNode(f"tree node at {address:#x}: {nritems} items")
        return data


class BtrfsAdapter(DissectAdapter):
    fs_type = "btrfs"

    def __init__(self, fh: BoundedFile) -> None:
        self._fs: Any = _CheckedBtrfs(fh)
        self.uuid = str(self._fs.uuid)
        self.label = self._fs.label or None
        self._root: Any = self._fs.fs_tree.root

    @property
    def root(self) -> Node:
        return self._root

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(int(node.inode.mode))

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        yield from without_dots(node.iterdir())

    def open(self, node: Node) -> BinaryIO:
        stream: Any = node.open()
        if isinstance(stream, ExtentStream):
            for extent in stream.extents:
                if extent.length < 0 or extent.disk_length < 0:
                    raise CorruptTreeNode("file extent with a negative length")
                if extent.compression and (
                    extent.disk_length > MAX_COMPRESSED or extent.length > MAX_COMPRESSED
                ):
                    raise CorruptTreeNode(
                        f"compressed extent of {extent.disk_length} bytes "
                        f"(more than {MAX_COMPRESSED})"
                    )
        result: BinaryIO = stream
        return result
