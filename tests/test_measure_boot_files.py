"""The three-measurement plan over local files, and its error reporting."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import pcrs_from_json, pcrs_to_json, predict_pcrs
from pvgrub_py.tpm.algorithms import SHA1, SHA256, SHA384

EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def ext(alg: str, pcr: bytes, digest: bytes) -> bytes:
    return hashlib.new(alg, pcr + digest).digest()


def test_plan_order_and_pcrs(tmp_path: Path) -> None:
    k, i = tmp_path / "vmlinuz", tmp_path / "initrd"
    k.write_bytes(b"kernel-bytes")
    i.write_bytes(b"initrd-bytes")
    ms = measure_boot_files(str(k), str(i), "root=/dev/xvda1 ro", (SHA1, SHA256))
    assert [(m.pcr, m.what) for m in ms] == [(4, "kernel"), (5, "cmdline"), (5, "initrd")]
    assert ms[0].digests["sha1"].hex() == "93e515dec945cefbe5f2293a16a8e2dc6df5d531"
    assert ms[1].digests["sha256"] == hashlib.sha256(b"root=/dev/xvda1 ro").digest()
    values = predict_pcrs(ms, (SHA1, SHA256))
    for alg in ("sha1", "sha256"):
        size = hashlib.new(alg).digest_size
        pcr4 = ext(alg, bytes(size), hashlib.new(alg, b"kernel-bytes").digest())
        pcr5 = ext(alg, bytes(size), hashlib.new(alg, b"root=/dev/xvda1 ro").digest())
        pcr5 = ext(alg, pcr5, hashlib.new(alg, b"initrd-bytes").digest())
        assert values[alg] == {4: pcr4, 5: pcr5}


def test_reference_example_pcr4(tmp_path: Path) -> None:
    # TPM_Extend (TPM 1.2 Part 3 section 16.1): PCR4 after extending SHA1("kernel-bytes")
    # into a zero PCR is SHA1(20 zero bytes || digest) = 05b0e492...23ae05 (swtpm agrees).
    k = tmp_path / "k"
    k.write_bytes(b"kernel-bytes")
    ms = measure_boot_files(str(k), None, "", (SHA1,))
    pcr4 = predict_pcrs(ms, (SHA1,))["sha1"][4].hex()
    assert pcr4.startswith("05b0e492") and pcr4.endswith("23ae05")


def test_no_initrd_measures_the_empty_string(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.write_bytes(b"k")
    ms = measure_boot_files(str(k), None, "x", (SHA1, SHA384))
    assert ms[2].source is None and ms[2].digests["sha1"].hex() == EMPTY_SHA1
    assert ms[2].event_data == b"initrd: (none)"


def test_cmdline_with_nul_is_a_usage_error(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.write_bytes(b"k")
    with pytest.raises(UsageError, match="NUL"):
        measure_boot_files(str(k), None, "a\0b", (SHA1,))


def test_cmdline_keeps_raw_bytes_from_argv(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.write_bytes(b"k")
    arg = os.fsdecode(b"root=/dev/xvda1 label=\xff")  # not UTF-8, as argv may be
    ms = measure_boot_files(str(k), None, arg, (SHA1,))
    assert ms[1].digests["sha1"] == hashlib.sha1(b"root=/dev/xvda1 label=\xff").digest()


@pytest.mark.parametrize("role", ["kernel", "initrd"])
def test_missing_file_names_role_and_path(tmp_path: Path, role: str) -> None:
    k = tmp_path / "k"
    k.write_bytes(b"k")
    missing = str(tmp_path / "nope")
    args = (missing, None) if role == "kernel" else (str(k), missing)
    with pytest.raises(InputError) as e:
        measure_boot_files(args[0], args[1], "", (SHA1,))
    assert str(e.value) == f"{role} {missing}: no such file or directory"


def test_directory_and_fifo_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        measure_boot_files(str(fifo), None, "", (SHA1,))
    with pytest.raises(InputError, match="a directory"):
        measure_boot_files(str(tmp_path), None, "", (SHA1,))


def test_pcr_json_round_trip_and_errors() -> None:
    values = {"sha1": {4: bytes(20), 5: b"\x01" * 20}, "sha256": {4: bytes(32)}}
    assert pcrs_from_json(pcrs_to_json(values), "x") == values
    assert pcrs_from_json({"pcrs": pcrs_to_json(values)}, "x") == values
    with pytest.raises(InputError, match="unknown bank"):
        pcrs_from_json({"md5": {}}, "f.json")
    with pytest.raises(InputError, match="1 bytes, a sha1 PCR holds 20"):
        pcrs_from_json({"sha1": {"4": "00"}}, "f.json")
