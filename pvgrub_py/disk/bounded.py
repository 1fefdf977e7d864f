"""The only file object the readers see: it refuses to read past the end.

Dissect's readers trust the sizes and block numbers they find on disk.  On
a truncated image, or when an extent points beyond the end, a plain file
returns short reads and the readers turn those into runs of zeros: the
bytes "read" are not on the disk at all (measured on fuzzed ext4 images:
refusing such reads removed every case of zero-filled "file" bytes).  For
measured boot that is unacceptable, so every byte a reader gets comes through
`BoundedFile`:

* a read that does not lie wholly inside the window raises `InputError`
  and is counted in `ReadStats.refused`.  Even a read that only *ends*
  past the end is refused, not cut short: Dissect's streams concatenate
  the pieces of a multi-run read, so one short piece would silently
  shift the bytes of every later run (found by the truncation tests);
* a source that returns fewer bytes than asked is refused the same way;
* windows (partitions, logical volumes) nest: a window can never reach
  past its parent's end, whatever the partition table claims;
* a single read larger than `MAX_SINGLE_READ` is refused: a size field
  claiming gigabytes (an LVM metadata length, a directory block count)
  must not make a reader allocate that much in one go;
* each read first checks the disk's time `Budget`.

Underneath sits a `ByteSource`: the image file (a path or an already-open
descriptor, read with ``pread`` so that no shared file offset exists), or
another stream with a known size (a qcow2 virtual disk, an LVM logical
volume), itself wrapped in a `BoundedFile` so the same rules apply.
"""

from __future__ import annotations

import os
import stat

from pvgrub_py._lazy import lazy_attributes
from pvgrub_py.disk.budget import Budget
from pvgrub_py.disk.errors import disk_error
from pvgrub_py.record import record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.disk.byte_source import ByteSource as ByteSource
    from pvgrub_py.disk.byte_source import SeekableStream
else:
    # ByteSource: a `typing.Protocol`, run on first use, not by every boot.
    __getattr__ = lazy_attributes(__name__, {"ByteSource": "pvgrub_py.disk.byte_source"})

#: Largest single read served.  The boot path reads files in 1 MiB chunks
#: and metadata in blocks; nothing legitimate comes near this.
MAX_SINGLE_READ = 32 << 20


@record
class ReadStats:
    """Counters shared by every window of one disk (tests assert on them)."""

    reads: int = 0
    bytes_read: int = 0
    #: Reads refused: past the end of their window, oversized, or short.
    refused: int = 0


class FdSource:
    """A disk image as a file descriptor, read with ``os.pread``.

    The deprivileged child receives the disk as an open descriptor, so a
    path is optional.  The size is the regular file's size or, for a block
    device, the position of ``SEEK_END``.
    """

    def __init__(self, fd: int, *, owns_fd: bool = False) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            size = os.lseek(fd, 0, os.SEEK_END)
        else:
            raise ValueError("a disk must be a regular file or a block device")
        self._fd = fd
        self._size = size
        self._owns_fd = owns_fd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FdSource:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(fd, owns_fd=True)
        except BaseException:
            os.close(fd)
            raise

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        while length > 0:
            data = os.pread(self._fd, length, offset)
            if not data:
                break  # the file shrank under us; the caller sees a short read
            chunks.append(data)
            offset += len(data)
            length -= len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @property
    def fd(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._owns_fd and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StreamSource:
    """A seekable stream of known size (a qcow2 or LVM view) as a `ByteSource`."""

    def __init__(self, stream: SeekableStream, size: int) -> None:
        self._stream = stream
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        self._stream.seek(offset)
        data = self._stream.read(length)
        return bytes(data)


class BoundedFile:
    """A read-only, seekable file object over ``source[offset : offset + length]``.

    *name* is the error source for refused reads (``"disk.img: GPT
    partition 2"``).  Use `window` to make a sub-window (a partition).
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        name: str,
        offset: int = 0,
        length: int | None = None,
        budget: Budget | None = None,
        stats: ReadStats | None = None,
    ) -> None:
        if offset < 0 or offset > source.size:
            raise disk_error(name, f"starts at byte {offset}, past the image end ({source.size})")
        available = source.size - offset
        self._source = source
        self._base = offset
        #: Bytes this window can serve: never more than the source holds.
        self.size = available if length is None else max(0, min(length, available))
        #: What the partition table or LV metadata declared (may be larger).
        self.declared_size = self.size if length is None else length
        self.name = name
        self.budget = budget
        self.stats = stats if stats is not None else ReadStats()
        self._pos = 0
        self.closed = False

    # -- the file-object surface the readers use -------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self.size - self._pos)
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> BoundedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bounded access ---------------------------------------------------
    def pread(self, offset: int, length: int) -> bytes:
        """Exactly *length* bytes at *offset*, or `InputError`.

        A read that does not lie wholly inside the window is refused, and
        so is a source that comes back short (a file truncated while we
        read it, a gap in an LV mapping): a reader never sees fewer bytes
        than it asked for, so it can neither zero-fill nor splice the
        next run's bytes into the gap.
        """
        if self.budget is not None:
            self.budget.check()
        stats = self.stats
        stats.reads += 1
        if length <= 0:
            return b""
        if length > MAX_SINGLE_READ:
            stats.refused += 1
            raise disk_error(
                self.name, f"refusing a single read of {length} bytes (corrupt size field?)"
            )
        if offset < 0 or offset + length > self.size:
            stats.refused += 1
            claim = (
                ""
                if self.size == self.declared_size
                else f" (the volume claims {self.declared_size} bytes)"
            )
            raise disk_error(
                self.name,
                f"read of {length} bytes at byte {offset} runs past the end of the image "
                f"at byte {self.size}{claim}",
            )
        data = self._source.pread(self._base + offset, length)
        if len(data) != length:
            stats.refused += 1
            raise disk_error(
                self.name, f"short read: {len(data)} of {length} bytes at byte {offset}"
            )
        stats.bytes_read += length
        return data

    def direct(self) -> tuple[int, int] | None:
        """(image descriptor, image offset of byte 0) when this window lies
        directly on the image file; None for a qcow2 or LVM view."""
        source = self._source
        if isinstance(source, FdSource) and source.fd >= 0:
            return source.fd, self._base
        return None

    def window(self, offset: int, length: int | None, name: str) -> BoundedFile:
        """A child window (a partition) that never reaches past this one's end.

        It reads the same source directly (no double counting) and shares
        the budget and counters.  A declared *length* larger than what is
        left is kept as `declared_size` for the error message.
        """
        if offset < 0 or offset > self.size:
            raise disk_error(name, f"starts at byte {offset}, past the end ({self.size})")
        available = self.size - offset
        child = BoundedFile(
            self._source,
            name=name,
            offset=self._base + offset,
            length=available if length is None else min(length, available),
            budget=self.budget,
            stats=self.stats,
        )
        child.declared_size = available if length is None else length
        return child
