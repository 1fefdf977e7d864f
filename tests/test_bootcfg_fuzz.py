"""Untrusted configs: only `BootConfigError` escapes, quickly, with bounded output.

Hypothesis feeds every parser random text built from GRUB/Syslinux/menu.lst
vocabulary, raw bytes, and mutated copies of real-shaped configs (this
project's own, tests/own_bootcfg.py; the third-party corpus under conformance).  Targeted
tests then check the bounds one by one: each hostile config fails with a
single-line error naming the file and line, well under a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import corpus
import own_bootcfg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvgrub_py.bootcfg import (
    BootConfigError,
    BootMenu,
    DictVolume,
    Limits,
    VolumeIdentity,
    VolumeSet,
    parse_bls_dir,
    parse_extlinux,
    parse_grub2,
    parse_grub_legacy,
    select,
)
from pvgrub_py.bootcfg.bls import parse_bls, vercmp
from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.grub2_lexer import tokenize
from pvgrub_py.bootcfg.grub2_parser import NestingTooDeep, parse_script
from pvgrub_py.bootcfg.grubenv import parse_envblk

FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SMALL = Limits(
    max_statements=400,
    max_entries=12,
    max_source_depth=3,
    max_call_depth=6,
    max_nesting=30,
    max_variables=40,
    max_value_bytes=300,
    max_env_bytes=2000,
    max_argv_bytes=2000,
    max_file_probes=200,
    max_warnings=20,
)

GRUB_WORDS = [
    "menuentry",
    "submenu",
    "'t'",
    '"t $x"',
    "{",
    "}",
    ";",
    "\n",
    " ",
    " ",
    " ",
    "if",
    "then",
    "elif",
    "else",
    "fi",
    "for",
    "in",
    "do",
    "done",
    "while",
    "until",
    "function",
    "f",
    "!",
    "[",
    "]",
    "-f",
    "-e",
    "-d",
    "-s",
    "-n",
    "-z",
    "=",
    "!=",
    "-eq",
    "-lt",
    "-a",
    "-o",
    "(",
    ")",
    "$x",
    "${x}",
    "$1",
    "$2",
    "$@",
    "$*",
    "$#",
    "$?",
    "x=",
    "x=a b",
    "set",
    "unset",
    "export",
    "source",
    "configfile",
    "/b.cfg",
    "/g.cfg",
    "load_env",
    "/grubenv",
    "save_env",
    "search",
    "--set=root",
    "--set",
    "--fs-uuid",
    "--label",
    "--file",
    "u-1",
    "L",
    "probe",
    "-u",
    "blscfg",
    "linux",
    "linux16",
    "initrd",
    "/vmlinuz",
    "(hd0,1)/k",
    "(u-1)/k",
    "(v2)/k",
    "return",
    "break",
    "continue",
    "shift",
    "setparams",
    "exit",
    "default=",
    "default=1>0",
    "timeout=",
    "--id",
    "--class",
    "\\",
    "'",
    '"',
    "#",
    "&",
    "|",
    "<",
    ">",
    "$",
    "multiboot",
    "chainloader",
    "echo",
    "true",
    "false",
    "root=v2",
    "f",
    "f;",
    "reboot",
    "²",
    "١٢",
    "9" * 40,
    "0x1f",
    "010",
    "-1",
    # Options written with "=": a value on an option that takes one, and on
    # one that takes none (GRUB's parser refuses the command then).
    "--unrestricted",
    "--unrestricted=yes",
    "--id=x",
    "--class=c",
    "--users=",
    "--source=",
    "--hotkey=a",
    "--fs-uuid=u-1",
    "--file=/b.cfg",
    "--hint=hd0,msdos1",
    "-s=x",
    "-f=/grubenv",
]
SYSLINUX_WORDS = [
    "LABEL",
    "label",
    "KERNEL",
    "LINUX",
    "APPEND",
    "INITRD",
    "DEFAULT",
    "ONTIMEOUT",
    "INCLUDE",
    "/e.cfg",
    "/vmlinuz",
    "initrd=/i",
    "mboot.c32",
    "---",
    "MENU",
    "DEFAULT",
    "LABEL",
    "TEXT",
    "HELP",
    "ENDTEXT",
    "TIMEOUT",
    "30",
    "-",
    "COM32",
    "x.c32",
    "\n",
    " ",
    "²",
    "9" * 40,
    "^",
]
LEGACY_WORDS = [
    "title",
    "kernel",
    "initrd",
    "root",
    "(hd0,0)",
    "(hd0)",
    "default",
    "saved",
    "timeout",
    "fallback",
    "module",
    "/vmlinuz",
    "ro",
    "=",
    "\n",
    " ",
    "#",
    "--type=netbsd",
    "0",
    "9",
    "²",
    "9" * 40,
    "(hd99999999999,1)",
]


def words_text(vocab: list[str]) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(vocab), st.text(max_size=4))
    return st.lists(piece, max_size=60).map("".join)


#: The options each modelled command knows (flags and options with a value).
MENU_OPTIONS = ["--unrestricted", "--class", "--users", "--hotkey", "--source", "--id"]
SEARCH_OPTIONS = ["--set", "-s", "--hint", "--hint-bios", "--file", "-f", "--label", "-l"]
COMMAND_OPTIONS = {
    "menuentry": MENU_OPTIONS,
    "submenu": MENU_OPTIONS,
    "search": [*SEARCH_OPTIONS, "--fs-uuid", "-u", "--part-uuid", "--no-floppy", "-n", "-nu"],
    "search.fs_uuid": SEARCH_OPTIONS,
    "probe": ["--set", "-s", "--fs-uuid", "-u", "--label", "--fs", "--driver"],
    "load_env": ["--file", "-f", "--skip-sig", "-s"],
    "save_env": ["--file", "-f"],
    "initrd": ["--x"],
}
#: And options no command knows.
OPTION_JUNK = st.from_regex(r"--?[a-z=-]{0,6}", fullmatch=True)
OPTION_VALUES = ["", "x", "yes", "u-1", "L", "/b.cfg", "hd0,msdos1", "'a b'", "$x"]


@st.composite
def option_command(draw: st.DrawFn) -> str:
    """One command line with options in every GRUB spelling: ``--opt``,
    ``--opt=value`` (also on a flag), ``--opt value``, ``-o``, clusters,
    ``--``; a block after ``menuentry``/``submenu``, half of the lines."""
    command = draw(
        st.one_of(st.sampled_from(["menuentry", "submenu"]), st.sampled_from(list(COMMAND_OPTIONS)))
    )
    value = st.sampled_from(OPTION_VALUES)
    words = [command]
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.one_of(st.sampled_from(COMMAND_OPTIONS[command]), OPTION_JUNK))
        form = draw(st.sampled_from(["bare", "eq", "next"]))
        if form == "eq":
            words.append(f"{name}={draw(value)}")
        elif form == "next":
            words += [name, draw(value)]
        else:
            words.append(name)
    words += draw(st.lists(value, max_size=2))
    if command in ("menuentry", "submenu"):
        words.append(draw(st.sampled_from(["{ linux /k }", "{ menuentry y { linux /k } }", ""])))
    return " ".join(words)


def corpus_texts() -> list[str]:
    """The third-party configs, for the conformance variant only (empty without them)."""
    out: list[str] = []
    for p in sorted(corpus.BOOTCFG.rglob("*")):
        if p.is_file() and p.suffix != ".json" and p.stat().st_size < 200_000:
            out.append(p.read_bytes().decode("latin-1"))
    return out


OWN = st.sampled_from([text for _kind, text in own_bootcfg.ALL.values()])
#: Read when first drawn from, so only a conformance test touches the corpus.
CORPUS = st.deferred(lambda: st.sampled_from(corpus_texts()))


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str] = OWN) -> str:
    text = draw(texts)
    for _ in range(draw(st.integers(0, 6))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 200)))
        op = draw(st.sampled_from(["delete", "dup", "insert", "swap"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "dup":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(GRUB_WORDS + SYSLINUX_WORDS)) + text[i:]
        else:
            text = text[:i] + draw(st.characters()) + text[i + 1 :]
    return text


def volumes(main: str | bytes, other: str | bytes, path: str) -> VolumeSet:
    files: dict[str, str | bytes] = {
        path: main,
        "/b.cfg": other,
        "/g.cfg": main,
        "/e.cfg": other,
        "/grubenv": other,
        "/boot/grub/default": other,
        "/loader/entries/a-1-1.conf": other,
        "/loader/entries/b-2-1.conf": main,
    }
    first = DictVolume(files, ["/dir"], VolumeIdentity("hd0,msdos1", uuid="u-0", label="B"))
    second = DictVolume(
        {"/k": "x", "/b.cfg": main}, [], VolumeIdentity("v2", uuid="u-1", label="L")
    )
    return VolumeSet([first, second])


def check_menu(menu: BootMenu, limits: Limits) -> None:
    assert len(menu.entries) <= limits.max_entries
    assert len(menu.warnings) <= limits.max_warnings + 1
    assert 0 <= menu.default_index < max(1, len(menu.entries))
    for entry in menu.entries:
        assert len(entry.args) <= limits.max_argv_bytes * 2
        assert len(entry.warnings) <= limits.max_warnings
    try:
        chosen = select(menu)
    except BootConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert chosen.bootable


def run_all(main: str | bytes, other: str | bytes, limits: Limits) -> None:
    """Every parser on the same input: a menu or a one-line BootConfigError."""
    parsers: list[tuple[Callable[..., BootMenu], str, dict[str, Dialect]]] = [
        (parse_grub2, "/boot/grub/grub.cfg", {"dialect": Dialect.GRUB}),
        (parse_grub2, "/boot/grub/grub.cfg", {"dialect": Dialect.PETITBOOT}),
        (parse_extlinux, "/extlinux.conf", {"dialect": Dialect.GRUB}),
        (parse_extlinux, "/extlinux.conf", {"dialect": Dialect.PETITBOOT}),
        (parse_grub_legacy, "/boot/grub/menu.lst", {}),
    ]
    for parse, path, dialect in parsers:
        start = time.monotonic()
        try:
            menu = parse(volumes(main, other, path), path, limits=limits, **dialect)
        except BootConfigError as exc:
            message = str(exc)
            assert "\n" not in message and message.count(": ") >= 1
        else:
            check_menu(menu, limits)
        assert time.monotonic() - start < 5
    try:
        check_menu(parse_bls_dir(volumes(main, other, "/x"), limits=limits), limits)
    except BootConfigError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(words_text(GRUB_WORDS), words_text(GRUB_WORDS))
def test_grub_vocabulary(main: str, other: str) -> None:
    run_all(main, other, Limits())


@FUZZ
@given(words_text(GRUB_WORDS), words_text(GRUB_WORDS))
def test_grub_vocabulary_small_limits(main: str, other: str) -> None:
    run_all(main, other, SMALL)


@FUZZ
@given(st.lists(option_command(), min_size=1, max_size=6).map("\n".join), words_text(GRUB_WORDS))
def test_grub_command_options(main: str, other: str) -> None:
    run_all(main, other, Limits())


@FUZZ
@given(words_text(SYSLINUX_WORDS), words_text(SYSLINUX_WORDS + LEGACY_WORDS))
def test_syslinux_and_legacy_vocabulary(main: str, other: str) -> None:
    run_all(main, other, SMALL)


@FUZZ
@given(st.binary(max_size=400), st.binary(max_size=200))
def test_random_bytes(main: bytes, other: bytes) -> None:
    run_all(main, other, Limits())


@FUZZ
@given(mutated(), mutated())
def test_mutated_own_configs(main: str, other: str) -> None:
    run_all(main, other, Limits())


@pytest.mark.conformance
@FUZZ
@given(mutated(CORPUS), mutated(CORPUS))
def test_mutated_fixtures(main: str, other: str) -> None:
    run_all(main, other, Limits())


@pytest.mark.slow
@settings(
    max_examples=1500,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(mutated(), words_text(GRUB_WORDS)), st.one_of(mutated(), words_text(GRUB_WORDS)))
def test_long_fuzz(main: str, other: str) -> None:
    run_all(main, other, SMALL)
    run_all(main, other, Limits())


@FUZZ
@given(st.text(max_size=300))
def test_lexer_and_parser_total(text: str) -> None:
    toks = tokenize(text)
    assert toks[-1].kind.name == "EOF"
    try:
        script = parse_script(text, max_nesting=40)
    except NestingTooDeep:
        return
    assert all(isinstance(line, int) for line, _ in script.errors)


@FUZZ
@given(st.binary(max_size=300))
def test_grubenv_and_bls_readers_total(data: bytes) -> None:
    block = parse_envblk(b"# GRUB Environment Block\n" + data)
    assert block is not None
    assert parse_envblk(data[:10]) is None or data.startswith(b"# GRUB")
    entry = parse_bls(data.decode("latin-1"), "x")
    assert all(" " not in k for k, _ in entry.pairs)


@FUZZ
@given(st.text("0123456789.~+-abcZ_", max_size=12), st.text("0123456789.~+-abcZ_", max_size=12))
def test_vercmp_is_antisymmetric(a: str, b: str) -> None:
    assert vercmp(a, b) == -vercmp(b, a)
    assert vercmp(a, a) == 0


# -- targeted bounds ---------------------------------------------------------------------


def fails_fast(
    files: dict[str, str | bytes],
    path: str = "/grub/grub.cfg",
    parser: Callable[..., BootMenu] = parse_grub2,
) -> str:
    start = time.monotonic()
    with pytest.raises(BootConfigError) as info:
        parser(DictVolume(files), path)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message
    assert elapsed < 2.0, f"{elapsed:.2f}s for {message}"
    return message


def test_infinite_source_recursion() -> None:
    msg = fails_fast({"/grub/grub.cfg": "source /grub/grub.cfg\n"})
    assert msg.startswith("/grub/grub.cfg:1:") and "nested deeper than 8" in msg


def test_petitboot_source_recursion_is_bounded() -> None:
    """petitboot's dialect stops nesting instead of failing; a fan-out still fails fast."""
    files = {"/grub/grub.cfg": "source /grub/grub.cfg\nsource /grub/grub.cfg\n"}
    start = time.monotonic()
    with pytest.raises(BootConfigError) as info:
        parse_grub2(DictVolume(files), "/grub/grub.cfg", dialect=Dialect.PETITBOOT)
    assert "script files loaded" in str(info.value)
    assert time.monotonic() - start < 2.0
    menu = parse_grub2(
        DictVolume({"/grub/grub.cfg": "menuentry a { linux /k }\nsource /grub/grub.cfg\n"}),
        "/grub/grub.cfg",
        dialect=Dialect.PETITBOOT,
    )
    assert len(menu.entries) == 11


