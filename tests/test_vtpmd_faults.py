"""Fault runs with numbers (issue 15, item 4): vtpmd and swtpm killed during a
stream of 200 extends or NV writes; no acknowledged write may be lost.

A write is acknowledged when its success answer reached the guest.  After
each run the TPM is read back: an extend stream's PCR must be the chain of
at least the acknowledged extends (one more is allowed: a command the dying
daemon ran but could not answer, which the guest saw fail), an NV stream's
index must hold the last acknowledged value or a later one.  Each test
prints its row of the fault table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_vtpmd_restart import UUID, nv_define, nv_read, nv_write, rc_of
from vtpmd_world import (
    KERNEL,
    Vtpmd,
    dom0_measures,
    guest_with_vtpm,
    kill_swtpms,
    state_root,
    swtpm_pids,
)

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmError
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm import manufacture
from pvgrub_py.vtpm.frontend import TpmFront

pytestmark = [pytest.mark.integration, pytest.mark.swtpm, pytest.mark.slow]

RUNS = 3
STREAM = 200
PCR = 16  # the debug PCR: resettable, no boot measurement in it
DIGEST = {"sha1": hashlib.sha1(b"event").digest(), "sha256": hashlib.sha256(b"event").digest()}


def chain(n: int) -> bytes:
    value = bytes(20)
    for _ in range(n):
        value = hashlib.sha1(value + DIGEST["sha1"]).digest()
    return value


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmf") as h:
        yield h


@pytest.fixture
def state() -> Iterator[Path]:
    with state_root("vf", UUID) as path:
        yield path


class Daemon:
    """The running vtpmd, replaced by the fault."""

    def __init__(self, host: SimHost, state: Path) -> None:
        self.host, self.state = host, state
        self.vtpmd = Vtpmd(host, state)

    def kill9_and_restart(self) -> None:
        self.vtpmd.kill9()
        self.vtpmd = Vtpmd(self.host, self.state)

    def sigterm_and_restart(self) -> None:
        self.vtpmd.stop()
        self.vtpmd = Vtpmd(self.host, self.state)

    def kill9_swtpm(self) -> None:
        for pid in swtpm_pids(self.state):
            os.kill(pid, signal.SIGKILL)


def stream(
    send: Callable[[int], bool], fault: Callable[[], None], at: int
) -> tuple[list[int], int]:
    """Send STREAM writes (``send(i)``: acknowledged or not); ``fault`` runs on
    another thread once ``at`` are acknowledged.  The acknowledged indices and
    the number of failures."""
    acked: list[int] = []
    failed = 0
    reached = threading.Event()
    faulted = threading.Thread(target=lambda: (reached.wait(30), fault()))
    faulted.start()
    for i in range(STREAM):
        try:
            ok = send(i)
        except TpmError:
            ok = False
        if ok:
            acked.append(i)
        else:
            failed += 1
        if len(acked) == at:
            reached.set()
    reached.set()
    faulted.join(30)
    return acked, failed


@pytest.mark.parametrize("fault", ["vtpmd kill -9", "vtpmd SIGTERM"])
def test_extends_across_a_vtpmd_fault(host: SimHost, state: Path, fault: str) -> None:
    daemon = Daemon(host, state)
    lost_total, outcomes = 0, []
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=3).connect() as front,
        ):
            client = TpmClient(front, version="2.0")
            banks = [b for b in client.active_banks() if b.name == "sha1"]
            for run in range(RUNS):
                # TPM2_PCR_Reset of the debug PCR, with an empty password session
                reset = struct.pack(">HIII", 0x8002, 27, 0x13D, PCR) + struct.pack(
                    ">IIHBH", 9, 0x40000009, 0, 0, 0
                )
                assert rc_of(front.transmit(reset)) == 0
                assert client.read_pcrs([PCR], banks)["sha1"][PCR] == bytes(20)
                act = daemon.kill9_and_restart if "kill" in fault else daemon.sigterm_and_restart

                def send(i: int) -> bool:
                    client.extend(PCR, DIGEST)
                    return True

                acked, failed = stream(send, act, random.Random(run).randint(20, 180))
                value = None
                for _ in range(50):
                    try:
                        value = client.read_pcrs([PCR], banks)["sha1"][PCR]
                        break
                    except TpmError:
                        continue
                applied = next(n for n in range(len(acked) + failed + 1) if chain(n) == value)
                lost = max(0, len(acked) - applied)
                lost_total += lost
                outcomes.append(f"{len(acked)} acked, {failed} failed, {applied} applied")
    finally:
        daemon.vtpmd.stop()
    print(f"\n| {fault} during {STREAM} extends | {RUNS} | {lost_total} | {'; '.join(outcomes)} |")
    assert lost_total == 0


def nv_value(i: int) -> bytes:
    return hashlib.sha256(b"%d" % i).digest()


@pytest.mark.parametrize("fault", ["vtpmd kill -9", "swtpm kill -9"])
def test_nv_writes_across_a_fault(host: SimHost, state: Path, fault: str) -> None:
    daemon = Daemon(host, state)
    lost_total, outcomes = 0, []
    try:
        for run in range(RUNS):
            guest = guest_with_vtpm(host, UUID)
            dom0_measures(host, UUID, KERNEL)
            with host.attach(guest, host.token(guest)) as hv:
                front = TpmFront(hv, timeout=3).connect()
                if run == 0:
                    assert rc_of(front.transmit(nv_define(32))) == 0

                def send(i: int, front: TpmFront = front) -> bool:
                    return rc_of(front.transmit(nv_write(nv_value(i)))) == 0

                act = daemon.kill9_and_restart if fault.startswith("vtpmd") else daemon.kill9_swtpm
                acked, failed = stream(send, act, random.Random(run).randint(20, 180))
                front.close()
            with host.dom0.xenstore() as xs:  # the guest is gone; the next boots
                xs.rm(f"/local/domain/0/backend/vtpm/{guest}")
            transport = open_transport(
                parse_vtpm_uri("xen:0"), 10, uuid=UUID, sim_dir=str(host.dir)
            )
            try:
                answer = transport.transmit(nv_read(32))
            finally:
                transport.close()
            assert rc_of(answer) == 0
            (size,) = struct.unpack(">H", answer[14:16])
            data = answer[16 : 16 + size]
            held = next((i for i in range(STREAM) if nv_value(i) == data), -1)
            lost = 1 if acked and held < acked[-1] else 0
            lost_total += lost
            outcomes.append(f"{len(acked)} acked, {failed} failed, NV holds write {held}")
    finally:
        daemon.vtpmd.stop()
    row = f"| {fault} during {STREAM} NV writes | {RUNS} | {lost_total} | {'; '.join(outcomes)} |"
    print("\n" + row)
    assert lost_total == 0


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that fills up (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = Path(tempfile.mkdtemp(prefix="vd", dir="/tmp"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        kill_swtpms(path)
        subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def test_nv_writes_on_a_full_disk(host: SimHost, small_disk: Path) -> None:
    manufacture.create(str(small_disk), UUID, tpm2=True, key_file=None, ca_dir=None)
    vtpmd = Vtpmd(host, small_disk)
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)
        acked: list[int] = []
        failed = 0
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert rc_of(front.transmit(nv_define(32))) == 0
            for i in range(STREAM):
                if i == STREAM // 2:  # the disk fills up
                    for name, chunk in (("filler", 65536), ("filler2", 1)):  # to the last byte
                        with contextlib.suppress(OSError), open(small_disk / name, "wb", 0) as f:
                            while True:
                                f.write(bytes(chunk))
                if rc_of(front.transmit(nv_write(nv_value(i)))) == 0:
                    acked.append(i)
                else:
                    failed += 1
        (small_disk / "filler").unlink()
        (small_disk / "filler2").unlink(missing_ok=True)
        with host.dom0.xenstore() as xs:
            xs.rm(f"/local/domain/0/backend/vtpm/{guest}")
        transport = open_transport(parse_vtpm_uri("xen:0"), 10, uuid=UUID, sim_dir=str(host.dir))
        try:
            answer = transport.transmit(nv_read(32))
        finally:
            transport.close()
        assert rc_of(answer) == 0, answer.hex()
        (size,) = struct.unpack(">H", answer[14:16])
        held = next((i for i in range(STREAM) if nv_value(i) == answer[16 : 16 + size]), -1)
        lost = 1 if held < acked[-1] else 0
        print(f"\n| disk full during {STREAM} NV writes | 1 | {lost} | {len(acked)} acked, "
              f"{failed} failed, NV holds write {held} after the space came back |")  # fmt: skip
        assert lost == 0 and failed > 0
    finally:
        vtpmd.stop()
