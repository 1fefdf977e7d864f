"""An event log for people (`format_text`) and for scripts (`json_document`).

Event data is whatever the firmware, boot loader or a guest wrote, so it is
never printed raw: text shows it escaped (only printable ASCII passes, no
terminal control sequence can get through) and JSON gives the hex plus a
text form only when the data is plainly printable.

Events are numbered as tpm2-tools' ``tpm2_eventlog`` numbers them
(EventNum): in a crypto-agile log the SpecID header is event 0, so an
event number in our output, in tpm2_eventlog's and in our parse errors is
the same event.
"""

from __future__ import annotations

from collections.abc import Mapping

from pvgrub_py.eventlog.records import Event, EventLog, event_type_name

#: Bytes of event data `escape_data` shows before cutting it short.
SHORT_DATA = 48


def numbered_events(log: EventLog) -> list[tuple[int, Event]]:
    """(EventNum, event) for every record in file order, the header included."""
    rows: list[tuple[int, Event]] = []
    if log.header_event is not None:
        rows.append((0, log.header_event))
    first = len(rows)
    rows.extend((first + i, event) for i, event in enumerate(log.events))
    return rows


def escape_data(data: bytes, limit: int = SHORT_DATA) -> str:
    """``data`` as a double-quoted, escaped string of at most ``limit`` bytes."""
    out: list[str] = []
    for b in data[:limit]:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    more = f"...(+{len(data) - limit} bytes)" if len(data) > limit else ""
    return '"' + "".join(out) + '"' + more


def data_text(data: bytes) -> str | None:
    """The data as text when it plainly is text (UTF-8, printable), else None.

    A trailing NUL terminator, common in EV_IPL and EV_EFI_ACTION strings, is
    dropped.
    """
    body = data[:-1] if data.endswith(b"\x00") else data
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\t\n" for c in text):
        return text
    return None


def _describe_format(log: EventLog) -> str:
    if log.spec_id is None:
        return "TCG 1.2 SHA-1 format (TCG_PCR_EVENT)"
    s = log.spec_id
    banks = ", ".join(
        f"{name}/{size}" for name, (_, size) in zip(s.bank_names, s.algorithms, strict=True)
    )
    return (
        f"crypto-agile format (TCG_PCR_EVENT2); SpecID: platformClass {s.platform_class}, "
        f"spec {s.spec_version_major}.{s.spec_version_minor} errata {s.spec_errata}, "
        f"uintnSize {s.uintn_size}, banks {banks}, vendorInfo {len(s.vendor_info)} bytes"
    )


def format_text(log: EventLog, pcrs: Mapping[str, Mapping[int, bytes]]) -> str:
    """One line per event, then the replayed PCRs (``pcrs``, from `replay`)."""
    count = len(log.events)
    lines = [f"{_describe_format(log)}; {count} event{'' if count == 1 else 's'}"]
    lines += [f"note: {quirk}" for quirk in log.quirks]
    for num, event in numbered_events(log):
        digests = " ".join(f"{bank}:{d.hex()}" for bank, d in event.digests.items())
        lines.append(
            f"{num:5d}  PCR {event.pcr:2d}  {event_type_name(event.event_type):<32}  "
            f"{digests}  {escape_data(event.data)}"
        )
    lines.append("PCRs replayed from the log:")
    width = max((len(bank) for bank in pcrs), default=0)
    for bank, values in pcrs.items():
        for pcr in sorted(values):
            lines.append(f"  {bank:<{width}} PCR {pcr:2d}: {values[pcr].hex()}")
    if not any(pcrs.values()):
        lines.append("  (none: the log extends no PCR)")
    return "\n".join(lines)


def json_document(log: EventLog, pcrs: Mapping[str, Mapping[int, bytes]]) -> dict[str, object]:
    """The stable JSON form of ``log`` and its replayed PCRs.

    ``{"format": "sha1"|"crypto-agile", "spec_id": {...}|null, "quirks": [...],
    "events": [{"index", "pcr", "type", "type_name", "digests": {bank: hex},
    "data_hex", "data_text"}], "pcrs": {bank: {"N": hex}}}``; hex is lower
    case without 0x; ``data_text`` is null unless the data is printable text;
    ``pcrs`` keys are decimal strings in numeric order, the shape
    ``pvgrubctl eventlog verify --pcrs`` reads.
    """
    spec: dict[str, object] | None = None
    if log.spec_id is not None:
        s = log.spec_id
        spec = {
            "platform_class": s.platform_class,
            "spec_version": f"{s.spec_version_major}.{s.spec_version_minor}",
            "spec_errata": s.spec_errata,
            "uintn_size": s.uintn_size,
            "algorithms": [
                {"alg_id": alg_id, "bank": name, "digest_size": size}
                for name, (alg_id, size) in zip(s.bank_names, s.algorithms, strict=True)
            ],
            "vendor_info_hex": s.vendor_info.hex(),
        }
    events = [
        {
            "index": num,
            "pcr": event.pcr,
            "type": event.event_type,
            "type_name": event_type_name(event.event_type),
            "digests": {bank: d.hex() for bank, d in event.digests.items()},
            "data_hex": event.data.hex(),
            "data_text": data_text(event.data),
        }
        for num, event in numbered_events(log)
    ]
    return {
        "format": log.format,
        "spec_id": spec,
        "quirks": list(log.quirks),
        "events": events,
        "pcrs": {
            bank: {str(pcr): values[pcr].hex() for pcr in sorted(values)}
            for bank, values in pcrs.items()
        },
    }
