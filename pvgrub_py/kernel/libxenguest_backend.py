"""The libxenguest backend: Xen's own loader judges the kernel, no hypervisor needed.

For each container type (PV, and HVM for PVH) we run what pv-grub and
libxl run up to the first hypercall (Xen stubdom/grub/kexec.c ``kexec()``
and tools/libs/light/libxl_dom.c ``libxl__build_dom``; the first hypercall
is ``xc_dom_boot_xen_init``'s, tools/libs/guest/xg_dom_boot.c) on an
``XC_OPENFLAG_DUMMY`` handle: ``xc_dom_allocate``, ``xc_dom_kernel_max_size``,
``xc_dom_kernel_mem`` (which removes a whole-file gzip), then
``xc_dom_parse_image`` with ``xen_caps`` set to an x86-64 host's (what
``xc_dom_boot_xen_init`` would have read), and read back what it found:

* through accessors compiled against xenguest.h: ``guest_type``, the kernel
  segment, the decompressed ELF (``kernel_blob``), ``xc_dom_virt_base``,
  ``xc_dom_virt_entry``, ``xc_dom_virt_hypercall``, ``xc_dom_feature_get``
  and ``f_active``;
* through its log, for what only the private ``struct elf_dom_parms``
  holds: every Xen note as libelf decoded it (``ELF: note: NAME = value``),
  the physical range (``ELF: memory:``), the computed addresses
  (``ELF: addresses:``: elf_paddr_offset, virt_offset, virt_kstart,
  virt_kend, p2m_base), which loader matched and which decompressor ran.

``xc_dom_check_gzip`` sizes a gunzip buffer at ISIZE + 16, so after any
gunzip ``kernel_blob`` ends in 16 zero bytes that are not part of the ELF;
they are dropped from the reported vmlinux.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from pvgrub_py.inputs import DECOMPRESS_MAX
from pvgrub_py.kernel.dominfo import X86_64_HOST_CAPS, Container, GuestVerdict, Layout
from pvgrub_py.kernel.elf import MACHINES
from pvgrub_py.kernel.report import KernelReport
from pvgrub_py.kernel.source import KernelSource
from pvgrub_py.kernel.xen_notes import NUMBERS, XEN_ELFNOTES, XenNote
from pvgrub_py.xen.domain_image import DomainImage
from pvgrub_py.xen.interface import XenError
from pvgrub_py.xen.toollog import XTL_ERROR
from pvgrub_py.xen.xenctrl import XenCtrl

BACKEND = "libxenguest"
GUNZIP_SLACK = 16
UNSET = (1 << 64) - 1

_LOADER = re.compile(r"xc_dom_find_loader: trying (.+?) loader")
_NOTE_STR = re.compile(r'^ELF: note: (\w+) = "(.*)"$')
_NOTE_NUM = re.compile(r"^ELF: note: (\w+) = (0x[0-9a-fA-F]+|0)$")
_NOTE_UNKNOWN = re.compile(r"^ELF: note: unknown \((0x[0-9a-fA-F]+)\)$")
_MEMORY = re.compile(r"ELF: memory: (0x[0-9a-fA-F]+) -> (0x[0-9a-fA-F]+)")
_ADDRESS = re.compile(r"^\s+(\w+)\s+= (0x[0-9a-fA-F]+)$")
#: Decompressor success or failure lines -> payload compression.
_DECOMPRESSORS = (
    (re.compile(r"xc_dom_do_gunzip|unable to gzip"), "gzip"),
    (re.compile(r"BZIP2"), "bzip2"),
    (re.compile(r"\bXZ\b"), "xz"),
    (re.compile(r"\bLZMA\b"), "lzma"),
    (re.compile(r"\bLZO"), "lzo"),
    (re.compile(r"\bLZ4\b"), "lz4"),
    (re.compile(r"\bZSTD\b"), "zstd"),
)
LOADER_FORMATS = {"Linux bzImage": "bzImage", "ELF-generic": "ELF"}


@dataclass
class ParseRun:
    """One ``xc_dom_parse_image`` in one container, and what it left behind."""

    ok: bool
    error: str | None
    loaded_size: int
    guest_type: str | None = None
    log: list[tuple[int, str, str]] = field(default_factory=list)
    blob: bytes | None = None
    virt_hypercall: int | None = None
    features_supported: int = 0
    features_required: int = 0


def run_parse(xc: XenCtrl, raw: bytes, hvm: bool, cap: int, caps: str, want_blob: bool) -> ParseRun:
    xc.log.clear()
    with DomainImage(xc) as dom:
        try:
            dom.kernel_max_size(cap)
            dom.kernel_mem(raw)
        except XenError as e:
            return ParseRun(False, str(e), len(raw), log=xc.log.lines())
        loaded = dom.kernel_size
        dom.set_xen_caps(caps)
        dom.set_container(hvm)
        try:
            dom.parse_image()
        except XenError as e:
            return ParseRun(False, _reason(xc, e), loaded, dom.guest_type, xc.log.lines())
        run = ParseRun(True, None, loaded, dom.guest_type, xc.log.lines())
        run.virt_hypercall = dom.virt_hypercall
        run.features_supported = sum(1 << i for i in range(32) if dom.feature(i))
        run.features_required = dom.features_active
        if want_blob:
            run.blob = dom.kernel_bytes()
        return run


def _reason(xc: XenCtrl, error: XenError) -> str:
    errors = [m for level, _, m in xc.log.lines() if level >= XTL_ERROR]
    text = errors[-1] if errors else error.message or str(error)
    return text.removeprefix("panic: ").strip()


def inspect_libxenguest(
    src: KernelSource, cap: int = DECOMPRESS_MAX, host_caps: tuple[str, ...] = X86_64_HOST_CAPS
) -> KernelReport:
    """Raises XenError (ENOSYS) when the bindings were not built."""
    report = KernelReport(BACKEND, src.label, len(src.raw), src.measurement)
    caps = " ".join(host_caps)
    with XenCtrl.open_dummy() as xc:
        pv = run_parse(xc, src.raw, False, cap, caps, want_blob=True)
        pvh = run_parse(xc, src.raw, True, cap, caps, want_blob=False)
    report.whole_file_gzip = pv.loaded_size != len(src.raw) if pv.error is None or pv.log else None
    for name, run in (("pv", pv), ("pvh", pvh)):
        report.guests[name] = _verdict(name, run)
    first = pv if pv.ok or not pvh.ok else pvh
    report.format = _format(first.log)
    report.compression = _compression(first.log)
    report.xen_notes, report.note_source = _notes(first.log)
    if report.format is None:
        report.error = pv.error
    blob = pv.blob
    if blob is not None:
        if (report.whole_file_gzip or report.compression == "gzip") and blob.endswith(
            bytes(GUNZIP_SLACK)
        ):
            blob = blob[:-GUNZIP_SLACK]
        memory = _memory(pv.log)
        report.vmlinux = {
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "class": 64 if blob[4:5] == b"\x02" else 32,
            "machine": MACHINES.get(int.from_bytes(blob[18:20], "little"), "unknown"),
            "paddr_start": memory[0] if memory else None,
            "paddr_end": memory[1] if memory else None,
        }
    return report


def _verdict(name: str, run: ParseRun) -> GuestVerdict:
    container: Container = "pv" if name == "pv" else "pvh"
    layout = _layout(run.log, run.virt_hypercall)
    if not run.ok:
        return GuestVerdict(container, False, None, run.error, layout)
    return GuestVerdict(
        container, True, run.guest_type, None, layout, run.features_supported, run.features_required
    )


def _messages(log: list[tuple[int, str, str]]) -> list[str]:
    return [message for _, _, message in log]


def _format(log: list[tuple[int, str, str]]) -> str | None:
    trying = None
    for message in _messages(log):
        match = _LOADER.search(message)
        if match:
            trying = match.group(1)
        elif message.strip() == "loader probe OK" and trying:
            return LOADER_FORMATS.get(trying, trying)
    return None


def _compression(log: list[tuple[int, str, str]]) -> str | None:
    in_bzimage = False
    for message in _messages(log):
        if "trying Linux bzImage loader" in message:
            in_bzimage = True
        elif in_bzimage and ("loader probe" in message):
            in_bzimage = False
        elif in_bzimage:
            for pattern, name in _DECOMPRESSORS:
                if pattern.search(message):
                    return name
    return None


def _notes(log: list[tuple[int, str, str]]) -> tuple[list[XenNote], str | None]:
    notes: list[XenNote] = []
    source = None
    for message in _messages(log):
        if message.startswith("ELF: using notes from SHT_NOTE"):
            source = "SHT_NOTE"
        elif message.startswith("ELF: __xen_guest"):
            source = "__xen_guest"
        if (m := _NOTE_STR.match(message)) and m.group(1) in NUMBERS:
            notes.append(XenNote(NUMBERS[m.group(1)], m.group(1), m.group(2), b"", -1))
        elif (m := _NOTE_NUM.match(message)) and m.group(1) in NUMBERS:
            notes.append(XenNote(NUMBERS[m.group(1)], m.group(1), int(m.group(2), 16), b"", -1))
        elif m := _NOTE_UNKNOWN.match(message):
            number = int(m.group(1), 16)
            notes.append(
                XenNote(number, XEN_ELFNOTES.get(number, ("unknown", "raw"))[0], None, b"", -1)
            )
    if notes and source is None:
        source = "PT_NOTE"
    return notes, source


def _memory(log: list[tuple[int, str, str]]) -> tuple[int, int] | None:
    for message in _messages(log):
        if m := _MEMORY.search(message):
            return int(m.group(1), 16), int(m.group(2), 16)
    return None


def _layout(log: list[tuple[int, str, str]], virt_hypercall: int | None) -> Layout | None:
    values: dict[str, int] = {}
    for message in _messages(log):
        if m := _ADDRESS.match(message):
            values[m.group(1)] = int(m.group(2), 16)
    keys = ("virt_base", "elf_paddr_offset", "virt_offset", "virt_kstart", "virt_kend")
    if not all(k in values for k in (*keys, "virt_entry")):
        return None
    p2m = values.get("p2m_base")
    return Layout(
        virt_base=values["virt_base"],
        elf_paddr_offset=values["elf_paddr_offset"],
        virt_offset=values["virt_offset"],
        virt_kstart=values["virt_kstart"],
        virt_kend=values["virt_kend"],
        virt_entry=values["virt_entry"],
        p2m_base=None if p2m in (None, UNSET) else p2m,
        virt_hypercall=virt_hypercall,
    )
