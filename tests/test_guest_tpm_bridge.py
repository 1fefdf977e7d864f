"""pvgrub-guest-tpm on the simulator: kernel -> proxy -> bridge -> tpmif -> vtpmd -> swtpm.

Everything is real but the kernel: the simulated host, ``pvgrubctl vtpmd``
with its swtpm TPM 2.0, the guest's `TpmFront` and the bridge.  A
``SOCK_SEQPACKET`` socket pair stands in for the vTPM proxy's descriptor (it
keeps message boundaries as the proxy does: one command per write); the test
plays the kernel on the other end.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import killed_swtpm
import pytest
from test_vtpm_tpmif import Vtpmd, guest_with_vtpm

from pvgrub_py.cli import guest_tpm
from pvgrub_py.cli.connect import open_transport
from pvgrub_py.eventlog.builder import log_for_measurements
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.eventlog.nv_channel import store_event_log
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm.bridge_driver import GuestTpmBridge, NotTpm2Error
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.proxy_device import ProxyEndpoint
from pvgrub_py.vtpm.xenbus import XenbusState, read_state
from pvgrub_py.xen.interface import Hypervisor

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
TPM_RC_FAILURE = 0x101
TPM_RC_INITIALIZE = 0x100


class Kernel:
    """The kernel's side of the proxy: write one command, read one answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def transmit(self, command: bytes, timeout: float = 30.0) -> bytes:
        self.sock.settimeout(timeout)
        self.sock.send(command)
        return self.sock.recv(4096)

    def close(self) -> None:
        pass


def rc_of(response: bytes) -> int:
    tag, size, rc = struct.unpack_from(">HII", response)
    assert tag in (0x8001, 0x8002) and size == len(response), response.hex()
    return int(rc)


def registration(kernel: Kernel) -> list[tuple[str, int]]:
    """What Linux sends a new TPM 2.0 proxy chip (tpm_chip_register): the
    proxy's SET_LOCALITY(0), tpm2_auto_startup (SelfTest(NO); Startup(CLEAR)
    and SelfTest again only on TPM_RC_INITIALIZE), the command attribute
    table, the PCR banks, and the hwrng's first GetRandom.  Built here from
    the TPM 2.0 Part 2/3 layouts; returns (command, response code) in order."""
    sent: list[tuple[str, int]] = []

    def send(name: str, command: bytes) -> bytes:
        response = kernel.transmit(command)
        sent.append((name, rc_of(response)))
        return response

    def cmd(tag: int, code: int, body: bytes) -> bytes:
        return struct.pack(">HII", tag, 10 + len(body), code) + body

    send("SetLocality", cmd(0x8002, 0x20001000, b"\x00"))
    selftest = cmd(0x8001, 0x143, b"\x00")
    if rc_of(send("SelfTest", selftest)) == TPM_RC_INITIALIZE:
        send("Startup(CLEAR)", cmd(0x8001, 0x144, b"\x00\x00"))
        send("SelfTest", selftest)
    # TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_TOTAL_COMMANDS, 1)
    props = send("GetCapability", cmd(0x8001, 0x17A, struct.pack(">III", 6, 0x129, 1)))
    # moreData u8, capability u32, count u32, then (property u32, value u32)
    total = struct.unpack_from(">I", props, 10 + 1 + 4 + 4 + 4)[0]
    # TPM2_GetCapability(TPM_CAP_COMMANDS, TPM2_CC_FIRST, total)
    send("GetCapability", cmd(0x8001, 0x17A, struct.pack(">III", 2, 0x11F, total)))
    send("GetCapability", cmd(0x8001, 0x17A, struct.pack(">III", 5, 0, 1)))  # TPM_CAP_PCRS
    send("GetRandom", cmd(0x8001, 0x17B, struct.pack(">H", 32)))
    return sent


def expected_pcr(alg: str, *measured: bytes) -> bytes:
    value = bytes(hashlib.new(alg).digest_size)
    for data in measured:
        value = hashlib.new(alg, value + hashlib.new(alg, data).digest()).digest()
    return value


