"""`SimHypervisor`: the `Hypervisor` interface for one process attached to a simulated
host as one domain.

::

    hv = SimHypervisor.attach("/tmp/host", domid=3)   # token read from /tmp/host/tokens/3
    with hv.event_channels() as evtchn, hv.grant_share() as gntshr:
        ...

How a process proves its domid: the daemon writes a random token per domain to
``DIR/tokens/<domid>`` (mode 0600) when dom0 creates the domain (dom0's at start-up)
and deletes it when the domain is destroyed; ATTACH must present it.  Every request
on the connection then acts as that domid, whatever the process asks for, so "a
domain maps only grants given to it" is a property of the connection, not of the
caller's good manners.  Limitation: processes of one uid can read each other's token
files, so this guards against mistakes (a frontend attached as the wrong domain, a
stale process of a destroyed domain), not against a hostile local user.  A toolstack
that spawns a guest process can pass it just its token (``attach(..., token=...)``).
"""

from __future__ import annotations

import errno
import os
import socket
import weakref
from typing import TypeVar

from pvgrub_py.sim.client_domains import SimDomainControl, xsm_call
from pvgrub_py.sim.client_evtchn import SimEventChannels
from pvgrub_py.sim.client_grants import SimGrantMap, SimGrantShare
from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.layout import HostLayout
from pvgrub_py.sim.protocol import Op
from pvgrub_py.sim.stats import HostStats
from pvgrub_py.sim.xsclient import SimXenStore
from pvgrub_py.xen.interface import Hypervisor, XenError

_Closable = SimGrantShare | SimGrantMap | SimEventChannels | SimXenStore
T = TypeVar("T", SimGrantShare, SimGrantMap, SimEventChannels, SimXenStore)


class SimHypervisor:
    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        self._children: weakref.WeakSet[_Closable] = weakref.WeakSet()

    @classmethod
    def attach(
        cls, host_dir: str | os.PathLike[str], domid: int, token: str | None = None
    ) -> SimHypervisor:
        """Attach to the host in ``host_dir`` as ``domid``; ESRCH if it does not
        exist, EPERM if ``token`` (default: the token file) is wrong."""
        return cls(HostConnection(HostLayout.of(host_dir), domid, token))

    @property
    def domid(self) -> int:
        return self._conn.domid

    @property
    def host_dir(self) -> str:
        return str(self._conn.layout.root)

    def domains(self) -> SimDomainControl:
        return SimDomainControl(self._conn)

    def grant_share(self) -> SimGrantShare:
        return self._track(SimGrantShare(self._conn))

    def grant_map(self) -> SimGrantMap:
        return self._track(SimGrantMap(self._conn))

    def event_channels(self) -> SimEventChannels:
        return self._track(SimEventChannels(self._conn))

    def xenstore(self) -> SimXenStore:
        """A new xenstored connection as this domain (``xs_open``).  ENOENT until dom0
        introduces the domain; ENOTCONN if the host runs no xenstored."""
        _frame, fds = self._conn.call(Op.XS_CONNECT, function="xs_open")
        sock = socket.socket(fileno=fds[0])
        return self._track(SimXenStore(sock, self.domid))

    def evtchn_peer_label(self, port: int) -> str:
        """The FLASK context of the domain at the other end of our ``port`` (see
        `interface.Hypervisor`); `XsmNotEnabledError` when the host runs without
        FLASK, EINVAL unless ``port`` is a bound interdomain port of this domain."""
        frame = xsm_call(self._conn, Op.XSM_PEER_LABEL, [port], b"", function="xc_flask_op")
        return frame.data.decode("utf-8", "surrogateescape")

    def stats(self) -> HostStats:
        """Live grants, mappings, ports and connections, per domain and in total."""
        frame, _ = self._conn.call(Op.STATS, function="sim_stats")
        return HostStats.from_json(frame.data)

    def _track(self, child: T) -> T:
        self._children.add(child)
        return child

    def close(self) -> None:
        """Close every handle opened through this hypervisor, then detach (the daemon
        releases anything still held, as it does when a process dies)."""
        for child in list(self._children):
            try:
                child.close()
            except XenError as e:
                if e.errno not in (errno.EIO, errno.ESRCH, errno.EPIPE, errno.ESHUTDOWN):
                    raise
        self._children.clear()
        self._conn.close()

    def __enter__(self) -> SimHypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _conforms(hv: SimHypervisor) -> Hypervisor:
    """Never called: makes mypy check SimHypervisor (and, through the return types
    of its methods, every handle class) against the interface's Protocols."""
    return hv
