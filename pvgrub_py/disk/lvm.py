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

dissect.volume reads the metadata text in one read of the length the
on-disk ``raw_locn`` claims (up to 16 EiB).  While it parses a PV's label
and metadata it sees the PV through `_MetadataReads`, which refuses a
read longer than `MAX_METADATA_BYTES` before any of it is read, and
stops after that much plus a small allowance for the label and headers;
it also refuses a metadata line over `MAX_METADATA_LINE`, which bounds the
memory dissect's value parser takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pvgrub_py.disk.bounded import BoundedFile, StreamSource
from pvgrub_py.disk.budget import cpu_deadline
from pvgrub_py.disk.errors import disk_error, reader_boundary

#: Logical volumes opened per disk.
MAX_LVS = 256
#: Largest LVM2 metadata text read from one PV: the 1 MiB of the config-file
#: cap (`pvgrub_py.bootcfg.limits.MAX_CONFIG_BYTES`).  LVM's metadata area
#: defaults to 1 MiB, its header included; the text of a real volume group
#: is a few KiB.
MAX_METADATA_BYTES = 1 << 20
#: Longest line of metadata text.  dissect.volume evaluates each value with
#: ``ast.literal_eval``, which takes about 500 times a list's text in memory
#: (a 1 MiB ``[0,0,...]`` line: ~490 MB); real lines are under 200 bytes.
MAX_METADATA_LINE = 64 << 10
#: What the label, the PV header, the area descriptors and the metadata
#: area headers may add to that: they sit in the first sectors of a PV.
_LABEL_ALLOWANCE = 64 << 10


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
        #: PVs created with --metadatacopies 0: their VG is described elsewhere.
        without_metadata: list[Any] = []
        for pv in pvs:
            capped = _MetadataReads(pv)
            device: Any = LVM2Device(capped)
            metadata: Any = device.metadata
            capped.lift()  # the LVs' data is read through the same object
            if metadata is None:
                without_metadata.append(device)
                continue
            vg_ids = [v.get("id") for v in metadata.values() if isinstance(v, dict)]
            key = str(vg_ids[0]) if vg_ids else pv.name
            groups.setdefault(key, []).append(device)
        if without_metadata and not groups:
            raise disk_error(
                disk_name,
                "LVM2 physical volume without a metadata area (its volume group is "
                "described on another disk): cannot assemble its logical volumes",
            )
        result: list[LogicalVolume] = []
        for devices in groups.values():
            # The PV with metadata goes first: dissect reads the VG from devices[0].
            lvm: Any = LVM2(devices + without_metadata)
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


class _MetadataReads:
    """A PV as dissect.volume sees it: capped until its metadata is parsed.

    Until `lift`, a single read longer than `MAX_METADATA_BYTES` (the
    metadata text, whose length is an on-disk field) is refused before
    anything is read, and so is any read that would bring the total past
    the cap plus the label allowance (a descriptor list with no
    terminating zero entry is read 16 bytes at a time).  ``read(-1)``
    counts as the rest of the PV: dissect asks for ``size - 1`` bytes,
    which is -1 for a zero length.  Afterwards reads pass straight through
    to the `BoundedFile`, which still bounds them by the PV's end.
    """

    def __init__(self, pv: BoundedFile) -> None:
        self._pv = pv
        self._left: int | None = MAX_METADATA_BYTES + _LABEL_ALLOWANCE

    def lift(self) -> None:
        self._left = None

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._pv.seek(offset, whence)

    def tell(self) -> int:
        return self._pv.tell()

    def read(self, n: int | None = -1) -> bytes:
        if self._left is not None:
            want = self._pv.size - self._pv.tell() if n is None or n < 0 else n
            if want > MAX_METADATA_BYTES:
                raise disk_error(
                    self._pv.name,
                    f"LVM2 metadata of {want} bytes exceeds the {MAX_METADATA_BYTES >> 20} MiB cap",
                )
            if want > self._left:
                raise disk_error(
                    self._pv.name,
                    f"LVM2 label and metadata take more than "
                    f"{(MAX_METADATA_BYTES + _LABEL_ALLOWANCE) >> 10} KiB",
                )
            self._left -= want
            data = self._pv.read(n)
            if len(data) > MAX_METADATA_LINE and _longest_line(data) > MAX_METADATA_LINE:
                raise disk_error(
                    self._pv.name,
                    f"LVM2 metadata has a line of more than {MAX_METADATA_LINE >> 10} KiB",
                )
            return data
        return self._pv.read(n)


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\n"))
