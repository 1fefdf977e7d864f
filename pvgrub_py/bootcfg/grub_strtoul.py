"""GRUB's number parsing: C ``strtoul(text, &tail, 0)`` as GRUB uses it.

One implementation for every place a config's text becomes a number:
``test``'s integer comparisons, ``return``/``break``/``shift`` counts,
``$timeout`` and the numeric ``$default`` (`select`).  The
base comes from the prefix (``0x`` hex, a leading ``0`` octal, else
decimal), parsing stops at the first character that is not a digit, and a
value past 64 bits saturates at 2**64 - 1, as C's ``strtoul`` does.
"""

from __future__ import annotations

U64_MAX = (1 << 64) - 1
_WHITESPACE = " \t\n\r\f\v"
_HEX = "0123456789abcdefABCDEF"


def strtoul_prefix(text: str) -> tuple[int, str] | None:
    """The unsigned number *text* starts with, after blanks: (value, tail).

    None when no digit was read (C's ``strtoul`` leaves ``tail`` at the
    start then).  No sign is accepted here: `strtoul` takes a ``+``.
    """
    s = text.lstrip(_WHITESPACE)
    base = 10
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in _HEX:
        base, s = 16, s[2:]
    elif s.startswith("0"):
        base = 8
    digits = "0123456789abcdef"[:base]
    value = 0
    i = 0
    while i < len(s):
        digit = digits.find(s[i].lower())
        if digit < 0:
            break
        value = min(value * base + digit, U64_MAX)
        i += 1
    if i == 0:
        return None
    return value, s[i:]


def strtoul(text: str) -> int:
    """C ``strtoul(text, NULL, 0)``: the value, 0 when there are no digits."""
    s = text.lstrip(_WHITESPACE)
    if s.startswith("+"):
        s = s[1:]
        if s[:1] and s[0] in _WHITESPACE:
            return 0  # the digits follow the sign directly
    parsed = strtoul_prefix(s)
    return 0 if parsed is None else parsed[0]


def strtosl(text: str) -> int:
    """A signed ``strtoul``: a leading ``-`` negates (GRUB's ``strtosl``)."""
    if text.startswith("-"):
        return -strtoul(text[1:])
    return strtoul(text)
