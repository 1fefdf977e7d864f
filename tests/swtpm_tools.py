"""A swtpm that tpm2-tools and swtpm_ioctl can talk to: the independent side of TPM tests.

tpm2-tss's ``swtpm`` TCTI finds the control channel at the data port + 1, so
this starts swtpm itself on a consecutive pair of TCP ports on 127.0.0.1 (our
own launcher picks unrelated ports).  Values read back with ``tpm2_pcrread``
come from the TPM and tpm2-tools alone, never from pvgrub-py's TPM code.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

TOOLS = ("swtpm", "swtpm_ioctl", "tpm2_pcrread", "tpm2_pcrextend", "tpm2_startup")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="swtpm and tpm2-tools are not installed (make setup)",
)


def _port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free TCP ports")


@dataclass
class ToolsTpm:
    port: int
    tpm2: bool

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def uri(self) -> str:
        """The vTPM address pvgrub-py takes for the same TPM."""
        return f"swtpm:tcp:127.0.0.1:{self.port}"

    def tool(self, *argv: str) -> str:
        """Run a tpm2-tools command against this TPM; its stdout."""
        proc = subprocess.run(
            [argv[0], "-T", self.tcti, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{argv}: {proc.stderr.strip()}"
        return proc.stdout

    def ioctl(self, *argv: str) -> None:
        """swtpm_ioctl on the control channel (e.g. ``-h DATA``: _TPM_Hash_Start/Data/End)."""
        subprocess.run(
            ["swtpm_ioctl", "--tcp", f"127.0.0.1:{self.port + 1}", *argv],
            capture_output=True,
            timeout=30,
            check=True,
        )

    def pcrread(self, selection: str) -> dict[str, dict[int, bytes]]:
        """``tpm2_pcrread SELECTION``, parsed from its YAML-shaped text."""
        values: dict[str, dict[int, bytes]] = {}
        bank = ""
        for line in self.tool("tpm2_pcrread", selection).splitlines():
            if not line.strip():
                continue
            if not line.startswith("    "):  # "  sha256:", then "    4 : 0x..."
                bank = line.strip().rstrip(":")
                values[bank] = {}
            else:
                pcr, _, value = line.partition(":")
                values[bank][int(pcr)] = bytes.fromhex(value.strip().removeprefix("0x"))
        return values

    def raw(self, command: bytes) -> bytes:
        """Send one command on the data socket and read the whole response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(command)
            head = b""
            while len(head) < 6:
                chunk = s.recv(6 - len(head))
                assert chunk, "swtpm closed the connection"
                head += chunk
            size = int.from_bytes(head[2:6], "big")
            body = head
            while len(body) < size:
                chunk = s.recv(size - len(body))
                assert chunk, "swtpm closed the connection"
                body += chunk
            return body


@contextmanager
def tools_tpm(
    tpm2: bool = True,
    startup: bool = True,
    *,
    state_dir: str | None = None,
    key_file: str | None = None,
) -> Iterator[ToolsTpm]:
    """A private swtpm (TPM 2.0 by default), torn down on exit: on a fresh state, or on
    *state_dir* (kept) read with ``--key file=KEY_FILE`` when given.  AssertionError,
    with swtpm's own words, if it exits at start (a state it cannot load)."""
    workdir = tempfile.mkdtemp(prefix="pvgrub-tools-tpm-")
    port = _port_pair()
    flags = "not-need-init" + (",startup-clear" if startup else "")
    cmd = [
        "swtpm", "socket",
        "--tpmstate", f"dir={state_dir or workdir}",
        "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
        "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
        "--flags", flags,
    ] + (["--tpm2"] if tpm2 else [])  # fmt: skip
    if key_file is not None:
        cmd += ["--key", f"file={key_file},mode=aes-256-cbc,format=hex"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"swtpm exited at start: {proc.stderr.read()!r}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "swtpm did not start"
                time.sleep(0.02)
        yield ToolsTpm(port, tpm2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)
