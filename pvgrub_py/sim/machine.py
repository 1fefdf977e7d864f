"""The simulated hypervisor's state and its rules, with no sockets: the daemon feeds it
requests from authenticated connections and carries out the effects it asks for.

What lives here and not in `domains`, `grants`, `evtchn`:

* who is asking: every call names the connection, and the connection's domid was
  proven at attach time (`attach`), never taken from the request, so a process
  attached as d3 can act only as d3;
* privilege: the domctl operations and allocating a port in another domain are
  dom0's (EPERM otherwise), as XSM's default policy (``XSM_PRIV``/``XSM_TARGET``) has it;
* security labels (`xsm`): with FLASK off every ``xsm_op`` is ENOSYS
  (`XsmNotEnabledError`); with it on, each domain has a label and the peer of a
  bound interdomain port can be asked for its label;
* tear-down that spans the three tables: a client going away (closing, crashing,
  being killed) releases what it held, as closing the gntalloc, gntdev and evtchn
  files does on Linux; destroying a domain (``domain_kill``) drops every client of
  the domain, closes its ports, revokes its grants, and keeps it as a zombie while
  other domains still map its pages.
"""

from __future__ import annotations

import errno
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pvgrub_py.sim.domains import Domain, DomainTable
from pvgrub_py.sim.evtchn import DEFAULT_MAX_PORT, EventChannels, Handle, Slots, Target
from pvgrub_py.sim.grants import GrantTables, Mapping, Share
from pvgrub_py.sim.stats import Counts, HostStats
from pvgrub_py.sim.xsm import Flask, check_label
from pvgrub_py.xen.interface import (
    XSM_NOT_ENABLED,
    DomainConfig,
    DomainInfo,
    XenError,
    XsmNotEnabledError,
)


class Effects(Protocol):
    """What the machine needs done outside itself (the daemon implements it)."""

    def domain_created(self, domain: Domain) -> None: ...
    def domain_destroyed(self, domid: int, connections: list[int]) -> None: ...


@dataclass(frozen=True)
class Caller:
    conn_id: int
    domid: int


