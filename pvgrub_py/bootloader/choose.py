"""From a guest disk to the files and cmdline to boot: what pygrub's
``run_grub`` does, on our readers and parsers.

The chosen entry's kernel and initrd are resolved to (volume, path) the way
GRUB would: the entry's device (``root``/``search --set``) when it names
one, else the config's own volume; a ``/boot/...`` path is also tried
without ``/boot`` (a separate /boot partition).  pygrub's overrides apply:
``--kernel``/``--ramdisk`` name in-image paths that replace the entry's, and
``--args`` is appended to the entry's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, FileRef
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.search import FoundConfig, parse_config
from pvgrub_py.bootcfg.select import select
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.disk.configfiles import VolumeFiles, volume_set
from pvgrub_py.disk.locate import BootFile, locate_config, resolve_boot_file
from pvgrub_py.disk.volumes import Disk, Volume


@dataclass(frozen=True)
class BootChoice:
    menu: BootMenu
    entry: BootEntry | None  # None when --kernel bypassed the menu
    kernel: BootFile
    initrds: tuple[BootFile, ...]
    args: str
    config: str  # "disk.img: GPT partition 2: /boot/grub/grub.cfg"


def load_guest_menu(disk: Disk) -> tuple[BootMenu, Volume, str]:
    location = locate_config(disk)
    volumes = volume_set(disk, location.volume)
    found = FoundConfig(volumes.primary, location.path, location.kind)
    menu = parse_config(volumes, found)
    return menu, location.volume, f"{location.volume.where}: {location.path}"


def _device_volume(disk: Disk, config_volume: Volume, ref: FileRef) -> Volume:
    if ref.device is None:
        return config_volume
    volumes = volume_set(disk, config_volume)
    files = volumes.resolve(ref.device)
    if isinstance(files, VolumeFiles):
        return files.volume
    raise BootConfigError(str(ref), f"no guest volume is GRUB device ({ref.device})")


def _resolve(disk: Disk, config_volume: Volume, ref: FileRef) -> BootFile:
    volume = _device_volume(disk, config_volume, ref)
    return resolve_boot_file(disk, ref.path, config_volume=volume)


def join_args(*parts: str | None) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def choose(disk: Disk, opts: BootloaderOptions) -> BootChoice:
    menu, config_volume, config = load_guest_menu(disk)
    entry: BootEntry | None = None
    if opts.kernel is None:
        entry = select(menu, opts.entry)
        if entry.kernel is None:
            raise BootConfigError(config, f"entry {entry.title!r} loads no kernel")
        kernel = _resolve(disk, config_volume, entry.kernel)
    else:
        kernel = _resolve(disk, config_volume, FileRef(opts.kernel))
    if opts.ramdisk is not None:
        initrds: tuple[BootFile, ...] = (_resolve(disk, config_volume, FileRef(opts.ramdisk)),)
    elif entry is not None:
        initrds = tuple(_resolve(disk, config_volume, ref) for ref in entry.initrds)
    else:
        initrds = ()
    entry_args = entry.args if entry is not None and entry.args else opts.default_args
    args = join_args(entry_args, opts.args, opts.extra_args)
    return BootChoice(menu, entry, kernel, initrds, args, config)
