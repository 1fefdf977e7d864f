"""A simulated host daemon used from this process through several connections, each
attached as its own domain: real shared pages, real wake-ups, Xen's errors."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest

from pvgrub_py.sim import GrantMapError, SimHost, SimHypervisor, protocol
from pvgrub_py.sim.grants import GNTST_BAD_DOMAIN, GNTST_GENERAL_ERROR
from pvgrub_py.sim.pages import create_pages, reopen_readonly
from pvgrub_py.sim.protocol import Op
from pvgrub_py.sim.testing import leaks, temporary_host
from pvgrub_py.xen.interface import PAGE_SIZE, DomainConfig, XenError

pytestmark = pytest.mark.integration


@pytest.fixture
def host() -> Iterator[SimHost]:
    """A host without xenstored; after the test, nothing may be left held."""
    with temporary_host(xenstored=False) as h:
        yield h
        assert leaks(h.stats()) == {}, h.stats()


@pytest.fixture
def dom0(host: SimHost) -> Iterator[SimHypervisor]:
    with host.attach(0) as hv:
        yield hv


def new_guest(host: SimHost) -> SimHypervisor:
    return host.attach(host.create_domain(DomainConfig(name="guest"), introduce=False))


def expect_errno(err: int, fn: object, *args: object) -> XenError:
    with pytest.raises(XenError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.errno == err, info.value
    return info.value


# -- attaching ----------------------------------------------------------------------------


def test_attach_proves_the_domid(host: SimHost) -> None:
    domid = host.create_domain(introduce=False)
    expect_errno(errno.EPERM, SimHypervisor.attach, host.dir, domid, "0" * 32)
    expect_errno(errno.ESRCH, SimHypervisor.attach, host.dir, domid + 1)
    with SimHypervisor.attach(host.dir, domid, host.token(domid)) as hv:
        assert hv.domid == domid
    assert (host.dir / "tokens" / str(domid)).stat().st_mode & 0o777 == 0o600


def test_attach_without_a_host() -> None:
    expect_errno(errno.ESRCH, SimHypervisor.attach, "/tmp/no-such-sim-host", 0)


def test_a_second_host_in_the_same_directory_is_refused(host: SimHost) -> None:
    with pytest.raises(XenError, match="exited"):
        SimHost.start(host.dir, xenstored=False, timeout=10)
    assert host.stats().of(0).connections >= 1  # the first is unharmed


def test_a_host_directory_too_long_for_sockets() -> None:
    expect_errno(errno.ENAMETOOLONG, SimHost.start, "/tmp/" + "d" * 120)


# -- domains ------------------------------------------------------------------------------


def test_domain_control_over_the_wire(host: SimHost, dom0: SimHypervisor) -> None:
    control = dom0.domains()
    domid = control.create(DomainConfig(max_vcpus=2, max_memkb=65536, handle=b"\1" * 16))
    info = control.info(domid)
    assert (info.domid, info.paused, info.max_vcpus, info.max_memkb, info.handle) == (
        domid,
        True,
        2,
        65536,
        b"\1" * 16,
    )
    control.unpause(domid)
    expect_errno(errno.EINVAL, control.unpause, domid)
    control.set_max_memory(domid, 32768)
    assert control.info(domid).max_memkb == 32768
    assert [d.domid for d in control.list_domains()] == [0, domid]
    expect_errno(errno.EINVAL, control.create, DomainConfig(handle=b"\1" * 17))
    control.destroy(domid)
    expect_errno(errno.ESRCH, control.info, domid)


def test_only_dom0_controls_domains(host: SimHost) -> None:
    with new_guest(host) as guest:
        expect_errno(errno.EPERM, guest.domains().create, DomainConfig())
        expect_errno(errno.EPERM, guest.domains().list_domains)
        expect_errno(errno.EPERM, guest.domains().pause, guest.domid)


# -- grants -------------------------------------------------------------------------------


def test_granted_memory_is_shared_for_real(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as guest, guest.grant_share() as gntshr, dom0.grant_map() as gnttab:
        pages = gntshr.share_pages(0, count=2)
        assert len(pages.memory) == 2 * PAGE_SIZE and len(pages.refs) == 2
        assert bytes(pages.memory[:8]) == bytes(8)  # zeroed
        second = gnttab.map_grant(guest.domid, pages.refs[1])
        assert len(second.memory) == PAGE_SIZE
        pages.memory[PAGE_SIZE : PAGE_SIZE + 5] = b"guest"
        assert bytes(second.memory[:5]) == b"guest"
        second.memory[100:104] = b"dom0"
        assert bytes(pages.memory[PAGE_SIZE + 100 : PAGE_SIZE + 104]) == b"dom0"
        stats = host.stats()
        assert (stats.of(guest.domid).grants, stats.of(0).mappings) == (2, 1)
        second.close()
        pages.close()
        with pytest.raises(ValueError):
            pages.memory  # noqa: B018 - a closed share has no memory


def test_a_domain_maps_only_grants_given_to_it(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as granter, new_guest(host) as grantee, new_guest(host) as other:
        pages = granter.grant_share().share_pages(grantee.domid)
        with pytest.raises(GrantMapError) as info:
            other.grant_map().map_grant(granter.domid, pages.refs[0])
        assert (info.value.errno, info.value.status) == (errno.EINVAL, GNTST_GENERAL_ERROR)
        with pytest.raises(GrantMapError):
            dom0.grant_map().map_grant(granter.domid, pages.refs[0])  # dom0 is no exception
        with grantee.grant_map().map_grant(granter.domid, pages.refs[0]) as page:
            assert len(page.memory) == PAGE_SIZE
        pages.close()


def test_a_read_only_grant_is_mapped_read_only(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as guest:
        pages = guest.grant_share().share_pages(0, writable=False)
        gnttab = dom0.grant_map()
        with pytest.raises(GrantMapError) as info:
            gnttab.map_grant(guest.domid, pages.refs[0], writable=True)
        assert info.value.status == GNTST_GENERAL_ERROR
        page = gnttab.map_grant(guest.domid, pages.refs[0], writable=False)
        assert page.memory.readonly
        with pytest.raises(TypeError):
            page.memory[0] = 1
        pages.memory[0:3] = b"abc"  # the granter still writes
        assert bytes(page.memory[0:3]) == b"abc"
        page.close()
        pages.close()


def test_a_read_only_descriptor_cannot_be_mapped_writable() -> None:
    fd = create_pages(1, "test")
    ro = reopen_readonly(fd)
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(ro, PAGE_SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)
    finally:
        os.close(ro)
        os.close(fd)


def test_ending_access_while_mapped_is_deferred(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as guest:
        pages = guest.grant_share().share_pages(0)
        pages.memory[0:4] = b"keep"
        page = dom0.grant_map().map_grant(guest.domid, pages.refs[0])
        pages.close()
        assert host.stats().of(guest.domid).grants == 1  # deferred: still mapped
        assert bytes(page.memory[0:4]) == b"keep"
        page.close()
        assert host.stats().of(guest.domid).grants == 0


def test_mapping_a_missing_grant(host: SimHost, dom0: SimHypervisor) -> None:
    with pytest.raises(GrantMapError) as info:
        dom0.grant_map().map_grant(77, 8)
    assert info.value.status == GNTST_BAD_DOMAIN


# -- event channels -----------------------------------------------------------------------


def test_wait_times_out_promptly(host: SimHost, dom0: SimHypervisor) -> None:
    with dom0.event_channels() as evtchn:
        evtchn.alloc_unbound(0)
        start = time.monotonic()
        assert evtchn.wait(0.2) is None
        assert 0.15 <= time.monotonic() - start < 0.6
        start = time.monotonic()
        assert evtchn.wait(0) is None
        assert time.monotonic() - start < 0.1


def test_notify_wait_unmask_across_domains(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as guest, guest.event_channels() as front, dom0.event_channels() as back:
        port = front.alloc_unbound(0)
        local = back.bind_interdomain(guest.domid, port)
        assert back.wait(1) == local  # Xen sets the binder's new port pending
        back.unmask(local)
        # fileno is selectable: readable exactly when a port is pending
        assert select.select([back.fileno()], [], [], 0)[0] == []
        front.notify(port)
        assert select.select([back.fileno()], [], [], 2)[0] == [back.fileno()]
        assert back.wait(0) == local
        # masked now: notifications are remembered, coalesced, delivered on unmask
        front.notify(port)
        front.notify(port)
        assert back.wait(0.1) is None
        back.unmask(local)
        assert back.wait(1) == local
        back.unmask(local)
        assert back.wait(0.1) is None
        # and the other way
        back.notify(local)
        assert front.wait(1) == port
        assert front.status(port).state == "interdomain"
        assert back.status(local) == ("interdomain", guest.domid, port)


def test_event_channel_rules(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as a, new_guest(host) as b, a.event_channels() as ea:
        eb, e0 = b.event_channels(), dom0.event_channels()
        port = ea.alloc_unbound(b.domid)
        expect_errno(errno.EINVAL, e0.bind_interdomain, a.domid, port)  # not for dom0
        expect_errno(errno.ESRCH, eb.bind_interdomain, 99, port)
        expect_errno(errno.EINVAL, eb.bind_interdomain, a.domid, port + 7)
        local = eb.bind_interdomain(a.domid, port)
        expect_errno(errno.EINVAL, eb.bind_interdomain, a.domid, port)  # bound once
        expect_errno(errno.ENOTCONN, e0.notify, local)  # not dom0's port
        expect_errno(errno.ENOTCONN, eb.unbind, port + 7)
        e0.unmask(local)  # silently ignored, as the driver does
        ea.unbind(port)
        assert eb.status(local) == ("unbound", a.domid, 0)
        eb.notify(local)  # to a closed peer: dropped
        eb.close()
        e0.close()


def test_closing_a_handle_closes_its_ports(host: SimHost, dom0: SimHypervisor) -> None:
    with new_guest(host) as guest:
        front = guest.event_channels()
        port = front.alloc_unbound(0)
        back = dom0.event_channels()
        local = back.bind_interdomain(guest.domid, port)
        front.close()
        assert back.status(local) == ("unbound", guest.domid, 0)
        assert host.stats().of(guest.domid).ports == 0
        expect_errno(errno.EBADF, front.wait, 0)
        back.close()


# -- destroying a domain ------------------------------------------------------------------


def test_destroy_revokes_what_the_domain_shared(host: SimHost, dom0: SimHypervisor) -> None:
    guest = new_guest(host)
    domid = guest.domid
    pages = guest.grant_share().share_pages(0, count=2)
    pages.memory[0:4] = b"last"
    front = guest.event_channels()
    port = front.alloc_unbound(0)
    back = dom0.event_channels()
    local = back.bind_interdomain(domid, port)
    page = dom0.grant_map().map_grant(domid, pages.refs[0])

    dom0.domains().destroy(domid)

    # the guest's process is cut off
    expect_errno(errno.ESRCH, guest.event_channels)
    expect_errno(errno.ESRCH, SimHypervisor.attach, host.dir, domid)
    # the peer's port reports the closed channel; notifying it is dropped
    assert back.status(local) == ("unbound", domid, 0)
    back.notify(local)
    # no new mapping of its grants, but the page dom0 maps stays (a zombie domain)
    with pytest.raises(GrantMapError):
        dom0.grant_map().map_grant(domid, pages.refs[1])
    assert bytes(page.memory[0:4]) == b"last"
    assert dom0.domains().info(domid).dying
    assert host.stats().zombies == (domid,)
    page.close()
    expect_errno(errno.ESRCH, dom0.domains().info, domid)
    assert [d.domid for d in dom0.domains().list_domains()] == [0]
    guest.close()  # local clean-up only; its resources are already gone
    back.close()


def test_closing_the_hypervisor_releases_everything(host: SimHost, dom0: SimHypervisor) -> None:
    guest = new_guest(host)
    pages = guest.grant_share().share_pages(0, count=3)
    evtchn = guest.event_channels()
    evtchn.alloc_unbound(0)
    evtchn.alloc_unbound(0)
    page = dom0.grant_map().map_grant(guest.domid, pages.refs[0])
    counts = host.stats().of(guest.domid)
    assert (counts.grants, counts.ports, counts.connections) == (3, 2, 1)
    guest.close()
    counts = host.stats().of(guest.domid)
    assert (counts.grants, counts.ports, counts.connections) == (1, 0, 0)  # one still mapped
    page.close()
    assert host.stats().total.resources == 0


# -- hostile clients ----------------------------------------------------------------------


def raw_connection(host: SimHost) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(5)
    sock.connect(str(host.dir / "hyp.sock"))
    return sock


def test_garbage_drops_only_the_sender(host: SimHost, dom0: SimHypervisor) -> None:
    for garbage in (b"", b"\xff" * 3, b"\0" * 64, protocol.HEADER.pack(9999, 0, 1, 0, 500)):
        with raw_connection(host) as sock:
            sock.send(garbage)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass  # a NOTICE, then end-of-file: we get here, not a hang
    # a request before ATTACH, and a bad token
    for frame in (
        protocol.request(Op.STATS, 1),
        protocol.request(Op.ATTACH, 1, [0], b"not-the-token"),
    ):
        with raw_connection(host) as sock:
            sock.send(protocol.encode(frame))
            replies = []
            with contextlib.suppress(OSError):
                while data := sock.recv(4096):
                    replies.append(protocol.decode(data))
            assert replies and all(r.err for r in replies), replies
    assert dom0.domains().info(0).domid == 0  # everyone else is still served
    assert host.stats().of(0).connections == 1 + 1  # dom0 fixture + the host's own


def test_bad_arguments_are_errors_not_crashes(host: SimHost, dom0: SimHypervisor) -> None:
    conn = dom0._conn  # the raw request path, past the typed wrappers
    for op, args in ((Op.GNT_MAP, [1]), (Op.DOM_INFO, []), (Op.EVT_BIND, [1, 2]), (999, [])):
        with pytest.raises(XenError) as info:
            conn.call(op, args, function="raw")  # type: ignore[arg-type]
        assert info.value.errno in (errno.EINVAL, errno.ENOSYS, errno.EBADF), info.value
    assert dom0.domains().info(0).domid == 0


def test_a_forked_child_cannot_use_its_parents_connection(host: SimHost) -> None:
    with host.attach(0) as dom0:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 0
            try:
                dom0.domains().info(0)
            except XenError as e:
                code = e.errno
            os.write(write_end, bytes([code]))
            os._exit(0)
        os.close(write_end)
        assert os.read(read_end, 1) == bytes([errno.EBADF])
        os.close(read_end)
        os.waitpid(pid, 0)
        assert dom0.domains().info(0).domid == 0  # the parent's is intact
