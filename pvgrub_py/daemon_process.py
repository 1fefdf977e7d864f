"""A daemon as a child process: wait until it is ready, stop it.

swtpm (`tpm.launcher`), the simulated host (`sim.host`), its xenstored
(`sim.xenstored`) and vtpmd in the simulator (`builder.sim_boot`) are run the
same way: started with ``Popen``, ready once a check passes (a socket accepts,
or the daemon writes its start-up line) unless it exits or a deadline passes
first, and stopped with SIGTERM, then SIGKILL if it outlives a grace period,
then reaped.  The callers keep their own commands and error messages.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import IO, Any, NoReturn


def poll_until_ready(
    process: subprocess.Popen[Any],
    ready: Callable[[], bool],
    timeout: float,
    interval: float = 0.02,
) -> bool:
    """Call ``ready()`` until it returns True (then True), or until *process*
    exits or *timeout* seconds pass (then False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(interval)
    return False


def read_startup_line(stream: IO[bytes], timeout: float, fail: Callable[[bool], NoReturn]) -> bytes:
    """The first line a daemon writes to *stream* (its report that it is ready).  If
    *stream* ends first, or *timeout* seconds pass, ``fail(exited)`` is called instead:
    *exited* is True when the stream ended, False on the timeout."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(0.0, remaining))
        chunk = os.read(stream.fileno(), 4096) if ready else b""
        if not chunk:
            fail(bool(ready))
        line += chunk
    return line


def stop_process(process: subprocess.Popen[Any], grace: float) -> int:
    """SIGTERM *process* if it still runs, wait *grace* seconds, then SIGKILL;
    reap it and close its stdout pipe (its stderr is left for the caller to
    read).  Its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
