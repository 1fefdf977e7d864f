"""SYSLINUX / EXTLINUX / ISOLINUX configs (``extlinux.conf``, ``isolinux.cfg``).

Semantics from the Syslinux documentation (``doc/syslinux.txt``, wiki
"Config" and "Directives/append") and pygrub's ``ExtLinuxConfigFile``:

* Keywords are case-insensitive; ``#`` lines and ``TEXT HELP``..``ENDTEXT``
  blocks carry no directives.
* ``INCLUDE file`` (and ``MENU INCLUDE``) splices another file in; a
  relative name is taken from the directory of the *main* config file
  (Syslinux's working directory), not of the including file.  Nesting is
  bounded like ``source`` in GRUB.
* ``LABEL name`` starts an entry.  ``LINUX image`` always boots a Linux
  kernel; ``KERNEL image`` does unless the extension says otherwise
  (``.c32`` COM32, ``.com``/``.cbt`` COMBOOT, ``.bs``/``.bss``/``.bin`` boot
  sector, ``.0`` PXE, ``.img`` floppy image); ``BOOT``, ``BSS``, ``PXE``,
  ``FDIMAGE``, ``COMBOOT``, ``COM32``, ``CONFIG`` and ``LOCALBOOT`` never do.
  Words after the image on a ``KERNEL`` line are the start of the command
  line.  Relative image paths are taken from the config's directory.
* ``APPEND`` in a label *replaces* a global ``APPEND`` (one before any
  label); ``APPEND -`` means no options at all.  ``initrd=a,b`` is pulled
  out of the command line as the initrd list (as pygrub does); otherwise
  ``INITRD a,b`` gives it.
* ``KERNEL mboot.c32`` (Xen's multiboot loader) with
  ``APPEND xen --- vmlinuz args --- initrd`` boots ``vmlinuz`` with
  ``args`` and ``initrd`` (two parts: kernel and initrd), pygrub's rule.
* Titles: ``MENU LABEL`` (without the ``^`` hotkey mark) when given, else
  the label name, which is always the entry id; ``DEFAULT`` and
  ``--entry`` match the label (grub-syslinux2cfg does the same).
* Default: a label's ``MENU DEFAULT`` (the last one), else ``ONTIMEOUT``
  or ``DEFAULT`` when they name a label (their first word; the last one in
  the file wins), else the first label.  ``DEFAULT vesamenu.c32`` names a
  UI module, not a label, and so falls through.
* ``TIMEOUT`` is in tenths of a second; 0 means wait forever (-1 here).

Entries are listed in file order.  Labels that boot no Linux kernel are
kept with ``loader`` set so indexes match the file.
"""

from __future__ import annotations

import posixpath

from pvgrub_py.bootcfg.dialect import Dialect
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
from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles

_NON_LINUX_BY_EXT = {
    ".c32": "com32",
    ".com": "comboot",
    ".cbt": "comboot",
    ".bs": "bootsector",
    ".bss": "bootsector",
    ".bin": "bootsector",
    ".0": "pxe",
    ".img": "fdimage",
}
_NON_LINUX_KEYWORDS = {
    "boot": "bootsector",
    "bss": "bootsector",
    "pxe": "pxe",
    "fdimage": "fdimage",
    "comboot": "comboot",
    "com32": "com32",
    "config": "config",
    "localboot": "localboot",
}
_IGNORED = frozenset(
    {
        "prompt",
        "display",
        "say",
        "serial",
        "console",
        "font",
        "kbdmap",
        "ui",
        "implicit",
        "allowoptions",
        "noescape",
        "nocomplete",
        "nohalt",
        "totaltimeout",
        "ipappend",
        "sysappend",
        "onerror",
        "f0",
        "f1",
        "f2",
        "f3",
        "f4",
        "f5",
        "f6",
        "f7",
        "f8",
        "f9",
        "f10",
        "f11",
        "f12",
        "text",
        "endtext",
        "path",
    }
)


@record
class _Label:
    name: str
    line: int
    source: str
    image: str | None = None
    image_args: str = ""
    loader: str | None = None
    append: str | None = None
    initrd: list[str] = field(default_factory=list)
    menu_default: bool = False
    menu_label: str | None = None


