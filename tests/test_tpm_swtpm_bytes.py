"""The TPM 1.2 and 2.0 codecs on bytes a real swtpm answers, checked without our TPM code.

`make test`'s coverage of what the conformance suite checks with swtpm's own
recorded vectors: our commands are sent on a raw socket to a private swtpm,
its responses are decoded by our codecs, and every value is checked against
something independent: hashlib for the extend rule, ``tpm2_pcrread`` and
``tpm2_getcap`` (tpm2-tools) for what the TPM holds, and command bytes written
out by hand from the TPM specifications.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from swtpm_tools import ToolsTpm, needs_tools, tools_tpm

from pvgrub_py.tpm import rc, tpm2, tpm12
from pvgrub_py.tpm.algorithms import BY_NAME, SHA1, SHA256
from pvgrub_py.tpm.errors import TpmError, TpmReturnCode

pytestmark = [pytest.mark.integration, pytest.mark.swtpm, needs_tools]


def _resize(packet: bytes) -> bytes:
    return packet[:2] + len(packet).to_bytes(4, "big") + packet[6:]


def assert_prefixes_only_raise_tpm_errors(packets: list[bytes], decoders: list[object]) -> None:
    """Every truncation of a real packet, with its size field fixed up or not: a TpmError
    or a value that re-encodes to the bytes."""
    for packet in packets:
        for cut in range(len(packet) + 1):
            for piece in {packet[:cut], _resize(packet[:cut]) if cut >= 6 else packet[:cut]}:
                for decoder in decoders:
                    try:
                        result = decoder(piece)  # type: ignore[operator]
                    except TpmError:
                        continue
                    assert result.encode() == piece


# --- TPM 1.2 ----------------------------------------------------------------------------


def test_tpm12_commands_and_responses_of_a_real_tpm() -> None:
    seen: list[bytes] = []

    def send(tpm: ToolsTpm, command: bytes) -> bytes:
        response = tpm.raw(command)
        seen.extend((command, response))
        return response

    with tools_tpm(tpm2=False, startup=False) as tpm:
        # Before TPM_Startup every command fails with TPM_INVALID_POSTINIT (0x26).
        with pytest.raises(TpmReturnCode) as e:
            tpm12.parse_pcr_read_response(send(tpm, tpm12.build_pcr_read(10)))
        assert (e.value.code, e.value.name) == (0x26, "TPM_INVALID_POSTINIT")
        assert str(e.value).startswith("TPM_PCRRead: TPM returned ")

        # TPM_Startup(ST_CLEAR), as TPM Main Part 3 section 3.2 lays it out.
        startup = bytes.fromhex("00c10000000c000000990001")
        assert tpm12.build_startup() == startup
        assert tpm12.decode_startup_command(startup).startup_type == tpm12.TPM_ST_CLEAR
        response = send(tpm, startup)
        tpm12.parse_startup_response(response)
        assert tpm12.decode_startup_response(response).encode() == response
        with pytest.raises(TpmReturnCode) as e:
            tpm12.parse_startup_response(send(tpm, startup))
        assert (e.value.name, e.value.command) == ("TPM_INVALID_POSTINIT", "TPM_Startup")

        # TPM_Extend: the response carries the new value, SHA1(old || digest).
        digest = hashlib.sha1(b"test").digest()
        extend = bytes.fromhex("00c100000022000000140000000a") + digest
        assert tpm12.build_extend(10, digest) == extend
        response = send(tpm, extend)
        want = hashlib.sha1(bytes(20) + digest).digest()
        assert tpm12.parse_extend_response(response) == want
        assert tpm12.decode_extend_response(response).encode() == response
        again = tpm12.parse_extend_response(send(tpm, extend))
        assert again == hashlib.sha1(want + digest).digest()

        response = send(tpm, tpm12.build_pcr_read(10))
        assert tpm12.parse_pcr_read_response(response) == again
        assert tpm12.decode_pcr_read_response(response).encode() == response
        # PCR 17 (D-RTM) holds all ones until a locality 4 hash sequence.
        assert tpm12.parse_pcr_read_response(send(tpm, tpm12.build_pcr_read(17))) == b"\xff" * 20
        tpm.ioctl("-h", "1234")
        want17 = hashlib.sha1(bytes(20) + hashlib.sha1(b"1234").digest()).digest()
        assert tpm12.parse_pcr_read_response(send(tpm, tpm12.build_pcr_read(17))) == want17

        # A PCR index the TPM does not have: TPM_BADINDEX (2).
        with pytest.raises(TpmReturnCode) as e:
            tpm12.parse_pcr_read_response(send(tpm, tpm12.build_pcr_read(24)))
        assert (e.value.code, e.value.name) == (2, "TPM_BADINDEX")
    decoders = [
        tpm12.decode_startup_command, tpm12.decode_startup_response,
        tpm12.decode_extend_command, tpm12.decode_extend_response,
        tpm12.decode_pcr_read_command, tpm12.decode_pcr_read_response,
    ]  # fmt: skip
    assert_prefixes_only_raise_tpm_errors(seen, decoders)


# --- TPM 2.0 ----------------------------------------------------------------------------


def _getcap_banks(tpm: ToolsTpm) -> set[str]:
    """The banks ``tpm2_getcap pcrs`` lists with at least one PCR selected."""
    return set(re.findall(r"^\s*- (\w+): \[ \d", tpm.tool("tpm2_getcap", "pcrs"), re.M))


def _getcap_property(tpm: ToolsTpm, name: str) -> int:
    out = tpm.tool("tpm2_getcap", "properties-fixed")
    match = re.search(rf"^{name}:\n\s+raw: (0x[0-9A-Fa-f]+|\d+)", out, re.M)
    assert match, name
    return int(match.group(1), 0)


def test_tpm2_commands_and_responses_of_a_real_tpm() -> None:
    seen: list[bytes] = []

    def send(tpm: ToolsTpm, command: bytes) -> bytes:
        response = tpm.raw(command)
        seen.extend((command, response))
        return response

    with tools_tpm(tpm2=True, startup=False) as tpm:
        with pytest.raises(TpmReturnCode) as e:
            tpm2.parse_pcr_read_response(send(tpm, tpm2.build_pcr_read({SHA256: [10]})))
        assert (e.value.code, e.value.name) == (0x100, "TPM_RC_INITIALIZE")
        assert e.value.command == "TPM2_PCR_Read"

        # TPM2_Startup(TPM_SU_CLEAR), TPM 2.0 Part 3 section 9.3.
        startup = bytes.fromhex("80010000000c000001440000")
        assert tpm2.build_startup() == startup
        response = send(tpm, startup)
        tpm2.parse_startup_response(response)
        assert tpm2.decode_startup_response(response).encode() == response
        with pytest.raises(TpmReturnCode) as e:
            tpm2.parse_startup_response(send(tpm, startup))
        assert (e.value.name, e.value.command) == ("TPM_RC_INITIALIZE", "TPM2_Startup")

        # TPM2_PCR_Extend with an empty password session, both banks in one command.
        d1, d256 = hashlib.sha1(b"hello").digest(), hashlib.sha256(b"hello").digest()
        command = tpm2.build_pcr_extend(10, [(SHA1, d1), (SHA256, d256)])
        assert command == (
            bytes.fromhex("8002" "00000057" "00000182" "0000000a" "00000009" "40000009"
                          "0000" "00" "0000" "00000002" "0004") + d1 + bytes.fromhex("000b") + d256
        )  # fmt: skip
        response = send(tpm, command)
        tpm2.parse_pcr_extend_response(response)
        assert tpm2.decode_pcr_extend_response(response) == tpm2.PcrExtendResponse(0x01)
        want = {
            "sha1": hashlib.sha1(bytes(20) + d1).digest(),
            "sha256": hashlib.sha256(bytes(32) + d256).digest(),
        }
        assert tpm.pcrread("sha1:10+sha256:10") == {b: {10: v} for b, v in want.items()}

        # PCR_Read of several banks and PCRs; PCR 17 is all ones, PCR 11 was
        # extended by tpm2-tools.
        tpm.tool("tpm2_pcrextend", f"11:sha256={d256.hex()}")
        response = send(tpm, tpm2.build_pcr_read({SHA1: [10, 17], SHA256: [10, 11]}))
        decoded = tpm2.decode_pcr_read_response(response)
        assert decoded.encode() == response
        assert tpm2.parse_pcr_read_response(response) == {
            (SHA1, 10): want["sha1"],
            (SHA1, 17): b"\xff" * 20,
            (SHA256, 10): want["sha256"],
            (SHA256, 11): hashlib.sha256(bytes(32) + d256).digest(),
        }
        assert decoded.values() == {
            (BY_NAME[bank], pcr): value
            for bank, pcrs in tpm.pcrread("sha1:10,17+sha256:10,11").items()
            for pcr, value in pcrs.items()
        }

        # GetCapability: the active banks and two fixed properties, as tpm2_getcap says.
        response = send(tpm, tpm2.build_get_capability(tpm2.TPM_CAP_PCRS, 0, 1))
        assert {a.name for a in tpm2.parse_active_banks(response)} == _getcap_banks(tpm)
        assert tpm2.decode_get_capability_response(response).encode() == response
        response = send(tpm, tpm2.build_get_capability(tpm2.TPM_CAP_TPM_PROPERTIES, 0x11E, 2))
        got = tpm2.decode_get_capability_response(response)
        assert got.encode() == response
        assert got.properties == (
            (0x11E, _getcap_property(tpm, "TPM2_PT_MAX_COMMAND_SIZE")),
            (0x11F, _getcap_property(tpm, "TPM2_PT_MAX_RESPONSE_SIZE")),
        )

        # A PCR the TPM does not have: PCR_Extend fails with a format-one code on handle 1.
        with pytest.raises(TpmReturnCode) as e:
            tpm2.parse_pcr_extend_response(send(tpm, tpm2.build_pcr_extend(24, [(SHA1, d1)])))
        assert e.value.name == "TPM_RC_VALUE" and e.value.detail == "handle 1"

        response = send(tpm, tpm2.build_shutdown(tpm2.TPM_SU_STATE))
        tpm2.parse_shutdown_response(response)
        assert tpm2.decode_shutdown_response(response).encode() == response
    decoders = [
        tpm2.decode_startup_command, tpm2.decode_startup_response,
        tpm2.decode_shutdown_command, tpm2.decode_shutdown_response,
        tpm2.decode_pcr_extend_command, tpm2.decode_pcr_extend_response,
        tpm2.decode_pcr_read_command, tpm2.decode_pcr_read_response,
        tpm2.decode_get_capability_command, tpm2.decode_get_capability_response,
    ]  # fmt: skip
    assert_prefixes_only_raise_tpm_errors(seen, decoders)


def test_return_codes_a_real_tpm_gives_have_their_tcg_names() -> None:
    """The codes the tests above provoke, named as the TCG tables name them."""
    assert rc.tpm12_error(0x26).name == "TPM_INVALID_POSTINIT"
    assert rc.tpm12_error(0x02).name == "TPM_BADINDEX"
    assert rc.tpm2_error(0x100).name == "TPM_RC_INITIALIZE"
