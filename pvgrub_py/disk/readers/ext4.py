"""ext2/ext3/ext4, read by our own narrow reader: what a boot needs, no more.

It replaces dissect.extfs on the boot path: importing that costs ~45 ms
(dissect.cstruct compiles its structure definitions at import), on every
ext boot.  This module and `ext4_runs` use only `struct`.

Read: the superblock; group descriptors (32-byte, or ``s_desc_size``
with ``64bit``; ``meta_bg``); inodes of any ``s_inode_size``; regular
files and directories through extent trees or ext2/3 block maps
(`ext4_runs`), or inline data (``i_block`` then the in-inode
``system.data`` attribute); directories by a linear scan of their
entries (htree directories are valid linear directories); fast symlinks
(target in ``i_block``) and slow ones.  The journal is ignored, as GRUB
ignores it.  The file type is the inode's ``i_mode``, never the directory
entry's ``file_type`` byte: a corrupt entry must not present a device
node as a regular file.

Refused, one line each: compression, a journal device, ``dirdata``,
``bigalloc`` and unknown incompatible features (`UnsupportedFeature`);
encrypted inodes and e2compr-compressed ones; data that contradicts the
format (`Ext4Corrupt`).  Both are ``ValueError``, which
`pvgrub_py.disk.errors.reader_boundary` reports as corrupt data.

Facts and offsets from kernel.org "ext4 Data Structures and Algorithms":
"Super Block" (``s_inodes_count`` +0x0, ``s_blocks_count_lo`` +0x4,
``s_first_data_block`` +0x14, ``s_log_block_size`` +0x18,
``s_log_cluster_size`` +0x1C, ``s_blocks_per_group`` +0x20,
``s_inodes_per_group`` +0x28, ``s_magic`` +0x38, ``s_rev_level`` +0x4C,
``s_inode_size`` +0x58, features +0x5C/+0x60/+0x64, ``s_uuid`` +0x68,
``s_volume_name`` +0x78, ``s_desc_size`` +0xFE, ``s_first_meta_bg``
+0x104, ``s_blocks_count_hi`` +0x150, ``s_backup_bgs`` +0x24C); "Block
Group Descriptors" (``bg_inode_table_lo`` +0x8, ``_hi`` +0x28) and "Meta
Block Groups"; "Index Nodes" (``i_mode`` +0x0, ``i_size_lo`` +0x4,
``i_flags`` +0x20, ``i_block`` +0x28, ``i_size_high`` +0x6C,
``i_extra_isize`` +0x80); "Extended Attributes" (in-inode attributes
after ``i_extra_isize``: magic 0xEA020000, 16-byte entries, values
relative to the first entry); "Inline Data"; "Directory Entries"
(``inode``, ``rec_len``, ``name_len``, ``file_type``, name; a 64 KiB
block's full-block ``rec_len`` is stored as 65535); "Symbolic Links".
"""

from __future__ import annotations

import io
import struct
from collections.abc import Generator, Iterator

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.guid import guid_text
from pvgrub_py.disk.readers.base import (
    MAX_DIR_BYTES,
    MAX_LINK_BYTES,
    FileKind,
    ReaderAdapter,
    UnsupportedFeature,
    kind_from_mode,
)
from pvgrub_py.disk.readers.ext4_runs import (
    LOGICAL_LIMIT,
    Ext4Corrupt,
    Run,
    RunStream,
    blockmap_runs,
    byte_runs,
    extent_runs,
)

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO

    from pvgrub_py.disk.readers.base import Node

SUPERBLOCK_AT = 1024
MAGIC = 0xEF53
ROOT_INO = 2

# Feature bits ("Super Block").
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
#: What this reader reads: filetype, recover (the journal is ignored),
#: meta_bg, extents, 64bit, mmp, flex_bg, ea_inode, csum_seed, largedir,
#: inline_data, encrypt (encrypted inodes are refused one by one), casefold.
INCOMPAT_READ = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000
INCOMPAT_READ |= 0x8000 | 0x10000 | 0x20000
INCOMPAT_NAMES = {0x1: "compression", 0x8: "journal_dev", 0x1000: "dirdata"}
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_BIGALLOC = 0x200

# Inode flags ("Index Nodes", i_flags).
FL_COMPRBLK = 0x200
FL_ENCRYPT = 0x800
FL_EXTENTS = 0x80000
FL_INLINE_DATA = 0x10000000

