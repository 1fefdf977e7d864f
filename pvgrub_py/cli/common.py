"""What every command-line entry point shares: one-line errors, exit codes.

A Xen admin reads our errors in ``/var/log/xen/bootloader.N.log`` or on a
console: one line, prefixed with the program name, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pvgrub_py.errors import InputError, PvgrubError
from pvgrub_py.inputs import MAX_BOOT_FILE, describe_open_error, format_size, open_input


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str] | None) -> int:
    """Call ``body(argv)`` and turn our errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except PvgrubError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


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
    or the path is a directory, or a device, FIFO or socket the atomic write
    (a new file renamed over OUT) would replace.  Nothing is created here."""
    if os.path.isdir(path):
        raise InputError(path, "cannot write: is a directory")
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # The file is written atomically: a new file renamed over OUT.  Renamed
        # over /dev/null, a FIFO or a socket, it would replace them.
        raise InputError(path, "cannot write: not a regular file, and it would be replaced")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(path, f"cannot write: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write: permission denied in {parent}")
