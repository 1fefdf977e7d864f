"""pvgrub_py.eventlog.replay: golden PCRs of real logs, start values, compare()."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pvgrub_py.eventlog.codec import parse, spec_id_header_event
from pvgrub_py.eventlog.records import (
    EV_IPL,
    EV_NO_ACTION,
    EV_SEPARATOR,
    STARTUP_LOCALITY_SIGNATURE,
    Event,
    EventLog,
    SpecIdEvent,
)
from pvgrub_py.eventlog.replay import (
    Mismatch,
    PcrValues,
    compare,
    replay,
    reset_value,
    startup_locality,
)
from pvgrub_py.tpm.algorithms import SHA1, SHA256

#: Logs whose <name>.pcrs.json lists exactly the PCRs the log extends.
GOLDEN = (
    "event-arch-linux",
    "event-gce-ubuntu-2104-log",
    "event-sd-boot-fedora37",
    "event-uefi-sha1-log",
    "event",
    "specid-vendordata",
)


@pytest.fixture(scope="module")
def logs_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "eventlog"


def load_pcrs(path: Path) -> PcrValues:
    doc = json.loads(path.read_text())
    return {bank: {int(k): bytes.fromhex(v) for k, v in pcrs.items()} for bank, pcrs in doc.items()}


def non_empty(values: PcrValues) -> PcrValues:
    return {bank: pcrs for bank, pcrs in values.items() if pcrs}


@pytest.mark.conformance
@pytest.mark.parametrize("name", GOLDEN)
def test_fixture_replays_to_its_golden_pcrs(logs_dir: Path, name: str) -> None:
    log = parse((logs_dir / f"{name}.bin").read_bytes(), name)
    expected = load_pcrs(logs_dir / f"{name}.pcrs.json")
    got = replay(log)
    # Both directions, nothing extra: same banks, same PCRs, same values.
    assert non_empty(got) == expected
    assert compare(got, expected) == []


@pytest.mark.conformance
def test_windows_gcp_replays_to_the_pcrs_the_real_vtpm_quoted(logs_dir: Path) -> None:
    base = logs_dir / "go-attestation" / "windows_gcp_shielded_vm"
    log = parse(base.with_suffix(".bin").read_bytes(), "windows")
    expected = load_pcrs(base.with_suffix(".pcrs.json"))
    got = replay(log)
    assert sorted(got["sha1"]) == [0, 4, 5, 7, 11, 12, 13, 14]
    for pcr, value in got["sha1"].items():
        assert expected["sha1"][pcr] == value
    # All 24 quoted PCRs verify: the untouched ones hold their reset values,
    # all ones for 17-22 and zero for the rest.
    assert len(expected["sha1"]) == 24
    assert compare(got, expected) == []


@pytest.mark.conformance
def test_startup_locality_3_starts_pcr0_at_3(logs_dir: Path) -> None:
    log = parse((logs_dir / "go-attestation" / "short_no_action_eventlog").read_bytes(), "short")
    assert replay(log) == {"sha1": {0: bytes(19) + b"\x03"}}


def _swtpm_vector(fixtures_dir: Path, formula: str) -> bytes:
    vectors = json.loads((fixtures_dir / "tpm" / "swtpm-tpm-vectors.json").read_text())
    for v in vectors:
        if v.get("verified_pcr", {}).get("formula") == formula:
            return bytes.fromhex(v["verified_pcr"]["value"])
    raise AssertionError(f"no swtpm vector {formula!r}")


def _agile(events: list[Event], banks: tuple[tuple[int, int], ...] = ((0x0B, 32),)) -> EventLog:
    spec = SpecIdEvent(0, 0, 2, 0, 2, banks)
    return EventLog("crypto-agile", spec, spec_id_header_event(spec), events)


def _locality(n: int) -> Event:
    return Event(0, EV_NO_ACTION, {"sha256": bytes(32)}, STARTUP_LOCALITY_SIGNATURE + bytes([n]))


@pytest.mark.conformance
def test_h_crtm_locality_4_matches_a_real_tpm(fixtures_dir: Path) -> None:
    # swtpm's own H-CRTM test: PCR 0 after _TPM_Hash_Start/Data("1234")/End.
    want = _swtpm_vector(fixtures_dir, "PCR0 = SHA256(00*31 || 04 || SHA256(b'1234'))")
    log = _agile([_locality(4), Event(0, 7, {"sha256": hashlib.sha256(b"1234").digest()}, b"")])
    assert replay(log)["sha256"][0] == want


@pytest.mark.conformance
def test_drtm_pcr17_extends_from_zero_like_a_real_tpm(fixtures_dir: Path) -> None:
    want = _swtpm_vector(fixtures_dir, "PCR17 = SHA256(00*32 || SHA256(b'1234'))")
    log = _agile([Event(17, 7, {"sha256": hashlib.sha256(b"1234").digest()}, b"")])
    assert replay(log)["sha256"][17] == want


def test_startup_locality_after_a_pcr0_extend_is_ignored() -> None:
    d = hashlib.sha256(b"x").digest()
    log = _agile([Event(0, EV_IPL, {"sha256": d}, b""), _locality(3)])
    assert replay(log)["sha256"][0] == hashlib.sha256(bytes(32) + d).digest()


def test_startup_locality_only_counts_in_pcr0_and_exact_form() -> None:
    sig = STARTUP_LOCALITY_SIGNATURE
    assert startup_locality(0, EV_NO_ACTION, sig + b"\x03") == 3
    assert startup_locality(1, EV_NO_ACTION, sig + b"\x03") is None
    assert startup_locality(0, EV_IPL, sig + b"\x03") is None
    assert startup_locality(0, EV_NO_ACTION, sig + b"\x03\x00") is None
    assert startup_locality(0, EV_NO_ACTION, sig) is None


def test_no_action_events_are_not_extended() -> None:
    log = _agile([Event(4, EV_NO_ACTION, {"sha256": b"\x01" * 32}, b"vendor")])
    assert replay(log) == {"sha256": {}}


def test_extend_order_and_arithmetic() -> None:
    d1, d2 = hashlib.sha1(b"a").digest(), hashlib.sha1(b"b").digest()
    log = EventLog(
        "sha1",
        None,
        None,
        [Event(5, EV_IPL, {"sha1": d1}, b""), Event(5, EV_SEPARATOR, {"sha1": d2}, b"")],
    )
    want = hashlib.sha1(hashlib.sha1(bytes(20) + d1).digest() + d2).digest()
    assert replay(log) == {"sha1": {5: want}}


def test_an_event_missing_a_bank_does_not_extend_that_bank() -> None:
    d = hashlib.sha1(b"a").digest()
    log = _agile([Event(4, EV_IPL, {"sha1": d}, b"")], banks=((4, 20), (0x0B, 32)))
    assert replay(log) == {"sha1": {4: hashlib.sha1(bytes(20) + d).digest()}, "sha256": {}}


def test_reset_values() -> None:
    assert reset_value(0, SHA1) == bytes(20)
    assert reset_value(16, SHA256) == bytes(32)
    assert reset_value(17, SHA1) == b"\xff" * 20
    assert reset_value(22, SHA256) == b"\xff" * 32
    assert reset_value(23, SHA1) == bytes(20)


# --- compare -------------------------------------------------------------------

A, B = b"\xaa" * 20, b"\xbb" * 20


def test_compare_names_every_difference_with_both_values() -> None:
    replayed: PcrValues = {"sha1": {4: A, 5: A}, "sha256": {4: b"\x01" * 32}}
    expected: PcrValues = {"sha256": {4: b"\x02" * 32}, "sha1": {5: B, 4: A}}
    assert compare(replayed, expected) == [
        Mismatch("sha256", 4, b"\x01" * 32, b"\x02" * 32),
        Mismatch("sha1", 5, A, B),
    ]


def test_compare_judges_only_the_expected_pcrs() -> None:
    # The log extends 4 and 5; the expectation names 5 only: a selection is fine.
    assert compare({"sha1": {4: A, 5: B}}, {"sha1": {5: B}}) == []


def test_compare_an_expected_pcr_the_log_never_extends() -> None:
    replayed: PcrValues = {"sha1": {4: A}}
    assert compare(replayed, {"sha1": {7: bytes(20), 18: b"\xff" * 20}}) == []
    assert compare(replayed, {"sha1": {7: B}}) == [Mismatch("sha1", 7, bytes(20), B)]
    assert compare(replayed, {"sha1": {18: bytes(20)}}) == [
        Mismatch("sha1", 18, b"\xff" * 20, bytes(20))
    ]


def test_compare_a_bank_the_log_lacks() -> None:
    missing = compare({"sha1": {4: A}}, {"sha256": {4: bytes(32), 5: bytes(32)}})
    assert missing == [
        Mismatch("sha256", 4, None, bytes(32)),
        Mismatch("sha256", 5, None, bytes(32)),
    ]
    assert missing[0].describe() == (
        "sha256 PCR 4: the log has no sha256 digests, expected " + "00" * 32
    )


def test_mismatch_describe() -> None:
    assert Mismatch("sha1", 5, A, B).describe() == (
        f"sha1 PCR 5: log replays to {A.hex()}, expected {B.hex()}"
    )
