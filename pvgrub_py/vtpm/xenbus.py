"""Reading, writing and waiting for xenbus ``state`` nodes through xenstore.

The states themselves and the legal moves are `pvgrub_py.vtpm.handshake`
(pure); this is the I/O half the drivers use.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from pvgrub_py.errors import PvgrubError
from pvgrub_py.vtpm.handshake import XenbusState, parse_state
from pvgrub_py.xen.interface import XenStore

__all__ = [
    "XenbusError",
    "XenbusState",
    "read_state",
    "wait_for_state",
    "watch_until",
    "write_state",
]

T = TypeVar("T")


class XenbusError(PvgrubError):
    """A device handshake failed or timed out."""


_tokens = itertools.count(1)


def read_state(xs: XenStore, path: str) -> XenbusState:
    """The state in ``<path>/state``; a missing or garbled node reads as Unknown."""
    return parse_state(xs.read(f"{path}/state"))


def write_state(xs: XenStore, path: str, state: XenbusState) -> None:
    xs.write(f"{path}/state", str(int(state)).encode())


def watch_until(
    xs: XenStore, path: str, look: Callable[[], T | None], timeout: float
) -> T | None:
    """Call ``look`` until it returns something, then return that; again at
    every watch event under ``path`` (or at the deadline).  None after
    ``timeout`` seconds.  What ``look`` raises ends the wait."""
    token = f"pvgrub-watch-{next(_tokens)}"
    xs.watch(path, token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = look()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            xs.wait_event(left)  # any event (or the timeout) means: look again
    finally:
        xs.unwatch(path, token)


def wait_for_state(
    xs: XenStore,
    path: str,
    wanted: Iterable[XenbusState],
    timeout: float,
    *,
    fail_on: Iterable[XenbusState] = (),
    what: str = "peer",
) -> XenbusState:
    """Block until ``<path>/state`` is one of ``wanted``; watch-driven, bounded."""
    wanted_set, fail_set = set(wanted), set(fail_on)
    last = XenbusState.UNKNOWN

    def look() -> XenbusState | None:
        nonlocal last
        last = read_state(xs, path)
        if last in fail_set:
            raise XenbusError(f"{what} at {path} went to {last.name} instead of connecting")
        return last if last in wanted_set else None

    state = watch_until(xs, f"{path}/state", look, timeout)
    if state is None:
        names = "/".join(s.name for s in sorted(wanted_set))
        raise XenbusError(
            f"{what} at {path} stayed {last.name} for {timeout:g} s, expected {names}"
        )
    return state
