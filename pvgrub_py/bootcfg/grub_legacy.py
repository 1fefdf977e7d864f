"""GRUB legacy (0.97) ``menu.lst`` / ``grub.conf``, the pv-grub format.

Semantics from the GRUB legacy manual ("Configuration", "Command-line and
menu entry commands") and pygrub's ``GrubConfigFile``:

* One command per line; ``#`` starts a comment line; the command name ends
  at a blank or ``=`` (``timeout=5`` works).
* Global: ``default N`` (or ``saved``), ``fallback N...``, ``timeout SEC``;
  ``hiddenmenu``, ``splashimage``, ``password``, ``color``, ``serial``,
  ``terminal`` and friends are ignored.  A ``root`` before the first title
  is the root every entry starts with.
* ``title TEXT`` starts an entry; in it ``root``/``rootnoverify DEV``,
  ``kernel [--opts] FILE ARGS`` (the first word after the options is the
  image, the rest of the line is the command line, kept verbatim) and
  ``initrd FILE``.  ``module`` lines make it a multiboot (Xen hypervisor)
  entry, which a PV guest cannot boot.  ``savedefault``, ``boot``,
  ``lock``, ``makeactive``, ``map`` are ignored.
* Devices: GRUB legacy counts partitions from 0 — ``(hd0,0)`` is GRUB 2's
  ``hd0,1`` — and we store GRUB 2 names so `files.VolumeSet.resolve`
  treats both formats alike.  ``(hd0)`` is a whole, unpartitioned disk.
* ``default saved`` reads the entry number GRUB legacy's ``savedefault``
  stored in the ``default`` file next to ``menu.lst``; pygrub uses 0.
  An index past the last entry falls back to 0, as GRUB and pygrub do.
"""

from __future__ import annotations

import posixpath
import re

from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, FileRef
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import (
    ASCII_BLANKS,
    VolumeSet,
    decode_config,
    normalize_path,
    read_capped,
    split_first,
    split_words,
)
from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits, small_int

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles

_DEVICE = re.compile(r"^\((hd[0-9]{1,6})(?:,([0-9]{1,6}))?((?:,[a-z])?)\)")

#: Directives that change nothing we model.
_IGNORED = frozenset(
    {
        "hiddenmenu",
        "splashimage",
        "password",
        "color",
        "serial",
        "terminal",
        "terminfo",
        "gfxmenu",
        "foreground",
        "background",
        "bootp",
        "dhcp",
        "device",
        "hide",
        "unhide",
        "ifconfig",
        "pager",
        "partnew",
        "parttype",
        "rarp",
        "setkey",
        "tftpserver",
        "savedefault",
        "boot",
        "lock",
        "makeactive",
        "map",
        "quiet",
        "verbose",
        "debug",
        "uppermem",
        "geometry",
        "setup",
        "install",
        "kernelonly",
    }
)


def legacy_device(spec: str) -> tuple[str | None, str]:
    """``(hd0,0)/boot/x`` → ("hd0,1", "/boot/x"); ``/x`` → (None, "/x")."""
    m = _DEVICE.match(spec)
    if m is None:
        if spec.startswith("("):
            close = spec.find(")")
            if close > 0:
                return spec[1:close], spec[close + 1 :]
        return None, spec
    disk, part, bsd = m.group(1), m.group(2), m.group(3)
    name = disk if part is None else f"{disk},{int(part) + 1}{bsd}"
    return name, spec[m.end() :]


def _split_command(line: str) -> tuple[str, str]:
    m = re.match(r"([^ \t\n\r\f\v=]+)[ \t\n\r\f\v=]*(.*)$", line)
    if m is None:
        return "", ""
    return m.group(1), m.group(2).strip(ASCII_BLANKS)


class _Entry:
    def __init__(self, title: str, root: str | None, line: int) -> None:
        self.title = title
        self.root = root
        self.line = line
        self.kernel: FileRef | None = None
        self.args = ""
        self.initrds: list[FileRef] = []
        self.loader: str | None = None
        self.warnings: list[str] = []


def _file(entry: _Entry, spec: str) -> FileRef | None:
    device, path = legacy_device(spec)
    if not path:
        return None
    if not path.startswith("/"):
        path = "/" + path
    return FileRef(path, device if device is not None else entry.root)


