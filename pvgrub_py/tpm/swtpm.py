"""swtpm's two sockets: the TPM data channel and the control channel.

The data channel carries raw TPM commands.  The control channel carries
swtpm's own ``CMD_*`` requests (swtpm's ``ptm`` interface: a big-endian u32
command code plus payload in, a u32 result plus payload out), which is how
a TPM is power-cycled (``CMD_INIT``) and stopped (``CMD_SHUTDOWN``) from
outside, the way a hypervisor resets a vTPM when its guest reboots.
"""

from __future__ import annotations

import socket
import struct
import threading

from pvgrub_py.tpm.errors import TpmProtocolError, TpmTransportError
from pvgrub_py.tpm.header import HEADER_SIZE
from pvgrub_py.tpm.socket_address import SocketAddress as SocketAddress  # tests import it here
from pvgrub_py.tpm.transport import check_command, response_size

DEFAULT_TIMEOUT = 30.0

# swtpm control channel command codes (swtpm's ptm interface).
CMD_GET_CAPABILITY = 0x01
CMD_INIT = 0x02
CMD_SHUTDOWN = 0x03
CMD_GET_TPMESTABLISHED = 0x04
CMD_SET_LOCALITY = 0x05
CMD_CANCEL_TPM_CMD = 0x09
CMD_STORE_VOLATILE = 0x0A
CMD_GET_STATEBLOB = 0x0C
CMD_SET_STATEBLOB = 0x0D
CMD_STOP = 0x0E
#: CMD_INIT flag: drop volatile state, so the TPM starts as after power-on.
INIT_FLAG_DELETE_VOLATILE = 0x01
#: State blob types (swtpm's ``PTM_BLOB_TYPE_*``): the TPM's NV and seeds; its
#: volatile state (PCRs, loaded objects, sessions); a TPM 1.2 TPM_SaveState.
BLOB_PERMANENT = 1
BLOB_VOLATILE = 2
BLOB_SAVESTATE = 3
#: State blob flags (``PTM_STATE_FLAG_*``): a blob asked for or sent decrypted;
#: one that swtpm encrypted (or is to decrypt) with its ``--key``.
STATE_FLAG_DECRYPTED = 0x01
STATE_FLAG_ENCRYPTED = 0x02
#: The largest state blob taken (a TPM 2.0's permanent state is a few KiB,
#: its volatile state about 9 KiB): a bound on what a control channel makes us hold.
MAX_STATE_BLOB = 1 << 20


