"""Helpers for tests and benchmarks of code that runs on the simulator.

Process bodies live here, not in test modules, so a ``multiprocessing`` "spawn" child
can import them wherever it starts.  The ping-pong pair is the smallest honest ring
protocol: the frontend writes a sequence number into a granted page and notifies;
the backend, woken by the event channel, acknowledges in the same page and notifies
back.  Each side follows the rule that makes wake-ups impossible to lose with
``xenevtchn_pending`` semantics: after `wait`, *unmask first, then look at the shared
page*, and wait again only if there is nothing to do.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.stats import Counts, HostStats

SEQ = struct.Struct("<I")  # offset 0: written by the frontend
ACK = struct.Struct("<I")  # offset 4: written by the backend
WAIT_TIMEOUT = 5.0


@contextlib.contextmanager
def temporary_host(
    *,
    xenstored: bool = True,
    prefix: str = "sim",
    flask: bool = False,
    xsm_labels: Mapping[int, str] | None = None,
    fd_limit: int | None = None,
) -> Iterator[SimHost]:
    """A host in a fresh short directory under /tmp (socket paths are limited to 107
    bytes, pytest's tmp_path may be longer), stopped and removed afterwards.
    ``flask``, ``xsm_labels``, ``fd_limit``: as `SimHost.start`."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        with SimHost.start(
            path, xenstored=xenstored, flask=flask, xsm_labels=xsm_labels, fd_limit=fd_limit
        ) as host:
            yield host
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def leaks(stats: HostStats) -> dict[int, Counts]:
    """Domains still holding grants, mappings or ports through their processes."""
    return {domid: c for domid, c in stats.domains.items() if c.resources}


# -- process bodies ------------------------------------------------------------------------


def pingpong_frontend(host_dir: str, domid: int, rounds: int, peer: Connection) -> dict[str, Any]:
    """Share a page and an unbound port with dom0, then ``rounds`` request/ack trips."""
    waits = timeouts = 0
    with SimHypervisor.attach(host_dir, domid) as hv:
        gntshr, evtchn = hv.grant_share(), hv.event_channels()
        page = gntshr.share_pages(0, 1)
        port = evtchn.alloc_unbound(0)
        peer.send((page.refs[0], port))
        if peer.recv() != "bound":
            raise RuntimeError("the backend did not bind")
        mem = page.memory
        start = time.perf_counter()
        for seq in range(1, rounds + 1):
            SEQ.pack_into(mem, 0, seq)
            evtchn.notify(port)
            while ACK.unpack_from(mem, 4)[0] != seq:
                got = evtchn.wait(WAIT_TIMEOUT)
                if got is None:
                    timeouts += 1
                    break
                waits += 1
                evtchn.unmask(got)
            if timeouts:
                break
        seconds = time.perf_counter() - start
        peer.send("done")
        peer.recv()  # the backend has unmapped and unbound
        page.close()
        evtchn.close()
        return {"rounds": seq, "seconds": seconds, "waits": waits, "timeouts": timeouts}


def pingpong_backend(host_dir: str, frontend: int, rounds: int, peer: Connection) -> dict[str, Any]:
    """As dom0: map the frontend's page, bind its port, acknowledge every request."""
    waits = timeouts = acked = 0
    with SimHypervisor.attach(host_dir, 0) as hv:
        gnttab, evtchn = hv.grant_map(), hv.event_channels()
        ref, remote_port = peer.recv()
        page = gnttab.map_grant(frontend, ref)
        port = evtchn.bind_interdomain(frontend, remote_port)
        peer.send("bound")
        mem = page.memory
        while acked < rounds:
            got = evtchn.wait(WAIT_TIMEOUT)
            if got is None:
                timeouts += 1
                break
            waits += 1
            evtchn.unmask(got)
            seq = SEQ.unpack_from(mem, 0)[0]
            if seq != acked:
                ACK.pack_into(mem, 4, seq)
                acked = seq
                evtchn.notify(port)
        if peer.recv() != "done":
            raise RuntimeError("the frontend did not finish")
        page.close()
        evtchn.close()
        peer.send("closed")
        return {"acked": acked, "waits": waits, "timeouts": timeouts}


def run_in_child(body: Callable[..., dict[str, Any]], results: Any, *args: Any) -> None:
    """Run ``body(*args)`` and put ``(name, result or repr(exception))`` on ``results``."""
    try:
        results.put((body.__name__, body(*args)))
    except BaseException as e:
        results.put((body.__name__, f"{type(e).__name__}: {e}"))
        raise


def hold_resources(host_dir: str, domid: int, peer: Connection) -> None:
    """Take grants, ports and a mapping of a dom0 grant, report them, then sleep until
    killed: the "process dies holding everything" case."""
    hv = SimHypervisor.attach(host_dir, domid)
    pages = hv.grant_share().share_pages(0, 2)
    evtchn = hv.event_channels()
    ports = [evtchn.alloc_unbound(0), evtchn.alloc_unbound(0)]
    dom0_ref = peer.recv()
    mapping = hv.grant_map().map_grant(0, dom0_ref)
    pages.memory[0:5] = b"alive"
    peer.send((list(pages.refs), ports))
    _keep = (pages, evtchn, mapping)
    while True:
        time.sleep(60)


def evtchn_initiator(host_dir: str, domid: int, rounds: int, peer: Connection) -> dict[str, Any]:
    """Event channel only: notify, wait for the answer, unmask; ``rounds`` times."""
    with SimHypervisor.attach(host_dir, domid) as hv, hv.event_channels() as evtchn:
        port = evtchn.alloc_unbound(0)
        peer.send(port)
        if peer.recv() != "ready":
            raise RuntimeError("the responder is not ready")
        timeouts = 0
        start = time.perf_counter()
        for _ in range(rounds):
            evtchn.notify(port)
            got = evtchn.wait(WAIT_TIMEOUT)
            if got is None:
                timeouts += 1
                break
            evtchn.unmask(got)
        seconds = time.perf_counter() - start
        peer.recv()
        return {"rounds": rounds, "seconds": seconds, "timeouts": timeouts}


def evtchn_responder(host_dir: str, frontend: int, rounds: int, peer: Connection) -> dict[str, Any]:
    """As dom0: bind the initiator's port and answer each event with one."""
    with SimHypervisor.attach(host_dir, 0) as hv, hv.event_channels() as evtchn:
        port = evtchn.bind_interdomain(frontend, peer.recv())
        first = evtchn.wait(WAIT_TIMEOUT)  # the event Xen sets on bind
        if first is not None:
            evtchn.unmask(first)
        peer.send("ready")
        answered = 0
        for _ in range(rounds):
            got = evtchn.wait(WAIT_TIMEOUT)
            if got is None:
                break
            evtchn.unmask(got)
            evtchn.notify(port)
            answered += 1
        peer.send("done")
        return {"answered": answered}
