"""How TPM command bytes reach a TPM, and how a response is framed.

A transport moves one command and one response at a time: TPMs (and swtpm
in particular, which merges pipelined commands on its socket) must never be
sent a command before the previous response has fully arrived.  Every
transport therefore exposes a single blocking ``transmit``.

The protocols (`TpmTransport`, `PeerLabelled`) live in
`pvgrub_py.tpm.tpm_transport` and are exported from here on first use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pvgrub_py._lazy import lazy_attributes
from pvgrub_py.tpm.errors import TpmProtocolError, TpmTransportError
from pvgrub_py.tpm.header import HEADER_SIZE

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.tpm.tpm_transport import PeerLabelled as PeerLabelled
    from pvgrub_py.tpm.tpm_transport import TpmTransport as TpmTransport
else:
    # TpmTransport and PeerLabelled: `typing.Protocol`s, run on first use, not by every boot.
    _PROTOCOLS = "pvgrub_py.tpm.tpm_transport"
    __getattr__ = lazy_attributes(
        __name__, {"TpmTransport": _PROTOCOLS, "PeerLabelled": _PROTOCOLS}
    )


#: Responses larger than this are refused before reading them: no command we
#: send has an answer near it (TPM 2.0's TPM_MAX_COMMAND_SIZE is 4096 on
#: swtpm), and a hostile peer must not make us allocate.
MAX_RESPONSE_SIZE = 64 * 1024


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
