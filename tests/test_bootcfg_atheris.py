"""The atheris (libFuzzer) harness for the boot-config parsers, under pytest.

``tests/fuzz_bootcfg_atheris.py`` is the harness; here it replays its seed
corpus (this project's own configs, tests/own_bootcfg.py, for each parser
that could read them; under ``conformance`` the third-party configs too) and,
as a slow test, fuzzes for a minute.  libFuzzer exits non-zero on the
first input that crashes a parser, hangs past ``-timeout`` or passes
``-rss_limit_mb``, and writes it to ``crash-*``/``timeout-*``/``oom-*`` in
the working directory, which the failure message names.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the test extras: pip install -e '.[test]'")

FINDINGS = ("crash-", "timeout-", "oom-", "slow-unit-", "leak-")
HARNESS = Path(__file__).with_name("fuzz_bootcfg_atheris.py")


def fuzz(
    tmp_path: Path, *options: str, own_only: bool = True, at_least: int = 20
) -> subprocess.CompletedProcess[str]:
    corpus = tmp_path / "corpus"
    only = ["--own-only"] if own_only else []
    seeded = subprocess.run([sys.executable, str(HARNESS), "--seed", str(corpus), *only],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "seeded" in seeded.stdout and len(list(corpus.iterdir())) >= at_least
    return subprocess.run(
        [sys.executable, str(HARNESS), str(corpus), "-max_len=8192", "-timeout=10",
         "-rss_limit_mb=2048", "-print_final_stats=1", *options],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip


def _verdict(run: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(FINDINGS))
    assert run.returncode == 0 and not found, f"{found}\n{run.stderr[-3000:]}"
    assert "stat::number_of_executed_units" in run.stderr


def test_seed_corpus_replays_clean(tmp_path: Path) -> None:
    run = fuzz(tmp_path, "-runs=0")
    _verdict(run, tmp_path)


@pytest.mark.conformance
def test_shared_seed_corpus_replays_clean(tmp_path: Path) -> None:
    run = fuzz(tmp_path, "-runs=0", own_only=False, at_least=100)
    _verdict(run, tmp_path)


@pytest.mark.slow
def test_fuzz_for_a_minute(tmp_path: Path) -> None:
    run = fuzz(tmp_path, "-max_total_time=60")
    _verdict(run, tmp_path)
    executed = [line for line in run.stderr.splitlines() if "number_of_executed_units" in line]
    assert int(executed[0].split(":")[-1]) > 1000
