"""The sans-I/O tpmif cores, wired to each other in memory, driven by hypothesis.

No threads, no hypervisor: a `FrontendCore` and a `BackendCore` share a
4 KiB page (the real `SharedPage` codec over a bytearray), each other's
xenbus ``state`` node and an event-channel kick flag.  Hypothesis picks the
interleaving: which side sees the other's state when, when a kick is taken,
when the TPM answers (or fails, or answers too much), when the guest times
out, closes, or the toolstack removes the device.

The legal moves below are written from xen/include/public/io/xenbus.h and
the Linux/Mini-OS drivers, independently of `pvgrub_py.vtpm.handshake`.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pvgrub_py.vtpm.handshake import XenbusState
from pvgrub_py.vtpm.shared_page import MAX_PACKET, SharedPage, TpmifState
from pvgrub_py.vtpm.tpmif import BackendCore, FrontendCore
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

X = XenbusState
FRONTEND_LEGAL = {
    (X.INITIALISING, X.INITIALISED),
    (X.INITIALISED, X.CONNECTED),
    (X.INITIALISED, X.CLOSING),
    (X.CONNECTED, X.CLOSING),
    (X.CLOSING, X.CLOSED),
    (X.CLOSED, X.INITIALISING),
}
BACKEND_LEGAL = {
    (X.INITIALISING, X.INIT_WAIT),
    (X.INIT_WAIT, X.CONNECTED),
    (X.INIT_WAIT, X.CLOSING),
    (X.CONNECTED, X.CLOSING),
    (X.CONNECTED, X.INIT_WAIT),
    (X.CLOSING, X.INIT_WAIT),
} | {(s, X.CLOSED) for s in (X.INITIALISING, X.INIT_WAIT, X.CONNECTED, X.CLOSING)}

#: TPM_FAIL in a TPM 1.2 response (TPM Main Part 2 section 16: code 9), by hand.
TPM12_FAIL_ANSWER = bytes.fromhex("00c4" "0000000a" "00000009")
#: TPM_RC_FAILURE (TPM 2.0 Part 2 section 6.6.3: 0x101), tag TPM_ST_NO_SESSIONS.
TPM2_FAILURE_ANSWER = bytes.fromhex("8001" "0000000a" "00000101")


def command(serial: int) -> bytes:
    """A TPM 1.2 command that names itself (its body is the serial)."""
    return struct.pack(">HII", 0x00C1, 14, 0x14) + struct.pack(">I", serial)


def answer(serial: int) -> bytes:
    return struct.pack(">HII", 0x00C4, 14, 0) + struct.pack(">I", serial)


def serial_of(cmd: bytes) -> int:
    return int(struct.unpack_from(">I", cmd, 10)[0])


class Wired(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # One page per ring the frontend shares; each side touches the one it holds.
        self.pages: dict[int, SharedPage] = {}
        self.fe_ring = 0  # the ring-ref the frontend published last
        self.be_ring = 0  # the ring-ref the backend has mapped, 0 for none
        self.fe = FrontendCore()
        self.be = BackendCore(tpm_version="1.2")
        self.fe_state, self.be_state = X.INITIALISING, X.INITIALISING
        self.fe_moves: list[tuple[XenbusState, XenbusState]] = []
        self.be_moves: list[tuple[XenbusState, XenbusState]] = []
        self.ring_published = False
        self.maps: list[MapRing] = []  # in flight
        self.executing: list[Execute] = []  # commands with the TPM
        self.be_kick = self.fe_kick = False
        self.serial = 0
        self.fe_waiting: int | None = None  # the command the guest awaits
        self.answers: dict[int, bytes] = {}  # serial -> what the TPM's answer became
        self.executed: set[int] = set()
        self.delivered: list[int] = []
        self.fe_failures: list[str] = []
        self.be_failures: list[str] = []
        self.removed = False
        self.perform_be(self.be.receive(DeviceFound()))

    @property
    def mapped(self) -> bool:
        return self.be_ring != 0

    @property
    def fe_page(self) -> SharedPage:
        return self.pages[self.fe_ring]

    @property
    def be_page(self) -> SharedPage:
        return self.pages[self.be_ring]

    # -- performing actions, as a driver would -------------------------------------------

    def perform_fe(self, actions: list[Action]) -> None:
        follow: list[Event] = []
        for a in actions:
            if isinstance(a, WriteState):
                self.fe_moves.append((self.fe_state, a.state))
                self.fe_state = a.state
            elif isinstance(a, PublishRing):
                self.fe_ring += 1
                self.pages[self.fe_ring] = SharedPage(memoryview(bytearray(4096)))
                self.ring_published = True
            elif isinstance(a, UnpublishRing):
                self.ring_published = False
            elif isinstance(a, Submit):
                assert self.ring_published and self.fe_state == X.CONNECTED
                assert self.fe_page.state not in (TpmifState.SUBMIT, TpmifState.CANCEL), (
                    "a command submitted over one the backend still holds"
                )
                self.fe_page.write_packet(a.command)
                self.fe_page.state = TpmifState.SUBMIT
            elif isinstance(a, SetPageState):
                assert a.state == TpmifState.CANCEL  # the frontend writes SUBMIT/CANCEL only
                self.fe_page.state = a.state
            elif isinstance(a, Notify):
                self.be_kick = True
            elif isinstance(a, ReadPacket):
                follow.append(Response(self.fe_page.read_packet()))
            elif isinstance(a, Deliver):
                assert self.fe_waiting is not None, "an answer with no command awaiting it"
                assert a.response == self.answers.get(self.fe_waiting), (
                    f"command {self.fe_waiting} got an answer that is not its own"
                )
                self.delivered.append(self.fe_waiting)
                self.fe_waiting = None
            elif isinstance(a, Fail):
                self.fe_failures.append(a.reason)
                self.fe_waiting = None
            else:
                raise AssertionError(f"frontend core asked for {a!r}")
        for event in follow:
            self.perform_fe(self.fe.receive(event))

    def perform_be(self, actions: list[Action]) -> None:
        follow: list[Event] = []
        for a in actions:
            if isinstance(a, WriteState):
                self.be_moves.append((self.be_state, a.state))
                self.be_state = a.state
            elif isinstance(a, PublishFeatures | WriteReady):
                pass
            elif isinstance(a, MapRing):
                assert a.ring_ref in self.pages and a.port == 3
                self.maps.append(a)
            elif isinstance(a, UnmapRing):
                self.be_ring = 0
            elif isinstance(a, ReadPacket):
                assert self.mapped
                follow.append(Command(self.be_page.read_packet()))
            elif isinstance(a, Execute):
                assert self.mapped and self.be_state == X.CONNECTED, "a closed device executes"
                serial = serial_of(a.command)
                assert serial not in self.executed, f"command {serial} executed twice"
                self.executed.add(serial)
                self.executing.append(a)
            elif isinstance(a, RespondWith):
                assert self.mapped, "an answer written to a page we do not hold"
                assert len(a.response) <= MAX_PACKET
                self.be_page.write_packet(a.response)
                self.be_page.state = TpmifState.FINISH
            elif isinstance(a, SetPageState):
                assert self.mapped and a.state == TpmifState.IDLE
                self.be_page.state = a.state
            elif isinstance(a, Notify):
                assert self.mapped
                self.fe_kick = True
            elif isinstance(a, Fail):
                self.be_failures.append(a.reason)
            else:
                raise AssertionError(f"backend core asked for {a!r}")
        for event in follow:
            self.perform_be(self.be.receive(event))

    @initialize(connected=st.booleans())
    def start(self, connected: bool) -> None:
        """Half the runs start from a connected device (the handshake in the
        plain order), so that random steps spend their time on commands."""
        if connected:
            self.frontend_sees_backend()
            self.backend_sees_frontend()
            self.ring_mapping_completes()
            self.frontend_sees_backend()
            assert (self.fe_state, self.be_state) == (X.CONNECTED, X.CONNECTED)

    @rule()
    def everyone_catches_up(self) -> None:
        """A burst of progress: every pending notification, state and mapping
        seen, in the plain order (a connect, a close or a reconnect completes)."""
        for _ in range(3):
            self.frontend_sees_backend()
            self.backend_sees_frontend()
            while self.maps:
                self.ring_mapping_completes()
            if self.be_kick:
                self.backend_takes_a_kick()
            while self.executing:
                self.tpm_finishes("answer")
            if self.fe_kick and self.ring_published:
                self.frontend_takes_a_kick()

    # -- xenstore: each side sees the other's state node, whenever -----------------------

    @rule()
    def backend_sees_frontend(self) -> None:
        ring = self.ring_published and self.fe_state in (X.INITIALISED, X.CONNECTED)
        event = PeerStateChanged(
            self.fe_state if not self.removed else X.UNKNOWN,
            protocol_v2=b"1" if ring else None,
            ring_ref=str(self.fe_ring).encode() if ring else None,
            event_channel=b"3" if ring else None,
        )
        self.perform_be(self.be.receive(event))

    @rule()
    def frontend_sees_backend(self) -> None:
        self.perform_fe(self.fe.receive(PeerStateChanged(self.be_state, protocol_v2=b"1")))

    @precondition(lambda self: bool(self.maps))
    @rule(fails=st.integers(0, 7))
    def ring_mapping_completes(self, fails: int = 1) -> None:
        job = self.maps.pop(0)
        if fails:
            self.be_ring = job.ring_ref  # the driver maps before it reports
            self.perform_be(self.be.receive(RingMapped(job.token)))
        else:
            self.perform_be(self.be.receive(RingFailed(job.token, "EINVAL")))

    # -- the guest ------------------------------------------------------------------------

    @rule()
    def guest_sends_a_command(self) -> None:
        self.serial += 1
        before, waiting = len(self.fe_failures), self.fe_waiting
        actions = self.fe.receive(Command(command(self.serial)))
        if any(isinstance(a, Submit) for a in actions):
            assert waiting is None, "a second command while one is out"
            self.fe_waiting = self.serial
            self.perform_fe(actions)
        else:
            self.perform_fe(actions)
            assert len(self.fe_failures) == before + 1  # refused, and said so
            self.fe_waiting = waiting  # the refusal ends no other command

    @precondition(lambda self: self.fe_kick and self.ring_published)
    @rule()
    def frontend_takes_a_kick(self) -> None:
        self.fe_kick = False
        self.perform_fe(self.fe.receive(PageKicked(self.fe_page.state)))

    @rule(which=st.sampled_from(["frontend", "backend"]))
    def a_kick_comes_twice(self, which: str) -> None:
        """Event channels coalesce and repeat: a driver that polls its page also
        gets the notify that came with what it already served."""
        if which == "frontend":
            self.fe_kick = True
        else:
            self.be_kick = True

    # Timeouts, closes and removals end what is interesting (a command, the
    # connection): they fire on one draw in a few, so runs get somewhere first.
    @rule(now=st.integers(0, 3))
    def guest_times_out(self, now: int = 0) -> None:
        if now:
            return
        self.perform_fe(self.fe.receive(TimedOut()))
        if self.fe.busy:
            self.fe_waiting = None  # the driver raised "no answer; cancelled"

    @rule(now=st.integers(0, 7))
    def guest_closes(self, now: int = 0) -> None:
        if now:
            return
        self.perform_fe(self.fe.receive(CloseRequested()))
        if self.fe_state != X.CONNECTED:
            self.fe_waiting = None

    # -- the backend's side ---------------------------------------------------------------

    @precondition(lambda self: self.be_kick)
    @rule()
    def backend_takes_a_kick(self) -> None:
        self.be_kick = False
        if self.mapped:
            self.perform_be(self.be.receive(PageKicked(self.be_page.state)))

    @precondition(lambda self: bool(self.executing))
    @rule(how=st.sampled_from(["answer", "fail", "too-long"]))
    def tpm_finishes(self, how: str) -> None:
        job = self.executing.pop(0)
        serial = serial_of(job.command)
        failures = len(self.be_failures)
        if how == "answer":
            event: Event = Response(answer(serial), job.token)
            self.answers[serial] = answer(serial)
        elif how == "fail":
            event = ExecutionFailed(job.token, "swtpm: connection reset")
            self.answers[serial] = TPM12_FAIL_ANSWER
        else:
            event = Response(answer(serial) + bytes(MAX_PACKET), job.token)
            self.answers[serial] = TPM12_FAIL_ANSWER
        actions = self.be.receive(event)
        self.perform_be(actions)
        if how != "answer" and any(isinstance(a, RespondWith) for a in actions):
            assert len(self.be_failures) == failures + 1  # a log line for every error answer
        if how == "too-long":
            assert all(
                len(a.response) <= MAX_PACKET for a in actions if isinstance(a, RespondWith)
            )

    @rule(now=st.integers(0, 15))
    def toolstack_removes_the_device(self, now: int = 0) -> None:
        if now:
            return
        self.perform_be(self.be.receive(ToolstackRemoves()))
        self.removed = True

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def states_move_legally(self) -> None:
        for move in self.fe_moves:
            assert move in FRONTEND_LEGAL, f"frontend moved {move[0].name} -> {move[1].name}"
        for move in self.be_moves:
            if move == (X.CLOSED, X.CLOSED):
                continue  # Closed said again, for a toolstack that wrote over it
            assert move in BACKEND_LEGAL, f"backend moved {move[0].name} -> {move[1].name}"

    @invariant()
    def every_delivery_had_a_command(self) -> None:
        assert len(self.delivered) == len(set(self.delivered))
        assert set(self.delivered) <= self.executed

    @invariant()
    def the_backend_serves_the_ring_it_mapped(self) -> None:
        if self.be.connected:
            assert self.be.ring == (self.be_ring, 3)

    @invariant()
    def a_removed_device_stays_closed(self) -> None:
        if self.removed:
            assert self.be_state == X.CLOSED and not self.mapped and not self.be.connected
            assert not self.be.receive(PageKicked(TpmifState.SUBMIT))


WiredTest = Wired.TestCase
WiredTest.settings = settings(max_examples=500, stateful_step_count=80, deadline=None)


def test_a_happy_path_reaches_an_answer() -> None:
    """The rules can reach the interesting states (the machine is not vacuous)."""
    w = Wired()
    w.frontend_sees_backend()  # InitWait: share the ring, Initialised
    w.backend_sees_frontend()  # MapRing
    w.ring_mapping_completes()  # Connected
    w.frontend_sees_backend()
    assert (w.fe_state, w.be_state) == (X.CONNECTED, X.CONNECTED)
    w.guest_sends_a_command()
    w.backend_takes_a_kick()
    w.tpm_finishes("answer")
    w.frontend_takes_a_kick()
    assert w.delivered == [1]
    w.guest_sends_a_command()
    w.backend_takes_a_kick()
    w.tpm_finishes("too-long")
    w.frontend_takes_a_kick()
    assert w.delivered == [1, 2] and "exceeds the 4088-byte" in w.be_failures[-1]
    w.guest_closes()
    w.backend_sees_frontend()
    w.frontend_sees_backend()
    assert (w.fe_state, w.be_state) == (X.INITIALISING, X.INIT_WAIT)


def test_a_late_answer_is_not_taken_for_the_next_one() -> None:
    w = Wired()
    w.frontend_sees_backend()
    w.backend_sees_frontend()
    w.ring_mapping_completes()
    w.frontend_sees_backend()
    w.guest_sends_a_command()
    w.backend_takes_a_kick()
    w.guest_times_out()  # CANCEL while the TPM runs command 1
    w.backend_takes_a_kick()
    w.guest_sends_a_command()  # refused: the cancelled command is still out
    assert w.fe_failures[-1] == "still busy with a cancelled command"
    w.tpm_finishes("answer")  # IDLE, acknowledging the cancel
    assert w.fe_page.state == TpmifState.IDLE
    w.frontend_takes_a_kick()
    w.guest_sends_a_command()
    w.backend_takes_a_kick()
    w.tpm_finishes("answer")
    w.frontend_takes_a_kick()
    assert w.delivered == [3] and w.executed == {1, 3}


# -- the backend core alone, against a hostile frontend ------------------------------------

hostile_events = st.one_of(
    st.builds(
        PeerStateChanged,
        st.sampled_from(list(XenbusState)),
        protocol_v2=st.sampled_from([None, b"1", b"0", b" 1\n"]),
        ring_ref=st.one_of(st.none(), st.binary(max_size=12), st.just(b"8")),
        event_channel=st.one_of(st.none(), st.binary(max_size=12), st.just(b"4")),
    ),
    st.builds(PageKicked, st.integers(0, 255)),
    st.builds(Command, st.binary(max_size=64)),
    st.builds(PacketUnreadable, st.just("length 5000 exceeds the page")),
    st.builds(Response, st.binary(max_size=5000), token=st.integers(0, 6)),
    st.builds(ExecutionFailed, st.integers(0, 6), st.just("gone")),
    st.builds(RingMapped, st.integers(0, 6)),
    st.builds(RingFailed, st.integers(0, 6), st.just("EINVAL")),
    st.just(ToolstackRemoves()),
    st.just(DeviceRemoved()),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(hostile_events, max_size=40), st.sampled_from([None, "1.2", "2.0"]))
def test_the_backend_core_survives_any_event_order(
    events: list[Event], version: str | None
) -> None:
    """Whatever a hostile frontend writes, in whatever order: no crash, legal
    moves only, one command at a time, nothing run or answered unconnected,
    no answer larger than the page."""
    core = BackendCore(tpm_version=version)
    state = X.INITIALISING
    executing = removed = False
    for event in [DeviceFound(), *events]:
        actions = core.receive(event)
        if removed:  # a removed device writes nothing: it would recreate its nodes
            assert actions == []
        removed = removed or isinstance(event, DeviceRemoved)
        for a in actions:
            if isinstance(a, WriteState):
                assert (state, a.state) in BACKEND_LEGAL or state == a.state == X.CLOSED
                state = a.state
            elif isinstance(a, Execute):
                assert core.connected and state == X.CONNECTED and not executing
                executing = True
            elif isinstance(a, RespondWith):
                assert core.connected and executing and len(a.response) <= MAX_PACKET
                executing = False
            elif isinstance(a, SetPageState):
                assert core.connected and a.state == TpmifState.IDLE
                executing = False
        if not core.connected:
            executing = False


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.2", TPM12_FAIL_ANSWER), ("2.0", TPM2_FAILURE_ANSWER)],
)
def test_error_answers_are_in_the_instances_version(version: str, expected: bytes) -> None:
    """A TPM 1.2 command to a TPM 2.0 instance that fails gets a TPM 2.0 answer
    (the old backend picked the version from the command's tag)."""
    core = BackendCore(tpm_version=version)
    core.receive(DeviceFound())
    (map_ring,) = core.receive(
        PeerStateChanged(X.INITIALISED, protocol_v2=b"1", ring_ref=b"8", event_channel=b"4")
    )
    assert isinstance(map_ring, MapRing)
    core.receive(RingMapped(map_ring.token))
    assert core.receive(PageKicked(TpmifState.SUBMIT)) == [ReadPacket()]
    (execute,) = core.receive(Command(command(1)))
    assert isinstance(execute, Execute)
    actions = core.receive(ExecutionFailed(execute.token, "swtpm went away"))
    assert actions[1:] == [RespondWith(expected), Notify()]
    assert isinstance(actions[0], Fail) and "swtpm went away" in actions[0].reason


# -- the frontend core's locality ----------------------------------------------------------


def connected_frontend() -> FrontendCore:
    core = FrontendCore()
    core.receive(PeerStateChanged(X.INIT_WAIT))
    core.receive(PeerStateChanged(X.CONNECTED, protocol_v2=b"1"))
    assert core.connected
    return core


def test_a_command_carries_its_locality_to_the_page() -> None:
    command = bytes.fromhex("80010000000c00000144") + b"\0\0"
    actions = connected_frontend().receive(Command(command, locality=3))
    assert actions[0] == Submit(command, 3)
    page = SharedPage(memoryview(bytearray(4096)))
    page.write_packet(command, actions[0].locality)  # type: ignore[union-attr]
    assert page.memory[5] == 3  # tpmif.h: u8 locality at offset 5, after length and state


@pytest.mark.parametrize("locality", [-1, 5, 255])
def test_a_locality_beyond_4_is_refused_before_the_page(locality: int) -> None:
    actions = connected_frontend().receive(Command(bytes(10), locality=locality))
    assert actions == [Fail(f"locality {locality} is not 0 to 4")]
