"""The verifier's side of TPM2_MakeCredential: a secret only this EK's TPM can
release, and only to the AK of the given name.

TPM 2.0 Part 1 §24 (Credential Protection): a random seed is encrypted to
the EK (RSA-OAEP with the label ``IDENTITY\\0``, or ECDH for an ECC EK), the
secret is encrypted with a key derived from the seed and the AK's Name
(KDFa "STORAGE", AES-CFB) and an HMAC (KDFa "INTEGRITY") covers it and the
Name.  TPM2_ActivateCredential (Part 3 §12.5) returns the secret only in the
TPM holding the EK's private key, and only when the object whose Name was
used is loaded there: so a guest that answers with the secret has an AK in
the TPM that owns the EK.  The crypto is tpm2-pytss's (``make_credential``,
``credential_to_tools``); what is ours is reading hostile inputs and refusing
a key that is not an EK or not an AK.

Formats are tpm2-tools': the EK public key as ``tpm2_createek -u`` writes it
(TPM2B_PUBLIC, or ``-f pem``), the AK's Name as ``tpm2_createak -n`` writes
it (raw bytes; hex is taken too, as ``tpm2_makecredential -n`` takes it) or
its TPM2B_PUBLIC, and the credential blob as ``tpm2_makecredential -o``
writes it and ``tpm2_activatecredential -i`` reads it: magic 0xBADCC0DE,
version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pvgrub_py.attest.quote import (
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SIGN,
    AkPublic,
    PublicKey,
    parse_public,
)
from pvgrub_py.bytecursor import ByteCursor
from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.tpm.algorithms import BY_ID, computable
from pvgrub_py.tpm.pytss_tcti import import_pytss

#: objectAttributes.decrypt (Part 2 §8.3.2): with restricted, a storage key such as the EK.
ATTR_DECRYPT = 1 << 17
#: A TPM2B_NAME: an algorithm id and a digest, at most SHA-512's.
MAX_NAME = 2 + 64
#: tpm2-tools' file header for credential blobs (and contexts).
TOOLS_MAGIC = 0xBADCC0DE
TOOLS_VERSION = 1
#: The secret a challenge carries: 32 random bytes (a TPM2B_DIGEST, so at most
#: the EK nameAlg's digest size; SHA-256 for the TCG EK templates).
SECRET_BYTES = 32


@dataclass(frozen=True)
class EkPublic:
    """An endorsement key as MakeCredential needs it: the key and its TPMT_PUBLIC."""

    key: PublicKey
    tpmt_public: Any  # tpm2_pytss.TPMT_PUBLIC
    source: str


def load_ek_public(data: bytes, source: str) -> EkPublic:
    """``tpm2_createek -u``'s TPM2B_PUBLIC, or a PEM/DER key (``-f pem``).

    A TPM2B_PUBLIC must be a fixedTPM restricted decryption key (a storage key,
    as every EK template makes).  A PEM key carries no TPM parameters: it is
    taken as the TCG low-range EK templates make it (EK Credential Profile 2.0
    §B.3.3, §B.3.4): nameAlg SHA-256 and AES-128-CFB, which holds for RSA 2048
    and NIST P-256 EKs only (as ``tpm2_makecredential`` assumes for a PEM key).
    """
    pytss = import_pytss()
    ak = parse_public(data, source)  # our strict parser first: hostile bytes
    if ak.attributes is None:
        key = ak.key
        low_range = (isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        )
        if not low_range:
            raise InputError(source, "a PEM EK must be RSA 2048 or NIST P-256 (the low-range "
                             "EK templates); give the TPM2B_PUBLIC (tpm2_createek -u)")  # fmt: skip
        symmetric = pytss.TPMT_SYM_DEF_OBJECT(
            algorithm=pytss.TPM2_ALG.AES,
            keyBits=pytss.TPMU_SYM_KEY_BITS(aes=128),
            mode=pytss.TPMU_SYM_MODE(aes=pytss.TPM2_ALG.CFB),
        )
        pem = data if data.lstrip().startswith(b"-----BEGIN") else _der_to_pem(key)
        try:
            public = pytss.TPMT_PUBLIC.from_pem(
                pem, nameAlg=pytss.TPM2_ALG.SHA256, symmetric=symmetric,
                objectAttributes=ATTR_FIXED_TPM | ATTR_RESTRICTED | ATTR_DECRYPT,
            )  # fmt: skip
        except (ValueError, TypeError) as e:
            raise InputError(source, f"EK public key: {e}") from None
        return EkPublic(key, public, source)
    want = ATTR_FIXED_TPM | ATTR_RESTRICTED | ATTR_DECRYPT
    if ak.attributes & want != want or ak.attributes & ATTR_SIGN:
        raise InputError(source, f"objectAttributes 0x{ak.attributes:08x}: not an endorsement "
                         "key (a fixedTPM restricted decryption key)")  # fmt: skip
    _check_name_alg(ak, source)
    try:
        public2b, used = pytss.TPM2B_PUBLIC.unmarshal(data)
    except Exception as e:  # tpm2-pytss raises TSS2_Exception and others here
        raise InputError(source, f"TPM2B_PUBLIC: {e}") from None
    if used != len(data):
        raise InputError(source, f"TPM2B_PUBLIC: {len(data) - used} trailing bytes")
    public = public2b.publicArea
    if int(public.parameters.asymDetail.symmetric.algorithm) == int(pytss.TPM2_ALG.NULL):
        raise InputError(source, "parameters.symmetric: NULL; an EK has a symmetric algorithm")
    return EkPublic(ak.key, public, source)


def _der_to_pem(key: PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _check_name_alg(public: AkPublic, source: str) -> None:
    alg = BY_ID.get(public.name_alg or 0)
    if alg is None or not computable(alg):
        raise InputError(source, f"nameAlg 0x{public.name_alg or 0:04x} is not a hash we compute")


def ak_name_from_public(data: bytes, source: str) -> bytes:
    """The Name (nameAlg || H(TPMT_PUBLIC), Part 1 §16) of an AK's TPM2B_PUBLIC,
    which must be a fixedTPM restricted signing key: only such a key signs
    nothing but what the TPM itself generated (quotes)."""
    ak = parse_public(data, source)
    if ak.attributes is None:
        raise InputError(source, "an AK's Name needs its TPM2B_PUBLIC (tpm2_createak -u), "
                         "not a PEM key, which carries no TPM attributes")  # fmt: skip
    if not ak.is_attestation_key:
        raise InputError(source, f"objectAttributes 0x{ak.attributes:08x}: not an attestation "
                         "key (fixedTPM, restricted and sign)")  # fmt: skip
    _check_name_alg(ak, source)
    alg = BY_ID[ak.name_alg or 0]
    h = alg.new()
    h.update(data[2:])  # the TPMT_PUBLIC, without the TPM2B size
    return alg.alg_id.to_bytes(2, "big") + bytes(h.digest())


def check_name(name: bytes, source: str) -> bytes:
    """*name* if it is a TPM2B_NAME's digest form: a known hash id and that hash's size."""
    if len(name) < 2:
        raise InputError(source, f"AK name: {len(name)} bytes, too short for a Name")
    alg = BY_ID.get(int.from_bytes(name[:2], "big"))
    if alg is None:
        raise InputError(source, f"AK name: hash 0x{name[:2].hex()} is not one we know")
    if len(name) != 2 + alg.digest_size:
        raise InputError(source, f"AK name: {len(name)} bytes, a {alg.name} Name has "
                         f"{2 + alg.digest_size}")  # fmt: skip
    return name


def read_ak_name(text: str, read: Any) -> bytes:
    """``--ak-name``: a file of the raw Name (``tpm2_createak -n``) or of its hex,
    or the hex itself.  *read(path, what, limit)* reads a file boundedly."""
    if os.path.exists(text):
        data = read(text, "AK name", 2 * MAX_NAME + 8)
        try:
            return check_name(data, text)
        except InputError:
            stripped = data.strip()
            if stripped and all(c in b"0123456789abcdefABCDEF" for c in stripped):
                return check_name(bytes.fromhex(stripped.decode()), text)
            raise
    digits = text.removeprefix("0x")
    try:
        name = bytes.fromhex(digits)
    except ValueError:
        raise UsageError(f"--ak-name {text[:40]!r}: neither a file nor a hex Name") from None
    return check_name(name, "--ak-name")


def make_challenge(ek: EkPublic, ak_name: bytes, secret: bytes) -> bytes:
    """TPM2_MakeCredential in software: the credential blob ``tpm2_activatecredential -i``
    takes, which releases *secret* only in the TPM holding *ek* with the AK *ak_name*."""
    pytss = import_pytss()
    alg = BY_ID.get(int(ek.tpmt_public.nameAlg))
    if alg is None:
        raise InputError(ek.source, "nameAlg: not a hash we know")
    if not 0 < len(secret) <= alg.digest_size:
        raise InputError(ek.source, f"a {len(secret)}-byte secret; the EK's nameAlg "
                         f"({alg.name}) takes 1 to {alg.digest_size}")  # fmt: skip
    try:
        id_object, encrypted_secret = pytss.utils.make_credential(
            ek.tpmt_public, secret, pytss.TPM2B_NAME(ak_name)
        )
    except (ValueError, TypeError) as e:
        raise InputError(ek.source, f"cannot make a credential for this EK: {e}") from None
    return bytes(pytss.utils.credential_to_tools(id_object, encrypted_secret))


def fresh_secret(ek: EkPublic) -> bytes:
    alg = BY_ID.get(int(ek.tpmt_public.nameAlg))
    size = min(SECRET_BYTES, alg.digest_size if alg else SECRET_BYTES)
    return os.urandom(size)


@dataclass(frozen=True)
class CredentialBlob:
    """A parsed tpm2-tools credential blob: the two TPM2B contents."""

    id_object: bytes
    encrypted_secret: bytes


def parse_credential_blob(data: bytes, source: str) -> CredentialBlob:
    """``tpm2_makecredential -o``'s file, checked field by field (hostile input)."""

    def short(field: str, pos: int, wanted: int, left: int) -> InputError:
        return InputError(source, f"credential blob {field}: needs {wanted} bytes, "
                          f"only {left} left at offset {pos}")  # fmt: skip

    r: ByteCursor[bytes] = ByteCursor(data, "big", short)
    magic = r.u32("magic")
    if magic != TOOLS_MAGIC:
        raise InputError(source, f"credential blob magic: 0x{magic:08x}, not 0x{TOOLS_MAGIC:08x} "
                         "(a tpm2_makecredential file)")  # fmt: skip
    version = r.u32("version")
    if version != TOOLS_VERSION:
        raise InputError(source, f"credential blob version: {version}, not {TOOLS_VERSION}")
    id_object = r.take(r.u16("idObject size"), "idObject")
    secret = r.take(r.u16("encryptedSecret size"), "encryptedSecret")
    if r.pos != len(data):
        raise InputError(source, f"credential blob: {len(data) - r.pos} trailing bytes")
    if not id_object or not secret:
        raise InputError(source, "credential blob: an empty idObject or encryptedSecret")
    return CredentialBlob(id_object, secret)
