"""The tpmif shared page codec, and the rule that the state byte is the commit point."""

from __future__ import annotations

import mmap
import os
import time

import pytest

from pvgrub_py.vtpm.shared_page import MAX_PACKET, SharedPage, SharedPageError, TpmifState


def page() -> SharedPage:
    return SharedPage(memoryview(bytearray(4096)))


def test_layout_matches_every_implementation() -> None:
    p = page()
    p.write_packet(b"\x00\xc1" + bytes(32), locality=2)
    p.state = TpmifState.SUBMIT
    raw = bytes(p.memory[:8])
    assert raw == bytes([34, 0, 0, 0, 1, 2, 0, 0])  # length LE, state, locality, pad, extra
    assert p.read_packet() == b"\x00\xc1" + bytes(32)
    assert p.memory[8:10] == b"\x00\xc1"  # data at offset 8, not the 16 tpmif.h claims


def test_size_limits() -> None:
    p = page()
    p.write_packet(bytes(MAX_PACKET))
    assert len(p.read_packet()) == 4088
    with pytest.raises(SharedPageError, match="exceeds the 4088-byte"):
        p.write_packet(bytes(MAX_PACKET + 1))
    p.memory[0:4] = (4089).to_bytes(4, "little")
    with pytest.raises(SharedPageError, match="length 4089 exceeds"):
        p.read_packet()
    p.memory[7] = 1
    with pytest.raises(SharedPageError, match="extra pages"):
        p.read_packet()


def test_writing_a_packet_never_touches_the_state_byte() -> None:
    # A peer polls the state byte from another process; a header write must
    # not make it flicker (CPython's struct.pack_into zero-fills first).
    shared = mmap.mmap(-1, 4096)
    writer = SharedPage(memoryview(shared))
    writer.state = TpmifState.FINISH
    pid = os.fork()
    if pid == 0:  # the writer
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            writer.write_packet(b"\x00\xc4" + bytes(28))
        os._exit(0)
    reader = SharedPage(memoryview(shared))
    seen: set[int] = set()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        seen.add(reader.state)
    os.waitpid(pid, 0)
    assert seen == {TpmifState.FINISH}
