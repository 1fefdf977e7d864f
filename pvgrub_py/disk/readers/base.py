"""What every filesystem reader adapter provides to `pvgrub_py.disk.filesystems`.

An adapter is a thin translation of one library's objects (a Dissect inode,
a pycdlib directory record) into the few operations the boot path needs.
It does no path handling, no symlink following and no error wrapping: the
`Filesystem` above does those once for every format, so the rules (hop
limit, ``..`` confinement, refusing device nodes, the budget) cannot differ
between formats.

Nodes are opaque to the caller (``Any``): whatever the library uses.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, BinaryIO

    #: A reader's node (for the type checker only: nothing uses it at run time).
    Node = Any

#: Largest directory (in bytes of directory data) an adapter will list.
#: A /boot with thousands of kernels is still far below this; a corrupt
#: size field claiming terabytes makes some readers iterate that many
#: blocks, so it is checked before listing.
MAX_DIR_BYTES = 64 << 20

#: Largest symlink target read (Linux's PATH_MAX).
MAX_LINK_BYTES = 4096


class UnsupportedFeature(ValueError):
    """A file uses a filesystem feature its reader deliberately refuses (an
    ISO 9660 multi-extent file): reported like corrupt data, one line."""


class FileKind(enum.Enum):
    REGULAR = "regular file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"
    CHAR_DEVICE = "character device"
    BLOCK_DEVICE = "block device"
    FIFO = "FIFO"
    SOCKET = "socket"
    UNKNOWN = "file of unknown type"


def kind_from_mode(mode: int) -> FileKind:
    """The POSIX ``S_IFMT`` bits of an inode mode as a `FileKind`."""
    return _MODE_KINDS.get(mode & 0o170000, FileKind.UNKNOWN)


_MODE_KINDS = {
    0o100000: FileKind.REGULAR,
    0o040000: FileKind.DIRECTORY,
    0o120000: FileKind.SYMLINK,
    0o020000: FileKind.CHAR_DEVICE,
    0o060000: FileKind.BLOCK_DEVICE,
    0o010000: FileKind.FIFO,
    0o140000: FileKind.SOCKET,
}


class ReaderAdapter(ABC):
    """One opened filesystem, as the boot path needs it."""

    fs_type: str
    uuid: str | None = None
    label: str | None = None
    #: GRUB compares names case-insensitively on FAT and plain ISO 9660.
    case_insensitive: bool = False

    @property
    @abstractmethod
    def root(self) -> Node: ...

    @abstractmethod
    def kind(self, node: Node) -> FileKind: ...

    @abstractmethod
    def size(self, node: Node) -> int:
        """The byte size the filesystem declares for *node*."""

    @abstractmethod
    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        """Entries of directory *node*, without ``.`` and ``..``."""

    @abstractmethod
    def read_link(self, node: Node) -> bytes:
        """The target of symlink *node* (at most `MAX_LINK_BYTES`)."""

    @abstractmethod
    def open(self, node: Node) -> BinaryIO:
        """A stream of regular file *node*'s bytes (reads may come back short)."""

    def lookup(self, node: Node, name: str, limit: int) -> Node | None:
        """The entry *name* in directory *node*; at most *limit* entries are scanned."""
        want = name.casefold() if self.case_insensitive else name
        for count, (entry, child) in enumerate(self.children(node)):
            if count >= limit:
                raise OverflowError(f"directory has more than {limit} entries")
            if (entry.casefold() if self.case_insensitive else entry) == want:
                return child
        return None
