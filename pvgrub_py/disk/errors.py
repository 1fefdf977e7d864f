"""How the disk layer reports a bad guest disk: always `InputError`, one line.

Every failure that a hostile or damaged disk image can cause becomes
``InputError(source, problem)`` where *source* names the disk, the volume
and the file (``"disk.img: GPT partition 2: /boot/vmlinuz-6.1"``) and
*problem* says what is wrong with it.  The CLIs print ``f"{source}:
{problem}"`` on a single line, so both parts are scrubbed of control
characters here.

The third-party readers (Dissect, pycdlib) signal corrupt input in many
ways: their own exception classes, but also ``IndexError``,
``struct.error``, ``ValueError``, ``EOFError``, ``KeyError``,
``RecursionError`` and friends leaking out of parsing code that trusts
on-disk fields.  `reader_boundary` is the one place where those, and
the readers' own exception classes, are caught and turned into
`InputError`; it wraps every call into a reader and nothing else, so a
bug in *our* code is not mistaken for a bad disk.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from pvgrub_py.errors import InputError

#: Exception types that a reader raises when on-disk data is inconsistent.
#: ``OSError`` covers the readers' own ``FileNotFoundError``-style classes
#: (which derive from it) and read errors of the image itself;
#: ``RuntimeError`` covers ``RecursionError`` (self-referencing trees) and
#: "unsupported feature" errors; ``MemoryError`` is what a size field
#: claiming gigabytes produces under the deprivileged child's RLIMIT_AS.
CORRUPT_DATA_ERRORS: tuple[type[BaseException], ...] = (
    ArithmeticError,  # ZeroDivisionError, OverflowError
    AssertionError,
    AttributeError,  # a struct where the reader expected another
    EOFError,  # cstruct reading past the end of a buffer
    LookupError,  # IndexError, KeyError
    MemoryError,
    NotImplementedError,
    OSError,
    RuntimeError,  # RecursionError
    SyntaxError,  # ast.literal_eval in dissect.volume's LVM metadata parser
    TypeError,
    UnicodeError,
    ValueError,
    struct.error,
    zlib.error,
)


#: Top-level packages whose own exception classes all mean "bad input".
READER_PACKAGES = frozenset({"dissect", "pycdlib"})


def from_reader(exc: BaseException) -> bool:
    """Is *exc* one of a reader library's own exception classes?

    Each Dissect module has its own ``Error`` base (``dissect.xfs``,
    ``dissect.volume``'s ``LVM2Error``, ``dissect.hypervisor``'s
    ``InvalidHeaderError``, ...) and none derives from a built-in error,
    so they are recognised by the package that defines them.
    """
    return any(cls.__module__.split(".", 1)[0] in READER_PACKAGES for cls in type(exc).__mro__)


def one_line(text: str, limit: int = 300) -> str:
    """*text* with control characters replaced and whitespace collapsed.

    Names read from a guest disk end up in error messages; a name holding a
    newline or an escape sequence must not be able to forge extra output
    lines or drive the terminal.
    """
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3] + "..."
    return cleaned


def disk_error(source: str, problem: str) -> InputError:
    """An `InputError` whose two parts are safe to print on one line."""
    return InputError(one_line(source), one_line(problem))


def describe_exception(exc: BaseException) -> str:
    """``"KeyError: 'x'"``: the class and message of a reader's exception."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@contextmanager
def reader_boundary(
    source: str, doing: str, extra: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Turn whatever a reader raises on corrupt data into `InputError`.

    *doing* completes "while ..." in the message, e.g. ``"reading the
    ext4 superblock"``.  An `InputError` raised inside (from our bounded
    file object or the time budget) passes through unchanged, so the first
    and most precise message wins, with the file's name put in front when
    the lower layer only knew the volume.  *extra* adds a reader's own base
    exception class (pycdlib's ``PyCdlibException``).
    """
    try:
        yield
    except InputError as exc:
        # A refusal from the bounded file names only the volume; name the
        # file too when this boundary knows it.
        if source != exc.source and source.startswith(exc.source):
            try:
                renamed = type(exc)(one_line(source), exc.problem)
            except TypeError:
                renamed = disk_error(source, exc.problem)
            raise renamed from exc
        raise
    except Exception as exc:
        if not (isinstance(exc, (*CORRUPT_DATA_ERRORS, *extra)) or from_reader(exc)):
            raise
        raise disk_error(
            source, f"corrupt or unsupported data while {doing} ({describe_exception(exc)})"
        ) from exc
