"""The one error the boot-config layer raises on purpose.

Parsers are lenient the way GRUB is: a syntax error or an unknown command
becomes a recorded warning and execution goes on with the next line.  What
is *not* tolerated is input that tries to make the parser itself unbounded
(infinite `source` recursion, megabytes of variables, deep function
recursion, an oversized file).  Those stop parsing with a `BootConfigError`
whose message is a single line naming the file, the line and the bound.
"""

from __future__ import annotations

from pvgrub_py.errors import InputError

#: Longest source or problem text kept; configs can hold megabyte-long words.
MAX_PART = 400


def _one_line(text: str) -> str:
    """Collapse control characters so the message stays one (short) line."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text[: MAX_PART * 4])
    flat = " ".join(cleaned.split())
    return flat if len(flat) <= MAX_PART else flat[: MAX_PART - 3] + "..."


class BootConfigError(InputError):
    """A boot configuration that cannot be turned into a menu.

    `source` is ``"<path>"`` or ``"<path>:<line>"``; `problem` says which
    bound was exceeded or what is missing, e.g.
    ``/boot/grub/grub.cfg:12: source nesting deeper than 8 files``.
    """

    def __init__(self, source: str, problem: str, line: int | None = None) -> None:
        where = _one_line(source) or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(where, _one_line(problem))
        self.line = line
