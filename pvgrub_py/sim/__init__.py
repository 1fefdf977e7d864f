"""A simulated Xen host shared by several processes, the way domains share a real one.

Processes and sockets::

    SimHost.start(DIR) --spawns--> host daemon (`daemon`) --spawns--> xenstored
                                   DIR/hyp.sock                DIR/xenstored/socket[.d/N]
    process A: SimHypervisor.attach(DIR, domid=3) --+  SOCK_SEQPACKET, one per process
    process B: SimHypervisor.attach(DIR, domid=0) --+--> host daemon

The daemon is the hypervisor: it owns the domains, grant tables and event-channel
bindings (`machine`, over `domains`, `grants`, `evtchn`) and enforces Xen's rules on
them.  A process proves its domid with a per-domain token (`client`).  Granted pages
are memfds both processes map (`pages`).  Events go straight from the notifier to
the receiver, never through the daemon: an eventfd per port, an EPOLLONESHOT epoll
per handle for Xen's mask/pending semantics (`evtpage`, `client_evtchn`).  Each
attached process gets xenstore connections as its own domain, made by the daemon
(`xenstored`, `xsclient`).  `toolstack` creates and introduces domains as libxl does;
`testing` has helpers and process bodies for tests and benchmarks.

The same frontend and backend code runs here and over the real Xen libraries,
because both implement `pvgrub_py.xen.interface`::

    with SimHost.start("/tmp/h") as host:                  # or `pvgrubctl sim host`
        domid = host.create_domain(DomainConfig(name="guest"))
        # in the guest's process:  hv = SimHypervisor.attach("/tmp/h", domid)
        # in the backend's process: hv = SimHypervisor.attach("/tmp/h", 0)
        ...
        assert host.stats().total.resources == 0          # nothing leaked
"""

from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.client_evtchn import PortStatus
from pvgrub_py.sim.grants import GrantMapError
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.stats import Counts, HostStats

__all__ = ["Counts", "GrantMapError", "HostStats", "PortStatus", "SimHost", "SimHypervisor"]
