"""GRUB's ``test`` / ``[ ... ]`` command (GRUB manual, "test").

Evaluation follows ``grub-core/commands/test.c`` rather than POSIX sh,
because configs are written against GRUB's behaviour:

* The expression is an OR of AND-chains read left to right; ``-a`` is a
  no-op separator, ``-o`` closes an AND-chain, ``!`` negates the next
  test, ``(``/``)`` group.  Three-argument forms are tried first, then
  two-argument ones, then a lone word is true when non-empty.  A trailing
  ``]`` is dropped if present.
* String tests: ``=``/``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (byte
  order), ``-n``, ``-z``.  Integer tests ``-eq -ne -lt -le -gt -ge`` use
  C ``strtol`` semantics with base prefixes (``0x10`` is 16, ``010`` is 8,
  junk is 0); the upper-case forms compare unsigned; ``-pgt``/``-plt``
  compare the numbers after a common prefix.
* File tests: ``-e`` exists, ``-f`` exists and is not a directory, ``-d``
  is a directory, ``-s`` can be opened as a file and is not empty (so a
  directory is *not* ``-s``).  A path names ``(device)/path`` or a path on
  ``$root``; a device with an empty path (``""``, ``/``, ``(hd0)``) is
  the whole device, which exists and is a directory.  ``-nt``/``-ot`` see
  no modification times here, so only the "one file is missing" rule of
  GRUB applies.

Parentheses nested deeper than `MAX_GROUP_DEPTH` are read as plain words
(GRUB would recurse until its stack overflows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pvgrub_py.bootcfg.grub_strtoul import strtosl, strtoul
from pvgrub_py.record import record

#: path -> (exists, is_dir, size or None when it cannot be opened as a file)
FileProbe = Callable[[str], "Probe"]


@record(frozen=True)
class Probe:
    exists: bool
    is_dir: bool
    size: int | None


def _cmp(a: str, b: str) -> int:
    ab, bb = a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    return (ab > bb) - (ab < bb)


_STRING_OPS: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0,
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}

_INT_OPS: dict[str, Callable[[int, int], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


class _Ctx:
    __slots__ = ("and_", "invert", "or_")

    def __init__(self) -> None:
        self.and_ = True
        self.or_ = False
        self.invert = False

    def update(self, val: bool) -> None:
        self.and_ = self.and_ and (not val if self.invert else val)
        self.invert = False


def _prefixed_numbers(a: str, b: str) -> tuple[int, int]:
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    i -= 1
    while i > 0 and a[i] in "0123456789":
        i -= 1
    i += 1
    return strtoul(a[i:]), strtoul(b[i:])


#: Parenthesis nesting we follow; deeper "(" are read as plain words.
MAX_GROUP_DEPTH = 64


def _parse(args: Sequence[str], pos: list[int], probe: FileProbe, depth: int = 0) -> bool:
    ctx = _Ctx()
    argc = len(args)
    while pos[0] < argc:
        n = pos[0]
        if n + 2 < argc:
            op = args[n + 1]
            a, b = args[n], args[n + 2]
            if op in _STRING_OPS:
                ctx.update(_STRING_OPS[op](_cmp(a, b)))
                pos[0] += 3
                continue
            if len(op) == 3 and op[0] == "-" and op[1:] in _INT_OPS:
                ctx.update(_INT_OPS[op[1:]](strtosl(a), strtosl(b)))
                pos[0] += 3
                continue
            if len(op) == 3 and op[0] == "-" and op[1:].lower() in _INT_OPS and op[1:].isupper():
                ctx.update(_INT_OPS[op[1:].lower()](strtoul(a), strtoul(b)))
                pos[0] += 3
                continue
            if op in ("-pgt", "-plt"):
                x, y = _prefixed_numbers(a, b)
                ctx.update(x > y if op == "-pgt" else x < y)
                pos[0] += 3
                continue
            if op.startswith("-nt") or op.startswith("-ot"):
                first, second = probe(a).exists, probe(b).exists
                if op.startswith("-nt"):
                    ctx.update(first and not second)
                else:
                    ctx.update(not first and second)
                pos[0] += 3
                continue
        if n + 1 < argc:
            op, arg = args[n], args[n + 1]
            if op in ("-d", "-D", "-e", "-E", "-f", "-F", "-s"):
                info = probe(arg)
                if op in ("-d", "-D"):
                    ctx.update(info.exists and info.is_dir)
                elif op in ("-e", "-E"):
                    ctx.update(info.exists)
                elif op in ("-f", "-F"):
                    ctx.update(info.exists and not info.is_dir)
                else:
                    ctx.update(info.size is not None and info.size != 0)
                pos[0] += 2
                continue
            if op == "-n":
                ctx.update(arg != "")
                pos[0] += 2
                continue
            if op == "-z":
                ctx.update(arg == "")
                pos[0] += 2
                continue
        word = args[n]
        if word == ")":
            pos[0] += 1
            return ctx.or_ or ctx.and_
        if word == "(" and depth < MAX_GROUP_DEPTH:
            pos[0] += 1
            ctx.update(_parse(args, pos, probe, depth + 1))
            continue
        if word == "!":
            ctx.invert = not ctx.invert
            pos[0] += 1
            continue
        if word == "-a":
            pos[0] += 1
            continue
        if word == "-o":
            ctx.or_ = ctx.or_ or ctx.and_
            ctx.and_ = True
            pos[0] += 1
            continue
        ctx.update(word != "")
        pos[0] += 1
    return ctx.or_ or ctx.and_


def evaluate(args: Sequence[str], probe: FileProbe) -> bool:
    """Evaluate ``test`` arguments (without the command name)."""
    argv = list(args)
    if argv and argv[-1] == "]":
        argv.pop()
    return _parse(argv, [0], probe)
