"""TPM return codes, decoded into named `TpmReturnCode` errors.

A measured boot stops on any non-zero return code, so the point of decoding
is the message an admin reads: "TPM2_PCR_Extend: TPM returned TPM_RC_VALUE
(0x184) (handle 1)" says "PCR index out of range"; "rc 0x184" says nothing.

TPM 1.2 codes are flat numbers (TCG TPM Main Part 2, section 16 "Return
Codes"): ``TPM_BASE`` (0) plus an offset, ``TPM_VENDOR_ERROR`` (0x400) for
vendor codes and ``TPM_NON_FATAL`` (0x800) for "try again" codes.

TPM 2.0 codes carry structure (TPM 2.0 Part 2, section 6.6 "TPM_RC"):

* format zero (bit 7 clear): bit 8 (``RC_VER1``) marks a 2.0 code (a clear
  bit 8 is a TPM 1.2 code, except ``TPM_RC_BAD_TAG`` 0x01E), bit 10 a
  vendor code and bit 11 (``RC_WARN``) a warning;
* format one (bit 7 set, ``RC_FMT1``): the error number is in bits 0-5, and
  bits 6 and 8-11 say where it applies: bit 6 set means parameter N (bits
  8-11); bit 6 clear means handle N (bits 8-10), or session N when bit 11
  is also set.  N = 0 means "not tied to one".

Decoding is a table lookup so that the names can be checked against the
spec line by line.
"""

from __future__ import annotations

from pvgrub_py.tpm.errors import TpmReturnCode

# --- TPM 1.2 (TPM Main Part 2, section 16) -------------------------------------

TPM12_VENDOR_ERROR = 0x400
TPM12_NON_FATAL = 0x800

_TPM12_FATAL_NAMES: tuple[str, ...] = (
    "TPM_SUCCESS",  # 0
    "TPM_AUTHFAIL",
    "TPM_BADINDEX",
    "TPM_BAD_PARAMETER",
    "TPM_AUDITFAILURE",
    "TPM_CLEAR_DISABLED",
    "TPM_DEACTIVATED",
    "TPM_DISABLED",
    "TPM_DISABLED_CMD",
    "TPM_FAIL",
    "TPM_BAD_ORDINAL",  # 10
    "TPM_INSTALL_DISABLED",
    "TPM_INVALID_KEYHANDLE",
    "TPM_KEYNOTFOUND",
    "TPM_INAPPROPRIATE_ENC",
    "TPM_MIGRATEFAIL",
    "TPM_INVALID_PCR_INFO",
    "TPM_NOSPACE",
    "TPM_NOSRK",
    "TPM_NOTSEALED_BLOB",
    "TPM_OWNER_SET",  # 20
    "TPM_RESOURCES",
    "TPM_SHORTRANDOM",
    "TPM_SIZE",
    "TPM_WRONGPCRVAL",
    "TPM_BAD_PARAM_SIZE",
    "TPM_SHA_THREAD",
    "TPM_SHA_ERROR",
    "TPM_FAILEDSELFTEST",
    "TPM_AUTH2FAIL",
    "TPM_BADTAG",  # 30
    "TPM_IOERROR",
    "TPM_ENCRYPT_ERROR",
    "TPM_DECRYPT_ERROR",
    "TPM_INVALID_AUTHHANDLE",
    "TPM_NO_ENDORSEMENT",
    "TPM_INVALID_KEYUSAGE",
    "TPM_WRONG_ENTITYTYPE",
    "TPM_INVALID_POSTINIT",
    "TPM_INAPPROPRIATE_SIG",
    "TPM_BAD_KEY_PROPERTY",  # 40
    "TPM_BAD_MIGRATION",
    "TPM_BAD_SCHEME",
    "TPM_BAD_DATASIZE",
    "TPM_BAD_MODE",
    "TPM_BAD_PRESENCE",
    "TPM_BAD_VERSION",
    "TPM_NO_WRAP_TRANSPORT",
    "TPM_AUDITFAIL_UNSUCCESSFUL",
    "TPM_AUDITFAIL_SUCCESSFUL",
    "TPM_NOTRESETABLE",  # 50
    "TPM_NOTLOCAL",
    "TPM_BAD_TYPE",
    "TPM_INVALID_RESOURCE",
    "TPM_NOTFIPS",
    "TPM_INVALID_FAMILY",
    "TPM_NO_NV_PERMISSION",
    "TPM_REQUIRES_SIGN",
    "TPM_KEY_NOTSUPPORTED",
    "TPM_AUTH_CONFLICT",
    "TPM_AREA_LOCKED",  # 60
    "TPM_BAD_LOCALITY",
    "TPM_READ_ONLY",
    "TPM_PER_NOWRITE",
    "TPM_FAMILYCOUNT",
    "TPM_WRITE_LOCKED",
    "TPM_BAD_ATTRIBUTES",
    "TPM_INVALID_STRUCTURE",
    "TPM_KEY_OWNER_CONTROL",
    "TPM_BAD_COUNTER",
    "TPM_NOT_FULLWRITE",  # 70
    "TPM_CONTEXT_GAP",
    "TPM_MAXNVWRITES",
    "TPM_NOOPERATOR",
    "TPM_RESOURCEMISSING",
    "TPM_DELEGATE_LOCK",
    "TPM_DELEGATE_FAMILY",
    "TPM_DELEGATE_ADMIN",
    "TPM_TRANSPORT_NOTEXCLUSIVE",
    "TPM_OWNER_CONTROL",
    "TPM_DAA_RESOURCES",  # 80
    "TPM_DAA_INPUT_DATA0",
    "TPM_DAA_INPUT_DATA1",
    "TPM_DAA_ISSUER_SETTINGS",
    "TPM_DAA_TPM_SETTINGS",
    "TPM_DAA_STAGE",
    "TPM_DAA_ISSUER_VALIDITY",
    "TPM_DAA_WRONG_W",
    "TPM_BAD_HANDLE",
    "TPM_BAD_DELEGATE",
    "TPM_BADCONTEXT",  # 90
    "TPM_TOOMANYCONTEXTS",
    "TPM_MA_TICKET_SIGNATURE",
    "TPM_MA_DESTINATION",
    "TPM_MA_SOURCE",
    "TPM_MA_AUTHORITY",
)

