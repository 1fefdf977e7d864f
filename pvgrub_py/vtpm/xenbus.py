"""XenbusState values and waiting for a peer's state through xenstore watches.

xen/include/public/io/xenbus.h: Unknown 0, Initialising 1, InitWait 2,
Initialised 3, Connected 4, Closing 5, Closed 6, Reconfiguring 7,
Reconfigured 8.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Iterable

from pvgrub_py.errors import PvgrubError
from pvgrub_py.xen.interface import XenStore


class XenbusState(enum.IntEnum):
    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


class XenbusError(PvgrubError):
    """A device handshake failed or timed out."""


_tokens = itertools.count(1)


def read_state(xs: XenStore, path: str) -> XenbusState:
    """The state in ``<path>/state``; a missing or garbled node reads as Unknown."""
    raw = xs.read(f"{path}/state")
    if raw is None or not raw.strip().isdigit():
        return XenbusState.UNKNOWN
    value = int(raw.strip())
    return XenbusState(value) if value in XenbusState._value2member_map_ else XenbusState.UNKNOWN


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
