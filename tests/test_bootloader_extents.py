"""Files copied straight from the image (`pvgrub_py.disk.extents`).

The reader says where a file's bytes lie; whoever measures reads them from
the image itself.  Checked here: the mapped bytes are exactly the bytes the
reader streams (ext4 on GPT, with a sparse file), formats that cannot be
mapped are streamed, and a deprivileged child that lies in its map (bytes
outside the image, a map shorter or longer than the file) is refused
before a byte of it is used.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import disk_images
import pytest
from wire_feed import frames_pipe

from pvgrub_py.bootloader import wire
from pvgrub_py.bootloader.depriv import RemoteSession
from pvgrub_py.bootloader.plan import BootPlan, FileSpec, MenuLine, plan_to_json
from pvgrub_py.disk.extents import check_extents, copy_extents, map_file
from pvgrub_py.disk.volumes import open_disk
from pvgrub_py.errors import PvgrubError


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _streamed_and_mapped(image: Path, path: str) -> tuple[bytes, bytes | None]:
    with open_disk(str(image)) as disk:
        fs = next(v for v in disk.volumes if v.has_filesystem).filesystem()
        with fs.open(path) as stream:
            fmap = map_file(stream)
        with fs.open(path) as stream:
            parts: list[bytes] = []
            while chunk := stream.read(1 << 16):
                parts.append(chunk)
        streamed = b"".join(parts)
        if fmap is None:
            return streamed, None
        got: list[bytes] = []
        copy_extents(fmap.fd, fmap.extents, got.append, source="x")
        return streamed, b"".join(got)


def _big_files(img: disk_images.Image) -> dict[str, bytes]:
    """The image's files of more than 64 KiB (its kernels and initrds)."""
    return {p: d for files in img.files.values() for p, d in files.items() if len(d) > 1 << 16}


def test_an_ext4_file_maps_to_exactly_its_bytes(images: disk_images.ImageFactory) -> None:
    img = images.debian_gpt()
    big = _big_files(img)
    assert len(big) >= 2
    for path, data in big.items():
        streamed, mapped = _streamed_and_mapped(img.path, path)
        assert mapped is not None, path
        assert mapped == streamed == data


def test_a_sparse_file_maps_its_holes_to_zeros(tmp_path: Path) -> None:
    src = tmp_path / "root"
    (src / "boot").mkdir(parents=True)
    body = os.urandom(8192)
    with open(src / "boot" / "sparse", "wb") as f:
        f.write(body)
        f.seek(1 << 20)
        f.write(body)
    fs = tmp_path / "fs.ext4"
    disk_images.make_ext4(fs, src, 16 << 20, "sparse")
    streamed, mapped = _streamed_and_mapped(fs, "/boot/sparse")
    assert streamed == body + bytes((1 << 20) - 8192) + body
    assert mapped == streamed


def test_an_xfs_file_maps_through_dissects_run_list(tmp_path: Path) -> None:
    """XFS is read by Dissect: its RunlistStream's blocks map too."""
    src = tmp_path / "root"
    (src / "boot").mkdir(parents=True)
    body = os.urandom(3 << 20)
    (src / "boot" / "vmlinuz").write_bytes(body)
    fs = tmp_path / "fs.xfs"
    disk_images.make_xfs(fs, src, 320 << 20, "maps")
    streamed, mapped = _streamed_and_mapped(fs, "/boot/vmlinuz")
    assert streamed == body
    assert mapped == body


@pytest.mark.parametrize("image", ["btrfs_bare", "fat_bare", "iso", "qcow2"])
def test_what_cannot_be_mapped_is_streamed(images: disk_images.ImageFactory, image: str) -> None:
    img = getattr(images, image)()
    with open_disk(str(img.path)) as disk:
        fs = next(v for v in disk.volumes if v.has_filesystem).filesystem()
        path = next(p for p in _big_files(img) if fs.exists(p))
        with fs.open(path) as stream:
            assert map_file(stream) is None


