"""Start and stop a private swtpm for tests, the demo and the vTPM daemon.

Each instance gets its own state directory and unix sockets (or free TCP
ports on 127.0.0.1), so instances never collide, and it is always torn down:
on context exit, on interpreter exit, even when a test fails.

By default the TPM is started the way Xen's vtpm-stubdom starts its emulator
(``tpm_emulator_init(ST_CLEAR)``): already past TPM_Startup, so a client may
extend at once, as pv-grub does without ever sending TPM_Startup.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import weakref
from typing import Literal

from pvgrub_py.daemon_process import poll_until_ready, stop_process
from pvgrub_py.errors import PvgrubError
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.socket_address import SocketAddress
from pvgrub_py.tpm.swtpm import SwtpmControl, SwtpmTransport

SWTPM = "swtpm"
START_TIMEOUT = 10.0


class SwtpmLaunchError(PvgrubError):
    pass


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], workdir: str | None) -> None:
    stop_process(proc, 5)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


class SwtpmProcess:
    """A running swtpm.  Use as a context manager."""

    def __init__(
        self,
        tpm2: bool = False,
        *,
        state_dir: str | None = None,
        network: Literal["unix", "tcp"] = "unix",
        startup: bool = True,
    ) -> None:
        self.tpm2 = tpm2
        self.network = network
        self.startup = startup
        self._workdir = tempfile.mkdtemp(prefix="pvgrub-swtpm-")
        self.state_dir = state_dir or os.path.join(self._workdir, "state")
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.log_path = os.path.join(self._workdir, "swtpm.log")
        self.data: SocketAddress
        self.ctrl: SocketAddress
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], str], SwtpmProcess] | None = (
            None
        )

    @property
    def version(self) -> str:
        return "2.0" if self.tpm2 else "1.2"

    @property
    def uri(self) -> str:
        """The vTPM address of this instance (see `pvgrub_py.tpm.uri`)."""
        if self.data.path is not None:
            return f"swtpm:unix:{self.data.path}"
        return f"swtpm:tcp:{self.data.host}:{self.data.port}"

    def _command(self) -> list[str]:
        if self.network == "unix":
            self.data = SocketAddress(path=os.path.join(self._workdir, "tpm.sock"))
            self.ctrl = SocketAddress(path=os.path.join(self._workdir, "ctrl.sock"))
            server = f"type=unixio,path={self.data.path}"
            ctrl = f"type=unixio,path={self.ctrl.path}"
        else:
            self.data = SocketAddress(host="127.0.0.1", port=_free_tcp_port())
            self.ctrl = SocketAddress(host="127.0.0.1", port=_free_tcp_port())
            server = f"type=tcp,port={self.data.port},bindaddr=127.0.0.1"
            ctrl = f"type=tcp,port={self.ctrl.port},bindaddr=127.0.0.1"
        flags = "not-need-init" + (",startup-clear" if self.startup else "")
        cmd = [
            SWTPM, "socket",
            "--tpmstate", f"dir={self.state_dir}",
            "--server", server,
            "--ctrl", ctrl,
            "--flags", flags,
            "--log", f"file={self.log_path},level=1",
        ]  # fmt: skip
        if self.tpm2:
            cmd.append("--tpm2")
        return cmd

    def start(self) -> SwtpmProcess:
        if shutil.which(SWTPM) is None:
            raise SwtpmLaunchError(
                "swtpm is not installed (Debian package swtpm; run `make setup`)"
            )
        for _attempt in range(3):  # a free TCP port can be taken between probe and bind
            cmd = self._command()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)  # fmt: skip
            if self._wait_ready(proc):
                self._proc = proc
                # The work dir holds sockets and the log; a caller's own
                # state dir lives elsewhere and is never removed.
                self._finalizer = weakref.finalize(self, _stop, proc, self._workdir)
                return self
            _stop(proc, None)
        err = b""
        if proc.stderr is not None:
            err = proc.stderr.read() or b""
        raise SwtpmLaunchError(f"swtpm did not start: {err.decode(errors='replace').strip()}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        def accepts() -> bool:
            try:
                self.data.connect(0.5).close()
            except PvgrubError:
                return False
            return True

        return poll_until_ready(proc, accepts, START_TIMEOUT)

    def transport(self, timeout: float = 30.0) -> SwtpmTransport:
        return SwtpmTransport(self.data, timeout)

    def control(self) -> SwtpmControl:
        return SwtpmControl(self.ctrl)

    def power_cycle(self) -> None:
        """Power-cycle the TPM and start it again: PCRs 0-15 back to zero.

        This is what a vTPM must do when its guest (re)boots: the measurements
        of one boot must not mix with those of the last.
        """
        self.control().init(delete_volatile=True)
        if self.startup:
            with TpmClient(self.transport(), version="2.0" if self.tpm2 else "1.2") as client:
                client.startup()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.control().shutdown()
                self._proc.wait(timeout=5)
            except (PvgrubError, subprocess.TimeoutExpired):
                pass
        if self._finalizer is not None:
            self._finalizer()  # terminate if still alive, remove the work dir
        else:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._proc = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> SwtpmProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SwtpmProcess(TPM {self.version}, {self.uri if self._proc else 'stopped'})"
