"""`ByteCursor`: the bounded reader under the TPM, event-log and lzop parsers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvgrub_py.bytecursor import ByteCursor


class Short(Exception):
    pass


def short(what: str, at: int, need: int, left: int) -> Short:
    return Short(what, at, need, left)


def test_reads_in_either_byte_order() -> None:
    data = bytes.fromhex("01 0203 04050607 ff")
    for order, u16, u32 in (("big", 0x0203, 0x04050607), ("little", 0x0302, 0x07060504)):
        r = ByteCursor(data, order, short)  # type: ignore[arg-type]
        assert (r.u8("a"), r.u16("b"), r.u32("c")) == (1, u16, u32)
        assert r.pos == 7 and r.left == 1
        assert r.take(1, "d") == b"\xff" and r.left == 0


def test_a_short_read_is_the_parsers_error_and_moves_nothing() -> None:
    r = ByteCursor(b"abc", "big", short, pos=1)
    with pytest.raises(Short) as caught:
        r.u32("field")
    assert caught.value.args == ("field", 1, 4, 2)
    assert r.pos == 1
    with pytest.raises(Short):
        r.take(-1, "negative")
    assert r.take(2, "rest") == b"bc"


def test_a_memoryview_gives_views() -> None:
    r = ByteCursor(memoryview(b"xyz"), "big", short)
    chunk = r.take(2, "two")
    assert isinstance(chunk, memoryview) and bytes(chunk) == b"xy"


@given(st.binary(max_size=64), st.lists(st.integers(-2, 80), max_size=12))
def test_never_reads_past_the_end(data: bytes, sizes: list[int]) -> None:
    r = ByteCursor(data, "little", short)
    for n in sizes:
        before = r.pos
        try:
            chunk = r.take(n, "x")
        except Short:
            assert n < 0 or n > len(data) - before
            assert r.pos == before
        else:
            assert chunk == data[before : before + n] and len(chunk) == n
            assert r.pos == before + n <= len(data)


class _Big(ByteCursor[bytes]):
    """A parser's cursor, as tpm2/codec/lzo subclass it."""

    __slots__ = ("name",)

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data, "big", short)
        self.name = name


def test_the_type_parameter_is_for_the_type_checker_only() -> None:
    """At run time ``ByteCursor[bytes]`` is `ByteCursor`: a subclass is a plain
    slotted class, and importing the cursor does not import `typing`."""
    assert ByteCursor[bytes] is ByteCursor and _Big[bytes] is _Big
    r = _Big(b"\x00\x01", "packet")
    assert isinstance(r, ByteCursor) and r.u16("n") == 1 and r.name == "packet"
    assert not hasattr(r, "__dict__")
    code = "import sys, pvgrub_py.bytecursor; print('typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "False"
