"""Attestation from inside a guest booted on the simulated host, through its own tpmif.

A measured PV boot on the simulator (vtpmd serving a TPM 2.0 swtpm), then,
as that guest (``--sim DIR --domid N``, its own frontend to its running
vTPM): ``attest create-ak`` makes the EK and an AK, the verifier's
``attest challenge`` is activated by ``attest activate``, and ``attest
quote`` of PCR 4/5 with a fresh nonce is accepted by ``tpm2_checkquote`` and
by ``attest verify`` against ``predict`` of the same boot, and rejected
against the prediction of another cmdline.  The PCR values expected come
from tests/pcr_rule.py (hashlib), not from the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kernel_info_images import write_built_kernel
from pcr_rule import expected_pcrs
from pvgrubctl_run import ctl

from pvgrub_py.builder.build import BuildRequest, build_domain, sim_image_factory
from pvgrub_py.builder.sim_boot import vtpm_backend_domain
from pvgrub_py.cli.connect import VtpmConnector
from pvgrub_py.sample_guest import make_initrd
from pvgrub_py.sim.testing import temporary_host

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss (the [attest] extra) is not installed")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.swtpm,
    pytest.mark.slow,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("swtpm", "tpm2_checkquote")),
        reason="swtpm and tpm2-tools are not installed (make setup)",
    ),
]

UUID = "5d0e8f5a-3c3b-4a8e-9f0e-6c1f2a9b7d21"


def test_a_simulated_guest_binds_its_ak_and_its_quote_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = write_built_kernel(tmp_path / "vmlinuz")
    initrd = tmp_path / "initrd.img"
    make_initrd(initrd)
    cmdline = "root=/dev/xvda2 ro console=hvc0"
    d = tmp_path / "files"
    d.mkdir()
    with (
        temporary_host(prefix="att") as host,
        vtpm_backend_domain(host, str(tmp_path / "state"), True, None) as backend,
    ):
        be = backend.domid
        request = BuildRequest(
            kernel=str(kernel), initrd=str(initrd), cmdline=cmdline, memory_mb=128,
            vtpm=f"xen:{be}", vtpm_uuid=UUID, require_vtpm=True, tpm2=True,
            guest_vtpm_backend=be,
        )  # fmt: skip
        result = build_domain(
            host.dom0, request, sim_image_factory(str(host.dir)), VtpmConnector(host.dom0)
        )
        assert result.measured
        guest = ["--tpm", f"xen:{be}", "--sim", str(host.dir), "--domid", str(result.domid)]
        # the guest makes its EK and AK
        status, _, err = ctl(capsys, "attest", "create-ak", *guest,
                             "--ek-public", str(d / "ek.pub"), "--ak-public", str(d / "ak.pub"),
                             "--ak-context", str(d / "ak.ctx"),
                             "--ak-name", str(d / "ak.name"))  # fmt: skip
        assert status == 0, err
        # the verifier challenges that EK for that AK; the guest activates
        status, _, err = ctl(capsys, "attest", "challenge", "-u", str(d / "ek.pub"),
                             "--ak-name", str(d / "ak.name"), "--secret-out", str(d / "secret"),
                             "-o", str(d / "cred"))  # fmt: skip
        assert status == 0, err
        status, _, err = ctl(capsys, "attest", "activate", *guest, "-i", str(d / "cred"),
                             "--ak-context", str(d / "ak.ctx"),
                             "--secret-out", str(d / "answer"))  # fmt: skip
        assert status == 0, err
        assert (d / "answer").read_bytes() == (d / "secret").read_bytes()
        # the guest quotes its boot with the verifier's nonce
        nonce = os.urandom(20).hex()
        status, _, err = ctl(capsys, "attest", "quote", *guest, "--ak-context", str(d / "ak.ctx"),
                             "--nonce", nonce, "--pcrs", "sha1:4,5+sha256:4,5",
                             "-m", str(d / "q.msg"), "-s", str(d / "q.sig"),
                             "--pcr-out", str(d / "q.pcrs"))  # fmt: skip
        assert status == 0, err
    # the PCR file holds the values the boot must give (hashlib's rule)
    want = expected_pcrs(str(kernel), cmdline, str(initrd), ("sha1", "sha256"))
    pcr_file = (d / "q.pcrs").read_bytes()
    for value in (want["sha1"][4], want["sha1"][5], want["sha256"][4], want["sha256"][5]):
        assert value in pcr_file
    done = subprocess.run(
        ["tpm2_checkquote", "-u", str(d / "ak.pub"), "-m", str(d / "q.msg"), "-s",
         str(d / "q.sig"), "-f", str(d / "q.pcrs"), "-q", nonce, "-g", "sha256"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for tag, line in (("same", cmdline), ("other", cmdline + " single")):
        status, out, err = ctl(capsys, "predict", "--kernel", str(kernel), "--initrd",
                               str(initrd), "--cmdline", line, "--format", "keylime")  # fmt: skip
        assert status == 0, err
        (d / f"{tag}.json").write_text(out)
        status, out, _ = ctl(capsys, "attest", "verify", "-u", str(d / "ak.pub"), "-m",
                             str(d / "q.msg"), "-s", str(d / "q.sig"), "-q", nonce,
                             "--reference", str(d / f"{tag}.json"))  # fmt: skip
        if tag == "same":
            assert status == 0 and out.startswith("OK:"), out
        else:
            assert status == 1 and out.startswith("REJECT: pcr-digest"), out


def test_domid_needs_a_xen_address_and_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["attest", "quote", "--ak-handle", "0x81010002", "-q", "ab", "-m",
            str(tmp_path / "m"), "-s", str(tmp_path / "s")]  # fmt: skip
    env = os.environ.pop("PVGRUB_SIM", None)
    try:
        status, _, err = ctl(capsys, *base, "--tpm", "swtpm:tcp:127.0.0.1:1", "--domid", "3")
        assert status == 2 and "xen: address" in err
        status, _, err = ctl(capsys, *base, "--tpm", "xen:0", "--domid", "3")
        assert status == 2 and "--sim DIR" in err
        status, _, err = ctl(capsys, *base, "--tpm", "xen:0", "--domid", "0")
        assert status == 2 and "guest domid" in err
    finally:
        if env is not None:
            os.environ["PVGRUB_SIM"] = env
    assert not (tmp_path / "m").exists()
