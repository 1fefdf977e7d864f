"""The TPM 2.0 structures of a quote, as ``tpm2_quote`` and ``tpm2_createak`` write them.

Layouts (TPM 2.0 Library Part 2, Structures; all integers big-endian):

* TPMS_ATTEST (§10.12.12): magic u32 (TPM_GENERATED_VALUE 0xff544347),
  type u16 (TPM_ST_ATTEST_QUOTE 0x8018), qualifiedSigner TPM2B_NAME,
  extraData TPM2B_DATA, clockInfo TPMS_CLOCK_INFO (clock u64, resetCount u32,
  restartCount u32, safe u8), firmwareVersion u64, then for a quote
  TPMS_QUOTE_INFO (§10.12.4): pcrSelect TPML_PCR_SELECTION (count u32, then
  count x (hash u16, sizeofSelect u8, pcrSelect[sizeofSelect]), PCR n being
  bit n%8 of byte n/8), pcrDigest TPM2B_DIGEST.  ``tpm2_quote -m`` writes
  the TPMS_ATTEST bare (the contents of the TPM2B_ATTEST the TPM returned);
  a TPM2B_ATTEST, with its u16 size, is accepted too.
* TPMT_SIGNATURE (§11.3.4): sigAlg u16, then for RSASSA (0x0014) and RSAPSS
  (0x0016) hash u16 and a TPM2B signature; for ECDSA (0x0018) hash u16, then
  signatureR and signatureS, each a TPM2B.  ``tpm2_quote -s`` writes it as is.
* TPM2B_PUBLIC (§12.2.5): size u16, TPMT_PUBLIC: type u16 (RSA 0x0001, ECC
  0x0023), nameAlg u16, objectAttributes u32, authPolicy TPM2B, parameters
  (TPMS_RSA_PARMS: symmetric, scheme, keyBits u16, exponent u32 (0 means
  65537); TPMS_ECC_PARMS: symmetric, scheme, curveID u16, kdf), unique
  (RSA: TPM2B modulus; ECC: TPMS_ECC_POINT, x and y as TPM2B).  That is
  ``tpm2_createak -u``'s default ("tss") output; ``-f pem`` writes a PEM
  SubjectPublicKeyInfo, also read here (as is its DER form).

Every parser takes hostile bytes: each length is checked against what is
left, inputs are capped at `MAX_FILE_BYTES`, trailing bytes are refused,
and every defect is one `InputError` naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)

from pvgrub_py.bytecursor import ByteCursor
from pvgrub_py.errors import InputError
from pvgrub_py.inputs import open_input
from pvgrub_py.tpm.algorithms import BY_ID, HashAlgorithm

#: A quote, a signature or a public key is a few hundred bytes; a 4096-bit
#: RSA TPM2B_PUBLIC is about 600.  Anything far larger is not one.
MAX_FILE_BYTES = 64 * 1024

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

TPM_ALG_RSA = 0x0001
TPM_ALG_NULL = 0x0010
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDAA = 0x001A
TPM_ALG_ECC = 0x0023

SIG_ALG_NAMES = {TPM_ALG_RSASSA: "rsassa", TPM_ALG_RSAPSS: "rsapss", TPM_ALG_ECDSA: "ecdsa"}

#: TPM_ECC_CURVE (TCG Algorithm Registry) -> the curve in `cryptography`.
CURVES: dict[int, ec.EllipticCurve] = {
    0x0003: ec.SECP256R1(),
    0x0004: ec.SECP384R1(),
    0x0005: ec.SECP521R1(),
}

#: objectAttributes bits (Part 2 §8.3.2) an attestation key must have.
ATTR_FIXED_TPM = 1 << 1
ATTR_RESTRICTED = 1 << 16
ATTR_SIGN = 1 << 18

#: TPM2_PCR_SELECT_MAX on every TPM we know: 24 PCRs in 3 bytes; allow a
#: little more, but never a selection that would name thousands of PCRs.
MAX_SIZEOF_SELECT = 8
MAX_SELECTIONS = 16


class _Reader(ByteCursor[bytes]):
    """A big-endian `ByteCursor` whose errors name the file, the structure and the field."""

    def __init__(self, data: bytes, source: str, what: str) -> None:
        super().__init__(data, "big", self._short)
        self.source = source
        self.what = what

    def fail(self, field: str, problem: str) -> InputError:
        return InputError(self.source, f"{self.what} {field}: {problem} at offset {self.pos}")

    def _short(self, field: str, pos: int, wanted: int, left: int) -> InputError:
        return self.fail(field, f"needs {wanted} bytes, only {left} left")

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(f"{field} size"), field)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail("end", f"{len(self.data) - self.pos} trailing bytes")


def _check_size(data: bytes, source: str, what: str) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise InputError(source, f"{len(data)} bytes is too large for a {what}")


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank (None if unknown to us) and its PCRs, ascending."""

    alg_id: int
    bank: HashAlgorithm | None
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class Quote:
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes
    #: the TPMS_ATTEST bytes the signature covers (without a TPM2B size).
    signed: bytes = b""


