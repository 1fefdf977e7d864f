"""The guest side of a boot: everything that reads guest-controlled bytes.

A `GuestSession` hands the host side (vTPM, output directory, result) a
`BootPlan` and then, on request and strictly in plan order, the bytes of
each planned file.  Two implementations exist and the host side cannot
tell them apart:

* `LocalSession`, in-process (no ``--runas``), and the interactive menu;
* ``depriv.RemoteSession``, the same code run in a sandboxed child that
  sends the plan and the bytes over a pipe (``--runas``).

Both build the plan with `plan_boot` (disk) or `plan_config_file`
(``--isconfig``), so a deprivileged run chooses exactly what an
in-process run chooses, and both stream with the disk layer's
`stream_open_file` (caps, time budget, exact lengths).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pvgrub_py._lazy import lazy_attributes
from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.entry import BootMenu
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import DictVolume, VolumeIdentity, VolumeSet
from pvgrub_py.bootcfg.limits import MAX_CONFIG_BYTES
from pvgrub_py.bootcfg.select import select
from pvgrub_py.bootloader.choose import (
    BootChoice,
    GuestMenu,
    choose,
    entry_args,
    load_guest_menu,
    make_plan,
    menu_lines,
    open_guest_disk,
)
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.plan import BootPlan, FileSpec
from pvgrub_py.disk.extract import Limits, copy_open_file
from pvgrub_py.disk.filesystems import FileStream
from pvgrub_py.disk.volumes import Disk
from pvgrub_py.errors import InputError
from pvgrub_py.inputs import describe_open_error, open_named_input

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootloader.guest_session import GuestSession as GuestSession
else:
    # GuestSession: a `typing.Protocol`, run on first use, not by every boot.
    __getattr__ = lazy_attributes(__name__, {"GuestSession": "pvgrub_py.bootloader.guest_session"})


Sink = Callable[[bytes], object]

#: What the interactive menu returns: (entry index, edited cmdline or None).
Pick = tuple[int, str | None]
#: Shows the menu of a plan (whose kernel is None) and returns the pick.
Interact = Callable[[BootPlan], Pick]


def role_of(index: int) -> str:
    return "kernel" if index == 0 else "initrd"


def plan_boot(
    disk: Disk, opts: BootloaderOptions, interact: Interact | None = None
) -> tuple[BootPlan, BootChoice | None]:
    """Find, parse and choose, as pygrub's ``run_grub`` does."""
    guest = load_guest_menu(disk, opts.dialect)
    if opts.list_entries:
        return make_plan(guest, opts, None), None
    index: int | None = None
    args: str | None = None
    if interact is not None and opts.kernel is None:
        index, args = interact(make_plan(guest, opts, None))
        if disk.budget is not None:
            disk.budget.restart()  # the budget bounds disk work, not the user's thinking
    choice = choose(guest, opts, entry_index=index, args=args)
    return make_plan(guest, opts, choice), choice


def open_planned(choice: BootChoice, index: int) -> FileStream:
    planned = choice.files[index]
    return planned.filesystem.open(planned.path)


class LocalSession:
    """`GuestSession` in this process (no ``--runas``)."""

    def __init__(self, plan: BootPlan, choice: BootChoice | None, disk: Disk | None) -> None:
        self._plan = plan
        self._choice = choice
        self._disk = disk

    @property
    def plan(self) -> BootPlan:
        return self._plan

    def stream(self, index: int, sink: Sink, cap: int) -> int:
        if self._choice is None:
            raise InputError(self._plan.config, "no file was planned")
        with open_planned(self._choice, index) as stream:
            return copy_open_file(stream, sink, role=role_of(index), cap=cap)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


def open_local_session(
    opts: BootloaderOptions, interact: Interact | None = None, *, limits: Limits | None = None
) -> LocalSession:
    """Open the disk (or the config file) named by *opts* and plan the boot."""
    if opts.isconfig:
        data = read_config_file(opts.disk)
        return LocalSession(plan_config_file(data, opts.disk, opts, interact), None, None)
    disk = open_guest_disk(opts.disk, opts)
    try:
        plan, choice = plan_boot(disk, opts, interact)
    except BaseException:
        disk.close()
        raise
    return LocalSession(plan, choice, disk)


