"""The two TCG event-log wire formats: bytes in, `EventLog` out, and back.

Layouts (all integers little-endian, unlike TPM commands, because the log is
written by firmware for the host CPU):

* TCG_PCR_EVENT (TCG EFI Protocol Specification rev 13 §5.1; the only record
  of a TCG 1.2 log): pcrIndex u32, eventType u32, digest[20] (SHA-1),
  eventSize u32, event[eventSize].
* TCG_PCR_EVENT2 (same specification §5.2): pcrIndex u32, eventType u32,
  TPML_DIGEST_VALUES (count u32, then count x (hashAlg u16,
  digest[size of hashAlg])), eventSize u32, event[eventSize].
* A crypto-agile log is one TCG_PCR_EVENT (PCR 0, EV_NO_ACTION, zero digest)
  whose data is TCG_EfiSpecIDEventStruct (PFP 1.04 §9.4.5.1): signature[16]
  "Spec ID Event03\\0", platformClass u32, specVersionMinor u8,
  specVersionMajor u8, specErrata u8, uintnSize u8, numberOfAlgorithms u32,
  numberOfAlgorithms x (algorithmId u16, digestSize u16), vendorInfoSize u8,
  vendorInfo[vendorInfoSize]; then TCG_PCR_EVENT2 records.

The format is told from the first record, as PFP 1.04 §9.4.5.1 prescribes:
a first record that is EV_NO_ACTION and whose data opens with the SpecID
signature makes the log crypto-agile; anything else is a SHA-1 log.

`parse` reads bytes an attacker may control (a guest's disk, a file handed
to ``pvgrubctl``).  It never trusts a length before checking it against the
bytes left, caps the input at `MAX_LOG_BYTES` and the record count at
`MAX_EVENTS`, runs in time linear in the input, and reports every defect as
one `InputError` line naming the field and its byte offset.
"""

from __future__ import annotations

import struct

from pvgrub_py.bytecursor import ByteCursor
from pvgrub_py.errors import InputError
from pvgrub_py.eventlog.records import (
    EV_NO_ACTION,
    SPEC_ID_SIGNATURE,
    Event,
    EventLog,
    SpecIdEvent,
    bank_alg_id,
    bank_name,
)
from pvgrub_py.tpm.algorithms import BY_ID

#: Far above any firmware log (the ACPI TPM2/TCPA log areas are 64 KiB to a
#: few MiB) yet small enough to hold in memory without a second thought.
MAX_LOG_BYTES = 64 * 1024 * 1024
#: Far above the few hundred records of a real boot; bounds the list we build.
MAX_EVENTS = 1 << 20

SHA1_DIGEST_SIZE = 20
_PCR_EVENT_HEAD = struct.Struct("<II20sI")  # TCG_PCR_EVENT up to eventSize
_PCR_EVENT2_HEAD = struct.Struct("<III")  # pcrIndex, eventType, digest count
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SPEC_ID_HEAD = struct.Struct("<16sIBBBBI")  # up to numberOfAlgorithms
_ALG_SIZE = struct.Struct("<HH")


class _Reader(ByteCursor[bytes]):
    """The shared cursor (little-endian), with errors that name the log and the offset."""

    __slots__ = ("source",)

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(data, "little", self._short)
        self.source = source

    def fail(self, problem: str, offset: int | None = None) -> InputError:
        at = self.pos if offset is None else offset
        return InputError(self.source, f"{problem} at offset {at} (0x{at:x})")

    def _short(self, what: str, at: int, need: int, left: int) -> InputError:
        return self.fail(f"{what}: needs {need} bytes, only {left} left", at)


def parse(data: bytes, source: str) -> EventLog:
    """Decode a TCG event log (either format) from ``data``.

    ``source`` names the input in errors (a path, "stdin", "guest log").

    Zero bytes decode as an empty SHA-1 log: the TCG 1.2 format has no
    header, so an empty log is well-formed (a verifier then finds every
    expected PCR at its reset value and reports the mismatches).

    Quirk accepted (and listed in `EventLog.quirks`): a SpecID event whose
    eventSize stops before its vendorInfo, with the vendorInfo bytes
    following the record (tpm2-tools' specid-vendordata.bin).  tpm2-tools
    reads those bytes as the vendorInfo and goes on after them; we do the
    same, so both tools see the same log and the same (empty) PCR set.  The
    defect is not reproduced: `serialise` writes the eventSize that covers
    the vendorInfo.
    """
    if len(data) > MAX_LOG_BYTES:
        raise InputError(
            source, f"{len(data)} bytes exceeds the {MAX_LOG_BYTES >> 20} MiB event log cap"
        )
    r = _Reader(bytes(data), source)
    if _starts_crypto_agile(r.data):
        return _parse_crypto_agile(r)
    return _parse_sha1(r)


