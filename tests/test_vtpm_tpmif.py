"""tpmif end to end: our frontend, our backend daemon in another process, swtpm behind.

The host is the simulator (real shared memory, real cross-process event
channels, our xs_wire xenstored); the TPM is a real swtpm started by
``pvgrubctl vtpmd``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import killed_swtpm
import pytest
import vtpmd_world

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import leaks, temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm.backend import FrontendLink, VtpmBackend
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.shared_page import TpmifState
from pvgrub_py.vtpm.xenbus import XenbusState, read_state

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"


class Vtpmd(vtpmd_world.Vtpmd):
    """vtpmd as these tests run it: unknown uuids provisioned on first use, its
    swtpms stopped when it exits."""

    def __init__(self, host: SimHost, state: Path, tpm2: bool) -> None:
        super().__init__(host, state, "--provision-unknown", "--stop-instances-on-exit",
                         *(["--tpm2"] if tpm2 else []))  # fmt: skip

    def swtpm_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpm") as h:
        yield h


def start_vtpmd(host: SimHost, tmp_path: Path, tpm2: bool = False) -> Vtpmd:
    return Vtpmd(host, tmp_path / "vtpm-state", tpm2)


def guest_with_vtpm(host: SimHost, uuid: str = UUID) -> int:
    guest = host.create_domain()
    with host.dom0.xenstore() as xs:
        add_vtpm_device(xs, VtpmDevice(guest, 0, 0, uuid))
    return guest


def chain(n: int, digest: bytes) -> bytes:
    pcr = bytes(20)
    for _ in range(n):
        pcr = hashlib.sha1(pcr + digest).digest()
    return pcr


def test_thousand_extends_none_lost_and_nothing_leaks(host: SimHost, tmp_path: Path) -> None:
    vtpmd = start_vtpmd(host, tmp_path)
    try:
        guest = guest_with_vtpm(host)
        digest = hashlib.sha1(b"extend").digest()
        with host.attach(guest, host.token(guest)) as hv:
            with TpmFront(hv, timeout=10).connect() as front:
                client = TpmClient(front, version="1.2")
                for _ in range(1000):
                    client.extend(8, {"sha1": digest})
                assert client.read_pcrs([8]) == {"sha1": {8: chain(1000, digest)}}
            # The kexec'd-kernel case: a second frontend reconnects to the same instance.
            with TpmFront(hv, timeout=10).connect() as again:
                assert TpmClient(again, version="1.2").read_pcrs([8])["sha1"][8] == chain(
                    1000, digest
                )
        assert wait_until(lambda: not leaks(host.stats()).get(guest))
    finally:
        vtpmd.stop()
    assert wait_until(lambda: not leaks(host.stats())), leaks(host.stats())


@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_dom0_attach_power_cycles_and_guest_sees_the_measurements(
    host: SimHost, tmp_path: Path, tpm2: bool
) -> None:
    vtpmd = start_vtpmd(host, tmp_path, tpm2)
    try:
        guest = guest_with_vtpm(host)
        address = parse_vtpm_uri("xen:0")
        measured = hashlib.sha1(b"kernel").digest()
        for _ in range(2):  # the second boot must start from zero again
            transport = open_transport(address, 10, uuid=UUID, sim_dir=str(host.dir))
            with TpmClient(transport) as dom0_client:
                banks = dom0_client.active_banks()
                dom0_client.extend(
                    4, {b.name: hashlib.new(b.name, b"kernel").digest() for b in banks}
                )
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            values = TpmClient(front).read_pcrs([4])
        assert values["sha1"][4] == chain(1, measured)
        # dom0's temporary device is gone again.
        with host.dom0.xenstore() as xs:
            assert not (xs.directory("/local/domain/0/device/vtpm") or [])
    finally:
        vtpmd.stop()


@pytest.mark.slow
def test_backend_killed_mid_command_frontend_errors_in_time(host: SimHost, tmp_path: Path) -> None:
    vtpmd = start_vtpmd(host, tmp_path)
    guest = guest_with_vtpm(host)
    left_behind: list[str] = []
    try:
        with host.attach(guest, host.token(guest)) as hv:
            front = TpmFront(hv, timeout=2).connect()
            client = TpmClient(front, version="1.2")
            client.extend(4, {"sha1": bytes(20)})
            pids = vtpmd.swtpm_pids()
            assert pids
            left_behind = killed_swtpm.work_dirs(pids)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # the command will hang inside the TPM
            killer = threading.Timer(0.3, lambda: vtpmd.proc.kill())
            killer.start()
            start = time.monotonic()
            with pytest.raises(TpmTransportError):
                client.extend(4, {"sha1": bytes(20)})
            assert time.monotonic() - start < 2 + 2 + 1.5  # timeout + cancel grace + slack
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            front.close()
    finally:
        vtpmd.stop()
        killed_swtpm.remove(left_behind)
    assert wait_until(lambda: not leaks(host.stats()), timeout=10), leaks(host.stats())


class SlowFirstCommand:
    """An instance whose first command takes longer than the frontend waits."""

    def __init__(self, tpm: SwtpmProcess, delay: float) -> None:
        self.transport = tpm.transport()
        self.delay = delay
        self.calls = 0

    def __call__(self, link: FrontendLink) -> SlowFirstCommand:
        return self

    def transmit(self, command: bytes) -> bytes:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.delay)
        return self.transport.transmit(command)

    def close(self) -> None:
        self.transport.close()


def test_cancel_in_the_middle_of_a_command(host: SimHost) -> None:
    guest = guest_with_vtpm(host)
    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        slow = SlowFirstCommand(tpm, delay=3.0)
        with VtpmBackend(dom0, slow), host.attach(guest, host.token(guest)) as hv:
            front = TpmFront(hv, timeout=1).connect()
            client = TpmClient(front, version="1.2")
            with pytest.raises(TpmTransportError, match="cancelled"):
                client.extend(4, {"sha1": hashlib.sha1(b"a").digest()})
            # The late answer to the cancelled command is not taken for the next one.
            front.timeout = 10
            value = client.read_pcrs([4])["sha1"][4]
            assert value == chain(1, hashlib.sha1(b"a").digest())
            front.close()


def test_hostile_frontend_values_are_refused_others_still_served(host: SimHost) -> None:
    bad_guest = guest_with_vtpm(host)
    good_guest = guest_with_vtpm(host, "8b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d")
    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        transport = tpm.transport()
        with VtpmBackend(dom0, lambda link: transport) as backend:
            bad_path = f"/local/domain/{bad_guest}/device/vtpm/0"
            with host.attach(bad_guest, host.token(bad_guest)) as bad, bad.xenstore() as xs:
                xs.write(f"{bad_path}/ring-ref", b"99999999999999")
                xs.write(f"{bad_path}/event-channel", b"-1")
                xs.write(f"{bad_path}/feature-protocol-v2", b"1")
                xs.write(f"{bad_path}/state", b"3")
                be_path = f"/local/domain/0/backend/vtpm/{bad_guest}/0"
                assert wait_until(lambda: read_state(xs, be_path) == XenbusState.CLOSING)
            assert backend.links[(bad_guest, 0)].errors
            good = host.attach(good_guest, host.token(good_guest))
            with good as hv, TpmFront(hv, timeout=5).connect() as front:
                # An over-long length on the page gets a refusal, not a crash.
                assert front._page is not None
                front._page.memory[0:4] = (5000).to_bytes(4, "little")
                front._page.state = TpmifState.SUBMIT
                assert front._evtchn is not None
                front._evtchn.notify(front._port)
                assert wait_until(
                    lambda: front._page is not None and front._page.state == TpmifState.IDLE
                )
                assert TpmClient(front, version="1.2").read_pcrs([0])["sha1"][0] == bytes(20)
