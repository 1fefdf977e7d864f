"""The xenstored of the simulator: asyncio unix sockets around `XenstoreService`.

How clients reach it
--------------------
* ``PATH`` (``--socket``): the toolstack socket.  Clients here are dom0 and
  privileged, as on a real host's ``/var/run/xenstored/socket``.  Point pyxs
  (``pyxs.Client(unix_socket_path=PATH)``) or libxenstore
  (``XENSTORED_PATH=PATH``) at it.
* ``PATH.d/<domid>``: one socket per *introduced* domain.  It appears when
  dom0 sends INTRODUCE and disappears on RELEASE, standing in for the
  domain's ring page and event channel; a client connecting there is that
  domain, unprivileged, with relative paths based at
  ``/local/domain/<domid>``.  So a simulated guest's frontend runs
  ``XENSTORED_PATH=PATH.d/5 ...`` or ``pyxs.Client(unix_socket_path=...)``
  unchanged.  RELEASE also disconnects whoever is connected there.
* In-process: `XenstoredThread.connect_as` returns a connected socket for
  any domid (no INTRODUCE needed), and `XenstoredThread.call` runs a
  function on the live `XenstoreService` in the daemon's thread.

Bounded memory against hostile clients
--------------------------------------
A header announcing more than XENSTORE_PAYLOAD_MAX drops that client only
(xenstored does the same).  Input is framed one message at a time; when a
client's unsent output passes `HIGH_WATER` we stop reading from it until it
catches up, so a client that writes without reading cannot make us buffer
without bound.  Watch events for a client whose output exceeds
`EVENT_DROP_AT` are dropped, as xenstored drops events beyond a domain's
memory quota (xenstore.txt: watches may be lost, never invented).

Descriptors against hostile guests
----------------------------------
A guest may connect to ``PATH.d/<domid>`` again and again.  Each accepted
connection is a descriptor, so without limits a guest would exhaust ours
and dom0 (the toolstack, vtpmd) could not connect any more.  So:

* a domain has at most its "connections" quota of connections at once
  (`XenstoreService.refuse_connection`); one more is accepted and closed at
  once (the client reads end-of-file), logged once per interval;
* a guest's connection is refused the same way when it would leave fewer
  than `limits.reserve_for_dom0` free descriptors: those are dom0's;
* we accept ourselves rather than through asyncio's server: when accept
  fails with EMFILE anyway, a spare descriptor lets us accept and close the
  waiting connection (`limits.SpareDescriptor`) instead of logging a
  traceback and leaving dom0's connection queued;
* whatever a guest makes us complain about is logged rate-limited
  (`limits.RateLimitedLog`), never as a traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pvgrub_py.xenstore import limits
from pvgrub_py.xenstore.errors import XenstoreError, XsProtocolError
from pvgrub_py.xenstore.service import Connection, XenstoreService
from pvgrub_py.xenstore.store import Quotas
from pvgrub_py.xenstore.wire import MessageReader

HIGH_WATER = 256 * 1024
EVENT_DROP_AT = 1024 * 1024
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
#: Connections accepted per wake-up of one listener (asyncio's default backlog
#: loop does the same), so one busy socket cannot starve the others.
ACCEPT_BATCH = 64
#: How long a listener rests when even the spare descriptor is gone.
ACCEPT_RETRY_DELAY = 0.1

log = logging.getLogger("pvgrub_py.xenstore")
T = TypeVar("T")


class XenstoredStartError(XenstoreError):
    """The daemon cannot listen where it was asked to."""


def domain_socket_path(socket_path: str | os.PathLike[str], domid: int) -> str:
    """Where domain ``domid`` connects: ``<socket>.d/<domid>``."""
    return f"{os.fspath(socket_path)}.d/{domid}"


class _ClientProtocol(asyncio.Protocol):
    """One client socket: framing, flow control, and the `Connection`."""

    def __init__(self, server: XenstoredServer, domid: int, privileged: bool | None) -> None:
        self._server = server
        self._domid = domid
        self._privileged = privileged
        self._reader = MessageReader()
        self._paused = False
        self._transport: asyncio.Transport | None = None
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        service = self._server.service
        refused = service.refuse_connection(self._domid, self._privileged)
        if refused is not None:
            self._server.ratelog.warning(
                f"connections-{self._domid}", "refused a connection: %s", refused
            )
            transport.abort()
            return
        self._transport = transport
        self._server.clients.add(self)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        label = f"fd{transport.get_extra_info('socket').fileno()}"
        self._conn = service.open(
            self._domid, self._write, self._abort, privileged=self._privileged, label=label
        )

    def data_received(self, data: bytes) -> None:
        if self._conn is None:
            return  # refused in connection_made
        self._reader.feed(data)
        self._process()

    def _process(self) -> None:
        conn, transport, service = self._conn, self._transport, self._server.service
        assert conn is not None and transport is not None
        while not self._paused and not conn.closed:
            try:
                msg = self._reader.next_message()
            except XsProtocolError as e:
                self._server.ratelog.warning(f"protocol-{conn.domid}", "%r dropped: %s", conn, e)
                self._abort()
                return
            if msg is None:
                return
            service.handle(conn, msg)

    def _write(self, data: bytes, droppable: bool) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if droppable and transport.get_write_buffer_size() >= EVENT_DROP_AT:
            return False
        transport.write(data)
        return True

    def _abort(self) -> None:
        if self._conn is not None:
            self._server.service.close(self._conn)
        if self._transport is not None:
            self._transport.abort()

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._server.service.close(self._conn)
        self._transport = None
        self._server.clients.discard(self)

    @property
    def backlog(self) -> int:
        """Bytes queued for this client and not yet taken by the kernel."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()


