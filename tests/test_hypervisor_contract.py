"""The `Hypervisor` contract, held against the simulator and against libxc (fakeredis' way).

Every test here runs twice, through `pvgrub_py.xen.interface.Hypervisor` only:
``[sim]`` on a simulated host started for this module, ``[libxc]`` on the real
Xen libraries as dom0 (`LibxcHypervisor`).  The same calls must give the same
results and fail with the same errno on both.  The expected values are Xen's
and Linux's documented behaviour, cited per test (xen/common/domctl.c,
event_channel.c, grant_table.c; drivers/xen/evtchn.c, gntdev.c, gntalloc.c),
not read from either implementation.  `EventChannelRules` is fakeredis'
hypothesis state machine: random sequences of event-channel calls, checked
against a small model of those rules, on both.

Everything runs from dom0: a real host has no other domain we can run code in,
so a second domain is one dom0 creates and leaves paused (no process), and
grants and event channels between two parties are dom0 to dom0 (loopback,
through two handles), or dom0 to that paused domain.

The ``[libxc]`` half needs /dev/xen/privcmd: here it skips with the reason; it
runs on real Xen in ``make e2e-xen`` (stubdom/e2e/dom0/scenarios.sh,
``scenario_pytest``).  Where the simulator is known to differ, the test is
marked ``xfail(strict=True)`` for ``[sim]`` with what sim/ needs: it turns
into a failure the day the simulator is fixed, so the mark is removed then.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    multiple,
    rule,
    run_state_machine_as_test,
)

from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.xen.availability import availability
from pvgrub_py.xen.interface import (
    PAGE_SIZE,
    DomainConfig,
    Hypervisor,
    XenError,
    XsmNotEnabledError,
)

AVAILABLE = availability()
HAS_XEN = Path("/dev/xen/privcmd").exists()
#: A domid no test host has (below DOMID_FIRST_RESERVED, 0x7FF0).
NO_DOMAIN = 32000
WAIT = 5.0
_paths = itertools.count()


@pytest.fixture(scope="module")
def sim_host() -> Iterator[SimHost]:
    with temporary_host(prefix="contract") as host:
        yield host


@pytest.fixture(params=["sim", "libxc"])
def hv(request: pytest.FixtureRequest) -> Iterator[Hypervisor]:
    if request.param == "libxc":
        if not AVAILABLE.built:
            pytest.skip(f"libxc half: the Xen bindings are not built ({AVAILABLE.reason})")
        if not HAS_XEN:
            pytest.skip(
                "libxc half: needs a Xen hypervisor (/dev/xen/privcmd absent); "
                "it runs in make e2e-xen (scenarios.sh scenario_pytest)"
            )
        from pvgrub_py.xen.libxc_host import LibxcHypervisor

        with LibxcHypervisor(0) as real:
            yield real
    else:
        from pvgrub_py.sim.client import SimHypervisor

        host: SimHost = request.getfixturevalue("sim_host")
        with SimHypervisor.attach(host.dir, 0) as sim:
            yield sim


def sim_differs(request: pytest.FixtureRequest, needed: str) -> None:
    """Mark this test's ``[sim]`` run as a known difference: what sim/ needs."""
    if "[sim]" in request.node.name:
        request.applymarker(pytest.mark.xfail(reason=f"sim/ needs: {needed}", strict=True))


def expect_errno(err: int, call: Callable[[], object]) -> XenError:
    with pytest.raises(XenError) as caught:
        call()
    assert caught.value.errno == err, f"{caught.value} (wanted {errno.errorcode[err]})"
    assert isinstance(caught.value, OSError)
    return caught.value


@pytest.fixture
def guest(hv: Hypervisor) -> Iterator[int]:
    """A paused domain dom0 created and nobody runs: the other end for grants and ports."""
    control = hv.domains()
    domid = control.create(DomainConfig(max_vcpus=1, max_memkb=32 * 1024))
    try:
        yield domid
    finally:
        control.destroy(domid)


# -- domains (libxenctrl's xc_domain_*) ---------------------------------------------------


def test_identity_and_dom0(hv: Hypervisor) -> None:
    assert hv.domid == 0
    assert any(d.domid == 0 for d in hv.domains().list_domains())
    assert hv.domains().info(0).domid == 0


