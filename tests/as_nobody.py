"""Run a test's operation as an unprivileged user, so permission tests run as root too.

CI runs the suite as root, which reads mode-000 files and writes into
read-only directories; a permission-denied path is then only reachable in a
process that has given root up.  `as_nobody` forks, drops to nobody (65534)
in the child, runs the function there and hands back what it returned or the
exception it raised, as text.  `shared_tmp` makes a directory nobody can
traverse (pytest's own tmp_path is private to root).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534


def as_nobody(fn: Callable[[], object]) -> tuple[str, str]:
    """``("ok", repr(result))`` or ``(ExceptionType, str(exc))`` from ``fn`` run as nobody.

    As a non-root user, runs ``fn`` in the child unchanged (already unprivileged)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                result: tuple[str, str] = ("ok", repr(fn()))
            except BaseException as exc:  # reported to the parent
                result = (type(exc).__name__, str(exc))
            os.write(write, pickle.dumps(result))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the unprivileged child failed"
    out: tuple[str, str] = pickle.loads(data)
    return out


@contextmanager
def shared_tmp() -> Iterator[Path]:
    """A fresh directory under /tmp that nobody may enter (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pvgrub-nobody-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        for sub in path.rglob("*"):
            if sub.is_dir():
                sub.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)