def _listen(path: str) -> socket.socket:
    """Bind and listen synchronously, so a client may connect as soon as we
    return (the INTRODUCE reply must not race the domain socket).

    A stale socket file is replaced, as xenstored unlinks its socket before
    binding; a live daemon's socket or any other kind of file is refused.
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise XenstoredStartError(f"socket path {path}: longer than {SUN_PATH_MAX} bytes")
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(path).st_mode
        if not stat.S_ISSOCK(mode):
            raise XenstoredStartError(f"socket path {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise XenstoredStartError(f"socket path {path}: a daemon is already listening")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)  # xenstored's socket mode
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise XenstoredStartError(f"socket path {path}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


class XenstoredServer:
    """The daemon: the toolstack socket, per-domain sockets, the service.

    Use from inside a running event loop: `bind` (sync), then `serve`; or
    let `run_daemon` / `XenstoredThread` do that.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None, quotas: Quotas | None = None
    ) -> None:
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        self.service = XenstoreService(quotas)
        self.clients: set[_ClientProtocol] = set()
        self._listeners: dict[int, tuple[socket.socket, str, int]] = {}
        self._servers: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: set[asyncio.Task[None]] = set()
        self._admitting: set[asyncio.Task[object]] = set()
        self._spare: limits.SpareDescriptor | None = None
        self.ratelog = limits.RateLimitedLog(log)
        self.service.ratelog = self.ratelog
        self.service.on_introduce.append(self._domain_introduced)
        self.service.on_release.append(self.close_domain_socket)

    # -- listening sockets -------------------------------------------------------

    def bind(self) -> None:
        """Create the toolstack socket now (before forking or serving)."""
        if self.socket_path is not None and 0 not in self._listeners:
            self._add_listener(0, self.socket_path)

    def _add_listener(self, key: int, path: str) -> None:
        sock = _listen(path)
        self._listeners[key] = (sock, path, os.stat(path).st_ino)
        if self._loop is not None:
            task = self._loop.create_task(self._start_server(key))
            self._starting.add(task)  # asyncio keeps only weak references to tasks
            task.add_done_callback(self._starting.discard)

    async def serve(self) -> None:
        """Start accepting on every bound socket (call once, in the loop)."""
        self._loop = asyncio.get_running_loop()
        limits.raise_descriptor_limit()
        if self._spare is None:
            self._spare = limits.SpareDescriptor()
        self.bind()
        for key in list(self._listeners):
            await self._start_server(key)

    async def _start_server(self, key: int) -> None:
        assert self._loop is not None
        entry = self._listeners.get(key)
        if entry is None or key in self._servers:
            return
        self._servers.add(key)
        self._loop.add_reader(entry[0].fileno(), self._accept_ready, key)

    def _resume_accepting(self, key: int) -> None:
        entry = self._listeners.get(key)
        if entry is not None and key in self._servers and self._loop is not None:
            self._loop.add_reader(entry[0].fileno(), self._accept_ready, key)

    def _accept_ready(self, key: int) -> None:
        """Accept what is queued on listener ``key`` (0: the toolstack socket,
        domid + 1: a domain's); see "Descriptors against hostile guests"."""
        entry = self._listeners.get(key)
        if entry is None or self._loop is None:
            return
        listener, path = entry[0], entry[1]
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if self._spare is not None and self._spare.refuse_one(listener):
                    self.ratelog.warning(
                        "accept", "out of descriptors (%s): refused a connection on %s",
                        e.strerror, path,
                    )  # fmt: skip
                    continue
                self.ratelog.warning("accept", "cannot accept on %s: %s", path, e.strerror)
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting, key)
                return
            self._admit(sock, key)

    def _admit(self, sock: socket.socket, key: int) -> None:
        assert self._loop is not None
        domid = key - 1 if key else 0
        if key and not limits.guest_may_open():
            self.ratelog.warning(
                "reserve", "refused a connection of domain %d: descriptors reserved for dom0", domid
            )
            sock.close()
            return
        sock.setblocking(False)
        privileged = True if key == 0 else None

        def factory() -> _ClientProtocol:
            return _ClientProtocol(self, domid, privileged)

        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(factory, sock=sock)
        )
        self._admitting.add(task)
        task.add_done_callback(lambda done: self._admitted(done, sock))

    def _admitted(self, task: asyncio.Task[object], sock: socket.socket) -> None:
        self._admitting.discard(task)
        if task.cancelled() or task.exception() is not None:
            error = None if task.cancelled() else task.exception()
            self.ratelog.warning("admit", "cannot serve a new connection: %s", error)
            sock.close()

    def _domain_introduced(self, domid: int) -> None:
        try:
            self.open_domain_socket(domid)
        except XenstoredStartError as e:
            # The INTRODUCE itself stands, as on a host whose guest cannot
            # reach its ring: the guest's connection attempts will fail.
            log.error("domain %d introduced but unreachable: %s", domid, e)

    def open_domain_socket(self, domid: int) -> str | None:
        """Listen on ``PATH.d/<domid>`` for connections as ``domid``
        (called on INTRODUCE; callable directly for a domain the simulator
        wants reachable without INTRODUCE).  None without a socket path."""
        if self.socket_path is None:
            return None
        path = domain_socket_path(self.socket_path, domid)
        if domid + 1 not in self._listeners:
            Path(path).parent.mkdir(mode=0o700, exist_ok=True)
            self._add_listener(domid + 1, path)
        return path

    def close_domain_socket(self, domid: int) -> None:
        self._close_listener(domid + 1)

    def _close_listener(self, key: int) -> None:
        entry = self._listeners.pop(key, None)
        if entry is None:
            return
        sock, path, inode = entry
        if key in self._servers:
            self._servers.discard(key)
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:  # never remove a successor's socket
                os.unlink(path)

    def output_backlog(self) -> int:
        """The largest number of bytes queued for any one client (a health
        check: flow control keeps it near HIGH_WATER)."""
        return max((client.backlog for client in self.clients), default=0)

    # -- in-process clients --------------------------------------------------------

    async def attach(self, sock: socket.socket, domid: int, privileged: bool | None = None) -> None:
        """Serve an already connected socket as domain ``domid``."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        await loop.connect_accepted_socket(
            lambda: _ClientProtocol(self, domid, privileged), sock=sock
        )

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening, remove our socket files, disconnect everyone."""
        for key in sorted(self._listeners, reverse=True):
            self._close_listener(key)
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                os.rmdir(f"{self.socket_path}.d")
        for conn in list(self.service.connections):
            self.service.close(conn)
            conn.drop()
        if self._spare is not None:
            self._spare.close()
            self._spare = None


