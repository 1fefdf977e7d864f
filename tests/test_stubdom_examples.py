"""The xl configs in stubdom/examples, exercised so none of them rot.

Each config is read with a small parser of xl's syntax (xl.cfg(5): ``key =
value``, strings, numbers, lists, ``#`` comments), its ``bootloader`` must be
``pvgrub-py``, and its ``bootloader_args`` are handed to pvgrub-py exactly as
libxl would (after libxl's own arguments, before the disk), against the
sample guest disk on a simulated host with vtpmd in dom0.  The guest's
``vtpm`` device must name the same uuid the bootloader measured into.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvgrub_py.sample_guest import build_sample_disk
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host

EXAMPLES = Path(__file__).resolve().parents[1] / "stubdom" / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.cfg"))


def parse_xl_config(text: str) -> dict[str, object]:
    """xl.cfg(5) assignments; values are Python-literal compatible."""
    cleaned = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    out: dict[str, object] = {}
    for stmt in re.split(r"\n(?=\s*[A-Za-z_]+\s*=)", cleaned):
        if not stmt.strip():
            continue
        key, _, value = stmt.partition("=")
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


def test_examples_exist_and_parse() -> None:
    assert len(CONFIGS) >= 3
    for cfg in CONFIGS:
        conf = parse_xl_config(cfg.read_text())
        assert conf["bootloader"] == "pvgrub-py", cfg.name
        assert conf["type"] == "pv"


@pytest.fixture(scope="module")
def sample_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    disk, _ = build_sample_disk(tmp_path_factory.mktemp("sample"))
    return disk


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="xlx") as h:
        yield h


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_example_boots_as_libxl_would_run_it(
    cfg: Path, sample_disk: Path, host: SimHost, tmp_path: Path
) -> None:
    conf = parse_xl_config(cfg.read_text())
    extra = [str(a) for a in conf.get("bootloader_args", [])]  # type: ignore[union-attr]
    extra = [a.replace("/var/log/xen/", f"{tmp_path}/") for a in extra]
    tpm2 = "--tpm2" in extra
    vtpmd = None
    if conf.get("vtpm"):
        vtpm_spec = dict(kv.split("=", 1) for kv in str(conf["vtpm"][0]).split(","))  # type: ignore[index]
        assert f"--vtpm-uuid={vtpm_spec['uuid']}" in extra  # the instance the guest will get
        vtpmd = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pvgrub_py.cli.pvgrubctl",
                "vtpmd",
                "--sim",
                str(host.dir),
                "--state-dir",
                str(tmp_path / "st"),
                "--provision-unknown",
                "--stop-instances-on-exit",
            ]
            + (["--tpm2"] if tpm2 else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert vtpmd.stdout is not None and vtpmd.stdout.readline().startswith("vtpmd:")
    try:
        outdir = tmp_path / "bootloader.d"
        outdir.mkdir()
        output = tmp_path / "bootloader.out"
        output.touch()
        argv = [
            sys.executable,
            "-m",
            "pvgrub_py.cli.bootloader",
            "--quiet",
            f"--output={output}",
            "--output-format=simple0",
            f"--output-directory={outdir}",
            *extra,
            str(sample_disk),
        ]
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=300,
            env={"PVGRUB_SIM": str(host.dir), "PATH": "/usr/bin:/bin"},
        )
        assert r.returncode == 0, r.stderr
        records = output.read_bytes().split(b"\0")
        assert records[0].startswith(b"kernel ") and b"args root=UUID=" in b" ".join(records)
        if conf.get("vtpm"):
            assert "unmeasured" not in r.stderr
        else:
            assert "booting unmeasured" in r.stderr
    finally:
        if vtpmd is not None:
            vtpmd.terminate()
            vtpmd.wait(timeout=10)
