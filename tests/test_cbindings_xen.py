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


# -- FLASK: errno mapping, with a stand-in library (no hypervisor needed) -----------------


class _FakeFfi:
    """The real ffi for memory, a settable errno standing for the C call's."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.errno = 0
        self.NULL = real.NULL  # type: ignore[attr-defined]

    def new(self, cdecl: str, init: object = None) -> object:
        return self._real.new(cdecl, init)  # type: ignore[attr-defined]

    def string(self, cdata: object) -> bytes:
        return self._real.string(cdata)  # type: ignore[attr-defined, no-any-return]


class _FakeFlaskLib:
    """xsm_op answers: ``peer`` is (rc, errno, sid), ``context`` is (rc, errno, text)."""

    def __init__(self, ffi: _FakeFfi, peer: tuple[int, int, int], context: tuple[int, int, bytes]):
        self.ffi, self.peer, self.context = ffi, peer, context
        self.calls: list[tuple[str, int]] = []

    def xc_clear_last_error(self, xch: object) -> None:
        pass

    def pvgrub_xc_last_error(self, xch: object, buf: object, size: int) -> int:
        return 0

    def pvgrub_xc_flask_get_peer_sid(self, xch: object, port: int, sid: object) -> int:
        self.calls.append(("get_peer_sid", port))
        rc, err, value = self.peer
        sid[0] = value  # type: ignore[index]
        self.ffi.errno = err
        return rc

    def xc_flask_sid_to_context(self, xch: object, sid: int, buf: object, size: int) -> int:
        self.calls.append(("sid_to_context", sid))
        rc, err, text = self.context
        assert size == 4096 and len(text) < size
        for i, byte in enumerate(text):
            buf[i] = bytes([byte])  # type: ignore[index]
        self.ffi.errno = err
        return rc


def _xenctrl_with(peer: tuple[int, int, int], context: tuple[int, int, bytes]) -> object:
    from pvgrub_py.xen import binding as binding_mod
    from pvgrub_py.xen.xenctrl import XenCtrl

    real = binding_mod.require("xc_flask_sid_to_context")
    ffi = _FakeFfi(real.ffi)
    lib = _FakeFlaskLib(ffi, peer, context)
    xc = XenCtrl.__new__(XenCtrl)
    xc._b = binding_mod.Binding(ffi, lib, frozenset())
    xc.dummy = False
    xc._xch = object()
    return xc


def test_flask_peer_label_is_peer_sid_then_context() -> None:
    xc = _xenctrl_with((0, 0, 260), (0, 0, b"system_u:system_r:vtpm_t"))
    assert xc.evtchn_peer_label(7) == "system_u:system_r:vtpm_t"  # type: ignore[attr-defined]
    assert xc._b.lib.calls == [("get_peer_sid", 7), ("sid_to_context", 260)]  # type: ignore[attr-defined]


def test_flask_enosys_means_no_xsm_and_other_errnos_stay_themselves() -> None:
    from pvgrub_py.xen.interface import XsmNotEnabledError

    xc = _xenctrl_with((-1, errno.ENOSYS, 0), (0, 0, b""))
    with pytest.raises(XsmNotEnabledError) as no_xsm:
        xc.evtchn_peer_label(3)  # type: ignore[attr-defined]
    assert no_xsm.value.errno == errno.ENOSYS and no_xsm.value.function == "xc_flask_op"
    assert "XSM/FLASK is not enabled on this host" in str(no_xsm.value)
    assert "port 3" in str(no_xsm.value)
    xc = _xenctrl_with((-1, errno.EINVAL, 0), (0, 0, b""))
    with pytest.raises(XenError) as unbound:
        xc.evtchn_peer_label(3)  # type: ignore[attr-defined]
    assert not isinstance(unbound.value, XsmNotEnabledError)
    assert unbound.value.errno == errno.EINVAL
    xc = _xenctrl_with((0, 0, 5), (-1, errno.EACCES, b""))
    with pytest.raises(XenError) as denied:
        xc.evtchn_peer_label(3)  # type: ignore[attr-defined]
    assert not isinstance(denied.value, XsmNotEnabledError)
    assert denied.value.errno == errno.EACCES
    assert denied.value.function == "xc_flask_sid_to_context"


def test_flask_calls_on_a_dummy_handle_make_no_hypercall() -> None:
    from pvgrub_py.xen.xenctrl import XenCtrl

    with XenCtrl.open_dummy() as xc:
        with pytest.raises(XenError) as caught:
            xc.evtchn_peer_label(1)
        assert caught.value.errno == errno.ENODEV
