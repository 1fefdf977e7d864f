"""Our parser against Xen's: libxenguest (dummy handle) and readnotes, same inputs.

Real Debian kernels must agree on every fact both backends report; Xen's
``readnotes`` run on the vmlinux we extracted must list the same notes.
Crafted kernels must get the same verdict (bootable as which types), except
where we are stricter on purpose (a loader must not copy bytes from outside
the image or over itself) or where Debian's libxenguest lacks a
decompressor (built without libbz2 and liblzo2).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
from kernel_info_images import (
    DEBIAN_PACKAGES,
    KSTART,
    LOAD_PADDR,
    ElfSpec,
    Section,
    Segment,
    boot_kernels,
    build_bzimage,
    build_elf,
    bzimage_of,
    cached_kernels,
    compress,
    default_notes,
    download_debian_kernel,
    note,
    q,
    readnotes,
    s,
)

from pvgrub_py.errors import InputError
from pvgrub_py.kernel import compression
from pvgrub_py.kernel.bzimage import is_bzimage, parse_setup_header
from pvgrub_py.kernel.python_backend import inspect_python
from pvgrub_py.kernel.report import KernelReport, compare
from pvgrub_py.kernel.source import measure_bytes, read_kernel
from pvgrub_py.xen.availability import availability

pytestmark = pytest.mark.skipif(
    not availability().built, reason=f"Xen bindings not built: {availability().reason}"
)
CAP = 1 << 20


def libxenguest(data: bytes, cap: int = CAP) -> KernelReport:
    from pvgrub_py.kernel.libxenguest_backend import inspect_libxenguest

    return inspect_libxenguest(measure_bytes(data, "k"), cap=cap)


def python(data: bytes, cap: int = CAP) -> KernelReport | InputError:
    try:
        return inspect_python(measure_bytes(data, "k"), cap=cap)
    except InputError as e:
        return e


def verdict(report: KernelReport | InputError) -> list[str]:
    return [] if isinstance(report, InputError) else report.bootable_types


# -- real kernels -------------------------------------------------------------------------

REAL = boot_kernels() + cached_kernels()


def vmlinux_of(path: Path) -> bytes:
    data = read_kernel(str(path)).loaded
    if not is_bzimage(data):
        return data
    header = parse_setup_header(data, str(path))
    payload = data[header.payload_start : header.payload_start + header.payload_length]
    kind = compression.detect(payload)
    assert kind is not None
    return compression.decompress(kind, payload, str(path))


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_kernel_backends_agree(path: Path) -> None:
    from pvgrub_py.kernel.libxenguest_backend import inspect_libxenguest

    src = read_kernel(str(path))
    ours, xens = inspect_python(src), inspect_libxenguest(src)
    assert compare(ours, xens) == []
    assert ours.bootable_types == xens.bootable_types
    assert "xen-3.0-x86_64" in ours.bootable_types
    assert ours.vmlinux and xens.vmlinux and ours.vmlinux["sha256"] == xens.vmlinux["sha256"]
    assert len(ours.xen_notes) == len(xens.xen_notes) >= 10


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_kernel_notes_match_readnotes(path: Path, tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(vmlinux_of(path))
    theirs = readnotes(vmlinux)
    if theirs is None:
        pytest.skip("Xen's readnotes is not installed (Debian package xen-utils-4.17)")
    ours = inspect_python(measure_bytes(vmlinux.read_bytes(), str(vmlinux)))
    assert ours.xen_notes
    for n in ours.xen_notes:
        if f"unknown {n.type:#x}" in theirs:
            continue  # readnotes 4.17 does not name INIT_P2M, MOD_START_PFN, SUPPORTED_FEATURES
        assert n.name in theirs, f"readnotes lacks {n.name}"
        text = theirs[n.name]
        if isinstance(n.value, str):
            assert text == n.value
        elif isinstance(n.value, tuple):
            assert text == f"mask={n.value[0]:#x} value={n.value[1]:#x}"
        else:
            number = text.split()[0]
            assert int(number, 16) == n.value
            assert text.endswith(f"({len(n.desc)} bytes)")
    assert len(theirs) == len(ours.xen_notes)


@pytest.mark.slow
def test_a_second_debian_kernel_version_is_covered() -> None:
    """Downloads Debian linux-image packages into the cache when fewer than two versions exist."""
    have = {p.name for p in boot_kernels() + cached_kernels()}
    for pattern in DEBIAN_PACKAGES:
        if len(have) >= 3:
            break
        got = download_debian_kernel(pattern)
        if got is not None:
            have.add(got.name)
    if len(have) < 2:
        pytest.skip("no second Debian kernel available (apt cannot download here)")
    for name in sorted(have):
        path = next(p for p in boot_kernels() + cached_kernels() if p.name == name)
        test_real_kernel_backends_agree(path)


# -- crafted kernels ----------------------------------------------------------------------


def _without(number: int) -> list[bytes]:
    return [n for n in default_notes() if struct.unpack_from("<I", n, 8)[0] != number]


ELF = build_elf()
SAME_VERDICT = {
    "elf": ELF,
    **{f"bzimage-{k}": bzimage_of(ELF, k) for k in ("gzip", "xz", "lzma", "lz4", "zstd")},
    "whole-file-gzip": gzip.compress(ELF, mtime=0),
    "gzipped-bzimage": gzip.compress(bzimage_of(ELF, "xz"), mtime=0),
    "truncated-header": bzimage_of(ELF, "xz")[:0x240],
    "truncated-payload": bzimage_of(ELF, "xz")[:-200],
    "lying-payload-length": build_bzimage(compress("xz", ELF), payload_length=10**7),
    "old-protocol": build_bzimage(compress("xz", ELF), version=0x0207),
    "unknown-compression": build_bzimage(b"\x00\x01\x02\x03" * 64),
    "corrupt-xz": build_bzimage(compress("xz", ELF)[:100] + bytes(100)),
    "gzip-bomb": build_bzimage(compress("gzip", bytes(4 * CAP))),
    "xz-bomb": build_bzimage(compress("xz", bytes(4 * CAP))),
    "zstd-bomb": build_bzimage(compress("zstd", bytes(4 * CAP))),
    "lz4-bomb": build_bzimage(compress("lz4", bytes(4 * CAP))),
    "not-a-kernel": b"hello" * 200,
    "notes-outside-file": build_elf(ElfSpec(note_offset=1 << 20)),
    "phdr-overflow": build_elf(ElfSpec(phnum=1000)),
    "no-xen-notes": build_elf(ElfSpec(notes=[], with_note_segment=False)),
    "no-pvh": build_elf(ElfSpec(notes=default_notes(pvh=False))),
    "entry-outside": build_elf(ElfSpec(notes=[*_without(1), note(1, q(KSTART + 0x100000))])),
    "p2m-inside": build_elf(ElfSpec(notes=[*_without(15), note(15, q(KSTART + 0x100))])),
    "unknown-required-feature": build_elf(ElfSpec(notes=[*default_notes(), note(10, s("!frob"))])),
    "dom0-only": build_elf(ElfSpec(notes=[*default_notes(), note(10, s("!dom0"))])),
    "xen-2.0": build_elf(ElfSpec(notes=[*_without(5), note(5, s("xen-2.0"))])),
    "sht-note-only": build_elf(
        ElfSpec(with_note_segment=False, sections=[Section(".notes", 7, b"".join(default_notes()))])
    ),
    "pvh-only": build_elf(ElfSpec(notes=[note(18, struct.pack("<I", LOAD_PADDR + 0x20))])),
    # Xen 4.17's libelf refuses ELF_PADDR_OFFSET without VIRT_BASE for PVH too (a
    # later release exempts PVH); found by the mutation fuzzer.
    "paddr-offset-without-virt-base": build_elf(ElfSpec(notes=_without(3))),
}


def _trailer(data: bytes, delta: int) -> bytes:
    """A bzImage whose payload's size trailer is *delta* bytes off the truth."""
    out = bytearray(data)
    (size,) = struct.unpack_from("<I", out, len(out) - 4)
    struct.pack_into("<I", out, len(out) - 4, size + delta)
    return bytes(out)


