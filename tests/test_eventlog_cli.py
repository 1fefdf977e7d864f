"""``pvgrubctl eventlog show|verify``: output, exit status, one-line errors."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pvgrub_py.cli import pvgrubctl
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.extend import extend_measurements
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.algorithms import SHA1, SHA256, extend
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess


@pytest.fixture(autouse=True)
def only_importable_verbs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep these tests independent of other verbs still being written."""
    usable = []
    for name in pvgrubctl.COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            if name == "pvgrub_py.cli.cmd_eventlog":
                raise
            continue
        usable.append(name)
    monkeypatch.setattr(pvgrubctl, "COMMAND_MODULES", tuple(usable))


@pytest.fixture(scope="module")
def logs_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "eventlog"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = pvgrubctl.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.conformance
def test_show_text(capsys: pytest.CaptureFixture[str], logs_dir: Path) -> None:
    status, out, err = run(capsys, "eventlog", "show", str(logs_dir / "event-sd-boot-fedora37.bin"))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("crypto-agile format") and "banks sha256/32" in lines[0]
    assert lines[0].endswith("27 events")
    assert lines[1].split()[:4] == ["0", "PCR", "0", "EV_NO_ACTION"]
    exit_line = next(line for line in lines if line.split()[0] == "26")
    assert "EV_EFI_ACTION" in exit_line and '"Exit Boot Services Invocation"' in exit_line
    assert "PCRs replayed from the log:" in lines
    assert (
        "  sha256 PCR  0: 464a812afa3f88d8a5f1fe7e71df41951435ebd05edb742db8c2c0d67d62c0d1" in lines
    )
    assert len(lines) == 1 + 28 + 1 + 10


@pytest.mark.conformance
def test_show_json_is_the_stable_document(
    capsys: pytest.CaptureFixture[str], logs_dir: Path
) -> None:
    status, out, _ = run(capsys, "eventlog", "show", "--json", str(logs_dir / "event.bin"))
    assert status == 0
    doc = json.loads(out)
    assert list(doc) == ["format", "spec_id", "quirks", "events", "pcrs"]
    assert doc["format"] == "crypto-agile"
    assert [a["bank"] for a in doc["spec_id"]["algorithms"]] == [
        "sha1",
        "sha256",
        "sha384",
        "sha512",
    ]
    header, blob = doc["events"]
    assert header["index"] == 0 and header["type_name"] == "EV_NO_ACTION"
    assert blob == {
        "index": 1,
        "pcr": 0,
        "type": 0x80000008,
        "type_name": "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        "digests": blob["digests"],
        "data_hex": "00009000000000000000b00000000000",
        "data_text": None,
    }
    assert blob["digests"]["sha1"] == "d1ee7e857e2ae54671be58f83f3b0355c4c929f1"
    golden = json.loads((logs_dir / "event.pcrs.json").read_text())
    assert doc["pcrs"] == golden


@pytest.mark.conformance
def test_show_json_data_text(capsys: pytest.CaptureFixture[str], logs_dir: Path) -> None:
    status, out, _ = run(
        capsys, "eventlog", "show", "--json", str(logs_dir / "event-sd-boot-fedora37.bin")
    )
    assert status == 0
    doc = json.loads(out)
    texts = [e["data_text"] for e in doc["events"] if e["type_name"] == "EV_EFI_ACTION"]
    assert "Exit Boot Services Invocation" in texts


@pytest.mark.conformance
def test_show_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, logs_dir: Path
) -> None:
    data = (logs_dir / "go-attestation" / "short_no_action_eventlog").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    status, out, _ = run(capsys, "eventlog", "show", "-")
    assert status == 0
    assert "sha1 PCR  0: " + "00" * 19 + "03" in out
    assert '"StartupLocality\\x00\\x03"' in out


@pytest.mark.conformance
def test_show_warns_about_an_accepted_quirk(
    capsys: pytest.CaptureFixture[str], logs_dir: Path
) -> None:
    status, out, err = run(capsys, "eventlog", "show", str(logs_dir / "specid-vendordata.bin"))
    assert status == 0
    assert err.startswith("pvgrubctl: warning: ") and "eventSize 37" in err
    assert "(none: the log extends no PCR)" in out


