"""What every program's entry point needs: one-line errors and exit codes.

A Xen admin reads our errors in ``/var/log/xen/bootloader.N.log`` or on a
console: one line, prefixed with the program name, never a traceback.
(argparse's parser is in `pvgrub_py.usage`: pvgrub-py parses its options
without it, and importing it costs each boot ~1 ms.)  Here,
below every package, so that ``python -m pvgrub_py.sim`` has them without
importing `pvgrub_py.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pvgrub_py.errors import PvgrubError


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
