"""Offline PCR prediction: replay a measurement plan from a zero start.

Both TPM versions start PCRs 0-15 at zero after TPM_Startup(ST_CLEAR), and
Xen's vTPM documentation says the same ("PCRs all initialized to zero"), so
the values a vTPM holds after a measured boot are a pure function of the
measurements.  The JSON shape is a stable interface for attestation policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pvgrub_py.errors import InputError
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.algorithms import BY_NAME, HashAlgorithm, extend

PcrBank = dict[int, bytes]
PcrValues = dict[str, PcrBank]


def predict_pcrs(measurements: Sequence[Measurement], banks: Sequence[HashAlgorithm]) -> PcrValues:
    values: PcrValues = {alg.name: {} for alg in banks}
    for m in measurements:
        for alg in banks:
            bank = values[alg.name]
            bank[m.pcr] = extend(alg, bank.get(m.pcr, alg.zero_pcr()), m.digests[alg.name])
    return values


def pcrs_to_json(values: PcrValues) -> dict[str, dict[str, str]]:
    return {
        bank: {str(pcr): digest.hex() for pcr, digest in sorted(pcrs.items())}
        for bank, pcrs in values.items()
    }


def pcrs_from_json(doc: object, source: str) -> PcrValues:
    """``{"bank": {"N": "hex"}}`` (or that under ``"pcrs"``) as checked PCR values.

    Accepts the fixtures' ``*.pcrs.json``, ``predict --json`` and
    ``eventlog show --json`` documents.  Every bank, index and length is checked.
    """
    if isinstance(doc, dict) and isinstance(doc.get("pcrs"), dict):
        doc = doc["pcrs"]
    if not isinstance(doc, dict):
        raise InputError(source, 'expected an object {"BANK": {"N": "HEX"}}')
    values: PcrValues = {}
    for bank, pcrs in doc.items():
        alg = BY_NAME.get(str(bank).lower())
        if alg is None:
            known = ", ".join(BY_NAME)
            raise InputError(source, f"unknown bank {bank!r} (known: {known})")
        if not isinstance(pcrs, dict):
            raise InputError(source, f'{bank}: expected an object {{"N": "HEX"}}')
        bank_values = values.setdefault(alg.name, {})
        for key, text in pcrs.items():
            if (
                not (isinstance(key, str) and key.isascii() and key.isdigit())
                or int(key) > 0xFFFFFFFF
            ):
                raise InputError(source, f"{bank}: PCR {key!r} is not a PCR number")
            if not isinstance(text, str):
                raise InputError(source, f"{bank} PCR {key}: value is not a hex string")
            digits = text[2:] if text[:2].lower() == "0x" else text
            try:
                value = bytes.fromhex(digits)
            except ValueError:
                raise InputError(source, f"{bank} PCR {key}: {text!r} is not hex") from None
            if len(value) != alg.digest_size:
                raise InputError(
                    source,
                    f"{bank} PCR {key}: {len(value)} bytes, a {alg.name} PCR holds "
                    f"{alg.digest_size}",
                )
            bank_values[int(key)] = value
    return values


def prediction_document(measurements: Sequence[Measurement], values: PcrValues) -> dict[str, Any]:
    """The stable ``predict --json`` shape."""
    return {
        "measurements": [
            {
                "pcr": m.pcr,
                "what": m.what,
                "source": m.source,
                "digests": {bank: d.hex() for bank, d in m.digests.items()},
            }
            for m in measurements
        ],
        "pcrs": pcrs_to_json(values),
    }
