"""petitboot's parser test suite (open-power/petitboot test/parser) against our parsers.

Every ``*.expected.json`` in ``$PVGRUB_SHARED/fixtures/bootcfg/petitboot``
(``make conformance``) is one case: its tree becomes a `DictVolume` (plus one
per extra device, with the UUIDs/labels the JSON gives), ``config_path`` is
parsed with ``implicit_env`` preset, and the options are compared by index on
every field the C test asserts (non-null), including the device a
kernel/initrd resolves to.

How petitboot's options map onto our menu:

* petitboot lists only options that load a kernel; we keep every GRUB menu
  entry, so the comparison uses the *bootable* entries.
* petitboot's syslinux parser emits options in reverse file order (the
  fixture notes say so); we keep file order, so syslinux indexes are
  mapped ``i -> n-1-i``.  Nothing else differs for that reason.
* Devices "hot-plugged after parse" are absent in a first parse (their
  resources must not resolve to them) and present in a second one (they
  must), since we resolve devices while the script runs, as GRUB does.

Every case is run twice:

* in petitboot's dialect (`Dialect.PETITBOOT`, ``--config-dialect=petitboot``),
  where every field petitboot's C test asserts must match;
* in GRUB's dialect (the default), where the fields listed in `DEVIATIONS`
  must hold GRUB's value instead (with GRUB's source-level reason) and all
  others petitboot's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corpus
import pytest

from pvgrub_py.bootcfg import (
    BootConfigError,
    BootEntry,
    BootMenu,
    DictVolume,
    VolumeIdentity,
    VolumeSet,
    parse_extlinux,
    parse_grub2,
    select,
)
from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.files import read_capped
from pvgrub_py.bootcfg.grubenv import parse_envblk

PETITBOOT = corpus.BOOTCFG / "petitboot"
SAVE_ENV = "grub2-save-env"
CASES = sorted(
    p.name.removesuffix(".expected.json")
    for p in PETITBOOT.glob("*.expected.json")
    if not p.name.startswith(SAVE_ENV)
)

MISSING = object()  # "GRUB produces no such option"


# -- why GRUB and petitboot disagree --------------------------------------------------

LATE_BODY = (
    "GRUB stores a menuentry body as source text and runs it only when the entry "
    "is booted, with $1=title and $2...=the extra menuentry arguments "
    "(menuentry.c prefixes the body with setparams) and the *final* global "
    "variables; petitboot runs the body at definition time in the caller's scope"
)
SET_FIRST_ARG = (
    "GRUB's set uses only its first argument (grub_core_cmd_set), so an unquoted "
    "`set kernelopts=root=X ro ...` stores just 'root=X'; petitboot joins all words"
)
BLS_TITLE = (
    "GRUB's blscfg passes the BLS title to the menu verbatim (create_entry_bls_config "
    "does not expand it), so '$os_name' stays literal; petitboot expands it"
)
BLS_INITRD = (
    "GRUB's blscfg pastes each initrd value after '($root)' into the entry script "
    "('initrd ($root)$blank /initramfs... $blank'), so the first word is the bare "
    "device '(dev)', which GRUB cannot open and the initrd command fails; petitboot "
    "splits the value into paths"
)
SEARCH_UNTYPED = (
    "GRUB's search needs --fs-uuid, --label or --file ('unspecified search type' "
    "otherwise) and leaves the variable unchanged; petitboot defaults to a UUID search"
)
SEARCH_MISS = (
    "a GRUB search that finds nothing fails with 'no such device' and leaves the "
    "variable unchanged; petitboot stores the search key so a device plugged in "
    "later can match"
)
NO_TITLE = "GRUB refuses a menuentry whose title expands to nothing ('missing arguments')"
TEST_S_DIR = (
    "GRUB's `test -s` opens the path as a file (test.c), so a directory is not -s "
    "and `[ ! -s /dir ]` is true; petitboot stat()s and sees a non-zero size"
)
RECURSION = (
    "a file that sources itself forever is refused with a one-line BootConfigError "
    "once files nest deeper than Limits.max_source_depth; petitboot stops at 10 "
    "levels and keeps the options parsed so far (GRUB itself would recurse until "
    "it runs out of memory)"
)
SYSLINUX_APPEND = (
    "in SYSLINUX a label's APPEND replaces the global APPEND (Syslinux wiki, "
    "Directives/append: 'Specific append present; global append ignored'); "
    "petitboot prepends the global one"
)


@dataclass(frozen=True)
class Deviation:
    reason: str
    grub: object  # GRUB's value for the field, or MISSING


def _source_functions_grub(menu: BootMenu) -> None:
    assert [e.title for e in menu.entries] == ["f1a", "f2a"]
    assert all(e.kernel is None for e in menu.entries)


DEVIATIONS: dict[str, dict[tuple[int | str, str], Deviation]] = {
    "grub2-blscfg-multiple-bls": {
        (0, "name"): Deviation(BLS_TITLE, "$os_name (4.15.2-302.fc28.x86_64) 28 (Twenty Eight)"),
        (1, "name"): Deviation(BLS_TITLE, "$os_name (4.14.18-300.fc28.x86_64) 28 (Twenty Eight)"),
    },
    "grub2-blscfg-opts-config": {
        (0, "args"): Deviation(SET_FIRST_ARG, "root=/dev/mapper/fedora-root"),
    },
    "grub2-blscfg-opts-grubenv": {
        (0, "initrd"): Deviation(BLS_INITRD, None),
        (0, "initrd_device"): Deviation(BLS_INITRD, MISSING),
    },
    "grub2-devpath": {
        (0, "kernel_device"): Deviation(LATE_BODY, "extdev"),
        (1, "kernel_device"): Deviation(LATE_BODY, "extdev"),
        (2, "kernel_device"): Deviation(LATE_BODY, "extdev"),
    },
    "grub2-multiple-resolve": {
        (0, "kernel_device"): Deviation(SEARCH_UNTYPED, "__test0"),
        (1, "kernel_device"): Deviation(SEARCH_UNTYPED, "__test0"),
    },
    "grub2-search-args": {
        (0, "name"): Deviation(SEARCH_UNTYPED + "; $root keeps the config device", "__test0"),
    },
    "grub2-search-uuid": {
        ("count", "count"): Deviation(SEARCH_MISS + "; " + SEARCH_UNTYPED + "; " + NO_TITLE, 1),
        (1, "name"): Deviation(SEARCH_MISS + "; " + NO_TITLE, MISSING),
        (2, "name"): Deviation(SEARCH_UNTYPED + "; " + NO_TITLE, MISSING),
    },
    "grub2-source-functions": {
        ("count", "count"): Deviation(LATE_BODY, 0),
        (0, "name"): Deviation(LATE_BODY, MISSING),
        (0, "kernel"): Deviation(LATE_BODY, MISSING),
        (0, "kernel_device"): Deviation(LATE_BODY, MISSING),
        (1, "name"): Deviation(LATE_BODY, MISSING),
        (1, "kernel"): Deviation(LATE_BODY, MISSING),
        (1, "kernel_device"): Deviation(LATE_BODY, MISSING),
    },
    "grub2-source-recursion-infinite": {
        ("case", "error"): Deviation(RECURSION, BootConfigError),
    },
    "grub2-test-file-ops": {
        (0, "name"): Deviation(TEST_S_DIR, "fail_s_2"),
    },
    "syslinux-global-append": {
        (2, "args"): Deviation(SYSLINUX_APPEND, "root=/dev/sdb"),
        (3, "args"): Deviation(SYSLINUX_APPEND, "console=tty0"),
    },
    "syslinux-nested-config": {
        (0, "args"): Deviation(SYSLINUX_APPEND, "root=/dev/sdc"),
        (1, "args"): Deviation(SYSLINUX_APPEND, "root=/dev/sda"),
        (2, "args"): Deviation(SYSLINUX_APPEND, "root=/dev/sdb"),
    },
}

#: Extra GRUB-side checks for cases whose deviation is not one field.
GRUB_CHECKS: dict[str, Callable[[BootMenu], None]] = {
    "grub2-source-functions": _source_functions_grub,
}


# -- loading a case ----------------------------------------------------------------------


def _tree_files(tree: Path) -> dict[str, bytes]:
    if not tree.is_dir():
        return {}
    return {"/" + str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


@dataclass
class Case:
    name: str
    exp: dict[str, Any]
    before: VolumeSet
    after: VolumeSet


def load_case(name: str) -> Case:
    exp = json.loads((PETITBOOT / f"{name}.expected.json").read_text())
    dev = exp.get("device") or {}
    main = DictVolume(
        _tree_files(PETITBOOT / exp["tree"]),
        exp.get("dirs", []),
        VolumeIdentity(dev.get("name", "__test0"), dev.get("uuid"), dev.get("label")),
    )
    early = [main]
    late: list[DictVolume] = []
    for extra in exp.get("devices", []):
        files = _tree_files(PETITBOOT / f"{name}@{extra['name']}") or extra.get("files", {})
        vol = DictVolume(
            files, [], VolumeIdentity(extra["name"], extra.get("uuid"), extra.get("label"))
        )
        (early if extra.get("when") == "added_before_parse" else late).append(vol)
    return Case(name, exp, VolumeSet(early), VolumeSet(early + late))


def parse(case: Case, volumes: VolumeSet, dialect: Dialect) -> BootMenu:
    if case.exp["parser"] == "syslinux":
        return parse_extlinux(volumes, case.exp["config_path"], dialect=dialect)
    return parse_grub2(
        volumes,
        case.exp["config_path"],
        env=case.exp.get("implicit_env") or {},
        dialect=dialect,
    )


def view(case: Case, menu: BootMenu) -> list[BootEntry]:
    """Our entries in petitboot's option order."""
    opts = [e for e in menu.entries if e.bootable]
    if case.exp["parser"] == "syslinux":
        opts.reverse()
    return opts


