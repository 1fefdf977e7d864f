"""ISO 9660 through pycdlib (Rock Ridge, Joliet or plain names).

Dissect has no ISO 9660 reader; pycdlib is pure Python and reads Rock
Ridge.  pycdlib parses the whole directory tree when it opens the image;
the adapter then walks the parsed records itself (so that symlinks and
``..`` go through the common resolution in `Filesystem`) and reads file
data directly from the image through a `BoundedFile` window: an ISO 9660
file is one contiguous extent (ECMA-119, 6.5.1), so the window is exact
and nothing past the image end can be returned.  The exception is a
multi-extent file (9.1.6, file flag bit 7; level 3, for files over
4 GiB), a run of records of the same name: the window of its first
record would hold only the first extent, so `IsoAdapter.open` refuses it
with `UnsupportedFeature`, which `reader_boundary` reports as one
line naming the file.

pycdlib would silently shorten a file that runs past the end of a
truncated image; it is shown an image without an end instead
(`_NoTruncateView`), so that such a file stays at its declared size and
the read fails.

Name spaces, in the order GRUB's iso9660 driver prefers them: Rock Ridge
names (exact case), else Joliet (UCS-2, case-insensitive), else plain
ISO 9660 identifiers with the ``;1`` version and a trailing dot removed
(case-insensitive).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from pvgrub_py.disk.bounded import BoundedFile
from pvgrub_py.disk.readers.base import (
    MAX_LINK_BYTES,
    FileKind,
    ReaderAdapter,
    UnsupportedFeature,
    kind_from_mode,
)
from pvgrub_py.disk.sniff import ISO_PVD, iso_uuid

if TYPE_CHECKING:
    from pvgrub_py.disk.readers.base import Node

#: ISO 9660 file flag "multi-extent" (ECMA-119, 9.1.6 bit 7).
_MULTI_EXTENT = 0x80


class _NoTruncateView:
    """The image as pycdlib should see it: with no end it could clamp to.

    pycdlib quietly shortens a file (or a directory read) that runs past
    the end of the image to what is there.  A truncated file must be an
    error, not a shorter kernel, so pycdlib is told the image is
    unbounded; every read still goes through the `BoundedFile`, which
    refuses the part that is not there.
    """

    _UNBOUNDED = 1 << 62

    def __init__(self, fh: BoundedFile) -> None:
        self._fh = fh

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            return self._fh.seek(self._UNBOUNDED + offset)
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)


class IsoAdapter(ReaderAdapter):
    fs_type = "iso9660"
    extra_errors: tuple[type[BaseException], ...] = (PyCdlibException,)

    def __init__(self, fh: BoundedFile) -> None:
        self._fh = fh
        iso: Any = pycdlib.PyCdlib()
        iso.open_fp(_NoTruncateView(fh))
        self._iso = iso
        self._block = int(iso.pvd.logical_block_size())
        self._rr = bool(iso.has_rock_ridge())
        if self._rr:
            self._root: Any = iso.pvd.root_directory_record()
            self._names = "rr"
        elif iso.has_joliet():
            self._root = iso.joliet_vd.root_directory_record()
            self._names = "joliet"
        else:
            self._root = iso.pvd.root_directory_record()
            self._names = "iso"
        self.case_insensitive = self._names != "rr"
        pvd = fh.pread(ISO_PVD, 2048)
        self.uuid = iso_uuid(pvd)
        label = pvd[40:72].decode("ascii", "replace").strip()
        self.label = label or None

    @property
    def root(self) -> Node:
        return self._root

    def _name(self, rec: Any) -> str:
        if self._names == "rr" and rec.rock_ridge is not None:
            return bytes(rec.rock_ridge.name()).decode("utf-8", "surrogateescape")
        ident = bytes(rec.file_identifier())
        if self._names == "joliet":
            return ident.decode("utf-16-be", "replace")
        name = ident.decode("ascii", "replace").split(";", 1)[0]
        return name[:-1] if name.endswith(".") else name

    def kind(self, node: Node) -> FileKind:
        rr = node.rock_ridge
        if rr is not None:
            if rr.is_symlink():
                return FileKind.SYMLINK
            try:
                return kind_from_mode(int(rr.get_file_mode()))
            except PyCdlibException:
                pass  # no PX entry: fall back to the ISO 9660 directory flag
        return FileKind.DIRECTORY if node.is_dir() else FileKind.REGULAR

    def size(self, node: Node) -> int:
        return int(node.get_data_length())

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        for child in node.children:
            if child.is_dot() or child.is_dotdot():
                continue
            yield self._name(child), child

    def read_link(self, node: Node) -> bytes:
        target = bytes(node.rock_ridge.symlink_path())
        if len(target) > MAX_LINK_BYTES:
            raise OverflowError(f"symlink target of {len(target)} bytes")
        return target

    def open(self, node: Node) -> BinaryIO:
        if int(node.file_flags) & _MULTI_EXTENT:
            raise UnsupportedFeature("multi-extent files are not supported")
        start = int(node.extent_location()) * self._block
        window: Any = self._fh.window(start, self.size(node), self._fh.name)
        stream: BinaryIO = window
        return stream
