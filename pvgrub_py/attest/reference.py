"""Reference PCR values in the formats attestation verifiers already read, and back.

Writers (pure functions of a prediction, `pvgrub_py.measure.predict`'s
measurements and final PCR values):

* `keylime_policy`: Keylime's ``tpm_policy``, what ``keylime_tenant
  --tpm_policy`` takes.  Keylime (``readPolicy`` in keylime/tpm/tpm_util.py;
  ``TPM_Utilities.readPolicy`` in keylime/tpm/tpm_abstract.py before 7.x)
  reads a JSON object whose keys are PCR numbers as decimal strings (at
  most 24) and whose values are one hex string or a list of them, lowercases
  them and adds a ``"mask"`` key of its own; when it checks a quote it
  accepts a PCR whose value, in the agent's hash bank, is any one of the
  listed values (``Tpm.check_pcrs`` in keylime/tpm/tpm_main.py).  So both
  the SHA-1 and the SHA-256 value of each PCR are listed and the policy
  fits an agent of either bank.
* `pcrlock_document`: systemd-pcrlock's ``.pcrlock`` file (systemd.pcrlock(5);
  src/pcrlock/pcrlock.c reads "records", each a "pcr" and "digests" of
  "hashAlg" (tpm2_hash_alg_to_string's names) and hex "digest"):
  ``{"records": [{"pcr": N, "digests": [{"hashAlg": "sha256", "digest":
  HEX}, ...]}, ...]}``, a subset of the TCG Canonical Event Log's JSON form,
  one record per extend, in order, each digest being what was extended
  (not the resulting PCR).

Reader: `load_reference` takes any of those two or our own ``predict
--json`` document (or a bare ``{"BANK": {"N": HEX}}`` object) and returns
the expected PCR values per bank.  A ``.pcrlock`` is replayed from zero, the
reset value of PCRs 4 and 5.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pvgrub_py.errors import InputError
from pvgrub_py.measure.plan import CMDLINE_PCR, KERNEL_PCR, Measurement
from pvgrub_py.measure.predict import PcrValues, pcrs_from_json, prediction_document
from pvgrub_py.tpm.algorithms import BY_NAME, HashAlgorithm, computable, extend

#: A reference is a few KiB; refuse to slurp anything huge.
MAX_REFERENCE_BYTES = 1 << 20
#: Far above the records of any boot component's .pcrlock.
MAX_PCRLOCK_RECORDS = 4096
#: Keylime's readPolicy refuses PCR keys above 24.
KEYLIME_MAX_PCR = 24
#: The PCRs a pv-grub boot extends, which every reference must give.
BOOT_PCRS = (KERNEL_PCR, CMDLINE_PCR)
#: systemd-pcrlock's banks (the TPM2 hash algorithms it knows).
PCRLOCK_BANKS = ("sha1", "sha256", "sha384", "sha512")

FORMATS = ("json", "keylime", "pcrlock")


def keylime_policy(values: Mapping[str, Mapping[int, bytes]]) -> dict[str, list[str]]:
    """Keylime's ``tpm_policy``: ``{"4": [sha1 HEX, sha256 HEX], "5": [...]}``.

    Every PCR of every bank of ``values`` (a prediction's final PCRs), the
    banks in their order, lowercase hex, PCRs ascending.
    """
    policy: dict[str, list[str]] = {}
    for pcr in sorted({p for bank in values.values() for p in bank}):
        if pcr > KEYLIME_MAX_PCR:
            raise ValueError(f"PCR {pcr}: Keylime policies name PCRs 0-{KEYLIME_MAX_PCR}")
        policy[str(pcr)] = [bank[pcr].hex() for bank in values.values() if pcr in bank]
    return policy


def pcrlock_document(measurements: Sequence[Measurement]) -> dict[str, Any]:
    """systemd-pcrlock's ``.pcrlock``: one record per extend, in order.

    Each record lists the digest extended in every bank systemd-pcrlock
    knows that the measurement carries (sha1, sha256, sha384, sha512).
    """
    records = []
    for m in measurements:
        digests = [
            {"hashAlg": bank, "digest": m.digests[bank].hex()}
            for bank in PCRLOCK_BANKS
            if bank in m.digests
        ]
        if not digests:
            raise ValueError(f"{m.what}: no digest in a bank systemd-pcrlock knows")
        records.append({"pcr": m.pcr, "digests": digests})
    return {"records": records}


def reference_document(
    fmt: str, measurements: Sequence[Measurement], values: Mapping[str, Mapping[int, bytes]]
) -> dict[str, Any]:
    """The reference for a prediction in ``fmt`` (one of `FORMATS`), ready for json.dump.

    What ``predict --format FMT`` prints: ``json`` is the ``predict --json``
    document itself.
    """
    if fmt == "keylime":
        return dict(keylime_policy(values))
    if fmt == "pcrlock":
        return pcrlock_document(measurements)
    if fmt == "json":
        return prediction_document(measurements, {b: dict(p) for b, p in values.items()})
    raise ValueError(f"unknown reference format {fmt!r} (known: {', '.join(FORMATS)})")


@dataclass(frozen=True)
class Reference:
    """Expected PCR values per bank, and the format they were read from."""

    values: PcrValues
    format: str


def load_reference(path: str) -> Reference:
    """Read a reference file in any of `FORMATS` (told apart by its shape)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_REFERENCE_BYTES + 1)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_REFERENCE_BYTES:
        raise InputError(path, f"larger than {MAX_REFERENCE_BYTES >> 20} MiB; not a reference")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InputError(path, f"not JSON: {e}") from None
    return reference_from_document(doc, path)


