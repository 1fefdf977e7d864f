"""Hostile guest disks crafted byte by byte: LVM2 metadata lengths, ISO 9660 extents.

The images here are built in memory from the on-disk layouts, so each case
can say exactly which field lies.  Every case must end in a one-line
`InputError` naming the disk or volume, with no read larger than the cap.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest
from disk_images import MemorySource

from pvgrub_py.disk import open_disk
from pvgrub_py.disk.lvm import MAX_METADATA_BYTES, MAX_METADATA_LINE
from pvgrub_py.errors import InputError

MIB = 1 << 20


class LargestRead(MemorySource):
    """A `MemorySource` that remembers the largest read asked of it."""

    largest = 0

    def pread(self, offset: int, length: int) -> bytes:
        self.largest = max(self.largest, length)
        return super().pread(offset, length)


# -- LVM2: a physical volume with one metadata area ------------------------------
# LVM2 on-disk format (lib/format_text/layout.h): the label in sector 1, the
# PV header after it with two zero-terminated lists of (offset, size) areas,
# the metadata area header with its zero-terminated raw_locn list, and the
# metadata text at mda start + raw_locn offset.
SECTOR = 512
MDA_AT = 4096
PV_UUID = "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG"
#: The end of the PV header's area lists (label 32, uuid 32, size 8, 4 x 16).
LISTS_END = SECTOR + 32 + 40 + 64


def _vg_text(pad: int = 0) -> bytes:
    """A volume group with one visible LV "boot", then *pad* blank lines."""
    text = f"""testvg {{
id = "HHHHHH-IIII-JJJJ-KKKK-LLLL-MMMM-NNNNNN"
seqno = 1
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
max_lv = 0
max_pv = 0
physical_volumes {{
pv0 {{
id = "{PV_UUID}"
status = ["ALLOCATABLE"]
pe_start = 2048
pe_count = 1
}}
}}
logical_volumes {{
boot {{
id = "OOOOOO-PPPP-QQQQ-RRRR-SSSS-TTTT-UUUUUU"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {{
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}}
}}
}}
}}
contents = "Text Format Volume Group"
version = 1
"""
    return text.encode() + b"\n" * pad


def _pv(text: bytes, size: int, declared: int | None = None) -> bytearray:
    """A PV of *size* bytes whose metadata is *text*, its length field *declared*.

    dissect.volume reads ``declared - 1`` bytes of text (LVM counts the NUL).
    """
    img = bytearray(size)
    img[SECTOR : SECTOR + 32] = struct.pack("<8sQII8s", b"LABELONE", 1, 0, 32, b"LVM2 001")
    header = PV_UUID.replace("-", "").encode() + struct.pack("<Q", size)
    header += struct.pack("<QQ", MIB, 0) + bytes(16)  # data area: from 1 MiB to the end
    header += struct.pack("<QQ", MDA_AT, MIB - MDA_AT) + bytes(16)  # one metadata area
    img[SECTOR + 32 : LISTS_END] = header
    length = len(text) + 1 if declared is None else declared
    mda = struct.pack("<I16sIQQ", 0, b" LVM2 x[5A%r0N*>", 1, MDA_AT, MIB - MDA_AT)
    mda += struct.pack("<QQII", SECTOR, length, 0, 0) + bytes(24)
    img[MDA_AT : MDA_AT + len(mda)] = mda
    img[MDA_AT + SECTOR : MDA_AT + SECTOR + len(text)] = text
    return img


PV1_UUID = "ZZZZZZ-YYYY-XXXX-WWWW-VVVV-UUUU-TTTTTT"


def _pv_without_metadata(size: int, uuid: str = PV1_UUID) -> bytearray:
    """A PV made with ``pvcreate --metadatacopies 0``: an empty metadata area list."""
    img = bytearray(size)
    img[SECTOR : SECTOR + 32] = struct.pack("<8sQII8s", b"LABELONE", 1, 0, 32, b"LVM2 001")
    header = uuid.replace("-", "").encode() + struct.pack("<Q", size)
    header += struct.pack("<QQ", MIB, 0) + bytes(16) + bytes(16)
    img[SECTOR + 32 : SECTOR + 32 + len(header)] = header
    return img


def _mbr_disk(*partitions: bytearray) -> bytes:
    """An MBR disk holding *partitions* (type 0x8e, LVM) one after the other from 1 MiB."""
    mbr = bytearray(SECTOR)
    start = MIB // SECTOR
    body = b""
    for k, part in enumerate(partitions):
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x8E, b"\0\0\0", start, len(part) // SECTOR)
        mbr[446 + 16 * k : 462 + 16 * k] = entry
        start += len(part) // SECTOR
        body += bytes(part)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr) + bytes(MIB - SECTOR) + body


def test_pv_without_metadata_alone_is_one_clear_line() -> None:
    text, _ = _lvm_error(_pv_without_metadata(8 * MIB))
    assert "without a metadata area" in text and "another disk" in text


def test_vg_whose_lv_lives_on_a_pv_without_metadata() -> None:
    """pv0 holds the metadata, the LV's extents are on pv1 (--metadatacopies 0)."""
    vg = _vg_text().decode()
    vg = vg.replace(
        "pe_count = 1\n}\n}",
        f'pe_count = 1\n}}\npv1 {{\nid = "{PV1_UUID}"\nstatus = ["ALLOCATABLE"]\n'
        "pe_start = 2048\npe_count = 1\n}\n}",
    ).replace('"pv0", 0', '"pv1", 0')
    pv1 = _pv_without_metadata(8 * MIB)
    pv1[MIB : MIB + 16] = b"data on pv1 here"
    disk = _mbr_disk(_pv(vg.encode(), 8 * MIB), pv1)
    with open_disk(MemorySource(disk), name="two-pv.img") as d:
        lv = [v for v in d.volumes if v.grub_name == "lvm/testvg-boot"]
        assert len(lv) == 1
        assert lv[0].file.pread(0, 16) == b"data on pv1 here"


