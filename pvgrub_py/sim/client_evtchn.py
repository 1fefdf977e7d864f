"""An event-channel handle of a simulated domain (libxenevtchn over /dev/xen/evtchn).

Binding and unbinding are requests to the host daemon, which enforces Xen's rules.
Events themselves never go through the daemon (see `evtpage`):

* `notify` checks that its port is still bound (its binding generation), then writes
  the peer port's eventfd, which it asked the daemon for once per binding
  (`Op.EVT_TARGET`), as Xen sets the bit in the peer's shared_info;
* `wait` takes the next pending port from this handle's epoll, and `fileno` is that
  epoll: readable exactly when `wait` would return at once, as the evtchn device is;
* ``xenevtchn_pending`` semantics: the returned port is masked (EPOLLONESHOT);
  notifications while masked coalesce into its pending count, and `unmask` re-arms
  it, delivering at once if it became pending.  A port unbound after its event was
  taken may still be unmasked harmlessly.

Errors as the Linux driver gives them: ENOTCONN to notify or unbind a port this
handle did not bind; unmask of such a port is silently ignored.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from typing import NamedTuple

from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.evtchn import CLOSED, INTERDOMAIN, UNBOUND
from pvgrub_py.sim.evtpage import GenerationPage, Receiver, notify
from pvgrub_py.sim.protocol import Op
from pvgrub_py.xen.interface import XenError

_STATES = {CLOSED: "closed", UNBOUND: "unbound", INTERDOMAIN: "interdomain"}


class PortStatus(NamedTuple):
    """EVTCHNOP_status: ``state`` is "closed", "unbound" or "interdomain"; for an
    unbound port ``remote_domid`` is who may bind it, for a bound one the peer."""

    state: str
    remote_domid: int
    remote_port: int


@dataclass
class _Route:
    """Where a notify on one local port goes: the peer port's eventfd, valid for one
    binding generation."""

    gen: int
    eventfd: int


class SimEventChannels:
    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        frame, fds = conn.call(Op.EVT_OPEN, function="xenevtchn_open")
        page_fd, alive_fd = fds
        try:
            self._page = GenerationPage(page_fd, writable=False)
        finally:
            os.close(page_fd)
        self._handle_id = frame.args[0]
        self._receiver: Receiver | None = Receiver(socket.socket(fileno=alive_fd))
        self._ports: set[int] = set()
        self._routes: dict[int, _Route] = {}

    @property
    def ports(self) -> frozenset[int]:
        """The local ports bound through this handle."""
        return frozenset(self._ports)

    def alloc_unbound(self, remote_domid: int) -> int:
        return self._new_port(
            Op.EVT_ALLOC_UNBOUND, [self._handle_id, remote_domid], "xenevtchn_bind_unbound_port"
        )

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        return self._new_port(
            Op.EVT_BIND, [self._handle_id, remote_domid, remote_port], "xenevtchn_bind_interdomain"
        )

    def _new_port(self, op: Op, args: list[int], function: str) -> int:
        receiver = self._check_open(function)
        frame, fds = self._conn.call(op, args, function=function)
        port: int = frame.args[0]
        self._ports.add(port)
        if fds:
            receiver.add(port, fds[0])
        return port

    # -- the hot path ----------------------------------------------------------------------

    def notify(self, port: int) -> None:
        self._check_open("xenevtchn_notify")
        if port not in self._ports:
            raise XenError(errno.ENOTCONN, "xenevtchn_notify", f"port {port} is not bound here")
        gen = self._page.get(port)
        if gen == 0:
            return  # unbound (never bound, or the peer closed): Xen drops it
        route = self._routes.get(port)
        if route is None or route.gen != gen:
            route = self._route(port)
            if route is None:
                return
        notify(route.eventfd)

    def wait(self, timeout: float | None) -> int | None:
        """The next delivered port (now masked), or None after ``timeout`` seconds."""
        return self._check_open("xenevtchn_pending").wait(timeout)

    def unmask(self, port: int) -> None:
        receiver = self._check_open("xenevtchn_unmask")
        if port in self._ports:  # the driver ignores ports it does not own
            receiver.unmask(port)

    # -- routes to peers -------------------------------------------------------------------

    def _route(self, port: int) -> _Route | None:
        self._forget(port)
        frame, fds = self._conn.call(
            Op.EVT_TARGET, [self._handle_id, port], function="xenevtchn_notify"
        )
        state, _remote_dom, _remote_port, gen, _peer = frame.args
        if state != INTERDOMAIN or not fds:
            for fd in fds:
                os.close(fd)
            return None  # unbound, or a port no process owns (nobody to wake)
        route = self._routes[port] = _Route(gen, fds[0])
        return route

    def _forget(self, port: int) -> None:
        route = self._routes.pop(port, None)
        if route is not None:
            os.close(route.eventfd)

    # -- the rest --------------------------------------------------------------------------

    def unbind(self, port: int) -> None:
        receiver = self._check_open("xenevtchn_unbind")
        if port not in self._ports:
            raise XenError(errno.ENOTCONN, "xenevtchn_unbind", f"port {port} is not bound here")
        self._ports.discard(port)
        self._forget(port)
        receiver.remove(port)
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

    def _check_open(self, function: str) -> Receiver:
        if self._receiver is None:
            raise XenError(errno.EBADF, function, "this event channel handle is closed")
        return self._receiver

    def close(self) -> None:
        """``xenevtchn_close``: every port bound through the handle is closed."""
        self._let_go(tell_the_daemon=True)

    def abandon(self) -> None:
        """`interface.EventChannels.abandon`, as on Linux: the ports stay bound
        and the handle stays open in the simulator (no EVT_UNBIND, no
        EVT_CLOSE) until this process detaches, when the daemon releases them
        as the kernel does at exit; only our local ends go now."""
        self._let_go(tell_the_daemon=False)

    def _let_go(self, *, tell_the_daemon: bool) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is None:
            return
        self._ports.clear()
        for port in list(self._routes):
            self._forget(port)
        try:
            if tell_the_daemon and self._conn.alive:
                self._conn.call(Op.EVT_CLOSE, [self._handle_id], function="xenevtchn_close")
        finally:
            receiver.close()
            self._page.close()

    def __enter__(self) -> SimEventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