#: Every TPM 1.2 return code with a TCG name.  96 (0x60) is unassigned.
TPM12_NAMES: dict[int, str] = {
    **dict(enumerate(_TPM12_FATAL_NAMES)),
    97: "TPM_PERMANENTEK",
    98: "TPM_BAD_SIGNATURE",
    99: "TPM_NOCONTEXTSPACE",
    TPM12_NON_FATAL + 0: "TPM_RETRY",
    TPM12_NON_FATAL + 1: "TPM_NEEDS_SELFTEST",
    TPM12_NON_FATAL + 2: "TPM_DOING_SELFTEST",
    TPM12_NON_FATAL + 3: "TPM_DEFEND_LOCK_RUNNING",
}

# --- TPM 2.0 (TPM 2.0 Part 2, section 6.6) -------------------------------------

RC_VER1 = 0x100
RC_FMT1 = 0x080
RC_WARN = 0x900
TPM_RC_BAD_TAG = 0x01E

_FMT1_P = 0x040  # format one: the number names a parameter
_FMT1_S = 0x800  # format one, P clear: the number names a session (not a handle)
_FMT0_T = 0x400  # format zero: vendor-defined code

#: Format-zero codes (no location), keyed by the full code.
TPM2_FMT0_NAMES: dict[int, str] = {
    TPM_RC_BAD_TAG: "TPM_RC_BAD_TAG",
    RC_VER1 + 0x000: "TPM_RC_INITIALIZE",
    RC_VER1 + 0x001: "TPM_RC_FAILURE",
    RC_VER1 + 0x003: "TPM_RC_SEQUENCE",
    RC_VER1 + 0x00B: "TPM_RC_PRIVATE",
    RC_VER1 + 0x019: "TPM_RC_HMAC",
    RC_VER1 + 0x020: "TPM_RC_DISABLED",
    RC_VER1 + 0x021: "TPM_RC_EXCLUSIVE",
    RC_VER1 + 0x024: "TPM_RC_AUTH_TYPE",
    RC_VER1 + 0x025: "TPM_RC_AUTH_MISSING",
    RC_VER1 + 0x026: "TPM_RC_POLICY",
    RC_VER1 + 0x027: "TPM_RC_PCR",
    RC_VER1 + 0x028: "TPM_RC_PCR_CHANGED",
    RC_VER1 + 0x02D: "TPM_RC_UPGRADE",
    RC_VER1 + 0x02E: "TPM_RC_TOO_MANY_CONTEXTS",
    RC_VER1 + 0x02F: "TPM_RC_AUTH_UNAVAILABLE",
    RC_VER1 + 0x030: "TPM_RC_REBOOT",
    RC_VER1 + 0x031: "TPM_RC_UNBALANCED",
    RC_VER1 + 0x042: "TPM_RC_COMMAND_SIZE",
    RC_VER1 + 0x043: "TPM_RC_COMMAND_CODE",
    RC_VER1 + 0x044: "TPM_RC_AUTHSIZE",
    RC_VER1 + 0x045: "TPM_RC_AUTH_CONTEXT",
    RC_VER1 + 0x046: "TPM_RC_NV_RANGE",
    RC_VER1 + 0x047: "TPM_RC_NV_SIZE",
    RC_VER1 + 0x048: "TPM_RC_NV_LOCKED",
    RC_VER1 + 0x049: "TPM_RC_NV_AUTHORIZATION",
    RC_VER1 + 0x04A: "TPM_RC_NV_UNINITIALIZED",
    RC_VER1 + 0x04B: "TPM_RC_NV_SPACE",
    RC_VER1 + 0x04C: "TPM_RC_NV_DEFINED",
    RC_VER1 + 0x050: "TPM_RC_BAD_CONTEXT",
    RC_VER1 + 0x051: "TPM_RC_CPHASH",
    RC_VER1 + 0x052: "TPM_RC_PARENT",
    RC_VER1 + 0x053: "TPM_RC_NEEDS_TEST",
    RC_VER1 + 0x054: "TPM_RC_NO_RESULT",
    RC_VER1 + 0x055: "TPM_RC_SENSITIVE",
    RC_VER1 + 0x056: "TPM_RC_READ_ONLY",
    RC_WARN + 0x001: "TPM_RC_CONTEXT_GAP",
    RC_WARN + 0x002: "TPM_RC_OBJECT_MEMORY",
    RC_WARN + 0x003: "TPM_RC_SESSION_MEMORY",
    RC_WARN + 0x004: "TPM_RC_MEMORY",
    RC_WARN + 0x005: "TPM_RC_SESSION_HANDLES",
    RC_WARN + 0x006: "TPM_RC_OBJECT_HANDLES",
    RC_WARN + 0x007: "TPM_RC_LOCALITY",
    RC_WARN + 0x008: "TPM_RC_YIELDED",
    RC_WARN + 0x009: "TPM_RC_CANCELED",
    RC_WARN + 0x00A: "TPM_RC_TESTING",
    **{RC_WARN + 0x010 + n: f"TPM_RC_REFERENCE_H{n}" for n in range(7)},
    **{RC_WARN + 0x018 + n: f"TPM_RC_REFERENCE_S{n}" for n in range(7)},
    RC_WARN + 0x020: "TPM_RC_NV_RATE",
    RC_WARN + 0x021: "TPM_RC_LOCKOUT",
    RC_WARN + 0x022: "TPM_RC_RETRY",
    RC_WARN + 0x023: "TPM_RC_NV_UNAVAILABLE",
    RC_WARN + 0x07F: "TPM_RC_NOT_USED",
}

