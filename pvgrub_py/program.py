"""What every program's entry point needs: one-line errors and exit codes.

A Xen admin reads our errors in ``/var/log/xen/bootloader.N.log`` or on a
console: one line, prefixed with the program name, never a traceback.  Here,
below every package, so that ``python -m pvgrub_py.sim`` has them without
importing `pvgrub_py.cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pvgrub_py.errors import PvgrubError


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
