"""Where an ext2/3/4 file's bytes are: extent trees and block maps as runs.

A file's data is described in its inode's 60-byte ``i_block`` either by an
extent tree (inode flag ``EXT4_EXTENTS_FL``) or by the ext2/3 block map.
Both are turned into *runs*: ``(byte offset in the volume or None, length
in bytes)`` covering exactly the file's declared size, None being zeros (a
hole, an uninitialised extent, the unmapped tail of a file).  `RunStream`
reads those runs through the volume's `BoundedFile`, and
`pvgrub_py.disk.extents.map_file` hands the very same runs to whoever
copies the file from the image, so the two cannot disagree.

Facts from kernel.org "ext4 Data Structures and Algorithms":

* "The Contents of inode.i_block", Extent Tree: a 12-byte header
  (``eh_magic`` 0xF30A, ``eh_entries``, ``eh_max``, ``eh_depth``) then
  12-byte entries: index nodes hold ``ei_block`` (first logical block
  covered), ``ei_leaf_lo``, ``ei_leaf_hi``; leaves hold ``ee_block``,
  ``ee_len``, ``ee_start_hi``, ``ee_start_lo``.  A leaf ``ee_len`` above
  32768 is an uninitialised extent of ``ee_len - 32768`` blocks (read as
  zeros).  The tree is at most 5 levels deep; each node lists its
  entries in increasing logical order.
* Direct/Indirect Block Addressing: ``i_block[0..11]`` map the first 12
  blocks, ``i_block[12]``, ``[13]``, ``[14]`` point to a single, double
  and triple indirect block of 32-bit block numbers; a zero block number
  is a hole.

Bounds: every node's entry count is checked against the space it sits
in; logical blocks must strictly increase across the whole tree and each
child stays inside its index entry's range, so no node content is
walked twice at one level and a hostile tree cannot multiply the work;
non-root nodes may not be empty; a block map names each indirect block
once (as e2fsck requires: no block belongs to a file twice), so a few
hostile indirect blocks cannot stand for 2^30 pointers and the work is
at most the pointers actually stored on the disk; every block number is
checked against the filesystem's block count before it is read or
mapped; a file is at most `MAX_RUNS` runs, held once (`byte_runs`
converts the list in place).
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable

#: Deepest extent tree ("ext4 Data Structures and Algorithms": at most 5).
MAX_EXTENT_DEPTH = 5
EXTENT_MAGIC = 0xF30A
#: ``ee_len`` above this marks an uninitialised extent.
UNINIT_LEN = 32768
#: Logical block numbers are 32-bit.
LOGICAL_LIMIT = 1 << 32
#: Most runs (after merging neighbours) in one file: a 1 GiB file of 4 KiB
#: blocks would have to average one block per piece to need them.  It
#: bounds the memory a hostile map (no two pointers neighbours) makes us
#: hold: ~120 bytes a run, 34 MiB at the peak of opening such a file
#: (tracemalloc), where 2^20 runs took 259 MiB, more than the deprivileged
#: child's whole address space; the disk's time budget bounds the work.
MAX_RUNS = 1 << 18
#: Data blocks mapped by ``i_block[0..11]``.
DIRECT_BLOCKS = 12

_HEADER = struct.Struct("<HHHH")
_LEAF = struct.Struct("<IHHI")
_INDEX = struct.Struct("<IIH")

Run = tuple[int | None, int]
ReadBlock = Callable[[int], bytes]


class Ext4Corrupt(ValueError):
    """On-disk ext2/3/4 data that contradicts the format (one line)."""


class _Runs:
    """Runs in blocks, merged as they are appended."""

    __slots__ = ("blocks", "runs")

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.blocks = 0  # logical blocks covered so far

    def add(self, where: int | None, count: int) -> None:
        runs = self.runs
        self.blocks += count
        if runs:
            start, n = runs[-1]
            if start is None:
                if where is None:
                    runs[-1] = (None, n + count)
                    return
            elif where is not None and start + n == where:
                runs[-1] = (start, n + count)
                return
        if len(runs) >= MAX_RUNS:
            raise Ext4Corrupt(f"file in more than {MAX_RUNS} pieces")
        runs.append((where, count))


class _ExtentWalk:
    def __init__(self, read_block: ReadBlock, nblocks: int, blocks_count: int) -> None:
        self.read_block = read_block
        self.nblocks = nblocks
        self.blocks_count = blocks_count
        self.out = _Runs()
        #: First logical block the next leaf entry may claim.
        self.next = 0

    def node(self, data: bytes, depth: int | None, lo: int, hi: int, root: bool) -> bool:
        """Walk one node; True once the file's last block is mapped."""
        magic, entries, most, level = _HEADER.unpack_from(data, 0)
        if magic != EXTENT_MAGIC:
            raise Ext4Corrupt(f"extent header magic {magic:#06x}, not {EXTENT_MAGIC:#06x}")
        room = (len(data) - 12) // 12
        if entries > most or most > room:
            raise Ext4Corrupt(f"extent node claims {entries} of {most} entries in room for {room}")
        if level > MAX_EXTENT_DEPTH:
            raise Ext4Corrupt(f"extent tree of depth {level} (at most {MAX_EXTENT_DEPTH})")
        if depth is not None and level != depth:
            raise Ext4Corrupt(f"extent node at depth {level} where {depth} was expected")
        if entries == 0 and not root:
            raise Ext4Corrupt("empty extent node below the root")
        if level == 0:
            return self._leaf(data, entries, lo, hi)
        keys = [_INDEX.unpack_from(data, 12 + 12 * i) for i in range(entries)]
        for i, (first, leaf_lo, leaf_hi) in enumerate(keys):
            end = keys[i + 1][0] if i + 1 < entries else hi
            start = lo if i == 0 else first
            if not lo <= first < end <= hi:
                raise Ext4Corrupt(f"extent index entry for block {first} is out of order")
            if start >= self.nblocks:
                return True
            leaf = (leaf_hi << 32) | leaf_lo
            if leaf >= self.blocks_count:
                raise Ext4Corrupt(f"extent node at block {leaf}, past the last block")
            if self.node(self.read_block(leaf), level - 1, start, end, False):
                return True
        return False

    def _leaf(self, data: bytes, entries: int, lo: int, hi: int) -> bool:
        out = self.out
        for i in range(entries):
            first, length, start_hi, start_lo = _LEAF.unpack_from(data, 12 + 12 * i)
            zeros = length > UNINIT_LEN
            if zeros:
                length -= UNINIT_LEN
            if length == 0:
                raise Ext4Corrupt(f"extent of 0 blocks at block {first}")
            if first < max(lo, self.next) or first + length > hi:
                raise Ext4Corrupt(f"extent at block {first} overlaps or is out of order")
            where = (start_hi << 32) | start_lo
            if where + length > self.blocks_count:
                raise Ext4Corrupt(
                    f"extent of {length} blocks at block {where} ends past the last block"
                )
            if first >= self.nblocks:
                return True
            if first > out.blocks:
                out.add(None, first - out.blocks)
            take = min(length, self.nblocks - first)
            out.add(None if zeros else where, take)
            self.next = first + length
            if out.blocks >= self.nblocks:
                return True
        return False


