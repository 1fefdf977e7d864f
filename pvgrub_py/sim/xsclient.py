"""The `XenStore` of a simulated domain: pyxs 0.4.1's router over a socket that the
host daemon connected to xenstored *as that domain* and passed to us.

What we take from pyxs: its packet codec (`Packet`, `Op`, `next_rq_id`) and its
`Router` thread, which reads the connection, matches replies to requests and routes
WATCH_EVENTs by token.  What we do not take, and why (pyxs 0.4.1, selectel/pyxs on
GitHub):

* ``Client.execute_command`` insists on 7-bit printable values, so it cannot write an
  empty value (fixed only after 0.4.1, pyxs PR #13) or binary bytes, both legal in
  xs_wire.  We build the packets ourselves; `Packet` still enforces the 4096-byte
  payload limit.
* ``RVar.get`` and ``Monitor.wait`` block forever: if xenstored drops us (RELEASE on
  domain destruction, a crash) the router thread dies and callers hang (pyxs
  issue #11).  We wait on the reply with a deadline and watch the router thread, failing with EIO
  when it is gone; `wait_event` takes a timeout.
* ``Client.release_domain`` refuses unless ``/proc/xen/capabilities`` says control_d;
  xenstored is the one to decide (dom0-only), so we just send RELEASE.
* A router thread that dies prints a traceback through ``threading.excepthook``; ours
  records the failure instead.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import socket
import time
from collections.abc import Sequence
from typing import Any

from pyxs._internal import Event, Op, Packet, next_rq_id
from pyxs.client import Router
from pyxs.connection import PacketConnection

from pvgrub_py.xen.interface import WatchEvent, XenError

DEFAULT_TIMEOUT = 30.0
_POLL = 0.2
_NUL = b"\0"


class _SocketTransport:
    """pyxs's transport interface over an already connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        view = memoryview(bytearray(size))
        while size:
            received = self.sock.recv_into(view[-size:])
            if not received:
                raise OSError(errno.ECONNRESET, "xenstored closed the connection")
            size -= received
        return view.tobytes()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _SocketConnection(PacketConnection):  # type: ignore[misc]
    def __init__(self, sock: socket.socket) -> None:
        self.path = f"socket fd {sock.fileno()}"
        self._sock = sock

    def create_transport(self) -> _SocketTransport:
        return _SocketTransport(self._sock)


class _Router(Router):  # type: ignore[misc]
    """pyxs's router, remembering why its thread ended instead of printing it."""

    failure: BaseException | None = None

    def __call__(self) -> None:
        try:
            super().__call__()
        except Exception as e:  # any end of the reader is a lost connection
            self.failure = e


class _Sink:
    """What pyxs's router feeds watch events into (a `Monitor` has the same ``events``)."""

    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()


