"""Grant share and map handles of a simulated domain (libxengntshr, libxengnttab).

Memory is real: `SimSharedPages.memory` and `SimMappedGrant.memory` are views of the
same memfd pages in two processes (see `pages`).  The rules (who may map what, what
ending access does while mapped) are enforced by the daemon (see `grants`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.pages import PageView
from pvgrub_py.sim.protocol import Op


class SimSharedPages:
    """Pages this domain granted (``xengntshr_share_pages``).  `close` ends access
    (``xengntshr_unshare``); if the grantee still maps them, the daemon keeps the
    grant until it unmaps, as gntalloc defers the free."""

    def __init__(
        self, conn: HostConnection, share_id: int, refs: Sequence[int], view: PageView
    ) -> None:
        self._conn = conn
        self._share_id = share_id
        self._refs = tuple(refs)
        self._view = view

    @property
    def refs(self) -> Sequence[int]:
        return self._refs

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
            self._conn.call(Op.GNT_END, [self._share_id], function="xengntshr_unshare")

    def __enter__(self) -> SimSharedPages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimGrantShare:
    """A libxengntshr handle; closing it ends access to every share made through it."""

    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        self._shares: list[SimSharedPages] = []

    def share_pages(self, domid: int, count: int = 1, writable: bool = True) -> SimSharedPages:
        frame, fds = self._conn.call(
            Op.GNT_SHARE, [domid, count, int(writable)], function="xengntshr_share_pages"
        )
        share_id, refs = frame.args[0], frame.args[1:]
        try:
            view = PageView(fds[0], count, 0, writable=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self._conn.call(Op.GNT_END, [share_id], function="xengntshr_unshare")
            raise
        finally:
            for fd in fds:
                os.close(fd)
        shared = SimSharedPages(self._conn, share_id, refs, view)
        self._shares = [s for s in self._shares if not s.closed]
        self._shares.append(shared)
        return shared

    def close(self) -> None:
        shares, self._shares = self._shares, []
        for shared in shares:
            shared.close()

    def __enter__(self) -> SimGrantShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimMappedGrant:
    """A foreign page mapped here (``xengnttab_map_grant_ref``); `close` unmaps."""

    def __init__(self, conn: HostConnection, map_id: int, view: PageView) -> None:
        self._conn = conn
        self._map_id = map_id
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
            self._conn.call(Op.GNT_UNMAP, [self._map_id], function="xengnttab_unmap")

    def __enter__(self) -> SimMappedGrant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimGrantMap:
    """A libxengnttab handle; closing it unmaps every grant mapped through it."""

    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn
        self._maps: list[SimMappedGrant] = []

    def map_grant(self, domid: int, ref: int, writable: bool = True) -> SimMappedGrant:
        frame, fds = self._conn.call(
            Op.GNT_MAP, [domid, ref, int(writable)], function="xengnttab_map_grant_ref"
        )
        map_id, offset = frame.args
        try:
            view = PageView(fds[0], 1, offset, writable)
        except BaseException:
            with contextlib.suppress(Exception):
                self._conn.call(Op.GNT_UNMAP, [map_id], function="xengnttab_unmap")
            raise
        finally:
            for fd in fds:
                os.close(fd)
        mapped = SimMappedGrant(self._conn, map_id, view)
        self._maps = [m for m in self._maps if not m.closed]
        self._maps.append(mapped)
        return mapped

    def close(self) -> None:
        maps, self._maps = self._maps, []
        for mapped in maps:
            mapped.close()

    def __enter__(self) -> SimGrantMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
