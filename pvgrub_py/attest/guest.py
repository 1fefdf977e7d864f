"""The guest's side of attestation, on its vTPM through tpm2-pytss's ESAPI.

* `activate`: TPM2_ActivateCredential (Part 3 §12.5) of a challenge made by
  ``pvgrubctl attest challenge`` or ``tpm2_makecredential``: the AK is the
  object the credential names (password session, empty auth, as
  ``tpm2_createak`` makes it), the EK the key that decrypts the seed, its
  authorisation a policy session satisfying the TCG EK templates' policy
  (TPM2_PolicySecret on TPM_RH_ENDORSEMENT, EK Credential Profile 2.0
  §B.3.3).  The EK is re-created from its template (the TPM derives the
  same key from its endorsement seed: ``tpm2_createek``'s default, NV
  template and nonce included) or taken at a persistent handle.
* `quote`: TPM2_Quote (Part 3 §18.4) with the AK over a PCR selection and a
  nonce, plus the PCR values read for tpm2_quote's ``-o`` file; the values
  are checked against the quote's pcrDigest, so a PCR that changed between
  the read and the quote is a failure, never a PCR file that disagrees
  with its quote.

The AK is a ``tpm2_createak -c`` context file (loaded with
TPM2_ContextLoad, so in the TPM that saved it and since its last reset) or a
persistent handle.  The TPM is reached over a `TpmTransport` (any vTPM
address) through `pvgrub_py.tpm.pytss_tcti`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pvgrub_py.attest.credential import CredentialBlob
from pvgrub_py.attest.quote import _read_selection, _Reader, parse_attest, parse_signature
from pvgrub_py.errors import InputError, PvgrubError
from pvgrub_py.tpm.algorithms import HashAlgorithm
from pvgrub_py.tpm.pytss_tcti import import_pytss, transport_tcti
from pvgrub_py.tpm.transport import TpmTransport

#: Persistent object handles (Part 2 §7.5: TPM_HT_PERSISTENT 0x81).
PERSISTENT_FIRST = 0x81000000
PERSISTENT_LAST = 0x81FFFFFF
#: tpm2-tools' context files hold a TPMS_CONTEXT: a few KiB at most.
MAX_CONTEXT_BYTES = 16 * 1024
#: tpm2-tools' EK types (``tpm2_createek -G``) -> tpm2-pytss's template names.
EK_TEMPLATES = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}
#: TPM2_PCR_Read answers at most 8 digests (TPML_DIGEST) per call; never loop long.
MAX_PCR_READS = 64


class GuestTpmError(PvgrubError):
    """The TPM (or tpm2-tss) refused an attestation command."""


@dataclass(frozen=True)
class KeyRef:
    """An object in the TPM: a tpm2-tools context file's bytes, or a persistent handle."""

    context: bytes | None = None
    handle: int | None = None
    source: str = ""


def parse_handle(text: str, option: str) -> int:
    from pvgrub_py.errors import UsageError

    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        value = -1
    if not PERSISTENT_FIRST <= value <= PERSISTENT_LAST:
        raise UsageError(f"{option} {text!r}: not a persistent handle (0x81000000-0x81ffffff)")
    return value


