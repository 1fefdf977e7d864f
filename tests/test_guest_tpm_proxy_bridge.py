"""The guest TPM bridge's protocol (sans I/O) and the vTPM proxy's ABI, without a TPM.

Expected bytes are written out here from the TPM 2.0 specification (Part 2:
TPM_ST, TPM_RC) and Linux's include/uapi/linux/vtpm_proxy.h and
include/uapi/asm-generic/ioctl.h, not taken from the code under test.
"""

from __future__ import annotations

import struct

import pytest

from pvgrub_py.vtpm.bridge_driver import RateLimitedLog
from pvgrub_py.vtpm.proxy_bridge import (
    BridgeState,
    Forward,
    FrameRead,
    FrontendUp,
    ProxyBridge,
    Reconnect,
    Reply,
    TpmAnswered,
    TpmFailed,
    Warn,
)
from pvgrub_py.vtpm.proxy_device import NEW_DEV, VTPM_PROXY_IOC_NEW_DEV


def answer(rc: int) -> bytes:
    """A 10-byte TPM 2.0 answer: TPM_ST_NO_SESSIONS (0x8001), size 10, the code."""
    return struct.pack(">HII", 0x8001, 10, rc)


TPM_RC_SUCCESS = 0x000
TPM_RC_BAD_TAG = 0x01E
TPM_RC_FAILURE = 0x101
TPM_RC_COMMAND_SIZE = 0x142
TPM_RC_VALUE_P1 = 0x084 | 0x040 | 0x100  # format one: TPM_RC_VALUE, a parameter, number 1

#: TPM2_PCR_Read of sha256 PCR 4, as tpm2-tools sends it.
PCR_READ = struct.pack(">HII", 0x8001, 20, 0x17E) + bytes.fromhex("00000001000b03100000")


def set_locality(locality: int) -> bytes:
    """The proxy's vendor command as the kernel builds it: TPM_ST_SESSIONS, 0x20001000, u8."""
    return struct.pack(">HIIB", 0x8002, 11, 0x20001000, locality)


def replies(actions: list[object]) -> list[bytes]:
    return [a.response for a in actions if isinstance(a, Reply)]


def connected() -> ProxyBridge:
    bridge = ProxyBridge()
    assert bridge.receive(FrontendUp()) == []
    assert bridge.state is BridgeState.READY
    return bridge


# -- the ABI -------------------------------------------------------------------------------


def test_the_ioctl_number_is_iowr_0xa1_0_of_a_20_byte_struct() -> None:
    # _IOC(dir, type, nr, size): nr bits 0-7, type 8-15, size 16-29, dir 30-31;
    # _IOWR is _IOC_READ (2) | _IOC_WRITE (1); the struct is five __u32, 20 bytes.
    assert VTPM_PROXY_IOC_NEW_DEV == (3 << 30) | (20 << 16) | (0xA1 << 8) | 0x00
    assert VTPM_PROXY_IOC_NEW_DEV == 0xC014A100


def test_the_new_dev_struct_is_five_little_endian_u32() -> None:
    assert NEW_DEV.size == 20
    packed = NEW_DEV.pack(1, 2, 3, 4, 5)  # flags, tpm_num, fd, major, minor
    assert packed == bytes.fromhex("01000000" "02000000" "03000000" "04000000" "05000000")
    assert NEW_DEV.unpack(packed) == (1, 2, 3, 4, 5)


# -- SET_LOCALITY --------------------------------------------------------------------------


def test_set_locality_is_answered_here_and_carried_with_later_commands() -> None:
    bridge = connected()
    actions = bridge.receive(FrameRead(set_locality(2)))
    assert actions == [Reply(answer(TPM_RC_SUCCESS))]  # nothing forwarded
    assert bridge.receive(FrameRead(PCR_READ)) == [Forward(PCR_READ, 2)]


