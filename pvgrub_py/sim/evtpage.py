"""Event delivery without a middleman: one eventfd per port, an epoll per handle.

On Xen, sending an event does not go through the receiver's process: the hypervisor
sets the port's bit in the receiver's ``evtchn_pending`` (shared_info) and kicks it
if the port is not masked.  The Linux evtchn driver then masks the port and queues
it for ``read``; ``xenevtchn_unmask`` clears the mask and, if the port became pending
meanwhile, the event fires again.  The simulator lets the kernel play that part:

* every bound port has an **eventfd**, its pending state: a notify is one
  ``eventfd_write`` by the notifying process, and several notifications coalesce
  into one non-zero counter (Xen's single pending bit);
* the owning handle has an **epoll** with every port's eventfd registered
  ``EPOLLIN | EPOLLONESHOT``.  A port epoll reports is disarmed, i.e. *masked*,
  until `Receiver.unmask` re-arms it (``EPOLL_CTL_MOD``), and if it was notified
  while masked the re-armed descriptor is ready at once: the event is delivered on
  unmask.  The epoll descriptor is the handle's ``fileno``, readable exactly when an
  unmasked port is pending, as /dev/xen/evtchn is;
* a notifier checks its own port's **binding generation** in its handle's
  *generation page* (a memfd the host daemon alone writes: set on bind, zeroed when
  the binding ends) before writing, so a notify on a channel whose peer closed is
  dropped, as Xen drops a notify on an unbound port.  A notify racing with the close
  itself may still land, which is indistinguishable from one sent just before it;
* a **liveness socketpair** per handle lets each side see the other go: the daemon
  sees end-of-file when the owner closes (or dies), the owner's epoll sees hang-up
  when the host closes the handle (domain destroyed, host stopped).

Who may notify whom is decided by the host daemon: it hands a notifier the peer
port's eventfd only for a port the notifier has bound (`Op.EVT_TARGET`).  A process
holding such a descriptor could write it at will, which only makes spurious events
(legal in Xen); binding and unbinding stay the daemon's.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import socket
import struct
from collections.abc import Callable

from pvgrub_py.sim.evtchn import DOM0_MAX_PORT, Handle
from pvgrub_py.xen.interface import XenError

MAX_PORT_SLOTS = DOM0_MAX_PORT + 1
GEN = struct.Struct("<I")
PAGE_BYTES = MAX_PORT_SLOTS * GEN.size
_ARMED = select.EPOLLIN | select.EPOLLONESHOT


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class GenerationPage:
    """Binding generations by port: written by the daemon, read by notifiers."""

    def __init__(self, fd: int, writable: bool) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self._map: mmap.mmap | None = mmap.mmap(fd, PAGE_BYTES, mmap.MAP_SHARED, prot)

    def get(self, port: int) -> int:
        if self._map is None or not 0 <= port < MAX_PORT_SLOTS:
            return 0
        gen: int = GEN.unpack_from(self._map, port * GEN.size)[0]
        return gen

    def set(self, port: int, gen: int) -> None:
        if self._map is not None and 0 <= port < MAX_PORT_SLOTS:
            GEN.pack_into(self._map, port * GEN.size, gen)

    def close(self) -> None:
        mapping, self._map = self._map, None
        if mapping is not None:
            mapping.close()


def notify(eventfd: int) -> None:
    """Set a port pending (the hot path: one system call)."""
    try:  # noqa: SIM105 - the hot path: no context manager
        os.eventfd_write(eventfd, 1)
    except OSError:
        pass


class Receiver:
    """The owner's side of a handle: waits for, masks and unmasks its ports."""

    def __init__(self, alive: socket.socket) -> None:
        self._alive = alive
        self._epoll = select.epoll()
        self._epoll.register(alive, select.EPOLLIN | select.EPOLLRDHUP)
        self._ports: dict[int, int] = {}  # port -> eventfd
        self._by_fd: dict[int, int] = {}  # eventfd -> port

    def fileno(self) -> int:
        return self._epoll.fileno()

    def add(self, port: int, eventfd: int) -> None:
        """Own ``eventfd`` as ``port``'s pending state; the port starts unmasked."""
        self.remove(port)
        self._ports[port] = eventfd
        self._by_fd[eventfd] = port
        self._epoll.register(eventfd, _ARMED)

    def remove(self, port: int) -> None:
        eventfd = self._ports.pop(port, None)
        if eventfd is not None:
            del self._by_fd[eventfd]
            self._epoll.unregister(eventfd)
            os.close(eventfd)

    def wait(self, timeout: float | None) -> int | None:
        """The next pending unmasked port, now masked; None after ``timeout``."""
        while True:
            events = self._epoll.poll(-1 if timeout is None else max(0.0, timeout), 1)
            if not events:
                return None
            fd = events[0][0]
            port = self._by_fd.get(fd)
            if port is None:  # the liveness socket: the host closed this handle
                raise XenError(
                    errno.EPIPE,
                    "xenevtchn_pending",
                    "the host closed this event channel handle (domain destroyed or host stopped)",
                )
            try:  # noqa: SIM105 - the hot path: no context manager
                os.eventfd_read(fd)  # consume the pending state; the port stays masked
            except BlockingIOError:
                pass
            return port

    def unmask(self, port: int) -> None:
        eventfd = self._ports.get(port)
        if eventfd is not None:
            self._epoll.modify(eventfd, _ARMED)

    def close(self) -> None:
        for port in list(self._ports):
            self.remove(port)
        self._epoll.close()
        self._alive.close()


