"""pygrub's ``--isconfig`` and ``--offset``, checked against the real pygrub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest

PYGRUB = "/usr/lib/xen-4.17/bin/pygrub"
have_pygrub = pytest.mark.skipif(not os.path.exists(PYGRUB), reason="pygrub not installed")

pytestmark = pytest.mark.integration

FEDORA_ARGS = "root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def ours(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def pygrub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYGRUB, *args], capture_output=True, text=True, timeout=120)


def simple(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


# -- --isconfig -----------------------------------------------------------------
@have_pygrub
def test_isconfig_prints_what_pygrub_prints(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(disk_images.DEBIAN_GRUB_CFG)
    a, b = ours("-q", "--isconfig", str(cfg)), pygrub("-q", "--isconfig", str(cfg))
    assert a.returncode == b.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.splitlines() == [
        f"  kernel: /boot/vmlinuz-{disk_images.DEBIAN_KVER}",
        f"  initrd: /boot/initrd.img-{disk_images.DEBIAN_KVER}",
        "  args: root=UUID=6a1c1e0e-7b39-4d5c-9c43-0a1b2c3d4e5f ro quiet",
    ]
    with_args = ours("-q", "--isconfig", "--args=console=hvc0", str(cfg))
    assert with_args.stdout.splitlines()[-1].endswith("ro quiet console=hvc0")


@pytest.mark.parametrize(
    ("name", "text", "kernel", "args"),
    [
        ("menu.lst", disk_images.MENU_LST, f"/boot/vmlinuz-{disk_images.DEBIAN_KVER}",
         "root=/dev/xvda ro"),
        ("extlinux.conf", disk_images.EXTLINUX, "/vmlinuz", "root=/dev/xvda1"),
        (f"abc-{disk_images.FEDORA_KVER}.conf", disk_images.FEDORA_BLS,
         f"/vmlinuz-{disk_images.FEDORA_KVER}", FEDORA_ARGS),
    ],
)  # fmt: skip
def test_isconfig_picks_the_parser_by_name(
    tmp_path: Path, name: str, text: str, kernel: str, args: str
) -> None:
    """pygrub parses every --isconfig file as GRUB 2; we use the file's own format."""
    cfg = tmp_path / name
    cfg.write_text(text)
    r = ours("-q", "--isconfig", str(cfg))
    assert r.returncode == 0, r.stderr
    assert f"  kernel: {kernel}\n" in r.stdout and f"  args: {args}\n" in r.stdout


def test_isconfig_errors_are_one_line(tmp_path: Path) -> None:
    big = tmp_path / "grub.cfg"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    for path, message in ((tmp_path / "missing.cfg", "cannot open the config file"),
                          (big, "larger than the 1048576-byte cap")):  # fmt: skip
        r = ours("-q", "--isconfig", str(path))
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and message in r.stderr


# -- --offset -------------------------------------------------------------------
def test_offset_of_the_root_partition_equals_the_full_search(
    images: disk_images.ImageFactory,
) -> None:
    img = images.debian_gpt()
    full = ours("-q", "-n", "--output-format=simple", str(img.path))
    at = ours("-q", "-n", "--output-format=simple", f"--offset={img.notes['part_offset']}",
              str(img.path))  # fmt: skip
    assert full.returncode == at.returncode == 0, at.stderr
    assert full.stdout == at.stdout


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "debian-gpt.img: no supported filesystem starts at byte 0"),
        (1 << 20, "debian-gpt.img: GPT partition 1: no supported filesystem starts at byte"),
        (1 << 40, "--offset=1099511627776 is past the end of the image"),
        (4096, "no supported filesystem starts at byte 4096"),
    ],
)
def test_offset_without_a_filesystem_is_one_line(
    images: disk_images.ImageFactory, offset: int, message: str
) -> None:
    r = ours("-q", "-n", f"--offset={offset}", str(images.debian_gpt().path))
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1].startswith("pvgrub-py: ")


@have_pygrub
def test_offset_into_a_disk_without_a_partition_table_like_pygrub(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    """A filesystem 3 MiB into a disk with no table: only --offset finds it."""
    fs = Path(str(images.debian_gpt().notes["fs_image"]))
    raw = tmp_path / "raw.img"
    with open(raw, "wb") as out, open(fs, "rb") as src:
        out.truncate(3 << 20)
        out.seek(3 << 20)
        while chunk := src.read(1 << 20):
            out.write(chunk)
    plain = ours("-q", "-n", str(raw))
    assert plain.returncode == 1 and "no partition table and no supported filesystem" in (
        plain.stderr
    )
    outdir = tmp_path / "out"
    a = ours("-q", "--output-format=simple", f"--output-directory={outdir}",
             f"--offset={3 << 20}", str(raw))  # fmt: skip
    b = pygrub("-q", "--output-format=simple", f"--output-directory={outdir}",
               f"--offset={3 << 20}", str(raw))  # fmt: skip
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    ra, rb = simple(a.stdout), simple(b.stdout)
    assert ra["args"] == rb["args"]
    for key in ("kernel", "ramdisk"):
        assert Path(ra[key]).read_bytes() == Path(rb[key]).read_bytes()
