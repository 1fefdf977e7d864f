"""A simulated Xen host shared by several processes, the way domains share a real one.

Processes and sockets::

    SimHost.start(DIR) ──spawns──> host daemon (`daemon`)  ──spawns──> xenstored
                                     DIR/hyp.sock                 DIR/xenstored/socket[.d/N]
    process A: SimHypervisor.attach(DIR, domid=3) ─┐  (SOCK_SEQPACKET, one per process)
    process B: SimHypervisor.attach(DIR, domid=0) ─┴─> host daemon

The daemon is the hypervisor: it owns the domains, grant tables and event channels
(`machine`, over `domains`, `grants`, `evtchn`) and enforces Xen's rules on them.  A
process proves its domid with a per-domain token (`client`).  Granted pages are
memfds both processes map (`pages`); event channels deliver real cross-process
wake-ups through a per-handle notification socket (`client_evtchn`).  Each attached
process gets xenstore connections as its own domain, passed by the daemon
(`xenstored`, `xsclient`).  `toolstack` creates and introduces domains as libxl does.

The same frontend and backend code runs here and over the real Xen libraries,
because both implement `pvgrub_py.xen.interface`.
"""

from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.client_evtchn import PortStatus
from pvgrub_py.sim.grants import GrantMapError
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.stats import Counts, HostStats

__all__ = ["Counts", "GrantMapError", "HostStats", "PortStatus", "SimHost", "SimHypervisor"]
