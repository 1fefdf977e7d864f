"""The simulated hypervisor's rules, in-process (no daemon): what Xen enforces on
grants, event channels and domains, with Xen's errnos."""

from __future__ import annotations

import errno

import pytest
from sim_world import World, raises_errno

from pvgrub_py.sim.evtchn import INTERDOMAIN, UNBOUND
from pvgrub_py.sim.grants import (
    GNTALLOC_LIMIT,
    GNTST_BAD_DOMAIN,
    GNTST_BAD_GNTREF,
    GNTST_GENERAL_ERROR,
    GrantMapError,
)
from pvgrub_py.sim.machine import Caller
from pvgrub_py.xen.interface import DOMID_SELF, DomainConfig


@pytest.fixture
def world() -> World:
    w = World()
    yield w  # type: ignore[misc]
    w.close()


# -- attach ------------------------------------------------------------------------------


def test_attach_needs_the_domains_token(world: World) -> None:
    guest = world.new_domain()
    raises_errno(errno.EPERM, lambda: world.machine.attach(99, guest.domid, "token0"))
    raises_errno(errno.EPERM, lambda: world.machine.attach(99, guest.domid, ""))
    raises_errno(errno.ESRCH, lambda: world.machine.attach(99, 42, "whatever"))


def test_a_destroyed_domain_cannot_attach(world: World) -> None:
    guest = world.new_domain()
    token = world.machine.domains.find(guest.domid).token  # type: ignore[union-attr]
    world.machine.destroy(world.dom0, guest.domid)
    raises_errno(errno.ESRCH, lambda: world.machine.attach(99, guest.domid, token))


# -- domains -----------------------------------------------------------------------------


def test_domids_count_up_from_1_and_are_not_reused_at_once(world: World) -> None:
    first = world.machine.create(world.dom0, DomainConfig())
    second = world.machine.create(world.dom0, DomainConfig())
    world.machine.destroy(world.dom0, first)
    third = world.machine.create(world.dom0, DomainConfig())
    assert (first, second, third) == (1, 2, 3)


def test_a_new_domain_is_paused_and_pause_nests(world: World) -> None:
    domid = world.new_domain().domid
    m, dom0 = world.machine, world.dom0
    assert m.info(dom0, domid).paused
    m.unpause(dom0, domid)
    assert not m.info(dom0, domid).paused
    raises_errno(errno.EINVAL, lambda: m.unpause(dom0, domid))
    m.pause(dom0, domid)
    m.pause(dom0, domid)
    m.unpause(dom0, domid)
    assert m.info(dom0, domid).paused
    raises_errno(errno.EINVAL, lambda: m.pause(dom0, 0))  # not yourself


def test_domctl_is_dom0_only(world: World) -> None:
    guest = world.new_domain()
    m = world.machine
    raises_errno(errno.EPERM, lambda: m.create(guest, DomainConfig()))
    raises_errno(errno.EPERM, lambda: m.info(guest, guest.domid))
    raises_errno(errno.EPERM, lambda: m.list_domains(guest))
    raises_errno(errno.EPERM, lambda: m.destroy(guest, guest.domid))
    raises_errno(errno.EPERM, lambda: m.alloc_unbound_in(guest, guest.domid, 0))


def test_bad_configs_and_unknown_domains(world: World) -> None:
    m, dom0 = world.machine, world.dom0
    raises_errno(errno.EINVAL, lambda: m.create(dom0, DomainConfig(max_vcpus=0)))
    raises_errno(errno.EINVAL, lambda: m.create(dom0, DomainConfig(handle=b"short")))
    raises_errno(errno.ESRCH, lambda: m.info(dom0, 77))
    raises_errno(errno.ESRCH, lambda: m.destroy(dom0, 77))
    raises_errno(errno.EINVAL, lambda: m.destroy(dom0, 0))


