"""Run ``pvgrubctl`` as a test sees it: in-process (`ctl`: exit status, stdout,
stderr) or in its own process (`run`, for what needs its own descriptors and
signals, or runs long)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pvgrub_py.cli.pvgrubctl import main as pvgrubctl


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``pvgrubctl ARGV...``: its status (a usage error's SystemExit included) and output."""
    try:
        status = pvgrubctl(list(argv))
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``pvgrubctl ARGV...`` in a process of its own, its output captured."""
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", *argv],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