def _lvm_error(img: bytearray) -> tuple[str, LargestRead]:
    src = LargestRead(bytes(img))
    with pytest.raises(InputError) as info:
        open_disk(src, name="pv.img").close()
    text = str(info.value)
    assert "\n" not in text
    return text, src


def test_crafted_pv_is_read() -> None:
    """The control: the crafted PV is a valid one, so the refusals below are the cap's."""
    with open_disk(MemorySource(bytes(_pv(_vg_text(), 8 * MIB))), name="pv.img") as disk:
        assert [v.grub_name for v in disk.volumes] == ["hd0", "lvm/testvg-boot"]


def test_lvm_metadata_at_the_cap_is_read() -> None:
    text = _vg_text(MAX_METADATA_BYTES - len(_vg_text()))
    assert len(text) == MAX_METADATA_BYTES == 1 << 20
    src = LargestRead(bytes(_pv(text, 8 * MIB)))
    with open_disk(src, name="pv.img") as disk:
        assert disk.volumes[-1].grub_name == "lvm/testvg-boot"
    assert src.largest == MAX_METADATA_BYTES


def test_lvm_metadata_over_the_cap_is_refused_unread() -> None:
    """Valid text one byte over the cap: refused, though it would parse."""
    text = _vg_text(MAX_METADATA_BYTES + 1 - len(_vg_text()))
    message, src = _lvm_error(_pv(text, 8 * MIB))
    assert message == "pv.img: LVM2 metadata of 1048577 bytes exceeds the 1 MiB cap"
    assert src.largest <= SECTOR * 4


@pytest.mark.parametrize(
    ("declared", "pv_size", "claimed"),
    [(32 * MIB, 40 * MIB, 32 * MIB - 1), (0, 8 * MIB, 8 * MIB - MDA_AT - SECTOR)],
    ids=["32MiB", "zero-means-the-rest"],
)
def test_lvm_metadata_length_field_is_capped(declared: int, pv_size: int, claimed: int) -> None:
    """A hostile length in raw_locn: no read of it happens.

    A zero length makes dissect.volume read ``-1`` bytes, the rest of the PV.
    """
    message, src = _lvm_error(_pv(_vg_text(), pv_size, declared))
    assert message == f"pv.img: LVM2 metadata of {claimed} bytes exceeds the 1 MiB cap"
    assert src.largest <= SECTOR * 4


