"""Fixtures and helpers for the xenstore tests: daemons, raw clients, C tools.

Import the fixtures into a test module with
``from xenstore_fixtures import xenstored_thread  # noqa: F401`` (pytest puts
tests/ on sys.path).  Socket paths live in a short /tmp directory: a unix
socket path is limited to 107 bytes, and pytest's tmp_path can be longer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvgrub_py.xenstore.daemon import XenstoredThread
from pvgrub_py.xenstore.wire import (
    HEADER,
    HEADER_SIZE,
    Message,
    MessageReader,
    XsType,
    pack,
)

ROOT = Path(__file__).resolve().parents[1]
C_TOOLS = ("xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-rm", "xenstore-list")
HAVE_C_TOOLS = all(shutil.which(tool) for tool in C_TOOLS)
needs_c_tools = pytest.mark.skipif(
    not HAVE_C_TOOLS, reason="xenstore-utils missing (apt-get install xenstore-utils)"
)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xs", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def xenstored_thread(socket_dir: Path) -> Iterator[XenstoredThread]:
    """A daemon in a background thread of this process (fast; no subprocess)."""
    with XenstoredThread(socket_dir / "sock") as daemon:
        yield daemon


def pvgrubctl_command() -> list[str]:
    """How to run ``pvgrubctl``: the real entry point when every verb module
    it lists imports, else the sim verb alone (another engineer's verb may
    not have landed yet; that is not what these tests are about)."""
    from pvgrub_py.cli import pvgrubctl

    if all(importlib.util.find_spec(name) for name in pvgrubctl.COMMAND_MODULES):
        return [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl"]
    return [sys.executable, "-m", "pvgrub_py.cli.cmd_sim"]


def limit_descriptors(count: int) -> None:  # pragma: no cover - runs in a child
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class DaemonProcess:
    """``pvgrubctl sim xenstored --foreground`` as a subprocess."""

    _stderr = ""

    def __init__(self, socket_path: Path, *extra: str, fd_limit: int | None = None) -> None:
        """``fd_limit``: RLIMIT_NOFILE (soft and hard) of the daemon, to run
        it out of descriptors quickly."""
        self.socket_path = socket_path
        command = pvgrubctl_command()
        args = ["xenstored", "--socket", str(socket_path), "--foreground", *extra]
        if command[-1].endswith("pvgrubctl"):
            args = ["sim", *args]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if fd_limit is None else (lambda: limit_descriptors(fd_limit)),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # printed once it listens
        if line != str(socket_path):
            self.stop()
            raise RuntimeError(f"xenstored did not start: {line!r} {self.stderr()}")

    def rss_kib(self) -> int:
        """The daemon's resident set size now, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stderr_now(self) -> str:
        """What the daemon wrote on stderr so far (stops it first)."""
        self.stop()
        return self.stderr()

    def env(self, domid: int | None = None) -> dict[str, str]:
        path = self.socket_path if domid is None else f"{self.socket_path}.d/{domid}"
        return {**os.environ, "XENSTORED_PATH": str(path)}

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return self._stderr
        self._stderr = self.proc.stderr.read()
        return self._stderr

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def xenstored_process(socket_dir: Path) -> Iterator[DaemonProcess]:
    """The daemon as a separate process, started through the CLI."""
    daemon = DaemonProcess(socket_dir / "sock")
    try:
        yield daemon
    finally:
        daemon.stop()


def xs_tool(
    env: dict[str, str], *args: str, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    """Run one of Debian's xenstore-* clients."""
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


class RawClient:
    """A bare xs_wire client over a socket, for what pyxs cannot or will not
    send (hostile input, the newer message types, domain connections)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.reader = MessageReader()
        self.events: list[Message] = []
        self._req_id = 0

    @classmethod
    def connect(cls, path: str | os.PathLike[str]) -> RawClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(os.fspath(path))
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Message:
        while True:
            msg = self.reader.next_message()
            if msg is not None:
                return msg
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            self.reader.feed(data)

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> Message:
        """Send one request; return its reply, keeping watch events aside."""
        self._req_id += 1
        self.send_raw(pack(msg_type, self._req_id, tx_id, payload))
        while True:
            msg = self.receive()
            if msg.type == XsType.WATCH_EVENT:
                self.events.append(msg)
                continue
            assert msg.req_id == self._req_id, msg
            return msg

    def next_event(self) -> Message:
        if self.events:
            return self.events.pop(0)
        msg = self.receive()
        assert msg.type == XsType.WATCH_EVENT, msg
        return msg

    def expect_closed(self) -> bool:
        """Whether the daemon closed this connection."""
        with contextlib.suppress(TimeoutError, OSError):
            return self.sock.recv(65536) == b""
        return False


def ok(msg: Message) -> bytes:
    """The reply payload; fails with the error name on an ERROR reply."""
    assert msg.type != XsType.ERROR, msg.payload
    return msg.payload


def error_name(msg: Message) -> str:
    assert msg.type == XsType.ERROR, msg
    return msg.payload.rstrip(b"\x00").decode()


def header(msg_type: int, req_id: int, tx_id: int, length: int) -> bytes:
    return HEADER.pack(msg_type, req_id, tx_id, length)


assert HEADER_SIZE == 16


def pipeline(client: RawClient, requests: list[tuple[int, bytes, int]]) -> list[Message]:
    """Send ``(type, payload, tx_id)`` requests in one write, then collect
    their replies in order (watch events are kept aside): fast enough to
    attack the daemon with thousands of requests in a test."""
    first = client._req_id + 1
    data = b"".join(
        pack(msg_type, first + i, tx_id, payload)
        for i, (msg_type, payload, tx_id) in enumerate(requests)
    )
    client._req_id += len(requests)
    client.send_raw(data)
    replies: list[Message] = []
    while len(replies) < len(requests):
        msg = client.receive()
        if msg.type == XsType.WATCH_EVENT:
            client.events.append(msg)
            continue
        assert msg.req_id == first + len(replies), msg
        replies.append(msg)
    return replies


def live_connections(
    path: str | os.PathLike[str], count: int, timeout: float = 2.0
) -> list[RawClient]:
    """Connect ``count`` times to ``path``; keep those the daemon serves (it
    answers GET_DOMAIN_PATH), close those it refused (end-of-file).  A
    connection left unanswered for ``timeout`` seconds (the daemon no longer
    accepts at all) ends the attempt: the time spent stays bounded."""
    alive: list[RawClient] = []
    for _ in range(count):
        client = RawClient.connect(path)
        client.sock.settimeout(timeout)
        try:
            client.request(XsType.GET_DOMAIN_PATH, b"0\x00")
        except TimeoutError:
            client.close()
            break
        except (ConnectionError, OSError):
            client.close()
            continue
        client.sock.settimeout(5)
        alive.append(client)
    return alive


def introduce(toolstack_path: str | os.PathLike[str], domid: int) -> str:
    """INTRODUCE ``domid`` as dom0; the path of its domain socket."""
    with RawClient.connect(toolstack_path) as dom0:
        assert ok(dom0.request(XsType.INTRODUCE, f"{domid}\x001\x001\x00".encode())) == b"OK\x00"
    return f"{os.fspath(toolstack_path)}.d/{domid}"
