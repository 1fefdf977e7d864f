"""The tpmif protocol's vocabulary: the events a driver gives a core, and the
actions a core asks of its driver (`pvgrub_py.vtpm.tpmif` holds the cores).

Plain immutable values, as h11's ``_events.py``: a driver never passes a
handle, a page or a socket in, and a core never gets one out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvgrub_py.vtpm.handshake import XenbusState
from pvgrub_py.vtpm.shared_page import TpmifState

# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStateChanged:
    """The peer's ``state`` node, as read (garbage reads as Unknown).

    A backend driver reading a frontend in Initialised or Connected also
    passes the raw ``ring-ref``, ``event-channel`` and ``feature-protocol-v2``
    nodes; a frontend driver reading a Connected backend passes its
    ``feature-protocol-v2``.  Raw bytes: the core checks them."""

    state: XenbusState
    protocol_v2: bytes | None = None
    ring_ref: bytes | None = None
    event_channel: bytes | None = None


@dataclass(frozen=True)
class PageKicked:
    """The page's state byte, as read (any value 0-255: the peer writes it)."""

    state: int


@dataclass(frozen=True)
class Command:
    """A TPM command: for a frontend, one to send, at ``locality`` (the page's
    locality byte); for a backend, the packet on the page after a `ReadPacket`."""

    data: bytes
    locality: int = 0


@dataclass(frozen=True)
class Response:
    """A TPM answer: for a backend, from the TPM after `Execute` (with its
    token); for a frontend, the packet on the page after a `ReadPacket`."""

    data: bytes
    token: int = 0


@dataclass(frozen=True)
class PacketUnreadable:
    """`ReadPacket` found a length or layout the page cannot hold."""

    reason: str


@dataclass(frozen=True)
class ExecutionFailed:
    """The TPM behind a backend failed to answer `Execute` ``token``."""

    token: int
    reason: str


@dataclass(frozen=True)
class TimedOut:
    """A frontend's wait (for an answer, a cancel, or a close) ran out."""


@dataclass(frozen=True)
class CloseRequested:
    """A frontend's user closes the device."""


@dataclass(frozen=True)
class DeviceFound:
    """A backend adopts a device the toolstack created."""


@dataclass(frozen=True)
class RingMapped:
    """A backend's `MapRing` ``token`` succeeded (grant mapped, channel bound,
    the connect policy done)."""

    token: int


@dataclass(frozen=True)
class RingFailed:
    """A backend's `MapRing` ``token`` failed."""

    token: int
    reason: str


@dataclass(frozen=True)
class ToolstackRemoves:
    """The toolstack wrote ``online = 0`` (libxl ``libxl__initiate_device_generic_remove``)."""


@dataclass(frozen=True)
class DeviceRemoved:
    """Both halves of the device are gone from xenstore."""


Event = (
    PeerStateChanged
    | PageKicked
    | Command
    | Response
    | PacketUnreadable
    | ExecutionFailed
    | TimedOut
    | CloseRequested
    | DeviceFound
    | RingMapped
    | RingFailed
    | ToolstackRemoves
    | DeviceRemoved
)

# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteState:
    """Write our xenbus ``state`` node."""

    state: XenbusState


@dataclass(frozen=True)
class PublishRing:
    """Frontend: share a page and allocate an unbound channel for the backend;
    write ``ring-ref``, ``event-channel`` and ``feature-protocol-v2 = 1``."""


@dataclass(frozen=True)
class UnpublishRing:
    """Frontend: remove ``ring-ref`` and ``event-channel``."""


@dataclass(frozen=True)
class PublishFeatures:
    """Backend: write ``feature-protocol-v2 = 1``."""


@dataclass(frozen=True)
class MapRing:
    """Backend: map grant ``ring_ref``, bind the frontend's ``port``, run the
    connect policy; answer with `RingMapped` or `RingFailed` (same token)."""

    token: int
    ring_ref: int
    port: int


@dataclass(frozen=True)
class UnmapRing:
    """Backend: unmap the page and unbind the channel (nothing if not mapped)."""


@dataclass(frozen=True)
class WriteReady:
    """Backend: write ``ready = 1`` (Mini-OS tpmback does, before Connected)."""


@dataclass(frozen=True)
class Submit:
    """Frontend: write ``command`` and its ``locality`` to the page, then the
    state SUBMIT."""

    command: bytes
    locality: int = 0


@dataclass(frozen=True)
class RespondWith:
    """Backend: write ``response`` to the page, then the state FINISH."""

    response: bytes


@dataclass(frozen=True)
class SetPageState:
    """Write the page's state byte alone (CANCEL by a frontend, IDLE by a backend)."""

    state: TpmifState


@dataclass(frozen=True)
class ReadPacket:
    """Read the packet on the page; answer with `Command` (backend),
    `Response` (frontend) or `PacketUnreadable`."""


@dataclass(frozen=True)
class Notify:
    """Kick the peer through the event channel."""


@dataclass(frozen=True)
class Execute:
    """Backend: run ``command`` on the TPM; answer with `Response` or
    `ExecutionFailed` carrying ``token``."""

    token: int
    command: bytes


@dataclass(frozen=True)
class Deliver:
    """Frontend: the answer to the command the user sent."""

    response: bytes


@dataclass(frozen=True)
class Fail:
    """Something the driver must report: for a frontend, the pending operation
    fails (``protocol``: the peer broke the protocol, rather than being slow,
    gone or busy); for a backend, a line for the log and the device's errors
    (the core has already decided what the guest sees)."""

    reason: str
    protocol: bool = False


Action = (
    WriteState
    | PublishRing
    | UnpublishRing
    | PublishFeatures
    | MapRing
    | UnmapRing
    | WriteReady
    | Submit
    | RespondWith
    | SetPageState
    | ReadPacket
    | Notify
    | Execute
    | Deliver
    | Fail
)
