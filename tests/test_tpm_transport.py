"""Transport failures: a TPM that answers garbage, answers short, hangs or hangs up.

The misbehaving peers here are deliberately broken socket servers: they
stand in for a hostile or crashed vTPM, not for a TPM's function (the real
TPM in every functional test is swtpm).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pvgrub_py.tpm import tpm12
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmProtocolError, TpmReturnCode, TpmTransportError
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.tpm.swtpm import SocketAddress, SwtpmTransport
from pvgrub_py.tpm.uri import parse_vtpm_uri

Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def broken_tpm(tmp_path: Path) -> Iterator[Callable[[Behaviour], SocketAddress]]:
    servers: list[socket.socket] = []

    def start(behaviour: Behaviour) -> SocketAddress:
        path = str(tmp_path / f"tpm{len(servers)}.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        servers.append(srv)

        def serve() -> None:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                behaviour(conn)

        threading.Thread(target=serve, daemon=True).start()
        return SocketAddress(path=path)

    yield start
    for s in servers:
        s.close()


EXTEND = tpm12.build_extend(4, hashlib.sha1(b"k").digest())


def test_garbage_answer(broken_tpm: Callable[[Behaviour], SocketAddress]) -> None:
    addr = broken_tpm(lambda c: c.sendall(b"\xde\xad\xbe\xef" * 8))
    with pytest.raises(TpmProtocolError, match="size field"):
        SwtpmTransport(addr, timeout=2).transmit(EXTEND)


def test_short_answer_then_close(broken_tpm: Callable[[Behaviour], SocketAddress]) -> None:
    addr = broken_tpm(lambda c: c.sendall(b"\x00\xc4\x00\x00"))
    with pytest.raises(TpmTransportError, match="connection closed after 4 of 10 bytes"):
        SwtpmTransport(addr, timeout=2).transmit(EXTEND)


def test_truncated_body(broken_tpm: Callable[[Behaviour], SocketAddress]) -> None:
    addr = broken_tpm(lambda c: c.sendall(bytes.fromhex("00c40000001e00000000") + b"\x01" * 5))
    with pytest.raises(TpmTransportError, match="connection closed after 15 of 30 bytes"):
        SwtpmTransport(addr, timeout=2).transmit(EXTEND)


def test_hang_up_without_answer(broken_tpm: Callable[[Behaviour], SocketAddress]) -> None:
    addr = broken_tpm(lambda c: None)
    with pytest.raises(TpmTransportError, match="connection closed after 0 of 10"):
        SwtpmTransport(addr, timeout=2).transmit(EXTEND)


def test_silence_times_out(broken_tpm: Callable[[Behaviour], SocketAddress]) -> None:
    stop = threading.Event()
    addr = broken_tpm(lambda c: stop.wait(5))
    with pytest.raises(TpmTransportError, match="timed out"):
        SwtpmTransport(addr, timeout=0.3).transmit(EXTEND)
    stop.set()


def test_huge_size_field_is_refused_before_reading(
    broken_tpm: Callable[[Behaviour], SocketAddress],
) -> None:
    addr = broken_tpm(lambda c: c.sendall(bytes.fromhex("00c4 7fffffff 00000000".replace(" ", ""))))
    with pytest.raises(TpmProtocolError, match="exceeds"):
        SwtpmTransport(addr, timeout=2).transmit(EXTEND)


def test_well_framed_answer_of_the_wrong_shape(
    broken_tpm: Callable[[Behaviour], SocketAddress],
) -> None:
    # A 2.0 answer to a 1.2 extend: framing is fine, the codec refuses it.
    addr = broken_tpm(lambda c: c.sendall(bytes.fromhex("80010000000a00000000")))
    client = TpmClient(SwtpmTransport(addr, timeout=2), version="1.2")
    with pytest.raises(TpmProtocolError):
        client.extend(4, {"sha1": hashlib.sha1(b"k").digest()})


def test_refused_connection() -> None:
    with pytest.raises(TpmTransportError, match="cannot connect"):
        SwtpmTransport(SocketAddress(path="/nonexistent/tpm.sock"), timeout=1).transmit(EXTEND)


@pytest.mark.swtpm
def test_non_zero_return_code_is_named(swtpm12: SwtpmProcess) -> None:
    with TpmClient(swtpm12.transport()) as client, pytest.raises(TpmReturnCode) as e:
        client.extend(24, {"sha1": bytes(20)})
    assert e.value.name == "TPM_BADINDEX"


@pytest.mark.swtpm
def test_tpm2_bad_pcr_handle_is_named(swtpm2: SwtpmProcess) -> None:
    with TpmClient(swtpm2.transport()) as client, pytest.raises(TpmReturnCode) as e:
        client.extend(24, {b.name: bytes(b.digest_size) for b in client.active_banks()})
    assert e.value.name == "TPM_RC_VALUE" and "handle 1" in str(e.value)


@pytest.mark.swtpm
def test_swtpm_killed_mid_session(swtpm12: SwtpmProcess) -> None:
    client = TpmClient(swtpm12.transport(timeout=3), version="1.2")
    client.extend(4, {"sha1": bytes(20)})
    assert swtpm12.pid is not None
    os.kill(swtpm12.pid, signal.SIGKILL)
    with pytest.raises(TpmTransportError):
        client.extend(4, {"sha1": bytes(20)})


@pytest.mark.swtpm
def test_one_command_at_a_time_from_many_threads(swtpm12: SwtpmProcess) -> None:
    # swtpm merges pipelined commands; the transport must serialise them.
    client = TpmClient(swtpm12.transport(), version="1.2")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                client.extend(4, {"sha1": hashlib.sha1(b"x").digest()})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    pcr = bytes(20)
    for _ in range(200):
        pcr = hashlib.sha1(pcr + hashlib.sha1(b"x").digest()).digest()
    assert client.read_pcrs([4]) == {"sha1": {4: pcr}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("swtpm:unix:/run/tpm.sock", "swtpm:unix:/run/tpm.sock"),
        ("swtpm:tcp:127.0.0.1:2321", "swtpm:tcp:127.0.0.1:2321"),
        ("swtpm:tcp:[::1]:2321", "swtpm:tcp:::1:2321"),
        ("xen:0", "xen:0/0"),
        ("xen:3/1", "xen:3/1"),
    ],
)
def test_vtpm_uri_forms(text: str, expected: str) -> None:
    assert str(parse_vtpm_uri(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "swtpm", "swtpm:tcp:host", "swtpm:tcp:h:0", "xen:", "xen:a", "tcp://x:1"]
)
def test_bad_vtpm_uri(text: str) -> None:
    from pvgrub_py.errors import UsageError

    with pytest.raises(UsageError, match="bad vTPM address"):
        parse_vtpm_uri(text)