def measure_from_dom0(host: SimHost, data: bytes) -> None:
    """What the bootloader does: attach from dom0 (vtpmd power-cycles the
    instance for it), extend PCR 4 in every bank, detach."""
    transport = open_transport(parse_vtpm_uri("xen:0"), 10, uuid=UUID, sim_dir=str(host.dir))
    with TpmClient(transport) as client:
        banks = client.active_banks()
        client.extend(4, {b.name: hashlib.new(b.name, data).digest() for b in banks})


BOOT = [(4, "kernel", b"vmlinuz bytes"), (5, "cmdline", b"root=/dev/xvda1 ro"), (5, "initrd", b"")]


def boot_with_event_log(host: SimHost, *, lie: bool = False) -> bytes:
    """What pvgrub-py does for a TPM 2.0 guest: power-cycle (dom0 attach), three
    extends, the crypto-agile log of them delivered to NV, the platform
    hierarchy disabled.  With ``lie``, the log claims another kernel."""
    transport = open_transport(parse_vtpm_uri("xen:0"), 10, uuid=UUID, sim_dir=str(host.dir))
    with TpmClient(transport) as client:
        banks = client.active_banks()
        measurements = []
        for pcr, what, data in BOOT:
            digests = {b.name: hashlib.new(b.name, data).digest() for b in banks}
            client.extend(pcr, digests)
            if lie and what == "kernel":
                digests = {b.name: hashlib.new(b.name, b"another kernel").digest() for b in banks}
            measurements.append(Measurement(pcr, what, what, digests))  # type: ignore[arg-type]
        log = serialise(log_for_measurements(measurements, banks, tpm2=True))
        store_event_log(client, log)
    return log


class Running:
    """A GuestTpmBridge serving one end of a socket pair in a thread."""

    def __init__(
        self,
        hv: Hypervisor,
        timeout: float,
        until_ready: Callable[[], bool] | None = None,
        reopen: Callable[[], Hypervisor] | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.bridge = GuestTpmBridge(
            hv, 0, timeout=timeout, retry=0.5, log=self.lines.append, reopen=reopen
        )
        self.bridge.connect(wait=10)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.kernel = Kernel(ours)
        self.endpoint = ProxyEndpoint(theirs.detach())
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.bridge.serve, args=(self.endpoint, self.stop, until_ready)
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.endpoint.close()
        self.kernel.sock.close()
        self.bridge.close()


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="gtpm") as h:
        yield h


@pytest.fixture
def vtpmd2(host: SimHost, tmp_path: Path) -> Iterator[Vtpmd]:
    vtpmd = Vtpmd(host, tmp_path / "vtpm-state", tpm2=True)
    yield vtpmd
    vtpmd.stop()


def test_pcrs_through_the_bridge_equal_a_direct_read(host: SimHost, vtpmd2: Vtpmd) -> None:
    guest = guest_with_vtpm(host)
    measure_from_dom0(host, b"kernel")
    with host.attach(guest, host.token(guest)) as hv:
        running = Running(hv, timeout=10)
        try:
            through = TpmClient(running.kernel)
            assert through.version == "2.0"
            banks = through.active_banks()
            assert {b.name for b in banks} >= {"sha1", "sha256"}
            before = through.read_pcrs([4, 5])
            assert before["sha256"][4] == expected_pcr("sha256", b"kernel")
            through.extend(5, {b.name: hashlib.new(b.name, b"x").digest() for b in banks})
            after = through.read_pcrs([4, 5])
            assert after["sha256"][5] == expected_pcr("sha256", b"x")
            # The kernel set locality 3; the bridge answered it and kept serving.
            set_locality_3 = struct.pack(">HIIB", 0x8002, 11, 0x20001000, 3)
            assert rc_of(running.kernel.transmit(set_locality_3)) == 0
            assert running.bridge.core.locality == 3
            assert TpmClient(running.kernel, version="2.0").read_pcrs([4, 5]) == after
        finally:
            running.close()
        # A direct read over the guest's own tpmif frontend agrees.
        with TpmFront(hv, timeout=10).connect() as front:
            assert TpmClient(front, version="2.0").read_pcrs([4, 5]) == after
    assert running.lines[0].startswith("vTPM device/vtpm/0 connected (backend domain 0")