@pytest.mark.conformance
@pytest.mark.parametrize(
    "name",
    ["event-arch-linux", "event-gce-ubuntu-2104-log", "event-uefi-sha1-log", "event"],
)
def test_verify_ok(capsys: pytest.CaptureFixture[str], logs_dir: Path, name: str) -> None:
    pcrs = logs_dir / f"{name}.pcrs.json"
    golden = json.loads(pcrs.read_text())
    status, out, err = run(
        capsys, "eventlog", "verify", str(logs_dir / f"{name}.bin"), "--pcrs", str(pcrs)
    )
    count = sum(len(v) for v in golden.values())
    banks = len(golden)
    pcr_word = "PCR" if count == 1 else "PCRs"
    bank_word = "bank" if banks == 1 else "banks"
    assert (status, err) == (0, "")
    assert out == f"OK: {count} {pcr_word} in {banks} {bank_word} match\n"


@pytest.mark.conformance
def test_verify_windows_against_all_24_quoted_pcrs(
    capsys: pytest.CaptureFixture[str], logs_dir: Path
) -> None:
    base = logs_dir / "go-attestation" / "windows_gcp_shielded_vm"
    status, out, _ = run(capsys, "eventlog", "verify", f"{base}.bin", "--pcrs", f"{base}.pcrs.json")
    assert (status, out) == (0, "OK: 24 PCRs in 1 bank match\n")


@pytest.mark.conformance
def test_verify_mismatch_prints_every_difference(
    capsys: pytest.CaptureFixture[str], logs_dir: Path, tmp_path: Path
) -> None:
    golden = json.loads((logs_dir / "event-arch-linux.pcrs.json").read_text())
    golden["sha256"]["5"] = "00" * 32
    golden["sha1"]["0"] = "11" * 20
    pcrs = tmp_path / "expected.json"
    pcrs.write_text(json.dumps(golden))
    status, out, _ = run(
        capsys, "eventlog", "verify", str(logs_dir / "event-arch-linux.bin"), "--pcrs", str(pcrs)
    )
    assert status == 1
    assert out.splitlines() == [
        "sha1 PCR 0: log replays to a0487b0d95387d4a30560edf5f041307bf4a1dcc, expected "
        + "11" * 20,
        "sha256 PCR 5: log replays to "
        "202522f005ef625588bb7c9e21335ba96a63c5086306138885b3bb2c381730ca, expected " + "00" * 32,
    ]


