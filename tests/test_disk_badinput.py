"""Hostile and damaged disks: loops, escapes, device nodes, truncation, corrupt trees.

Every case must end in a one-line `InputError` naming the file, quickly,
with no read past the end of the image.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import time
from pathlib import Path

import disk_images
import pytest
from disk_images import DEBIAN_KVER, FEDORA_KVER, MutatedSource

from pvgrub_py.disk import Budget, Limits, locate_config, open_disk, resolve_boot_file, stream_file
from pvgrub_py.disk.configfiles import VolumeFiles
from pvgrub_py.errors import InputError

KERNEL = f"/boot/vmlinuz-{DEBIAN_KVER}"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _one_line(exc: InputError) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text
    return text


def _debian_fs(images: disk_images.ImageFactory):  # type: ignore[no-untyped-def]
    disk = open_disk(images.debian_gpt().path)
    return disk, locate_config(disk).filesystem


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/boot/loop-a", "symbolic link loop at /boot/loop-"),
        ("/boot/self", "symbolic link loop at /boot/self"),
        ("/boot/chain0", "more than 40 levels of symbolic links"),
        ("/../boot/grub/grub.cfg", "'..' climbs above the filesystem root"),
        ("/boot/../../etc/hostname", "'..' climbs above the filesystem root"),
        ("/boot/escape", "'..' climbs above the filesystem root"),
        ("/boot/grub/grub.cfg/x", "/boot/grub/grub.cfg is a regular file, not a directory"),
        ("/boot/grub", "is a directory, not a regular file"),
        ("/boot/nope", "no such file"),
    ],
)
def test_path_traps_on_ext4(images: disk_images.ImageFactory, path: str, problem: str) -> None:
    disk, fs = _debian_fs(images)
    with disk, pytest.raises(InputError) as info:
        fs.open(path)
    text = _one_line(info.value)
    assert text.startswith(f"debian-gpt.img: GPT partition 2: {path}: ")
    assert problem in text


def test_a_chain_of_forty_links_is_still_followed(images: disk_images.ImageFactory) -> None:
    disk, fs = _debian_fs(images)
    with disk:
        assert fs.stat("/boot/chain1") is not None  # 40 hops: at the limit, allowed


def _device_cases(images: disk_images.ImageFactory) -> list[tuple[disk_images.Image, str, str]]:
    return [
        (images.debian_gpt(), "hd0,gpt2", "/boot/evil-dev"),
        (images.fedora_mbr(), "hd0,msdos1", "/evil-dev"),
        (images.btrfs_bare(), "hd0", "/boot/evil-dev"),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["ext4", "xfs", "btrfs"])
def test_device_node_is_refused(images: disk_images.ImageFactory, which: int) -> None:
    img, vol_name, path = _device_cases(images)[which]
    if not img.notes.get("device_node"):
        pytest.skip("mknod needs root")
    with open_disk(img.path) as disk:
        vol = next(v for v in disk.volumes if v.grub_name == vol_name)
        fs = vol.filesystem()
        with pytest.raises(InputError, match="is a character device, not a regular file"):
            fs.open(path)
        with pytest.raises(InputError, match="is a character device, not a regular file"):
            resolve_boot_file(disk, path, config_volume=vol)
        assert VolumeFiles(vol).read(path, 1 << 20) is None
        assert VolumeFiles(vol).stat(path) is None


def test_hostile_names_stay_on_one_line(images: disk_images.ImageFactory) -> None:
    disk, fs = _debian_fs(images)
    with disk, pytest.raises(InputError) as info:
        fs.open("/boot/evil\nname\x1b[2J")
    assert "evil?name?[2J" in _one_line(info.value)


def test_caps_apply_to_real_files(images: disk_images.ImageFactory) -> None:
    disk, fs = _debian_fs(images)
    got: list[bytes] = []
    with disk, pytest.raises(InputError, match=r"kernel of 3.0 MiB exceeds the 1.0 MiB cap"):
        stream_file(fs, KERNEL, got.append, role="kernel", limits=Limits(kernel=1 << 20))
    assert got == []


# -- truncated images -------------------------------------------------------------


@pytest.mark.parametrize("where", ["in-kernel", "before-partition", "in-inode-table"])
def test_truncated_image(images: disk_images.ImageFactory, where: str) -> None:
    img = images.debian_gpt()
    part = int(img.notes["part_offset"])  # type: ignore[call-overload]
    # Find where the kernel's data lives: read it through a recording source.
    probe = MutatedSource(img.path, record=True)
    with open_disk(probe, name="disk.img") as disk:
        fs = locate_config(disk).filesystem
        probe.regions = []
        stream_file(fs, KERNEL, lambda _: None, role="kernel")
        data_regions = sorted(r for r in probe.regions if r[1] >= 65536)
    probe.close()
    cut = {
        "in-kernel": data_regions[len(data_regions) // 2][0] + 1000,
        "before-partition": part - 512,
        "in-inode-table": part + 5 * (1 << 20),
    }[where]
    src = MutatedSource(img.path, size=cut)
    started = time.monotonic()
    with pytest.raises(InputError) as info, open_disk(src, name="disk.img") as disk:
        loc = locate_config(disk)
        stream_file(loc.filesystem, KERNEL, lambda _: None, role="kernel")
    assert time.monotonic() - started < 5
    assert src.past_end == 0, "a read reached past the end of the image"
    text = _one_line(info.value)
    assert text.startswith("disk.img")
    if where == "in-kernel":
        assert f"GPT partition 2: {KERNEL}: " in text
        assert "runs past the end of the image" in text
        assert disk.stats.refused >= 1


def test_truncated_bare_filesystems_fail_cleanly(images: disk_images.ImageFactory) -> None:
    for img in (images.btrfs_bare(), images.fat_bare(), images.iso(), images.qcow2()):
        size = img.path.stat().st_size
        for fraction in (0.1, 0.5, 0.9):
            src = MutatedSource(img.path, size=int(size * fraction))
            try:
                with open_disk(src, name=img.path.name) as disk:
                    loc = locate_config(disk)
                    for grub_name, files in img.files.items():
                        vol = next(v for v in disk.volumes if v.grub_name == grub_name)
                        for path, data in files.items():
                            h = hashlib.sha256()
                            stream_file(vol.filesystem(), path, h.update, role="initrd")
                            assert h.hexdigest() == hashlib.sha256(data).hexdigest()
                    del loc
            except InputError as exc:
                _one_line(exc)
            assert src.past_end == 0, (img.path.name, fraction)


# -- corrupt metadata that makes the readers loop -----------------------------


def test_zeroed_btrfs_tree_node_is_an_error_not_a_hang(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    """dissect.btrfs spins forever on a zeroed node; the node check stops it."""
    img = images.btrfs_bare()
    broken = tmp_path / "zeroed.btrfs"
    shutil.copyfile(img.path, broken)
    raw = broken.read_bytes()
    fsid = raw[0x10020:0x10030]
    node_size = struct.unpack_from("<I", raw, 0x10000 + 0x94)[0]
    zeroed = 0
    with open(broken, "r+b") as f:
        for off in range(0, len(raw), 4096):
            node = raw[off : off + 0x65]
            owner = struct.unpack_from("<Q", node, 0x58)[0] if len(node) == 0x65 else 0
            if node[0x20:0x30] == fsid and owner == 5:  # an FS_TREE node
                f.seek(off)
                f.write(b"\0" * node_size)
                zeroed += 1
    assert zeroed >= 1
    started = time.monotonic()
    with pytest.raises(InputError, match=r"tree node at 0x[0-9a-f]+"), open_disk(broken) as disk:
        locate_config(disk)
    assert time.monotonic() - started < 5


def test_fat_cluster_chain_cycle_is_an_error(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    img = images.fat_bare()
    broken = tmp_path / "cycle.fat"
    shutil.copyfile(img.path, broken)
    from dissect.fat import FATFS  # type: ignore[import-untyped]

    with open(broken, "rb") as f:
        fat = FATFS(f)
        first = fat.get("/vmlinuz").cluster
        fat_offset = fat.bpb.BPB_RsvdSecCnt * fat.sector_size
    with open(broken, "r+b") as f:
        f.seek(fat_offset + 4 * (first + 1))
        f.write(struct.pack("<I", first))  # second cluster points back to the first
    started = time.monotonic()
    with open_disk(broken) as disk:
        fs = disk.volumes[0].filesystem()
        with pytest.raises(InputError, match=r"cluster chain from \d+ is longer than the FAT"):
            stream_file(fs, "/vmlinuz", lambda _: None, role="kernel")
    assert time.monotonic() - started < 5


def test_budget_ends_a_slow_disk(images: disk_images.ImageFactory) -> None:
    img = images.debian_gpt()
    budget = Budget(0.01, source="slow.img")
    time.sleep(0.02)
    with pytest.raises(InputError, match=r"gave up after 0\.01 s"):
        open_disk(img.path, budget=budget)


def test_qcow2_backing_file_is_refused(images: disk_images.ImageFactory, tmp_path: Path) -> None:
    img = images.debian_gpt()
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img.path), "-F", "raw", str(overlay)],
        check=True,
    )
    with pytest.raises(InputError, match="backing file; only self-contained images"):
        open_disk(overlay)


def test_partition_past_the_end_of_a_truncated_disk(images: disk_images.ImageFactory) -> None:
    """The Fedora disk cut inside /boot: the later partitions are dropped, no read past the end."""
    img = images.fedora_mbr()
    src = MutatedSource(img.path, size=100 << 20)
    with open_disk(src, name="fedora.img") as disk:
        assert [v.grub_name for v in disk.volumes] == ["hd0,msdos1"]
        with pytest.raises(
            InputError, match=r"MBR partition 1: /boot/grub/grub.cfg: read .* runs past"
        ):
            loc = locate_config(disk)
            stream_file(
                loc.filesystem, f"/initramfs-{FEDORA_KVER}.img", lambda _: None, role="initrd"
            )
    assert src.past_end == 0


def test_budget_exceeded_is_not_mistaken_for_a_missing_config(
    images: disk_images.ImageFactory,
) -> None:
    from pvgrub_py.disk import BudgetExceeded

    img = images.fedora_mbr()
    with open_disk(img.path, budget=Budget(0.3)) as disk:
        time.sleep(0.35)
        with pytest.raises(BudgetExceeded):
            locate_config(disk)
        disk.budget.restart(5)  # type: ignore[union-attr]
        assert locate_config(disk).path == "/grub2/grub.cfg"
