"""Each supported disk layout, end to end: volumes, config search, byte-exact files.

Images come from `disk_images` (built without mounting, once per session).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import disk_images
import pytest
from disk_images import DEBIAN_KVER, EXT_UUID, FEDORA_KVER, Image

from pvgrub_py.bootcfg.files import ConfigFiles
from pvgrub_py.disk import (
    Disk,
    VolumeSelector,
    locate_config,
    open_disk,
    read_small_file,
    resolve_boot_file,
    stream_file,
)
from pvgrub_py.disk.configfiles import VolumeFiles, volume_set
from pvgrub_py.errors import InputError


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _volume(disk: Disk, grub_name: str):  # type: ignore[no-untyped-def]
    matches = [v for v in disk.volumes if v.grub_name == grub_name]
    assert matches, f"{grub_name} not in {[v.grub_name for v in disk.volumes]}"
    return matches[0]


def _check_all_files(disk: Disk, image: Image) -> None:
    """Every file the image was built with streams out byte-exact (SHA-256)."""
    for grub_name, files in image.files.items():
        fs = _volume(disk, grub_name).filesystem()
        for path, data in files.items():
            digest = hashlib.sha256()
            size = stream_file(fs, path, digest.update, role="initrd")
            assert size == len(data), path
            assert digest.hexdigest() == hashlib.sha256(data).hexdigest(), path


def _check_clean_stats(disk: Disk) -> None:
    assert disk.stats.refused == 0
    assert disk.stats.reads > 0


def test_debian_gpt_ext4(images: disk_images.ImageFactory) -> None:
    img = images.debian_gpt()
    with open_disk(img.path) as disk:
        assert [v.grub_name for v in disk.volumes] == ["hd0,gpt1", "hd0,gpt2"]
        boot, root = disk.volumes
        assert not boot.has_filesystem
        assert root.description == "debian-gpt.img: GPT partition 2 (ext4, label 'debroot')"
        loc = locate_config(disk)
        assert (loc.volume.grub_name, loc.path, loc.kind) == (
            "hd0,gpt2",
            "/boot/grub/grub.cfg",
            "grub2",
        )
        fs = loc.filesystem
        assert fs.fs_type == "ext4" and fs.uuid == EXT_UUID and fs.label == "debroot"
        assert read_small_file(fs, loc.path) == img.files["hd0,gpt2"]["/boot/grub/grub.cfg"]
        _check_all_files(disk, img)
        # /vmlinuz is a relative symlink, /initrd.img an absolute one.
        assert fs.stat("/vmlinuz").path == f"/boot/vmlinuz-{DEBIAN_KVER}"  # type: ignore[union-attr]
        assert fs.stat("/initrd.img").path == f"/boot/initrd.img-{DEBIAN_KVER}"  # type: ignore[union-attr]
        assert fs.is_dir("/boot/grub") and fs.is_file("/boot/grub/grub.cfg")
        assert not fs.exists("/boot/nope")
        assert fs.stat("/boot/dangling") is None
        assert fs.is_dir("/boot/dir-link")
        assert "grub.cfg" in fs.list_dir("/boot/dir-link")
        # '..' inside the filesystem is fine; the symlink /boot/inside uses it too.
        assert fs.stat("/boot/../etc/hostname") is not None
        assert read_small_file(fs, "/boot/inside") == b"debian\n"
        _check_clean_stats(disk)


def test_debian_boot_files_via_selectors(images: disk_images.ImageFactory) -> None:
    img = images.debian_gpt()
    with open_disk(img.path) as disk:
        loc = locate_config(disk)
        kernel = f"/boot/vmlinuz-{DEBIAN_KVER}"
        for selector in (
            None,
            VolumeSelector(uuid=EXT_UUID.upper()),
            VolumeSelector(label="debroot"),
            VolumeSelector(partition=2),
            VolumeSelector(device="(hd0,gpt2)"),
            VolumeSelector(device="hd0,2"),
            VolumeSelector(uuid="00000000-no-such-uuid"),  # falls back to the config's volume
        ):
            found = resolve_boot_file(disk, kernel, config_volume=loc.volume, selector=selector)
            assert (found.volume.grub_name, found.path) == ("hd0,gpt2", kernel)
        with pytest.raises(InputError, match="no such file"):
            resolve_boot_file(disk, "/boot/vmlinuz-missing", config_volume=loc.volume)


def test_config_files_adapter(images: disk_images.ImageFactory) -> None:
    img = images.debian_gpt()
    with open_disk(img.path) as disk:
        loc = locate_config(disk)
        files = VolumeFiles(loc.volume)
        assert isinstance(files, ConfigFiles)
        ident = files.identity
        assert (ident.name, ident.uuid, ident.label, ident.fs_type) == (
            "hd0,gpt2",
            EXT_UUID,
            "debroot",
            "ext4",
        )
        cfg = img.files["hd0,gpt2"]["/boot/grub/grub.cfg"]
        assert files.read("/boot/grub/grub.cfg", 1 << 20) == cfg
        assert files.read("/boot/grub/grub.cfg", 10) == cfg[:11]  # max_bytes + 1
        assert files.read("/boot/grub", 100) is None
        assert files.read("/boot/missing", 100) is None
        info = files.stat("/boot/grub/grub.cfg")
        assert info is not None and not info.is_dir and info.size == len(cfg)
        assert files.stat("/boot/grub").is_dir  # type: ignore[union-attr]
        assert files.list_dir("/boot/grub") == ["grub.cfg"]
        assert files.list_dir("/boot/grub/grub.cfg") is None
        vs = volume_set(disk, loc.volume)
        assert vs.primary.identity.name == "hd0,gpt2"
        assert vs.find_uuid(EXT_UUID) is vs.primary
        assert vs.find_label("debroot") is vs.primary


def test_fedora_mbr_xfs_boot_bls_lvm(images: disk_images.ImageFactory) -> None:
    img = images.fedora_mbr()
    with open_disk(img.path) as disk:
        names = [v.grub_name for v in disk.volumes]
        # The active partition first (pygrub's order), the logical partition
        # numbered 5 as GRUB does, the LV after all partitions.
        assert names[:3] == ["hd0,msdos1", "hd0,msdos2", "hd0,msdos5"]
        boot = disk.volumes[0]
        assert boot.description == "fedora-mbr.img: MBR partition 1 (xfs, label 'fedboot')"
        assert disk.volumes[1].sniffed is not None and disk.volumes[1].sniffed.kind == "lvm2"
        loc = locate_config(disk)
        assert (loc.volume.grub_name, loc.path, loc.kind) == (
            "hd0,msdos1",
            "/grub2/grub.cfg",
            "grub2",
        )
        fs = loc.filesystem
        assert fs.list_dir("/loader/entries") == [f"abc-{FEDORA_KVER}.conf"]
        # BLS on a separate /boot names /vmlinuz-...; a /boot/... path is retried without it.
        found = resolve_boot_file(disk, f"/boot/vmlinuz-{FEDORA_KVER}", config_volume=loc.volume)
        assert (found.volume.grub_name, found.path) == ("hd0,msdos1", f"/vmlinuz-{FEDORA_KVER}")
        assert _volume(disk, "hd0,msdos5").filesystem().label == "LOGICAL"
        if img.notes.get("lvm") is None:
            pytest.skip(f"LVM image not built here: {img.notes.get('lvm_error')}")
        vg = img.notes["lvm"]["vg"]  # type: ignore[index]
        lv = _volume(disk, f"lvm/{vg}-root")
        assert lv.description == f"fedora-mbr.img: LVM volume {vg}/root (ext4, label 'fedroot')"
        assert lv.filesystem().is_dir("/boot")
        _check_all_files(disk, img)
        _check_clean_stats(disk)


def test_bare_btrfs_menu_lst(images: disk_images.ImageFactory) -> None:
    img = images.btrfs_bare()
    with open_disk(img.path) as disk:
        assert [v.grub_name for v in disk.volumes] == ["hd0"]
        assert disk.volumes[0].description == "bare.btrfs: whole disk (btrfs, label 'btrroot')"
        loc = locate_config(disk)
        assert (loc.path, loc.kind) == ("/boot/grub/menu.lst", "grub-legacy")
        _check_all_files(disk, img)
        _check_clean_stats(disk)


def test_bare_fat_extlinux(images: disk_images.ImageFactory) -> None:
    img = images.fat_bare()
    with open_disk(img.path) as disk:
        loc = locate_config(disk)
        assert (loc.path, loc.kind) == ("/extlinux/extlinux.conf", "extlinux")
        fs = loc.filesystem
        assert (fs.fs_type, fs.uuid, fs.label) == ("vfat", "1234-ABCD", "BOOTFAT")
        # GRUB matches FAT names case-insensitively, long or short.
        assert fs.is_file("/EXTLINUX/EXTLINUX.CONF")
        assert fs.is_file(f"/INITRD.IMG-{DEBIAN_KVER.upper()}")
        _check_all_files(disk, img)
        _check_clean_stats(disk)


def test_iso9660_isolinux(images: disk_images.ImageFactory) -> None:
    img = images.iso()
    with open_disk(img.path) as disk:
        loc = locate_config(disk)
        assert (loc.path, loc.kind) == ("/isolinux/isolinux.cfg", "extlinux")
        fs = loc.filesystem
        assert fs.fs_type == "iso9660" and fs.label == "PVGLIVE"
        assert fs.uuid is not None and len(fs.uuid) == len("2026-01-01-00-00-00-00")
        # Rock Ridge names are case-sensitive, and symlinks work.
        assert fs.is_file("/Mixed/CaseName.txt") and not fs.exists("/mixed/casename.txt")
        assert fs.stat("/isolinux/kernel-link").path == "/isolinux/vmlinuz"  # type: ignore[union-attr]
        _check_all_files(disk, img)
        _check_clean_stats(disk)


def test_hybrid_iso_reads_the_iso_at_offset_zero(images: disk_images.ImageFactory) -> None:
    img = images.hybrid_iso()
    with open_disk(img.path) as disk:
        assert disk.volumes[0].fs_type == "iso9660" and disk.volumes[0].grub_name == "hd0"
        assert locate_config(disk).path == "/isolinux/isolinux.cfg"
        _check_all_files(disk, img)


def test_qcow2_wrapping_gpt(images: disk_images.ImageFactory) -> None:
    img = images.qcow2()
    with open_disk(img.path) as disk:
        assert [v.grub_name for v in disk.volumes] == ["hd0,gpt1", "hd0,gpt2"]
        loc = locate_config(disk)
        assert (loc.volume.grub_name, loc.path) == ("hd0,gpt2", "/boot/grub/grub.cfg")
        _check_all_files(disk, img)
        _check_clean_stats(disk)


def test_open_disk_from_an_open_fd(images: disk_images.ImageFactory) -> None:
    """The deprivileged child gets the disk as a descriptor; we must not close it."""
    img = images.debian_gpt()
    fd = os.open(img.path, os.O_RDONLY)
    try:
        with open_disk(fd, name="xvda") as disk:
            loc = locate_config(disk)
            assert loc.volume.where == "xvda: GPT partition 2"
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_only_the_sniffed_reader_is_imported(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    """Opening an ext4 disk must not import the xfs, btrfs, fat or iso readers."""
    import subprocess

    img = images.debian_gpt()
    code = (
        "import sys\n"
        "from pvgrub_py.disk import open_disk, locate_config\n"
        f"d = open_disk({str(img.path)!r}); locate_config(d)\n"
        "mods = [m for m in ('dissect.xfs', 'dissect.btrfs', 'dissect.fat', 'pycdlib',"
        " 'dissect.volume', 'dissect.hypervisor', 'dissect.extfs', 'pvgrub_py.disk.readers.ext4')"
        " if m in sys.modules]\n"
        "print(' '.join(mods))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    ).stdout.split()
    assert out == ["pvgrub_py.disk.readers.ext4"]


def test_config_search_order(tmp_path: Path) -> None:
    """grub.cfg first, then BLS, then extlinux before menu.lst (pygrub's order)."""
    from pvgrub_py.disk.locate import CONFIG_CANDIDATES

    all_configs = {
        "/boot/grub/menu.lst": b"title x\n",
        "/boot/extlinux/extlinux.conf": b"DEFAULT x\n",
        "/boot/loader/entries/a.conf": b"title a\n",
        "/grub2/grub.cfg": b"set default=0\n",
    }
    expected = [
        ("/grub2/grub.cfg", "grub2"),
        ("/boot/loader/entries", "bls"),
        ("/boot/extlinux/extlinux.conf", "extlinux"),
        ("/boot/grub/menu.lst", "grub-legacy"),
    ]
    paths = [c.path for c in CONFIG_CANDIDATES]
    assert paths.index("/boot/grub/grub.cfg") == 0
    for drop, (want_path, want_kind) in enumerate(expected):
        src = tmp_path / f"src{drop}"
        files = dict(all_configs)
        for gone, _ in expected[:drop]:
            for p in list(files):
                if p.startswith(gone):
                    del files[p]
        disk_images._write_tree(src, files)
        img = tmp_path / f"fs{drop}.ext4"
        disk_images.make_ext4(img, src, 8 << 20, "order")
        with open_disk(img) as disk:
            loc = locate_config(disk)
            assert (loc.path, loc.kind) == (want_path, want_kind)


def test_missing_image_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open the disk image"):
        open_disk(tmp_path / "nope.img")
