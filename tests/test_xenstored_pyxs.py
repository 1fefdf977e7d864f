"""pyxs 0.4.1, unmodified, against our daemon over its unix sockets.

pyxs's Monitor.wait() has no timeout, so every wait runs in a daemon thread
joined with a timeout.  pyxs 0.4.1 cannot write empty values (its value
check uses ``+``); those go through a raw client instead.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pyxs
from xenstore_fixtures import (  # noqa: F401
    RawClient,
    error_name,
    header,
    ok,
    socket_dir,
    xenstored_thread,
)

from pvgrub_py.xenstore.daemon import XenstoredThread
from pvgrub_py.xenstore.wire import XsType


@contextmanager
def client(path: str | Path) -> Iterator[pyxs.Client]:
    c = pyxs.Client(unix_socket_path=str(path))
    c.connect()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def xs(xenstored_thread: XenstoredThread) -> Iterator[pyxs.Client]:  # noqa: F811
    with client(xenstored_thread.socket_path or "") as c:
        yield c


def collect_events(monitor: pyxs.client.Monitor, count: int, timeout: float = 5) -> list[object]:
    """Up to ``count`` events from ``monitor.wait()``, giving up after ``timeout``."""
    events: list[object] = []

    def run() -> None:
        for event in monitor.wait():
            events.append(event)
            if len(events) >= count:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return events


def test_read_write_list_exists(xs: pyxs.Client) -> None:
    xs.write(b"/vm/1/name", b"guest")
    xs.mkdir(b"/vm/1/device")
    assert xs.read(b"/vm/1/name") == b"guest"
    assert xs[b"/vm/1/name"] == b"guest"
    assert xs.list(b"/vm/1") == [b"name", b"device"]
    assert xs.exists(b"/vm/1/device") and not xs.exists(b"/vm/2")
    assert xs.read(b"/vm/2", b"default") == b"default"
    xs.delete(b"/vm/1/name")
    assert xs.list(b"/vm/1") == [b"device"]
    with pytest.raises(pyxs.PyXSError) as e:
        xs.read(b"/vm/1/name")
    assert e.value.args[0] == errno.ENOENT
    assert xs.get_domain_path(7) == b"/local/domain/7"
    assert [p for p, _, _ in xs.walk(b"/vm")] == [b"/vm", b"/vm/1", b"/vm/1/device"]


def test_empty_values_need_a_raw_client(xenstored_thread: XenstoredThread) -> None:  # noqa: F811
    with client(xenstored_thread.socket_path or "") as xs:
        with pytest.raises(ValueError):
            xs.write(b"/empty", b"")  # pyxs 0.4.1 defect, not ours
        with RawClient.connect(xenstored_thread.socket_path or "") as raw:
            assert ok(raw.request(XsType.WRITE, b"/empty\x00")) == b"OK\x00"
        assert xs.read(b"/empty") == b""


def test_permissions(xs: pyxs.Client) -> None:
    xs.write(b"/p", b"x")
    assert xs.get_perms(b"/p") == [b"n0"]
    xs.set_perms(b"/p", [b"r0", b"b3", b"n4"])
    assert xs.get_perms(b"/p") == [b"r0", b"b3", b"n4"]
    with pytest.raises(pyxs.PyXSError) as e:
        xs.set_perms(b"/missing", [b"n0"])
    assert e.value.args[0] == errno.ENOENT


def test_transaction_commit_and_eagain_between_two_clients(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    path = xenstored_thread.socket_path or ""
    with client(path) as a, client(path) as b:
        a.write(b"/counter", b"0")
        a.transaction()
        a.write(b"/counter", str(int(a.read(b"/counter")) + 1).encode())
        assert a.commit() is True
        assert b.read(b"/counter") == b"1"

        a.transaction()
        value = int(a.read(b"/counter"))
        b.write(b"/counter", b"100")  # intervening write
        a.write(b"/counter", str(value + 1).encode())
        assert a.commit() is False  # EAGAIN
        assert b.read(b"/counter") == b"100"

        # The usual retry loop converges.
        for _ in range(5):
            a.transaction()
            a.write(b"/counter", str(int(a.read(b"/counter")) + 1).encode())
            if a.commit():
                break
        assert b.read(b"/counter") == b"101"

        a.transaction()
        a.write(b"/rolled-back", b"1")
        a.rollback()
        assert not b.exists(b"/rolled-back")


def test_monitor_initial_event_and_tokens(xenstored_thread: XenstoredThread) -> None:  # noqa: F811
    path = xenstored_thread.socket_path or ""
    with client(path) as watcher, client(path) as writer:
        monitor = watcher.monitor()
        monitor.watch(b"/backend/vtpm", b"backend")
        monitor.watch(b"/frontend", b"frontend")
        first = collect_events(monitor, 2)
        assert {(e.path, e.token) for e in first} == {  # type: ignore[attr-defined]
            (b"/backend/vtpm", b"backend"),
            (b"/frontend", b"frontend"),
        }
        writer.write(b"/backend/vtpm/5/0/state", b"1")
        writer.write(b"/unwatched", b"1")
        writer.write(b"/frontend/x", b"1")
        events = collect_events(monitor, 2)
        assert [(e.path, e.token) for e in events] == [  # type: ignore[attr-defined]
            (b"/backend/vtpm/5/0/state", b"backend"),
            (b"/frontend/x", b"frontend"),
        ]
        monitor.unwatch(b"/frontend", b"frontend")
        writer.write(b"/frontend/y", b"1")
        writer.write(b"/backend/vtpm/done", b"1")
        events = collect_events(monitor, 1)
        assert [(e.path, e.token) for e in events] == [  # type: ignore[attr-defined]
            (b"/backend/vtpm/done", b"backend")
        ]
        monitor.close()


def test_domain_connection_is_unprivileged(xenstored_thread: XenstoredThread) -> None:  # noqa: F811
    with client(xenstored_thread.socket_path or "") as dom0:
        dom0.write(b"/secret", b"s")
        dom0.set_perms(b"/secret", [b"n0"])
        dom0.introduce_domain(5, 4242, 3)
        domain_path = xenstored_thread.domain_socket_path(5)
        assert Path(domain_path).exists()
        with client(domain_path) as dom5:
            with pytest.raises(pyxs.PyXSError) as e:
                dom5.read(b"/secret")
            assert e.value.args[0] == errno.EACCES
            dom5.write(b"data/pcr", b"ok")  # relative: its own home
            assert dom0.read(b"/local/domain/5/data/pcr") == b"ok"
            assert dom0.get_perms(b"/local/domain/5/data/pcr") == [b"n5"]
            with pytest.raises(pyxs.PyXSError) as e:
                dom5.introduce_domain(6, 1, 1)
            assert e.value.args[0] == errno.EACCES
        with RawClient.connect(domain_path) as raw:
            assert error_name(raw.request(XsType.RELEASE, b"5\x00")) == "EACCES"
            with RawClient.connect(xenstored_thread.socket_path or "") as root:
                assert ok(root.request(XsType.RELEASE, b"5\x00")) == b"OK\x00"
            assert raw.expect_closed()  # RELEASE disconnects the domain
        assert not Path(domain_path).exists()


def test_connect_as_gives_an_in_process_domain_connection(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    with RawClient(xenstored_thread.connect_as(0)) as dom0:  # the toolstack makes its home
        assert ok(dom0.request(XsType.MKDIR, b"/local/domain/9\x00")) == b"OK\x00"
        assert ok(dom0.request(XsType.SET_PERMS, b"/local/domain/9\x00n9\x00")) == b"OK\x00"
    with RawClient(xenstored_thread.connect_as(9)) as dom9:
        assert ok(dom9.request(XsType.WRITE, b"x\x00v")) == b"OK\x00"
        assert ok(dom9.request(XsType.READ, b"/local/domain/9/x\x00")) == b"v"
        assert error_name(dom9.request(XsType.READ, b"/tool\x00")) == "EACCES"
    node = xenstored_thread.call(lambda svc: svc.store.get("/local/domain/9/x"))
    assert node is not None and node.owner == 9


# -- the payload limit and hostile clients -------------------------------------------------


def test_payload_limit(xenstored_thread: XenstoredThread, xs: pyxs.Client) -> None:  # noqa: F811
    path = b"/limit"
    xs.write(path, b"v" * (4096 - len(path) - 1))  # exactly 4096 bytes of payload
    assert len(xs.read(path)) == 4096 - len(path) - 1
    with pytest.raises(pyxs.exceptions.InvalidPayload):
        xs.write(path, b"v" * 4096)  # pyxs refuses locally
    with RawClient.connect(xenstored_thread.socket_path or "") as raw:
        raw.send_raw(header(XsType.WRITE, 1, 0, 4097) + b"/x\x00" + b"v" * 4094)
        assert raw.expect_closed()  # the daemon drops a client that oversteps
    assert xs.read(path)  # and keeps serving everyone else


@pytest.mark.parametrize(
    "attack",
    [
        header(XsType.READ, 1, 0, 0xFFFFFFFF),  # absurd length
        header(XsType.READ, 1, 0, 5000) + b"x" * 100,
        os.urandom(16) + b"\xff" * 4,  # garbage that may announce anything
    ],
)
def test_oversize_or_garbage_header_drops_only_that_client(
    xenstored_thread: XenstoredThread,  # noqa: F811
    xs: pyxs.Client,
    attack: bytes,
) -> None:
    with RawClient.connect(xenstored_thread.socket_path or "") as raw:
        raw.send_raw(attack)
        raw.sock.shutdown(1)
        raw.expect_closed()
    xs.write(b"/still", b"alive")
    assert xs.read(b"/still") == b"alive"


def test_bad_requests_get_errors_and_the_connection_survives(
    xenstored_thread: XenstoredThread,  # noqa: F811
) -> None:
    with RawClient.connect(xenstored_thread.socket_path or "") as raw:
        assert error_name(raw.request(9999, b"")) == "ENOSYS"
        assert error_name(raw.request(XsType.WATCH_EVENT, b"a\x00b\x00")) == "ENOSYS"
        assert error_name(raw.request(XsType.READ, b"/tool")) == "EINVAL"  # no NUL
        assert error_name(raw.request(XsType.READ, b"/\xff\x00")) == "EINVAL"
        assert error_name(raw.request(XsType.READ, b"/tool\x00", tx_id=77)) == "ENOENT"
        assert ok(raw.request(XsType.READ, b"/tool\x00")) == b""


def test_partial_message_then_hangup(xenstored_thread: XenstoredThread, xs: pyxs.Client) -> None:  # noqa: F811
    for cut in (3, 16, 18):
        with RawClient.connect(xenstored_thread.socket_path or "") as raw:
            raw.send_raw((header(XsType.READ, 1, 0, 6) + b"/tool\x00")[:cut])
    assert xs.read(b"/tool") == b""


def test_a_client_that_never_reads_cannot_stall_others(
    xenstored_thread: XenstoredThread,  # noqa: F811
    xs: pyxs.Client,
) -> None:
    xs.write(b"/big", b"x" * 4000)
    flood = header(XsType.READ, 1, 0, 5) + b"/big\x00"
    with RawClient.connect(xenstored_thread.socket_path or "") as raw:
        raw.sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 50_000:
            try:
                raw.sock.send(flood * 64)
                sent += 64
            except BlockingIOError:
                break  # the daemon stopped reading from us: back-pressure
        start = time.monotonic()
        assert xs.read(b"/big") == b"x" * 4000
        assert time.monotonic() - start < 1
        assert xenstored_thread.call(lambda _svc: xenstored_thread.server.output_backlog()) < (
            2 * 1024 * 1024
        )
