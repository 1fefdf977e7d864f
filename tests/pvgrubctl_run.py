"""Run ``pvgrubctl`` in-process, as a test sees it: exit status, stdout, stderr."""

from __future__ import annotations

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
