"""Xen ELF notes (xen/include/public/elfnote.h) and the legacy ``__xen_guest`` string.

A PV kernel tells the domain builder how to load it through notes named
"Xen" whose type is a ``XEN_ELFNOTE_*`` number.  libelf decodes each as a
string (up to the next NUL, maybe in the padding) or a number (1, 2, 4 or
8 bytes in the image's byte order); L1_MFN_VALID is a (mask, value) array
of machine words, SUPPORTED_FEATURES a u32 bitmap, PHYS32_RELOC (Xen 4.20)
up to three u32s.  Before notes existed a kernel carried a ``__xen_guest``
section: ``KEY=VALUE`` pairs separated by commas (libelf-dominfo.c
``elf_xen_parse_guest_info``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from pvgrub_py.errors import InputError
from pvgrub_py.kernel.elf import ElfImage, Note

Kind = Literal["str", "num", "words", "u32s", "raw"]

#: XEN_ELFNOTE_* number -> (name, how libelf decodes it).
XEN_ELFNOTES: dict[int, tuple[str, Kind]] = {
    0: ("INFO", "raw"),
    1: ("ENTRY", "num"),
    2: ("HYPERCALL_PAGE", "num"),
    3: ("VIRT_BASE", "num"),
    4: ("PADDR_OFFSET", "num"),
    5: ("XEN_VERSION", "str"),
    6: ("GUEST_OS", "str"),
    7: ("GUEST_VERSION", "str"),
    8: ("LOADER", "str"),
    9: ("PAE_MODE", "str"),
    10: ("FEATURES", "str"),
    11: ("BSD_SYMTAB", "str"),
    12: ("HV_START_LOW", "num"),
    13: ("L1_MFN_VALID", "words"),
    14: ("SUSPEND_CANCEL", "num"),
    15: ("INIT_P2M", "num"),
    16: ("MOD_START_PFN", "num"),
    17: ("SUPPORTED_FEATURES", "num"),
    18: ("PHYS32_ENTRY", "num"),
    # Xen 4.20+ (Linux 6.12+): relocatable PVH, up to three u32: align, min, max.
    # Xen 4.17's libelf does not know it and ignores it.
    19: ("PHYS32_RELOC", "u32s"),
    0x1000001: ("CRASH_INFO", "raw"),
    0x1000002: ("CRASH_REGS", "raw"),
    0x2000000: ("DUMPCORE_NONE", "raw"),
    0x2000001: ("DUMPCORE_HEADER", "raw"),
    0x2000002: ("DUMPCORE_XEN_VERSION", "raw"),
    0x2000003: ("DUMPCORE_FORMAT_VERSION", "raw"),
}
NUMBERS = {name: number for number, (name, _) in XEN_ELFNOTES.items()}
XEN_NOTE_NAME = b"Xen"

NoteValue = int | str | tuple[int, ...] | None


@dataclass(frozen=True)
class XenNote:
    type: int
    name: str  # "unknown" for numbers elfnote.h does not define
    value: NoteValue  # None: undecodable ("raw") descriptor, see ``desc``
    desc: bytes
    offset: int  # of the note header in the ELF image (-1 for __xen_guest)

    @property
    def value_text(self) -> str:
        if isinstance(self.value, str):
            return f'"{self.value}"'
        if isinstance(self.value, int):
            return f"{self.value:#x}"
        if isinstance(self.value, tuple):
            return "[" + ", ".join(f"{v:#x}" for v in self.value) + "]"
        return self.desc.hex() or "(empty)"


def decode_note(elf: ElfImage, note: Note) -> XenNote:
    name, kind = XEN_ELFNOTES.get(note.type, ("unknown", "raw"))
    where = f"Xen ELF note {name} (type {note.type}) at offset {note.offset:#x}"
    value: NoteValue = None
    if kind == "str":
        # libelf's elf_strval reads up to the NUL, which Linux's FEATURES note
        # (.ascii, no NUL) leaves to the descriptor's padding.
        text = elf.c_string_at(note.desc_offset)
        if text is None:
            raise InputError(elf.label, f"{where}: string has no NUL terminator in the image")
        value = text.decode("utf-8", "replace")
    elif kind == "num":
        size = len(note.desc)
        if size not in (1, 2, 4, 8):
            raise InputError(elf.label, f"{where}: descsz {size} is not 1, 2, 4 or 8")
        value = int.from_bytes(note.desc, "little" if elf.endian == "<" else "big")
    elif kind == "words":
        word = elf.bits // 8
        if not note.desc or len(note.desc) % word:
            raise InputError(
                elf.label,
                f"{where}: descsz {len(note.desc)} is not a multiple of the {word}-byte word",
            )
        fmt = elf.endian + ("Q" if word == 8 else "I") * (len(note.desc) // word)
        value = tuple(struct.unpack(fmt, note.desc))
    elif kind == "u32s":
        if len(note.desc) % 4 or len(note.desc) > 12:
            raise InputError(elf.label, f"{where}: descsz {len(note.desc)} is not 0, 4, 8 or 12")
        value = tuple(struct.unpack(elf.endian + "I" * (len(note.desc) // 4), note.desc))
    return XenNote(note.type, name, value, note.desc, note.offset)


def is_xen_note(note: Note) -> bool:
    return note.name == XEN_NOTE_NAME


@dataclass(frozen=True)
class GuestInfoEntry:
    key: str
    value: str


def parse_guest_info(text: bytes) -> list[GuestInfoEntry]:
    """The ``__xen_guest`` string: ``KEY=VALUE`` (or bare ``KEY``) separated by commas.

    libelf truncates keys at 31 and values at 127 bytes; so do we.
    """
    entries = []
    body = text.split(b"\0", 1)[0]
    for item in body.split(b","):
        if not item:
            continue
        key, _, value = item.partition(b"=")
        entries.append(
            GuestInfoEntry(
                key[:31].decode("ascii", "replace"), value[:127].decode("ascii", "replace")
            )
        )
    return entries
