"""`LibxcHypervisor`: `interface.Hypervisor` on a real Xen host, via the Xen libraries.

Every ``xenstore()``, ``event_channels()``, ``grant_share()`` and
``grant_map()`` call opens a new library handle, owned by the caller, as
on the simulator (``SimHypervisor``): the vTPM code opens one per use
(``with hv.xenstore() as xs: ...``) and closes it when done, so a handle
shared between callers would be closed under the next one.  (It was: on
real Xen the bootloader's ``xen:`` attach failed with ``xs_handle: handle
is closed`` because ``free_devid``'s ``with`` closed the cached handle
that ``add_vtpm_device`` then used.)  ``close`` closes whatever the
callers left open.  ``domains()`` is one shared privcmd handle: callers
never close it; ``close`` does.

A domain without a driver (no gntalloc in a stubdom, no privcmd in a domU)
fails only the accessor that needs it, with the XenError the library gave
(ENOENT and a hint naming the device).
"""

from __future__ import annotations

import weakref
from typing import TypeVar

from pvgrub_py.xen.evtchn import XenEventChannels
from pvgrub_py.xen.gntshr import XenGrantShare
from pvgrub_py.xen.gnttab import XenGrantMap
from pvgrub_py.xen.interface import DOMID_SELF, Hypervisor
from pvgrub_py.xen.xenctrl import XenCtrl
from pvgrub_py.xen.xenstore_c import XenStoreC

_Handle = XenGrantShare | XenGrantMap | XenEventChannels | XenStoreC
H = TypeVar("H", XenGrantShare, XenGrantMap, XenEventChannels, XenStoreC)


class LibxcHypervisor:
    """Everything one domain can reach through libxenctrl and friends."""

    def __init__(self, domid: int = 0) -> None:
        self._domid = domid
        self._xc: XenCtrl | None = None
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()

    @property
    def domid(self) -> int:
        return self._domid if self._domid != DOMID_SELF else 0

    def _track(self, handle: H) -> H:
        self._handles.add(handle)
        return handle

    def domains(self) -> XenCtrl:
        if self._xc is None:
            self._xc = XenCtrl()
        return self._xc

    def grant_share(self) -> XenGrantShare:
        return self._track(XenGrantShare())

    def grant_map(self) -> XenGrantMap:
        return self._track(XenGrantMap())

    def event_channels(self) -> XenEventChannels:
        return self._track(XenEventChannels())

    def xenstore(self) -> XenStoreC:
        return self._track(XenStoreC())

    def evtchn_peer_label(self, port: int) -> str:
        """FLASK's label of the peer of ``port`` (``xsm_op`` through privcmd)."""
        return self.domains().evtchn_peer_label(port)

    def close(self) -> None:
        """Close every handle still open (closing one twice is a no-op), then privcmd."""
        for handle in list(self._handles):
            handle.close()
        self._handles.clear()
        if self._xc is not None:
            self._xc.close()
            self._xc = None

    def __enter__(self) -> LibxcHypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _conforms(hv: LibxcHypervisor) -> Hypervisor:
    """Never called: makes mypy check LibxcHypervisor (and, through the return types
    of its methods, every handle class) against the interface's Protocols."""
    return hv
