"""Event logs this project makes, against a real TPM and tpm2-tools.

`make test`'s coverage of what the conformance suite checks on third-party logs
(tpm2-tools' and go-attestation's): a real swtpm is extended with
``tpm2_pcrextend`` (or, for H-CRTM and DRTM, with ``swtpm_ioctl -h``), our
builder or a hand-made record list writes the log of those extends, and
``tpm2_eventlog``'s reading and replay of the file, ``tpm2_pcrread``'s values
from the TPM and our codec and replay must all agree.  Digests are computed
with hashlib; nothing expected comes from pvgrub-py's own TPM or log code.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swtpm_tools import needs_tools, tools_tpm
from tpm2_eventlog_yaml import events_and_pcrs

from pvgrub_py.errors import InputError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import parse, serialise, spec_id_header_event
from pvgrub_py.eventlog.records import (
    EV_NO_ACTION,
    EV_S_CRTM_CONTENTS,
    STARTUP_LOCALITY_SIGNATURE,
    Event,
    EventLog,
    SpecIdEvent,
    event_type_name,
)
from pvgrub_py.eventlog.replay import replay
from pvgrub_py.measure.plan import Measurement, What
from pvgrub_py.tpm.algorithms import SHA1, SHA256, SHA384, HashAlgorithm

TPM2_EVENTLOG = shutil.which("tpm2_eventlog")
needs_eventlog = pytest.mark.skipif(TPM2_EVENTLOG is None, reason="tpm2_eventlog not installed")

KERNEL = b"\x7fELF a kernel image" * 100
INITRD = b"070701 an initrd" * 50
CMDLINE = "root=/dev/xvda1 ro console=hvc0 quiet"


def measurement(pcr: int, what: What, source: str | None, content: bytes) -> Measurement:
    digests = {name: hashlib.new(name, content).digest() for name in ("sha1", "sha256", "sha384")}
    return Measurement(pcr, what, source, digests, len(content))


def pv_grub_boot(initrd: bytes | None = INITRD) -> list[Measurement]:
    return [
        measurement(4, "kernel", "/boot/vmlinuz-6.1.0-28-amd64", KERNEL),
        measurement(5, "cmdline", CMDLINE, CMDLINE.encode()),
        measurement(5, "initrd", None if initrd is None else "/boot/initrd.img", initrd or b""),
    ]


def hand_pcrs(ms: list[Measurement], banks: tuple[str, ...]) -> dict[str, dict[int, bytes]]:
    """PCR = H(PCR || digest), from zero, in plain hashlib."""
    out: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        size = hashlib.new(bank).digest_size
        values: dict[int, bytes] = {}
        for m in ms:
            old = values.get(m.pcr, bytes(size))
            values[m.pcr] = hashlib.new(bank, old + m.digests[bank]).digest()
        out[bank] = values
    return out


def tpm2_eventlog(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[int, bytes]]]:
    """tpm2_eventlog's events (pcr, type, digests, size) and its ``pcrs:`` replay, as text."""
    assert TPM2_EVENTLOG is not None
    out = subprocess.run(
        [TPM2_EVENTLOG, str(path)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return events_and_pcrs(out)


def assert_same_events(path: Path) -> dict[str, dict[int, bytes]]:
    """tpm2_eventlog reads every event of the file as we do; its replay, returned."""
    log = parse(path.read_bytes(), str(path))
    events, pcrs = tpm2_eventlog(path)
    ours = ([log.header_event] if log.header_event else []) + log.events
    assert len(events) == len(ours)
    for num, (event, want) in enumerate(zip(ours, events, strict=True)):
        assert event.pcr == want["pcr"], num
        assert event_type_name(event.event_type) == want["type"], num
        assert {b: d.hex() for b, d in event.digests.items()} == want["digests"], num
        assert len(event.data) == want["size"], num
    return pcrs


def assert_tpm2_eventlog_reads_it_as_we_do(path: Path) -> dict[str, dict[int, bytes]]:
    """The same events, and the same replayed PCRs."""
    pcrs = assert_same_events(path)
    log = parse(path.read_bytes(), str(path))
    replayed = {b: v for b, v in replay(log).items() if v}
    assert pcrs == replayed
    return replayed


def extend_with_tpm2_tools(tpm: Any, ms: list[Measurement], banks: tuple[str, ...]) -> None:
    for m in ms:
        values = ",".join(f"{b}={m.digests[b].hex()}" for b in banks)
        tpm.tool("tpm2_pcrextend", f"{m.pcr}:{values}")


def selection(banks: tuple[str, ...], pcrs: list[int]) -> str:
    return "+".join(f"{b}:{','.join(map(str, pcrs))}" for b in banks)


BANK_SETS: list[tuple[HashAlgorithm, ...]] = [(SHA1, SHA256), (SHA256,), (SHA256, SHA1)]


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@needs_eventlog
@pytest.mark.parametrize("banks", BANK_SETS, ids=lambda b: "+".join(a.name for a in b))
@pytest.mark.parametrize("initrd", [INITRD, None], ids=["initrd", "no-initrd"])
def test_our_log_of_a_real_tpm_boot_is_what_the_tpm_and_tpm2_eventlog_say(
    tmp_path: Path, banks: tuple[HashAlgorithm, ...], initrd: bytes | None
) -> None:
    names = tuple(a.name for a in banks)
    ms = pv_grub_boot(initrd)
    with tools_tpm() as tpm:
        extend_with_tpm2_tools(tpm, ms, names)
        from_tpm = tpm.pcrread(selection(names, [4, 5]))
    path = tmp_path / "guest.eventlog"
    write_atomic(str(path), serialise(log_for_measurements(ms, banks, tpm2=True)))
    replayed = assert_tpm2_eventlog_reads_it_as_we_do(path)
    assert replayed == from_tpm == hand_pcrs(ms, names)


@pytest.mark.integration
@needs_eventlog
def test_tpm12_sha1_log_is_read_by_tpm2_eventlog(tmp_path: Path) -> None:
    ms = pv_grub_boot()
    path = tmp_path / "guest.eventlog"
    write_atomic(str(path), serialise(log_for_measurements(ms, (SHA1,), tpm2=False)))
    assert assert_tpm2_eventlog_reads_it_as_we_do(path) == hand_pcrs(ms, ("sha1",))


def _agile(events: list[Event], banks: tuple[HashAlgorithm, ...] = (SHA256,)) -> EventLog:
    spec = SpecIdEvent(0, 0, 2, 0, 2, tuple((a.alg_id, a.digest_size) for a in banks))
    return EventLog("crypto-agile", spec, spec_id_header_event(spec), events)


def _locality(n: int, banks: tuple[HashAlgorithm, ...] = (SHA256,)) -> Event:
    zero = {a.name: bytes(a.digest_size) for a in banks}
    return Event(0, EV_NO_ACTION, zero, STARTUP_LOCALITY_SIGNATURE + bytes([n]))


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@needs_eventlog
def test_h_crtm_and_drtm_replay_like_a_real_tpm(tmp_path: Path) -> None:
    """_TPM_Hash_Start/Data/End before TPM2_Startup (H-CRTM: PCR 0 starts at locality 4)
    and after it (DRTM: PCR 17 reset to zero, then extended), done by swtpm itself."""
    data = b"1234"
    with tools_tpm(startup=False) as tpm:
        tpm.ioctl("-h", data.decode())
        tpm.tool("tpm2_startup", "-c")
        tpm.ioctl("-h", data.decode())
        from_tpm = tpm.pcrread("sha1:0,17+sha256:0,17")
    banks = (SHA1, SHA256)
    digests = {a.name: hashlib.new(a.name, data).digest() for a in banks}
    blob = struct.pack("<QQ", 0xFFFC0000, len(data))  # UEFI_PLATFORM_FIRMWARE_BLOB
    log = _agile(
        [_locality(4, banks), Event(0, EV_S_CRTM_CONTENTS, digests, blob),
         Event(17, EV_S_CRTM_CONTENTS, digests, blob)],
        banks,
    )  # fmt: skip
    assert replay(log) == from_tpm
    # And the rule, by hand: H-CRTM starts PCR 0 at 00..04; DRTM starts PCR 17 at zero.
    sha256 = hashlib.sha256
    assert from_tpm["sha256"][0] == sha256(bytes(31) + b"\x04" + sha256(data).digest()).digest()
    assert from_tpm["sha256"][17] == sha256(bytes(32) + sha256(data).digest()).digest()
    path = tmp_path / "hcrtm.eventlog"
    path.write_bytes(serialise(log))
    # tpm2_eventlog (Debian's 5.4) reads every event as we do, and replays PCR 17 as the
    # TPM has it; its replay ignores the StartupLocality event, so not PCR 0.
    _events, theirs = tpm2_eventlog(path)
    assert_same_events(path)
    assert {b: v[17] for b, v in theirs.items()} == {b: v[17] for b, v in from_tpm.items()}


def test_startup_locality_3_starts_pcr0_at_3() -> None:
    log = _agile([_locality(3, (SHA1,))], (SHA1,))
    assert replay(parse(serialise(log), "short")) == {"sha1": {0: bytes(19) + b"\x03"}}


# --- round trips and hostile mutations of our own logs -------------------------------


def own_logs() -> list[bytes]:
    """Logs as this project writes them, plus hand-made records of other shapes."""
    out = [
        serialise(log_for_measurements(pv_grub_boot(initrd), banks, tpm2=tpm2))
        for initrd in (INITRD, None)
        for tpm2, banks in [(False, (SHA1,)), (True, (SHA1, SHA256)), (True, (SHA256, SHA384))]
    ]
    spec = SpecIdEvent(1, 0, 2, 0, 2, ((SHA256.alg_id, 32),), vendor_info=b"vendor")
    out.append(
        serialise(
            EventLog(
                "crypto-agile",
                spec,
                spec_id_header_event(spec),
                [
                    _locality(3),
                    Event(7, 0x800000E0, {"sha256": bytes(range(32))}, b"efi-ish data"),
                ],
            )
        )
    )
    return out


OWN_LOGS = own_logs()


@pytest.mark.parametrize("data", OWN_LOGS, ids=range(len(OWN_LOGS)))
def test_own_log_round_trip_is_byte_exact(data: bytes) -> None:
    log = parse(data, "own")
    assert log.quirks == []
    assert serialise(log) == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.sampled_from(OWN_LOGS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
    wide=st.one_of(
        st.none(), st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 0xFFFFFFFF))
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_own_logs_only_ever_raise_input_error(
    data: bytes,
    edits: list[tuple[float, int]],
    wide: tuple[float, int] | None,
    cut: float | None,
) -> None:
    buf = bytearray(data)
    for where, value in edits:
        buf[int(where * len(buf))] = value
    if wide is not None:  # a 32-bit length or count, the likeliest to hurt
        at = min(int(wide[0] * len(buf)), len(buf) - 4)
        buf[at : at + 4] = struct.pack("<I", wide[1])
    if cut is not None:
        del buf[int(cut * len(buf)) :]
    try:
        log = parse(bytes(buf), "fuzz")
    except InputError as exc:
        assert "\n" not in str(exc) and " at offset " in str(exc)
        return
    replay(log)
    if not log.quirks:
        assert serialise(log) == bytes(buf)