def reference_from_document(doc: object, source: str) -> Reference:
    """`load_reference` on an already-decoded JSON value."""
    if not isinstance(doc, dict):
        raise InputError(source, "expected a JSON object (predict --json, a Keylime tpm_policy "
                         "or a .pcrlock)")  # fmt: skip
    if "records" in doc:
        ref = Reference(_replay_pcrlock(doc["records"], source), "pcrlock")
    elif doc and all(_is_pcr_key(k) or k == "mask" for k in doc):
        ref = Reference(_keylime_values(doc, source), "keylime")
    else:
        ref = Reference(pcrs_from_json(doc, source), "json")
    _require_boot_pcrs(ref, source)
    return ref


def _is_pcr_key(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= 3 and key.isascii() and key.isdigit()


def _require_boot_pcrs(ref: Reference, source: str) -> None:
    for bank, pcrs in ref.values.items():
        if all(p in pcrs for p in BOOT_PCRS):
            continue
        if pcrs:
            missing = ", ".join(str(p) for p in BOOT_PCRS if p not in pcrs)
            raise InputError(source, f"{ref.format} reference: {bank} has no PCR {missing} value")
    if not any(ref.values.values()):
        raise InputError(source, f"{ref.format} reference: names no PCR 4 and 5 values")


def _hex(text: object, source: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(source, f"{where}: not a hex string")
    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise InputError(source, f"{where}: {text[:80]!r} is not hex") from None


def _bank_by_size(size: int) -> HashAlgorithm | None:
    return {1: BY_NAME["sha1"], 2: BY_NAME["sha256"], 3: BY_NAME["sha384"],
            4: BY_NAME["sha512"]}.get({20: 1, 32: 2, 48: 3, 64: 4}.get(size, 0))  # fmt: skip


def _keylime_values(doc: Mapping[str, object], source: str) -> PcrValues:
    """A Keylime tpm_policy: each value's bank is told by its length (20: sha1, 32: sha256...)."""
    values: PcrValues = {}
    for key, listed in doc.items():
        if key == "mask":
            continue  # Keylime's own; recomputed from the keys by readPolicy
        pcr = int(key)
        if pcr > KEYLIME_MAX_PCR:
            raise InputError(
                source, f"Keylime policy: PCR {key} (Keylime allows 0-{KEYLIME_MAX_PCR})"
            )
        items = [listed] if isinstance(listed, str) else listed
        if not isinstance(items, list) or len(items) > 16:
            raise InputError(source, f"Keylime policy PCR {key}: expected a hex string or a list")
        for i, text in enumerate(items):
            value = _hex(text, source, f"Keylime policy PCR {key} value {i}")
            alg = _bank_by_size(len(value))
            if alg is None:
                raise InputError(source, f"Keylime policy PCR {key} value {i}: {len(value)} bytes "
                                 "is not a sha1/sha256/sha384/sha512 PCR")  # fmt: skip
            bank = values.setdefault(alg.name, {})
            if pcr in bank and bank[pcr] != value:
                raise InputError(source, f"Keylime policy PCR {key}: more than one {alg.name} "
                                 "value; attest verify needs exactly one per bank")  # fmt: skip
            bank[pcr] = value
    return values


def _replay_pcrlock(records: object, source: str) -> PcrValues:
    """Replay a .pcrlock's records from zero, in every bank every record carries."""
    if not isinstance(records, list):
        raise InputError(source, 'pcrlock "records": expected a list')
    if len(records) > MAX_PCRLOCK_RECORDS:
        raise InputError(source, f"pcrlock: {len(records)} records (at most {MAX_PCRLOCK_RECORDS})")
    parsed: list[tuple[int, dict[str, bytes]]] = []
    for i, rec in enumerate(records):
        where = f"pcrlock record {i}"
        if not isinstance(rec, dict):
            raise InputError(source, f"{where}: expected an object")
        pcr = rec.get("pcr")
        if not isinstance(pcr, int) or isinstance(pcr, bool) or not 0 <= pcr <= 23:
            raise InputError(source, f'{where} "pcr": expected a PCR number 0-23')
        digests = rec.get("digests")
        if not isinstance(digests, list) or len(digests) > 16:
            raise InputError(source, f'{where} "digests": expected a list')
        by_bank: dict[str, bytes] = {}
        for j, d in enumerate(digests):
            if not isinstance(d, dict):
                raise InputError(source, f"{where} digest {j}: expected an object")
            name = d.get("hashAlg")
            alg = BY_NAME.get(name) if isinstance(name, str) else None
            if alg is None or not computable(alg):
                raise InputError(source, f'{where} digest {j} "hashAlg": {str(name)[:40]!r} '
                                 "is not a bank we can compute")  # fmt: skip
            value = _hex(d.get("digest"), source, f'{where} digest {j} "digest"')
            if len(value) != alg.digest_size:
                raise InputError(source, f"{where} digest {j}: {len(value)} bytes for "
                                 f"{alg.name} ({alg.digest_size})")  # fmt: skip
            by_bank[alg.name] = value
        parsed.append((pcr, by_bank))
    banks = [b for b in PCRLOCK_BANKS if parsed and all(b in d for _, d in parsed)]
    values: PcrValues = {}
    for name in banks:
        alg = BY_NAME[name]
        bank = values.setdefault(name, {})
        for pcr, digests in parsed:
            bank[pcr] = extend(alg, bank.get(pcr, alg.zero_pcr()), digests[name])
    return values
