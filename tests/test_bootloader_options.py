"""The bootloader's argv as libxl builds it, pygrub's options, and the result formats."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.bootloader.outdir import OutputDirectory
from pvgrub_py.bootloader.output import format_result
from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.measure.policy import vtpm_label_matches


def test_libxl_argv_in_its_exact_order() -> None:
    # make_bootloader_args: kernel, ramdisk, args, runas+quiet, output, format,
    # directory, bootloader_args verbatim, then the disk last.
    argv = [
        "--kernel=/boot/vmlinuz", "--ramdisk=/boot/initrd.img", "--args=console=hvc0",
        "--runas=110", "--quiet", "--output=/var/lib/xen/bootloader.7.out",
        "--output-format=simple0", "--output-directory=/var/lib/xen/bootloader.7.d",
        "--vtpm=xen:0", "--vtpm-uuid=7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d", "--require-vtpm",
        "/dev/vg0/guest7-disk",
    ]  # fmt: skip
    o = parse_options(argv)
    assert o is not None
    assert (o.kernel, o.ramdisk, o.args) == ("/boot/vmlinuz", "/boot/initrd.img", "console=hvc0")
    assert (o.runas, o.interactive, o.output_format) == (110, False, "simple0")
    assert o.output == "/var/lib/xen/bootloader.7.out"
    assert o.output_directory == "/var/lib/xen/bootloader.7.d"
    assert (o.vtpm, o.require_vtpm, o.measurement_required) == ("xen:0", True, True)
    assert o.disk == "/dev/vg0/guest7-disk"


def test_pygrub_defaults_and_gnu_ordering() -> None:
    o = parse_options(["disk.img", "-q", "--entry", "1"])
    assert o is not None
    assert (o.output_format, o.output, o.entry, o.interactive) == ("sxp", None, "1", False)
    assert o.output_directory == "/var/run/xen/pvgrub-py/"


def test_help_returns_none() -> None:
    assert parse_options(["-h"]) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one DISK"),
        (["a", "b"], "exactly one DISK"),
        (["--output-format=xml", "d"], "unknown output format"),
        (["--runas=12", "d"], "--runas needs --entry or -q"),
        (["--runas=0", "-q", "d"], "would not drop privileges"),
        (["--runas=x", "-q", "d"], "needs an integer"),
        (["--offset=-1", "d"], "must not be negative"),
        (["--require-vtpm", "d"], "no vTPM to measure into"),
        (["--vtpm-label=x", "d"], "no vTPM to measure into"),
        (["--vtpm=swtpm:unix:/s", "--vtpm-uuid=7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d", "d"],
             "xen: vTPM"),
        (["--bogus", "d"], "option --bogus not recognized"),
        (["--vtpm-timeout=0", "d"], "more than 0"),
        (["--vtpm-timeout=nan", "d"], "more than 0"),
        (["--vtpm-timeout=inf", "d"], "more than 0"),
        (["--vtpm-timeout=soon", "d"], "number of seconds"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_options(argv)


def test_simple0_is_what_libxl_parses() -> None:
    out = format_result("simple0", "/d/boot_kernel.1", "/d/boot_ramdisk.2", "root=/dev/xvda1 ro")
    assert out == b"kernel /d/boot_kernel.1\0ramdisk /d/boot_ramdisk.2\0args root=/dev/xvda1 ro\0\0"
    assert format_result("simple0", "/d/k", None, "") == b"kernel /d/k\0\0"


def test_simple_and_sxp() -> None:
    assert format_result("simple", "/k", "/r", "a b") == b"kernel /k\nramdisk /r\nargs a b\n\n"
    assert format_result("sxp", "/k", None, "it's") == b"linux (kernel '/k')(args \"it's\")"


@pytest.mark.parametrize(
    ("fmt", "bad"), [("simple0", "a\0kernel /evil"), ("simple", "a\nkernel /evil")]
)
def test_separator_injection_is_refused(fmt: str, bad: str) -> None:
    # XSA-198 class: a guest-chosen cmdline must not add records.
    with pytest.raises(InputError, match="record separator"):
        format_result(fmt, "/k", None, bad)  # type: ignore[arg-type]


def test_output_files_are_exclusive_0600_and_removed_on_failure(tmp_path: Path) -> None:
    d = tmp_path / "bootloader.7.d"
    with pytest.raises(RuntimeError), OutputDirectory(str(d)) as out:
        path, f = out.create("boot_kernel")
        f.write(b"kernel")
        f.close()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        raise RuntimeError("later step failed")
    # The directory (and any parent) this run created goes too.
    assert not d.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_was_there_is_kept_empty_on_failure(tmp_path: Path) -> None:
    d = tmp_path / "bootloader.7.d"
    d.mkdir()
    with pytest.raises(RuntimeError), OutputDirectory(str(d)) as out:
        out.create("boot_kernel")[1].close()
        raise RuntimeError("later step failed")
    assert list(d.iterdir()) == []


def test_created_parents_are_removed_on_failure(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "c"
    with pytest.raises(RuntimeError), OutputDirectory(str(d)):
        raise RuntimeError("later step failed")
    assert list(tmp_path.iterdir()) == []


def test_output_files_kept_on_commit_and_never_follow_symlinks(tmp_path: Path) -> None:
    with OutputDirectory(str(tmp_path)) as out:
        path, f = out.create("boot_kernel")
        f.close()
        out.commit()
    assert Path(path).exists()
    # A planted symlink is never followed: create() picks fresh names with O_EXCL.
    (tmp_path / "boot_ramdisk.planted").symlink_to("/etc/passwd")
    with OutputDirectory(str(tmp_path)) as out:
        p2, f2 = out.create("boot_ramdisk")
        f2.close()
        assert not os.path.islink(p2)


@pytest.mark.parametrize(
    ("actual", "wanted", "ok"),
    [
        ("system_u:system_r:vtpm_t", "system_u:system_r:vtpm_t", True),
        ("guest1_u:vm_r:vtpm_t", "*:vm_r:vtpm_t", True),
        (":vm_r:vtpm_t", "*:vm_r:vtpm_t", False),  # pv-grub needs offset > 0
        ("guest1_u:vm_r:vtpm_x", "*:vm_r:vtpm_t", False),
        ("system_u:system_r:vtpm_t", "system_u:system_r:vtpm", False),
        ("a", "*", True),
    ],
)
def test_vtpm_label_rule(actual: str, wanted: str, ok: bool) -> None:
    assert vtpm_label_matches(actual, wanted) is ok
