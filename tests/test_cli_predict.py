"""`pvgrubctl predict` as a user runs it: output, JSON shape, one-line errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pvgrub_py.cli.pvgrubctl import main


def files(tmp_path: Path) -> tuple[str, str]:
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    k.write_bytes(b"kernel-bytes")
    i.write_bytes(b"initrd-bytes")
    return str(k), str(i)


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k, i = files(tmp_path)
    assert main(["predict", "--kernel", k, "--initrd", i, "--cmdline", "ro"]) == 0
    out = capsys.readouterr().out
    assert "1. PCR 4 <- kernel" in out and "3. PCR 5 <- initrd" in out
    assert "  sha1:\n    4 : 0x05B0E492C1EDF73330D1EF77FDD878F14823AE05" in out


def test_json_shape_is_stable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k, _ = files(tmp_path)
    assert main(["predict", "--kernel", k, "--cmdline", "ro", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"measurements", "pcrs"}
    assert doc["measurements"][0] == {
        "pcr": 4,
        "what": "kernel",
        "source": k,
        "digests": {
            "sha1": hashlib.sha1(b"kernel-bytes").hexdigest(),
            "sha256": hashlib.sha256(b"kernel-bytes").hexdigest(),
        },
    }
    assert doc["measurements"][1]["source"] == "ro"
    assert doc["measurements"][2]["source"] is None
    assert set(doc["pcrs"]) == {"sha1", "sha256"} and set(doc["pcrs"]["sha1"]) == {"4", "5"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (
            ["--kernel", "/nonexistent/vmlinuz", "--cmdline", "x"],
            1,
            "pvgrubctl: kernel /nonexistent/vmlinuz: No such file or directory",
        ),
        (["--kernel", "/", "--cmdline", "x"], 1, "pvgrubctl: kernel /: a directory"),
        (
            ["--kernel", "K", "--cmdline", "x", "--bank", "md5"],
            2,
            "pvgrubctl: unknown hash bank 'md5' (known: sha1,sha256,sha384,sha512,sm3_256,"
            "sha3_256,sha3_384,sha3_512)",
        ),
        (["--cmdline", "x"], 2, "error: the following arguments are required: --kernel"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], status: int, message: str) -> None:
    k, _ = files(tmp_path)
    r = run_cli("predict", *[k if a == "K" else a for a in args])
    assert r.returncode == status
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_nul_in_cmdline_from_argv_is_impossible_but_checked(tmp_path: Path) -> None:
    # argv cannot carry NUL; the library check is exercised in test_measure_boot_files.
    k, _ = files(tmp_path)
    assert main(["predict", "--kernel", k, "--cmdline", "a b"]) == 0


def test_failed_run_leaves_no_event_log(tmp_path: Path) -> None:
    out = tmp_path / "boot.log"
    r = run_cli("predict", "--kernel", str(tmp_path / "missing"), "--cmdline", "x",
                "--event-log", str(out))  # fmt: skip
    assert r.returncode == 1 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_is_complete() -> None:
    r = run_cli("predict", "--help")
    assert r.returncode == 0
    for word in ("--kernel", "--initrd", "--cmdline", "--bank", "--json", "--event-log",
                 "PCR 4", "exit status"):  # fmt: skip
        assert word in r.stdout
