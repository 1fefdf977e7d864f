"""The host daemon's side of xenstored: start it, hand out connections, report deaths.

The xenstored is ``pvgrubctl sim xenstored`` (pvgrub_py/xenstore, another module's
job), run as a child process of the host daemon, or one already running that the
daemon is pointed at.  Its contract, from pvgrub_py/xenstore/daemon.py:

* ``SOCKET`` is the toolstack socket; whoever connects there is dom0, privileged;
* once dom0 sends INTRODUCE for domain N, it also listens on ``SOCKET.d/N``, and
  whoever connects there *is* domain N (this stands in for the domain's ring page and
  event channel); RELEASE closes that socket and its clients.

The host daemon connects on behalf of an attached process and passes it the
connected socket (SCM_RIGHTS), so the domid a process uses with xenstored is the
domid it proved to the hypervisor, not one it picked.  An un-introduced domain has no
xenstore, exactly as a guest whose toolstack never introduced it.

When a domain is destroyed, the real xenstored learns it from VIRQ_DOM_EXC and
``xc_domain_getinfo``, drops the domain's connection and fires @releaseDomain.  Our
xenstored has no hypervisor to ask, so the host daemon tells it with a RELEASE from
dom0: the effect seen by clients is the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from pvgrub_py.daemon_process import read_startup_line, stop_process
from pvgrub_py.xen.interface import XenError

XS_GET_DOMAIN_PATH = 10
XS_RELEASE = 9
#: How long XS_CONNECT waits for xenstored to answer its probe.
PROBE_TIMEOUT = 5.0
_XS_HEADER = struct.Struct("=IIII")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM xenstored if the host daemon dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def package_env() -> dict[str, str]:
    """The environment for a child Python that must import this package."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class XenstoredLink:
    def __init__(self, socket_path: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.socket_path = socket_path
        self._process = process

    @classmethod
    def spawn(cls, socket_path: str, log_path: str, timeout: float = 20.0) -> XenstoredLink:
        """Run ``pvgrubctl sim xenstored --foreground`` and wait until it listens (it
        prints SOCKET then)."""
        command = [
            sys.executable,
            "-m",
            "pvgrub_py.cli.cmd_sim",
            "xenstored",
            "--socket",
            socket_path,
            "--foreground",
        ]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=package_env(),
                preexec_fn=_die_with_parent,  # no threads yet in the daemon
            )
        assert process.stdout is not None

        def fail(exited: bool) -> NoReturn:
            link = cls(socket_path, process)
            link.close()
            why = "exited" if exited else f"did not listen within {timeout:.0f} s"
            raise XenError(errno.EIO, "xenstored", f"{' '.join(command)} {why}; see {log_path}")

        line = read_startup_line(process.stdout, timeout, fail)
        if line.strip().decode(errors="replace") != socket_path:
            cls(socket_path, process).close()
            raise XenError(errno.EIO, "xenstored", f"unexpected start-up line {line!r}")
        return cls(socket_path, process)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def domain_socket(self, domid: int) -> str:
        return self.socket_path if domid == 0 else f"{self.socket_path}.d/{domid}"

    def connect(self, domid: int) -> socket.socket:
        """A stream socket connected to xenstored as ``domid``."""
        path = self.domain_socket(domid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise XenError(
                errno.ENOENT,
                "xs_open",
                f"d{domid} is not introduced to xenstored (dom0 must introduce_domain it)",
            ) from None
        except OSError as e:
            sock.close()
            raise XenError(e.errno or errno.EIO, "xs_open", f"xenstored at {path}") from None
        try:
            self._probe(sock, domid)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _probe(sock: socket.socket, domid: int) -> None:
        """One GET_DOMAIN_PATH round trip before the socket is handed over:
        xenstored accepts and at once closes a connection over the domain's
        "connections" quota (or one that would take dom0's descriptors), and
        the process asking should hear EMFILE now, not end-of-file later."""
        payload = b"0\0"
        sock.settimeout(PROBE_TIMEOUT)
        try:
            sock.sendall(_XS_HEADER.pack(XS_GET_DOMAIN_PATH, 0, 0, len(payload)) + payload)
            header = _recv_exactly(sock, _XS_HEADER.size)
            _recv_exactly(sock, _XS_HEADER.unpack(header)[3])
        except (ConnectionError, EOFError, OSError) as e:
            if isinstance(e, TimeoutError):
                raise XenError(errno.ETIMEDOUT, "xs_open", "xenstored did not answer") from None
            raise XenError(
                errno.EMFILE, "xs_open", f"xenstored refused a connection of d{domid} (quota)"
            ) from None
        finally:
            sock.settimeout(None)

    def release(self, domid: int, timeout: float = 5.0) -> None:
        """RELEASE ``domid`` as dom0; a domain never introduced is not an error."""
        payload = f"{domid}".encode() + b"\0"
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(_XS_HEADER.pack(XS_RELEASE, 1, 0, len(payload)) + payload)
            header = b""
            while len(header) < _XS_HEADER.size:
                chunk = sock.recv(_XS_HEADER.size - len(header))
                if not chunk:
                    return
                header += chunk
            _type, _req, _tx, length = _XS_HEADER.unpack(header)
            remaining = length
            while remaining > 0:
                chunk = sock.recv(remaining)
                if not chunk:
                    return
                remaining -= len(chunk)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 10)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("xenstored closed the connection")
        data += chunk
    return data
