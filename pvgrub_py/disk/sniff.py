"""Recognise what sits at the start of a volume from a few fixed fields.

Importing a Dissect reader costs about 0.2 s (cstruct compiles its
definitions at import time), so the disk layer first reads the magic
numbers itself and imports only the reader that matches.  The sniff also
picks up the label and UUID from the same superblock, for volume
descriptions; the filesystem reader's values are used once it is open.

Offsets, all from the formats' own documentation:

* ext2/3/4 (kernel.org "ext4 Data Structures and Algorithms", Super
  Block): superblock at byte 1024; ``s_magic`` 0xEF53 at +0x38,
  ``s_log_block_size`` +0x18, ``s_rev_level`` +0x4C, feature words at
  +0x5C/+0x60/+0x64, ``s_uuid`` +0x68, ``s_volume_name`` +0x78.
* XFS (XFS Algorithms & Data Structures, "Superblocks"): ``XFSB`` at 0,
  big-endian; ``sb_blocksize`` +4, ``sb_uuid`` +32, ``sb_fname`` +108.
* Btrfs (btrfs documentation, "On-disk format"): superblock at 64 KiB,
  ``_BHRfS_M`` at +0x40, ``fsid`` +0x20, ``label`` +0x12B.
* FAT (Microsoft FAT specification, "BPB"): jump instruction, bytes per
  sector +11, sectors per cluster +13, reserved sectors +14, FAT count
  +16, media +21; volume ID/label at +39/+43 (FAT12/16) or +67/+71 (FAT32).
* ISO 9660 (ECMA-119, 8.4): primary volume descriptor at byte 32768,
  type 1 then ``CD001``; volume identifier +40; modification date +847.
* LVM2 physical volume (LVM2 ``label.h``/``format_text``): ``LABELONE``
  in one of the first four 512-byte sectors, ``LVM2 001`` at +24.
* qcow2 (QEMU ``docs/interop/qcow2.txt``): ``QFI\\xfb`` at byte 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pvgrub_py.disk.guid import guid_text
from pvgrub_py.named_tuple import NamedTuple

ReadAt = Callable[[int, int], bytes]

EXT_SB = 1024
BTRFS_SB = 0x10000
ISO_PVD = 0x8000


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class Sniffed(NamedTuple):
    """What the first bytes of a volume say it is."""

    kind: str  # ext2 ext3 ext4 xfs btrfs vfat iso9660 lvm2 qcow2
    label: str | None = None
    uuid: str | None = None

    @property
    def is_filesystem(self) -> bool:
        return self.kind in FILESYSTEM_KINDS


FILESYSTEM_KINDS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "iso9660"})


def _safe_read(read: ReadAt, size: int, offset: int, length: int) -> bytes:
    if offset + length > size:
        return b""
    return read(offset, length)


def _text(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return text or None


def sniff_ext(sb: bytes) -> Sniffed | None:
    if len(sb) < 0x88 or sb[0x38:0x3A] != b"\x53\xef":
        return None
    inodes, blocks = struct.unpack_from("<II", sb, 0)
    (log_block,) = struct.unpack_from("<I", sb, 0x18)
    (rev,) = struct.unpack_from("<I", sb, 0x4C)
    if inodes == 0 or blocks == 0 or log_block > 6 or rev > 1:
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    # blkid's rule: features ext3 lacks make it ext4 (extents 0x40, 64bit
    # 0x80, flex_bg 0x200; huge_file 0x8, gdt_csum 0x10, dir_nlink 0x20,
    # extra_isize 0x40, metadata_csum 0x400); a journal (0x4) makes ext3.
    if incompat & (0x40 | 0x80 | 0x200) or ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400):
        kind = "ext4"
    elif compat & 0x4:
        kind = "ext3"
    else:
        kind = "ext2"
    return Sniffed(kind, _text(sb[0x78:0x88]), guid_text(sb[0x68:0x78]))


def sniff_xfs(sb: bytes) -> Sniffed | None:
    if len(sb) < 120 or sb[:4] != b"XFSB":
        return None
    (block_size,) = struct.unpack_from(">I", sb, 4)
    if block_size < 512 or block_size > 65536 or block_size & (block_size - 1):
        return None
    return Sniffed("xfs", _text(sb[108:120]), guid_text(sb[32:48]))


def sniff_btrfs(sb: bytes) -> Sniffed | None:
    if len(sb) < 0x22B or sb[0x40:0x48] != b"_BHRfS_M":
        return None
    return Sniffed("btrfs", _text(sb[0x12B:0x22B]), guid_text(sb[0x20:0x30]))


def sniff_fat(bs: bytes) -> Sniffed | None:
    if len(bs) < 512 or bs[510:512] != b"\x55\xaa" or bs[0] not in (0xEB, 0xE9):
        return None
    bytes_per_sector, per_cluster, reserved, fats = struct.unpack_from("<HBHB", bs, 11)
    (media,) = struct.unpack_from("<B", bs, 21)
    (fat16_size,) = struct.unpack_from("<H", bs, 22)
    if bytes_per_sector not in (512, 1024, 2048, 4096):
        return None
    if per_cluster == 0 or per_cluster & (per_cluster - 1) or reserved == 0 or fats == 0:
        return None
    if media != 0xF0 and media < 0xF8:
        return None
    ext = 36 + 28 if fat16_size == 0 else 36  # FAT32 has 28 more BPB bytes
    (vol_id,) = struct.unpack_from("<I", bs, ext + 3)
    label = _text(bs[ext + 7 : ext + 18])
    if label == "NO NAME":
        label = None
    return Sniffed("vfat", label, f"{vol_id >> 16:04X}-{vol_id & 0xFFFF:04X}")


def iso_uuid(pvd: bytes) -> str | None:
    """GRUB's and blkid's ISO 9660 "UUID": the volume modification date."""
    for at in (847, 830):  # modification, then creation date-time
        stamp = pvd[at : at + 16]
        if stamp.strip(b"0\0 "):
            s = stamp.decode("ascii", "replace")
            return f"{s[0:4]}-{s[4:6]}-{s[6:8]}-{s[8:10]}-{s[10:12]}-{s[12:14]}-{s[14:16]}"
    return None


def sniff_iso(pvd: bytes) -> Sniffed | None:
    if len(pvd) < 881 or pvd[1:6] != b"CD001" or pvd[0] != 1:
        return None
    return Sniffed("iso9660", _text(pvd[40:72]), iso_uuid(pvd))


def sniff_lvm(read: ReadAt, size: int) -> Sniffed | None:
    for sector in range(4):
        raw = _safe_read(read, size, sector * 512, 32)
        if raw[:8] == b"LABELONE" and raw[24:32] == b"LVM2 001":
            return Sniffed("lvm2")
    return None


def sniff(read: ReadAt, size: int) -> Sniffed | None:
    """The format at offset 0 of a volume, or None if nothing is recognised.

    Order matters only for images carrying several signatures: container
    formats first, then the filesystems whose magic sits at a fixed place
    that a partition table cannot occupy.
    """
    head = _safe_read(read, size, 0, 512)
    if head[:4] == b"QFI\xfb":
        return Sniffed("qcow2")
    for found in (
        sniff_xfs(head),
        sniff_ext(_safe_read(read, size, EXT_SB, 256)),
        sniff_btrfs(_safe_read(read, size, BTRFS_SB, 0x300)),
        sniff_fat(head),
        sniff_iso(_safe_read(read, size, ISO_PVD, 2048)),
    ):
        if found is not None:
            return found
    return sniff_lvm(read, size)
