"""The one way daemons are waited for and stopped (`pvgrub_py.daemon_process`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from pvgrub_py.daemon_process import poll_until_ready, stop_process


def python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_a_daemon_that_exits_is_not_waited_for_until_the_deadline() -> None:
    proc = python("raise SystemExit(3)")
    started = time.monotonic()
    assert not poll_until_ready(proc, lambda: False, timeout=30)
    assert time.monotonic() - started < 10
    assert stop_process(proc, 1) == 3


def test_ready_once_the_check_passes_and_false_at_the_deadline() -> None:
    proc = python("import time; time.sleep(60)")
    try:
        assert poll_until_ready(proc, lambda: True, timeout=5)
        assert not poll_until_ready(proc, lambda: False, timeout=0.2)
    finally:
        assert stop_process(proc, 5) == -signal.SIGTERM


def test_a_daemon_ignoring_sigterm_is_killed_after_the_grace() -> None:
    proc = python(
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    assert stop_process(proc, 0.5) == -signal.SIGKILL
    assert proc.stdout.closed
