"""Shared pytest fixtures: the third-party corpus (conformance only), and real swtpm instances."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import corpus
import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _corpus_missing() -> None:
    """Skip, or under CI=true fail: a CI run of `make conformance` must not pass vacuously."""
    if _in_ci():
        pytest.fail(corpus.missing_reason(), pytrace=False)
    pytest.skip(corpus.missing_reason())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: before the skip marks (an empty parametrization over a missing corpus
    # is a skip mark, which under CI must fail instead).
    if item.get_closest_marker("conformance") is None:
        if "fixtures_dir" in getattr(item, "fixturenames", ()):
            pytest.fail(f"{item.nodeid} reads the third-party corpus but is not marked conformance")
        return
    if not corpus.present():
        _corpus_missing()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """$PVGRUB_SHARED/fixtures, for tests marked ``conformance`` only (checked above)."""
    if not corpus.present():
        _corpus_missing()
    return corpus.FIXTURES


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
