"""pvgrub_py.eventlog.codec: real logs, exact round trips, hostile bytes."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_eventlog_yaml import events_and_pcrs

from pvgrub_py.errors import InputError
from pvgrub_py.eventlog import codec
from pvgrub_py.eventlog.codec import parse, serialise, spec_id_header_event
from pvgrub_py.eventlog.records import (
    EV_IPL,
    EV_NO_ACTION,
    SPEC_ID_SIGNATURE,
    Event,
    EventLog,
    SpecIdEvent,
    bank_alg_id,
    bank_name,
    event_type_name,
)
from pvgrub_py.eventlog.render import format_text, json_document
from pvgrub_py.eventlog.replay import replay
from pvgrub_py.tpm.algorithms import ALGORITHMS

#: tpm2-tools' fixtures (with tpm2_eventlog's YAML), then go-attestation's.
TPM2_TOOLS_LOGS = (
    "event-arch-linux.bin",
    "event-gce-ubuntu-2104-log.bin",
    "event-sd-boot-fedora37.bin",
    "event-uefi-sha1-log.bin",
    "event.bin",
    "specid-vendordata.bin",
)
GO_ATTESTATION_LOGS = (
    "go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog",
    "go-attestation/crypto_agile_eventlog",
    "go-attestation/short_no_action_eventlog",
    "go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    "go-attestation/windows_gcp_shielded_vm.bin",
)
ALL_LOGS = TPM2_TOOLS_LOGS + GO_ATTESTATION_LOGS
#: The one fixture that is not well-formed: its SpecID event's EventSize (37)
#: leaves its 4 vendorInfo bytes outside the event (tpm2-tools' fixture).
MALFORMED = "specid-vendordata.bin"
WELL_FORMED = tuple(name for name in ALL_LOGS if name != MALFORMED)

FORMATS = {
    "event-uefi-sha1-log.bin": "sha1",
    "go-attestation/short_no_action_eventlog": "sha1",
    "go-attestation/windows_gcp_shielded_vm.bin": "sha1",
}


@pytest.fixture(scope="module")
def logs_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "eventlog"


def read(logs_dir: Path, name: str) -> bytes:
    return (logs_dir / name).read_bytes()


@pytest.mark.conformance
def test_fixture_list_is_complete(logs_dir: Path) -> None:
    on_disk = {p.name for p in logs_dir.glob("*.bin")}
    on_disk |= {
        f"go-attestation/{p.name}"
        for p in (logs_dir / "go-attestation").iterdir()
        if not p.name.endswith(".json")
    }
    assert on_disk == set(ALL_LOGS)


@pytest.mark.conformance
@pytest.mark.parametrize("name", ALL_LOGS)
def test_fixture_parses_in_its_format(logs_dir: Path, name: str) -> None:
    log = parse(read(logs_dir, name), name)
    assert log.format == FORMATS.get(name, "crypto-agile")
    if log.format == "crypto-agile":
        assert log.spec_id is not None and log.header_event is not None
        assert log.header_event.event_type == EV_NO_ACTION
    else:
        assert log.spec_id is None and log.header_event is None
    assert bool(log.quirks) == (name == MALFORMED)


@pytest.mark.conformance
@pytest.mark.parametrize("name", WELL_FORMED)
def test_round_trip_is_byte_exact(logs_dir: Path, name: str) -> None:
    data = read(logs_dir, name)
    log = parse(data, name)
    assert log.quirks == []
    assert serialise(log) == data


@pytest.mark.conformance
def test_specid_vendordata_quirk_is_read_like_tpm2_tools_and_normalised(logs_dir: Path) -> None:
    data = read(logs_dir, MALFORMED)
    log = parse(data, MALFORMED)
    assert log.spec_id is not None
    assert log.spec_id.vendor_info == bytes.fromhex("deadbeef")
    assert log.spec_id.bank_names == ("sha1", "sha256")
    assert log.events == []
    assert len(log.quirks) == 1 and "eventSize 37" in log.quirks[0]
    # We write the eventSize that covers the vendorInfo (37 + 4 = 41) and
    # nothing else changes; the fixed log parses without a quirk.
    fixed = serialise(log)
    assert fixed == data[:28] + struct.pack("<I", 41) + data[32:]
    again = parse(fixed, "fixed")
    assert again.quirks == [] and again.spec_id == log.spec_id


def _yaml_events(text: str) -> list[dict[str, Any]]:
    """The events of tpm2_eventlog's YAML."""
    return events_and_pcrs(text)[0]


