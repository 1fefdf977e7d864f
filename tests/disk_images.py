"""Build guest disk images for the disk tests, without mounting anything.

Each tool's own no-mount option: ``mke2fs -d``, ``mkfs.xfs -p PROTOFILE``,
``mkfs.btrfs --rootdir``, ``mkfs.vfat`` + ``mcopy``, ``xorriso``; partition tables with
``sfdisk`` on sparse files and ``dd`` of each filesystem image to its
partition offset; qcow2 with ``qemu-img convert``.  LVM needs a loop device
(never mounted) for ``pvcreate``/``vgcreate``; logical volumes are restored
from metadata with ``vgcfgrestore`` because device-mapper is missing here,
and the LV's filesystem is written to the physical extents with ``dd``.

File contents are pseudo-random bytes from a seed, so a test recomputes the
expected SHA-256 instead of storing it.  `ImageFactory` builds each image
once per test session (`factory`); tests ask for images by name.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MIB = 1 << 20

DEBIAN_KVER = "6.1.0-13-amd64"
FEDORA_KVER = "6.5.6-300.fc39.x86_64"
EXT_UUID = "6a1c1e0e-7b39-4d5c-9c43-0a1b2c3d4e5f"


def payload(name: str, size: int) -> bytes:
    """Deterministic pseudo-random file contents for *name*."""
    return random.Random(name).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """A built image and what the tests expect to find in it."""

    path: Path
    #: path inside its filesystem -> contents, per volume GRUB name
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config: tuple[str, str] | None = None  # (volume grub name, path)
    notes: dict[str, object] = field(default_factory=dict)


def _run(*cmd: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.strip()}")
    return proc.stdout


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"image tools not installed: {', '.join(missing)} (make setup installs them)")


def _write_tree(root: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    for rel, data in files.items():
        target = root / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for rel, dest in (links or {}).items():
        target = root / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dest)


def _mknod(path: Path) -> bool:
    """A character device node (1,3 = /dev/null's numbers), if we may make one."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return False
    return True


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _dd(src: Path, dst: Path, offset: int) -> None:
    """Copy *src* into *dst* at byte *offset*, keeping holes."""
    _run(
        "dd",
        f"if={src}",
        f"of={dst}",
        "bs=1M",
        f"seek={offset}",
        "oflag=seek_bytes",
        "conv=notrunc,sparse",
        "status=none",
    )


def _sfdisk(disk: Path, script: str) -> None:
    proc = subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", os.fspath(disk)],
        input=textwrap.dedent(script),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sfdisk failed: {proc.stderr.strip()}")


def _partition_offsets(disk: Path) -> dict[int, tuple[int, int]]:
    """{number: (start byte, size bytes)} from sfdisk's JSON dump."""
    import json

    dump = json.loads(_run("sfdisk", "--json", disk))["partitiontable"]
    sector = int(dump.get("sectorsize", 512))
    result = {}
    for part in dump["partitions"]:
        number = int(part["node"].rsplit(disk.name, 1)[1].lstrip("p"))
        result[number] = (int(part["start"]) * sector, int(part["size"]) * sector)
    return result


# -- filesystems -----------------------------------------------------------
def make_ext4(
    img: Path,
    src: Path,
    size: int,
    label: str,
    *,
    fs: str = "ext4",
    block: int = 4096,
    fs_uuid: str | None = None,
) -> None:
    _need("mke2fs")
    seed = str(uuid.uuid5(uuid.NAMESPACE_OID, label))
    args = ["mke2fs", "-q", "-F", "-t", fs, "-b", str(block), "-L", label, "-d", os.fspath(src)]
    args += ["-U", fs_uuid or seed, "-E", f"hash_seed={seed}"]
    _sparse(img, size)
    _run(*args, img, env={"E2FSPROGS_FAKE_TIME": "1700000000"})


def _proto_entries(directory: Path, indent: str) -> list[str]:
    lines = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        st = entry.lstat()
        if stat.S_ISLNK(st.st_mode):
            lines.append(f"{indent}{entry.name} l--777 0 0 {os.readlink(entry)}")
        elif stat.S_ISDIR(st.st_mode):
            lines.append(f"{indent}{entry.name} d--755 0 0")
            lines += _proto_entries(entry, indent + " ")
            lines.append(f"{indent}$")
        elif stat.S_ISCHR(st.st_mode):
            dev = st.st_rdev
            lines.append(f"{indent}{entry.name} c--600 0 0 {os.major(dev)} {os.minor(dev)}")
        else:
            lines.append(f"{indent}{entry.name} ---644 0 0 {entry}")
    return lines


def make_xfs(img: Path, src: Path, size: int, label: str) -> None:
    _need("mkfs.xfs")
    proto = img.with_suffix(".proto")
    lines = ["/dev/null", "0 0", "d--755 0 0", *_proto_entries(src, " "), "$", ""]
    proto.write_text("\n".join(lines))
    _sparse(img, size)
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_OID, label)
    _run("mkfs.xfs", "-q", "-f", "-L", label, "-m", f"uuid={fs_uuid}", "-p", proto, img)


