"""`predict` must equal what a real swtpm holds after the same extends.

Random kernels (plain and whole-file gzip), initrds and cmdlines, including
no initrd and 0-byte files, go through the measurement plan into a real
swtpm (TPM 1.2 and 2.0), power-cycled before each case; the PCRs read back
must equal the offline prediction, bank by bank, and the values the README's
specification gives, computed with hashlib alone (tests/pcr_rule.py).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest
from pcr_rule import expected_pcrs

from pvgrub_py.cli.pvgrubctl import main as pvgrubctl
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.extend import extend_measurements
from pvgrub_py.measure.predict import pcrs_from_json, predict_pcrs
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess

pytestmark = [pytest.mark.swtpm, pytest.mark.integration]


def random_case(rng: random.Random, tmp: Path, n: int) -> tuple[str, str | None, str]:
    kernel = tmp / f"vmlinuz-{n}"
    size = rng.choice([0, 1, 4096, rng.randrange(1, 2 << 20)])
    data = rng.randbytes(size)
    kernel.write_bytes(gzip.compress(data, mtime=0) if rng.random() < 0.3 else data)
    initrd: str | None = None
    if rng.random() < 0.7:
        p = tmp / f"initrd-{n}"
        p.write_bytes(rng.randbytes(rng.choice([0, rng.randrange(1, 3 << 20)])))
        initrd = str(p)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789=/_-.,: \"'é€"
    cmdline = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
    return str(kernel), initrd, cmdline


def boot_and_read(tpm: SwtpmProcess, kernel: str, initrd: str | None, cmdline: str) -> None:
    tpm.power_cycle()
    with TpmClient(tpm.transport()) as client:
        banks = client.active_banks()
        measurements = measure_boot_files(kernel, initrd, cmdline, banks)
        extend_measurements(client, measurements)
        held = client.read_pcrs([4, 5], banks)
        assert held == predict_pcrs(measurements, banks)
        # The specification's values, in plain hashlib: not the code under test.
        assert held == expected_pcrs(kernel, cmdline, initrd, tuple(b.name for b in banks))


@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_random_boots_match_prediction(tmp_path: Path, tpm2: bool) -> None:
    rng = random.Random(20261127 + tpm2)
    with SwtpmProcess(tpm2=tpm2) as tpm:
        for n in range(12):
            boot_and_read(tpm, *random_case(rng, tmp_path, n))


@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_cli_json_matches_tpm(
    tmp_path: Path, tpm2: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(os.urandom(100_000))
    initrd.write_bytes(os.urandom(50_000))
    cmdline = "root=/dev/xvda1 ro console=hvc0"
    with SwtpmProcess(tpm2=tpm2) as tpm, TpmClient(tpm.transport()) as client:
        banks = client.active_banks()
        status = pvgrubctl(["predict", "--kernel", str(kernel), "--initrd", str(initrd),
                            "--cmdline", cmdline, "--json",
                            "--bank", ",".join(b.name for b in banks)])  # fmt: skip
        assert status == 0
        doc = json.loads(capsys.readouterr().out)
        measurements = measure_boot_files(str(kernel), str(initrd), cmdline, banks)
        extend_measurements(client, measurements)
        held = client.read_pcrs([4, 5], banks)
        assert pcrs_from_json(doc, "predict") == held
        names = tuple(b.name for b in banks)
        assert held == expected_pcrs(kernel, cmdline, initrd, names)
        assert [m["what"] for m in doc["measurements"]] == ["kernel", "cmdline", "initrd"]


@pytest.mark.slow
@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_several_hundred_mb_initrd(tmp_path: Path, tpm2: bool) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(os.urandom(14 << 20))
    with open(initrd, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(300 << 20)  # sparse tail: still 300 MiB of bytes to hash
        f.seek(0, os.SEEK_END)
        f.write(os.urandom(4096))
    with SwtpmProcess(tpm2=tpm2) as tpm:
        boot_and_read(tpm, str(kernel), str(initrd), "root=/dev/xvda1")
