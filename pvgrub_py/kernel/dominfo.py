"""What Xen's domain builder derives from the notes: addresses, features, guest type.

This restates, for one container type at a time, what libelf's
``elf_xen_parse`` (libelf-dominfo.c) and libxenguest's ELF loader
(xg_dom_elfloader.c, ``xc_dom_parse_elf_kernel``) decide:

* notes come from PT_NOTE segments (skipping those with ``p_offset == 0``),
  else from SHT_NOTE sections, else (PV only) from ``__xen_guest``;
* a PV kernel must name the "generic" loader or a "linux" guest OS, and
  Xen version "xen-3.0"; an HVM container accepts a kernel with
  PHYS32_ENTRY (PVH) on that note alone;
* VIRT_BASE defaults to 0 (forced to 0 for PVH), ELF_PADDR_OFFSET to 0 with
  notes or to VIRT_BASE with ``__xen_guest``; the kernel spans libelf's
  physical range shifted by ``virt_base - elf_paddr_offset``; the entry
  (ENTRY, else e_entry; PHYS32_ENTRY for PVH) must lie inside it, as must
  VIRT_BASE below it, and INIT_P2M outside it;
* the guest type is ``xen-3.0-x86_64`` for x86-64, ``xen-3.0-x86_32p`` or
  ``-x86_32`` for i386 by PAE_MODE, ``hvm-3.0-x86_32`` for PVH; the host
  must list it in XENVER_capabilities (``xc_dom_compat_check``).

A kernel that fails these is not malformed, it just will not boot that way,
so the outcome is a `GuestVerdict` with a reason, not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pvgrub_py.kernel import elf as elfmod
from pvgrub_py.kernel.elf import ElfImage
from pvgrub_py.kernel.limits import MAX_NOTES
from pvgrub_py.kernel.xen_notes import NUMBERS, XenNote, decode_note, is_xen_note, parse_guest_info

Container = Literal["pv", "pvh"]
#: An x86-64 Xen 4.17 host with 32-bit PV and HVM enabled (``xl info``'s xen_caps).
X86_64_HOST_CAPS = (
    "xen-3.0-x86_64",
    "xen-3.0-x86_32p",
    "hvm-3.0-x86_32",
    "hvm-3.0-x86_32p",
    "hvm-3.0-x86_64",
)
#: elfnote.h / libelf feature names by XENFEAT bit (xen/include/public/features.h).
FEATURE_NAMES = {
    0: "writable_page_tables",
    1: "writable_descriptor_tables",
    2: "auto_translated_physmap",
    3: "supervisor_mode_kernel",
    4: "pae_pgdir_above_4gb",
    8: "hvm_callback_vector",
    11: "dom0",
}
FEATURE_BITS = {name: bit for bit, name in FEATURE_NAMES.items()}
XENFEAT_DOM0 = 11
PAE_MODES = ("no", "yes", "extended-cr3", "bimodal")  # XEN_PAE_NO..XEN_PAE_BIMODAL


@dataclass(frozen=True)
class XenNotes:
    """The Xen notes libelf would use, and where it found them."""

    source: str | None  # "PT_NOTE", "SHT_NOTE", "__xen_guest" or None
    notes: tuple[XenNote, ...]
    guest_info: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Layout:
    """``struct elf_dom_parms`` after ``elf_xen_addr_calc_check``."""

    virt_base: int
    elf_paddr_offset: int
    virt_offset: int
    virt_kstart: int
    virt_kend: int
    virt_entry: int
    p2m_base: int | None
    virt_hypercall: int | None


@dataclass(frozen=True)
class GuestVerdict:
    container: Container
    bootable: bool
    guest_type: str | None
    reason: str | None
    layout: Layout | None = None
    features_supported: int = 0
    features_required: int = 0


@dataclass
class _Parms:
    loader: str = ""
    guest_os: str = ""
    guest_ver: str = ""
    xen_ver: str = ""
    pae: int = 0
    bsd_symtab: bool = False
    virt_base: int | None = None
    virt_entry: int | None = None
    virt_hypercall: int | None = None
    p2m_base: int | None = None
    elf_paddr_offset: int | None = None
    phys_entry: int | None = None
    f_supported: int = 0
    f_required: int = 0
    errors: list[str] = field(default_factory=list)


def collect_notes(image: ElfImage, hvm: bool) -> XenNotes:
    """libelf's search order: PT_NOTE, then SHT_NOTE, then (PV) ``__xen_guest``."""
    budget = [MAX_NOTES]
    found: list[XenNote] = []
    for p in image.phdrs:
        if p.type != elfmod.PT_NOTE or p.offset == 0:
            continue
        where = f"ELF program header {p.index} (PT_NOTE)"
        for note in image.notes(p.offset, p.offset + p.filesz, where, budget):
            if is_xen_note(note):
                found.append(decode_note(image, note))
    if found:
        return XenNotes("PT_NOTE", tuple(found))
    for s in image.shdrs[1:]:
        if s.type != elfmod.SHT_NOTE:
            continue
        where = f"ELF section {s.index} ({s.name or 'unnamed'}, SHT_NOTE)"
        for note in image.notes(s.offset, s.offset + s.size, where, budget):
            if is_xen_note(note):
                found.append(decode_note(image, note))
    if found:
        return XenNotes("SHT_NOTE", tuple(found))
    if not hvm:
        section = image.section("__xen_guest")
        if section is not None:
            entries = parse_guest_info(image.section_bytes(section))
            return XenNotes("__xen_guest", (), tuple((e.key, e.value) for e in entries))
    return XenNotes(None, ())


