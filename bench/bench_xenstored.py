#!/usr/bin/env python3
"""Throughput of ``pvgrubctl sim xenstored``, printed as JSON.

* ``pyxs_reads_per_s``: one pyxs 0.4.1 client doing READ in a loop for about
  two seconds (target: >= 20000).  pyxs hands every reply from its router
  thread to the caller's thread, so this measures pyxs as much as us;
  ``raw_reads_per_s`` is the same loop over a bare socket, which isolates the
  daemon's own cost.
* ``pyxs_ceiling_reads_per_s``: the same pyxs loop against a trivial server
  that answers every request with a canned reply and does nothing else: the
  most any daemon can get out of pyxs on this machine.
* ``watch_clients`` / ``watch_errors``: 200 pyxs clients at once, each sets a
  watch, gets the initial event, then the event for a write to its path
  (target: zero errors).

The daemon runs in its own process, started like a user would start it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyxs  # noqa: E402

from pvgrub_py.xenstore.wire import MessageReader, XsType, pack  # noqa: E402

READ_SECONDS = 2.0
WATCH_CLIENTS = 200


#: A server that parses nothing but the header and answers READ with 32 bytes:
#: pyxs's ceiling.  Run in its own process so it does not share our GIL.
CANNED_SERVER = """
import os, socket, struct, sys
H = struct.Struct("=IIII")
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
buf = b""
while True:
    data = c.recv(65536)
    if not data:
        break
    buf += data
    out = []
    while len(buf) >= 16:
        t, r, tx, n = H.unpack_from(buf)
        if len(buf) < 16 + n:
            break
        body = b"x" * 32 if t == 2 else b"OK\\0"
        out.append(H.pack(t, r, tx, len(body)) + body)
        buf = buf[16 + n:]
    c.sendall(b"".join(out))
"""


def pyxs_ceiling(tmp: Path) -> float:
    sock = tmp / "canned"
    proc = subprocess.Popen(
        [sys.executable, "-c", CANNED_SERVER, str(sock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return pyxs_reads(sock, prepare=False)
    finally:
        proc.kill()
        proc.wait()


def start_daemon(sock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pvgrub_py.cli.cmd_sim",
            "xenstored",
            "--socket",
            str(sock),
            "--foreground",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != str(sock):
        proc.kill()
        raise SystemExit("xenstored did not start")
    return proc


def pyxs_reads(sock: Path, prepare: bool = True) -> float:
    with pyxs.Client(unix_socket_path=str(sock)) as xs:
        if prepare:
            xs.write(b"/bench/value", b"x" * 32)
        count = 0
        start = time.perf_counter()
        deadline = start + READ_SECONDS
        while True:
            for _ in range(100):
                xs.read(b"/bench/value")
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)


def raw_reads(sock: Path) -> float:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    reader = MessageReader()
    request = pack(XsType.READ, 1, 0, b"/bench/value\x00")
    count = 0
    start = time.perf_counter()
    deadline = start + READ_SECONDS
    try:
        while True:
            for _ in range(100):
                s.sendall(request)
                while (msg := reader.next_message()) is None:
                    reader.feed(s.recv(65536))
                assert msg.type == XsType.READ
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)
    finally:
        s.close()


def watch_storm(sock: Path) -> dict[str, Any]:
    errors: list[str] = []
    watching = threading.Barrier(WATCH_CLIENTS + 1, timeout=60)
    done = threading.Barrier(WATCH_CLIENTS + 1, timeout=60)

    def client(i: int) -> None:
        path = f"/bench/watch/{i}".encode()
        token = f"t{i}".encode()
        try:
            with pyxs.Client(unix_socket_path=str(sock)) as xs, xs.monitor() as monitor:
                monitor.watch(path, token)
                events = monitor.wait()
                first = next(events)
                if (first.path, first.token) != (path, token):
                    errors.append(f"client {i}: initial event {first}")
                watching.wait()
                second = next(events)
                if (second.path, second.token) != (path, token):
                    errors.append(f"client {i}: event {second}")
        except Exception as e:  # counted, not raised: the benchmark reports them
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            watching.abort()
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()

    threads = [
        threading.Thread(target=client, args=(i,), daemon=True) for i in range(WATCH_CLIENTS)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        watching.wait()
        with pyxs.Client(unix_socket_path=str(sock)) as writer:
            for i in range(WATCH_CLIENTS):
                writer.write(f"/bench/watch/{i}".encode(), b"1")
        done.wait()
    except threading.BrokenBarrierError:
        errors.append("barrier broken (a client failed or timed out)")
    elapsed = time.perf_counter() - start
    return {
        "watch_clients": WATCH_CLIENTS,
        "watch_errors": len(errors),
        "watch_seconds": round(elapsed, 3),
        "watch_error_samples": errors[:5],
    }


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="xsb", dir="/tmp"))
    sock = tmp / "sock"
    proc = start_daemon(sock)
    try:
        result: dict[str, Any] = {
            "pyxs_reads_per_s": round(pyxs_reads(sock)),
            "raw_reads_per_s": round(raw_reads(sock)),
        }
        result["pyxs_ceiling_reads_per_s"] = round(pyxs_ceiling(tmp))
        result.update(watch_storm(sock))
        result["targets"] = {"pyxs_reads_per_s": 20000, "watch_errors": 0}
        result["cpus"] = os.cpu_count()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
