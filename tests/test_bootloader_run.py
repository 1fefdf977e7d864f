"""``pvgrub-py`` end to end, as libxl runs it: real disk images, real swtpm,
the simulator for ``xen:`` vTPMs, and the real pygrub as a differential oracle."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.eventlog.codec import parse
from pvgrub_py.eventlog.replay import replay
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess

PYGRUB = "/usr/lib/xen-4.17/bin/pygrub"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


class Run:
    def __init__(self, tmp: Path) -> None:
        self.outdir = tmp / "bootloader.7.d"
        self.outdir.mkdir()
        self.output = tmp / "bootloader.7.out"
        # libxl pre-creates it; a stale, longer one must not leave its tail in
        # the result, and a failed run must leave the file empty.
        self.output.write_bytes(b"kernel /stale/from/an/earlier/run\0" * 64)

    def __call__(
        self, disk: Path, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--quiet",
                f"--output={self.output}", "--output-format=simple0",
                f"--output-directory={self.outdir}", *extra, str(disk)]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})  # fmt: skip

    def records(self) -> dict[str, str]:
        items = self.output.read_bytes().split(b"\0")
        assert items[-2:] == [b"", b""], "simple0 ends with an empty record"
        out: dict[str, str] = {}
        for item in items[:-2]:
            key, _, value = item.decode().partition(" ")
            out[key] = value
        return out


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def test_debian_gpt_simple0_matches_the_files(images: disk_images.ImageFactory, run: Run) -> None:
    img = images.debian_gpt()
    r = run(img.path)
    assert r.returncode == 0, r.stderr
    rec = run.records()
    files = img.files["hd0,gpt2"]
    kernel = next(v for k, v in files.items() if k.startswith("/boot/vmlinuz-"))
    initrd = next(v for k, v in files.items() if k.startswith("/boot/initrd.img-"))
    assert Path(rec["kernel"]).read_bytes() == kernel
    assert Path(rec["ramdisk"]).read_bytes() == initrd
    assert oct(os.stat(rec["kernel"]).st_mode & 0o777) == "0o600"
    assert "warning: no --vtpm given: booting unmeasured" in r.stderr


@pytest.mark.skipif(not os.path.exists(PYGRUB), reason="Debian xen-utils-4.17 pygrub not installed")
def test_same_choice_as_the_real_pygrub(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    img = images.debian_gpt()
    assert run(img.path).returncode == 0
    ours = run.records()
    pg_dir = tmp_path / "pygrub"
    pg_dir.mkdir()
    out = subprocess.run([PYGRUB, "-q", "--output-format=simple", f"--output-directory={pg_dir}",
                          str(img.path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    theirs = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line)
    assert theirs["args"] == ours["args"]
    assert Path(theirs["kernel"]).read_bytes() == Path(ours["kernel"]).read_bytes()
    assert Path(theirs["ramdisk"]).read_bytes() == Path(ours["ramdisk"]).read_bytes()


@pytest.mark.swtpm
@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_measured_into_swtpm_and_predict_agrees(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path, tpm2: bool
) -> None:
    img = images.debian_gpt()
    log = tmp_path / "boot.log"
    with SwtpmProcess(tpm2=tpm2) as tpm:
        extra = [f"--vtpm={tpm.uri}", "--require-vtpm", f"--event-log={log}"]
        r = run(img.path, *extra, *(["--tpm2"] if tpm2 else []))
        assert r.returncode == 0, r.stderr
        rec = run.records()
        with TpmClient(tpm.transport()) as client:
            live = client.read_pcrs([4, 5])
    # The offline prediction over the extracted files gives the same PCRs.
    from pvgrub_py.measure.boot_files import measure_boot_files
    from pvgrub_py.measure.predict import predict_pcrs
    from pvgrub_py.tpm.algorithms import BY_NAME

    banks = tuple(BY_NAME[b] for b in live)
    predicted = predict_pcrs(
        measure_boot_files(rec["kernel"], rec["ramdisk"], rec["args"], banks), banks
    )
    assert predicted == live
    assert replay(parse(log.read_bytes(), str(log))) == {b: v for b, v in live.items()}


@pytest.mark.swtpm
def test_require_vtpm_fails_closed_and_leaves_nothing(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    img = images.debian_gpt()
    r = run(img.path, f"--vtpm=swtpm:unix:{tmp_path}/absent.sock", "--require-vtpm",
            f"--event-log={tmp_path}/boot.log")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("pvgrub-py: vTPM swtpm:unix:")
    assert "Traceback" not in r.stderr
    assert run.output.read_bytes() == b""
    assert list(run.outdir.iterdir()) == []
    assert not (tmp_path / "boot.log").exists()


def test_a_silent_vtpm_fails_closed_within_vtpm_timeout(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    # A vTPM that accepts the connection and never answers: --vtpm-timeout
    # bounds the wait (the default is 30 s), and the boot fails closed.
    sock_path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(4)
    with server:
        t0 = time.monotonic()
        r = run(images.debian_gpt().path, f"--vtpm=swtpm:unix:{sock_path}", "--require-vtpm",
                "--vtpm-timeout=0.5")  # fmt: skip
        elapsed = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pvgrub-py: vTPM swtpm:unix:")
    assert elapsed < 15, f"--vtpm-timeout=0.5 still waited {elapsed:.1f} s"
    assert run.output.read_bytes() == b""
    assert list(run.outdir.iterdir()) == []


def test_unreachable_vtpm_without_require_boots_unmeasured(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    r = run(images.debian_gpt().path, f"--vtpm=swtpm:unix:{tmp_path}/absent.sock")
    assert r.returncode == 0
    assert "unavailable" in r.stderr and "booting unmeasured" in r.stderr


def test_vtpm_label_fails_closed_when_it_cannot_be_verified(
    images: disk_images.ImageFactory, run: Run
) -> None:
    with SwtpmProcess() as tpm:
        r = run(images.debian_gpt().path, f"--vtpm={tpm.uri}", "--vtpm-label=*:vm_r:vtpm_t")
    assert r.returncode == 1 and "cannot verify vtpm label" in r.stderr
    assert list(run.outdir.iterdir()) == []


def test_missing_disk_is_one_line(run: Run, tmp_path: Path) -> None:
    r = run(tmp_path / "nope.img")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("pvgrub-py: ")
    assert "nope.img" in r.stderr and "Traceback" not in r.stderr
    assert run.output.read_bytes() == b""


def test_list_entries_and_entry_selection(images: disk_images.ImageFactory, run: Run) -> None:
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", "-l",
                        str(images.debian_gpt().path)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and r.stdout.lstrip().startswith("*")
    r = run(images.debian_gpt().path, "--entry=no such entry")
    assert r.returncode == 1 and "no menu entry matches" in r.stderr


@pytest.mark.swtpm
def test_measured_through_tpmif_then_the_guest_reads_the_same_pcrs(
    images: disk_images.ImageFactory, run: Run, tmp_path: Path
) -> None:
    from pvgrub_py.sim.testing import temporary_host
    from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
    from pvgrub_py.vtpm.frontend import TpmFront

    uuid = "0d7c5a52-5d6b-4f39-a7c5-9d1b8e2f3a41"
    with temporary_host(prefix="blt") as host:
        vtpmd = subprocess.Popen([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpmd",
                                  "--sim", str(host.dir), "--state-dir", str(tmp_path / "state"),
                                  "--provision-unknown", "--stop-instances-on-exit"],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert vtpmd.stdout is not None and vtpmd.stdout.readline().startswith("vtpmd:")
            guest = host.create_domain()
            with host.dom0.xenstore() as xs:
                add_vtpm_device(xs, VtpmDevice(guest, 0, 0, uuid))
            r = run(images.debian_gpt().path, "--vtpm=xen:0", f"--vtpm-uuid={uuid}",
                    "--require-vtpm", env={"PVGRUB_SIM": str(host.dir)})  # fmt: skip
            assert r.returncode == 0, r.stderr
            rec = run.records()
            with (
                host.attach(guest, host.token(guest)) as hv,
                TpmFront(hv, timeout=10).connect() as front,
            ):
                seen = TpmClient(front).read_pcrs([4, 5])
        finally:
            vtpmd.terminate()
            vtpmd.wait(timeout=10)
    kernel = hashlib.sha1(Path(rec["kernel"]).read_bytes()).digest()
    assert seen["sha1"][4] == hashlib.sha1(bytes(20) + kernel).digest()