@pytest.mark.conformance
@pytest.mark.parametrize("name", TPM2_TOOLS_LOGS)
def test_events_agree_with_tpm2_eventlog_yaml(logs_dir: Path, name: str) -> None:
    log = parse(read(logs_dir, name), name)
    ours = ([log.header_event] if log.header_event else []) + log.events
    theirs = _yaml_events((logs_dir / f"{name}.yaml").read_text())
    assert len(ours) == len(theirs)
    for num, (event, want) in enumerate(zip(ours, theirs, strict=True)):
        assert event.pcr == want["pcr"], num
        assert event_type_name(event.event_type) == want["type"], num
        assert {b: d.hex() for b, d in event.digests.items()} == want["digests"], num
        if not (name == MALFORMED and num == 0):
            assert len(event.data) == want["size"], num


@pytest.mark.conformance
def test_event_data_is_kept_verbatim(logs_dir: Path) -> None:
    log = parse(read(logs_dir, "event-sd-boot-fedora37.bin"), "fedora")
    actions = [e.data for e in log.events if e.type_name == "EV_EFI_ACTION"]
    assert b"Exit Boot Services Invocation" in actions


def test_empty_input_is_an_empty_sha1_log() -> None:
    log = parse(b"", "empty")
    assert log == EventLog(format="sha1", spec_id=None, header_event=None, events=[])
    assert serialise(log) == b""


# --- malformed input: one InputError line naming the field and the offset ---

SPEC_SHA256 = SpecIdEvent(0, 0, 2, 0, 2, ((0x000B, 32),))


def _agile(spec: SpecIdEvent = SPEC_SHA256, tail: bytes = b"") -> bytes:
    return serialise(EventLog("crypto-agile", spec, None, [])) + tail


def _event2(pcr: int, digests: list[tuple[int, bytes]], data: bytes = b"") -> bytes:
    body = struct.pack("<III", pcr, EV_IPL, len(digests))
    body += b"".join(struct.pack("<H", alg) + d for alg, d in digests)
    return body + struct.pack("<I", len(data)) + data


def _specid_raw(fields: bytes, size: int | None = None) -> bytes:
    size = len(fields) if size is None else size
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), size) + fields


def _spec_fields(
    algs: list[tuple[int, int]], vendor: bytes = b"", count: int | None = None
) -> bytes:
    n = len(algs) if count is None else count
    out = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, n)
    out += b"".join(struct.pack("<HH", a, s) for a, s in algs)
    return out + bytes([len(vendor)]) + vendor


BAD_LOGS: list[tuple[str, bytes, str, int]] = [
    # (case, bytes, words the message must hold, offset it must name)
    ("sha1 short header", struct.pack("<II", 4, EV_IPL), "event 0 header", 0),
    (
        "sha1 eventSize past end",
        struct.pack("<II20sI", 4, EV_IPL, bytes(20), 1000) + b"abc",
        "event 0 eventSize 1000",
        28,
    ),
    (
        "sha1 second event truncated",
        struct.pack("<II20sI", 4, EV_IPL, bytes(20), 0) + b"\x05\x00",
        "event 1 header",
        32,
    ),
    (
        "specid pcrIndex",
        struct.pack("<II20sI", 1, EV_NO_ACTION, bytes(20), 16) + SPEC_ID_SIGNATURE,
        "pcrIndex is 1",
        0,
    ),
    (
        "specid digest",
        struct.pack("<II20sI", 0, EV_NO_ACTION, b"\x01" * 20, 16) + SPEC_ID_SIGNATURE,
        "digest is not 20 zero bytes",
        8,
    ),
    ("specid too short", _specid_raw(SPEC_ID_SIGNATURE), "SpecID header", 32),
    ("specid no algorithms", _specid_raw(_spec_fields([])), "numberOfAlgorithms is 0", 56),
    (
        "specid huge algorithm count",
        _specid_raw(_spec_fields([(0x0B, 32)], count=0x7FFFFFFF)),
        "numberOfAlgorithms 2147483647",
        56,
    ),
    (
        "specid wrong sha256 size",
        _specid_raw(_spec_fields([(0x0B, 20)])),
        "sha256 digestSize 20",
        60,
    ),
    ("specid zero digest size", _specid_raw(_spec_fields([(0x99, 0)])), "digestSize 0", 60),
    (
        "specid duplicate algorithm",
        _specid_raw(_spec_fields([(0x0B, 32), (0x0B, 32)])),
        "sha256 twice",
        64,
    ),
    (
        "specid trailing bytes",
        _specid_raw(_spec_fields([(0x0B, 32)]) + b"xx"),
        "2 bytes after its vendorInfo",
        65,
    ),
    (
        "specid vendorInfo past the log",
        _specid_raw(_spec_fields([(0x0B, 32)], vendor=b"abcd")[:-4]),
        "SpecID vendorInfo",
        65,
    ),
    (
        "specid eventSize past end",
        _specid_raw(_spec_fields([(0x0B, 32)]), size=500),
        "SpecID event eventSize 500",
        28,
    ),
    (
        "event2 digest count",
        _agile(tail=struct.pack("<III", 4, EV_IPL, 0xFFFFFFFF)),
        "event 1 digest count 4294967295",
        65 + 8,
    ),
    (
        "event2 unknown algorithm",
        _agile(tail=_event2(4, [(0x0099, b"")])),
        "hashAlg 0x0099",
        65 + 12,
    ),
    (
        "event2 duplicate digest",
        _agile(tail=_event2(4, [(0x0B, bytes(32)), (0x0B, bytes(32))])),
        "two sha256 digests",
        65 + 12 + 34,
    ),
    (
        "event2 truncated digest",
        _agile(tail=_event2(4, [(0x0B, bytes(32))])[:30]),
        "event 1 sha256 digest",
        65 + 14,
    ),
    (
        "event2 eventSize past end",
        _agile(tail=_event2(4, [(0x0B, bytes(32))], b"abc")[:-1]),
        "event 1 eventSize 3",
        65 + 46,
    ),
]


