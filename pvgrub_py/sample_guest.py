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
    dep = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    names = [w.split()[-1] for w in dep.splitlines() if "Depends: linux-image-" in w]
    package = names[0] if names else "linux-image-amd64"
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True,
                           text=True, check=False)  # fmt: skip
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