class _MenuLst:
    """What one pass over menu.lst collects: the globals and the entries."""

    def __init__(self, shown: str, limits: Limits) -> None:
        self.shown = shown
        self.limits = limits
        self.entries: list[_Entry] = []
        self.warnings: list[str] = []
        self.default_spec: str | None = None
        self.fallback: str | None = None
        self.timeout: int | None = None
        self.global_root: str | None = None

    def warn(self, lineno: int, message: str) -> None:
        if len(self.warnings) < self.limits.max_warnings:
            self.warnings.append(f"{self.shown}:{lineno}: {message}"[:300])

    def read(self, text: str) -> None:
        """Each directive goes to the menu until the first ``title``, then to its entry."""
        current: _Entry | None = None
        for lineno, raw in enumerate(text.replace("\r", "").split("\n"), start=1):
            line = raw.strip(ASCII_BLANKS)
            if not line or line.startswith("#"):
                continue
            cmd, arg = _split_command(line)
            cmd = cmd.lower()
            if cmd == "title":
                current = self.new_entry(arg, lineno)
            elif current is None:
                self.global_directive(cmd, arg, lineno)
            else:
                self.entry_directive(current, cmd, arg, lineno)

    def new_entry(self, title: str, lineno: int) -> _Entry:
        if len(self.entries) >= self.limits.max_entries:
            raise BootConfigError(
                self.shown, f"more than {self.limits.max_entries} entries", lineno
            )
        entry = _Entry(title, self.global_root, lineno)
        self.entries.append(entry)
        return entry

    def global_directive(self, cmd: str, arg: str, lineno: int) -> None:
        if cmd == "default":
            self.default_spec = split_words(arg)[0] if arg else None
        elif cmd == "fallback":
            self.fallback = arg
        elif cmd == "timeout":
            digits = re.match(r"-?[0-9]+", arg)
            self.timeout = small_int(digits.group(0)) if digits else None
        elif cmd in ("root", "rootnoverify"):
            self.global_root = _root_device(arg)
        elif cmd not in _IGNORED:
            self.warn(lineno, f"unknown directive {cmd!r} ignored")

    def entry_directive(self, entry: _Entry, cmd: str, arg: str, lineno: int) -> None:
        if cmd in ("root", "rootnoverify"):
            entry.root = _root_device(arg)
        elif cmd == "kernel":
            self.kernel(entry, arg, lineno)
        elif cmd == "initrd":
            first = split_first(arg)
            ref = _file(entry, first[0]) if first else None
            entry.initrds = [ref] if ref is not None else []
        elif cmd in ("module", "modulenounzip"):
            entry.loader = "multiboot"
        elif cmd in ("chainloader", "configfile", "reboot", "halt"):
            entry.loader = cmd
        elif cmd in ("default", "fallback", "timeout"):
            self.warn(lineno, f"{cmd} inside an entry ignored")
        elif cmd not in _IGNORED:
            self.warn(lineno, f"unknown entry directive {cmd!r} ignored")

    def kernel(self, entry: _Entry, arg: str, lineno: int) -> None:
        """``kernel [--type=T] [--no-mem-option] IMAGE ARGS...``"""
        words = list(re.finditer(r"[^ \t\n\r\f\v]+", arg))
        while words and words[0].group(0).startswith("--"):
            opt = words.pop(0).group(0)
            if opt.startswith("--type=") and opt != "--type=linux":
                entry.loader = opt[2:]
        if not words:
            self.warn(lineno, "kernel: no image")
            return
        entry.kernel = _file(entry, words[0].group(0))
        entry.args = arg[words[0].end() :].strip(ASCII_BLANKS)
        if entry.loader is None:
            entry.loader = "linux"

    def boot_menu(self) -> BootMenu:
        """The menu; an entry that loads anything but Linux boots nothing we model."""
        boot_entries = tuple(
            BootEntry(
                title=e.title,
                kernel=e.kernel if e.loader == "linux" else None,
                initrds=tuple(e.initrds) if e.loader == "linux" else (),
                args=e.args if e.loader == "linux" else "",
                root=e.root,
                index_path=str(k),
                title_path=e.title,
                source=self.shown,
                line=e.line,
                loader=e.loader,
            )
            for k, e in enumerate(self.entries)
        )
        spec = self.default_spec
        idx = small_int(spec) if spec is not None else None
        if idx is None or not 0 <= idx < len(boot_entries):
            idx = 0
        return BootMenu(
            entries=boot_entries,
            source=self.shown,
            format="grub-legacy",
            default=spec,
            default_index=idx,
            timeout=self.timeout,
            fallback=self.fallback,
            warnings=tuple(self.warnings),
        )


def _root_device(arg: str) -> str | None:
    """The device of ``root (hd0,0)``, GRUB 2-numbered, or None without one."""
    return legacy_device(split_words(arg)[0] + "/")[0] if arg else None


def parse_grub_legacy(
    volumes: VolumeSet | ConfigFiles,
    path: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> BootMenu:
    """Parse the menu.lst at *path* on the config volume."""
    vols = volumes if isinstance(volumes, VolumeSet) else VolumeSet.single(volumes)
    files = vols.primary
    shown = normalize_path(path)
    data = read_capped(files, path, max_bytes=limits.max_file_bytes)
    if data is None:
        raise BootConfigError(shown, "config file not found")
    menu = _MenuLst(shown, limits)
    menu.read(decode_config(data))
    if menu.default_spec == "saved":
        menu.default_spec = _saved_default(files, shown, limits)
    return menu.boot_menu()


def _saved_default(files: ConfigFiles, shown: str, limits: Limits) -> str:
    """Entry number stored by GRUB legacy's ``savedefault`` (the ``default`` file)."""
    path = posixpath.join(posixpath.dirname(shown), "default")
    data = read_capped(files, path, max_bytes=limits.max_file_bytes, what="saved default")
    if data is None:
        return "0"
    m = re.match(rb"\s*(\d+)", data)
    return m.group(1).decode("ascii") if m else "0"