def test_memory_and_vcpus(world: World) -> None:
    m, dom0 = world.machine, world.dom0
    domid = m.create(dom0, DomainConfig(max_memkb=65536, max_vcpus=2, handle=b"u" * 16))
    info = m.info(dom0, domid)
    assert (info.max_memkb, info.tot_pages, info.max_vcpus, info.handle) == (
        65536,
        0,
        2,
        b"u" * 16,
    )
    m.set_max_memory(dom0, domid, 131072)
    m.set_max_vcpus(dom0, domid, 4)
    info = m.info(dom0, domid)
    assert (info.max_memkb, info.max_vcpus) == (131072, 4)
    raises_errno(errno.EINVAL, lambda: m.set_max_vcpus(dom0, domid, 0))
    assert [d.domid for d in m.list_domains(dom0)] == [0, domid]


# -- grants ------------------------------------------------------------------------------


def test_a_domain_maps_only_grants_given_to_it(world: World) -> None:
    m = world.machine
    a, b, c = world.new_domain(), world.new_domain(), world.new_domain()
    share = m.share(a, b.domid, 1, True)
    ref = share.grants[0].ref
    with pytest.raises(GrantMapError) as info:
        m.map(c, a.domid, ref, False)
    assert (info.value.errno, info.value.status) == (errno.EINVAL, GNTST_GENERAL_ERROR)
    mapping = m.map(b, a.domid, ref, True)
    m.unmap(b, mapping.map_id)
    m.end_share(a, share.share_id)


def test_map_errors_are_einval_with_xens_status(world: World) -> None:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    for granter, ref, status in ((a.domid, 8, GNTST_BAD_GNTREF), (99, 8, GNTST_BAD_DOMAIN)):
        with pytest.raises(GrantMapError) as info:
            m.map(b, granter, ref, True)
        assert (info.value.errno, info.value.status) == (errno.EINVAL, status)


def test_a_read_only_grant_cannot_be_mapped_writable(world: World) -> None:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    share = m.share(a, b.domid, 1, False)
    with pytest.raises(GrantMapError) as info:
        m.map(b, a.domid, share.grants[0].ref, True)
    assert info.value.status == GNTST_GENERAL_ERROR
    mapping = m.map(b, a.domid, share.grants[0].ref, False)
    m.unmap(b, mapping.map_id)
    m.end_share(a, share.share_id)


def test_refs_start_after_the_reserved_entries_and_are_reused(world: World) -> None:
    m = world.machine
    a = world.new_domain()
    first = m.share(a, 0, 3, True)
    assert [g.ref for g in first.grants] == [8, 9, 10]
    m.end_share(a, first.share_id)
    again = m.share(a, 0, 1, True)
    assert again.grants[0].ref == 8
    m.end_share(a, again.share_id)


def test_gntalloc_limit(world: World) -> None:
    m = world.machine
    a = world.new_domain()
    share = m.share(a, 0, GNTALLOC_LIMIT, True)
    raises_errno(errno.ENOSPC, lambda: m.share(a, 0, 1, True))
    m.end_share(a, share.share_id)
    raises_errno(errno.EINVAL, lambda: m.share(a, 0, 0, True))
    raises_errno(errno.EINVAL, lambda: m.share(a, DOMID_SELF, 1, True))


def test_ending_access_while_mapped_defers_the_free(world: World) -> None:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    share = m.share(a, b.domid, 1, True)
    ref = share.grants[0].ref
    mapping = m.map(b, a.domid, ref, True)
    m.end_share(a, share.share_id)
    assert m.stats().of(a.domid).grants == 1  # still live: the grantee maps it
    again = m.map(b, a.domid, ref, True)  # the entry is still valid, as on Xen
    m.unmap(b, mapping.map_id)
    assert m.stats().of(a.domid).grants == 1
    m.unmap(b, again.map_id)
    assert m.stats().of(a.domid).grants == 0
    assert m.grants.open_regions() == 0


def test_a_closed_connection_releases_everything(world: World) -> None:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    share = m.share(a, b.domid, 2, True)
    m.map(b, a.domid, share.grants[0].ref, True)
    handle = m.evtchn_open(a)
    port = m.alloc_unbound(a, handle.handle_id, b.domid)
    handle_b = m.evtchn_open(b)
    m.bind_interdomain(b, handle_b.handle_id, a.domid, port)
    m.detach(a.conn_id)
    stats = m.stats()
    assert stats.of(a.domid).grants == 1  # the mapped one waits for b
    assert stats.of(a.domid).ports == 0
    assert m.evtchn_status(b, b.domid, 1)[0] == UNBOUND
    m.detach(b.conn_id)
    assert m.stats().total.resources == 0