#: Format-one codes, keyed by ``RC_FMT1 + error number`` (location bits cleared).
TPM2_FMT1_NAMES: dict[int, str] = {
    RC_FMT1 + 0x001: "TPM_RC_ASYMMETRIC",
    RC_FMT1 + 0x002: "TPM_RC_ATTRIBUTES",
    RC_FMT1 + 0x003: "TPM_RC_HASH",
    RC_FMT1 + 0x004: "TPM_RC_VALUE",
    RC_FMT1 + 0x005: "TPM_RC_HIERARCHY",
    RC_FMT1 + 0x007: "TPM_RC_KEY_SIZE",
    RC_FMT1 + 0x008: "TPM_RC_MGF",
    RC_FMT1 + 0x009: "TPM_RC_MODE",
    RC_FMT1 + 0x00A: "TPM_RC_TYPE",
    RC_FMT1 + 0x00B: "TPM_RC_HANDLE",
    RC_FMT1 + 0x00C: "TPM_RC_KDF",
    RC_FMT1 + 0x00D: "TPM_RC_RANGE",
    RC_FMT1 + 0x00E: "TPM_RC_AUTH_FAIL",
    RC_FMT1 + 0x00F: "TPM_RC_NONCE",
    RC_FMT1 + 0x010: "TPM_RC_PP",
    RC_FMT1 + 0x012: "TPM_RC_SCHEME",
    RC_FMT1 + 0x015: "TPM_RC_SIZE",
    RC_FMT1 + 0x016: "TPM_RC_SYMMETRIC",
    RC_FMT1 + 0x017: "TPM_RC_TAG",
    RC_FMT1 + 0x018: "TPM_RC_SELECTOR",
    RC_FMT1 + 0x01A: "TPM_RC_INSUFFICIENT",
    RC_FMT1 + 0x01B: "TPM_RC_SIGNATURE",
    RC_FMT1 + 0x01C: "TPM_RC_KEY",
    RC_FMT1 + 0x01D: "TPM_RC_POLICY_FAIL",
    RC_FMT1 + 0x01F: "TPM_RC_INTEGRITY",
    RC_FMT1 + 0x020: "TPM_RC_TICKET",
    RC_FMT1 + 0x021: "TPM_RC_RESERVED_BITS",
    RC_FMT1 + 0x022: "TPM_RC_BAD_AUTH",
    RC_FMT1 + 0x023: "TPM_RC_EXPIRED",
    RC_FMT1 + 0x024: "TPM_RC_POLICY_CC",
    RC_FMT1 + 0x025: "TPM_RC_BINDING",
    RC_FMT1 + 0x026: "TPM_RC_CURVE",
    RC_FMT1 + 0x027: "TPM_RC_ECC_POINT",
    RC_FMT1 + 0x028: "TPM_RC_FW_LIMITED",
    RC_FMT1 + 0x029: "TPM_RC_SVN_LIMITED",
    RC_FMT1 + 0x030: "TPM_RC_CHANNEL",
    RC_FMT1 + 0x031: "TPM_RC_CHANNEL_KEY",
}

