"""``--config-dialect`` end to end: the bootloader, ``--isconfig`` and ``predict`` agree.

The config differs only where GRUB (SYSLINUX) and petitboot differ: a
label's APPEND after a global APPEND.  The prediction made with a dialect
must be the boot made with it, and the default must be GRUB's reading.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootloader.from_disk import files_from_disk
from pvgrub_py.cli.pvgrubctl import main as pvgrubctl

EXTLINUX = """\
APPEND console=hvc0
DEFAULT linux
LABEL linux
  KERNEL /boot/vmlinuz
  APPEND root=/dev/xvda1 ro
  INITRD /boot/initrd.img
"""
GRUB_ARGS = "root=/dev/xvda1 ro"
PETITBOOT_ARGS = "console=hvc0 root=/dev/xvda1 ro"


def bootloader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dialect")
    src = work / "root"
    (src / "boot" / "extlinux").mkdir(parents=True)
    (src / "boot" / "extlinux" / "extlinux.conf").write_text(EXTLINUX)
    (src / "boot" / "vmlinuz").write_bytes(b"kernel " * 1000)
    (src / "boot" / "initrd.img").write_bytes(b"initrd " * 1000)
    img = work / "guest.ext4"
    disk_images.make_ext4(img, src, 16 << 20, "dialect")
    return img


def test_isconfig_default_is_grub_and_petitboot_is_selectable(tmp_path: Path) -> None:
    cfg = tmp_path / "extlinux.conf"
    cfg.write_text(EXTLINUX)
    default = bootloader("-q", "--isconfig", str(cfg))
    petitboot = bootloader("-q", "--isconfig", "--config-dialect=petitboot", str(cfg))
    grub = bootloader("-q", "--isconfig", "--config-dialect", "grub", str(cfg))
    assert default.returncode == petitboot.returncode == grub.returncode == 0, default.stderr
    assert f"  args: {GRUB_ARGS}\n" in default.stdout
    assert grub.stdout == default.stdout
    assert f"  args: {PETITBOOT_ARGS}\n" in petitboot.stdout


def test_an_unknown_dialect_is_a_usage_error(tmp_path: Path) -> None:
    r = bootloader("-q", "--config-dialect=lilo", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown config dialect 'lilo'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("dialect", "args"), [(None, GRUB_ARGS), ("grub", GRUB_ARGS),
                                               ("petitboot", PETITBOOT_ARGS)])  # fmt: skip
def test_predict_and_boot_read_the_config_alike(
    disk: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    dialect: str | None,
    args: str,
) -> None:
    flag = [] if dialect is None else [f"--config-dialect={dialect}"]
    assert pvgrubctl(["predict", str(disk), "--json", *flag]) == 0
    doc = json.loads(capsys.readouterr().out)
    cmdline = [m for m in doc["measurements"] if m["what"] == "cmdline"]
    assert len(cmdline) == 1

    out, outdir = tmp_path / "out", tmp_path / "dir"
    out.touch()  # libxl creates the output file
    r = bootloader("-q", f"--output={out}", "--output-format=simple0",
                   f"--output-directory={outdir}", *flag, str(disk))  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = dict(rec.split(" ", 1) for rec in out.read_text().split("\0") if rec)
    assert records["args"] == args

    # The cmdline predict measured is the one the bootloader handed to libxl.
    assert cmdline[0]["digests"]["sha1"] == hashlib.sha1(args.encode()).hexdigest()


@pytest.mark.parametrize("dialect", list(Dialect))
def test_the_builder_chooses_with_the_same_dialect(
    disk: Path, tmp_path: Path, dialect: Dialect
) -> None:
    """``pvgrubctl boot --disk --config-dialect`` takes the bootloader's choice."""
    choice, kernel, initrd = files_from_disk(str(disk), None, tmp_path, dialect)
    assert choice.args == (PETITBOOT_ARGS if dialect is Dialect.PETITBOOT else GRUB_ARGS)
    assert kernel.read_bytes() == b"kernel " * 1000
    assert initrd is not None and initrd.read_bytes() == b"initrd " * 1000
