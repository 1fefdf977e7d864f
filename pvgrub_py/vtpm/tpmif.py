"""The tpmif protocol, sans I/O: a frontend core and a backend core.

Each core is a state machine over three things: our xenbus state, the
peer's xenbus state (`pvgrub_py.vtpm.handshake`, xen/include/public/io/
xenbus.h) and the shared page's state (``struct tpmif_shared_page``,
``enum tpmif_state``: TPMIF_STATE_IDLE/SUBMIT/FINISH/CANCEL, xen/include/
public/io/tpmif.h).  Events go in (`receive`), actions come out; the caller
(a driver) owns xenstore, grants, event channels, threads and clocks, and
performs the actions in order.  This is h11's design (``h11/_state.py``):
the protocol can be driven without a hypervisor, and a hypothesis state
machine wires a frontend core to a backend core in memory.

The page discipline (tpmif.h): only the frontend writes SUBMIT and CANCEL,
only the backend writes IDLE and FINISH; a packet is written before its
state, the state last.  A frontend that gives up on a command writes
CANCEL; the backend acknowledges with IDLE, or with FINISH when the answer
was already on its way, and the frontend must not send again before one of
the two (Linux ``xen-tpmfront.c`` ``vtpm_cancel`` and ``wait_for_tpm_stat``).

Everything the peer writes is hostile: page states, lengths, ring
references.  An event that makes no sense in the current state is ignored
or refused with `Fail`, never trusted.

The frontend core does not know where its commands come from (a measuring
bootloader's `TpmClient`, or the guest-side bridge to a vtpm proxy): a
`Command` event is all it sees.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from pvgrub_py.tpm import rc, tpm2, tpm12
from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.tpm.header import HEADER_SIZE
from pvgrub_py.tpm.transport import response_size
from pvgrub_py.vtpm.handshake import BACKEND_MOVES, FRONTEND_MOVES, XenbusState
from pvgrub_py.vtpm.shared_page import MAX_PACKET, TpmifState
from pvgrub_py.vtpm.tpmif_events import (
    Action,
    CloseRequested,
    Command,
    Deliver,
    DeviceFound,
    DeviceRemoved,
    Event,
    Execute,
    ExecutionFailed,
    Fail,
    MapRing,
    Notify,
    PacketUnreadable,
    PageKicked,
    PeerStateChanged,
    PublishFeatures,
    PublishRing,
    ReadPacket,
    RespondWith,
    Response,
    RingFailed,
    RingMapped,
    SetPageState,
    Submit,
    TimedOut,
    ToolstackRemoves,
    UnmapRing,
    UnpublishRing,
    WriteReady,
    WriteState,
)

S = XenbusState

# The actions without fields, made once (they are immutable): a core emits
# several per command.
NOTIFY = Notify()
READ_PACKET = ReadPacket()


class Pending(enum.Enum):
    """What a core's page is doing, as far as it knows."""

    NOTHING = "nothing"
    COMMAND = "command"  # frontend: submitted, awaiting FINISH; backend: executing
    READING = "reading"  # a ReadPacket is out
    CANCELLING = "cancelling"  # frontend: CANCEL written, awaiting FINISH or IDLE


#: TPM localities are 0 to 4 (TCG PC Client Platform TPM Profile, "Locality").
MAX_LOCALITY = 4

_PAGE_STATES = {int(s): s for s in TpmifState}


def _page_state(value: int) -> TpmifState | None:
    return _PAGE_STATES.get(value)


def _decimal(raw: bytes | None, limit: int) -> int | None:
    """A xenstore number the peer wrote: decimal digits, at most ``limit``."""
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= limit else None


