"""Find the boot configuration on a disk, and the files a chosen entry names.

**Config search.**  pygrub tries every partition (active first) and, on
each, a fixed list of paths; the first file found wins
(Xen tools/pygrub/src/pygrub, ``Grub.read_config``).
`CONFIG_CANDIDATES` keeps pygrub's order, GRUB 2 then extlinux/isolinux
then GRUB legacy, and adds what pygrub lacks: a BLS ``loader/entries``
directory (Boot Loader Specification, type 1) right after the GRUB 2
paths, for disks that carry only BLS snippets, and ``/isolinux`` at the
ISO root.  ``/grub`` and ``/grub2`` are where the files sit when ``/boot``
is its own partition.

**Boot files.**  A kernel or initrd path comes with the device GRUB would
read it from: ``$root`` after ``search --set``/``set root``, or an explicit
``(hd0,gpt2)/vmlinuz``.  `resolve_boot_file` takes that as a
`VolumeSelector` (GRUB device name, filesystem UUID, label or partition
number) and falls back to the config's own volume, which is what pygrub
always uses.  A path under ``/boot`` that is missing on a separate
``/boot`` volume is retried without the prefix, since a separate ``/boot``
filesystem holds ``/vmlinuz`` where the root filesystem view says
``/boot/vmlinuz``.
"""

from __future__ import annotations

from pvgrub_py.disk.budget import BudgetExceeded
from pvgrub_py.disk.errors import disk_error
from pvgrub_py.disk.filesystems import Filesystem
from pvgrub_py.disk.volumes import Disk, Volume
from pvgrub_py.errors import InputError
from pvgrub_py.named_tuple import NamedTuple


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class ConfigCandidate(NamedTuple):
    path: str
    kind: str  # "grub2", "bls", "extlinux", "grub-legacy"
    is_dir: bool = False


CONFIG_CANDIDATES: tuple[ConfigCandidate, ...] = (
    ConfigCandidate("/boot/grub/grub.cfg", "grub2"),
    ConfigCandidate("/grub/grub.cfg", "grub2"),
    ConfigCandidate("/boot/grub2/grub.cfg", "grub2"),
    ConfigCandidate("/grub2/grub.cfg", "grub2"),
    ConfigCandidate("/boot/loader/entries", "bls", is_dir=True),
    ConfigCandidate("/loader/entries", "bls", is_dir=True),
    ConfigCandidate("/boot/isolinux/isolinux.cfg", "extlinux"),
    ConfigCandidate("/isolinux/isolinux.cfg", "extlinux"),
    ConfigCandidate("/boot/extlinux/extlinux.conf", "extlinux"),
    ConfigCandidate("/boot/extlinux.conf", "extlinux"),
    ConfigCandidate("/extlinux/extlinux.conf", "extlinux"),
    ConfigCandidate("/extlinux.conf", "extlinux"),
    ConfigCandidate("/boot/grub/menu.lst", "grub-legacy"),
    ConfigCandidate("/boot/grub/grub.conf", "grub-legacy"),
    ConfigCandidate("/grub/menu.lst", "grub-legacy"),
    ConfigCandidate("/grub/grub.conf", "grub-legacy"),
)


class ConfigLocation(NamedTuple):
    """Where the boot config was found."""

    volume: Volume
    path: str
    kind: str

    @property
    def filesystem(self) -> Filesystem:
        return self.volume.filesystem()


class VolumeSelector(NamedTuple):
    """Which volume a config names for a file; every field optional.

    *device* is a GRUB device name (``hd0,gpt2``, ``hd0,msdos1``, ``hd0,1``,
    ``lvm/vg-root``, parentheses allowed); *partition* a partition number.
    """

    device: str | None = None
    uuid: str | None = None
    label: str | None = None
    partition: int | None = None


class BootFile(NamedTuple):
    """A file a boot entry names, resolved to a volume and a path on it."""

    volume: Volume
    path: str

    @property
    def filesystem(self) -> Filesystem:
        return self.volume.filesystem()

    @property
    def where(self) -> str:
        return f"{self.volume.where}: {self.path}"


def filesystem_volumes(disk: Disk) -> list[Volume]:
    """The volumes of *disk* that hold a filesystem we can read, in search order."""
    return [v for v in disk.volumes if v.has_filesystem]


