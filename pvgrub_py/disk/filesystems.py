"""One read-only view of every supported filesystem, with GRUB's path rules.

`open_filesystem` imports only the reader that the superblock sniff
selected (each Dissect module costs ~0.2 s to import) and wraps it in a
`Filesystem`, which is the only thing the rest of pvgrub-py sees:

* ``open(path)`` -> a `FileStream` of a **regular file's** bytes and the
  size the filesystem declares.  Device nodes, FIFOs and sockets are
  refused: a boot entry naming ``/dev/sda`` in the guest must not make
  dom0 read anything but the guest's own file data.
* ``list_dir``, ``stat``, ``exists``/``is_dir``/``is_file``, ``uuid``,
  ``label``.

Path resolution is done here once for every format, the way GRUB resolves
a path inside one filesystem (``grub-core/kern/fshelp.c`` behaviour):
components are looked up from the filesystem root; ``..`` pops the
directory stack *lexically* (the on-disk ``..`` entries of a corrupt image
are never trusted), and a ``..`` that would climb above the root is
refused rather than silently clamped; symlinks are followed with a limit
of 40 hops (Linux's ``MAXSYMLINKS``) and a visited-set that reports a loop
as such; an absolute symlink target restarts at this filesystem's root.

Every call into a reader runs inside `reader_boundary` (corrupt-data
exceptions become `InputError`) and `cpu_deadline` (the disk's time
budget also stops loops that do no I/O).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.budget import Budget, cpu_deadline
from pvgrub_py.disk.errors import disk_error, reader_boundary
from pvgrub_py.disk.readers.base import FileKind, ReaderAdapter
from pvgrub_py.named_tuple import NamedTuple

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, TypeVar

    from pvgrub_py.disk.readers.base import Node

    T = TypeVar("T")

#: Symlinks followed in one lookup (Linux MAXSYMLINKS / ELOOP).
MAX_SYMLINK_HOPS = 40
#: Entries scanned in one directory.
MAX_DIR_ENTRIES = 100_000
#: Components in one path, after symlink expansion.
MAX_PATH_COMPONENTS = 4096


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class FileInfo(NamedTuple):
    """What a path is: its kind and declared size, and where it resolved to."""

    kind: FileKind
    size: int
    path: str

    @property
    def is_dir(self) -> bool:
        return self.kind is FileKind.DIRECTORY

    @property
    def is_file(self) -> bool:
        return self.kind is FileKind.REGULAR


class Filesystem:
    """A read-only filesystem on one volume; see the module docstring."""

    def __init__(self, adapter: ReaderAdapter, *, source: str, budget: Budget | None) -> None:
        self._adapter = adapter
        #: Error source prefix: ``"disk.img: GPT partition 2"``.
        self.source = source
        self.budget = budget
        self._extra: tuple[type[BaseException], ...] = getattr(adapter, "extra_errors", ())

    # -- identity ----------------------------------------------------------
    @property
    def fs_type(self) -> str:
        return self._adapter.fs_type

    @property
    def uuid(self) -> str | None:
        return self._adapter.uuid

    @property
    def label(self) -> str | None:
        return self._adapter.label

    # -- guarded calls -----------------------------------------------------
    @contextmanager
    def _guard(self, path: str, doing: str) -> Iterator[None]:
        with cpu_deadline(self.budget), reader_boundary(self._src(path), doing, self._extra):
            yield

    def _call(self, path: str, doing: str, fn: Callable[[], T]) -> T:
        with self._guard(path, doing):
            return fn()

    def _src(self, path: str) -> str:
        return f"{self.source}: {path}" if path else self.source

    # -- resolution --------------------------------------------------------
    def _resolve(self, path: str, *, follow_final: bool = True) -> tuple[Node, str] | None:
        """(node, canonical path) of *path*, None if a component is missing."""
        ad = self._adapter
        parts: deque[str] = deque(_split(path))
        stack: list[tuple[str, Node]] = [
            ("", self._call(path, "opening the root directory", lambda: ad.root))
        ]
        hops = 0
        seen_links: set[tuple[str, tuple[str, ...]]] = set()
        while parts:
            if len(parts) > MAX_PATH_COMPONENTS:
                raise disk_error(self._src(path), "path has too many components")
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) == 1:
                    raise disk_error(self._src(path), "'..' climbs above the filesystem root")
                stack.pop()
                continue
            here = _join(stack)
            cur = stack[-1][1]
            cur_kind = self._call(path, f"reading the inode of {here}", partial(ad.kind, cur))
            if cur_kind is not FileKind.DIRECTORY:
                raise disk_error(self._src(path), f"{here} is a {cur_kind.value}, not a directory")
            child = self._call(
                path,
                f"looking up {name!r} in {here}",
                partial(ad.lookup, cur, name, MAX_DIR_ENTRIES),
            )
            if child is None:
                return None
            link_path = (here.rstrip("/") + "/" + name) if here != "/" else "/" + name
            kind = self._call(path, f"reading the inode of {link_path}", partial(ad.kind, child))
            if kind is FileKind.SYMLINK and (parts or follow_final):
                state = (link_path, tuple(parts))
                if state in seen_links:
                    raise disk_error(self._src(path), f"symbolic link loop at {link_path}")
                seen_links.add(state)
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise disk_error(
                        self._src(path), f"more than {MAX_SYMLINK_HOPS} levels of symbolic links"
                    )
                raw = self._call(
                    path, f"reading the symlink {link_path}", partial(ad.read_link, child)
                )
                if not raw or b"\0" in raw:
                    raise disk_error(self._src(path), f"symlink {link_path} has an invalid target")
                target = raw.decode("utf-8", "surrogateescape")
                if target.startswith("/"):
                    del stack[1:]
                parts.extendleft(reversed(_split(target)))
                continue
            stack.append((name, child))
        return stack[-1][1], _join(stack)

    def _info(self, path: str, node: Node, canonical: str) -> FileInfo:
        ad = self._adapter
        kind = self._call(path, "reading the inode", lambda: ad.kind(node))
        size = self._call(path, "reading the inode", lambda: ad.size(node))
        if size < 0:
            raise disk_error(self._src(path), f"negative size {size}")
        return FileInfo(kind, size, canonical)

    def stat(self, path: str) -> FileInfo | None:
        """Kind and size of *path* (symlinks followed), None if absent."""
        found = self._resolve(path)
        if found is None:
            return None
        return self._info(path, *found)

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_dir(self, path: str) -> bool:
        info = self.stat(path)
        return info is not None and info.is_dir

    def is_file(self, path: str) -> bool:
        info = self.stat(path)
        return info is not None and info.is_file

    def list_dir(self, path: str) -> list[str]:
        """Sorted names in the directory *path* (no ``.``/``..``)."""
        found = self._resolve(path)
        if found is None:
            raise disk_error(self._src(path), "no such directory")
        node, canonical = found
        info = self._info(path, node, canonical)
        if not info.is_dir:
            raise disk_error(self._src(path), f"is a {info.kind.value}, not a directory")
        ad = self._adapter

        def collect() -> list[str]:
            names: list[str] = []
            for name, _child in ad.children(node):
                if len(names) >= MAX_DIR_ENTRIES:
                    raise OverflowError(f"more than {MAX_DIR_ENTRIES} entries")
                names.append(name)
            return names

        return sorted(self._call(path, "listing the directory", collect))

    def open(self, path: str) -> FileStream:
        """The regular file at *path*, as a bounded stream of its declared size."""
        found = self._resolve(path)
        if found is None:
            raise disk_error(self._src(path), "no such file")
        node, canonical = found
        info = self._info(path, node, canonical)
        if info.kind is not FileKind.REGULAR:
            raise disk_error(self._src(path), f"is a {info.kind.value}, not a regular file")
        stream = self._call(path, "opening the file", lambda: self._adapter.open(node))
        return FileStream(self, path, stream, info.size)


class FileStream:
    """The bytes of one regular file, never more than its declared size.

    `read` may return fewer bytes than asked only at the end of the file;
    a reader that comes up short earlier (a truncated image) is reported by
    `pvgrub_py.disk.extract`, which compares the total with `size`.
    """

    def __init__(self, fs: Filesystem, path: str, stream: Any, size: int) -> None:
        self.fs = fs
        self.path = path
        self.size = size
        self.source = fs._src(path)
        self._stream = stream
        self._pos = 0

    def read(self, n: int) -> bytes:
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""

        def do_read() -> bytes:
            self._stream.seek(self._pos)
            return bytes(self._stream.read(n))

        data = self.fs._call(self.path, f"reading at byte {self._pos}", do_read)
        if len(data) > n:
            raise disk_error(self.source, "the reader returned more bytes than asked for")
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    @property
    def reader_stream(self) -> Any:
        """The reader's own stream (`extents.map_file` looks at its runs)."""
        return self._stream

    def close(self) -> None:
        self._stream = None

    def __enter__(self) -> FileStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _join(stack: list[tuple[str, Node]]) -> str:
    return "/" + "/".join(name for name, _ in stack[1:])