def test_verify_a_pv_grub_log_against_a_predict_document(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The round trip this verb exists for: predict, boot (write the log), verify."""
    digests = {
        what: {a.name: hashlib.new(a.name, what.encode()).digest() for a in (SHA1, SHA256)}
        for what in ("kernel", "cmdline", "initrd")
    }
    ms = [
        Measurement(4, "kernel", "/boot/vmlinuz", digests["kernel"], 6),
        Measurement(5, "cmdline", "ro", digests["cmdline"], 7),
        Measurement(5, "initrd", "/boot/initrd.img", digests["initrd"], 6),
    ]
    log = tmp_path / "guest.eventlog"
    write_atomic(str(log), serialise(log_for_measurements(ms, (SHA1, SHA256), tpm2=True)))
    pcrs: dict[str, dict[str, str]] = {}
    for alg in (SHA1, SHA256):
        p4 = extend(alg, alg.zero_pcr(), digests["kernel"][alg.name])
        p5 = extend(alg, alg.zero_pcr(), digests["cmdline"][alg.name])
        p5 = extend(alg, p5, digests["initrd"][alg.name])
        pcrs[alg.name] = {"4": p4.hex(), "5": "0x" + p5.hex().upper()}
    doc = tmp_path / "predict.json"
    doc.write_text(json.dumps({"measurements": [], "pcrs": pcrs}))
    status, out, _ = run(capsys, "eventlog", "verify", str(log), "--pcrs", str(doc))
    assert (status, out) == (0, "OK: 4 PCRs in 2 banks match\n")


@pytest.mark.conformance
def test_verify_accepts_show_json_output(
    capsys: pytest.CaptureFixture[str], logs_dir: Path, tmp_path: Path
) -> None:
    log = str(logs_dir / "event-gce-ubuntu-2104-log.bin")
    doc = tmp_path / "show.json"
    status, out, _ = run(capsys, "eventlog", "show", "--json", log)
    doc.write_text(out)
    status, out, _ = run(capsys, "eventlog", "verify", log, "--pcrs", str(doc))
    assert (status, out) == (0, "OK: 33 PCRs in 3 banks match\n")


@pytest.mark.conformance
def test_verify_a_bank_the_log_lacks(
    capsys: pytest.CaptureFixture[str], logs_dir: Path, tmp_path: Path
) -> None:
    doc = tmp_path / "e.json"
    doc.write_text(json.dumps({"sha384": {"0": "00" * 48}}))
    status, out, _ = run(
        capsys, "eventlog", "verify", str(logs_dir / "event-uefi-sha1-log.bin"), "--pcrs", str(doc)
    )
    assert status == 1
    assert out == f"sha384 PCR 0: the log has no sha384 digests, expected {'00' * 48}\n"


BAD_PCR_DOCS = [
    ("{", "not JSON"),
    ("[]", "expected an object"),
    ('{"md5": {"0": "00"}}', "unknown bank 'md5'"),
    ('{"sha1": []}', 'sha1: expected an object {"N": "HEX"}'),
    ('{"sha1": {"x": "00"}}', "sha1: PCR 'x' is not a PCR number"),
    ('{"sha1": {"4": 7}}', "sha1 PCR 4: value is not a hex string"),
    ('{"sha1": {"4": "zz"}}', "sha1 PCR 4: 'zz' is not hex"),
    ('{"sha1": {"4": "00"}}', "sha1 PCR 4: 1 bytes, a sha1 PCR holds 20"),
    ("{}", "names no PCR values"),
    ('{"pcrs": {"sha256": {}}}', "names no PCR values"),
]


@pytest.mark.conformance
@pytest.mark.parametrize(("text", "problem"), BAD_PCR_DOCS)
def test_verify_rejects_bad_pcr_documents(
    capsys: pytest.CaptureFixture[str], logs_dir: Path, tmp_path: Path, text: str, problem: str
) -> None:
    doc = tmp_path / "e.json"
    doc.write_text(text)
    status, out, err = run(
        capsys, "eventlog", "verify", str(logs_dir / "event.bin"), "--pcrs", str(doc)
    )
    assert (status, out) == (1, "")
    assert err.startswith(f"pvgrubctl: {doc}: ") and problem in err
    assert err.count("\n") == 1


@pytest.mark.conformance
def test_malformed_log_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], logs_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "truncated.log"
    bad.write_bytes((logs_dir / "event.bin").read_bytes()[:100])
    status, out, err = run(capsys, "eventlog", "show", str(bad))
    assert (status, out) == (1, "")
    assert err == (
        f"pvgrubctl: {bad}: event 1 sha1 digest: needs 20 bytes, only 9 left at offset 91 (0x5b)\n"
    )


def test_missing_log_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "eventlog", "show", str(tmp_path / "absent"))
    assert status == 1
    assert err == f"pvgrubctl: {tmp_path / 'absent'}: no such file or directory\n"


@pytest.mark.conformance
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], logs_dir: Path) -> None:
    with pytest.raises(SystemExit) as info:
        pvgrubctl.main(["eventlog", "verify", str(logs_dir / "event.bin")])
    assert info.value.code == 2
    assert "--pcrs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        pvgrubctl.main(["eventlog"])
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [["eventlog"], ["eventlog", "show"], ["eventlog", "verify"]])
def test_help_has_an_example(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        pvgrubctl.main([*argv, "--help"])
    assert info.value.code == 0
    assert "pvgrubctl eventlog" in capsys.readouterr().out.split("example")[-1]


# -- verify --tpm against a real swtpm ---------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.integration
@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_verify_against_live_tpm(
    tmp_path: Path, tpm2: bool, capsys: pytest.CaptureFixture[str]
) -> None:

    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel-bytes" * 1000)
    log = tmp_path / "boot.log"
    with SwtpmProcess(tpm2=tpm2) as tpm:
        with TpmClient(tpm.transport()) as client:
            banks = client.active_banks()
            extend_measurements(client, measure_boot_files(str(kernel), None, "ro", banks))
        args = ["predict", "--kernel", str(kernel), "--cmdline", "ro", "--event-log", str(log),
                "--bank", ",".join(b.name for b in banks)]  # fmt: skip
        assert pvgrubctl.main(args) == 0
        capsys.readouterr()
        assert pvgrubctl.main(["eventlog", "verify", str(log), "--tpm", tpm.uri]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"OK: {2 * len(banks)} PCRs in {len(banks)} bank")
        # A different cmdline in the log no longer matches the TPM: PCR 5 differs.
        args[args.index("ro")] = "rw"
        assert pvgrubctl.main(args) == 0
        capsys.readouterr()
        assert pvgrubctl.main(["eventlog", "verify", str(log), "--tpm", tpm.uri]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(" PCR 5: log replays to " in line for line in lines)


def test_verify_tpm_unreachable_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    kernel = tmp_path / "k"
    kernel.write_bytes(b"k")

    assert pvgrubctl.main(["predict", "--kernel", str(kernel), "--cmdline", "x", "--json",
                      "--event-log", str(log)]) == 0  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "eventlog", "verify",
                        str(log), "--tpm", f"swtpm:unix:{tmp_path}/none.sock"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "cannot connect to swtpm" in r.stderr