# -- event channels ----------------------------------------------------------------------


def bound_pair(world: World) -> tuple[Caller, int, int, Caller, int, int]:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    ha, hb = m.evtchn_open(a).handle_id, m.evtchn_open(b).handle_id
    pa = m.alloc_unbound(a, ha, b.domid)
    pb = m.bind_interdomain(b, hb, a.domid, pa)
    return a, ha, pa, b, hb, pb


def test_ports_are_allocated_lowest_free_from_1(world: World) -> None:
    m = world.machine
    a = world.new_domain()
    h = m.evtchn_open(a).handle_id
    assert [m.alloc_unbound(a, h, 0) for _ in range(3)] == [1, 2, 3]
    m.unbind(a, h, 2)
    assert m.alloc_unbound(a, h, DOMID_SELF) == 2
    assert m.evtchn_status(a, a.domid, 2) == (UNBOUND, a.domid, 0)


def test_only_the_named_remote_binds_and_only_once(world: World) -> None:
    m = world.machine
    a, b, c = world.new_domain(), world.new_domain(), world.new_domain()
    ha, hb, hc = (m.evtchn_open(x).handle_id for x in (a, b, c))
    port = m.alloc_unbound(a, ha, b.domid)
    raises_errno(errno.EINVAL, lambda: m.bind_interdomain(c, hc, a.domid, port))
    raises_errno(errno.EINVAL, lambda: m.bind_interdomain(b, hb, a.domid, port + 1))
    raises_errno(errno.ESRCH, lambda: m.bind_interdomain(b, hb, 99, port))
    local = m.bind_interdomain(b, hb, a.domid, port)
    raises_errno(errno.EINVAL, lambda: m.bind_interdomain(b, hb, a.domid, port))
    assert m.evtchn_status(a, a.domid, port) == (INTERDOMAIN, b.domid, local)


def test_binding_sets_the_binders_port_pending(world: World) -> None:
    _a, ha, _pa, _b, hb, pb = bound_pair(world)
    assert world.take(ha, hb) == [(hb, pb)]


def test_notify_masks_and_remembers_while_masked(world: World) -> None:
    m = world.machine
    a, ha, pa, _b, hb, pb = bound_pair(world)
    receiver = world.receiver(hb)
    try:
        assert receiver.wait(0) == pb  # the bind's event; now masked
        assert receiver.wait(0) is None
        receiver.unmask(pb)
        m.notify(a, ha, pa)
        assert receiver.wait(0) == pb  # delivered, masked again
        m.notify(a, ha, pa)
        m.notify(a, ha, pa)
        assert receiver.wait(0) is None  # masked: remembered, coalesced
        receiver.unmask(pb)
        assert receiver.wait(0) == pb  # delivered on unmask, once
        receiver.unmask(pb)
        assert receiver.wait(0) is None
    finally:
        receiver.close()


def test_targets_carry_the_binding_generation(world: World) -> None:
    m = world.machine
    a, ha, pa, b, hb, pb = bound_pair(world)
    target = m.evtchn_target(a, ha, pa)
    assert (target.state, target.remote_domid, target.remote_port) == (INTERDOMAIN, b.domid, pb)
    assert target.handle is not None and target.handle.handle_id == hb
    pages = world.endpoints.get(ha).page, world.endpoints.get(hb).page  # type: ignore[union-attr]
    assert pages[0].get(pa) == pages[1].get(pb) == target.gen > 0
    assert world.endpoints.eventfd(hb, pb) is not None
    m.unbind(b, hb, pb)
    assert pages[0].get(pa) == 0  # a notifier sees the channel is gone
    assert world.endpoints.eventfd(hb, pb) is None
    assert m.evtchn_target(a, ha, pa).state == UNBOUND


def test_notify_and_unbind_check_the_handle(world: World) -> None:
    m = world.machine
    a, ha, pa, b, _hb, _pb = bound_pair(world)
    other = m.evtchn_open(a).handle_id
    raises_errno(errno.ENOTCONN, lambda: m.notify(a, other, pa))
    raises_errno(errno.ENOTCONN, lambda: m.unbind(a, other, pa))
    raises_errno(errno.EBADF, lambda: m.notify(b, ha, pa))  # a handle of another connection