# -- --isconfig: DISK is a boot config file, not a disk ------------------------
def read_config_file(image: str | int) -> bytes:
    """At most the 1 MiB config cap of a config file given as a path or fd."""
    name = image if isinstance(image, str) else f"fd {image}"
    # A FIFO, a device or a directory is refused before any read; the loop
    # below caps what is read.
    fd = open_named_input(image, "config file", max_size=None) if isinstance(image, str) else image
    try:
        parts: list[bytes] = []
        got = 0
        while got <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    except OSError as e:
        raise InputError(name, f"cannot read the config file: {describe_open_error(e)}") from None
    finally:
        if isinstance(image, str):
            os.close(fd)
    if got > MAX_CONFIG_BYTES:
        raise InputError(name, f"config file is larger than the {MAX_CONFIG_BYTES}-byte cap")
    return b"".join(parts)


def config_kind(name: str) -> tuple[str, str]:
    """(parser kind, in-volume path) for a config file given by name.

    pygrub's ``--isconfig`` parses any file as GRUB 2; we pick the parser by
    the file's usual name and keep GRUB 2 as the default.
    """
    base = os.path.basename(name).lower()
    if base in ("menu.lst", "grub.conf"):
        return "grub-legacy", "/boot/grub/menu.lst"
    if base in ("extlinux.conf", "isolinux.cfg", "syslinux.cfg"):
        return "extlinux", "/extlinux.conf"
    if base.endswith(".conf"):
        return "bls", f"/loader/entries/{os.path.basename(name)}"
    return "grub2", "/boot/grub/grub.cfg"


def parse_config_text(data: bytes, name: str, dialect: Dialect = Dialect.GRUB) -> BootMenu:
    from pvgrub_py.bootcfg.search import FoundConfig, parse_config

    kind, path = config_kind(name)
    volume = DictVolume({path: data}, volume=VolumeIdentity("hd0"))
    lookup = "/loader/entries" if kind == "bls" else path
    found = FoundConfig(volume, lookup, kind)
    return parse_config(VolumeSet.single(volume), found, dialect=dialect)


def plan_config_file(
    data: bytes, name: str, opts: BootloaderOptions, interact: Interact | None = None
) -> BootPlan:
    """The plan for ``--isconfig``: the chosen entry's paths, nothing to stream.

    The parsers see the file at a conventional in-volume path
    (`config_kind`); an error names the file the user gave instead.
    """
    try:
        return _plan_config_file(data, name, opts, interact)
    except BootConfigError as e:
        kind, path = config_kind(name)
        source = e.source
        paths = (path, "/loader/entries") if kind == "bls" else (path,)
        for shown in (*(f"(hd0){p}" for p in paths), *paths):
            if source.startswith(shown):
                source = name + source[len(shown) :]
                break
        else:
            if source in ("<config>", ""):
                source = name
        raise BootConfigError(source, e.problem) from None


def _plan_config_file(
    data: bytes, name: str, opts: BootloaderOptions, interact: Interact | None
) -> BootPlan:
    menu = parse_config_text(data, name, opts.dialect)
    lines = menu_lines(menu, opts)
    base = BootPlan(name, lines, menu.default_index if menu.entries else 0, menu.timeout,
                    None, None, (), "")  # fmt: skip
    if opts.list_entries:
        return base
    args: str | None = None
    if interact is not None and opts.kernel is None:
        index, args = interact(base)
        entry = menu.entries[index]
    else:
        entry = select(menu, opts.entry)
    if entry.kernel is None and opts.kernel is None:
        raise BootConfigError(name, f"entry {entry.title!r} loads no kernel")
    kernel = opts.kernel or (entry.kernel.path if entry.kernel is not None else "")
    if opts.ramdisk is not None:
        initrds: tuple[str, ...] = (opts.ramdisk,)
    else:
        initrds = tuple(ref.path for ref in entry.initrds)
    index_of = next(i for i, e in enumerate(menu.entries) if e is entry)
    return BootPlan(
        name, lines, base.default_index, menu.timeout, index_of,
        FileSpec(kernel, f"{name}: {kernel}"),
        tuple(FileSpec(p, f"{name}: {p}") for p in initrds),
        entry_args(entry, opts) if args is None else args,
    )  # fmt: skip


__all__ = [
    "GuestMenu",
    "GuestSession",
    "Interact",
    "LocalSession",
    "Pick",
    "open_local_session",
    "plan_boot",
    "plan_config_file",
    "read_config_file",
]