def parse_attest(data: bytes, source: str) -> Quote:
    """Decode ``tpm2_quote -m``'s TPMS_ATTEST (or a TPM2B_ATTEST) from ``data``."""
    _check_size(data, source, "TPMS_ATTEST")
    if (
        len(data) >= 6
        and int.from_bytes(data[:2], "big") == len(data) - 2
        and int.from_bytes(data[2:6], "big") == TPM_GENERATED_VALUE
    ):
        data = data[2:]  # a TPM2B_ATTEST: drop the size the check above agreed with
    r = _Reader(data, source, "TPMS_ATTEST")
    magic = r.u32("magic")
    st = r.u16("type")
    if magic != TPM_GENERATED_VALUE:
        # Not TPM-generated: nothing after this can be trusted to have the quote layout.
        return Quote(magic, st, b"", b"", 0, 0, 0, False, 0, (), b"", data)
    signer = r.tpm2b("qualifiedSigner")
    extra = r.tpm2b("extraData")
    clock = r.u64("clockInfo.clock")
    reset_count = r.u32("clockInfo.resetCount")
    restart_count = r.u32("clockInfo.restartCount")
    safe = r.u8("clockInfo.safe")
    if safe > 1:
        raise r.fail("clockInfo.safe", f"{safe} is not a TPMI_YES_NO")
    firmware = r.u64("firmwareVersion")
    if st != TPM_ST_ATTEST_QUOTE:
        return Quote(magic, st, signer, extra, clock, reset_count, restart_count, bool(safe),
                     firmware, (), b"", data)  # fmt: skip
    selections = _read_selection(r)
    digest = r.tpm2b("pcrDigest")
    r.end()
    return Quote(magic, st, signer, extra, clock, reset_count, restart_count, bool(safe),
                 firmware, selections, digest, data)  # fmt: skip


