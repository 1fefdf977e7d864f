"""Judge a TPM 2.0 quote against reference PCR values, check by check.

The checks, in order (each one is reported, the first failure names the
rejection):

``magic``      TPMS_ATTEST.magic is TPM_GENERATED_VALUE: the TPM made it.
``type``       it is a quote (TPM_ST_ATTEST_QUOTE).
``nonce``      extraData equals the verifier's fresh nonce: not a replay.
``signature``  the AK signed the message (RSASSA, RSAPSS or ECDSA, with the
               signature's hash, which must be the one asked for, if any).
``ak``         a TPM2B_PUBLIC AK is fixedTPM, restricted and a signing key,
               so it signs only what the TPM generated (a PEM key carries no
               attributes: not checked).
``selection``  every selected bank is one we hash, and in at least one bank
               the quote selects every PCR the reference names (4 and 5).
``pcr-digest`` pcrDigest equals H(the expected values of the selected PCRs,
               concatenated in selection order: banks as listed, PCRs
               ascending; TPM 2.0 Part 3 §18.4, TPM2_Quote), H being the
               signature's hash.  The expected value of a selected PCR is
               the reference's; for a PCR the reference does not name, the
               event log's replay, or without a log its reset value.
``eventlog``   with an event log: it replays to the reference values.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pvgrub_py.attest.quote import (
    TPM_ALG_ECDSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    AkPublic,
    Quote,
    Signature,
)
from pvgrub_py.eventlog.replay import compare, reset_value
from pvgrub_py.tpm.algorithms import BY_NAME, computable

PcrValues = Mapping[str, Mapping[int, bytes]]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Check:
    """One check: passed (True), failed (False) or not applicable (None)."""

    name: str
    ok: bool | None
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if c.ok is False), None)

    def add(self, name: str, ok: bool | None, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok is not False

    def as_json(self) -> dict[str, object]:
        return {"verdict": "accept" if self.accepted else "reject",
                "checks": [c.as_json() for c in self.checks]}  # fmt: skip


def verify_signature(ak: AkPublic, message: bytes, sig: Signature) -> str | None:
    """None if ``sig`` is ``ak``'s valid signature of ``message``; else why not."""
    if sig.hash is None or sig.hash.name not in _HASHES:
        return f"signature hash 0x{sig.hash_id:04x} is not sha1, sha256, sha384 or sha512"
    algo = _HASHES[sig.hash.name]()
    key = ak.key
    try:
        if sig.sig_alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
            if not isinstance(key, rsa.RSAPublicKey):
                return f"a {sig.scheme} signature, but the AK is not an RSA key"
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if sig.sig_alg == TPM_ALG_RSASSA
                # TPM 2.0 Part 1 §B.7 lets the TPM pick any salt size up to the
                # digest's; AUTO reads it from the signature.
                else padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.AUTO)
            )
            key.verify(sig.blob, message, pad, algo)
        elif sig.sig_alg == TPM_ALG_ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "an ecdsa signature, but the AK is not an ECC key"
            key.verify(encode_dss_signature(sig.r, sig.s), message, ec.ECDSA(algo))
        else:
            return f"signature scheme {sig.scheme} is not supported"
    except InvalidSignature:
        return f"the {sig.scheme}/{sig.hash.name} signature does not verify with the AK"
    except ValueError as e:  # e.g. an RSA signature of the wrong length
        return f"the {sig.scheme}/{sig.hash.name} signature is malformed: {e}"
    return None


def expected_pcr(bank: str, pcr: int, reference: PcrValues, log_values: PcrValues | None) -> bytes:
    """A selected PCR's expected value: the reference's, else the log's, else its reset value."""
    ref = reference.get(bank, {})
    if pcr in ref:
        return ref[pcr]
    if log_values is not None and pcr in log_values.get(bank, {}):
        return log_values[bank][pcr]
    return reset_value(pcr, BY_NAME[bank])


