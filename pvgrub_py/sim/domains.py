"""The simulated hypervisor's domain list: what ``XEN_DOMCTL_*`` create, pause and report.

Rules kept from Xen (xen/common/domain.c, domctl.c):

* ``createdomain`` picks the next free domid after the last one handed out (the
  "rover"), wrapping below DOMID_FIRST_RESERVED, so a freshly destroyed domid is not
  reused straight away;
* a new domain starts *paused by the controller* (``controller_pause_count = 1``);
  libxl unpauses it once built.  Pausing nests up to 255 (EOVERFLOW beyond), unpausing
  an unpaused domain is EINVAL, and a domain cannot pause itself (EINVAL);
* ``destroydomain`` marks the domain dying.  It stays in the list, flagged ``dying``,
  while other domains still map its pages (a "zombie" in ``xl list``) and disappears
  when the last foreign mapping goes; see `machine` for the orchestration;
* unknown domids are ESRCH.

Memory is accounted in pages: ``max_memkb`` is the limit the toolstack sets,
``tot_pages`` what the domain holds.  Nothing populates guest memory yet, so
``tot_pages`` is 0 for a new domU.  The domain builder (a later issue) will add a
per-domain memory file here, ``<host dir>/mem/<domid>``, of ``max_memkb / 4`` pages,
created by ``populate_physmap`` (growing ``tot_pages``, ENOMEM past ``max_memkb``) and
mapped on demand by a privileged foreign-map op, the way ``xc_dom_*`` maps guest
frames through privcmd.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from pvgrub_py.xen.interface import DomainConfig, DomainInfo, XenError

DOMID_FIRST_RESERVED = 0x7FF0
#: The simulator's vcpu cap (Xen's depends on the guest type; 128 is HVM_MAX_VCPUS).
MAX_VCPUS = 128
MAX_PAUSE_COUNT = 255
PAGE_KB = 4
#: What dom0 reports: a modest fixed size, so info(0) is stable across machines.
DOM0_MEMKB = 1024 * 1024


@dataclass(eq=False)
class Domain:
    domid: int
    max_vcpus: int
    max_memkb: int
    handle: bytes
    name: str
    pvh: bool
    token: str
    pause_count: int
    dying: bool = False
    shutdown: bool = False
    tot_pages: int = 0
    #: The FLASK security context; "" on a host without FLASK (see `xsm`).
    xsm_label: str = ""

    def info(self) -> DomainInfo:
        return DomainInfo(
            domid=self.domid,
            paused=self.pause_count > 0,
            dying=self.dying,
            shutdown=self.shutdown,
            max_memkb=self.max_memkb,
            tot_pages=self.tot_pages,
            max_vcpus=self.max_vcpus,
            handle=self.handle,
        )


def validate_config(config: DomainConfig) -> None:
    """EINVAL for what ``XEN_DOMCTL_createdomain`` refuses."""
    if not 1 <= config.max_vcpus <= MAX_VCPUS:
        raise XenError(
            errno.EINVAL, "xc_domain_create", f"max_vcpus {config.max_vcpus} not in 1..{MAX_VCPUS}"
        )
    if config.max_memkb < 0:
        raise XenError(errno.EINVAL, "xc_domain_create", f"max_memkb {config.max_memkb} < 0")
    if len(config.handle) != 16:
        raise XenError(
            errno.EINVAL, "xc_domain_create", f"handle is {len(config.handle)} bytes, not 16"
        )


class DomainTable:
    """Every domain the simulated hypervisor knows, dom0 included (always present)."""

    def __init__(self, new_token: Callable[[], str], dom0_vcpus: int = 1) -> None:
        self._new_token = new_token
        self._domains: dict[int, Domain] = {}
        self._rover = 0
        self._domains[0] = Domain(
            domid=0,
            max_vcpus=max(1, min(dom0_vcpus, MAX_VCPUS)),
            max_memkb=DOM0_MEMKB,
            handle=bytes(16),
            name="Domain-0",
            pvh=False,
            token=new_token(),
            pause_count=0,
            tot_pages=DOM0_MEMKB // PAGE_KB,
        )

    # -- lookup ---------------------------------------------------------------------

    def find(self, domid: int) -> Domain | None:
        return self._domains.get(domid)

    def get(self, domid: int, function: str) -> Domain:
        domain = self._domains.get(domid)
        if domain is None:
            raise XenError(errno.ESRCH, function, f"no domain {domid}")
        return domain

    def live(self, domid: int) -> Domain | None:
        """The domain if it exists and is not dying."""
        domain = self._domains.get(domid)
        return None if domain is None or domain.dying else domain

    def all(self) -> list[Domain]:
        return [self._domains[d] for d in sorted(self._domains)]

    # -- life cycle -----------------------------------------------------------------

    def create(self, config: DomainConfig) -> Domain:
        validate_config(config)
        domid = self._next_domid()
        domain = Domain(
            domid=domid,
            max_vcpus=config.max_vcpus,
            max_memkb=config.max_memkb,
            handle=bytes(config.handle),
            name=config.name,
            pvh=config.pvh,
            token=self._new_token(),
            pause_count=1,
        )
        self._domains[domid] = domain
        return domain

    def _next_domid(self) -> int:
        for _ in range(DOMID_FIRST_RESERVED):
            self._rover = self._rover + 1 if self._rover + 1 < DOMID_FIRST_RESERVED else 1
            if self._rover not in self._domains:
                return self._rover
        raise XenError(errno.ENOMEM, "xc_domain_create", "every domid is in use")

    def mark_dying(self, domid: int) -> Domain:
        """``domain_kill``: EINVAL for dom0 (the simulator has no way to survive
        that); idempotent on a domain already dying, as a repeated destroydomain is."""
        domain = self.get(domid, "xc_domain_destroy")
        if domid == 0:
            raise XenError(errno.EINVAL, "xc_domain_destroy", "dom0 cannot be destroyed")
        domain.dying = True
        domain.token = ""
        return domain

    def remove(self, domid: int) -> None:
        self._domains.pop(domid, None)

    # -- control --------------------------------------------------------------------

    def pause(self, domid: int, caller: int) -> None:
        domain = self._alive(domid, "xc_domain_pause")
        if domid == caller:
            raise XenError(errno.EINVAL, "xc_domain_pause", "a domain cannot pause itself")
        if domain.pause_count >= MAX_PAUSE_COUNT:
            raise XenError(
                errno.EOVERFLOW, "xc_domain_pause", f"d{domid} paused {MAX_PAUSE_COUNT} times"
            )
        domain.pause_count += 1

    def unpause(self, domid: int) -> None:
        domain = self._alive(domid, "xc_domain_unpause")
        if domain.pause_count == 0:
            raise XenError(errno.EINVAL, "xc_domain_unpause", f"d{domid} is not paused")
        domain.pause_count -= 1

    def set_max_memory(self, domid: int, max_memkb: int) -> None:
        domain = self._alive(domid, "xc_domain_setmaxmem")
        if max_memkb < 0:
            raise XenError(errno.EINVAL, "xc_domain_setmaxmem", f"max_memkb {max_memkb} < 0")
        domain.max_memkb = max_memkb

    def set_max_vcpus(self, domid: int, max_vcpus: int) -> None:
        domain = self._alive(domid, "xc_domain_max_vcpus")
        if not 1 <= max_vcpus <= MAX_VCPUS:
            raise XenError(
                errno.EINVAL, "xc_domain_max_vcpus", f"max_vcpus {max_vcpus} not in 1..{MAX_VCPUS}"
            )
        domain.max_vcpus = max_vcpus

    def _alive(self, domid: int, function: str) -> Domain:
        domain = self.get(domid, function)
        if domain.dying:
            raise XenError(errno.EINVAL, function, f"d{domid} is dying")
        return domain
