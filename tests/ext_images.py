"""ext2/ext3/ext4 variants for the ext reader's tests, built without mounting.

Each variant is ``mke2fs -d`` of one source tree (`write_source`) with the
options that exercise one part of the format: revision 0, 1 KiB and 64 KiB blocks, ext2
and ext3 block maps (a sparse file reaching the triple-indirect block),
32-byte group descriptors, ``meta_bg`` with descriptors past the first meta
group, inline data, htree directories (``e2fsck -fD`` indexes every
directory of more than one block), and a 1 KiB-block ext4 whose files
``debugfs`` then punches into a depth-2 extent tree and extends with
uninitialised extents.

Each `Variant` says which oracle it is checked against: dissect.extfs
(``dissect``), or the source tree mke2fs was given (``source``) where
dissect.extfs cannot read the variant (it does not implement ``meta_bg``,
inline directories, or inline files past 60 bytes).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

MIB = 1 << 20

#: Regular files of the source tree: sizes around the 60-byte i_block, the
#: 1 KiB and 4 KiB block sizes, and past the 12 direct blocks.
SIZES = (0, 1, 30, 59, 60, 61, 100, 1023, 1024, 1025, 4095, 4096, 4097, 13 * 1024 + 7, 300_000)
#: Symlink targets: fast (< 60 bytes, in i_block) and slow (a data block).
LINKS = {
    "fast": "f/30",
    "fast59": "x" * 59,
    "slow60": "y" * 60,
    "slow200": "../" + "z" * 197,
    "abs": "/f/100",
}


class Variant(NamedTuple):
    name: str
    fs: str
    options: tuple[str, ...]
    size: int
    oracle: str  # "dissect" or "source"
    htree: bool = False
    punch: bool = False


VARIANTS = (
    Variant("ext2-1k", "ext2", ("-b", "1024"), 32 * MIB, "dissect"),
    # Revision 0: 128-byte inodes, no feature at all (no file type in entries).
    Variant("ext2-rev0", "ext2", ("-r", "0"), 32 * MIB, "dissect"),
    Variant("ext3-4k", "ext3", ("-b", "4096"), 32 * MIB, "dissect"),
    Variant("ext4-4k-htree", "ext4", ("-b", "4096"), 32 * MIB, "dissect", htree=True),
    Variant("ext4-1k-htree", "ext4", ("-b", "1024"), 32 * MIB, "dissect", htree=True),
    Variant("ext4-32bit", "ext4", ("-O", "^64bit"), 32 * MIB, "dissect"),
    Variant("ext4-64k", "ext4", ("-b", "65536"), 256 * MIB, "dissect"),
    Variant("ext4-1k-punched", "ext4", ("-b", "1024"), 32 * MIB, "dissect", punch=True),
    Variant("ext4-inline", "ext4", ("-O", "inline_data", "-I", "512"), 32 * MIB, "source"),
    Variant(
        "ext4-meta-bg",
        "ext4",
        ("-b", "1024", "-g", "1024", "-i", "65536", "-O", "64bit,meta_bg,^resize_inode"),
        32 * MIB,
        "source",
    ),
)


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"image tools not installed: {', '.join(missing)}")


def _run(*cmd: str | os.PathLike[str], ok: tuple[int, ...] = (0,)) -> None:
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
    )
    if proc.returncode not in ok:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def write_source(root: Path) -> None:
    """The tree every variant is made of."""
    rnd = random.Random("ext-variants")
    (root / "f").mkdir(parents=True)
    for n in SIZES:
        (root / "f" / str(n)).write_bytes(rnd.randbytes(n))
    with open(root / "f" / "sparse", "wb") as f:  # past the triple-indirect block at 1 KiB
        f.write(rnd.randbytes(5000))
        f.seek(70 * MIB)
        f.write(rnd.randbytes(5000))
    with open(root / "f" / "hole-start", "wb") as f:
        f.seek(3 * 4096)
        f.write(rnd.randbytes(100))
    (root / "f" / "deep").write_bytes(rnd.randbytes(2 * MIB))
    many = root / "many"
    many.mkdir()
    for i in range(400):
        (many / f"entry-with-a-rather-long-name-{i:04d}").write_bytes(b"%d\n" % i)
    small = root / "small-dir"
    small.mkdir()
    for name in ("a", "bb", "ccc"):
        (small / name).write_bytes(name.encode())
    (root / "empty-dir").mkdir()
    nest = root / "n1" / "n2" / "n3"
    nest.mkdir(parents=True)
    (nest / "leaf").write_bytes(b"leaf\n")
    (root / os.fsdecode(b"name-\xff-not-utf8")).write_bytes(b"bytes\n")
    (root / "links").mkdir()
    for name, target in LINKS.items():
        (root / "links" / name).symlink_to(target)
    os.mkfifo(root / "fifo")
    with contextlib.suppress(PermissionError):  # a device node needs root
        os.mknod(root / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))


def _punch_script(path: Path) -> None:
    # Every other block of f/deep (2048 blocks of 1 KiB: 1024 extents, a
    # depth-2 tree), every third of f/300000; uninitialised extents in the
    # hole of f/sparse and past the end of f/300000.
    cmds = [f"punch /f/deep {b} {b}" for b in range(1, 2048, 2)]
    cmds += [f"punch /f/300000 {b} {b}" for b in range(3, 290, 3)]
    cmds += ["fallocate /f/sparse 100 199", "fallocate /f/300000 400 420"]
    path.write_text("\n".join(cmds) + "\n")


def build(variant: Variant, work: Path, src: Path) -> Path:
    _need("mke2fs", "debugfs", "e2fsck")
    img = work / f"{variant.name}.img"
    with open(img, "wb") as f:
        f.truncate(variant.size)
    _run("mke2fs", "-q", "-F", "-t", variant.fs, *variant.options, "-L", variant.name[:16],
         "-U", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "-d", src, img)  # fmt: skip
    if variant.htree:
        _run("e2fsck", "-fyD", img, ok=(0, 1))
    if variant.punch:
        script = work / f"{variant.name}.debugfs"
        _punch_script(script)
        _run("debugfs", "-w", "-f", script, img)
    return img


class ExtImages:
    """Builds the source tree and each variant once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self._built: dict[str, Path] = {}

    def get(self, variant: Variant) -> Path:
        if not self.src.exists():
            write_source(self.src)
        if variant.name not in self._built:
            self._built[variant.name] = build(variant, self.root, self.src)
        return self._built[variant.name]


_IMAGES: ExtImages | None = None


def images(tmp_path_factory: pytest.TempPathFactory) -> ExtImages:
    global _IMAGES
    if _IMAGES is None:
        _IMAGES = ExtImages(tmp_path_factory.mktemp("ext-variants"))
    return _IMAGES


def copy(src: Path, dst: Path) -> Path:
    """A sparse copy of an image, to patch."""
    _run("cp", "--sparse=always", src, dst)
    return dst


def debugfs(img: Path, command: str, *, write: bool = False) -> str:
    """``debugfs -R command`` (the oracle's view of the image); its output."""
    proc = subprocess.run(["debugfs", *(["-w"] if write else []), "-R", command, img],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return proc.stdout


def free_blocks(img: Path, n: int) -> list[int]:
    """*n* blocks the filesystem does not use (debugfs ``ffb``)."""
    out = debugfs(img, f"ffb {n}").split(":", 1)[1].split()
    assert len(out) == n
    return [int(b) for b in out]


def write_block(img: Path, block: int, block_size: int, data: bytes) -> None:
    assert len(data) == block_size
    fd = os.open(img, os.O_WRONLY)
    try:
        os.pwrite(fd, data, block * block_size)
    finally:
        os.close(fd)