def _starts_crypto_agile(data: bytes) -> bool:
    head = _PCR_EVENT_HEAD.size
    sig_end = head + len(SPEC_ID_SIGNATURE)
    if len(data) < sig_end:
        return False
    event_type = int.from_bytes(data[4:8], "little")
    return event_type == EV_NO_ACTION and data[head:sig_end] == SPEC_ID_SIGNATURE


def _check_count(r: _Reader, events: list[Event]) -> None:
    if len(events) >= MAX_EVENTS:
        raise r.fail(f"more than {MAX_EVENTS} events (the cap)")


def _parse_sha1(r: _Reader) -> EventLog:
    events: list[Event] = []
    while r.pos < len(r.data):
        _check_count(r, events)
        events.append(_read_pcr_event(r, len(events)))
    return EventLog(format="sha1", spec_id=None, header_event=None, events=events)


def _read_pcr_event(r: _Reader, index: int) -> Event:
    """One TCG_PCR_EVENT (TCG EFI Protocol Specification §5.1)."""
    data, pos = r.data, r.pos
    if len(data) - pos < _PCR_EVENT_HEAD.size:
        raise r.fail(
            f"event {index} header: needs {_PCR_EVENT_HEAD.size} bytes, only {r.left} left"
        )
    pcr, event_type, digest, size = _PCR_EVENT_HEAD.unpack_from(data, pos)
    r.pos = pos + _PCR_EVENT_HEAD.size
    return Event(pcr, event_type, {"sha1": digest}, _read_data(r, index, size))


def _read_data(r: _Reader, index: int, size: int) -> bytes:
    """The event[eventSize] that ends every record; r.pos is just past eventSize."""
    start = r.pos
    end = start + size
    if end > len(r.data):
        raise r.fail(
            f"event {index} eventSize {size} runs past the end of the log ({r.left} bytes left)",
            start - 4,
        )
    r.pos = end
    return r.data[start:end]


def _parse_crypto_agile(r: _Reader) -> EventLog:
    quirks: list[str] = []
    pcr = r.u32("SpecID event pcrIndex")
    if pcr != 0:
        raise r.fail(f"SpecID event pcrIndex is {pcr}, PFP §9.4.5.1 requires 0", 0)
    r.u32("SpecID event eventType")  # EV_NO_ACTION, or we would not be here
    if r.take(SHA1_DIGEST_SIZE, "SpecID event digest") != bytes(SHA1_DIGEST_SIZE):
        raise r.fail("SpecID event digest is not 20 zero bytes (PFP §9.4.5.1)", 8)
    size = r.u32("SpecID event eventSize")
    if size > r.left:
        raise r.fail(
            f"SpecID event eventSize {size} runs past the end of the log ({r.left} bytes left)",
            r.pos - 4,
        )
    spec_id = _read_spec_id(r, size, quirks)
    sizes = _digest_sizes(spec_id)
    layout = {alg_id: (bank_name(alg_id), n) for alg_id, n in sizes.items()}
    events: list[Event] = []
    while r.pos < len(r.data):
        _check_count(r, events)
        events.append(_read_pcr_event2(r, len(events) + 1, layout))
    return EventLog(
        format="crypto-agile",
        spec_id=spec_id,
        header_event=spec_id_header_event(spec_id),
        events=events,
        quirks=quirks,
    )


