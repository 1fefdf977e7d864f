"""vtpmd serves the instances `pvgrubctl vtpm create` made, and refuses the rest.

Issue 15, item 2: the old daemon started a bare swtpm of one TPM version for
any uuid a device named, so a missing, undecryptable or corrupt state was
silently replaced by a fresh TPM, and an encrypted instance could not be
served at all.  On the simulator, with vtpmd in its own process and real
swtpm behind it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_vtpm_manufacture import write_key
from vtpmd_world import (
    Vtpmd,
    backend_node,
    backend_state,
    guest_with_vtpm,
    state_root,
    swtpm_pids,
)

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm import tpm12
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm import manufacture
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.xenbus import XenbusState

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID_12 = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e12"
UUID_20 = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e20"


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmd") as h:
        yield h


@pytest.fixture
def state() -> Iterator[Path]:
    with state_root("vs") as path:
        yield path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "host.key")


def dom0_boots(host: SimHost, uuid: str) -> None:
    """The bootloader's attach from dom0 (a power cycle: a new boot), measuring nothing."""
    open_transport(parse_vtpm_uri("xen:0"), 10, uuid=uuid, sim_dir=str(host.dir)).close()


def refused(host: SimHost, guest: int) -> str:
    """The guest's connect fails, the device is Closing, and its error node says why."""
    with host.attach(guest, host.token(guest)) as hv, pytest.raises(TpmTransportError) as info:
        TpmFront(hv, timeout=10).connect()
    assert "CLOSING" in str(info.value), info.value
    assert backend_state(host, guest) == XenbusState.CLOSING
    error = backend_node(host, guest, "error")
    assert error, "no error node"
    return error.decode()


def test_an_unknown_uuid_is_refused_not_provisioned(host: SimHost, state: Path) -> None:
    vtpmd = Vtpmd(host, state)
    try:
        guest = guest_with_vtpm(host, UUID_12)
        assert refused(host, guest) == "unknown vTPM"
        assert not (state / UUID_12).exists()
        assert not swtpm_pids(state)
    finally:
        err = vtpmd.stop()
    assert f"vTPM {UUID_12} is unknown" in err and "--provision-unknown" in err


def test_provision_unknown_makes_a_known_instance(host: SimHost, state: Path) -> None:
    vtpmd = Vtpmd(host, state, "--provision-unknown", "--tpm2")
    try:
        guest = guest_with_vtpm(host, UUID_20)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            answer = front.transmit(tpm12.build_pcr_read(0))
        assert answer[:2] == b"\x80\x01"  # a TPM 2.0 (bad tag), as asked
        meta = manufacture.read_metadata(str(state / UUID_20), UUID_20)
        assert meta.tpm_version == "2.0" and not meta.encrypted
    finally:
        vtpmd.stop()


@pytest.mark.slow
def test_each_created_instance_is_served_with_its_own_version_and_key(
    host: SimHost, state: Path, key: Path
) -> None:
    manufacture.create(str(state), UUID_12, tpm2=False, key_file=None, ca_dir=None)
    manufacture.create(str(state), UUID_20, tpm2=True, key_file=str(key), ca_dir=None)
    # Not the daemon's --tpm2 (it has none): each instance's own vtpm.json decides.
    vtpmd = Vtpmd(host, state, "--key-file", str(key))
    try:
        digest = hashlib.sha1(b"kernel").digest()
        for uuid, version in ((UUID_12, "1.2"), (UUID_20, "2.0")):
            guest = guest_with_vtpm(host, uuid)
            dom0_boots(host, uuid)
            with (
                host.attach(guest, host.token(guest)) as hv,
                TpmFront(hv, timeout=10).connect() as front,
            ):
                client = TpmClient(front)
                assert client.version == version
                client.extend(4, {b.name: hashlib.new(b.name, b"kernel").digest()
                                  for b in client.active_banks()})  # fmt: skip
                assert client.read_pcrs([4], [b for b in client.active_banks()
                                              if b.name == "sha1"])["sha1"][4] == (
                    hashlib.sha1(bytes(20) + digest).digest()
                )  # fmt: skip
        # The key reached swtpm as a descriptor, never on its command line.
        secret = key.read_text().strip()
        pids = swtpm_pids(state)
        assert len(pids) == 2
        encrypted = []
        for pid in pids:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert secret not in argv and str(key) not in argv
            if "--key" in argv:
                encrypted.append(argv)
        assert len(encrypted) == 1 and "fd=" in encrypted[0] and "aes-256-cbc" in encrypted[0]
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        assert secret not in ps.stdout
    finally:
        vtpmd.stop()


@pytest.mark.slow
def test_a_wrong_key_missing_or_corrupt_state_is_refused_never_a_fresh_tpm(
    host: SimHost, state: Path, key: Path, tmp_path: Path
) -> None:
    manufacture.create(str(state), UUID_20, tpm2=True, key_file=str(key), ca_dir=None)
    manufacture.create(str(state), UUID_12, tpm2=False, key_file=None, ca_dir=None)
    permall_20 = state / UUID_20 / "tpm2-00.permall"
    permall_12 = state / UUID_12 / "tpm-00.permall"
    encrypted = permall_20.read_bytes()
    wrong = tmp_path / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    wrong.chmod(0o600)
    # 1. the wrong key
    vtpmd = Vtpmd(host, state, "--key-file", str(wrong))
    try:
        guest = guest_with_vtpm(host, UUID_20)
        assert refused(host, guest) == "vTPM state cannot be loaded"
        assert permall_20.read_bytes() == encrypted  # untouched
        # 2. a truncated state, 3. a missing one
        permall_12.write_bytes(permall_12.read_bytes()[:100])
        guest_12 = guest_with_vtpm(host, UUID_12)
        assert refused(host, guest_12) == "vTPM state cannot be loaded"
        assert len(permall_12.read_bytes()) == 100
        permall_12.unlink()
        with host.dom0.xenstore() as xs:  # a new boot of it: a dom0 attach is refused too
            xs.rm(f"/local/domain/0/backend/vtpm/{guest_12}")
        guest_12 = guest_with_vtpm(host, UUID_12)
        assert refused(host, guest_12) == "vTPM state missing"
        assert not permall_12.exists()  # no fresh TPM made in its place
        assert not swtpm_pids(state)
    finally:
        err = vtpmd.stop()
    assert "Could not initialize libtpms" in err or "cannot load" in err, err
    assert wait_until(lambda: not swtpm_pids(state))


def test_a_vtpm_attached_without_a_measured_boot_is_refused(host: SimHost, state: Path) -> None:
    """A guest given a vTPM while it runs (no bootloader measured into it) would
    read reset PCRs and could extend a good boot's digests: refused, until the
    toolstack's attach for its next boot."""
    manufacture.create(str(state), UUID_20, tpm2=True, key_file=None, ca_dir=None)
    vtpmd = Vtpmd(host, state)
    try:
        guest = guest_with_vtpm(host, UUID_20)
        assert refused(host, guest) == "vTPM not measured for this boot; reboot the guest"
        with host.dom0.xenstore() as xs:
            xs.rm(f"/local/domain/0/backend/vtpm/{guest}")
        guest = guest_with_vtpm(host, UUID_20)
        dom0_boots(host, UUID_20)
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert TpmClient(front).read_pcrs([4])["sha1"][4] == bytes(20)
            assert backend_node(host, guest, "error") is None
    finally:
        vtpmd.stop()
