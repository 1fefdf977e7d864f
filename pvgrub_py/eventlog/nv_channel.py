"""The boot's TCG event log, delivered to a PV/PVH guest in its vTPM's NV memory.

A PV guest has no ACPI TPM2 table, no EFI configuration table and no device
tree, so Linux never learns where a boot loader left its event log.  pvgrub-py
leaves it where the guest can read it with a TPM command: in NV indices of the
vTPM it measured into.  The log travels with the vTPM's state (save, restore,
migration), and a daemon in the guest reads it back with `load_event_log` and
writes it where tools look for one.  This module is both sides, and it is
small on purpose: the read side runs in the guest and needs only a TPM 2.0
client.

**Who writes, with what authority.**  The boot loader acts as the platform
firmware does.  After TPM2_Startup(TPM_SU_CLEAR) the platform hierarchy is
enabled (phEnable and phEnableNV SET, Part 2 section 8.6 TPMA_STARTUP_CLEAR;
Part 3 section 9.3) and platformAuth is the Empty Buffer (Part 1, "Platform
Hierarchy"), so an empty password session (TPM_RS_PW) on TPM_RH_PLATFORM
authorizes what follows:

1. every index already in pvgrub-py's range is removed with
   TPM2_NV_UndefineSpace under TPM_RH_PLATFORM (Part 3 section 31.4: platform
   authorization may remove an index whether the platform or the owner
   defined it, as swtpm does; one with TPMA_NV_POLICY_DELETE cannot be, and fails the
   delivery): the previous boot's log, or an index the guest's owner put in
   the way;
2. the indices for this log are defined (TPM2_NV_DefineSpace, Part 3 section
   31.3) under TPM_RH_PLATFORM, with TPMA_NV_PLATFORMCREATE | PPWRITE |
   AUTHREAD | NO_DA, an ordinary index (TPM_NT_ORDINARY), nameAlg SHA-256,
   an empty authValue and no authPolicy (Part 2 section 13.4): only the
   platform can write it, anyone can read it with an empty password and a
   wrong password never counts towards dictionary-attack lockout;
3. after the measurements, the data indices are written (TPM2_NV_Write, Part
   3 section 31.7) in pieces of at most TPM_PT_NV_BUFFER_MAX bytes (1024 in
   swtpm), then the header index, last, so a written header means a complete
   log;
4. TPM2_HierarchyChangeAuth(TPM_RH_PLATFORM) to 32 random bytes nobody
   keeps (Part 3 section 24.8), then TPM2_HierarchyControl(TPM_RH_PLATFORM,
   TPM_RH_PLATFORM, NO) (Part 3 section 24.2) clears phEnable: from then on
   nothing can use platform authorization, so nobody in the guest can
   write, remove or replace the indices, and phEnableNV, left SET, keeps
   them readable.  This is what PC platform firmware does before it hands
   over to an OS (it disables the platform hierarchy or sets a random
   platformAuth), so a guest sees the TPM it would see on hardware.  Both,
   because a TPM2_Startup(TPM_SU_STATE) resume sets phEnable again but
   keeps platformAuth (seen with swtpm: TPM2_Shutdown(STATE), init,
   TPM2_Startup(STATE)); only TPM2_Startup(TPM_SU_CLEAR) empties it, and
   that is the next boot's, whose pvgrub-py uses it: a vTPM is power-cycled
   between boots.

Steps 1 and 2 run before the first extend, so a full or blocked NV range
stops the boot before any PCR moves; 3 and 4 after the last extend, before
the log file is committed.

**Where.**  The TCG "Registry of Reserved TPM 2.0 Handles and Localities"
(section 2.2, table of NV index ranges) reserves 0x01400000-0x017FFFFF for
the platform manufacturer, to assign without the TCG; on a Xen host the
platform is the host.  `NV_LOG_HEADER` (0x0140F000) holds the header, and the
log's bytes follow, unchanged, in ``NV_LOG_HEADER + 1`` ... ``+ count``:
a log of up to TPM_PT_NV_INDEX_MAX bytes (2048 in swtpm) sits whole in
``0x0140F001``, so ``tpm2_nvread -C 0x0140F001 0x0140F001`` prints exactly
the log.

**Header** (big-endian, `HEADER_SIZE` bytes): magic ``PVGRUBNV``, version 1
(u16), header size (u16), log size (u32), chunk size (u32: every data index
holds that many bytes, the last one the rest), data index count (u32), then
the SHA-256 of the whole log (32 bytes).

**Reading it is reading hostile data**: whoever held platform authorization,
or defined an index in this range while the hierarchy was enabled, chose its
contents.  `load_event_log` checks every index's public area (exactly the
attributes above plus TPMA_NV_WRITTEN, and the size the header implies),
bounds the sizes (`MAX_DATA_INDICES`, `MAX_NV_LOG_BYTES`) before reading, and
checks the digest; anything else is a `NvEventLogError`.  The log is no
more trusted for that: like any event log it is evidence only once it
replays to PCR values a quote vouches for.

TPM 1.2 is skipped (`measure.vtpm.measure_into`): its NV storage could hold
the bytes, but its commands and authorization model are another codec, and
its log is the SHA-1 format, which Linux reads only from the ACPI TCPA
table; a PV guest's daemon would be the only reader.  Not done.
"""

