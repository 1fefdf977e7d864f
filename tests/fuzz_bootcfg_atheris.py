#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of every boot-config parser.

The hypothesis suite (tests/test_bootcfg_fuzz.py) generates configs from a
grammar; this one lets libFuzzer mutate real configs towards new branches
of the interpreter.  One input is::

    SELECTOR  MAIN-FILE  "\\0\\0"  OTHER-FILE

SELECTOR picks the parser (grub.cfg in GRUB's or petitboot's dialect,
extlinux in either, menu.lst, a BLS directory, a grubenv block with
``save_env``'s update, the GRUB lexer and parser alone).  MAIN-FILE is the
config; OTHER-FILE is a second file on the same volume (``/b.cfg``, a BLS
snippet, the grubenv) and on a second volume, so ``source``, ``search``,
``INCLUDE`` and ``load_env`` have something to find.

The property: a parser returns a menu or raises a one-line
`BootConfigError`, in bounded time (libFuzzer's ``-timeout``) and memory
(``-rss_limit_mb``).  Anything else is a crash libFuzzer reports.

Run it: ``python3 tests/fuzz_bootcfg_atheris.py CORPUS_DIR -max_total_time=600``
(``make fuzz`` does, seeding the corpus with ``--seed CORPUS_DIR`` first: this
project's own configs, tests/own_bootcfg.py, and the third-party configs of
$PVGRUB_SHARED/fixtures/bootcfg when present; ``--seed DIR --own-only`` skips those);
``tests/test_bootcfg_atheris.py`` runs a short session under pytest.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pvgrub_py.bootcfg"]):
    from pvgrub_py.bootcfg.bls import parse_bls_dir
    from pvgrub_py.bootcfg.dialect import Dialect
    from pvgrub_py.bootcfg.entry import BootMenu
    from pvgrub_py.bootcfg.errors import BootConfigError
    from pvgrub_py.bootcfg.extlinux import parse_extlinux
    from pvgrub_py.bootcfg.files import DictVolume, VolumeIdentity, VolumeSet
    from pvgrub_py.bootcfg.grub2 import parse_grub2
    from pvgrub_py.bootcfg.grub2_parser import NestingTooDeep, parse_script
    from pvgrub_py.bootcfg.grub_legacy import parse_grub_legacy
    from pvgrub_py.bootcfg.grubenv import parse_envblk, set_envblk_var
    from pvgrub_py.bootcfg.limits import Limits
    from pvgrub_py.bootcfg.select import select

SEPARATOR = b"\0\0"
#: Small budgets so a hostile input hits them within libFuzzer's timeout.
LIMITS = Limits(max_statements=20_000, max_file_loads=64, max_file_probes=2_000)


def _volumes(main: bytes, other: bytes, path: str) -> VolumeSet:
    first = DictVolume(
        {path: main, "/b.cfg": other, "/boot/grub/grubenv": other,
         "/loader/entries/a-1.0.conf": other, "/k": b"k"},
        ["/boot", "/boot/grub", "/loader", "/loader/entries"],
        VolumeIdentity("hd0,msdos1", uuid="0000-1111", label="root"),
    )  # fmt: skip
    second = DictVolume(
        {"/b.cfg": main, "/k": b"k"}, [], VolumeIdentity("hd0,msdos2", uuid="u-1", label="L")
    )
    return VolumeSet([first, second])


def _check(menu: BootMenu) -> None:
    if not 0 <= menu.default_index < max(1, len(menu.entries)):
        raise AssertionError(f"default_index {menu.default_index} of {len(menu.entries)}")
    try:
        select(menu)
    except BootConfigError as exc:
        _one_line(exc)


def _one_line(exc: BootConfigError) -> None:
    if "\n" in str(exc):
        raise AssertionError(f"a multi-line error: {str(exc)[:200]!r}")


def _grub2(dialect: Dialect) -> Callable[[bytes, bytes], None]:
    def run(main: bytes, other: bytes) -> None:
        path = "/boot/grub/grub.cfg"
        _check(parse_grub2(_volumes(main, other, path), path, limits=LIMITS, dialect=dialect))

    return run


def _extlinux(dialect: Dialect) -> Callable[[bytes, bytes], None]:
    def run(main: bytes, other: bytes) -> None:
        path = "/extlinux.conf"
        _check(parse_extlinux(_volumes(main, other, path), path, limits=LIMITS, dialect=dialect))

    return run


def _legacy(main: bytes, other: bytes) -> None:
    path = "/boot/grub/menu.lst"
    _check(parse_grub_legacy(_volumes(main, other, path), path, limits=LIMITS))


def _bls(main: bytes, other: bytes) -> None:
    vols = _volumes(main, other, "/loader/entries/b-2.0.conf")
    _check(parse_bls_dir(vols, limits=LIMITS))


def _grubenv(main: bytes, other: bytes) -> None:
    block = parse_envblk(main)
    name = other.decode("latin-1")[:64] or "saved_entry"
    updated = set_envblk_var(main, name, other.decode("latin-1")[64:])
    if updated is not None:
        if block is None or len(updated) != len(main):
            raise AssertionError("save_env changed a block's size or wrote a non-block")
        again = parse_envblk(updated)
        if again is None:
            raise AssertionError("save_env broke the signature")


def _script(main: bytes, other: bytes) -> None:
    with contextlib.suppress(NestingTooDeep):
        parse_script(main.decode("latin-1"), max_nesting=LIMITS.max_nesting)


TARGETS: list[Callable[[bytes, bytes], None]] = [
    _grub2(Dialect.GRUB),
    _grub2(Dialect.PETITBOOT),
    _extlinux(Dialect.GRUB),
    _extlinux(Dialect.PETITBOOT),
    _legacy,
    _bls,
    _grubenv,
    _script,
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    main, _, other = data[1:].partition(SEPARATOR)
    try:
        target(main, other)
    except BootConfigError as exc:
        _one_line(exc)


#: Which harness selectors read a config of each kind (see TARGETS).
SELECTORS = {
    "grub2": [0, 1, 7],
    "extlinux": [2, 3],
    "grub-legacy": [4],
    "bls": [5],
    "grubenv": [6],
}


def _shared_configs() -> list[tuple[list[int], bytes]]:
    """The third-party config corpus ($PVGRUB_SHARED/fixtures/bootcfg), when it is there."""
    shared = Path(os.environ.get("PVGRUB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    fixtures = shared / "fixtures" / "bootcfg"
    out: list[tuple[list[int], bytes]] = []
    if not fixtures.is_dir():
        return out
    for cfg in sorted(p for p in fixtures.rglob("*") if p.is_file() and p.stat().st_size < 65536):
        if cfg.suffix == ".json":
            continue
        name = cfg.name.lower()
        if "grub" in name or name.endswith(".cfg"):
            kind = "grub2"
        elif "menu" in name:
            kind = "grub-legacy"
        elif "linux" in name or "syslinux" in str(cfg):
            kind = "extlinux"
        elif name.endswith(".conf"):
            kind = "bls"
        elif "grubenv" in name or "env" in name:
            kind = "grubenv"
        else:
            kind = "grub2"
        out.append((SELECTORS[kind], cfg.read_bytes()))
    return out


#: GRUB command lines with options in each spelling the option parser takes,
#: including a value on a flag (``--unrestricted=yes``, refused as GRUB does),
#: so libFuzzer starts from the ``--opt=value`` branches.
OPTION_SEEDS = (
    "menuentry --unrestricted=yes 'x' { linux /v }\n"
    "menuentry --unrestricted --class=gnu --class os --id=y 'y' { linux /k }\n"
    "submenu --users= --hotkey=a 's' { menuentry -- '-t' { linux /k } }\n",
    "menuentry 'z' --source='linux /k'\n"
    "search --no-floppy --fs-uuid --set=root --hint=hd0,msdos1 u-1\n"
    "search -nu -s=x u-1\nsearch --file=/b.cfg /b.cfg\nsearch.fs_uuid u-1 r\n"
    "probe -u -s=v hd0,msdos1\nload_env --file=/boot/grub/grubenv -s=1\n"
    "save_env -f /boot/grub/grubenv --skip-sig x\n",
)


def _own_configs() -> list[tuple[list[int], bytes, bytes]]:
    """This project's own configs (tests/own_bootcfg.py), each alone and with a grubenv."""
    import own_bootcfg

    env = own_bootcfg.ALL["grubenv"][1].encode()
    out: list[tuple[list[int], bytes, bytes]] = []
    for kind, text in own_bootcfg.ALL.values():
        out.append((SELECTORS[kind], text.encode(), b""))
        if kind == "grub2":
            out.append(([0, 1], text.encode(), env))
    out += [([0, 1, 7], text.encode(), env) for text in OPTION_SEEDS]
    return out


def seed(corpus: Path, own_only: bool = False) -> int:
    """Write real-shaped configs into *corpus*, one input per parser that reads them.

    Always this project's own configs; the third-party corpus as well when it is
    present and *own_only* is false."""
    corpus.mkdir(parents=True, exist_ok=True)
    inputs = _own_configs()
    if not own_only:
        inputs += [(sel, text, b"") for sel, text in _shared_configs()]
    count = 0
    for selectors, text, other in inputs:
        for sel in selectors:
            (corpus / f"{sel}-{count:04d}").write_bytes(bytes([sel]) + text + SEPARATOR + other)
            count += 1
    return count


def main() -> None:
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--seed":
        own_only = sys.argv[3:] == ["--own-only"]
        print(f"seeded {seed(Path(sys.argv[2]), own_only)} inputs into {sys.argv[2]}")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
