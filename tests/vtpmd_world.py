"""A simulated host with ``pvgrubctl vtpmd`` in its own process, for the vtpmd
hardening tests: start, SIGTERM, ``kill -9`` and restart the daemon; find and
kill the swtpm processes it started (each in its own session, so they outlive
it on purpose), by pid, at the end of every test."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.sim.host import SimHost
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.transport import TpmTransport
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm import manufacture
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
from pvgrub_py.vtpm.xenbus import XenbusState, read_state

#: What the tests' bootloader measures into PCR 4, per bank.
KERNEL = {"sha1": hashlib.sha1(b"kernel").digest(), "sha256": hashlib.sha256(b"kernel").digest()}
#: PCR 4 (sha1) after one extend of KERNEL from zero, by hand (TPM 2.0 Part 1, PCR extend).
PCR4 = hashlib.sha1(bytes(20) + KERNEL["sha1"]).digest()


def sha1_pcr4(transport: TpmTransport) -> bytes:
    """PCR 4 of the sha1 bank, read through *transport* (a TPM 2.0)."""
    client = TpmClient(transport, version="2.0")
    sha1 = [b for b in client.active_banks() if b.name == "sha1"]
    return client.read_pcrs([4], sha1)["sha1"][4]


class Vtpmd:
    def __init__(self, host: SimHost, state: Path, *flags: str) -> None:
        cmd = [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpmd", "--sim", str(host.dir),
               "--state-dir", str(state), "-v", *flags]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("vtpmd: serving"), line + (
            self.proc.stderr.read() if self.proc.stderr else ""
        )

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close()

    def stop(self) -> str:
        """SIGTERM it; its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = ""
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            err = self.proc.stderr.read()
        self._close()
        return err

    def _close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(ValueError):
                    stream.close()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


def swtpm_pids(state: Path) -> list[int]:
    """The live swtpm processes serving an instance under *state* (from /proc)."""
    needle = f"dir={state}/".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :][:1] == b"Z":
            continue
        if argv and argv[0].endswith(b"swtpm") and any(a.startswith(needle) for a in argv):
            found.append(int(name))
    return found


def kill_swtpms(state: Path) -> None:
    for pid in swtpm_pids(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while swtpm_pids(state) and time.monotonic() < deadline:
        time.sleep(0.02)


@contextlib.contextmanager
def state_root(prefix: str, *tpm2_uuids: str) -> Iterator[Path]:
    """A short state root under /tmp (the swtpm sockets go in each instance's
    directory), with a TPM 2.0 instance made by `vtpm create` for each uuid; every
    swtpm under it killed at the end: they outlive vtpmd on purpose."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        for uuid in tpm2_uuids:
            manufacture.create(str(path), uuid, tpm2=True, key_file=None, ca_dir=None)
        yield path
    finally:
        kill_swtpms(path)
        shutil.rmtree(path, ignore_errors=True)


def dom0_measures(host: SimHost, uuid: str, digests: Mapping[str, bytes]) -> None:
    """The bootloader's part: attach from dom0 (a power cycle), extend PCR 4 with
    *digests* (one per active bank), detach."""
    transport = open_transport(parse_vtpm_uri("xen:0"), 10, uuid=uuid, sim_dir=str(host.dir))
    with TpmClient(transport, version="2.0") as client:
        client.extend(4, {b.name: digests[b.name] for b in client.active_banks()})


def guest_with_vtpm(host: SimHost, uuid: str) -> int:
    guest = host.create_domain()
    with host.dom0.xenstore() as xs:
        add_vtpm_device(xs, VtpmDevice(guest, 0, 0, uuid))
    return guest


def backend_node(host: SimHost, guest: int, name: str) -> bytes | None:
    with host.dom0.xenstore() as xs:
        return xs.read(f"/local/domain/0/backend/vtpm/{guest}/0/{name}")


def backend_state(host: SimHost, guest: int) -> XenbusState:
    with host.dom0.xenstore() as xs:
        return read_state(xs, f"/local/domain/0/backend/vtpm/{guest}/0")