def test_a_created_domain_starts_paused_with_its_config(hv: Hypervisor) -> None:
    """domain_create leaves a new domain paused by the controller
    (``controller_pause_count = 1``); max_vcpus and max memory are as asked."""
    control = hv.domains()
    handle = bytes(range(16))
    domid = control.create(DomainConfig(max_vcpus=2, max_memkb=48 * 1024, handle=handle))
    try:
        assert domid not in (0, NO_DOMAIN)
        info = control.info(domid)
        assert (info.domid, info.paused, info.dying) == (domid, True, False)
        assert (info.max_vcpus, info.max_memkb, info.handle) == (2, 48 * 1024, handle)
        assert domid in [d.domid for d in control.list_domains()]
        control.set_max_memory(domid, 64 * 1024)
        assert control.info(domid).max_memkb == 64 * 1024
    finally:
        control.destroy(domid)
    expect_errno(errno.ESRCH, lambda: control.info(domid))


def test_pause_and_unpause_count_as_xen_does(hv: Hypervisor, guest: int) -> None:
    """XEN_DOMCTL_unpausedomain of a domain the controller has not paused is
    EINVAL (``domain_unpause_by_systemcontroller``)."""
    control = hv.domains()
    control.unpause(guest)
    assert not control.info(guest).paused
    expect_errno(errno.EINVAL, lambda: control.unpause(guest))
    control.pause(guest)
    assert control.info(guest).paused


def test_dom0_cannot_pause_itself(hv: Hypervisor) -> None:
    """XEN_DOMCTL_pausedomain on the calling domain: EINVAL."""
    expect_errno(errno.EINVAL, lambda: hv.domains().pause(0))


@pytest.mark.parametrize(
    "call",
    ["info", "pause", "unpause", "destroy", "set_max_memory", "alloc_unbound_in"],
)
def test_a_domid_with_no_domain_is_esrch(hv: Hypervisor, call: str) -> None:
    """do_domctl looks the target up first (``rcu_lock_domain_by_id``): ESRCH;
    so does EVTCHNOP_alloc_unbound for its ``dom``."""
    control = hv.domains()
    calls: dict[str, Callable[[], object]] = {
        "info": lambda: control.info(NO_DOMAIN),
        "pause": lambda: control.pause(NO_DOMAIN),
        "unpause": lambda: control.unpause(NO_DOMAIN),
        "destroy": lambda: control.destroy(NO_DOMAIN),
        "set_max_memory": lambda: control.set_max_memory(NO_DOMAIN, 1024),
        "alloc_unbound_in": lambda: control.alloc_unbound_in(NO_DOMAIN, 0),
    }
    expect_errno(errno.ESRCH, calls[call])


# -- event channels (libxenevtchn over Linux's evtchn driver) ------------------------------


def test_loopback_channel_delivers_both_ways(hv: Hypervisor) -> None:
    """alloc_unbound + bind_interdomain between two handles of dom0.  Xen sets the
    binder's new port pending (``evtchn_bind_interdomain``); a delivered port
    stays masked until unmask."""
    with hv.event_channels() as a, hv.event_channels() as b:
        port = a.alloc_unbound(0)
        peer = b.bind_interdomain(0, port)
        assert port > 0 and peer > 0 and peer != port
        assert b.wait(WAIT) == peer  # the event set on bind
        b.unmask(peer)
        b.notify(peer)
        assert a.wait(WAIT) == port
        a.unmask(port)
        a.notify(port)
        assert b.wait(WAIT) == peer
        b.unmask(peer)
        assert a.wait(0.2) is None and b.wait(0.2) is None


def test_a_port_of_another_handle_is_enotconn(hv: Hypervisor) -> None:
    """The evtchn driver answers notify and unbind of a port it did not bind for
    this file with ENOTCONN, and ignores an unmask of it."""
    with hv.event_channels() as a, hv.event_channels() as other:
        port = a.alloc_unbound(0)
        expect_errno(errno.ENOTCONN, lambda: other.notify(port))
        expect_errno(errno.ENOTCONN, lambda: other.unbind(port))
        other.unmask(port)
        a.unbind(port)
        expect_errno(errno.ENOTCONN, lambda: a.notify(port))
        expect_errno(errno.ENOTCONN, lambda: a.unbind(port))


