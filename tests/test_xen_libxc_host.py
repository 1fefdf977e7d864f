"""`LibxcHypervisor` hands out handles the way the simulator does: one per call.

On real Xen (the nested-Xen e2e run) the bootloader's ``xen:`` vTPM attach
failed with ``xs_handle: handle is closed``: the accessor cached one
xenstore handle, ``free_devid`` closed it with ``with hv.xenstore() as xs``
and ``add_vtpm_device`` was then given the closed handle.  These tests pin
the fixed contract with stand-in handle classes (no hypervisor needed), and
once more with the real libraries where /dev/xen/privcmd exists.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pvgrub_py.xen import libxc_host
from pvgrub_py.xen.availability import availability


class FakeHandle:
    opened: list[FakeHandle] = []

    def __init__(self) -> None:
        self.closes = 0
        FakeHandle.opened.append(self)

    def close(self) -> None:
        self.closes += 1

    def __enter__(self) -> FakeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def fake_libraries(monkeypatch: pytest.MonkeyPatch) -> list[FakeHandle]:
    FakeHandle.opened = []
    for name in ("XenStoreC", "XenEventChannels", "XenGrantShare", "XenGrantMap", "XenCtrl"):
        monkeypatch.setattr(libxc_host, name, type(name, (FakeHandle,), {}))
    return FakeHandle.opened


def test_each_call_opens_a_handle_the_caller_owns(fake_libraries: list[FakeHandle]) -> None:
    hv = libxc_host.LibxcHypervisor()
    with hv.xenstore() as first:
        pass
    second = hv.xenstore()
    assert second is not first and first.closes == 1 and second.closes == 0
    assert hv.event_channels() is not hv.event_channels()
    assert hv.grant_share() is not hv.grant_share()
    assert hv.grant_map() is not hv.grant_map()


def test_domains_is_one_shared_handle(fake_libraries: list[FakeHandle]) -> None:
    hv = libxc_host.LibxcHypervisor()
    assert hv.domains() is hv.domains()


def test_close_closes_what_callers_left_open(fake_libraries: list[FakeHandle]) -> None:
    hv = libxc_host.LibxcHypervisor()
    handles = [hv.xenstore(), hv.event_channels(), hv.grant_share(), hv.grant_map(), hv.domains()]
    with hv.xenstore():
        pass
    hv.close()
    assert all(h.closes >= 1 for h in handles)
    assert hv.domains() is not handles[-1]  # a closed host reopens on demand


@pytest.mark.skipif(
    not availability().built or not Path("/dev/xen/privcmd").exists(),
    reason="needs the Xen bindings and a Xen hypervisor",
)
def test_real_xenstore_handles_are_independent() -> None:
    with libxc_host.LibxcHypervisor() as hv:
        with hv.xenstore() as xs:
            assert xs.read("/local/domain/0/name") is not None
        with hv.xenstore() as xs:  # the first one's close must not close this one
            assert xs.read("/local/domain/0/name") is not None


@pytest.mark.skipif(
    not availability().built or not Path("/dev/xen/privcmd").exists(),
    reason="needs the Xen bindings and a Xen hypervisor",
)
def test_real_create_allocates_the_vcpus() -> None:
    """XEN_DOMCTL_max_vcpus allocates them (real Xen: without it, SETVCPUCONTEXT
    of vCPU 0 failed with EINVAL at the end of the PV build)."""
    from pvgrub_py.xen.interface import DomainConfig
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl() as xc:
        domid = xc.create(DomainConfig(max_vcpus=2, max_memkb=32 * 1024))
        try:
            assert xc.info(domid).max_vcpus == 2
        finally:
            xc.destroy(domid)


@pytest.mark.skipif(
    not availability().built or not Path("/dev/xen/privcmd").exists(),
    reason="needs the Xen bindings and a Xen hypervisor",
)
def test_real_peer_label_of_a_loopback_channel() -> None:
    """FLASK_GET_PEER_SID on a bound dom0<->dom0 channel.  Debian's Xen (the
    nested-Xen job) runs without FLASK: the dedicated error, ENOSYS; a host
    booted with flask=... answers with dom0's own context."""
    from pvgrub_py.xen.interface import XsmNotEnabledError

    with libxc_host.LibxcHypervisor() as hv, hv.event_channels() as a, hv.event_channels() as b:
        port = a.alloc_unbound(0)
        b.bind_interdomain(0, port)
        try:
            label = hv.evtchn_peer_label(port)
        except XsmNotEnabledError as e:
            assert e.errno == errno.ENOSYS and "not enabled" in str(e)
        else:
            assert len(label.split(":")) >= 3, label
