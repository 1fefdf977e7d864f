"""A version-neutral TPM client: the few operations measured boot needs.

It hides whether the TPM speaks 1.2 or 2.0 behind startup / extend /
read, detects which one it is talking to the way Linux's ``tpm2_probe``
does, and never pipelines: each command waits for its answer (the
transport enforces it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from pvgrub_py.errors import UsageError
from pvgrub_py.tpm import tpm2, tpm2_nv
from pvgrub_py.tpm.algorithms import BY_NAME, SHA1, HashAlgorithm
from pvgrub_py.tpm.errors import TpmProtocolError, TpmReturnCode

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Literal

    from pvgrub_py.tpm.transport import TpmTransport

    TpmVersion = Literal["1.2", "2.0"]

#: TPM 1.2 TPM_INVALID_POSTINIT and TPM 2.0 TPM_RC_INITIALIZE: what a second
#: TPM_Startup returns.  For `ensure_started` they mean "already started".
_TPM12_INVALID_POSTINIT = 0x26
_TPM2_RC_INITIALIZE = 0x100
#: TPM_Extend's fixed request header (tag RQU_COMMAND, 34 bytes, ordinal 20)
#: and its success answer header (tag RSP_COMMAND, 30 bytes, TPM_SUCCESS):
#: measured boot extends on every boot, so this path skips the dataclasses.
_TPM12_EXTEND_HEAD = bytes.fromhex("00c10000002200000014")
_TPM12_EXTEND_OK = bytes.fromhex("00c40000001e00000000")


def detect_version(transport: TpmTransport) -> TpmVersion:
    """Ask TPM2_GetCapability; a TPM 2.0 answers with a TPM 2.0 tag.

    A TPM 1.2 rejects the unknown tag with a 1.2 response (tag 0x00C4).
    """
    answer = transport.transmit(tpm2.build_get_capability())
    if len(answer) < 2:
        raise TpmProtocolError(f"TPM answered the version probe with {len(answer)} bytes")
    (tag,) = struct.unpack_from(">H", answer)
    if tag in (tpm2.TPM_ST_NO_SESSIONS, tpm2.TPM_ST_SESSIONS):
        return "2.0"
    if tag in (0x00C4, 0x00C5, 0x00C6):
        return "1.2"
    raise TpmProtocolError(f"TPM answered the version probe with unknown tag 0x{tag:04x}")


class TpmClient:
    def __init__(self, transport: TpmTransport, version: TpmVersion | None = None) -> None:
        self.transport = transport
        self.version: TpmVersion = version or detect_version(transport)
        self._banks: tuple[HashAlgorithm, ...] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def startup(self) -> None:
        """TPM_Startup(ST_CLEAR) / TPM2_Startup(SU_CLEAR); raises if refused."""
        if self.version == "1.2":
            from pvgrub_py.tpm import tpm12  # only a TPM 1.2 needs it: ~1.2 ms of every boot

            tpm12.parse_startup_response(self.transport.transmit(tpm12.build_startup()))
        else:
            tpm2.parse_startup_response(self.transport.transmit(tpm2.build_startup()))

    def ensure_started(self) -> bool:
        """Send Startup; True if this call started the TPM, False if it already was."""
        try:
            self.startup()
        except TpmReturnCode as e:
            if e.code in (_TPM12_INVALID_POSTINIT, _TPM2_RC_INITIALIZE):
                return False
            raise
        return True

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> TpmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- banks ---------------------------------------------------------------------

    def active_banks(self) -> tuple[HashAlgorithm, ...]:
        """Banks an extend must carry: SHA-1 on 1.2, the allocated banks on 2.0."""
        if self._banks is None:
            if self.version == "1.2":
                self._banks = (SHA1,)
            else:
                answer = self.transport.transmit(tpm2.build_get_capability())
                self._banks = tpm2.parse_active_banks(answer)
        return self._banks

    # -- PCRs ----------------------------------------------------------------------

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """Extend ``pcr`` with the digest of every active bank.

        A TPM 2.0 extend carries every active bank in one command, as Linux
        does; a digest missing for an active bank is a caller error, since
        silently skipping a bank would leave it unmeasured.
        """
        if self.version == "1.2":
            if "sha1" not in digests:
                raise UsageError("a TPM 1.2 extend needs a sha1 digest")
            digest = digests["sha1"]
            from pvgrub_py.tpm import tpm12

            if len(digest) != 20 or not 0 <= pcr <= 0xFFFFFFFF:
                tpm12.build_extend(pcr, digest)  # raises the codec's precise error
            answer = self.transport.transmit(_TPM12_EXTEND_HEAD + pcr.to_bytes(4, "big") + digest)
            # A success answer is exactly the header below plus 20 bytes; anything
            # else goes through the full decoder for its precise error.
            if len(answer) != 30 or not answer.startswith(_TPM12_EXTEND_OK):
                tpm12.parse_extend_response(answer)
            return
        banks = self.active_banks()
        missing = [alg.name for alg in banks if alg.name not in digests]
        if missing:
            raise UsageError(f"the TPM has active banks without a digest: {', '.join(missing)}")
        pairs = [(alg, digests[alg.name]) for alg in banks]
        tpm2.parse_pcr_extend_response(self.transport.transmit(tpm2.build_pcr_extend(pcr, pairs)))

    def read_pcrs(
        self, pcrs: Iterable[int], banks: Sequence[HashAlgorithm] | None = None
    ) -> dict[str, dict[int, bytes]]:
        """PCR values per bank name; banks default to the active ones."""
        wanted = list(pcrs)
        banks = tuple(banks) if banks is not None else self.active_banks()
        if self.version == "1.2":
            if banks != (SHA1,):
                raise UsageError("a TPM 1.2 has only the sha1 bank")
            return {"sha1": {p: self._read12(p) for p in wanted}}
        return self._read2(wanted, banks)

    def _read12(self, pcr: int) -> bytes:
        from pvgrub_py.tpm import tpm12

        return tpm12.parse_pcr_read_response(self.transport.transmit(tpm12.build_pcr_read(pcr)))

    def _read2(
        self, pcrs: list[int], banks: Sequence[HashAlgorithm]
    ) -> dict[str, dict[int, bytes]]:
        # A TPM may return fewer digests than selected (TPM2_PCR_Read, Part 3
        # 22.4): ask again for the rest until nothing is left or no progress.
        asked = tpm2.selections_from({alg: pcrs for alg in banks})
        values: dict[str, dict[int, bytes]] = {alg.name: {} for alg in banks}
        while asked:
            answer = tpm2.decode_pcr_read_response(
                self.transport.transmit(tpm2.PcrReadCommand(asked).encode())
            )
            got = answer.values()
            if not got:
                raise TpmProtocolError("TPM2_PCR_Read returned no digest for a selected PCR")
            for (alg, pcr), digest in got.items():
                values[alg.name][pcr] = digest
            asked = tpm2.remaining_selections(asked, answer)
        return values

    # -- TPM 2.0 properties, NV storage, hierarchies (tpm2_nv) ----------------------

    def _need_tpm2(self, what: str) -> None:
        if self.version != "2.0":
            raise UsageError(f"{what} needs a TPM 2.0, this one is a TPM {self.version}")

    def tpm2_property(self, prop: int) -> int | None:
        """TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES) of one property; None if absent."""
        self._need_tpm2("TPM_CAP_TPM_PROPERTIES")
        answer = tpm2.decode_get_capability_response(self.transport.transmit(
            tpm2.build_get_capability(tpm2.TPM_CAP_TPM_PROPERTIES, prop, 1)))  # fmt: skip
        if answer.capability != tpm2.TPM_CAP_TPM_PROPERTIES:
            raise TpmProtocolError(
                f"TPM2_GetCapability response: capability 0x{answer.capability:x}, "
                "expected TPM_CAP_TPM_PROPERTIES"
            )
        return dict(answer.properties).get(prop)

    def nv_handles(self, first: int, last: int) -> tuple[int, ...]:
        """The NV indices defined in [first, last] (TPM_CAP_HANDLES, Part 3 30.2)."""
        self._need_tpm2("TPM_CAP_HANDLES")
        found: list[int] = []
        start = first
        for _ in range(last - first + 2):  # each round returns at least one handle
            answer = tpm2.decode_get_capability_response(self.transport.transmit(
                tpm2.build_get_capability(tpm2.TPM_CAP_HANDLES, start, last - start + 1)))
            if answer.capability != tpm2.TPM_CAP_HANDLES:
                raise TpmProtocolError(
                    f"TPM2_GetCapability response: capability 0x{answer.capability:x}, "
                    "expected TPM_CAP_HANDLES"
                )
            inside = [h for h in answer.handles if start <= h <= last]
            found.extend(inside)
            if not answer.more_data or len(inside) < len(answer.handles) or not inside:
                break
            start = inside[-1] + 1
            if start > last:
                break
        return tuple(sorted(set(found)))

    def nv_read_public(self, index: int) -> tpm2_nv.NvPublic:
        self._need_tpm2("TPM2_NV_ReadPublic")
        public, _name = tpm2_nv.parse_nv_read_public_response(
            self.transport.transmit(tpm2_nv.build_nv_read_public(index)))  # fmt: skip
        if public.index != index:
            raise TpmProtocolError(
                f"TPM2_NV_ReadPublic response: asked for 0x{index:08x}, "
                f"got the public area of 0x{public.index:08x}"
            )
        return public

    def nv_define_space(self, auth_handle: int, public: tpm2_nv.NvPublic,
                        auth: bytes = b"") -> None:  # fmt: skip
        self._need_tpm2("TPM2_NV_DefineSpace")
        tpm2_nv.parse_nv_define_space_response(self.transport.transmit(
            tpm2_nv.build_nv_define_space(auth_handle, public, auth)))  # fmt: skip

    def nv_undefine_space(self, auth_handle: int, index: int) -> None:
        self._need_tpm2("TPM2_NV_UndefineSpace")
        tpm2_nv.parse_nv_undefine_space_response(self.transport.transmit(
            tpm2_nv.build_nv_undefine_space(auth_handle, index)))  # fmt: skip

    def nv_write(self, auth_handle: int, index: int, data: bytes, offset: int) -> None:
        self._need_tpm2("TPM2_NV_Write")
        tpm2_nv.parse_nv_write_response(self.transport.transmit(
            tpm2_nv.build_nv_write(auth_handle, index, data, offset)))  # fmt: skip

    def nv_read(self, auth_handle: int, index: int, size: int, offset: int) -> bytes:
        """*size* bytes at *offset*; anything else from the TPM is a protocol error."""
        self._need_tpm2("TPM2_NV_Read")
        data = tpm2_nv.parse_nv_read_response(self.transport.transmit(
            tpm2_nv.build_nv_read(auth_handle, index, size, offset)))  # fmt: skip
        if len(data) != size:
            raise TpmProtocolError(
                f"TPM2_NV_Read response: asked for {size} bytes of 0x{index:08x}, "
                f"got {len(data)}"
            )
        return data

    def hierarchy_control(
        self, auth_handle: int, enable: int, state: bool, password: bytes = b""
    ) -> None:
        self._need_tpm2("TPM2_HierarchyControl")
        tpm2_nv.parse_hierarchy_control_response(self.transport.transmit(
            tpm2_nv.build_hierarchy_control(auth_handle, enable, state, password)))  # fmt: skip

    def hierarchy_change_auth(
        self, auth_handle: int, new_auth: bytes, password: bytes = b""
    ) -> None:
        self._need_tpm2("TPM2_HierarchyChangeAuth")
        tpm2_nv.parse_hierarchy_change_auth_response(self.transport.transmit(
            tpm2_nv.build_hierarchy_change_auth(auth_handle, new_auth, password)))  # fmt: skip


def bank_names(banks: Iterable[HashAlgorithm]) -> list[str]:
    return [b.name for b in banks]


def banks_by_name(names: Iterable[str]) -> tuple[HashAlgorithm, ...]:
    return tuple(BY_NAME[n] for n in names)
