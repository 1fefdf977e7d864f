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
