"""Reading ``tpm2_eventlog``'s YAML output as text (the tests have no YAML dependency).

tpm2_eventlog prints one ``- EventNum:`` block per event (``PCRIndex``, ``EventType``,
``AlgorithmId``/``Digest`` pairs, ``EventSize``) and then a ``pcrs:`` section with its
own replay, bank by bank.  Both the own-log tests and the corpus tests compare our
codec against it.
"""

from __future__ import annotations

from typing import Any


def events_and_pcrs(text: str) -> tuple[list[dict[str, Any]], dict[str, dict[int, bytes]]]:
    """The events (pcr, type, digests by algorithm, size) and the ``pcrs:`` replay."""
    events: list[dict[str, Any]] = []
    pcrs: dict[str, dict[int, bytes]] = {}
    alg: str | None = None
    bank: str | None = None
    in_pcrs = False
    for line in text.splitlines():
        if line.startswith("pcrs:"):
            in_pcrs = True
            continue
        if in_pcrs:
            if line.startswith("  ") and not line.startswith("    "):
                bank = line.strip().rstrip(":")
                pcrs[bank] = {}
            elif bank is not None and line.startswith("    "):
                pcr, _, value = line.partition(":")
                pcrs[bank][int(pcr)] = bytes.fromhex(value.strip().removeprefix("0x"))
            continue
        key, _, value = line.strip().lstrip("- ").partition(": ")
        if key == "PCRIndex":
            events.append({"pcr": int(value), "digests": {}})
            alg = None
        elif not events:
            continue
        elif key == "EventType":
            events[-1]["type"] = value
        elif key == "AlgorithmId":
            alg = value
        elif key == "Digest":
            events[-1]["digests"][alg or "sha1"] = value.strip('"')
            alg = None
        elif key == "EventSize":
            events[-1]["size"] = int(value)
    return events, pcrs
