"""`XenGrantMap`: map a grant another domain offered (libxengnttab, xengnttab.h).

The vTPM backend maps the frontend's shared page by (domid, ref) read from
xenstore (reference §2.2, §2.5).  The device is ``/dev/xen/gntdev``.  As in
gntshr.py, the memoryview is released before ``xengnttab_unmap``.
"""

from __future__ import annotations

import errno as errno_mod
from typing import Any

from pvgrub_py.xen.binding import Binding, fail, require
from pvgrub_py.xen.interface import PAGE_SIZE, XenError
from pvgrub_py.xen.toollog import ToolLog

GNTDEV_HINT = "needs /dev/xen/gntdev: run in a Xen domain with the xen-gntdev driver"


class XenMappedGrant:
    """One mapped page; implements `interface.MappedGrant`."""

    def __init__(self, owner: XenGrantMap, address: Any) -> None:
        self._owner = owner
        self._address: Any = address
        self._memory: memoryview | None = memoryview(owner.binding.ffi.buffer(address, PAGE_SIZE))

    @property
    def memory(self) -> memoryview:
        if self._memory is None:
            raise XenError(errno_mod.EBADF, "xengnttab_map_grant_ref", "grant already unmapped")
        return self._memory

    def close(self) -> None:
        if self._memory is None:
            return
        try:
            self._memory.release()
        except BufferError:
            raise XenError(
                errno_mod.EBUSY, "xengnttab_unmap", "the mapped memory is still exported"
            ) from None
        self._memory = None
        self._owner.unmap(self._address)

    def __enter__(self) -> XenMappedGrant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class XenGrantMap:
    """One ``xengnttab_handle``; implements `interface.GrantMap`."""

    def __init__(self) -> None:
        self._b: Binding = require("xengnttab_open")
        self.log = ToolLog(binding=self._b)
        handle = self._b.lib.xengnttab_open(self.log.handle, 0)
        if handle == self._b.ffi.NULL:
            err = self._b.ffi.errno
            self.log.close()
            raise XenError(err or errno_mod.EIO, "xengnttab_open", GNTDEV_HINT)
        self._h: Any = handle

    @property
    def binding(self) -> Binding:
        return self._b

    def _handle(self) -> Any:
        if self._h is None:
            raise XenError(errno_mod.EBADF, "xengnttab", "handle is closed")
        return self._h

    def map_grant(self, domid: int, ref: int, writable: bool = True) -> XenMappedGrant:
        lib = self._b.lib
        prot = lib.PROT_READ | (lib.PROT_WRITE if writable else 0)
        address = lib.xengnttab_map_grant_ref(self._handle(), domid, ref, prot)
        if address == self._b.ffi.NULL:
            fail(self._b, "xengnttab_map_grant_ref", f"domain {domid} ref {ref}")
        return XenMappedGrant(self, address)

    def unmap(self, address: Any) -> None:
        if self._b.lib.xengnttab_unmap(self._handle(), address, 1) != 0:
            fail(self._b, "xengnttab_unmap")

    def close(self) -> None:
        if self._h is not None:
            self._b.lib.xengnttab_close(self._h)
            self._h = None
            self.log.close()

    def __enter__(self) -> XenGrantMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
