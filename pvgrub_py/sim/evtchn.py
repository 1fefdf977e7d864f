"""Event channels: ports, their binding, and the pending/mask bits that make wake-ups.

The rules are Xen's (xen/common/event_channel.c, xen/include/public/event_channel.h)
as seen through Linux's evtchn driver (drivers/xen/evtchn.c), because that is what
libxenevtchn calls:

* Ports are per domain, allocated lowest-free from 1 (port 0 is reserved), up to the
  domain's ``max_evtchn_port`` (libxl's default ``max_event_channels`` is 1023):
  ENOSPC beyond.
* ``alloc_unbound(remote)`` creates an ECS_UNBOUND port that only ``remote`` may bind;
  the remote domain need not exist yet (Xen does not check).  DOMID_SELF means us.
* ``bind_interdomain(rdom, rport)``: ESRCH if ``rdom`` does not exist; EINVAL if
  ``rport`` is not a port of ``rdom``, is not ECS_UNBOUND (already bound: so a second
  bind is EINVAL, not EBUSY), or was allocated for some other domain.  On success both
  ends are ECS_INTERDOMAIN and Xen *sets the binder's new port pending* ("we may have
  lost notifications on the remote unbound port"), so the binder always gets one
  event straight away.
* ``send`` on an interdomain port sets the peer's port pending; on an unbound port
  (never bound, or whose peer closed) the notification is silently dropped.
* ``close`` of an interdomain port frees it and puts the peer's port back to
  ECS_UNBOUND, bindable again by the closing domain.  The peer gets *no* event: it
  learns of the close from xenstore (or `status`, EVTCHNOP_status).
* The evtchn driver delivers a pending port by masking it (``disable_irq``) and
  queuing it for ``read`` (xenevtchn_pending); ``write`` of the port (xenevtchn_unmask)
  unmasks it, and a notification that arrived while masked, remembered in the pending
  bit (one bit: several notifications coalesce), is delivered right then.  New ports
  start unmasked.  Ports the driver did not bind for this file give ENOTCONN on notify
  and unbind; unmask of such a port is silently ignored.

This module keeps the *bindings*: which port is unbound or interdomain, to whom, and
through which handle.  Pending and mask state live with the processes (`evtpage`: an
eventfd per port, an epoll per handle), where notifiers set them directly as Xen sets
bits in shared_info; this module tells them about bindings through `Slots`: every
interdomain binding gets a fresh *generation*, written for both ends and cleared when
it ends, so a notifier holding a stale binding does not wake a port that moved on.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, field
from typing import Protocol

from pvgrub_py.xen.interface import DOMID_SELF, XenError

DEFAULT_MAX_PORT = 1023
DOM0_MAX_PORT = 4095
UNBOUND = 1  # EVTCHNSTAT_unbound
INTERDOMAIN = 2  # EVTCHNSTAT_interdomain
CLOSED = 0  # EVTCHNSTAT_closed


@dataclass(eq=False)
class Handle:
    """One open libxenevtchn handle (one /dev/xen/evtchn file) of one client."""

    handle_id: int
    domid: int
    conn_id: int
    ports: set[int] = field(default_factory=set)


@dataclass(eq=False)
class Port:
    domid: int
    port: int
    state: int
    remote_domid: int
    remote_port: int = 0
    #: The handle the port was bound through; None for a port the toolstack allocated
    #: in the domain (e.g. the xenstore port), which no process of the domain owns.
    handle: Handle | None = None
    #: The generation of the interdomain binding on this port (0 when unbound).
    gen: int = 0
    #: Pending bit of a port no handle owns (nobody could ever see it).
    pending: bool = False


class Slots(Protocol):
    """Where events are delivered, as the binding model updates it."""

    def opened(self, handle: Handle) -> None: ...
    def closed(self, handle: Handle) -> None: ...
    def port_opened(self, handle: Handle, port: int) -> None: ...
    def port_closed(self, handle: Handle, port: int) -> None: ...
    def set_generation(self, handle: Handle, port: int, gen: int) -> None: ...
    def deliver(self, handle: Handle, port: int) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where a notify on a local port goes: EVTCHNOP_send's view of the binding."""

    state: int
    remote_domid: int
    remote_port: int
    gen: int
    handle: Handle | None


