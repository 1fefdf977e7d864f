"""Our xenstored under a hostile guest: quotas hold per domain, dom0 keeps working.

xenstored counts quotas per domain (tools/xenstored/domain.c); a Xen guest
has one connection, so that is also per connection there.  A simulated guest
may connect to its domain socket any number of times, so each attack here
comes from many connections of one domain: the totals must still be the
domain's quotas (watches 128, transactions 10, nodes 1000, transaction memory
2.5 MB, connections 16), and dom0 must be served throughout.
"""

from __future__ import annotations

import time
from pathlib import Path

from xenstore_fixtures import (  # noqa: F401
    DaemonProcess,
    RawClient,
    error_name,
    introduce,
    live_connections,
    ok,
    pipeline,
    socket_dir,
    xenstored_thread,
)

from pvgrub_py.xenstore.daemon import XenstoredThread
from pvgrub_py.xenstore.store import Quotas
from pvgrub_py.xenstore.wire import XsType

GUEST = 5
# xenstored's defaults (tools/xenstore/xenstored_core.c, Xen 4.17: quota_*),
# and the simulator's connections per domain.
WATCHES, TRANSACTIONS, NODES, MEMORY, CONNECTIONS = 128, 10, 1000, 2_621_440, 16


def close_all(clients: list[RawClient]) -> None:
    for client in clients:
        client.close()


def dom0_works(toolstack: str | Path, tag: str) -> None:
    """A fresh dom0 connection writes, reads and watches, within RawClient's 5 s."""
    with RawClient.connect(toolstack) as dom0:
        assert ok(dom0.request(XsType.WRITE, b"/tool/probe\x00" + tag.encode())) == b"OK\x00"
        assert ok(dom0.request(XsType.READ, b"/tool/probe\x00")) == tag.encode()
        assert ok(dom0.request(XsType.WATCH, b"/tool/probe\x00t\x00")) == b"OK\x00"


