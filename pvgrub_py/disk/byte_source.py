"""`ByteSource`: random-access bytes with a known size, under every disk.

`pvgrub_py.disk.bounded` wraps one in a `BoundedFile` (and exports this
protocol); `SeekableStream` is what its `StreamSource` adapts.  They are
`typing.Protocol` classes, so they live here: a boot only needs them as
annotations (``if TYPE_CHECKING:``), and importing `typing` would cost
every boot ~1.7 ms.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ByteSource(Protocol):
    """Random-access bytes with a known size: the bottom of every stack."""

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, length: int) -> bytes:
        """Up to *length* bytes at *offset*; callers never ask past `size`."""
        ...


class SeekableStream(Protocol):
    """What `pvgrub_py.disk.bounded.StreamSource` reads from."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...
