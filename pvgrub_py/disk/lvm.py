"""LVM2 logical volumes through dissect.volume.

An LVM2 physical volume carries a label (``LABELONE`` in one of its first
four sectors), a PV header and a metadata area holding the volume group
description as text (LVM2 ``format_text``; the same text ``vgcfgbackup``
writes).  Each logical volume is a list of segments, each mapping a run of
logical extents to a run of physical extents on a named PV.  dissect.volume
parses all of that, including multi-segment and multi-PV volumes; this
module groups the PVs of one disk by volume group, opens the visible LVs,
and puts each behind its own `BoundedFile` so that a segment table
pointing outside its PV cannot make a reader see zeros.

GRUB names a logical volume ``lvm/VG-LV`` with each ``-`` inside the
names doubled (``grub-core/disk/lvm.c``), which is what ``search`` and
``root`` see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvgrub_py.disk.bounded import BoundedFile, StreamSource
from pvgrub_py.disk.budget import cpu_deadline
from pvgrub_py.disk.errors import reader_boundary

#: Logical volumes opened per disk.
MAX_LVS = 256


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    name: str
    file: BoundedFile

    @property
    def grub_name(self) -> str:
        return "lvm/" + self.vg.replace("-", "--") + "-" + self.name.replace("-", "--")


def open_logical_volumes(pvs: Sequence[BoundedFile], disk_name: str) -> list[LogicalVolume]:
    """The visible LVs of every volume group found on *pvs*, in metadata order."""
    if not pvs:
        return []
    budget = pvs[0].budget
    with cpu_deadline(budget), reader_boundary(disk_name, "reading LVM2 metadata"):
        from dissect.volume.lvm import LVM2  # type: ignore[import-untyped]
        from dissect.volume.lvm.physical import LVM2Device  # type: ignore[import-untyped]

        groups: dict[str, list[Any]] = {}
        for pv in pvs:
            device: Any = LVM2Device(pv)
            metadata: Any = device.metadata
            vg_ids = [v.get("id") for v in metadata.values() if isinstance(v, dict)]
            key = str(vg_ids[0]) if vg_ids else pv.name
            groups.setdefault(key, []).append(device)
        result: list[LogicalVolume] = []
        for devices in groups.values():
            lvm: Any = LVM2(devices)
            vg: Any = lvm.vg
            for lv in vg.lv:
                if not lv.is_visible:
                    continue
                if len(result) >= MAX_LVS:
                    raise OverflowError(f"more than {MAX_LVS} logical volumes")
                stream: Any = lv.open()
                size = int(stream.size or 0)
                name = f"{disk_name}: LVM volume {vg.name}/{lv.name}"
                source = StreamSource(stream, size)
                result.append(
                    LogicalVolume(
                        str(vg.name),
                        str(lv.name),
                        BoundedFile(source, name=name, budget=budget, stats=pvs[0].stats),
                    )
                )
        return result
