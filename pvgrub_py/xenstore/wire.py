"""The xs_wire framing: bytes in, `Message` out, and back.  No I/O here.

Facts from xen/include/public/io/xs_wire.h and docs/misc/xenstore.txt:

* every message is a ``struct xsd_sockmsg`` header of four uint32 in the
  *host's* byte order (type, req_id, tx_id, len), then ``len`` payload bytes;
* ``len`` may not exceed XENSTORE_PAYLOAD_MAX (4096) in either direction.  A
  client that announces more is dropped, because the stream cannot be
  resynchronised (xenstored's handle_input() ignores such a connection);
* payload fields are NUL-terminated strings, except a WRITE value and a READ
  reply, which are raw bytes;
* a reply copies type, req_id and tx_id from its request; an error reply has
  type ERROR and the errno *name* plus NUL as payload; a WATCH_EVENT has
  req_id = tx_id = 0.

Kept pure so hypothesis can round-trip it and fuzz it.
"""

from __future__ import annotations

import enum
import errno
import struct
from dataclasses import dataclass

from pvgrub_py.xenstore.errors import XSD_ERRORS, XsProtocolError, XsRequestError

#: ``struct xsd_sockmsg``: native byte order, standard 4-byte sizes, no padding.
HEADER = struct.Struct("=IIII")
HEADER_SIZE = HEADER.size  # 16
XENSTORE_PAYLOAD_MAX = 4096
#: A client must send a header before any payload; this is the most one
#: complete request can occupy in our input buffer.
MAX_MESSAGE_SIZE = HEADER_SIZE + XENSTORE_PAYLOAD_MAX

NUL = b"\x00"
OK = b"OK\x00"


class XsType(enum.IntEnum):
    """``enum xsd_sockmsg_type``; XS_TYPE_COUNT is 27."""

    CONTROL = 0  # formerly DEBUG
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15  # daemon -> client only
    ERROR = 16  # daemon -> client only
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT_REMOVED = 20  # XS_RESTRICT was dropped; the number stays invalid
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 0xFFFF


XS_TYPE_COUNT = 27
_TYPE_NAMES: dict[int, str] = {t.value: t.name for t in XsType}


def type_name(msg_type: int) -> str:
    """A name for logs; unknown numbers stay visible as numbers."""
    return _TYPE_NAMES.get(msg_type, f"type#{msg_type}")


@dataclass(frozen=True, slots=True)
class Message:
    """One xs_wire message.  ``type`` is an int, not an `XsType`, because a
    hostile or newer client may send numbers we do not know (answered ENOSYS).
    Fields must fit a uint32; `encode` checks that (the reader cannot produce
    anything else)."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes


def encode(msg: Message) -> bytes:
    """Header plus payload.  Raises E2BIG, as xenstored's send_reply() answers
    instead of sending a reply longer than XENSTORE_PAYLOAD_MAX."""
    return pack(msg.type, msg.req_id, msg.tx_id, msg.payload)


def pack(msg_type: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """`encode` without building a `Message` first (the daemon's hot path)."""
    if len(payload) > XENSTORE_PAYLOAD_MAX:
        raise XsRequestError(
            errno.E2BIG, f"{len(payload)}-byte payload exceeds {XENSTORE_PAYLOAD_MAX}"
        )
    try:
        return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + payload
    except struct.error:
        raise ValueError(
            f"xs_wire header ({msg_type}, {req_id}, {tx_id}) does not fit uint32"
        ) from None


def error_payload(errnum: int) -> bytes:
    """``E<NAME>\\0``; numbers outside xsd_errors become EINVAL."""
    return XSD_ERRORS.get(errnum, "EINVAL").encode() + NUL


def decode(data: bytes) -> Message:
    """Exactly one complete message, nothing after it."""
    reader = MessageReader()
    reader.feed(data)
    msg = reader.next_message()
    if msg is None:
        raise XsProtocolError(f"truncated xs_wire message: {len(data)} bytes")
    if reader.pending:
        raise XsProtocolError(f"{reader.pending} bytes after the xs_wire message")
    return msg


class MessageReader:
    """Incremental framing over a byte stream.

    `next_message` hands out one message at a time so the daemon can stop
    between messages when its output is backed up; buffered input is then at
    most what the transport delivered in one read.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive.

        Raises `XsProtocolError` for a header announcing more than
        XENSTORE_PAYLOAD_MAX: the stream is unrecoverable from there.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        msg_type, req_id, tx_id, length = HEADER.unpack_from(buf, pos)
        if length > XENSTORE_PAYLOAD_MAX:
            raise XsProtocolError(
                f"header announces a {length}-byte payload; "
                f"XENSTORE_PAYLOAD_MAX is {XENSTORE_PAYLOAD_MAX}"
            )
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos + HEADER_SIZE : end])
        self._pos = end
        return Message(msg_type, req_id, tx_id, payload)


# -- payload fields ----------------------------------------------------------


def strings(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings at the start of ``payload``.

    Bytes after the last NUL are not a string and are left out, as
    xenstored's get_strings() does; callers that care (WRITE) slice the
    payload themselves.
    """
    parts = payload.split(NUL)
    parts.pop()  # whatever follows the last NUL (b"" if the payload ends in one)
    return parts


def one_string(payload: bytes) -> bytes:
    """The single argument of READ, MKDIR, RM, ...: exactly one NUL, at the end.

    Anything else is EINVAL (xenstored's onearg()).  Keeping this strict is
    what rejects a path that is not NUL-terminated.
    """
    if not payload or payload.find(NUL) != len(payload) - 1:
        raise XsRequestError(errno.EINVAL, "expected exactly one NUL-terminated argument")
    return payload[:-1]


def join_strings(items: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Each item followed by a NUL (the ``<foo>|*`` notation of xenstore.txt)."""
    return b"".join(item + NUL for item in items)