def parse_features(text: str, parms: _Parms) -> None:
    """FEATURES: ``name|!name|...``; ``!`` marks required; unknown required is fatal."""
    for item in text.split("|"):
        item = item[:63]
        required = item.startswith("!")
        bit = FEATURE_BITS.get(item[1:] if required else item)
        if bit is None:
            if required:
                parms.errors.append(f"FEATURES requires {item[1:]!r}, which Xen does not know")
            continue
        parms.f_supported |= 1 << bit
        if required:
            parms.f_required |= 1 << bit


def _apply_note(note: XenNote, parms: _Parms) -> None:
    v = note.value
    match note.name:
        case "LOADER" if isinstance(v, str):
            parms.loader = v
        case "GUEST_OS" if isinstance(v, str):
            parms.guest_os = v
        case "GUEST_VERSION" if isinstance(v, str):
            parms.guest_ver = v
        case "XEN_VERSION" if isinstance(v, str):
            parms.xen_ver = v
        case "PAE_MODE" if isinstance(v, str):
            if v == "yes":
                parms.pae = 2
            if "bimodal" in v:
                parms.pae = 3
        case "BSD_SYMTAB" if isinstance(v, str):
            parms.bsd_symtab = parms.bsd_symtab or v == "yes"
        case "FEATURES" if isinstance(v, str):
            parse_features(v, parms)
        case "SUPPORTED_FEATURES" if isinstance(v, int):
            parms.f_supported |= v & 0xFFFFFFFF
        case "VIRT_BASE" if isinstance(v, int):
            parms.virt_base = v
        case "ENTRY" if isinstance(v, int):
            parms.virt_entry = v
        case "INIT_P2M" if isinstance(v, int):
            parms.p2m_base = v
        case "PADDR_OFFSET" if isinstance(v, int):
            parms.elf_paddr_offset = v
        case "HYPERCALL_PAGE" if isinstance(v, int):
            parms.virt_hypercall = v
        case "PHYS32_ENTRY" if isinstance(v, int):
            parms.phys_entry = v & 0xFFFFFFFF


