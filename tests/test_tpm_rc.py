"""Return-code decoding: the spec's examples, every code swtpm really sent, and all of u32."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvgrub_py.tpm import rc
from pvgrub_py.tpm.errors import TpmReturnCode

# Every non-zero code in swtpm-tpm-vectors.json (and its accepted retry
# alternative), with the name and location the TCG specs give it.
VECTOR_CODES: dict[tuple[str, int], tuple[str, str]] = {
    ("1.2", 0x09): ("TPM_FAIL", ""),
    ("1.2", 0x26): ("TPM_INVALID_POSTINIT", ""),
    ("1.2", 0x33): ("TPM_NOTLOCAL", ""),
    ("1.2", 0x3D): ("TPM_BAD_LOCALITY", ""),
    ("2.0", 0x100): ("TPM_RC_INITIALIZE", ""),
    ("2.0", 0x101): ("TPM_RC_FAILURE", ""),
    ("2.0", 0x1DA): ("TPM_RC_INSUFFICIENT", "parameter 1"),
    ("2.0", 0x907): ("TPM_RC_LOCALITY", ""),
    ("2.0", 0x921): ("TPM_RC_LOCKOUT", ""),
    ("2.0", 0x922): ("TPM_RC_RETRY", ""),
    ("2.0", 0x98E): ("TPM_RC_AUTH_FAIL", "session 1"),
}


@pytest.fixture(scope="module")
def vectors(fixtures_dir: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(
        (fixtures_dir / "tpm" / "swtpm-tpm-vectors.json").read_text()
    )
    return data


def _response_code(hex_text: str) -> int:
    code: int = struct.unpack(">I", bytes.fromhex(hex_text.replace("..", "00"))[6:10])[0]
    return code


def _decode(version: str, code: int) -> TpmReturnCode:
    return rc.tpm12_error(code) if version == "1.2" else rc.tpm2_error(code)


@pytest.mark.conformance
def test_every_vector_return_code_has_its_tcg_name(vectors: list[dict[str, Any]]) -> None:
    seen = set()
    for v in vectors:
        responses = [v["response_hex"], *v.get("alt_responses_accepted_before_retry", [])]
        for hex_text in responses:
            code = _response_code(hex_text)
            if code == 0:
                continue
            key = (v["tpm_version"], code)
            assert key in VECTOR_CODES, f"unexpected rc 0x{code:x} in {v['description']}"
            err = _decode(*key)
            assert (err.name, err.detail) == VECTOR_CODES[key], v["description"]
            assert err.code == code
            seen.add(key)
    assert seen == set(VECTOR_CODES)


@pytest.mark.parametrize(
    ("code", "name", "detail"),
    [
        (0x184, "TPM_RC_VALUE", "handle 1"),  # reference 6.2: pcrHandle 24
        (0x1DA, "TPM_RC_INSUFFICIENT", "parameter 1"),  # reference 6.2: short digest
        (0x100, "TPM_RC_INITIALIZE", ""),
        (0x101, "TPM_RC_FAILURE", ""),
        (0x143, "TPM_RC_COMMAND_CODE", ""),
        (0x90A, "TPM_RC_TESTING", ""),
        (0x922, "TPM_RC_RETRY", ""),
        (0x907, "TPM_RC_LOCALITY", ""),
        (0x01E, "TPM_RC_BAD_TAG", ""),
        (0x084, "TPM_RC_VALUE", ""),  # format one, number 0: not tied to one parameter
        (0x2C4, "TPM_RC_VALUE", "parameter 2"),
        (0xFC4, "TPM_RC_VALUE", "parameter 15"),
        (0x78B, "TPM_RC_HANDLE", "handle 7"),
        (0xF8E, "TPM_RC_AUTH_FAIL", "session 7"),
        (0x9A2, "TPM_RC_BAD_AUTH", "session 1"),
        (0x1C3, "TPM_RC_HASH", "parameter 1"),
        (0x1D5, "TPM_RC_SIZE", "parameter 1"),
        (0x916, "TPM_RC_REFERENCE_H6", ""),
        (0x918, "TPM_RC_REFERENCE_S0", ""),
    ],
)
def test_tpm2_codes(code: int, name: str, detail: str) -> None:
    err = rc.tpm2_error(code, "TPM2_PCR_Extend")
    assert (err.code, err.name, err.detail, err.command) == (code, name, detail, "TPM2_PCR_Extend")
    assert str(err).startswith(f"TPM2_PCR_Extend: TPM returned {name} (0x{code:x})")


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1, "TPM_AUTHFAIL"),
        (2, "TPM_BADINDEX"),
        (3, "TPM_BAD_PARAMETER"),
        (6, "TPM_DEACTIVATED"),
        (7, "TPM_DISABLED"),
        (9, "TPM_FAIL"),
        (10, "TPM_BAD_ORDINAL"),
        (0x19, "TPM_BAD_PARAM_SIZE"),
        (0x1E, "TPM_BADTAG"),
        (0x26, "TPM_INVALID_POSTINIT"),
        (0x33, "TPM_NOTLOCAL"),
        (0x3D, "TPM_BAD_LOCALITY"),
        (0x5F, "TPM_MA_AUTHORITY"),
        (0x61, "TPM_PERMANENTEK"),
        (0x63, "TPM_NOCONTEXTSPACE"),
        (0x800, "TPM_RETRY"),
        (0x803, "TPM_DEFEND_LOCK_RUNNING"),
    ],
)
def test_tpm12_codes(code: int, name: str) -> None:
    err = rc.tpm12_error(code, "TPM_Extend")
    assert (err.code, err.name, err.detail) == (code, name, "")
    assert str(err) == f"TPM_Extend: TPM returned {name} (0x{code:x})"


@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (0x60, ""),
        (0x64, ""),
        (0x401, "vendor-specific"),
        (0x8FF, "non-fatal: the command may be retried"),
    ],
)
def test_tpm12_unknown_codes_keep_the_number(code: int, detail: str) -> None:
    err = rc.tpm12_error(code)
    assert (err.name, err.detail) == (f"TPM_RC_0x{code:x}", detail)


def test_tpm2_unknown_codes_keep_the_number() -> None:
    assert rc.tpm2_error(0x17F).name == "TPM_RC_0x17f"  # RC_MAX_FM0: unassigned
    assert rc.tpm2_error(0x930).name == "TPM_RC_0x930"
    assert rc.tpm2_error(0x0BF).name == "TPM_RC_0xbf"  # format one, error 0x3F unassigned
    unknown_fmt1 = rc.tpm2_error(0x2FF)  # named by its error number, like the known ones
    assert (unknown_fmt1.name, unknown_fmt1.detail) == ("TPM_RC_0xbf", "parameter 2")
    assert "(0x2ff)" in str(unknown_fmt1)
    vendor = rc.tpm2_error(0x501)
    assert (vendor.name, vendor.detail) == ("TPM_RC_0x501", "vendor-specific")
    tss_layer = rc.tpm2_error(0x000A0005)  # a TSS layer code, never from a TPM
    assert tss_layer.name == "TPM_RC_0xa0005"


def test_tpm2_format_zero_without_ver1_is_a_tpm12_code() -> None:
    err = rc.tpm2_error(0x26)
    assert (err.name, err.detail) == ("TPM_INVALID_POSTINIT", "a TPM 1.2 return code")


def test_tpm2_answering_a_tpm12_command() -> None:
    # Reference 6.2: swtpm --tpm2 answered TPM_Extend with tag 0x8001, rc 0x84.
    err = rc.foreign_version_error(0x8001, 0x84, "TPM_Extend")
    assert (err.code, err.name, err.command) == (0x84, "TPM_RC_VALUE", "TPM_Extend")
    assert "this TPM speaks TPM 2.0" in err.detail
    assert "tag 0x8001" in str(err)


def test_tpm12_answering_a_tpm2_command() -> None:
    err = rc.foreign_version_error(0x00C4, 0x1E, "TPM2_PCR_Read")
    assert err.name == "TPM_BADTAG"
    assert "this TPM speaks TPM 1.2" in err.detail


def test_foreign_format_one_keeps_its_location() -> None:
    err = rc.foreign_version_error(0x8001, 0x184, "TPM_Extend")
    assert err.detail.endswith("; handle 1")


def test_tables_have_unique_tcg_names() -> None:
    for table in (rc.TPM12_NAMES, rc.TPM2_FMT0_NAMES, rc.TPM2_FMT1_NAMES):
        names = list(table.values())
        assert len(names) == len(set(names))
        assert all(n.startswith("TPM_") for n in names)
    assert all(code & rc.RC_FMT1 and code < 0xC0 for code in rc.TPM2_FMT1_NAMES)
    assert not any(code & rc.RC_FMT1 for code in rc.TPM2_FMT0_NAMES)


u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


@given(u32)
def test_any_code_decodes_without_raising(code: int) -> None:
    for err in (rc.tpm12_error(code, "X"), rc.tpm2_error(code, "X")):
        assert isinstance(err, TpmReturnCode)
        assert err.code == code and err.name.startswith("TPM_") and err.command == "X"


@given(st.integers(min_value=0, max_value=0xFFF).filter(lambda c: bool(c & 0x80)))
def test_format_one_name_ignores_location_like_linux(code: int) -> None:
    # Linux tpm2_rc_value(): (rc & 0x80) ? rc & 0xBF : rc -- the location is not the error.
    err = rc.tpm2_error(code)
    assert err.name == rc.tpm2_error(code & 0xBF).name
    number = (code >> 8) & 0xF
    if code & 0x40:
        assert err.detail == (f"parameter {number}" if number else "")
    elif code & 0x800:
        assert err.detail == f"session {number & 7}"
    else:
        assert err.detail == (f"handle {number}" if number else "")


@given(st.sampled_from([0x8001, 0x8002, 0x00C4, 0x00C5, 0x00C6]), u32)
def test_foreign_version_error_never_raises(tag: int, code: int) -> None:
    err = rc.foreign_version_error(tag, code, "X")
    assert err.code == code and "this TPM speaks" in err.detail
