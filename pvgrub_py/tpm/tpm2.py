"""TPM 2.0 wire codecs for the commands a measured boot sends.

The Xen vTPM is TPM 1.2 only (Xen docs/man/xen-vtpm.7.pod), but a
libtpms-based vTPM or swtpm carries TPM 2.0 bytes over the same tpmif page
(xen/include/public/io/tpmif.h: the page holds opaque command bytes).
Measuring there takes: TPM2_Startup / TPM2_Shutdown (Part 3 sections 9.3 and 9.4),
TPM2_GetCapability(TPM_CAP_PCRS) to learn the allocated banks (Part 3
section 30.2), TPM2_PCR_Extend into every active bank at once, as Linux's
``tpm2_pcr_extend`` does (Part 3 section 22.2), and TPM2_PCR_Read to check
(Part 3 section 22.4).  Structures are from Part 2; all integers are
big-endian.

Pure codecs: bytes in, frozen dataclasses out, no I/O.  Every malformed
response raises `TpmProtocolError` naming the field, the offset and the sizes
involved; every refusal raises the `TpmReturnCode` that `rc.tpm2_error`
names, with the command it answered.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from pvgrub_py.bytecursor import ByteCursor
from pvgrub_py.record import record
from pvgrub_py.tpm.algorithms import BY_ID, HashAlgorithm
from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.tpm.header import HEADER, HEADER_SIZE
from pvgrub_py.tpm.rc import (
    TPM2_RESPONSE_TAGS,
    TPM12_RESPONSE_TAGS,
    foreign_version_error,
    tpm2_error,
)

# TPM_ST (Part 2 section 6.9).
TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002

# TPM_CC (Part 2 section 6.5.2).
TPM_CC_STARTUP = 0x00000144
TPM_CC_SHUTDOWN = 0x00000145
TPM_CC_GET_CAPABILITY = 0x0000017A
TPM_CC_PCR_READ = 0x0000017E
TPM_CC_PCR_EXTEND = 0x00000182

# TPM_SU (Part 2 section 6.10).
TPM_SU_CLEAR = 0x0000
TPM_SU_STATE = 0x0001

# TPM_CAP (Part 2 section 6.12).
TPM_CAP_HANDLES = 0x00000001
TPM_CAP_PCRS = 0x00000005
TPM_CAP_TPM_PROPERTIES = 0x00000006
_CAP_NAMES = {
    TPM_CAP_HANDLES: "TPM_CAP_HANDLES",
    TPM_CAP_PCRS: "TPM_CAP_PCRS",
    TPM_CAP_TPM_PROPERTIES: "TPM_CAP_TPM_PROPERTIES",
}

#: The password session handle (Part 2 section 7.4, TPM_RS_PW).
TPM_RS_PW = 0x40000009
#: TPMA_SESSION.continueSession; swtpm sets it in password-session responses.
TPMA_SESSION_CONTINUE_SESSION = 0x01

#: PC Client TPMs have 24 PCRs, so a pcrSelect bitmap is at least 3 bytes.
PCR_SELECT_MIN = 3
#: A PCR handle is TPM_HT_PCR (0x00) in the top byte plus the PCR index.
MAX_PCR_HANDLE = 0x00FFFFFF

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

_TAG_NAMES = {TPM_ST_NO_SESSIONS: "TPM_ST_NO_SESSIONS", TPM_ST_SESSIONS: "TPM_ST_SESSIONS"}


# --- small helpers ---------------------------------------------------------------


def _check_uint(value: int, bits: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field} {value} does not fit in u{bits}")


def _check_digest(alg: HashAlgorithm, digest: bytes, field: str) -> bytes:
    digest = bytes(digest)
    if len(digest) != alg.digest_size:
        raise ValueError(
            f"{field}: a {alg.name} digest is {alg.digest_size} bytes, got {len(digest)}"
        )
    return digest


class _Reader(ByteCursor[bytes]):
    """The shared cursor (big-endian) over a packet; short reads name the field."""

    __slots__ = ("what",)

    def __init__(self, data: bytes, what: str, offset: int = 0) -> None:
        super().__init__(data, "big", self._truncated, offset)
        self.what = what

    @property
    def offset(self) -> int:
        return self.pos

    def _truncated(self, field: str, at: int, size: int, left: int) -> TpmProtocolError:
        return TpmProtocolError(
            f"{self.what}: truncated {field} at offset {at}: need {size} bytes, {left} left"
        )

    def algorithm(self, field: str) -> HashAlgorithm:
        at = self.offset
        alg_id = self.u16(field)
        alg = BY_ID.get(alg_id)
        if alg is None:
            raise TpmProtocolError(
                f"{self.what}: unknown hashAlg 0x{alg_id:04x} in {field} at offset {at}"
            )
        return alg

    def finish(self) -> None:
        extra = len(self.data) - self.offset
        if extra:
            raise TpmProtocolError(
                f"{self.what}: {extra} unexpected bytes after the last field, "
                f"at offset {self.offset}"
            )


def _size_mismatch(declared: int, actual: int, what: str) -> TpmProtocolError:
    gap = abs(actual - declared)
    how = f"{gap} {'byte' if gap == 1 else 'bytes'} {'short' if actual < declared else 'too many'}"
    return TpmProtocolError(
        f"{what}: size field says {declared} bytes but {actual} arrived ({how})"
    )


def _encode_command(tag: int, code: int, body: bytes) -> bytes:
    return HEADER.pack(tag, HEADER_SIZE + len(body), code) + body


def _encode_response(tag: int, body: bytes, code: int = 0) -> bytes:
    return HEADER.pack(tag, HEADER_SIZE + len(body), code) + body


def _command_reader(data: bytes, tag: int, code: int, name: str) -> _Reader:
    """Check a request header for ``name``; return a cursor on its parameters."""
    what = f"{name} command"
    if len(data) < HEADER_SIZE:
        raise TpmProtocolError(f"{what}: {len(data)} bytes, shorter than the 10-byte header")
    got_tag, size, got_code = HEADER.unpack_from(data)
    if got_tag != tag:
        raise TpmProtocolError(
            f"{what}: tag 0x{got_tag:04x}, expected 0x{tag:04x} ({_TAG_NAMES[tag]})"
        )
    if size != len(data):
        raise _size_mismatch(size, len(data), what)
    if got_code != code:
        raise TpmProtocolError(f"{what}: commandCode 0x{got_code:x}, expected 0x{code:x}")
    return _Reader(bytes(data), what, HEADER_SIZE)


def _response_reader(data: bytes, name: str, success_tag: int) -> _Reader:
    """Check a response to ``name``; return a cursor on its parameters.

    A refusal is header-only (Part 1, "Response Code": no handles,
    parameters or sessions follow an error); its tag should be
    TPM_ST_NO_SESSIONS, but the return code is what the caller needs, so
    either 2.0 tag is accepted.  A TPM 1.2 tag means the TPM speaks the
    other version.
    """
    what = f"{name} response"
    if len(data) < HEADER_SIZE:
        raise TpmProtocolError(f"{what}: {len(data)} bytes, shorter than the 10-byte header")
    tag, size, code = HEADER.unpack_from(data)
    if tag not in TPM2_RESPONSE_TAGS and tag not in TPM12_RESPONSE_TAGS:
        raise TpmProtocolError(
            f"{what}: tag 0x{tag:04x}, expected 0x{success_tag:04x} ({_TAG_NAMES[success_tag]})"
        )
    if size != len(data):
        raise _size_mismatch(size, len(data), what)
    if tag in TPM12_RESPONSE_TAGS:
        if code == 0:
            raise TpmProtocolError(
                f"{what}: TPM 1.2 tag 0x{tag:04x} with success: not a TPM 2.0 answer"
            )
        raise foreign_version_error(tag, code, name)
    if code != 0:
        if size != HEADER_SIZE:
            raise TpmProtocolError(
                f"{what}: {tpm2_error(code).name} (0x{code:x}) with size {size}; "
                f"error responses are {HEADER_SIZE} bytes"
            )
        raise tpm2_error(code, name)
    if tag != success_tag:
        raise TpmProtocolError(
            f"{what}: success with tag 0x{tag:04x}, expected 0x{success_tag:04x} "
            f"({_TAG_NAMES[success_tag]})"
        )
    return _Reader(bytes(data), what, HEADER_SIZE)


def encode_error_response(code: int) -> bytes:
    """A 10-byte TPM 2.0 refusal (tag TPM_ST_NO_SESSIONS), as a simulator sends one."""
    _check_uint(code, 32, "responseCode")
    if code == 0:
        raise ValueError("responseCode 0 is success, not an error")
    return _encode_response(TPM_ST_NO_SESSIONS, b"", code)


# --- TPMS_PCR_SELECTION / TPML_PCR_SELECTION (Part 2 sections 10.6.2, 10.9.7) ---------


@record(frozen=True)
class PcrSelection:
    """One bank and the PCRs chosen in it.

    ``pcrs`` is kept sorted and unique, so two selections of the same bits
    compare equal.  ``size_of_select`` is the bitmap length in bytes; PCR n
    is bit ``n & 7`` of byte ``n >> 3``.
    """

    alg: HashAlgorithm
    pcrs: tuple[int, ...] = ()
    size_of_select: int = PCR_SELECT_MIN

    def __post_init__(self) -> None:
        _check_uint(self.size_of_select, 8, "sizeofSelect")
        pcrs = tuple(sorted(set(self.pcrs)))
        for pcr in pcrs:
            _check_uint(pcr, 32, "PCR index")
            if pcr >= 8 * self.size_of_select:
                raise ValueError(
                    f"PCR {pcr} does not fit a {self.size_of_select}-byte pcrSelect bitmap"
                )
        object.__setattr__(self, "pcrs", pcrs)

    def bitmap(self) -> bytes:
        bits = bytearray(self.size_of_select)
        for pcr in self.pcrs:
            bits[pcr >> 3] |= 1 << (pcr & 7)
        return bytes(bits)

    def encode(self) -> bytes:
        return struct.pack(">HB", self.alg.alg_id, self.size_of_select) + self.bitmap()


def _encode_selections(selections: Sequence[PcrSelection]) -> bytes:
    return _U32.pack(len(selections)) + b"".join(s.encode() for s in selections)


def _read_selections(reader: _Reader, field: str) -> tuple[PcrSelection, ...]:
    count = reader.u32(f"{field}.count")
    selections = []
    for i in range(count):
        alg = reader.algorithm(f"{field}[{i}].hash")
        size = reader.u8(f"{field}[{i}].sizeofSelect")
        bitmap = reader.take(size, f"{field}[{i}].pcrSelect")
        pcrs = tuple(n for n in range(8 * size) if bitmap[n >> 3] & (1 << (n & 7)))
        selections.append(PcrSelection(alg, pcrs, size))
    return tuple(selections)


def _selection_slots(selections: Sequence[PcrSelection]) -> list[tuple[HashAlgorithm, int]]:
    """The (bank, PCR) each returned digest belongs to, in the TPM's order.

    Part 3 section 22.4: pcrValues holds one digest per bit set in
    pcrSelectionOut, bank by bank, PCRs ascending.
    """
    return [(s.alg, pcr) for s in selections for pcr in s.pcrs]


# --- TPM2_Startup / TPM2_Shutdown (Part 3 sections 9.3, 9.4) ---------------------------


@record(frozen=True)
class StartupCommand:
    """TPM2_Startup: the first command after _TPM_Init (power on)."""

    startup_type: int = TPM_SU_CLEAR

    def __post_init__(self) -> None:
        _check_uint(self.startup_type, 16, "startupType")

    def encode(self) -> bytes:
        return _encode_command(TPM_ST_NO_SESSIONS, TPM_CC_STARTUP, _U16.pack(self.startup_type))


@record(frozen=True)
class StartupResponse:
    """TPM2_Startup returns no parameters."""

    def encode(self) -> bytes:
        return _encode_response(TPM_ST_NO_SESSIONS, b"")


@record(frozen=True)
class ShutdownCommand:
    """TPM2_Shutdown: SU_STATE keeps PCRs across a Startup(SU_STATE) resume."""

    shutdown_type: int = TPM_SU_CLEAR

    def __post_init__(self) -> None:
        _check_uint(self.shutdown_type, 16, "shutdownType")

    def encode(self) -> bytes:
        return _encode_command(TPM_ST_NO_SESSIONS, TPM_CC_SHUTDOWN, _U16.pack(self.shutdown_type))


@record(frozen=True)
class ShutdownResponse:
    """TPM2_Shutdown returns no parameters."""

    def encode(self) -> bytes:
        return _encode_response(TPM_ST_NO_SESSIONS, b"")


def decode_startup_command(data: bytes) -> StartupCommand:
    reader = _command_reader(data, TPM_ST_NO_SESSIONS, TPM_CC_STARTUP, "TPM2_Startup")
    startup_type = reader.u16("startupType")
    reader.finish()
    return StartupCommand(startup_type)


def decode_startup_response(data: bytes) -> StartupResponse:
    _response_reader(data, "TPM2_Startup", TPM_ST_NO_SESSIONS).finish()
    return StartupResponse()


def decode_shutdown_command(data: bytes) -> ShutdownCommand:
    reader = _command_reader(data, TPM_ST_NO_SESSIONS, TPM_CC_SHUTDOWN, "TPM2_Shutdown")
    shutdown_type = reader.u16("shutdownType")
    reader.finish()
    return ShutdownCommand(shutdown_type)


def decode_shutdown_response(data: bytes) -> ShutdownResponse:
    _response_reader(data, "TPM2_Shutdown", TPM_ST_NO_SESSIONS).finish()
    return ShutdownResponse()


def build_startup(startup_type: int = TPM_SU_CLEAR) -> bytes:
    return StartupCommand(startup_type).encode()


def build_shutdown(shutdown_type: int = TPM_SU_CLEAR) -> bytes:
    return ShutdownCommand(shutdown_type).encode()


def parse_startup_response(data: bytes) -> None:
    """Accept only success; an already started TPM answers TPM_RC_INITIALIZE (0x100)."""
    decode_startup_response(data)


def parse_shutdown_response(data: bytes) -> None:
    decode_shutdown_response(data)


# --- TPM2_PCR_Extend (Part 3 section 22.2) ---------------------------------------------


@record(frozen=True)
class PcrExtendCommand:
    """TPM2_PCR_Extend of one PCR in several banks, authorised by an empty password.

    PCRs 0-15 have an empty authValue, so the TPM_RS_PW session carries no
    nonce and no HMAC (Part 1, "Password Authorizations"; Linux
    ``tpm_buf_append_auth``).
    Linux sends sessionAttributes 0, and so does the swtpm test vector.
    """

    pcr: int
    digests: tuple[tuple[HashAlgorithm, bytes], ...]
    session_attributes: int = 0

    def __post_init__(self) -> None:
        _check_uint(self.pcr, 32, "pcrHandle")
        if self.pcr > MAX_PCR_HANDLE:
            raise ValueError(f"pcrHandle 0x{self.pcr:x} is not a PCR handle (TPM_HT_PCR)")
        _check_uint(self.session_attributes, 8, "sessionAttributes")
        digests = tuple(
            (alg, _check_digest(alg, digest, f"digests[{i}]"))
            for i, (alg, digest) in enumerate(self.digests)
        )
        object.__setattr__(self, "digests", digests)

    def encode(self) -> bytes:
        auth = _encode_password_session(self.session_attributes)
        values = _U32.pack(len(self.digests)) + b"".join(
            _U16.pack(alg.alg_id) + digest for alg, digest in self.digests
        )
        body = _U32.pack(self.pcr) + _U32.pack(len(auth)) + auth + values
        return _encode_command(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND, body)


@record(frozen=True)
class PcrExtendResponse:
    """TPM2_PCR_Extend has no output parameters, only the session's reply.

    swtpm sets continueSession (0x01) in the reply attributes.
    """

    session_attributes: int = TPMA_SESSION_CONTINUE_SESSION

    def __post_init__(self) -> None:
        _check_uint(self.session_attributes, 8, "sessionAttributes")

    def encode(self) -> bytes:
        # parameterSize (0) + TPMS_AUTH_RESPONSE: empty nonceTPM, attributes, empty hmac.
        body = _U32.pack(0) + struct.pack(">HBH", 0, self.session_attributes, 0)
        return _encode_response(TPM_ST_SESSIONS, body)


def _encode_password_session(attributes: int) -> bytes:
    """TPMS_AUTH_COMMAND for TPM_RS_PW with an empty password (Part 2 section 10.13)."""
    return _U32.pack(TPM_RS_PW) + struct.pack(">HBH", 0, attributes, 0)


def _read_empty_buffer(reader: _Reader, field: str) -> None:
    """A password session's nonce and HMAC are empty; anything else is not ours."""
    at = reader.offset
    size = reader.u16(f"{field}.size")
    reader.take(size, field)
    if size:
        raise TpmProtocolError(
            f"{reader.what}: {field} at offset {at} is {size} bytes; an empty-password "
            "TPM_RS_PW session carries none"
        )