def test_lvm_area_list_without_an_end_is_capped() -> None:
    """No zero entry ends the PV header's area list: dissect would read to the PV's end."""
    img = _pv(_vg_text(), 8 * MIB)
    img[LISTS_END - 48 :] = b"\x01" * (len(img) - LISTS_END + 48)
    message, _ = _lvm_error(img)
    assert message == "pv.img: LVM2 label and metadata take more than 1088 KiB"


def _with_flags_line(length: int) -> bytes:
    """The VG text with the LV's ``flags = [...]`` line about *length* bytes long."""
    items = ",".join(['"x"'] * ((length - 12) // 4))
    return _vg_text().replace(b"flags = []", f"flags = [{items}]".encode())


def test_lvm_metadata_line_just_under_the_line_cap_is_read() -> None:
    text = _with_flags_line(MAX_METADATA_LINE - 64)
    assert max(len(line) for line in text.split(b"\n")) < MAX_METADATA_LINE
    with open_disk(MemorySource(bytes(_pv(text, 8 * MIB))), name="pv.img") as disk:
        assert disk.volumes[-1].grub_name == "lvm/testvg-boot"


def test_lvm_metadata_line_over_the_line_cap_is_refused() -> None:
    """dissect.volume's literal_eval takes ~500x a list line's size in memory."""
    text = _with_flags_line(4 * MAX_METADATA_LINE)
    message, _ = _lvm_error(_pv(text, 8 * MIB))
    assert message == "pv.img: LVM2 metadata has a line of more than 64 KiB"


def test_lvm_cap_names_the_partition() -> None:
    """A PV inside an MBR partition: the error names the partition."""
    pv = _pv(_vg_text(), 40 * MIB, declared=32 * MIB)
    start = 2048
    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack(
        "<B3sB3sII", 0x80, b"\0\0\0", 0x8E, b"\0\0\0", start, len(pv) // SECTOR
    )
    mbr[510:512] = b"\x55\xaa"
    disk = bytes(mbr) + bytes(start * SECTOR - SECTOR) + bytes(pv)
    message, _ = _lvm_error(bytearray(disk))
    assert message == (
        f"pv.img: MBR partition 1: LVM2 metadata of {32 * MIB - 1} bytes exceeds the 1 MiB cap"
    )


# -- ISO 9660: multi-extent files ---------------------------------------------------
# A file of several extents (ECMA-119 9.1.6, file flag bit 7; xorriso
# -iso-level 3 writes them for files over 4 GiB) is a run of directory
# records with the same identifier, every one but the last flagged.  Made
# here from a small plain ISO (no Rock Ridge, no Joliet, so the ISO 9660
# identifiers are the names looked up) with two kernels whose records are
# patched into one two-extent file.
ISO_CFG = b"""DEFAULT live
LABEL live
  KERNEL /isolinux/vmlinz1
  APPEND initrd=/isolinux/initrd.img boot=live
"""
ISO_FILES = {
    "isolinux/isolinux.cfg": ISO_CFG,
    "isolinux/vmlinz1": disk_images.payload("first extent", 100_000),
    "isolinux/vmlinz2": disk_images.payload("second extent", 50_000),
    "isolinux/initrd.img": disk_images.payload("initrd", 1000),
}
#: Offset of the file flags and of the identifier in a directory record (9.1).
DR_FLAGS, DR_IDENT = 25, 33
MULTI_EXTENT = 0x80


@pytest.fixture(scope="module")
def plain_iso(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    disk_images._need("xorriso")
    work = tmp_path_factory.mktemp("iso")
    for rel, data in ISO_FILES.items():
        (work / "root" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "root" / rel).write_bytes(data)
    img = work / "plain.iso"
    disk_images._run(
        "xorriso", "-as", "mkisofs", "-quiet", "--norock", "-V", "MULTI",
        "-o", img, work / "root", env={"SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    return img.read_bytes()


def _record(image: bytearray, ident: bytes) -> int:
    """Where the one directory record named *ident* starts."""
    at = image.find(ident)
    assert at > 0 and image.count(ident) == 1, ident
    assert image[at - DR_IDENT + 32] == len(ident)  # the identifier length byte
    return at - DR_IDENT


def _multi_extent(plain: bytes, *, flag_only: bytes | None = None) -> bytes:
    """/isolinux/vmlinz1 made a two-extent file (its first extent flagged).

    With *flag_only*, just that record is flagged (no continuation).
    """
    img = bytearray(plain)
    if flag_only is not None:
        img[_record(img, flag_only) + DR_FLAGS] |= MULTI_EXTENT
        return bytes(img)
    first, second = _record(img, b"VMLINZ1.;1"), _record(img, b"VMLINZ2.;1")
    img[first + DR_FLAGS] |= MULTI_EXTENT
    img[second + DR_IDENT : second + DR_IDENT + 10] = b"VMLINZ1.;1"
    return bytes(img)


def _boot(
    tmp_path: Path, image: bytes, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``pvgrub-py`` as libxl runs it on *image*; (result, output file)."""
    disk = tmp_path / "multi.iso"
    disk.write_bytes(image)
    outdir, output = tmp_path / "out.d", tmp_path / "out"
    outdir.mkdir()
    output.touch()
    argv = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--quiet",
            f"--output={output}", "--output-format=simple0",
            f"--output-directory={outdir}", *extra, str(disk)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120), output


def test_plain_iso_boots_its_kernel(plain_iso: bytes, tmp_path: Path) -> None:
    """The control: unpatched, the crafted ISO boots /isolinux/vmlinz1 whole."""
    r, output = _boot(tmp_path, plain_iso)
    assert r.returncode == 0, r.stderr
    records = dict(i.split(b" ", 1) for i in output.read_bytes().split(b"\0") if i)
    assert Path(records[b"kernel"].decode()).read_bytes() == ISO_FILES["isolinux/vmlinz1"]


def test_crafted_multi_extent_file_is_valid(plain_iso: bytes) -> None:
    """pycdlib itself reads the patched records as one file of both extents."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(_multi_extent(plain_iso)))
    got = io.BytesIO()
    iso.get_file_from_iso_fp(got, iso_path="/ISOLINUX/VMLINZ1.;1")
    assert got.getvalue() == ISO_FILES["isolinux/vmlinz1"] + ISO_FILES["isolinux/vmlinz2"]


@pytest.mark.parametrize(
    ("flag_only", "path"),
    [
        (None, "/isolinux/vmlinz1"),
        (b"VMLINZ1.;1", "/isolinux/vmlinz1"),
        (b"ISOLINUX.CFG;1", "/isolinux/isolinux.cfg"),
    ],
    ids=["kernel-two-extents", "kernel-flag-only", "config-flag-only"],
)
def test_multi_extent_file_is_one_line_and_boots_nothing(
    plain_iso: bytes, tmp_path: Path, flag_only: bytes | None, path: str
) -> None:
    """Refused at the reader boundary, not booted as its first extent alone."""
    r, output = _boot(tmp_path, _multi_extent(plain_iso, flag_only=flag_only))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("pvgrub-py: warning:")]
    assert lines == [
        f"pvgrub-py: multi.iso: whole disk: {path}: corrupt or unsupported data while opening "
        "the file (UnsupportedFeature: multi-extent files are not supported)"
    ]
    assert output.read_bytes() == b""
    assert list((tmp_path / "out.d").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
def test_multi_extent_kernel_through_the_sandbox(plain_iso: bytes, tmp_path: Path) -> None:
    """The same one line from the deprivileged parser child (--runas)."""
    r, output = _boot(tmp_path, _multi_extent(plain_iso), "--runas=65534")
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("pvgrub-py: warning:")]
    assert len(lines) == 1 and lines[0].endswith(
        "/isolinux/vmlinz1: corrupt or unsupported data while opening the file "
        "(UnsupportedFeature: multi-extent files are not supported)"
    ), r.stderr
    assert output.read_bytes() == b""
