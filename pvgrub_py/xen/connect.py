"""Open the hypervisor interface: the simulator or the real host.

``--sim DIR`` (or ``$PVGRUB_SIM``) attaches to a simulated host; otherwise
the real Xen libraries are used, which need a dom0 with privcmd.
"""

from __future__ import annotations

import os

from pvgrub_py.errors import PvgrubError
from pvgrub_py.xen.interface import Hypervisor

SIM_ENV = "PVGRUB_SIM"


def open_hypervisor(sim_dir: str | None = None, domid: int = 0) -> Hypervisor:
    sim_dir = sim_dir or os.environ.get(SIM_ENV) or None
    if sim_dir:
        from pvgrub_py.sim.client import SimHypervisor

        return SimHypervisor.attach(sim_dir, domid)
    from pvgrub_py.xen.availability import availability

    status = availability()
    if not status.built:
        raise PvgrubError(
            f"no Xen bindings ({status.reason}); use --sim DIR to run on the simulator"
        )
    from pvgrub_py.xen.libxc_host import LibxcHypervisor

    return LibxcHypervisor(domid)