def _apply_guest_info(entries: tuple[tuple[str, str], ...], parms: _Parms) -> None:
    if not entries:
        return
    for key, value in entries:
        number = _strtoull(value)
        match key:
            case "LOADER":
                parms.loader = value
            case "GUEST_OS":
                parms.guest_os = value
            case "GUEST_VER":
                parms.guest_ver = value
            case "XEN_VER":
                parms.xen_ver = value
            case "PAE":
                parms.pae = (
                    2
                    if value == "yes[extended-cr3]"
                    else 1
                    if value.startswith("yes")
                    else parms.pae
                )
            case "BSD_SYMTAB":
                parms.bsd_symtab = True
            case "VIRT_BASE":
                parms.virt_base = number
            case "VIRT_ENTRY":
                parms.virt_entry = number
            case "ELF_PADDR_OFFSET":
                parms.elf_paddr_offset = number
            case "HYPERCALL_PAGE":
                parms.virt_hypercall = (number << 12) & ((1 << 64) - 1)
            case "FEATURES":
                parse_features(value, parms)
    if parms.virt_base is not None and parms.virt_hypercall is not None:
        parms.virt_hypercall = (parms.virt_hypercall + parms.virt_base) & ((1 << 64) - 1)


def _strtoull(text: str) -> int:
    """C's strtoull(s, NULL, 0) on a prefix: 0x hex, leading 0 octal, else decimal."""
    s = text.strip()
    base, digits = 10, "0123456789"
    if s[:2].lower() == "0x":
        base, digits, s = 16, "0123456789abcdef", s[2:]
    elif s.startswith("0"):
        base, digits = 8, "01234567"
    n = 0
    for ch in s.lower():
        if ch not in digits:
            break
        n = n * base + digits.index(ch)
    return n & ((1 << 64) - 1)


def judge(
    image: ElfImage,
    notes: XenNotes,
    container: Container,
    host_caps: tuple[str, ...] = X86_64_HOST_CAPS,
) -> GuestVerdict:
    """Would Xen build this kernel in a ``container`` (PV, or HVM for PVH) domain?"""
    hvm = container == "pvh"
    if hvm and notes.source == "__xen_guest":
        notes = XenNotes(None, ())
    parms = _Parms()
    for note in notes.notes:
        _apply_note(note, parms)
    _apply_guest_info(notes.guest_info, parms)

    def verdict(
        reason: str | None, layout: Layout | None = None, guest_type: str | None = None
    ) -> GuestVerdict:
        return GuestVerdict(
            container,
            reason is None,
            guest_type,
            reason,
            layout,
            parms.f_supported,
            parms.f_required,
        )

    reason = parms.errors[0] if parms.errors else _note_check(image, notes.source, parms, hvm)
    if reason is not None:
        return verdict(reason)
    layout = _addr_calc(image, notes.source, parms, hvm)
    if isinstance(layout, str):
        return verdict(layout)
    reason = _addr_check(layout)
    if reason is None and parms.f_required & (1 << XENFEAT_DOM0):
        reason = "kernel requires the dom0 feature: it cannot run unprivileged (domU)"
    if reason is not None:
        return verdict(reason, layout)
    guest_type = _guest_type(image, parms, hvm, host_caps)
    if guest_type is None:
        return verdict(
            "image not capable of booting inside an HVM container (no PHYS32_ENTRY)", layout
        )
    if guest_type not in host_caps:
        return verdict(
            f"guest type {guest_type} is not supported by an x86-64 Xen host", layout, guest_type
        )
    return verdict(None, layout, guest_type)


def _note_check(image: ElfImage, source: str | None, parms: _Parms, hvm: bool) -> str | None:
    """libelf's ``elf_xen_note_check``: why Xen would not load this image, or None."""
    if source is None:
        if image.machine in (elfmod.EM_386, elfmod.EM_X86_64):
            return "not a Xen-ELF image: no Xen ELF notes and no __xen_guest section"
        return None
    if hvm and parms.phys_entry is not None:
        return None
    if not parms.loader.startswith("generic") and not parms.guest_os.startswith("linux"):
        return (
            f"Xen only loads images for the generic loader or Linux "
            f"(LOADER {parms.loader!r}, GUEST_OS {parms.guest_os!r}) or with PHYS32_ENTRY"
        )
    if not parms.xen_ver.startswith("xen-3.0"):
        return f"Xen only loads images built for Xen 3.0 (XEN_VERSION {parms.xen_ver!r})"
    return None