def _read_password_session(reader: _Reader) -> int:
    """Parse the command's authorization area; return its sessionAttributes."""
    auth_size = reader.u32("authorizationSize")
    start = reader.offset
    handle = reader.u32("sessionHandle")
    if handle != TPM_RS_PW:
        raise TpmProtocolError(
            f"{reader.what}: sessionHandle 0x{handle:08x}, expected 0x{TPM_RS_PW:08x} (TPM_RS_PW)"
        )
    _read_empty_buffer(reader, "nonceCaller")
    attributes = reader.u8("sessionAttributes")
    _read_empty_buffer(reader, "hmac")
    used = reader.offset - start
    if used != auth_size:
        raise TpmProtocolError(
            f"{reader.what}: authorizationSize says {auth_size} bytes but the password "
            f"session takes {used}"
        )
    return attributes


def decode_pcr_extend_command(data: bytes) -> PcrExtendCommand:
    reader = _command_reader(data, TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND, "TPM2_PCR_Extend")
    pcr = reader.u32("pcrHandle")
    if pcr > MAX_PCR_HANDLE:
        raise TpmProtocolError(f"{reader.what}: pcrHandle 0x{pcr:08x} is not a PCR handle")
    attributes = _read_password_session(reader)
    count = reader.u32("digests.count")
    digests = []
    for i in range(count):
        alg = reader.algorithm(f"digests[{i}].hashAlg")
        digests.append((alg, reader.take(alg.digest_size, f"digests[{i}].digest")))
    reader.finish()
    return PcrExtendCommand(pcr, tuple(digests), attributes)


