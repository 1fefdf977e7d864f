"""``pvgrub-py --vtpm-label`` end to end: the simulator with FLASK on (or off, as on
Debian's Xen), a vTPM backend domain running ``pvgrubctl vtpmd`` with a real swtpm,
and the bootloader attaching to it through ``xen:`` as libxl runs it.

pv-grub's rule: the XSM label of the peer of the tpmif event channel must be the
label asked for, or end with it for ``*SUFFIX``; otherwise, or when it cannot be
read, nothing boots.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import disk_images
import pytest
from pcr_rule import expected_pcrs

from pvgrub_py.builder.sim_boot import guest_reads_pcrs, vtpm_backend_domain
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

VTPM_LABEL = "system_u:system_r:vtpm_t"
UUID = "5e0c2a9d-8f1b-4c6e-b3a7-1d2e3f4a5b6c"
ZERO = bytes(20)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


@dataclass
class VtpmHost:
    """A host and its vTPM backend domain (vtpmd)."""

    host: SimHost
    backend: int

    def guest_pcrs(self) -> dict[int, bytes]:
        """PCR 4 and 5 as the booted guest's own frontend reads them: a new domain
        with the vTPM, made after the bootloader ran, as libxl makes it (vtpmd
        serves an instance to the first guest after a boot's measurement only)."""
        guest = self.host.create_domain()
        with self.host.dom0.xenstore() as xs:
            add_vtpm_device(xs, VtpmDevice(guest, self.backend, 0, UUID))
        return guest_reads_pcrs(self.host, guest)["sha1"]


@contextlib.contextmanager
def vtpm_host(state: Path, *, flask: bool) -> Iterator[VtpmHost]:
    with (
        temporary_host(prefix="lbl", flask=flask) as host,
        vtpm_backend_domain(host, str(state), False, None) as backend,
    ):
        if flask:  # the backend runs as a vTPM domain would (seclabel=...vtpm_t)
            host.dom0.domains().set_xsm_label(backend.domid, VTPM_LABEL)
        yield VtpmHost(host, backend.domid)


@pytest.fixture(scope="module")
def flask_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VtpmHost]:
    with vtpm_host(tmp_path_factory.mktemp("state"), flask=True) as vh:
        yield vh


class Run:
    def __init__(self, tmp: Path) -> None:
        self.outdir = tmp / "bootloader.9.d"
        self.outdir.mkdir()
        self.output = tmp / "bootloader.9.out"
        self.output.touch()  # libxl pre-creates it

    def __call__(self, disk: Path, vh: VtpmHost, label: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--quiet",
                f"--output={self.output}", "--output-format=simple0",
                f"--output-directory={self.outdir}", f"--vtpm=xen:{vh.backend}",
                f"--vtpm-uuid={UUID}", f"--vtpm-label={label}", str(disk)]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PVGRUB_SIM": str(vh.host.dir)})  # fmt: skip

    def records(self) -> dict[str, str]:
        items = self.output.read_bytes().split(b"\0")
        assert items[-2:] == [b"", b""]
        return dict(item.decode().partition(" ")[::2] for item in items[:-2])

    def refused(self, r: subprocess.CompletedProcess[str]) -> str:
        """Exit 1, one line on stderr, nothing left for libxl; returns the line."""
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert self.output.read_bytes() == b""
        assert list(self.outdir.iterdir()) == []
        return lines[0]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


@pytest.mark.parametrize(
    "label", [VTPM_LABEL, "*:system_r:vtpm_t", "*vtpm_t"], ids=["exact", "suffix", "type-suffix"]
)
def test_a_matching_label_boots_measured(
    images: disk_images.ImageFactory, run: Run, flask_host: VtpmHost, label: str
) -> None:
    image = images.debian_gpt()
    r = run(image.path, flask_host, label)
    assert r.returncode == 0, r.stderr
    rec = run.records()
    # What the image was built with, by the specification in hashlib: not what we extracted.
    files = image.files["hd0,gpt2"]
    kver = disk_images.DEBIAN_KVER
    kernel_bytes = files[f"/boot/vmlinuz-{kver}"]
    expected = expected_pcrs(
        kernel_bytes,
        f"root=UUID={disk_images.EXT_UUID} ro quiet",
        files[f"/boot/initrd.img-{kver}"],
    )["sha1"]
    assert Path(rec["kernel"]).read_bytes() == kernel_bytes
    seen = flask_host.guest_pcrs()
    assert seen == expected
    kernel = hashlib.sha1(Path(rec["kernel"]).read_bytes()).digest()
    assert seen[4] == hashlib.sha1(ZERO + kernel).digest()


@pytest.mark.parametrize(
    "label",
    ["system_u:system_r:dom0_t", "*:system_r:domU_t", f"*{VTPM_LABEL}", "vtpm_t"],
    ids=["other", "other-suffix", "suffix-is-all", "type-only"],
)
def test_a_mismatched_label_boots_nothing(
    images: disk_images.ImageFactory, run: Run, flask_host: VtpmHost, label: str
) -> None:
    r = run(images.debian_gpt().path, flask_host, label)
    line = run.refused(r)
    assert line == f"pvgrub-py: mismatched vtpm label: {VTPM_LABEL!r} != {label!r}"
    # Checked before any command reached the vTPM: nothing was extended (the
    # dom0 frontend's connection power-cycled the instance, so PCRs read zero).
    assert flask_host.guest_pcrs() == {4: ZERO, 5: ZERO}


def test_without_flask_the_label_cannot_be_verified(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    with vtpm_host(tmp_path / "state", flask=False) as vh:
        r = run(images.debian_gpt().path, vh, VTPM_LABEL)
        line = run.refused(r)
        assert line == (
            f"pvgrub-py: cannot verify vtpm label of xen:{vh.backend}/0: "
            "XSM/FLASK is not enabled on this host"
        )
        assert vh.guest_pcrs() == {4: ZERO, 5: ZERO}


def test_a_swtpm_vtpm_has_no_label(images: disk_images.ImageFactory, run: Run) -> None:
    with SwtpmProcess() as tpm:
        argv = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--quiet",
                f"--output={run.output}", "--output-format=simple0",
                f"--output-directory={run.outdir}", f"--vtpm={tpm.uri}",
                f"--vtpm-label={VTPM_LABEL}", str(images.debian_gpt().path)]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    line = run.refused(r)
    assert line == (
        f"pvgrub-py: cannot verify vtpm label of {tpm.uri}: a swtpm: vTPM has no XSM label"
    )