@record
class _State:
    files: ConfigFiles
    base: str
    limits: Limits
    dialect: Dialect = Dialect.GRUB
    labels: list[_Label] = field(default_factory=list)
    global_append: str | None = None
    default: str | None = None
    ontimeout: str | None = None
    timeout: int | None = None
    warnings: list[str] = field(default_factory=list)
    loads: int = 0
    unlabeled_image: bool = False

    def warn(self, where: str, message: str) -> None:
        if len(self.warnings) < self.limits.max_warnings:
            self.warnings.append(f"{where}: {message}"[:300])


def _resolve(base: str, name: str) -> str:
    return normalize_path(name if name.startswith("/") else posixpath.join(base, name))


def _parse_file(state: _State, path: str, depth: int) -> None:
    """Read one file (the config or an ``INCLUDE``d one) into *state*."""
    text = _read(state, path, depth)
    if text is None:
        return
    label: _Label | None = state.labels[-1] if state.labels else None
    in_text = False
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(ASCII_BLANKS)
        if in_text:
            if line.lower() == "endtext":
                in_text = False
            continue
        if not line or line.startswith("#"):
            continue
        parts = split_first(line)
        key = parts[0].lower()
        arg = parts[1].strip(ASCII_BLANKS) if len(parts) > 1 else ""
        if key == "text":
            in_text = arg.lower().startswith("help")
            continue
        label = _directive(state, label, key, arg, (path, lineno), depth)


def _read(state: _State, path: str, depth: int) -> str | None:
    """A file's text, within the include budgets; None (warned) for a missing include."""
    limits = state.limits
    if depth > limits.max_source_depth:
        raise BootConfigError(path, f"INCLUDE nested deeper than {limits.max_source_depth} files")
    state.loads += 1
    if state.loads > limits.max_file_loads:
        raise BootConfigError(path, f"more than {limits.max_file_loads} files included")
    data = read_capped(state.files, path, max_bytes=limits.max_file_bytes)
    if data is None:
        if depth == 0:
            raise BootConfigError(path, "config file not found")
        state.warn(path, "included file not found")
        return None
    return decode_config(data).replace("\r", "")


def _directive(
    state: _State,
    label: _Label | None,
    key: str,
    arg: str,
    at: tuple[str, int],
    depth: int,
) -> _Label | None:
    """Apply one directive at *at* (file, line); returns the label now current."""
    path, lineno = at
    where = f"{path}:{lineno}"
    if key in ("menu", "include"):
        sub = split_first(arg) if key == "menu" else ["include", arg]
        subkey = sub[0].lower() if sub else ""
        subarg = sub[1].strip(ASCII_BLANKS) if len(sub) > 1 else ""
        if subkey == "default" and label is not None:
            label.menu_default = True
        elif subkey == "label" and label is not None and subarg:
            label.menu_label = subarg.replace("^", "")
        elif subkey == "include" and subarg:
            _parse_file(state, _resolve(state.base, split_words(subarg)[0]), depth + 1)
            label = state.labels[-1] if state.labels else None
    elif key == "label":
        if len(state.labels) >= state.limits.max_entries:
            raise BootConfigError(where, f"more than {state.limits.max_entries} labels")
        label = _Label(arg, lineno, path)
        state.labels.append(label)
    elif key in ("default", "ontimeout", "timeout", "append"):
        _global_directive(state, label, key, arg)
    elif label is None:
        _unlabeled_directive(state, key, where)
    else:
        _label_directive(state, label, key, arg, where)
    return label


def _global_directive(state: _State, label: _Label | None, key: str, arg: str) -> None:
    if key == "default":
        state.default = split_words(arg)[0] if arg else None
    elif key == "ontimeout":
        state.ontimeout = split_words(arg)[0] if arg else None
    elif key == "timeout":
        number = small_int(arg)
        if number is not None and number >= 0:
            state.timeout = number
    elif label is not None:
        label.append = arg
    elif not state.unlabeled_image:
        state.global_append = arg


def _unlabeled_directive(state: _State, key: str, where: str) -> None:
    if key in ("kernel", "linux") and state.dialect is Dialect.PETITBOOT:
        # petitboot: an unlabelled image owns the APPEND that follows it.
        state.unlabeled_image = True
    if key in ("kernel", "linux", "initrd") or key in _NON_LINUX_KEYWORDS:
        state.warn(where, f"{key.upper()} before any LABEL is not an entry; ignored")
    elif key not in _IGNORED:
        state.warn(where, f"unknown directive {key!r} ignored")