def extent_runs(
    i_block: bytes, nblocks: int, read_block: ReadBlock, blocks_count: int
) -> list[Run]:
    """Runs (in blocks) of the first *nblocks* logical blocks of an extent-mapped file."""
    walk = _ExtentWalk(read_block, nblocks, blocks_count)
    if nblocks:
        walk.node(i_block, None, 0, LOGICAL_LIMIT, True)
    out = walk.out
    if out.blocks < nblocks:
        out.add(None, nblocks - out.blocks)
    return out.runs


def blockmap_runs(
    i_block: bytes, nblocks: int, read_block: ReadBlock, blocks_count: int, block_size: int
) -> list[Run]:
    """Runs (in blocks) of the first *nblocks* blocks of an ext2/3 block-mapped file."""
    per = block_size // 4
    if nblocks > DIRECT_BLOCKS + per + per**2 + per**3:
        raise Ext4Corrupt(f"{nblocks} blocks is more than a block map can address")
    words = struct.unpack_from("<15I", i_block, 0)
    out = _Runs()

    def data(where: int) -> None:
        if where == 0:
            out.add(None, 1)
        elif where >= blocks_count:
            raise Ext4Corrupt(f"block map points at block {where}, past the last block")
        else:
            out.add(where, 1)

    seen: set[int] = set()

    def indirect(where: int, level: int, count: int) -> None:
        # *count* blocks mapped through the level-*level* indirect block *where*.
        if where == 0:
            out.add(None, count)
            return
        if where >= blocks_count:
            raise Ext4Corrupt(f"indirect block {where} is past the last block")
        if where in seen:
            raise Ext4Corrupt(f"indirect block {where} is named twice in one block map")
        seen.add(where)
        span = per ** (level - 1)
        need = -(-count // span)
        pointers = struct.unpack_from(f"<{need}I", read_block(where), 0)
        if level == 1:
            for p in pointers:
                if p >= blocks_count:
                    raise Ext4Corrupt(f"block map points at block {p}, past the last block")
                out.add(p or None, 1)
            return
        for p in pointers:
            take = min(span, count)
            indirect(p, level - 1, take)
            count -= take

    for where in words[: min(nblocks, DIRECT_BLOCKS)]:
        data(where)
    left = nblocks - out.blocks
    for level in (1, 2, 3):
        if left <= 0:
            break
        take = min(left, per**level)
        indirect(words[DIRECT_BLOCKS + level - 1], level, take)
        left -= take
    return out.runs


def byte_runs(block_runs: list[Run], block_size: int, size: int) -> list[Run]:
    """*block_runs* in bytes, cut to exactly *size* bytes.

    The list is converted in place (and returned): a file of `MAX_RUNS`
    pieces is held once, not twice.
    """
    runs = block_runs
    left = size
    for i, (where, count) in enumerate(runs):
        if left <= 0:
            del runs[i:]
            break
        n = min(count * block_size, left)
        runs[i] = (None if where is None else where * block_size, n)
        left -= n
    if left > 0:
        runs.append((None, left))
    return runs


class RunStream:
    """A regular file's bytes: *runs* read through the volume's file *fh*.

    ``runs`` and ``fh`` are what `pvgrub_py.disk.extents.map_file` maps;
    `read` returns exactly those bytes (zeros for a None run).
    """

    __slots__ = ("_pos", "_starts", "fh", "runs", "size")

    def __init__(self, fh: object, runs: list[Run], size: int) -> None:
        self.fh = fh
        self.runs = runs
        self.size = size
        starts = array("Q")  # 8 bytes a run, not a list of ints
        at = 0
        for _where, n in runs:
            starts.append(at)
            at += n
        if at != size:
            raise Ext4Corrupt(f"runs of {at} bytes for a {size}-byte file")
        self._starts = starts
        self._pos = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self.size
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        end = self.size if n < 0 else min(self.size, pos + n)
        if pos >= end:
            return b""
        pread = self.fh.pread  # type: ignore[attr-defined]
        runs = self.runs
        i = bisect_right(self._starts, pos) - 1
        pieces: list[bytes] = []
        while pos < end:
            where, length = runs[i]
            start = self._starts[i]
            k = min(end, start + length) - pos
            pieces.append(bytes(k) if where is None else pread(where + pos - start, k))
            pos += k
            i += 1
        self._pos = pos
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