def decode_pcr_extend_response(data: bytes) -> PcrExtendResponse:
    reader = _response_reader(data, "TPM2_PCR_Extend", TPM_ST_SESSIONS)
    parameter_size = reader.u32("parameterSize")
    if parameter_size:
        raise TpmProtocolError(
            f"{reader.what}: parameterSize {parameter_size}; TPM2_PCR_Extend returns no parameters"
        )
    _read_empty_buffer(reader, "nonceTPM")
    attributes = reader.u8("sessionAttributes")
    _read_empty_buffer(reader, "hmac")
    reader.finish()
    return PcrExtendResponse(attributes)


def build_pcr_extend(pcr: int, digests: Iterable[tuple[HashAlgorithm, bytes]]) -> bytes:
    """Extend ``pcr`` in every bank given, in one command.

    Pass every active bank (see `GetCapabilityResponse.active_banks`): a bank
    left out keeps its old value and no longer matches the event log.
    """
    command = PcrExtendCommand(pcr, tuple(digests))
    if not command.digests:
        raise ValueError("TPM2_PCR_Extend needs at least one bank")
    return command.encode()


def parse_pcr_extend_response(data: bytes) -> None:
    decode_pcr_extend_response(data)


# --- TPM2_PCR_Read (Part 3 section 22.4) -----------------------------------------------


