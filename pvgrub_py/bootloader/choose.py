"""From a guest disk to the files and cmdline to boot: what pygrub's
``run_grub`` does, on our readers and parsers.

The chosen entry's kernel and initrd are resolved to (volume, path) the way
GRUB would: the entry's device (``root``/``search --set``) when it names
one, else the config's own volume; a ``/boot/...`` path is also tried
without ``/boot`` (a separate /boot partition).  pygrub's overrides apply:
``--kernel``/``--ramdisk`` name in-image paths that replace the entry's, and
``--args`` is appended to the entry's arguments.

``--offset=N`` is pygrub's "the partition starting at byte N": only the
volume that starts there is searched and read (Xen tools/pygrub/src/pygrub:
``get_partition_offsets`` is skipped when the offset is given).

This module runs on the guest side of the privilege boundary: in the
deprivileged child with ``--runas``, else in-process.  Its result crosses
as a `BootPlan`.
"""

from __future__ import annotations

import os

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, FileRef
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import ASCII_BLANKS
from pvgrub_py.bootcfg.search import FoundConfig, parse_config
from pvgrub_py.bootcfg.select import select
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.plan import MAX_NOTES, BootPlan, FileSpec, MenuLine
from pvgrub_py.disk.bounded import BoundedFile, FdSource
from pvgrub_py.disk.budget import Budget, BudgetExceeded
from pvgrub_py.disk.configfiles import VolumeFiles, volume_set
from pvgrub_py.disk.errors import disk_error
from pvgrub_py.disk.locate import BootFile, locate_config, resolve_boot_file
from pvgrub_py.disk.sniff import sniff
from pvgrub_py.disk.volumes import Disk, Volume, open_disk
from pvgrub_py.errors import InputError
from pvgrub_py.inputs import open_named_input
from pvgrub_py.record import record


@record
class OffsetVolume(Volume):
    """A filesystem at a byte offset that no partition table lists (``--offset``)."""

    offset: int = 0

    @property
    def where(self) -> str:
        return f"{self.disk}: filesystem at byte {self.offset}"


def volume_offset(volume: Volume) -> int | None:
    """Where *volume* starts on the disk in bytes; None for a logical volume.

    The disk layer keeps this in the partition entry (and 0 for the whole
    disk); an LVM volume has no single offset.
    """
    if isinstance(volume, OffsetVolume):
        return volume.offset
    if volume.partition is not None:
        return volume.partition.start
    if volume.kind in ("disk", "iso"):
        return 0
    return None


def restrict_to_offset(disk: Disk, offset: int) -> Disk:
    """A view of *disk* whose only volume is the one starting at byte *offset*.

    A listed volume (partition, whole disk) starting there is used as is;
    otherwise the bytes from *offset* on are sniffed for a filesystem, as
    pygrub hands the offset straight to libfsimage.
    """
    found = [v for v in disk.volumes if volume_offset(v) == offset and v.kind != "lvm"]
    if not found:
        if offset >= disk.file.size:
            raise disk_error(
                disk.name, f"--offset={offset} is past the end of the image ({disk.file.size})"
            )
        window = disk.file.window(offset, None, f"{disk.name}: filesystem at byte {offset}")
        sniffed = sniff(window.pread, window.size) if window.size >= 512 else None
        if sniffed is None or not sniffed.is_filesystem:
            raise disk_error(disk.name, f"no supported filesystem starts at byte {offset}")
        found = [OffsetVolume(disk.name, "disk", "hd0", window, sniffed, offset=offset)]
    if not found[0].has_filesystem:
        raise disk_error(found[0].where, f"no supported filesystem starts at byte {offset}")
    import copy  # only for --offset: a boot without it is spared copy and weakref (~0.5 ms)

    view = copy.copy(disk)
    view.volumes = found[:1]
    return view


@record(frozen=True)
class GuestMenu:
    """A parsed guest menu and where it came from."""

    disk: Disk
    menu: BootMenu
    volume: Volume
    config: str  # "disk.img: GPT partition 2: /boot/grub/grub.cfg"


