"""A minimal toolstack for the simulator: what libxl does around ``xc_domain_create``
so that a new domain can use xenstore, and what it undoes on destroy.

Only the Hypervisor interface is used (as dom0), so this is also a readable summary
of the xenstore side of domain creation (tools/libs/light/libxl_create.c,
``libxl__domain_make`` and ``libxl__build_post``):

1. create the domain (it starts paused), with its security label if it has one
   (``seclabel=``; only on a host with FLASK);
2. ``/local/domain/<N>`` owned by dom0 and readable by N (``n0 rN``), with ``name``,
   ``domid`` and the directories the guest writes to (``device``, ``control``,
   ``data``, owned by N);
3. allocate the xenstore event channel *in* the guest, for dom0 (the xenstored
   domain) to bind: ``xc_evtchn_alloc_unbound(N, 0)``;
4. INTRODUCE the domain to xenstored with the store page and that port.  In the
   simulator there is no guest memory yet, so the store "gfn" is a placeholder
   (`STORE_GFN`); our xenstored records it and, instead of mapping a ring, opens the
   per-domain socket through which the domain's processes reach it.

Destroying runs ``xc_domain_destroy`` (xenstored is told, @releaseDomain fires) and
removes the domain's xenstore home, as ``libxl__destroy_domid`` does.
"""

from __future__ import annotations

from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.xen.interface import DomainConfig

#: The xenstore page's gfn for INTRODUCE: a placeholder (no guest memory yet).
STORE_GFN = 0xFEFFF
GUEST_WRITABLE_DIRS = ("device", "control", "data")


def create_domain(
    dom0: SimHypervisor,
    config: DomainConfig | None = None,
    *,
    introduce: bool = True,
    xsm_label: str | None = None,
) -> int:
    """Create a domain; with ``introduce``, also give it a xenstore home and connect
    it to xenstored, so ``SimHypervisor.attach(dir, N).xenstore()`` works.
    ``xsm_label``: its FLASK context (`XsmNotEnabledError` on a host without FLASK)."""
    config = DomainConfig() if config is None else config
    control = dom0.domains()
    domid = control.create(config)
    try:
        if xsm_label is not None:
            control.set_xsm_label(domid, xsm_label)
    except BaseException:
        control.destroy(domid)
        raise
    if not introduce:
        return domid
    try:
        port = control.alloc_unbound_in(domid, 0)
        with dom0.xenstore() as xs:
            home = f"/local/domain/{domid}"
            xs.mkdir(home)
            xs.set_perms(home, ["n0", f"r{domid}"])
            xs.write(f"{home}/domid", str(domid).encode())
            if config.name:
                xs.write(f"{home}/name", config.name.encode())
            for name in GUEST_WRITABLE_DIRS:
                xs.mkdir(f"{home}/{name}")
                xs.set_perms(f"{home}/{name}", [f"n{domid}"])
            xs.introduce_domain(domid, STORE_GFN, port)
    except BaseException:
        control.destroy(domid)
        raise
    return domid


def destroy_domain(dom0: SimHypervisor, domid: int) -> None:
    """Destroy the domain and remove its xenstore home."""
    dom0.domains().destroy(domid)
    with dom0.xenstore() as xs:
        xs.rm(f"/local/domain/{domid}")
