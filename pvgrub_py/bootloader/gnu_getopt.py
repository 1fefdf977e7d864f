"""GNU-style option parsing that behaves exactly as Python 3.11's ``getopt.gnu_getopt``.

Why it exists: pvgrub-py parses its command line exactly as pygrub does, with
``getopt.gnu_getopt``, but ``import getopt`` also imports ``gettext`` (for
its messages), which compiles a regular expression and builds classes.
That is on every boot's critical path, before the sandboxed parser child is
forked (issue 16): ``import getopt`` took 0.74 ms, this module 0.10 ms
(Debian's Python 3.11, from .pyc).  It imports only ``os``.

What it mirrors (written from the documented behaviour of ``getopt`` and by
probing the real function, whose results, order of results, errors and
messages it reproduces; tests/test_bootloader_gnu_getopt.py checks it
against the real one):

* Options and operands may be mixed; operands keep their order.  A leading
  ``+`` in *shortopts*, or a non-empty ``POSIXLY_CORRECT`` in the
  environment, stops at the first operand instead (it and everything after
  it are operands).  ``--`` ends the options; ``-`` alone is an operand.
* Long options: ``--name`` may be any prefix of one entry of *longopts*
  (an exact entry wins, then an exact ``name=`` entry); entries ending in
  ``=`` take a value, given as ``--name=value`` or as the next argument.
* Short options: each letter of *shortopts* followed by ``:`` takes a value,
  from the rest of its cluster (``-ovalue``) or the next argument
  (``-o value``); ``-qi`` is ``-q -i``.  ``:`` itself is never an option.
* An option without a value pairs with ``''``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class GetoptError(Exception):
    """A command line the option tables refuse; ``str(e)`` is getopt's message.

    *opt* is the option concerned, without its dashes (``''`` when none).
    """

    msg: str
    opt: str

    def __init__(self, msg: str, opt: str = "") -> None:
        super().__init__(msg, opt)
        self.msg = msg
        self.opt = opt

    def __str__(self) -> str:
        return self.msg


def gnu_getopt(
    args: Sequence[str], shortopts: str, longopts: str | Iterable[str] = ()
) -> tuple[list[tuple[str, str]], list[str]]:
    """(option, value) pairs in command-line order, and the operands in theirs.

    Raises `GetoptError` with getopt's message for an unknown or ambiguous
    option, a missing value or a value given to an option that takes none.
    """
    table = [longopts] if isinstance(longopts, str) else list(longopts)
    in_order = shortopts.startswith("+")
    if in_order:
        shortopts = shortopts[1:]
    elif os.environ.get("POSIXLY_CORRECT"):
        in_order = True
    pairs: list[tuple[str, str]] = []
    operands: list[str] = []
    count = len(args)
    at = 0
    while at < count:
        arg = args[at]
        at += 1
        if arg == "--":
            operands.extend(args[at:])
            break
        if arg.startswith("--"):
            at = _long(arg[2:], table, args, at, pairs)
        elif arg.startswith("-") and arg != "-":
            at = _cluster(arg[1:], shortopts, args, at, pairs)
        else:
            operands.append(arg)
            if in_order:
                operands.extend(args[at:])
                break
    return pairs, operands


def _long(
    word: str, table: list[str], args: Sequence[str], at: int, pairs: list[tuple[str, str]]
) -> int:
    """Append the pair for ``--word``; the index of the next unread argument."""
    typed, equals, value = word.partition("=")
    name, wants_value = _lookup(typed, table)
    if wants_value:
        if not equals:
            if at == len(args):
                raise GetoptError(f"option --{name} requires argument", name)
            value = args[at]
            at += 1
    elif equals:
        raise GetoptError(f"option --{name} must not have an argument", name)
    pairs.append(("--" + name, value))
    return at


def _lookup(typed: str, table: list[str]) -> tuple[str, bool]:
    """The long option *typed* names, and whether it takes a value."""
    matches = [entry for entry in table if entry.startswith(typed)]
    if not matches:
        raise GetoptError(f"option --{typed} not recognized", typed)
    if typed in matches:
        return typed, False
    if typed + "=" in matches:
        return typed, True
    if len(matches) != 1:  # duplicates of one entry count as ambiguous too
        raise GetoptError(f"option --{typed} not a unique prefix", typed)
    entry = matches[0]
    if entry.endswith("="):
        return entry[:-1], True
    return entry, False


def _cluster(
    letters: str, shortopts: str, args: Sequence[str], at: int, pairs: list[tuple[str, str]]
) -> int:
    """Append the pairs for ``-letters``; the index of the next unread argument."""
    for pos, letter in enumerate(letters):
        where = shortopts.find(letter) if letter != ":" else -1
        if where < 0:
            raise GetoptError(f"option -{letter} not recognized", letter)
        if not shortopts.startswith(":", where + 1):
            pairs.append(("-" + letter, ""))
            continue
        if pos + 1 < len(letters):
            value = letters[pos + 1 :]
        elif at < len(args):
            value = args[at]
            at += 1
        else:
            raise GetoptError(f"option -{letter} requires argument", letter)
        pairs.append(("-" + letter, value))
        break
    return at
