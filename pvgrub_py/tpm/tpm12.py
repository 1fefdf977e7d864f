"""TPM 1.2 wire codecs for the commands a measured boot sends.

pv-grub's ``tpm_hash2pcr()`` sends exactly TPM_Extend to the Xen vTPM (a
TPM 1.2), and a boot helper also needs TPM_Startup (a fresh swtpm refuses
everything with TPM_INVALID_POSTINIT until it gets one) and TPM_PCRRead (to
check the result).  Layouts are TCG TPM Main Part 3 sections 3.2
(TPM_Startup), 16.1 (TPM_Extend) and 16.2 (TPM_PCRRead); the header and
return codes are Part 2.  All integers are big-endian.

Pure codecs: bytes in, frozen dataclasses out, no I/O.  Every malformed
response raises `TpmProtocolError` naming the field and the sizes involved;
every refusal raises the `TpmReturnCode` that `rc.tpm12_error` names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.tpm.header import HEADER, HEADER_SIZE
from pvgrub_py.tpm.rc import TPM2_RESPONSE_TAGS, foreign_version_error, tpm12_error

TPM_TAG_RQU_COMMAND = 0x00C1
TPM_TAG_RSP_COMMAND = 0x00C4

TPM_ORD_EXTEND = 0x00000014
TPM_ORD_PCR_READ = 0x00000015
TPM_ORD_STARTUP = 0x00000099

# TPM_STARTUP_TYPE (Part 2 section 4.5).
TPM_ST_CLEAR = 0x0001
TPM_ST_STATE = 0x0002
TPM_ST_DEACTIVATED = 0x0003

#: TPM 1.2 PCRs are SHA-1 only.
TPM_DIGEST_SIZE = 20

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _check_uint(value: int, bits: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field} {value} does not fit in u{bits}")


def _check_digest(digest: bytes, field: str) -> bytes:
    digest = bytes(digest)
    if len(digest) != TPM_DIGEST_SIZE:
        raise ValueError(
            f"{field} must be exactly {TPM_DIGEST_SIZE} bytes (SHA-1), got {len(digest)}"
        )
    return digest


def _check_size_field(declared: int, actual: int, what: str) -> None:
    """paramSize covers the whole packet; a mismatch means a lost or extra read."""
    if declared == actual:
        return
    gap = abs(actual - declared)
    how = f"{gap} {'byte' if gap == 1 else 'bytes'} {'short' if actual < declared else 'too many'}"
    raise TpmProtocolError(
        f"{what}: paramSize field says {declared} bytes but {actual} arrived ({how})"
    )


def _check_body_size(size: int, body_size: int, layout: str, what: str) -> None:
    expected = HEADER_SIZE + body_size
    if size != expected:
        raise TpmProtocolError(f"{what}: expected {expected} bytes ({layout}), got {size}")


def _encode_command(ordinal: int, body: bytes) -> bytes:
    return HEADER.pack(TPM_TAG_RQU_COMMAND, HEADER_SIZE + len(body), ordinal) + body


def _encode_response(body: bytes, code: int = 0) -> bytes:
    return HEADER.pack(TPM_TAG_RSP_COMMAND, HEADER_SIZE + len(body), code) + body


def _command_body(data: bytes, ordinal: int, name: str, body_size: int, layout: str) -> bytes:
    """Check a request header for ``name`` and return its parameters."""
    what = f"{name} command"
    if len(data) < HEADER_SIZE:
        raise TpmProtocolError(f"{what}: {len(data)} bytes, shorter than the 10-byte header")
    tag, size, got_ordinal = HEADER.unpack_from(data)
    if tag != TPM_TAG_RQU_COMMAND:
        raise TpmProtocolError(f"{what}: tag 0x{tag:04x}, expected 0x00c1 (TPM_TAG_RQU_COMMAND)")
    _check_size_field(size, len(data), what)
    if got_ordinal != ordinal:
        raise TpmProtocolError(f"{what}: ordinal 0x{got_ordinal:x}, expected 0x{ordinal:x}")
    _check_body_size(size, body_size, layout, what)
    return bytes(data[HEADER_SIZE:])


def _response_body(data: bytes, name: str, body_size: int, layout: str) -> bytes:
    """Check a response to ``name`` and return its output parameters.

    Raises the decoded return code for a refusal.  A TPM 1.2 refusal carries
    the header alone (observed with swtpm 0.7.1 / libtpms 0.9.2 in TPM 1.2
    mode), so a longer one is malformed.  A TPM 2.0 tag on the answer
    (TPM_ST_NO_SESSIONS or TPM_ST_SESSIONS, TPM 2.0 Part 2 section 6.9)
    means the TPM is a 2.0 one.
    """
    what = f"{name} response"
    if len(data) < HEADER_SIZE:
        raise TpmProtocolError(f"{what}: {len(data)} bytes, shorter than the 10-byte header")
    tag, size, code = HEADER.unpack_from(data)
    if tag != TPM_TAG_RSP_COMMAND and tag not in TPM2_RESPONSE_TAGS:
        raise TpmProtocolError(f"{what}: tag 0x{tag:04x}, expected 0x00c4 (TPM_TAG_RSP_COMMAND)")
    _check_size_field(size, len(data), what)
    if tag in TPM2_RESPONSE_TAGS:
        if code == 0:
            raise TpmProtocolError(
                f"{what}: TPM 2.0 tag 0x{tag:04x} with success: not a TPM 1.2 answer"
            )
        raise foreign_version_error(tag, code, name)
    if code != 0:
        if size != HEADER_SIZE:
            raise TpmProtocolError(
                f"{what}: {tpm12_error(code).name} (0x{code:x}) with paramSize {size}; "
                f"error responses are {HEADER_SIZE} bytes"
            )
        raise tpm12_error(code, name)
    _check_body_size(size, body_size, layout, what)
    return bytes(data[HEADER_SIZE:])


def encode_error_response(code: int) -> bytes:
    """A 10-byte TPM 1.2 refusal, as a vTPM or a simulator sends one."""
    _check_uint(code, 32, "returnCode")
    if code == 0:
        raise ValueError("returnCode 0 is success, not an error")
    return _encode_response(b"", code)


# --- TPM_Startup (Part 3 section 3.2) --------------------------------------------


@dataclass(frozen=True)
class StartupCommand:
    """TPM_Startup: the first command after TPM_Init (power on)."""

    startup_type: int = TPM_ST_CLEAR

    def __post_init__(self) -> None:
        _check_uint(self.startup_type, 16, "startupType")

    def encode(self) -> bytes:
        return _encode_command(TPM_ORD_STARTUP, _U16.pack(self.startup_type))


@dataclass(frozen=True)
class StartupResponse:
    """TPM_Startup returns no output parameters."""

    def encode(self) -> bytes:
        return _encode_response(b"")


def decode_startup_command(data: bytes) -> StartupCommand:
    body = _command_body(data, TPM_ORD_STARTUP, "TPM_Startup", 2, "header + startupType u16")
    (startup_type,) = _U16.unpack(body)
    return StartupCommand(startup_type)


def decode_startup_response(data: bytes) -> StartupResponse:
    _response_body(data, "TPM_Startup", 0, "header only")
    return StartupResponse()


def build_startup(startup_type: int = TPM_ST_CLEAR) -> bytes:
    return StartupCommand(startup_type).encode()


def parse_startup_response(data: bytes) -> None:
    """Accept only a successful TPM_Startup answer.

    A second TPM_Startup gets TPM_INVALID_POSTINIT (0x26); callers that start
    a vTPM which may already be started catch that `TpmReturnCode`.
    """
    decode_startup_response(data)


# --- TPM_Extend (Part 3 section 16.1) --------------------------------------------


@dataclass(frozen=True)
class ExtendCommand:
    """TPM_Extend: PCR[pcr] = SHA1(PCR[pcr] || digest), as pv-grub sends it."""

    pcr: int
    digest: bytes

    def __post_init__(self) -> None:
        _check_uint(self.pcr, 32, "pcrNum")
        object.__setattr__(self, "digest", _check_digest(self.digest, "inDigest"))

    def encode(self) -> bytes:
        return _encode_command(TPM_ORD_EXTEND, _U32.pack(self.pcr) + self.digest)


@dataclass(frozen=True)
class ExtendResponse:
    """The PCR value after the extend (outDigest)."""

    pcr_value: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcr_value", _check_digest(self.pcr_value, "outDigest"))

    def encode(self) -> bytes:
        return _encode_response(self.pcr_value)


def decode_extend_command(data: bytes) -> ExtendCommand:
    body = _command_body(
        data, TPM_ORD_EXTEND, "TPM_Extend", 4 + TPM_DIGEST_SIZE, "header + pcrNum + inDigest[20]"
    )
    (pcr,) = _U32.unpack_from(body)
    return ExtendCommand(pcr, body[4:])


def decode_extend_response(data: bytes) -> ExtendResponse:
    body = _response_body(data, "TPM_Extend", TPM_DIGEST_SIZE, "header + outDigest[20]")
    return ExtendResponse(body)


def build_extend(pcr: int, digest20: bytes) -> bytes:
    return ExtendCommand(pcr, digest20).encode()


def parse_extend_response(data: bytes) -> bytes:
    """The new PCR value, so the caller can compare it with its own replay."""
    return decode_extend_response(data).pcr_value


# --- TPM_PCRRead (Part 3 section 16.2) -------------------------------------------


@dataclass(frozen=True)
class PcrReadCommand:
    pcr: int

    def __post_init__(self) -> None:
        _check_uint(self.pcr, 32, "pcrIndex")

    def encode(self) -> bytes:
        return _encode_command(TPM_ORD_PCR_READ, _U32.pack(self.pcr))


@dataclass(frozen=True)
class PcrReadResponse:
    pcr_value: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcr_value", _check_digest(self.pcr_value, "outDigest"))

    def encode(self) -> bytes:
        return _encode_response(self.pcr_value)


def decode_pcr_read_command(data: bytes) -> PcrReadCommand:
    body = _command_body(data, TPM_ORD_PCR_READ, "TPM_PCRRead", 4, "header + pcrIndex")
    (pcr,) = _U32.unpack(body)
    return PcrReadCommand(pcr)


def decode_pcr_read_response(data: bytes) -> PcrReadResponse:
    body = _response_body(data, "TPM_PCRRead", TPM_DIGEST_SIZE, "header + outDigest[20]")
    return PcrReadResponse(body)


def build_pcr_read(pcr: int) -> bytes:
    return PcrReadCommand(pcr).encode()


def parse_pcr_read_response(data: bytes) -> bytes:
    """The 20-byte PCR value.  PCRs 17-22 read as ff..ff until a DRTM resets them."""
    return decode_pcr_read_response(data).pcr_value