@record(frozen=True)
class PcrReadCommand:
    selections: tuple[PcrSelection, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "selections", tuple(self.selections))

    def encode(self) -> bytes:
        body = _encode_selections(self.selections)
        return _encode_command(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ, body)


@record(frozen=True)
class PcrReadResponse:
    """What TPM2_PCR_Read returned: maybe less than was asked.

    A TPM returns at most 8 digests per call (TPML_DIGEST) and clears, in
    the echoed ``selections``, the bits it did not read, including PCRs of
    banks that are not allocated.  A caller wanting more loops: ask again
    for `remaining_selections`, and stop when a round returns no digests.
    ``update_counter`` changes with every extend; differing counters across
    rounds mean the values are not one snapshot.
    """

    update_counter: int
    selections: tuple[PcrSelection, ...]
    digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_uint(self.update_counter, 32, "pcrUpdateCounter")
        selections = tuple(self.selections)
        digests = tuple(bytes(d) for d in self.digests)
        slots = _selection_slots(selections)
        if len(slots) != len(digests):
            raise ValueError(f"{len(slots)} PCRs selected but {len(digests)} digests given")
        for i, ((alg, pcr), digest) in enumerate(zip(slots, digests, strict=True)):
            _check_digest(alg, digest, f"digests[{i}] (PCR {pcr})")
        object.__setattr__(self, "selections", selections)
        object.__setattr__(self, "digests", digests)

    def values(self) -> dict[tuple[HashAlgorithm, int], bytes]:
        """The PCR values read, keyed by (bank, PCR index)."""
        return dict(zip(_selection_slots(self.selections), self.digests, strict=True))

    def encode(self) -> bytes:
        body = (
            _U32.pack(self.update_counter)
            + _encode_selections(self.selections)
            + _U32.pack(len(self.digests))
            + b"".join(_U16.pack(len(d)) + d for d in self.digests)
        )
        return _encode_response(TPM_ST_NO_SESSIONS, body)


