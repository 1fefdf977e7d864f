"""Each attached process talks to the simulator's xenstored as its own domain, through
a connection the host daemon made for it; introduce and release follow the domain."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest

from pvgrub_py.sim import SimHost
from pvgrub_py.sim.testing import leaks, temporary_host
from pvgrub_py.xen.interface import DomainConfig, WatchEvent, XenError, XenStore
from pvgrub_py.xenstore.daemon import XenstoredThread

pytestmark = pytest.mark.integration


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(xenstored=True) as h:
        yield h
        assert leaks(h.stats()) == {}, h.stats()


def test_dom0_and_a_guest_each_as_themselves(host: SimHost) -> None:
    domid = host.create_domain(DomainConfig(name="guest"))
    with host.attach(0) as dom0, host.attach(domid) as guest:
        xs0, xsg = dom0.xenstore(), guest.xenstore()
        assert isinstance(xsg, XenStore)
        assert xsg.get_domain_path(domid) == f"/local/domain/{domid}"
        assert xsg.read("name") == b"guest"  # relative to the guest's home
        assert xsg.read("domid") == str(domid).encode()
        xsg.write("data/empty", b"")  # pyxs itself cannot write an empty value
        xsg.write("data/binary", b"\x01\xff")
        assert xs0.read(f"/local/domain/{domid}/data/empty") == b""
        assert xs0.read(f"/local/domain/{domid}/data/binary") == b"\x01\xff"
        assert xs0.get_perms(f"/local/domain/{domid}") == ["n0", f"r{domid}"]
        assert sorted(xs0.directory(f"/local/domain/{domid}/data") or []) == ["binary", "empty"]
        assert xsg.read("data/missing") is None
        assert xsg.directory("data/missing") is None
        xs0.write("/private", b"secret")
        xs0.set_perms("/private", ["n0"])
        with pytest.raises(XenError) as info:
            xsg.read("/private")
        assert info.value.errno == errno.EACCES
        with pytest.raises(XenError) as info:
            xsg.introduce_domain(domid + 1, 1, 1)  # dom0 only
        assert info.value.errno in (errno.EACCES, errno.EPERM)
        xs0.rm("/private")


def test_a_domain_not_introduced_has_no_xenstore(host: SimHost) -> None:
    domid = host.create_domain(introduce=False)
    with host.attach(domid) as guest, pytest.raises(XenError) as info:
        guest.xenstore()
    assert info.value.errno == errno.ENOENT


def test_watches_with_a_timeout(host: SimHost) -> None:
    domid = host.create_domain(DomainConfig(name="guest"))
    with host.attach(0) as dom0, host.attach(domid) as guest:
        xs0, xsg = dom0.xenstore(), guest.xenstore()
        xsg.watch("data", "tok")
        first = xsg.wait_event(5)
        assert first is not None and first.token == "tok"  # a new watch fires at once
        start = time.monotonic()
        assert xsg.wait_event(0.2) is None
        assert time.monotonic() - start < 0.8
        xs0.write(f"/local/domain/{domid}/data/x", b"1")
        event = xsg.wait_event(5)
        assert event is not None and event.token == "tok" and event.path.endswith("data/x")
        xsg.unwatch("data", "tok")
        xs0.write(f"/local/domain/{domid}/data/y", b"2")
        assert xsg.wait_event(0.3) is None


def test_destroying_a_domain_releases_it(host: SimHost) -> None:
    domid = host.create_domain(DomainConfig(name="guest"))
    with host.attach(0) as dom0:
        xs0 = dom0.xenstore()
        xs0.watch("@releaseDomain", "gone")
        assert xs0.wait_event(5) == WatchEvent("@releaseDomain", "gone")
        guest = host.attach(domid)
        xsg = guest.xenstore()
        assert xsg.read("name") == b"guest"
        host.destroy_domain(domid)
        event = xs0.wait_event(5)
        assert event is not None and event.token == "gone"
        with pytest.raises(XenError) as info:
            xsg.read("name")  # xenstored dropped the domain's connection: no hang
        assert info.value.errno == errno.EIO
        assert xs0.read(f"/local/domain/{domid}/name") is None  # the toolstack removed it
        guest.close()


def test_a_host_without_xenstored() -> None:
    with temporary_host(xenstored=False) as host, host.attach(0) as dom0:
        with pytest.raises(XenError) as info:
            dom0.xenstore()
        assert info.value.errno == errno.ENOTCONN


def test_a_host_using_a_xenstored_it_did_not_start() -> None:
    root = tempfile.mkdtemp(prefix="simxs", dir="/tmp")
    try:
        with XenstoredThread(f"{root}/xs.sock") as xsd:
            with SimHost.start(f"{root}/host", xenstored=f"{root}/xs.sock") as host:
                domid = host.create_domain(DomainConfig(name="ext"))
                with host.attach(domid) as guest:
                    assert guest.xenstore().read("name") == b"ext"
            assert os.path.exists(f"{root}/xs.sock")  # not the host's to stop
            # but its domains died with the host: released, @releaseDomain fired
            assert not xsd.call(lambda svc: svc.domains.is_introduced(domid))
    finally:
        shutil.rmtree(root, ignore_errors=True)
