"""An in-process simulated machine for the rule tests (no daemon, no sockets).

`World` is a `Machine` with dom0 attached as connection 1, plus helpers to
add domains, pair event-channel ports and read what is pending; its effects
are recorded instead of acted on.  Shared by tests/test_sim_machine.py
(grants, event channels, domains) and tests/test_sim_xsm.py (FLASK).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Callable

import pytest

from pvgrub_py.sim.domains import Domain
from pvgrub_py.sim.evtpage import Endpoints, Receiver
from pvgrub_py.sim.machine import Caller, Machine
from pvgrub_py.sim.xsm import Flask
from pvgrub_py.xen.interface import DomainConfig, XenError


class RecordedEffects:
    """What the machine asks its host to do, written down."""

    def __init__(self) -> None:
        self.created: list[int] = []
        self.destroyed: list[tuple[int, list[int]]] = []

    def domain_created(self, domain: Domain) -> None:
        self.created.append(domain.domid)

    def domain_destroyed(self, domid: int, connections: list[int]) -> None:
        self.destroyed.append((domid, connections))


class World:
    """A machine (FLASK off unless *flask* is given), dom0 attached as connection 1."""

    def __init__(self, flask: Flask | None = None) -> None:
        self.effects = RecordedEffects()
        self.endpoints = Endpoints()  # real eventfds: we read them here
        tokens = (f"token{i}" for i in itertools.count())
        self.machine = Machine(self.effects, self.endpoints, lambda: next(tokens), flask=flask)
        self._conns = itertools.count(1)
        self.dom0 = self.attach(0)

    def attach(self, domid: int) -> Caller:
        domain = self.machine.domains.find(domid)
        assert domain is not None
        return self.machine.attach(next(self._conns), domid, domain.token)

    def new_domain(self) -> Caller:
        return self.attach(self.machine.create(self.dom0, DomainConfig()))

    def pair(self, a: Caller, b: Caller) -> tuple[int, int, int, int]:
        """a allocates a port for b, b binds it: (a's handle, a's port, b's handle, b's port)."""
        m = self.machine
        ha, hb = m.evtchn_open(a).handle_id, m.evtchn_open(b).handle_id
        pa = m.alloc_unbound(a, ha, b.domid)
        return ha, pa, hb, m.bind_interdomain(b, hb, a.domid, pa)

    def take(self, *handle_ids: int) -> list[tuple[int, int]]:
        """Ports of these handles that are pending (and consume that)."""
        out = []
        for handle_id in handle_ids:
            endpoint = self.endpoints.get(handle_id)
            assert endpoint is not None
            for port, eventfd in sorted(endpoint.eventfds.items()):
                with contextlib.suppress(BlockingIOError):
                    if os.eventfd_read(eventfd):
                        out.append((handle_id, port))
        return out

    def receiver(self, handle_id: int) -> Receiver:
        """What the owning process would hold: an epoll over the handle's ports."""
        endpoint = self.endpoints.get(handle_id)
        assert endpoint is not None
        receiver = Receiver(socket.socket(fileno=os.dup(endpoint.alive_theirs.fileno())))
        for port, eventfd in endpoint.eventfds.items():
            receiver.add(port, os.dup(eventfd))
        return receiver

    def close(self) -> None:
        self.machine.close()
        self.endpoints.close_all()


def raises_errno(err: int, fn: Callable[[], object]) -> XenError:
    """Call *fn*; it must fail with XenError *err*, which is returned."""
    with pytest.raises(XenError) as info:
        fn()
    assert info.value.errno == err, info.value
    return info.value
