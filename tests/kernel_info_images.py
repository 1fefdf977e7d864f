"""Kernels for the kernel-info tests: real Debian ones, and crafted ones.

Real kernels: the running host's /boot/vmlinuz-*, plus Debian
linux-image packages fetched with ``apt-get download`` and cached under
~/.cache/pvgrub-py/kernels (only the vmlinuz is kept).

Crafted kernels are built here from scratch: a minimal ELF with chosen
program headers and Xen notes, and a bzImage wrapper around any vmlinux
with any payload compression (the setup header is ours too: "HdrS",
protocol 2.15, payload_offset/length), so every malformation is one
keyword argument away.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("PVGRUB_KERNEL_CACHE", Path.home() / ".cache/pvgrub-py/kernels"))
#: Downloaded when missing (slow tests only): a 6.1 generic and a 6.12 cloud kernel.
DEBIAN_PACKAGES = ("linux-image-6.12.*+deb12-cloud-amd64", "linux-image-6.1.0-*-amd64")
READNOTES = "/usr/lib/xen-4.17/bin/readnotes"

PT_LOAD, PT_NOTE = 1, 4
PF_RWX = 7
GUEST_VIRT_BASE = 0xFFFFFFFF80000000
LOAD_PADDR = 0x1000000
LOAD_SIZE = 0x4000
KSTART = GUEST_VIRT_BASE + LOAD_PADDR


def boot_kernels() -> list[Path]:
    return sorted(Path(p) for p in glob.glob("/boot/vmlinuz-*") if os.access(p, os.R_OK))


def cached_kernels() -> list[Path]:
    return sorted(CACHE.glob("vmlinuz-*"))


def download_debian_kernel(pattern: str) -> Path | None:
    """Newest package matching ``pattern`` into the cache; None if apt cannot."""
    if shutil.which("apt-cache") is None or shutil.which("apt-get") is None:
        return None
    names = subprocess.run(
        ["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True, check=False
    ).stdout.split()
    import fnmatch

    matches = sorted(
        n for n in names if fnmatch.fnmatch(n, pattern) and "dbg" not in n and "unsigned" not in n
    )
    if not matches:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["apt-get", "download", "-q", matches[-1]], cwd=tmp, capture_output=True, check=False
        )
        debs = list(Path(tmp).glob("*.deb"))
        if done.returncode or not debs:
            return None
        tar = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True, check=True
        ).stdout
        subprocess.run(
            ["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"], input=tar, check=True
        )
        found = list(Path(tmp, "boot").glob("vmlinuz-*"))
        for f in found:
            shutil.copy(f, CACHE / f.name)
        return CACHE / found[0].name if found else None


# -- notes and ELF ------------------------------------------------------------------------


def note(ntype: int, desc: bytes, name: bytes = b"Xen\0") -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def q(value: int) -> bytes:
    return struct.pack("<Q", value)


def default_notes(pvh: bool = True) -> list[bytes]:
    notes = [
        note(6, s("linux")),
        note(7, s("2.6")),
        note(5, s("xen-3.0")),
        note(3, q(GUEST_VIRT_BASE)),
        note(4, q(0)),
        note(1, q(KSTART + 0x10)),
        note(2, q(KSTART + 0x1000)),
        note(10, s("!writable_page_tables|pae_pgdir_above_4gb")),
        note(9, s("yes")),
        note(8, s("generic")),
        note(12, q(0xFFFF800000000000)),
        note(13, q(1) + q(1)),
        note(14, struct.pack("<I", 1)),
        note(15, q(0x8000000000)),
        note(16, struct.pack("<I", 1)),
        note(17, struct.pack("<I", 0x8801)),
    ]
    if pvh:
        notes.append(note(18, struct.pack("<I", LOAD_PADDR + 0x20)))
    return notes


@dataclass
class Segment:
    type: int = PT_LOAD
    paddr: int = LOAD_PADDR
    memsz: int = LOAD_SIZE
    filesz: int | None = None  # default: len(data)
    data: bytes = b"\x90" * LOAD_SIZE
    offset: int | None = None  # default: where the data lands
    flags: int = PF_RWX


@dataclass
class Section:
    name: str
    type: int
    data: bytes


@dataclass
class ElfSpec:
    notes: Sequence[bytes] = field(default_factory=default_notes)
    segments: Sequence[Segment] = field(default_factory=lambda: [Segment()])
    note_offset: int | None = None  # override PT_NOTE p_offset
    note_filesz: int | None = None  # override PT_NOTE p_filesz
    with_note_segment: bool = True
    sections: Sequence[Section] = ()
    entry: int = KSTART
    machine: int = 62
    phnum: int | None = None
    phoff: int | None = None


def build_elf(spec: ElfSpec | None = None) -> bytes:
    """A little-endian ELF64 executable: headers, PT_LOADs, one PT_NOTE, optional sections."""
    spec = spec or ElfSpec()
    notes = b"".join(spec.notes)
    segs = list(spec.segments)
    nph = len(segs) + (1 if spec.with_note_segment else 0)
    body = bytearray()
    base = 64 + 56 * nph
    notes_at = base
    body += notes
    placed = []
    for seg in segs:
        body += bytes(-len(body) % 16)
        at = base + len(body)
        body += seg.data
        placed.append(at)
    shoff = 0
    shdrs = b""
    if spec.sections:
        names = b"\0" + b"".join(s_.name.encode() + b"\0" for s_ in spec.sections) + b".shstrtab\0"
        entries = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
        name_at = 1
        for s_ in spec.sections:
            at = base + len(body)
            body += s_.data
            entries.append(
                struct.pack("<IIQQQQIIQQ", name_at, s_.type, 0, 0, at, len(s_.data), 0, 0, 1, 0)
            )
            name_at += len(s_.name) + 1
        at = base + len(body)
        body += names
        entries.append(struct.pack("<IIQQQQIIQQ", name_at, 3, 0, 0, at, len(names), 0, 0, 1, 0))
        body += bytes(-len(body) % 8)
        shoff = base + len(body)
        shdrs = b"".join(entries)
    shnum = (len(spec.sections) + 2) if spec.sections else 0
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack(
        "<HHIQQQIHHHHHH",
        2,
        spec.machine,
        1,
        spec.entry,
        64 if spec.phoff is None else spec.phoff,
        shoff,
        0,
        64,
        56,
        nph if spec.phnum is None else spec.phnum,
        64,
        shnum,
        shnum - 1 if shnum else 0,
    )
    phdrs = b""
    for seg, at in zip(segs, placed, strict=True):
        filesz = len(seg.data) if seg.filesz is None else seg.filesz
        offset = at if seg.offset is None else seg.offset
        phdrs += struct.pack(
            "<IIQQQQQQ",
            seg.type,
            seg.flags,
            offset,
            GUEST_VIRT_BASE + seg.paddr,
            seg.paddr,
            filesz,
            seg.memsz,
            0x1000,
        )
    if spec.with_note_segment:
        off = notes_at if spec.note_offset is None else spec.note_offset
        size = len(notes) if spec.note_filesz is None else spec.note_filesz
        phdrs += struct.pack("<IIQQQQQQ", PT_NOTE, 4, off, 0, 0, size, size, 4)
    return ehdr + phdrs + bytes(body) + shdrs


# -- bzImage ------------------------------------------------------------------------------

SETUP_SECTS = 3


def compress(kind: str, data: bytes) -> bytes:
    import lz4.block
    import zstandard

    if kind == "gzip":
        return gzip.compress(data, 6, mtime=0)
    if kind == "bzip2":
        return bz2.compress(data, 9)
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if kind == "lz4":
        out = [struct.pack("<I", 0x184C2102)]
        for i in range(0, len(data), 8 << 20):
            block = lz4.block.compress(data[i : i + (8 << 20)], store_size=False)
            out.append(struct.pack("<I", len(block)) + block)
        return b"".join(out)
    if kind == "lzo":
        return lzop_stored(data)
    raise ValueError(kind)


def lzop_stored(data: bytes) -> bytes:
    """An lzop file whose blocks are stored (src_len == dst_len): valid, no LZO needed."""
    import zlib

    header = struct.pack(">HHHBBIIII", 0x1040, 0x2080, 0x0940, 1, 5, 1, 0o100644, 0, 0) + b"\0"
    out = b"\x89LZO\x00\r\n\x1a\n" + header + struct.pack(">I", zlib.adler32(header))
    for i in range(0, len(data), 256 * 1024):
        chunk = data[i : i + 256 * 1024]
        out += struct.pack(">III", len(chunk), len(chunk), zlib.adler32(chunk)) + chunk
    return out + struct.pack(">I", 0)


def build_bzimage(
    payload: bytes,
    *,
    version: int = 0x020F,
    payload_length: int | None = None,
    payload_offset: int = 0,
    setup_sects: int = SETUP_SECTS,
    trailer: bytes | None = None,
) -> bytes:
    """A bzImage: setup sectors with a boot-protocol header, then ``payload`` + size trailer."""
    setup = bytearray((setup_sects + 1) * 512)
    struct.pack_into("<B", setup, 0x1F1, setup_sects)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<I", setup, 0x214, 0x100000)
    struct.pack_into("<I", setup, 0x248, payload_offset)
    body = payload + (trailer if trailer is not None else b"")
    struct.pack_into("<I", setup, 0x24C, len(body) if payload_length is None else payload_length)
    return bytes(setup) + bytes(payload_offset) + body


def bzimage_of(vmlinux: bytes, kind: str) -> bytes:
    return build_bzimage(compress(kind, vmlinux), trailer=struct.pack("<I", len(vmlinux)))


# -- readnotes ----------------------------------------------------------------------------


def readnotes(vmlinux: Path) -> dict[str, str] | None:
    """Xen's readnotes on an ELF file: ``NAME -> value text`` (unknown types as 'unknown 0xN')."""
    if not os.access(READNOTES, os.X_OK):
        return None
    out = subprocess.run([READNOTES, str(vmlinux)], capture_output=True, text=True, check=False)
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if line.startswith("unknown note type "):
            found[f"unknown {line.split()[-1]}"] = ""
            continue
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip()] = value.strip()
    return found


# -- a bootable kernel the tests make themselves ---------------------------------------------


def built_kernel(size: int = 1 << 20, kind: str = "xz", seed: int = 1) -> bytes:
    """A PV-bootable bzImage (xen-3.0-x86_64 and PVH notes) around a vmlinux whose one
    PT_LOAD holds ``size`` bytes of seeded pseudo-random code: no /boot, no network."""
    import random

    data = random.Random(seed).randbytes(size)
    vmlinux = build_elf(ElfSpec(segments=[Segment(memsz=size, data=data)]))
    return bzimage_of(vmlinux, kind)


def write_built_kernel(path: Path, **kw: int | str) -> Path:
    path.write_bytes(built_kernel(**kw))  # type: ignore[arg-type]
    return path