class SimXenStore:
    """A xenstore connection as one domain.  Paths are absolute, or relative to the
    domain's home ``/local/domain/<domid>`` (xenstored resolves them)."""

    def __init__(self, sock: socket.socket, domid: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.domid = domid
        self.timeout = timeout
        self._router = _Router(_SocketConnection(sock))
        self._sink = _Sink()
        self._watches: dict[str, set[str]] = {}
        self._closed = False
        try:
            self._router.start()
        except Exception as e:
            sock.close()
            raise XenError(errno.EIO, "xs_open", f"cannot start the pyxs router: {e}") from None

    # -- requests ------------------------------------------------------------------------

    def _request(self, op: int, payload: bytes, function: str, what: str) -> bytes:
        if self._closed:
            raise XenError(errno.EBADF, function, "this xenstore connection is closed")
        try:
            packet = Packet(op, payload, next_rq_id())
        except ValueError as e:  # pyxs's InvalidPayload: over XENSTORE_PAYLOAD_MAX
            raise XenError(errno.E2BIG, function, f"{what}: {e}") from None
        router = self._router
        if not router.thread.is_alive():
            raise self._lost(function, what)
        try:
            rvar = router.send(packet)
        except Exception:  # pyxs raises its ConnectionError or OSError
            raise self._lost(function, what) from None
        deadline = time.monotonic() + self.timeout
        with rvar.condition:
            while rvar.target is None:
                if not router.thread.is_alive():
                    raise self._lost(function, what)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise XenError(errno.ETIMEDOUT, function, f"{what}: no reply from xenstored")
                rvar.condition.wait(min(remaining, _POLL))
            reply = rvar.target
        if reply.op == Op.ERROR:
            name = reply.payload.rstrip(_NUL).decode("ascii", "replace")
            raise XenError(getattr(errno, name, errno.EIO), function, what)
        if reply.op != op:
            raise XenError(errno.EPROTO, function, f"{what}: reply of type {reply.op}")
        return bytes(reply.payload)

    def _lost(self, function: str, what: str) -> XenError:
        why = self._router.failure
        detail = f" ({why})" if why else ""
        return XenError(errno.EIO, function, f"{what}: lost the xenstored connection{detail}")

    @staticmethod
    def _path(path: str) -> bytes:
        return path.encode() + _NUL

    # -- XenStore ------------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        try:
            return self._request(Op.READ, self._path(path), "xs_read", path)
        except XenError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def write(self, path: str, value: bytes) -> None:
        self._request(Op.WRITE, path.encode() + _NUL + bytes(value), "xs_write", path)

    def mkdir(self, path: str) -> None:
        self._request(Op.MKDIR, self._path(path), "xs_mkdir", path)

    def rm(self, path: str) -> None:
        self._request(Op.RM, self._path(path), "xs_rm", path)

    def directory(self, path: str) -> list[str] | None:
        try:
            payload = self._request(Op.DIRECTORY, self._path(path), "xs_directory", path)
        except XenError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return [name.decode() for name in payload.split(_NUL) if name]

    def get_perms(self, path: str) -> list[str]:
        payload = self._request(Op.GET_PERMS, self._path(path), "xs_get_permissions", path)
        return [perm.decode() for perm in payload.split(_NUL) if perm]

    def set_perms(self, path: str, perms: Sequence[str]) -> None:
        payload = self._path(path) + b"".join(p.encode() + _NUL for p in perms)
        self._request(Op.SET_PERMS, payload, "xs_set_permissions", path)

    def get_domain_path(self, domid: int) -> str:
        payload = self._request(
            Op.GET_DOMAIN_PATH, f"{domid}".encode() + _NUL, "xs_get_domain_path", f"d{domid}"
        )
        return payload.rstrip(_NUL).decode()

    def introduce_domain(self, domid: int, mfn: int, port: int) -> None:
        payload = b"".join(f"{v}".encode() + _NUL for v in (domid, mfn, port))
        self._request(Op.INTRODUCE, payload, "xs_introduce_domain", f"d{domid}")

    def release_domain(self, domid: int) -> None:
        self._request(Op.RELEASE, f"{domid}".encode() + _NUL, "xs_release_domain", f"d{domid}")

    def watch(self, path: str, token: str) -> None:
        tokens = self._watches.get(token)
        if tokens is None:
            self._router.subscribe(token.encode(), self._sink)
            tokens = self._watches[token] = set()
        try:
            self._request(Op.WATCH, self._path(path) + token.encode() + _NUL, "xs_watch", path)
        except XenError:
            if not tokens:
                self._forget(token)
            raise
        tokens.add(path)

    def unwatch(self, path: str, token: str) -> None:
        self._request(Op.UNWATCH, self._path(path) + token.encode() + _NUL, "xs_unwatch", path)
        tokens = self._watches.get(token)
        if tokens is not None:
            tokens.discard(path)
            if not tokens:
                self._forget(token)

    def _forget(self, token: str) -> None:
        self._watches.pop(token, None)
        with contextlib.suppress(ValueError):
            self._router.unsubscribe(token.encode(), self._sink)

    def wait_event(self, timeout: float | None) -> WatchEvent | None:
        """The next watch event, or None after ``timeout`` seconds.  Events of tokens
        no longer watched are dropped (they may still arrive after UNWATCH)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            try:
                if wait > 0:
                    event = self._sink.events.get(timeout=wait)
                else:
                    event = self._sink.events.get_nowait()
            except queue.Empty:
                if not self._router.thread.is_alive():
                    raise self._lost("xs_read_watch", "waiting for a watch event") from None
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            token = event.token.decode("utf-8", "replace")
            if token in self._watches:
                return WatchEvent(event.path.decode("utf-8", "replace"), token)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._router.terminate()

    def __enter__(self) -> SimXenStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
