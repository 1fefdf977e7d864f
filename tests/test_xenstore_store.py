"""xenstored semantics, straight against `XenstoreService` (no sockets).

Tree operations, permissions, quotas, transactions and watches, checked
message by message the way a client sees them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvgrub_py.xenstore.service import XenstoreService
from pvgrub_py.xenstore.store import Quotas
from pvgrub_py.xenstore.wire import Message, MessageReader, XsType

T = XsType


class Client:
    """One connection to the service, recording what it is sent."""

    def __init__(self, svc: XenstoreService, domid: int = 0, privileged: bool | None = None):
        self.svc = svc
        self.reader = MessageReader()
        self.events: list[tuple[bytes, bytes]] = []
        self.dropped = False
        self.conn = svc.open(domid, self._write, self._drop, privileged=privileged)
        self._req = 0

    def _write(self, data: bytes, droppable: bool) -> bool:
        self.reader.feed(data)
        return True

    def _drop(self) -> None:
        self.dropped = True

    def _drain(self) -> list[Message]:
        out = []
        while (msg := self.reader.next_message()) is not None:
            if msg.type == T.WATCH_EVENT:
                assert msg.req_id == 0 and msg.tx_id == 0
                path, token, rest = msg.payload.split(b"\x00")
                assert rest == b""
                self.events.append((path, token))
            else:
                out.append(msg)
        return out

    def raw(self, msg_type: int, payload: bytes, tx: int = 0) -> Message:
        self._req += 1
        self.svc.handle(self.conn, Message(msg_type, self._req, tx, payload))
        (reply,) = self._drain()
        assert reply.req_id == self._req and reply.tx_id == tx
        return reply

    def ok(self, msg_type: int, *fields: bytes, tx: int = 0, value: bytes | None = None) -> bytes:
        reply = self.raw(msg_type, _payload(fields, value), tx)
        assert reply.type == msg_type, reply.payload
        return reply.payload

    def err(self, msg_type: int, *fields: bytes, tx: int = 0, value: bytes | None = None) -> str:
        reply = self.raw(msg_type, _payload(fields, value), tx)
        assert reply.type == T.ERROR, reply
        return reply.payload.rstrip(b"\x00").decode()

    # conveniences
    def write(self, path: str, value: bytes, tx: int = 0) -> None:
        assert self.ok(T.WRITE, path.encode(), value=value, tx=tx) == b"OK\x00"

    def read(self, path: str, tx: int = 0) -> bytes:
        return self.ok(T.READ, path.encode(), tx=tx)

    def ls(self, path: str, tx: int = 0) -> list[bytes]:
        return self.ok(T.DIRECTORY, path.encode(), tx=tx).split(b"\x00")[:-1]

    def perms(self, path: str, *perms: bytes) -> None:
        assert self.ok(T.SET_PERMS, path.encode(), *perms) == b"OK\x00"

    def start(self) -> int:
        return int(self.ok(T.TRANSACTION_START, b"").rstrip(b"\x00"))

    def watch(self, path: str, token: bytes, *extra: bytes) -> None:
        assert self.ok(T.WATCH, path.encode(), token, *extra) == b"OK\x00"

    def take_events(self) -> list[tuple[bytes, bytes]]:
        self._drain()
        events, self.events = self.events, []
        return events


def _payload(fields: tuple[bytes, ...], value: bytes | None) -> bytes:
    data = b"".join(f + b"\x00" for f in fields)
    return data + value if value is not None else data


@pytest.fixture
def svc() -> XenstoreService:
    return XenstoreService()


@pytest.fixture
def dom0(svc: XenstoreService) -> Client:
    return Client(svc)


def guest(svc: XenstoreService, dom0: Client, domid: int) -> Client:
    """A domain connection after the toolstack introduced the domain."""
    dom0.ok(T.INTRODUCE, str(domid).encode(), b"-1", b"7")
    return Client(svc, domid)


# -- the tree ----------------------------------------------------------------------------


def test_fresh_store_looks_like_xenstored(dom0: Client) -> None:
    assert dom0.ls("/") == [b"tool"]
    assert dom0.ls("/tool") == [b"xenstored"]
    assert dom0.ok(T.GET_PERMS, b"/") == b"n0\x00"
    assert dom0.ok(T.GET_PERMS, b"@introduceDomain") == b"n0\x00"


def test_write_creates_parents_and_keeps_child_order(dom0: Client) -> None:
    dom0.write("/a/b/c", b"v")
    dom0.write("/a/z", b"")
    dom0.write("/a/b0", b"\x00binary\xff")
    assert dom0.read("/a/b") == b""
    assert dom0.read("/a/b0") == b"\x00binary\xff"
    assert dom0.ls("/a") == [b"b", b"z", b"b0"]


def test_mkdir_keeps_existing_value(dom0: Client) -> None:
    dom0.write("/a", b"keep")
    assert dom0.ok(T.MKDIR, b"/a") == b"OK\x00"
    assert dom0.ok(T.MKDIR, b"/a/b/c") == b"OK\x00"
    assert dom0.read("/a") == b"keep" and dom0.ls("/a/b") == [b"c"]


def test_rm_semantics(dom0: Client) -> None:
    dom0.write("/a/b/c", b"v")
    assert dom0.ok(T.RM, b"/a/b") == b"OK\x00"
    assert dom0.ls("/a") == []
    assert dom0.err(T.READ, b"/a/b/c") == "ENOENT"
    assert dom0.ok(T.RM, b"/a/missing") == b"OK\x00"  # parent exists: fine
    assert dom0.err(T.RM, b"/nope/missing") == "ENOENT"  # parent missing
    assert dom0.err(T.RM, b"/") == "EINVAL"


def test_relative_paths_for_socket_clients_are_dom0s(dom0: Client) -> None:
    dom0.write("rel", b"1")
    assert dom0.read("/local/domain/0/rel") == b"1"


def test_malformed_requests(dom0: Client) -> None:
    assert dom0.err(T.READ, b"/a//b") == "EINVAL"
    assert dom0.raw(T.READ, b"/tool").type == T.ERROR  # no NUL
    assert dom0.raw(T.READ, b"/tool\x00extra\x00").type == T.ERROR
    assert dom0.raw(T.WRITE, b"/no-nul-at-all").type == T.ERROR
    assert dom0.err(T.READ, b"@introduceDomain") == "EINVAL"
    for unknown in (T.WATCH_EVENT, T.ERROR, T.RESTRICT_REMOVED, 27, 0xFFFF, 12345):
        assert dom0.err(unknown, b"") == "ENOSYS"


def test_reply_over_4096_bytes_is_e2big_and_directory_part_pages(dom0: Client) -> None:
    names = [f"child-with-a-longish-name-{i:04d}" for i in range(300)]
    for name in names:
        dom0.write(f"/big/{name}", b"")
    assert dom0.err(T.DIRECTORY, b"/big") == "E2BIG"
    seen: list[bytes] = []
    offset = 0
    generations = set()
    while True:
        reply = dom0.ok(T.DIRECTORY_PART, b"/big", str(offset).encode())
        assert len(reply) <= 4096
        gen, _, rest = reply.partition(b"\x00")
        generations.add(gen)
        done = rest.endswith(b"\x00\x00") or rest == b"\x00"
        chunk = rest[:-1] if done else rest
        seen += chunk.split(b"\x00")[:-1]
        offset += len(chunk)
        if done:
            break
    assert seen == [n.encode() for n in names]
    assert len(generations) == 1
    assert dom0.ok(T.DIRECTORY_PART, b"/big", b"999999").endswith(b"\x00\x00")
    assert dom0.err(T.DIRECTORY_PART, b"/big\x00") == "EINVAL"


# -- permissions ---------------------------------------------------------------------------


def test_unprivileged_domain_permissions(svc: XenstoreService, dom0: Client) -> None:
    dom5 = guest(svc, dom0, 5)
    assert dom0.ok(T.GET_PERMS, b"/local/domain/5") == b"n5\x00"  # home owned by the guest
    dom0.write("/secret/key", b"s")
    assert dom5.err(T.READ, b"/secret/key") == "EACCES"
    # A missing node under an unreadable one is EACCES too, not ENOENT.
    assert dom5.err(T.READ, b"/secret/none") == "EACCES"
    assert dom5.err(T.WRITE, b"/secret/x", value=b"1") == "EACCES"
    # Its own home: relative paths, and nodes it creates are its own.
    dom5.write("device/vtpm/0/state", b"1")
    assert dom0.ok(T.GET_PERMS, b"/local/domain/5/device/vtpm/0/state") == b"n5\x00"
    assert dom5.err(T.READ, b"missing") == "ENOENT"
    # Sharing: r5 on a dom0 node.
    dom0.write("/shared", b"hello")
    dom0.perms("/shared", b"n0", b"r5")
    assert dom5.read("/shared") == b"hello"
    assert dom5.err(T.WRITE, b"/shared", value=b"x") == "EACCES"
    assert dom5.err(T.SET_PERMS, b"/shared", b"b5") == "EACCES"  # not the owner
    # An owner may change the ACL but not give the node away.
    assert dom5.ok(T.SET_PERMS, b"device", b"n5", b"r7") == b"OK\x00"
    assert dom5.err(T.SET_PERMS, b"device", b"n7") == "EPERM"
    # dom0-only requests.
    for msg_type, args in [
        (T.INTRODUCE, (b"6", b"1", b"1")),
        (T.RELEASE, (b"5",)),
        (T.SET_TARGET, (b"5", b"6")),
        (T.IS_DOMAIN_INTRODUCED, (b"5",)),
        (T.CONTROL, (b"help",)),
        (T.GET_QUOTA, ()),
    ]:
        assert dom5.err(msg_type, *args) == "EACCES"


def test_set_target_lets_a_device_model_act_as_its_target(
    svc: XenstoreService, dom0: Client
) -> None:
    guest(svc, dom0, 5)
    dm = guest(svc, dom0, 6)
    dom0.write("/local/domain/5/data", b"x")
    dom0.perms("/local/domain/5/data", b"n5")
    assert dm.err(T.READ, b"/local/domain/5/data") == "EACCES"
    dom0.ok(T.SET_TARGET, b"6", b"5")
    assert dm.read("/local/domain/5/data") == b"x"
    assert dom0.err(T.SET_TARGET, b"6", b"99") == "ENOENT"


def test_perms_on_special_nodes(svc: XenstoreService, dom0: Client) -> None:
    assert dom0.ok(T.SET_PERMS, b"@releaseDomain", b"n0", b"r5") == b"OK\x00"
    assert dom0.ok(T.GET_PERMS, b"@releaseDomain") == b"n0\x00r5\x00"
    assert dom0.err(T.SET_PERMS, b"/tool", b"x5") == "EINVAL"
    assert dom0.err(T.SET_PERMS, b"/tool") == "EINVAL"
    assert dom0.err(T.SET_PERMS, b"/missing", b"n0") == "ENOENT"


# -- quotas --------------------------------------------------------------------------------


def test_quotas_bind_unprivileged_domains_only() -> None:
    svc = XenstoreService(Quotas(nodes=4, node_size=64, watches=2, transactions=1, permissions=2))
    dom0 = Client(svc)
    dom5 = guest(svc, dom0, 5)  # owns its home: 1 node
    dom5.write("a", b"x")
    dom5.write("b/c", b"")  # 4 nodes now
    assert dom5.err(T.WRITE, b"d", value=b"") == "ENOSPC"
    assert dom5.err(T.WRITE, b"a", value=b"x" * 100) == "ENOSPC"
    assert dom5.err(T.SET_PERMS, b"a", b"n5", b"r1", b"r2") == "ENOSPC"
    dom5.watch("a", b"1")
    dom5.watch("b", b"2")
    assert dom5.err(T.WATCH, b"c", b"3") == "E2BIG"
    tx = dom5.start()
    assert dom5.err(T.TRANSACTION_START, b"") == "ENOSPC"
    dom5.ok(T.TRANSACTION_END, b"F", tx=tx)
    # dom0 is not limited.
    for i in range(10):
        dom0.write(f"/many/{i}", b"y" * 100)
    for i in range(5):
        dom0.watch(f"/w{i}", b"t")


def test_quota_messages(dom0: Client) -> None:
    names = dom0.ok(T.GET_QUOTA).rstrip(b"\x00").split()
    assert b"nodes" in names and b"node-size" in names
    assert dom0.ok(T.GET_QUOTA, b"nodes") == b"1000\x00"
    dom0.ok(T.SET_QUOTA, b"nodes", b"50")
    assert dom0.ok(T.GET_QUOTA, b"nodes") == b"50\x00"
    dom0.ok(T.INTRODUCE, b"5", b"1", b"1")
    assert dom0.ok(T.GET_QUOTA, b"5", b"nodes") == b"50\x00"
    dom0.ok(T.SET_QUOTA, b"5", b"nodes", b"7")
    assert dom0.ok(T.GET_QUOTA, b"5", b"nodes") == b"7\x00"
    assert dom0.ok(T.GET_QUOTA, b"nodes") == b"50\x00"
    assert dom0.err(T.GET_QUOTA, b"bogus") == "EINVAL"
    assert dom0.err(T.GET_QUOTA, b"77", b"nodes") == "ENOENT"


def test_features(dom0: Client) -> None:
    assert dom0.ok(T.GET_FEATURE) == b"4\x00"  # watch depth
    dom0.ok(T.SET_FEATURE, b"9", b"0")
    assert dom0.ok(T.GET_FEATURE, b"9") == b"0\x00"
    assert dom0.err(T.SET_FEATURE, b"9", b"1") == "EINVAL"  # unsupported bit
    dom0.ok(T.INTRODUCE, b"9", b"1", b"1")
    assert dom0.err(T.SET_FEATURE, b"9", b"4") == "EBUSY"


# -- transactions ------------------------------------------------------------------------------


def test_transaction_isolation_and_commit(svc: XenstoreService, dom0: Client) -> None:
    other = Client(svc)
    tx = dom0.start()
    dom0.write("/t/a", b"1", tx=tx)
    assert dom0.read("/t/a", tx=tx) == b"1"
    assert other.err(T.READ, b"/t/a") == "ENOENT"
    assert dom0.ok(T.TRANSACTION_END, b"T", tx=tx) == b"OK\x00"
    assert other.read("/t/a") == b"1"


def test_conflict_gives_eagain_and_applies_nothing(svc: XenstoreService, dom0: Client) -> None:
    other = Client(svc)
    dom0.write("/c", b"0")
    tx = dom0.start()
    assert dom0.read("/c", tx=tx) == b"0"
    dom0.write("/d", b"mine", tx=tx)
    other.write("/c", b"theirs")
    assert dom0.read("/c", tx=tx) == b"0"  # repeatable read
    assert dom0.err(T.TRANSACTION_END, b"T", tx=tx) == "EAGAIN"
    assert other.err(T.READ, b"/d") == "ENOENT"
    assert dom0.err(T.READ, b"/c", tx=tx) == "ENOENT"  # the transaction is gone


def test_unrelated_transactions_both_commit(svc: XenstoreService, dom0: Client) -> None:
    other = Client(svc)
    dom0.write("/x/a", b"")
    dom0.write("/y/b", b"")
    t1, t2 = dom0.start(), other.start()
    dom0.write("/x/a", b"1", tx=t1)
    other.write("/y/b", b"2", tx=t2)
    assert dom0.ok(T.TRANSACTION_END, b"T", tx=t1) == b"OK\x00"
    assert other.ok(T.TRANSACTION_END, b"T", tx=t2) == b"OK\x00"


def test_abort_and_transaction_errors(svc: XenstoreService, dom0: Client) -> None:
    tx = dom0.start()
    dom0.write("/gone", b"1", tx=tx)
    assert dom0.ok(T.TRANSACTION_END, b"F", tx=tx) == b"OK\x00"
    assert dom0.err(T.READ, b"/gone") == "ENOENT"
    assert dom0.err(T.READ, b"/", tx=999) == "ENOENT"  # unknown tx_id
    assert dom0.err(T.TRANSACTION_END, b"T") == "ENOENT"
    tx = dom0.start()
    assert dom0.err(T.TRANSACTION_END, b"X", tx=tx) == "EINVAL"
    assert dom0.err(T.TRANSACTION_START, b"", tx=tx) == "EBUSY"
    assert Client(svc).err(T.READ, b"/", tx=tx) == "ENOENT"  # another connection's tx


# -- watches ---------------------------------------------------------------------------------------


def test_watch_fires_initially_and_for_descendants(svc: XenstoreService, dom0: Client) -> None:
    w = Client(svc)
    w.watch("/a", b"tok")
    assert w.take_events() == [(b"/a", b"tok")]  # fires once straight away
    dom0.write("/a/b/c", b"1")
    dom0.write("/ab", b"1")  # not a child of /a
    assert w.take_events() == [(b"/a/b/c", b"tok")]
    dom0.ok(T.RM, b"/a")
    # RM fires for each removed node, children first; watch on /a matches them all
    # only via /a itself (descendants fire exact watches only).
    assert w.take_events() == [(b"/a", b"tok")]
    assert w.err(T.WATCH, b"/a", b"tok") == "EEXIST"
    w.ok(T.UNWATCH, b"/a", b"tok")
    assert w.err(T.UNWATCH, b"/a", b"tok") == "ENOENT"
    dom0.write("/a", b"again")
    assert w.take_events() == []


def test_rm_fires_exact_watches_on_removed_descendants(svc: XenstoreService, dom0: Client) -> None:
    w = Client(svc)
    dom0.write("/a/b/c", b"1")
    w.watch("/a/b/c", b"deep")
    w.watch("/", b"root")
    w.take_events()
    dom0.ok(T.RM, b"/a")
    assert w.take_events() == [(b"/a/b/c", b"deep"), (b"/a", b"root")]


def test_relative_watch_reports_relative_paths(svc: XenstoreService, dom0: Client) -> None:
    dom5 = guest(svc, dom0, 5)
    dom5.watch("device", b"t")
    dom0.write("/local/domain/5/device/vtpm/0/state", b"4")
    assert dom5.take_events() == [(b"device", b"t"), (b"device/vtpm/0/state", b"t")]


def test_watch_depth(svc: XenstoreService, dom0: Client) -> None:
    w = Client(svc)
    w.watch("/d", b"t", b"1")
    dom0.write("/d/x", b"")
    dom0.write("/d/x/y", b"")
    assert w.take_events() == [(b"/d", b"t"), (b"/d/x", b"t")]
    assert w.err(T.WATCH, b"/e", b"t", b"-1") == "EINVAL"


def test_events_respect_read_permission(svc: XenstoreService, dom0: Client) -> None:
    dom5 = guest(svc, dom0, 5)
    dom5.watch("/private", b"t")
    assert dom5.take_events() == [(b"/private", b"t")]  # the initial one always comes
    dom0.write("/private/x", b"secret")
    assert dom5.take_events() == []
    dom0.perms("/private/x", b"n0", b"r5")
    assert dom5.take_events() == [(b"/private/x", b"t")]  # readable now
    dom0.write("/private/x", b"2")
    assert dom5.take_events() == [(b"/private/x", b"t")]


def test_transaction_events_fire_on_commit_only(svc: XenstoreService, dom0: Client) -> None:
    w = Client(svc)
    w.watch("/q", b"t")
    w.take_events()
    tx = dom0.start()
    dom0.write("/q/a", b"1", tx=tx)
    assert w.take_events() == []
    dom0.ok(T.TRANSACTION_END, b"T", tx=tx)
    assert w.take_events() == [(b"/q/a", b"t")]
    tx = dom0.start()
    dom0.write("/q/b", b"1", tx=tx)
    dom0.ok(T.TRANSACTION_END, b"F", tx=tx)
    assert w.take_events() == []


def test_introduce_release_and_special_watches(svc: XenstoreService, dom0: Client) -> None:
    w = Client(svc)
    w.watch("@introduceDomain", b"in")
    w.watch("@releaseDomain", b"out")
    w.take_events()
    assert dom0.ok(T.IS_DOMAIN_INTRODUCED, b"5") == b"F\x00"
    assert dom0.ok(T.IS_DOMAIN_INTRODUCED, b"0") == b"T\x00"
    dom5 = guest(svc, dom0, 5)
    assert dom0.ok(T.IS_DOMAIN_INTRODUCED, b"5") == b"T\x00"
    assert (b"@introduceDomain", b"in") in w.take_events()
    dom5.watch("x", b"mine")
    dom0.ok(T.RELEASE, b"5")
    assert dom5.dropped
    assert w.take_events() == [(b"@releaseDomain", b"out")]
    assert dom0.ok(T.IS_DOMAIN_INTRODUCED, b"5") == b"F\x00"
    assert dom0.err(T.RELEASE, b"5") == "ENOENT"
    assert dom0.err(T.RELEASE, b"0") == "EINVAL"
    assert dom0.err(T.INTRODUCE, b"0", b"1", b"1") == "EINVAL"
    assert dom0.ok(T.GET_DOMAIN_PATH, b"12") == b"/local/domain/12\x00"


def test_special_events_need_permission_for_guests(svc: XenstoreService, dom0: Client) -> None:
    dom5 = guest(svc, dom0, 5)
    dom5.watch("@introduceDomain", b"t")
    dom5.take_events()
    guest(svc, dom0, 6)
    assert dom5.take_events() == []
    dom0.perms("@introduceDomain", b"n0", b"r5")
    # Changing a node's permissions is itself an event (xenstore.txt, WATCH).
    assert dom5.take_events() == [(b"@introduceDomain", b"t")]
    guest(svc, dom0, 7)
    assert dom5.take_events() == [(b"@introduceDomain", b"t")]


def test_reset_watches_drops_watches_and_transactions(svc: XenstoreService, dom0: Client) -> None:
    dom0.watch("/r", b"t")
    tx = dom0.start()
    dom0.ok(T.RESET_WATCHES)
    dom0.take_events()
    dom0.write("/r", b"1")
    assert dom0.take_events() == []
    assert dom0.err(T.READ, b"/", tx=tx) == "ENOENT"


def test_control_subset(dom0: Client) -> None:
    assert b"help" in dom0.ok(T.CONTROL, b"help")
    assert dom0.ok(T.CONTROL, b"print", b"hello") == b"OK\x00"
    assert dom0.err(T.CONTROL, b"live-update") == "EINVAL"


# -- fuzzing the dispatcher --------------------------------------------------------------------

_field = st.one_of(
    st.sampled_from([b"/", b"/a", b"/a/b", b"rel", b"@releaseDomain", b"5", b"-1", b"T", b"F"]),
    st.sampled_from([b"b0", b"r5", b"n7", b"nodes", b"help", b"0", b"99999999999"]),
    st.binary(max_size=12),
)
_payloads = st.one_of(
    st.lists(_field, max_size=4).map(lambda fs: b"".join(f + b"\x00" for f in fs)),
    st.binary(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),
            _payloads,
            st.sampled_from([0, 0, 1, 2, 77]),
            st.sampled_from([0, 0, 5]),
        ),
        max_size=25,
    )
)
def test_any_request_sequence_gets_one_reply_each_and_no_internal_error(
    requests: list[tuple[int, bytes, int, int]],
) -> None:
    """Whatever arrives, every request gets exactly one reply, and none is
    EIO (what the dispatcher answers when a handler raised by mistake)."""
    svc = XenstoreService()
    clients = {0: Client(svc), 5: Client(svc, 5)}
    for msg_type, payload, tx, who in requests:
        client = clients[who]
        if client.dropped:
            continue
        reply = client.raw(msg_type, payload, tx)
        assert reply.payload != b"EIO\x00", (msg_type, payload)