def make_btrfs(img: Path, src: Path, size: int, label: str) -> None:
    _need("mkfs.btrfs")
    _sparse(img, size)
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_OID, label)
    _run("mkfs.btrfs", "-q", "-f", "-L", label, "-U", str(fs_uuid), "--rootdir", src, img)


def make_fat(img: Path, files: dict[str, bytes], size: int, label: str, work: Path) -> None:
    _need("mkfs.vfat", "mcopy", "mmd")
    _sparse(img, size)
    _run("mkfs.vfat", "-F", "32", "-n", label, "-i", "1234abcd", img)
    made: set[str] = set()
    for rel, data in files.items():
        parts = rel.strip("/").split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in made:
                _run("mmd", "-i", img, "::/" + d)
                made.add(d)
        tmp = work / "fat-staging"
        tmp.write_bytes(data)
        _run("mcopy", "-i", img, tmp, "::/" + "/".join(parts))


def make_iso(img: Path, src: Path, label: str) -> None:
    _need("xorriso")
    _run(
        "xorriso",
        "-as",
        "mkisofs",
        "-quiet",
        "-R",
        "-J",
        "-V",
        label,
        "-o",
        img,
        src,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )


# -- the images the tests use --------------------------------------------------
DEBIAN_GRUB_CFG = f"""\
set default=0
set timeout=5
search --no-floppy --fs-uuid --set=root {EXT_UUID}
menuentry 'Debian GNU/Linux' {{
    linux /boot/vmlinuz-{DEBIAN_KVER} root=UUID={EXT_UUID} ro quiet
    initrd /boot/initrd.img-{DEBIAN_KVER}
}}
"""


def build_debian_gpt(work: Path) -> Image:
    """GPT: p1 BIOS boot (no fs), p2 ext4 root with /boot/grub/grub.cfg and traps."""
    _need("sfdisk")
    src = work / "debian-root"
    kernel = payload("debian-kernel", 3 * MIB + 123)
    initrd = payload("debian-initrd", 5 * MIB + 4567)
    files = {
        "/boot/grub/grub.cfg": DEBIAN_GRUB_CFG.encode(),
        f"/boot/vmlinuz-{DEBIAN_KVER}": kernel,
        f"/boot/initrd.img-{DEBIAN_KVER}": initrd,
        "/etc/hostname": b"debian\n",
        "/boot/empty": b"",
    }
    links = {
        "/vmlinuz": f"boot/vmlinuz-{DEBIAN_KVER}",
        "/initrd.img": f"/boot/initrd.img-{DEBIAN_KVER}",
        "/boot/loop-a": "loop-b",
        "/boot/loop-b": "loop-a",
        "/boot/self": "self",
        "/boot/escape": "../../etc/hostname",
        "/boot/inside": "../etc/hostname",
        "/boot/dangling": "no-such-file",
        "/boot/dir-link": "grub",
    }
    # A chain of 41 symlinks: one more than the hop limit.
    for i in range(41):
        links[f"/boot/chain{i}"] = f"chain{i + 1}"
    files["/boot/chain41"] = b"end of chain\n"
    _write_tree(src, files, links)
    has_dev = _mknod(src / "boot" / "evil-dev")
    fs_img = work / "debian-root.ext4"
    make_ext4(fs_img, src, 64 * MIB, "debroot", fs_uuid=EXT_UUID)

    disk = work / "debian-gpt.img"
    _sparse(disk, 80 * MIB)
    _sfdisk(
        disk,
        """\
        label: gpt
        start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios"
        start=4096, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
        """,
    )
    offsets = _partition_offsets(disk)
    _dd(fs_img, disk, offsets[2][0])
    files.update({"/vmlinuz": kernel, "/initrd.img": initrd})
    return Image(
        disk,
        files={"hd0,gpt2": files},
        config=("hd0,gpt2", "/boot/grub/grub.cfg"),
        notes={"device_node": has_dev, "fs_image": fs_img, "part_offset": offsets[2][0]},
    )


