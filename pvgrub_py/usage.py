"""The argparse parser every pvgrubctl verb uses: one-line usage errors.

Apart from `pvgrub_py.program` so that ``pvgrub-py``, which parses its
options as pygrub does, without argparse, does not import argparse (~1 ms
of every boot).
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
