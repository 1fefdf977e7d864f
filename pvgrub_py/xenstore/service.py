"""The daemon's brain, without sockets: one `Connection` per client and a
handler per xs_wire message type.

Request handling follows xenstored's process_message()
(tools/xenstored/core.c) so errors come back in the same order a real host
gives them:

1. a type we do not handle (including the reply-only WATCH_EVENT and ERROR,
   the removed RESTRICT=20 and anything >= XS_TYPE_COUNT): ENOSYS;
2. a dom0-only type from an unprivileged domain: EACCES;
3. a non-zero tx_id naming no open transaction of this connection: ENOENT
   (WATCH and UNWATCH ignore tx_id, xenstore.txt);
4. then the handler, whose failures are `XsRequestError`.

A reply too long for XENSTORE_PAYLOAD_MAX becomes E2BIG.  A bug in a handler
is logged and answered EIO rather than taking the daemon down.

Socket clients are dom0 and privileged.  Domain connections (see `daemon`)
carry their domid and are unprivileged unless they are dom0.

Quotas count per domain, never per connection.  On Xen a domain has one
connection (its ring), so xenstored's per-domain accounting
(tools/xenstored/domain.c: the domain's ``nbentry``, ``nbwatch``,
``acc[]``) cannot be multiplied by connecting again; here a simulated
domain's processes each connect on their own, so every count (watches,
open transactions, transaction memory, nodes, connections) is summed over
all connections of the domain.  dom0 and other privileged connections are
not limited, as in xenstored.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Final

from pvgrub_py.xenstore import node_ops, paths
from pvgrub_py.xenstore.domains import SUPPORTED_FEATURES, DomainRegistry
from pvgrub_py.xenstore.errors import XsRequestError
from pvgrub_py.xenstore.limits import RateLimitedLog
from pvgrub_py.xenstore.node_ops import Change, NodeView
from pvgrub_py.xenstore.perms import DOM0, NONE, Caller, Perm, format_perms, parse_perms
from pvgrub_py.xenstore.store import Quotas, Store
from pvgrub_py.xenstore.transactions import Transaction
from pvgrub_py.xenstore.watches import WatchRegistry
from pvgrub_py.xenstore.wire import (
    NUL,
    OK,
    XENSTORE_PAYLOAD_MAX,
    Message,
    XsType,
    error_payload,
    join_strings,
    one_string,
    pack,
    strings,
    type_name,
)

#: Writes bytes to the client; ``droppable`` marks a watch event, which the
#: transport may drop when the client is not reading (returns False then).
WriteFn = Callable[[bytes, bool], bool]

_PRIV: Final = 1  # dom0 only (xenstored's XS_FLAG_PRIV)
_NOTID: Final = 2  # tx_id ignored (XS_FLAG_NOTID)

log = logging.getLogger("pvgrub_py.xenstore")


class Connection:
    """One client of the daemon.  Create with `XenstoreService.open`."""

    def __init__(
        self,
        service: XenstoreService,
        domid: int,
        privileged: bool,
        write: WriteFn,
        close: Callable[[], None],
        label: str,
    ) -> None:
        self.service = service
        self.domid = domid
        self.privileged = privileged
        self.home = paths.domain_home(domid)
        self.label = label
        self.transactions: dict[int, Transaction] = {}
        self.closed = False
        self._write = write
        self._close = close
        self._next_tx_id = 1
        self._fixed_caller = DOM0 if privileged and domid == 0 else None

    def __repr__(self) -> str:
        return f"<xenstore connection {self.label} dom{self.domid}>"

    @property
    def caller(self) -> Caller:
        if self._fixed_caller is not None:
            return self._fixed_caller
        target = self.service.domains.target_of(self.domid)
        return Caller(self.domid, self.privileged, target)

    def send(self, data: bytes) -> None:
        self._write(data, False)

    def send_event(self, path: bytes, token: bytes) -> None:
        payload = path + NUL + token + NUL
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            return  # xenstored does not send over-long events either
        if not self._write(pack(XsType.WATCH_EVENT, 0, 0, payload), True):
            self.service.ratelog.warning(
                f"events-{self.domid}", "%r: output backed up, watch event %r dropped", self, path
            )

    def new_tx_id(self) -> int:
        while True:
            tx_id = self._next_tx_id
            self._next_tx_id = tx_id + 1 if tx_id < 0xFFFFFFFF else 1
            if tx_id not in self.transactions:
                return tx_id

    def drop(self) -> None:
        """Disconnect from the daemon's side (RELEASE of its domain)."""
        self._close()


