"""Shared pytest fixtures: where shared/ lives, and real swtpm instances."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("PVGRUB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found at {FIXTURES}; set PVGRUB_SHARED")
    return FIXTURES


@pytest.fixture
def swtpm12() -> Iterator[SwtpmProcess]:
    """A fresh TPM 1.2 swtpm, started the way Xen's vtpm-stubdom starts (TPM_Startup done)."""
    from pvgrub_py.tpm.launcher import SwtpmProcess

    with SwtpmProcess(tpm2=False) as tpm:
        yield tpm


@pytest.fixture
def swtpm2() -> Iterator[SwtpmProcess]:
    """A fresh TPM 2.0 swtpm with TPM2_Startup done."""
    from pvgrub_py.tpm.launcher import SwtpmProcess

    with SwtpmProcess(tpm2=True) as tpm:
        yield tpm


if False:  # for type checkers only
    from pvgrub_py.tpm.launcher import SwtpmProcess
