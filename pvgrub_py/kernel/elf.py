"""A bounds-checked reader for the ELF headers a Xen domain builder looks at.

Only what libelf (xen/common/libelf) reads to build a guest: the ELF
header, program headers (loadable segments and PT_NOTE), section headers
(SHT_NOTE fallback, ``__xen_guest``), and notes.  32- and 64-bit, either
byte order.  Every table and note must lie inside the image; we are
stricter than libelf in refusing loadable segments that overlap in
physical memory or whose file bytes lie outside the image, since a loader
would copy garbage or clobber itself.  Errors name the header field and
its offset in the (decompressed) image.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pvgrub_py.errors import InputError
from pvgrub_py.kernel.limits import MAX_NOTES, MAX_PHDRS, MAX_SHDRS

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 2, 3, 7, 8
EM_386, EM_X86_64, EM_ARM, EM_AARCH64 = 3, 62, 40, 183
MACHINES = {EM_386: "i386", EM_X86_64: "x86_64", EM_ARM: "arm", EM_AARCH64: "aarch64"}

#: struct formats after e_ident, and their field names, per class.
_EHDR = {
    ELFCLASS32: ("HHIIIIIHHHHHH", 52),
    ELFCLASS64: ("HHIQQQIHHHHHH", 64),
}
_EHDR_NAMES = (
    "e_type",
    "e_machine",
    "e_version",
    "e_entry",
    "e_phoff",
    "e_shoff",
    "e_flags",
    "e_ehsize",
    "e_phentsize",
    "e_phnum",
    "e_shentsize",
    "e_shnum",
    "e_shstrndx",
)
_EHDR_OFFSETS = {
    ELFCLASS32: dict(
        zip(_EHDR_NAMES, (16, 18, 20, 24, 28, 32, 36, 40, 42, 44, 46, 48, 50), strict=True)
    ),
    ELFCLASS64: dict(
        zip(_EHDR_NAMES, (16, 18, 20, 24, 32, 40, 48, 52, 54, 56, 58, 60, 62), strict=True)
    ),
}
_PHDR = {ELFCLASS32: ("IIIIIIII", 32), ELFCLASS64: ("IIQQQQQQ", 56)}
_SHDR = {ELFCLASS32: ("IIIIIIIIII", 40), ELFCLASS64: ("IIQQQQIIQQ", 64)}


@dataclass(frozen=True)
class ProgramHeader:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int

    @property
    def loadable(self) -> bool:
        """libelf's ``elf_phdr_is_loadable``: PT_LOAD with any of R, W, X."""
        return self.type == PT_LOAD and bool(self.flags & (PF_R | PF_W | PF_X))


@dataclass(frozen=True)
class SectionHeader:
    index: int
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int


@dataclass(frozen=True)
class Note:
    name: bytes  # without the NUL
    type: int
    desc: bytes
    offset: int  # of the note header in the image
    desc_offset: int


