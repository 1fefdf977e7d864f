"""The Pythonic Xen layer: dummy handles parse kernels, real ones need a hypervisor.

Without /dev/xen/privcmd every library open must fail with the library's
errno (ENOENT) and a hint; with it (the nested-Xen job), the hypervisor
tests run.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from kernel_info_images import build_elf, bzimage_of

from pvgrub_py.xen.availability import availability
from pvgrub_py.xen.interface import DomainConfig, XenError

AVAILABLE = availability()
HAS_XEN = Path("/dev/xen/privcmd").exists()
pytestmark = pytest.mark.skipif(
    not AVAILABLE.built, reason=f"Xen bindings not built: {AVAILABLE.reason}"
)
needs_xen = pytest.mark.skipif(
    not HAS_XEN, reason="needs a Xen hypervisor (/dev/xen/privcmd absent)"
)
no_xen = pytest.mark.skipif(HAS_XEN, reason="this host runs on Xen")


def test_dummy_domain_image_lifecycle() -> None:
    from pvgrub_py.xen.domain_image import DomainImage
    from pvgrub_py.xen.xenctrl import XenCtrl

    kernel = bzimage_of(build_elf(), "xz")
    with XenCtrl.open_dummy() as xc, DomainImage(xc, cmdline="console=hvc0") as dom:
        dom.set_xen_caps()
        dom.kernel_max_size(1 << 24)
        dom.kernel_mem(kernel)
        dom.module_mem(b"initrd bytes")
        dom.parse_image()
        assert dom.guest_type == "xen-3.0-x86_64"
        assert dom.virt_base == 0xFFFFFFFF80000000
        assert dom.guest_os == "linux"
        assert dom.kernel_segment.vstart == 0xFFFFFFFF81000000
        assert dom.kernel_bytes() == build_elf()
        assert dom.module_sizes == [len(b"initrd bytes")]
        assert dom.feature(0) and dom.features_active == 1
        with pytest.raises(XenError) as caught:
            dom.boot_xen_init(0)
        assert caught.value.errno == errno.ENODEV
    with pytest.raises(XenError) as caught:
        _ = dom.guest_type
    assert caught.value.errno == errno.EBADF  # released on exit, never used again


def test_dummy_parse_failure_is_xen_error_with_libxc_message() -> None:
    from pvgrub_py.xen.domain_image import DomainImage
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl.open_dummy() as xc, DomainImage(xc) as dom:
        dom.kernel_mem(b"not a kernel" * 10)
        with pytest.raises(XenError) as caught:
            dom.parse_image()
    assert caught.value.errno == errno.ENOEXEC
    assert caught.value.function == "xc_dom_parse_image"
    assert "no loader found" in caught.value.message


def test_dummy_handle_makes_no_hypercalls() -> None:
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl.open_dummy() as xc:
        for call in (
            xc.version,
            xc.physinfo,
            xc.list_domains,
            lambda: xc.info(0),
            lambda: xc.create(DomainConfig()),
            lambda: xc.pause(1),
        ):
            with pytest.raises(XenError) as caught:
                call()
            assert caught.value.errno == errno.ENODEV


@no_xen
@pytest.mark.parametrize(
    ("opener", "function", "device"),
    [
        ("pvgrub_py.xen.xenctrl:XenCtrl", "xc_interface_open", "privcmd"),
        ("pvgrub_py.xen.evtchn:XenEventChannels", "xenevtchn_open", "evtchn"),
        ("pvgrub_py.xen.gnttab:XenGrantMap", "xengnttab_open", "gntdev"),
        ("pvgrub_py.xen.gntshr:XenGrantShare", "xengntshr_open", "gntalloc"),
    ],
)
def test_without_xen_opens_fail_with_enoent_and_a_hint(
    opener: str, function: str, device: str
) -> None:
    import importlib

    module, name = opener.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(XenError) as caught:
        cls()
    assert caught.value.errno == errno.ENOENT
    assert caught.value.function == function and device in str(caught.value)


@no_xen
def test_libxc_hypervisor_fails_per_accessor() -> None:
    from pvgrub_py.xen.libxc_host import LibxcHypervisor

    with LibxcHypervisor() as host:
        assert host.domid == 0
        with pytest.raises(XenError):
            host.domains()
        with pytest.raises(XenError):
            host.event_channels()


def test_xenstore_c_against_our_xenstored(monkeypatch: pytest.MonkeyPatch) -> None:
    """libxenstore as a second client of the simulator's xenstored."""
    daemon = pytest.importorskip("pvgrub_py.xenstore.daemon")
    from pvgrub_py.xen.xenstore_c import XenStoreC

    with (
        tempfile.TemporaryDirectory() as tmp,
        daemon.XenstoredThread(os.path.join(tmp, "xs")) as xsd,
    ):
        monkeypatch.setenv("XENSTORED_PATH", str(xsd.socket_path))
        with XenStoreC() as xs:
            xs.write("/local/domain/0/pvgrub", b"value")
            assert xs.read("/local/domain/0/pvgrub") == b"value"
            assert xs.read("/local/domain/0/missing") is None
            assert "pvgrub" in (xs.directory("/local/domain/0") or [])
            xs.set_perms("/local/domain/0/pvgrub", ["n0", "r5"])
            assert xs.get_perms("/local/domain/0/pvgrub") == ["n0", "r5"]
            assert xs.get_domain_path(7) == "/local/domain/7"
            xs.watch("/local/domain/0/pvgrub", "tok")
            first = xs.wait_event(2.0)
            assert first is not None and first.token == "tok"
            xs.write("/local/domain/0/pvgrub", b"again")
            event = xs.wait_event(2.0)
            assert event is not None and event.path == "/local/domain/0/pvgrub"
            assert xs.wait_event(0.1) is None
            xs.rm("/local/domain/0/pvgrub")
            with pytest.raises(XenError) as caught:
                xs.set_perms("/local/domain/0/pvgrub", ["n0"])
            assert caught.value.errno == errno.ENOENT


def test_xenstore_c_without_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pvgrub_py.xen.xenstore_c import XenStoreC

    monkeypatch.setenv("XENSTORED_PATH", str(tmp_path / "no-such-socket"))
    if Path("/dev/xen/xenbus").exists():
        pytest.skip("xenbus present: libxenstore would fall back to it")
    with pytest.raises(XenError) as caught:
        XenStoreC()
    assert caught.value.function == "xs_open" and "no xenstored" in str(caught.value)


# -- on a real Xen host (nested-Xen job) --------------------------------------------------


@needs_xen
def test_host_version_and_domain0() -> None:
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl() as xc:
        assert xc.version().split(".")[0] == "4"
        assert "xen-3.0-x86_64" in xc.capabilities()
        assert xc.info(0).domid == 0
        assert any(d.domid == 0 for d in xc.list_domains())
        assert xc.physinfo().nr_cpus >= 1


@needs_xen
def test_create_pause_destroy_a_pv_domain() -> None:
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl() as xc:
        domid = xc.create(DomainConfig(max_memkb=64 * 1024))
        try:
            info = xc.info(domid)
            assert info.paused and info.max_memkb == 64 * 1024
            xc.unpause(domid)
            xc.pause(domid)
        finally:
            xc.destroy(domid)
        with pytest.raises(XenError):
            xc.info(domid)


@needs_xen
def test_event_channel_loopback() -> None:
    from pvgrub_py.xen.evtchn import XenEventChannels

    with XenEventChannels() as a, XenEventChannels() as b:
        port = a.alloc_unbound(0)
        peer = b.bind_interdomain(0, port)
        b.notify(peer)
        assert a.wait(2.0) == port
        a.unmask(port)
