"""`GuestSession`: what the host side of a boot asks of the guest side.

The two implementations and how a boot uses them are described in
`pvgrub_py.bootloader.guest`, which also exports it.  It is a
`typing.Protocol`, so it lives here: a boot only needs it as an annotation
(``if TYPE_CHECKING:``), and importing `typing` would cost every boot
~1.7 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootloader.plan import BootPlan


class GuestSession(Protocol):
    @property
    def plan(self) -> BootPlan: ...

    def stream(self, index: int, sink: Callable[[bytes], object], cap: int) -> int:
        """Feed file *index* of ``plan.files`` to *sink*; return its length.

        Files must be asked for in order.  *cap* is the most bytes the host
        side accepts for it.
        """
        ...

    def finish(self) -> None:
        """Everything was streamed: check the guest side ended cleanly."""
        ...

    def close(self) -> None:
        """Release the disk (or kill and reap the child); idempotent."""
        ...
