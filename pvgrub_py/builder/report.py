"""The human-readable boot report, rendered from the JSON document alone, so
the CLI and anything holding a saved ``boot --json`` print the same thing."""

from __future__ import annotations

from typing import Any

REGIONS = (
    "kernel",
    "modules",
    "p2m",
    "start_info",
    "xenstore",
    "console",
    "pagetables",
    "boot_stack",
)


def _region_lines(layout: dict[str, Any]) -> list[str]:
    lines = ["memory layout (guest pfns, in placement order):"]
    for name in REGIONS:
        value = layout.get(name)
        regions = value if isinstance(value, list) else [value]
        for region in regions:
            if isinstance(region, dict):
                label = "initrd" if name == "modules" else name
                lines.append(
                    f"  {label:<11} pfn {region['pfn']:>6}  {region['pages']:>6} pages  "
                    f"{region['vstart']}-{region['vend']}"
                )
    lines.append(f"  {layout.get('used_pages')} of {layout.get('total_pages')} pages used")
    return lines


def format_boot_report(doc: dict[str, Any]) -> str:
    lines = [
        f"domain {doc['domid']} ({doc['name']}): {doc['guest_type']}, {doc['memory_mb']} MiB, "
        f"built by the {doc['backend']} backend"
    ]
    if doc.get("entry"):
        lines.append(f"entry:   {doc['entry']}")
        lines.append(f"config:  {doc['config']}")
    if isinstance(doc.get("layout"), dict):
        lines += _region_lines(doc["layout"])
    lines.append(
        f"console port {doc['console']['port']} (frame {doc['console']['frame']}), "
        f"xenstore port {doc['xenstore']['port']} (frame {doc['xenstore']['frame']})"
    )
    lines.append(
        "measured before boot_xen_init, in extend order:" if doc["measured"] else "NOT measured:"
    )
    for i, m in enumerate(doc["measurements"], 1):
        shown = m["source"] if m["source"] is not None else "(none: hash of no bytes)"
        if m["what"] == "cmdline":
            shown = repr(shown)
        lines.append(f"{i}. PCR {m['pcr']} <- {m['what']} {shown}")
        lines += [f"     {bank:<7} {digest}" for bank, digest in m["digests"].items()]
    if doc.get("guest_pcrs"):
        lines.append("PCRs read back by the guest through its own tpmfront:")
        for bank, pcrs in doc["guest_pcrs"].items():
            lines.append(f"  {bank}:")
            lines += [
                f"    {p:<2}: 0x{v.upper()}"
                for p, v in sorted(pcrs.items(), key=lambda x: int(x[0]))
            ]
    timings = doc.get("timings_ms") or {}
    if timings:
        lines.append("timings (ms): " + ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    return "\n".join(lines)