def test_malformed_frames_get_errors_and_the_bridge_keeps_serving(
    host: SimHost, vtpmd2: Vtpmd
) -> None:
    guest = guest_with_vtpm(host)
    with host.attach(guest, host.token(guest)) as hv:
        running = Running(hv, timeout=10)
        try:
            k = running.kernel
            assert k.transmit(b"\x80\x01\x00") == struct.pack(">HII", 0x8001, 10, 0x142)
            assert k.transmit(struct.pack(">HII", 0x8001, 99, 0x17B)) == struct.pack(
                ">HII", 0x8001, 10, 0x142
            )
            assert k.transmit(bytes.fromhex("00c1000000160000000a") + bytes(12)) == struct.pack(
                ">HII", 0x8001, 10, 0x01E
            )
            assert k.transmit(bytes(4096)) == struct.pack(">HII", 0x8001, 10, 0x142)
            assert TpmClient(k, version="2.0").read_pcrs([0])["sha256"][0] == bytes(32)
        finally:
            running.close()


def test_the_kernels_registration_sequence_keeps_the_bootloaders_pcrs(
    host: SimHost, vtpmd2: Vtpmd
) -> None:
    guest = guest_with_vtpm(host)
    measure_from_dom0(host, b"the kernel pvgrub-py booted")
    with host.attach(guest, host.token(guest)) as hv:
        with TpmFront(hv, timeout=10).connect() as front:
            measured = TpmClient(front, version="2.0").read_pcrs([4])
        assert measured["sha256"][4] == expected_pcr("sha256", b"the kernel pvgrub-py booted")
        registered = threading.Event()
        started: list[Running] = []

        def until_ready() -> bool:  # as the daemon waits for /sys/class/tpm/tpmN
            if not started or started[0].bridge.core.forwarded < 5:
                return False
            registered.set()
            return True

        running = Running(hv, timeout=10, until_ready=until_ready)
        started.append(running)
        try:
            assert not registered.is_set()
            sent = registration(running.kernel)
            # Readiness is looked at while serving: after the start-up commands.
            assert wait_until(registered.is_set)
            # The vTPM was started (by vtpmd): no Startup was needed, and all succeeded.
            assert [name for name, _ in sent] == [
                "SetLocality", "SelfTest", "GetCapability", "GetCapability", "GetCapability",
                "GetRandom",
            ]  # fmt: skip
            assert all(rc == 0 for _, rc in sent), sent
            assert TpmClient(running.kernel, version="2.0").read_pcrs([4]) == measured
            # A second registration (the daemon restarted) changes nothing either.
            registration(running.kernel)
            assert TpmClient(running.kernel, version="2.0").read_pcrs([4]) == measured
        finally:
            running.close()


def test_a_tpm12_vtpm_is_refused(host: SimHost, tmp_path: Path) -> None:
    vtpmd = Vtpmd(host, tmp_path / "vtpm-state", tpm2=False)
    try:
        guest = guest_with_vtpm(host)
        with host.attach(guest, host.token(guest)) as hv:
            bridge = GuestTpmBridge(hv, 0, timeout=10)
            with pytest.raises(NotTpm2Error, match=r"TPM 1\.2"):
                bridge.connect(wait=10)
            assert bridge.front is None
            # The frontend let go: another frontend (xen-tpmfront) can connect.
            with TpmFront(hv, timeout=10).connect() as front:
                assert TpmClient(front).version == "1.2"
    finally:
        vtpmd.stop()