def _read_spec_id(r: _Reader, size: int, quirks: list[str]) -> SpecIdEvent:
    """TCG_EfiSpecIDEventStruct (PFP 1.04 §9.4.5.1), ``size`` bytes at ``r.pos``."""
    end = r.pos + size

    def need(n: int, what: str) -> None:
        if r.pos + n > end:
            raise r.fail(f"SpecID {what} runs past the record's eventSize {size}")

    need(_SPEC_ID_HEAD.size, "header")
    r.take(len(SPEC_ID_SIGNATURE), "SpecID signature")  # checked by _starts_crypto_agile
    platform_class = r.u32("SpecID platformClass")
    minor = r.u8("SpecID specVersionMinor")
    major = r.u8("SpecID specVersionMajor")
    errata = r.u8("SpecID specErrata")
    uintn = r.u8("SpecID uintnSize")
    n_algs = r.u32("SpecID numberOfAlgorithms")
    if n_algs == 0:
        raise r.fail("SpecID numberOfAlgorithms is 0", r.pos - 4)
    if n_algs > (end - r.pos) // _ALG_SIZE.size:
        raise r.fail(
            f"SpecID numberOfAlgorithms {n_algs} does not fit in eventSize {size}", r.pos - 4
        )
    algorithms: list[tuple[int, int]] = []
    for _ in range(n_algs):
        at = r.pos
        alg_id = r.u16("SpecID algorithmId")
        digest_size = r.u16("SpecID digestSize")
        known = BY_ID.get(alg_id)
        if known is not None and known.digest_size != digest_size:
            raise r.fail(
                f"SpecID gives {known.name} digestSize {digest_size}, "
                f"the TCG registry says {known.digest_size}",
                at,
            )
        if digest_size == 0:
            raise r.fail(f"SpecID algorithm 0x{alg_id:04x} has digestSize 0", at)
        if any(alg_id == a for a, _ in algorithms):
            raise r.fail(f"SpecID lists algorithm {bank_name(alg_id)} twice", at)
        algorithms.append((alg_id, digest_size))
    need(1, "vendorInfoSize")
    vendor_size = r.u8("SpecID vendorInfoSize")
    inside = end - r.pos
    if vendor_size > inside:
        # The specid-vendordata.bin quirk: see parse().
        at = r.pos
        vendor_info = r.take(vendor_size, f"SpecID vendorInfo ({vendor_size} bytes)")
        quirks.append(
            f"SpecID eventSize {size} stops {vendor_size - inside} bytes short of its "
            f"{vendor_size}-byte vendorInfo at offset {at}; read the vendorInfo past the "
            "record, as tpm2-tools does"
        )
    else:
        vendor_info = r.take(vendor_size, "SpecID vendorInfo")
        if r.pos != end:
            raise r.fail(f"SpecID event has {end - r.pos} bytes after its vendorInfo")
    return SpecIdEvent(
        platform_class=platform_class,
        spec_version_minor=minor,
        spec_version_major=major,
        spec_errata=errata,
        uintn_size=uintn,
        algorithms=tuple(algorithms),
        vendor_info=vendor_info,
    )


def _digest_sizes(spec_id: SpecIdEvent) -> dict[int, int]:
    """Digest size per TPM_ALG_ID: SpecID first, the TCG registry table after.

    The SpecID event is what makes the format self-describing (PFP §9.4.5.1),
    so an algorithm unknown to us but declared there still parses; the
    registry fallback covers firmware that logs a bank it did not declare.
    """
    sizes = {alg.alg_id: alg.digest_size for alg in BY_ID.values()}
    sizes.update(dict(spec_id.algorithms))
    return sizes


def _read_pcr_event2(r: _Reader, index: int, layout: dict[int, tuple[str, int]]) -> Event:
    """One TCG_PCR_EVENT2 (TCG EFI Protocol Specification §5.2).

    ``layout`` maps TPM_ALG_ID to (bank name, digest size).  This is the hot
    loop of a large log, hence the direct unpack_from and the messages built
    only on failure.
    """
    data, pos = r.data, r.pos
    if len(data) - pos < _PCR_EVENT2_HEAD.size:
        raise r.fail(
            f"event {index} header: needs {_PCR_EVENT2_HEAD.size} bytes, only {r.left} left"
        )
    pcr, event_type, count = _PCR_EVENT2_HEAD.unpack_from(data, pos)
    pos += _PCR_EVENT2_HEAD.size
    if count > len(layout):
        raise r.fail(
            f"event {index} digest count {count} exceeds the {len(layout)} known algorithms",
            pos - 4,
        )
    digests: dict[str, bytes] = {}
    for _ in range(count):
        r.pos = pos
        if len(data) - pos < 2:
            raise r.fail(f"event {index} hashAlg: needs 2 bytes, only {r.left} left")
        (alg_id,) = _U16.unpack_from(data, pos)
        known = layout.get(alg_id)
        if known is None:
            raise r.fail(
                f"event {index} hashAlg 0x{alg_id:04x} is neither in the SpecID event "
                "nor a known TPM_ALG_ID"
            )
        name, digest_size = known
        if name in digests:
            raise r.fail(f"event {index} has two {name} digests")
        pos += 2
        r.pos = pos
        if len(data) - pos < digest_size:
            raise r.fail(
                f"event {index} {name} digest: needs {digest_size} bytes, only {r.left} left"
            )
        digests[name] = data[pos : pos + digest_size]
        pos += digest_size
    r.pos = pos
    if len(data) - pos < 4:
        raise r.fail(f"event {index} eventSize: needs 4 bytes, only {r.left} left")
    (size,) = _U32.unpack_from(data, pos)
    r.pos = pos + 4
    return Event(pcr, event_type, digests, _read_data(r, index, size))


