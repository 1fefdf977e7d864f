"""Find the volumes of a guest disk the way pygrub and GRUB do.

`open_disk` takes a path, an open descriptor (what the deprivileged child
receives) or any `ByteSource`, and lists the volumes that may hold a
filesystem, in the order the config search visits them
(Xen tools/pygrub/src/pygrub, ``get_partition_offsets``):

1. a qcow2 image is opened first and discovery starts over on its virtual
   disk (once: a qcow2 inside a qcow2 is refused);
2. a GPT disk (protective MBR type 0xEE and a valid "EFI PART" header):
   its partitions in table order;
3. a filesystem at offset 0 (xfs, btrfs, ext, FAT, ISO 9660): a bare
   filesystem, as pygrub does when there is no ``55 AA``.  An ISO with a
   plausible MBR is a HybridISO: the ISO at offset 0 comes first, then the
   partitions that do not start at 0.  ext and btrfs leave sector 0 alone,
   so one of them with a plausible MBR is listed after the partitions;
4. an MBR: primary and logical partitions, the active (0x80) one first,
   as pygrub orders them;
5. an LVM2 physical volume, on the whole disk or in any partition: its
   visible logical volumes come after all partitions.

Each `Volume` carries a one-line description for messages, e.g.
``disk.img: GPT partition 2 (ext4, label 'boot')``, and the name GRUB
would give it (``hd0,gpt2``), which ``search`` and ``root`` match against.
"""

from __future__ import annotations

import os

from pvgrub_py.disk.bounded import BoundedFile, FdSource, ReadStats
from pvgrub_py.disk.budget import Budget
from pvgrub_py.disk.errors import disk_error, reader_boundary
from pvgrub_py.disk.filesystems import Filesystem, open_filesystem
from pvgrub_py.disk.partitions import (
    PartitionEntry,
    find_gpt,
    is_protective_mbr,
    plausible_mbr,
    read_gpt,
    read_mbr,
)
from pvgrub_py.disk.sniff import Sniffed, sniff
from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.disk.bounded import ByteSource


@record
class Volume:
    """One place a filesystem may live: a partition, an LV or the whole disk."""

    disk: str
    kind: str  # "disk", "msdos", "gpt", "lvm", "iso"
    grub_name: str
    file: BoundedFile
    sniffed: Sniffed | None
    number: int | None = None
    partition: PartitionEntry | None = None
    lv_name: str | None = None
    _fs: Filesystem | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """``"disk.img: GPT partition 2"``: the error-source prefix."""
        if self.kind == "gpt":
            return f"{self.disk}: GPT partition {self.number}"
        if self.kind == "msdos":
            return f"{self.disk}: MBR partition {self.number}"
        if self.kind == "lvm":
            return f"{self.disk}: LVM volume {self.lv_name}"
        return f"{self.disk}: whole disk"

    @property
    def fs_type(self) -> str | None:
        if self.sniffed is not None and self.sniffed.is_filesystem:
            return self.sniffed.kind
        return None

    @property
    def description(self) -> str:
        """``"disk.img: GPT partition 2 (ext4, label 'boot')"``."""
        what: list[str] = []
        if self.sniffed is None:
            what.append("no filesystem recognised")
        else:
            what.append(self.sniffed.kind)
            label = self._fs.label if self._fs is not None else self.sniffed.label
            if label:
                what.append(f"label {label!r}")
        return f"{self.where} ({', '.join(what)})"

    @property
    def has_filesystem(self) -> bool:
        return self.fs_type is not None

    def filesystem(self) -> Filesystem:
        """The filesystem on this volume (opened once, then cached)."""
        if self._fs is None:
            kind = self.fs_type
            if kind is None:
                raise disk_error(self.where, "no supported filesystem on this volume")
            self._fs = open_filesystem(self.file, kind, source=self.where, budget=self.file.budget)
        return self._fs


