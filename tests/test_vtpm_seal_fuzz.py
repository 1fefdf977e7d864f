"""Hypothesis fuzzing of the two readers ``vtpm import`` runs before anything else:
the sealed export's header and seal (`pvgrub_py.vtpm.seal.open_sealed`) and the
state directory's import ledger (`pvgrub_py.vtpm.import_ledger`).

Only `VtpmServiceError` may escape, with one line naming the file; a mutant
that still opens must be byte-for-byte the sealed original (AES-GCM
authenticates the header, the time and the nonce), never another archive.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvgrub_py.vtpm import import_ledger, seal
from pvgrub_py.vtpm.manufacture import VtpmServiceError

UUID = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
KEY = bytes(range(32))
ARCHIVE = os.urandom(300)
CREATED = 1_765_000_000_000
SEALED = seal.seal(UUID, ARCHIVE, KEY, created_ms=CREATED)
FUZZ = settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(SEALED)
    end = SEALED.index(b"\n") + 1
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "header", "truncate", "insert"]))
        if how == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif how == "insert":
            at = draw(st.integers(0, min(len(data), end)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            top = min(len(data), end) if how == "header" else len(data)
            i = draw(st.integers(0, max(0, top - 1)))
            data[i] ^= draw(st.integers(1, 255))
    return bytes(data)


def open_or_refuse(data: bytes) -> seal.Opened | None:
    try:
        return seal.open_sealed("fuzz.vtpm", data, KEY)
    except VtpmServiceError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.vtpm: "), str(e)
        return None


def test_the_original_opens() -> None:
    opened = open_or_refuse(SEALED)
    assert opened is not None
    assert (opened.uuid, opened.created_ms, opened.archive) == (UUID, CREATED, ARCHIVE)


@FUZZ
@given(mutants())
def test_a_changed_sealed_file_never_opens_as_something_else(data: bytes) -> None:
    opened = open_or_refuse(data)
    if opened is not None:
        assert data == SEALED


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_open(data: bytes) -> None:
    assert open_or_refuse(seal.MAGIC + data) is None or data == SEALED[len(seal.MAGIC) :]


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger")


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_a_damaged_ledger_is_one_line(ledger_dir: Path, raw: bytes) -> None:
    (ledger_dir / import_ledger.LEDGER).write_bytes(raw)
    opened = seal.open_sealed("x", SEALED, KEY)
    try:
        with import_ledger.admitting(str(ledger_dir), "x", opened, 0) as admission:
            assert isinstance(admission.newest, dict)
    except VtpmServiceError as e:
        assert "\n" not in str(e)
