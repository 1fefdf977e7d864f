"""Debian's xenstore-* clients (libxenstore 4.17) against ``pvgrubctl sim xenstored``.

The daemon runs as a subprocess started through the CLI, and the C tools
find it through XENSTORED_PATH, exactly as on a host.  Expected outputs are
what those tools print against a real xenstored (the formats are the
clients', the content is the daemon's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from xenstore_fixtures import (  # noqa: F401
    DaemonProcess,
    RawClient,
    header,
    needs_c_tools,
    ok,
    pvgrubctl_command,
    socket_dir,
    xenstored_process,
    xs_tool,
)

from pvgrub_py.xenstore.wire import XsType

pytestmark = [pytest.mark.integration, needs_c_tools]

TEST_XENSTORE = "/usr/lib/xen-4.17/bin/test-xenstore"


def run_ok(env: dict[str, str], *args: str) -> str:
    done = xs_tool(env, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def test_fresh_daemon_lists_like_xenstored(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    assert run_ok(env, "xenstore-ls") == 'tool = ""\n xenstored = ""\n'
    assert run_ok(env, "xenstore-ls", "-f", "-p", "/tool") == ('/tool/xenstored = ""   (n0)\n')


def test_write_read_ls_list_rm_exists(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    run_ok(env, "xenstore-write", "/a/b", "hello world", "/a/c/d", 'q"uote')
    assert run_ok(env, "xenstore-read", "/a/b", "/a/c/d") == 'hello world\nq"uote\n'
    assert run_ok(env, "xenstore-read", "-p", "/a/b") == "/a/b: hello world\n"
    assert run_ok(env, "xenstore-ls", "/a") == 'b = "hello world"\nc = ""\n d = "q"uote"\n'
    assert run_ok(env, "xenstore-ls", "-f", "/a") == (
        '/a/b = "hello world"\n/a/c = ""\n/a/c/d = "q"uote"\n'
    )
    assert run_ok(env, "xenstore-list", "/a") == "b\nc\n"
    assert run_ok(env, "xenstore-list", "-p", "/a") == "/a/b\n/a/c\n"
    assert xs_tool(env, "xenstore-exists", "/a/c/d").returncode == 0
    assert xs_tool(env, "xenstore-exists", "/a/zz").returncode == 1
    run_ok(env, "xenstore-rm", "-t", "/a/c/d")  # -t: also remove parents left empty
    assert run_ok(env, "xenstore-list", "/a") == "b\n"
    missing = xs_tool(env, "xenstore-read", "/a/nope")
    assert missing.returncode == 1 and "couldn't read path /a/nope" in missing.stderr
    bad = xs_tool(env, "xenstore-ls", "/nonexist")
    assert bad.returncode == 1 and "No such file or directory" in bad.stderr
    # Relative paths from the socket are dom0's.
    run_ok(env, "xenstore-write", "name", "Domain-0")
    assert run_ok(env, "xenstore-read", "/local/domain/0/name") == "Domain-0\n"


def test_chmod_and_ls_permissions(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    run_ok(env, "xenstore-write", "/p/q/r", "1")
    run_ok(env, "xenstore-chmod", "/p/q", "r5", "w3")
    assert run_ok(env, "xenstore-ls", "-f", "-p", "/p") == (
        '/p/q = ""   (r5,w3)\n/p/q/r = "1"   (n0)\n'
    )
    run_ok(env, "xenstore-chmod", "-r", "/p", "b0", "r7")
    assert run_ok(env, "xenstore-ls", "-f", "-p", "/p") == (
        '/p/q = ""   (b0,r7)\n/p/q/r = "1"   (b0,r7)\n'
    )
    bad = xs_tool(env, "xenstore-chmod", "/p", "x5")
    assert bad.returncode != 0


def test_watch_prints_initial_event_then_changes(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    watcher = subprocess.Popen(
        ["timeout", "5", "xenstore-watch", "-n", "3", "/w"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline() == "/w\n"  # fires once straight away
    run_ok(env, "xenstore-write", "/w/x", "1")
    run_ok(env, "xenstore-rm", "/w")
    out, _ = watcher.communicate(timeout=10)
    assert watcher.returncode == 0
    assert out == "/w/x\n/w\n"


def test_big_directory_uses_directory_part(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    names = [f"entry-with-a-long-name-{i:04d}" for i in range(250)]  # > 4096 bytes of names
    args = [arg for name in names for arg in (f"/big/{name}", "v")]
    run_ok(env, "xenstore-write", *args)
    assert run_ok(env, "xenstore-list", "/big").split() == names


def test_domain_socket_after_introduce(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    env = xenstored_process.env()
    with RawClient.connect(xenstored_process.socket_path) as dom0:
        assert ok(dom0.request(XsType.INTRODUCE, b"5\x00-1\x003\x00")) == b"OK\x00"
    env5 = xenstored_process.env(5)
    run_ok(env5, "xenstore-write", "device/vtpm/0/state", "1")
    assert run_ok(env5, "xenstore-read", "device/vtpm/0/state") == "1\n"
    assert run_ok(env, "xenstore-ls", "-f", "-p", "/local/domain/5") == (
        '/local/domain/5/device = ""   (n5)\n'
        '/local/domain/5/device/vtpm = ""   (n5)\n'
        '/local/domain/5/device/vtpm/0 = ""   (n5)\n'
        '/local/domain/5/device/vtpm/0/state = "1"   (n5)\n'
    )
    denied = xs_tool(env5, "xenstore-read", "/tool/xenstored")
    assert denied.returncode == 1
    with RawClient.connect(xenstored_process.socket_path) as dom0:
        assert ok(dom0.request(XsType.RELEASE, b"5\x00")) == b"OK\x00"
    assert not Path(f"{xenstored_process.socket_path}.d/5").exists()


def test_hostile_client_then_c_client(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    with RawClient.connect(xenstored_process.socket_path) as raw:
        raw.send_raw(header(XsType.WRITE, 1, 0, 100_000) + b"junk")
        assert raw.expect_closed()
    assert run_ok(xenstored_process.env(), "xenstore-read", "/tool/xenstored") == "\n"


@pytest.mark.skipif(not os.access(TEST_XENSTORE, os.X_OK), reason="Xen's test-xenstore missing")
def test_xens_own_test_xenstore_passes(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    """tools/tests/xenstore from Xen 4.17: reads, writes, rm, and the
    transaction tests including the conflict case."""
    done = subprocess.run(
        [TEST_XENSTORE, "-i", "3"],
        env=xenstored_process.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed" not in done.stdout


# -- the CLI itself ---------------------------------------------------------------------------


def test_sigterm_and_sigint_remove_the_sockets(socket_dir: Path) -> None:  # noqa: F811
    for signum in (signal.SIGTERM, signal.SIGINT):
        daemon = DaemonProcess(socket_dir / "sock")
        with RawClient.connect(daemon.socket_path) as dom0:
            ok(dom0.request(XsType.INTRODUCE, b"4\x001\x001\x00"))
        assert Path(f"{daemon.socket_path}.d/4").exists()
        daemon.proc.send_signal(signum)
        assert daemon.proc.wait(10) == 0
        daemon.stop()
        assert not daemon.socket_path.exists()
        assert not Path(f"{daemon.socket_path}.d").exists()


def test_socket_in_use_is_a_one_line_error(xenstored_process: DaemonProcess) -> None:  # noqa: F811
    second = subprocess.run(
        [*_sim_command(), "xenstored", "--socket", str(xenstored_process.socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "already listening" in second.stderr
    assert xenstored_process.proc.poll() is None


def test_background_mode_with_pid_file(socket_dir: Path) -> None:  # noqa: F811
    sock, pid_file = socket_dir / "bg.sock", socket_dir / "pid"
    done = subprocess.run(
        [*_sim_command(), "xenstored", "--socket", str(sock), "--pid-file", str(pid_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout == f"{sock}\n"
    pid = int(pid_file.read_text())
    try:
        env = {**os.environ, "XENSTORED_PATH": str(sock)}
        run_ok(env, "xenstore-write", "/bg", "1")
        assert run_ok(env, "xenstore-read", "/bg") == "1\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sock.exists()


def test_usage_errors_exit_2(socket_dir: Path) -> None:  # noqa: F811
    for args in (["xenstored"], ["xenstored", "--socket", "x", "--quota", "bogus=1"]):
        done = subprocess.run([*_sim_command(), *args], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1
    help_text = subprocess.run(
        [*_sim_command(), "xenstored", "--help"], capture_output=True, text=True
    ).stdout
    assert "SOCKET.d/N" in help_text and "exit status" in help_text


def _sim_command() -> list[str]:
    command = pvgrubctl_command()
    return [*command, "sim"] if command[-1].endswith("pvgrubctl") else command


def test_tools_are_debians() -> None:
    assert shutil.which("xenstore-watch") and shutil.which("xenstore-chmod")
