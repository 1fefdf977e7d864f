"""The kernel bytes PCR 4 covers: whole-file gunzip with libxenguest's trigger rule."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import pytest

from pvgrub_py.errors import InputError
from pvgrub_py.measure.boot_files import measure_kernel
from pvgrub_py.measure.kernel import is_whole_file_gzip
from pvgrub_py.tpm.algorithms import SHA1, SHA256

BANKS = (SHA1, SHA256)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def sha(data: bytes) -> dict[str, bytes]:
    return {"sha1": hashlib.sha1(data).digest(), "sha256": hashlib.sha256(data).digest()}


def test_plain_kernel_is_measured_as_stored(tmp_path: Path) -> None:
    data = b"MZ" + os.urandom(300_000)
    m = measure_kernel(write(tmp_path, "k", data), BANKS)
    assert (m.pcr, m.what, m.length) == (4, "kernel", len(data))
    assert dict(m.digests) == sha(data)


def test_whole_file_gzip_is_measured_inflated(tmp_path: Path) -> None:
    inner = os.urandom(3 << 20) + bytes(2 << 20)
    m = measure_kernel(write(tmp_path, "k.gz", gzip.compress(inner)), BANKS)
    assert m.length == len(inner)
    assert dict(m.digests) == sha(inner)


def test_empty_kernel_hashes_no_bytes(tmp_path: Path) -> None:
    m = measure_kernel(write(tmp_path, "k", b""), BANKS)
    assert dict(m.digests) == sha(b"") and m.length == 0


def test_short_file_with_gzip_magic_is_not_gzip(tmp_path: Path) -> None:
    # xc_dom_check_gzip needs 6 bytes: magic plus the 4-byte trailer.
    data = b"\x1f\x8b\x08\x00\x00"
    assert measure_kernel(write(tmp_path, "k", data), BANKS).digests["sha1"] == sha(data)["sha1"]


def test_insane_isize_means_measured_as_stored(tmp_path: Path) -> None:
    # A trailer above XC_DOM_DECOMPRESS_MAX makes libxenguest load the file raw.
    data = gzip.compress(b"kernel")[:-4] + struct.pack("<I", (1 << 30) + 1)
    path = write(tmp_path, "k", data)
    assert not is_whole_file_gzip(data[:2], len(data), data[-4:])
    assert dict(measure_kernel(path, BANKS).digests) == sha(data)


def test_isize_at_the_cap_is_still_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"kernel")[:-4] + struct.pack("<I", 1 << 30)
    assert is_whole_file_gzip(data[:2], len(data), data[-4:])


def test_corrupt_gzip_stream_is_refused(tmp_path: Path) -> None:
    good = gzip.compress(os.urandom(100_000))
    bad = good[:20] + bytes(b ^ 0xFF for b in good[20:60]) + good[60:]
    with pytest.raises(InputError, match=r"^kernel .*/k: corrupt gzip stream"):
        measure_kernel(write(tmp_path, "k", bad), BANKS)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    good = gzip.compress(os.urandom(100_000))
    cut = good[: len(good) // 2] + good[-4:]  # keep a plausible trailer
    with pytest.raises(InputError, match=r"truncated gzip stream|corrupt gzip"):
        measure_kernel(write(tmp_path, "k", cut), BANKS)


def test_trailer_smaller_than_stream_stops_early(tmp_path: Path) -> None:
    # A decompression bomb with a small trailer is cut off at the trailer's size.
    bomb = gzip.compress(bytes(64 << 20))[:-4] + struct.pack("<I", 1000)
    with pytest.raises(InputError, match="inflates past the 1000 bytes"):
        measure_kernel(write(tmp_path, "k", bomb), BANKS)


def test_trailer_larger_than_stream_is_refused(tmp_path: Path) -> None:
    data = gzip.compress(b"x" * 5000)[:-4] + struct.pack("<I", 6000)
    with pytest.raises(InputError, match="gzip trailer length disagrees with the stream"):
        measure_kernel(write(tmp_path, "k", data), BANKS)


def test_second_member_trailer_disagreeing_with_first_is_refused(tmp_path: Path) -> None:
    # libxenguest sizes its buffer from the file's last four bytes, which here
    # belong to the second member: ambiguous, so refused.
    data = gzip.compress(b"A" * 5000) + gzip.compress(b"B" * 7000)
    with pytest.raises(InputError, match="inflates to 5000 bytes but its trailer declares 7000"):
        measure_kernel(write(tmp_path, "k", data), BANKS)


def test_only_the_first_gzip_member_is_measured(tmp_path: Path) -> None:
    # zlib's inflate (and so libxenguest) stops at the end of the first member.
    first = b"A" * 4000
    data = gzip.compress(first) + gzip.compress(b"B" * 4000)  # same ISIZE in both trailers
    assert dict(measure_kernel(write(tmp_path, "k", data), BANKS).digests) == sha(first)


def test_raw_deflate_with_gzip_magic_is_corrupt(tmp_path: Path) -> None:
    co = zlib.compressobj(wbits=-15)
    body = co.compress(b"hello") + co.flush()
    data = b"\x1f\x8b" + body + struct.pack("<I", 5)
    with pytest.raises(InputError, match="corrupt gzip stream"):
        measure_kernel(write(tmp_path, "k", data), BANKS)


def test_push_style_measurer_matches_and_hands_out_inflated_bytes() -> None:
    from pvgrub_py.measure.kernel import KernelMeasurer

    inner = os.urandom(700_000)
    data = gzip.compress(inner)
    parts: list[bytes] = []
    m = KernelMeasurer(BANKS, "kernel k", on_inflated=parts.append)
    m.update(data[:1])  # the magic split across chunks
    for i in range(1, len(data), 4093):  # then odd chunk sizes
        m.update(data[i : i + 4093])
    digests, length = m.finish()
    assert m.whole_file_gzip and length == len(inner)
    assert digests == sha(inner) and b"".join(parts) == inner

    fake = KernelMeasurer(BANKS, "kernel k")
    fake.update(b"\x1f")  # the magic split across chunks
    fake.update(b"\x8b" + b"not a deflate stream" + struct.pack("<I", 5))
    with pytest.raises(InputError, match="corrupt gzip stream"):
        fake.finish()
    big = KernelMeasurer(BANKS, "kernel k")  # a trailer over 1 GiB: measured as stored
    raw = b"\x1f\x8b" + b"junk" + struct.pack("<I", (1 << 30) + 7)
    big.update(raw)
    assert big.finish() == (sha(raw), len(raw)) and not big.whole_file_gzip
