"""`XenGrantShare`: pages this domain grants to another (libxengntshr, xengnttab.h).

The tpmif frontend shares one page with the vTPM backend and publishes its
grant reference in xenstore (reference §2.2).  ``xengntshr_share_pages``
allocates the pages, grants them and maps them here; ``xengntshr_unshare``
ends foreign access and frees them.  The device is ``/dev/xen/gntalloc``.

The mapped memory is handed out as a memoryview; on ``close`` we release
that view before unmapping, so Python can no longer touch freed pages (if
someone still holds an export of it, close refuses with EBUSY rather than
unmap memory in use).
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Sequence
from typing import Any

from pvgrub_py.xen.binding import Binding, fail, require
from pvgrub_py.xen.interface import PAGE_SIZE, XenError
from pvgrub_py.xen.toollog import ToolLog

GNTALLOC_HINT = "needs /dev/xen/gntalloc: run in a Xen domain with the xen-gntalloc driver"


class XenSharedPages:
    """Granted pages; implements `interface.SharedPages`."""

    def __init__(self, owner: XenGrantShare, address: Any, refs: Sequence[int]) -> None:
        self._owner = owner
        self._address: Any = address
        self._refs = tuple(refs)
        b = owner.binding
        self._memory: memoryview | None = memoryview(
            b.ffi.buffer(address, PAGE_SIZE * len(self._refs))
        )

    @property
    def refs(self) -> Sequence[int]:
        return self._refs

    @property
    def memory(self) -> memoryview:
        if self._memory is None:
            raise XenError(errno_mod.EBADF, "xengntshr_share_pages", "pages already unshared")
        return self._memory

    def close(self) -> None:
        if self._memory is None:
            return
        try:
            self._memory.release()
        except BufferError:
            raise XenError(
                errno_mod.EBUSY, "xengntshr_unshare", "the shared memory is still exported"
            ) from None
        self._memory = None
        self._owner.unshare(self._address, len(self._refs))

    def __enter__(self) -> XenSharedPages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class XenGrantShare:
    """One ``xengntshr_handle``; implements `interface.GrantShare`."""

    def __init__(self) -> None:
        self._b: Binding = require("xengntshr_open")
        self.log = ToolLog(binding=self._b)
        handle = self._b.lib.xengntshr_open(self.log.handle, 0)
        if handle == self._b.ffi.NULL:
            err = self._b.ffi.errno
            self.log.close()
            raise XenError(err or errno_mod.EIO, "xengntshr_open", GNTALLOC_HINT)
        self._h: Any = handle

    @property
    def binding(self) -> Binding:
        return self._b

    def _handle(self) -> Any:
        if self._h is None:
            raise XenError(errno_mod.EBADF, "xengntshr", "handle is closed")
        return self._h

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

    def close(self) -> None:
        if self._h is not None:
            self._b.lib.xengntshr_close(self._h)
            self._h = None
            self.log.close()

    def __enter__(self) -> XenGrantShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
