"""The host daemon: one process that *is* the simulated hypervisor for every process
attached to the host, the way Xen is one hypervisor under every domain.

It owns the `Machine` (domains, grant tables, event channels) and serves it on
``DIR/hyp.sock`` (SOCK_SEQPACKET).  One single-threaded ``selectors`` loop does
everything, so the machine needs no locks and every operation is atomic with respect
to the others, as a hypercall is under Xen's locks.

* A connection must first ATTACH with a domid and that domain's token; every later
  request acts as that domid.  A bad first frame drops the connection.
* Grant pages are memfds created here and passed with SCM_RIGHTS (see `pages`).
* Event channels (`evtpage`): each bound port has an eventfd, handed to its owner
  with the alloc/bind reply; a notifier asks once (EVT_TARGET) for its peer port's
  eventfd and then writes it itself, so events never pass through this loop.  The
  daemon writes each handle's binding generations on bind and close, and watches the
  handle's liveness socket: end-of-file there means the owner closed or died.
* A connection that drops (the process exited or was killed) is detached: its
  grants are ended, its mappings unmapped, its ports closed.  Nothing is left dangling.
* Destroying a domain sends its processes a NOTICE (ESRCH) and closes their
  connections, deletes its token, and RELEASEs it from xenstored.  Stopping the host
  ends every domain the same way (NOTICE ESHUTDOWN, RELEASE), then stops the
  xenstored it started.
* A bug while serving one client is logged and drops that client only.

Guests that take everything
---------------------------
Every attached connection, event-channel handle, port and shared page costs
this process file descriptors, and a guest may ask for them until none are
left, at which point dom0's next request would fail (and, before, the host
dropped the dom0 client whose ``EVT_OPEN`` hit EMFILE: had it been vtpmd,
every guest's vTPM would have gone).  So:

* per unprivileged domain, at most `MAX_ATTACH_PER_DOMAIN` attached
  connections and `MAX_HANDLES_PER_DOMAIN` event-channel handles (Xen bounds
  a domain's ports, ``max_evtchn_port``, and grants, gntalloc's limit,
  already); one more is refused with EMFILE, as Linux refuses one open too
  many.  Xenstore connections (`Op.XS_CONNECT`) are bounded by xenstored's
  "connections" quota, and refused with EMFILE here when it says no;
* a guest's request that would leave fewer than
  `limits.reserve_for_dom0` free descriptors is refused with EMFILE: those
  are dom0's, so dom0 always finds some;
* a request that fails for want of a resource anyway (``OSError``: EMFILE,
  ENFILE, ENOMEM) is answered with that errno, whoever asked: a client is
  never dropped for it;
* connections not yet attached are few (`MAX_PENDING`; the oldest goes), and
  at EMFILE a spare descriptor lets us accept and close a queued connection
  instead of spinning on the listener;
* all of this is logged once per interval (`limits.RateLimitedLog`), never
  as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import selectors
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pvgrub_py.sim.protocol as protocol
from pvgrub_py.sim.domains import Domain
from pvgrub_py.sim.evtpage import Endpoint, Endpoints
from pvgrub_py.sim.grants import GrantMapError
from pvgrub_py.sim.layout import HostLayout
from pvgrub_py.sim.machine import Caller, Machine
from pvgrub_py.sim.pages import reopen_readonly
from pvgrub_py.sim.protocol import Frame, Op, ProtocolError
from pvgrub_py.sim.xenstored import XenstoredLink
from pvgrub_py.sim.xsm import Flask
from pvgrub_py.xen.interface import DomainConfig, DomainInfo, XenError
from pvgrub_py.xenstore import limits

log = logging.getLogger("pvgrub_py.sim")

#: Attached connections one unprivileged domain may hold at once (each is a
#: process of the domain; dom0 is not limited).
MAX_ATTACH_PER_DOMAIN = 64
#: Open event-channel handles (/dev/xen/evtchn files) per unprivileged domain.
MAX_HANDLES_PER_DOMAIN = 64
#: Connections that have not sent ATTACH yet.
MAX_PENDING = 64
#: Operations that make this process open descriptors it keeps (or sends):
#: for a guest they must leave dom0's reserve alone.
_DESCRIPTOR_OPS = frozenset(
    {
        Op.EVT_OPEN,
        Op.EVT_ALLOC_UNBOUND,
        Op.EVT_BIND,
        Op.GNT_SHARE,
        Op.GNT_MAP,
        Op.XS_CONNECT,
    }
)


class HostStartError(XenError):
    """The host daemon cannot start in this directory."""


def info_args(info: DomainInfo) -> list[int]:
    return [
        info.domid,
        int(info.paused),
        int(info.dying),
        int(info.shutdown),
        info.max_memkb,
        info.tot_pages,
        info.max_vcpus,
    ]


@dataclass(eq=False)
class _Client:
    conn_id: int
    sock: socket.socket
    caller: Caller | None = None
    closed: bool = False


@dataclass
class _Reply:
    args: list[int] = field(default_factory=list)
    data: bytes = b""
    fds: list[int] = field(default_factory=list)
    #: Descriptors to close once sent (the others stay the daemon's).
    close_fds: list[int] = field(default_factory=list)


class HostDaemon:
    def __init__(
        self,
        host_dir: str | os.PathLike[str],
        xenstored: XenstoredLink | None,
        flask: Flask | None = None,
    ) -> None:
        self.layout = HostLayout.of(host_dir)
        self.xenstored = xenstored
        self.endpoints = Endpoints(on_closed=self._endpoint_closed)
        self.machine = Machine(
            self, self.endpoints, lambda: secrets.token_hex(16), os.cpu_count() or 1, flask
        )
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._clients: dict[int, _Client] = {}
        self._next_conn = 1
        self._stopping = False
        self._wakeup_r: socket.socket | None = None
        self._wakeup_w: socket.socket | None = None
        self._ratelog = limits.RateLimitedLog(log)
        self._spare: limits.SpareDescriptor | None = None

    # -- start and stop ------------------------------------------------------------------

    def bind(self) -> None:
        """Create the host directory, dom0's token and the socket (before serving)."""
        problem = self.layout.check_socket_paths()
        if problem is not None:
            raise HostStartError(errno.ENAMETOOLONG, "sim host", problem)
        self.layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.layout.tokens.mkdir(mode=0o700, exist_ok=True)
        path = str(self.layout.socket)
        if os.path.lexists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale
            else:
                raise HostStartError(errno.EADDRINUSE, "sim host", f"a host already runs on {path}")
            finally:
                probe.close()
        for stale in self.layout.tokens.glob("*"):  # left by a host that was killed
            stale.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        self._listener = sock
        limits.raise_descriptor_limit()  # before xenstored starts: it inherits it
        self._spare = limits.SpareDescriptor()
        dom0 = self.machine.domains.find(0)
        assert dom0 is not None
        self.domain_created(dom0)
        self.layout.pid_file.write_text(f"{os.getpid()}\n")

    def serve(self, ready: Callable[[], None] | None = None) -> int:
        """Serve until SIGTERM/SIGINT or `stop`; then release everything."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
        }
        self._sel.register(self._listener, selectors.EVENT_READ, ("listen", None))
        self._sel.register(self._wakeup_r, selectors.EVENT_READ, ("wakeup", None))
        try:
            if ready is not None:
                ready()
            while not self._stopping:
                for key, _mask in self._sel.select():
                    self._dispatch(*key.data)
        finally:
            signal.set_wakeup_fd(old_fd)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            self.close()
        return 0

    def _dispatch(self, kind: str, obj: object) -> None:
        """One ready descriptor.  A bug in handling one client must not take the
        host down: it is logged, and that client alone is dropped."""
        try:
            if kind == "client":
                assert isinstance(obj, _Client)
                self._readable(obj)
            elif kind == "endpoint":
                assert isinstance(obj, tuple)
                self._endpoint_readable(*obj)
            elif kind == "listen":
                self._accept()
            elif self._wakeup_r is not None:
                with contextlib.suppress(OSError):
                    self._wakeup_r.recv(4096)
        except Exception:
            log.exception("internal error handling %s", kind)
            client = obj if isinstance(obj, _Client) else None
            if isinstance(obj, tuple) and obj and isinstance(obj[0], _Client):
                client = obj[0]
            if client is not None:
                with contextlib.suppress(Exception):
                    self._drop(client, errno.EIO, "internal error in the simulated host")

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        if self._wakeup_w is not None:
            with contextlib.suppress(OSError):
                self._wakeup_w.send(b"\0")

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client, notice=errno.ESHUTDOWN)
        if self.xenstored is not None:  # the domains die with the host
            for domain in self.machine.domains.all():
                if domain.domid != 0:
                    self.xenstored.release(domain.domid)
        self.machine.close()
        self.endpoints.close_all()
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.layout.socket)
        if self.xenstored is not None:
            self.xenstored.close()
        for path in self.layout.tokens.glob("*"):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.layout.pid_file.unlink()
        for sock in (self._wakeup_r, self._wakeup_w):
            if sock is not None:
                sock.close()
        if self._spare is not None:
            self._spare.close()
            self._spare = None
        self._sel.close()

    # -- connections ---------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            # The connection stays queued and the listener readable: refuse it
            # with the spare descriptor rather than spin (dom0 is never in
            # that queue for long: guests cannot take dom0's reserve).
            if self._spare is not None and self._spare.refuse_one(self._listener):
                self._ratelog.warning(
                    "accept", "out of descriptors (%s): refused a connection", e.strerror
                )
            return
        sock.setblocking(False)
        pending = [c for c in self._clients.values() if c.caller is None]
        if len(pending) >= MAX_PENDING:  # the oldest unattached connection goes
            self._ratelog.warning("pending", "%d connections never attached", len(pending))
            self._drop(pending[0], errno.EMFILE, "too many connections waiting to attach")
        client = _Client(self._next_conn, sock)
        self._next_conn += 1
        self._clients[client.conn_id] = client
        self._sel.register(sock, selectors.EVENT_READ, ("client", client))

    def _drop(self, client: _Client, notice: int | None = None, why: str = "") -> None:
        if client.closed:
            return
        client.closed = True
        if notice is not None:
            with contextlib.suppress(OSError):
                client.sock.send(protocol.encode(Frame(Op.NOTICE, 0, (), why.encode(), notice)))
        self.machine.detach(client.conn_id)  # closes its handles, hence their endpoints
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client.sock)
        client.sock.close()
        self._clients.pop(client.conn_id, None)

    def _readable(self, client: _Client) -> None:
        if client.closed:
            return
        try:
            data = client.sock.recv(protocol.MAX_FRAME + 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log.debug("connection %d closed", client.conn_id)
            self._drop(client)
            return
        try:
            frame = protocol.decode(data)
        except ProtocolError as e:
            self._ratelog.warning(
                f"protocol-{_domid_of(client)}", "connection %d dropped: %s", client.conn_id, e
            )
            self._drop(client, errno.EPROTO, str(e))
            return
        self._handle(client, frame)

    def _send(self, client: _Client, frame: Frame, fds: list[int] | None = None) -> None:
        data = protocol.encode(frame)
        try:
            if not fds:
                client.sock.send(data)
            else:
                socket.send_fds(client.sock, [data], fds)
        except OSError as e:  # the client is gone or not reading its replies
            self._ratelog.warning(
                f"send-{_domid_of(client)}", "connection %d dropped: %s", client.conn_id, e
            )
            self._drop(client)

    def _handle(self, client: _Client, frame: Frame) -> None:
        if client.caller is None:
            self._attach(client, frame)
            return
        caller = client.caller
        if frame.op in protocol.ONE_WAY:
            return  # nothing a client may send one-way
        handler = self._HANDLERS.get(frame.op)
        try:
            if handler is None:
                raise XenError(errno.ENOSYS, "sim", f"unknown operation {frame.op}")
            if caller.domid != 0 and frame.op in _DESCRIPTOR_OPS:
                self._guest_may_open(caller, frame.op)
            result = handler(self, client, caller, frame)
        except GrantMapError as e:
            self._send(client, protocol.error_reply(frame, e.errno, e.detail, [e.status]))
            return
        except XenError as e:
            self._send(client, protocol.error_reply(frame, e.errno, e.message))
            return
        except OSError as e:  # out of descriptors or memory (XenError, an OSError too, is above)
            err = e.errno or errno.EIO
            self._ratelog.warning(
                f"oserror-{caller.domid}-{err}",
                "d%d: %s failed: %s",
                caller.domid,
                _op_name(frame.op),
                e.strerror or e,
            )
            self._send(client, protocol.error_reply(frame, err, f"simulated host: {e.strerror}"))
            return
        except (IndexError, ValueError) as e:
            self._send(client, protocol.error_reply(frame, errno.EINVAL, f"bad arguments: {e}"))
            return
        try:
            reply = protocol.reply(frame, result.args, result.data, len(result.fds))
            self._send(client, reply, result.fds)
        finally:
            for fd in result.close_fds:
                os.close(fd)

    def _attach(self, client: _Client, frame: Frame) -> None:
        if frame.op != Op.ATTACH or len(frame.args) != 1:
            self._drop(client, errno.EPROTO, "the first frame must be ATTACH")
            return
        domid = frame.args[0]
        try:
            caller = self.machine.attach(client.conn_id, domid, frame.data.decode("ascii"))
            if domid != 0:
                self._attach_allowed(caller)
        except (XenError, UnicodeDecodeError) as e:
            self.machine.detach(client.conn_id)
            err = e.errno if isinstance(e, XenError) else errno.EPERM
            self._send(client, protocol.error_reply(frame, err, str(e)))
            self._drop(client)
            return
        client.caller = caller
        log.debug("connection %d is d%d", client.conn_id, domid)
        self._send(client, protocol.reply(frame, [domid]))

    # -- what a guest may take ------------------------------------------------------------

    def _refuse(self, caller: Caller, what: str, why: str) -> XenError:
        self._ratelog.warning(f"refused-{caller.domid}-{what}", "d%d: %s", caller.domid, why)
        return XenError(errno.EMFILE, what, why)

    def _attach_allowed(self, caller: Caller) -> None:
        """The connection just attached as ``caller``: within its domain's cap
        and outside dom0's reserve of descriptors?"""
        have = self.machine.connections_of(caller.domid)
        if have > MAX_ATTACH_PER_DOMAIN:
            raise self._refuse(
                caller, "attach", f"d{caller.domid} has {MAX_ATTACH_PER_DOMAIN} connections"
            )
        if not limits.guest_may_open(0):
            raise self._refuse(caller, "attach", "descriptors left are reserved for dom0")

    def _guest_may_open(self, caller: Caller, op: int) -> None:
        handles = self.machine.evtchn.handles_of_domain(caller.domid)
        if op == Op.EVT_OPEN and handles >= MAX_HANDLES_PER_DOMAIN:
            raise self._refuse(
                caller,
                "xenevtchn_open",
                f"d{caller.domid} has {MAX_HANDLES_PER_DOMAIN} event channel handles",
            )
        if not limits.guest_may_open(2):
            raise self._refuse(caller, _op_name(op), "descriptors left are reserved for dom0")

    # -- event-channel endpoints -------------------------------------------------------

    def _endpoint_closed(self, handle_id: int, endpoint: Endpoint) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(endpoint.alive)

    def _endpoint_readable(self, client: _Client, handle_id: int) -> None:
        """The owner closed its receiving end without EVT_CLOSE (exit, kill, GC)."""
        endpoint = self.endpoints.get(handle_id)
        if endpoint is None:
            return
        try:
            data = endpoint.alive.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # owners never write here; ignore it
        if client.caller is not None and not client.closed:
            with contextlib.suppress(XenError):
                self.machine.evtchn_close(client.caller, handle_id)
        else:
            self._endpoint_closed(handle_id, endpoint)

    # -- Effects (called by the machine) -------------------------------------------------

    def domain_created(self, domain: Domain) -> None:
        path = self.layout.token(domain.domid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(domain.token + "\n")

    def domain_destroyed(self, domid: int, connections: list[int]) -> None:
        with contextlib.suppress(OSError):
            self.layout.token(domid).unlink()
        for conn_id in connections:
            client = self._clients.get(conn_id)
            if client is not None:
                self._drop(client, errno.ESRCH, f"domain {domid} was destroyed")
        if self.xenstored is not None:
            self.xenstored.release(domid)

    # -- operations ----------------------------------------------------------------------

    def _stats(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        return _Reply(data=self.machine.stats().to_json())

    def _dom_create(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        max_vcpus, max_memkb, pvh, handle_len = frame.args
        config = DomainConfig(
            max_vcpus=max_vcpus,
            max_memkb=max_memkb,
            pvh=bool(pvh),
            handle=frame.data[:handle_len],
            name=frame.data[handle_len:].decode("utf-8", "replace"),
        )
        return _Reply([self.machine.create(caller, config)])

    def _dom_destroy(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.destroy(caller, frame.args[0])
        return _Reply()

    def _dom_pause(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.pause(caller, frame.args[0])
        return _Reply()

    def _dom_unpause(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.unpause(caller, frame.args[0])
        return _Reply()

    def _dom_info(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        info = self.machine.info(caller, frame.args[0])
        return _Reply(info_args(info), info.handle)

    def _dom_list(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        infos = self.machine.list_domains(caller)
        args = [a for info in infos for a in info_args(info)]
        return _Reply(args, b"".join(info.handle for info in infos))

    def _dom_set_maxmem(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.set_max_memory(caller, frame.args[0], frame.args[1])
        return _Reply()

    def _dom_set_maxvcpus(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.set_max_vcpus(caller, frame.args[0], frame.args[1])
        return _Reply()

    def _dom_alloc_unbound(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        return _Reply([self.machine.alloc_unbound_in(caller, frame.args[0], frame.args[1])])

    def _gnt_share(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        grantee, count, writable = frame.args
        share = self.machine.share(caller, grantee, count, bool(writable))
        return _Reply([share.share_id, *(g.ref for g in share.grants)], fds=[share.region.fd])

    def _gnt_end(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.end_share(caller, frame.args[0])
        return _Reply()

    def _gnt_map(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        granter, ref, writable = frame.args
        mapping = self.machine.map(caller, granter, ref, bool(writable))
        fd = mapping.grant.region.fd
        args = [mapping.map_id, self.machine.grants.page_offset(mapping)]
        if mapping.writable:
            return _Reply(args, fds=[fd])
        readonly = reopen_readonly(fd)
        return _Reply(args, fds=[readonly], close_fds=[readonly])

    def _gnt_unmap(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.unmap(caller, frame.args[0])
        return _Reply()

    def _evt_open(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        handle = self.machine.evtchn_open(caller)
        endpoint = self.endpoints.get(handle.handle_id)
        assert endpoint is not None
        try:
            theirs = os.dup(endpoint.alive_theirs.fileno())
        except OSError:
            self.machine.evtchn_close(caller, handle.handle_id)  # nothing half-open
            raise
        self._sel.register(
            endpoint.alive, selectors.EVENT_READ, ("endpoint", (client, handle.handle_id))
        )
        endpoint.alive_theirs.close()  # the owner's alone now: its close is our EOF
        return _Reply([handle.handle_id], fds=[endpoint.page_fd, theirs], close_fds=[theirs])

    def _evt_close(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.evtchn_close(caller, frame.args[0])
        return _Reply()

    def _evt_target(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        target = self.machine.evtchn_target(caller, frame.args[0], frame.args[1])
        handle_id = 0 if target.handle is None else target.handle.handle_id
        args = [target.state, target.remote_domid, target.remote_port, target.gen, handle_id]
        eventfd = self.endpoints.eventfd(handle_id, target.remote_port) if handle_id else None
        return _Reply(args, fds=[] if eventfd is None else [eventfd])

    def _port_reply(self, handle_id: int, port: int) -> _Reply:
        """A new port and, for its owner, its eventfd."""
        eventfd = self.endpoints.eventfd(handle_id, port)
        return _Reply([port], fds=[] if eventfd is None else [eventfd])

    def _evt_alloc_unbound(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        handle_id, remote = frame.args
        return self._port_reply(handle_id, self.machine.alloc_unbound(caller, handle_id, remote))

    def _evt_bind(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        handle_id, remote_dom, remote_port = frame.args
        port = self.machine.bind_interdomain(caller, handle_id, remote_dom, remote_port)
        return self._port_reply(handle_id, port)

    def _evt_unbind(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        self.machine.unbind(caller, frame.args[0], frame.args[1])
        return _Reply()

    def _evt_status(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        return _Reply(list(self.machine.evtchn_status(caller, frame.args[0], frame.args[1])))

    def _xs_connect(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        if self.xenstored is None:
            raise XenError(errno.ENOTCONN, "xs_open", "this simulated host runs no xenstored")
        sock = self.xenstored.connect(caller.domid)
        fd = os.dup(sock.fileno())
        sock.close()
        return _Reply(fds=[fd], close_fds=[fd])

    def _xsm_peer_label(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        label = self.machine.evtchn_peer_label(caller, frame.args[0])
        return _Reply(data=label.encode("utf-8", "surrogateescape"))

    def _xsm_set_label(self, client: _Client, caller: Caller, frame: Frame) -> _Reply:
        label = frame.data.decode("utf-8", "surrogateescape")
        self.machine.set_xsm_label(caller, frame.args[0], label)
        return _Reply()

    _HANDLERS: dict[int, Callable[[HostDaemon, _Client, Caller, Frame], _Reply]] = {
        Op.STATS: _stats,
        Op.DOM_CREATE: _dom_create,
        Op.DOM_DESTROY: _dom_destroy,
        Op.DOM_PAUSE: _dom_pause,
        Op.DOM_UNPAUSE: _dom_unpause,
        Op.DOM_INFO: _dom_info,
        Op.DOM_LIST: _dom_list,
        Op.DOM_SET_MAXMEM: _dom_set_maxmem,
        Op.DOM_SET_MAXVCPUS: _dom_set_maxvcpus,
        Op.DOM_ALLOC_UNBOUND: _dom_alloc_unbound,
        Op.GNT_SHARE: _gnt_share,
        Op.GNT_END: _gnt_end,
        Op.GNT_MAP: _gnt_map,
        Op.GNT_UNMAP: _gnt_unmap,
        Op.EVT_OPEN: _evt_open,
        Op.EVT_CLOSE: _evt_close,
        Op.EVT_ALLOC_UNBOUND: _evt_alloc_unbound,
        Op.EVT_BIND: _evt_bind,
        Op.EVT_UNBIND: _evt_unbind,
        Op.EVT_STATUS: _evt_status,
        Op.EVT_TARGET: _evt_target,
        Op.XS_CONNECT: _xs_connect,
        Op.XSM_PEER_LABEL: _xsm_peer_label,
        Op.XSM_SET_LABEL: _xsm_set_label,
    }


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op {op}"


def _domid_of(client: _Client) -> str:
    return "unattached" if client.caller is None else str(client.caller.domid)
