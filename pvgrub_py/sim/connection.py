"""A process's connection to the host daemon, attached as one domain.

Requests are serialised under a lock (one outstanding request per connection, so
replies need no matching beyond a sanity check).  File descriptors in a reply are
returned to the caller, who owns them.  Event notifications never come this way
(see `evtpage`).

Fork safety: a connection must not be shared across ``fork`` (two processes would
interleave requests on one socket); requests from a forked child fail with EBADF.
Attach again in the child (multiprocessing's "spawn" context avoids the question).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Sequence

import pvgrub_py.sim.protocol as protocol
from pvgrub_py.sim.grants import GNTST_NAMES, GrantMapError
from pvgrub_py.sim.layout import HostLayout
from pvgrub_py.sim.protocol import Frame, Op, ProtocolError
from pvgrub_py.xen.interface import XenError


def read_token(layout: HostLayout, domid: int) -> str:
    path = layout.token(domid)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise XenError(
            errno.ESRCH,
            "attach",
            f"no token {path}: d{domid} does not exist on the host in {layout.root}, "
            "or the host is not running",
        ) from None


class HostConnection:
    def __init__(self, layout: HostLayout, domid: int, token: str | None = None) -> None:
        self.layout = layout
        self.domid = domid
        self._lock = threading.Lock()
        self._req_id = 0
        self._lost: XenError | None = None
        self._pid = os.getpid()
        secret = read_token(layout, domid) if token is None else token
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(layout.socket))
        except OSError as e:
            sock.close()
            raise XenError(
                e.errno or errno.EIO, "attach", f"no simulated host listens on {layout.socket}"
            ) from None
        self._sock: socket.socket | None = sock
        try:
            self.call(Op.ATTACH, [domid], secret.encode("ascii"), function="attach")
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._sock is not None and self._lost is None

    def call(
        self, op: Op, args: Sequence[int] = (), data: bytes = b"", *, function: str
    ) -> tuple[Frame, list[int]]:
        """Send one request, wait for its reply; XenError on an error reply."""
        with self._lock:
            sock = self._usable(function)
            self._req_id = self._req_id % 0xFFFFFFFF + 1
            with contextlib.suppress(OSError):  # the reason (NOTICE or EOF) is read below
                sock.send(protocol.encode(protocol.request(op, self._req_id, args, data)))
            frame, fds = self._receive(sock, function)
            if frame.req_id != self._req_id or frame.op != op:
                for fd in fds:
                    os.close(fd)
                raise self._lose(
                    XenError(
                        errno.EPROTO, function, f"reply {frame.op}/{frame.req_id} out of order"
                    )
                )
        if frame.err:
            for fd in fds:
                os.close(fd)
            message = frame.data.decode("utf-8", "replace")
            if frame.op == Op.GNT_MAP and len(frame.args) == 1 and frame.args[0] in GNTST_NAMES:
                raise GrantMapError(frame.args[0], message)
            raise XenError(frame.err, function, message)
        return frame, fds

    def _usable(self, function: str) -> socket.socket:
        if os.getpid() != self._pid:
            raise XenError(
                errno.EBADF, function, "this connection was attached in the parent process"
            )
        if self._lost is not None:
            raise XenError(self._lost.errno, function, self._lost.message)
        if self._sock is None:
            raise XenError(errno.EBADF, function, "this hypervisor connection is closed")
        return self._sock

    def _receive(self, sock: socket.socket, function: str) -> tuple[Frame, list[int]]:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, protocol.MAX_FRAME, protocol.MAX_FDS)
        except OSError as e:
            raise self._lose(XenError(e.errno or errno.EIO, function, "host connection")) from None
        if not data:
            raise self._lose(
                XenError(errno.EIO, function, "the simulated host closed the connection")
            )
        try:
            frame = protocol.decode(data)
        except ProtocolError as e:
            for fd in fds:
                os.close(fd)
            raise self._lose(XenError(errno.EPROTO, function, str(e))) from None
        if frame.op == Op.NOTICE:
            for fd in fds:
                os.close(fd)
            why = frame.data.decode("utf-8", "replace")
            raise self._lose(XenError(frame.err or errno.EIO, function, why))
        if len(fds) != frame.nfds:
            for fd in fds:
                os.close(fd)
            raise self._lose(
                XenError(errno.EPROTO, function, f"{len(fds)} descriptors, {frame.nfds} announced")
            )
        return frame, fds

    def _lose(self, error: XenError) -> XenError:
        """Remember why the connection is unusable; every later call fails the same."""
        if self._lost is None:
            self._lost = error
        return error

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
