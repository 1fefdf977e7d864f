"""What the guest side of a boot hands to the host side: the menu and the choice.

Everything that reads guest data (the disk, its boot config, the entry
selection) produces a `BootPlan`; everything that acts on the host (the
vTPM, the output directory, the result records) consumes one.  With
``--runas`` the two sides are different processes and the plan crosses a
pipe as JSON, so it holds only plain data: the menu as the user sees it,
the chosen files as in-image paths with a description for messages, and
the cmdline.  The file *bytes* follow it on the same pipe
(`pvgrub_py.bootloader.wire`).

`plan_from_json` treats its input as hostile: a compromised parser child
controls it, so every field is type-checked and size-capped before the
parent uses it (the XSA-443 threat model: the guest may own the parser).
"""

from __future__ import annotations

from pvgrub_py.errors import InputError
from pvgrub_py.named_tuple import NamedTuple

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

#: Menu items a plan may carry (bootcfg's own cap is 1024 entries).
MAX_MENU_ITEMS = 4096
#: Longest title, path or description accepted from the guest side.
MAX_TEXT = 64 * 1024
#: Longest cmdline (GRUB's expanded-argv cap in bootcfg is 1 MiB).
MAX_ARGS = 1 << 20
#: Initrds one entry may concatenate.
MAX_INITRDS = 64
#: Notes a plan may carry, and the longest one.
MAX_NOTES = 16
MAX_NOTE = 1024


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class MenuLine(NamedTuple):
    """One menu entry as the interactive menu and ``-l`` show it."""

    title: str
    #: The cmdline this entry boots with (entry args + --args + --extra_args),
    #: what ``e`` in the menu starts editing from.
    args: str
    bootable: bool


class FileSpec(NamedTuple):
    """A kernel or initrd the plan will stream: in-image path and where it lives."""

    path: str
    #: ``"disk.img: GPT partition 2: /boot/vmlinuz-6.1"``, for messages.
    where: str


class BootPlan(NamedTuple):
    config: str
    menu: tuple[MenuLine, ...]
    default_index: int
    timeout: int | None
    #: The chosen entry's index in `menu`; None when ``--kernel`` bypassed it.
    entry_index: int | None
    #: None when only the menu was asked for (``-l``).
    kernel: FileSpec | None
    initrds: tuple[FileSpec, ...]
    args: str
    #: What the host side should tell the admin about this config (one line each).
    notes: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[FileSpec, ...]:
        """The files in stream order: kernel, then the initrds."""
        return ((self.kernel,) if self.kernel is not None else ()) + self.initrds


def _file_json(spec: FileSpec) -> dict[str, str]:
    return {"path": spec.path, "where": spec.where}


def plan_to_json(plan: BootPlan) -> dict[str, Any]:
    return {
        "config": plan.config,
        "menu": [{"title": m.title, "args": m.args, "bootable": m.bootable} for m in plan.menu],
        "default_index": plan.default_index,
        "timeout": plan.timeout,
        "entry_index": plan.entry_index,
        "kernel": None if plan.kernel is None else _file_json(plan.kernel),
        "initrds": [_file_json(f) for f in plan.initrds],
        "args": plan.args,
        "notes": list(plan.notes),
    }


class _Checker:
    """Field access on an untrusted JSON object, each failure one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, problem: str) -> InputError:
        return InputError(self.source, f"malformed boot plan: {problem}")

    def obj(self, value: object, what: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict) or set(value) != keys:
            raise self.fail(f"{what} is not an object with fields {sorted(keys)}")
        return value

    def text(self, value: object, what: str, cap: int = MAX_TEXT) -> str:
        if not isinstance(value, str) or len(value) > cap:
            raise self.fail(f"{what} is not a string of at most {cap} characters")
        # Guest text is config bytes decoded with surrogateescape
        # (`bootcfg.files.decode_config`); JSON can also carry surrogates that
        # no byte maps to (``\ud800``), which would fail when the cmdline or a
        # result record is encoded back to bytes.
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise self.fail(f"{what} holds a character that stands for no byte") from None
        return value

    def int_or_none(self, value: object, what: str, upper: int) -> int | None:
        if value is None:
            return None
        return self.index(value, what, upper)

    def index(self, value: object, what: str, upper: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
            raise self.fail(f"{what} is not an integer in [0, {upper})")
        return value

    def file(self, value: object, what: str) -> FileSpec:
        d = self.obj(value, what, {"path", "where"})
        path = self.text(d["path"], f"{what} path")
        return FileSpec(path, self.text(d["where"], f"{what} where"))


def plan_from_json(doc: object, source: str) -> BootPlan:
    """The `BootPlan` in *doc*, or `InputError` naming the bad field."""
    c = _Checker(source)
    d = c.obj(
        doc,
        "the plan",
        {"config", "menu", "default_index", "timeout", "entry_index", "kernel", "initrds", "args",
         "notes"},
    )  # fmt: skip
    raw_menu = d["menu"]
    if not isinstance(raw_menu, list) or len(raw_menu) > MAX_MENU_ITEMS:
        raise c.fail(f"menu is not a list of at most {MAX_MENU_ITEMS} entries")
    menu: list[MenuLine] = []
    for k, item in enumerate(raw_menu):
        m = c.obj(item, f"menu entry {k}", {"title", "args", "bootable"})
        if not isinstance(m["bootable"], bool):
            raise c.fail(f"menu entry {k} bootable is not a boolean")
        menu.append(
            MenuLine(
                c.text(m["title"], f"menu entry {k} title"),
                c.text(m["args"], f"menu entry {k} args", MAX_ARGS),
                m["bootable"],
            )
        )
    timeout = d["timeout"]
    if timeout is not None and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or abs(timeout) > 1 << 31
    ):
        raise c.fail("timeout is not an integer")
    raw_initrds = d["initrds"]
    if not isinstance(raw_initrds, list) or len(raw_initrds) > MAX_INITRDS:
        raise c.fail(f"initrds is not a list of at most {MAX_INITRDS} files")
    return BootPlan(
        config=c.text(d["config"], "config"),
        menu=tuple(menu),
        default_index=c.index(d["default_index"], "default_index", max(1, len(menu))),
        timeout=timeout,
        entry_index=c.int_or_none(d["entry_index"], "entry_index", max(1, len(menu))),
        kernel=None if d["kernel"] is None else c.file(d["kernel"], "kernel"),
        initrds=tuple(c.file(f, f"initrd {k}") for k, f in enumerate(raw_initrds)),
        args=c.text(d["args"], "args", MAX_ARGS),
        notes=_notes(c, d["notes"]),
    )


def _notes(c: _Checker, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_NOTES:
        raise c.fail(f"notes is not a list of at most {MAX_NOTES} strings")
    notes = tuple(c.text(n, f"note {k}", MAX_NOTE) for k, n in enumerate(raw))
    if any("\n" in n for n in notes):
        raise c.fail("a note spans lines")
    return notes
