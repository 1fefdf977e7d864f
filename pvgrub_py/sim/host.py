"""`SimHost`: start (or find) a simulated host and use it from a test or a tool.

::

    with SimHost.start("/tmp/h1") as host:        # daemon + xenstored subprocesses
        domid = host.create_domain(DomainConfig(name="guest"))
        guest = host.attach(domid)                 # or SimHypervisor.attach in another process
        ...
        assert host.stats().total.resources == 0

`start` returns once processes can attach; leaving the ``with`` block (also on an
exception) stops the daemon, which stops its xenstored and removes its sockets.  If
the test process itself is killed, the daemon lives on; its xenstored dies with it
(PR_SET_PDEATHSIG), and a later `start` in the same directory replaces the stale
socket.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import resource
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from pvgrub_py.daemon_process import read_startup_line, stop_process
from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.layout import HostLayout
from pvgrub_py.sim.stats import HostStats
from pvgrub_py.sim.toolstack import create_domain, destroy_domain
from pvgrub_py.sim.xenstored import package_env
from pvgrub_py.xen.interface import DomainConfig, XenError


def _limit_fds(count: int) -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class SimHost:
    def __init__(self, layout: HostLayout, process: subprocess.Popen[bytes] | None) -> None:
        self.layout = layout
        self._process = process
        self._dom0: SimHypervisor | None = None

    @classmethod
    def start(
        cls,
        host_dir: str | os.PathLike[str],
        *,
        xenstored: bool | str = True,
        timeout: float = 30.0,
        log: str | os.PathLike[str] | None = None,
        flask: bool = False,
        xsm_labels: Mapping[int, str] | None = None,
        fd_limit: int | None = None,
    ) -> SimHost:
        """Run ``pvgrubctl sim host --dir host_dir`` and wait until it serves.
        ``xenstored``: True to start one, False for none, or the toolstack socket
        of one already running.  ``log``: a file for the daemon's debug trace.
        ``flask``: run with XSM/FLASK (`sim.xsm`); ``xsm_labels``: contexts by
        domid (``--xsm-label``, implies ``flask``).  ``fd_limit``: the daemon's
        (and its xenstored's) RLIMIT_NOFILE, to see them run out of descriptors."""
        layout = HostLayout.of(host_dir)
        problem = layout.check_socket_paths()
        if problem is not None:
            raise XenError(errno.ENAMETOOLONG, "sim host", problem)
        layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pvgrub_py.sim", "host", "--dir", str(layout.root)]
        if xenstored is False:
            command.append("--no-xenstored")
        elif isinstance(xenstored, str):
            command += ["--xenstored", xenstored]
        if log is not None:
            command += ["--log", os.fspath(log)]
        if flask:
            command.append("--flask")
        for domid, label in (xsm_labels or {}).items():
            command += ["--xsm-label", f"{domid}={label}"]
        with open(layout.log, "ab") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=package_env(),
                start_new_session=True,  # a ^C in the test's terminal reaches us, not it
                preexec_fn=None if fd_limit is None else functools.partial(_limit_fds, fd_limit),
            )
        host = cls(layout, process)
        try:
            host._wait_ready(timeout)
        except BaseException:
            host.stop()
            raise
        return host

    @classmethod
    def connect(cls, host_dir: str | os.PathLike[str]) -> SimHost:
        """A host already running (e.g. ``pvgrubctl sim host``); `stop` leaves it be."""
        layout = HostLayout.of(host_dir)
        if not layout.socket.exists():
            raise XenError(errno.ENOENT, "sim host", f"no host runs in {layout.root}")
        return cls(layout, None)

    def _wait_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None and process.stdout is not None

        def fail(exited: bool) -> NoReturn:
            why = "exited" if exited else f"did not start within {timeout:.0f} s"
            raise XenError(errno.EIO, "sim host", f"the host daemon {why}: {self._log_tail()}")

        read_startup_line(process.stdout, timeout, fail)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.layout.log.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-5:]) or "(empty log)"
        return f"(no log at {self.layout.log})"

    # -- use -------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self.layout.root

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def xenstored_socket(self) -> Path:
        return self.layout.xenstored_socket

    def attach(self, domid: int = 0, token: str | None = None) -> SimHypervisor:
        return SimHypervisor.attach(self.layout.root, domid, token)

    @property
    def dom0(self) -> SimHypervisor:
        """A dom0 connection kept by this object (for stats and the toolstack)."""
        if self._dom0 is None:
            self._dom0 = self.attach(0)
        return self._dom0

    def stats(self) -> HostStats:
        return self.dom0.stats()

    def create_domain(
        self,
        config: DomainConfig | None = None,
        *,
        introduce: bool = True,
        xsm_label: str | None = None,
    ) -> int:
        """Create a domain the libxl way (see `toolstack`): paused, with a xenstore
        home, introduced to xenstored; labelled ``xsm_label`` (``seclabel=``) if given."""
        return create_domain(self.dom0, config, introduce=introduce, xsm_label=xsm_label)

    def destroy_domain(self, domid: int) -> None:
        destroy_domain(self.dom0, domid)

    def token(self, domid: int) -> str:
        """The secret a process needs to attach as ``domid``."""
        return self.layout.token(domid).read_text().strip()

    # -- stop --------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the daemon we started and wait; returns its exit status."""
        if self._dom0 is not None:
            self._dom0.close()
            self._dom0 = None
        process, self._process = self._process, None
        return None if process is None else stop_process(process, timeout)

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
