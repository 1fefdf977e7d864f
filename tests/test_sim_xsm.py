"""The simulated host's XSM: FLASK off (ENOSYS, like Debian's Xen) or on, with a label
per domain and FLASK's rule that only a bound interdomain port has a peer."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sim_world import World, raises_errno

from pvgrub_py.errors import UsageError
from pvgrub_py.sim import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.sim.xsm import DOM0_LABEL, DOMU_LABEL, Flask, check_label, parse_label_option
from pvgrub_py.xen.interface import XsmNotEnabledError

VTPM = "system_u:system_r:vtpm_t"


@pytest.fixture
def flask() -> Iterator[World]:
    w = World(Flask({0: "system_u:system_r:ctrl_t", 2: VTPM}))
    yield w
    w.close()


@pytest.fixture
def noflask() -> Iterator[World]:
    w = World(None)
    yield w
    w.close()


# -- the rules, in-process ---------------------------------------------------------------


def test_without_flask_every_xsm_op_is_enosys(noflask: World) -> None:
    m = noflask.machine
    guest = noflask.new_domain()
    _ha, pa, _hb, pb = noflask.pair(guest, noflask.dom0)
    with pytest.raises(XsmNotEnabledError) as caught:
        m.evtchn_peer_label(noflask.dom0, pb)
    assert caught.value.errno == errno.ENOSYS
    assert "XSM/FLASK is not enabled on this host" in str(caught.value)
    with pytest.raises(XsmNotEnabledError):
        m.evtchn_peer_label(guest, pa)
    with pytest.raises(XsmNotEnabledError):
        m.set_xsm_label(noflask.dom0, guest.domid, VTPM)


def test_the_peer_label_is_the_label_of_the_domain_at_the_other_end(flask: World) -> None:
    m = flask.machine
    guest, vtpm = flask.new_domain(), flask.new_domain()  # d1 (default label), d2 (labelled)
    assert (guest.domid, vtpm.domid) == (1, 2)
    _hg, pg, _hv, pv = flask.pair(guest, vtpm)
    assert m.evtchn_peer_label(guest, pg) == VTPM
    assert m.evtchn_peer_label(vtpm, pv) == DOMU_LABEL
    _h0, p0, _h1, p1 = flask.pair(flask.dom0, vtpm)
    assert m.evtchn_peer_label(flask.dom0, p0) == VTPM
    assert m.evtchn_peer_label(vtpm, p1) == "system_u:system_r:ctrl_t"


def test_default_labels_are_the_example_policys() -> None:
    w = World(Flask())
    try:
        guest = w.new_domain()
        _h0, p0, _hg, pg = w.pair(w.dom0, guest)
        assert w.machine.evtchn_peer_label(guest, pg) == DOM0_LABEL
        assert w.machine.evtchn_peer_label(w.dom0, p0) == DOMU_LABEL
    finally:
        w.close()


def test_only_a_bound_interdomain_port_has_a_peer(flask: World) -> None:
    m = flask.machine
    a, b = flask.new_domain(), flask.new_domain()
    ha = m.evtchn_open(a).handle_id
    unbound = m.alloc_unbound(a, ha, b.domid)
    raises_errno(errno.EINVAL, lambda: m.evtchn_peer_label(a, unbound))  # not yet bound
    raises_errno(errno.EINVAL, lambda: m.evtchn_peer_label(a, 99))  # no such port
    raises_errno(errno.EINVAL, lambda: m.evtchn_peer_label(b, unbound))  # a's port, not b's
    hb = m.evtchn_open(b).handle_id
    local = m.bind_interdomain(b, hb, a.domid, unbound)
    assert m.evtchn_peer_label(a, unbound) == VTPM
    m.unbind(b, hb, local)  # the peer closes: a's port is unbound again
    raises_errno(errno.EINVAL, lambda: m.evtchn_peer_label(a, unbound))
    toolstack = m.alloc_unbound_in(flask.dom0, a.domid, 0)  # the xenstore port, unbound
    raises_errno(errno.EINVAL, lambda: m.evtchn_peer_label(a, toolstack))


def test_the_port_need_not_be_bound_by_the_asking_process(flask: World) -> None:
    # FLASK looks the port up in the calling *domain*: another connection of the
    # same domain may ask, as any process of a domain may on Xen.
    m = flask.machine
    guest, vtpm = flask.new_domain(), flask.new_domain()
    _hg, pg, _hv, _pv = flask.pair(guest, vtpm)
    assert m.evtchn_peer_label(flask.attach(guest.domid), pg) == VTPM


def test_labelling_is_dom0s_and_takes_contexts_only(flask: World) -> None:
    m = flask.machine
    guest = flask.new_domain()
    raises_errno(errno.EPERM, lambda: m.set_xsm_label(guest, guest.domid, VTPM))
    raises_errno(errno.ESRCH, lambda: m.set_xsm_label(flask.dom0, 77, VTPM))
    for bad in ("", "vtpm_t", "a:b", "a:b:", "a b:c:d", "a:b:c\n"):
        raises_errno(errno.EINVAL, lambda bad=bad: m.set_xsm_label(flask.dom0, guest.domid, bad))
    m.set_xsm_label(flask.dom0, guest.domid, "system_u:system_r:vtpm_t:s0:c1,c2")
    _h0, p0, _hg, _pg = flask.pair(flask.dom0, guest)
    assert m.evtchn_peer_label(flask.dom0, p0) == "system_u:system_r:vtpm_t:s0:c1,c2"


def test_label_options() -> None:
    assert parse_label_option(f"3={VTPM}") == (3, VTPM)
    assert parse_label_option("0=u:r:t:s0-s15:c0.c1023") == (0, "u:r:t:s0-s15:c0.c1023")
    for bad in (VTPM, f"x={VTPM}", "1=", "1=vtpm_t", f"-1={VTPM}"):
        with pytest.raises(UsageError, match="--xsm-label"):
            parse_label_option(bad)
    assert check_label(VTPM, "f") == VTPM
    raises_errno(errno.EINVAL, lambda: check_label("u:r:" + "t" * 5000, "f"))


# -- over the wire -----------------------------------------------------------------------


class Pair:
    """Two domains' processes; a allocates a port for b and b binds it."""

    def __init__(self, host: SimHost, a: int, b: int) -> None:
        self.hv_a, self.hv_b = host.attach(a, host.token(a)), host.attach(b, host.token(b))
        self.ev_a, self.ev_b = self.hv_a.event_channels(), self.hv_b.event_channels()
        self.port_a = self.ev_a.alloc_unbound(b)
        self.port_b = self.ev_b.bind_interdomain(a, self.port_a)

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hv_a.close()
        self.hv_b.close()