def _label_directive(state: _State, label: _Label, key: str, arg: str, where: str) -> None:
    if key in ("kernel", "linux"):
        words = split_first(arg)
        label.image = words[0] if words else None
        label.image_args = words[1] if len(words) > 1 else ""
        label.loader = "linux"
        if key == "kernel" and label.image is not None:
            ext = posixpath.splitext(label.image.lower())[1]
            if label.image.lower().endswith("mboot.c32"):
                label.loader = "mboot"
            elif ext in _NON_LINUX_BY_EXT:
                label.loader = _NON_LINUX_BY_EXT[ext]
    elif key in _NON_LINUX_KEYWORDS:
        label.loader = _NON_LINUX_KEYWORDS[key]
        label.image = arg or None
    elif key == "initrd":
        label.initrd = [p for p in arg.split(",") if p]
    elif key not in _IGNORED:
        state.warn(where, f"unknown label directive {key!r} ignored")


def _entry(state: _State, label: _Label, index: int) -> BootEntry:
    base = state.base
    append = label.append if label.append is not None else (state.global_append or "")
    if append.strip(ASCII_BLANKS) == "-":
        append = ""
    elif state.dialect is Dialect.PETITBOOT and label.append is not None and state.global_append:
        # petitboot puts the global APPEND before the label's.
        append = f"{state.global_append} {append}"
    loader = label.loader
    kernel: FileRef | None = None
    initrds: list[str] = []
    args_words: list[str] = []
    if loader == "mboot":
        modules = [m.strip(ASCII_BLANKS) for m in append.split("---")]
        image_line, initrd = "", ""
        if len(modules) == 3:
            image_line, initrd = modules[1], modules[2]
        elif len(modules) == 2:
            image_line, initrd = modules[0], modules[1]
        words = split_first(image_line)
        if words:
            kernel = FileRef(_resolve(base, words[0]))
            args_words = split_words(words[1]) if len(words) > 1 else []
            loader = "linux"
        if initrd:
            initrds = [split_words(initrd)[0]]
    elif loader == "linux" and label.image is not None:
        kernel = FileRef(_resolve(base, label.image))
        for word in split_words(f"{label.image_args} {append}"):
            if word.lower().startswith("initrd="):
                initrds.extend(p for p in word[len("initrd=") :].split(",") if p)
            else:
                args_words.append(word)
        if not initrds:
            initrds = list(label.initrd)
    title = label.menu_label or label.name
    return BootEntry(
        title=title,
        kernel=kernel,
        initrds=tuple(FileRef(_resolve(base, i)) for i in initrds),
        args=" ".join(args_words) if kernel is not None else "",
        id=label.name,
        index_path=str(index),
        title_path=title,
        source=label.source,
        line=label.line,
        loader=loader if kernel is None else "linux",
    )


def parse_extlinux(
    volumes: VolumeSet | ConfigFiles,
    path: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
    dialect: Dialect = Dialect.GRUB,
) -> BootMenu:
    """Parse the extlinux/isolinux/syslinux config at *path* on the config volume.

    A label's ``APPEND`` replaces the global one, as SYSLINUX does, or
    follows it with `Dialect.PETITBOOT`.
    """
    vols = volumes if isinstance(volumes, VolumeSet) else VolumeSet.single(volumes)
    shown = normalize_path(path)
    state = _State(vols.primary, posixpath.dirname(shown), limits, dialect)
    _parse_file(state, shown, 0)
    entries = tuple(_entry(state, lab, k) for k, lab in enumerate(state.labels))
    names = [lab.name for lab in state.labels]
    idx = 0
    spec = state.default
    marked = [k for k, lab in enumerate(state.labels) if lab.menu_default]
    if marked:
        idx = marked[-1]
        spec = names[idx]
    elif state.ontimeout in names:
        idx = names.index(state.ontimeout)
    elif state.default in names:
        idx = names.index(state.default)
    timeout = None
    if state.timeout is not None:
        timeout = -1 if state.timeout == 0 else (state.timeout + 9) // 10
    return BootMenu(
        entries=entries,
        source=shown,
        format="extlinux",
        default=spec,
        default_index=idx,
        timeout=timeout,
        warnings=tuple(state.warnings),
    )
