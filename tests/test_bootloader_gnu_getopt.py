"""pvgrub_py.bootloader.gnu_getopt behaves exactly as the standard library's getopt.gnu_getopt.

The oracle is the real function (this interpreter's ``getopt``): the same
pairs in the same order, the same operands, or the same error with the same
message (pvgrub-py's usage error) and the same ``opt``.
"""

from __future__ import annotations

import getopt
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvgrub_py.bootloader import gnu_getopt as mine
from pvgrub_py.bootloader.options import LONG_OPTIONS, SHORT_OPTIONS

Outcome = tuple[object, ...]


def _real(args: Sequence[str], shortopts: str, longopts: Sequence[str] | str) -> Outcome:
    try:
        return ("ok", *getopt.gnu_getopt(list(args), shortopts, longopts))
    except getopt.GetoptError as e:
        return ("GetoptError", str(e), e.opt, e.args)
    except Exception as e:  # none known; compared by type name and message
        return (type(e).__name__, str(e))


def _mine(args: Sequence[str], shortopts: str, longopts: Sequence[str] | str) -> Outcome:
    try:
        return ("ok", *mine.gnu_getopt(list(args), shortopts, longopts))
    except mine.GetoptError as e:
        return ("GetoptError", str(e), e.opt, e.args)
    except Exception as e:
        return (type(e).__name__, str(e))


def _same(args: Sequence[str], shortopts: str, longopts: Sequence[str] | str) -> Outcome:
    expected = _real(args, shortopts, longopts)
    got = _mine(args, shortopts, longopts)
    assert got == expected, (args, shortopts, longopts, os.environ.get("POSIXLY_CORRECT"))
    return got


# --- argv generated from pvgrub-py's own option tables, plus garbage ----------------------

_NAMES = [o.rstrip("=") for o in LONG_OPTIONS]
#: Names that are in no table, and prefixes that are ambiguous in pvgrub-py's.
_GARBAGE_NAMES = ["foo", "out", "o", "vtpm-", "e", "", "-x", "quiet=", "x=y", "é"]
_VALUES = st.sampled_from(["", "v", "-", "--", "-q", "--quiet", "a=b", "disk.img", " "])


@st.composite
def _long_arg(draw: st.DrawFn) -> str:
    name = draw(st.one_of(st.sampled_from(_NAMES), st.sampled_from(_GARBAGE_NAMES),
                          st.text("abcdefghijklmnopqrstuvwxyz-_=", max_size=6)))  # fmt: skip
    if name and draw(st.booleans()):  # an abbreviation, possibly ambiguous
        name = name[: draw(st.integers(0, len(name)))]
    if draw(st.booleans()):
        name += "=" + draw(_VALUES)
    return "--" + name


@st.composite
def _short_arg(draw: st.DrawFn) -> str:
    known = st.text(SHORT_OPTIONS + "o", min_size=1, max_size=4)
    letters = draw(
        st.one_of(known, known, st.text(SHORT_OPTIONS + "oxQ:+-=", min_size=1, max_size=4))
    )
    return "-" + letters


_ARG = st.one_of(
    _long_arg(),
    _short_arg(),
    st.sampled_from(["-", "--", "", "disk.img", "a", "---", "--=", "+q", "--args=", "--output-d="]),
    _VALUES,
    st.text(max_size=5),
)
#: Often ending in an option that wants a value, so that it has none.
_LAST = st.sampled_from(["", "", "--output", "--vtpm-t", "--output-f", "-o", "-qo", "-qx"])
_ARGV = st.tuples(st.lists(_ARG, max_size=8), _LAST).map(lambda t: t[0] + [t[1]] if t[1] else t[0])
#: pvgrub-py's table; with '+'; and with letters that take a value (pvgrub-py has none).
_SHORTOPTS = st.sampled_from([SHORT_OPTIONS, "+" + SHORT_OPTIONS, SHORT_OPTIONS + "o:x:", "+o:q"])
_POSIXLY_CORRECT = st.sampled_from([None, "", "1", "0"])


@contextmanager
def _posixly_correct(value: str | None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        if value is None:
            mp.delenv("POSIXLY_CORRECT", raising=False)
        else:
            mp.setenv("POSIXLY_CORRECT", value)
        yield


def _differential(argv: list[str], shortopts: str, env: str | None) -> None:
    with _posixly_correct(env):
        _same(argv, shortopts, LONG_OPTIONS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ARGV, _SHORTOPTS, _POSIXLY_CORRECT)
def test_same_as_getopt_on_pvgrub_tables(argv: list[str], shortopts: str, env: str | None) -> None:
    _differential(argv, shortopts, env)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ARGV, _SHORTOPTS, _POSIXLY_CORRECT)
def test_same_as_getopt_on_pvgrub_tables_long(
    argv: list[str], shortopts: str, env: str | None
) -> None:
    _differential(argv, shortopts, env)


# --- any tables: duplicates, "name=" next to "name", odd entries ("", "=", "a=b", "a==") ---