class Machine:
    def __init__(
        self,
        effects: Effects,
        slots: Slots,
        new_token: Callable[[], str],
        dom0_vcpus: int = 1,
        flask: Flask | None = None,
    ) -> None:
        self._effects = effects
        self.domains = DomainTable(new_token, dom0_vcpus)
        self.grants = GrantTables()
        self.evtchn = EventChannels(slots)
        self.flask = flask
        self._connections: dict[int, int] = {}
        if flask is not None:
            dom0 = self.domains.get(0, "flask")
            dom0.xsm_label = check_label(flask.initial_label(0), "flask")

    # -- sessions ----------------------------------------------------------------------

    def attach(self, conn_id: int, domid: int, token: str) -> Caller:
        """Prove a connection's domid: the token dom0's create handed out for it."""
        domain = self.domains.live(domid)
        if domain is None:
            raise XenError(errno.ESRCH, "attach", f"no live domain {domid}")
        if not token or not hmac.compare_digest(token.encode(), domain.token.encode()):
            raise XenError(errno.EPERM, "attach", f"wrong token for d{domid}")
        self._connections[conn_id] = domid
        return Caller(conn_id, domid)

    def detach(self, conn_id: int) -> None:
        """The client went away: release everything it held.  Idempotent."""
        if self._connections.pop(conn_id, None) is None:
            return
        for handle in self.evtchn.handles_of_connection(conn_id):
            self.evtchn.close_handle(handle)
        self._reap(self.grants.drop_connection(conn_id))

    def is_attached(self, conn_id: int) -> bool:
        return conn_id in self._connections

    def connections_of(self, domid: int) -> int:
        """Connections attached as ``domid``."""
        return sum(1 for d in self._connections.values() if d == domid)

    # -- domctl (dom0 only) --------------------------------------------------------------

    def _privileged(self, caller: Caller, function: str) -> None:
        if caller.domid != 0:
            raise XenError(errno.EPERM, function, f"d{caller.domid} is not privileged")

    def create(self, caller: Caller, config: DomainConfig) -> int:
        self._privileged(caller, "xc_domain_create")
        domain = self.domains.create(config)
        if self.flask is not None:
            domain.xsm_label = self.flask.initial_label(domain.domid)
        self.evtchn.set_max_port(domain.domid, DEFAULT_MAX_PORT)
        self._effects.domain_created(domain)
        return domain.domid

    def destroy(self, caller: Caller, domid: int) -> None:
        self._privileged(caller, "xc_domain_destroy")
        was_dying = self.domains.get(domid, "xc_domain_destroy").dying
        self.domains.mark_dying(domid)
        if was_dying:
            return
        gone = [c for c, d in self._connections.items() if d == domid]
        touched: set[int] = {domid}
        for conn_id in gone:
            self._connections.pop(conn_id)
            for handle in self.evtchn.handles_of_connection(conn_id):
                self.evtchn.close_handle(handle)
            touched |= self.grants.drop_connection(conn_id)
        self.evtchn.close_domain(domid)
        self.grants.revoke_domain(domid)
        self._effects.domain_destroyed(domid, gone)
        self._reap(touched)

    def _reap(self, domids: set[int]) -> None:
        """Remove dying domains nobody maps any more (the end of a zombie)."""
        for domid in domids:
            domain = self.domains.find(domid)
            if domain is not None and domain.dying and not self.grants.foreign_mappings_of(domid):
                self.domains.remove(domid)

    def pause(self, caller: Caller, domid: int) -> None:
        self._privileged(caller, "xc_domain_pause")
        self.domains.pause(domid, caller.domid)

    def unpause(self, caller: Caller, domid: int) -> None:
        self._privileged(caller, "xc_domain_unpause")
        self.domains.unpause(domid)

    def info(self, caller: Caller, domid: int) -> DomainInfo:
        self._privileged(caller, "xc_domain_getinfo")
        return self.domains.get(domid, "xc_domain_getinfo").info()

    def list_domains(self, caller: Caller) -> list[DomainInfo]:
        self._privileged(caller, "xc_domain_getinfolist")
        return [d.info() for d in self.domains.all()]

    def set_max_memory(self, caller: Caller, domid: int, max_memkb: int) -> None:
        self._privileged(caller, "xc_domain_setmaxmem")
        self.domains.set_max_memory(domid, max_memkb)

    def set_max_vcpus(self, caller: Caller, domid: int, max_vcpus: int) -> None:
        self._privileged(caller, "xc_domain_max_vcpus")
        self.domains.set_max_vcpus(domid, max_vcpus)

    def alloc_unbound_in(self, caller: Caller, domid: int, remote: int) -> int:
        """EVTCHNOP_alloc_unbound with ``dom`` != DOMID_SELF: the toolstack making the
        xenstore (or console) port of a new domain.  No process owns the port."""
        self._privileged(caller, "xc_evtchn_alloc_unbound")
        if self.domains.live(domid) is None:
            raise XenError(errno.ESRCH, "xc_evtchn_alloc_unbound", f"no live domain {domid}")
        return self.evtchn.alloc_unbound(None, domid, remote)

    # -- grants --------------------------------------------------------------------------

    def share(self, caller: Caller, grantee: int, count: int, writable: bool) -> Share:
        return self.grants.share(caller.domid, caller.conn_id, grantee, count, writable)

    def end_share(self, caller: Caller, share_id: int) -> None:
        self.grants.end_share(caller.domid, share_id)

    def map(self, caller: Caller, granter: int, ref: int, writable: bool) -> Mapping:
        live = self.domains.live(granter) is not None
        return self.grants.map(caller.domid, caller.conn_id, granter, ref, writable, live)

    def unmap(self, caller: Caller, map_id: int) -> None:
        grant = self.grants.unmap(caller.domid, map_id)
        self._reap({grant.owner})

    # -- event channels ------------------------------------------------------------------

    def evtchn_open(self, caller: Caller) -> Handle:
        return self.evtchn.open_handle(caller.domid, caller.conn_id)

    def evtchn_handle(self, caller: Caller, handle_id: int) -> Handle:
        return self.evtchn.handle(handle_id, caller.domid, caller.conn_id)

    def evtchn_close(self, caller: Caller, handle_id: int) -> None:
        self.evtchn.close_handle(self.evtchn_handle(caller, handle_id))

    def alloc_unbound(self, caller: Caller, handle_id: int, remote: int) -> int:
        handle = self.evtchn_handle(caller, handle_id)
        return self.evtchn.alloc_unbound(handle, caller.domid, remote)

    def bind_interdomain(
        self, caller: Caller, handle_id: int, remote_dom: int, remote_port: int
    ) -> int:
        handle = self.evtchn_handle(caller, handle_id)
        exists = self.domains.find(remote_dom) is not None
        return self.evtchn.bind_interdomain(handle, caller.domid, remote_dom, remote_port, exists)

    def unbind(self, caller: Caller, handle_id: int, port: int) -> None:
        self.evtchn.unbind(self.evtchn_handle(caller, handle_id), port)

    def evtchn_target(self, caller: Caller, handle_id: int, port: int) -> Target:
        """Where a notify on ``port`` goes, for the notifier to deliver it itself."""
        return self.evtchn.target(self.evtchn_handle(caller, handle_id), port)

    def notify(self, caller: Caller, handle_id: int, port: int) -> None:
        """EVTCHNOP_send through the model (clients deliver directly, see `evtpage`)."""
        self.evtchn.notify(self.evtchn_handle(caller, handle_id), port)

    def evtchn_status(self, caller: Caller, domid: int, port: int) -> tuple[int, int, int]:
        """EVTCHNOP_status: a domain may ask about itself; dom0 about anyone."""
        if domid != caller.domid:
            self._privileged(caller, "xc_evtchn_status")
        if self.domains.find(domid) is None:
            raise XenError(errno.ESRCH, "xc_evtchn_status", f"no domain {domid}")
        return self.evtchn.status(domid, port)

    # -- XSM (FLASK) ------------------------------------------------------------------------

    def _flask(self, function: str, what: str) -> Flask:
        if self.flask is None:
            raise XsmNotEnabledError(function, f"{XSM_NOT_ENABLED} ({what})")
        return self.flask

    def evtchn_peer_label(self, caller: Caller, port: int) -> str:
        """``FLASK_GET_PEER_SID`` on the caller's ``port``, then ``FLASK_SID_TO_CONTEXT``:
        the label of the domain at the other end.  Any domain may ask about its
        own ports, as in Xen; EINVAL unless the port is bound interdomain."""
        self._flask("xc_flask_op", f"FLASK_GET_PEER_SID on port {port}")
        peer = self.domains.get(self.evtchn.peer_domain(caller.domid, port), "xc_flask_op")
        return peer.xsm_label

    def set_xsm_label(self, caller: Caller, domid: int, label: str) -> None:
        """Label a domain, as libxl's ``seclabel=`` does at create (the context's SID
        in ``XEN_DOMCTL_createdomain``) or ``FLASK_RELABEL_DOMAIN`` later: dom0's."""
        self._flask("xc_flask_relabel_domain", f"labelling d{domid}")
        self._privileged(caller, "xc_flask_relabel_domain")
        domain = self.domains.get(domid, "xc_flask_relabel_domain")
        domain.xsm_label = check_label(label, "xc_flask_relabel_domain")

    # -- accounting ------------------------------------------------------------------------

    def stats(self) -> HostStats:
        domids = {d.domid for d in self.domains.all()} | set(self._connections.values())
        domains = {
            domid: Counts(
                grants=self.grants.grants_of(domid),
                mappings=self.grants.mappings_of(domid),
                ports=self.evtchn.ports_of(domid),
                toolstack_ports=self.evtchn.toolstack_ports_of(domid),
                connections=sum(1 for d in self._connections.values() if d == domid),
            )
            for domid in sorted(domids)
        }
        zombies = tuple(d.domid for d in self.domains.all() if d.dying)
        handles = sum(len(self.evtchn.handles_of_connection(c)) for c in self._connections)
        return HostStats(domains, zombies, self.grants.open_regions(), handles)

    def close(self) -> None:
        self.grants.close_all()