def decode_pcr_read_command(data: bytes) -> PcrReadCommand:
    reader = _command_reader(data, TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ, "TPM2_PCR_Read")
    selections = _read_selections(reader, "pcrSelectionIn")
    reader.finish()
    return PcrReadCommand(selections)


def decode_pcr_read_response(data: bytes) -> PcrReadResponse:
    reader = _response_reader(data, "TPM2_PCR_Read", TPM_ST_NO_SESSIONS)
    counter = reader.u32("pcrUpdateCounter")
    selections = _read_selections(reader, "pcrSelectionOut")
    slots = _selection_slots(selections)
    count = reader.u32("pcrValues.count")
    if count != len(slots):
        raise TpmProtocolError(
            f"{reader.what}: pcrValues.count is {count} but pcrSelectionOut selects "
            f"{len(slots)} PCRs"
        )
    digests = []
    for i, (alg, pcr) in enumerate(slots):
        at = reader.offset
        size = reader.u16(f"pcrValues[{i}].size")
        if size != alg.digest_size:
            raise TpmProtocolError(
                f"{reader.what}: pcrValues[{i}] (PCR {pcr}, {alg.name}) at offset {at} is "
                f"{size} bytes, expected {alg.digest_size}"
            )
        digests.append(reader.take(size, f"pcrValues[{i}]"))
    reader.finish()
    return PcrReadResponse(counter, selections, tuple(digests))


