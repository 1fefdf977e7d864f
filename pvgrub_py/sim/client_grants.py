"""Grant share and map handles of a simulated domain (libxengntshr, libxengnttab).

Memory is real: `SimSharedPages.memory` and `SimMappedGrant.memory` are views of the
same memfd pages in two processes (see `pages`).  The rules (who may map what, what
ending access does while mapped) are enforced by the daemon (see `grants`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Generic, Self, TypeVar

from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.pages import PageView
from pvgrub_py.sim.protocol import Op


class _SimGrantView:
    """Memory granted or mapped through the daemon; `close` unmaps it here, then
    (while the daemon is still there) sends *release_op* for *grant_id*."""

    _release_op: Op
    _release_function: str

    def __init__(self, conn: HostConnection, grant_id: int, view: PageView) -> None:
        self._conn = conn
        self._grant_id = grant_id
        self._view = view

    @property
    def memory(self) -> memoryview:
        return self._view.memory

    @property
    def closed(self) -> bool:
        return self._view.closed

    def close(self) -> None:
        if self._view.closed:
            return
        self._view.close()
        if self._conn.alive:
            self._conn.call(self._release_op, [self._grant_id], function=self._release_function)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_view(
    conn: HostConnection,
    fds: Sequence[int],
    make_view: Callable[[int], PageView],
    release: tuple[Op, int, str],
) -> PageView:
    """`make_view` of the first fd the daemon sent; every fd is closed either way, and
    if the view cannot be made the grant is released again (``release``: op, id, function)."""
    try:
        return make_view(fds[0])
    except BaseException:
        op, grant_id, function = release
        with contextlib.suppress(Exception):
            conn.call(op, [grant_id], function=function)
        raise
    finally:
        for fd in fds:
            os.close(fd)


_V = TypeVar("_V", bound=_SimGrantView)


class _SimGrantHandle(Generic[_V]):
    """A handle that keeps what it granted or mapped; closing it closes them all."""

    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        self._views: list[_V] = []

    def _keep(self, view: _V) -> _V:
        self._views = [v for v in self._views if not v.closed]
        self._views.append(view)
        return view

    def close(self) -> None:
        views, self._views = self._views, []
        for view in views:
            view.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimSharedPages(_SimGrantView):
    """Pages this domain granted (``xengntshr_share_pages``).  `close` ends access
    (``xengntshr_unshare``); if the grantee still maps them, the daemon keeps the
    grant until it unmaps, as gntalloc defers the free."""

    _release_op = Op.GNT_END
    _release_function = "xengntshr_unshare"

    def __init__(
        self, conn: HostConnection, share_id: int, refs: Sequence[int], view: PageView
    ) -> None:
        super().__init__(conn, share_id, view)
        self._refs = tuple(refs)

    @property
    def refs(self) -> Sequence[int]:
        return self._refs


class SimGrantShare(_SimGrantHandle[SimSharedPages]):
    """A libxengntshr handle; closing it ends access to every share made through it."""

    def share_pages(self, domid: int, count: int = 1, writable: bool = True) -> SimSharedPages:
        frame, fds = self._conn.call(
            Op.GNT_SHARE, [domid, count, int(writable)], function="xengntshr_share_pages"
        )
        share_id, refs = frame.args[0], frame.args[1:]
        view = _open_view(
            self._conn,
            fds,
            lambda fd: PageView(fd, count, 0, writable=True),
            (Op.GNT_END, share_id, "xengntshr_unshare"),
        )
        return self._keep(SimSharedPages(self._conn, share_id, refs, view))


class SimMappedGrant(_SimGrantView):
    """A foreign page mapped here (``xengnttab_map_grant_ref``); `close` unmaps."""

    _release_op = Op.GNT_UNMAP
    _release_function = "xengnttab_unmap"


class SimGrantMap(_SimGrantHandle[SimMappedGrant]):
    """A libxengnttab handle; closing it unmaps every grant mapped through it."""

    def map_grant(self, domid: int, ref: int, writable: bool = True) -> SimMappedGrant:
        frame, fds = self._conn.call(
            Op.GNT_MAP, [domid, ref, int(writable)], function="xengnttab_map_grant_ref"
        )
        map_id, offset = frame.args
        view = _open_view(
            self._conn,
            fds,
            lambda fd: PageView(fd, 1, offset, writable),
            (Op.GNT_UNMAP, map_id, "xengnttab_unmap"),
        )
        return self._keep(SimMappedGrant(self._conn, map_id, view))
