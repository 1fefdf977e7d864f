"""Reading, writing and waiting for xenbus ``state`` nodes through xenstore.

The states themselves and the legal moves are `pvgrub_py.vtpm.handshake`
(pure); this is the I/O half the drivers use.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

from pvgrub_py.errors import PvgrubError
from pvgrub_py.vtpm.handshake import XenbusState, parse_state
from pvgrub_py.xen.interface import XenStore

__all__ = ["XenbusError", "XenbusState", "read_state", "wait_for_state", "write_state"]


class XenbusError(PvgrubError):
    """A device handshake failed or timed out."""


_tokens = itertools.count(1)


def read_state(xs: XenStore, path: str) -> XenbusState:
    """The state in ``<path>/state``; a missing or garbled node reads as Unknown."""
    return parse_state(xs.read(f"{path}/state"))


def write_state(xs: XenStore, path: str, state: XenbusState) -> None:
    xs.write(f"{path}/state", str(int(state)).encode())


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
    token = f"pvgrub-state-{next(_tokens)}"
    node = f"{path}/state"
    xs.watch(node, token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            state = read_state(xs, path)
            if state in wanted_set:
                return state
            if state in fail_set:
                raise XenbusError(f"{what} at {path} went to {state.name} instead of connecting")
            left = deadline - time.monotonic()
            if left <= 0:
                names = "/".join(s.name for s in sorted(wanted_set))
                raise XenbusError(
                    f"{what} at {path} stayed {state.name} for {timeout:g} s, expected {names}"
                )
            xs.wait_event(left)  # any event (or the timeout) means: look again
    finally:
        xs.unwatch(node, token)
