"""`KernelReport`: what one backend found in a kernel, in a form both can fill.

The python backend knows more (the bzImage header, every note's bytes);
libxenguest knows what it logged and what its accessors return.  Fields a
backend cannot know are None and `comparable_facts` leaves them out, so
`compare` only judges what both reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pvgrub_py.kernel.dominfo import GuestVerdict
from pvgrub_py.kernel.xen_notes import XenNote

CONTAINERS = ("pv", "pvh")


@dataclass
class KernelReport:
    backend: str
    source: str
    file_size: int
    measurement: dict[str, str]
    whole_file_gzip: bool | None = None
    format: str | None = None  # "bzImage" or "ELF"
    bzimage: dict[str, Any] | None = None
    compression: str | None = None
    payload: dict[str, int | None] | None = None
    vmlinux: dict[str, Any] | None = None
    note_source: str | None = None
    xen_notes: list[XenNote] = field(default_factory=list)
    guests: dict[str, GuestVerdict] = field(default_factory=dict)
    error: str | None = None  # the image as a whole was refused

    @property
    def bootable_types(self) -> list[str]:
        return [v.guest_type for v in self.guests.values() if v.bootable and v.guest_type]

    def to_dict(self) -> dict[str, Any]:
        guests = {}
        for name, verdict in self.guests.items():
            g = asdict(verdict)
            g.pop("container")
            guests[name] = g
        return {
            "backend": self.backend,
            "file": self.source,
            "file_size": self.file_size,
            "measurement": self.measurement,
            "whole_file_gzip": self.whole_file_gzip,
            "format": self.format,
            "bzimage": self.bzimage,
            "compression": self.compression,
            "payload": self.payload,
            "vmlinux": self.vmlinux,
            "note_source": self.note_source,
            "xen_notes": [
                {
                    "type": n.type,
                    "name": n.name,
                    "value": _jsonable(n.value),
                    "desc_hex": n.desc.hex() if n.value is None else None,
                }
                for n in self.xen_notes
            ],
            "guest_types": guests,
            "bootable_as": self.bootable_types,
            "error": self.error,
        }


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def comparable_facts(report: KernelReport) -> dict[str, object]:
    """Flat ``name -> value`` of everything this backend reported (None: unknown)."""
    facts: dict[str, object] = {}
    if report.error is not None:
        # Refused as a whole: bootable as nothing, whatever else is known.
        for name in CONTAINERS:
            facts[f"{name}.bootable"] = False
    facts["whole_file_gzip"] = report.whole_file_gzip
    facts["format"] = report.format
    facts["compression"] = report.compression
    if report.error is not None:
        return {k: v for k, v in facts.items() if v is not None}
    for key in ("size", "sha256", "paddr_start", "paddr_end"):
        facts[f"vmlinux.{key}"] = (report.vmlinux or {}).get(key)
    by_type: dict[int, list[object]] = {}
    for note in report.xen_notes:
        by_type.setdefault(note.type, []).append(note.value)
    facts["notes.types"] = tuple(sorted(by_type))
    for number, values in by_type.items():
        if all(v is not None for v in values):
            facts[f"notes.{number}"] = tuple(values)
    for name in CONTAINERS:
        verdict = report.guests.get(name)
        if verdict is None or report.error is not None:
            continue
        facts[f"{name}.bootable"] = verdict.bootable
        if verdict.bootable:
            facts[f"{name}.guest_type"] = verdict.guest_type
            facts[f"{name}.features_supported"] = verdict.features_supported
            facts[f"{name}.features_required"] = verdict.features_required
        if verdict.layout is not None and verdict.bootable:
            for key, value in asdict(verdict.layout).items():
                facts[f"{name}.{key}"] = value
    return {k: v for k, v in facts.items() if v is not None}


@dataclass(frozen=True)
class Difference:
    fact: str
    left: object
    right: object


#: Facts that are compared even when one backend leaves them unknown: which
#: loader took the image is the first thing a reader asks, and "ELF" against
#: "unknown" (a plain ELF that libxenguest's loaders all refuse) is a
#: disagreement, not a fact "only one reports".
ALWAYS_COMPARED = ("format",)


def compare(left: KernelReport, right: KernelReport) -> list[Difference]:
    a, b = comparable_facts(left), comparable_facts(right)
    keys = (a.keys() & b.keys()) | {k for k in ALWAYS_COMPARED if k in a or k in b}
    return [
        Difference(k, a.get(k, "unknown"), b.get(k, "unknown"))
        for k in sorted(keys)
        if a.get(k) != b.get(k)
    ]
