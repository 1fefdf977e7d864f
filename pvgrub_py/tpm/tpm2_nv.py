"""TPM 2.0 wire codecs for NV storage and hierarchy control.

The commands a platform needs to leave data in a TPM's NV memory for the OS
(`pvgrub_py.eventlog.nv_channel`): TPM2_NV_DefineSpace, TPM2_NV_UndefineSpace,
TPM2_NV_ReadPublic, TPM2_NV_Write, TPM2_NV_Read (Part 3 sections 31.3, 31.4,
31.6, 31.7, 31.13), TPM2_HierarchyChangeAuth and TPM2_HierarchyControl (Part
3 sections 24.8, 24.2), and
TPM2_GetCapability for NV handles and TPM properties (Part 3 section 30.2,
decoded in `tpm2`).  Structures are from Part 2 (TPMA_NV section 13.4,
TPMS_NV_PUBLIC section 13.5); all integers are big-endian.

Every authorization here is a password session (TPM_RS_PW), by default with
an empty password: platformAuth is empty after TPM2_Startup(TPM_SU_CLEAR)
(Part 1, "Platform Hierarchy"; Part 3 section 9.3), and the index this
project defines has an empty authValue.

Pure codecs: bytes in, values out, no I/O.  A malformed response raises
`TpmProtocolError` naming the field; a refusal raises the `TpmReturnCode` of
`rc.tpm2_error`, naming the command.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pvgrub_py.record import record
from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.tpm.tpm2 import (
    TPM_RS_PW,
    TPM_ST_NO_SESSIONS,
    TPM_ST_SESSIONS,
    _check_uint,
    _encode_command,
    _read_empty_buffer,
    _Reader,
    _response_reader,
)

# TPM_CC (Part 2 section 6.5.2).
TPM_CC_HIERARCHY_CONTROL = 0x00000121
TPM_CC_NV_UNDEFINE_SPACE = 0x00000122
TPM_CC_HIERARCHY_CHANGE_AUTH = 0x00000129
TPM_CC_NV_DEFINE_SPACE = 0x0000012A
TPM_CC_NV_WRITE = 0x00000137
TPM_CC_NV_READ = 0x0000014E
TPM_CC_NV_READ_PUBLIC = 0x00000169

# TPM_RH (Part 2 section 7.4).
TPM_RH_OWNER = 0x40000001
TPM_RH_PLATFORM = 0x4000000C
TPM_RH_PLATFORM_NV = 0x4000000D

#: TPM_HT_NV_INDEX (Part 2 section 7.2): the top byte of every NV index handle.
TPM_HT_NV_INDEX = 0x01

# TPMA_NV (Part 2 section 13.4).
TPMA_NV_PPWRITE = 0x00000001
TPMA_NV_OWNERWRITE = 0x00000002
TPMA_NV_AUTHWRITE = 0x00000004
TPMA_NV_POLICYWRITE = 0x00000008
TPMA_NV_TPM_NT_MASK = 0x000000F0
TPMA_NV_POLICY_DELETE = 0x00000400
TPMA_NV_WRITELOCKED = 0x00000800
TPMA_NV_WRITEALL = 0x00001000
TPMA_NV_WRITEDEFINE = 0x00002000
TPMA_NV_WRITE_STCLEAR = 0x00004000
TPMA_NV_GLOBALLOCK = 0x00008000
TPMA_NV_PPREAD = 0x00010000
TPMA_NV_OWNERREAD = 0x00020000
TPMA_NV_AUTHREAD = 0x00040000
TPMA_NV_POLICYREAD = 0x00080000
TPMA_NV_NO_DA = 0x02000000
TPMA_NV_ORDERLY = 0x04000000
TPMA_NV_CLEAR_STCLEAR = 0x08000000
TPMA_NV_READLOCKED = 0x10000000
TPMA_NV_WRITTEN = 0x20000000
TPMA_NV_PLATFORMCREATE = 0x40000000
TPMA_NV_READ_STCLEAR = 0x80000000
#: TPM_NT_ORDINARY (Part 2 section 13.4, TPM_NT): an index of plain data.
TPM_NT_ORDINARY = 0x0

# TPM_PT (Part 2 section 6.13): PT_FIXED = 0x100, PT_VAR = 0x200.
TPM_PT_NV_INDEX_MAX = 0x100 + 23
TPM_PT_NV_BUFFER_MAX = 0x100 + 44
TPM_PT_STARTUP_CLEAR = 0x200 + 1
# TPMA_STARTUP_CLEAR (Part 2 section 8.6).
TPMA_STARTUP_CLEAR_PH_ENABLE = 0x00000001
TPMA_STARTUP_CLEAR_PH_ENABLE_NV = 0x00000008

#: TPM2B_MAX_NV_BUFFER and TPM2B_NV_PUBLIC sizes are UINT16, as are an NV
#: index's dataSize and an NV_Read/NV_Write offset.
MAX_U16 = 0xFFFF

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _check_nv_index(index: int, field: str = "nvIndex") -> None:
    _check_uint(index, 32, field)
    if index >> 24 != TPM_HT_NV_INDEX:
        raise ValueError(f"{field} 0x{index:08x} is not an NV index handle (TPM_HT_NV_INDEX)")


def _tpm2b(data: bytes, field: str) -> bytes:
    if len(data) > MAX_U16:
        raise ValueError(f"{field}: {len(data)} bytes do not fit a TPM2B")
    return _U16.pack(len(data)) + data


def _password_sessions(count: int, password: bytes = b"") -> bytes:
    """The authorization area: *count* TPM_RS_PW sessions (Part 1,
    "Password Authorizations"; Part 2 section 10.13, TPMS_AUTH_COMMAND)."""
    one = _U32.pack(TPM_RS_PW) + _tpm2b(b"", "nonceCaller") + _U8.pack(0)
    one += _tpm2b(password, "hmac")
    area = one * count
    return _U32.pack(len(area)) + area


def _authorized(
    code: int, handles: Sequence[int], params: bytes, password: bytes = b""
) -> bytes:
    """A command whose first handle is authorized with *password* (default empty)."""
    body = b"".join(_U32.pack(h) for h in handles) + _password_sessions(1, password) + params
    return _encode_command(TPM_ST_SESSIONS, code, body)


def _session_response(data: bytes, name: str) -> _Reader:
    """A success to a one-session command: check the shape; a cursor on its
    parameters (``reader.what`` names the command), ending where the
    parameters end (the session reply is checked here)."""
    reader = _response_reader(data, name, TPM_ST_SESSIONS)
    at = reader.offset
    size = reader.u32("parameterSize")
    if size > reader.left:
        raise TpmProtocolError(
            f"{reader.what}: parameterSize {size} at offset {at} is more than the "
            f"{reader.left} bytes left"
        )
    params = _Reader(bytes(reader.data[: reader.offset + size]), reader.what, reader.offset)
    reader.take(size, "parameters")
    _read_empty_buffer(reader, "nonceTPM")
    reader.u8("sessionAttributes")
    _read_empty_buffer(reader, "hmac")
    reader.finish()
    return params


def _no_parameters(data: bytes, name: str) -> None:
    params = _session_response(data, name)
    if params.left:
        raise TpmProtocolError(f"{params.what}: {params.left} bytes of parameters; it returns none")


# --- TPMS_NV_PUBLIC (Part 2 section 13.5) -----------------------------------------------


@record(frozen=True)
class NvPublic:
    """An NV index's public area: handle, name algorithm, TPMA_NV, policy, size."""

    index: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int

    def __post_init__(self) -> None:
        _check_nv_index(self.index)
        _check_uint(self.name_alg, 16, "nameAlg")
        _check_uint(self.attributes, 32, "attributes")
        _check_uint(self.data_size, 16, "dataSize")

    @property
    def nv_type(self) -> int:
        """TPM_NT: bits 7:4 of the attributes."""
        return (self.attributes & TPMA_NV_TPM_NT_MASK) >> 4

    def encode(self) -> bytes:
        inner = (
            struct.pack(">IHI", self.index, self.name_alg, self.attributes)
            + _tpm2b(self.auth_policy, "authPolicy")
            + _U16.pack(self.data_size)
        )
        return _tpm2b(inner, "nvPublic")


