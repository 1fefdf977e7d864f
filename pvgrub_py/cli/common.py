"""What every command-line entry point shares: one-line errors, exit codes, warnings.

A Xen admin reads our errors in ``/var/log/xen/bootloader.N.log`` or on a
console: one line, prefixed with the program name, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import MAX_BOOT_FILE, describe_open_error, format_size, open_input
from pvgrub_py.program import run
from pvgrub_py.warning import LOGGER, on_first_warning

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from pvgrub_py.usage import ArgumentParser

def __getattr__(name: str) -> Any:
    """``ArgumentParser`` (from `pvgrub_py.usage`) on first use: pvgrub-py
    imports this module for `show_warnings` and never parses with argparse."""
    if name == "ArgumentParser":
        from pvgrub_py.usage import ArgumentParser

        return ArgumentParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArgumentParser", "check_input", "check_output", "int_in_range", "read_input", "run"]


def check_input(
    path: str,
    *,
    what: str = "",
    allow_block_device: bool = False,
    max_size: int | None = MAX_BOOT_FILE,
) -> None:
    """Refuse, before any work, an input that is not a regular file (or, for a
    disk, a block device) or is over *max_size*: a FIFO would block the open, a
    character device or a huge sparse file would never end.  For inputs a
    lower layer opens by path itself; one line naming the file on failure."""
    with open_input(path, allow_block_device=allow_block_device, max_size=max_size, what=what):
        pass


def read_input(path: str, *, what: str = "", max_size: int) -> bytes:
    """The whole of a small input file, at most *max_size* bytes, never blocking."""
    source = f"{what} {path}" if what else path
    with open_input(path, max_size=max_size, what=what) as f:
        try:
            data = f.read(max_size + 1)
        except OSError as e:
            raise InputError(source, f"read failed: {describe_open_error(e)}") from None
    if len(data) > max_size:
        raise InputError(source, f"grew past the {format_size(max_size)} cap while being read")
    return data


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type=``: a decimal whole number from *low* to *high*,
    or a usage error saying so (never a negative count, a zero parallelism,
    a domid Xen could not have)."""

    def parse(text: str) -> int:
        import argparse  # loaded by then: argparse is what calls this

        if not text.strip().isascii() or not text.strip().lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(text.strip(), 10)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


def check_output(path: str) -> None:
    """Refuse, before any work (a boot, a measurement), an output file that
    could not be written afterwards: its folder is missing or not writable,
    or the path is (or links to) a directory, or a device, FIFO or socket the
    atomic write (a new file renamed over OUT) would replace.  Nothing is
    created here."""
    # pvgrub-py imports this module at every start; the event-log code costs ~12 ms.
    from pvgrub_py.eventlog.builder import check_replaceable

    if os.path.isdir(path):
        raise InputError(path, "cannot write: is a directory")
    check_replaceable(path)
    check_parent_writable(path)


def check_parent_writable(path: str) -> None:
    """The folder that will hold *path* exists and we may create files in it."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(path, f"cannot write: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write: permission denied in {parent}")


def show_warnings(prog: str = "pvgrub-py") -> None:
    """Warnings (`pvgrub_py.warning`) as one line each on stderr, ``PROG: warning: ...``.

    The handler is set up at the first warning, so a run with nothing to say
    never imports `logging`.  It writes to the ``sys.stderr`` of the moment
    (a program called as a function may have it redirected)."""

    def setup() -> None:
        import logging

        class Stderr(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                sys.stderr.write(self.format(record) + "\n")

        handler = Stderr()
        handler.setFormatter(logging.Formatter(f"{prog}: warning: %(message)s"))
        logger = logging.getLogger(LOGGER)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.WARNING)
        logger.propagate = False

    on_first_warning(setup)
