"""`LibxcHypervisor`: `interface.Hypervisor` on a real Xen host, via the Xen libraries.

Each accessor opens its library handle the first time it is asked for and
keeps it until ``close``; a domain without a driver (no gntalloc in a
stubdom, no privcmd in a domU) fails only the accessor that needs it, with
the XenError the library gave (ENOENT and a hint naming the device).
"""

from __future__ import annotations

from pvgrub_py.xen.evtchn import XenEventChannels
from pvgrub_py.xen.gntshr import XenGrantShare
from pvgrub_py.xen.gnttab import XenGrantMap
from pvgrub_py.xen.interface import DOMID_SELF
from pvgrub_py.xen.xenctrl import XenCtrl
from pvgrub_py.xen.xenstore_c import XenStoreC


class LibxcHypervisor:
    """Everything one domain can reach through libxenctrl and friends."""

    def __init__(self, domid: int = 0) -> None:
        self._domid = domid
        self._xc: XenCtrl | None = None
        self._gntshr: XenGrantShare | None = None
        self._gnttab: XenGrantMap | None = None
        self._evtchn: XenEventChannels | None = None
        self._xs: XenStoreC | None = None

    @property
    def domid(self) -> int:
        return self._domid if self._domid != DOMID_SELF else 0

    def domains(self) -> XenCtrl:
        if self._xc is None:
            self._xc = XenCtrl()
        return self._xc

    def grant_share(self) -> XenGrantShare:
        if self._gntshr is None:
            self._gntshr = XenGrantShare()
        return self._gntshr

    def grant_map(self) -> XenGrantMap:
        if self._gnttab is None:
            self._gnttab = XenGrantMap()
        return self._gnttab

    def event_channels(self) -> XenEventChannels:
        if self._evtchn is None:
            self._evtchn = XenEventChannels()
        return self._evtchn

    def xenstore(self) -> XenStoreC:
        if self._xs is None:
            self._xs = XenStoreC()
        return self._xs

    def close(self) -> None:
        for handle in (self._xs, self._evtchn, self._gnttab, self._gntshr, self._xc):
            if handle is not None:
                handle.close()
        self._xc = self._gntshr = self._gnttab = self._evtchn = self._xs = None

    def __enter__(self) -> LibxcHypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
