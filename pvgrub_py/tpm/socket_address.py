"""Where a swtpm listens: a TCP (host, port) or a unix socket path.

Apart from `pvgrub_py.tpm.swtpm` (the transport), so that a vTPM address
(`pvgrub_py.tpm.uri`) can be parsed without importing the socket, threading
and dataclasses machinery: the bootloader checks ``--vtpm`` while it parses
its options, before it forks its parser child, where every millisecond is
on the critical path of a boot (bench/bench_bootloader.py measured 6.6 ms
for that import chain).  `connect` imports `socket` when it is called.
"""

from __future__ import annotations

from pvgrub_py.record import record
from pvgrub_py.tpm.errors import TpmTransportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket


@record(frozen=True)
class SocketAddress:
    """Either a TCP (host, port) or a unix socket path."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"tcp:{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        import socket

        try:
            if self.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(self.path)
            else:
                assert self.host is not None and self.port is not None
                sock = socket.create_connection((self.host, self.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise TpmTransportError(
                f"cannot connect to swtpm at {self}: {e.strerror or e}"
            ) from None
        _kernel_timeouts(sock, timeout)
        return sock


def _kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    """Blocking I/O bounded by SO_RCVTIMEO/SO_SNDTIMEO.

    A Python socket timeout makes every send and recv a poll() plus the
    call, doubling the system calls of a round trip; kernel timeouts keep
    one call each and still never let a silent TPM hang us (the call fails
    with EAGAIN when the time is up).
    """
    import socket
    import struct

    sock.settimeout(None)
    seconds = int(timeout)
    value = struct.pack("@ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
