"""Page memory shared between processes: memfds, and views of them.

A granted page must be *the same memory* in the granting and the mapping process, so
the ring protocol's ordering (data, then ``length``, then ``state``, then notify;
tpmif.h) is exercised for real.  The daemon creates one memfd per ``share_pages`` call
(what gntalloc's ``alloc_page`` stands for) and hands it over SCM_RIGHTS:

* to the granting process read-write, which maps all ``count`` pages contiguously, as
  ``xengntshr_share_pages`` returns one contiguous area;
* to a mapping process, either the same file read-write, or a *new open file
  description* of it opened O_RDONLY through ``/proc/self/fd``, so that a read-only
  grant cannot be mapped writable even by a process that tries ``mmap(PROT_WRITE)``
  itself: the kernel refuses a shared writable mapping of a read-only descriptor.

Both sides close the descriptor once mapped; the mapping keeps the memory alive, just
as a foreign mapping keeps a page referenced in Xen.
"""

from __future__ import annotations

import contextlib
import mmap
import os

from pvgrub_py.xen.interface import PAGE_SIZE

if mmap.PAGESIZE != PAGE_SIZE:  # pragma: no cover - x86/arm64 4K hosts only
    raise ImportError(f"the simulator needs {PAGE_SIZE}-byte host pages, not {mmap.PAGESIZE}")


def create_pages(count: int, name: str) -> int:
    """A zeroed memfd of ``count`` pages (gntalloc hands out zeroed pages)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, count * PAGE_SIZE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reopen_readonly(fd: int) -> int:
    """A read-only descriptor of the same memory (a new open file description)."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


class PageView:
    """An mmap of pages from a descriptor, exposed as a memoryview.

    `close` releases the view and unmaps.  If the caller still holds slices of the
    memoryview, the mapping cannot be unmapped from Python; it is then left to the
    garbage collector, which unmaps when the last slice goes.
    """

    def __init__(self, fd: int, pages: int, offset: int, writable: bool) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self._map: mmap.mmap | None = mmap.mmap(
            fd, pages * PAGE_SIZE, flags=mmap.MAP_SHARED, prot=prot, offset=offset
        )
        # A PROT_READ mapping exports a read-only buffer: writes raise TypeError.
        self._view: memoryview | None = memoryview(self._map)

    @property
    def memory(self) -> memoryview:
        if self._view is None:
            raise ValueError("this mapping is closed")
        return self._view

    @property
    def closed(self) -> bool:
        return self._map is None

    def close(self) -> None:
        view, self._view = self._view, None
        mapping, self._map = self._map, None
        if view is not None:
            with contextlib.suppress(BufferError):
                view.release()
        if mapping is not None:
            with contextlib.suppress(BufferError):
                mapping.close()
