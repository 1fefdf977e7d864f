"""The simulator's wire frames: round trips, and hostile bytes never crash the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvgrub_py.sim import protocol
from pvgrub_py.sim.protocol import Frame, Op, ProtocolError

frames = st.builds(
    Frame,
    op=st.integers(0, 0xFFFF),
    req_id=st.integers(0, 0xFFFFFFFF),
    args=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=40).map(tuple),
    data=st.binary(max_size=600),
    err=st.integers(-(1 << 31), (1 << 31) - 1),
    nfds=st.integers(0, protocol.MAX_FDS),
)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert protocol.decode(protocol.encode(frame)) == frame


@given(st.binary(max_size=300))
def test_garbage_is_a_protocol_error_or_a_frame(data: bytes) -> None:
    try:
        frame = protocol.decode(data)
    except ProtocolError:
        return
    assert protocol.decode(protocol.encode(frame)) == frame


def test_limits() -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(b"\0" * 5)
    with pytest.raises(ProtocolError):
        protocol.encode(Frame(Op.STATS, data=b"x" * protocol.MAX_FRAME))
    with pytest.raises(ProtocolError):
        protocol.encode(Frame(Op.STATS, args=(1 << 63,)))
    too_many_args = protocol.HEADER.pack(Op.STATS, 0, 1, 0, 10) + b"\0" * 8
    with pytest.raises(ProtocolError):
        protocol.decode(too_many_args)
    too_many_fds = protocol.HEADER.pack(Op.STATS, protocol.MAX_FDS + 1, 1, 0, 0)
    with pytest.raises(ProtocolError):
        protocol.decode(too_many_fds)


def test_error_reply_carries_errno_message_and_detail() -> None:
    request = protocol.request(Op.GNT_MAP, 7, [1, 8, 1])
    frame = protocol.decode(protocol.encode(protocol.error_reply(request, 22, "nope", [-1])))
    assert (frame.op, frame.req_id, frame.err, frame.args, frame.data) == (
        Op.GNT_MAP,
        7,
        22,
        (-1,),
        b"nope",
    )
