"""`pvgrubctl predict` as a user runs it: output, JSON shape, one-line errors,
and ``predict DISK`` against what ``pvgrub-py`` leaves in a real swtpm."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.cli.pvgrubctl import main
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess


def files(tmp_path: Path) -> tuple[str, str]:
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    k.write_bytes(b"kernel-bytes")
    i.write_bytes(b"initrd-bytes")
    return str(k), str(i)


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k, i = files(tmp_path)
    assert main(["predict", "--kernel", k, "--initrd", i, "--cmdline", "ro"]) == 0
    out = capsys.readouterr().out
    assert "1. PCR 4 <- kernel" in out and "3. PCR 5 <- initrd" in out
    assert "  sha1:\n    4 : 0x05B0E492C1EDF73330D1EF77FDD878F14823AE05" in out


def test_json_shape_is_stable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k, _ = files(tmp_path)
    assert main(["predict", "--kernel", k, "--cmdline", "ro", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"measurements", "pcrs"}
    assert doc["measurements"][0] == {
        "pcr": 4,
        "what": "kernel",
        "source": k,
        "digests": {
            "sha1": hashlib.sha1(b"kernel-bytes").hexdigest(),
            "sha256": hashlib.sha256(b"kernel-bytes").hexdigest(),
        },
    }
    assert doc["measurements"][1]["source"] == "ro"
    assert doc["measurements"][2]["source"] is None
    assert set(doc["pcrs"]) == {"sha1", "sha256"} and set(doc["pcrs"]["sha1"]) == {"4", "5"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (
            ["--kernel", "/nonexistent/vmlinuz", "--cmdline", "x"],
            1,
            "pvgrubctl: kernel /nonexistent/vmlinuz: no such file or directory",
        ),
        (["--kernel", "/", "--cmdline", "x"], 1, "pvgrubctl: kernel /: is a directory"),
        (
            ["--kernel", "K", "--cmdline", "x", "--bank", "md5"],
            2,
            "pvgrubctl: unknown hash bank 'md5' (known: sha1,sha256,sha384,sha512,sm3_256,"
            "sha3_256,sha3_384,sha3_512)",
        ),
        (["--cmdline", "x"], 2, "error: the following arguments are required: --kernel"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], status: int, message: str) -> None:
    k, _ = files(tmp_path)
    r = run_cli("predict", *[k if a == "K" else a for a in args])
    assert r.returncode == status
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_nul_in_cmdline_from_argv_is_impossible_but_checked(tmp_path: Path) -> None:
    # argv cannot carry NUL; the library check is exercised in test_measure_boot_files.
    k, _ = files(tmp_path)
    assert main(["predict", "--kernel", k, "--cmdline", "a b"]) == 0


def test_failed_run_leaves_no_event_log(tmp_path: Path) -> None:
    out = tmp_path / "boot.log"
    r = run_cli("predict", "--kernel", str(tmp_path / "missing"), "--cmdline", "x",
                "--event-log", str(out))  # fmt: skip
    assert r.returncode == 1 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_is_complete() -> None:
    r = run_cli("predict", "--help")
    assert r.returncode == 0
    for word in ("--kernel", "--initrd", "--cmdline", "--bank", "--json", "--event-log",
                 "PCR 4", "exit status"):  # fmt: skip
        assert word in r.stdout


# -- predict DISK: the bootloader's own choice and extraction ------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def boot_into_swtpm(
    disk: Path, tmp: Path, tpm2: bool, *extra: str
) -> tuple[dict[str, dict[str, str]], bytes]:
    """pvgrub-py as libxl runs it, into a fresh swtpm: (live PCRs as JSON, event log)."""
    outdir, output, log = tmp / "out.d", tmp / "out", tmp / "boot.log"
    outdir.mkdir()
    output.touch()
    with SwtpmProcess(tpm2=tpm2) as tpm:
        r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", "-q",
                            f"--output={output}", "--output-format=simple0",
                            f"--output-directory={outdir}", f"--vtpm={tpm.uri}", "--require-vtpm",
                            f"--event-log={log}", *(["--tpm2"] if tpm2 else []), *extra, str(disk)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        with TpmClient(tpm.transport()) as client:
            live = client.read_pcrs([4, 5])
    return {
        bank: {str(k): v.hex() for k, v in pcrs.items()} for bank, pcrs in live.items()
    }, log.read_bytes()


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.parametrize("tpm2", [True, False], ids=["tpm20", "tpm12"])
@pytest.mark.parametrize("image", ["debian_gpt", "fedora_mbr", "btrfs_bare", "qcow2"])
def test_predict_disk_equals_what_the_bootloader_leaves_in_swtpm(
    images: disk_images.ImageFactory, tmp_path: Path, image: str, tpm2: bool
) -> None:
    disk = getattr(images, image)().path
    live, boot_log = boot_into_swtpm(disk, tmp_path, tpm2)
    predicted_log = tmp_path / "predicted.log"
    r = run_cli("predict", str(disk), "--json", "--bank", ",".join(live),
                "--event-log", str(predicted_log))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pcrs"] == live
    assert predicted_log.read_bytes() == boot_log
    assert [m["what"] for m in doc["measurements"]] == ["kernel", "cmdline", "initrd"]


@pytest.mark.integration
def test_predict_disk_deprivileged_and_by_entry_agree(
    images: disk_images.ImageFactory,
) -> None:
    disk = str(images.debian_gpt().path)
    plain = run_cli("predict", disk, "--json")
    assert plain.returncode == 0, plain.stderr
    same = [run_cli("predict", disk, "--json", "--entry", "0")]
    if os.geteuid() == 0:
        same.append(run_cli("predict", disk, "--json", "--runas", "65534"))
    for r in same:
        assert r.returncode == 0, r.stderr
        assert r.stdout == plain.stdout
    extra = run_cli("predict", disk, "--json", "--args", "console=hvc0")
    cmdline = json.loads(extra.stdout)["measurements"][1]["source"]
    assert cmdline == json.loads(plain.stdout)["measurements"][1]["source"] + " console=hvc0"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["DISK", "--kernel", "K"], 2, "DISK and --kernel are mutually exclusive"),
        (["DISK", "--cmdline", "x", "--initrd", "K"], 2, "DISK and --initrd/--cmdline are"),
        (["--entry", "1", "--kernel", "K", "--cmdline", "x"], 2, "--entry needs a DISK"),
        (["DISK", "--entry", "no such entry"], 1, "no menu entry matches 'no such entry'"),
        (["DISK", "--offset", "0"], 1, "no supported filesystem starts at byte 0"),
        (["/nonexistent.img"], 1, "pvgrubctl: /nonexistent.img: cannot open the disk image"),
    ],
)
def test_predict_disk_errors_are_one_line(
    images: disk_images.ImageFactory, tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    k, _ = files(tmp_path)
    disk = str(images.debian_gpt().path)
    r = run_cli("predict", *[{"DISK": disk, "K": k}.get(a, a) for a in args])
    assert r.returncode == status, r.stderr
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def _expected(kernel: str, initrd: str, cmdline: bytes) -> dict[str, dict[int, str]]:
    """PCR 4 and 5 by the README's rule, in plain hashlib (not the product's code)."""
    out: dict[str, dict[int, str]] = {}
    for bank in ("sha1", "sha256"):
        def h(data: bytes, bank: str = bank) -> bytes:
            return hashlib.new(bank, data).digest()

        zero = bytes(hashlib.new(bank).digest_size)
        k, i = Path(kernel).read_bytes(), Path(initrd).read_bytes()
        out[bank] = {4: h(zero + h(k)).hex(), 5: h(h(zero + h(cmdline)) + h(i)).hex()}
    return out


def test_format_keylime_is_a_tpm_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Keylime's tpm_policy: PCR numbers as strings, each a list of lowercase hex values
    (any of which Keylime accepts): here the sha1 and the sha256 value."""
    k, i = files(tmp_path)
    assert main(["predict", "--kernel", k, "--initrd", i, "--cmdline", "ro",
                 "--format", "keylime"]) == 0  # fmt: skip
    policy = json.loads(capsys.readouterr().out)
    want = _expected(k, i, b"ro")
    assert policy == {str(p): [want["sha1"][p], want["sha256"][p]] for p in (4, 5)}


def test_format_pcrlock_is_one_record_per_extend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k, i = files(tmp_path)
    assert main(["predict", "--kernel", k, "--initrd", i, "--cmdline", "ro",
                 "--bank", "sha256", "--format", "pcrlock"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    digests = [
        hashlib.sha256(Path(k).read_bytes()).hexdigest(),
        hashlib.sha256(b"ro").hexdigest(),
        hashlib.sha256(Path(i).read_bytes()).hexdigest(),
    ]
    assert doc == {"records": [
        {"pcr": pcr, "digests": [{"hashAlg": "sha256", "digest": d}]}
        for pcr, d in zip((4, 5, 5), digests, strict=True)
    ]}  # fmt: skip


def test_format_json_is_json_and_conflicts_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k, i = files(tmp_path)
    base = ["predict", "--kernel", k, "--initrd", i, "--cmdline", "ro"]
    assert main([*base, "--format", "json"]) == 0
    as_format = capsys.readouterr().out
    assert main([*base, "--json"]) == 0
    assert capsys.readouterr().out == as_format
    assert main([*base, "--json", "--format", "keylime"]) == 2
    assert "--json" in capsys.readouterr().err
