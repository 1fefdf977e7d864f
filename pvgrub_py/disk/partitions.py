"""MBR and GPT partition tables: bytes in, partition entries out.

These two formats are a few fixed-size records, so they are decoded here
rather than through dissect.volume, whose MBR/GPT code numbers logical
partitions differently from GRUB, reads a GPT entry count of 2**32 without
a bound, follows an EBR chain without loop detection, and costs an import.
What GRUB and the UEFI specification say is what matters for
``search``/``root`` to name the same partition:

* **MBR** (the classic IBM PC layout): four 16-byte entries at offset 446,
  the signature ``55 AA`` at 510.  Entry: status (``0x80`` active), CHS
  start, type, CHS end, first LBA (u32 LE, +8), sector count (u32 LE, +12).
  Types 0x05, 0x0F and 0x85 are extended partitions: a chain of EBRs, each
  holding one logical partition (its LBA relative to that EBR) and a link
  to the next EBR (relative to the start of the extended partition).
  GRUB numbers primary entries 1-4 by slot and logical partitions from 5
  in chain order (``hd0,msdos5``).
* **GPT** (UEFI 2.10, section 5.3): a protective MBR with type 0xEE, the
  header at LBA 1 ("EFI PART", header CRC32 over HeaderSize bytes with the
  CRC field zeroed, MyLBA, AlternateLBA, PartitionEntryLBA,
  NumberOfPartitionEntries, SizeOfPartitionEntry = 128 * 2**n, and the
  CRC32 of the entry array).  A header that fails these checks is ignored
  and the backup at AlternateLBA (normally the last LBA) is used, as the
  specification requires.  Entries are 128-byte records: type GUID, unique
  GUID, first and last LBA (inclusive), attributes, a UTF-16LE name.  GRUB
  numbers them by array index + 1 (``hd0,gpt2``), skipping unused slots.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from pvgrub_py.disk.errors import disk_error
from pvgrub_py.disk.guid import mixed_endian_guid_text
from pvgrub_py.named_tuple import NamedTuple

ReadAt = Callable[[int, int], bytes]

MBR_SIGNATURE = b"\x55\xaa"
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
GPT_PROTECTIVE = 0xEE
GPT_SIGNATURE = b"EFI PART"

#: Logical partitions followed at most (Linux's ``DISK_MAX_PARTS`` is 256).
MAX_LOGICAL = 128
#: Largest GPT entry array read; the usual one is 128 * 128 bytes = 16 KiB.
MAX_GPT_ARRAY_BYTES = 1 << 20

GPT_TYPE_NAMES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
}
GPT_LVM = "e6d6d379-f507-44c2-a23c-238f2a3df928"
#: The type GUID of an unused GPT entry (UEFI 2.10 table 5.7).
_UNUSED_TYPE = bytes(16)
MBR_LVM = 0x8E


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class PartitionEntry(NamedTuple):
    """One partition as GRUB numbers it.

    *start* and *size* are in bytes from the start of the disk.  *type* is
    the MBR type byte or the GPT type GUID (lowercase text, as ``str(uuid.UUID)``).
    """

    scheme: str  # "msdos" or "gpt", GRUB's partition map names
    number: int
    start: int
    size: int
    type: int | str
    active: bool = False
    name: str = ""

    @property
    def is_lvm(self) -> bool:
        return self.type in (MBR_LVM, GPT_LVM)

    @property
    def type_name(self) -> str:
        if isinstance(self.type, str):
            return GPT_TYPE_NAMES.get(self.type, str(self.type))
        return f"type 0x{self.type:02x}"


class _MbrSlot(NamedTuple):
    status: int
    type: int
    lba: int
    sectors: int


def _mbr_slots(sector: bytes) -> list[_MbrSlot]:
    slots = []
    for i in range(4):
        raw = sector[446 + 16 * i : 462 + 16 * i]
        status, ptype, lba, count = raw[0], raw[4], *struct.unpack_from("<II", raw, 8)
        slots.append(_MbrSlot(status, ptype, lba, count))
    return slots


def has_mbr_signature(sector0: bytes) -> bool:
    return len(sector0) >= 512 and sector0[510:512] == MBR_SIGNATURE


def is_protective_mbr(sector0: bytes) -> bool:
    return has_mbr_signature(sector0) and any(s.type == GPT_PROTECTIVE for s in _mbr_slots(sector0))


def plausible_mbr(sector0: bytes, disk_size: int) -> bool:
    """Does sector 0 look like a partition table rather than boot code or a VBR?

    Status bytes must be 0x00 or 0x80 and at least one used entry must
    start inside the disk.  (A FAT boot sector also ends in ``55 AA``; the
    caller sniffs for one first.)
    """
    if not has_mbr_signature(sector0):
        return False
    used = [s for s in _mbr_slots(sector0) if s.type != 0]
    if not used or any(s.status not in (0x00, 0x80) for s in _mbr_slots(sector0)):
        return False
    return any(0 < s.lba * 512 < disk_size and s.sectors > 0 for s in used)


def read_mbr(read: ReadAt, disk_size: int, source: str) -> list[PartitionEntry]:
    """Primary and logical partitions of an MBR disk, in GRUB numbering."""
    sector0 = read(0, 512)
    if not has_mbr_signature(sector0):
        raise disk_error(source, "no MBR signature (55 AA) in sector 0")
    parts: list[PartitionEntry] = []
    for slot_no, slot in enumerate(_mbr_slots(sector0), start=1):
        if slot.type == 0 or slot.sectors == 0:
            continue
        if slot.type in EXTENDED_TYPES:
            parts.extend(_read_logical(read, slot.lba, disk_size, source))
            continue
        parts.append(
            PartitionEntry(
                scheme="msdos",
                number=slot_no,
                start=slot.lba * 512,
                size=slot.sectors * 512,
                type=slot.type,
                active=slot.status == 0x80,
            )
        )
    return sorted(parts, key=lambda p: p.number)


def _read_logical(read: ReadAt, ext_lba: int, disk_size: int, source: str) -> list[PartitionEntry]:
    """Follow the EBR chain of an extended partition, bounded and loop-free."""
    parts: list[PartitionEntry] = []
    seen: set[int] = set()
    ebr_lba = ext_lba
    number = 5
    while True:
        if ebr_lba in seen:
            raise disk_error(source, f"the extended partition's EBR chain loops at LBA {ebr_lba}")
        if len(seen) >= MAX_LOGICAL:
            raise disk_error(source, f"more than {MAX_LOGICAL} logical partitions")
        seen.add(ebr_lba)
        if ebr_lba * 512 + 512 > disk_size:
            break  # a truncated image: the logical partitions are not there to read
        ebr = read(ebr_lba * 512, 512)
        if not has_mbr_signature(ebr):
            break  # an empty extended partition, or the end of a damaged chain
        first, link = _mbr_slots(ebr)[:2]
        if first.type != 0 and first.sectors != 0:
            parts.append(
                PartitionEntry(
                    scheme="msdos",
                    number=number,
                    start=(ebr_lba + first.lba) * 512,
                    size=first.sectors * 512,
                    type=first.type,
                    active=first.status == 0x80,
                )
            )
            number += 1
        if link.type not in EXTENDED_TYPES or link.lba == 0:
            break
        ebr_lba = ext_lba + link.lba
    return parts


class GptHeader(NamedTuple):
    my_lba: int
    alternate_lba: int
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int


def _parse_gpt_header(block: bytes, lba: int, sector: int) -> GptHeader | None:
    """The header in *block* if it is valid per UEFI 2.10 section 5.3.2, else None."""
    if len(block) < 92 or block[:8] != GPT_SIGNATURE:
        return None
    (header_size,) = struct.unpack_from("<I", block, 12)
    if not 92 <= header_size <= min(sector, len(block)):
        return None
    (crc,) = struct.unpack_from("<I", block, 16)
    if zlib.crc32(block[:16] + b"\0\0\0\0" + block[20:header_size]) != crc:
        return None
    my_lba, alternate, _first, _last = struct.unpack_from("<QQQQ", block, 24)
    entries_lba, count, size, entries_crc = struct.unpack_from("<QIII", block, 72)
    if my_lba != lba or size < 128 or size & (size - 1) or count == 0:
        return None
    return GptHeader(my_lba, alternate, entries_lba, count, size, entries_crc)


def find_gpt(read: ReadAt, disk_size: int) -> tuple[int, GptHeader] | None:
    """(sector size, valid header) of a GPT disk, primary first, then backup."""
    for sector in (512, 4096):
        if disk_size < 2 * sector:
            continue
        header = _parse_gpt_header(read(sector, sector), 1, sector)
        if header is not None:
            return sector, header
        last_lba = disk_size // sector - 1
        if read(sector, 8) == GPT_SIGNATURE and last_lba > 1:
            backup = _parse_gpt_header(read(last_lba * sector, sector), last_lba, sector)
            if backup is not None:
                return sector, backup
    return None


def read_gpt(read: ReadAt, disk_size: int, source: str) -> list[PartitionEntry]:
    """The used entries of a GPT disk, numbered by slot as GRUB does."""
    found = find_gpt(read, disk_size)
    if found is None:
        raise disk_error(source, "GPT: neither the primary nor the backup header is valid")
    sector, header = found
    array_bytes = header.entry_count * header.entry_size
    if array_bytes > MAX_GPT_ARRAY_BYTES:
        raise disk_error(
            source,
            f"GPT: {header.entry_count} entries of {header.entry_size} bytes exceed "
            f"the {MAX_GPT_ARRAY_BYTES}-byte bound",
        )
    array_start = header.entries_lba * sector
    if array_start + array_bytes > disk_size:
        raise disk_error(source, "GPT: the partition entry array is past the end of the disk")
    array = read(array_start, array_bytes)
    if zlib.crc32(array) != header.entries_crc:
        raise disk_error(source, "GPT: partition entry array CRC32 mismatch")
    parts: list[PartitionEntry] = []
    for index in range(header.entry_count):
        raw = array[index * header.entry_size : index * header.entry_size + 128]
        if raw[:16] == _UNUSED_TYPE:  # most of the usual 128 slots
            continue
        type_guid = mixed_endian_guid_text(raw[:16])
        first, last, attributes = struct.unpack_from("<QQQ", raw, 32)
        if last < first:
            continue
        name = raw[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(
            PartitionEntry(
                scheme="gpt",
                number=index + 1,
                start=first * sector,
                size=(last - first + 1) * sector,
                type=type_guid,
                # Attribute bit 2: "Legacy BIOS bootable" (UEFI 2.10 table 5.8).
                active=bool(attributes & 4),
                name=name,
            )
        )
    return parts
