"""The xenbus device handshake: the states and which moves each side may make.

xen/include/public/io/xenbus.h, ``enum xenbus_state``: Unknown 0,
Initialising 1, InitWait 2, Initialised 3, Connected 4, Closing 5, Closed 6,
Reconfiguring 7, Reconfigured 8.  The toolstack creates both halves of a
device in Initialising (libxl_device.c); from there each driver writes only
its own ``state`` node, along the moves below.  Pure data: no xenstore.

A tpmif frontend (Linux ``xen-tpmfront.c``, Mini-OS ``tpmfront.c``)::

    Initialising -> Initialised -> Connected -> Closing -> Closed -> Initialising

(the last move is Mini-OS's: it hands the device back for a later frontend,
the kexec'd kernel's).  A frontend that fails to connect closes from
Initialised as well.

A tpmif backend (Mini-OS ``tpmback.c``)::

    Initialising -> InitWait -> Connected -> Closing -> InitWait ...

it refuses a frontend by going Closing, returns to InitWait when the
frontend closes (so another can connect), and answers the toolstack's
removal (``online = 0``) by going Closed from anywhere.
"""

from __future__ import annotations

import enum


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


S = XenbusState

#: The moves a tpmif frontend makes on its own ``state`` node.
FRONTEND_MOVES: frozenset[tuple[XenbusState, XenbusState]] = frozenset(
    {
        (S.INITIALISING, S.INITIALISED),
        (S.INITIALISED, S.CONNECTED),
        (S.INITIALISED, S.CLOSING),
        (S.CONNECTED, S.CLOSING),
        (S.CLOSING, S.CLOSED),
        (S.CLOSED, S.INITIALISING),
    }
)

#: The moves a tpmif backend makes on its own ``state`` node.
BACKEND_MOVES: frozenset[tuple[XenbusState, XenbusState]] = frozenset(
    {
        (S.INITIALISING, S.INIT_WAIT),
        (S.INIT_WAIT, S.CONNECTED),
        (S.INIT_WAIT, S.CLOSING),  # a frontend refused
        (S.CONNECTED, S.CLOSING),
        (S.CONNECTED, S.INIT_WAIT),  # the frontend closed or re-initialised at once
        (S.CLOSING, S.INIT_WAIT),
        (S.INITIALISING, S.CLOSED),  # the toolstack removes the device ...
        (S.INIT_WAIT, S.CLOSED),
        (S.CONNECTED, S.CLOSED),
        (S.CLOSING, S.CLOSED),  # ... from any state
    }
)


def parse_state(raw: bytes | None) -> XenbusState:
    """A ``state`` node's value; missing, garbled or out of range reads as Unknown
    (the node is the peer's to write: hostile input)."""
    if raw is None or not raw.strip().isdigit() or len(raw.strip()) > 3:
        return XenbusState.UNKNOWN
    value = int(raw.strip())
    return XenbusState(value) if value in XenbusState._value2member_map_ else XenbusState.UNKNOWN
