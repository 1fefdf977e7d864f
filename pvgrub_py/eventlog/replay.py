"""Replay an event log into PCR values, and compare them with expected ones.

Replaying is what makes a log evidence: each event's recorded digest is
extended into its PCR with the TPM's rule PCR := H(PCR || digest), bank by
bank, and the result must equal the PCRs the TPM reports.  The recorded
digests are trusted as they stand (that the event data hashes to them is a
separate, event-type-specific check); PFP 1.04 Table 9 (§9.4.1) makes
EV_NO_ACTION events informational, never extended.

Starting values:

* Every PCR a log extends starts at zero, the TPM2_Startup(CLEAR) /
  TPM_Startup(ST_CLEAR) value of PCRs 0-16 and 23.  That holds for PCRs
  17-22 too: their power-on value is all ones, but only a D-RTM launch may
  extend them and the launch first resets them to zero (PC Client Platform
  TPM Profile, PCR attributes), so a log of D-RTM events replays from zero.
* PCR 0 starts at 00..0L instead when the log opens with a StartupLocality
  event for locality L (PFP 1.04 §9.4.5.3: the TPM was started from locality
  3, or 4 for an H-CRTM, and PCR 0's reset value carries that locality).  The
  event counts only before PCR 0's first extend, as the specification
  requires; a later one cannot change a reset value and is ignored.
* A PCR the log never touches keeps its reset value: zero, or all ones for
  17-22.  `compare` uses that when the expected set names such a PCR, so the
  24 PCRs quoted by a real TPM verify against a log that extends a few.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pvgrub_py.eventlog.records import (
    EV_NO_ACTION,
    STARTUP_LOCALITY_SIGNATURE,
    EventLog,
)
from pvgrub_py.tpm.algorithms import BY_NAME, HashAlgorithm, computable, extend

#: bank name -> PCR index -> value.
PcrValues = dict[str, dict[int, bytes]]

#: PCRs whose reset value is all ones until a D-RTM launch zeroes them.
DRTM_PCRS = range(17, 23)


def reset_value(pcr: int, alg: HashAlgorithm) -> bytes:
    """A PCR's value after TPM startup, before anything extends it."""
    if pcr in DRTM_PCRS:
        return b"\xff" * alg.digest_size
    return alg.zero_pcr()


def startup_locality(pcr: int, event_type: int, data: bytes) -> int | None:
    """The locality a StartupLocality event (PFP 1.04 §9.4.5.3) announces, else None."""
    if (
        pcr == 0
        and event_type == EV_NO_ACTION
        and len(data) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        and data.startswith(STARTUP_LOCALITY_SIGNATURE)
    ):
        return data[-1]
    return None


def replayable_banks(log: EventLog) -> tuple[HashAlgorithm, ...]:
    """The banks of ``log`` we can compute: declared, known and in hashlib."""
    banks: list[HashAlgorithm] = []
    for name in log.banks:
        alg = BY_NAME.get(name)
        if alg is not None and computable(alg):
            banks.append(alg)
    return tuple(banks)


def replay(log: EventLog) -> PcrValues:
    """The PCR values ``log`` leads to, per bank, for the PCRs it touches.

    Banks are the log's declared ones (SHA-1 for a SHA-1 log, the SpecID list
    otherwise) that hashlib computes; a digest for another bank is ignored,
    and an event that lacks a declared bank's digest does not extend that
    bank, so the bank's PCR then fails to verify rather than being guessed.
    A bank is present in the result even when no event extends it.
    """
    banks = replayable_banks(log)
    values: PcrValues = {alg.name: {} for alg in banks}
    pcr0_extended = False
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            locality = startup_locality(event.pcr, event.event_type, event.data)
            if locality is not None and not pcr0_extended:
                for alg in banks:
                    values[alg.name][0] = bytes(alg.digest_size - 1) + bytes([locality])
            continue
        if event.pcr == 0:
            pcr0_extended = True
        for alg in banks:
            digest = event.digests.get(alg.name)
            if digest is None:
                continue
            bank = values[alg.name]
            bank[event.pcr] = extend(alg, bank.get(event.pcr, alg.zero_pcr()), digest)
    return values


@dataclass(frozen=True)
class Mismatch:
    """One PCR of one bank whose replayed value is not the expected one.

    ``replayed`` is None when the log has no digests for ``bank`` at all (or
    the bank cannot be computed here), so no value can be claimed for it.
    """

    bank: str
    pcr: int
    replayed: bytes | None
    expected: bytes

    def describe(self) -> str:
        if self.replayed is None:
            return (
                f"{self.bank} PCR {self.pcr}: the log has no {self.bank} digests, "
                f"expected {self.expected.hex()}"
            )
        return (
            f"{self.bank} PCR {self.pcr}: log replays to {self.replayed.hex()}, "
            f"expected {self.expected.hex()}"
        )


def compare(
    replayed: Mapping[str, Mapping[int, bytes]], expected: Mapping[str, Mapping[int, bytes]]
) -> list[Mismatch]:
    """Every (bank, PCR) of ``expected`` whose value the replay does not reproduce.

    Only the PCRs ``expected`` names are judged, so it may be a selection (a
    quote of PCRs 4 and 5, a prediction) of what the log extends.  A named PCR
    the log never extends is judged at its reset value (see the module
    docstring); a named bank the log does not carry fails for every PCR.
    The result is in the order of ``expected``'s banks, then PCR number.
    """
    mismatches: list[Mismatch] = []
    for bank, pcrs in expected.items():
        got = replayed.get(bank)
        alg = BY_NAME.get(bank)
        for pcr in sorted(pcrs):
            want = pcrs[pcr]
            if got is None or alg is None:
                mismatches.append(Mismatch(bank, pcr, None, want))
                continue
            value = got.get(pcr, reset_value(pcr, alg))
            if value != want:
                mismatches.append(Mismatch(bank, pcr, value, want))
    return mismatches