@record(frozen=True)
class BootChoice:
    guest: GuestMenu
    entry_index: int | None  # None when --kernel bypassed the menu
    kernel: BootFile
    initrds: tuple[BootFile, ...]
    args: str

    @property
    def menu(self) -> BootMenu:
        return self.guest.menu

    @property
    def entry(self) -> BootEntry | None:
        return None if self.entry_index is None else self.guest.menu.entries[self.entry_index]

    @property
    def config(self) -> str:
        return self.guest.config

    @property
    def files(self) -> tuple[BootFile, ...]:
        return (self.kernel, *self.initrds)


def open_guest_disk(
    image: str | int, opts: BootloaderOptions, *, name: str | None = None,
    budget: Budget | None = None,
) -> Disk:  # fmt: skip
    """`open_disk`, restricted to the volume at ``--offset`` when one is given.

    With ``--offset`` pygrub never looks at a partition table: it opens a
    filesystem at that byte.  We still list the volumes when the disk has a
    recognisable layout (so the volume keeps its partition name in
    messages), and fall back to the raw offset when it has none.

    A path is opened with `open_disk_image`: a FIFO, a character device or
    a directory is refused at once instead of blocking or reading forever.
    """
    if isinstance(image, str):
        fd = open_named_input(image, "disk image", allow_block_device=True, max_size=None)
        try:
            disk = _open_fd_disk(fd, opts, name=name or os.path.basename(image) or image,
                                 budget=budget)  # fmt: skip
        except BaseException:
            os.close(fd)
            raise
        # The readers use their own view of *fd*; closing the Disk closes it.
        return Disk(disk.name, disk.file, disk.volumes, FdSource(fd, owns_fd=True))
    return _open_fd_disk(image, opts, name=name, budget=budget)


def _open_fd_disk(fd: int, opts: BootloaderOptions, *, name: str | None,
                  budget: Budget | None) -> Disk:  # fmt: skip
    """`open_guest_disk` on a descriptor the caller keeps owning."""
    if opts.offset is None:
        return open_disk(fd, name=name, budget=budget)
    try:
        disk = open_disk(fd, name=name, budget=budget)
    except BudgetExceeded:
        raise
    except InputError:
        disk = _bare_disk(fd, name=name, budget=budget)
    try:
        return restrict_to_offset(disk, opts.offset)
    except BaseException:
        disk.close()
        raise


def _bare_disk(image: int, *, name: str | None, budget: Budget | None) -> Disk:
    """A `Disk` with no volumes listed: the bytes only, for `restrict_to_offset`."""
    source = FdSource(image)
    display = name or f"fd {image}"
    file = BoundedFile(source, name=display, budget=budget or Budget(source=display))
    return Disk(display, file, [], source)


def load_guest_menu(disk: Disk, dialect: Dialect = Dialect.GRUB) -> GuestMenu:
    location = locate_config(disk)
    volumes = volume_set(disk, location.volume)
    found = FoundConfig(volumes.primary, location.path, location.kind)
    menu = parse_config(volumes, found, dialect=dialect)
    return GuestMenu(disk, menu, location.volume, f"{location.volume.where}: {location.path}")


def _device_volume(disk: Disk, config_volume: Volume, ref: FileRef) -> Volume:
    if ref.device is None:
        return config_volume
    volumes = volume_set(disk, config_volume)
    files = volumes.resolve(ref.device)
    if isinstance(files, VolumeFiles):
        return files.volume
    raise BootConfigError(str(ref), f"no guest volume is GRUB device ({ref.device})")


def _resolve(guest: GuestMenu, ref: FileRef) -> BootFile:
    volume = _device_volume(guest.disk, guest.volume, ref)
    return resolve_boot_file(guest.disk, ref.path, config_volume=volume)


def join_args(*parts: str | None) -> str:
    """The parts, ASCII blanks trimmed (a guest's U+00A0 is a byte of its cmdline)."""
    return " ".join(p.strip(ASCII_BLANKS) for p in parts if p and p.strip(ASCII_BLANKS))


