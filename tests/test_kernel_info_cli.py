"""``pvgrubctl kernel-info``: output forms, backends, exit statuses, one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from kernel_info_images import (
    ElfSpec,
    boot_kernels,
    build_bzimage,
    build_elf,
    built_kernel,
    bzimage_of,
    cached_kernels,
    default_notes,
)

from pvgrub_py.cli.pvgrubctl import main
from pvgrub_py.xen.availability import availability

needs_bindings = pytest.mark.skipif(not availability().built, reason="Xen bindings not built")


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinuz"
    path.write_bytes(bzimage_of(build_elf(), "xz"))
    return path


def test_python_backend_text(kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel-info", "--backend", "python", str(kernel)]) == 0
    out = capsys.readouterr().out
    assert "format:      bzImage" in out and "boot proto:  2.15" in out
    assert "payload:     xz" in out
    assert "GUEST_OS" in out and "PHYS32_ENTRY" in out
    assert "pv   bootable as xen-3.0-x86_64" in out
    assert "pvh  bootable as hvm-3.0-x86_32" in out
    assert "hashed before parsing" in out


def test_python_backend_json_is_stable(kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel-info", "--backend", "python", "--json", str(kernel)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "python" and doc["format"] == "bzImage"
    assert doc["compression"] == "xz"
    assert doc["bootable_as"] == ["xen-3.0-x86_64", "hvm-3.0-x86_32"]
    assert {n["name"] for n in doc["xen_notes"]} >= {
        "GUEST_OS",
        "ENTRY",
        "VIRT_BASE",
        "PHYS32_ENTRY",
    }
    assert doc["guest_types"]["pv"]["layout"]["virt_base"] == 0xFFFFFFFF80000000


@needs_bindings
def test_both_backends_agree(kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel-info", "--backend", "both", "--json", str(kernel)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["agree"] and doc["differences"] == []
    assert doc["libxenguest"]["bootable_as"] == doc["python"]["bootable_as"]


@needs_bindings
def test_both_backends_disagree_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vmlinuz.bz2"
    path.write_bytes(bzimage_of(build_elf(), "bzip2"))  # Debian's libxenguest has no bzip2
    assert main(["kernel-info", "--backend", "both", str(path)]) == 1
    captured = capsys.readouterr()
    assert "disagree" in captured.out
    assert captured.err.count("\n") == 1 and "pv.bootable" in captured.err


def test_malformed_kernel_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(build_bzimage(b"\xfd7zXZ\x00" + bytes(100), payload_length=10**6))
    assert main(["kernel-info", "--backend", "python", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "payload_length" in err and "0x24c" in err


def test_not_bootable_is_exit_1_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain-elf"
    path.write_bytes(build_elf(ElfSpec(notes=[], with_note_segment=False)))
    assert main(["kernel-info", "--backend", "python", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not bootable on Xen" in err and "no Xen ELF notes" in err


def test_missing_file_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel-info", str(tmp_path / "nope")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["kernel-info", "--backend", "qemu", "x"])
    assert exit_.value.code == 2


#: Kernels the tests build (no /boot, no network): every payload compression Debian's
#: libxenguest reads, a plain vmlinux, and a whole-file gzip around one.
BUILT = {
    **{f"bzImage-{kind}": lambda kind=kind: built_kernel(64 << 10, kind)
       for kind in ("xz", "gzip", "lzma", "lz4", "zstd")},
    "vmlinux": lambda: build_elf(),
    "vmlinux.gz": lambda: gzip.compress(build_elf(), mtime=0),
}  # fmt: skip


@needs_bindings
@pytest.mark.parametrize("name", sorted(BUILT))
def test_both_agree_on_built_kernels(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(BUILT[name]())
    assert main(["kernel-info", "--backend", "both", str(path)]) == 0
    assert "agree on every fact" in capsys.readouterr().out


@needs_bindings
def test_both_on_a_real_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    """A real Debian kernel when this host has one (/boot, or the cache `make demo` and
    the slow tests fill); the built kernels above cover the same code without one."""
    real = boot_kernels() + cached_kernels()
    if not real:
        pytest.skip("no real kernel in /boot or ~/.cache/pvgrub-py/kernels (built ones ran)")
    assert main(["kernel-info", "--backend", "both", str(real[0])]) == 0
    assert "agree on every fact" in capsys.readouterr().out


def test_default_notes_sanity() -> None:
    assert len(default_notes()) == 17
