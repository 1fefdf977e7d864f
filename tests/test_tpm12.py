"""TPM 1.2 codecs against swtpm's own vectors, the reference bytes, and hypothesis."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm_test_helpers import decode_or_tpm_error, header_code, load_vectors, mutated, u32

from pvgrub_py.tpm import tpm12
from pvgrub_py.tpm.errors import TpmProtocolError, TpmReturnCode

KERNEL_DIGEST = hashlib.sha1(b"kernel-bytes").digest()


@pytest.fixture(scope="module")
def vectors(fixtures_dir: Path) -> list[dict[str, Any]]:
    return load_vectors(fixtures_dir, "1.2")


def _pair(v: dict[str, Any]) -> tuple[bytes, bytes]:
    assert v["response_match"] == "exact"  # no TPM 1.2 vector has a wildcard
    return bytes.fromhex(v["command_hex"]), bytes.fromhex(v["response_hex"])


# --- swtpm vectors -----------------------------------------------------------------


@pytest.mark.conformance
def test_startup_vectors(vectors: list[dict[str, Any]]) -> None:
    checked = 0
    for v in vectors:
        command, response = _pair(v)
        if header_code(command) != tpm12.TPM_ORD_STARTUP:
            continue
        decoded = tpm12.decode_startup_command(command)
        assert tpm12.build_startup(decoded.startup_type) == command
        assert tpm12.build_startup() == command  # both vectors are ST_CLEAR
        if header_code(response) == 0:
            tpm12.parse_startup_response(response)  # success: no exception
            assert tpm12.decode_startup_response(response).encode() == response
        else:
            with pytest.raises(TpmReturnCode) as e:
                tpm12.parse_startup_response(response)
            assert (e.value.name, e.value.command) == ("TPM_INVALID_POSTINIT", "TPM_Startup")
        checked += 1
    assert checked == 2


@pytest.mark.conformance
def test_pcr_read_vectors(vectors: list[dict[str, Any]]) -> None:
    checked = 0
    for v in vectors:
        command, response = _pair(v)
        if header_code(command) != tpm12.TPM_ORD_PCR_READ:
            continue
        decoded = tpm12.decode_pcr_read_command(command)
        assert tpm12.build_pcr_read(decoded.pcr) == command
        code = header_code(response)
        if code == 0:
            value = tpm12.parse_pcr_read_response(response)
            assert tpm12.decode_pcr_read_response(response).encode() == response
            if "verified_pcr" in v:
                assert value.hex() == v["verified_pcr"]["value"], v["description"]
            else:
                assert value == b"\xff" * 20  # PCR17 before any DRTM hash
        else:
            with pytest.raises(TpmReturnCode) as e:
                tpm12.parse_pcr_read_response(response)
            assert e.value.code == code
            assert e.value.name in {"TPM_FAIL", "TPM_INVALID_POSTINIT"}
            assert str(e.value).startswith("TPM_PCRRead: TPM returned ")
        checked += 1
    assert checked == 9


@pytest.mark.conformance
def test_verified_pcr_values_are_the_extend_rule(vectors: list[dict[str, Any]]) -> None:
    # The vectors state PCR = SHA1(00*20 || SHA1(data)); the codec hands back that value.
    data = {17: b"1234", 10: b"test"}
    for v in vectors:
        formula = v.get("verified_pcr", {}).get("formula", "")
        if "SHA1(b'1234')" in formula or "SHA1(b'test')" in formula:
            pcr = tpm12.decode_pcr_read_command(_pair(v)[0]).pcr
            expected = hashlib.sha1(bytes(20) + hashlib.sha1(data[pcr]).digest()).digest()
            assert tpm12.parse_pcr_read_response(_pair(v)[1]) == expected


# --- byte-exact examples, checked against swtpm (Part 3 sections 3.2, 16.1, 16.2) --


def test_reference_extend_example() -> None:
    expected = bytes.fromhex(
        "00c1 00000022 00000014 00000004 93e515dec945cefbe5f2293a16a8e2dc6df5d531"
    )
    assert tpm12.build_extend(4, KERNEL_DIGEST) == expected
    assert tpm12.decode_extend_command(expected) == tpm12.ExtendCommand(4, KERNEL_DIGEST)
    new_value = hashlib.sha1(bytes(20) + KERNEL_DIGEST).digest()
    response = bytes.fromhex("00c4 0000001e 00000000") + new_value
    assert new_value.hex().startswith("05b0e492") and new_value.hex().endswith("23ae05")
    assert tpm12.parse_extend_response(response) == new_value


def test_reference_sizes() -> None:
    assert len(tpm12.build_extend(0, bytes(20))) == 34
    assert tpm12.build_pcr_read(17) == bytes.fromhex("00c1 0000000e 00000015 00000011")
    assert tpm12.build_startup(tpm12.TPM_ST_STATE) == bytes.fromhex("00c1 0000000c 00000099 0002")
    assert len(tpm12.ExtendResponse(bytes(20)).encode()) == 30
    assert tpm12.StartupResponse().encode() == bytes.fromhex("00c4 0000000a 00000000")


@pytest.mark.parametrize(
    ("code", "name"),
    [(0x02, "TPM_BADINDEX"), (0x19, "TPM_BAD_PARAM_SIZE"), (0x26, "TPM_INVALID_POSTINIT")],
)
def test_reference_error_responses(code: int, name: str) -> None:
    response = tpm12.encode_error_response(code)
    assert response == bytes.fromhex("00c4 0000000a") + code.to_bytes(4, "big")
    with pytest.raises(TpmReturnCode) as e:
        tpm12.parse_extend_response(response)
    assert (e.value.code, e.value.name, e.value.command) == (code, name, "TPM_Extend")


def test_tpm2_answer_to_a_tpm12_command() -> None:
    # Reference 6.2: swtpm --tpm2 answered a TPM 1.2 Extend with tag 0x8001 / rc 0x84.
    with pytest.raises(TpmReturnCode) as e:
        tpm12.parse_extend_response(bytes.fromhex("8001 0000000a 00000084"))
    assert (e.value.code, e.value.name) == (0x84, "TPM_RC_VALUE")
    assert "this TPM speaks TPM 2.0" in str(e.value)
    with pytest.raises(TpmProtocolError, match=r"TPM 2\.0 tag 0x8001 with success"):
        tpm12.parse_startup_response(bytes.fromhex("8001 0000000a 00000000"))


# --- input validation ------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 19, 21, 32])
def test_extend_digest_must_be_20_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=f"exactly 20 bytes .SHA-1., got {size}"):
        tpm12.build_extend(0, bytes(size))


@pytest.mark.parametrize("pcr", [-1, 1 << 32])
def test_pcr_index_is_u32(pcr: int) -> None:
    with pytest.raises(ValueError, match="does not fit in u32"):
        tpm12.build_extend(pcr, bytes(20))
    with pytest.raises(ValueError, match="does not fit in u32"):
        tpm12.build_pcr_read(pcr)


def test_other_inputs_are_checked() -> None:
    with pytest.raises(TypeError):
        tpm12.build_pcr_read("4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="u16"):
        tpm12.build_startup(0x10000)
    with pytest.raises(ValueError, match="success"):
        tpm12.encode_error_response(0)


# --- malformed responses: precise messages ---------------------------------------

GOOD_EXTEND = bytes.fromhex("00c4 0000001e 00000000") + bytes(20)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes, shorter than the 10-byte header"),
        (GOOD_EXTEND[:9], "9 bytes, shorter than the 10-byte header"),
        (b"\x00\xc1" + GOOD_EXTEND[2:], "tag 0x00c1, expected 0x00c4"),
        (GOOD_EXTEND[:-1], "paramSize field says 30 bytes but 29 arrived (1 byte short)"),
        (
            GOOD_EXTEND + b"\x00\x00",
            "paramSize field says 30 bytes but 32 arrived (2 bytes too many)",
        ),
        (
            bytes.fromhex("00c4 00000020 00000000") + bytes(22),
            "expected 30 bytes (header + outDigest[20]), got 32",
        ),
        (
            bytes.fromhex("00c4 0000000a 00000000"),
            "expected 30 bytes (header + outDigest[20]), got 10",
        ),
        (
            bytes.fromhex("00c4 0000000e 00000002 00000000"),
            "TPM_BADINDEX (0x2) with paramSize 14; error responses are 10 bytes",
        ),
        (bytes.fromhex("1234 0000000a 00000000"), "tag 0x1234"),
    ],
)
def test_malformed_extend_responses(data: bytes, message: str) -> None:
    with pytest.raises(TpmProtocolError) as e:
        tpm12.parse_extend_response(data)
    assert str(e.value).startswith("TPM_Extend response: ")
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes.fromhex("00c2 0000000e 00000015 00000011"), "tag 0x00c2, expected 0x00c1"),
        (bytes.fromhex("00c1 0000000e 00000014 00000011"), "ordinal 0x14, expected 0x15"),
        (bytes.fromhex("00c1 0000000f 00000015 00000011"), "says 15 bytes but 14 arrived"),
        (
            bytes.fromhex("00c1 0000000c 00000015 0011"),
            "expected 14 bytes (header + pcrIndex), got 12",
        ),
    ],
)
def test_malformed_pcr_read_commands(data: bytes, message: str) -> None:
    with pytest.raises(TpmProtocolError) as e:
        tpm12.decode_pcr_read_command(data)
    assert str(e.value).startswith("TPM_PCRRead command: ")
    assert message in str(e.value)


# --- hypothesis: round trips -----------------------------------------------------

u16 = st.integers(min_value=0, max_value=0xFFFF)
digest20 = st.binary(min_size=20, max_size=20)

commands = st.one_of(
    st.builds(tpm12.StartupCommand, u16),
    st.builds(tpm12.ExtendCommand, u32, digest20),
    st.builds(tpm12.PcrReadCommand, u32),
)
responses = st.one_of(
    st.just(tpm12.StartupResponse()),
    st.builds(tpm12.ExtendResponse, digest20),
    st.builds(tpm12.PcrReadResponse, digest20),
)

COMMAND_DECODERS: dict[type, Callable[[bytes], object]] = {
    tpm12.StartupCommand: tpm12.decode_startup_command,
    tpm12.ExtendCommand: tpm12.decode_extend_command,
    tpm12.PcrReadCommand: tpm12.decode_pcr_read_command,
}
RESPONSE_DECODERS: dict[type, Callable[[bytes], object]] = {
    tpm12.StartupResponse: tpm12.decode_startup_response,
    tpm12.ExtendResponse: tpm12.decode_extend_response,
    tpm12.PcrReadResponse: tpm12.decode_pcr_read_response,
}
DECODERS = [*COMMAND_DECODERS.values(), *RESPONSE_DECODERS.values()]


@given(commands)
def test_command_round_trip(command: Any) -> None:
    data = command.encode()
    assert struct.unpack_from(">I", data, 2)[0] == len(data)
    assert COMMAND_DECODERS[type(command)](data) == command


@given(responses)
def test_response_round_trip(response: Any) -> None:
    assert RESPONSE_DECODERS[type(response)](response.encode()) == response


@given(u32.filter(bool))
def test_error_responses_round_trip(code: int) -> None:
    for decoder in RESPONSE_DECODERS.values():
        with pytest.raises(TpmReturnCode) as e:
            decoder(tpm12.encode_error_response(code))
        assert e.value.code == code


@given(u32, digest20)
def test_builders_match_dataclasses(pcr: int, digest: bytes) -> None:
    assert tpm12.build_extend(pcr, digest) == tpm12.ExtendCommand(pcr, digest).encode()
    assert tpm12.parse_extend_response(tpm12.ExtendResponse(digest).encode()) == digest
    assert tpm12.parse_pcr_read_response(tpm12.PcrReadResponse(digest).encode()) == digest


# --- hypothesis: fuzzing -----------------------------------------------------------


valid_packets = st.one_of(
    commands.map(lambda c: c.encode()),
    responses.map(lambda r: r.encode()),
    u32.filter(bool).map(tpm12.encode_error_response),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_tpm_errors(data: bytes) -> None:
    for decoder in DECODERS:
        decode_or_tpm_error(decoder, data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(valid_packets))
def test_mutated_packets_only_raise_tpm_errors(data: bytes) -> None:
    for decoder in DECODERS:
        decode_or_tpm_error(decoder, data)


@pytest.mark.conformance
def test_mutated_vectors_only_raise_tpm_errors(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        for packet in _pair(v):
            for cut in range(len(packet) + 1):
                for decoder in DECODERS:
                    decode_or_tpm_error(decoder, packet[:cut])
                    decode_or_tpm_error(decoder, packet[:cut] + b"\x00")
