"""``pvgrub-py``'s measurement integrity and its answers to bad input (issue 12).

* an event log is written only for a measured boot, and only once every
  other fallible step is behind it: nothing moves a PCR before the log, the
  output file and the output directory are known to be writable;
* a vTPM whose PCR 4/5 are not at their reset values is refused, with
  nothing extended (a second boot into a ``swtpm:`` vTPM);
* the config's bytes are booted and measured as they are, even when some
  of them are not UTF-8;
* bad options and inputs are one line, a usage error where they are one,
  and never a hang, a traceback or a file followed through a symlink.

Real swtpm (TPM 1.2 and 2.0) and real ext4 images built with mke2fs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.eventlog.codec import parse
from pvgrub_py.eventlog.replay import replay
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess

pytestmark = pytest.mark.integration

NOBODY = 65534
KERNEL = disk_images.payload("integrity-kernel", 300_000)
INITRD = disk_images.payload("integrity-initrd", 200_000)
#: The cmdline as the config holds it: valid UTF-8 (café) and one byte that
#: is not UTF-8 (0xff), so the file as a whole is not UTF-8.
CMDLINE = b"root=/dev/xvda1 ro caf\xc3\xa9 label=\xff quiet"
GRUB_CFG = (
    b"set timeout=0\n"
    b"menuentry 'Guest \xc3\xa9' {\n"
    b"  linux /boot/vmlinuz " + CMDLINE + b"\n"
    b"  initrd /boot/initrd.img\n"
    b"}\n"
)


def build_disk(work: Path, config: bytes, config_path: str = "/boot/grub/grub.cfg") -> Path:
    """A bare ext4 filesystem holding *config*, a kernel and an initrd."""
    src = work / "root"
    for path, data in ((config_path, config), ("/boot/vmlinuz", KERNEL),
                       ("/boot/initrd.img", INITRD)):  # fmt: skip
        target = src / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    img = work / "disk.img"
    disk_images.make_ext4(img, src, 8 << 20, "integrity")
    return img


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_disk(tmp_path_factory.mktemp("integrity-disk"), GRUB_CFG)


def bootloader(*argv: str, cwd: Path | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", *argv],
                          capture_output=True, timeout=timeout, cwd=cwd, env=env)  # fmt: skip


class Boot:
    """libxl's invocation, with a stale, longer result file already there."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.outdir = tmp / "bootloader.7.d"
        self.outdir.mkdir()
        self.output = tmp / "bootloader.7.out"
        self.output.write_bytes(b"kernel /stale\0" * 100)

    def __call__(self, disk: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
        return bootloader("-q", f"--output={self.output}", "--output-format=simple0",
                          f"--output-directory={self.outdir}", *extra, str(disk))  # fmt: skip

    def records(self) -> dict[bytes, bytes]:
        items = self.output.read_bytes().split(b"\0")
        assert items[-2:] == [b"", b""], "simple0 ends with an empty record"
        return dict(item.split(b" ", 1) for item in items[:-2])  # type: ignore[misc]

    def assert_failed_cleanly(self, r: subprocess.CompletedProcess[bytes]) -> str:
        err = r.stderr.decode()
        assert r.returncode == 1, err
        assert err.count("\n") == 1 and err.startswith("pvgrub-py: "), err
        assert "warning" not in err and "Traceback" not in err
        assert self.output.read_bytes() == b""
        assert list(self.outdir.iterdir()) == []
        return err.strip()


@pytest.fixture
def boot(tmp_path: Path) -> Boot:
    return Boot(tmp_path)


def pcrs(tpm: SwtpmProcess) -> dict[str, dict[int, bytes]]:
    with TpmClient(tpm.transport()) as client:
        return client.read_pcrs([4, 5])


def zero_pcrs(tpm: SwtpmProcess) -> dict[str, dict[int, bytes]]:
    return {bank: {p: bytes(len(v)) for p, v in values.items()}
            for bank, values in pcrs(tpm).items()}  # fmt: skip


# -- an event log is a claim that the extends happened -------------------------
@pytest.mark.parametrize("vtpm", ["none", "unreachable"])
def test_an_unmeasured_boot_writes_no_event_log(
    disk: Path, boot: Boot, tmp_path: Path, vtpm: str
) -> None:
    log = tmp_path / "u.log"
    log.write_bytes(b"an event log of an earlier, measured boot")
    extra = [] if vtpm == "none" else [f"--vtpm=swtpm:unix:{tmp_path}/absent.sock", "--tpm2"]
    r = boot(disk, *extra, f"--event-log={log}")
    assert r.returncode == 0, r.stderr
    assert b"booting unmeasured" in r.stderr
    assert b"no event log written: nothing was measured" in r.stderr
    # Neither a new log nor the old one is left to vouch for this boot.
    assert not log.exists()
    assert set(tmp_path.iterdir()) == {boot.outdir, boot.output}


@pytest.mark.swtpm
@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
def test_an_unwritable_event_log_fails_before_any_extend(
    disk: Path, boot: Boot, tmp_path: Path, swtpm2: SwtpmProcess, where: str
) -> None:
    if where == "a-directory":
        log = tmp_path / "log.d"
        log.mkdir()
    else:
        log = tmp_path / "nonexistent" / "x.log"
    r = boot(disk, f"--vtpm={swtpm2.uri}", "--tpm2", f"--event-log={log}")
    line = boot.assert_failed_cleanly(r)
    assert str(log) in line
    # PCR 4 and 5 never moved: the vTPM can still take this guest's boot.
    assert pcrs(swtpm2) == zero_pcrs(swtpm2)
    r = boot(disk, f"--vtpm={swtpm2.uri}", "--tpm2", f"--event-log={tmp_path / 'ok.log'}")
    assert r.returncode == 0, r.stderr


@pytest.mark.swtpm
def test_an_unusable_output_directory_fails_before_any_extend(
    disk: Path, boot: Boot, tmp_path: Path, swtpm12: SwtpmProcess
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    r = bootloader("-q", f"--output={boot.output}", f"--output-directory={blocker}/d",
                   f"--vtpm={swtpm12.uri}", str(disk))  # fmt: skip
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    assert pcrs(swtpm12) == zero_pcrs(swtpm12)


@pytest.mark.swtpm
@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_a_second_boot_into_the_same_vtpm_is_refused(
    disk: Path, boot: Boot, tmp_path: Path, tpm2: bool
) -> None:
    flags = ["--tpm2"] if tpm2 else []
    with SwtpmProcess(tpm2=tpm2) as tpm:
        first = boot(disk, f"--vtpm={tpm.uri}", *flags, f"--event-log={tmp_path}/1.log")
        assert first.returncode == 0, first.stderr
        after_first = pcrs(tpm)
        for f in boot.outdir.iterdir():
            f.unlink()
        log2 = tmp_path / "2.log"
        second = boot(disk, f"--vtpm={tpm.uri}", *flags, f"--event-log={log2}")
        line = boot.assert_failed_cleanly(second)
        assert "PCR 4" in line and "reset value" in line
        # Nothing was extended, and no log claims otherwise.
        assert pcrs(tpm) == after_first
        assert not log2.exists()


@pytest.mark.swtpm
def test_a_vtpm_extended_in_one_bank_only_is_refused(
    disk: Path, boot: Boot, swtpm2: SwtpmProcess
) -> None:
    from pvgrub_py.tpm import tpm2
    from pvgrub_py.tpm.algorithms import SHA256

    # PCR 5 moved in sha256 alone; PCR 4 and the sha1 bank are still at reset.
    with TpmClient(swtpm2.transport()) as client:
        answer = client.transport.transmit(tpm2.build_pcr_extend(5, [(SHA256, bytes(32))]))
        tpm2.parse_pcr_extend_response(answer)
    before = pcrs(swtpm2)
    line = boot.assert_failed_cleanly(boot(disk, f"--vtpm={swtpm2.uri}", "--tpm2"))
    assert "PCR 5 (sha256)" in line
    assert pcrs(swtpm2) == before


# -- the config's bytes, booted and measured as they are -----------------------
def _expected_pcr5(alg: str) -> bytes:
    size = hashlib.new(alg).digest_size
    pcr = hashlib.new(alg, bytes(size) + hashlib.new(alg, CMDLINE).digest()).digest()
    return hashlib.new(alg, pcr + hashlib.new(alg, INITRD).digest()).digest()


@pytest.mark.swtpm
@pytest.mark.parametrize("runas", [False, True], ids=["in-process", "runas"])
def test_non_utf8_config_bytes_are_booted_and_measured_unchanged(
    disk: Path, boot: Boot, tmp_path: Path, swtpm2: SwtpmProcess, runas: bool
) -> None:
    log = tmp_path / "boot.log"
    extra = [f"--runas={NOBODY}"] if runas else []
    r = boot(disk, f"--vtpm={swtpm2.uri}", "--tpm2", f"--event-log={log}", *extra)
    assert r.returncode == 0, r.stderr
    assert boot.records()[b"args"] == CMDLINE
    live = pcrs(swtpm2)
    # Expected values from the raw config bytes and hashlib, not our code.
    for alg in ("sha1", "sha256"):
        assert live[alg][5] == _expected_pcr5(alg)
    events = parse(log.read_bytes(), str(log)).events
    assert events[1].data == b"cmdline: " + CMDLINE
    assert replay(parse(log.read_bytes(), str(log))) == live


def test_isconfig_and_list_print_the_config_bytes(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_bytes(GRUB_CFG)
    r = bootloader("-q", "--isconfig", str(cfg))
    assert r.returncode == 0, r.stderr
    assert b"  args: " + CMDLINE + b"\n" in r.stdout
    r = bootloader("-l", "--isconfig", str(cfg))
    assert r.returncode == 0 and b"Guest \xc3\xa9" in r.stdout, r.stderr


# -- bad input ---------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    ["xen:abc", "swtpm:tcp:host:notaport", "foo", "swtpm:tcp:host:99999", "xen:\u00b2",
     "swtpm:unix:", "xen:99999999999999999999", "xen:0/x", ""],
)  # fmt: skip
@pytest.mark.parametrize("required", [False, True])
def test_a_malformed_vtpm_address_is_a_usage_error(
    disk: Path, boot: Boot, uri: str, required: bool
) -> None:
    r = boot(disk, f"--vtpm={uri}", *(["--require-vtpm"] if required else []))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.count("\n") == 1 and "bad vTPM address" in err and "Traceback" not in err
    assert list(boot.outdir.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [("--runas=5000000000", "out of range"), ("--runas=-5", "must not be negative"),
     ("--runas=\u0661", "needs an integer"), ("--offset=99999999999999999999", "out of range"),
     ("--vtpm-uuid=nope", "needs a UUID")],
)  # fmt: skip
def test_numeric_options_out_of_range_are_usage_errors(
    disk: Path, boot: Boot, option: str, message: str
) -> None:
    r = boot(disk, option, "--vtpm=xen:0")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("mode", ["-q", "--isconfig", f"--runas={NOBODY}"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, mode: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = bootloader("-q", mode, str(fifo), timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1, err
    assert f"{fifo}: cannot open the" in err and "is a FIFO" in err


def test_a_character_device_or_directory_is_refused(tmp_path: Path) -> None:
    for path in ("/dev/zero", str(tmp_path)):
        r = bootloader("-q", path, timeout=30)
        assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr


def test_output_is_truncated_and_never_followed(disk: Path, boot: Boot, tmp_path: Path) -> None:
    r = boot(disk)
    assert r.returncode == 0, r.stderr
    assert boot.records()[b"args"] == CMDLINE  # no stale tail after the records
    for f in boot.outdir.iterdir():
        f.unlink()
    target = tmp_path / "precious"
    target.write_bytes(b"not yours")
    link = tmp_path / "out.link"
    link.symlink_to(target)
    r = bootloader("-q", f"--output={link}", f"--output-directory={boot.outdir}", str(disk))
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "symbolic link" in err, err
    assert target.read_bytes() == b"not yours"
    assert list(boot.outdir.iterdir()) == []


@pytest.mark.swtpm
def test_the_event_log_replaces_a_symlink_never_follows_it(
    disk: Path, boot: Boot, tmp_path: Path, swtpm12: SwtpmProcess
) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"not yours")
    log = tmp_path / "boot.log"
    log.symlink_to(target)
    r = boot(disk, f"--vtpm={swtpm12.uri}", f"--event-log={log}")
    assert r.returncode == 0, r.stderr
    assert target.read_bytes() == b"not yours"
    assert not log.is_symlink() and replay(parse(log.read_bytes(), str(log))) == pcrs(swtpm12)


def test_a_failed_run_removes_the_output_directory_it_created(disk: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "run" / "xen" / "d"
    out = tmp_path / "out"
    r = bootloader("-q", f"--output={out}", f"--output-directory={outdir}",
                   "--entry=no such entry", str(disk))  # fmt: skip
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    r = bootloader("-q", f"--output={out}", f"--output-directory={outdir}",
                   "--kernel=/boot/absent", str(disk))  # fmt: skip
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert out.read_bytes() == b""


def test_result_paths_are_absolute_with_a_relative_output_directory(
    disk: Path, tmp_path: Path
) -> None:
    r = bootloader("-q", "--output=out", "--output-format=simple0", "--output-directory=rel",
                   str(disk), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    items = dict(i.split(b" ", 1) for i in (tmp_path / "out").read_bytes().split(b"\0") if i)
    for key in (b"kernel", b"ramdisk"):
        assert items[key].startswith(bytes(tmp_path / "rel") + b"/"), items
        assert Path(os.fsdecode(items[key])).is_file()


def test_errors_are_one_line_naming_the_users_file(tmp_path: Path) -> None:
    r = bootloader("-q", "/x.img")
    assert r.stderr == b"pvgrub-py: /x.img: cannot open the disk image: no such file or directory\n"
    bad = tmp_path / "bad.cfg"
    bad.write_bytes(b"menuentry x {\n linux /k\n")
    for path in (str(bad), "/usr/bin/ls"):
        r = bootloader("-q", "--isconfig", path)
        err = r.stderr.decode()
        assert r.returncode == 1 and err.startswith(f"pvgrub-py: {path}"), err
        assert "/boot/grub/grub.cfg" not in err


@pytest.mark.parametrize("extra", [[], ["-i"]], ids=["no-vtpm", "no-terminal-for-i"])
def test_an_error_is_not_preceded_by_a_warning(disk: Path, boot: Boot, extra: list[str]) -> None:
    # No --vtpm (a warning on success), -i without a terminal (another), and a
    # kernel that is not there: one line, the error.
    line = boot.assert_failed_cleanly(boot(disk, *extra, "--kernel=/boot/absent"))
    assert "absent" in line
    r = boot(disk, *extra)
    assert r.returncode == 0 and b"warning" in r.stderr


# -- interfaces ----------------------------------------------------------------
def test_version_initrd_alias_and_debug(disk: Path, boot: Boot, tmp_path: Path) -> None:
    from pvgrub_py import __version__

    r = bootloader("--version")
    assert r.returncode == 0 and r.stdout == f"pvgrub-py {__version__}\n".encode()
    (tmp_path / "root").mkdir()
    r = boot(disk, "--kernel=/boot/vmlinuz", "--initrd=/boot/initrd.img", "--debug")
    assert r.returncode == 0, r.stderr
    rec = boot.records()
    assert Path(os.fsdecode(rec[b"ramdisk"])).read_bytes() == INITRD
    debug = [ln for ln in r.stderr.decode().splitlines() if ln.startswith("pvgrub-py: debug: ")]
    assert any("kernel (300000 bytes)" in ln for ln in debug), r.stderr
    assert any("result written to" in ln for ln in debug), r.stderr


def test_every_option_has_a_sentence_in_help() -> None:
    from pvgrub_py.bootloader.options import LONG_OPTIONS

    text = bootloader("--help").stdout.decode()
    for option in LONG_OPTIONS:
        name = "--" + option.rstrip("=")
        lines = [ln for ln in text.splitlines() if ln.lstrip().startswith(name)
                 or f", {name}" in ln]  # fmt: skip
        assert lines, f"{name} is not described in --help"


def test_without_xen_bindings_the_error_names_no_option_we_lack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pvgrub_py.cli.connect import open_transport
    from pvgrub_py.errors import PvgrubError
    from pvgrub_py.tpm.uri import parse_vtpm_uri
    from pvgrub_py.xen import availability

    monkeypatch.delenv("PVGRUB_SIM", raising=False)
    real = availability.availability()
    monkeypatch.setattr(availability, "availability",
                        lambda: type(real)(False, "not built", None, {}, ()))  # fmt: skip
    with pytest.raises(PvgrubError) as caught:
        open_transport(parse_vtpm_uri("xen:0"))
    assert "--sim" not in str(caught.value) and "no Xen bindings (not built)" in str(caught.value)


@pytest.mark.swtpm
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_full_output_file_system_fails_before_any_extend(
    disk: Path, tmp_path: Path, swtpm2: SwtpmProcess
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        out = full / "bootloader.7.out"
        out.write_bytes(b"")
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        outdir = tmp_path / "d"
        r = bootloader("-q", f"--output={out}", "--output-format=simple0",
                       f"--output-directory={outdir}", f"--vtpm={swtpm2.uri}", "--tpm2",
                       str(disk))  # fmt: skip
        err = r.stderr.decode()
        assert r.returncode == 1 and err.count("\n") == 1, err
        assert "no space left" in err.lower(), err
        assert out.read_bytes() == b""
        assert pcrs(swtpm2) == zero_pcrs(swtpm2)
        assert not outdir.exists()
    finally:
        subprocess.run(["umount", str(full)], check=True)


@pytest.mark.swtpm
@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_open_vtpm_refuses_a_used_vtpm_for_every_caller(tpm2: bool) -> None:
    # The bootloader and the domain builder (pvgrubctl boot) both open their
    # vTPM with open_vtpm: a vTPM whose PCR 4 moved is refused before any extend.
    from pvgrub_py.bootloader.options import BootloaderOptions
    from pvgrub_py.cli.connect import VtpmConnector
    from pvgrub_py.measure.vtpm import MeasuredBootError, open_vtpm

    with SwtpmProcess(tpm2=tpm2) as tpm:
        with TpmClient(tpm.transport()) as client:
            banks = client.active_banks()
            client.extend(4, {alg.name: bytes(alg.digest_size) for alg in banks})
        before = pcrs(tpm)
        opts = BootloaderOptions(vtpm=tpm.uri, tpm2=tpm2)
        with pytest.raises(MeasuredBootError, match=r"PCR 4 \(sha1\) is not at its reset value"):
            open_vtpm(opts.measure_policy(), VtpmConnector(), warn=pytest.fail)
        assert pcrs(tpm) == before