#: Response tags that tell which TPM version wrote a response header.
TPM12_RESPONSE_TAGS = frozenset({0x00C4, 0x00C5, 0x00C6})
TPM2_RESPONSE_TAGS = frozenset({0x8001, 0x8002})


def generic_name(code: int) -> str:
    """The name for a code no table knows; it keeps the number visible."""
    return f"TPM_RC_0x{code:x}"


def tpm12_error(code: int, command: str = "") -> TpmReturnCode:
    """Decode a TPM 1.2 ``returnCode`` (TPM Main Part 2, section 16)."""
    name = TPM12_NAMES.get(code)
    if name is not None:
        return TpmReturnCode(code, name, command=command)
    detail = ""
    if code <= 0xFFF and code & TPM12_NON_FATAL:
        detail = "non-fatal: the command may be retried"
    elif code <= 0xFFF and code & TPM12_VENDOR_ERROR:
        detail = "vendor-specific"
    return TpmReturnCode(code, generic_name(code), detail, command)


def _fmt1_location(code: int) -> str:
    """Where a format-one code points: parameter, handle or session N."""
    number = (code >> 8) & 0xF
    if code & _FMT1_P:
        return f"parameter {number}" if number else ""
    if code & _FMT1_S:
        return f"session {number & 0x7}"
    return f"handle {number}" if number else ""


def tpm2_error(code: int, command: str = "") -> TpmReturnCode:
    """Decode a TPM 2.0 ``responseCode`` (TPM 2.0 Part 2, section 6.6).

    Format-one codes are named by their error number alone, and ``detail``
    carries the parameter/handle/session they point at (Linux's
    ``tpm2_rc_value`` strips the same bits).
    """
    if code & ~0xFFF:
        # Bits above 11 are never set by a TPM; a TSS layer code or garbage.
        return TpmReturnCode(code, generic_name(code), command=command)
    if code & RC_FMT1:
        error = RC_FMT1 | (code & 0x3F)
        fmt1 = TPM2_FMT1_NAMES.get(error, generic_name(error))
        return TpmReturnCode(code, fmt1, _fmt1_location(code), command)
    fmt0 = TPM2_FMT0_NAMES.get(code)
    if fmt0 is not None:
        return TpmReturnCode(code, fmt0, command=command)
    if not code & RC_VER1:
        # Part 2 section 6.6.2: format zero with V clear is a TPM 1.2 code.
        old = tpm12_error(code)
        return TpmReturnCode(code, old.name, "a TPM 1.2 return code", command)
    detail = "vendor-specific" if code & _FMT0_T else ""
    return TpmReturnCode(code, generic_name(code), detail, command)


def foreign_version_error(tag: int, code: int, command: str = "") -> TpmReturnCode:
    """Decode a refusal whose response tag belongs to the other TPM version.

    A TPM 2.0 that receives TPM 1.2 bytes answers in its own format: swtpm
    --tpm2 replies to TPM_Extend with tag 0x8001 and rc 0x84 (TPM_RC_VALUE),
    as observed with swtpm 0.7.1 / libtpms 0.9.2 (Linux ``tpm2_probe`` in
    drivers/char/tpm/tpm2-cmd.c tells the versions apart by this response
    tag too); a TPM 1.2 answers a 2.0 command with tag
    0x00C4 and TPM_BADTAG.  Decoding the code in the version the tag names,
    and saying so, turns "bad answer" into "this vTPM speaks the other
    version", which is what the admin has to fix.
    """
    if tag in TPM2_RESPONSE_TAGS:
        err, speaks = tpm2_error(code), "TPM 2.0"
    else:
        err, speaks = tpm12_error(code), "TPM 1.2"
    where = f"; {err.detail}" if err.detail else ""
    detail = f"response tag 0x{tag:04x}: this TPM speaks {speaks}{where}"
    return TpmReturnCode(code, err.name, detail, command)


# --- codes a vTPM backend answers with itself --------------------------------------
#: TPM 1.2 ``TPM_FAIL`` (Part 2 section 16): "the operation failed".
TPM12_FAIL = 0x009
#: TPM 2.0 ``TPM_RC_FAILURE`` (Part 2 section 6.6.3): "commands not being
#: accepted because of a TPM failure".
TPM2_RC_FAILURE = RC_VER1 + 0x001