def test_notify_after_the_peer_closed_is_dropped(hv: Hypervisor) -> None:
    """Closing one end puts the other back to ECS_UNBOUND without an event;
    EVTCHNOP_send on an unbound port drops the notification silently."""
    with hv.event_channels() as a, hv.event_channels() as b:
        port = a.alloc_unbound(0)
        peer = b.bind_interdomain(0, port)
        assert b.wait(WAIT) == peer
        b.unmask(peer)
        a.unbind(port)
        b.notify(peer)
        assert b.wait(0.2) is None and a.wait(0.2) is None


def test_alloc_unbound_for_a_domain_that_does_not_exist_yet(hv: Hypervisor) -> None:
    """EVTCHNOP_alloc_unbound records ``remote_dom`` without looking it up."""
    with hv.event_channels() as e:
        assert e.alloc_unbound(NO_DOMAIN) > 0


def test_bind_to_a_domain_that_does_not_exist_is_esrch(hv: Hypervisor) -> None:
    with hv.event_channels() as e:
        expect_errno(errno.ESRCH, lambda: e.bind_interdomain(NO_DOMAIN, 1))


def test_bind_rules_against_another_domain(hv: Hypervisor, guest: int) -> None:
    """``evtchn_bind_interdomain``: the remote port must be ECS_UNBOUND and
    allocated for us, else EINVAL (a second bind too, not EBUSY)."""
    control = hv.domains()
    for_us = control.alloc_unbound_in(guest, 0)
    for_itself = control.alloc_unbound_in(guest, guest)
    with hv.event_channels() as e:
        local = e.bind_interdomain(guest, for_us)
        assert local > 0
        expect_errno(errno.EINVAL, lambda: e.bind_interdomain(guest, for_us))
        expect_errno(errno.EINVAL, lambda: e.bind_interdomain(guest, for_itself))
        expect_errno(errno.EINVAL, lambda: e.bind_interdomain(guest, for_itself + 100))
        e.notify(local)  # the guest's port is bound: delivered to nobody running


def test_a_closed_event_channel_handle_is_ebadf(hv: Hypervisor) -> None:
    e = hv.event_channels()
    port = e.alloc_unbound(0)
    e.close()
    e.close()  # closing twice is a no-op
    expect_errno(errno.EBADF, lambda: e.notify(port))
    expect_errno(errno.EBADF, lambda: e.alloc_unbound(0))
    expect_errno(errno.EBADF, lambda: e.wait(0))


class EventChannelRules(RuleBasedStateMachine):
    """Random alloc/bind/notify/unbind sequences on two dom0 handles, against a
    model of Xen's rules (see the tests above): who owns each port, who its peer
    is.  One event is in flight at a time (each is taken and unmasked at once),
    so the outcome is deterministic on a real host too."""

    hv: Hypervisor  # set per run by the test
    ports = Bundle("ports")

    def __init__(self) -> None:
        super().__init__()
        self.handles = [self.hv.event_channels() for _ in range(2)]
        self.owner: dict[int, int] = {}  # live port -> index of the handle that bound it
        self.peer: dict[int, int | None] = {}  # live port -> its peer (None: unbound)

    def _delivered(self, h: int, port: int) -> None:
        assert self.handles[h].wait(WAIT) == port
        self.handles[h].unmask(port)

    @rule(target=ports, h=st.integers(0, 1))
    def alloc(self, h: int) -> int:
        port = self.handles[h].alloc_unbound(0)
        assert port not in self.owner
        self.owner[port], self.peer[port] = h, None
        return port

    @rule(target=ports, h=st.integers(0, 1), remote=ports)
    def bind(self, h: int, remote: int) -> object:
        if remote not in self.owner or self.peer[remote] is not None:
            expect_errno(errno.EINVAL, lambda: self.handles[h].bind_interdomain(0, remote))
            return multiple()
        local = self.handles[h].bind_interdomain(0, remote)
        assert local not in self.owner
        self.owner[local], self.peer[local], self.peer[remote] = h, remote, local
        self._delivered(h, local)  # the event Xen sets on bind
        return local

    @rule(h=st.integers(0, 1), port=ports)
    def notify(self, h: int, port: int) -> None:
        if self.owner.get(port) != h:
            expect_errno(errno.ENOTCONN, lambda: self.handles[h].notify(port))
            return
        self.handles[h].notify(port)
        peer = self.peer[port]
        if peer is not None:
            self._delivered(self.owner[peer], peer)

    @rule(h=st.integers(0, 1), port=ports)
    def unbind(self, h: int, port: int) -> None:
        if self.owner.get(port) != h:
            expect_errno(errno.ENOTCONN, lambda: self.handles[h].unbind(port))
            return
        self.handles[h].unbind(port)
        del self.owner[port]
        peer = self.peer.pop(port)
        if peer is not None:
            self.peer[peer] = None

    def teardown(self) -> None:
        try:
            for handle in self.handles:
                assert handle.wait(0.05) is None  # nothing the model did not expect
        finally:
            for handle in self.handles:
                handle.close()