_TABLE_ENTRIES = st.sampled_from(["a", "a=", "ab", "ab=", "abc", "b=", "b", "=", "", "a=b", "a=="])
#: Few names, so that tables often hold both "a" and "a=", or one entry twice.
_CLOSE_ENTRIES = st.sampled_from(["a", "a=", "ab", "abc", "abc="])
_LONGOPTS = st.one_of(
    st.lists(_CLOSE_ENTRIES, max_size=5),
    st.lists(_CLOSE_ENTRIES, min_size=1, max_size=2).map(lambda t: t + t),  # duplicates
    st.lists(_TABLE_ENTRIES, max_size=5),
    _TABLE_ENTRIES,  # a str is one entry
)
#: Pieces of shortopts; a letter twice ("aa:") is read at its first place.
_SHORT_PIECES = st.sampled_from(["+", "++", "a", "b", "o:", "a:", ":", "-", "=", "aa:", "a:a"])
_ANY_SHORTOPTS = st.lists(_SHORT_PIECES, max_size=4).map("".join)


@st.composite
def _any_case(draw: st.DrawFn) -> tuple[list[str], str, list[str] | str]:
    """Tables, and an argv mostly of their own entries (cut, with or without values)."""
    shortopts = draw(_ANY_SHORTOPTS)
    longopts = draw(_LONGOPTS)
    entries = [longopts] if isinstance(longopts, str) else longopts
    whole = st.sampled_from([*entries, "x"])
    cut = whole.flatmap(lambda e: st.integers(0, len(e)).map(lambda at: e[:at]))
    typed = st.one_of(whole.map(lambda e: e.rstrip("=")), cut).map(lambda name: "--" + name)
    value = st.sampled_from(["", "", "=", "=v", "==", "=-a"])
    long_word = st.tuples(typed, value).map("".join)
    letters = shortopts.removeprefix("+").replace(":", "") or "a"
    short_word = st.one_of(  # mostly letters of the table
        st.text(letters, min_size=1, max_size=3),
        st.text(letters, min_size=1, max_size=3),
        st.text(letters + "x:v-", min_size=1, max_size=3),
    ).map(lambda letters: "-" + letters)
    word = st.one_of(
        long_word,
        long_word,
        long_word,
        short_word,
        st.sampled_from(["-", "--", "", "disk", "-=", "---a"]),
    )
    argv = draw(st.lists(word, max_size=4))
    # Often a last option with no value after it, for the ones that need one.
    last = draw(st.one_of(st.none(), typed, short_word))
    return [*argv, last] if last is not None else argv, shortopts, longopts


def _any_tables(case: tuple[list[str], str, list[str] | str], env: str | None) -> None:
    argv, shortopts, longopts = case
    with _posixly_correct(env):
        _same(argv, shortopts, longopts)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_case(), _POSIXLY_CORRECT)
def test_same_as_getopt_on_any_tables(
    case: tuple[list[str], str, list[str] | str], env: str | None
) -> None:
    _any_tables(case, env)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_case(), _POSIXLY_CORRECT)
def test_same_as_getopt_on_any_tables_long(
    case: tuple[list[str], str, list[str] | str], env: str | None
) -> None:
    _any_tables(case, env)


# --- one example per rule; the expected values are getopt's documented behaviour --------

LONG = ["quiet", "output=", "output-format=", "args=", "vtpm=", "vtpm-uuid=", "tpm2"]
OK = "ok"
ERR = "GetoptError"

