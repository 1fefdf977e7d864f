"""Offline PCR prediction: replay a measurement plan from a zero start.

Both TPM versions start PCRs 0-15 at zero after TPM_Startup(ST_CLEAR), and
Xen's vTPM documentation says the same ("PCRs all initialized to zero"), so
the values a vTPM holds after a measured boot are a pure function of the
measurements.  The JSON shape is a stable interface for attestation policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def pcrs_from_json(obj: Any, source: str) -> PcrValues:
    """Read ``{"sha1": {"4": "<hex>"}}`` (or a predict document holding it under "pcrs")."""
    from pvgrub_py.errors import InputError

    if isinstance(obj, dict) and "pcrs" in obj and isinstance(obj["pcrs"], dict):
        obj = obj["pcrs"]
    if not isinstance(obj, dict):
        raise InputError(source, "expected a JSON object of banks")
    values: PcrValues = {}
    for bank, pcrs in obj.items():
        alg = BY_NAME.get(str(bank))
        if alg is None:
            raise InputError(source, f"unknown bank {bank!r}")
        if not isinstance(pcrs, dict):
            raise InputError(source, f"bank {bank}: expected an object of PCR index to hex")
        out: PcrBank = {}
        for index, hexval in pcrs.items():
            try:
                pcr = int(index)
                digest = bytes.fromhex(str(hexval).removeprefix("0x"))
            except ValueError:
                raise InputError(
                    source, f"bank {bank} PCR {index!r}: not an index and hex digest"
                ) from None
            if not 0 <= pcr < 24 or len(digest) != alg.digest_size:
                raise InputError(source, f"bank {bank} PCR {index}: bad index or digest length")
            out[pcr] = digest
        values[alg.name] = out
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
