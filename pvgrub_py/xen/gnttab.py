"""`XenGrantMap`: map a grant another domain offered (libxengnttab, xengnttab.h).

The vTPM backend maps the frontend's shared page by (domid, ref) read from
xenstore (the ``ring-ref`` the frontend writes under its device node;
Mini-OS tpmback.c ``connect_fe`` maps it the same way).  The device is
``/dev/xen/gntdev``.  As in
gntshr.py, the memoryview is released before ``xengnttab_unmap``.
"""

from __future__ import annotations

from typing import Any

from pvgrub_py.xen._grant_handle import GrantHandle, GrantMemory
from pvgrub_py.xen.binding import fail
from pvgrub_py.xen.interface import PAGE_SIZE

GNTDEV_HINT = "needs /dev/xen/gntdev: run in a Xen domain with the xen-gntdev driver"


class XenMappedGrant(GrantMemory):
    """One mapped page; implements `interface.MappedGrant`."""

    _map_function = "xengnttab_map_grant_ref"
    _unmap_function = "xengnttab_unmap"
    _closed_message = "grant already unmapped"
    _exported_message = "the mapped memory is still exported"

    def __init__(self, owner: XenGrantMap, address: Any, writable: bool = True) -> None:
        self._owner = owner
        self._address: Any = address
        super().__init__(memoryview(owner.binding.ffi.buffer(address, PAGE_SIZE)), writable)

    def _unmap(self) -> None:
        self._owner.unmap(self._address)


class XenGrantMap(GrantHandle):
    """One ``xengnttab_handle``; implements `interface.GrantMap`."""

    def __init__(self) -> None:
        super().__init__("xengnttab", GNTDEV_HINT)

    def map_grant(self, domid: int, ref: int, writable: bool = True) -> XenMappedGrant:
        lib = self._b.lib
        prot = lib.PROT_READ | (lib.PROT_WRITE if writable else 0)
        address = lib.xengnttab_map_grant_ref(self._handle(), domid, ref, prot)
        if address == self._b.ffi.NULL:
            fail(self._b, "xengnttab_map_grant_ref", f"domain {domid} ref {ref}")
        return XenMappedGrant(self, address, writable)

    def unmap(self, address: Any) -> None:
        if self._b.lib.xengnttab_unmap(self._handle(), address, 1) != 0:
            fail(self._b, "xengnttab_unmap")
