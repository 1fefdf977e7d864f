"""`Fanout`: every consumer sees every chunk once, in order; errors surface; no thread leaks."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from pvgrub_py.bootloader.hashing import Fanout


def test_each_consumer_sees_every_chunk_in_order() -> None:
    chunks = [os.urandom(n) for n in (1, 2047, 2048, 1 << 20, 0, 77)] * 20
    for threads in (True, False):
        h1, h2, seen = hashlib.sha1(), hashlib.sha256(), []
        with Fanout([h1.update, h2.update, seen.append], threads=threads) as feed:
            for c in chunks:
                feed(c)
        joined = b"".join(chunks)
        assert h1.digest() == hashlib.sha1(joined).digest()
        assert h2.digest() == hashlib.sha256(joined).digest()
        assert seen == chunks


def test_a_consumer_error_is_raised_at_close_and_threads_end() -> None:
    before = threading.active_count()

    def broken(chunk: bytes) -> None:
        if chunk == b"bad":
            raise ValueError("consumer failed")

    fan = Fanout([broken, hashlib.sha1().update])
    for c in (b"a", b"bad", b"c", b"d"):
        fan(c)
    with pytest.raises(ValueError, match="consumer failed"):
        fan.close()
    assert threading.active_count() == before


def test_the_callers_error_wins_and_threads_still_end() -> None:
    before = threading.active_count()
    with pytest.raises(KeyError), Fanout([hashlib.sha256().update]) as feed:
        feed(b"x" * 4096)
        raise KeyError("reader failed")
    assert threading.active_count() == before


def test_then_runs_once_every_consumer_is_done_with_the_chunk() -> None:
    """The caller may reuse a chunk's memory once ``then`` is called."""
    import time

    fast: list[bytes] = []
    slow: list[bytes] = []

    def dawdle(chunk: bytes) -> None:
        time.sleep(0.002)
        slow.append(chunk)

    seen_at_callback: list[tuple[int, int]] = []
    for threads in (True, False):
        fast.clear()
        slow.clear()
        seen_at_callback.clear()
        with Fanout([fast.append, dawdle], threads=threads) as feed:
            for k in range(1, 6):
                feed(bytes([k]) * 4096,
                     then=lambda: seen_at_callback.append((len(fast), len(slow))))
        assert len(seen_at_callback) == 5
        for k, (got_fast, got_slow) in enumerate(seen_at_callback, 1):
            assert got_fast >= k and got_slow >= k  # both consumers are past chunk k


def test_then_callbacks_run_before_close_even_after_a_consumer_error() -> None:
    before = threading.active_count()
    ran: list[int] = []

    def broken(chunk: bytes) -> None:
        raise ValueError("consumer failed")

    fan = Fanout([broken, hashlib.sha1().update])
    for k in range(3):
        fan(b"x" * 4096, then=lambda k=k: ran.append(k))  # type: ignore[misc]
    with pytest.raises(ValueError, match="consumer failed"):
        fan.close()
    assert ran == [0, 1, 2]
    fan(b"x", then=lambda: ran.append(3))  # closed: at once
    assert ran == [0, 1, 2, 3]
    assert threading.active_count() == before


def test_a_then_callback_error_is_raised_at_close() -> None:
    def fail() -> None:
        raise RuntimeError("callback failed")

    fan = Fanout([hashlib.sha256().update])
    fan(b"y" * 4096, then=fail)
    fan(b"z" * 4096)  # the worker goes on
    with pytest.raises(RuntimeError, match="callback failed"):
        fan.close()
