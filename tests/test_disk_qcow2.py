"""qcow2 header checks made before the image is handed to dissect.hypervisor."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pvgrub_py.disk import open_disk
from pvgrub_py.disk.bounded import BoundedFile, FdSource
from pvgrub_py.disk.qcow2 import open_qcow2
from pvgrub_py.errors import InputError

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

#: Header offsets (QEMU docs/interop/qcow2.txt): cluster_bits u32 at 20,
#: size u64 at 24, l1_size u32 at 36.
CLUSTER_BITS, SIZE, L1_SIZE = 20, 24, 36


def _create(path: Path, size: str, *options: str) -> Path:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if options:
        cmd += ["-o", ",".join(options)]
    subprocess.run([*cmd, str(path), size], check=True)
    return path


def _header_u32(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return int(struct.unpack(">I", f.read(4))[0])


def _patch_u32(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">I", value))


def _open(path: Path) -> BoundedFile:
    return open_qcow2(BoundedFile(FdSource.open(path), name=path.name))


@pytest.mark.parametrize(
    ("size", "options", "needed"),
    [
        # 64 KiB clusters: one L2 table maps 8192 clusters = 512 MiB.
        ("1G", (), 2),
        # 512-byte clusters: one L2 table maps 64 clusters = 32 KiB.
        ("1M", ("cluster_size=512",), 32),
        # Extended L2 entries are 16 bytes: one L2 table maps 256 MiB.
        ("1G", ("extended_l2=on",), 4),
    ],
)
def test_qemu_images_have_exactly_the_l1_entries_they_need(
    tmp_path: Path, size: str, options: tuple[str, ...], needed: int
) -> None:
    img = _create(tmp_path / "disk.qcow2", size, *options)
    assert _header_u32(img, L1_SIZE) == needed  # QEMU's own count: ours must accept it
    view = _open(img)
    assert view.pread(view.size - 512, 512) == bytes(512)
    # One entry short is refused, naming the file, before any reader runs.
    _patch_u32(img, L1_SIZE, needed - 1)
    with pytest.raises(
        InputError,
        match=rf"disk\.qcow2: qcow2 L1 table has {needed - 1} entries; "
        rf"the virtual size of \d+ bytes needs {needed}",
    ):
        _open(img)


def test_zeroed_l1_size_is_refused_by_open_disk(tmp_path: Path) -> None:
    """The corruption sweep's case: the low byte of l1_size zeroed."""
    img = _create(tmp_path / "guest.qcow2", "64M")
    assert _header_u32(img, L1_SIZE) == 1
    _patch_u32(img, L1_SIZE, 0)
    with pytest.raises(InputError, match=r"^guest\.qcow2: qcow2 L1 table has 0 entries") as exc:
        open_disk(img)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("bits", [0, 8, 22, 255])
def test_cluster_bits_out_of_range_is_refused(tmp_path: Path, bits: int) -> None:
    img = _create(tmp_path / "disk.qcow2", "64M")
    _patch_u32(img, CLUSTER_BITS, bits)
    with pytest.raises(InputError, match=rf"qcow2 cluster_bits {bits} is out of range"):
        _open(img)
