"""The kexec()-mirror builder on the simulator: layout, start_info, measurement
before parsing, the guest's own view of its PCRs, and clean failure."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import killed_swtpm
import pytest
from kernel_info_images import write_built_kernel
from pcr_rule import expected_pcrs

from pvgrub_py.builder.build import (
    BuildRequest,
    build_domain,
    libxc_image_factory,
    sim_image_factory,
)
from pvgrub_py.builder.layout import plan_layout
from pvgrub_py.builder.sim_boot import guest_reads_pcrs, vtpm_backend_domain
from pvgrub_py.builder.sim_image import SimDomainImage
from pvgrub_py.builder.start_info import SIZE, StartInfo
from pvgrub_py.cli.connect import VtpmConnector
from pvgrub_py.errors import InputError, PvgrubError, UsageError
from pvgrub_py.sample_guest import make_initrd
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import leaks, temporary_host, wait_until
from pvgrub_py.tpm.algorithms import SHA1

#: A PV kernel the tests build (tests/kernel_info_images.py): no /boot, no network.
KERNEL = ""


@pytest.fixture(scope="module", autouse=True)
def _built_kernel(tmp_path_factory: pytest.TempPathFactory) -> None:
    global KERNEL
    KERNEL = str(write_built_kernel(tmp_path_factory.mktemp("kernel") / "vmlinuz-built"))


def test_start_info_layout() -> None:
    si = StartInfo(
        "xen-3.0-x86_64",
        65536,
        0xFFFFF000,
        0,
        18946,
        2,
        18947,
        1,
        0xFFFFFFFF84A03000,
        41,
        0,
        0xFFFFFFFF84A00000,
        303,
        b"root=/dev/xvda1 ro",
    )
    raw = si.encode()
    assert len(raw) == SIZE == 1168
    assert raw[:14] == b"xen-3.0-x86_64" and raw[128:146] == b"root=/dev/xvda1 ro"
    assert int.from_bytes(raw[56:64], "little") == 18946  # store_mfn
    assert int.from_bytes(raw[64:68], "little") == 2  # store_evtchn
    assert StartInfo.decode(raw) == si
    with pytest.raises(ValueError, match="MAX_GUEST_CMDLINE"):
        StartInfo("x", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"x" * 1024).encode()


def test_memory_too_small_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="memory too small"):
        plan_layout(
            virt_base=0xFFFFFFFF80000000,
            virt_kstart=0xFFFFFFFF81000000,
            virt_kend=0xFFFFFFFF84A00000,
            entry=0,
            module_sizes=(10 << 20,),
            total_pages=16 * 256,
            p2m_base=None,
            label="kernel k",
        )


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="bld") as h:
        yield h


@pytest.fixture
def initrd(tmp_path: Path) -> str:
    path = tmp_path / "initrd.img"
    make_initrd(path)
    return str(path)


def request(host: SimHost, backend: int, **kw: object) -> BuildRequest:
    base: dict[str, object] = dict(
        kernel=KERNEL,
        cmdline="root=/dev/xvda2 ro console=hvc0",
        memory_mb=128,
        vtpm=f"xen:{backend}",
        require_vtpm=True,
        vtpm_uuid="3f0c1d7e-8a55-4b7e-9d6a-2c4b1e0f9a17",
        guest_vtpm_backend=backend,
    )
    base.update(kw)
    return BuildRequest(**base)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.swtpm
def test_measured_build_and_the_guest_sees_predicted_pcrs(
    host: SimHost, initrd: str, tmp_path: Path
) -> None:
    with vtpm_backend_domain(host, str(tmp_path / "state"), False, None) as backend:
        be = backend.domid
        req = request(host, be, initrd=initrd)
        result = build_domain(
            host.dom0, req, sim_image_factory(str(host.dir)), VtpmConnector(host.dom0)
        )
        pcrs = guest_reads_pcrs(host, result.domid)
    assert result.guest_type == "xen-3.0-x86_64" and result.measured
    assert [m.what for m in result.measurements] == ["kernel", "cmdline", "initrd"]
    assert pcrs == expected_pcrs(KERNEL, req.cmdline, initrd)
    info = host.dom0.domains().info(result.domid)
    assert not info.paused
    with host.dom0.xenstore() as xs:
        home = f"/local/domain/{result.domid}"
        assert xs.read(f"{home}/store/port") == str(result.xenstore_port).encode()
        assert xs.read(f"{home}/console/ring-ref") == str(result.console_frame).encode()
    image = SimDomainImage(str(host.dir), result.domid, "", "k")
    layout = result.layout
    assert layout is not None and not isinstance(layout, dict)
    image._layout = layout
    si = image.read_start_info()
    assert si.cmd_line == req.cmdline.encode() and si.store_evtchn == result.xenstore_port
    assert si.mod_len == os.path.getsize(initrd) and si.nr_pages == 128 * 256
    # The initrd sits where start_info says, byte for byte.
    with open(image.memory_path, "rb") as f:
        f.seek(layout.modules[0].pfn * 4096)
        assert f.read(si.mod_len) == Path(initrd).read_bytes()
    assert result.timings_ms["create"] < 1000


def assert_nothing_left(host: SimHost, before: set[int]) -> None:
    doms = {d.domid for d in host.dom0.domains().list_domains()}
    assert doms <= before, f"leftover domains {doms - before}"
    assert wait_until(lambda: not {d: c for d, c in leaks(host.stats()).items() if d not in before})
    assert not any((host.dir / "mem").glob("*")) if (host.dir / "mem").exists() else True


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.parametrize("case", ["not-xen", "truncated", "too-small", "no-vtpm", "vtpm-refuses"])
def test_failed_builds_leave_nothing(host: SimHost, initrd: str, tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad-kernel"
    if case == "not-xen":
        bad.write_bytes(b"\x7fELF" + os.urandom(4096))
    elif case == "truncated":
        data = Path(KERNEL).read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    with vtpm_backend_domain(host, str(tmp_path / "state"), False, None) as backend:
        be = backend.domid
        before = {d.domid for d in host.dom0.domains().list_domains()}
        kw: dict[str, object] = {}
        if case in ("not-xen", "truncated"):
            kw["kernel"] = str(bad)
        elif case == "too-small":
            kw["memory_mb"] = 16
            kw["initrd"] = initrd
        elif case == "no-vtpm":
            kw["vtpm"] = f"xen:{be + 100}"
        else:  # the instance refuses: an extend of a PCR that does not exist
            kw["vtpm_uuid"] = "not-a-uuid"
        with pytest.raises(PvgrubError):
            build_domain(
                host.dom0,
                request(host, be, **kw),
                sim_image_factory(str(host.dir)),
                VtpmConnector(host.dom0),
            )
        assert_nothing_left(host, before)


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.slow
def test_vtpmd_dying_mid_boot_fails_cleanly(host: SimHost, tmp_path: Path) -> None:
    with vtpm_backend_domain(host, str(tmp_path / "state"), False, None) as backend:
        be = backend.domid
        before = {d.domid for d in host.dom0.domains().list_domains()}
        pids = subprocess.run(
            ["pgrep", "-f", f"vtpmd --sim {host.dir}"], capture_output=True, text=True
        ).stdout.split()
        left_behind = killed_swtpm.work_dirs(
            child for pid in pids for child in killed_swtpm.swtpm_children(int(pid))
        )
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        with pytest.raises(PvgrubError):
            build_domain(
                host.dom0,
                request(host, be),
                sim_image_factory(str(host.dir)),
                VtpmConnector(host.dom0),
            )
        assert_nothing_left(host, before)
    killed_swtpm.remove(left_behind)


@pytest.mark.integration
@pytest.mark.swtpm
def test_cli_boot_sim_json(tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pvgrub_py.cli.pvgrubctl",
            "boot",
            "--sim",
            "--kernel",
            KERNEL,
            "--cmdline",
            "root=/dev/xvda1",
            "--tpm2",
            "--json",
            "--event-log",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["guest_type"] == "xen-3.0-x86_64" and doc["measured"]
    kernel_sha256 = hashlib.sha256(Path(KERNEL).read_bytes()).digest()
    assert doc["guest_pcrs"]["sha256"]["4"] == hashlib.sha256(bytes(32) + kernel_sha256).hexdigest()
    assert log.exists()


def test_guest_profile_parsing(tmp_path: Path) -> None:
    from pvgrub_py.builder.profile import GuestProfile, load_profile

    assert load_profile() == GuestProfile(True, True, True)  # stubdom/sim-guest.cfg
    p = tmp_path / "p.cfg"
    p.write_text("# no vTPM\nCONFIG_TPMFRONT=n\nCONFIG_CONSFRONT = n\n")
    assert load_profile(p) == GuestProfile(True, False, False)
    p.write_text("CONFIG_TPMFRONT=maybe\n")
    with pytest.raises(InputError, match=r"p.cfg:1"):
        load_profile(p)
    p.write_text("CONFIG_XENBUS=n\n")
    with pytest.raises(InputError, match="without xenstore"):
        load_profile(p)


@pytest.mark.integration
@pytest.mark.swtpm
def test_profile_without_tpmfront_gives_the_guest_no_vtpm(tmp_path: Path) -> None:
    profile = tmp_path / "p.cfg"
    profile.write_text("CONFIG_TPMFRONT=n\nCONFIG_CONSFRONT=n\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pvgrub_py.cli.pvgrubctl",
            "boot",
            "--sim",
            "--kernel",
            KERNEL,
            "--cmdline",
            "ro",
            "--profile",
            str(profile),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["measured"] and doc["guest_pcrs"] == {}


@pytest.mark.integration
@pytest.mark.swtpm
def test_external_swtpm_read_independently_matches_predict(initrd: str) -> None:
    from pvgrub_py.tpm.client import TpmClient
    from pvgrub_py.tpm.launcher import SwtpmProcess

    cmdline = "root=/dev/xvda1 ro"
    with SwtpmProcess(network="tcp") as tpm:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pvgrub_py.cli.pvgrubctl",
                "boot",
                "--sim",
                "--kernel",
                KERNEL,
                "--initrd",
                initrd,
                "--cmdline",
                cmdline,
                "--vtpm",
                tpm.uri,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        with TpmClient(tpm.transport()) as client:
            independent = client.read_pcrs([4, 5], (SHA1,))
    expected = expected_pcrs(KERNEL, cmdline, initrd)
    assert independent == expected
    guest = json.loads(r.stdout)["guest_pcrs"]["sha1"]
    assert guest == {str(p): v.hex() for p, v in expected["sha1"].items()}


def _boot_sim(*extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "boot", "--sim", "--kernel", KERNEL,
           "--cmdline", "ro", "--json", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.parametrize(
    ("extra", "booted", "message"),
    [
        (["--flask", "--vtpm-label", "system_u:system_r:vtpm_t"], True, ""),
        (["--flask", "--vtpm-label", "*:vtpm_t"], True, ""),
        (["--flask", "--backend-seclabel", "system_u:system_r:domU_t",
          "--vtpm-label", "system_u:system_r:vtpm_t"], False, "system_u:system_r:domU_t"),
        (["--vtpm-label", "system_u:system_r:vtpm_t"], False, "XSM/FLASK is not enabled"),
    ],
)  # fmt: skip
def test_cli_boot_sim_vtpm_label(extra: list[str], booted: bool, message: str) -> None:
    """--vtpm-label in the simulator: the backend's seclabel decides, fail closed."""
    r = _boot_sim(*extra)
    if booted:
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["measured"]
        return
    assert r.returncode == 1, r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def test_cli_boot_flask_needs_the_simulator() -> None:
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "boot", "--flask",
                        "--kernel", KERNEL, "--cmdline", "ro"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "--flask is for the simulated host" in r.stderr


def test_an_unmeasured_boot_writes_no_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real-host boot without a vTPM is unmeasured: its log would claim extends that
    never reached a TPM, so `boot` writes none (and says so)."""
    from types import SimpleNamespace

    from pvgrub_py.cli.cmd_boot import _report

    log = tmp_path / "boot.log"
    args = SimpleNamespace(event_log=str(log), json=True, tpm2=False)
    result = SimpleNamespace(measured=False, measurements=[])
    assert _report(args, result, {"measured": False}) == 0  # type: ignore[arg-type]
    assert not log.exists()
    assert "no event log" in capsys.readouterr().err


def test_the_libxenguest_builder_on_the_simulator_is_a_usage_error(host: SimHost) -> None:
    """libxenguest needs the real hypervisor: exit 2 with one line, not an errno."""
    make = libxc_image_factory()
    with pytest.raises(UsageError, match="needs the libxc hypervisor") as caught:
        make(host.dom0, 1, "", "k")
    assert caught.value.exit_status == 2