def _empty_section_table_past_the_end() -> bytes:
    out = bytearray(build_elf())
    struct.pack_into("<Q", out, 40, len(out) + 1)  # e_shoff; e_shnum stays 0
    return bytes(out)


# Found by the fuzzer (test_kernel_info_fuzz): libxenguest refuses these, we accepted them.
SAME_VERDICT |= {
    "empty-section-table-past-the-end": _empty_section_table_past_the_end(),
    **{
        f"{k}-trailer-{name}": _trailer(bzimage_of(ELF, k), delta)
        for k in ("xz", "lzma", "zstd")
        for name, delta in (("one-over", 1), ("far-over", 4096))
    },
    "zstd-trailer-one-under": _trailer(bzimage_of(ELF, "zstd"), -1),
    "lz4-trailer-one-under": _trailer(bzimage_of(ELF, "lz4"), -1),
    "gzip-trailer-over-the-cap": _trailer(bzimage_of(ELF, "gzip"), 2 * CAP),
    "gzip-inflates-past-trailer-and-slack": _trailer(bzimage_of(ELF, "gzip"), -17),
    "gzip-trailer-exact-fit": _trailer(bzimage_of(ELF, "gzip"), -16),
}
#: Both boot it, but libxenguest's vmlinux is its buffer: the payload padded to the
#: trailer's size (+16 for gzip); ours is the payload as decoded.
SAME_VERDICT_PADDED = {
    **{
        f"lz4-trailer-{n}": _trailer(bzimage_of(ELF, "lz4"), d)
        for n, d in (("over", 1), ("far-over", 4096))
    },
    **{
        f"gzip-trailer-{n}": _trailer(bzimage_of(ELF, "gzip"), d)
        for n, d in (("under", -1), ("over", 100))
    },
}
#: We refuse; libxenguest's parse accepts (its loader would later read outside the image
#: or overwrite itself).
STRICTER = {
    "note-overruns-segment": build_elf(ElfSpec(note_filesz=len(b"".join(default_notes())) - 4)),
    "overlapping-segments": build_elf(
        ElfSpec(segments=[Segment(), Segment(paddr=LOAD_PADDR + 0x1000)])
    ),
    "segment-beyond-file": build_elf(ElfSpec(segments=[Segment(filesz=1 << 24)])),
    # libxenguest keeps an xz/lzma payload one byte shorter than its trailer says.
    "xz-trailer-one-under": _trailer(bzimage_of(ELF, "xz"), -1),
    "lzma-trailer-one-under": _trailer(bzimage_of(ELF, "lzma"), -1),
}
#: Debian's libxenguest 4.17 is built without libbz2 and liblzo2.
UNSUPPORTED_BY_DEBIAN_LIBXENGUEST = {k: bzimage_of(ELF, k) for k in ("bzip2", "lzo")}


