"""Several processes on one simulated host, as domains share a real one: a frontend in
one process and a backend in another share a page and wake each other up for real;
a process killed while holding grants and ports leaves nothing behind."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pvgrub_py.sim import SimHost
from pvgrub_py.sim.testing import (
    hold_resources,
    leaks,
    pingpong_backend,
    pingpong_frontend,
    run_in_child,
    temporary_host,
    wait_until,
)
from pvgrub_py.xen.interface import DomainConfig, XenError

pytestmark = pytest.mark.integration
spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(xenstored=False) as h:
        yield h
        assert wait_until(lambda: not leaks(h.stats())), h.stats()


def collect(results: Any, count: int, timeout: float = 60) -> dict[str, Any]:
    out = {}
    for _ in range(count):
        name, result = results.get(timeout=timeout)
        out[name] = result
    return out


def test_ping_pong_1000_round_trips_no_lost_wakeups(host: SimHost) -> None:
    rounds = 1000
    domid = host.create_domain(DomainConfig(name="front"), introduce=False)
    front_end, back_end = spawn.Pipe()
    results = spawn.Queue()
    children = [
        spawn.Process(
            target=run_in_child,
            args=(pingpong_frontend, results, str(host.dir), domid, rounds, front_end),
        ),
        spawn.Process(
            target=run_in_child,
            args=(pingpong_backend, results, str(host.dir), domid, rounds, back_end),
        ),
    ]
    for child in children:
        child.start()
    try:
        out = collect(results, 2)
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    front, back = out["pingpong_frontend"], out["pingpong_backend"]
    assert isinstance(front, dict), front
    assert isinstance(back, dict), back
    assert front["timeouts"] == 0 and back["timeouts"] == 0, (front, back)
    assert front["rounds"] == rounds and back["acked"] == rounds
    assert all(child.exitcode == 0 for child in children)
    stats = host.stats()
    assert stats.total.resources == 0 and stats.page_files == 0, stats
    assert stats.of(domid).connections == 0


def test_a_killed_process_leaves_nothing_behind(host: SimHost) -> None:
    domid = host.create_domain(introduce=False)
    dom0 = host.attach(0)
    ours = dom0.grant_share().share_pages(domid)  # the guest maps this one
    ours.memory[0:4] = b"dom0"
    parent_end, child_end = spawn.Pipe()
    child = spawn.Process(target=hold_resources, args=(str(host.dir), domid, child_end))
    child.start()
    try:
        parent_end.send(ours.refs[0])
        assert parent_end.poll(30), "the child did not report"
        refs, ports = parent_end.recv()
        theirs = dom0.grant_map().map_grant(domid, refs[0])  # dom0 maps one of its pages
        evtchn = dom0.event_channels()
        local = evtchn.bind_interdomain(domid, ports[0])
        counts = host.stats().of(domid)
        assert (counts.grants, counts.mappings, counts.ports) == (2, 1, 2)

        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
        assert wait_until(lambda: host.stats().of(domid).connections == 0)

        counts = host.stats().of(domid)
        # its ports and its mapping are gone; of its grants only the one dom0 still
        # maps survives (the free is deferred, as gntalloc does), with its data
        assert (counts.grants, counts.mappings, counts.ports) == (1, 0, 0)
        assert bytes(theirs.memory[0:5]) == b"alive"
        assert evtchn.status(local) == ("unbound", domid, 0)
        theirs.close()
        evtchn.close()
        ours.close()
        assert host.stats().total.resources == 0
    finally:
        if child.is_alive():
            child.kill()
        dom0.close()


def destroyed_guest_body(host_dir: str, domid: int, peer: Any) -> dict[str, Any]:
    from pvgrub_py.sim import SimHypervisor

    with SimHypervisor.attach(host_dir, domid) as hv:
        evtchn = hv.event_channels()
        port = evtchn.alloc_unbound(0)
        peer.send(port)
        peer.recv()  # dom0 destroyed us meanwhile
        outcome: dict[str, Any] = {}
        try:
            hv.grant_share().share_pages(0)
        except XenError as e:
            outcome["call"] = e.errno
        try:
            evtchn.wait(5)
        except XenError as e:
            outcome["wait"] = e.errno
        return outcome


def test_a_destroyed_domains_process_is_cut_off(host: SimHost) -> None:
    domid = host.create_domain(introduce=False)
    parent_end, child_end = spawn.Pipe()
    results = spawn.Queue()
    child = spawn.Process(
        target=run_in_child,
        args=(destroyed_guest_body, results, str(host.dir), domid, child_end),
    )
    child.start()
    try:
        assert parent_end.poll(30)
        port = parent_end.recv()
        with host.attach(0) as dom0, dom0.event_channels() as evtchn:
            local = evtchn.bind_interdomain(domid, port)
            dom0.domains().destroy(domid)
            parent_end.send("go")
            out = collect(results, 1)["destroyed_guest_body"]
            assert out == {"call": errno.ESRCH, "wait": errno.EPIPE}, out
            assert evtchn.status(local) == ("unbound", domid, 0)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