@pytest.mark.integration
def test_peer_labels_through_the_host_daemon() -> None:
    with temporary_host(xenstored=False, prefix="xsm", flask=True) as host:
        backend = host.create_domain(introduce=False, xsm_label=VTPM)
        with host.attach(0) as dom0, dom0.event_channels() as ev0:
            port = ev0.alloc_unbound(backend)
            raises_errno(errno.EINVAL, lambda: dom0.evtchn_peer_label(port))  # unbound
        with Pair(host, 0, backend) as p:
            assert p.hv_a.evtchn_peer_label(p.port_a) == VTPM
            assert p.hv_b.evtchn_peer_label(p.port_b) == DOM0_LABEL
            raises_errno(errno.EINVAL, lambda: p.hv_b.evtchn_peer_label(p.port_b + 1))


@pytest.mark.integration
def test_without_flask_over_the_wire() -> None:
    with temporary_host(xenstored=False, prefix="xsmn") as host:
        before = {d.domid for d in host.dom0.domains().list_domains()}
        with pytest.raises(XsmNotEnabledError) as caught:
            host.create_domain(introduce=False, xsm_label=VTPM)
        assert caught.value.errno == errno.ENOSYS
        assert {d.domid for d in host.dom0.domains().list_domains()} == before  # undone
        guest = host.create_domain(introduce=False)
        with (
            Pair(host, 0, guest) as p,
            pytest.raises(XsmNotEnabledError, match="not enabled on this host"),
        ):
            p.hv_a.evtchn_peer_label(p.port_a)


@pytest.mark.integration
def test_the_host_command_line_labels_domains_by_domid() -> None:
    labels = {0: "system_u:system_r:ctrl_t", 2: VTPM}
    with temporary_host(xenstored=False, prefix="xsmc", xsm_labels=labels) as host:
        first, second = host.create_domain(introduce=False), host.create_domain(introduce=False)
        assert (first, second) == (1, 2)
        with Pair(host, first, second) as p, Pair(host, 0, first) as q:
            assert p.hv_a.evtchn_peer_label(p.port_a) == VTPM
            assert p.hv_b.evtchn_peer_label(p.port_b) == DOMU_LABEL
            assert q.hv_b.evtchn_peer_label(q.port_b) == "system_u:system_r:ctrl_t"
            assert q.hv_a.evtchn_peer_label(q.port_a) == DOMU_LABEL


@pytest.mark.integration
def test_a_bad_label_option_is_one_line_and_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pvgrub_py.sim", "host", "--dir", "/tmp/xsm-never",
         "--xsm-label", "1=vtpm_t"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--xsm-label '1=vtpm_t'" in lines[0], r.stderr
