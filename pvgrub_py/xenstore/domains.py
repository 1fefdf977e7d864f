"""The domains xenstored knows: introduced or not, targets, features, quotas.

On a real host INTRODUCE hands xenstored a domain's ring page and event
channel; here it only records the domain (xenstore.txt, "Domain management
and xenstored communications").  Dom0 counts as introduced from the start,
as xenstored's dom0_init() introduces it.  Whether a domain may then
connect is the daemon's business (`daemon`), not this registry's.
"""

from __future__ import annotations

import dataclasses
import errno
from dataclasses import dataclass, field

from pvgrub_py.xenstore.errors import XsRequestError
from pvgrub_py.xenstore.store import Quotas

DOMID_SELF = 0x7FF0
DOMID_FIRST_RESERVED = 0x7FF0

#: ``server_features`` bits of xs_wire.h.  We have no ring page, so the
#: ring-only features (RECONNECTION 1, ERROR 2) mean nothing here; watch
#: depth is implemented.
FEATURE_WATCHDEPTH = 4
SUPPORTED_FEATURES = FEATURE_WATCHDEPTH


@dataclass
class Domain:
    domid: int
    introduced: bool = False
    gfn: int = 0
    evtchn: int = 0
    target: int | None = None
    features: int = SUPPORTED_FEATURES
    quotas: Quotas = field(default_factory=Quotas)


class DomainRegistry:
    def __init__(self, quotas: Quotas | None = None) -> None:
        self.default_quotas = quotas or Quotas()
        self._domains: dict[int, Domain] = {}
        self._get_or_add(0).introduced = True

    def _get_or_add(self, domid: int) -> Domain:
        domain = self._domains.get(domid)
        if domain is None:
            domain = Domain(domid, quotas=self.default_quotas)
            self._domains[domid] = domain
        return domain

    def get(self, domid: int) -> Domain | None:
        return self._domains.get(domid)

    def introduced(self, domid: int) -> Domain | None:
        domain = self._domains.get(domid)
        return domain if domain is not None and domain.introduced else None

    def is_introduced(self, domid: int) -> bool:
        return domid == DOMID_SELF or self.introduced(domid) is not None

    def introduce(self, domid: int, gfn: int, evtchn: int) -> bool:
        """Record the domain; True if it was not introduced before (only then
        does @introduceDomain fire, as in xenstored's introduce_domain())."""
        if domid == 0 or domid >= DOMID_FIRST_RESERVED:
            raise XsRequestError(errno.EINVAL, f"domain {domid} cannot be introduced")
        if evtchn <= 0:
            raise XsRequestError(errno.EINVAL, f"event channel {evtchn} is not a port")
        domain = self._get_or_add(domid)
        fresh = not domain.introduced
        domain.introduced, domain.gfn, domain.evtchn = True, gfn, evtchn
        return fresh

    def connected(self, domid: int) -> Domain:
        """An introduced domain other than dom0, for RELEASE and RESUME
        (EINVAL for dom0, ENOENT for an unknown domain, as xenstored)."""
        if domid == 0:
            raise XsRequestError(errno.EINVAL, "dom0 cannot be released or resumed")
        domain = self.introduced(domid)
        if domain is None:
            raise XsRequestError(errno.ENOENT, f"domain {domid} is not introduced")
        return domain

    def release(self, domid: int) -> None:
        self.connected(domid)
        del self._domains[domid]
        for other in self._domains.values():
            if other.target == domid:
                other.target = None

    def set_target(self, domid: int, target: int) -> None:
        domain = self.introduced(domid)
        if domain is None or self.introduced(target) is None:
            raise XsRequestError(errno.ENOENT, f"domain {domid} or {target} is not introduced")
        domain.target = target

    def target_of(self, domid: int) -> int | None:
        domain = self._domains.get(domid)
        return None if domain is None else domain.target

    def quotas_for(self, domid: int) -> Quotas:
        domain = self._domains.get(domid)
        return self.default_quotas if domain is None else domain.quotas

    def set_quota(self, domid: int | None, name: str, value: int) -> None:
        attr = Quotas.WIRE_NAMES.get(name)
        if attr is None:
            raise XsRequestError(errno.EINVAL, f"unknown quota {name!r}")
        if domid is None:
            old = self.default_quotas
            self.default_quotas = dataclasses.replace(old, **{attr: value})
            for each in self._domains.values():
                if each.quotas is old:
                    each.quotas = self.default_quotas
            return
        domain = self._domains.get(domid)
        if domain is None:
            raise XsRequestError(errno.ENOENT, f"domain {domid} unknown")
        domain.quotas = dataclasses.replace(domain.quotas, **{attr: value})

    def get_quota(self, domid: int | None, name: str) -> int:
        attr = Quotas.WIRE_NAMES.get(name)
        if attr is None:
            raise XsRequestError(errno.EINVAL, f"unknown quota {name!r}")
        if domid is None:
            quotas = self.default_quotas
        else:
            found = self._domains.get(domid)
            if found is None:
                raise XsRequestError(errno.ENOENT, f"domain {domid} unknown")
            quotas = found.quotas
        value: int = getattr(quotas, attr)
        return value

    def set_features(self, domid: int, features: int) -> None:
        if features & ~SUPPORTED_FEATURES:
            raise XsRequestError(errno.EINVAL, f"features 0x{features:x} not supported")
        domain = self._get_or_add(domid)
        if domain.introduced:
            raise XsRequestError(errno.EBUSY, f"domain {domid} is already introduced")
        domain.features = features