def _recv_exact(sock: socket.socket, n: int, where: str) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        try:
            chunk = sock.recv(remaining)
        except (TimeoutError, BlockingIOError):
            raise TpmTransportError(f"{where}: timed out waiting for the TPM") from None
        except OSError as e:
            raise TpmTransportError(f"{where}: {e.strerror or e}") from None
        if not chunk:
            got = n - remaining
            raise TpmTransportError(f"{where}: connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _recv_response(sock: socket.socket, where: str) -> bytes:
    """One framed TPM response, usually in a single ``recv``.

    Reading greedily halves the system calls of a header-then-body read; it
    is safe because a TPM sends exactly one response per command, so any
    byte past the announced size is a protocol violation, not the next
    message.
    """
    buf = b""
    size = HEADER_SIZE
    while len(buf) < size:
        try:
            chunk = sock.recv(max(size - len(buf), 4096))
        except (TimeoutError, BlockingIOError):
            raise TpmTransportError(f"{where}: timed out waiting for the TPM") from None
        except OSError as e:
            raise TpmTransportError(f"{where}: {e.strerror or e}") from None
        if not chunk:
            raise TpmTransportError(f"{where}: connection closed after {len(buf)} of {size} bytes")
        buf += chunk
        if size == HEADER_SIZE and len(buf) >= HEADER_SIZE:
            size = response_size(buf)
    if len(buf) > size:
        raise TpmProtocolError(f"{where}: {len(buf) - size} bytes after a {size}-byte response")
    return buf


class SwtpmTransport:
    """The data channel: one persistent connection, one command at a time."""

    def __init__(self, address: SocketAddress, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _connection(self) -> socket.socket:
        if self._sock is None:
            self._sock = self.address.connect(self.timeout)
        return self._sock

    def transmit(self, command: bytes) -> bytes:
        check_command(command)
        where = f"swtpm {self.address}"
        with self._lock:
            sock = self._connection()
            try:
                sock.sendall(command)
                return _recv_response(sock, where)
            except OSError as e:
                self._drop()
                raise TpmTransportError(f"{where}: {e.strerror or e}") from None
            except (TpmTransportError, TpmProtocolError):
                # The stream position is unknown now; never reuse it.
                self._drop()
                raise

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> SwtpmTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SwtpmControl:
    """The control channel.  One connection per request keeps it simple and
    immune to a half-read answer poisoning the next request."""

    def __init__(self, address: SocketAddress, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    def request(self, code: int, payload: bytes = b"", answer_size: int = 0) -> bytes:
        """Send one control command; return the answer after the result code."""
        where = f"swtpm control {self.address}"
        sock = self.address.connect(self.timeout)
        with sock:
            try:
                sock.sendall(struct.pack(">I", code) + payload)
            except OSError as e:
                raise TpmTransportError(f"{where}: {e.strerror or e}") from None
            (result,) = struct.unpack(">I", _recv_exact(sock, 4, where))
            if result != 0:
                raise TpmTransportError(f"{where}: command 0x{code:02x} failed with 0x{result:x}")
            return _recv_exact(sock, answer_size, where) if answer_size else b""

    def init(self, delete_volatile: bool = True) -> None:
        """Power-cycle the TPM (TPM_Init).  A TPM_Startup must follow."""
        flags = INIT_FLAG_DELETE_VOLATILE if delete_volatile else 0
        self.request(CMD_INIT, struct.pack(">I", flags))

    def shutdown(self) -> None:
        """Stop swtpm; it exits after answering."""
        self.request(CMD_SHUTDOWN)

    def capabilities(self) -> int:
        (caps,) = struct.unpack(">Q", b"\0\0\0\0" + self.request(CMD_GET_CAPABILITY, answer_size=4))
        return int(caps)

    def set_locality(self, locality: int) -> None:
        self.request(CMD_SET_LOCALITY, bytes([locality]))

    def get_state_blob(self, blob_type: int, *, decrypted: bool = False) -> tuple[bytes, bool]:
        """One of the TPM's state blobs (``CMD_GET_STATEBLOB``) and whether it is
        encrypted with swtpm's key (it is, for an encrypted instance, unless
        *decrypted*).  Taken between two TPM commands, while the TPM runs."""
        where = f"swtpm control {self.address}"
        data = bytearray()
        encrypted = False
        while True:
            flags = STATE_FLAG_DECRYPTED if decrypted else 0
            request = struct.pack(">IIII", CMD_GET_STATEBLOB, flags, blob_type, len(data))
            with self.address.connect(self.timeout) as sock:
                try:
                    sock.sendall(request)
                except OSError as e:
                    raise TpmTransportError(f"{where}: {e.strerror or e}") from None
                (result,) = struct.unpack(">I", _recv_exact(sock, 4, where))
                if result != 0:
                    raise TpmTransportError(
                        f"{where}: state blob {blob_type} not given (0x{result:x})"
                    )
                state_flags, total, length = struct.unpack(">III", _recv_exact(sock, 12, where))
                if total > MAX_STATE_BLOB or length > total - len(data):
                    raise TpmProtocolError(
                        f"{where}: state blob {blob_type} of {total} bytes (chunk {length} at "
                        f"{len(data)}): over {MAX_STATE_BLOB} or inconsistent"
                    )
                data += _recv_exact(sock, length, where)
            encrypted = bool(state_flags & STATE_FLAG_ENCRYPTED)
            if len(data) >= total or length == 0:
                break
        if len(data) != total:
            raise TpmProtocolError(f"{where}: state blob {blob_type} cut at {len(data)} of {total}")
        return bytes(data), encrypted

    def set_state_blob(self, blob_type: int, data: bytes, *, encrypted: bool) -> None:
        """Give the TPM a state blob (``CMD_SET_STATEBLOB``), *encrypted* with
        swtpm's key or plain; only before its ``CMD_INIT`` (or after ``CMD_STOP``)."""
        flags = STATE_FLAG_ENCRYPTED if encrypted else 0
        self.request(CMD_SET_STATEBLOB, struct.pack(">III", flags, blob_type, len(data)) + data)

    def store_volatile(self) -> None:
        """Write the TPM's volatile state to its state directory (``CMD_STORE_VOLATILE``):
        a swtpm started on that directory resumes it (PCRs included)."""
        self.request(CMD_STORE_VOLATILE)
