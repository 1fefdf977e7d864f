"""What test_tpm12 and test_tpm2 share: swtpm vectors, the header's code field, fuzzing."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from pvgrub_py.tpm.errors import TpmError

u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


def load_vectors(fixtures_dir: Path, tpm_version: str) -> list[dict[str, Any]]:
    """swtpm's recorded command/response vectors for *tpm_version* ("1.2" or "2.0")."""
    data: list[dict[str, Any]] = json.loads(
        (fixtures_dir / "tpm" / "swtpm-tpm-vectors.json").read_text()
    )
    return [v for v in data if v["tpm_version"] == tpm_version]


def header_code(packet: bytes) -> int:
    """The u32 at offset 6: a command's ordinal/code, a response's return code."""
    value: int = struct.unpack_from(">I", packet, 6)[0]
    return value


def decode_or_tpm_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    """Only TpmError may escape, and whatever is accepted re-encodes to itself."""
    try:
        result = decoder(data)
    except TpmError:
        return
    assert result.encode() == data


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "grow", "insert", "delete"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "cut":
            del data[at:]
        elif op == "grow":
            data += draw(st.binary(min_size=1, max_size=8))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=4))]
    if draw(st.booleans()) and len(data) >= 6:
        data[2:6] = len(data).to_bytes(4, "big")  # get past the size check
    return bytes(data)
