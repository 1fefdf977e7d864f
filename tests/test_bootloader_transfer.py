"""Mapped files read through a few reused buffers (`pvgrub_py.bootloader.transfer`).

The parent reads a mapped file from the image into a small ring of
buffers, writes each chunk and hands the same buffer to the hashers, and
reuses a buffer only once every hasher is done with it.  Checked here,
through `depriv.RemoteSession` as ``--runas`` runs it: the output files
and the digests are exactly hashlib's over the bytes (holes as zeros, a
gzip kernel by its inflated bytes), a slow hasher never sees a buffer
overwritten, the hashers see views of a few buffers rather than a fresh
object per chunk, and what cannot take this path (no output, a FIFO) or
fails (a short copy, a failed write) behaves as before.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wire_feed import frames_pipe

from pvgrub_py.bootloader import depriv, transfer, wire
from pvgrub_py.bootloader.depriv import RemoteSession
from pvgrub_py.bootloader.extract import extract_session_files
from pvgrub_py.bootloader.plan import BootPlan, FileSpec, MenuLine, plan_to_json
from pvgrub_py.disk.extract import Limits
from pvgrub_py.errors import InputError
from pvgrub_py.record import record
from pvgrub_py.tpm.algorithms import SHA1, SHA256, HashAlgorithm

MIB = 1 << 20
Extent = tuple[int | None, int]


def _plan(initrds: int) -> BootPlan:
    return BootPlan(
        config="d.img: /boot/grub/grub.cfg", menu=(MenuLine("Debian", "ro", True),),
        default_index=0, timeout=5, entry_index=0,
        kernel=FileSpec("/vmlinuz", "d.img: /vmlinuz"),
        initrds=tuple(FileSpec(f"/initrd{k}", f"d.img: /initrd{k}") for k in range(initrds)),
        args="ro",
    )  # fmt: skip


def _session(image: Path, maps: list[list[Extent]]) -> RemoteSession:
    """A parent reading what a parser child would send: the plan, then a MAP per file."""
    frames = [(wire.PLAN, json.dumps(plan_to_json(_plan(len(maps) - 1))).encode())]
    for index, extents in enumerate(maps):
        size = sum(n for _, n in extents)
        start = {"index": index, "size": size, "mapped": True}
        frames += [(wire.START, json.dumps(start).encode()),
                   (wire.MAP, wire.encode_extents(extents))]  # fmt: skip
    frames.append((wire.END, b""))
    r = frames_pipe(frames)
    disk_fd = os.open(image, os.O_RDONLY)
    root = tempfile.mkdtemp(prefix="pvgrub-py-test-root.")
    pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)  # stands in for the parser
    return RemoteSession(pid, r, root, wire.Deadline(30), "d.img", disk_fd)


def _bytes_of(image: bytes, extents: list[Extent]) -> bytes:
    return b"".join(bytes(n) if at is None else image[at : at + n] for at, n in extents)


class _Recorder:
    """A sha256 that also notes what it was fed (not the bytes: they are reused).

    ``buffers``: the objects the views it was fed are views of."""

    def __init__(self, delay: float = 0.0) -> None:
        self._h = hashlib.sha256()
        self.delay = delay
        self.kinds: set[type] = set()
        self.buffers: set[int] = set()

    def update(self, chunk: Any) -> None:
        self.kinds.add(type(chunk))
        if isinstance(chunk, memoryview):
            self.buffers.add(id(chunk.obj))
        if self.delay:
            time.sleep(self.delay)
        self._h.update(chunk)

    def digest(self) -> bytes:
        return self._h.digest()


@record(frozen=True)
class _RecordingBank(HashAlgorithm):
    """A bank whose hashers are `_Recorder`s (sha256 digests under another name)."""

    delay: float = 0.0

    def new(self) -> Any:
        recorder = _Recorder(self.delay)
        RECORDERS.append(recorder)
        return recorder


RECORDERS: list[_Recorder] = []


def _rec(delay: float = 0.0) -> _RecordingBank:
    RECORDERS.clear()
    return _RecordingBank("rec", 0x7FFF, 32, delay)


def _image(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "d.img"
    path.write_bytes(data)
    return path, data


def _outputs(tmp_path: Path) -> tuple[Path, Path, int, int]:
    k, i = tmp_path / "kernel", tmp_path / "ramdisk"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return k, i, os.open(k, flags, 0o600), os.open(i, flags, 0o600)


def _extract(session: RemoteSession, kernel_out: Any, initrd_out: Any,
             banks: tuple[HashAlgorithm, ...]) -> Any:  # fmt: skip
    try:
        result = extract_session_files(session, kernel_out, initrd_out, banks, Limits())
        session.finish()
        return result
    finally:
        session.close()
        for fd in (kernel_out, initrd_out):
            if isinstance(fd, int):
                os.close(fd)


def _hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pvgrub-py-hash"]


def test_mapped_files_are_written_and_hashed_exactly_with_holes_as_zeros(
    tmp_path: Path,
) -> None:
    image_path, image = _image(tmp_path, 24 * MIB)
    kernel_map: list[Extent] = [(5 * MIB + 3, 2 * MIB + 7), (None, 4096), (17, 3 * MIB)]
    initrd_maps: list[list[Extent]] = [
        [(9 * MIB, 6 * MIB + 1), (None, MIB + 5)],
        [(None, 3), (20 * MIB, 3 * MIB + 11)],
    ]
    session = _session(image_path, [kernel_map, *initrd_maps])
    k_path, i_path, k_fd, i_fd = _outputs(tmp_path)
    rec = _rec()
    kernel, initrd = _extract(session, k_fd, i_fd, (SHA1, SHA256, rec))

    want_k = _bytes_of(image, kernel_map)
    want_i = b"".join(_bytes_of(image, m) for m in initrd_maps)
    assert k_path.read_bytes() == want_k
    assert i_path.read_bytes() == want_i
    assert kernel.length == len(want_k) and initrd.length == len(want_i)
    for m, want in ((kernel, want_k), (initrd, want_i)):
        assert m.digests["sha1"] == hashlib.sha1(want).digest()
        assert m.digests["sha256"] == hashlib.sha256(want).digest()
        assert m.digests["rec"] == hashlib.sha256(want).digest()
    # What is new: views into one reused mapping per output (and the
    # holes' zeros), not a fresh bytes object per chunk.
    assert len(RECORDERS) == 2  # the kernel's and the ramdisk's
    for r in RECORDERS:
        assert r.kinds == {memoryview, bytes}
        assert len(r.buffers) == 1
    assert RECORDERS[0].buffers != RECORDERS[1].buffers


def test_a_slow_hasher_never_sees_a_buffer_reused_under_it(tmp_path: Path) -> None:
    image_path, image = _image(tmp_path, 3 * transfer.SLOTS * MIB)
    kernel_map: list[Extent] = [(MIB + 1, MIB)]
    initrd_map: list[Extent] = [(0, 3 * transfer.SLOTS * MIB - 7)]
    session = _session(image_path, [kernel_map, initrd_map])
    _, i_path, k_fd, i_fd = _outputs(tmp_path)
    kernel, initrd = _extract(session, k_fd, i_fd, (SHA256, _rec(delay=0.003)))
    want = _bytes_of(image, initrd_map)
    assert i_path.read_bytes() == want
    assert initrd.digests["rec"] == initrd.digests["sha256"] == hashlib.sha256(want).digest()
    assert kernel.digests["rec"] == hashlib.sha256(_bytes_of(image, kernel_map)).digest()


def test_a_gzip_kernel_is_measured_by_its_inflated_bytes(tmp_path: Path) -> None:
    inner = os.urandom(3 * MIB)
    packed = gzip.compress(inner, compresslevel=1)
    image_path = tmp_path / "d.img"
    image_path.write_bytes(os.urandom(4096) + packed + os.urandom(4096))
    kernel_map: list[Extent] = [(4096, len(packed))]
    session = _session(image_path, [kernel_map, [(0, 4096)]])
    k_path, _, k_fd, i_fd = _outputs(tmp_path)
    kernel, _ = _extract(session, k_fd, i_fd, (SHA1, SHA256))
    assert k_path.read_bytes() == packed
    assert kernel.length == len(inner)
    assert kernel.digests["sha256"] == hashlib.sha256(inner).digest()
    assert kernel.digests["sha1"] == hashlib.sha1(inner).digest()


def test_no_output_or_a_fifo_takes_the_old_path(tmp_path: Path) -> None:
    image_path, image = _image(tmp_path, 4 * MIB)
    kernel_map: list[Extent] = [(MIB, 2 * MIB + 1)]
    initrd_map: list[Extent] = [(None, 10), (7, MIB)]
    want_k, want_i = _bytes_of(image, kernel_map), _bytes_of(image, initrd_map)

    kernel, initrd = _extract(_session(image_path, [kernel_map, initrd_map]), None, None,
                              (SHA256, _rec()))  # fmt: skip
    assert kernel.digests["sha256"] == hashlib.sha256(want_k).digest()
    assert initrd.digests["sha256"] == hashlib.sha256(want_i).digest()
    assert all(r.kinds == {bytes} for r in RECORDERS)

    r, w = os.pipe()
    got: list[bytes] = []
    drain = threading.Thread(target=lambda: got.extend(iter(lambda: os.read(r, MIB), b"")))
    drain.start()
    _, _, k_fd, i_fd = _outputs(tmp_path)
    os.close(i_fd)
    try:
        kernel, initrd = _extract(_session(image_path, [kernel_map, initrd_map]), k_fd, w,
                                  (SHA256, _rec()))  # fmt: skip
    finally:
        drain.join()
        os.close(r)
    assert b"".join(got) == want_i
    assert initrd.digests["sha256"] == hashlib.sha256(want_i).digest()
    assert RECORDERS[-1].kinds == {bytes}  # the FIFO's hasher: the old path


def test_a_short_copy_names_the_file_and_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image shrank after the map was checked: the read comes up short."""
    image_path, _ = _image(tmp_path, 4 * MIB)
    real_size = depriv._image_size
    monkeypatch.setattr(depriv, "_image_size", lambda fd: real_size(fd) + 8 * MIB)
    session = _session(image_path, [[(MIB, MIB)], [(2 * MIB, 5 * MIB)]])
    _, _, k_fd, i_fd = _outputs(tmp_path)
    with pytest.raises(InputError, match=r"d\.img: /initrd0: short read: .* at image byte"):
        _extract(session, k_fd, i_fd, (SHA1, SHA256))
    assert not _hashing_threads()


def test_a_failed_write_names_the_file_and_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_path, _ = _image(tmp_path, 8 * MIB)
    session = _session(image_path, [[(0, 6 * MIB)], [(MIB, MIB)]])
    _, _, k_fd, i_fd = _outputs(tmp_path)
    real_write = os.write
    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        if fd == k_fd:
            calls += 1
            if calls == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(InputError, match=r"kernel d\.img: /vmlinuz: cannot write the extracted "
                                         "copy: No space left on device"):  # fmt: skip
        _extract(session, k_fd, i_fd, (SHA1, SHA256))
    assert not _hashing_threads()


def test_the_ring_lends_each_buffer_to_one_chunk_at_a_time() -> None:
    ring = transfer.BufferRing(slots=2, size=16)
    a, b = ring.take(), ring.take()
    assert a != b
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(ring.take()))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive() and not got  # both lent: it waits
    ring.give(b)
    waiter.join(5)
    assert got == [b]
