"""stubdom/systemd: the units' command lines are ones pvgrubctl accepts, and
vtpmd's unit keeps its swtpm instances across a restart (issue 15, item 2)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from pvgrub_py.cli.pvgrubctl import build_parser

UNIT = Path(__file__).resolve().parents[1] / "stubdom" / "systemd" / "pvgrub-vtpmd.service"


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def test_vtpmd_unit_runs_a_command_line_vtpmd_accepts() -> None:
    service = read_unit(UNIT)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/bin/pvgrubctl"
    args = build_parser().parse_args(argv[1:])
    assert args.func.__module__ == "pvgrub_py.cli.cmd_vtpmd"
    assert args.key_file and not args.provision_unknown and not args.stop_instances_on_exit


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KillMode", "process"),  # a restart must not take the swtpm children with it
        ("Restart", "on-failure"),
        ("StandardError", "journal"),
    ],
)
def test_vtpmd_unit_settings(key: str, value: str) -> None:
    assert read_unit(UNIT)["Service"][key] == value
    assert "PrivateTmp" not in read_unit(UNIT)["Service"]
