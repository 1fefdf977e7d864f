"""Turn parsed words into an argument vector, the way GRUB does.

GRUB manual, "Shell-like scripting", and ``grub-core/script/execute.c``
(``grub_script_arglist_to_argv``, ``grub_script_argv_split_append``):

* Parts of one word are concatenated into one argument.
* The value of an *unquoted* variable is split at whitespace: leading and
  trailing blanks vanish, inner runs start a new argument.  A quoted
  variable is inserted whole.
* A word that expands to nothing (only unquoted, empty or unset variables)
  produces no argument; a quoted empty string produces an empty argument.
* ``$@`` gives each positional parameter (separately even when quoted);
  ``$*`` gives them joined by a space when quoted, split otherwise;
  ``$#`` their count; ``$?`` the status of the last command.  ``$0`` is
  empty.

Also here: GRUB's kernel command-line builder
(``grub-core/lib/cmdline.c``): arguments joined by single spaces, an
argument containing a space wrapped in double quotes, and ``\\``, ``'``
and ``"`` escaped with a backslash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pvgrub_py.bootcfg.grub2_lexer import Lit
from pvgrub_py.bootcfg.grub2_parser import Word


class ArgvTooLarge(Exception):
    """The expanded arguments passed the byte bound."""


# grub_isspace(): the C-locale blanks, not Python's Unicode whitespace.
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def expand_words(
    words: Sequence[Word],
    lookup: Callable[[str], str | None],
    positional: Sequence[str],
    status: int,
    max_bytes: int,
) -> list[str]:
    """Expand *words* into arguments; raise `ArgvTooLarge` past *max_bytes*."""
    argv: list[str] = []
    cur: str | None = None
    total = 0

    def add(text: str) -> None:
        nonlocal cur, total
        total += len(text)
        if total > max_bytes:
            raise ArgvTooLarge(f"a command line expands to more than {max_bytes} bytes")
        cur = text if cur is None else cur + text

    def next_arg() -> None:
        nonlocal cur
        if cur is not None:
            argv.append(cur)
            cur = None

    def split_add(value: str) -> None:
        pieces = [p for p in _SPACES.split(value) if p]
        for k, piece in enumerate(pieces):
            if k:
                next_arg()
            add(piece)

    for word in words:
        next_arg()
        for part in word.parts:
            if isinstance(part, Lit):
                if part.quoted or part.text:
                    add(part.text)
                continue
            values = _values(part.name, part.quoted, lookup, positional, status)
            for k, value in enumerate(values):
                if k:
                    next_arg()
                if part.quoted:
                    add(value)
                else:
                    split_add(value)
    next_arg()
    return argv


def _values(
    name: str,
    quoted: bool,
    lookup: Callable[[str], str | None],
    positional: Sequence[str],
    status: int,
) -> list[str]:
    if name == "?":
        return [str(status)]
    if name == "#":
        return [str(len(positional))]
    if name == "@":
        return list(positional)
    if name == "*":
        return [" ".join(positional)] if quoted else list(positional)
    if name.isdigit():
        num = int(name)
        if 1 <= num <= len(positional):
            return [positional[num - 1]]
        return []
    value = lookup(name)
    if value is None or value == "":
        return []
    return [value]


def grub_cmdline(args: Sequence[str]) -> str:
    """Join kernel arguments as GRUB's ``grub_create_loader_cmdline`` does."""
    out: list[str] = []
    for arg in args:
        escaped = "".join("\\" + ch if ch in "\\'\"" else ch for ch in arg)
        if " " in arg:
            escaped = f'"{escaped}"'
        out.append(escaped)
    return " ".join(out)