@pytest.mark.parametrize("name", sorted(SAME_VERDICT))
def test_crafted_kernels_get_the_same_verdict(name: str) -> None:
    data = SAME_VERDICT[name]
    ours, xens = python(data), libxenguest(data)
    assert verdict(ours) == verdict(xens), (ours, xens.guests)
    if isinstance(ours, KernelReport) and ours.bootable_types:
        assert compare(ours, xens) == []


@pytest.mark.parametrize("name", sorted(SAME_VERDICT_PADDED))
def test_padded_payloads_get_the_same_verdict(name: str) -> None:
    data = SAME_VERDICT_PADDED[name]
    ours, xens = python(data), libxenguest(data)
    assert isinstance(ours, KernelReport)
    assert ours.bootable_types and verdict(ours) == verdict(xens)
    assert {d.fact for d in compare(ours, xens)} == {"vmlinux.sha256", "vmlinux.size"}


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_we_are_stricter_where_a_loader_would_misbehave(name: str) -> None:
    ours, xens = python(STRICTER[name]), libxenguest(STRICTER[name])
    assert isinstance(ours, InputError)
    assert xens.bootable_types  # documented difference: libxenguest's parse accepts


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_BY_DEBIAN_LIBXENGUEST))
def test_bzip2_and_lzo_are_ours_alone(name: str) -> None:
    data = UNSUPPORTED_BY_DEBIAN_LIBXENGUEST[name]
    ours, xens = python(data), libxenguest(data)
    assert isinstance(ours, KernelReport) and ours.bootable_types
    assert not xens.bootable_types
    assert xens.compression == name  # its log names the missing decompressor