@dataclass
class _Core:
    """What both cores hold: (our state, peer state, page state)."""

    state: XenbusState = S.INITIALISING
    peer: XenbusState = S.UNKNOWN
    page: TpmifState = TpmifState.IDLE
    pending: Pending = Pending.NOTHING
    actions: list[Action] = field(default_factory=list)

    _moves: ClassVar[frozenset[tuple[XenbusState, XenbusState]]] = frozenset()

    def _move(self, state: XenbusState) -> None:
        """Emit a state write, only along a legal move; a repeat is no write."""
        if state == self.state:
            return
        if (self.state, state) not in self._moves:
            raise AssertionError(f"tpmif core: illegal move {self.state.name} -> {state.name}")
        self.state = state
        self.actions.append(WriteState(state))

    def _emit(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def _take(self) -> list[Action]:
        out, self.actions = self.actions, []
        return out


# -- frontend ------------------------------------------------------------------------------


@dataclass
class FrontendCore(_Core):
    """A tpmif frontend's protocol (Linux ``xen-tpmfront.c``, Mini-OS ``tpmfront.c``).

    The driver feeds the backend's state until `connected`; `Command` sends
    a command, `PageKicked` reports the page, `TimedOut` gives up on an
    answer (then the command is cancelled), `CloseRequested` closes.
    A `Fail` ends the operation the driver is waiting for; a `Deliver` is
    the answer."""

    _moves: ClassVar[frozenset[tuple[XenbusState, XenbusState]]] = FRONTEND_MOVES

    @property
    def connected(self) -> bool:
        return self.state == S.CONNECTED

    @property
    def busy(self) -> bool:
        """A command (or a cancelled one) is still with the backend."""
        return self.pending is not Pending.NOTHING

    def receive(self, event: Event) -> list[Action]:
        # The per-command events first: this runs several times a command.
        if isinstance(event, Command):
            self._command(event.data, event.locality)
        elif isinstance(event, PageKicked):
            self._kicked(event.state)
        elif isinstance(event, Response):
            self._response(event.data)
        elif isinstance(event, PeerStateChanged):
            self._peer(event)
        elif isinstance(event, PacketUnreadable):
            if self.pending is Pending.READING:
                self.pending = Pending.NOTHING
                self._emit(Fail(event.reason, protocol=True))
        elif isinstance(event, TimedOut):
            self._timed_out()
        elif isinstance(event, CloseRequested):
            self._close()
        return self._take()

    def _peer(self, event: PeerStateChanged) -> None:
        self.peer = event.state
        if self.state == S.INITIALISING and event.state == S.INIT_WAIT:
            # The backend has published feature-protocol-v2 by InitWait.  Not on
            # Connected: that backend still serves an earlier ring (Linux
            # xen-tpmfront talks to its backend on InitWait alone).
            self.page, self.pending = TpmifState.IDLE, Pending.NOTHING  # a fresh page
            self._emit(PublishRing())
            self._move(S.INITIALISED)
        elif self.state == S.INITIALISED and event.state == S.CONNECTED:
            if (event.protocol_v2 or b"").strip() != b"1":
                self._emit(Fail("protocol v2 required"))
            else:
                self._move(S.CONNECTED)
        elif self.state == S.INITIALISED and event.state in (S.CLOSING, S.CLOSED, S.UNKNOWN):
            self._emit(Fail(f"the backend went to {event.state.name} instead of connecting"))
        elif self.state == S.CONNECTED and event.state not in (S.CONNECTED, S.INITIALISED):
            was = self.pending
            self.pending = Pending.NOTHING
            if was is not Pending.NOTHING:
                self._emit(Fail(f"the backend went away ({event.state.name})"))
        elif self.state == S.CLOSED and event.state in (S.CLOSED, S.INIT_WAIT, S.UNKNOWN):
            self._move(S.INITIALISING)  # ready for a later frontend

    def _command(self, data: bytes, locality: int = 0) -> None:
        if not self.connected:
            self._emit(Fail("not connected"))
        elif self.peer != S.CONNECTED:
            self._emit(Fail(f"the backend is {self.peer.name}, not connected"))
        elif self.pending is Pending.CANCELLING:
            self._emit(Fail("still busy with a cancelled command"))
        elif self.pending is not Pending.NOTHING:
            self._emit(Fail("busy with another command"))
        elif len(data) < HEADER_SIZE:
            self._emit(Fail(f"refusing to send a {len(data)}-byte TPM command"))
        elif len(data) > MAX_PACKET:
            self._emit(Fail(f"{len(data)}-byte packet exceeds the {MAX_PACKET}-byte tpmif page"))
        elif not 0 <= locality <= MAX_LOCALITY:
            self._emit(Fail(f"locality {locality} is not 0 to {MAX_LOCALITY}"))
        else:
            self.pending = Pending.COMMAND
            self.page = TpmifState.SUBMIT
            self._emit(Submit(data, locality), NOTIFY)

    def _kicked(self, value: int) -> None:
        state = _page_state(value)
        if state not in (TpmifState.FINISH, TpmifState.IDLE):
            return  # our own SUBMIT/CANCEL, or garbage: the backend has not answered
        self.page = state
        if self.pending is Pending.COMMAND:
            if state == TpmifState.FINISH:
                self.pending = Pending.READING
                self._emit(READ_PACKET)
            else:
                self.pending = Pending.NOTHING
                self._emit(Fail("the backend cancelled the command"))
        elif self.pending is Pending.CANCELLING:
            self.pending = Pending.NOTHING  # acknowledged, or answered late: dropped

    def _response(self, data: bytes) -> None:
        if self.pending is not Pending.READING:
            return  # nothing asked for it
        self.pending = Pending.NOTHING
        try:
            ok = len(data) >= HEADER_SIZE and response_size(data) == len(data)
        except TpmProtocolError:
            ok = False
        if ok:
            self._emit(Deliver(data))
        else:
            self._emit(Fail(f"malformed {len(data)}-byte answer", protocol=True))

    def _timed_out(self) -> None:
        if self.pending in (Pending.COMMAND, Pending.READING):
            self.pending = Pending.CANCELLING
            self.page = TpmifState.CANCEL
            self._emit(SetPageState(TpmifState.CANCEL), NOTIFY)
        elif self.state == S.CLOSED:
            self._move(S.INITIALISING)  # the backend never answered the close
        elif self.state == S.INITIALISING or self.state == S.INITIALISED:
            self._emit(Fail(f"the backend stayed {self.peer.name}"))

    def _close(self) -> None:
        if self.state not in (S.CONNECTED, S.INITIALISED):
            return
        self.pending = Pending.NOTHING
        self._move(S.CLOSING)
        self._emit(UnpublishRing())
        self._move(S.CLOSED)  # Initialising once the backend is seen to let go


# -- backend -------------------------------------------------------------------------------


def error_response(tpm_version: str | None, command: bytes) -> bytes:
    """A failure answer in the TPM's own version: TPM_FAIL (1.2) or
    TPM_RC_FAILURE (2.0), built by the TPM codecs.  With the version unknown
    (a backend given a bare transport), the command's tag decides."""
    if tpm_version is None:
        tpm_version = "2.0" if command[:2] in (b"\x80\x01", b"\x80\x02") else "1.2"
    if tpm_version == "2.0":
        return tpm2.encode_error_response(rc.TPM2_RC_FAILURE)
    return tpm12.encode_error_response(rc.TPM12_FAIL)


@dataclass
class BackendCore(_Core):
    """A tpmif backend's protocol for one device (Mini-OS ``tpmback.c``).

    ``tpm_version`` ("1.2" or "2.0") is the version of the TPM behind the
    device, for the error answers the backend makes itself: a failed TPM, an
    unreadable packet is refused with IDLE, an answer larger than the page is
    replaced by an error answer (never cut short).  Commands are executed one
    at a time, each once; a device that is not connected executes nothing."""

    tpm_version: str | None = None
    max_packet: int = MAX_PACKET
    _token: int = 0
    _ring: int = 0  # the MapRing token in flight, 0 for none
    _offer: tuple[int, int] | None = None  # (ring-ref, port) in flight or mapped
    mapped: bool = False
    gone: bool = False  # the device was removed: nothing more is written for it
    cancel_requested: bool = False
    _command: bytes = b""

    _moves: ClassVar[frozenset[tuple[XenbusState, XenbusState]]] = BACKEND_MOVES

    @property
    def connected(self) -> bool:
        return self.state == S.CONNECTED and self.mapped

    @property
    def ring(self) -> tuple[int, int] | None:
        """The (ring-ref, event-channel) the device is connected on."""
        return self._offer if self.mapped else None

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def receive(self, event: Event) -> list[Action]:
        if self.gone:
            return []  # a removed device: a late event must not recreate its nodes
        # The per-command events first: this runs several times a command.
        if isinstance(event, PageKicked):
            self._kicked(event.state)
        elif isinstance(event, Command):
            self._execute(event.data)
        elif isinstance(event, Response):
            self._answer(event.token, event.data, None)
        elif isinstance(event, DeviceFound):
            if self.state == S.INITIALISING:
                self._emit(PublishFeatures())
                self._move(S.INIT_WAIT)
        elif isinstance(event, PeerStateChanged):
            self._peer(event)
        elif isinstance(event, RingMapped):
            self._ring_mapped(event.token)
        elif isinstance(event, RingFailed):
            if self._ring and event.token == self._ring:
                self._ring, self._offer = 0, None
                self._refuse(event.reason)
        elif isinstance(event, ToolstackRemoves):
            self._drop()
            if self.state == S.CLOSED:
                # The toolstack wrote over our Closed (libxl writes Closing after
                # online = 0): say it again, libxl waits for it.
                self._emit(WriteState(S.CLOSED))
            self._move(S.CLOSED)
        elif isinstance(event, DeviceRemoved):
            self._drop()
            self.gone = True
        elif isinstance(event, PacketUnreadable):
            if self.pending is Pending.READING:
                self.pending = Pending.NOTHING
                self._idle(Fail(event.reason))
        elif isinstance(event, ExecutionFailed):
            self._answer(event.token, None, event.reason)
        return self._take()

    def _peer(self, event: PeerStateChanged) -> None:
        self.peer = event.state
        if self.state == S.CLOSED:
            return  # the toolstack is removing the device
        if event.state in (S.INITIALISED, S.CONNECTED):
            ref = _decimal(event.ring_ref, 0xFFFFFFFF)
            port = _decimal(event.event_channel, 0xFFFFFFFF)
            if (self.mapped or self._ring) and event.state == S.INITIALISED:
                if ref is None or port is None or (ref, port) == self._offer:
                    return None  # the ring we hold (or are mapping), or nothing new
                # A frontend that re-initialised on a new ring while we did not look
                # (its Closing/Closed/Initialising coalesced away): let the old go.
                self._drop()
                self._move(S.INIT_WAIT)
            if self.mapped or self._ring or self.state != S.INIT_WAIT:
                return None
            if ref is None or port is None:
                return self._refuse("ring-ref or event-channel missing or not a number")
            if (event.protocol_v2 or b"").strip() != b"1":
                return self._refuse("frontend does not speak tpmif protocol v2")
            self._ring = self._next_token()
            self._offer = (ref, port)
            self._emit(MapRing(self._ring, ref, port))
        elif event.state == S.CLOSING:
            if self._ring:  # a connect still in flight is not wanted any more
                self._ring, self._offer = 0, None
            if self.state != S.INITIALISING:
                self._move(S.CLOSING)
        elif event.state == S.CLOSED or (
            event.state == S.INITIALISING and (self.mapped or self._ring)
        ):
            self._drop()
            if self.state != S.INITIALISING:
                self._move(S.INIT_WAIT)
        return None

    def _ring_mapped(self, token: int) -> None:
        if not self._ring or token != self._ring or self.state != S.INIT_WAIT:
            self._emit(UnmapRing())  # a connect the frontend or toolstack overtook
            return
        self._ring = 0
        self.mapped = True
        self.page = TpmifState.IDLE
        self._emit(WriteReady())
        self._move(S.CONNECTED)

    def _refuse(self, why: str) -> None:
        self._emit(Fail(why))
        self._move(S.CLOSING)

    def _drop(self) -> None:
        """Forget the ring and whatever ran on it: a late answer is not written."""
        self._ring = 0
        self._offer = None
        self.pending = Pending.NOTHING
        self.cancel_requested = False
        if self.mapped:
            self.mapped = False
            self._emit(UnmapRing())

    def _kicked(self, value: int) -> None:
        if not self.connected:
            return
        state = _page_state(value)
        if state == TpmifState.CANCEL:
            if self.pending is Pending.NOTHING:
                self._idle()  # nothing running: acknowledge at once
            else:
                self.cancel_requested = True  # acknowledged once the TPM returns
        elif state == TpmifState.SUBMIT and self.pending is Pending.NOTHING:
            self.page = TpmifState.SUBMIT
            self.pending = Pending.READING
            self.cancel_requested = False
            self._emit(READ_PACKET)

    def _idle(self, *before: Action) -> None:
        self.page = TpmifState.IDLE
        self._emit(*before, SetPageState(TpmifState.IDLE), NOTIFY)

    def _execute(self, data: bytes) -> None:
        if self.pending is not Pending.READING or not self.connected:
            return  # nothing was read: no command to execute
        if self.cancel_requested:  # cancelled before it ran: never run it
            self.pending = Pending.NOTHING
            self.cancel_requested = False
            self._idle()
            return
        self.pending = Pending.COMMAND
        self._command = data
        self._emit(Execute(self._next_token(), data))

    def _answer(self, token: int, data: bytes | None, failure: str | None) -> None:
        if self.pending is not Pending.COMMAND or token != self._token or not self.connected:
            return  # a stale answer (the ring was dropped or replaced meanwhile)
        self.pending = Pending.NOTHING
        if self.cancel_requested:
            self.cancel_requested = False
            note = f"TPM instance failed: {failure}" if failure is not None else None
            self._idle(*([Fail(note)] if note else []))
            return
        notes: list[Action] = []
        if failure is not None:
            notes.append(Fail(f"TPM instance failed: {failure}"))
            data = error_response(self.tpm_version, self._command)
        elif data is None or len(data) > self.max_packet:
            size = 0 if data is None else len(data)
            notes.append(
                Fail(
                    f"{size}-byte TPM answer exceeds the {self.max_packet}-byte tpmif page; "
                    "answered with an error instead"
                )
            )
            data = error_response(self.tpm_version, self._command)
        self.page = TpmifState.FINISH
        self._emit(*notes, RespondWith(data), NOTIFY)