@pytest.mark.parametrize(
    ("case", "data", "words", "offset"), BAD_LOGS, ids=[c[0] for c in BAD_LOGS]
)
def test_malformed_logs_name_field_and_offset(
    case: str, data: bytes, words: str, offset: int
) -> None:
    with pytest.raises(InputError) as info:
        parse(data, "bad.log")
    message = str(info.value)
    assert message.startswith("bad.log: ")
    assert words in message
    assert message.endswith(f"at offset {offset} (0x{offset:x})")
    assert "\n" not in message


def test_an_algorithm_only_the_specid_knows_still_parses() -> None:
    spec = SpecIdEvent(0, 0, 2, 0, 2, ((0x0B, 32), (0x1234, 7)))
    data = _agile(spec, _event2(4, [(0x0B, bytes(32)), (0x1234, b"1234567")], b"x"))
    log = parse(data, "x")
    assert log.events[0].digests == {"sha256": bytes(32), "0x1234": b"1234567"}
    assert serialise(log) == data
    assert set(replay(log)) == {"sha256"}  # hashlib cannot replay 0x1234


def test_a_known_algorithm_missing_from_the_specid_falls_back_to_the_registry() -> None:
    data = _agile(tail=_event2(4, [(0x0B, bytes(32)), (0x0004, bytes(20))]))
    assert parse(data, "x").events[0].digests["sha1"] == bytes(20)


def test_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_LOG_BYTES", 100)
    with pytest.raises(InputError, match="101 bytes exceeds"):
        parse(bytes(101), "big")


def test_event_count_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_EVENTS", 3)
    one = struct.pack("<II20sI", 4, EV_IPL, bytes(20), 0)
    assert len(parse(one * 3, "ok").events) == 3
    with pytest.raises(InputError, match=r"more than 3 events .* at offset 96 "):
        parse(one * 4, "many")


def test_serialise_refuses_logs_no_parser_could_read() -> None:
    sha1 = Event(4, EV_IPL, {"sha1": bytes(20)}, b"")
    with pytest.raises(ValueError, match="one 20-byte sha1"):
        serialise(EventLog("sha1", None, None, [Event(4, EV_IPL, {"sha256": bytes(32)}, b"")]))
    with pytest.raises(ValueError, match="out of range"):
        serialise(EventLog("sha1", None, None, [Event(-1, EV_IPL, {"sha1": bytes(20)}, b"")]))
    with pytest.raises(ValueError, match="needs a SpecID"):
        serialise(EventLog("crypto-agile", None, None, [sha1]))
    with pytest.raises(ValueError, match="not 32"):
        serialise(EventLog("crypto-agile", SPEC_SHA256, None, [Event(4, 0, {"sha256": b"x"}, b"")]))
    with pytest.raises(ValueError, match="no known digest size"):
        serialise(EventLog("crypto-agile", SPEC_SHA256, None, [Event(4, 0, {"md5": b"x"}, b"")]))
    wrong_header = Event(0, EV_NO_ACTION, {"sha1": bytes(20)}, b"other")
    with pytest.raises(ValueError, match="disagrees"):
        serialise(EventLog("crypto-agile", SPEC_SHA256, wrong_header, []))