class Disk:
    """A guest disk image and the volumes found on it."""

    def __init__(self, name: str, file: BoundedFile, volumes: list[Volume], source: ByteSource):
        self.name = name
        self.file = file
        self.volumes = volumes
        self._source = source

    @property
    def stats(self) -> ReadStats:
        return self.file.stats

    @property
    def budget(self) -> Budget | None:
        """The time budget shared by every read of this disk (see `Budget.restart`)."""
        return self.file.budget

    def close(self) -> None:
        if isinstance(self._source, FdSource):
            self._source.close()

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_disk(
    image: str | os.PathLike[str] | int | ByteSource,
    *,
    name: str | None = None,
    budget: Budget | None = None,
) -> Disk:
    """Open a guest disk and discover its volumes.

    *image* is a path, an open file descriptor (not closed here: the caller
    owns it) or a `ByteSource`.  *name* is what messages call the disk
    (default: the file's base name).  *budget* bounds the time of
    everything done with this disk (default `Budget()`).
    """
    if isinstance(image, int):
        source: ByteSource = FdSource(image)
        display = name or f"fd {image}"
    elif isinstance(image, str | os.PathLike):
        try:
            source = FdSource.open(image)
        except (OSError, ValueError) as exc:
            raise disk_error(os.fspath(image), f"cannot open the disk image ({exc})") from exc
        display = name or os.path.basename(os.fspath(image))
    else:
        source = image
        display = name or "disk"
    if budget is None:
        budget = Budget(source=display)
    root = BoundedFile(source, name=display, budget=budget)
    try:
        with reader_boundary(display, "reading the partition table"):
            volumes = _discover(root, display, nested=False)
    except BaseException:
        if isinstance(source, FdSource) and not isinstance(image, int):
            source.close()
        raise
    return Disk(display, root, volumes, source)


def _sniff(fh: BoundedFile) -> Sniffed | None:
    return sniff(fh.pread, fh.size)


def _discover(disk: BoundedFile, name: str, *, nested: bool) -> list[Volume]:
    size = disk.size
    if size < 512:
        raise disk_error(name, f"image of {size} bytes is too small to hold a disk")
    head = disk.pread(0, 512)
    at_zero = _sniff(disk)
    if at_zero is not None and at_zero.kind == "qcow2":
        if nested:
            raise disk_error(name, "a qcow2 image inside a qcow2 image is not supported")
        from pvgrub_py.disk.qcow2 import open_qcow2

        return _discover(open_qcow2(disk), name, nested=True)

    whole = Volume(name, "disk", "hd0", disk, at_zero)
    if is_protective_mbr(head) and find_gpt(disk.pread, size) is not None:
        parts = read_gpt(disk.pread, size, name)
        volumes = _partition_volumes(disk, name, parts)
        if at_zero is not None and at_zero.kind == "iso9660":
            volumes = [whole, *[v for v in volumes if v.file is not disk and _starts_after_zero(v)]]
        return _with_lvm(volumes, name)

    if at_zero is not None and at_zero.is_filesystem:
        if at_zero.kind in ("iso9660", "ext2", "ext3", "ext4", "btrfs") and plausible_mbr(
            head, size
        ):
            parts = [p for p in read_mbr(disk.pread, size, name) if p.start > 0]
            partitions = _partition_volumes(disk, name, _active_first(parts))
            if at_zero.kind == "iso9660":  # HybridISO: the ISO first, as pygrub
                return _with_lvm([whole, *partitions], name)
            return _with_lvm([*partitions, whole], name)
        return [whole]

    if plausible_mbr(head, size):
        parts = read_mbr(disk.pread, size, name)
        return _with_lvm(_partition_volumes(disk, name, _active_first(parts)), name)

    if at_zero is not None and at_zero.kind == "lvm2":
        whole.kind = "disk"
        return _with_lvm([whole], name)

    raise disk_error(name, "no partition table and no supported filesystem found")


def _starts_after_zero(volume: Volume) -> bool:
    return volume.partition is None or volume.partition.start > 0


def _active_first(parts: list[PartitionEntry]) -> list[PartitionEntry]:
    """pygrub's order: the active partition first, then the others in order."""
    return [p for p in parts if p.active] + [p for p in parts if not p.active]


def _partition_volumes(disk: BoundedFile, name: str, parts: list[PartitionEntry]) -> list[Volume]:
    volumes: list[Volume] = []
    for part in parts:
        if part.start >= disk.size:
            continue  # wholly past the end of a truncated image: nothing to read
        label = "GPT" if part.scheme == "gpt" else "MBR"
        window = disk.window(part.start, part.size, f"{name}: {label} partition {part.number}")
        volumes.append(
            Volume(
                name,
                part.scheme,
                f"hd0,{part.scheme}{part.number}",
                window,
                _sniff(window) if window.size else None,
                number=part.number,
                partition=part,
            )
        )
    return volumes


def _with_lvm(volumes: list[Volume], name: str) -> list[Volume]:
    """*volumes* followed by the logical volumes of any LVM2 PVs among them."""
    pvs = [v for v in volumes if v.sniffed is not None and v.sniffed.kind == "lvm2"]
    if not pvs:
        return volumes
    from pvgrub_py.disk.lvm import open_logical_volumes

    lvs = open_logical_volumes([v.file for v in pvs], name)
    extra = [
        Volume(
            name,
            "lvm",
            lv.grub_name,
            lv.file,
            _sniff(lv.file) if lv.file.size >= 512 else None,
            lv_name=f"{lv.vg}/{lv.name}",
        )
        for lv in lvs
    ]
    return [*volumes, *extra]