def device_name(volumes: VolumeSet, device: str | None) -> str | None:
    vol = volumes.resolve(device)
    return None if vol is None else vol.identity.name


def actual_field(
    case: Case, volumes: VolumeSet, opts: list[BootEntry], idx: int, field: str
) -> Any:
    if idx >= len(opts):
        return MISSING
    e = opts[idx]
    if field == "name":
        return e.title
    if field == "kernel":
        return e.kernel.path if e.kernel is not None else MISSING
    if field == "initrd":
        return " ".join(i.path for i in e.initrds) or None
    if field == "args":
        return e.args
    if field == "kernel_device":
        return device_name(volumes, e.kernel.device) if e.kernel is not None else MISSING
    if field == "initrd_device":
        return device_name(volumes, e.initrds[0].device) if e.initrds else MISSING
    raise AssertionError(field)


def expected_fields(case: Case) -> list[tuple[int, str, Any]]:
    config_device = (case.exp.get("device") or {}).get("name", "__test0")
    out: list[tuple[int, str, Any]] = []
    for opt in case.exp["options"]:
        idx = opt["index"]
        for field in ("name", "kernel", "initrd", "args"):
            if opt.get(field) is not None:
                out.append((idx, field, opt[field]))
        if opt.get("kernel") is not None:
            out.append((idx, "kernel_device", opt.get("kernel_device", config_device)))
        if opt.get("initrd") is not None:
            out.append((idx, "initrd_device", opt.get("initrd_device", config_device)))
        for field in opt.get("absent", []):
            out.append((idx, field, None if field == "initrd" else ""))
    return out


