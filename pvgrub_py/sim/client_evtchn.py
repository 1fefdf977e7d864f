"""An event-channel handle of a simulated domain (libxenevtchn over /dev/xen/evtchn).

Each handle has its own notification socket, filled by the daemon with the 4-byte
port number of every event it delivers (and masks), so `fileno` is readable exactly
when `wait` would return at once, as the evtchn device is.  `notify` and `unmask`
are one-way writes to the daemon (the driver reports nothing for them either beyond
ENOTCONN for a port this handle did not bind, which is checked here).

``xenevtchn_pending`` semantics: `wait` returns a delivered port, which the daemon
masked when it delivered it; further notifications to it are remembered (one
pending bit) and delivered when `unmask` re-arms it.  Ports unbound after their event
was queued may still be returned, as the driver's ring keeps them.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from typing import NamedTuple

from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.evtchn import CLOSED, INTERDOMAIN, UNBOUND
from pvgrub_py.sim.protocol import Op
from pvgrub_py.xen.interface import XenError

PORT = struct.Struct("<I")
_STATES = {CLOSED: "closed", UNBOUND: "unbound", INTERDOMAIN: "interdomain"}


class PortStatus(NamedTuple):
    """EVTCHNOP_status: ``state`` is "closed", "unbound" or "interdomain"; for an
    unbound port ``remote_domid`` is who may bind it, for a bound one the peer."""

    state: str
    remote_domid: int
    remote_port: int


class SimEventChannels:
    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        frame, fds = conn.call(Op.EVT_OPEN, function="xenevtchn_open")
        self._handle_id = frame.args[0]
        self._sock: socket.socket | None = socket.socket(fileno=fds[0])
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._ports: set[int] = set()

    @property
    def ports(self) -> frozenset[int]:
        """The local ports bound through this handle."""
        return frozenset(self._ports)

    def alloc_unbound(self, remote_domid: int) -> int:
        frame, _ = self._conn.call(
            Op.EVT_ALLOC_UNBOUND, [self._handle_id, remote_domid],
            function="xenevtchn_bind_unbound_port",
        )  # fmt: skip
        self._ports.add(frame.args[0])
        return frame.args[0]

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        frame, _ = self._conn.call(
            Op.EVT_BIND, [self._handle_id, remote_domid, remote_port],
            function="xenevtchn_bind_interdomain",
        )  # fmt: skip
        self._ports.add(frame.args[0])
        return frame.args[0]

    def notify(self, port: int) -> None:
        self._check_open("xenevtchn_notify")
        if port not in self._ports:
            raise XenError(errno.ENOTCONN, "xenevtchn_notify", f"port {port} is not bound here")
        self._conn.send_one_way(Op.EVT_NOTIFY, [self._handle_id, port], function="xenevtchn_notify")

    def wait(self, timeout: float | None) -> int | None:
        """The next delivered port (now masked), or None after ``timeout`` seconds."""
        sock = self._check_open("xenevtchn_pending")
        millis = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        if not self._poll.poll(millis):
            return None
        data = b""
        while len(data) < PORT.size:
            chunk = sock.recv(PORT.size - len(data))
            if not chunk:
                raise XenError(
                    errno.EPIPE,
                    "xenevtchn_pending",
                    "the host closed this event channel handle (ring overflow, "
                    "domain destroyed or host stopped)",
                )
            data += chunk
        port: int = PORT.unpack(data)[0]
        return port

    def unmask(self, port: int) -> None:
        self._check_open("xenevtchn_unmask")
        if port in self._ports:  # the driver ignores ports it does not own
            self._conn.send_one_way(
                Op.EVT_UNMASK, [self._handle_id, port], function="xenevtchn_unmask"
            )

    def unbind(self, port: int) -> None:
        self._check_open("xenevtchn_unbind")
        if port not in self._ports:
            raise XenError(errno.ENOTCONN, "xenevtchn_unbind", f"port {port} is not bound here")
        self._ports.discard(port)
        self._conn.call(Op.EVT_UNBIND, [self._handle_id, port], function="xenevtchn_unbind")

    def status(self, port: int, domid: int | None = None) -> PortStatus:
        """EVTCHNOP_status of a port of this domain (or, for dom0, of ``domid``)."""
        frame, _ = self._conn.call(
            Op.EVT_STATUS, [self._conn.domid if domid is None else domid, port],
            function="xc_evtchn_status",
        )  # fmt: skip
        state, remote_dom, remote_port = frame.args
        return PortStatus(_STATES.get(state, str(state)), remote_dom, remote_port)

    def fileno(self) -> int:
        return self._check_open("xenevtchn_fd").fileno()

    def _check_open(self, function: str) -> socket.socket:
        if self._sock is None:
            raise XenError(errno.EBADF, function, "this event channel handle is closed")
        return self._sock

    def close(self) -> None:
        """``xenevtchn_close``: every port bound through the handle is closed."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._ports.clear()
        try:
            if self._conn.alive:
                self._conn.call(Op.EVT_CLOSE, [self._handle_id], function="xenevtchn_close")
        finally:
            sock.close()

    def __enter__(self) -> SimEventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
