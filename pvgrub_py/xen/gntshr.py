"""`XenGrantShare`: pages this domain grants to another (libxengntshr, xengnttab.h).

The tpmif frontend shares one page with the vTPM backend and publishes its
grant reference in xenstore as ``ring-ref`` (Linux
drivers/char/tpm/xen-tpmfront.c, ``setup_ring``).  ``xengntshr_share_pages``
allocates the pages, grants them and maps them here; ``xengntshr_unshare``
ends foreign access and frees them.  The device is ``/dev/xen/gntalloc``.

The mapped memory is handed out as a memoryview; on ``close`` we release
that view before unmapping (see `_grant_handle`).
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Sequence
from typing import Any

from pvgrub_py.xen._grant_handle import GrantHandle, GrantMemory
from pvgrub_py.xen.binding import fail
from pvgrub_py.xen.interface import PAGE_SIZE, XenError

GNTALLOC_HINT = "needs /dev/xen/gntalloc: run in a Xen domain with the xen-gntalloc driver"


class XenSharedPages(GrantMemory):
    """Granted pages; implements `interface.SharedPages`."""

    _map_function = "xengntshr_share_pages"
    _unmap_function = "xengntshr_unshare"
    _closed_message = "pages already unshared"
    _exported_message = "the shared memory is still exported"

    def __init__(self, owner: XenGrantShare, address: Any, refs: Sequence[int]) -> None:
        self._owner = owner
        self._address: Any = address
        self._refs = tuple(refs)
        b = owner.binding
        super().__init__(memoryview(b.ffi.buffer(address, PAGE_SIZE * len(self._refs))))

    @property
    def refs(self) -> Sequence[int]:
        return self._refs

    def _unmap(self) -> None:
        self._owner.unshare(self._address, len(self._refs))


class XenGrantShare(GrantHandle):
    """One ``xengntshr_handle``; implements `interface.GrantShare`."""

    def __init__(self) -> None:
        super().__init__("xengntshr", GNTALLOC_HINT)

    def share_pages(self, domid: int, count: int = 1, writable: bool = True) -> XenSharedPages:
        if not 1 <= count <= 1024:
            raise XenError(errno_mod.EINVAL, "xengntshr_share_pages", f"count {count}")
        refs = self._b.ffi.new("uint32_t[]", count)
        address = self._b.lib.xengntshr_share_pages(
            self._handle(), domid, count, refs, 1 if writable else 0
        )
        if address == self._b.ffi.NULL:
            fail(self._b, "xengntshr_share_pages", f"{count} page(s) to domain {domid}")
        return XenSharedPages(self, address, list(refs))

    def unshare(self, address: Any, count: int) -> None:
        if self._b.lib.xengntshr_unshare(self._handle(), address, count) != 0:
            fail(self._b, "xengntshr_unshare")