def open_filesystem(
    fh: BoundedFile, fs_kind: str, *, source: str, budget: Budget | None
) -> Filesystem:
    """Open the filesystem *fs_kind* (from `pvgrub_py.disk.sniff`) on *fh*.

    The import happens here, inside the branch, so only the one reader the
    volume needs is loaded.
    """
    extra: tuple[type[BaseException], ...] = ()
    with cpu_deadline(budget), reader_boundary(source, f"opening the {fs_kind} filesystem"):
        adapter: ReaderAdapter
        if fs_kind in ("ext2", "ext3", "ext4"):
            from pvgrub_py.disk.readers.ext4 import Ext4Adapter

            adapter = Ext4Adapter(fh, fs_kind)
        elif fs_kind == "xfs":
            from pvgrub_py.disk.readers.xfs import XfsAdapter

            adapter = XfsAdapter(fh)
        elif fs_kind == "btrfs":
            from pvgrub_py.disk.readers.btrfs import BtrfsAdapter

            adapter = BtrfsAdapter(fh)
        elif fs_kind == "vfat":
            from pvgrub_py.disk.readers.fat import FatAdapter

            adapter = FatAdapter(fh)
        elif fs_kind == "iso9660":
            from pvgrub_py.disk.readers.iso9660 import IsoAdapter

            extra = IsoAdapter.extra_errors
            try:
                adapter = IsoAdapter(fh)
            except extra as exc:
                raise ValueError(str(exc)) from exc
        else:
            raise disk_error(source, f"no reader for a {fs_kind} filesystem")
    return Filesystem(adapter, source=source, budget=budget)
