"""Mapped grant memory as the libxc classes hand it out (no hypervisor needed).

A read-only grant is mapped ``PROT_READ``: a writable memoryview over it would
let a Python write fault the whole process (the simulator raises TypeError).
The view is read-only, and ``close`` releases it before unmapping.
"""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from pvgrub_py.xen.gnttab import XenMappedGrant
from pvgrub_py.xen.interface import PAGE_SIZE, XenError


class FakeOwner:
    """A `XenGrantMap` stand-in: ``ffi.buffer`` over a bytearray, unmaps recorded."""

    def __init__(self) -> None:
        self.page = bytearray(PAGE_SIZE)
        self.binding = SimpleNamespace(ffi=SimpleNamespace(buffer=lambda _addr, _size: self.page))
        self.unmapped: list[int] = []

    def unmap(self, address: int) -> None:
        self.unmapped.append(address)


@pytest.mark.parametrize("writable", [True, False])
def test_the_view_is_as_writable_as_the_mapping(writable: bool) -> None:
    owner = FakeOwner()
    owner.page[0:2] = b"ro"
    mapped = XenMappedGrant(owner, 0x1000, writable)  # type: ignore[arg-type]
    assert bytes(mapped.memory[0:2]) == b"ro"
    assert mapped.memory.readonly is not writable
    if writable:
        mapped.memory[0:2] = b"rw"
        assert owner.page[0:2] == b"rw"
    else:
        with pytest.raises(TypeError):
            mapped.memory[0:2] = b"rw"
    mapped.close()
    assert owner.unmapped == [0x1000]
    with pytest.raises(XenError) as caught:
        _ = mapped.memory
    assert caught.value.errno == errno.EBADF
    mapped.close()
    assert owner.unmapped == [0x1000]  # once