from __future__ import annotations

import hashlib
import secrets
import struct

from pvgrub_py.errors import PvgrubError
from pvgrub_py.record import record
from pvgrub_py.tpm import tpm2_nv as nv
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmReturnCode

#: The header index (platform-manufacturer range, see the module docstring).
NV_LOG_HEADER = 0x0140F000
#: At most this many data indices follow it: 128 KiB of log with swtpm's
#: 2048-byte indices, far more than a three-event boot ever writes.
MAX_DATA_INDICES = 64
#: The last handle of the range pvgrub-py owns and clears before each delivery.
NV_LOG_LAST = NV_LOG_HEADER + MAX_DATA_INDICES
#: The reader's bound on a delivered log, whatever a header says.
MAX_NV_LOG_BYTES = 1 << 20

MAGIC = b"PVGRUBNV"
VERSION = 1
_HEADER = struct.Struct(">8sHHIII32s")
HEADER_SIZE = _HEADER.size

#: What pvgrub-py defines (see the module docstring); TPM_NT_ORDINARY is 0.
ATTRIBUTES = nv.TPMA_NV_PLATFORMCREATE | nv.TPMA_NV_PPWRITE | nv.TPMA_NV_AUTHREAD | nv.TPMA_NV_NO_DA
#: TPM_ALG_SHA256 (Part 2 section 6.3), the indices' nameAlg.
NAME_ALG_SHA256 = 0x000B
#: Bytes of the random platformAuth set before the hierarchy is disabled: a
#: SHA-256 digest's size, which a TPM with SHA-256 accepts for a hierarchy's
#: authValue (Part 3 section 24.8, TPM_RC_SIZE).
PLATFORM_AUTH_SIZE = 32
#: What NV_Read and NV_Write move at once when the TPM does not say.
DEFAULT_NV_BUFFER = 512


class NvEventLogError(PvgrubError):
    """The event log cannot be delivered, or what the NV indices hold is not one."""


def _where(index: int) -> str:
    return f"event log NV index 0x{index:08x}"


