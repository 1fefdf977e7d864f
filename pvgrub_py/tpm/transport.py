"""How TPM command bytes reach a TPM, and how a response is framed.

A transport moves one command and one response at a time: TPMs (and swtpm
in particular, which merges pipelined commands on its socket) must never be
sent a command before the previous response has fully arrived.  Every
transport therefore exposes a single blocking ``transmit``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pvgrub_py.tpm.errors import TpmProtocolError, TpmTransportError
from pvgrub_py.tpm.header import HEADER_SIZE

#: Responses larger than this are refused before reading them: no command we
#: send has an answer near it (TPM 2.0's TPM_MAX_COMMAND_SIZE is 4096 on
#: swtpm), and a hostile peer must not make us allocate.
MAX_RESPONSE_SIZE = 64 * 1024


class TpmTransport(Protocol):
    """One command in, one response out, serialised."""

    def transmit(self, command: bytes) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class PeerLabelled(Protocol):
    """A transport whose far end has an XSM label: a tpmif frontend (``xen:``),
    whose backend is the peer of its event channel.  A swtpm socket has none."""

    def peer_label(self) -> str: ...


def response_size(header: bytes) -> int:
    """The total size a TPM response header announces, checked for sanity."""
    if len(header) < HEADER_SIZE:
        raise TpmProtocolError(f"short TPM response: {len(header)} bytes, a header needs 10")
    (size,) = struct.unpack_from(">I", header, 2)
    if size < HEADER_SIZE:
        raise TpmProtocolError(f"TPM response size field {size} is smaller than its header")
    if size > MAX_RESPONSE_SIZE:
        raise TpmProtocolError(f"TPM response size field {size} exceeds {MAX_RESPONSE_SIZE}")
    return int(size)


def receive_response(recv_exact: Callable[[int], bytes]) -> bytes:
    """Read exactly one framed response with ``recv_exact(n)``."""
    header = recv_exact(HEADER_SIZE)
    size = response_size(header)
    return header + recv_exact(size - HEADER_SIZE)


def check_command(command: bytes) -> None:
    if len(command) < HEADER_SIZE:
        raise TpmTransportError(f"refusing to send a {len(command)}-byte TPM command")