def test_set_locality_is_answered_even_while_disconnected() -> None:
    # The kernel claims locality 0 before anything else at registration.
    assert replies(ProxyBridge().receive(FrameRead(set_locality(0)))) == [answer(0)]


@pytest.mark.parametrize(
    ("frame", "rc"),
    [
        (set_locality(5), TPM_RC_VALUE_P1),
        (set_locality(255), TPM_RC_VALUE_P1),
        (struct.pack(">HII", 0x8002, 10, 0x20001000), TPM_RC_COMMAND_SIZE),
        (struct.pack(">HIIBB", 0x8002, 12, 0x20001000, 0, 0), TPM_RC_COMMAND_SIZE),
    ],
    ids=["locality-5", "locality-255", "no-body", "two-bytes"],
)
def test_a_bad_set_locality_is_refused_and_changes_nothing(frame: bytes, rc: int) -> None:
    bridge = connected()
    assert replies(bridge.receive(FrameRead(frame))) == [answer(rc)]
    assert bridge.locality == 0


# -- malformed frames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "rc"),
    [
        (b"", TPM_RC_COMMAND_SIZE),
        (PCR_READ[:9], TPM_RC_COMMAND_SIZE),
        (PCR_READ[:-1], TPM_RC_COMMAND_SIZE),  # the header says 20, 19 came
        (PCR_READ + b"\0", TPM_RC_COMMAND_SIZE),  # 21 came
        (struct.pack(">HII", 0x8001, 4089, 0x17E) + bytes(4079), TPM_RC_COMMAND_SIZE),
        (bytes.fromhex("00c1000000160000000a") + bytes(12), TPM_RC_BAD_TAG),  # TPM 1.2 tag
        (struct.pack(">HII", 0x0000, 10, 0x17E), TPM_RC_BAD_TAG),
    ],
    ids=["empty", "short", "size-says-more", "size-says-less", "beyond-page", "tpm12", "tag0"],
)
def test_a_malformed_frame_gets_a_tpm2_error_and_is_not_forwarded(frame: bytes, rc: int) -> None:
    bridge = connected()
    actions = bridge.receive(FrameRead(frame))
    assert replies(actions) == [answer(rc)]
    assert not [a for a in actions if isinstance(a, Forward)]
    assert [a.kind for a in actions if isinstance(a, Warn)] == ["malformed"]
    assert bridge.state is BridgeState.READY
    assert bridge.receive(FrameRead(PCR_READ)) == [Forward(PCR_READ, 0)]  # still serving


def test_the_largest_command_a_tpmif_page_carries_is_forwarded() -> None:
    frame = struct.pack(">HII", 0x8001, 4088, 0x17E) + bytes(4078)  # 4096 - 8 bytes of header
    assert connected().receive(FrameRead(frame)) == [Forward(frame, 0)]


# -- forwarding, failures, reconnects ------------------------------------------------------


def test_an_answer_goes_back_as_it_came() -> None:
    bridge = connected()
    bridge.receive(FrameRead(PCR_READ))
    response = struct.pack(">HII", 0x8001, 14, 0) + b"abcd"
    assert bridge.receive(TpmAnswered(response)) == [Reply(response)]
    assert bridge.state is BridgeState.READY


@pytest.mark.parametrize(
    "response",
    [b"", b"\x80\x01\0\0\0\x0a\0\0\0", struct.pack(">HII", 0x8001, 11, 0), bytes(4097)],
    ids=["empty", "short", "size-mismatch", "too-long"],
)
def test_an_unframed_answer_becomes_tpm_rc_failure(response: bytes) -> None:
    bridge = connected()
    bridge.receive(FrameRead(PCR_READ))
    assert replies(bridge.receive(TpmAnswered(response))) == [answer(TPM_RC_FAILURE)]
    assert bridge.state is BridgeState.READY