def selections_from(
    pcrs_by_bank: Mapping[HashAlgorithm, Iterable[int]],
) -> tuple[PcrSelection, ...]:
    return tuple(PcrSelection(alg, tuple(pcrs)) for alg, pcrs in pcrs_by_bank.items())


def build_pcr_read(pcrs_by_bank: Mapping[HashAlgorithm, Iterable[int]]) -> bytes:
    """Read several PCRs of several banks, e.g. ``{SHA1: [0, 4], SHA256: [0, 4]}``."""
    return PcrReadCommand(selections_from(pcrs_by_bank)).encode()


def parse_pcr_read_response(data: bytes) -> dict[tuple[HashAlgorithm, int], bytes]:
    """The values the TPM returned, keyed by (bank, PCR); see `PcrReadResponse`."""
    return decode_pcr_read_response(data).values()


def remaining_selections(
    asked: Sequence[PcrSelection], got: PcrReadResponse
) -> tuple[PcrSelection, ...]:
    """What ``asked`` selected and ``got`` did not return, for the next round."""
    read = set(got.values())
    remaining = []
    for sel in asked:
        left = tuple(pcr for pcr in sel.pcrs if (sel.alg, pcr) not in read)
        if left:
            remaining.append(PcrSelection(sel.alg, left, sel.size_of_select))
    return tuple(remaining)