class Endpoint:
    """The daemon's side of one handle: its generation page, the daemon's copy of
    every port's eventfd, and its end of the liveness socketpair."""

    def __init__(self) -> None:
        self.page_fd = os.memfd_create("evtchn-generations", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.page_fd, PAGE_BYTES)
            self.page = GenerationPage(self.page_fd, writable=True)
            self.alive, self.alive_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.alive.setblocking(False)
        except BaseException:
            os.close(self.page_fd)
            raise
        self.eventfds: dict[int, int] = {}

    def port_opened(self, port: int) -> None:
        self.port_closed(port)
        self.eventfds[port] = new_eventfd()

    def port_closed(self, port: int) -> None:
        eventfd = self.eventfds.pop(port, None)
        if eventfd is not None:
            os.close(eventfd)
        self.page.set(port, 0)

    def deliver(self, port: int) -> None:
        eventfd = self.eventfds.get(port)
        if eventfd is not None:
            notify(eventfd)

    def close(self) -> None:
        """The handle is gone: the owner's epoll sees the hang-up at once."""
        with contextlib.suppress(OSError):
            self.alive.shutdown(socket.SHUT_RDWR)
        for port in list(self.eventfds):
            self.port_closed(port)
        self.page.close()
        self.alive.close()
        self.alive_theirs.close()  # idempotent: closed once handed to the owner
        os.close(self.page_fd)


class Endpoints:
    """`evtchn.Slots` over real eventfds and pages: one `Endpoint` per open handle."""

    def __init__(self, on_closed: Callable[[int, Endpoint], None] | None = None) -> None:
        self._endpoints: dict[int, Endpoint] = {}
        self._on_closed = on_closed

    def get(self, handle_id: int) -> Endpoint | None:
        return self._endpoints.get(handle_id)

    def eventfd(self, handle_id: int, port: int) -> int | None:
        endpoint = self._endpoints.get(handle_id)
        return None if endpoint is None else endpoint.eventfds.get(port)

    def opened(self, handle: Handle) -> None:
        self._endpoints[handle.handle_id] = Endpoint()

    def closed(self, handle: Handle) -> None:
        endpoint = self._endpoints.pop(handle.handle_id, None)
        if endpoint is not None:
            self._closing(handle.handle_id, endpoint)

    def _closing(self, handle_id: int, endpoint: Endpoint) -> None:
        if self._on_closed is not None:
            self._on_closed(handle_id, endpoint)
        endpoint.close()

    def port_opened(self, handle: Handle, port: int) -> None:
        endpoint = self._endpoints.get(handle.handle_id)
        if endpoint is not None:
            endpoint.port_opened(port)

    def port_closed(self, handle: Handle, port: int) -> None:
        endpoint = self._endpoints.get(handle.handle_id)
        if endpoint is not None:
            endpoint.port_closed(port)

    def set_generation(self, handle: Handle, port: int, gen: int) -> None:
        endpoint = self._endpoints.get(handle.handle_id)
        if endpoint is not None:
            endpoint.page.set(port, gen)

    def deliver(self, handle: Handle, port: int) -> None:
        endpoint = self._endpoints.get(handle.handle_id)
        if endpoint is not None:
            endpoint.deliver(port)

    def close_all(self) -> None:
        for handle_id in list(self._endpoints):
            self._closing(handle_id, self._endpoints.pop(handle_id))