def test_a_lost_connection_fails_the_command_then_reconnects() -> None:
    bridge = connected()
    bridge.receive(FrameRead(PCR_READ))
    actions = bridge.receive(TpmFailed("the backend went away"))
    # The kernel's answer first, then the reconnect (which may take a while).
    assert actions == [Reply(answer(TPM_RC_FAILURE)), Reconnect("the backend went away")]
    assert bridge.state is BridgeState.DISCONNECTED
    # Until the frontend is back, commands fail at once.
    assert replies(bridge.receive(FrameRead(PCR_READ))) == [answer(TPM_RC_FAILURE)]
    bridge.receive(FrontendUp())
    assert bridge.receive(FrameRead(PCR_READ)) == [Forward(PCR_READ, 0)]


def test_a_malformed_answer_on_a_working_connection_does_not_reconnect() -> None:
    bridge = connected()
    bridge.receive(FrameRead(PCR_READ))
    actions = bridge.receive(TpmFailed("malformed 3-byte answer", connection_lost=False))
    assert replies(actions) == [answer(TPM_RC_FAILURE)]
    assert not [a for a in actions if isinstance(a, Reconnect)]
    assert bridge.state is BridgeState.READY


def test_a_stray_answer_is_ignored() -> None:
    bridge = connected()
    assert bridge.receive(TpmAnswered(answer(0))) == []
    assert bridge.receive(TpmFailed("late")) == []


def test_the_bridge_never_originates_a_command() -> None:
    """Every Forward carries a frame the kernel wrote, byte for byte."""
    bridge = connected()
    frames = [set_locality(0), PCR_READ, b"junk", set_locality(1), PCR_READ]
    forwarded = []
    for frame in frames:
        for action in bridge.receive(FrameRead(frame)):
            if isinstance(action, Forward):
                forwarded.append(action.command)
                bridge.receive(TpmAnswered(answer(0)))
    assert forwarded == [PCR_READ, PCR_READ]


def test_warnings_are_rate_limited_per_kind() -> None:
    lines: list[str] = []
    now = [100.0]
    log = RateLimitedLog(lines.append, interval=10, clock=lambda: now[0])
    log("a", "first")
    log("a", "second")
    log("b", "other kind")
    now[0] += 5
    log("a", "third")
    now[0] += 6
    log("a", "fourth")
    assert lines == ["first", "other kind", "fourth (2 more like it not shown)"]


# -- a domU's own hypervisor view ----------------------------------------------------------


class FakeStore:
    def __init__(self, value: bytes | None) -> None:
        self.value = value
        self.reads: list[str] = []

    def read(self, path: str) -> bytes | None:
        self.reads.append(path)
        return self.value

    def __enter__(self) -> FakeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(("node", "domid"), [(b"7", 7), (b"12\n", 12), (None, None), (b"x", None)])
def test_a_domu_reads_its_domid_from_xenstore_and_never_needs_privcmd(
    monkeypatch: pytest.MonkeyPatch, node: bytes | None, domid: int | None
) -> None:
    from pvgrub_py.cli import connect
    from pvgrub_py.errors import PvgrubError
    from pvgrub_py.xen import availability, libxc_host

    store = FakeStore(node)
    made: list[int] = []

    class FakeLibxc:
        def __init__(self, d: int) -> None:
            made.append(d)

        def xenstore(self) -> FakeStore:
            return store

        def domains(self) -> None:
            raise AssertionError("privcmd (domains()) used in a domU")

        def close(self) -> None:
            pass

        def __enter__(self) -> FakeLibxc:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    built = availability.Availability(True, None, "4.17.0", {}, ())
    monkeypatch.setattr(availability, "availability", lambda: built)
    monkeypatch.setattr(libxc_host, "LibxcHypervisor", FakeLibxc)
    if domid is None:
        with pytest.raises(PvgrubError, match="'domid' node"):
            connect.open_guest_hypervisor(None, None)
        return
    hv = connect.open_guest_hypervisor(None, None)
    assert store.reads == ["domid"]  # relative to this domain's home
    assert isinstance(hv, FakeLibxc) and made[-1] == domid
