"""The pure-Python kernel parser on crafted kernels: fields, errors with offsets, caps."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest
from kernel_info_images import (
    KSTART,
    LOAD_PADDR,
    ElfSpec,
    Section,
    Segment,
    build_bzimage,
    build_elf,
    bzimage_of,
    compress,
    default_notes,
    note,
    q,
    s,
)

from pvgrub_py.errors import InputError
from pvgrub_py.kernel.compression import decompress, detect
from pvgrub_py.kernel.lzo import decompress_lzop, lzo1x_decompress
from pvgrub_py.kernel.python_backend import inspect_python
from pvgrub_py.kernel.source import measure_bytes

CAP = 1 << 20
KINDS = ("gzip", "bzip2", "xz", "lzma", "lzo", "lz4", "zstd")

#: Compressed by the real ``lzop -9`` when it is installed: matches, literal runs, container.
LZOP_VECTOR_PLAIN = b"pvgrub-py measures Xen kernels. " * 64 + bytes(range(256)) * 4


def inspect(data: bytes, cap: int = CAP):  # type: ignore[no-untyped-def]
    return inspect_python(measure_bytes(data, "k"), cap=cap)


def without(number: int) -> list[bytes]:
    return [n for n in default_notes() if struct.unpack_from("<I", n, 8)[0] != number]


# -- formats and fields -------------------------------------------------------------------


def test_plain_elf_is_pv_and_pvh() -> None:
    report = inspect(build_elf())
    assert report.format == "ELF"
    assert report.bootable_types == ["xen-3.0-x86_64", "hvm-3.0-x86_32"]
    pv = report.guests["pv"].layout
    assert pv is not None
    assert pv.virt_base == 0xFFFFFFFF80000000
    assert pv.virt_kstart == KSTART
    assert pv.virt_entry == KSTART + 0x10
    assert pv.virt_hypercall == KSTART + 0x1000
    pvh = report.guests["pvh"].layout
    assert pvh is not None and pvh.virt_entry == LOAD_PADDR + 0x20 and pvh.virt_base == 0


def test_every_note_is_decoded_with_its_name() -> None:
    report = inspect(build_elf())
    by_name = {n.name: n.value for n in report.xen_notes}
    assert by_name["GUEST_OS"] == "linux"
    assert by_name["XEN_VERSION"] == "xen-3.0"
    assert by_name["FEATURES"] == "!writable_page_tables|pae_pgdir_above_4gb"
    assert by_name["L1_MFN_VALID"] == (1, 1)
    assert by_name["SUPPORTED_FEATURES"] == 0x8801
    assert by_name["PHYS32_ENTRY"] == LOAD_PADDR + 0x20
    assert report.note_source == "PT_NOTE"
    pv = report.guests["pv"]
    assert pv.features_required == 1 and pv.features_supported == 0x8811


@pytest.mark.parametrize("kind", KINDS)
def test_bzimage_payloads_decompress_to_the_same_vmlinux(kind: str) -> None:
    vmlinux = build_elf()
    report = inspect(bzimage_of(vmlinux, kind))
    assert report.format == "bzImage" and report.compression == kind
    assert report.vmlinux is not None and report.vmlinux["size"] == len(vmlinux)
    assert report.bzimage is not None and report.bzimage["protocol"] == "2.15"
    assert report.payload is not None and report.payload["declared_size"] == len(vmlinux)
    assert report.bootable_types == ["xen-3.0-x86_64", "hvm-3.0-x86_32"]


def test_whole_file_gzip_is_removed_and_measured_inflated() -> None:
    vmlinux = build_elf()
    report = inspect(gzip.compress(vmlinux, mtime=0))
    assert report.whole_file_gzip and report.format == "ELF"
    import hashlib

    assert report.measurement["sha256"] == hashlib.sha256(vmlinux).hexdigest()


def test_sht_note_fallback_and_pvh_only_kernel() -> None:
    notes = b"".join(default_notes())
    report = inspect(
        build_elf(ElfSpec(with_note_segment=False, sections=[Section(".notes", 7, notes)]))
    )
    assert report.note_source == "SHT_NOTE"
    assert report.bootable_types == ["xen-3.0-x86_64", "hvm-3.0-x86_32"]
    pvh_only = [note(18, struct.pack("<I", LOAD_PADDR + 0x20))]
    report = inspect(build_elf(ElfSpec(notes=pvh_only)))
    assert report.bootable_types == ["hvm-3.0-x86_32"]
    assert "generic loader or Linux" in (report.guests["pv"].reason or "")


def test_legacy_xen_guest_section() -> None:
    text = (
        b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,"
        b"ELF_PADDR_OFFSET=0,HYPERCALL_PAGE=0x1001\0"
    )
    report = inspect(
        build_elf(
            ElfSpec(notes=[], with_note_segment=False, sections=[Section("__xen_guest", 1, text)])
        )
    )
    assert report.note_source == "__xen_guest"
    pv = report.guests["pv"]
    assert pv.bootable and pv.layout is not None
    assert pv.layout.virt_hypercall == (0x1001 << 12) + 0xFFFFFFFF80000000
    assert not report.guests["pvh"].bootable


# -- not bootable, with a reason ----------------------------------------------------------


@pytest.mark.parametrize(
    ("notes", "reason"),
    [
        ([], "not a Xen-ELF image"),
        ([*without(5), note(5, s("xen-2.0"))], "Xen 3.0"),
        ([*without(1), note(1, q(KSTART + 0x100000))], "out of bounds"),
        ([*without(15), note(15, q(KSTART + 0x100))], "INIT_P2M"),
        ([*default_notes(), note(10, s("!frobnicate"))], "frobnicate"),
        ([*default_notes(), note(10, s("!dom0"))], "dom0"),
    ],
    ids=["no-notes", "xen-version", "entry", "p2m", "unknown-feature", "dom0"],
)
def test_pv_refusals_name_the_reason(notes: list[bytes], reason: str) -> None:
    report = inspect(build_elf(ElfSpec(notes=notes, with_note_segment=bool(notes))))
    assert not report.guests["pv"].bootable
    assert reason in (report.guests["pv"].reason or "")


# -- malformed: InputError naming the field and offset ------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bzimage_of(build_elf(), "xz")[:0x240], ["truncated bzImage", "0x250"]),
        (
            build_bzimage(compress("xz", build_elf()), payload_length=10**7),
            ["payload_length", "offset 0x24c", "past the end"],
        ),
        (build_bzimage(b"", payload_length=0)[:-1], ["payload_offset", "offset 0x248"]),
        (build_bzimage(compress("xz", build_elf()), version=0x0207), ["version", "0x206", "2.07"]),
        (build_bzimage(b"\x00\x01\x02\x03" * 64), ["unknown compression", "0x800"]),
        (
            build_bzimage(
                compress("xz", build_elf())[:100] + bytes(100), trailer=bytes([0x60, 0x42, 0, 0])
            ),
            ["xz payload"],
        ),
        (b"hello" * 200, ["neither a bzImage", "HdrS", "ELF"]),
        (build_elf(ElfSpec(note_offset=1 << 20)), ["PT_NOTE", "outside"]),
        (
            build_elf(ElfSpec(note_filesz=len(b"".join(default_notes())) - 4)),
            ["ELF note at offset"],
        ),
        (
            build_elf(ElfSpec(segments=[Segment(), Segment(paddr=LOAD_PADDR + 0x1000)])),
            ["overlap", "program headers 0 and 1"],
        ),
        (
            build_elf(ElfSpec(segments=[Segment(filesz=1 << 24)])),
            ["program header 0", "past the end"],
        ),
        (build_elf(ElfSpec(segments=[Segment(filesz=0x5000)])), ["past the end"]),
        (build_elf(ElfSpec(phnum=1000)), ["e_phoff", "0x20"]),
        (build_elf(ElfSpec(notes=[*without(1), note(1, b"\x01\x02\x03")])), ["ENTRY", "descsz 3"]),
        (build_elf(ElfSpec(notes=[*without(13), note(13, b"\x01" * 12)])), ["L1_MFN_VALID"]),
    ],
    ids=[
        "truncated-header",
        "lying-length",
        "offset-past-end",
        "old-protocol",
        "unknown-compression",
        "corrupt-xz",
        "not-a-kernel",
        "notes-outside-file",
        "note-overruns-segment",
        "overlapping-segments",
        "segment-beyond-file",
        "filesz-gt-memsz-or-eof",
        "phdr-overflow",
        "bad-numeric-note",
        "bad-word-note",
    ],
)
def test_malformed_kernels_raise_input_error_with_field_and_offset(
    data: bytes, words: list[str]
) -> None:
    with pytest.raises(InputError) as caught:
        inspect(data)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("kind", ["gzip", "bzip2"])
def test_decompression_bombs_stop_at_the_cap(kind: str) -> None:
    bomb = compress(kind, bytes(4 * CAP))
    # A gzip trailer that tells the truth (4 MiB) is refused before inflating,
    # as libxenguest does; one that lies (0) is caught by the cap.
    data = build_bzimage(bomb if kind == "bzip2" else bomb[:-4] + bytes(4))
    with pytest.raises(InputError, match=r"decompression bomb|inflates past"):
        inspect(data, cap=CAP)


def test_gzip_trailer_over_the_cap_is_refused_before_inflating() -> None:
    bomb = compress("gzip", bytes(4 * CAP))
    with pytest.raises(InputError, match="size trailer declares 4194304 bytes, over the 1 MiB cap"):
        inspect(build_bzimage(bomb), cap=CAP)


@pytest.mark.parametrize("kind", ["xz", "lzma", "zstd", "lz4"])
def test_size_trailer_bounds_the_output_as_in_xen(kind: str) -> None:
    bomb = compress(kind, bytes(4 * CAP))
    honest = build_bzimage(bomb, trailer=struct.pack("<I", 4 * CAP))
    with pytest.raises(InputError, match="size trailer declares 4194304 bytes, over the 1 MiB cap"):
        inspect(honest, cap=CAP)
    lying = build_bzimage(bomb, trailer=struct.pack("<I", CAP // 2))
    with pytest.raises(InputError, match="decompression bomb"):
        inspect(lying, cap=CAP)
    with pytest.raises(InputError, match="size trailer"):
        inspect(build_bzimage(bomb[:6]), cap=CAP)


def test_lzo_bomb_is_refused_from_its_block_header() -> None:
    header_and_block = compress("lzo", bytes(200_000))
    with pytest.raises(InputError, match="decompression bomb"):
        decompress("lzo", header_and_block, "k", 100_000)


# -- codecs -------------------------------------------------------------------------------


def test_detect_follows_xens_magic_order() -> None:
    assert detect(b"\x1f\x8b\x08") == "gzip"
    assert detect(b"\xfd7zXZ\x00\x00") == "xz"
    assert detect(b"\x5d\x00\x00\x80") == "lzma"
    assert detect(b"\x89LZO\x00\r\n") == "lzo"
    assert detect(b"\x02\x21\x4c\x18") == "lz4"
    assert detect(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect(b"\x00\x00") is None


def _lzop_file_of(raw_block: bytes, plain: bytes) -> bytes:
    header = struct.pack(">HHHBBIIII", 0x1040, 0x2080, 0x0940, 1, 9, 1, 0o100644, 0, 0) + b"\0"
    body = struct.pack(">III", len(plain), len(raw_block), zlib.adler32(plain)) + raw_block
    return (
        b"\x89LZO\x00\r\n\x1a\n"
        + header
        + struct.pack(">I", zlib.adler32(header))
        + body
        + struct.pack(">I", 0)
    )


def test_lzo1x_hand_assembled_stream() -> None:
    # 'abcd' as a first-byte literal run, a 3-byte copy from distance 4 (M2: 0b010 L=0),
    # then the end-of-stream marker 0x11 0x00 0x00.
    stream = bytes([17 + 4]) + b"abcd" + bytes([0b01000000 | (3 << 2), 0]) + b"\x11\x00\x00"
    assert lzo1x_decompress(stream, 7, "k") == b"abcdabc"
    # An overlapping 32-byte copy from distance 4 (M3: 0b001LLLLL, LE16 (distance-1) << 2).
    stream = bytes([17 + 4]) + b"abcd" + bytes([32 | 30, 12, 0]) + b"\x11\x00\x00"
    assert decompress_lzop(_lzop_file_of(stream, b"abcd" * 9), "k", CAP) == b"abcd" * 9


def test_lzo1x_rejects_a_match_before_the_start() -> None:
    stream = bytes([17 + 1]) + b"a" + bytes([0b01000000 | (7 << 2), 9]) + b"\x11\x00\x00"
    with pytest.raises(InputError, match="match distance"):
        lzo1x_decompress(stream, 5, "k")


def test_lzop_checksum_mismatch_is_refused() -> None:
    data = bytearray(compress("lzo", b"x" * 1000))
    data[-5] ^= 1  # inside the stored block
    with pytest.raises(InputError, match="adler32"):
        decompress("lzo", bytes(data), "k", CAP)


def test_lzop_vector_from_real_lzop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    if shutil.which("lzop") is None:
        pytest.skip("lzop is not installed (Debian package lzop)")
    (tmp_path / "plain").write_bytes(LZOP_VECTOR_PLAIN)
    subprocess.run(
        ["lzop", "-9", "-o", str(tmp_path / "c.lzo"), str(tmp_path / "plain")], check=True
    )
    packed = (tmp_path / "c.lzo").read_bytes()
    assert packed[len(packed) // 2 :]  # compressed, not stored
    assert decompress("lzo", packed, "k", CAP) == LZOP_VECTOR_PLAIN


def test_lz4_legacy_trailer_and_concatenated_magic() -> None:
    data = bytes(range(256)) * 100
    stream = compress("lz4", data)
    assert decompress("lz4", stream + struct.pack("<I", len(data)), "k", CAP) == data
    twice = stream + stream[:4] + stream[4:] + struct.pack("<I", 2 * len(data))
    assert decompress("lz4", twice, "k", CAP) == data * 2
    with pytest.raises(InputError, match="run past"):
        decompress("lz4", stream[:-10] + struct.pack("<I", len(data)), "k", CAP)
