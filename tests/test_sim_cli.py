"""``pvgrubctl sim host --dir DIR`` (run here as ``python -m pvgrub_py.sim host``)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvgrub_py.sim import SimHypervisor
from pvgrub_py.sim.cli import add_host_parser, run_host
from pvgrub_py.sim.testing import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def host_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="simcli", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start(host_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pvgrub_py.sim", "host", "--dir", str(host_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_the_parser_plugs_into_a_sim_verb() -> None:
    parser = argparse.ArgumentParser(prog="pvgrubctl")
    verbs = parser.add_subparsers(dest="verb", required=True)
    parts = verbs.add_parser("sim").add_subparsers(dest="part", required=True)
    add_host_parser(parts)
    args = parser.parse_args(["sim", "host", "--dir", "/tmp/x", "--no-xenstored"])
    assert (args.func, args.dir, args.no_xenstored, args.xenstored) == (
        run_host,
        "/tmp/x",
        True,
        None,
    )


def test_foreground_host_serves_until_sigterm(host_dir: Path) -> None:
    proc = start(host_dir, "--no-xenstored")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(host_dir / "hyp.sock")
        with SimHypervisor.attach(host_dir, 0) as dom0:
            assert dom0.domains().info(0).domid == 0
        second = start(host_dir, "--no-xenstored")
        assert second.wait(30) == 1
        stop(second)
    finally:
        assert stop(proc) == 0
    assert not (host_dir / "hyp.sock").exists()
    assert list((host_dir / "tokens").iterdir()) == []


def test_a_second_host_says_why_in_one_line(host_dir: Path) -> None:
    proc = start(host_dir, "--no-xenstored")
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        result = subprocess.run(
            [sys.executable, "-m", "pvgrub_py.sim", "host", "--dir", str(host_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "already runs" in lines[0], result.stderr
    finally:
        stop(proc)


def test_xenstored_dies_with_a_killed_host(host_dir: Path) -> None:
    proc = start(host_dir)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(host_dir / "hyp.sock")
        assert (host_dir / "xenstored" / "socket").exists()
        xenstored = children_of(proc.pid)
        assert len(xenstored) == 1
        proc.kill()  # SIGKILL: the daemon cannot clean up; the kernel stops xenstored
        proc.wait()
        assert wait_until(lambda: not os.path.exists(f"/proc/{xenstored[0]}/status"), 10) or (
            "zombie" in Path(f"/proc/{xenstored[0]}/status").read_text()
        )
    finally:
        stop(proc)
