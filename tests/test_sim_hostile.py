"""The simulated host under a guest that takes everything it can.

A guest may attach any number of processes, open event-channel handles and
xenstore connections until the host daemon runs out of descriptors.  Each is
capped per domain and refused with EMFILE; what is left is dom0's, whose
service (the toolstack, vtpmd) must never stop for a guest's excess.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.protocol import Op, decode
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.xen.interface import XenError

pytestmark = pytest.mark.integration

T = TypeVar("T")
#: The caps the host daemon promises (pvgrub_py/sim/daemon.py) and the
#: "connections" quota of our xenstored.
ATTACH_CAP, HANDLE_CAP, XENSTORE_CAP, PENDING_CAP = 64, 64, 16, 64


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="simhostile") as h:
        yield h


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, which must return (or raise) within ``seconds``: a request
    the host never answers fails the test instead of hanging it."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def take_until_refused(
    count: int, take: Callable[[], T], seconds: float = 5.0
) -> tuple[list[T], BaseException | None]:
    """Call ``take`` up to ``count`` times; what it gave, and what stopped it."""
    taken: list[T] = []
    for _ in range(count):
        try:
            taken.append(within(seconds, take))
        except (XenError, TimeoutError) as e:
            return taken, e
    return taken, None


def close_all(things: list[SimHypervisor] | list[object]) -> None:
    for thing in things:
        close = getattr(thing, "close", None)
        if close is not None:
            with contextlib.suppress(XenError):
                close()


def dom0_still_works(host: SimHost) -> None:
    """dom0's old connection and a new one: event channels, xenstore, a domain."""
    evtchn = within(10, host.dom0.event_channels)
    evtchn.close()
    with within(10, lambda: host.attach(0)) as dom0:
        with within(10, dom0.event_channels) as channels:
            assert channels.alloc_unbound(0) > 0
        with within(10, dom0.xenstore) as xs:
            xs.write("/tool/probe", b"alive")
            assert xs.read("/tool/probe") == b"alive"
    domid = within(10, host.create_domain)
    host.destroy_domain(domid)


def test_a_guest_attaches_at_most_its_cap(host: SimHost) -> None:
    guest = host.create_domain()
    hvs, stopped = take_until_refused(
        ATTACH_CAP + 10, lambda: host.attach(guest, host.token(guest))
    )
    try:
        assert len(hvs) == ATTACH_CAP  # before: all 74
        assert isinstance(stopped, XenError) and stopped.errno == errno.EMFILE, stopped
        dom0_still_works(host)
        hvs.pop().close()  # one goes: one more may come
        hvs.append(within(10, lambda: host.attach(guest, host.token(guest))))
    finally:
        close_all(hvs)


def test_a_guest_opens_at_most_its_cap_of_event_channel_handles(host: SimHost) -> None:
    guest = host.create_domain()
    with host.attach(guest, host.token(guest)) as hv:
        handles, stopped = take_until_refused(HANDLE_CAP + 10, hv.event_channels)
        try:
            assert len(handles) == HANDLE_CAP  # before: all 74
            assert isinstance(stopped, XenError) and stopped.errno == errno.EMFILE, stopped
            assert hv.domains is not None and within(10, lambda: hv.xenstore().close()) is None
            dom0_still_works(host)
        finally:
            close_all(handles)  # type: ignore[arg-type]


def test_a_guest_opens_at_most_its_quota_of_xenstore_connections(host: SimHost) -> None:
    guest = host.create_domain()
    with host.attach(guest, host.token(guest)) as hv:
        stores, stopped = take_until_refused(XENSTORE_CAP + 10, hv.xenstore)
        try:
            # A relative write lands in the guest's home: the connections are its.
            stores[0].write("data/probe", b"guest")
            with host.dom0.xenstore() as xs:
                assert xs.read(f"/local/domain/{guest}/data/probe") == b"guest"
            assert len(stores) == XENSTORE_CAP  # before: all 26
            assert isinstance(stopped, XenError) and stopped.errno == errno.EMFILE, stopped
            dom0_still_works(host)
        finally:
            close_all(stores)  # type: ignore[arg-type]


def test_guests_exhausting_descriptors_leave_dom0_served() -> None:
    """With 300 descriptors, six guests attach as often as they can.  Before,
    they took every descriptor: the daemon could not accept (dom0 hung), and
    dom0's next EVT_OPEN failed with EMFILE, which dropped dom0's client."""
    with temporary_host(prefix="simfds", fd_limit=300) as host:
        host.dom0.stats()  # dom0 is attached before the guests come
        guests = [host.create_domain() for _ in range(6)]
        taken: list[SimHypervisor] = []
        stops: list[BaseException | None] = []
        try:
            for guest in guests:
                hvs, stopped = take_until_refused(
                    ATTACH_CAP + 6, lambda g=guest: host.attach(g, host.token(g)), seconds=3
                )
                taken += hvs
                stops.append(stopped)
            dom0_still_works(host)  # before: XenError EIO, dom0's client dropped
            assert all(isinstance(s, XenError) and s.errno == errno.EMFILE for s in stops), stops
            assert len(taken) < 4 * ATTACH_CAP  # the reserve refused the later guests early
            close_all(taken)
            taken = []
            dom0_still_works(host)
        finally:
            close_all(taken)
        log = host.layout.log.read_text(errors="replace")
        xenstored_log = host.layout.xenstored_log.read_text(errors="replace")
    assert "Traceback" not in log and "Traceback" not in xenstored_log
    assert len(log.splitlines()) < 40, log[-3000:]


def test_connections_that_never_attach_are_bounded(host: SimHost) -> None:
    """Connecting costs the daemon a descriptor before anyone is known: at
    most 64 may wait to attach; the oldest go first (told why)."""
    waiting = []
    try:
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect(str(host.layout.socket))
            waiting.append(sock)
        dom0_still_works(host)  # its connection waited too, briefly
        # The daemon drops as it accepts, so the dropped are readable by now.
        readable, _, _ = select.select(waiting, [], [], 1.0)
        notices = [decode(sock.recv(4096)).op for sock in readable]
        assert len(notices) >= 100 - PENDING_CAP  # before: none
        assert set(notices) == {Op.NOTICE}
    finally:
        for sock in waiting:
            sock.close()
