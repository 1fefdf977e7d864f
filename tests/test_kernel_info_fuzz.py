"""Hypothesis fuzzing of the python kernel parser: only InputError may escape, quickly.

Inputs are crafted kernels (ELF, and bzImages with every payload
compression) with random byte flips, truncations and header-field
overwrites, plus raw random bytes for the LZO1X and LZ4 decoders.  Where
our parser accepts a mutant, libxenguest (dummy handle) must reach the
same verdict: we may be stricter than Xen, never more permissive.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_info_images import build_elf, bzimage_of

from pvgrub_py.errors import InputError
from pvgrub_py.kernel.lz4_legacy import decompress as lz4_decompress
from pvgrub_py.kernel.lzo import decompress_lzop, lzo1x_decompress
from pvgrub_py.kernel.python_backend import inspect_python
from pvgrub_py.kernel.report import KernelReport
from pvgrub_py.kernel.source import measure_bytes
from pvgrub_py.xen.availability import availability

CAP = 1 << 20
ELF = build_elf()
SEEDS = [ELF] + [bzimage_of(ELF, kind) for kind in ("gzip", "xz", "lzma", "lz4", "zstd", "lzo")]
FUZZ = settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
#: Interesting places: ELF header and program headers, the bzImage setup header.
HOT_OFFSETS = list(range(0, 64 + 56 * 3)) + list(range(0x1F1, 0x270))


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        how = draw(st.sampled_from(["flip", "hot", "word", "truncate"]))
        if how == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
            if not data:
                data = bytearray(b"\0")
        elif how == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        else:
            i = (
                draw(st.sampled_from(HOT_OFFSETS))
                if how == "hot"
                else draw(st.integers(0, max(0, len(data) - 4)))
            )
            if i + 4 <= len(data):
                value = draw(st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x1000, len(data)]))
                struct.pack_into("<I", data, i, value)
    return bytes(data)


def parse(data: bytes) -> KernelReport | None:
    try:
        return inspect_python(measure_bytes(data, "fuzz"), cap=CAP)
    except InputError as e:
        assert "\n" not in str(e)
        return None


@FUZZ
@given(mutants())
def test_mutated_kernels_raise_only_input_error(data: bytes) -> None:
    parse(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_raise_only_input_error(data: bytes) -> None:
    parse(data)


@FUZZ
@given(st.binary(max_size=512), st.integers(0, 4096))
def test_lzo1x_random_streams(stream: bytes, size: int) -> None:
    try:
        out = lzo1x_decompress(stream, size, "fuzz")
    except InputError:
        return
    assert len(out) == size


@FUZZ
@given(st.binary(max_size=512))
def test_lzop_and_lz4_containers(blob: bytes) -> None:
    for decoder, magic in (
        (decompress_lzop, b"\x89LZO\x00\r\n\x1a\n"),
        (lz4_decompress, b"\x02\x21\x4c\x18"),
    ):
        try:
            out = decoder(magic + blob, "fuzz", 1 << 16)
        except InputError:
            continue
        assert len(out) <= 1 << 16


@pytest.mark.skipif(not availability().built, reason="Xen bindings not built")
@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_accepted_mutants_get_libxenguests_verdict(data: bytes) -> None:
    from pvgrub_py.kernel.libxenguest_backend import inspect_libxenguest

    ours = parse(data)
    if ours is None or ours.compression == "lzo":
        return  # we refused (stricter), or Debian's libxenguest has no LZO
    theirs = inspect_libxenguest(measure_bytes(data, "fuzz"), cap=CAP)
    reasons = {name: v.reason for name, v in theirs.guests.items()}
    assert ours.bootable_types == theirs.bootable_types, (ours.compression, ours.payload, reasons)
