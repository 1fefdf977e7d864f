"""Human-readable `KernelReport` text for ``pvgrubctl kernel-info``."""

from __future__ import annotations

from pvgrub_py.kernel.report import Difference, KernelReport

BZIMAGE_SHOWN = (
    "setup_sects",
    "syssize",
    "loadflags",
    "xloadflags",
    "code32_start",
    "kernel_alignment",
    "relocatable_kernel",
    "cmdline_size",
    "init_size",
    "pref_address",
    "payload_offset",
    "payload_length",
)

NOT_DECODED = "(not decoded by this backend)"


def _hex(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) else str(value)


def format_report(report: KernelReport) -> str:
    out = [
        f"backend:     {report.backend}",
        f"file:        {report.source} ({report.file_size} bytes)",
    ]
    for bank, digest in report.measurement.items():
        out.append(f"measured:    {bank} {digest}  (PCR 4 input, hashed before parsing)")
    if report.whole_file_gzip:
        out.append("wrapper:     whole-file gzip, removed before parsing (xc_dom_kernel_mem)")
    out.append(f"format:      {report.format or 'unknown'}")
    if report.bzimage:
        bz = report.bzimage
        out.append(f"boot proto:  {bz.get('protocol')}")
        if bz.get("kernel_version_string"):
            out.append(f"version:     {bz['kernel_version_string']}")
        out.append(
            "setup hdr:   " + ", ".join(f"{k} {_hex(bz[k])}" for k in BZIMAGE_SHOWN if k in bz)
        )
    if report.compression or report.payload:
        line = f"payload:     {report.compression or 'unknown'}"
        if report.payload:
            p = report.payload
            line += f", {p['length']} bytes at file offset {_hex(p['file_offset'])}"
            if p.get("declared_size") is not None:
                line += f", declares {p['declared_size']} bytes decompressed"
        out.append(line)
    if report.vmlinux:
        v = report.vmlinux
        line = f"vmlinux:     ELF{v.get('class', '?')} {v.get('machine', '?')}, {v['size']} bytes"
        if v.get("entry") is not None:
            line += f", e_entry {_hex(v['entry'])}"
        if v.get("paddr_start") is not None:
            line += f", physical {_hex(v['paddr_start'])}-{_hex(v['paddr_end'])}"
        out.append(line)
        out.append(f"             sha256 {v['sha256']}")
    if report.xen_notes:
        out.append(f"Xen ELF notes ({report.note_source}):")
        for n in report.xen_notes:
            shown = n.value_text if n.value is not None or n.desc else NOT_DECODED
            out.append(f"  {n.name:<20} {n.type:>2}  {shown}")
    elif report.error is None:
        out.append("Xen ELF notes: none")
    out.append("guest types:")
    for name, verdict in report.guests.items():
        if verdict.bootable:
            line = f"  {name:<4} bootable as {verdict.guest_type}"
            if verdict.layout:
                lay = verdict.layout
                line += (
                    f": kernel {_hex(lay.virt_kstart)}-{_hex(lay.virt_kend)}, entry "
                    f"{_hex(lay.virt_entry)}, virt_base {_hex(lay.virt_base)}"
                )
            out.append(line)
        else:
            out.append(f"  {name:<4} not bootable: {verdict.reason}")
    if report.error:
        out.append(f"error:       {report.error}")
    return "\n".join(out)


def format_differences(differences: list[Difference], left: str, right: str) -> str:
    if not differences:
        return f"{left} and {right} agree on every fact both report."
    lines = [f"{left} and {right} disagree on {len(differences)} fact(s):"]
    for d in differences:
        lines.append(f"  {d.fact}: {left} {_hex(d.left)}, {right} {_hex(d.right)}")
    return "\n".join(lines)