def _read_selection(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("pcrSelect.count")
    if count > MAX_SELECTIONS:
        raise r.fail("pcrSelect.count", f"{count} banks (at most {MAX_SELECTIONS})")
    out: list[PcrSelection] = []
    for i in range(count):
        alg_id = r.u16(f"pcrSelect[{i}].hash")
        size = r.u8(f"pcrSelect[{i}].sizeofSelect")
        if size > MAX_SIZEOF_SELECT:
            raise r.fail(
                f"pcrSelect[{i}].sizeofSelect", f"{size} bytes (at most {MAX_SIZEOF_SELECT})"
            )
        bits = r.take(size, f"pcrSelect[{i}].pcrSelect")
        pcrs = tuple(n for n in range(size * 8) if bits[n // 8] >> (n % 8) & 1)
        out.append(PcrSelection(alg_id, BY_ID.get(alg_id), pcrs))
    return tuple(out)


@dataclass(frozen=True)
class Signature:
    """A parsed TPMT_SIGNATURE: the scheme, its hash and the signature bytes.

    For ECDSA ``r`` and ``s`` are set and ``blob`` is empty; for RSA ``blob``.
    """

    sig_alg: int
    hash_id: int
    hash: HashAlgorithm | None
    blob: bytes = b""
    r: int = 0
    s: int = 0

    @property
    def scheme(self) -> str:
        return SIG_ALG_NAMES.get(self.sig_alg, f"0x{self.sig_alg:04x}")


def parse_signature(data: bytes, source: str) -> Signature:
    """Decode ``tpm2_quote -s``'s TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    _check_size(data, source, "TPMT_SIGNATURE")
    r = _Reader(data, source, "TPMT_SIGNATURE")
    sig_alg = r.u16("sigAlg")
    if sig_alg not in SIG_ALG_NAMES:
        raise r.fail("sigAlg", f"0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA")
    hash_id = r.u16("hash")
    alg = BY_ID.get(hash_id)
    if sig_alg == TPM_ALG_ECDSA:
        sig_r = r.tpm2b("signatureR")
        sig_s = r.tpm2b("signatureS")
        r.end()
        return Signature(sig_alg, hash_id, alg, r=int.from_bytes(sig_r, "big"),
                         s=int.from_bytes(sig_s, "big"))  # fmt: skip
    blob = r.tpm2b("sig")
    r.end()
    return Signature(sig_alg, hash_id, alg, blob=blob)


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class AkPublic:
    """An attestation key: the key, and (from a TPM2B_PUBLIC) its TPM attributes.

    ``attributes`` is None for a PEM/DER key, which carries none.
    """

    key: PublicKey
    attributes: int | None
    name_alg: int | None

    @property
    def is_attestation_key(self) -> bool | None:
        """fixedTPM, restricted and sign all set (None: unknown, PEM key)."""
        if self.attributes is None:
            return None
        want = ATTR_FIXED_TPM | ATTR_RESTRICTED | ATTR_SIGN
        return self.attributes & want == want


def parse_public(data: bytes, source: str) -> AkPublic:
    """An AK public key: TPM2B_PUBLIC (``tpm2_createak -u``), PEM or DER."""
    _check_size(data, source, "public key")
    if data.lstrip().startswith(b"-----BEGIN"):
        return AkPublic(_load_spki(data, source, pem=True), None, None)
    if data[:1] == b"\x30":  # a DER SEQUENCE; a TPM2B_PUBLIC's size is never 0x30xx here
        return AkPublic(_load_spki(data, source, pem=False), None, None)
    return _parse_tpm2b_public(data, source)


def _load_spki(data: bytes, source: str, pem: bool) -> PublicKey:
    try:
        key = load_pem_public_key(data) if pem else load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        kind = "PEM" if pem else "DER"
        raise InputError(source, f"not a {kind} public key: {str(e).splitlines()[0]}") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise InputError(source, "public key is neither RSA nor ECC")
    return key


def _skip_scheme(r: _Reader, field: str) -> None:
    scheme = r.u16(f"{field}.scheme")
    if scheme != TPM_ALG_NULL:
        r.u16(f"{field}.details.hashAlg")
        if scheme == TPM_ALG_ECDAA:
            r.u16(f"{field}.details.count")


def _parse_tpm2b_public(data: bytes, source: str) -> AkPublic:
    r = _Reader(data, source, "TPM2B_PUBLIC")
    size = r.u16("size")
    if size != len(data) - 2:
        raise r.fail("size", f"says {size} bytes, the file holds {len(data) - 2} after it")
    key_type = r.u16("type")
    name_alg = r.u16("nameAlg")
    attributes = r.u32("objectAttributes")
    r.tpm2b("authPolicy")
    sym = r.u16("parameters.symmetric.algorithm")
    if sym != TPM_ALG_NULL:
        r.u16("parameters.symmetric.keyBits")
        r.u16("parameters.symmetric.mode")
    key: PublicKey
    if key_type == TPM_ALG_RSA:
        _skip_scheme(r, "parameters.scheme")
        key_bits = r.u16("parameters.keyBits")
        exponent = r.u32("parameters.exponent") or 65537
        modulus = r.tpm2b("unique.rsa")
        r.end()
        n = int.from_bytes(modulus, "big")
        if key_bits not in (1024, 2048, 3072, 4096) or n.bit_length() != key_bits:
            raise InputError(source, f"TPM2B_PUBLIC unique.rsa: a {n.bit_length()}-bit modulus "
                             f"for keyBits {key_bits}")  # fmt: skip
        if exponent < 3 or exponent % 2 == 0:
            raise InputError(source, f"TPM2B_PUBLIC parameters.exponent: {exponent} is not valid")
        try:
            key = rsa.RSAPublicNumbers(exponent, n).public_key()
        except ValueError as e:
            raise InputError(source, f"TPM2B_PUBLIC unique.rsa: {e}") from None
    elif key_type == TPM_ALG_ECC:
        _skip_scheme(r, "parameters.scheme")
        curve_id = r.u16("parameters.curveID")
        _skip_scheme(r, "parameters.kdf")
        x = r.tpm2b("unique.ecc.x")
        y = r.tpm2b("unique.ecc.y")
        r.end()
        curve = CURVES.get(curve_id)
        if curve is None:
            raise InputError(source, f"TPM2B_PUBLIC parameters.curveID: 0x{curve_id:04x} is not "
                             "NIST P-256, P-384 or P-521")  # fmt: skip
        try:
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        except ValueError:
            raise InputError(
                source, "TPM2B_PUBLIC unique.ecc: the point is not on the curve"
            ) from None
    else:
        raise InputError(source, f"TPM2B_PUBLIC type: 0x{key_type:04x} is neither RSA nor ECC")
    return AkPublic(key, attributes, name_alg)


def read_bounded(path: str, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, at most ``limit``; one-line errors.  Only a regular
    file is read: a FIFO or a device (which could block or never end) is refused
    before anything is read (`open_input`)."""
    try:
        with open_input(path, max_size=None) as f:
            data = f.read(limit + 1)
    except InputError as e:
        raise InputError(path, f"cannot read the {what}: {e.problem}") from None
    except OSError as e:
        raise InputError(path, f"cannot read the {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(path, f"larger than {limit} bytes; not a {what}")
    return data
