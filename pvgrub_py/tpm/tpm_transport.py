"""`TpmTransport` and `PeerLabelled`: what a TPM client talks through.

`pvgrub_py.tpm.transport` describes transports (one command in, one
response out, serialised) and exports these protocols.  They are
`typing.Protocol` classes, so they live here: a boot only needs them as
annotations (``if TYPE_CHECKING:``) and, for a ``xen:`` vTPM with
``--vtpm-label``, an isinstance check; importing `typing` would cost the
parent of every measured ``--runas`` boot ~1.5 ms on its critical path.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class TpmTransport(Protocol):
    """One command in, one response out, serialised."""

    def transmit(self, command: bytes) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class PeerLabelled(Protocol):
    """A transport whose far end has an XSM label: a tpmif frontend (``xen:``),
    whose backend is the peer of its event channel.  A swtpm socket has none."""

    def peer_label(self) -> str: ...
