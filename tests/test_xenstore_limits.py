"""The tools that keep the simulated host's daemons serving dom0 when a guest
takes everything: rate-limited logging, dom0's reserve, the spare descriptor."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

import pytest

from pvgrub_py.sim.xenstored import package_env
from pvgrub_py.xenstore import limits


def test_a_flood_of_one_complaint_is_one_line_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    ratelog = limits.RateLimitedLog(logging.getLogger("t"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="t"):
        written = [ratelog.warning("k", "guest %d misbehaves", 5) for _ in range(1000)]
        ratelog.warning("other", "another reason")
        clock[0] += 10.0
        ratelog.warning("k", "guest %d misbehaves", 5)
    assert written.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "guest 5 misbehaves",
        "another reason",
        "guest 5 misbehaves (999 more like this suppressed)",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_the_keys_remembered_are_bounded() -> None:
    ratelog = limits.RateLimitedLog(logging.getLogger("t"), max_keys=8)
    for n in range(100):
        ratelog.warning(f"key{n}", "x")
    assert len(ratelog._last) <= 8


def test_dom0s_reserve_is_an_eighth_of_the_limit_or_64() -> None:
    assert limits.reserve_for_dom0(160) == 64
    assert limits.reserve_for_dom0(20000) == 2500


def test_at_emfile_the_spare_refuses_the_queued_connection() -> None:
    """In a child limited to 32 descriptors, all taken: accept fails with
    EMFILE, the spare accepts and closes, the client reads end-of-file."""
    script = textwrap.dedent(
        """
        import errno, os, resource, socket, sys
        from pvgrub_py.xenstore import limits
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\\0pvgrub-limits-test-%d" % os.getpid())
        listener.listen(4)
        spare = limits.SpareDescriptor()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(listener.getsockname())
        hog = []
        try:
            while True:
                hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            listener.accept()
            sys.exit("accept worked: not at EMFILE")
        except OSError as e:
            assert e.errno == errno.EMFILE, e
        assert spare.refuse_one(listener)
        client.settimeout(5)
        assert client.recv(1) == b""
        print("refused")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env=package_env(),
    )
    assert done.stdout.strip() == "refused", done.stderr


def test_headroom_counts_our_descriptors() -> None:
    before = limits.descriptor_headroom()
    pair = socket.socketpair()
    try:
        assert limits.descriptor_headroom() == before - 2
    finally:
        for sock in pair:
            sock.close()


def test_a_daemon_raises_its_soft_descriptor_limit_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "from pvgrub_py.xenstore import limits\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 256))\n"
        "print(limits.raise_descriptor_limit(), limits.raise_descriptor_limit(target=128))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env=package_env(),
    )
    assert done.stdout.split() == ["256", "256"], done.stderr
