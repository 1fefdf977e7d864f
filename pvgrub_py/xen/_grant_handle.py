"""What `gntshr` and `gnttab` share: a libxengnt* handle and the pages it maps.

Both libraries open a handle the same way (``xengnt{shr,tab}_open``, with a
hint naming the device when that fails) and hand out mapped memory the same
way: a memoryview that ``close`` releases before the pages are unmapped, so
Python can no longer touch freed pages (if someone still holds an export of
it, close refuses with EBUSY rather than unmap memory in use).  A read-only
mapping (``PROT_READ``) is handed out as a read-only view: a write raises
TypeError, as on the simulator, instead of faulting the process.
"""

from __future__ import annotations

import errno as errno_mod
from abc import ABC, abstractmethod
from typing import Any, Self

from pvgrub_py.xen.binding import Binding, call_error, require
from pvgrub_py.xen.interface import XenError
from pvgrub_py.xen.toollog import ToolLog


class GrantMemory(ABC):
    """Mapped pages as a memoryview; `close` releases it, then calls `_unmap`."""

    #: The function named in errors: the one that mapped the memory, the one that unmaps it.
    _map_function: str
    _unmap_function: str
    #: Why `memory` fails after `close` ("pages already unshared").
    _closed_message: str
    #: Why `close` fails while the memory is still exported.
    _exported_message: str

    def __init__(self, memory: memoryview, writable: bool = True) -> None:
        self._base: memoryview | None = memory
        self._memory: memoryview | None = memory if writable else memory.toreadonly()

    @property
    def memory(self) -> memoryview:
        if self._memory is None:
            raise XenError(errno_mod.EBADF, self._map_function, self._closed_message)
        return self._memory

    @abstractmethod
    def _unmap(self) -> None:
        """Give the pages back to the library (after the view is released)."""

    def close(self) -> None:
        if self._memory is None:
            return
        try:
            self._memory.release()
            if self._base is not None:
                self._base.release()
        except BufferError:
            raise XenError(errno_mod.EBUSY, self._unmap_function, self._exported_message) from None
        self._memory = self._base = None
        self._unmap()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrantHandle:
    """One ``<library>_handle`` (``xengntshr`` or ``xengnttab``), opened with a log."""

    def __init__(self, library: str, hint: str) -> None:
        self._library = library
        self._b: Binding = require(f"{library}_open")
        self.log = ToolLog(binding=self._b)
        handle = getattr(self._b.lib, f"{library}_open")(self.log.handle, 0)
        if handle == self._b.ffi.NULL:
            error = call_error(self._b, f"{library}_open", hint)
            self.log.close()
            raise error
        self._h: Any = handle

    @property
    def binding(self) -> Binding:
        return self._b

    def _handle(self) -> Any:
        if self._h is None:
            raise XenError(errno_mod.EBADF, self._library, "handle is closed")
        return self._h

    def close(self) -> None:
        if self._h is not None:
            getattr(self._b.lib, f"{self._library}_close")(self._h)
            self._h = None
            self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
