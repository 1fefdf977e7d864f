"""A file as byte ranges of the disk image, read without the reader.

Copying a 74 MB kernel and initrd through the Dissect reader costs a
Python-level copy per block run, and with ``--runas`` a second one per
frame through the pipe.  Most boot files are a handful of runs of whole
blocks on a plain partition, so the reader is asked only *where* the bytes
are (`map_file`), and whoever measures reads them from the image itself
(`copy_extents`): with ``--runas`` that is the parent, which reads, hashes
and writes the very same bytes, so what it boots is what it hashed, and
it never interprets them.

`map_file` answers only where the answer is exactly what the reader would
have returned, byte for byte; anywhere else it returns None and the file
is streamed through the reader as before:

* the reader's stream must be our ext reader's ``RunStream`` (ext2/3/4
  regular files, `pvgrub_py.disk.readers.ext4_runs`; not inline data) or
  Dissect's plain ``RunlistStream`` (XFS regular files; not Btrfs, FAT or
  ISO 9660), over a `BoundedFile` whose source is the image descriptor
  itself (not a qcow2 or LVM view);
* every run is a positive number of whole blocks, either sparse (zeros,
  as the stream returns) or lying wholly inside the volume's window;
* the runs cover the file's declared size (a short run list is the
  reader's "short read", which the stream reports).

An extent is ``(offset in the image or None for zeros, length)``; the
file's bytes are the extents' bytes in order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from pvgrub_py.disk.errors import disk_error
from pvgrub_py.named_tuple import NamedTuple

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.disk.filesystems import FileStream

#: Most extents in one map: far more than a real kernel or initrd has (an
#: ext4 extent covers up to 128 MiB; ext2/3 block maps break a contiguous
#: file every 256-1024 blocks), few enough that the measuring side holds
#: them in a few MiB.  A file with more is streamed.
MAX_EXTENTS = 1 << 16
CHUNK = 1 << 20

Extent = tuple[int | None, int]


class FileMap(NamedTuple):
    """Where the bytes of one file are: descriptor, extents, total size."""

    fd: int
    extents: list[Extent]
    size: int


def map_file(stream: FileStream) -> FileMap | None:
    """*stream*'s bytes as extents of the image, or None (stream it instead)."""
    if stream.tell() != 0:
        return None
    inner = stream.reader_stream
    size = stream.size
    own = sys.modules.get("pvgrub_py.disk.readers.ext4_runs")
    if own is not None and type(inner) is own.RunStream:
        return _map_byte_runs(inner.fh, inner.runs, size)
    module = sys.modules.get("dissect.util.stream")
    if module is None or type(inner) is not module.RunlistStream or inner.size != size:
        return None
    runs = _dissect_byte_runs(inner.runlist, inner.block_size, size)
    return None if runs is None else _map_byte_runs(inner._fh, runs, size)


def _dissect_byte_runs(runs: object, block: object, size: int) -> list[Extent] | None:
    """Dissect's run list (block numbers and counts; None for zeros) in
    bytes, cut at *size* as its stream cuts it; None where it is not plain."""
    # Dissect's numbers are int subclasses (XFS's block size is a cstruct
    # uint32): plain ints here, bools refused.
    if not isinstance(block, int) or isinstance(block, bool) or block <= 0:
        return None
    block = int(block)
    if not isinstance(runs, list):
        return None
    if len(runs) > MAX_EXTENTS:
        return None
    out: list[Extent] = []
    pos = 0
    for run in runs:
        if pos >= size:
            break
        if not isinstance(run, tuple) or len(run) != 2:
            return None
        start, count = run
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return None
        n = min(int(count) * block, size - pos)
        if start is None:
            out.append((None, n))
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            out.append((int(start) * block, n))
        else:
            return None  # the stream reports what is wrong with this run
        pos += n
    return out


def _map_byte_runs(fh: object, runs: object, size: int) -> FileMap | None:
    """The map of a stream reading *runs* (offset in the volume *fh* or None
    for zeros, length in bytes) in order: exactly what it reads, or None."""
    from pvgrub_py.disk.bounded import BoundedFile

    if not isinstance(fh, BoundedFile) or not isinstance(runs, list) or len(runs) > MAX_EXTENTS:
        return None
    direct = fh.direct()
    if direct is None:
        return None
    fd, base = direct
    extents: list[Extent] = []
    pos = 0
    for where, n in runs:
        if type(n) is not int or n <= 0 or pos + n > size:
            return None
        if where is not None and (type(where) is not int or where < 0 or where + n > fh.size):
            return None  # the stream reports what is wrong with this run
        _append(extents, None if where is None else base + where, n)
        pos += n
    if pos != size:
        return None
    return FileMap(fd, extents, size)


def _append(extents: list[Extent], where: int | None, n: int) -> None:
    if extents:
        last, length = extents[-1]
        if (last is None and where is None) or (
            last is not None and where is not None and last + length == where
        ):
            extents[-1] = (last, length + n)
            return
    extents.append((where, n))


def check_extents(extents: Sequence[Extent], size: int, image_size: int) -> str | None:
    """What is wrong with a map received from elsewhere, or None."""
    if len(extents) > MAX_EXTENTS:
        return f"{len(extents)} extents (at most {MAX_EXTENTS})"
    total = 0
    for where, n in extents:
        if n <= 0:
            return f"an extent of {n} bytes"
        if where is not None and (where < 0 or where + n > image_size):
            return f"{n} bytes at byte {where} lie outside the {image_size}-byte image"
        total += n
    if total != size:
        return f"extents of {total} bytes for a {size}-byte file"
    return None


def copy_extents(
    fd: int,
    extents: Sequence[Extent],
    sink: Callable[[bytes], object],
    *,
    source: str,
    check: Callable[[], object] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Feed the bytes of *extents* of the image *fd* to *sink*; their total.

    Each chunk is a fresh ``bytes`` read with ``pread`` (consumers may keep
    it); a short read (an image truncated meanwhile) is an error naming
    *source*.  *check* runs before each chunk (a time budget).
    """
    zeros = b""
    done = 0
    for where, n in extents:
        left = n
        while left:
            if check is not None:
                check()
            k = min(chunk, left)
            if where is None:
                if len(zeros) != k:
                    zeros = bytes(k)
                data = zeros
            else:
                data = os.pread(fd, k, where + n - left)
                if len(data) != k:
                    raise disk_error(
                        source, f"short read: {len(data)} of {k} bytes at image byte "
                        f"{where + n - left} (the image changed?)",
                    )  # fmt: skip
            sink(data)
            left -= k
            done += k
    return done
