"""A restart of vtpmd never serves a running guest reset PCRs (issue 15, items 2, 3).

The old daemon stopped its swtpms on SIGTERM, so a restarted one served the
guest a fresh TPM (PCR 4 zero: the guest could replay a good boot's digest);
after a ``kill -9`` the orphaned swtpm kept its state directory's lock and the
restarted daemon could not start that vTPM at all.  Now the swtpms outlive the
daemon and a restarted one reattaches; one whose swtpm is gone fails that
guest's vTPM closed until the toolstack measures its next boot.

vtpmd gets ``--tpm2`` (only used for --provision-unknown now), so that the old
daemon, one TPM version for all, served these TPM 2.0 instances too: on it
these tests fail on the bug itself (the swtpm gone after SIGTERM, the device
Closing after kill -9), not on the command line.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pvgrubctl_run import run as pvgrubctl
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
    swtpm_pids,
)

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmError
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.xenbus import XenbusState

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmr") as h:
        yield h


@pytest.fixture
def state() -> Iterator[Path]:
    with state_root("vr", UUID) as path:
        yield path


def pcr4(client: TpmClient, deadline: float = 15.0) -> bytes:
    """PCR 4 (sha1) as the guest reads it once the backend answers again: a
    command in flight across the restart may fail, none may succeed with zeros."""
    end = time.monotonic() + deadline
    while True:
        try:
            return sha1_pcr4(client.transport)
        except TpmError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_a_restarted_vtpmd_serves_the_guest_the_same_pcrs(
    host: SimHost, state: Path, how: str
) -> None:
    vtpmd = Vtpmd(host, state, "--tpm2")
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=3).connect() as front,
        ):
            client = TpmClient(front, version="2.0")
            assert pcr4(client) == PCR4
            swtpm_before = swtpm_pids(state)
            if how == "kill9":
                vtpmd.kill9()
            else:
                vtpmd.stop()
            assert swtpm_pids(state) == swtpm_before  # the instance outlived the daemon
            vtpmd = Vtpmd(host, state, "--tpm2")
            for _ in range(20):
                assert pcr4(client) == PCR4  # never zeros, never another value
            assert wait_until(lambda: backend_state(host, guest) == XenbusState.CONNECTED)
            assert swtpm_pids(state) == swtpm_before  # reattached, not restarted
    finally:
        err = vtpmd.stop()
    assert "reattached to running swtpm" in err, err


def test_a_command_submitted_while_vtpmd_was_down_is_cancelled_never_run_twice(
    host: SimHost, state: Path
) -> None:
    """The restarted daemon cannot tell a command its predecessor ran (and died
    before answering) from one nobody saw: it cancels it, so an extend is never
    applied twice (the PCR would no longer match the guest's event log)."""
    vtpmd = Vtpmd(host, state, "--tpm2")
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            client = TpmClient(front, version="2.0")
            assert pcr4(client) == PCR4
            vtpmd.kill9()
            outcome: list[BaseException | None] = []

            def extend() -> None:
                try:
                    client.extend(4, {b.name: KERNEL[b.name] for b in client.active_banks()})
                    outcome.append(None)
                except TpmError as e:
                    outcome.append(e)

            worker = threading.Thread(target=extend)
            worker.start()
            time.sleep(0.5)  # submitted, nobody serving
            vtpmd = Vtpmd(host, state, "--tpm2")
            worker.join(15)
            assert outcome and outcome[0] is not None, outcome  # failed, not answered
            assert pcr4(client) == PCR4  # and not extended
    finally:
        err = vtpmd.stop()
    assert "cancelled, not run" in err, err


def test_a_second_vtpmd_on_one_state_dir_is_refused(host: SimHost, state: Path) -> None:
    vtpmd = Vtpmd(host, state)
    try:
        second = pvgrubctl("vtpmd", "--sim", str(host.dir), "--state-dir", str(state), timeout=30)
        assert second.returncode == 1, second
        assert f"another vtpmd (pid {vtpmd.proc.pid}) serves this state directory" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    finally:
        vtpmd.kill9()
    # A kill -9 frees it: the next one starts.
    Vtpmd(host, state).stop()


@pytest.mark.slow
def test_a_guest_whose_swtpm_died_with_vtpmd_is_refused_until_its_next_boot(
    host: SimHost, state: Path
) -> None:
    vtpmd = Vtpmd(host, state, "--tpm2")
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with host.attach(guest, host.token(guest)) as hv:
            front = TpmFront(hv, timeout=2).connect()
            client = TpmClient(front, version="2.0")
            assert pcr4(client) == PCR4
            vtpmd.kill9()
            for pid in swtpm_pids(state):
                os.kill(pid, signal.SIGKILL)  # the PCRs are gone with it
            # The orphan no longer blocks a restart ("swtpm did not start" before).
            vtpmd = Vtpmd(host, state, "--tpm2")
            assert wait_until(lambda: backend_state(host, guest) == XenbusState.CLOSING, 15)
            assert backend_node(host, guest, "error") == (
                b"vTPM PCRs lost (restart); reboot the guest"
            )
            with pytest.raises(TpmError):
                pcr4(client, deadline=0)
            front.close()
        # The guest's next boot: dom0 measures again, and a new frontend is served.
        with host.dom0.xenstore() as xs:
            xs.rm(f"/local/domain/0/backend/vtpm/{guest}")
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert pcr4(TpmClient(front, version="2.0")) == PCR4
    finally:
        vtpmd.stop()


# -- NV writes: acknowledged is on disk -----------------------------------------------------

NV_INDEX = 0x01500016
OWNER = 0x40000001
#: A password session with an empty password (TPM 2.0 Part 1, TPM_RS_PW).
PW_SESSION = struct.pack(">IHBH", 0x40000009, 0, 0, 0)


def _command(code: int, handles: bytes, params: bytes) -> bytes:
    body = handles + struct.pack(">I", len(PW_SESSION)) + PW_SESSION + params
    return struct.pack(">HII", 0x8002, 10 + len(body), code) + body


def nv_define(size: int) -> bytes:  # TPM2_NV_DefineSpace, OWNERWRITE | OWNERREAD
    public = struct.pack(">IHIHH", NV_INDEX, 0x000B, 0x00020002, 0, size)
    params = struct.pack(">H", 0) + struct.pack(">H", len(public)) + public
    return _command(0x12A, struct.pack(">I", OWNER), params)


def nv_write(data: bytes) -> bytes:  # TPM2_NV_Write at offset 0
    params = struct.pack(">H", len(data)) + data + struct.pack(">H", 0)
    return _command(0x137, struct.pack(">II", OWNER, NV_INDEX), params)


def nv_read(size: int) -> bytes:  # TPM2_NV_Read
    return _command(0x14E, struct.pack(">II", OWNER, NV_INDEX), struct.pack(">HH", size, 0))


def rc_of(answer: bytes) -> int:
    return int(struct.unpack(">I", answer[6:10])[0])


@pytest.mark.slow
def test_acknowledged_nv_writes_survive_kill9_of_swtpm(host: SimHost, state: Path) -> None:
    """swtpm writes its permanent state (NV included) before it answers: a
    write the guest saw acknowledged is there after a kill -9 and a restart."""
    vtpmd = Vtpmd(host, state, "--tpm2")
    acked: list[bytes] = []
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert rc_of(front.transmit(nv_define(32))) == 0
            for i in range(200):
                value = hashlib.sha256(b"%d" % i).digest()
                assert rc_of(front.transmit(nv_write(value))) == 0
                acked.append(value)
            (pid,) = swtpm_pids(state)
            os.kill(pid, signal.SIGKILL)
            # The guest's next command gets an error in its TPM's own version.
            answer = front.transmit(nv_read(32))
            assert answer[:2] == b"\x80\x01" and rc_of(answer) == 0x101
        # The next boot: dom0 finds the swtpm dead and starts it from disk.
        transport = open_transport(parse_vtpm_uri("xen:0"), 10, uuid=UUID, sim_dir=str(host.dir))
        try:
            answer = transport.transmit(nv_read(32))
        finally:
            transport.close()
        assert rc_of(answer) == 0
        (size,) = struct.unpack(">H", answer[14:16])
        assert answer[16 : 16 + size] == acked[-1]
    finally:
        vtpmd.stop()