def run_daemon(server: XenstoredServer, ready: Callable[[], None] | None = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT, then remove our
    sockets; exit status 0.  ``ready`` runs once clients can connect."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await server.serve()
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            server.close()

    asyncio.run(main())
    return 0


class XenstoredThread:
    """A daemon on its own event loop in a background thread.

    For tests and for the in-process simulator::

        with XenstoredThread(tmp / "xs.sock") as xsd:
            pyxs.Client(unix_socket_path=str(xsd.socket_path))
            guest = xsd.connect_as(5)          # raw socket, dom5
            xsd.call(lambda svc: svc.store.get("/local"))
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, quotas: Quotas | None = None
    ) -> None:
        self.server = XenstoredServer(socket_path, quotas)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="xenstored", daemon=True)
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def socket_path(self) -> str | None:
        return self.server.socket_path

    def domain_socket_path(self, domid: int) -> str:
        if self.server.socket_path is None:
            raise XenstoredStartError("this daemon has no socket path")
        return domain_socket_path(self.server.socket_path, domid)

    def start(self) -> XenstoredThread:
        self.server.bind()
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise self._failure
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._stop = asyncio.Event()
            self._loop.run_until_complete(self.server.serve())
        except BaseException as e:
            self._failure = e
            self._started.set()
            return
        self._started.set()
        try:
            self._loop.run_until_complete(self._stop.wait())
        finally:
            self.server.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> XenstoredThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, fn: Callable[[XenstoreService], T], timeout: float = 10) -> T:
        """Run ``fn(service)`` in the daemon's thread and return its result."""

        async def run() -> T:
            return fn(self.server.service)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    def connect_as(self, domid: int, privileged: bool | None = None) -> socket.socket:
        """A socket connected to the daemon as domain ``domid`` (privileged
        defaults to "is dom0").  The caller owns and closes it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        future = asyncio.run_coroutine_threadsafe(
            self.server.attach(theirs, domid, privileged), self._loop
        )
        future.result(10)
        return ours

    def open_domain_socket(self, domid: int) -> str:
        """Make ``PATH.d/<domid>`` reachable without an INTRODUCE."""
        path = self.call(lambda _svc: self.server.open_domain_socket(domid))
        if path is None:
            raise XenstoredStartError("this daemon has no socket path")
        return path