class EventChannels:
    """Every domain's ports, and their bindings."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._gens = itertools.count(1)
        self._ports: dict[int, dict[int, Port]] = {}
        self._max_port: dict[int, int] = {0: DOM0_MAX_PORT}
        self._handles: dict[int, Handle] = {}
        self._ids = itertools.count(1)

    # -- handles -----------------------------------------------------------------------

    def open_handle(self, domid: int, conn_id: int) -> Handle:
        handle = Handle(next(self._ids), domid, conn_id)
        self._slots.opened(handle)
        self._handles[handle.handle_id] = handle
        return handle

    def handle(self, handle_id: int, domid: int, conn_id: int) -> Handle:
        handle = self._handles.get(handle_id)
        if handle is None or handle.domid != domid or handle.conn_id != conn_id:
            raise XenError(errno.EBADF, "xenevtchn", f"no event channel handle {handle_id}")
        return handle

    def close_handle(self, handle: Handle) -> None:
        """Closing the evtchn file unbinds (closes) every port bound through it."""
        for port in sorted(handle.ports):
            self._close(self._ports[handle.domid][port])
        if self._handles.pop(handle.handle_id, None) is not None:
            self._slots.closed(handle)

    def handles_of_domain(self, domid: int) -> int:
        return sum(1 for h in self._handles.values() if h.domid == domid)

    def handles_of_connection(self, conn_id: int) -> list[Handle]:
        return [h for h in self._handles.values() if h.conn_id == conn_id]

    # -- hypercalls --------------------------------------------------------------------

    def alloc_unbound(self, handle: Handle | None, domid: int, remote: int) -> int:
        fn = "xenevtchn_bind_unbound_port"
        if remote == DOMID_SELF:
            remote = domid
        port = self._new_port(domid, fn)
        self._install(Port(domid, port, UNBOUND, remote, handle=handle))
        return port

    def bind_interdomain(
        self, handle: Handle, domid: int, remote_dom: int, remote_port: int, remote_exists: bool
    ) -> int:
        fn = "xenevtchn_bind_interdomain"
        if remote_dom == DOMID_SELF:
            remote_dom = domid
        if not remote_exists:
            raise XenError(errno.ESRCH, fn, f"no domain {remote_dom}")
        rchn = self._ports.get(remote_dom, {}).get(remote_port)
        if rchn is None:
            raise XenError(errno.EINVAL, fn, f"d{remote_dom} has no port {remote_port}")
        if rchn.state != UNBOUND:
            raise XenError(
                errno.EINVAL, fn, f"port {remote_port} of d{remote_dom} is already bound"
            )
        if rchn.remote_domid != domid:
            raise XenError(
                errno.EINVAL,
                fn,
                f"port {remote_port} of d{remote_dom} accepts d{rchn.remote_domid}, not d{domid}",
            )
        port = self._new_port(domid, fn)
        gen = next(self._gens)
        lchn = Port(domid, port, INTERDOMAIN, remote_dom, remote_port, handle, gen)
        self._install(lchn)
        rchn.state, rchn.remote_port = INTERDOMAIN, port
        self._set_generation(rchn, gen)
        self._set_pending(lchn)  # Xen's conservative "lost notifications" fix-up
        return port

    def target(self, handle: Handle, port: int) -> Target:
        """EVTCHNOP_send's lookup for a notifier: where an event on ``port`` goes.
        The notifier delivers it itself (see `evtpage`); ECS_UNBOUND means drop."""
        lchn = self._owned(handle, port, "xenevtchn_notify")
        if lchn.state != INTERDOMAIN:
            return Target(lchn.state, lchn.remote_domid, 0, 0, None)
        rchn = self._ports[lchn.remote_domid][lchn.remote_port]
        return Target(INTERDOMAIN, rchn.domid, rchn.port, lchn.gen, rchn.handle)

    def notify(self, handle: Handle, port: int) -> None:
        """EVTCHNOP_send done by the model itself (tests, and notifiers that have no
        page of the peer); clients normally deliver directly."""
        lchn = self._owned(handle, port, "xenevtchn_notify")
        if lchn.state == INTERDOMAIN:
            self._set_pending(self._ports[lchn.remote_domid][lchn.remote_port])
        # ECS_UNBOUND: silently drop the notification.

    def unbind(self, handle: Handle, port: int) -> None:
        self._close(self._owned(handle, port, "xenevtchn_unbind"))

    def status(self, domid: int, port: int) -> tuple[int, int, int]:
        """EVTCHNOP_status: (state, remote domid, remote port); a free port is closed."""
        chn = self._ports.get(domid, {}).get(port)
        if chn is None:
            return CLOSED, 0, 0
        return chn.state, chn.remote_domid, chn.remote_port if chn.state == INTERDOMAIN else 0

    def peer_domain(self, domid: int, port: int) -> int:
        """``FLASK_GET_PEER_SID``'s lookup (xen/xsm/flask/flask_op.c,
        ``flask_get_peer_sid``): the domain at the other end of ``port`` of
        ``domid``, whichever handle (or none) bound it.  Only a bound
        interdomain port has a peer: a free or unbound port is EINVAL."""
        chn = self._ports.get(domid, {}).get(port)
        if chn is None:
            raise XenError(errno.EINVAL, "xc_flask_op", f"d{domid} has no port {port}")
        if chn.state != INTERDOMAIN:
            raise XenError(
                errno.EINVAL, "xc_flask_op", f"port {port} of d{domid} is not bound to a peer"
            )
        return chn.remote_domid

    # -- domains -----------------------------------------------------------------------

    def set_max_port(self, domid: int, max_port: int) -> None:
        self._max_port[domid] = max_port

    def close_domain(self, domid: int) -> None:
        """``evtchn_destroy`` on domain death: close every port, peers go unbound."""
        for handle in [h for h in self._handles.values() if h.domid == domid]:
            self.close_handle(handle)
        for chn in list(self._ports.get(domid, {}).values()):
            self._close(chn)
        self._ports.pop(domid, None)
        self._max_port.pop(domid, None)

    def ports_of(self, domid: int) -> int:
        """Ports bound through a process's handle."""
        return sum(1 for c in self._ports.get(domid, {}).values() if c.handle is not None)

    def toolstack_ports_of(self, domid: int) -> int:
        """Ports allocated in the domain by the toolstack (no handle owns them)."""
        return sum(1 for c in self._ports.get(domid, {}).values() if c.handle is None)

    # -- internals ---------------------------------------------------------------------

    def _owned(self, handle: Handle, port: int, fn: str) -> Port:
        chn = self._ports.get(handle.domid, {}).get(port)
        if chn is None or chn.handle is not handle:
            raise XenError(errno.ENOTCONN, fn, f"port {port} is not bound by this handle")
        return chn

    def _new_port(self, domid: int, fn: str) -> int:
        ports = self._ports.setdefault(domid, {})
        limit = self._max_port.get(domid, DEFAULT_MAX_PORT)
        for port in range(1, limit + 1):
            if port not in ports:
                return port
        raise XenError(errno.ENOSPC, fn, f"d{domid} has no free port (max {limit})")

    def _install(self, chn: Port) -> None:
        self._ports.setdefault(chn.domid, {})[chn.port] = chn
        if chn.handle is not None:
            chn.handle.ports.add(chn.port)
            self._slots.port_opened(chn.handle, chn.port)
            if chn.gen:
                self._slots.set_generation(chn.handle, chn.port, chn.gen)

    def _set_generation(self, chn: Port, gen: int) -> None:
        chn.gen = gen
        if chn.handle is not None:
            self._slots.set_generation(chn.handle, chn.port, gen)

    def _set_pending(self, chn: Port) -> None:
        if chn.handle is None:
            chn.pending = True
        else:
            self._slots.deliver(chn.handle, chn.port)

    def _close(self, chn: Port) -> None:
        if chn.state == INTERDOMAIN:
            peer = self._ports.get(chn.remote_domid, {}).get(chn.remote_port)
            if peer is not None:
                peer.state, peer.remote_domid, peer.remote_port = UNBOUND, chn.domid, 0
                self._set_generation(peer, 0)
        ports = self._ports.get(chn.domid, {})
        if ports.get(chn.port) is chn:
            del ports[chn.port]
        if chn.handle is not None:
            chn.handle.ports.discard(chn.port)
            self._slots.port_closed(chn.handle, chn.port)  # evtchn_free clears pending
        chn.state, chn.gen = CLOSED, 0