class ElfImage:
    """Parsed headers of one ELF image held in memory."""

    def __init__(self, data: bytes | memoryview, label: str) -> None:
        self.data = memoryview(data)
        self.label = label
        size = len(self.data)
        if size < 16 or bytes(self.data[:4]) != ELF_MAGIC:
            raise InputError(label, "not an ELF image: no \\x7fELF magic at offset 0")
        self.elf_class = self.data[4]
        if self.elf_class not in (ELFCLASS32, ELFCLASS64):
            raise InputError(
                label,
                f"ELF field EI_CLASS at offset 0x4: {self.elf_class} "
                "is neither 1 (32-bit) nor 2 (64-bit)",
            )
        encoding = self.data[5]
        if encoding not in (ELFDATA2LSB, ELFDATA2MSB):
            raise InputError(
                label,
                f"ELF field EI_DATA at offset 0x5: {encoding} is neither "
                "1 (little-endian) nor 2 (big-endian)",
            )
        self.endian = "<" if encoding == ELFDATA2LSB else ">"
        fmt, ehsize = _EHDR[self.elf_class]
        if size < ehsize:
            raise InputError(label, f"truncated ELF header: {size} bytes, need {ehsize}")
        values = struct.unpack_from(self.endian + fmt, self.data, 16)
        self.header = dict(zip(_EHDR_NAMES, values, strict=True))
        self._offsets = _EHDR_OFFSETS[self.elf_class]
        self.machine = self.header["e_machine"]
        self.entry = self.header["e_entry"]
        self.phdrs = self._program_headers()
        self.shdrs = self._section_headers()
        self._check_segments()

    @property
    def bits(self) -> int:
        return 64 if self.elf_class == ELFCLASS64 else 32

    def _field_error(self, field: str, problem: str) -> InputError:
        return InputError(
            self.label, f"ELF field {field} at offset {self._offsets[field]:#x}: {problem}"
        )

    def _table(
        self, off_field: str, num_field: str, ent_field: str, entry_size: int, limit: int
    ) -> tuple[int, int, int]:
        offset, count, entsize = (
            self.header[off_field],
            self.header[num_field],
            self.header[ent_field],
        )
        if count > limit:
            raise self._field_error(num_field, f"{count} entries is more than {limit}")
        if count and entsize < entry_size:
            raise self._field_error(ent_field, f"entry size {entsize} is below {entry_size}")
        # libelf's elf_init bounds the table even when it is empty (count 0):
        # an offset past the end of the image is "Invalid kernel" there too.
        end = offset + count * entsize
        if end > len(self.data):
            raise self._field_error(
                off_field,
                f"table [{offset:#x}, {end:#x}) runs past the "
                f"end of the {len(self.data)}-byte image",
            )
        return offset, count, entsize

    def _program_headers(self) -> tuple[ProgramHeader, ...]:
        fmt, entry = _PHDR[self.elf_class]
        offset, count, entsize = self._table("e_phoff", "e_phnum", "e_phentsize", entry, MAX_PHDRS)
        out = []
        for i in range(count):
            v = struct.unpack_from(self.endian + fmt, self.data, offset + i * entsize)
            if self.elf_class == ELFCLASS64:
                ptype, flags, poff, vaddr, paddr, filesz, memsz, _ = v
            else:
                ptype, poff, vaddr, paddr, filesz, memsz, flags, _ = v
            out.append(ProgramHeader(i, ptype, flags, poff, vaddr, paddr, filesz, memsz))
        return tuple(out)

    def _section_headers(self) -> tuple[SectionHeader, ...]:
        fmt, entry = _SHDR[self.elf_class]
        offset, count, entsize = self._table("e_shoff", "e_shnum", "e_shentsize", entry, MAX_SHDRS)
        raw = []
        for i in range(count):
            v = struct.unpack_from(self.endian + fmt, self.data, offset + i * entsize)
            name, stype, _, addr, soff, ssize, link = v[:7]
            raw.append((i, name, stype, addr, soff, ssize, link))
        strtab = b""
        index = self.header["e_shstrndx"]
        if 0 < index < len(raw):
            _, _, stype, _, soff, ssize, _ = raw[index]
            if stype != SHT_NOBITS and soff + ssize <= len(self.data):
                strtab = bytes(self.data[soff : soff + ssize])
        return tuple(
            SectionHeader(i, _c_string(strtab, name), stype, addr, soff, ssize, link)
            for i, name, stype, addr, soff, ssize, link in raw
        )

    def _check_segments(self) -> None:
        size = len(self.data)
        loadable = []
        for p in self.phdrs:
            if not p.loadable:
                continue
            where = f"ELF program header {p.index} (PT_LOAD)"
            if p.offset + p.filesz > size:
                raise InputError(
                    self.label,
                    f"{where}: file bytes [{p.offset:#x}, "
                    f"{p.offset + p.filesz:#x}) run past the end of the "
                    f"{size}-byte image",
                )
            if p.filesz > p.memsz:
                raise InputError(
                    self.label, f"{where}: p_filesz {p.filesz:#x} exceeds p_memsz {p.memsz:#x}"
                )
            if p.paddr + p.memsz > 1 << self.bits:
                raise InputError(
                    self.label,
                    f"{where}: p_paddr {p.paddr:#x} + p_memsz "
                    f"{p.memsz:#x} overflows the {self.bits}-bit address space",
                )
            if p.memsz:
                loadable.append(p)
        loadable.sort(key=lambda p: p.paddr)
        for a, b in itertools.pairwise(loadable):
            if b.paddr < a.paddr + a.memsz:
                raise InputError(
                    self.label,
                    f"ELF program headers {a.index} and {b.index}: "
                    f"loadable segments overlap in physical memory "
                    f"([{a.paddr:#x}, {a.paddr + a.memsz:#x}) and "
                    f"[{b.paddr:#x}, {b.paddr + b.memsz:#x}))",
                )

    def physical_range(self) -> tuple[int, int] | None:
        """libelf's pstart/pend: lowest p_paddr and highest p_paddr + p_memsz of loadables."""
        loads = [p for p in self.phdrs if p.loadable]
        if not loads:
            return None
        return min(p.paddr for p in loads), max(p.paddr + p.memsz for p in loads)

    def c_string_at(self, offset: int, limit: int = 1 << 16) -> bytes | None:
        """A NUL-terminated string starting at ``offset`` (libelf's ``elf_strval``)."""
        window = bytes(self.data[offset : offset + limit])
        text, nul, _ = window.partition(b"\0")
        return text if nul else None

    def section(self, name: str) -> SectionHeader | None:
        for s in self.shdrs:
            if s.name == name:
                return s
        return None

    def section_bytes(self, s: SectionHeader) -> bytes:
        if s.type == SHT_NOBITS:
            return b""
        if s.offset + s.size > len(self.data):
            raise InputError(
                self.label,
                f"ELF section {s.index} ({s.name or 'unnamed'}): "
                f"[{s.offset:#x}, {s.offset + s.size:#x}) runs past the end of "
                f"the {len(self.data)}-byte image",
            )
        return bytes(self.data[s.offset : s.offset + s.size])

    def notes(self, start: int, end: int, where: str, budget: list[int]) -> Iterator[Note]:
        """Notes in [start, end) of the image; ``budget[0]`` counts down MAX_NOTES overall."""
        size = len(self.data)
        if end > size or start > end:
            raise InputError(
                self.label,
                f"{where}: notes [{start:#x}, {end:#x}) lie outside the {size}-byte image",
            )
        pos = start
        while pos < end:
            if budget[0] <= 0:
                raise InputError(self.label, f"{where}: more than {MAX_NOTES} ELF notes")
            budget[0] -= 1
            if pos + 12 > end:
                raise InputError(
                    self.label,
                    f"ELF note at offset {pos:#x} in {where}: header "
                    f"runs past the end of the notes at {end:#x}",
                )
            namesz, descsz, ntype = struct.unpack_from(self.endian + "III", self.data, pos)
            name_at = pos + 12
            desc_at = name_at + _align4(namesz)
            nxt = desc_at + _align4(descsz)
            if desc_at + descsz > end:
                raise InputError(
                    self.label,
                    f"ELF note at offset {pos:#x} in {where}: namesz "
                    f"{namesz} and descsz {descsz} run past the end of the notes "
                    f"at {end:#x}",
                )
            name = bytes(self.data[name_at : name_at + namesz])
            desc = bytes(self.data[desc_at : desc_at + descsz])
            yield Note(name.split(b"\0", 1)[0], ntype, desc, pos, desc_at)
            pos = nxt


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _c_string(table: bytes, offset: int) -> str:
    if offset >= len(table):
        return ""
    return table[offset:].split(b"\0", 1)[0].decode("ascii", "replace")