def test_event_channels_follow_xens_rules(hv: Hypervisor) -> None:
    rules = type("Rules", (EventChannelRules,), {"hv": hv})
    run_state_machine_as_test(
        rules, settings=settings(max_examples=15, stateful_step_count=15, deadline=None)
    )


def test_peer_label_of_a_bound_port(hv: Hypervisor) -> None:
    """FLASK_GET_PEER_SID of a bound port: Xen's dummy XSM answers ENOSYS
    (`XsmNotEnabledError`); with FLASK, a context ``user:role:type``."""
    with hv.event_channels() as a, hv.event_channels() as b:
        port = a.alloc_unbound(0)
        b.bind_interdomain(0, port)
        try:
            label = hv.evtchn_peer_label(port)
        except XsmNotEnabledError as e:
            assert e.errno == errno.ENOSYS
        else:
            assert len(label.split(":")) >= 3, label


# -- grants (libxengntshr over gntalloc, libxengnttab over gntdev) -------------------------


def test_a_shared_page_maps_with_the_same_bytes(hv: Hypervisor) -> None:
    """dom0 grants two pages to itself and maps each from a gnttab handle: both
    sides see the same memory, both ways."""
    with (
        hv.grant_share() as gntshr,
        hv.grant_map() as gnttab,
        gntshr.share_pages(0, 2) as pages,
    ):
        assert len(pages.refs) == 2 and len(set(pages.refs)) == 2
        assert len(pages.memory) == 2 * PAGE_SIZE
        pages.memory[0:5] = b"first"
        pages.memory[PAGE_SIZE : PAGE_SIZE + 6] = b"second"
        with gnttab.map_grant(0, pages.refs[0]) as one, gnttab.map_grant(0, pages.refs[1]) as two:
            assert len(one.memory) == PAGE_SIZE
            assert bytes(one.memory[0:5]) == b"first"
            assert bytes(two.memory[0:6]) == b"second"
            two.memory[100:104] = b"back"
            assert bytes(pages.memory[PAGE_SIZE + 100 : PAGE_SIZE + 104]) == b"back"


def test_a_read_only_grant(hv: Hypervisor) -> None:
    """GTF_readonly: mapping it writable fails (GNTST_general_error, which gntdev
    reports as EINVAL); mapped read-only, the view is read-only."""
    with (
        hv.grant_share() as gntshr,
        hv.grant_map() as gnttab,
        gntshr.share_pages(0, 1, writable=False) as page,
    ):
        page.memory[0:2] = b"ro"
        expect_errno(errno.EINVAL, lambda: gnttab.map_grant(0, page.refs[0]))
        with gnttab.map_grant(0, page.refs[0], writable=False) as mapped:
            assert bytes(mapped.memory[0:2]) == b"ro"
            assert mapped.memory.readonly


def test_what_cannot_be_mapped_is_einval(hv: Hypervisor, guest: int) -> None:
    """GNTTABOP_map_grant_ref fails with GNTST_bad_domain (no such granter),
    GNTST_general_error (the entry is for another domain, or was ended);
    gntdev folds every failed status into EINVAL."""
    with hv.grant_share() as gntshr, hv.grant_map() as gnttab:
        with gntshr.share_pages(guest, 1) as for_guest:
            expect_errno(errno.EINVAL, lambda: gnttab.map_grant(0, for_guest.refs[0]))
        expect_errno(errno.EINVAL, lambda: gnttab.map_grant(NO_DOMAIN, 8))
        ended = gntshr.share_pages(0, 1)
        ref = ended.refs[0]
        ended.close()
        expect_errno(errno.EINVAL, lambda: gnttab.map_grant(0, ref))