def test_mutual_source_and_configfile_recursion() -> None:
    msg = fails_fast(
        {"/grub/grub.cfg": "source /grub/b.cfg\n", "/grub/b.cfg": "\n\nsource $prefix/grub.cfg\n"}
    )
    assert msg.startswith("/grub/b.cfg:3:")
    assert "nested deeper" in fails_fast({"/grub/grub.cfg": "configfile /grub/grub.cfg\n"})


def test_megabytes_of_variables() -> None:
    msg = fails_fast({"/grub/grub.cfg": "x=0123456789\nwhile true; do x=$x$x; done\n"})
    assert msg.startswith("/grub/grub.cfg:2:") and "bytes" in msg
    msg = fails_fast({"/grub/grub.cfg": 'n=a\nwhile true; do n=${n}a; set "$n=1"; done\n'})
    assert "variables" in msg
    many = "".join(f"v{i}=x\n" for i in range(5000))
    assert "more than 4096 variables" in fails_fast({"/grub/grub.cfg": many})
    big = "x=" + "a" * 60000 + "\nmenuentry t { linux /k " + "$x " * 40 + "}\n"
    assert "expands to more than" in fails_fast({"/grub/grub.cfg": big})


def test_huge_function_recursion() -> None:
    msg = fails_fast({"/grub/grub.cfg": "function f {\n  f\n}\nf\n"})
    assert msg.startswith("/grub/grub.cfg:2:") and "function calls nested deeper" in msg
    assert "nested deeper" in fails_fast({"/grub/grub.cfg": "function f { f; f; }\nf\n"})
    assert "nested deeper" in fails_fast(
        {"/grub/grub.cfg": "function s { submenu x { s; menuentry y { linux /k; } } }\ns\n"}
    )


