"""Unit tests: the bounded file object, the time budget, MBR/GPT decoding, sniffing."""

from __future__ import annotations

import io
import os
import struct
import time
import uuid
import zlib

import pytest
from disk_images import MemorySource

from pvgrub_py.disk.bounded import MAX_SINGLE_READ, BoundedFile, FdSource
from pvgrub_py.disk.budget import Budget, BudgetExceeded, cpu_deadline
from pvgrub_py.disk.errors import one_line, reader_boundary
from pvgrub_py.disk.extract import Limits, stream_open_file
from pvgrub_py.disk.partitions import find_gpt, read_gpt, read_mbr
from pvgrub_py.disk.sniff import sniff
from pvgrub_py.disk.volumes import open_disk
from pvgrub_py.errors import InputError

# -- BoundedFile -------------------------------------------------------------


def test_reads_inside_are_served_and_counted() -> None:
    f = BoundedFile(MemorySource(bytes(range(100))), name="img")
    f.seek(10)
    assert f.read(5) == bytes(range(10, 15))
    assert f.tell() == 15
    assert f.pread(95, 5) == bytes(range(95, 100))
    assert (f.stats.reads, f.stats.bytes_read, f.stats.refused) == (2, 10, 0)


def test_read_at_or_past_the_end_is_refused_never_zero_filled() -> None:
    f = BoundedFile(MemorySource(b"x" * 100), name="img")
    for offset in (100, 101, 10**12):
        with pytest.raises(
            InputError, match=r"^img: read of 4 bytes at byte \d+ runs past the end"
        ):
            f.pread(offset, 4)
    assert f.stats.refused == 3
    f.seek(0, os.SEEK_END)
    with pytest.raises(InputError):
        f.read(1)


def test_read_straddling_the_end_is_refused_too() -> None:
    """Not cut short: a short piece would shift the bytes of later runs."""
    f = BoundedFile(MemorySource(b"abcdef"), name="img")
    with pytest.raises(InputError, match="read of 100 bytes at byte 4 runs past the end"):
        f.pread(4, 100)
    assert f.pread(4, 2) == b"ef"
    assert f.stats.refused == 1


def test_a_short_source_is_refused() -> None:
    class Shrunk(MemorySource):
        @property
        def size(self) -> int:
            return 100  # claims more than it holds

    f = BoundedFile(Shrunk(b"x" * 10), name="img")
    with pytest.raises(InputError, match="short read: 10 of 20 bytes at byte 0"):
        f.pread(0, 20)


def test_windows_nest_and_never_reach_past_their_parent() -> None:
    root = BoundedFile(MemorySource(bytes(range(200))), name="disk")
    part = root.window(100, 50, "disk: partition 1")
    assert part.size == 50 and part.pread(0, 3) == bytes([100, 101, 102])
    with pytest.raises(InputError, match=r"^disk: partition 1: read of 1 bytes at byte 50 runs"):
        part.pread(50, 1)
    # A partition claiming more than the image holds is cut at the image end.
    big = root.window(150, 1000, "disk: partition 2")
    assert big.size == 50 and big.declared_size == 1000
    with pytest.raises(InputError, match="the volume claims 1000 bytes"):
        big.pread(60, 1)
    inner = part.window(40, 1000, "inner")
    assert inner.size == 10 and inner.pread(0, 10) == bytes(range(140, 150))
    # Counters are shared and not double-counted.
    assert root.stats is part.stats is inner.stats


def test_one_huge_read_is_refused() -> None:
    f = BoundedFile(MemorySource(b"\0" * 10), name="img")
    with pytest.raises(InputError, match="refusing a single read"):
        f.pread(0, MAX_SINGLE_READ + 1)


def test_budget_is_checked_on_every_read() -> None:
    budget = Budget(0.05, source="img")
    f = BoundedFile(MemorySource(b"\0" * 10), name="img", budget=budget)
    f.pread(0, 1)
    time.sleep(0.06)
    with pytest.raises(BudgetExceeded, match=r"gave up after 0\.05 s"):
        f.pread(0, 1)