#: Bytes of ``i_block``; a symlink target shorter than this is stored there.
I_BLOCK_BYTES = 60
XATTR_MAGIC = 0xEA020000
#: ``system.data``: attribute name index 7 ("system.") and name "data".
INLINE_XATTR = (7, b"data")
#: Inodes kept parsed (a lookup walks a few directories).
INODE_CACHE = 1024

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_DIRENT = struct.Struct("<IHBB")
_XATTR = struct.Struct("<BBHIII")


class Inode:
    """The fields of one on-disk inode that reading needs."""

    __slots__ = ("flags", "i_block", "ino", "mode", "raw", "size")
    flags: int
    mode: int
    size: int

    def __init__(self, ino: int, raw: bytes) -> None:
        self.ino = ino
        self.raw = raw
        self.mode = _U16.unpack_from(raw, 0)[0]
        self.flags = _U32.unpack_from(raw, 0x20)[0]
        self.i_block = raw[0x28 : 0x28 + I_BLOCK_BYTES]
        self.size = _U32.unpack_from(raw, 0x4)[0] | (_U32.unpack_from(raw, 0x6C)[0] << 32)


class Ext4Adapter(ReaderAdapter):
    def __init__(self, fh: BoundedFile, fs_type: str) -> None:
        self._fh = fh
        self.fs_type = fs_type
        sb = fh.pread(SUPERBLOCK_AT, 1024)
        (magic,) = _U16.unpack_from(sb, 0x38)
        if magic != MAGIC:
            raise Ext4Corrupt(f"superblock magic {magic:#06x}, not {MAGIC:#06x}")
        inodes, blocks_lo, first_data, log_block, log_cluster, per_group = struct.unpack_from(
            "<II12xIIII", sb, 0
        )
        (inodes_per_group,) = _U32.unpack_from(sb, 0x28)
        (rev,) = _U32.unpack_from(sb, 0x4C)
        compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
        if log_block > 6:
            raise Ext4Corrupt(f"block size 2^{10 + log_block} is over 64 KiB")
        bs = 1024 << log_block
        self.block_size = bs
        unknown = incompat & ~INCOMPAT_READ
        if unknown:
            bit = unknown & -unknown
            raise UnsupportedFeature(
                f"ext feature {INCOMPAT_NAMES.get(bit, f'incompat {bit:#x}')} is not supported"
            )
        if ro_compat & RO_COMPAT_BIGALLOC or log_cluster != log_block:
            raise UnsupportedFeature("ext feature bigalloc is not supported")
        blocks = blocks_lo
        if incompat & INCOMPAT_64BIT:
            blocks |= _U32.unpack_from(sb, 0x150)[0] << 32
        self.blocks_count = blocks
        if rev > 1:
            raise Ext4Corrupt(f"revision {rev}")
        inode_size = _U16.unpack_from(sb, 0x58)[0] if rev else 128
        if inode_size < 128 or inode_size > bs or inode_size & (inode_size - 1):
            raise Ext4Corrupt(f"inode size {inode_size}")
        self.inode_size = inode_size
        if not 0 < per_group <= 8 * bs or not 0 < inodes_per_group <= 8 * bs:
            raise Ext4Corrupt(f"{per_group} blocks and {inodes_per_group} inodes per group")
        if first_data >= blocks or (bs == 1024 and first_data == 0):
            raise Ext4Corrupt(f"first data block {first_data} of {blocks}")
        self.first_data = first_data
        self.per_group = per_group
        self.inodes_per_group = inodes_per_group
        self.groups = -(-(blocks - first_data) // per_group)
        if not ROOT_INO <= inodes <= self.groups * inodes_per_group:
            raise Ext4Corrupt(f"{inodes} inodes in {self.groups} groups")
        self.inodes_count = inodes
        if incompat & INCOMPAT_64BIT:
            desc = _U16.unpack_from(sb, 0xFE)[0]
            if desc < 64 or desc > 1024 or desc & (desc - 1):
                raise Ext4Corrupt(f"group descriptor size {desc}")
        else:
            desc = 32
        self.desc_size = desc
        self.first_meta_bg = _U32.unpack_from(sb, 0x104)[0] if incompat & INCOMPAT_META_BG else None
        self.sparse_super = bool(ro_compat & RO_COMPAT_SPARSE_SUPER)
        self.backup_bgs = (
            struct.unpack_from("<II", sb, 0x24C) if compat & COMPAT_SPARSE_SUPER2 else None
        )
        self.uuid = guid_text(sb[0x68:0x78])
        label = sb[0x78:0x88].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        self.label = label or None
        self._tables: dict[int, int] = {}
        self._inodes: dict[int, Inode] = {}

    # -- layout ----------------------------------------------------------
    def _read_block(self, block: int) -> bytes:
        return self._fh.pread(block * self.block_size, self.block_size)

    def _has_super(self, group: int) -> bool:
        """Does *group* start with a superblock copy ("Super Block", sparse_super)?"""
        if group == 0:
            return True
        if self.backup_bgs is not None:
            return group in self.backup_bgs
        if not self.sparse_super or group == 1:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def _inode_table(self, group: int) -> int:
        cached = self._tables.get(group)
        if cached is not None:
            return cached
        if group >= self.groups:
            raise Ext4Corrupt(f"group {group} of {self.groups}")
        per_block = self.block_size // self.desc_size
        meta = group // per_block
        if self.first_meta_bg is not None and meta >= self.first_meta_bg:
            first = meta * per_block
            block = self.first_data + first * self.per_group + self._has_super(first)
        else:
            block = self.first_data + 1 + meta
        if block >= self.blocks_count:
            raise Ext4Corrupt(f"descriptor of group {group} at block {block}, past the last block")
        raw = self._fh.pread(
            block * self.block_size + (group % per_block) * self.desc_size, self.desc_size
        )
        table: int = _U32.unpack_from(raw, 0x8)[0]
        if self.desc_size >= 64:
            table |= _U32.unpack_from(raw, 0x28)[0] << 32
        if table >= self.blocks_count:
            raise Ext4Corrupt(f"inode table of group {group} at block {table}, past the last block")
        self._tables[group] = table
        return table

    def _inode(self, ino: int) -> Inode:
        node = self._inodes.get(ino)
        if node is not None:
            return node
        if not isinstance(ino, int) or not 1 <= ino <= self.inodes_count:
            raise Ext4Corrupt(f"inode {ino} out of range 1-{self.inodes_count}")
        group, index = divmod(ino - 1, self.inodes_per_group)
        at = self._inode_table(group) * self.block_size + index * self.inode_size
        if at + self.inode_size > self.blocks_count * self.block_size:
            raise Ext4Corrupt(f"inode {ino} lies past the last block")
        node = Inode(ino, self._fh.pread(at, self.inode_size))
        if len(self._inodes) >= INODE_CACHE:
            self._inodes.clear()
        self._inodes[ino] = node
        return node

    def _readable(self, node: Inode) -> None:
        if node.flags & FL_ENCRYPT:
            raise UnsupportedFeature(f"inode {node.ino} is encrypted")
        if node.flags & FL_COMPRBLK:
            raise UnsupportedFeature(f"inode {node.ino} is compressed")
        if node.flags & FL_EXTENTS and node.flags & FL_INLINE_DATA:
            raise Ext4Corrupt(f"inode {node.ino} has both extents and inline data")

    def _inline_xattr(self, node: Inode) -> bytes:
        """The value of *node*'s in-inode ``system.data`` attribute (b"" if none)."""
        raw = node.raw
        if len(raw) <= 128:
            return b""
        start = 128 + _U16.unpack_from(raw, 0x80)[0]
        if start % 4 or start > len(raw):
            raise Ext4Corrupt(f"inode {node.ino} extra size {start - 128}")
        if start + 4 > len(raw) or _U32.unpack_from(raw, start)[0] != XATTR_MAGIC:
            return b""
        first = start + 4
        at = first
        while at + 4 <= len(raw) and _U32.unpack_from(raw, at)[0] != 0:
            if at + _XATTR.size > len(raw):
                raise Ext4Corrupt(f"inode {node.ino} extended attribute runs past the inode")
            name_len, index, offs, value_inum, value_size, _hash = _XATTR.unpack_from(raw, at)
            name = raw[at + 16 : at + 16 + name_len]
            if (index, name) == INLINE_XATTR:
                if value_inum:
                    raise UnsupportedFeature(f"inode {node.ino} keeps inline data in an inode")
                if first + offs + value_size > len(raw):
                    raise Ext4Corrupt(f"inode {node.ino} inline data runs past the inode")
                return raw[first + offs : first + offs + value_size]
            at += (16 + name_len + 3) & ~3
        return b""

    def _inline(self, node: Inode) -> bytes:
        data = node.i_block
        if node.size > len(data):
            data += self._inline_xattr(node)
        if node.size > len(data):
            raise Ext4Corrupt(
                f"inode {node.ino} has {len(data)} bytes of inline data for {node.size}"
            )
        return data[: node.size]

    def _runs(self, node: Inode) -> list[Run]:
        bs = self.block_size
        nblocks = -(-node.size // bs)
        if node.flags & FL_EXTENTS:
            if nblocks > LOGICAL_LIMIT:
                raise Ext4Corrupt(f"inode {node.ino} size {node.size} is past the last extent")
            blocks = extent_runs(node.i_block, nblocks, self._read_block, self.blocks_count)
        else:
            blocks = blockmap_runs(node.i_block, nblocks, self._read_block, self.blocks_count, bs)
        return byte_runs(blocks, bs, node.size)

    def _stream(self, node: Inode) -> BinaryIO:
        self._readable(node)
        if node.flags & FL_INLINE_DATA:
            return io.BytesIO(self._inline(node))
        stream: BinaryIO = RunStream(self._fh, self._runs(node), node.size)  # type: ignore[assignment]
        return stream

    # -- ReaderAdapter -----------------------------------------------------
    @property
    def root(self) -> Node:
        return ROOT_INO

    def kind(self, node: Node) -> FileKind:
        return kind_from_mode(self._inode(node).mode)

    def size(self, node: Node) -> int:
        return self._inode(node).size

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        inode = self._inode(node)
        if kind_from_mode(inode.mode) is not FileKind.DIRECTORY:
            raise NotADirectoryError(f"inode {inode.ino} is not a directory")
        if inode.size > MAX_DIR_BYTES:
            raise OverflowError(f"directory claims {inode.size} bytes")
        self._readable(inode)
        if inode.flags & FL_INLINE_DATA:
            # "Inline Data": the parent's inode number, then entries in the
            # rest of i_block, then more entries in system.data.
            yield from self._entries(inode.i_block[4:], inode.ino)
            if inode.size > I_BLOCK_BYTES:
                yield from self._entries(self._inline_xattr(inode), inode.ino)
            return
        stream = self._stream(inode)
        bs = self.block_size
        for _ in range(-(-inode.size // bs)):
            more = yield from self._entries(stream.read(bs), inode.ino)
            if not more:
                return

    def _entries(self, block: bytes, ino: int) -> Generator[tuple[str, Node], None, bool]:
        """The entries of one directory block; returns False at a zero ``rec_len``."""
        end = len(block)
        pos = 0
        while pos + 8 <= end:
            # name_len is one byte with or without the filetype feature: the
            # next byte is the file type or zero (e2fsprogs, Linux and GRUB
            # all read it so), never the high byte of a 64 KiB name.
            child, rec_len, name_len, _ftype = _DIRENT.unpack_from(block, pos)
            if pos == 0 and rec_len in (0, 65535) and end == 65536:
                rec_len = 65536  # a whole 64 KiB block
            elif rec_len == 0:
                return False  # GRUB and dissect stop listing here too
            if rec_len < 8 or rec_len % 4 or pos + rec_len > end:
                raise Ext4Corrupt(f"directory {ino}: entry at byte {pos} has length {rec_len}")
            if child:
                if not 0 < name_len <= rec_len - 8:
                    raise Ext4Corrupt(
                        f"directory {ino}: entry at byte {pos} has a {name_len}-byte name"
                    )
                name = block[pos + 8 : pos + 8 + name_len].decode("utf-8", "surrogateescape")
                if name not in (".", ".."):
                    yield name, child
            pos += rec_len
        return True

    def read_link(self, node: Node) -> bytes:
        inode = self._inode(node)
        if inode.size > MAX_LINK_BYTES:
            raise OverflowError(f"symlink target of {inode.size} bytes")
        self._readable(inode)
        if not inode.flags & (FL_EXTENTS | FL_INLINE_DATA) and inode.size < I_BLOCK_BYTES:
            return inode.i_block[: inode.size]  # a fast symlink ("Symbolic Links")
        return self._stream(inode).read(inode.size)

    def open(self, node: Node) -> BinaryIO:
        return self._stream(self._inode(node))
