"""``pvgrubctl vtpm export`` of a running instance, and its import resumed (issue 15, item 1).

The old export refused an instance while vtpmd's swtpm held it ("in use by a
running swtpm"), so a guest saved with ``xl save`` could not take its vTPM's
volatile state (its PCRs) along.  Now its state comes through swtpm's control
channel (CMD_GET_STATEBLOB: permanent and volatile, still encrypted with the
host key), import gives it to a swtpm on the new state directory
(CMD_SET_STATEBLOB, then CMD_STORE_VOLATILE), and vtpmd resumes it for the
restored domain: PCR 4 as measured, the NV index the guest wrote.  On the
simulator, vtpmd in its own process, real swtpm (and swtpm_ioctl as oracle).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pvgrubctl_run import run as pvgrubctl
from test_guest_tpm_bridge import Running
from test_vtpm_manufacture import write_key
from test_vtpmd_restart import nv_define, nv_read, nv_write, rc_of
from vtpmd_world import (
    KERNEL,
    PCR4,
    Vtpmd,
    dom0_measures,
    guest_with_vtpm,
    sha1_pcr4,
    state_root,
)

from pvgrub_py.errors import PvgrubError
from pvgrub_py.sim.client import SimHypervisor
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.swtpm import BLOB_PERMANENT, SocketAddress, SwtpmControl
from pvgrub_py.vtpm import manufacture
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.xenbus import XenbusState, read_state

#: TPM_RC_FAILURE: what the bridge answers while it has no vTPM (Part 2, 6.6.3).
TPM_RC_FAILURE = 0x101

pytestmark = [pytest.mark.integration, pytest.mark.swtpm, pytest.mark.slow]

UUID = "4c3b2a1f-0e9d-4c8b-8a7f-6e5d4c3b2a19"
SECRET = hashlib.sha256(b"the guest's NV data").digest()


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmx") as h:
        yield h


@pytest.fixture
def roots() -> Iterator[tuple[Path, Path]]:
    """Two short state roots (the source and the destination host's), every
    swtpm under them killed at the end: they outlive vtpmd on purpose."""
    with state_root("xa") as source, state_root("xb") as destination:
        yield source, destination


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "host.key")


def nv_contents(front: TpmFront) -> bytes:
    answer = front.transmit(nv_read(32))
    assert rc_of(answer) == 0, hex(rc_of(answer))
    (size,) = struct.unpack(">H", answer[14:16])
    return answer[16 : 16 + size]


def test_a_running_encrypted_instance_is_exported_and_resumed_for_the_restored_guest(
    host: SimHost, roots: tuple[Path, Path], key: Path, tmp_path: Path
) -> None:
    source, destination = roots
    manufacture.create(str(source), UUID, tpm2=True, key_file=str(key), ca_dir=None)
    archive = tmp_path / "vtpm.tar"
    vtpmd = Vtpmd(host, source, "--key-file", str(key))
    try:
        guest = guest_with_vtpm(host, UUID)
        dom0_measures(host, UUID, KERNEL)  # the bootloader
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert rc_of(front.transmit(nv_define(32))) == 0
            assert rc_of(front.transmit(nv_write(SECRET))) == 0
            assert sha1_pcr4(front) == PCR4
            # Our control-channel reader against stock swtpm_ioctl's, on the live swtpm.
            record = json.loads((source / UUID / "swtpm-run.json").read_text())
            oracle = tmp_path / "permanent.oracle"
            subprocess.run(["swtpm_ioctl", "--unix", record["ctrl"], "--save", "permanent",
                            str(oracle)], check=True, capture_output=True, timeout=30)  # fmt: skip
            ours, encrypted = SwtpmControl(SocketAddress(path=record["ctrl"])).get_state_blob(
                BLOB_PERMANENT, decrypted=True
            )
            assert ours == oracle.read_bytes() and not encrypted
            # The guest is paused or saved (xl save -p): its vTPM is exported as it runs.
            r = pvgrubctl("vtpm", "export", "--state-dir", str(source), UUID, "-o", str(archive))
            assert r.returncode == 0, r.stderr
            assert "running" in r.stdout
    finally:
        vtpmd.stop()  # the source host is done with it (its swtpm is killed at the end)
    # Still encrypted in transit: the plaintext blob's bytes are not in the archive.
    assert ours[64:128] not in archive.read_bytes()
    # A wrong key, a damaged blob: one line, nothing left behind.
    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    wrong.chmod(0o600)
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w") as dst:
        for member in src:
            data = src.extractfile(member) if member.isreg() else None
            body = data.read() if data is not None else b""
            if member.name.endswith("stateblob.permanent"):
                body = body[:200] + bytes([body[200] ^ 1]) + body[201:]
            dst.addfile(member, io.BytesIO(body) if member.isreg() else None)
    for bad, with_key in ((archive, wrong), (damaged, key)):
        r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), str(bad),
                      "--key-file", str(with_key))  # fmt: skip
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr and str(bad) in r.stderr, r.stderr
        assert os.listdir(destination) == []
    r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), str(archive),
                  "--key-file", str(key))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (destination / UUID).iterdir() if p.name.startswith("tpm")) == [
        "tpm2-00.permall",
        "tpm2-00.volatilestate",
    ]
    # The destination's vtpmd; the restored domain connects, with no new boot measured.
    vtpmd = Vtpmd(host, destination, "--key-file", str(key))
    try:
        restored = guest_with_vtpm(host, UUID)
        with (
            host.attach(restored, host.token(restored)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert sha1_pcr4(front) == PCR4
            assert nv_contents(front) == SECRET
        # The saved boot is resumed once, for that domain: not for a second one.
        assert not (destination / UUID / "tpm2-00.volatilestate").exists()
        other = guest_with_vtpm(host, UUID)
        with host.attach(other, host.token(other)) as hv, pytest.raises(TpmTransportError):
            TpmFront(hv, timeout=10).connect()
    finally:
        vtpmd.stop()


@pytest.mark.parametrize("suspended", [True, False], ids=["vtpm-suspend-first", "caught-connected"])
def test_the_guest_daemon_follows_its_domain_through_save_and_restore(
    host: SimHost, roots: tuple[Path, Path], key: Path, tmp_path: Path, suspended: bool
) -> None:
    """``xl save``/``xl restore`` gives the guest a new domid.  Its pvgrub-guest-tpm
    (a `GuestTpmBridge` with ``reopen``) lives on in the restored memory, sees its
    backend go away, and must find ``device/vtpm/0`` under the domain it now is:
    the kernel's chip then answers again, with the PCRs and NV the guest had.
    Before ``reopen``, the daemon waited on the old domain's nodes for ever.

    The procedure (README) lets go first: ``pvgrubctl vtpm suspend`` before the
    save, so the frontend unbinds its port while that is safe.  Caught connected
    instead, the daemon abandons the stale port (on Linux, unbinding it after a
    restore is a kernel BUG) rather than unbinding it."""
    source, destination = roots
    manufacture.create(str(source), UUID, tpm2=True, key_file=str(key), ca_dir=None)
    archive = tmp_path / "vtpm.tar"
    #: The domain the guest is, as its xenstore ``domid`` node would say.
    now: list[int] = []

    def reopen() -> SimHypervisor:
        if not now:
            raise PvgrubError("xenstore: this domain's 'domid' node is missing")
        return host.attach(now[0], host.token(now[0]))

    vtpmd = Vtpmd(host, source, "--key-file", str(key))
    guest = guest_with_vtpm(host, UUID)
    now.append(guest)
    dom0_measures(host, UUID, KERNEL)  # the bootloader
    hv = host.attach(guest, host.token(guest))
    running = Running(hv, timeout=2.0, reopen=reopen)
    try:
        kernel = running.kernel
        assert rc_of(kernel.transmit(nv_define(32))) == 0
        assert rc_of(kernel.transmit(nv_write(SECRET))) == 0
        if suspended:
            r = pvgrubctl("vtpm", "suspend", str(guest), "--timeout", "10",
                          "--sim", str(host.dir))  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert "let go in" in r.stdout
            with host.dom0.xenstore() as xs:
                node = f"/local/domain/{guest}/device/vtpm/0"
                assert xs.read(f"{node}/event-channel") is None
                assert read_state(xs, node) != XenbusState.CONNECTED
            # Meanwhile the chip answers at once, with a failure: never a hang.
            assert rc_of(kernel.transmit(nv_read(32))) == TPM_RC_FAILURE
        # xl save -p; the export of the running instance; xl destroy.
        now.clear()
        r = pvgrubctl("vtpm", "export", "--state-dir", str(source), UUID, "-o", str(archive))
        assert r.returncode == 0, r.stderr
        vtpmd.stop()
        host.destroy_domain(guest)
        r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), str(archive),
                      "--key-file", str(key))  # fmt: skip
        assert r.returncode == 0, r.stderr
        vtpmd = Vtpmd(host, destination, "--key-file", str(key))
        restored = guest_with_vtpm(host, UUID)  # xl restore: a new domain, a new domid
        assert restored != guest
        now.append(restored)

        def answers() -> bool:
            return rc_of(kernel.transmit(nv_read(32))) == 0

        assert wait_until(answers, timeout=30, step=0.2), running.lines
        answer = kernel.transmit(nv_read(32))
        assert answer[16:48] == SECRET
        client = TpmClient(kernel, version="2.0")
        sha1 = [b for b in client.active_banks() if b.name == "sha1"]
        assert client.read_pcrs([4], sha1)["sha1"][4] == PCR4
        assert running.bridge.connects == 2
        assert running.bridge.hv.domid == restored
        assert f"this domain is now domain {restored} (was {guest})" in running.lines
        # Connected across the save: its event channel is abandoned, not unbound (on
        # Linux, unbinding a port a restore invalidated is a kernel BUG).
        abandoned = any("saved or migrated with its vTPM connected" in x for x in running.lines)
        assert abandoned == (not suspended), running.lines
    finally:
        running.close()
        hv.close()
        vtpmd.stop()