def test_check_extents() -> None:
    assert check_extents([(0, 4), (None, 4)], 8, 100) is None
    assert "outside the 100-byte image" in str(check_extents([(98, 4)], 4, 100))
    assert "extents of 4 bytes for a 8-byte file" in str(check_extents([(0, 4)], 8, 100))
    assert "an extent of 0 bytes" in str(check_extents([(0, 0), (0, 8)], 8, 100))


# -- a child that lies in its map -----------------------------------------------
PLAN = BootPlan(
    config="d.img: /boot/grub/grub.cfg", menu=(MenuLine("Debian", "ro", True),),
    default_index=0, timeout=5, entry_index=0, kernel=FileSpec("/vmlinuz", "d.img: /vmlinuz"),
    initrds=(), args="ro",
)  # fmt: skip


def _session(frames: list[tuple[bytes, bytes]], image: bytes) -> RemoteSession:
    r = frames_pipe(frames)
    with tempfile.NamedTemporaryFile() as f:
        f.write(image)
        f.flush()
        disk_fd = os.open(f.name, os.O_RDONLY)
    root = tempfile.mkdtemp(prefix="pvgrub-py-test-root.")
    pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)  # stands in for the parser
    return RemoteSession(pid, r, root, wire.Deadline(5), "d.img", disk_fd)


def _frames(size: int, extents: list[tuple[int | None, int]]) -> list[tuple[bytes, bytes]]:
    start = json.dumps({"index": 0, "size": size, "mapped": True}).encode()
    return [(wire.PLAN, json.dumps(plan_to_json(PLAN)).encode()), (wire.START, start),
            (wire.MAP, wire.encode_extents(extents)), (wire.END, b"")]  # fmt: skip


def test_an_honest_map_is_read_from_the_parents_own_descriptor() -> None:
    s = _session(_frames(10, [(4, 3), (None, 2), (0, 5)]), b"0123456789")
    s.read_plan()
    got: list[bytes] = []
    assert s.stream(0, got.append, 1 << 30) == 10
    assert b"".join(got) == b"456\0\x0001234"
    s.finish()


@pytest.mark.parametrize(
    ("size", "extents", "message"),
    [
        (4, [(8, 4)], "outside the 10-byte image"),
        (6, [(0, 4)], "extents of 4 bytes for a 6-byte file"),
        (4, [(0, 8)], "extents of 8 bytes for a 4-byte file"),
    ],
)
def test_a_lying_map_is_refused(size: int, extents: list[tuple[int | None, int]],
                                message: str) -> None:  # fmt: skip
    s = _session(_frames(size, extents), b"0123456789")
    s.read_plan()
    got: list[bytes] = []
    with pytest.raises(PvgrubError, match=message):
        s.stream(0, got.append, 1 << 30)
    assert got == []
    s.close()


def test_a_map_without_a_disk_descriptor_is_refused() -> None:
    s = _session(_frames(4, [(0, 4)]), b"0123456789")
    s._disk_fd, fd = -1, s._disk_fd
    os.close(fd)
    s.read_plan()
    with pytest.raises(PvgrubError, match=r"malformed START|where file 0 was due"):
        s.stream(0, lambda chunk: None, 1 << 30)
    s.close()


def test_a_map_frame_is_capped_before_it_is_read() -> None:
    import struct

    from pvgrub_py.disk.extents import MAX_EXTENTS

    assert wire.decode_header(struct.pack(">cI", wire.MAP, MAX_EXTENTS * 16)) == (
        wire.MAP, MAX_EXTENTS * 16,
    )  # fmt: skip
    with pytest.raises(wire.ProtocolError, match="exceeds its"):
        wire.decode_header(struct.pack(">cI", wire.MAP, MAX_EXTENTS * 16 + 16))
    with pytest.raises(wire.ProtocolError, match="a MAP frame of 17 bytes"):
        wire.decode_extents(bytes(17))
