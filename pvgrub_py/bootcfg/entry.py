"""What every boot-config parser produces: a `BootMenu` of `BootEntry` items.

The model follows GRUB 2's menu (GRUB manual, "menuentry", "submenu",
"default"): entries are listed in menu order with submenus flattened in
place, each entry keeping its position as an *index path* (``"1>2"`` is the
third entry of the second top-level item) and its *title path*
(``"Advanced options for Debian>Debian, with Linux 6.1"``).  Submenus
themselves are kept in `BootMenu.submenus` so that a ``default`` naming a
submenu can be resolved the way GRUB does.  GRUB legacy and extlinux menus
are flat, so their index paths are plain numbers.

Kernels and initrds are `FileRef`s: a path plus the GRUB device string it
lives on (the value of ``$root`` when ``linux`` ran, an explicit
``(hd0,msdos1)/vmlinuz``, menu.lst's ``root``).  ``None`` means the volume
the config came from (extlinux, BLS-only menus).  `files.VolumeSet.resolve`
turns the device string into a volume; a string it cannot resolve is a
device GRUB would not find either (a failed ``search`` left ``$root`` at
its hint).
"""

from __future__ import annotations

from collections.abc import Mapping

from pvgrub_py.record import field, record


@record(frozen=True)
class FileRef:
    """A file on a guest volume: GRUB device string (or None) and absolute path."""

    path: str
    device: str | None = None

    def __str__(self) -> str:
        if self.device is None:
            return self.path
        return f"({self.device}){self.path}"


@record(frozen=True)
class BootEntry:
    """One bootable (or not) menu entry.

    ``kernel`` is ``None`` when the entry loads no Linux kernel (memtest via
    ``knetbsd``, ``chainloader``, Xen ``multiboot``, ``reboot``...); ``loader``
    then names what it does instead.  ``args`` is the kernel command line
    without the kernel path, as the boot loader of the config's format
    builds it: GRUB 2 joins arguments with one space and wraps one
    containing a space in double quotes (``grub-core/lib/cmdline.c``); GRUB
    legacy passes the rest of the ``kernel`` line verbatim; Syslinux joins
    the ``APPEND`` words.  ``warnings`` are the problems met while running
    this entry's body (a failed ``search``, a missing file).
    """

    title: str
    kernel: FileRef | None = None
    initrds: tuple[FileRef, ...] = ()
    args: str = ""
    id: str | None = None
    root: str | None = None
    index_path: str = "0"
    title_path: str = ""
    source: str = ""
    line: int = 0
    classes: tuple[str, ...] = ()
    loader: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def bootable(self) -> bool:
        """True when the entry loads a Linux kernel (what a PV guest can boot)."""
        return self.kernel is not None and self.loader in (None, "linux")

    @property
    def initrd(self) -> FileRef | None:
        """The first initrd, for callers that support only one (like pygrub)."""
        return self.initrds[0] if self.initrds else None

    @property
    def depth(self) -> int:
        return self.index_path.count(">")


@record(frozen=True)
class SubmenuInfo:
    """A GRUB ``submenu``: where it sits and how ``default`` can name it."""

    title: str
    id: str | None
    index_path: str
    title_path: str


@record(frozen=True)
class BootMenu:
    """The parsed menu of one config file.

    ``default`` is the raw default specification (GRUB's ``$default`` after
    the script ran, menu.lst's ``default``, extlinux's ``DEFAULT``);
    ``default_index`` is the index into ``entries`` it resolves to, with
    GRUB's and pygrub's fallback to the first entry.
    """

    entries: tuple[BootEntry, ...]
    source: str
    format: str
    default: str | None = None
    default_index: int = 0
    timeout: int | None = None
    fallback: str | None = None
    submenus: tuple[SubmenuInfo, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: (path, block) for each grubenv ``save_env`` changed, as GRUB would
    #: leave it.  Never written: guest disks are read-only to pvgrub-py.
    env_writes: tuple[tuple[str, bytes], ...] = ()

    @property
    def bootable_entries(self) -> tuple[BootEntry, ...]:
        return tuple(e for e in self.entries if e.bootable)

    @property
    def default_entry(self) -> BootEntry | None:
        if not self.entries:
            return None
        return self.entries[self.default_index]