def test_cpu_deadline_interrupts_a_loop_that_does_no_io() -> None:
    budget = Budget(0.2)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded), cpu_deadline(budget):
        while True:
            pass
    assert time.monotonic() - started < 2


def test_cpu_deadline_survives_a_reader_that_swallows_exceptions() -> None:
    budget = Budget(0.1)
    swallowed = 0
    with pytest.raises(BudgetExceeded), cpu_deadline(budget):
        while True:
            try:
                while True:
                    pass
            except Exception:  # a careless reader
                swallowed += 1
                if swallowed > 3:
                    raise
    assert swallowed >= 1


def test_fd_source_rejects_non_files(tmp_path: object) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError):
            FdSource(r)
    finally:
        os.close(r)
        os.close(w)


# -- errors -------------------------------------------------------------------


def test_reader_exceptions_become_one_line_input_errors() -> None:
    with pytest.raises(InputError) as info, reader_boundary("disk: p1: /boot/x", "reading"):
        raise KeyError("bad\nkey")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(
        "disk: p1: /boot/x: corrupt or unsupported data while reading"
    )
    assert isinstance(info.value.__cause__, KeyError)
    assert one_line("a\nb\x1b[31m") == "a?b?[31m"


def test_our_own_bugs_are_not_disguised() -> None:
    class OurBug(Exception):
        pass

    with pytest.raises(OurBug), reader_boundary("disk", "reading"):
        raise OurBug("not a disk problem")


# -- extract ------------------------------------------------------------------


class _FakeFs:
    budget = None

    def _src(self, path: str) -> str:
        return f"disk: {path}"

    def _call(self, path, doing, fn):  # type: ignore[no-untyped-def]
        return fn()


def _stream(data: bytes, declared: int):  # type: ignore[no-untyped-def]
    from pvgrub_py.disk.filesystems import FileStream

    return FileStream(_FakeFs(), "/boot/vmlinuz", io.BytesIO(data), declared)  # type: ignore[arg-type]


def test_short_read_is_an_error_never_a_short_file() -> None:
    got: list[bytes] = []
    with pytest.raises(InputError, match="short read: the filesystem declares 10 bytes but only 3"):
        stream_open_file(_stream(b"abc", 10), got.append, role="kernel", cap=100)


def test_caps_are_checked_before_reading() -> None:
    got: list[bytes] = []
    with pytest.raises(InputError, match=r"kernel of 2.0 MiB exceeds the 1.0 MiB cap"):
        stream_open_file(_stream(b"", 2 << 20), got.append, role="kernel", cap=1 << 20)
    assert got == []
    assert Limits(kernel=5).cap("kernel") == 5


def test_stream_is_chunked_and_exact() -> None:
    data = os.urandom(3 * 1024 + 5)
    got: list[bytes] = []
    n = stream_open_file(
        _stream(data, len(data)), got.append, role="initrd", cap=1 << 20, chunk_size=1024
    )
    assert n == len(data) and b"".join(got) == data and len(got) == 4


# -- MBR / GPT ------------------------------------------------------------------


def _mbr(entries: list[tuple[int, int, int, int]]) -> bytearray:
    sector = bytearray(512)
    for i, (status, ptype, lba, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, status, ptype, lba, count)
    sector[510:512] = b"\x55\xaa"
    return sector


def _read(buf: bytes):  # type: ignore[no-untyped-def]
    return lambda off, n: bytes(buf[off : off + n])