def _read_nv_public(reader: _Reader) -> NvPublic:
    at = reader.offset
    size = reader.u16("nvPublic.size")
    start = reader.offset
    index = reader.u32("nvPublic.nvIndex")
    if index >> 24 != TPM_HT_NV_INDEX:
        raise TpmProtocolError(
            f"{reader.what}: nvPublic.nvIndex 0x{index:08x} is not an NV index handle"
        )
    name_alg = reader.u16("nvPublic.nameAlg")
    attributes = reader.u32("nvPublic.attributes")
    policy = reader.take(reader.u16("nvPublic.authPolicy.size"), "nvPublic.authPolicy")
    data_size = reader.u16("nvPublic.dataSize")
    if reader.offset - start != size:
        raise TpmProtocolError(
            f"{reader.what}: nvPublic.size at offset {at} says {size} bytes but the "
            f"structure takes {reader.offset - start}"
        )
    return NvPublic(index, name_alg, attributes, bytes(policy), data_size)


# --- the commands -----------------------------------------------------------------------


def build_nv_define_space(auth_handle: int, public: NvPublic, auth: bytes = b"") -> bytes:
    """TPM2_NV_DefineSpace (Part 3 section 31.3) under *auth_handle* (TPM_RH_OWNER
    or TPM_RH_PLATFORM), the index's authValue *auth*."""
    _check_uint(auth_handle, 32, "authHandle")
    params = _tpm2b(auth, "auth") + public.encode()
    return _authorized(TPM_CC_NV_DEFINE_SPACE, [auth_handle], params)