# -- tests ---------------------------------------------------------------------------


@pytest.mark.conformance
def test_every_fixture_is_covered(fixtures_dir: Path) -> None:
    # conftest's fixture fails with a clear message when shared/ is missing.
    assert fixtures_dir / "bootcfg" / "petitboot" == PETITBOOT
    assert len(CASES) == 49
    assert (PETITBOOT / f"{SAVE_ENV}.expected.json").is_file()


def check_case(
    case: Case, dialect: Dialect, deviations: dict[tuple[int | str, str], Deviation]
) -> None:
    """Every asserted field of *case*: petitboot's value, or GRUB's for *deviations*."""
    menu = parse(case, case.after, dialect)
    opts = view(case, menu)
    if case.name in GRUB_CHECKS and deviations:
        GRUB_CHECKS[case.name](menu)

    count = case.exp.get("boot_option_count")
    if ("count", "count") in deviations:
        assert len(opts) == deviations[("count", "count")].grub
    elif count is not None:
        assert len(opts) == count

    for idx, field, want in expected_fields(case):
        dev = deviations.get((idx, field))
        got = actual_field(case, case.after, opts, idx, field)
        if dev is not None:
            assert got == dev.grub or (got is MISSING and dev.grub is MISSING), (idx, field)
            continue
        assert got == want, (idx, field)

    defaults = [o["index"] for o in case.exp["options"] if o.get("is_default")]
    if defaults:
        chosen = select(menu)
        assert opts.index(chosen) == defaults[0]

    # Devices that appear only after parsing: with them absent the resources
    # must not resolve to them.
    pre = parse(case, case.before, dialect)
    pre_opts = view(case, pre)
    for opt in case.exp["options"]:
        for res in opt.get("unresolved_before_hotplug", []):
            if (opt["index"], f"{res}_device") in deviations:
                continue
            entry = pre_opts[opt["index"]]
            ref = entry.kernel if res == "kernel" else entry.initrds[0]
            assert ref is not None
            assert device_name(case.before, ref.device) is None