# --- TPM2_GetCapability (Part 3 section 30.2) ------------------------------------------


@record(frozen=True)
class GetCapabilityCommand:
    """TPM2_GetCapability; the default asks for the PCR bank allocation.

    For TPM_CAP_PCRS the property must be 0 and the count is ignored beyond
    1 (Part 3 section 30.2, table for TPM_CAP_PCRS).
    """

    capability: int = TPM_CAP_PCRS
    prop: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        _check_uint(self.capability, 32, "capability")
        _check_uint(self.prop, 32, "property")
        _check_uint(self.count, 32, "propertyCount")

    def encode(self) -> bytes:
        body = struct.pack(">III", self.capability, self.prop, self.count)
        return _encode_command(TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY, body)


@record(frozen=True)
class GetCapabilityResponse:
    """TPMS_CAPABILITY_DATA for the three capabilities this project reads.

    TPM_CAP_PCRS fills ``pcr_selections`` (TPML_PCR_SELECTION: every bank
    the TPM implements, with the PCRs allocated in it); TPM_CAP_TPM_PROPERTIES
    fills ``properties`` (TPML_TAGGED_TPM_PROPERTY as (property, value));
    TPM_CAP_HANDLES fills ``handles`` (TPML_HANDLE, ascending from the
    property asked for).
    """

    more_data: bool
    capability: int
    pcr_selections: tuple[PcrSelection, ...] = ()
    properties: tuple[tuple[int, int], ...] = ()
    handles: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        carried = {
            TPM_CAP_PCRS: "pcr_selections",
            TPM_CAP_TPM_PROPERTIES: "properties",
            TPM_CAP_HANDLES: "handles",
        }
        own = carried.get(self.capability)
        if own is None:
            raise ValueError(f"capability 0x{self.capability:x} is not supported here")
        words = {"pcr_selections": "PCR selections", "properties": "properties",
                 "handles": "handles"}  # fmt: skip
        for other in carried.values():
            if other != own and getattr(self, other):
                raise ValueError(f"{_CAP_NAMES[self.capability]} carries {words[own]}, "
                                 f"not {words[other]}")  # fmt: skip
        for handle in self.handles:
            _check_uint(handle, 32, "handle")
        object.__setattr__(self, "handles", tuple(self.handles))
        properties = tuple((int(p), int(v)) for p, v in self.properties)
        for prop, value in properties:
            _check_uint(prop, 32, "property")
            _check_uint(value, 32, "value")
        object.__setattr__(self, "pcr_selections", tuple(self.pcr_selections))
        object.__setattr__(self, "properties", properties)

    @property
    def active_banks(self) -> tuple[HashAlgorithm, ...]:
        """Banks with at least one PCR allocated: the ones every extend must cover."""
        return tuple(s.alg for s in self.pcr_selections if s.pcrs)

    def encode(self) -> bytes:
        if self.capability == TPM_CAP_PCRS:
            data = _encode_selections(self.pcr_selections)
        elif self.capability == TPM_CAP_HANDLES:
            data = _U32.pack(len(self.handles)) + b"".join(_U32.pack(h) for h in self.handles)
        else:
            data = _U32.pack(len(self.properties)) + b"".join(
                struct.pack(">II", p, v) for p, v in self.properties
            )
        body = _U8.pack(int(self.more_data)) + _U32.pack(self.capability) + data
        return _encode_response(TPM_ST_NO_SESSIONS, body)