def parse_nv_define_space_response(data: bytes) -> None:
    _no_parameters(data, "TPM2_NV_DefineSpace")


def build_nv_undefine_space(auth_handle: int, index: int) -> bytes:
    """TPM2_NV_UndefineSpace (Part 3 section 31.4)."""
    _check_uint(auth_handle, 32, "authHandle")
    _check_nv_index(index)
    return _authorized(TPM_CC_NV_UNDEFINE_SPACE, [auth_handle, index], b"")


def parse_nv_undefine_space_response(data: bytes) -> None:
    _no_parameters(data, "TPM2_NV_UndefineSpace")


def build_nv_read_public(index: int) -> bytes:
    """TPM2_NV_ReadPublic (Part 3 section 31.6): no authorization."""
    _check_nv_index(index)
    return _encode_command(TPM_ST_NO_SESSIONS, TPM_CC_NV_READ_PUBLIC, _U32.pack(index))


def parse_nv_read_public_response(data: bytes) -> tuple[NvPublic, bytes]:
    """The public area and the index's Name."""
    reader = _response_reader(data, "TPM2_NV_ReadPublic", TPM_ST_NO_SESSIONS)
    public = _read_nv_public(reader)
    name = reader.take(reader.u16("nvName.size"), "nvName")
    reader.finish()
    return public, bytes(name)


def build_nv_write(auth_handle: int, index: int, data: bytes, offset: int) -> bytes:
    """TPM2_NV_Write (Part 3 section 31.7) of *data* at *offset*; the TPM
    refuses more than TPM_PT_NV_BUFFER_MAX bytes in one command."""
    _check_uint(auth_handle, 32, "authHandle")
    _check_nv_index(index)
    _check_uint(offset, 16, "offset")
    params = _tpm2b(bytes(data), "data") + _U16.pack(offset)
    return _authorized(TPM_CC_NV_WRITE, [auth_handle, index], params)


def parse_nv_write_response(data: bytes) -> None:
    _no_parameters(data, "TPM2_NV_Write")


def build_nv_read(auth_handle: int, index: int, size: int, offset: int) -> bytes:
    """TPM2_NV_Read (Part 3 section 31.13) of *size* bytes at *offset*."""
    _check_uint(auth_handle, 32, "authHandle")
    _check_nv_index(index)
    _check_uint(size, 16, "size")
    _check_uint(offset, 16, "offset")
    return _authorized(TPM_CC_NV_READ, [auth_handle, index], struct.pack(">HH", size, offset))


def parse_nv_read_response(data: bytes) -> bytes:
    params = _session_response(data, "TPM2_NV_Read")
    out = params.take(params.u16("data.size"), "data")
    params.finish()
    return bytes(out)


def build_hierarchy_control(
    auth_handle: int, enable: int, state: bool, password: bytes = b""
) -> bytes:
    """TPM2_HierarchyControl (Part 3 section 24.2): *state* False clears
    phEnable (enable TPM_RH_PLATFORM), phEnableNV (TPM_RH_PLATFORM_NV), ...;
    *password* is *auth_handle*'s authValue."""
    _check_uint(auth_handle, 32, "authHandle")
    _check_uint(enable, 32, "enable")
    params = _U32.pack(enable) + _U8.pack(int(bool(state)))
    return _authorized(TPM_CC_HIERARCHY_CONTROL, [auth_handle], params, password)


def build_hierarchy_change_auth(auth_handle: int, new_auth: bytes, password: bytes = b"") -> bytes:
    """TPM2_HierarchyChangeAuth (Part 3 section 24.8): *auth_handle*'s authValue
    becomes *new_auth* (sent in the clear: no parameter encryption here)."""
    _check_uint(auth_handle, 32, "authHandle")
    params = _tpm2b(bytes(new_auth), "newAuth")
    return _authorized(TPM_CC_HIERARCHY_CHANGE_AUTH, [auth_handle], params, password)


def parse_hierarchy_change_auth_response(data: bytes) -> None:
    _no_parameters(data, "TPM2_HierarchyChangeAuth")


def parse_hierarchy_control_response(data: bytes) -> None:
    _no_parameters(data, "TPM2_HierarchyControl")