def test_mbr_logical_partitions_are_numbered_from_5() -> None:
    disk = bytearray(1 << 20)
    disk[:512] = _mbr([(0, 0x83, 2048, 100), (0x80, 0x05, 100, 400)])
    disk[100 * 512 : 101 * 512] = _mbr([(0, 0x83, 10, 20), (0, 0x05, 50, 100)])
    disk[150 * 512 : 151 * 512] = _mbr([(0, 0x0C, 10, 30)])
    parts = read_mbr(_read(disk), len(disk), "d")
    assert [(p.number, p.start // 512, p.size // 512, p.type) for p in parts] == [
        (1, 2048, 100, 0x83),
        (5, 110, 20, 0x83),
        (6, 160, 30, 0x0C),
    ]


def test_mbr_ebr_loop_is_an_error() -> None:
    disk = bytearray(1 << 20)
    disk[:512] = _mbr([(0, 0x05, 100, 400)])
    # EBR at 100 links to 150, whose link points back to 150 (relative 50).
    disk[100 * 512 : 101 * 512] = _mbr([(0, 0x83, 10, 20), (0, 0x05, 50, 100)])
    disk[150 * 512 : 151 * 512] = _mbr([(0, 0x83, 10, 20), (0, 0x05, 50, 100)])
    with pytest.raises(InputError, match="EBR chain loops"):
        read_mbr(_read(disk), len(disk), "d")


def _gpt(count: int = 128, entry_size: int = 128, corrupt_header: bool = False) -> bytearray:
    disk = bytearray(4 << 20)
    disk[:512] = _mbr([(0, 0xEE, 1, len(disk) // 512 - 1)])
    entries = bytearray(count * entry_size)
    linux = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
    struct.pack_into(
        "<16s16sQQQ", entries, entry_size, linux.bytes_le, uuid.uuid4().bytes_le, 2048, 4095, 0
    )
    last = len(disk) // 512 - 1

    def header(my: int, alt: int, array_lba: int) -> bytes:
        h = bytearray(92)
        h[:8] = b"EFI PART"
        struct.pack_into(
            "<IIIIQQQQ16sQIII",
            h,
            8,
            0x10000,
            92,
            0,
            0,
            my,
            alt,
            34,
            last - 33,
            uuid.uuid4().bytes,
            array_lba,
            count,
            entry_size,
            zlib.crc32(entries),
        )
        struct.pack_into("<I", h, 16, zlib.crc32(bytes(h)))
        return bytes(h)

    if len(entries) <= (1 << 20):
        disk[1024 : 1024 + len(entries)] = entries
        disk[(last - 32) * 512 : (last - 32) * 512 + len(entries)] = entries
    primary = bytearray(header(1, last, 2))
    if corrupt_header:
        primary[40] ^= 0xFF
    disk[512:604] = primary
    disk[last * 512 : last * 512 + 92] = header(last, 1, last - 32)
    return disk


def test_gpt_partitions_numbered_by_slot() -> None:
    disk = _gpt()
    parts = read_gpt(_read(disk), len(disk), "d")
    assert [(p.number, p.start // 512, p.size // 512) for p in parts] == [(2, 2048, 2048)]
    assert parts[0].type_name == "Linux filesystem"


def test_gpt_falls_back_to_the_backup_header() -> None:
    disk = _gpt(corrupt_header=True)
    found = find_gpt(_read(disk), len(disk))
    assert found is not None and found[1].my_lba == len(disk) // 512 - 1
    assert [p.number for p in read_gpt(_read(disk), len(disk), "d")] == [2]


def test_gpt_with_an_absurd_entry_count_is_refused() -> None:
    disk = _gpt(count=0x10000, entry_size=1024)
    with pytest.raises(InputError, match="exceed the 1048576-byte bound"):
        read_gpt(_read(disk), len(disk), "d")


# -- sniffing and discovery of garbage -----------------------------------------


def test_garbage_is_not_a_disk() -> None:
    src = MemorySource(os.urandom(1 << 20))
    with pytest.raises(InputError, match="no partition table and no supported filesystem"):
        open_disk(src, name="junk.img")
    assert sniff(src.pread, src.size) is None


def test_tiny_image() -> None:
    with pytest.raises(InputError, match="too small"):
        open_disk(MemorySource(b"\0" * 100), name="tiny.img")


def test_reader_library_errors_are_input_errors() -> None:
    from dissect.volume.exceptions import LVM2Error  # type: ignore[import-untyped]

    with (
        pytest.raises(InputError, match="LVM2Error: Physical volume not found"),
        reader_boundary("disk", "reading LVM2 metadata"),
    ):
        raise LVM2Error("Physical volume not found: pv0")
