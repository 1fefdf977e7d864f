"""Choose the entry to boot from a `BootMenu`.

Default resolution follows GRUB 2's ``get_entry_number``/``menuentry_eq``
(``grub-core/normal/menu.c``; GRUB manual, "default"):

* The specification is read one menu level at a time, levels separated by
  ``>`` (``>>`` stands for a literal ``>`` in a title).
* A level that parses as a C unsigned number (``0x`` and leading-``0``
  bases included) is an index into that menu level, counting submenus as
  items; otherwise it is compared with each item's title, then its id.
* A specification naming a submenu without a further level picks the
  submenu's first entry (GRUB unsets ``default`` inside the submenu).
* Nothing matching, or an index past the end, falls back to the first
  entry of that menu (GRUB, and pygrub's ``IndexError`` fallback).

Where ``next_entry``/``saved_entry`` come in: GRUB core only reads
``$default``; grub-mkconfig's header script does
``if [ "${next_entry}" ]; then set default="${next_entry}" ... else set
default="${saved_entry}"`` (when GRUB_DEFAULT=saved).  The interpreter
runs that script, so ``next_entry`` beats ``saved_entry`` beats the
configured default exactly when the config says so, and a config without
that logic ignores a stale ``next_entry`` just like GRUB.  We never clear
``next_entry`` (the guest disk is read-only to us), so a ``grub-reboot``
selection stays in effect for every boot until the guest clears it.

An explicit ``--entry`` (pygrub's option) is matched differently, for
compatibility with existing ``bootloader_args``: a plain number is an index
into the flattened entry list (pygrub's numbering), ``a>b`` is a GRUB path,
anything else an exact title, title path or id.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, SubmenuInfo
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.grub_strtoul import strtoul_prefix
from pvgrub_py.bootcfg.limits import small_int

_Item = BootEntry | SubmenuInfo


def _parent(path: str) -> str:
    cut = path.rfind(">")
    return "" if cut < 0 else path[:cut]


def _last_index(path: str) -> int:
    return int(path.rsplit(">", 1)[-1])


def _children(
    entries: Sequence[BootEntry], submenus: Sequence[SubmenuInfo]
) -> dict[str, list[_Item]]:
    tree: dict[str, list[_Item]] = {}
    items: list[_Item] = [*entries, *submenus]
    for item in items:
        tree.setdefault(_parent(item.index_path), []).append(item)
    for level in tree.values():
        level.sort(key=lambda it: _last_index(it.index_path))
    return tree


def menuentry_eq(ident: str, spec: str) -> int | None:
    """Where *spec*'s first level ends if it names *ident*, else None.

    Returns the index of the separating ``>`` in *spec* or ``len(spec)``.
    """
    i = j = 0
    while True:
        sep = j < len(spec) and spec[j] == ">" and not (j + 1 < len(spec) and spec[j + 1] == ">")
        if sep:
            return j if i == len(ident) else None
        if j < len(spec) and spec[j] == ">":
            j += 1
        a = ident[i] if i < len(ident) else None
        b = spec[j] if j < len(spec) else None
        if a != b:
            return None
        if a is None:
            return j if ident else None
        i += 1
        j += 1


def _resolve_level(level: list[_Item], spec: str) -> tuple[_Item, str | None] | None:
    parsed = strtoul_prefix(spec)  # grub_strtoul(spec, &tail, 0)
    if parsed is not None and (not parsed[1] or parsed[1].startswith(">")):
        num, tail = parsed
        if num >= len(level):
            return None
        return level[num], (tail[1:] if tail else None)
    for item in level:
        for key in (item.title, item.id):
            if key is None:
                continue
            end = menuentry_eq(key, spec)
            if end is not None:
                return item, (spec[end + 1 :] if end < len(spec) else None)
    return None


def resolve_path(
    entries: Sequence[BootEntry], submenus: Sequence[SubmenuInfo], spec: str | None
) -> int | None:
    """Flat index of the entry a GRUB default specification names, or None."""
    if spec is None or not entries:
        return None
    tree = _children(entries, submenus)
    flat = {e.index_path: k for k, e in enumerate(entries)}
    prefix = ""
    rest: str | None = spec
    for _ in range(len(entries) + len(submenus) + 1):
        level = tree.get(prefix, [])
        if not level:
            return None
        found = _resolve_level(level, rest) if rest is not None else None
        if found is None:
            if rest is not None and prefix == "":
                return None
            item: _Item = level[0]
            rest = None
        else:
            item, rest = found
        if isinstance(item, BootEntry):
            return flat[item.index_path]
        prefix = item.index_path
    return None


def default_index(
    entries: Sequence[BootEntry], submenus: Sequence[SubmenuInfo], spec: str | None
) -> int:
    """`resolve_path` with GRUB's fallback to the first entry."""
    found = resolve_path(entries, submenus, spec)
    if found is not None:
        return found
    return _first_top_level(entries, submenus)


def _first_top_level(entries: Sequence[BootEntry], submenus: Sequence[SubmenuInfo]) -> int:
    """GRUB's entry 0: the first item, entering submenus at their first entry."""
    if not entries:
        return 0
    found = resolve_path(entries, submenus, "0")
    return 0 if found is None else found


def find_entry(menu: BootMenu, spec: str) -> int | None:
    """Flat index for an explicit ``--entry`` value (see the module docstring)."""
    text = spec.strip()
    number = small_int(text)
    if number is not None and not text.startswith("-"):
        return number if number < len(menu.entries) else None
    if ">" in text:
        found = resolve_path(menu.entries, menu.submenus, text)
        if found is not None:
            return found
    for attr in ("title", "title_path", "id"):
        for k, entry in enumerate(menu.entries):
            if getattr(entry, attr) == text:
                return k
    return None


def select(menu: BootMenu, entry: str | None = None, *, strict: bool = True) -> BootEntry:
    """The entry to boot: ``--entry`` if given, else the menu's default.

    A chosen entry that loads no Linux kernel is replaced by the first
    bootable one named in ``$fallback`` (GRUB manual, "fallback"); without
    one, `BootConfigError`.  An ``--entry`` that matches nothing is an
    error when *strict*, else ignored as pygrub ignores it.
    """
    if not menu.entries:
        raise BootConfigError(menu.source, "the boot menu has no entries")
    idx = menu.default_index
    if entry is not None:
        found = find_entry(menu, entry)
        if found is None:
            if strict:
                raise BootConfigError(menu.source, f"no menu entry matches {entry[:80]!r}")
        else:
            idx = found
    if not 0 <= idx < len(menu.entries):
        idx = 0
    chosen = menu.entries[idx]
    if chosen.bootable:
        return chosen
    for spec in (menu.fallback or "").split():
        alt = resolve_path(menu.entries, menu.submenus, spec)
        if alt is not None and menu.entries[alt].bootable:
            return menu.entries[alt]
    what = chosen.loader or "nothing"
    raise BootConfigError(
        f"{chosen.source}:{chosen.line}" if chosen.line else chosen.source,
        f"entry {chosen.index_path} {chosen.title!r} loads no Linux kernel ({what})",
    )
