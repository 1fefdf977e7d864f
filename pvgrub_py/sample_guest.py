"""A small, real sample guest for the demo and the integration tests.

The kernel is a real Debian ``linux-image-*-amd64`` kernel (a bzImage with
Xen ELF notes, the kind a Debian PV guest boots): taken from
``$PVGRUB_DEMO_KERNEL``, else ``/boot``, else downloaded once with
``apt-get download`` and unpacked into the cache, without installing it.
The initrd is a tiny, deterministic newc cpio archive, gzip-compressed as
initramfs-tools makes them, so its hash is the same on every machine.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pvgrub_py.errors import PvgrubError

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pvgrub-py"
CMDLINE = "root=/dev/xvda2 ro console=hvc0 quiet"

INIT_SCRIPT = b"""#!/bin/sh
# pvgrub-py sample guest: report what the vTPM saw, then stop.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "cmdline: $(cat /proc/cmdline)"
for p in 4 5; do echo "PCR $p: $(cat /sys/class/tpm/tpm0/pcr-sha1/$p 2>/dev/null)"; done
poweroff -f
"""


@dataclass(frozen=True)
class SampleGuest:
    kernel: Path
    initrd: Path
    cmdline: str


def _newc_entry(name: bytes, mode: int, data: bytes, ino: int) -> bytes:
    """One entry of the SVR4 "newc" cpio format the Linux initramfs reads."""
    namesize = len(name) + 1
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, namesize, 0]
    header = b"070701" + b"".join(b"%08X" % v for v in fields)
    out = header + name + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def make_initrd(path: Path) -> None:
    entries = [
        (b"dev", 0o040755, b""),
        (b"proc", 0o040755, b""),
        (b"sys", 0o040755, b""),
        (b"init", 0o100755, INIT_SCRIPT),
    ]
    archive = b"".join(_newc_entry(n, m, d, i) for i, (n, m, d) in enumerate(entries, 1))
    archive += _newc_entry(b"TRAILER!!!", 0, b"", 0)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(archive)
    path.write_bytes(buf.getvalue())


def _download_debian_kernel() -> Path:
    dest = CACHE / "kernel"
    found = sorted(dest.glob("boot/vmlinuz-*"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise PvgrubError("no kernel found: set PVGRUB_DEMO_KERNEL to a Linux kernel image")
    dep = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    ).stdout
    names = [w.split()[-1] for w in dep.splitlines() if "Depends: linux-image-" in w]
    package = names[0] if names else "linux-image-amd64"
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True, check=False
        )
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if r.returncode != 0 or not debs:
            raise PvgrubError(f"apt-get download {package} failed: {r.stderr.strip()}")
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], str(dest)], check=True)
    found = sorted(dest.glob("boot/vmlinuz-*"))
    if not found:
        raise PvgrubError(f"{package} holds no /boot/vmlinuz-*")
    return found[-1]


def find_kernel() -> Path:
    env = os.environ.get("PVGRUB_DEMO_KERNEL")
    if env:
        return Path(env)
    installed = sorted(glob.glob("/boot/vmlinuz-*"))
    if installed and os.access(installed[-1], os.R_OK):
        return Path(installed[-1])
    return _download_debian_kernel()


def sample_guest(workdir: Path) -> SampleGuest:
    initrd = workdir / "initrd.img"
    make_initrd(initrd)
    return SampleGuest(find_kernel(), initrd, CMDLINE)


# -- the sample guest disk (stubdom/sample-guest) ------------------------------------------

RECIPE = Path(__file__).resolve().parents[1] / "stubdom" / "sample-guest"
BOOT_UUID = "5f1c2a8e-3b4d-4e6f-9a0b-1c2d3e4f5a6b"
ROOT_UUID = "8d7e6f5a-4b3c-4d2e-8f1a-0b9c8d7e6f5a"
MIB = 1 << 20
GRUBENV = b"# GRUB Environment Block\n"


def grubenv_block(assignments: dict[str, str] | None = None) -> bytes:
    """GRUB's fixed 1024-byte environment block (grub-editenv's format)."""
    body = GRUBENV + b"".join(f"{k}={v}\n".encode() for k, v in (assignments or {}).items())
    if len(body) > 1024:
        raise ValueError("grubenv assignments exceed 1024 bytes")
    return body + b"#" * (1024 - len(body))


def kernel_version(kernel: Path) -> str:
    name = kernel.name
    return name.removeprefix("vmlinuz-") if name.startswith("vmlinuz-") else "6.1.0-sample-amd64"


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise PvgrubError(f"{cmd[0]} failed: {r.stderr.strip() or r.stdout.strip()}")


def _ext4(image: Path, source: Path, size: int, label: str, uuid: str) -> None:
    if shutil.which("mke2fs") is None:
        raise PvgrubError("mke2fs is not installed (Debian package e2fsprogs; run `make setup`)")
    image.unlink(missing_ok=True)
    _run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-L",
        label,
        "-U",
        uuid,
        "-E",
        "root_owner=0:0",
        "-d",
        str(source),
        str(image),
        f"{size // 1024}k",
    )


def build_sample_disk(workdir: Path, guest: SampleGuest | None = None) -> tuple[Path, SampleGuest]:
    """A GPT disk: BIOS boot, ext4 /boot (grub.cfg, kernel, initrd), ext4 /."""
    guest = guest or sample_guest(workdir)
    kver = kernel_version(guest.kernel)
    boot_src, root_src = workdir / "boot-tree", workdir / "root-tree"
    for tree in (boot_src, root_src):
        shutil.rmtree(tree, ignore_errors=True)
    (boot_src / "grub").mkdir(parents=True)
    template = (RECIPE / "grub.cfg.in").read_text()
    cfg = template.replace("@KVER@", kver).replace("@BOOT_UUID@", BOOT_UUID)
    (boot_src / "grub" / "grub.cfg").write_text(cfg.replace("@ROOT_UUID@", ROOT_UUID))
    (boot_src / "grub" / "grubenv").write_bytes(grubenv_block())
    shutil.copyfile(guest.kernel, boot_src / f"vmlinuz-{kver}")
    shutil.copyfile(guest.initrd, boot_src / f"initrd.img-{kver}")
    (root_src / "etc").mkdir(parents=True)
    (root_src / "etc" / "hostname").write_text("sample-guest\n")
    (root_src / "etc" / "fstab").write_text(
        f"UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\n"
    )
    boot_size = (os.path.getsize(guest.kernel) + os.path.getsize(guest.initrd)) * 2 + 16 * MIB
    boot_size = (boot_size + MIB - 1) // MIB * MIB
    root_size = 8 * MIB
    boot_img, root_img = workdir / "boot.ext4", workdir / "root.ext4"
    _ext4(boot_img, boot_src, boot_size, "boot", BOOT_UUID)
    _ext4(root_img, root_src, root_size, "root", ROOT_UUID)
    disk = workdir / "sample-guest.img"
    p1, p2 = 1 * MIB, 2 * MIB
    p3 = p2 + boot_size
    total = p3 + root_size + MIB
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as f:
        f.truncate(total)
    script = (
        "label: gpt\n"
        f"start={p1 // 512}, size={MIB // 512}, type=21686148-6449-6E6F-744E-656564454649\n"
        f"start={p2 // 512}, size={boot_size // 512}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
        f"start={p3 // 512}, size={root_size // 512}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
    )
    if shutil.which("sfdisk") is None:
        raise PvgrubError("sfdisk is not installed (Debian package fdisk; run `make setup`)")
    r = subprocess.run(
        ["sfdisk", "-q", str(disk)], input=script, text=True, capture_output=True, check=False
    )
    if r.returncode != 0:
        raise PvgrubError(f"sfdisk failed: {r.stderr.strip()}")
    with open(disk, "r+b") as out:
        for image, offset in ((boot_img, p2), (root_img, p3)):
            out.seek(offset)
            with open(image, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    for tmp in (boot_img, root_img):
        tmp.unlink()
    shutil.rmtree(boot_src)
    shutil.rmtree(root_src)
    return disk, guest