def test_a_grant_may_name_a_domain_that_does_not_exist(hv: Hypervisor) -> None:
    """Nothing checks the grantee when the entry is written (gntalloc, Xen)."""
    with hv.grant_share() as gntshr, gntshr.share_pages(NO_DOMAIN, 1) as page:
        assert len(page.refs) == 1


def test_sharing_no_pages_is_einval(hv: Hypervisor) -> None:
    with hv.grant_share() as gntshr:
        expect_errno(errno.EINVAL, lambda: gntshr.share_pages(0, 0))


def test_ending_a_share_that_is_mapped_keeps_the_page(hv: Hypervisor) -> None:
    """gntalloc cannot free a page the grantee still maps (``gnttab_end_foreign_access``
    defers it): the mapping keeps its bytes until it is unmapped."""
    with hv.grant_share() as gntshr, hv.grant_map() as gnttab:
        page = gntshr.share_pages(0, 1)
        page.memory[0:4] = b"kept"
        with gnttab.map_grant(0, page.refs[0]) as mapped:
            page.close()
            assert bytes(mapped.memory[0:4]) == b"kept"


def test_closed_grant_memory_is_ebadf(hv: Hypervisor, request: pytest.FixtureRequest) -> None:
    sim_differs(
        request,
        "a closed SimSharedPages/SimMappedGrant raises ValueError from .memory "
        "(PageView), not XenError(EBADF) as the libxc classes do",
    )
    with hv.grant_share() as gntshr:
        page = gntshr.share_pages(0, 1)
        page.close()
        page.close()  # closing twice is a no-op
        expect_errno(errno.EBADF, lambda: page.memory)


def test_a_closed_grant_handle_is_ebadf(hv: Hypervisor, request: pytest.FixtureRequest) -> None:
    sim_differs(
        request,
        "SimGrantShare/SimGrantMap keep working after close() (no closed state); "
        "libxc's raise XenError(EBADF, 'handle is closed')",
    )
    gntshr = hv.grant_share()
    gntshr.close()
    expect_errno(errno.EBADF, lambda: gntshr.share_pages(0, 1))


# -- xenstore -----------------------------------------------------------------------------


@pytest.fixture
def node(hv: Hypervisor) -> Iterator[str]:
    """A fresh path under dom0's home, removed afterwards."""
    path = f"/local/domain/0/pvgrub-contract-{os.getpid()}-{next(_paths)}"
    yield path
    with hv.xenstore() as xs:
        xs.rm(path)


def test_xenstore_nodes(hv: Hypervisor, node: str) -> None:
    with hv.xenstore() as xs:
        assert xs.read(node) is None and xs.directory(node) is None
        xs.write(f"{node}/a", b"value\x00with a NUL")
        assert xs.read(f"{node}/a") == b"value\x00with a NUL"
        xs.mkdir(f"{node}/b")
        assert xs.read(f"{node}/b") == b""
        assert sorted(xs.directory(node) or []) == ["a", "b"]
        xs.set_perms(f"{node}/a", ["n0", "r5"])
        assert xs.get_perms(f"{node}/a") == ["n0", "r5"]
        xs.rm(f"{node}/a")
        assert xs.read(f"{node}/a") is None
        expect_errno(errno.ENOENT, lambda: xs.set_perms(f"{node}/a", ["n0"]))
        expect_errno(errno.ENOENT, lambda: xs.get_perms(f"{node}/a"))
        assert xs.get_domain_path(7) == "/local/domain/7"


def test_xenstore_watch(hv: Hypervisor, node: str) -> None:
    """A new watch fires once at once (xs_wire.h: XS_WATCH), then on each change."""
    with hv.xenstore() as xs:
        xs.write(node, b"1")
        xs.watch(node, "tok")
        first = xs.wait_event(WAIT)
        assert first is not None and (first.path, first.token) == (node, "tok")
        xs.write(node, b"2")
        event = xs.wait_event(WAIT)
        assert event is not None and (event.path, event.token) == (node, "tok")
        assert xs.wait_event(0.2) is None
        xs.unwatch(node, "tok")
        xs.write(node, b"3")
        assert xs.wait_event(0.2) is None


def test_a_closed_xenstore_handle_is_ebadf(hv: Hypervisor) -> None:
    xs = hv.xenstore()
    xs.close()
    expect_errno(errno.EBADF, lambda: xs.read("/local/domain/0/name"))
