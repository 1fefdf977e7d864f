"""The wire between a simulated domain's process and the host daemon.  Pure: bytes in,
`Frame` out, and back; no I/O, so it can be round-tripped and fuzzed.

Why a private protocol and not something Xen has: on a real host a domain reaches the
hypervisor through hypercalls and the Linux drivers (privcmd, evtchn, gntdev, gntalloc);
here one SOCK_SEQPACKET unix socket per attached process stands in for all of them.
SEQPACKET keeps message boundaries, so a frame is one ``recvmsg`` and file descriptors
(the memfds behind grants, a port's eventfd, a handle's generation page and liveness
socket, a xenstored connection) ride on the very frame that announces them (``nfds``).

A frame is::

    u16 op | u16 nfds | u32 req_id | i32 err | u16 nargs | nargs * i64 | data

little-endian.  ``req_id`` 0 marks the daemon's one-way `Op.NOTICE`
(why it is closing the connection).  A reply echoes op and req_id; ``err`` is a
positive errno (0 on success) and, on error, ``data`` is the UTF-8 message.

Event notifications do not travel here at all: a notifier writes the peer port's
eventfd directly (see `evtpage`); this protocol only binds, unbinds and hands a
notifier its peer's eventfd (`Op.EVT_TARGET`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pvgrub_py.errors import PvgrubError

HEADER = struct.Struct("<HHIiH")
HEADER_SIZE = HEADER.size
#: Large enough for a domain list of thousands of domains, small enough that one
#: hostile client cannot make the daemon buffer much.
MAX_FRAME = 256 * 1024
MAX_ARGS = (MAX_FRAME - HEADER_SIZE) // 8
#: File descriptors one frame may carry (EVT_OPEN sends two).
MAX_FDS = 2
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class ProtocolError(PvgrubError):
    """A frame that cannot be decoded: the sender is broken or hostile."""


class Op(enum.IntEnum):
    # session
    ATTACH = 1  # args [domid], data token           -> args [domid]
    STATS = 2  # -> data JSON (see `stats`)
    NOTICE = 3  # daemon -> client, one-way: err says why the connection ends
    # domains (libxenctrl, dom0 only)
    DOM_CREATE = 10  # [max_vcpus, max_memkb, pvh, len(handle)], data handle+name -> [domid]
    DOM_DESTROY = 11  # [domid]
    DOM_PAUSE = 12  # [domid]
    DOM_UNPAUSE = 13  # [domid]
    DOM_INFO = 14  # [domid] -> info args, data handle
    DOM_LIST = 15  # -> info args * n, data handles
    DOM_SET_MAXMEM = 16  # [domid, max_memkb]
    DOM_SET_MAXVCPUS = 17  # [domid, max_vcpus]
    DOM_ALLOC_UNBOUND = 18  # [domid, remote] -> [port]: EVTCHNOP_alloc_unbound, dom != SELF
    # grants (libxengntshr / libxengnttab)
    GNT_SHARE = 30  # [grantee, count, writable] -> [share_id, ref...], fd memfd
    GNT_END = 31  # [share_id]
    GNT_MAP = 32  # [granter, ref, writable] -> [map_id, offset], fd
    GNT_UNMAP = 33  # [map_id]
    # event channels (libxenevtchn)
    EVT_OPEN = 50  # -> [handle_id], fds: generation page, liveness socket
    EVT_CLOSE = 51  # [handle_id]
    EVT_ALLOC_UNBOUND = 52  # [handle_id, remote] -> [port], fd: the port's eventfd
    EVT_BIND = 53  # [handle_id, remote_dom, remote_port] -> [port], fd: its eventfd
    EVT_UNBIND = 54  # [handle_id, port]
    EVT_TARGET = 55  # [handle_id, port] -> [state, rdom, rport, gen, rhandle], fd: peer eventfd
    EVT_STATUS = 57  # [domid, port] -> [state, remote_dom, remote_port]
    # xenstore
    XS_CONNECT = 70  # -> fd: a stream socket connected to xenstored as the caller
    # XSM (FLASK); ENOSYS when the host runs without FLASK
    XSM_PEER_LABEL = 80  # [port] -> data: the context of the domain at the other end
    XSM_SET_LABEL = 81  # [domid], data context (dom0 only)


ONE_WAY = frozenset({Op.NOTICE})


@dataclass(frozen=True)
class Frame:
    op: int
    req_id: int = 0
    args: tuple[int, ...] = ()
    data: bytes = b""
    err: int = 0
    nfds: int = 0


def encode(frame: Frame) -> bytes:
    """The bytes of one frame; `ProtocolError` if it cannot be represented."""
    if not 0 <= frame.op <= 0xFFFF or not 0 <= frame.nfds <= MAX_FDS:
        raise ProtocolError(f"op {frame.op} / nfds {frame.nfds} out of range")
    if not 0 <= frame.req_id <= 0xFFFFFFFF or not -(1 << 31) <= frame.err < (1 << 31):
        raise ProtocolError(f"req_id {frame.req_id} / err {frame.err} out of range")
    if len(frame.args) > 0xFFFF or any(not _I64_MIN <= a <= _I64_MAX for a in frame.args):
        raise ProtocolError("too many arguments, or one beyond 64 bits")
    body = HEADER.pack(frame.op, frame.nfds, frame.req_id, frame.err, len(frame.args))
    out = body + struct.pack(f"<{len(frame.args)}q", *frame.args) + frame.data
    if len(out) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(out)} bytes exceeds {MAX_FRAME}")
    return out


def decode(data: bytes) -> Frame:
    """One frame from exactly the bytes of one SEQPACKET message."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"short frame: {len(data)} bytes, header is {HEADER_SIZE}")
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    op, nfds, req_id, err, nargs = HEADER.unpack_from(data)
    end = HEADER_SIZE + 8 * nargs
    if end > len(data):
        raise ProtocolError(f"frame announces {nargs} arguments, has room for fewer")
    if nfds > MAX_FDS:
        raise ProtocolError(f"frame announces {nfds} file descriptors, at most {MAX_FDS}")
    args = struct.unpack_from(f"<{nargs}q", data, HEADER_SIZE)
    return Frame(op, req_id, args, bytes(data[end:]), err, nfds)


def request(op: Op, req_id: int, args: Sequence[int] = (), data: bytes = b"") -> Frame:
    return Frame(int(op), req_id, tuple(args), data)


def reply(to: Frame, args: Sequence[int] = (), data: bytes = b"", nfds: int = 0) -> Frame:
    return Frame(to.op, to.req_id, tuple(args), data, 0, nfds)


def error_reply(to: Frame, err: int, message: str, args: Sequence[int] = ()) -> Frame:
    """An error: ``err`` and a message; ``args`` may add detail (a GNTST status)."""
    return Frame(to.op, to.req_id, tuple(args), message.encode("utf-8", "replace")[:4096], err)
