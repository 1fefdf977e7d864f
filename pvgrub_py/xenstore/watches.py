"""Watches: who hears about which change (xenstore.txt, "Watches").

* A change to a path fires every watch on that path or on any ancestor of
  it, and the event names the changed path.  The descendants an RM removes
  along with its target fire only watches on exactly their own path
  (xenstored's delnode_sub()).
* A new watch fires once straight away with the watch path itself; this
  event is sent whatever the permissions.
* A watch given as a relative path gets relative event paths.
* An optional third WATCH argument limits the match to that many levels
  below the watch path (XENSTORE_SERVER_FEATURE_WATCHDEPTH).
* Events for ordinary paths reach a connection only if it may read the
  node or its parent (old or new permissions for SET_PERMS), so watches
  do not leak what a guest cannot read (xenstored's watch_permitted(),
  XSA-115).  Special events (@introduceDomain, @releaseDomain) reach
  privileged connections and those the special node's permissions let read.

Watches are indexed by path, so firing costs one dict look-up per level of
the changed path, not a scan over every watch of every connection.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pvgrub_py.xenstore import paths
from pvgrub_py.xenstore.errors import XsRequestError
from pvgrub_py.xenstore.node_ops import Change
from pvgrub_py.xenstore.perms import READ, Caller, NodePerms, access_for


class WatchSink(Protocol):
    """What a watch needs from the connection that set it."""

    @property
    def caller(self) -> Caller: ...

    def send_event(self, path: bytes, token: bytes) -> None: ...


@dataclass(eq=False, slots=True)
class Watch:
    sink: WatchSink
    path: str  # absolute, or @special
    token: bytes
    #: Characters stripped from event paths: the ``/local/domain/<id>/``
    #: prefix of a watch given relative, else 0.
    strip: int
    depth: int | None

    def reported(self, path: str) -> bytes:
        return path[self.strip :].encode()

    def in_depth(self, path: str) -> bool:
        return self.depth is None or paths.depth_below(path, self.path) <= self.depth


def may_see(caller: Caller, perms: Iterable[NodePerms]) -> bool:
    if caller.privileged:
        return True
    return any(p and access_for(p, caller) & READ for p in perms)


class WatchRegistry:
    def __init__(self) -> None:
        self._by_path: dict[str, list[Watch]] = {}
        self._by_sink: dict[WatchSink, list[Watch]] = {}

    def count(self, sink: WatchSink) -> int:
        return len(self._by_sink.get(sink, ()))

    def add(self, sink: WatchSink, path: str, token: bytes, strip: int, depth: int | None) -> Watch:
        """Register; EEXIST for the same path and token on this connection."""
        mine = self._by_sink.setdefault(sink, [])
        for watch in mine:
            if watch.path == path and watch.token == token:
                raise XsRequestError(errno.EEXIST, f"watch {path} {token!r} already set")
        watch = Watch(sink, path, token, strip, depth)
        mine.append(watch)
        self._by_path.setdefault(path, []).append(watch)
        return watch

    def remove(self, sink: WatchSink, path: str, token: bytes) -> None:
        mine = self._by_sink.get(sink, [])
        for watch in mine:
            if watch.path == path and watch.token == token:
                mine.remove(watch)
                self._unindex(watch)
                return
        raise XsRequestError(errno.ENOENT, f"no watch {path} {token!r}")

    def remove_all(self, sink: WatchSink) -> None:
        for watch in self._by_sink.pop(sink, []):
            self._unindex(watch)

    def _unindex(self, watch: Watch) -> None:
        same_path = self._by_path[watch.path]
        same_path.remove(watch)
        if not same_path:
            del self._by_path[watch.path]

    # -- firing --------------------------------------------------------------

    def fire(self, changes: Iterable[Change]) -> None:
        by_path = self._by_path
        for change in changes:
            candidates = (change.path,) if change.exact else paths.self_and_ancestors(change.path)
            for watch_path in candidates:
                watches = by_path.get(watch_path)
                if not watches:
                    continue
                for watch in list(watches):
                    if watch.in_depth(change.path) and may_see(watch.sink.caller, change.perms):
                        watch.sink.send_event(watch.reported(change.path), watch.token)

    def fire_special(self, name: str, perms: NodePerms, domid: int | None = None) -> None:
        """An @introduceDomain / @releaseDomain event.  With ``domid``,
        watches on ``name/<domid>`` fire too, and a watch with depth >= 1 on
        ``name`` is told which domain (the WATCHDEPTH form)."""
        targets: list[tuple[Watch, str]] = [(w, name) for w in self._by_path.get(name, ())]
        if domid is not None:
            per_domain = f"{name}/{domid}"
            targets += [(w, per_domain) for w in self._by_path.get(per_domain, ())]
        for watch, event in targets:
            if watch.depth and event == name and domid is not None:
                event = f"{name}/{domid}"
            if may_see(watch.sink.caller, (perms,)):
                watch.sink.send_event(event.encode(), watch.token)
