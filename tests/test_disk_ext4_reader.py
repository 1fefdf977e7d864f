"""Our ext2/3/4 reader (`pvgrub_py.disk.readers.ext4`) against independent oracles.

Differential: every ext image the tests build (the `ext_images` variants
and the Debian image of `disk_images`) is walked with our adapter and with
an oracle, and names, kinds, sizes, symlink targets and file bytes must
agree.  The oracle is dissect.extfs, or, for the variants dissect.extfs
cannot read (``meta_bg``, inline directories), the very tree mke2fs was
given.  Then the same files through the whole disk layer: the extent map
(`map_file`) must copy exactly the bytes the stream returns.

Fuzz: seeded byte overwrites in the regions the reader reads, and
truncations, of several variants; walking the whole tree may only succeed
or fail with one `InputError` line, in bounded time, never reading past
the (cut) end; and where a corrupt file still maps, the map's bytes are
the stream's bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import disk_images
import ext_images
import pytest
from disk_images import MutatedSource
from ext_images import VARIANTS, Variant

from pvgrub_py.disk import Budget, BudgetExceeded, open_disk
from pvgrub_py.disk.bounded import BoundedFile, FdSource
from pvgrub_py.disk.extents import copy_extents, map_file
from pvgrub_py.disk.filesystems import Filesystem
from pvgrub_py.disk.readers.ext4 import Ext4Adapter
from pvgrub_py.errors import InputError

Walk = dict[str, tuple[Any, ...]]


def _variant(name: str) -> Variant:
    return next(v for v in VARIANTS if v.name == name)


@pytest.fixture(scope="module")
def ext(tmp_path_factory: pytest.TempPathFactory) -> ext_images.ExtImages:
    return ext_images.images(tmp_path_factory)


def _mode_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "file of unknown type"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the three walks ----------------------------------------------------------------
def walk_ours(ad: Ext4Adapter, node: Any = None, path: str = "", out: Walk | None = None) -> Walk:
    out = {} if out is None else out
    for name, child in ad.children(ad.root if node is None else node):
        p = f"{path}/{name}"
        kind = ad.kind(child).value
        rec: tuple[Any, ...] = (kind, ad.size(child))
        if kind == "symbolic link":
            rec += (ad.read_link(child),)
        elif kind == "regular file":
            rec += (_digest(ad.open(child).read()),)
        out[p] = rec
        if kind == "directory":
            walk_ours(ad, child, p, out)
    return out


def walk_dissect(node: Any, path: str = "", out: Walk | None = None) -> Walk:
    out = {} if out is None else out
    for child in node.iterdir():
        if child.filename in (".", ".."):
            continue
        p = f"{path}/{child.filename}"
        kind = _mode_kind(int(child.inode.i_mode))
        rec: tuple[Any, ...] = (kind, int(child.size))
        if kind == "symbolic link":
            rec += (child.link.encode("utf-8", "surrogateescape"),)
        elif kind == "regular file":
            rec += (_digest(child.open().read()),)
        out[p] = rec
        if kind == "directory":
            walk_dissect(child, p, out)
    return out


def walk_source(root: Path, path: str = "", out: Walk | None = None) -> Walk:
    """The tree mke2fs was given (directory sizes are the filesystem's own)."""
    out = {} if out is None else out
    for entry in sorted(os.listdir(os.fsencode(root))):
        name = os.fsdecode(entry)
        p = f"{path}/{name}"
        st = os.lstat(root / name)
        kind = _mode_kind(st.st_mode)
        rec: tuple[Any, ...] = (kind, None if kind == "directory" else st.st_size)
        if kind == "symbolic link":
            rec += (os.readlink(os.fsencode(root / name)),)
        elif kind == "regular file":
            rec += (_digest((root / name).read_bytes()),)
        elif kind in ("character device", "FIFO"):
            rec = (kind, 0)
        out[p] = rec
        if kind == "directory":
            walk_source(root / name, p, out)
    return out


def _adapter(img: Path) -> Ext4Adapter:
    return Ext4Adapter(BoundedFile(FdSource.open(img), name=img.name), "ext4")


def _dissect_walk(img: Path) -> tuple[Walk, str, str]:
    from dissect.extfs import ExtFS  # type: ignore[import-untyped]

    with open(img, "rb") as f:
        fs = ExtFS(f)
        return walk_dissect(fs.root), str(fs.uuid), fs.volume_name


# -- differential ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_reader_agrees_with_the_oracle(ext: ext_images.ExtImages, variant: Variant) -> None:
    img = ext.get(variant)
    ad = _adapter(img)
    ours = walk_ours(ad)
    assert len(ours) > 400
    if variant.htree:  # e2fsck -D indexed the large directory (debugfs says so)
        out = subprocess.run(["debugfs", "-R", "htree /many", img], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        assert "Root node dump" in out
    if variant.oracle == "dissect":
        theirs, uuid, label = _dissect_walk(img)
        assert (ad.uuid, ad.label) == (uuid, label or None)
    else:
        theirs = walk_source(ext.src)
        ours.pop("/lost+found")
        for path, rec in ours.items():
            if rec[0] == "directory":
                ours[path] = (rec[0], None)
    assert ours.keys() == theirs.keys()
    for path in theirs:
        assert ours[path] == theirs[path], path


def test_debian_image_agrees_with_dissect(tmp_path_factory: pytest.TempPathFactory) -> None:
    img = disk_images.factory(tmp_path_factory).debian_gpt()
    fs_img = Path(str(img.notes["fs_image"]))
    theirs, uuid, label = _dissect_walk(fs_img)
    ad = _adapter(fs_img)
    assert walk_ours(ad) == theirs
    assert (ad.uuid, ad.label) == (uuid, label) == (disk_images.EXT_UUID, "debroot")


def _files(fs: Filesystem, path: str = "/") -> list[str]:
    out = []
    for name in fs.list_dir(path):
        p = path.rstrip("/") + "/" + name
        info = fs.stat(p) if not name.startswith("links") else None
        if info is not None and info.is_dir:
            out += _files(fs, p)
        elif info is not None and info.is_file:
            out.append(p)
    return out


def _streamed_and_mapped(fs: Filesystem, path: str) -> tuple[bytes, bytes | None]:
    with fs.open(path) as stream:
        fmap = map_file(stream)
        parts = []
        while chunk := stream.read(1 << 20):
            parts.append(chunk)
    mapped = None
    if fmap is not None:
        got: list[bytes] = []
        copy_extents(fmap.fd, fmap.extents, got.append, source=path)
        mapped = b"".join(got)
    return b"".join(parts), mapped


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_file_maps_to_exactly_its_streamed_bytes(
    ext: ext_images.ExtImages, variant: Variant
) -> None:
    img = ext.get(variant)
    oracle = _dissect_walk(img)[0] if variant.oracle == "dissect" else walk_source(ext.src)
    with open_disk(str(img)) as disk:
        fs = disk.volumes[0].filesystem()
        paths = [p for p in _files(fs) if not p.startswith("/many/")] + ["/many/" + min(
            fs.list_dir("/many"))]  # fmt: skip
        mapped_big = 0
        for path in paths:
            streamed, mapped = _streamed_and_mapped(fs, path)
            assert _digest(streamed) == oracle[path][2], path
            if mapped is not None:
                assert mapped == streamed, path
            if len(streamed) > 4096:
                assert mapped is not None, path
                mapped_big += 1
        assert mapped_big >= 5


# -- refusals ------------------------------------------------------------------------------
def _one_line_error(img: Path, path: str = "/f/100") -> str:
    with (
        pytest.raises(InputError) as info,
        open_disk(str(img)) as disk,
        disk.volumes[0].filesystem().open(path) as stream,
    ):
        stream.read(1 << 20)
    text = str(info.value)
    assert "\n" not in text
    return text


def _patched_copy(src: Path, dst: Path, at: int, data: bytes) -> Path:
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    fd = os.open(dst, os.O_WRONLY)
    try:
        os.pwrite(fd, data, at)
    finally:
        os.close(fd)
    return dst


@pytest.mark.parametrize(
    ("bit", "name"), [(0x1, "compression"), (0x8, "journal_dev"), (0x1000, "dirdata")]
)
def test_unsupported_incompat_features_are_one_line(
    ext: ext_images.ExtImages, tmp_path: Path, bit: int, name: str
) -> None:
    img = ext.get(_variant("ext4-4k-htree"))
    raw = img.read_bytes()[1024 + 0x60 : 1024 + 0x64]
    (incompat,) = struct.unpack("<I", raw)
    bad = _patched_copy(img, tmp_path / "bad.img", 1024 + 0x60, struct.pack("<I", incompat | bit))
    with pytest.raises(InputError, match=f"ext feature {name} is not supported"):
        open_disk(str(bad)).volumes[0].filesystem()


def test_bigalloc_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    img = tmp_path / "bigalloc.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "bigalloc", "-d", src, img],
                   check=True, capture_output=True)  # fmt: skip
    with pytest.raises(InputError, match="bigalloc is not supported"):
        open_disk(str(img)).volumes[0].filesystem()


def test_an_encrypted_inode_is_refused(ext: ext_images.ExtImages, tmp_path: Path) -> None:
    img = tmp_path / "enc.img"
    subprocess.run(["cp", "--sparse=always", ext.get(_variant("ext4-4k-htree")), img], check=True)
    subprocess.run(["debugfs", "-w", "-R", "set_inode_field /f/100 flags 0x80800", img],
                   check=True, capture_output=True)  # fmt: skip
    assert "is encrypted" in _one_line_error(img)


def test_an_extent_index_pointing_at_itself_is_one_line(
    ext: ext_images.ExtImages, tmp_path: Path
) -> None:
    """The depth-2 tree of /f/deep: its first index block made to point at itself."""
    img = ext.get(_variant("ext4-1k-punched"))
    ad = _adapter(img)
    node = ad._inode(next(c for n, c in ad.children(ad.root) if n == "f"))
    deep = next(c for n, c in ad.children(node.ino) if n == "deep")
    i_block = ad._inode(deep).i_block
    magic, entries, _most, depth = struct.unpack_from("<HHHH", i_block)
    assert (magic, depth) == (0xF30A, 2) and entries >= 1
    _first, leaf_lo, leaf_hi = struct.unpack_from("<IIH", i_block, 12)
    index = (leaf_hi << 32) | leaf_lo
    block = ad.block_size
    # The depth-1 node's first entry now names the node itself.
    bad = _patched_copy(img, tmp_path / "loop.img", index * block + 12 + 4,
                        struct.pack("<IH", index & 0xFFFFFFFF, index >> 32))  # fmt: skip
    assert "extent node at depth 1 where 0 was expected" in _one_line_error(bad, "/f/deep")


def test_a_directory_entry_running_past_its_block_is_one_line(
    ext: ext_images.ExtImages, tmp_path: Path
) -> None:
    img = ext.get(_variant("ext2-1k"))
    ad = _adapter(img)
    small = next(c for n, c in ad.children(ad.root) if n == "small-dir")
    (run,) = ad._runs(ad._inode(small))
    assert run[0] is not None
    # The first entry (".") claims 2 KiB of a 1 KiB block.
    bad = _patched_copy(img, tmp_path / "dirent.img", run[0] + 4, struct.pack("<H", 2048))
    with (
        pytest.raises(InputError, match="entry at byte 0 has length 2048"),
        open_disk(str(bad)) as disk,
    ):
        disk.volumes[0].filesystem().list_dir("/small-dir")


def _debugfs_copy(src: Path, dst: Path, *commands: str) -> Path:
    if src != dst:
        subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    for command in commands:
        subprocess.run(["debugfs", "-w", "-R", command, dst], check=True, capture_output=True)
    return dst


# i_block words of an extent-mapped file: 0 magic|entries<<16, 1 max|depth<<16,
# then the first entry: 3 ee_block, 4 ee_len|start_hi<<16, 5 ee_start_lo.
@pytest.mark.parametrize(
    ("variant", "path", "command", "problem"),
    [
        ("ext4-4k-htree", "/f/4097", "sif /f/4097 block[1] 0x60004", "extent tree of depth 6"),
        ("ext4-4k-htree", "/f/4097", "sif /f/4097 block[0] 0x5f30a", "claims 5 of 4 entries"),
        ("ext4-4k-htree", "/f/4097", "sif /f/4097 block[0] 0x1f30b", "extent header magic 0xf30b"),
        ("ext4-4k-htree", "/f/4097", "sif /f/4097 block[5] 0xfffffff0", "ends past the last block"),
        ("ext4-4k-htree", "/f/4097", "sif /f/4097 size 0x7fffffffffff", "past the last extent"),
        ("ext2-1k", "/f/300000", "sif /f/300000 block[3] 0xfffffff0", "past the last block"),
        ("ext2-1k", "/f/300000", "sif /f/300000 block[IND] 0xfffffff0", "indirect block"),
        ("ext2-1k", "/f/300000", "sif /f/300000 size 0x7fffffffffff", "more than a block map"),
    ],
)
def test_crafted_file_maps_are_one_line(
    ext: ext_images.ExtImages, tmp_path: Path, variant: str, path: str, command: str,
    problem: str,
) -> None:  # fmt: skip
    img = ext.get(next(v for v in VARIANTS if v.name == variant))
    bad = _debugfs_copy(img, tmp_path / "bad.img", command)
    assert problem in _one_line_error(bad, path)


def test_an_inline_directory_continues_in_system_data(tmp_path: Path) -> None:
    """The kernel moves entries that do not fit i_block into ``system.data``;
    e2fsprogs writes none, so one is made with debugfs, which then is the oracle."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a").write_bytes(b"hi\n")
    (src / "t").write_bytes(b"target\n")
    img = tmp_path / "inline.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "inline_data", "-I", "512",
                    "-d", src, img], check=True, capture_output=True)  # fmt: skip
    ad = _adapter(img)
    target = dict(ad.children(ad.root))["t"]
    value = tmp_path / "value"
    value.write_bytes(struct.pack("<IHBB", target, 16, 5, 1) + b"extra\0\0\0")
    _debugfs_copy(img, img, f"ea_set -f {value} /d system.data", "sif /d size 76")
    listing = subprocess.run(["debugfs", "-R", "ls /d", img], capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    theirs = sorted(n for n in listing if n.isalpha())
    ad = _adapter(img)
    d = dict(ad.children(ad.root))["d"]
    assert sorted(name for name, _ in ad.children(d)) == theirs == ["a", "extra"]
    with open_disk(str(img)) as disk, disk.volumes[0].filesystem().open("/d/extra") as f:
        assert f.read(100) == b"target\n"


def test_a_whole_64k_block_entry_is_read(tmp_path: Path) -> None:
    """An empty 64 KiB directory block holds one entry of 65536 bytes, whose
    16-bit ``rec_len`` is written 65535; debugfs (the oracle) lists past it."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a").write_bytes(b"a\n")
    img = tmp_path / "64k.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "65536", "-O", "^metadata_csum",
                    "-d", src, img], check=True, capture_output=True)  # fmt: skip
    _debugfs_copy(img, img, "expand_dir /d")
    listing = subprocess.run(["debugfs", "-R", "ls /d", img], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert "(65535)" in listing  # the encoded whole-block entry is there
    ad = _adapter(img)
    d = dict(ad.children(ad.root))["d"]
    assert ad.size(d) == 2 * 65536
    assert [name for name, _ in ad.children(d)] == ["a"]


# -- fuzz ---------------------------------------------------------------------------------
FUZZ_VARIANTS = ("ext2-1k", "ext4-1k-punched", "ext4-inline", "ext4-meta-bg", "ext4-4k-htree")
FUZZ_N = int(os.environ.get("PVGRUB_EXT4_FUZZ_N", "60"))
#: Largest file read (a corrupt size can claim terabytes of holes).
FUZZ_MAX_FILE = 100 << 20
#: Entries of each directory looked at (every lookup scans the directory).
FUZZ_ENTRIES = 25
#: Deepest directory walked (a corrupt entry can make a directory its own descendant).
FUZZ_DEPTH = 6


def _walk_fs(
    fs: Filesystem, maps: bool, max_file: int = FUZZ_MAX_FILE, stats: dict[str, int] | None = None
) -> int:
    """List, stat and read everything (symlinks followed); the files read.
    *stats* counts the files whose map was compared with their stream."""
    count = 0
    todo = ["/"]
    while todo:
        path = todo.pop()
        for name in fs.list_dir(path)[:FUZZ_ENTRIES]:
            p = path.rstrip("/") + "/" + name
            try:
                info = fs.stat(p)
            except InputError:
                continue
            if info is None:
                continue
            if info.is_dir and not p.startswith("/links") and p.count("/") <= FUZZ_DEPTH:
                todo.append(p)
            elif info.is_file and info.size <= max_file:
                try:
                    streamed, mapped = _streamed_and_mapped(fs, p)
                except InputError:
                    continue
                if maps and mapped is not None:
                    assert mapped == streamed, p
                    if stats is not None:
                        stats["mapped"] = stats.get("mapped", 0) + 1
                count += 1
    return count


def _mutations(img: Path, regions: list[tuple[int, int]], n: int, seed: str) -> list[Any]:
    rnd = random.Random(seed)
    meta = [r for r in regions if r[1] <= 65536]
    end = max(o + n for o, n in regions)
    out: list[Any] = []
    for _ in range(n):
        if rnd.random() < 0.15:
            out.append(("cut", rnd.randrange(1024, end)))
            continue
        patches = {}
        for _ in range(rnd.choice((1, 1, 2, 4, 8))):
            off, length = rnd.choice(meta)
            at = off + rnd.randrange(length)
            patches[at] = rnd.choice((0, 0xFF, rnd.randrange(256), 1 << rnd.randrange(8)))
        out.append(("patch", patches))
    return out


@pytest.mark.parametrize("name", FUZZ_VARIANTS)
def test_fuzzed_images_fail_in_one_line_and_in_bounds(ext: ext_images.ExtImages, name: str) -> None:
    variant = next(v for v in VARIANTS if v.name == name)
    img = ext.get(variant)
    probe = MutatedSource(img, record=True)
    with open_disk(probe, name=img.name) as disk:
        assert _walk_fs(disk.volumes[0].filesystem(), maps=False) > 40
    regions = sorted(set(probe.regions or []))
    probe.close()
    outcomes = {"ok": 0, "input": 0}
    for kind, arg in _mutations(img, regions, FUZZ_N, name):
        src = MutatedSource(img, size=arg if kind == "cut" else None,
                            patches=arg if kind == "patch" else None)  # fmt: skip
        try:
            with open_disk(src, name="fuzz.img", budget=Budget(5)) as disk:
                for vol in disk.volumes:
                    if vol.has_filesystem:
                        _walk_fs(vol.filesystem(), maps=False)
            outcomes["ok"] += 1
        except InputError as exc:
            assert "\n" not in str(exc)
            assert not isinstance(exc, BudgetExceeded), (kind, arg, str(exc))
            outcomes["input"] += 1
        finally:
            src.close()
        assert src.past_end == 0, (kind, arg)
    print(name, outcomes)
    assert outcomes["input"] > 0 and outcomes["ok"] > 0


@pytest.mark.parametrize("name", ("ext2-1k", "ext4-1k-punched"))
def test_fuzzed_files_that_still_map_map_to_their_streamed_bytes(
    ext: ext_images.ExtImages, tmp_path: Path, name: str
) -> None:
    """On real (copied, patched) image files, so that `map_file` maps."""
    variant = next(v for v in VARIANTS if v.name == name)
    img = ext.get(variant)
    probe = MutatedSource(img, record=True)
    with open_disk(probe, name=img.name) as disk:
        _walk_fs(disk.volumes[0].filesystem(), maps=False)
    regions = sorted(set(probe.regions or []))
    probe.close()
    muts = [m for m in _mutations(img, regions, FUZZ_N // 3, "map-" + name) if m[0] == "patch"]
    for _kind, patches in muts:
        bad = tmp_path / "m.img"
        subprocess.run(["cp", "--sparse=always", img, bad], check=True)
        fd = os.open(bad, os.O_WRONLY)
        for at, value in patches.items():
            os.pwrite(fd, bytes([value]), at)
        os.close(fd)
        try:
            with open_disk(str(bad), budget=Budget(5)) as disk:
                _walk_fs(disk.volumes[0].filesystem(), maps=True)
        except InputError as exc:
            assert "\n" not in str(exc)


# -- the run builders on hand-made trees --------------------------------------------------
def _node(depth: int, entries: list[bytes], room: int = 4) -> bytes:
    head = struct.pack("<HHHHI", 0xF30A, len(entries), room, depth, 0)
    return (head + b"".join(entries)).ljust(12 + 12 * room, b"\0")


def _leaf(first: int, length: int, start: int) -> bytes:
    return struct.pack("<IHHI", first, length, start >> 32, start & 0xFFFFFFFF)


def _index(first: int, block: int) -> bytes:
    return struct.pack("<IIHH", first, block & 0xFFFFFFFF, block >> 32, 0)


def test_extent_runs_by_hand() -> None:
    from pvgrub_py.disk.readers.ext4_runs import extent_runs

    leaf_a = _node(0, [_leaf(0, 2, 100), _leaf(2, 3, 102), _leaf(10, 32768 + 4, 200)], 84)
    leaf_b = _node(0, [_leaf(20, 5, 300)], 84)
    blocks = {7: leaf_a, 8: leaf_b}
    root = _node(1, [_index(0, 7), _index(20, 8)])
    # 0-4 merge into one run at 100; 5-9 a hole; 10-13 uninitialised; 14-19 a
    # hole; 20-24 at 300; the 30-block file ends in a hole.
    assert extent_runs(root, 30, blocks.__getitem__, 1000) == [
        (100, 5), (None, 15), (300, 5), (None, 5),
    ]  # fmt: skip
    assert extent_runs(root, 3, blocks.__getitem__, 1000) == [(100, 3)]


@pytest.mark.parametrize(
    ("root", "blocks", "problem"),
    [
        # Two index entries naming the same leaf: its extents would repeat.
        (
            _node(1, [_index(0, 7), _index(5, 7)]),
            {7: _node(0, [_leaf(0, 5, 100)], 84)},
            "overlaps or is out of order",
        ),
        (_node(1, [_index(0, 7)]), {7: _node(0, [], 84)}, "empty extent node"),
        (_node(1, [_index(5, 7), _index(5, 8)]), {}, "out of order"),
        (_node(0, [_leaf(4, 2, 100), _leaf(5, 2, 200)]), {}, "overlaps or is out of order"),
        (_node(0, [_leaf(0, 0, 100)]), {}, "extent of 0 blocks"),
        (_node(1, [_index(0, 7)]), {7: _node(1, [_index(0, 7)], 84)}, "at depth 1 where 0"),
        (_node(1, [_index(0, 5000)]), {}, "past the last block"),
    ],
)
def test_extent_runs_refuse_bad_trees(root: bytes, blocks: dict[int, bytes], problem: str) -> None:
    from pvgrub_py.disk.readers.ext4_runs import Ext4Corrupt, extent_runs

    with pytest.raises(Ext4Corrupt, match=problem):
        extent_runs(root, 100, blocks.__getitem__, 1000)


def test_blockmap_runs_by_hand() -> None:
    from pvgrub_py.disk.readers.ext4_runs import blockmap_runs

    # 1 KiB blocks: 256 pointers per indirect block.  Direct blocks 50-61
    # except a hole at 3; the single indirect block (900) maps 62, 63 then
    # holes; no double indirect block (a 65536-block hole).
    words = [50, 51, 52, 0, *range(54, 62), 900, 0, 0]
    ind = struct.pack("<256I", 62, 63, *([0] * 254))
    got = blockmap_runs(struct.pack("<15I", *words), 12 + 256 + 10, {900: ind}.__getitem__,
                        1000, 1024)  # fmt: skip
    assert got == [(50, 3), (None, 1), (54, 10), (None, 254 + 10)]


def test_a_file_in_too_many_pieces_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pvgrub_py.disk.readers import ext4_runs

    monkeypatch.setattr(ext4_runs, "MAX_RUNS", 100)
    ind = struct.pack("<256I", *range(1, 512, 2))  # never two neighbours
    with pytest.raises(ext4_runs.Ext4Corrupt, match="more than 100 pieces"):
        ext4_runs.blockmap_runs(struct.pack("<15I", *([0] * 12), 900, 0, 0), 12 + 256,
                                {900: ind}.__getitem__, 1000, 1024)  # fmt: skip


# -- hostile block maps and directory entries (crafted with debugfs and block writes) ------
def _ext3_4k_file(ext: ext_images.ExtImages, tmp_path: Path) -> tuple[Path, int]:
    """A copy of the 4 KiB-block ext3 variant to craft /f/300000's block map in; block size."""
    img = ext_images.copy(ext.get(_variant("ext3-4k")), tmp_path / "crafted.img")
    return img, 4096


def _pointers(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def test_an_indirect_block_named_twice_is_refused_quickly(
    ext: ext_images.ExtImages, tmp_path: Path
) -> None:
    """A three-block map whose triple-indirect block names one double-indirect
    block 1024 times, which names one indirect block 1024 times: 2^30 data
    pointers from 12 KiB of metadata.  A block map names each indirect block
    once (e2fsck reports any block claimed twice), so the second use is refused
    at once instead of walking 2^30 pointers until the time budget ends."""
    img, bs = _ext3_4k_file(ext, tmp_path)
    a, b, c = ext_images.free_blocks(img, 3)
    per = bs // 4
    ext_images.write_block(img, a, bs, _pointers(list(range(1000, 1000 + per))))
    ext_images.write_block(img, b, bs, _pointers([a] * per))
    ext_images.write_block(img, c, bs, _pointers([b] * per))
    size = (12 + per + per**2 + per**3) * bs
    for field, value in (("block[IND]", 0), ("block[DIND]", 0), ("block[TIND]", c),
                         ("size", size)):  # fmt: skip
        ext_images.debugfs(img, f"sif /f/300000 {field} {value}", write=True)
    started = time.process_time()
    with (
        pytest.raises(InputError) as info,
        open_disk(str(img), budget=Budget(3)) as disk,
    ):
        disk.volumes[0].filesystem().open("/f/300000")
    assert not isinstance(info.value, BudgetExceeded), str(info.value)
    assert f"indirect block {a} is named twice" in str(info.value)
    assert time.process_time() - started < 2


def test_the_most_fragmented_file_is_held_in_little_memory(
    ext: ext_images.ExtImages, tmp_path: Path
) -> None:
    """A file in just fewer pieces than the reader accepts (every data block
    apart from its neighbours, through distinct indirect blocks) opens with
    its map held in a few tens of MiB: the deprivileged child has 256 MiB of
    address space in all.  The bytes at sampled blocks are where debugfs
    ``bmap`` says they are."""
    import tracemalloc

    from pvgrub_py.disk.readers import ext4_runs

    img, bs = _ext3_4k_file(ext, tmp_path)
    per = bs // 4
    n = ext4_runs.MAX_RUNS // per - 1  # indirect blocks under the double-indirect one
    dind, *inds = ext_images.free_blocks(img, n + 1)
    scattered = _pointers(list(range(1, 2 * per, 2)))  # no two neighbours: a piece each
    for ind in inds:
        ext_images.write_block(img, ind, bs, scattered)
    ext_images.write_block(img, dind, bs, _pointers(inds + [0] * (per - n)))
    size = (12 + per + n * per) * bs
    for field, value in (("block[IND]", 0), ("block[DIND]", dind), ("size", size)):
        ext_images.debugfs(img, f"sif /f/300000 {field} {value}", write=True)
    ad = _adapter(img)
    f = dict(ad.children(ad.root))["f"]
    node = dict(ad.children(f))["300000"]
    tracemalloc.start()
    try:
        stream = ad.open(node)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"{peak >> 20} MiB for the map of {n * per} pieces"
    raw = img.read_bytes()
    for logical in (12 + per, 12 + per + 1, 12 + per + 5 * per + 7, 12 + per + n * per - 1):
        (physical,) = map(int, ext_images.debugfs(img, f"bmap /f/300000 {logical}").split())
        stream.seek(logical * bs)
        assert stream.read(bs) == raw[physical * bs : (physical + 1) * bs], logical


def test_a_name_length_is_one_byte_even_without_the_filetype_feature(
    ext: ext_images.ExtImages, tmp_path: Path
) -> None:
    """Revision 0 has no ``filetype`` feature; the byte after ``name_len`` is
    then not part of the name length for e2fsprogs (``ext2fs_dirent_name_len``),
    Linux or GRUB, and debugfs (the oracle) lists the names it finds that way."""
    img = ext_images.copy(ext.get(_variant("ext2-rev0")), tmp_path / "rev0.img")
    ad = _adapter(img)
    small = dict(ad.children(ad.root))["small-dir"]
    ((where, _n),) = ad._runs(ad._inode(small))
    assert where is not None
    block = img.read_bytes()[where : where + ad.block_size]
    pos = 0
    fd = os.open(img, os.O_WRONLY)
    try:
        while pos < len(block):  # a non-zero high byte in every entry
            os.pwrite(fd, b"\x01", where + pos + 7)
            pos += struct.unpack_from("<H", block, pos + 4)[0]
    finally:
        os.close(fd)
    listing = ext_images.debugfs(img, "ls -l /small-dir").split()
    theirs = sorted(n for n in listing if n in ("a", "bb", "ccc"))
    ad = _adapter(img)
    small = dict(ad.children(ad.root))["small-dir"]
    assert sorted(name for name, _ in ad.children(small)) == theirs == ["a", "bb", "ccc"]


# -- structure-aware fuzz of the reader alone ---------------------------------------------
# Where the fields are comes from debugfs (``imap``, ``ex``, ``stat``, ``blocks``) and from
# the kernel.org "ext4 Data Structures and Algorithms" offsets, never from the reader.
FIELD_FUZZ_VARIANTS = ("ext2-1k", "ext2-rev0", "ext3-4k", "ext4-1k-punched", "ext4-4k-htree",
                       "ext4-inline", "ext4-meta-bg", "ext4-32bit", "ext4-64k")  # fmt: skip
FIELD_FUZZ_N = int(os.environ.get("PVGRUB_EXT4_FIELD_FUZZ_N", "120"))
#: CPU seconds one mutated image may take (listing, stat, reading and mapping everything).
FIELD_FUZZ_CPU = 2.0
FIELD_FUZZ_MAX_FILE = 8 << 20
FUZZ_INODES = ("/", "/f", "/f/300000", "/f/sparse", "/f/deep", "/f/4097", "/f/100", "/f/30",
               "/f/hole-start", "/many", "/small-dir", "/links", "/links/slow200", "/links/fast",
               "/n1/n2/n3/leaf", "/empty-dir")  # fmt: skip
#: Superblock fields (offset, width) from "Super Block".
SB_FIELDS = ((0x0, 4), (0x4, 4), (0x14, 4), (0x18, 4), (0x1C, 4), (0x20, 4), (0x28, 4),
             (0x38, 2), (0x4C, 4), (0x58, 2), (0x5C, 4), (0x60, 4), (0x64, 4), (0xFE, 2),
             (0x104, 4), (0x150, 4), (0x24C, 4), (0x250, 4))  # fmt: skip


def _pread(img: Path, at: int, n: int) -> bytes:
    with open(img, "rb") as f:
        f.seek(at)
        return f.read(n).ljust(n, b"\0")


def _dirent_fields(data: bytes, at: int) -> list[tuple[int, int]]:
    """inode, rec_len, name_len, file_type of each entry of one directory block."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        out += [(at + pos, 4), (at + pos + 4, 2), (at + pos + 6, 1), (at + pos + 7, 1)]
        (rec_len,) = struct.unpack_from("<H", data, pos + 4)
        if rec_len < 8:
            break
        pos += rec_len
    return out


def _fuzz_fields(img: Path) -> tuple[list[tuple[int, int]], int]:
    """(offset, width) of the fields a boot reads, and the block count."""
    sb = _pread(img, 1024, 1024)
    first_data, log_block = struct.unpack_from("<II", sb, 0x14)
    bs = 1024 << log_block
    (blocks,) = struct.unpack_from("<I", sb, 0x4)
    (incompat,) = struct.unpack_from("<I", sb, 0x60)
    desc = struct.unpack_from("<H", sb, 0xFE)[0] if incompat & 0x80 else 32
    (inode_size,) = struct.unpack_from("<H", sb, 0x58)
    inode_size = inode_size if struct.unpack_from("<I", sb, 0x4C)[0] else 128
    fields = [(1024 + off, w) for off, w in SB_FIELDS]
    gdt = (first_data + 1) * bs
    for g in (0, 1):
        fields += [(gdt + g * desc + 0x8, 4)] + ([(gdt + g * desc + 0x28, 4)] if desc >= 64 else [])
    rnd = random.Random(img.name)
    for path in FUZZ_INODES:
        imap = ext_images.debugfs(img, f"imap {path}").split()
        if "located" not in imap:
            continue
        located = imap.index("located")  # "located at block B, offset 0xO"
        at = int(imap[located + 3].rstrip(",")) * bs + int(imap[located + 5], 16)
        # i_mode, i_size_lo, i_flags, i_size_high, the 15 words of i_block
        fields += [(at, 2), (at + 4, 4), (at + 0x20, 4), (at + 0x6C, 4)]
        fields += [(at + 0x28 + 4 * k, 4) for k in range(15)]
        if inode_size > 128:  # i_extra_isize and the in-inode attributes
            fields += [(at + 0x80, 2)] + [(at + rnd.randrange(0x84, inode_size) & ~3, 4)
                                          for _ in range(6)]  # fmt: skip
        stat_out = ext_images.debugfs(img, f"stat {path}")
        for kind in ("(IND):", "(DIND):", "(TIND):"):
            for word in stat_out.split(kind)[1:]:
                b = int(word.split(",")[0].split()[0])
                fields += [(b * bs, 4)] + [(b * bs + 4 * rnd.randrange(bs // 4), 4)
                                           for _ in range(4)]  # fmt: skip
        for line in ext_images.debugfs(img, f"ex {path}").splitlines()[1:]:
            cols = line.replace("/", " ").split()
            if len(cols) >= 8 and cols[0] != cols[1]:  # an index entry: its child node
                node = int(cols[7]) * bs
                fields += [(node, 2), (node + 2, 2), (node + 4, 2), (node + 6, 2)]
                for e in range(3):
                    e_at = node + 12 + 12 * e
                    fields += [(e_at, 4), (e_at + 4, 2), (e_at + 6, 2), (e_at + 8, 4)]
        if path in ("/", "/f", "/many", "/small-dir"):
            for b in map(int, ext_images.debugfs(img, f"blocks {path}").split()[:2]):
                fields += _dirent_fields(_pread(img, b * bs, bs), b * bs)[:40]
    return fields, blocks


def _boundary_value(rnd: random.Random, width: int, orig: int, blocks: int) -> int:
    top = (1 << (8 * width)) - 1
    values = (0, 1, 2, 3, 4, 6, 7, 12, 0x7F, 0x80, 0xFF, 0x100, 0xF30A, 0x7FFF, 0x8000, 0x8001,
              0xFFFF, 0x10000, top, top - 1, top >> 1, (top >> 1) + 1, orig + 1, orig - 1,
              orig * 2, orig ^ (1 << rnd.randrange(8 * width)), blocks, blocks - 1, blocks + 1,
              rnd.getrandbits(8 * width))  # fmt: skip
    return rnd.choice(values) & top


class _CountingSource(FdSource):
    """The image file, counting reads past its end (the independent witness)."""

    past_end = 0

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            self.past_end += 1
        return super().pread(offset, length)


#: What a reader failure may be caused by: the reader's own refusals and size limits
#: (anything else, an IndexError or a struct.error, is a bug even though the boundary
#: reports it in one line too).
ALLOWED_CAUSES = ("Ext4Corrupt", "UnsupportedFeature")
ALLOWED_OVERFLOWS = (
    "directory claims",
    "symlink target of",
    "directory has more than",
    "more than",
)


def _field_fuzz_one(path: Path, stats: dict[str, int]) -> float:
    """Walk one mutated image, counting outcomes in *stats*; its CPU seconds."""
    from pvgrub_py.disk.filesystems import open_filesystem

    src = _CountingSource(os.open(path, os.O_RDONLY), owns_fd=True)
    started = time.process_time()
    try:
        fh = BoundedFile(src, name="fuzz.img", budget=Budget(10))
        try:
            fs = open_filesystem(fh, "ext4", source="fuzz.img", budget=fh.budget)
            _walk_fs(fs, maps=True, max_file=FIELD_FUZZ_MAX_FILE, stats=stats)
            stats["ok"] += 1
        except InputError as exc:
            assert "\n" not in str(exc)
            assert not isinstance(exc, BudgetExceeded), str(exc)
            cause = exc.__cause__
            if cause is not None and not isinstance(cause, InputError):
                name = type(cause).__name__
                assert name in ALLOWED_CAUSES or (
                    isinstance(cause, OverflowError) and str(cause).startswith(ALLOWED_OVERFLOWS)
                ), f"{name}: {cause}"
            stats["input"] += 1
        assert src.past_end == 0
        return time.process_time() - started
    finally:
        src.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", FIELD_FUZZ_VARIANTS)
def test_field_fuzz_of_the_reader(ext: ext_images.ExtImages, tmp_path: Path, name: str) -> None:
    """Boundary values in the superblock, group descriptors, inodes, extent
    nodes, indirect blocks and directory entries (and some truncations):
    every image is read in bounded CPU time, fails only with the reader's
    own one-line errors, never reads past the image, and every file that
    maps maps to exactly its streamed bytes."""
    img = ext.get(_variant(name))
    fields, blocks = _fuzz_fields(img)
    assert len(fields) > 100
    rnd = random.Random(f"field-fuzz-{name}")
    work = ext_images.copy(img, tmp_path / "w.img")
    size = work.stat().st_size
    stats = {"ok": 0, "input": 0, "mapped": 0}
    for i in range(FIELD_FUZZ_N):
        cut = rnd.random() < 0.08
        patches: dict[int, bytes] = {}
        if cut:
            os.truncate(work, max(2048, rnd.choice(fields)[0] + rnd.randrange(-64, 64)))
        else:
            for _ in range(rnd.choice((1, 1, 1, 2, 3))):
                at, width = rnd.choice(fields)
                orig = int.from_bytes(_pread(img, at, width), "little")
                patches[at] = _boundary_value(rnd, width, orig, blocks).to_bytes(width, "little")
        fd = os.open(work, os.O_RDWR)
        saved = {at: os.pread(fd, len(v), at) for at, v in patches.items()}
        for at, v in patches.items():
            os.pwrite(fd, v, at)
        try:
            cpu = _field_fuzz_one(work, stats)
            assert cpu < FIELD_FUZZ_CPU, f"{cpu:.1f} s of CPU"
        except AssertionError as exc:
            raise AssertionError(f"mutation {i} (cut={cut}, patches={patches}): {exc}") from exc
        finally:
            for at, v in saved.items():
                os.pwrite(fd, v, at)
            os.close(fd)
            if cut:
                ext_images.copy(img, work)
                assert work.stat().st_size == size
    print(name, stats)
    assert stats["input"] > 0 and stats["ok"] > 0 and stats["mapped"] > 0
