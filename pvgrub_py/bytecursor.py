"""A bounded cursor over bytes: the one reader of the binary parsers.

The TPM codecs (big-endian), the TCG event log (little-endian) and the lzop
container (big-endian) all read attacker-controlled bytes the same way: take
``n`` bytes at the cursor or fail naming the field, never a length trusted
before it is checked against what is left.  Each parser keeps its own error
(its class, its wording, what it calls the place: "offset 12 (0xc)",
"payload offset 12"): it hands the cursor a ``short`` function that builds
the error for a read that does not fit.

It sits beside `errors` at the bottom of the layers, so every parser above
may use it; it imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False

# `ByteCursor` is generic for the type checker only.  The parsers that
# subclass it (``class _Reader(ByteCursor[bytes])``) run on a boot's critical
# path, where ``import typing`` would cost ~1.5 ms for nothing: a type
# parameter does nothing at run time.  So mypy sees ``Generic[B]`` and checks
# every use, while at run time `_Generic` is a plain base whose
# ``ByteCursor[bytes]`` is `ByteCursor` itself (and ``B`` a placeholder it
# ignores).
if TYPE_CHECKING:
    from typing import Generic as _Generic
    from typing import Literal, TypeVar

    #: ``bytes`` or ``memoryview``: what `ByteCursor.take` hands back is a slice of the input.
    B = TypeVar("B", bytes, memoryview)
else:

    class _Generic:
        """``Generic`` at run time: subscripting a subclass gives the subclass."""

        __slots__ = ()

        def __class_getitem__(cls, params: object) -> type:
            return cls

    B = None

#: Builds the error for a short read: (field, offset of the read, bytes wanted, bytes left).
ShortRead = Callable[[str, int, int, int], Exception]


class ByteCursor(_Generic[B]):
    """``data`` read from ``pos`` on; a read past the end raises ``short(...)``."""

    __slots__ = ("_on_short", "_order", "data", "pos")

    def __init__(
        self,
        data: B,
        byteorder: Literal["little", "big"],
        short: ShortRead,
        pos: int = 0,
    ) -> None:
        self.data: B = data
        self.pos = pos
        self._order: Literal["little", "big"] = byteorder
        self._on_short = short

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> B:
        """The next ``n`` bytes (a slice of the input), or the parser's error."""
        if n < 0 or n > len(self.data) - self.pos:
            raise self._on_short(what, self.pos, n, self.left)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), self._order)

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), self._order)

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), self._order)