def _addr_calc(image: ElfImage, source: str | None, parms: _Parms, hvm: bool) -> Layout | str:
    """libelf's ``elf_xen_addr_calc_check``, its calculation: the layout, or why none."""
    span = image.physical_range()
    if span is None:
        return "no loadable ELF segment"
    # Xen 4.17's libelf (xen/common/libelf/libelf-dominfo.c, elf_xen_addr_calc_check)
    # refuses this for PV and PVH alike; a later libelf fix ("don't punish PVH for
    # ELF_PADDR_OFFSET without VIRT_BASE") exempts PVH.  We judge as the 4.17 host does.
    if parms.elf_paddr_offset is not None and parms.virt_base is None:
        return "ELF_PADDR_OFFSET set but VIRT_BASE unset"
    mask = (1 << 64) - 1
    virt_base = 0 if (parms.virt_base is None or hvm) else parms.virt_base
    if parms.elf_paddr_offset is None or hvm:
        paddr_offset = 0 if (source in ("PT_NOTE", "SHT_NOTE") or hvm) else virt_base
    else:
        paddr_offset = parms.elf_paddr_offset
    virt_offset = (virt_base - paddr_offset) & mask
    kstart = (span[0] + virt_offset) & mask
    kend = (span[1] + virt_offset) & mask
    if parms.virt_entry is None or hvm:
        entry = parms.phys_entry if (hvm and parms.phys_entry is not None) else image.entry
    else:
        entry = parms.virt_entry
    if parms.bsd_symtab:
        kend = (_bsd_symtab_end(image, span[1]) + virt_offset) & mask
    return Layout(
        virt_base,
        paddr_offset,
        virt_offset,
        kstart,
        kend,
        entry,
        parms.p2m_base,
        parms.virt_hypercall,
    )


def _addr_check(layout: Layout) -> str | None:
    """libelf's ``elf_xen_addr_calc_check``, its checks: why the layout is refused, or None."""
    kstart, kend, entry = layout.virt_kstart, layout.virt_kend, layout.virt_entry
    if kstart > kend or entry < kstart or entry > kend or layout.virt_base > kstart:
        return (
            f"ELF start or entry out of bounds (kernel {kstart:#x}-{kend:#x}, "
            f"entry {entry:#x}, virt_base {layout.virt_base:#x})"
        )
    if layout.p2m_base is not None and kstart <= layout.p2m_base < kend:
        return f"INIT_P2M {layout.p2m_base:#x} lies inside the kernel"
    return None


def _guest_type(image: ElfImage, parms: _Parms, hvm: bool, caps: tuple[str, ...]) -> str | None:
    if hvm:
        return "hvm-3.0-x86_32" if parms.phys_entry is not None else None
    if image.machine == elfmod.EM_386:
        if parms.pae == 3:
            return "xen-3.0-x86_32p" if "xen-3.0-x86_32p" in caps else "xen-3.0-x86_32"
        return "xen-3.0-x86_32p" if parms.pae in (1, 2) else "xen-3.0-x86_32"
    if image.machine == elfmod.EM_X86_64:
        return "xen-3.0-x86_64"
    return "xen-3.0-unknown"


def _bsd_symtab_end(image: ElfImage, pend: int) -> int:
    """libelf's ``elf_parse_bsdsyms``: room for the symbol tables after the kernel."""
    if not any(s.type == elfmod.SHT_SYMTAB for s in image.shdrs):
        return pend
    align = image.bits // 8

    def up(n: int) -> int:
        return (n + align - 1) & ~(align - 1)

    size = 4 + image.header["e_ehsize"] + len(image.shdrs) * image.header["e_shentsize"]
    size = up(size)
    for s in image.shdrs:
        if s.type in (elfmod.SHT_STRTAB, elfmod.SHT_SYMTAB):
            size = up(size + s.size)
    return up(pend) + size


__all__ = [
    "NUMBERS",
    "X86_64_HOST_CAPS",
    "GuestVerdict",
    "Layout",
    "XenNotes",
    "collect_notes",
    "judge",
]