def test_closing_one_end_unbinds_the_other_and_drops_notifies(world: World) -> None:
    m = world.machine
    a, ha, pa, b, hb, pb = bound_pair(world)
    world.take(hb)
    m.unbind(a, ha, pa)
    assert world.take(hb) == []  # no event on close, as Xen
    assert m.evtchn_status(b, b.domid, pb) == (UNBOUND, a.domid, 0)
    m.notify(b, hb, pb)  # unbound: silently dropped
    assert world.take(ha) == []
    # and the port can be bound again by the domain that closed it
    ha2 = m.evtchn_open(a).handle_id
    pa2 = m.bind_interdomain(a, ha2, b.domid, pb)
    assert m.evtchn_status(b, b.domid, pb) == (INTERDOMAIN, a.domid, pa2)


def test_status_of_another_domain_is_dom0_only(world: World) -> None:
    a, _ha, pa, b, _hb, _pb = bound_pair(world)
    raises_errno(errno.EPERM, lambda: world.machine.evtchn_status(b, a.domid, pa))
    assert world.machine.evtchn_status(world.dom0, a.domid, pa)[0] == INTERDOMAIN


# -- destroy -----------------------------------------------------------------------------


def test_destroy_revokes_grants_closes_ports_and_drops_clients(world: World) -> None:
    m = world.machine
    a, _ha, _pa, b, _hb, pb = bound_pair(world)
    share = m.share(a, b.domid, 2, True)
    mapping = m.map(b, a.domid, share.grants[0].ref, True)
    m.destroy(world.dom0, a.domid)
    assert world.effects.destroyed == [(a.domid, [a.conn_id])]
    # the peer's port is unbound, pointing at the dead domain
    assert m.evtchn_status(b, b.domid, pb) == (UNBOUND, a.domid, 0)
    # no new mapping of its grants
    with pytest.raises(GrantMapError) as info:
        m.map(b, a.domid, share.grants[1].ref, True)
    assert info.value.status == GNTST_BAD_DOMAIN
    # a zombie while b still maps its page
    assert m.info(world.dom0, a.domid).dying
    assert m.stats().zombies == (a.domid,)
    m.unmap(b, mapping.map_id)
    raises_errno(errno.ESRCH, lambda: m.info(world.dom0, a.domid))
    assert m.stats().zombies == ()
    m.destroy(world.dom0, b.domid)
    assert m.stats().total.resources == 0
    assert m.grants.open_regions() == 0


def test_destroy_releases_the_dying_domains_own_mappings(world: World) -> None:
    m = world.machine
    a, b = world.new_domain(), world.new_domain()
    share = m.share(a, b.domid, 1, True)
    m.map(b, a.domid, share.grants[0].ref, True)
    m.end_share(a, share.share_id)
    m.destroy(world.dom0, b.domid)
    assert m.stats().of(a.domid).grants == 0  # the deferred grant is freed now
    raises_errno(errno.ESRCH, lambda: m.info(world.dom0, b.domid))


def test_toolstack_ports_live_with_the_domain(world: World) -> None:
    m = world.machine
    a = world.new_domain()
    port = m.alloc_unbound_in(world.dom0, a.domid, 0)
    assert port == 1
    counts = m.stats().of(a.domid)
    assert (counts.ports, counts.toolstack_ports) == (0, 1)
    h0 = m.evtchn_open(world.dom0).handle_id
    m.bind_interdomain(world.dom0, h0, a.domid, port)
    m.destroy(world.dom0, a.domid)
    assert m.evtchn_status(world.dom0, 0, 1) == (UNBOUND, a.domid, 0)


def test_ports_run_out_with_enospc(world: World) -> None:
    m = world.machine
    a = world.new_domain()
    m.evtchn.set_max_port(a.domid, 4)  # libxl's default is 1023; the rule is the same
    h = m.evtchn_open(a).handle_id
    assert [m.alloc_unbound(a, h, 0) for _ in range(4)] == [1, 2, 3, 4]
    raises_errno(errno.ENOSPC, lambda: m.alloc_unbound(a, h, 0))