@record(frozen=True)
class NvLogHeader:
    log_size: int
    chunk_size: int
    count: int
    digest: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, self.log_size, self.chunk_size,
                            self.count, self.digest)  # fmt: skip

    @classmethod
    def for_log(cls, log: bytes, chunk_size: int) -> NvLogHeader:
        count = -(-len(log) // chunk_size)
        return cls(len(log), chunk_size, count, hashlib.sha256(log).digest())

    def sizes(self) -> list[int]:
        """The size of each data index, in order."""
        full, rest = divmod(self.log_size, self.chunk_size)
        return [self.chunk_size] * full + ([rest] if rest else [])


def decode_header(data: bytes) -> NvLogHeader:
    """Check a header read from `NV_LOG_HEADER`; `NvEventLogError` if it is not ours."""
    where = _where(NV_LOG_HEADER)
    if len(data) != HEADER_SIZE:
        raise NvEventLogError(f"{where}: header of {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, size, log_size, chunk, count, digest = _HEADER.unpack(data)
    if magic != MAGIC:
        raise NvEventLogError(f"{where}: magic {magic!r}, expected {MAGIC!r}: not a pvgrub-py log")
    if version != VERSION:
        raise NvEventLogError(f"{where}: header version {version}, this reader knows {VERSION}")
    if size != HEADER_SIZE:
        raise NvEventLogError(f"{where}: header size field {size}, expected {HEADER_SIZE}")
    if not 0 < log_size <= MAX_NV_LOG_BYTES:
        raise NvEventLogError(
            f"{where}: log size {log_size} is out of range (1 to {MAX_NV_LOG_BYTES} bytes)"
        )
    if not 0 < chunk <= nv.MAX_U16:
        raise NvEventLogError(f"{where}: chunk size {chunk} is out of range (1 to {nv.MAX_U16})")
    header = NvLogHeader(log_size, chunk, count, digest)
    if not 0 < count <= MAX_DATA_INDICES or count != len(header.sizes()):
        raise NvEventLogError(
            f"{where}: {count} data indices for {log_size} bytes in {chunk}-byte chunks "
            f"(expected {len(header.sizes())}, at most {MAX_DATA_INDICES})"
        )
    return header


def _property(tpm: TpmClient, prop: int, name: str, default: int | None = None) -> int:
    value = tpm.tpm2_property(prop)
    if value is None:
        if default is None:
            raise NvEventLogError(f"the TPM does not report {name}")
        return default
    return value


def _not_defined(e: TpmReturnCode) -> bool:
    """NV_ReadPublic's answer for an index that does not exist (or is hidden
    by phEnableNV clear, Part 2 section 8.6): TPM_RC_HANDLE."""
    return e.name == "TPM_RC_HANDLE"


class NvDelivery:
    """A delivery in two halves around the extends: `prepare_store` (clear the
    range, define the indices) then `write` (the bytes, then the header) and
    `lock` (clear phEnable)."""

    def __init__(self, tpm: TpmClient, header: NvLogHeader, buffer_max: int) -> None:
        self.tpm = tpm
        self.header = header
        self.buffer_max = buffer_max

    def write(self, log: bytes) -> None:
        """The data indices, then the header (with the log's digest), last."""
        if len(log) != self.header.log_size:
            raise ValueError(
                f"the NV indices were defined for {self.header.log_size} bytes, "
                f"the log has {len(log)}"
            )
        header = self.header = NvLogHeader.for_log(log, self.header.chunk_size)
        try:
            offset = 0
            for i, size in enumerate(header.sizes(), start=1):
                self._write(NV_LOG_HEADER + i, log[offset : offset + size])
                offset += size
            self._write(NV_LOG_HEADER, header.encode())
        except TpmReturnCode as e:
            raise NvEventLogError(f"cannot write the event log to NV: {e}") from None

    def _write(self, index: int, data: bytes) -> None:
        for at in range(0, len(data), self.buffer_max):
            self.tpm.nv_write(nv.TPM_RH_PLATFORM, index, data[at : at + self.buffer_max], at)

    def lock(self) -> None:
        """Set platformAuth to a random value nobody keeps, then clear phEnable:
        nothing can use platform authorization until the next
        TPM2_Startup(CLEAR), so the delivered log stays as it is."""
        secret = secrets.token_bytes(PLATFORM_AUTH_SIZE)
        try:
            self.tpm.hierarchy_change_auth(nv.TPM_RH_PLATFORM, secret)
            self.tpm.hierarchy_control(nv.TPM_RH_PLATFORM, nv.TPM_RH_PLATFORM, False, secret)
        except TpmReturnCode as e:
            raise NvEventLogError(f"cannot disable the platform hierarchy: {e}") from None


@record(frozen=True)
class NvRange:
    """pvgrub-py's NV range on a TPM, cleared, with the TPM's limits: what
    `clear_range` found before the log's size is known."""

    #: The bytes a data index holds (the TPM's TPM_PT_NV_INDEX_MAX, at most 64 KiB).
    chunk: int
    #: The bytes an NV_Write or NV_Read moves at once.
    buffer_max: int


def clear_range(tpm: TpmClient) -> NvRange:
    """The half of `prepare_store` that needs no log: check the platform
    hierarchy and its NV are enabled, read the TPM's limits, and remove
    whatever is defined in pvgrub-py's range.  The bootloader runs it while
    its parser child still parses (`measure.vtpm.clear_nv_range`)."""
    limits = _limits(tpm)
    _clear(tpm)
    return limits


def _limits(tpm: TpmClient) -> NvRange:
    if tpm.version != "2.0":
        raise NvEventLogError(f"a TPM {tpm.version} has no NV channel for the event log")
    startup = _property(tpm, nv.TPM_PT_STARTUP_CLEAR, "TPM_PT_STARTUP_CLEAR")
    if not startup & nv.TPMA_STARTUP_CLEAR_PH_ENABLE:
        raise NvEventLogError(
            "the vTPM's platform hierarchy is disabled (phEnable clear): it was not "
            "power-cycled (TPM2_Startup(CLEAR)) since a boot delivered its event log"
        )
    if not startup & nv.TPMA_STARTUP_CLEAR_PH_ENABLE_NV:
        raise NvEventLogError("the vTPM's platform NV indices are disabled (phEnableNV clear)")
    index_max = _property(tpm, nv.TPM_PT_NV_INDEX_MAX, "TPM_PT_NV_INDEX_MAX")
    buffer_max = _property(tpm, nv.TPM_PT_NV_BUFFER_MAX, "TPM_PT_NV_BUFFER_MAX", DEFAULT_NV_BUFFER)
    chunk = min(index_max, nv.MAX_U16)
    if chunk < HEADER_SIZE or buffer_max <= 0:
        raise NvEventLogError(
            f"the TPM's NV indices hold {index_max} bytes and it writes {buffer_max} at "
            f"once: too small for the {HEADER_SIZE}-byte header"
        )
    return NvRange(chunk, min(buffer_max, nv.MAX_U16))


def _count(limits: NvRange, log_size: int) -> int:
    """The data indices a log of *log_size* bytes needs, if it may have them."""
    if log_size <= 0:
        raise ValueError("an event log holds at least its header event")
    count = -(-log_size // limits.chunk)
    if count > MAX_DATA_INDICES or log_size > MAX_NV_LOG_BYTES:
        raise NvEventLogError(
            f"an event log of {log_size} bytes needs {count} NV indices of {limits.chunk} "
            f"bytes; at most {MAX_DATA_INDICES} are delivered (and {MAX_NV_LOG_BYTES} bytes)"
        )
    return count


def _clear(tpm: TpmClient) -> None:
    for index in tpm.nv_handles(NV_LOG_HEADER, NV_LOG_LAST):
        try:
            tpm.nv_undefine_space(nv.TPM_RH_PLATFORM, index)
        except TpmReturnCode as e:
            raise NvEventLogError(
                f"{_where(index)} (pvgrub-py's range) cannot be removed: {e}"
            ) from None


def define_store(tpm: TpmClient, cleared: NvRange, log_size: int) -> NvDelivery:
    """The other half: define, in the range *cleared* (`clear_range`), the
    indices a log of *log_size* bytes needs."""
    chunk = cleared.chunk
    count = _count(cleared, log_size)
    full, rest = divmod(log_size, chunk)
    header = NvLogHeader(log_size, chunk, count, b"")
    sizes = [HEADER_SIZE] + [chunk] * full + ([rest] if rest else [])
    for i, size in enumerate(sizes):
        public = nv.NvPublic(NV_LOG_HEADER + i, NAME_ALG_SHA256, ATTRIBUTES, b"", size)
        try:
            tpm.nv_define_space(nv.TPM_RH_PLATFORM, public)
        except TpmReturnCode as e:
            raise NvEventLogError(f"cannot define {_where(public.index)}: {e}") from None
    return NvDelivery(tpm, header, cleared.buffer_max)


def prepare_store(tpm: TpmClient, log_size: int) -> NvDelivery:
    """Clear pvgrub-py's NV range and define the indices a log of *log_size*
    bytes needs: everything that can fail for want of room or authority.
    A log too large is refused before anything in the range is removed."""
    if log_size <= 0:
        raise ValueError("an event log holds at least its header event")
    limits = _limits(tpm)
    _count(limits, log_size)
    _clear(tpm)
    return define_store(tpm, limits, log_size)


def deliver(delivery: NvDelivery, log: bytes, *, lock: bool = True) -> None:
    """The second half: write *log* (of the size `prepare_store` was given), then lock."""
    delivery.write(log)
    if lock:
        delivery.lock()


def store_event_log(tpm: TpmClient, log: bytes, *, lock: bool = True) -> None:
    """Deliver *log* (the bytes of the crypto-agile event log) in *tpm*'s NV
    memory, as the module docstring describes; `NvEventLogError` if it cannot.
    *lock* False leaves the platform hierarchy enabled (tests, tools)."""
    deliver(prepare_store(tpm, len(log)), log, lock=lock)


# --- the read side ---------------------------------------------------------------------


def _check_public(tpm: TpmClient, index: int, size: int) -> bool:
    """False if *index* is not defined; `NvEventLogError` unless it is one of ours."""
    try:
        public = tpm.nv_read_public(index)
    except TpmReturnCode as e:
        if _not_defined(e):
            return False
        raise NvEventLogError(f"{_where(index)}: cannot read its public area: {e}") from None
    wanted = ATTRIBUTES | nv.TPMA_NV_WRITTEN
    if public.attributes & ~nv.TPMA_NV_WRITELOCKED != wanted:
        if public.attributes & ~nv.TPMA_NV_WRITTEN == ATTRIBUTES:
            raise NvEventLogError(f"{_where(index)}: defined but never written (an unfinished "
                                  "delivery: the boot that defined it failed)")  # fmt: skip
        raise NvEventLogError(
            f"{_where(index)}: attributes 0x{public.attributes:08x}, expected 0x{wanted:08x} "
            "(platform-created, written only by the platform, read with an empty password): "
            "not an event log pvgrub-py delivered"
        )
    if public.data_size != size:
        raise NvEventLogError(
            f"{_where(index)}: holds {public.data_size} bytes, the header says {size}"
        )
    return True


def _read(tpm: TpmClient, index: int, size: int, buffer_max: int) -> bytes:
    parts = []
    for at in range(0, size, buffer_max):
        try:
            parts.append(tpm.nv_read(index, index, min(buffer_max, size - at), at))
        except TpmReturnCode as e:
            raise NvEventLogError(f"{_where(index)}: cannot read it: {e}") from None
    return b"".join(parts)


def load_event_log(tpm: TpmClient) -> bytes | None:
    """The event log a boot delivered in *tpm*'s NV memory; None if there is
    none (no header index: nothing was delivered).  `NvEventLogError`, one
    line, for anything that is not exactly what `store_event_log` leaves."""
    if tpm.version != "2.0":
        return None
    if not _check_public(tpm, NV_LOG_HEADER, HEADER_SIZE):
        return None
    buffer_max = tpm.tpm2_property(nv.TPM_PT_NV_BUFFER_MAX) or DEFAULT_NV_BUFFER
    buffer_max = max(1, min(buffer_max, nv.MAX_U16))
    header = decode_header(_read(tpm, NV_LOG_HEADER, HEADER_SIZE, buffer_max))
    parts = []
    for i, size in enumerate(header.sizes(), start=1):
        if not _check_public(tpm, NV_LOG_HEADER + i, size):
            raise NvEventLogError(
                f"{_where(NV_LOG_HEADER + i)}: missing; the header announces "
                f"{header.count} data indices"
            )
        parts.append(_read(tpm, NV_LOG_HEADER + i, size, buffer_max))
    log = b"".join(parts)
    if hashlib.sha256(log).digest() != header.digest:
        raise NvEventLogError(
            f"{_where(NV_LOG_HEADER)}: the log's SHA-256 does not match the header's "
            "(indices from different deliveries?)"
        )
    return log