def test_loops_and_deep_nesting() -> None:
    assert "statements" in fails_fast({"/grub/grub.cfg": "while true; do true; done\n"})
    assert "statements" in fails_fast(
        {"/grub/grub.cfg": "menuentry x { while true; do true; done }\n"}
    )
    assert "nested deeper than 120" in fails_fast(
        {"/grub/grub.cfg": "if true; then " * 500 + "fi;" * 500}
    )
    assert "menu entries" in fails_fast(
        {"/grub/grub.cfg": "while true; do menuentry x { linux /a; }; done\n"}
    )
    assert "file lookups" in fails_fast(
        {"/grub/grub.cfg": "while true; do [ -f /a -o -e /b ]; done\n"}
    )


def test_oversized_files() -> None:
    assert "larger than the 1048576-byte cap" in fails_fast(
        {"/grub/grub.cfg": "#" * (1 << 20) + "x"}
    )
    msg = fails_fast({"/grub/grub.cfg": "source /big\n", "/big": b"\0" * ((1 << 20) + 1)})
    assert "/big" in msg


def test_other_formats_bounded() -> None:
    assert "INCLUDE nested" in fails_fast({"/e.cfg": "INCLUDE e.cfg\n"}, "/e.cfg", parse_extlinux)
    assert "labels" in fails_fast(
        {"/e.cfg": "LABEL a\nKERNEL /a\n" * 1100}, "/e.cfg", parse_extlinux
    )
    assert "entries" in fails_fast(
        {"/m.lst": "title a\nkernel /a\n" * 1100}, "/m.lst", parse_grub_legacy
    )
    files: dict[str, str | bytes] = {
        f"/loader/entries/a-{i}.conf": f"linux /v{i}\n" for i in range(4100)
    }
    files["/grub/grub.cfg"] = "blscfg\n"
    assert "BLS entries" in fails_fast(files)