@dataclass(frozen=True)
class PcrSelection:
    """Banks in order, each with its PCRs ascending (tpm2-tools' ``sha256:4,5+sha1:4,5``)."""

    banks: tuple[tuple[HashAlgorithm, tuple[int, ...]], ...]

    def marshal(self) -> bytes:
        """TPML_PCR_SELECTION (Part 2 §10.9.7), 3-byte pcrSelect as every PC TPM."""
        out = len(self.banks).to_bytes(4, "big")
        for alg, pcrs in self.banks:
            bits = bytearray(3)
            for n in pcrs:
                bits[n // 8] |= 1 << (n % 8)
            out += alg.alg_id.to_bytes(2, "big") + b"\x03" + bytes(bits)
        return out

    def count(self) -> int:
        return sum(len(p) for _, p in self.banks)


@dataclass(frozen=True)
class QuoteResult:
    message: bytes  # TPMS_ATTEST, as tpm2_quote -m writes it
    signature: bytes  # TPMT_SIGNATURE, as tpm2_quote -s writes it
    #: one list per TPM2_PCR_Read answer (a TPML_DIGEST), in selection order
    pcr_reads: tuple[tuple[bytes, ...], ...]
    selection: PcrSelection

    @property
    def values(self) -> list[bytes]:
        return [d for read in self.pcr_reads for d in read]


def _describe(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@contextmanager
def esys_over(transport: TpmTransport) -> Iterator[Any]:
    """An ESAPI context on *transport* (closed on exit; the transport is the caller's)."""
    pytss = import_pytss()
    tcti = transport_tcti(transport)
    try:
        esys = pytss.ESAPI(tcti)
    except pytss.TSS2_Exception as e:
        raise GuestTpmError(f"cannot start ESAPI: {_describe(e)}") from None
    try:
        yield esys
    finally:
        esys.close()


@contextmanager
def _tpm_step(what: str) -> Iterator[None]:
    """A TSS error as one line naming the step; our own errors (the transport's) pass."""
    pytss = import_pytss()
    try:
        yield
    except PvgrubError:
        raise
    except pytss.TSS2_Exception as e:
        raise GuestTpmError(f"{what}: {_describe(e)}") from None


def _load(esys: Any, ref: KeyRef, what: str) -> tuple[Any, bool]:
    """(ESYS_TR, whether we must flush it)."""
    pytss = import_pytss()
    if ref.handle is not None:
        with _tpm_step(f"{what} at 0x{ref.handle:08x}"):
            return esys.tr_from_tpmpublic(ref.handle), False
    assert ref.context is not None
    try:
        context = pytss.TPMS_CONTEXT.from_tools(ref.context)
    except Exception as e:  # tpm2-pytss raises ValueError, TSS2_Exception, IndexError...
        raise InputError(ref.source, f"not a tpm2-tools context file: {_describe(e)}") from None
    with _tpm_step(f"{what}: loading the context {ref.source}"):
        return esys.context_load(context), True


def _flush(esys: Any, handle: Any) -> None:
    # best effort: the TPM drops transient objects at its next reset anyway
    with contextlib.suppress(Exception):
        esys.flush_context(handle)


def _endorsement_key(esys: Any, ek: KeyRef | str) -> tuple[Any, bool]:
    """The EK: at its persistent handle, or re-created from its template (``rsa``/``ecc``)."""
    pytss = import_pytss()
    if isinstance(ek, KeyRef):
        return _load(esys, ek, "EK")
    with _tpm_step(f"EK: the {EK_TEMPLATES[ek]} template"):
        _, template = pytss.utils.create_ek_template(EK_TEMPLATES[ek], pytss.utils.NVReadEK(esys))
    with _tpm_step("EK: TPM2_CreatePrimary in the endorsement hierarchy"):
        handle = esys.create_primary(None, template, pytss.ESYS_TR.ENDORSEMENT)[0]
    return handle, True


def _ek_policy_session(esys: Any) -> Any:
    """A policy session satisfying the EK templates' policy: PolicySecret(TPM_RH_ENDORSEMENT)."""
    pytss = import_pytss()
    with _tpm_step("EK policy session (TPM2_PolicySecret on the endorsement hierarchy)"):
        session = esys.start_auth_session(
            pytss.ESYS_TR.NONE, pytss.ESYS_TR.NONE, pytss.TPM2_SE.POLICY,
            pytss.TPMT_SYM_DEF(algorithm=pytss.TPM2_ALG.NULL), pytss.TPM2_ALG.SHA256,
        )  # fmt: skip
        try:
            esys.policy_secret(pytss.ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        except BaseException:
            _flush(esys, session)
            raise
    return session


#: The AKs ``tpm2_createak -G ALG -g sha256`` makes: tpm2-tools' key specifiers.
AK_TEMPLATES = {"rsa": "rsa2048:rsassa-sha256:null", "ecc": "ecc256:ecdsa-sha256:null"}
#: tpm2_createak's attributes: fixedTPM, fixedParent, sensitiveDataOrigin,
#: userWithAuth, restricted, sign (an attestation key).
AK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


@dataclass(frozen=True)
class NewAk:
    """What ``tpm2_createek -u`` and ``tpm2_createak -u -n -c`` write, in their formats."""

    ek_public: bytes  # TPM2B_PUBLIC
    ak_public: bytes  # TPM2B_PUBLIC
    ak_name: bytes  # the Name, raw
    ak_context: bytes  # a tpm2-tools context file


def create_ak(transport: TpmTransport, ek: KeyRef | str, ak_alg: str) -> NewAk:
    """An AK under the EK, as ``tpm2_createak -C EK -G ak_alg -g sha256`` makes it, saved
    as a context (TPM2_ContextSave): loadable until the TPM resets."""
    pytss = import_pytss()
    template = pytss.TPM2B_PUBLIC(
        publicArea=pytss.TPMT_PUBLIC.parse(AK_TEMPLATES[ak_alg], AK_ATTRIBUTES, "sha256")
    )
    with esys_over(transport) as esys:
        flush: list[Any] = []
        try:
            ek_handle, own = _endorsement_key(esys, ek)
            if own:
                flush.append(ek_handle)
            with _tpm_step("EK: TPM2_ReadPublic"):
                ek_public = esys.read_public(ek_handle)[0]
            session = _ek_policy_session(esys)
            try:
                with _tpm_step("AK: TPM2_Create under the EK"):
                    private, public = esys.create(ek_handle, None, template, session1=session)[:2]
            finally:
                _flush(esys, session)
            session = _ek_policy_session(esys)
            try:
                with _tpm_step("AK: TPM2_Load under the EK"):
                    ak_handle = esys.load(ek_handle, private, public, session1=session)
            finally:
                _flush(esys, session)
            flush.append(ak_handle)
            with _tpm_step("AK: TPM2_ContextSave"):
                context = esys.context_save(ak_handle)
                name = bytes(esys.tr_get_name(ak_handle))
            return NewAk(bytes(ek_public.marshal()), bytes(public.marshal()), name,
                         bytes(context.to_tools()))  # fmt: skip
        finally:
            for handle in reversed(flush):
                _flush(esys, handle)


def activate(transport: TpmTransport, ak: KeyRef, ek: KeyRef | str, blob: CredentialBlob) -> bytes:
    """The secret a credential carries, released by the TPM (TPM2_ActivateCredential)."""
    pytss = import_pytss()
    with esys_over(transport) as esys:
        flush: list[Any] = []
        try:
            ak_handle, own = _load(esys, ak, "AK")
            if own:
                flush.append(ak_handle)
            ek_handle, own = _endorsement_key(esys, ek)
            if own:
                flush.append(ek_handle)
            session = _ek_policy_session(esys)
            flush.append(session)
            with _tpm_step("TPM2_ActivateCredential"):
                cert_info = esys.activate_credential(
                    ak_handle, ek_handle,
                    pytss.TPM2B_ID_OBJECT(blob.id_object),
                    pytss.TPM2B_ENCRYPTED_SECRET(blob.encrypted_secret),
                    session1=pytss.ESYS_TR.PASSWORD, session2=session,
                )  # fmt: skip
            return bytes(cert_info)
        finally:
            for handle in reversed(flush):
                _flush(esys, handle)


def _parse_selection_out(data: bytes) -> list[tuple[int, tuple[int, ...]]]:
    r = _Reader(data, "TPM2_PCR_Read", "pcrSelectionOut")
    return [(s.alg_id, s.pcrs) for s in _read_selection(r)]


def read_pcrs(esys: Any, selection: PcrSelection) -> tuple[tuple[bytes, ...], ...]:
    """TPM2_PCR_Read until every selected PCR is read; one tuple per answer."""
    pytss = import_pytss()
    remaining = {alg.alg_id: set(pcrs) for alg, pcrs in selection.banks}
    reads: list[tuple[bytes, ...]] = []
    for _ in range(MAX_PCR_READS):
        left = PcrSelection(tuple(
            (alg, tuple(sorted(remaining[alg.alg_id]))) for alg, _ in selection.banks
            if remaining[alg.alg_id]
        ))  # fmt: skip
        if not left.banks:
            return tuple(reads)
        sel_in, _ = pytss.TPML_PCR_SELECTION.unmarshal(left.marshal())
        with _tpm_step("TPM2_PCR_Read"):
            _, sel_out, digests = esys.pcr_read(sel_in)
        got = _parse_selection_out(sel_out.marshal())
        values = tuple(bytes(d) for d in digests)
        if sum(len(p) for _, p in got) != len(values) or not values:
            raise GuestTpmError("TPM2_PCR_Read: the answer's selection and digests disagree")
        for alg_id, pcrs in got:
            if alg_id not in remaining or not set(pcrs) <= remaining[alg_id]:
                raise GuestTpmError("TPM2_PCR_Read: the TPM answered PCRs it was not asked for")
            remaining[alg_id] -= set(pcrs)
        reads.append(values)
    raise GuestTpmError("TPM2_PCR_Read: the TPM keeps answering without the PCRs asked for")


def quote(
    transport: TpmTransport, ak: KeyRef, nonce: bytes, selection: PcrSelection
) -> QuoteResult:
    """TPM2_Quote of *selection* with *nonce*, and the PCR values it covers."""
    pytss = import_pytss()
    with esys_over(transport) as esys:
        ak_handle, own = _load(esys, ak, "AK")
        try:
            for _ in range(3):  # a PCR extended between the read and the quote: again
                reads = read_pcrs(esys, selection)
                sel_in, _ = pytss.TPML_PCR_SELECTION.unmarshal(selection.marshal())
                with _tpm_step("TPM2_Quote"):
                    attest, signature = esys.quote(ak_handle, sel_in, nonce)
                message, sig = bytes(attest), bytes(signature.marshal())
                if _digest_matches(message, sig, [d for r in reads for d in r]):
                    return QuoteResult(message, sig, reads, selection)
            raise GuestTpmError("the PCRs kept changing between TPM2_PCR_Read and TPM2_Quote")
        finally:
            if own:
                _flush(esys, ak_handle)


def _digest_matches(message: bytes, sig: bytes, values: Sequence[bytes]) -> bool:
    quote_ = parse_attest(message, "TPM2_Quote")
    signature = parse_signature(sig, "TPM2_Quote")
    if signature.hash is None:
        raise GuestTpmError(f"TPM2_Quote: signature hash 0x{signature.hash_id:04x} unknown")
    digest = hashlib.new(signature.hash.name, b"".join(values)).digest()
    return hmac.compare_digest(digest, quote_.pcr_digest)


def read_context(path: str, read: Any) -> KeyRef:
    return KeyRef(context=read(path, "context file", MAX_CONTEXT_BYTES), source=path)
