"""Cleaning up after a test that SIGKILLs vtpmd or its swtpm on purpose.

A killed process runs no clean-up, so the work directory our launcher made for
each swtpm (its sockets and log, under $TMPDIR) would stay behind.  These read
where it is from the live process's command line, before the kill, so that the
test can remove it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable


def swtpm_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "swtpm"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def work_dirs(pids: Iterable[int]) -> list[str]:
    """The launcher's work directories of these swtpm processes (from ``--log file=``)."""
    dirs = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            text = arg.decode(errors="replace")
            if text.startswith("file=") and "/pvgrub-swtpm-" in text:
                dirs.append(os.path.dirname(text.removeprefix("file=").split(",", 1)[0]))
    return dirs


def remove(dirs: Iterable[str]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
