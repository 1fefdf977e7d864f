"""``pvgrubctl doctor``: every finding carries a fix; checks run against fake roots."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pvgrub_py.cli import cmd_doctor
from pvgrub_py.cli.pvgrubctl import main


def test_doctor_text_has_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in (
        "bindings",
        "decompress",
        "hypervisor",
        "xenstored",
        "swtpm",
        "swtpm_ioctl",
        "tpm2-tools",
    ):
        assert name in out
    for line in out.splitlines():
        if line.startswith("missing") or line.startswith("warn"):
            assert "fix:" in out


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in checks} >= {"bindings", "hypervisor", "xenstored"}
    assert all(c["fix"] for c in checks if c["status"] != "ok")


def test_hypervisor_absent_present_and_domu(tmp_path: Path) -> None:
    check = cmd_doctor.check_hypervisor(tmp_path)
    assert check.status == "missing" and "dom0" in (check.fix or "")
    (tmp_path / "dev/xen").mkdir(parents=True)
    (tmp_path / "dev/xen/privcmd").touch()
    assert cmd_doctor.check_hypervisor(tmp_path).status == "warn"
    (tmp_path / "proc/xen").mkdir(parents=True)
    (tmp_path / "proc/xen/capabilities").write_text("control_d\n")
    assert cmd_doctor.check_hypervisor(tmp_path).status == "ok"


def test_xenstored_socket_env_and_xenbus(tmp_path: Path) -> None:
    missing = cmd_doctor.check_xenstored({}, tmp_path)
    assert missing.status == "missing" and "XENSTORED_PATH" in (missing.fix or "")
    path = tmp_path / "xs.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        found = cmd_doctor.check_xenstored({"XENSTORED_PATH": str(path)}, tmp_path)
        assert found.status == "ok" and str(path) in found.found
    refused = cmd_doctor.check_xenstored({"XENSTORED_PATH": str(path)}, tmp_path)
    assert refused.status == "missing"
    (tmp_path / "dev/xen").mkdir(parents=True)
    (tmp_path / "dev/xen/xenbus").touch()
    assert cmd_doctor.check_xenstored({}, tmp_path).status == "ok"


def test_missing_program_names_the_debian_package() -> None:
    check = cmd_doctor.check_program(
        "swtpm_ioctl", "swtpm_ioctl", "swtpm-tools", which=lambda _: None
    )
    assert check.status == "missing" and check.fix == "install Debian package swtpm-tools"


def test_bindings_missing_says_simulator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pvgrub_py.xen import binding

    monkeypatch.setitem(sys.modules, "pvgrub_py._xen_cffi", None)
    binding.load.cache_clear()
    try:
        check = cmd_doctor.check_bindings()
    finally:
        binding.load.cache_clear()
    assert check.status == "missing" and "simulator-only" in check.found
    assert "libxen-dev" in (check.fix or "")


def test_require_xen_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["doctor", "--require-xen"])
    ready = Path("/dev/xen/privcmd").exists()
    assert status == (0 if ready else 1)