def locate_config(
    disk: Disk, candidates: tuple[ConfigCandidate, ...] = CONFIG_CANDIDATES
) -> ConfigLocation:
    """The first boot config in pygrub's order: volumes outside, paths inside.

    A volume whose filesystem cannot even be opened is skipped when another
    volume has a config, as pygrub skips partitions its readers reject; if
    none has one, the first such error is reported with the "not found".
    """
    first_error: InputError | None = None
    for volume in filesystem_volumes(disk):
        try:
            fs = volume.filesystem()
            for cand in candidates:
                info = fs.stat(cand.path)
                if info is None:
                    continue
                if info.is_dir == cand.is_dir and (cand.is_dir or info.is_file):
                    return ConfigLocation(volume, cand.path, cand.kind)
        except BudgetExceeded:
            raise  # the budget is for the whole disk: no point trying the next volume
        except InputError as exc:
            if first_error is None:
                first_error = exc
    detail = f" (first error: {first_error})" if first_error is not None else ""
    raise disk_error(
        disk.name,
        "no boot configuration (grub.cfg, loader/entries, extlinux.conf, menu.lst) "
        f"on any of {len(disk.volumes)} volumes{detail}",
    ) from first_error


def _normalise_device(device: str) -> str:
    dev = device.strip()
    if dev.startswith("(") and dev.endswith(")"):
        dev = dev[1:-1]
    return dev


def _partition_number(device: str) -> int | None:
    """``hd0,gpt2`` / ``hd0,msdos2`` / ``hd0,2`` / ``/dev/xvda,2`` -> 2."""
    if "," not in device:
        return None
    tail = device.rsplit(",", 1)[1]
    digits = tail.lstrip("abcdefghijklmnopqrstuvwxyz")
    return int(digits) if digits.isdigit() else None


def select_volume(disk: Disk, selector: VolumeSelector) -> Volume | None:
    """The volume *selector* names, or None if it names none on this disk."""
    vols = disk.volumes
    if selector.device:
        dev = _normalise_device(selector.device)
        for vol in vols:
            if vol.grub_name == dev:
                return vol
        number = _partition_number(dev)
        if number is not None:
            for vol in vols:
                if vol.number == number and vol.kind in ("gpt", "msdos"):
                    return vol
        if dev in ("hd0", "/dev/xvda", "xvda"):
            for vol in vols:
                if vol.kind == "disk":
                    return vol
    if selector.partition is not None:
        for vol in vols:
            if vol.number == selector.partition and vol.kind in ("gpt", "msdos"):
                return vol
    if selector.uuid:
        want = selector.uuid.lower()
        for vol in filesystem_volumes(disk):
            uuid = vol.filesystem().uuid
            if uuid is not None and uuid.lower() == want:
                return vol
    if selector.label is not None:
        for vol in filesystem_volumes(disk):
            if vol.filesystem().label == selector.label:
                return vol
    return None


def resolve_boot_file(
    disk: Disk,
    path: str,
    *,
    config_volume: Volume,
    selector: VolumeSelector | None = None,
) -> BootFile:
    """The (volume, path) a kernel/initrd *path* refers to.

    Tried in order, first regular file wins: the selected volume, then the
    config's own volume; on each, *path* and (for ``/boot/...``) the path
    without ``/boot``.  Errors other than "not there" (a device node, a
    symlink loop, a corrupt inode, ``..`` escaping) stop the search at
    once: they mean the entry is bad, not that the file is elsewhere.
    """
    if not path.startswith("/"):
        path = "/" + path
    volumes: list[Volume] = []
    chosen = select_volume(disk, selector) if selector is not None else None
    if chosen is not None:
        volumes.append(chosen)
    if config_volume not in volumes:
        volumes.append(config_volume)
    paths = [path]
    if path.startswith("/boot/") and len(path) > len("/boot/"):
        paths.append(path[len("/boot") :])
    for vol in volumes:
        if not vol.has_filesystem:
            continue
        fs = vol.filesystem()
        for candidate in paths:
            info = fs.stat(candidate)
            if info is None:
                continue
            if not info.is_file:
                raise disk_error(
                    f"{vol.where}: {candidate}", f"is a {info.kind.value}, not a regular file"
                )
            return BootFile(vol, candidate)
    where = ", ".join(v.where for v in volumes)
    raise disk_error(f"{disk.name}: {path}", f"no such file (looked on {where})")