FEDORA_BLS = f"""\
title Fedora Linux ({FEDORA_KVER}) 39 (Server Edition)
version {FEDORA_KVER}
linux /vmlinuz-{FEDORA_KVER}
initrd /initramfs-{FEDORA_KVER}.img
options root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root
grub_users $grub_users
grub_arg --unrestricted
grub_class fedora
"""


def _lvm_pv(
    disk: Path, offset: int, size: int, vg: str, lv_fs: Path, work: Path
) -> dict[str, object]:
    """Make partition (offset, size) of *disk* an LVM PV with a 2-segment LV "root".

    Returns the LV layout, or raises RuntimeError if this machine cannot
    make loop devices.
    """
    _need("losetup", "pvcreate", "vgcreate", "vgcfgbackup", "vgcfgrestore")
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    loop = _run(
        "losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), disk
    ).strip()
    try:
        _run("pvcreate", "-q", "-ff", "-y", loop, env=env)
        _run("vgcreate", "-q", vg, loop, env=env)
        backup = work / f"{vg}.vg"
        _run("vgcfgbackup", "-q", "-f", backup, vg, env=env)
        text = backup.read_text()
        extent_sectors = int(text.split("extent_size = ", 1)[1].split()[0])
        pe_start = int(text.split("pe_start = ", 1)[1].split()[0])
        extent = extent_sectors * 512
        lv_size = lv_fs.stat().st_size
        first = (lv_size // extent) // 2
        rest = -(-lv_size // extent) - first
        # Segment 1: LV extents [0, first) at PV extents [rest+1, ...);
        # segment 2: LV extents [first, first+rest) at PV extents [0, rest).
        lv = f"""
        logical_volumes {{
            root {{
                id = "{_lvm_id()}"
                status = ["READ", "WRITE", "VISIBLE"]
                flags = []
                segment_count = 2
                segment1 {{
                    start_extent = 0
                    extent_count = {first}
                    type = "striped"
                    stripe_count = 1
                    stripes = [
                        "pv0", {rest + 1}
                    ]
                }}
                segment2 {{
                    start_extent = {first}
                    extent_count = {rest}
                    type = "striped"
                    stripe_count = 1
                    stripes = [
                        "pv0", 0
                    ]
                }}
            }}
        }}
        """
        end = text.rstrip().rfind("}")
        backup.write_text(text[:end] + lv + text[end:])
        _run("vgcfgrestore", "-q", "-f", backup, vg, env=env)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
    data_start = offset + pe_start * 512
    with open(lv_fs, "rb") as src, open(disk, "r+b") as dst:
        chunk1 = src.read(first * extent)
        dst.seek(data_start + (rest + 1) * extent)
        dst.write(chunk1)
        chunk2 = src.read()
        dst.seek(data_start)
        dst.write(chunk2)
    return {"vg": vg, "extent": extent, "segments": (first, rest)}


def _lvm_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    rnd = random.Random()
    raw = "".join(rnd.choice(alphabet) for _ in range(32))
    cuts = [6, 4, 4, 4, 4, 4, 6]
    out, at = [], 0
    for n in cuts:
        out.append(raw[at : at + n])
        at += n
    return "-".join(out)


def build_fedora_mbr(work: Path) -> Image:
    """MBR: p1 xfs /boot (active), p2 LVM PV (LV root: ext4, two segments),
    p3 extended with logical p5 (FAT)."""
    _need("sfdisk")
    boot_src = work / "fedora-boot"
    kernel = payload("fedora-kernel", 3 * MIB + 77)
    initrd = payload("fedora-initrd", 4 * MIB + 999)
    boot_files = {
        "/grub2/grub.cfg": b"set default=0\nload_env -f ($root)/grub2/grubenv\nblscfg\n",
        "/grub2/grubenv": b"# GRUB Environment Block\nsaved_entry=abc-"
        + FEDORA_KVER.encode()
        + b"\n"
        + b"#" * 900
        + b"\n",
        f"/loader/entries/abc-{FEDORA_KVER}.conf": FEDORA_BLS.encode(),
        f"/vmlinuz-{FEDORA_KVER}": kernel,
        f"/initramfs-{FEDORA_KVER}.img": initrd,
    }
    _write_tree(boot_src, boot_files, {"/grub2/grub.cfg.link": "grub.cfg"})
    has_dev = _mknod(boot_src / "evil-dev")
    boot_img = work / "fedora-boot.xfs"
    make_xfs(boot_img, boot_src, 300 * MIB, "fedboot")

    root_src = work / "fedora-root"
    root_files = {
        "/etc/fstab": b"/dev/mapper/fedora-root / ext4 defaults 1 1\n",
        "/etc/os-release": b"NAME=Fedora\n",
    }
    _write_tree(root_src, root_files)
    (root_src / "boot").mkdir()
    root_img = work / "fedora-root.ext4"
    make_ext4(root_img, root_src, 16 * MIB, "fedroot")

    fat_img = work / "fedora-logical.fat"
    fat_files = {"/hello.txt": b"hello from a logical partition\n"}
    make_fat(fat_img, fat_files, 40 * MIB, "LOGICAL", work)

    disk = work / "fedora-mbr.img"
    _sparse(disk, 420 * MIB)
    _sfdisk(
        disk,
        """\
        label: dos
        start=2048, size=614400, type=83, bootable
        start=616448, size=65536, type=8e
        start=681984, size=90112, type=5
        start=684032, size=81920, type=c
        """,
    )
    offsets = _partition_offsets(disk)
    _dd(boot_img, disk, offsets[1][0])
    _dd(fat_img, disk, offsets[5][0])
    notes: dict[str, object] = {"device_node": has_dev}
    files: dict[str, dict[str, bytes]] = {"hd0,msdos1": boot_files, "hd0,msdos5": fat_files}
    vg = f"pvgtest{uuid.uuid4().hex[:8]}"
    try:
        notes["lvm"] = _lvm_pv(disk, offsets[2][0], offsets[2][1], vg, root_img, work)
        files[f"lvm/{vg}-root"] = root_files
    except (RuntimeError, OSError) as exc:
        notes["lvm"] = None
        notes["lvm_error"] = str(exc)
    return Image(disk, files=files, config=("hd0,msdos1", "/grub2/grub.cfg"), notes=notes)


MENU_LST = f"""\
default 0
timeout 5
title Debian GNU/Linux, kernel {DEBIAN_KVER}
root (hd0)
kernel /boot/vmlinuz-{DEBIAN_KVER} root=/dev/xvda ro
initrd /boot/initrd.img-{DEBIAN_KVER}
"""


def build_btrfs_bare(work: Path) -> Image:
    src = work / "btrfs-root"
    files = {
        "/boot/grub/menu.lst": MENU_LST.encode(),
        f"/boot/vmlinuz-{DEBIAN_KVER}": payload("btrfs-kernel", 3 * MIB + 5),
        f"/boot/initrd.img-{DEBIAN_KVER}": payload("btrfs-initrd", 4 * MIB + 11),
        "/boot/small": b"inline data\n",
    }
    _write_tree(
        src,
        files,
        {
            "/boot/loop-a": "loop-b",
            "/boot/loop-b": "loop-a",
            "/vmlinuz": f"boot/vmlinuz-{DEBIAN_KVER}",
        },
    )
    has_dev = _mknod(src / "boot" / "evil-dev")
    img = work / "bare.btrfs"
    make_btrfs(img, src, 256 * MIB, "btrroot")
    files["/vmlinuz"] = files[f"/boot/vmlinuz-{DEBIAN_KVER}"]
    return Image(
        img,
        files={"hd0": files},
        config=("hd0", "/boot/grub/menu.lst"),
        notes={"device_node": has_dev},
    )


EXTLINUX = """\
DEFAULT linux
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img root=/dev/xvda1
"""


def build_fat_bare(work: Path) -> Image:
    files = {
        "/extlinux/extlinux.conf": EXTLINUX.encode(),
        "/vmlinuz": payload("fat-kernel", 2 * MIB + 3),
        f"/initrd.img-{DEBIAN_KVER}": payload("fat-initrd", 3 * MIB + 1),
        "/initrd.img": payload("fat-initrd2", 1 * MIB + 17),
    }
    img = work / "bare.fat"
    make_fat(img, files, 64 * MIB, "BOOTFAT", work)
    return Image(img, files={"hd0": files}, config=("hd0", "/extlinux/extlinux.conf"))


ISOLINUX = """\
DEFAULT live
LABEL live
  KERNEL /isolinux/vmlinuz
  APPEND initrd=/isolinux/initrd.img boot=live
"""


def build_iso(work: Path) -> Image:
    src = work / "iso-root"
    files = {
        "/isolinux/isolinux.cfg": ISOLINUX.encode(),
        "/isolinux/vmlinuz": payload("iso-kernel", 2 * MIB + 9),
        "/isolinux/initrd.img": payload("iso-initrd", 3 * MIB + 2),
        "/Mixed/CaseName.txt": b"case matters with Rock Ridge\n",
    }
    _write_tree(src, files, {"/isolinux/kernel-link": "vmlinuz"})
    img = work / "live.iso"
    make_iso(img, src, "PVGLIVE")
    return Image(img, files={"hd0": files}, config=("hd0", "/isolinux/isolinux.cfg"))


def build_hybrid_iso(work: Path, iso: Image) -> Image:
    """The ISO with an MBR in its system area: partition 1 covers it from 0."""
    img = work / "hybrid.iso"
    shutil.copyfile(iso.path, img)
    size = img.stat().st_size
    entry = (
        bytes([0x80, 0, 0, 0, 0x17, 0, 0, 0])
        + (0).to_bytes(4, "little")
        + (size // 512).to_bytes(4, "little")
    )
    with open(img, "r+b") as f:
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    return Image(img, files=iso.files, config=iso.config)


def build_qcow2(work: Path, raw: Image) -> Image:
    _need("qemu-img")
    img = work / "debian-gpt.qcow2"
    _run("qemu-img", "convert", "-m", "1", "-c", "-O", "qcow2", raw.path, img)
    return Image(img, files=raw.files, config=raw.config, notes=raw.notes)


class ImageFactory:
    """Builds each image on first use, once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Image] = {}

    def _get(self, name: str, build: Callable[[Path], Image]) -> Image:
        if name not in self._cache:
            work = self.root / name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            self._cache[name] = build(work)
        return self._cache[name]

    def debian_gpt(self) -> Image:
        return self._get("debian_gpt", build_debian_gpt)

    def fedora_mbr(self) -> Image:
        return self._get("fedora_mbr", build_fedora_mbr)

    def btrfs_bare(self) -> Image:
        return self._get("btrfs_bare", build_btrfs_bare)

    def fat_bare(self) -> Image:
        return self._get("fat_bare", build_fat_bare)

    def iso(self) -> Image:
        return self._get("iso", build_iso)

    def hybrid_iso(self) -> Image:
        return self._get("hybrid_iso", lambda w: build_hybrid_iso(w, self.iso()))

    def qcow2(self) -> Image:
        return self._get("qcow2", lambda w: build_qcow2(w, self.debian_gpt()))


_FACTORY: ImageFactory | None = None


def factory(tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    """The session's image factory (shared by every disk test module)."""
    global _FACTORY
    if _FACTORY is None:
        _FACTORY = ImageFactory(tmp_path_factory.mktemp("disk-images"))
    return _FACTORY


# -- byte sources for tests: in memory, traced, mutated ------------------------
class MemorySource:
    """A `ByteSource` over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def pread(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class MutatedSource:
    """An image file seen with some bytes changed and/or cut short.

    It is the independent witness for "no read past the end": it sits
    *below* `BoundedFile`, so any request reaching past its (possibly
    truncated) size is counted in `past_end`, whatever the layers above
    believe.  It also records the regions read (`regions`).
    """

    def __init__(
        self,
        path: Path,
        *,
        size: int | None = None,
        patches: dict[int, int] | None = None,
        record: bool = False,
    ) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        real = os.fstat(self._fd).st_size
        self._size = real if size is None else min(size, real)
        self.patches = dict(patches or {})
        self.past_end = 0
        self.regions: list[tuple[int, int]] | None = [] if record else None

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self._size:
            self.past_end += 1
            length = max(0, min(length, self._size - offset))
        if self.regions is not None:
            self.regions.append((offset, length))
        data = os.pread(self._fd, length, offset)
        if self.patches:
            buf = None
            end = offset + len(data)
            for at, value in self.patches.items():
                if offset <= at < end:
                    buf = buf if buf is not None else bytearray(data)
                    buf[at - offset] = value
            if buf is not None:
                data = bytes(buf)
        return data

    def close(self) -> None:
        os.close(self._fd)