EXAMPLES: list[tuple[list[str], str, list[str] | str, Outcome]] = [
    # unique-prefix matching; an exact entry wins over longer ones
    (["--qu"], "q", LONG, (OK, [("--quiet", "")], [])),
    (["--vtpm", "x"], "", LONG, (OK, [("--vtpm", "x")], [])),
    (["--out"], "", LONG,
     (ERR, "option --out not a unique prefix", "out", ("option --out not a unique prefix", "out"))),
    (["--foo"], "", LONG,
     (ERR, "option --foo not recognized", "foo", ("option --foo not recognized", "foo"))),
    # a bare entry wins over "name=": the option then takes no value
    (["--a", "x"], "", ["a=", "a"], (OK, [("--a", "")], ["x"])),
    # two copies of one entry are ambiguous to a prefix ...
    (["--ab"], "", ["abc", "abc"],
     (ERR, "option --ab not a unique prefix", "ab", ("option --ab not a unique prefix", "ab"))),
    # ... but not to its full "name=" form
    (["--ab=1"], "", ["ab=", "ab="], (OK, [("--ab", "1")], [])),
    # a str is one entry
    (["--o=1"], "", "output=", (OK, [("--output", "1")], [])),
    # --name=value and --name value; an abbreviation is reported by its full name
    (["--output=f", "--output-f", "simple0"], "", LONG,
     (OK, [("--output", "f"), ("--output-format", "simple0")], [])),
    (["--output"], "", LONG,
     (ERR, "option --output requires argument", "output",
      ("option --output requires argument", "output"))),
    (["--vtpm-u"], "", LONG,
     (ERR, "option --vtpm-uuid requires argument", "vtpm-uuid",
      ("option --vtpm-uuid requires argument", "vtpm-uuid"))),
    (["--qui=1"], "", LONG,
     (ERR, "option --quiet must not have an argument", "quiet",
      ("option --quiet must not have an argument", "quiet"))),
    # empty values, and values that look like options
    (["--args=", "--args", ""], "", LONG, (OK, [("--args", ""), ("--args", "")], [])),
    (["--args", "--quiet", "--vtpm=a=b"], "", LONG,
     (OK, [("--args", "--quiet"), ("--vtpm", "a=b")], [])),
    # short clusters and values
    (["-qi"], "qi", [], (OK, [("-q", ""), ("-i", "")], [])),
    (["-qovalue"], "qo:", [], (OK, [("-q", ""), ("-o", "value")], [])),
    (["-o", "value", "d"], "o:", [], (OK, [("-o", "value")], ["d"])),
    (["-o", "--"], "o:", [], (OK, [("-o", "--")], [])),
    (["-o"], "o:", [],
     (ERR, "option -o requires argument", "o", ("option -o requires argument", "o"))),
    (["-qx"], "q", [],
     (ERR, "option -x not recognized", "x", ("option -x not recognized", "x"))),
    # ':' is never an option; the first occurrence of a letter decides
    (["-:"], ":q", [],
     (ERR, "option -: not recognized", ":", ("option -: not recognized", ":"))),
    (["-a"], "aa:", [], (OK, [("-a", "")], [])),
    (["-a", "v"], "a:a", [], (OK, [("-a", "v")], [])),
    # '-' is an operand; '--' ends the options (a second '--' is an operand)
    (["-", "-q"], "q", [], (OK, [("-q", "")], ["-"])),
    (["-q", "--", "-i", "--", "x"], "qi", [], (OK, [("-q", "")], ["-i", "--", "x"])),
    # GNU style: options after operands
    (["d", "-q", "e", "--quiet"], "q", LONG, (OK, [("-q", ""), ("--quiet", "")], ["d", "e"])),
    # a leading '+' stops at the first operand; a second '+' is an option letter
    (["-q", "d", "-q"], "+q", [], (OK, [("-q", "")], ["d", "-q"])),
    (["-+"], "++", [], (OK, [("-+", "")], [])),
    (["-+"], "+", [],
     (ERR, "option -+ not recognized", "+", ("option -+ not recognized", "+"))),
    # '--' and '---x' are long options with odd names
    (["---x"], "", ["-x"], (OK, [("---x", "")], [])),
    (["--=v"], "", ["="], (OK, [("--", "v")], [])),
    # an entry like "a=b" is matched by prefix and reported whole; "a==" takes a value
    (["--a"], "", ["a=b"], (OK, [("--a=b", "")], [])),
    (["--a", "v"], "", ["a=="], (OK, [("--a=", "v")], [])),
    ([], "", [], (OK, [], [])),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "shortopts", "longopts", "expected"), EXAMPLES)
def test_rule(argv: list[str], shortopts: str, longopts: list[str] | str, expected: Outcome,
              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("POSIXLY_CORRECT", raising=False)
    assert _real(argv, shortopts, longopts) == expected  # the documented behaviour holds ...
    assert _mine(argv, shortopts, longopts) == expected  # ... and is what we do


@pytest.mark.parametrize(("value", "expected"), [
    ("1", (OK, [("-q", "")], ["d", "-q"])),
    ("0", (OK, [("-q", "")], ["d", "-q"])),  # any non-empty value
    ("", (OK, [("-q", ""), ("-q", "")], ["d"])),  # empty: as if unset
])  # fmt: skip
def test_posixly_correct(value: str, expected: Outcome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSIXLY_CORRECT", value)
    argv = ["-q", "d", "-q"]
    assert _real(argv, "q", []) == expected
    assert _mine(argv, "q", []) == expected


def test_error_is_an_exception_with_getopts_attributes() -> None:
    e = mine.GetoptError("m")
    assert isinstance(e, Exception)
    assert (str(e), e.msg, e.opt, e.args) == ("m", "m", "", ("m", ""))


def test_import_loads_neither_getopt_nor_gettext() -> None:
    """Only os (loaded at interpreter start) and the module's own packages."""
    root = Path(mine.__file__).resolve().parents[2]
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import pvgrub_py.bootloader.gnu_getopt as m\n"
        "print(json.dumps([m.__file__, sorted(set(sys.modules) - before), 'os' in before]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=root, timeout=60, check=True)  # fmt: skip
    path, new, had_os = json.loads(r.stdout)
    assert Path(path).resolve() == Path(mine.__file__).resolve()
    assert had_os
    assert new == ["pvgrub_py", "pvgrub_py.bootloader", "pvgrub_py.bootloader.gnu_getopt"]