def test_the_daemon_refuses_a_tpm12_vtpm_with_one_line(
    host: SimHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vtpmd = Vtpmd(host, tmp_path / "vtpm-state", tpm2=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        guest = guest_with_vtpm(host)
        argv = ["--sim", str(host.dir), "--domid", str(guest), "--proxy-fd", str(theirs.fileno()),
                "--ready-file", str(tmp_path / "ready"), "--timeout", "10"]  # fmt: skip
        assert guest_tpm.main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a TPM 1.2" in err and "Traceback" not in err, err
        assert not (tmp_path / "ready").exists()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ours.close()
        theirs.close()
        vtpmd.stop()


def test_the_daemon_serves_until_sigterm(host: SimHost, vtpmd2: Vtpmd, tmp_path: Path) -> None:
    guest = guest_with_vtpm(host)
    delivered = boot_with_event_log(host)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready, fd = tmp_path / "ready", theirs.fileno()
    event_log = tmp_path / "run" / "binary_bios_measurements"
    cmd = [sys.executable, "-m", "pvgrub_py.cli.guest_tpm", "--sim", str(host.dir),
           "--domid", str(guest), "--proxy-fd", str(fd), "--ready-file", str(ready),
           "--event-log-out", str(event_log)]  # fmt: skip
    proc = subprocess.Popen(cmd, pass_fds=[fd], stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        assert wait_until(ready.exists, timeout=30), proc.stderr.read() if proc.stderr else ""
        assert ready.read_text() == f"fd {fd}\n"
        assert ready.stat().st_mode & 0o777 == 0o644
        # The log was published before the chip was served.
        assert event_log.read_bytes() == delivered
        assert event_log.stat().st_mode & 0o777 == 0o644
        values = TpmClient(Kernel(ours)).read_pcrs([4])
        assert values["sha256"][4] == expected_pcr("sha256", b"vmlinuz bytes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        lines = proc.stderr.read().splitlines()
        assert lines[0].startswith("pvgrub-guest-tpm: vTPM device/vtpm/0 connected"), lines
        assert "replays to the vTPM's PCRs" in lines[1], lines
        assert "Traceback" not in "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ours.close()


def test_the_daemon_fails_when_the_chip_goes_away(
    host: SimHost, vtpmd2: Vtpmd, tmp_path: Path
) -> None:
    guest = guest_with_vtpm(host)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready, fd = tmp_path / "ready", theirs.fileno()
    cmd = [sys.executable, "-m", "pvgrub_py.cli.guest_tpm", "--sim", str(host.dir),
           "--domid", str(guest), "--proxy-fd", str(fd), "--ready-file", str(ready),
           "--no-event-log"]  # fmt: skip
    proc = subprocess.Popen(cmd, pass_fds=[fd], stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        assert wait_until(ready.exists, timeout=30)
        ours.close()  # the chip is gone: exit 1, so that systemd restarts the daemon
        assert proc.wait(20) == 1
        assert proc.stderr is not None
        lines = proc.stderr.read().splitlines()
        assert lines[-1] == "pvgrub-guest-tpm: the vTPM proxy chip went away", lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ours.close()


def test_an_event_log_that_replays_is_published_one_that_does_not_is_not(
    host: SimHost, vtpmd2: Vtpmd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three boots, each a new domain as with xl (vtpmd serves an instance to
    the domain whose boot it measured, never to one from before that boot)."""
    out = tmp_path / "log"
    guest = guest_with_vtpm(host)
    with host.attach(guest, host.token(guest)) as hv:
        bridge = GuestTpmBridge(hv, 0, timeout=10)
        try:
            bridge.connect(wait=10)
            # Nothing delivered yet: nothing written, one line.
            assert not guest_tpm.publish_event_log(bridge.transport(), str(out))
            assert "holds no event log" in capsys.readouterr().err
            assert not out.exists()
        finally:
            bridge.close()
    boot_with_event_log(host, lie=True)
    guest = guest_with_vtpm(host)
    with host.attach(guest, host.token(guest)) as hv:
        bridge = GuestTpmBridge(hv, 0, timeout=10)
        try:
            bridge.connect(wait=10)
            assert not guest_tpm.publish_event_log(bridge.transport(), str(out))
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "does not replay" in err and "PCR 4" in err, err
            assert not out.exists()
        finally:
            bridge.close()
    delivered = boot_with_event_log(host)
    guest = guest_with_vtpm(host)
    with host.attach(guest, host.token(guest)) as hv:
        bridge = GuestTpmBridge(hv, 0, timeout=10)
        try:
            bridge.connect(wait=10)
            assert guest_tpm.publish_event_log(bridge.transport(), str(out))
        finally:
            bridge.close()
    assert out.read_bytes() == delivered
    assert out.stat().st_mode & 0o777 == 0o644


def test_a_bound_kernel_driver_is_refused_with_how_to_unbind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "drivers" / "vtpm").mkdir(parents=True)
    (tmp_path / "devices" / "vtpm-0").mkdir(parents=True)
    os.symlink(tmp_path / "drivers" / "vtpm", tmp_path / "devices" / "vtpm-0" / "driver")
    monkeypatch.setattr(guest_tpm, "SYSFS_XEN_DEVICES", str(tmp_path / "devices"))
    assert guest_tpm.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "xen-tpmfront" in err and "unbind" in err, err
    assert "blacklist" in err


@pytest.mark.slow
def test_backend_killed_mid_command_fails_it_in_time_then_reconnects(
    host: SimHost, tmp_path: Path
) -> None:
    state = tmp_path / "vtpm-state"
    vtpmd = Vtpmd(host, state, tpm2=True)
    guest = guest_with_vtpm(host)
    left_behind: list[str] = []
    timeout = 2.0
    try:
        with host.attach(guest, host.token(guest)) as hv:
            running = Running(hv, timeout=timeout)
            try:
                kernel = running.kernel
                # What the guest's boot left in a PCR must survive the backend's restart.
                client = TpmClient(kernel, version="2.0")
                client.extend(4, {b.name: bytes(b.digest_size) for b in client.active_banks()})
                before = TpmClient(kernel, version="2.0").read_pcrs([4])["sha256"][4]
                assert before != bytes(32)
                pids = vtpmd.swtpm_pids()
                assert pids
                left_behind = killed_swtpm.work_dirs(pids)
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)  # the next command hangs in the TPM
                killer = threading.Timer(0.3, vtpmd.proc.kill)
                killer.start()
                started = time.monotonic()
                response = kernel.transmit(bytes.fromhex("80010000000c0000017b0010"))  # GetRandom
                elapsed = time.monotonic() - started
                assert response == struct.pack(">HII", 0x8001, 10, TPM_RC_FAILURE)
                assert elapsed < timeout + 2 + 1.5, elapsed  # timeout + cancel grace + slack
                killer.join()
                # The instance outlives vtpmd (it is not the backend that died), so the
                # restarted daemon reattaches to it: the guest keeps its PCRs.
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
                # No backend: commands fail at once, never hang.
                started = time.monotonic()
                assert rc_of(kernel.transmit(bytes.fromhex("80010000000c0000017b0010"))) in (
                    TPM_RC_FAILURE,
                )
                assert time.monotonic() - started < timeout + 1.5
                vtpmd = Vtpmd(host, state, tpm2=True)  # the backend comes back

                def works() -> bool:
                    answer = kernel.transmit(bytes.fromhex("80010000000c0000017b0010"))
                    return rc_of(answer) == 0

                assert wait_until(works, timeout=30, step=0.2)
                assert running.bridge.connects == 2
                with host.dom0.xenstore() as xs:
                    node = f"/local/domain/{guest}/device/vtpm/0"
                    assert read_state(xs, node) == XenbusState.CONNECTED
                assert TpmClient(kernel, version="2.0").read_pcrs([4])["sha256"][4] == before
                assert any("disconnected" in line for line in running.lines), running.lines
                assert sum("connected (backend" in line for line in running.lines) == 2
            finally:
                running.close()
    finally:
        vtpmd.stop()
        killed_swtpm.remove(left_behind)


def test_an_unwritable_ready_file_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = tmp_path / "missing" / "ready"
    assert guest_tpm.main(["--sim", str(tmp_path), "--domid", "3", "--ready-file", str(ready)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ready) in err and "no directory" in err, err