def test_warning_flood_is_capped() -> None:
    menu = parse_grub2(DictVolume({"/g.cfg": "nosuchcommand\n" * 20000}), "/g.cfg")
    assert len(menu.warnings) == Limits().max_warnings + 1
    assert menu.warnings[-1].startswith("... and ")


@pytest.mark.slow
def test_largest_config_is_bounded() -> None:
    """1 MiB of cheap statements: stopped by the statement budget in seconds."""
    start = time.monotonic()
    with pytest.raises(BootConfigError, match="statements executed"):
        parse_grub2(DictVolume({"/g.cfg": "x=1\n" * 262_000}), "/g.cfg")
    assert time.monotonic() - start < 20


def test_menuentry_option_with_a_value_it_does_not_take() -> None:
    """``--unrestricted=yes``: the entry is refused with a warning (it was an
    ``assert``: a traceback from ``pvgrub-py --isconfig``, nothing under -O)."""
    cfg = (
        "set timeout=1\n"
        "menuentry --unrestricted=yes 'x' { linux /v }\n"
        "menuentry --unrestricted --id=b 'y' { linux /w }\n"
    )
    for dialect in Dialect:
        menu = parse_grub2(DictVolume({"/g.cfg": cfg}), "/g.cfg", dialect=dialect)
        entries = [(e.title, e.id, e.kernel.path if e.kernel else None) for e in menu.entries]
        assert entries == [("y", "b", "/w")]
        warning = "/g.cfg:2: menuentry: option --unrestricted takes no value; not added"
        assert warning in menu.warnings, menu.warnings


def test_numbers_that_are_not_numbers() -> None:
    """Unicode digits and 5000-digit numbers are just text (no ValueError)."""
    huge = "9" * 5000
    legacy = parse_grub_legacy(
        DictVolume({"/m": f"default {huge}\ntimeout ²\ntitle a\nkernel (hd{huge},0)/a\n"}), "/m"
    )
    assert legacy.default_index == 0 and legacy.timeout is None
    ext = parse_extlinux(
        DictVolume({"/e": f"TIMEOUT {huge}\nTIMEOUT ²\nLABEL a\nKERNEL /a\n"}), "/e"
    )
    assert ext.timeout is None
    title = "t" * 100000
    grub = parse_grub2(
        DictVolume({"/g": f"set default={huge}\ntimeout=²\nmenuentry '{title}' {{ linux /a }}\n"}),
        "/g",
    )
    assert grub.default_index == 0 and len(grub.entries[0].title) == 100000
    with pytest.raises(BootConfigError) as info:
        select(grub, huge)
    assert len(str(info.value)) < 500
    assert VolumeSet([DictVolume({})]).resolve(f"hd{huge},1") is None