def encode_spec_id(spec_id: SpecIdEvent) -> bytes:
    """TCG_EfiSpecIDEventStruct bytes for ``spec_id`` (PFP 1.04 §9.4.5.1)."""
    if not spec_id.algorithms:
        raise ValueError("a SpecID event must list at least one algorithm")
    if len(spec_id.vendor_info) > 0xFF:
        raise ValueError("SpecID vendorInfo is limited to 255 bytes (vendorInfoSize is a u8)")
    try:
        parts = [
            _SPEC_ID_HEAD.pack(
                SPEC_ID_SIGNATURE,
                spec_id.platform_class,
                spec_id.spec_version_minor,
                spec_id.spec_version_major,
                spec_id.spec_errata,
                spec_id.uintn_size,
                len(spec_id.algorithms),
            )
        ]
        parts += [_ALG_SIZE.pack(alg_id, size) for alg_id, size in spec_id.algorithms]
    except struct.error as e:
        raise ValueError(f"SpecID field out of range: {e}") from e
    parts.append(bytes([len(spec_id.vendor_info)]))
    parts.append(spec_id.vendor_info)
    return b"".join(parts)


def spec_id_header_event(spec_id: SpecIdEvent) -> Event:
    """The TCG_PCR_EVENT that opens a crypto-agile log (PFP 1.04 §9.4.5.1)."""
    return Event(
        pcr=0,
        event_type=EV_NO_ACTION,
        digests={"sha1": bytes(SHA1_DIGEST_SIZE)},
        data=encode_spec_id(spec_id),
    )


def serialise(log: EventLog) -> bytes:
    """Encode ``log`` in its format; the exact inverse of `parse` for well-formed logs.

    Raises ValueError for a log no parser could read back: a digest whose size
    differs from its algorithm's, a SHA-1 log event with other banks, a field
    that does not fit its wire width.  Those are programming errors, not bad
    input.
    """
    out: list[bytes] = []
    if log.format == "sha1":
        for i, event in enumerate(log.events):
            out.append(_encode_pcr_event(event, f"event {i}"))
        return b"".join(out)
    if log.spec_id is None:
        raise ValueError("a crypto-agile log needs a SpecID event")
    header = spec_id_header_event(log.spec_id)
    if log.header_event is not None and log.header_event != header:
        raise ValueError("header_event disagrees with spec_id (spec_id is the source of truth)")
    out.append(_encode_pcr_event(header, "SpecID event"))
    sizes = _digest_sizes(log.spec_id)
    for i, event in enumerate(log.events, start=1):
        out.append(_encode_pcr_event2(event, sizes, f"event {i}"))
    return b"".join(out)


def _encode_pcr_event(event: Event, what: str) -> bytes:
    digest = event.digests.get("sha1")
    if set(event.digests) != {"sha1"} or digest is None or len(digest) != SHA1_DIGEST_SIZE:
        raise ValueError(f"{what}: a TCG_PCR_EVENT carries exactly one 20-byte sha1 digest")
    try:
        head = _PCR_EVENT_HEAD.pack(event.pcr, event.event_type, digest, len(event.data))
    except struct.error as e:
        raise ValueError(f"{what}: field out of range: {e}") from e
    return head + event.data


def _encode_pcr_event2(event: Event, sizes: dict[int, int], what: str) -> bytes:
    try:
        parts = [_PCR_EVENT2_HEAD.pack(event.pcr, event.event_type, len(event.digests))]
        for name, digest in event.digests.items():
            alg_id = bank_alg_id(name)
            if alg_id is None or alg_id not in sizes:
                raise ValueError(f"{what}: bank {name!r} has no known digest size")
            if len(digest) != sizes[alg_id]:
                raise ValueError(
                    f"{what}: {name} digest is {len(digest)} bytes, not {sizes[alg_id]}"
                )
            parts.append(_U16.pack(alg_id))
            parts.append(digest)
        parts.append(_U32.pack(len(event.data)))
    except struct.error as e:
        raise ValueError(f"{what}: field out of range: {e}") from e
    parts.append(event.data)
    return b"".join(parts)