@pytest.mark.conformance
@pytest.mark.parametrize("name", CASES)
def test_petitboot_dialect(name: str) -> None:
    """petitboot's own expectations, all of them, in petitboot's dialect."""
    check_case(load_case(name), Dialect.PETITBOOT, {})


@pytest.mark.conformance
@pytest.mark.parametrize("name", CASES)
def test_grub_dialect(name: str) -> None:
    """The same cases read as GRUB reads them (the default dialect)."""
    case = load_case(name)
    deviations = DEVIATIONS.get(name, {})
    if ("case", "error") in deviations:
        with pytest.raises(BootConfigError) as info:
            parse(case, case.after, Dialect.GRUB)
        assert "\n" not in str(info.value)
        assert "nested deeper" in str(info.value)
        return
    check_case(case, Dialect.GRUB, deviations)


@pytest.mark.conformance
def test_grub_is_the_default_dialect() -> None:
    case = load_case("syslinux-global-append")
    default = view(case, parse_extlinux(case.after, case.exp["config_path"]))
    grub = view(case, parse(case, case.after, Dialect.GRUB))
    assert [e.args for e in default] == [e.args for e in grub]
    assert default[2].args == "root=/dev/sdb"


@pytest.mark.conformance
def test_every_deviation_is_a_real_difference() -> None:
    """Each field in `DEVIATIONS` differs between the two dialects (none is stale)."""
    for name, devs in sorted(DEVIATIONS.items()):
        case = load_case(name)
        if ("case", "error") in devs:
            with pytest.raises(BootConfigError):
                parse(case, case.after, Dialect.GRUB)
            continue
        grub = view(case, parse(case, case.after, Dialect.GRUB))
        petit = view(case, parse(case, case.after, Dialect.PETITBOOT))
        for idx, field in devs:
            if idx == "count":
                assert len(grub) != len(petit), name
                continue
            assert isinstance(idx, int)
            a = actual_field(case, case.after, grub, idx, field)
            b = actual_field(case, case.after, petit, idx, field)
            assert a != b, (name, idx, field)


# -- save_env vectors: we never write ----------------------------------------------------

_SAVE_FILE = PETITBOOT / f"{SAVE_ENV}.expected.json"
SAVE_CASES = json.loads(_SAVE_FILE.read_text())["cases"] if _SAVE_FILE.is_file() else []


@pytest.mark.conformance
@pytest.mark.parametrize("vector", SAVE_CASES, ids=[c["name"] for c in SAVE_CASES])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_save_env_block_and_never_writes(vector: dict[str, Any], dialect: Dialect) -> None:
    """The block save_env leaves is petitboot's, byte for byte; the disk is untouched."""
    before = vector["grubenv_before"].encode()
    after = vector["grubenv_after"].encode()
    env_file = vector.get("env_file", "/boot/grub/grubenv")
    vol = DictVolume(
        {"/boot/grub/grub.cfg": vector["script"], env_file: before},
        volume=VolumeIdentity("__test0"),
    )
    menu = parse_grub2(vol, "/boot/grub/grub.cfg", dialect=dialect)
    assert menu.entries == ()
    assert read_capped(vol, env_file) == before
    if after == before:  # the nospace cases: no room, nothing saved
        assert menu.env_writes == ()
        assert [w for w in menu.warnings if "no room" in w]
    elif "-f env_file" in vector["script"] and dialect is Dialect.GRUB:
        # GRUB opens `-f env_file` as given: a relative name is no file.
        assert menu.env_writes == ()
        assert [w for w in menu.warnings if "env_file" in w]
    else:
        assert menu.env_writes == ((env_file, after),)
    assert parse_envblk(after) is not None


EMPTY_ENV = "# GRUB Environment Block\n" + "#" * 40


def test_load_env_sees_an_earlier_save_env() -> None:
    script = "a=1\nsave_env a\na=2\nload_env\nmenuentry t$a { linux /k }\n"
    vol = DictVolume({"/boot/grub/grub.cfg": script, "/boot/grub/grubenv": EMPTY_ENV})
    menu = parse_grub2(vol, "/boot/grub/grub.cfg")
    assert [e.title for e in menu.entries] == ["t1"]


def test_save_env_in_an_entry_body_is_not_modelled() -> None:
    script = "menuentry a { saved_entry=a; save_env saved_entry; linux /k }\n"
    vol = DictVolume({"/boot/grub/grub.cfg": script, "/boot/grub/grubenv": EMPTY_ENV})
    for dialect in Dialect:
        assert parse_grub2(vol, "/boot/grub/grub.cfg", dialect=dialect).env_writes == ()
