"""A vTPM serves the one guest whose boot was measured into it (issue 15, item 2).

The old daemon served a guest frontend once dom0 had power-cycled the
instance since its swtpm started, whatever its domain: a second domain given
the same uuid read and extended the first guest's PCRs, a vTPM hot-plugged
into another domain after the measured one was destroyed was served its
PCRs, and a guest whose instance dom0 power-cycled for a new boot went on
being served on the ring it had, from reset PCRs it could forge PCR 4/5 on.
Now the toolstack's power cycle issues a one-shot ticket; the first guest
frontend takes it and binds the instance to its (domid, devid), recorded in
swtpm-run.json; every other frontend is refused.  On the simulator, vtpmd in
its own process, real swtpm behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from vtpmd_world import (
    KERNEL,
    PCR4,
    Vtpmd,
    backend_node,
    backend_state,
    dom0_measures,
    guest_with_vtpm,
    sha1_pcr4,
    state_root,
)

from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.errors import TpmError, TpmTransportError
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.xenbus import XenbusState

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID = "2e7d1c4b-8a3f-4e6d-9b1c-5f0a2d3c4b5e"
IN_USE = "vTPM in use by another domain or device"
NOT_MEASURED = "vTPM not measured for this boot; reboot the guest"


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmb") as h:
        yield h


@pytest.fixture
def state() -> Iterator[Path]:
    with state_root("vb", UUID) as path:
        yield path


def served_pcr4(host: SimHost, guest: int, devid: int = 0) -> bytes:
    with (
        host.attach(guest, host.token(guest)) as hv,
        TpmFront(hv, devid, timeout=10).connect() as front,
    ):
        return sha1_pcr4(front)


def refused(host: SimHost, guest: int, devid: int = 0) -> str:
    """The guest's connect fails, its device goes Closing, and its error node says why."""
    with (
        host.attach(guest, host.token(guest)) as hv,
        pytest.raises(TpmTransportError) as info,
    ):
        TpmFront(hv, devid, timeout=10).connect()
    assert "CLOSING" in str(info.value), info.value
    with host.dom0.xenstore() as xs:
        path = f"/local/domain/0/backend/vtpm/{guest}/{devid}"
        error = xs.read(f"{path}/error")
    assert error, "no error node"
    return error.decode()


def binding(state: Path) -> tuple[bool, int, int]:
    """(ticket, bound domid, bound devid) as swtpm-run.json records them."""
    record = json.loads((state / UUID / "swtpm-run.json").read_text())
    return record.get("ticket"), record.get("bound_domid"), record.get("bound_devid")


def test_the_measured_guest_is_served_and_another_domain_or_device_refused(
    host: SimHost, state: Path
) -> None:
    vtpmd = Vtpmd(host, state)
    try:
        guest_a = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        assert served_pcr4(host, guest_a) == PCR4
        # The same uuid in a second domain: refused, its device Closing.
        guest_b = guest_with_vtpm(host, UUID)
        assert refused(host, guest_b) == IN_USE
        assert backend_state(host, guest_b) == XenbusState.CLOSING
        # A second device of the bound domain, on the same instance: refused.
        with host.dom0.xenstore() as xs:
            add_vtpm_device(xs, VtpmDevice(guest_a, 0, 1, UUID))
        assert refused(host, guest_a, devid=1) == IN_USE
        # The measured guest itself: served, again and again (a kexec'd kernel).
        assert served_pcr4(host, guest_a) == PCR4
        assert served_pcr4(host, guest_a) == PCR4
        assert backend_node(host, guest_a, "error") is None
        assert binding(state) == (False, guest_a, 0)
    finally:
        err = vtpmd.stop()
    assert f"refusing domain {guest_b} device 0" in err, err


def test_a_vtpm_hot_plugged_after_the_bound_domain_is_destroyed_is_refused(
    host: SimHost, state: Path
) -> None:
    vtpmd = Vtpmd(host, state)
    try:
        guest_a = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        assert served_pcr4(host, guest_a) == PCR4
        # B's device is there already (so the instance keeps running when A
        # goes), B does not connect while A runs.
        guest_b = guest_with_vtpm(host, UUID)
        host.destroy_domain(guest_a)
        assert wait_until(lambda: backend_state(host, guest_a) == XenbusState.UNKNOWN, 10)
        assert refused(host, guest_b) == NOT_MEASURED
        assert binding(state)[1:] == (-1, -1)  # A's device is gone, and so is its binding
        # A device added to yet another domain afterwards: refused just the same.
        guest_c = guest_with_vtpm(host, UUID)
        assert refused(host, guest_c) == NOT_MEASURED
        # A measured boot of a new domain is served.
        with host.dom0.xenstore() as xs:
            for gone in (guest_b, guest_c):
                xs.rm(f"/local/domain/0/backend/vtpm/{gone}")
        guest_d = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        assert served_pcr4(host, guest_d) == PCR4
    finally:
        vtpmd.stop()


def test_the_ticket_and_the_binding_survive_a_vtpmd_restart(host: SimHost, state: Path) -> None:
    vtpmd = Vtpmd(host, state)
    try:
        guest_a = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        # Killed between the measurement and the guest's connect: the ticket is kept.
        vtpmd.kill9()
        vtpmd = Vtpmd(host, state)
        with host.attach(guest_a, host.token(guest_a)) as hv:
            with TpmFront(hv, timeout=10).connect() as front:
                assert sha1_pcr4(front) == PCR4
                # Killed while the guest is connected: it is reattached and served.
                vtpmd.kill9()
                vtpmd = Vtpmd(host, state)
                assert wait_until(lambda: backend_state(host, guest_a) == XenbusState.CONNECTED, 15)
                # A command the guest submits before the new daemon has re-mapped its ring
                # is cancelled, never run twice: at most one fails, then it is served.
                try:
                    after = sha1_pcr4(front)
                except TpmTransportError as e:
                    assert "cancelled" in str(e), e
                    after = sha1_pcr4(front)
                assert after == PCR4
            assert served_pcr4(host, guest_a) == PCR4  # and on a reconnect
        # The restarted daemon knows whose it is: another domain is refused.
        guest_b = guest_with_vtpm(host, UUID)
        assert refused(host, guest_b) == IN_USE
    finally:
        vtpmd.stop()


def test_a_new_boot_ends_the_bound_guests_service(host: SimHost, state: Path) -> None:
    """dom0 power-cycles the instance for a new boot while the guest it served
    still runs: that guest's next command fails (not reset PCRs to forge on),
    it cannot take the new boot's ticket, and the new boot's guest is served."""
    vtpmd = Vtpmd(host, state)
    try:
        guest_a = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest_a, host.token(guest_a)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert sha1_pcr4(front) == PCR4
            dom0_measures(host, UUID, KERNEL)
            with pytest.raises(TpmError):
                sha1_pcr4(front)
        assert refused(host, guest_a) == NOT_MEASURED
        guest_b = guest_with_vtpm(host, UUID)
        assert served_pcr4(host, guest_b) == PCR4
    finally:
        vtpmd.stop()
