"""tpmif connect timing, as nested Xen (QEMU TCG) showed it: a slow backend connect.

On real Xen under QEMU TCG, vtpmd's power cycle of a TPM 1.2 instance for a
dom0 frontend took 24 s (0.6 s on a host: TPM_Init self-tests).  The attach
gave the backend 10 s to go Connected, so every TPM 1.2 measured boot failed;
and the backend, once done, wrote ``ready``/``state`` into the device the
frontend had removed meanwhile, recreating it in xenstore for good.  And on
every guest shutdown libxl waited 10 s for the backend to close the device
("unable to remove device"), because nothing answered its online=0/Closing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest

from pvgrub_py.errors import PvgrubError
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.vtpm.backend import FrontendLink, VtpmBackend
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device, remove_vtpm_device
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.xenbus import XenbusState, read_state, write_state

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmconn") as h:
        yield h


def guest_with_vtpm(host: SimHost) -> tuple[int, VtpmDevice]:
    guest = host.create_domain()
    device = VtpmDevice(guest, 0, 0, UUID)
    with host.dom0.xenstore() as xs:
        add_vtpm_device(xs, device)
    return guest, device


def test_a_backend_slower_than_connect_timeout_still_connects(host: SimHost) -> None:
    guest, _ = guest_with_vtpm(host)

    def slow_power_cycle(link: FrontendLink) -> None:
        time.sleep(4)  # longer than connect_timeout, as vtpmd's TPM 1.2 power cycle under TCG

    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        transport = tpm.transport()
        with (
            VtpmBackend(dom0, lambda link: transport, on_connect=slow_power_cycle),
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=30, connect_timeout=2).connect() as front,
        ):
            digest = hashlib.sha1(b"kernel").digest()
            TpmClient(front, version="1.2").extend(4, {"sha1": digest})


def test_finding_no_backend_still_fails_after_connect_timeout(host: SimHost) -> None:
    guest, _ = guest_with_vtpm(host)  # and no backend serves it
    with host.attach(guest, host.token(guest)) as hv:
        started = time.monotonic()
        with pytest.raises(TpmTransportError, match="INIT_WAIT"):
            TpmFront(hv, timeout=30, connect_timeout=0.5).connect()
        assert time.monotonic() - started < 5


def test_a_device_removed_while_connecting_is_not_recreated(host: SimHost) -> None:
    guest, device = guest_with_vtpm(host)
    removed = []

    def toolstack_gives_up(link: FrontendLink) -> None:
        # Recorded before the removal: the frontend fails the moment the device
        # vanishes, and the test thread may look at this list before this thread
        # runs another line (appending after the removal failed 3 runs in 24).
        removed.append(link.name)
        with host.dom0.xenstore() as xs:  # as a frontend that stopped waiting would
            remove_vtpm_device(xs, device)

    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        transport = tpm.transport()
        backend = VtpmBackend(dom0, lambda link: transport, on_connect=toolstack_gives_up)
        with backend, host.attach(guest, host.token(guest)) as hv:
            # The device vanishes under the frontend, which fails as soon as it sees
            # that (a generous timeout, so a loaded machine cannot make it time out
            # before the backend ever got to on_connect).
            with pytest.raises(PvgrubError):
                TpmFront(hv, timeout=20, connect_timeout=20).connect()
            assert removed
            assert wait_until(lambda: not backend.links)
            with host.dom0.xenstore() as xs:
                assert xs.directory(f"/local/domain/0/backend/vtpm/{guest}") in (None, [])


def test_the_toolstack_removing_a_device_gets_closed(host: SimHost) -> None:
    guest, device = guest_with_vtpm(host)
    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        transport = tpm.transport()
        backend = VtpmBackend(dom0, lambda link: transport)
        with backend, host.attach(guest, host.token(guest)) as hv:
            front = TpmFront(hv, timeout=10).connect()
            assert backend.links[(guest, 0)].connected
            with host.dom0.xenstore() as xs:  # what libxl does on xl destroy
                xs.write(f"{device.backend_path}/online", b"0")
                write_state(xs, device.backend_path, XenbusState.CLOSING)
                assert wait_until(lambda: read_state(xs, device.backend_path) == XenbusState.CLOSED)
                assert not backend.links[(guest, 0)].connected
                remove_vtpm_device(xs, device)  # then libxl removes both halves
            assert wait_until(lambda: not backend.links)
            front._release()  # the guest is gone: nothing to hand back