def decode_get_capability_command(data: bytes) -> GetCapabilityCommand:
    reader = _command_reader(data, TPM_ST_NO_SESSIONS, TPM_CC_GET_CAPABILITY, "TPM2_GetCapability")
    capability = reader.u32("capability")
    prop = reader.u32("property")
    count = reader.u32("propertyCount")
    reader.finish()
    return GetCapabilityCommand(capability, prop, count)


def _read_properties(reader: _Reader) -> tuple[tuple[int, int], ...]:
    count = reader.u32("TPML_TAGGED_TPM_PROPERTY.count")
    return tuple(
        (reader.u32(f"tpmProperty[{i}].property"), reader.u32(f"tpmProperty[{i}].value"))
        for i in range(count)
    )


def decode_get_capability_response(data: bytes) -> GetCapabilityResponse:
    reader = _response_reader(data, "TPM2_GetCapability", TPM_ST_NO_SESSIONS)
    at = reader.offset
    more_data = reader.u8("moreData")
    if more_data > 1:
        raise TpmProtocolError(f"{reader.what}: moreData at offset {at} is {more_data}, not 0 or 1")
    at = reader.offset
    capability = reader.u32("capabilityData.capability")
    if capability == TPM_CAP_PCRS:
        result = GetCapabilityResponse(
            bool(more_data), capability, pcr_selections=_read_selections(reader, "assignedPCR")
        )
    elif capability == TPM_CAP_TPM_PROPERTIES:
        result = GetCapabilityResponse(
            bool(more_data), capability, properties=_read_properties(reader)
        )
    elif capability == TPM_CAP_HANDLES:
        count = reader.u32("TPML_HANDLE.count")
        if count * 4 > reader.left:
            raise TpmProtocolError(
                f"{reader.what}: TPML_HANDLE.count {count} needs {count * 4} bytes, "
                f"{reader.left} left"
            )
        handles = tuple(reader.u32(f"handle[{i}]") for i in range(count))
        result = GetCapabilityResponse(bool(more_data), capability, handles=handles)
    else:
        raise TpmProtocolError(
            f"{reader.what}: capability 0x{capability:x} at offset {at} is not one this "
            "codec reads (TPM_CAP_PCRS, TPM_CAP_TPM_PROPERTIES, TPM_CAP_HANDLES)"
        )
    reader.finish()
    return result


def build_get_capability(capability: int = TPM_CAP_PCRS, prop: int = 0, count: int = 1) -> bytes:
    return GetCapabilityCommand(capability, prop, count).encode()


def parse_active_banks(data: bytes) -> tuple[HashAlgorithm, ...]:
    """The banks a TPM2_GetCapability(TPM_CAP_PCRS) answer marks allocated."""
    response = decode_get_capability_response(data)
    if response.capability != TPM_CAP_PCRS:
        raise TpmProtocolError(
            f"TPM2_GetCapability response: capability 0x{response.capability:x}, "
            f"expected TPM_CAP_PCRS (0x{TPM_CAP_PCRS:x})"
        )
    return response.active_banks