def test_bank_names_round_trip() -> None:
    for alg in ALGORITHMS:
        assert bank_alg_id(bank_name(alg.alg_id)) == alg.alg_id
    assert bank_name(0x0099) == "0x0099" and bank_alg_id("0x0099") == 0x0099
    assert bank_alg_id("md5") is None


# --- property tests -----------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
event_data = st.binary(max_size=64)


@st.composite
def sha1_logs(draw: st.DrawFn) -> EventLog:
    events = draw(
        st.lists(
            st.builds(
                Event,
                pcr=u32,
                event_type=u32,
                digests=st.binary(min_size=20, max_size=20).map(lambda d: {"sha1": d}),
                data=event_data,
            ),
            max_size=8,
        )
    )
    # A SHA-1 log opening with what looks like a SpecID event is a
    # crypto-agile log: the format has no other marker (PFP §9.4.5.1).
    if events and events[0].event_type == EV_NO_ACTION:
        events[0] = Event(events[0].pcr, EV_IPL, events[0].digests, events[0].data)
    return EventLog("sha1", None, None, events)


@st.composite
def agile_logs(draw: st.DrawFn) -> EventLog:
    known = draw(st.lists(st.sampled_from(ALGORITHMS), min_size=1, unique=True))
    algs = [(a.alg_id, a.digest_size) for a in known]
    if draw(st.booleans()):
        algs.append((draw(st.integers(0x0100, 0xFFFF)), draw(st.integers(1, 80))))
    spec = SpecIdEvent(
        platform_class=draw(u32),
        spec_version_minor=draw(st.integers(0, 255)),
        spec_version_major=draw(st.integers(0, 255)),
        spec_errata=draw(st.integers(0, 255)),
        uintn_size=draw(st.integers(0, 255)),
        algorithms=tuple(algs),
        vendor_info=draw(st.binary(max_size=255)),
    )
    events = []
    for _ in range(draw(st.integers(0, 6))):
        order = draw(st.permutations(algs))
        keep = draw(st.integers(0, len(order)))
        digests = {
            bank_name(alg_id): draw(st.binary(min_size=size, max_size=size))
            for alg_id, size in order[:keep]
        }
        events.append(Event(draw(u32), draw(u32), digests, draw(event_data)))
    return EventLog("crypto-agile", spec, spec_id_header_event(spec), events)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(sha1_logs(), agile_logs()))
def test_random_logs_round_trip(log: EventLog) -> None:
    data = serialise(log)
    assert parse(data, "generated") == log
    assert serialise(parse(data, "generated")) == data


def _parse_hostile(data: bytes) -> None:
    """Parse must end fast in an EventLog or an InputError, and what it accepts
    must survive replay, rendering and a byte-exact re-serialisation."""
    start = time.monotonic()
    try:
        log = parse(data, "fuzz")
    except InputError as e:
        assert "\n" not in str(e) and " at offset " in str(e)
        return
    finally:
        assert time.monotonic() - start < 1.0
    pcrs = replay(log)
    format_text(log, pcrs)
    json.dumps(json_document(log, pcrs))
    if not log.quirks:
        assert serialise(log) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_input_error(data: bytes) -> None:
    _parse_hostile(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([_agile(), _agile(SpecIdEvent(0, 0, 2, 0, 2, ((4, 20), (0x0B, 32))))]),
       st.binary(max_size=300))  # fmt: skip
def test_random_records_after_a_valid_specid_only_ever_raise_input_error(
    head: bytes, tail: bytes
) -> None:
    _parse_hostile(head + tail)


@pytest.mark.conformance
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(ALL_LOGS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    wide=st.one_of(st.none(), st.tuples(st.floats(0, 1, exclude_max=True), u32)),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_fixtures_only_ever_raise_input_error(
    logs_dir: Path,
    name: str,
    edits: list[tuple[float, int]],
    wide: tuple[float, int] | None,
    cut: float | None,
) -> None:
    data = bytearray(read(logs_dir, name))
    for where, value in edits:
        data[int(where * len(data))] = value
    if wide is not None:  # a 32-bit length or count, the likeliest to hurt
        at = min(int(wide[0] * len(data)), len(data) - 4)
        data[at : at + 4] = struct.pack("<I", wide[1])
    if cut is not None:
        del data[int(cut * len(data)) :]
    _parse_hostile(bytes(data))