def test_a_domain_has_at_most_its_quota_of_connections(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    path = introduce(xenstored_thread.socket_path or "", GUEST)
    clients = live_connections(path, 40)
    try:
        assert len(clients) == CONNECTIONS  # before: all 40
        clients.pop().close()  # one goes: one more may come
        assert wait_for(lambda: len(live_connections_kept(path, clients)) == CONNECTIONS)
        dom0_works(xenstored_thread.socket_path or "", "connections")
    finally:
        close_all(clients)


def live_connections_kept(path: str, clients: list[RawClient]) -> list[RawClient]:
    clients.extend(live_connections(path, 1))
    return clients


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_watches_count_per_domain_across_connections(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    path = introduce(xenstored_thread.socket_path or "", GUEST)
    clients = live_connections(path, 40)
    try:
        accepted = refused = 0
        for n, client in enumerate(clients):
            requests = [(XsType.WATCH, f"w{n}-{i}\x00tok\x00".encode(), 0) for i in range(130)]
            for reply in pipeline(client, requests):
                if reply.type == XsType.ERROR:
                    assert error_name(reply) == "E2BIG"
                    refused += 1
                else:
                    accepted += 1
        # Before: 128 per connection, 40 connections: 5,120 (10,240 in the issue).
        assert accepted == WATCHES
        assert xenstored_thread.call(lambda svc: svc.watches_of(GUEST)) == WATCHES
        dom0_works(xenstored_thread.socket_path or "", "watches")
    finally:
        close_all(clients)
    # Their connections gone, the domain's watches are gone too.
    assert wait_for(lambda: xenstored_thread.call(lambda svc: svc.watches_of(GUEST)) == 0)


def test_open_transactions_count_per_domain_across_connections(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    path = introduce(xenstored_thread.socket_path or "", GUEST)
    clients = live_connections(path, 40)
    try:
        started = 0
        for client in clients:
            for reply in pipeline(client, [(XsType.TRANSACTION_START, b"\x00", 0)] * 25):
                if reply.type == XsType.ERROR:
                    assert error_name(reply) == "ENOSPC"
                else:
                    started += 1
        assert started == TRANSACTIONS  # before: 10 per connection, 400 here
        dom0_works(xenstored_thread.socket_path or "", "transactions")
    finally:
        close_all(clients)


def test_a_commit_rechecks_the_node_quota(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    """Ten transactions of one domain, each creating 150 nodes in a
    directory of its own (so they do not conflict): each is within the quota
    alone (11 + 150 <= 1000), together they are not."""
    path = introduce(xenstored_thread.socket_path or "", GUEST)
    with RawClient.connect(path) as guest:
        tx_ids = []
        for reply in pipeline(
            guest, [(XsType.MKDIR, f"t{i}\x00".encode(), 0) for i in range(1, 11)]
        ):
            ok(reply)
        for reply in pipeline(guest, [(XsType.TRANSACTION_START, b"\x00", 0)] * 10):
            tx_ids.append(int(ok(reply).rstrip(b"\x00")))
        for tx_id in tx_ids:
            writes = [(XsType.WRITE, f"t{tx_id}/n{i}\x00v".encode(), tx_id) for i in range(150)]
            assert all(r.type == XsType.WRITE for r in pipeline(guest, writes))
        verdicts = [
            "OK" if reply.type != XsType.ERROR else error_name(reply)
            for reply in pipeline(guest, [(XsType.TRANSACTION_END, b"T\x00", t) for t in tx_ids])
        ]
    owned = xenstored_thread.call(lambda svc: svc.store.owned_by(GUEST))
    assert owned <= NODES  # before: 11 + 10 * 150 = 1,511
    assert tx_ids == list(range(1, 11))
    assert verdicts[:6] == ["OK"] * 6  # 11 + 6 * 150 = 911 nodes
    assert set(verdicts[6:]) == {"ENOSPC"}
    dom0_works(xenstored_thread.socket_path or "", "nodes")


def test_a_failed_transaction_holds_nothing_and_cannot_commit(
    socket_dir: Path,  # noqa: F811
) -> None:
    quotas = Quotas(memory=64 * 1024)
    with XenstoredThread(socket_dir / "sock", quotas) as xsd:
        path = introduce(xsd.socket_path or "", GUEST)
        with RawClient.connect(path) as guest:
            tx_id = int(ok(guest.request(XsType.TRANSACTION_START, b"\x00")).rstrip(b"\x00"))
            writes = [
                (XsType.WRITE, f"big{i}\x00".encode() + b"x" * 2000, tx_id) for i in range(64)
            ]
            names = [
                "OK" if r.type != XsType.ERROR else error_name(r) for r in pipeline(guest, writes)
            ]
            first = names.index("ENOMEM")
            assert 0 < first < 40 and set(names[first:]) == {"ENOMEM"}
            assert xsd.call(lambda svc: svc.transaction_memory_of(GUEST)) == 0
            assert error_name(guest.request(XsType.TRANSACTION_END, b"T\x00", tx_id)) == "ENOMEM"
            assert error_name(guest.request(XsType.READ, b"big0\x00")) == "ENOENT"


def attack_with_held_transactions(path: str, connections: int) -> tuple[int, int]:
    """Open transactions on many connections of one domain and fill each with
    100 nodes of 2000 bytes; keep them open.  (started, writes accepted)."""
    clients = live_connections(path, connections)
    started = accepted = 0
    try:
        for client in clients:
            replies = pipeline(client, [(XsType.TRANSACTION_START, b"\x00", 0)] * 10)
            tx_ids = [int(r.payload.rstrip(b"\x00")) for r in replies if r.type != XsType.ERROR]
            started += len(tx_ids)
            for tx_id in tx_ids:
                writes = [
                    (XsType.WRITE, f"h{tx_id}/{i}\x00".encode() + b"y" * 2000, tx_id)
                    for i in range(100)
                ]
                accepted += sum(r.type == XsType.WRITE for r in pipeline(client, writes))
        return started, accepted
    finally:
        _held.extend(clients)  # the caller measures with them still open


_held: list[RawClient] = []


def test_held_transactions_do_not_grow_the_daemon(socket_dir: Path) -> None:  # noqa: F811
    daemon = DaemonProcess(socket_dir / "sock")
    try:
        path = introduce(daemon.socket_path, GUEST)
        before = daemon.rss_kib()
        started, accepted = attack_with_held_transactions(path, 32)
        grown_mib = (daemon.rss_kib() - before) / 1024
        # Before: 320 transactions, 32,000 nodes of 2 KB held, and the daemon
        # grew by over 100 MiB.  Now: 10 transactions, 2.5 MB of them.
        assert grown_mib < 24, f"xenstored grew by {grown_mib:.1f} MiB"
        assert started == TRANSACTIONS
        assert accepted * 2000 <= MEMORY
        dom0_works(daemon.socket_path, "memory")
    finally:
        close_all(_held)
        _held.clear()
        daemon.stop()


def test_guests_cannot_take_the_descriptors_dom0_needs(socket_dir: Path) -> None:  # noqa: F811
    """With 160 descriptors, six guests each try 60 connections: they get at
    most their quota each and never dom0's reserve; refusals are logged once
    per interval, without tracebacks."""
    daemon = DaemonProcess(socket_dir / "sock", fd_limit=160)
    guests: list[RawClient] = []
    try:
        paths = [introduce(daemon.socket_path, domid) for domid in range(1, 7)]
        for path in paths:
            guests += live_connections(path, 60)
        for n in range(5):  # before: dom0's connection queued unaccepted: timed out
            dom0_works(daemon.socket_path, f"dom0-{n}")
        assert len(guests) <= 6 * CONNECTIONS
        close_all(guests)
        guests = []
        assert wait_for(lambda: len(live_connections_kept(paths[0], guests)) > 0)
    finally:
        close_all(guests)
        stderr = daemon.stderr_now()
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) < 30, stderr[-2000:]