Handler = Callable[["XenstoreService", Connection, Message, Transaction | None], bytes | None]


def _int_arg(raw: bytes, what: str) -> int:
    try:
        return int(raw.decode("ascii"), 10)
    except (UnicodeDecodeError, ValueError):
        raise XsRequestError(errno.EINVAL, f"{what} {raw[:32]!r} is not a decimal number") from None


def _domid_arg(raw: bytes) -> int:
    """A domid argument.  Stricter than xenstored, whose atoi() reads garbage
    as domain 0 ("parsing errors ... generally go undetected", xenstore.txt):
    a simulator should fail loudly where a host would misbehave quietly."""
    domid = _int_arg(raw, "domid")
    if not 0 <= domid <= 0xFFFF:
        raise XsRequestError(errno.EINVAL, f"domid {domid} out of range")
    return domid


class XenstoreService:
    """The whole daemon state: the tree, the domains, the watches, the clients.

    ``on_introduce`` / ``on_release`` let the transport react to domains
    coming and going (the daemon opens and removes per-domain sockets).
    Not thread-safe: call everything from one thread (the daemon's loop).
    """

    def __init__(self, quotas: Quotas | None = None) -> None:
        self.store = Store()
        self.domains = DomainRegistry(quotas)
        self.watches = WatchRegistry()
        self.connections: set[Connection] = set()
        self._by_domain: dict[int, set[Connection]] = {}
        #: Where complaints about clients go, at most once per interval each.
        self.ratelog = RateLimitedLog(log)
        self.on_introduce: list[Callable[[int], None]] = []
        self.on_release: list[Callable[[int], None]] = []

    # -- connections -----------------------------------------------------------

    def open(
        self,
        domid: int,
        write: WriteFn,
        close: Callable[[], None],
        *,
        privileged: bool | None = None,
        label: str = "",
    ) -> Connection:
        """A new client.  ``privileged`` defaults to "is dom0"."""
        conn = Connection(
            self, domid, domid == 0 if privileged is None else privileged, write, close, label
        )
        self.connections.add(conn)
        self._by_domain.setdefault(domid, set()).add(conn)
        return conn

    def close(self, conn: Connection) -> None:
        """The client went away: forget its watches and transactions."""
        if conn.closed:
            return
        conn.closed = True
        self.watches.remove_all(conn)
        conn.transactions.clear()
        self.connections.discard(conn)
        mine = self._by_domain.get(conn.domid)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self._by_domain[conn.domid]

    def connections_of(self, domid: int) -> list[Connection]:
        return list(self._by_domain.get(domid, ()))

    def refuse_connection(self, domid: int, privileged: bool | None) -> str | None:
        """Why a new connection of ``domid`` must be refused (the domain's
        "connections" quota is full), or None to accept it."""
        if domid == 0 if privileged is None else privileged:
            return None
        quota = self.domains.quotas_for(domid).connections
        have = len(self._by_domain.get(domid, ()))
        if quota and have >= quota:
            return f"domain {domid} already has {have} connections (quota {quota})"
        return None

    # -- per-domain accounting ----------------------------------------------------

    def watches_of(self, domid: int) -> int:
        return sum(self.watches.count(c) for c in self._by_domain.get(domid, ()))

    def transactions_of(self, domid: int) -> int:
        return sum(len(c.transactions) for c in self._by_domain.get(domid, ()))

    def transaction_memory_of(self, domid: int) -> int:
        return sum(
            tx.memory for c in self._by_domain.get(domid, ()) for tx in c.transactions.values()
        )

    # -- dispatch --------------------------------------------------------------

    def handle(self, conn: Connection, msg: Message) -> None:
        """Process one request; replies and events go out through the
        connections' write functions."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%r IN %s req=%d tx=%d %r",
                conn,
                type_name(msg.type),
                msg.req_id,
                msg.tx_id,
                msg.payload[:120],
            )
        try:
            entry = _HANDLERS.get(msg.type)
            if entry is None:
                raise XsRequestError(errno.ENOSYS, f"message type {type_name(msg.type)}")
            handler, flags = entry
            if flags & _PRIV and not conn.privileged:
                raise XsRequestError(errno.EACCES, f"{type_name(msg.type)} is dom0-only")
            tx = None
            if msg.tx_id and not flags & _NOTID:
                tx = conn.transactions.get(msg.tx_id)
                if tx is None:
                    raise XsRequestError(errno.ENOENT, f"no transaction {msg.tx_id}")
                if tx.failed and msg.type != XsType.TRANSACTION_END:
                    raise XsRequestError(errno.ENOMEM, f"transaction {msg.tx_id} has failed")
            reply = handler(self, conn, msg, tx)
            if tx is not None and not tx.failed and not conn.privileged:
                self._check_memory(conn, tx)
            if reply is not None:
                conn.send(pack(msg.type, msg.req_id, msg.tx_id, reply))
        except XsRequestError as e:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%r %s: %s", conn, type_name(msg.type), e)
            conn.send(pack(XsType.ERROR, msg.req_id, msg.tx_id, error_payload(e.errno)))
        except Exception as e:  # a bug of ours: one line, rate-limited, and EIO
            self.ratelog.warning(
                f"bug-{type(e).__name__}",
                "%r: internal error handling %s: %s: %s",
                conn, type_name(msg.type), type(e).__name__, e,
            )  # fmt: skip
            conn.send(pack(XsType.ERROR, msg.req_id, msg.tx_id, error_payload(errno.EIO)))

    def _check_memory(self, conn: Connection, tx: Transaction) -> None:
        """The domain's open transactions over the "memory" quota: fail the
        one that grew (its overlay goes now; its commit will be ENOMEM)."""
        quota = self._quotas(conn).memory
        if quota and self.transaction_memory_of(conn.domid) > quota:
            tx.fail()
            raise XsRequestError(
                errno.ENOMEM, f"domain {conn.domid}'s transactions exceed {quota} bytes"
            )

    # -- helpers for handlers ----------------------------------------------------

    def _quotas(self, conn: Connection) -> Quotas:
        return self.domains.quotas_for(conn.domid)

    def _path(self, conn: Connection, raw: bytes, *, allow_special: bool = False) -> str:
        path_max = None if conn.privileged else (self._quotas(conn).path_max or None)
        return paths.canonicalize(raw, conn.home, allow_special=allow_special, path_max=path_max)

    def _view(self, tx: Transaction | None) -> NodeView:
        return self.store if tx is None else tx

    def _changed(self, tx: Transaction | None, changes: list[Change]) -> None:
        if not changes:
            return
        if tx is None:
            self.watches.fire(changes)
        else:
            tx.record(changes)

    def _special_perms(self, name: str) -> tuple[Perm, ...]:
        node = self.store.get(name)
        return node.perms if node is not None else ()

    # -- tree requests -----------------------------------------------------------

    def do_read(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        path = self._path(conn, one_string(msg.payload))
        return node_ops.readable(self._view(tx), conn.caller, path).value

    def do_write(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        end = msg.payload.find(NUL)
        if end < 0:
            raise XsRequestError(errno.EINVAL, "WRITE without a NUL-terminated path")
        path = self._path(conn, msg.payload[:end])
        value = msg.payload[end + 1 :]
        changes = node_ops.write(self._view(tx), conn.caller, self._quotas(conn), path, value)
        self._changed(tx, changes)
        return OK

    def do_mkdir(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        path = self._path(conn, one_string(msg.payload))
        self._changed(tx, node_ops.mkdir(self._view(tx), conn.caller, self._quotas(conn), path))
        return OK

    def do_rm(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        path = self._path(conn, one_string(msg.payload))
        self._changed(tx, node_ops.rm(self._view(tx), conn.caller, path))
        return OK

    def do_directory(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        path = self._path(conn, one_string(msg.payload))
        node = node_ops.readable(self._view(tx), conn.caller, path)
        return join_strings([name.encode() for name in node.children])

    def do_directory_part(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        """``<gencnt>|<child>|*`` from a byte offset into the child list; an
        extra NUL marks the end of the list (what libxenstore looks for)."""
        if msg.payload.count(NUL) != 2 or not msg.payload.endswith(NUL):
            raise XsRequestError(errno.EINVAL, "DIRECTORY_PART wants <path>|<offset>|")
        raw_path, raw_offset = strings(msg.payload)
        path = self._path(conn, raw_path)
        offset = _int_arg(raw_offset, "offset")
        node = node_ops.readable(self._view(tx), conn.caller, path)
        generation = str(node.generation).encode() + NUL
        rest = join_strings([name.encode() for name in node.children])[max(offset, 0) :]
        room = XENSTORE_PAYLOAD_MAX - len(generation)
        if len(rest) + 1 <= room:
            return generation + rest + NUL
        cut = rest.rfind(NUL, 0, room) + 1
        return generation + rest[:cut]

    def do_get_perms(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        path = self._path(conn, one_string(msg.payload), allow_special=True)
        node = node_ops.readable(self._view(tx), conn.caller, path)
        return join_strings(format_perms(node.perms))

    def do_set_perms(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) < 2:
            raise XsRequestError(errno.EINVAL, "SET_PERMS wants <path>|<perm>|+")
        path = self._path(conn, fields[0], allow_special=True)
        perms = parse_perms(fields[1:])
        changes = node_ops.set_perms(self._view(tx), conn.caller, self._quotas(conn), path, perms)
        self._changed(tx, changes)
        return OK

    # -- watches ---------------------------------------------------------------

    def do_watch(self, conn: Connection, msg: Message, tx: Transaction | None) -> None:
        fields = strings(msg.payload)
        if len(fields) not in (2, 3):
            raise XsRequestError(errno.EINVAL, "WATCH wants <wpath>|<token>|[<depth>|]")
        raw_path, token = fields[0], fields[1]
        depth = _int_arg(fields[2], "watch depth") if len(fields) == 3 else None
        if depth is not None and depth < 0:
            raise XsRequestError(errno.EINVAL, f"watch depth {depth}")
        path = self._path(conn, raw_path, allow_special=True)
        quota = self._quotas(conn).watches
        if not conn.privileged and quota and self.watches_of(conn.domid) >= quota:
            raise XsRequestError(errno.E2BIG, f"domain {conn.domid} has {quota} watches")
        strip = len(conn.home) + 1 if paths.is_relative(raw_path) else 0
        watch = self.watches.add(conn, path, token, strip, depth)
        conn.send(pack(msg.type, msg.req_id, msg.tx_id, OK))
        conn.send_event(watch.reported(path), token)  # "fires once straight away"
        return None

    def do_unwatch(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) != 2:
            raise XsRequestError(errno.EINVAL, "UNWATCH wants <wpath>|<token>|")
        path = self._path(conn, fields[0], allow_special=True)
        self.watches.remove(conn, path, fields[1])
        return OK

    def do_reset_watches(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        self.watches.remove_all(conn)
        conn.transactions.clear()
        return OK

    # -- transactions ------------------------------------------------------------

    def do_transaction_start(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        if tx is not None:
            raise XsRequestError(errno.EBUSY, "TRANSACTION_START inside a transaction")
        quotas = self._quotas(conn)
        if not conn.privileged and 0 < quotas.transactions <= self.transactions_of(conn.domid):
            raise XsRequestError(
                errno.ENOSPC, f"domain {conn.domid} has {quotas.transactions} transactions open"
            )
        limit = None if conn.privileged else quotas.transaction_nodes
        tx_id = conn.new_tx_id()
        conn.transactions[tx_id] = Transaction(self.store, tx_id, limit)
        return str(tx_id).encode() + NUL

    def do_transaction_end(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        verdict = one_string(msg.payload)
        if verdict not in (b"T", b"F"):
            raise XsRequestError(errno.EINVAL, f"TRANSACTION_END wants T or F, not {verdict!r}")
        if tx is None:
            raise XsRequestError(errno.ENOENT, "TRANSACTION_END outside a transaction")
        del conn.transactions[tx.tx_id]
        if verdict == b"T":
            self._check_node_quota(conn, tx)
            self.watches.fire(tx.commit())
        return OK

    def _check_node_quota(self, conn: Connection, tx: Transaction) -> None:
        """The "nodes" quota again, against what the domain owns by now:
        each of its transactions was checked alone (xenstored re-checks at
        commit too: transaction_fix_domains())."""
        quota = self._quotas(conn).nodes
        if conn.privileged or not quota or tx.failed:
            return
        growth = tx.owned_growth(conn.domid)
        owned = self.store.owned_by(conn.domid)
        if growth > 0 and owned + growth > quota:
            raise XsRequestError(
                errno.ENOSPC,
                f"domain {conn.domid} would own {owned + growth} nodes (quota {quota})",
            )

    # -- domains -----------------------------------------------------------------

    def do_introduce(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) < 3:
            raise XsRequestError(errno.EINVAL, "INTRODUCE wants <domid>|<gfn>|<evtchn>|")
        domid = _domid_arg(fields[0])
        gfn = _int_arg(fields[1], "gfn")  # signed decimal, xenstore.txt
        evtchn = _int_arg(fields[2], "event channel")
        if self.domains.introduce(domid, gfn, evtchn):
            self._create_home(domid)
            self.watches.fire_special(
                paths.INTRODUCE_DOMAIN, self._special_perms(paths.INTRODUCE_DOMAIN), domid
            )
            for hook in self.on_introduce:
                hook(domid)
        return OK

    def _create_home(self, domid: int) -> None:
        """``/local/domain/<domid>``, owned by the domain, unless the
        toolstack already made it.  (libxl creates it before INTRODUCE and
        C xenstored never does; doing it here saves simulator scripts a step
        and changes nothing when the toolstack did its job.)"""
        home = paths.domain_home(domid)
        if self.store.get(home) is not None:
            return
        changes = node_ops.mkdir(self.store, DOM0, self.domains.default_quotas, home)
        changes += node_ops.set_perms(
            self.store, DOM0, self.domains.default_quotas, home, (Perm(domid, NONE),)
        )
        self.watches.fire(changes)

    def do_release(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        domid = _domid_arg(one_string(msg.payload))
        self.domains.connected(domid)
        for other in [c for c in self.connections if c.domid == domid]:
            # xenstored drops the domain's watches first so that removing its
            # nodes later does not fire them.
            self.close(other)
            other.drop()
        self.domains.release(domid)
        self.watches.fire_special(
            paths.RELEASE_DOMAIN, self._special_perms(paths.RELEASE_DOMAIN), domid
        )
        for hook in self.on_release:
            hook(domid)
        return OK

    def do_resume(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        self.domains.connected(_domid_arg(one_string(msg.payload)))
        return OK

    def do_get_domain_path(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        return paths.domain_home(_domid_arg(one_string(msg.payload))).encode() + NUL

    def do_is_domain_introduced(
        self, conn: Connection, msg: Message, tx: Transaction | None
    ) -> bytes:
        domid = _int_arg(one_string(msg.payload), "domid")
        return b"T\x00" if self.domains.is_introduced(domid) else b"F\x00"

    def do_set_target(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) < 2:
            raise XsRequestError(errno.EINVAL, "SET_TARGET wants <domid>|<tdomid>|")
        self.domains.set_target(_domid_arg(fields[0]), _domid_arg(fields[1]))
        return OK

    # -- features, quotas, control ---------------------------------------------------

    def do_get_feature(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = [f for f in strings(msg.payload) if f]
        if not fields:
            domain = self.domains.get(conn.domid)
            value = SUPPORTED_FEATURES if domain is None else domain.features
        else:
            if not conn.privileged:
                raise XsRequestError(errno.EACCES, "GET_FEATURE of another domain is dom0-only")
            domain = self.domains.get(_domid_arg(fields[0]))
            if domain is None:
                raise XsRequestError(errno.ENOENT, f"domain {fields[0]!r} unknown")
            value = domain.features
        return str(value).encode() + NUL

    def do_set_feature(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) < 2:
            raise XsRequestError(errno.EINVAL, "SET_FEATURE wants <domid>|<value>|")
        self.domains.set_features(_domid_arg(fields[0]), _int_arg(fields[1], "features"))
        return OK

    def do_get_quota(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = [f for f in strings(msg.payload) if f]
        if not fields:
            return " ".join(Quotas.WIRE_NAMES).encode() + NUL
        domid = _domid_arg(fields[0]) if len(fields) >= 2 else None
        value = self.domains.get_quota(domid, fields[-1].decode("ascii", "replace"))
        return str(value).encode() + NUL

    def do_set_quota(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        fields = strings(msg.payload)
        if len(fields) not in (2, 3):
            raise XsRequestError(errno.EINVAL, "SET_QUOTA wants [<domid>|]<quota>|<value>|")
        domid = _domid_arg(fields[0]) if len(fields) == 3 else None
        value = _int_arg(fields[-1], "quota value")
        if value < 0:
            raise XsRequestError(errno.EINVAL, f"quota value {value}")
        self.domains.set_quota(domid, fields[-2].decode("ascii", "replace"), value)
        return OK

    def do_control(self, conn: Connection, msg: Message, tx: Transaction | None) -> bytes:
        """A small subset of xenstored's CONTROL commands (their set is
        implementation specific, xenstore.txt): check, log, print, help."""
        fields = strings(msg.payload)
        command = fields[0] if fields else b""
        if command == b"help":
            return b"\n".join(_CONTROL_COMMANDS) + b"\n\x00"
        if command == b"print":
            log.info("CONTROL print: %s", b" ".join(fields[1:]).decode("ascii", "replace"))
            return OK
        if command in (b"check", b"log"):
            return OK
        raise XsRequestError(errno.EINVAL, f"CONTROL command {command[:32]!r} unsupported")


_CONTROL_COMMANDS = (b"check", b"log", b"print", b"help")

_HANDLERS: dict[int, tuple[Handler, int]] = {
    XsType.CONTROL: (XenstoreService.do_control, _PRIV),
    XsType.DIRECTORY: (XenstoreService.do_directory, 0),
    XsType.READ: (XenstoreService.do_read, 0),
    XsType.GET_PERMS: (XenstoreService.do_get_perms, 0),
    XsType.WATCH: (XenstoreService.do_watch, _NOTID),
    XsType.UNWATCH: (XenstoreService.do_unwatch, _NOTID),
    XsType.TRANSACTION_START: (XenstoreService.do_transaction_start, 0),
    XsType.TRANSACTION_END: (XenstoreService.do_transaction_end, 0),
    XsType.INTRODUCE: (XenstoreService.do_introduce, _PRIV),
    XsType.RELEASE: (XenstoreService.do_release, _PRIV),
    XsType.GET_DOMAIN_PATH: (XenstoreService.do_get_domain_path, 0),
    XsType.WRITE: (XenstoreService.do_write, 0),
    XsType.MKDIR: (XenstoreService.do_mkdir, 0),
    XsType.RM: (XenstoreService.do_rm, 0),
    XsType.SET_PERMS: (XenstoreService.do_set_perms, 0),
    XsType.IS_DOMAIN_INTRODUCED: (XenstoreService.do_is_domain_introduced, _PRIV),
    XsType.RESUME: (XenstoreService.do_resume, _PRIV),
    XsType.SET_TARGET: (XenstoreService.do_set_target, _PRIV),
    XsType.RESET_WATCHES: (XenstoreService.do_reset_watches, 0),
    XsType.DIRECTORY_PART: (XenstoreService.do_directory_part, 0),
    XsType.GET_FEATURE: (XenstoreService.do_get_feature, 0),
    XsType.SET_FEATURE: (XenstoreService.do_set_feature, _PRIV),
    XsType.GET_QUOTA: (XenstoreService.do_get_quota, _PRIV),
    XsType.SET_QUOTA: (XenstoreService.do_set_quota, _PRIV),
}