def verify_quote(
    ak: AkPublic,
    message: bytes,
    quote: Quote,
    sig: Signature,
    nonce: bytes,
    reference: PcrValues,
    log_values: PcrValues | None = None,
    hash_name: str | None = None,
) -> Verdict:
    """Every check of the module docstring, on a parsed quote.

    ``message`` is the signed TPMS_ATTEST bytes; ``log_values`` the replay of
    an event log, if one was given; ``hash_name`` the hash the caller insists
    on (tpm2_checkquote's ``-g``).
    """
    v = Verdict()
    v.add("magic", quote.magic == TPM_GENERATED_VALUE,
          f"0x{quote.magic:08x}" + ("" if quote.magic == TPM_GENERATED_VALUE
                                    else ", not TPM_GENERATED_VALUE 0xff544347"))  # fmt: skip
    v.add("type", quote.type == TPM_ST_ATTEST_QUOTE,
          f"0x{quote.type:04x}" + ("" if quote.type == TPM_ST_ATTEST_QUOTE
                                   else ", not TPM_ST_ATTEST_QUOTE 0x8018"))  # fmt: skip
    same = hmac.compare_digest(quote.extra_data, nonce)
    v.add(
        "nonce",
        same,
        "extraData equals the nonce"
        if same
        else f"extraData {quote.extra_data.hex() or '(empty)'} is not the nonce {nonce.hex()}",
    )
    problem = verify_signature(ak, message, sig)
    if (
        problem is None
        and hash_name is not None
        and sig.hash is not None
        and sig.hash.name != hash_name
    ):
        problem = f"signed with {sig.hash.name}, not the {hash_name} asked for"
    v.add(
        "signature",
        problem is None,
        problem or f"{sig.scheme}/{sig.hash.name if sig.hash else '?'} signature by the AK",
    )
    is_ak = ak.is_attestation_key
    v.add(
        "ak",
        is_ak,
        "not checked: a PEM/DER key carries no TPM attributes"
        if is_ak is None
        else "fixedTPM, restricted signing key"
        if is_ak
        else f"objectAttributes 0x{ak.attributes or 0:08x} lack fixedTPM|restricted|sign",
    )
    _check_selection(v, quote, reference)
    if v.checks[-1].ok and sig.hash is not None:
        _check_digest(v, quote, sig, reference, log_values)
    else:
        v.add(
            "pcr-digest",
            False,
            "not computed: "
            + ("the selection is unusable" if sig.hash is not None else "unknown signature hash"),
        )
    if log_values is None:
        v.add("eventlog", None, "no event log given")
    else:
        bad = compare(log_values, reference)
        v.add(
            "eventlog",
            not bad,
            bad[0].describe() if bad else "the log replays to the reference values",
        )
    return v


def _check_selection(v: Verdict, quote: Quote, reference: PcrValues) -> None:
    for sel in quote.selections:
        if sel.bank is None or not computable(sel.bank):
            v.add("selection", False, f"selects bank 0x{sel.alg_id:04x}, which is not one we hash")
            return
    covered = [
        sel.bank.name for sel in quote.selections
        if sel.bank is not None and reference.get(sel.bank.name)
        and set(reference[sel.bank.name]) <= set(sel.pcrs)
    ]  # fmt: skip
    shown = " ".join(
        f"{s.bank.name if s.bank else hex(s.alg_id)}:{','.join(map(str, s.pcrs)) or '-'}"
        for s in quote.selections
    )
    if covered:
        v.add(
            "selection", True, f"{shown or '(empty)'}; covers the reference in {', '.join(covered)}"
        )
        return
    named = sorted({p for bank in reference.values() for p in bank})
    v.add(
        "selection",
        False,
        f"{shown or '(empty)'} does not select PCR "
        f"{', '.join(map(str, named))} in a bank the reference has ({', '.join(reference)})",
    )


def _check_digest(v: Verdict, quote: Quote, sig: Signature, reference: PcrValues,
                  log_values: PcrValues | None) -> None:  # fmt: skip
    assert sig.hash is not None
    h = hashlib.new(sig.hash.name)
    for sel in quote.selections:
        assert sel.bank is not None
        name = sel.bank.name
        if sel.pcrs and not reference.get(name) and (log_values is None or name not in log_values):
            v.add("pcr-digest", False, f"the quote selects {name} PCRs and the reference "
                  f"has no {name} values")  # fmt: skip
            return
        for pcr in sel.pcrs:
            h.update(expected_pcr(name, pcr, reference, log_values))
    want = h.digest()
    ok = hmac.compare_digest(want, quote.pcr_digest)
    v.add(
        "pcr-digest",
        ok,
        f"pcrDigest {quote.pcr_digest.hex()}"
        + (" matches the reference" if ok else f", the reference gives {want.hex()}"),
    )
