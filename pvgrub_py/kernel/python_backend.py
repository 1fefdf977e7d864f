"""The pure-Python backend: our own reading of a kernel, no Xen libraries needed.

The simulator and hosts without libxen use it; where libxenguest exists,
`compare` holds it to libxenguest's verdicts.  It follows Xen's loader
order (bzImage loader first, then plain ELF) on the measured bytes.
"""

from __future__ import annotations

import hashlib

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import DECOMPRESS_MAX
from pvgrub_py.kernel import compression
from pvgrub_py.kernel.bzimage import is_bzimage, parse_setup_header
from pvgrub_py.kernel.dominfo import X86_64_HOST_CAPS, collect_notes, judge
from pvgrub_py.kernel.elf import ELF_MAGIC, MACHINES, ElfImage
from pvgrub_py.kernel.report import KernelReport
from pvgrub_py.kernel.source import KernelSource

BACKEND = "python"


def inspect_python(
    src: KernelSource, cap: int = DECOMPRESS_MAX, host_caps: tuple[str, ...] = X86_64_HOST_CAPS
) -> KernelReport:
    """Everything we can tell about ``src``; raises InputError if it is malformed."""
    return parse_kernel(src, cap, host_caps)[0]


def parse_kernel(
    src: KernelSource, cap: int = DECOMPRESS_MAX, host_caps: tuple[str, ...] = X86_64_HOST_CAPS
) -> tuple[KernelReport, ElfImage]:
    """The report and the parsed vmlinux, for callers that load its segments
    (the simulated domain builder)."""
    report = KernelReport(
        BACKEND, src.label, len(src.raw), src.measurement, whole_file_gzip=src.whole_file_gzip
    )
    data = src.loaded
    label = src.label
    if is_bzimage(data):
        header = parse_setup_header(data, label)
        report.format = "bzImage"
        report.bzimage = {
            "protocol": header.protocol_text,
            **header.fields,
            "kernel_version_string": header.kernel_version_string,
        }
        start, length = header.payload_start, header.payload_length
        payload = memoryview(data)[start : start + length]
        kind = compression.detect(payload)
        if kind is None:
            raise InputError(
                label,
                f"bzImage payload at file offset {start:#x}: unknown "
                f"compression (first bytes {bytes(payload[:6]).hex(' ')})",
            )
        report.compression = kind
        report.payload = {
            "file_offset": start,
            "length": length,
            "declared_size": compression.declared_size(payload),
        }
        vmlinux = compression.decompress(
            kind, payload, f"{label}: {kind} payload at file offset {start:#x}", cap
        )
        elf_label = f"{label}: vmlinux from the {kind} payload"
    elif bytes(data[:4]) == ELF_MAGIC:
        report.format = "ELF"
        vmlinux = data
        elf_label = label
    else:
        raise InputError(
            label,
            "neither a bzImage (no HdrS signature at offset 0x202) nor an "
            "ELF image (no \\x7fELF magic at offset 0)",
        )
    image = ElfImage(vmlinux, elf_label)
    span = image.physical_range()
    report.vmlinux = {
        "size": len(vmlinux),
        "sha256": hashlib.sha256(vmlinux).hexdigest(),
        "class": image.bits,
        "machine": MACHINES.get(image.machine, str(image.machine)),
        "entry": image.entry,
        "paddr_start": span[0] if span else None,
        "paddr_end": span[1] if span else None,
    }
    pv_notes = collect_notes(image, hvm=False)
    report.note_source = pv_notes.source
    report.xen_notes = list(pv_notes.notes)
    report.guests["pv"] = judge(image, pv_notes, "pv", host_caps)
    report.guests["pvh"] = judge(image, collect_notes(image, hvm=True), "pvh", host_caps)
    return report, image