def entry_args(entry: BootEntry | None, opts: BootloaderOptions) -> str:
    """The cmdline an entry boots with: its args (or --default_args), --args, --extra_args."""
    own = entry.args if entry is not None and entry.args else opts.default_args
    return join_args(own, opts.args, opts.extra_args)


def _index_of(menu: BootMenu, entry: BootEntry) -> int:
    return next(i for i, e in enumerate(menu.entries) if e is entry)


def choose(
    guest: GuestMenu | Disk,
    opts: BootloaderOptions,
    *,
    entry_index: int | None = None,
    args: str | None = None,
) -> BootChoice:
    """Resolve the entry to boot (from a loaded menu, or a disk to load it from).

    *entry_index* (an interactive pick) overrides ``--entry`` and the
    default; *args* (an edited cmdline) replaces the entry's cmdline
    outright, since the user saw and edited the whole of it.
    """
    if isinstance(guest, Disk):
        guest = load_guest_menu(guest, opts.dialect)
    menu = guest.menu
    entry: BootEntry | None = None
    index: int | None = None
    if opts.kernel is None:
        if entry_index is not None:
            entry = menu.entries[entry_index]
            if not entry.bootable:
                raise BootConfigError(menu.source, f"entry {entry.title!r} loads no Linux kernel")
        else:
            entry = select(menu, opts.entry)
        if entry.kernel is None:
            raise BootConfigError(guest.config, f"entry {entry.title!r} loads no kernel")
        index = _index_of(menu, entry)
        kernel = _resolve(guest, entry.kernel)
    else:
        kernel = _resolve(guest, FileRef(opts.kernel))
    if opts.ramdisk is not None:
        initrds: tuple[BootFile, ...] = (_resolve(guest, FileRef(opts.ramdisk)),)
    elif entry is not None:
        initrds = tuple(_resolve(guest, ref) for ref in entry.initrds)
    else:
        initrds = ()
    final_args = entry_args(entry, opts) if args is None else args
    return BootChoice(guest, index, kernel, initrds, final_args)


def menu_lines(menu: BootMenu, opts: BootloaderOptions) -> tuple[MenuLine, ...]:
    return tuple(
        MenuLine(e.title_path or e.title, entry_args(e, opts), e.bootable) for e in menu.entries
    )


def make_plan(guest: GuestMenu, opts: BootloaderOptions, choice: BootChoice | None) -> BootPlan:
    """The plain-data plan the host side acts on (see `plan`)."""
    menu = guest.menu
    return BootPlan(
        config=guest.config,
        menu=menu_lines(menu, opts),
        default_index=menu.default_index if menu.entries else 0,
        timeout=menu.timeout,
        entry_index=None if choice is None else choice.entry_index,
        kernel=None if choice is None else FileSpec(choice.kernel.path, choice.kernel.where),
        initrds=() if choice is None else tuple(FileSpec(f.path, f.where) for f in choice.initrds),
        args="" if choice is None else choice.args,
        notes=env_write_notes(menu),
    )


def env_write_notes(menu: BootMenu) -> tuple[str, ...]:
    """What the admin should know about grubenv blocks the config saves.

    GRUB writes them at boot; pvgrub-py never writes a guest disk.  The one
    that matters is grub-reboot's ``next_entry``: GRUB boots it once and
    clears it, here it stays chosen until the guest clears it itself.
    """
    from pvgrub_py.bootcfg.grubenv import parse_envblk

    notes = []
    for path, block in menu.env_writes:
        shown = path[:200]
        saved = parse_envblk(block)
        if saved is not None and saved.variables.get("next_entry") == "":
            notes.append(
                f"{shown}: a one-time entry (grub-reboot's next_entry) is chosen; GRUB would "
                "clear it now, but pvgrub-py never writes guest disks, so it stays chosen "
                "until the guest clears it"
            )
        else:
            notes.append(f"{shown}: the config saves its environment (save_env); not written, "
                         "pvgrub-py never writes guest disks")  # fmt: skip
    return tuple(notes[:MAX_NOTES])
