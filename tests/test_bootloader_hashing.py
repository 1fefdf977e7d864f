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


# -- the bootloader's one pass: a thread per bank, reused read buffers ------------
class _Recorder:
    """A hashlib stand-in that notes which thread fed it (and the bytes)."""

    def __init__(self, name: str, threads: dict[str, set[int]]) -> None:
        self._h = hashlib.new(name)
        self._threads = threads.setdefault(name, set())

    def update(self, data: bytes) -> None:
        self._threads.add(threading.get_ident())
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


def test_the_kernel_is_hashed_with_one_thread_per_bank(monkeypatch: pytest.MonkeyPatch) -> None:
    """sha1 and sha256 of the kernel used to run one after the other in one
    thread (the measurer's); now each bank has its own, as the initrd's do."""
    from pvgrub_py.bootloader.extract import copy_kernel
    from pvgrub_py.disk.extract import Limits
    from pvgrub_py.tpm.algorithms import SHA1, SHA256, HashAlgorithm

    threads: dict[str, set[int]] = {}
    monkeypatch.setattr(HashAlgorithm, "new", lambda self: _Recorder(self.name, threads))
    data = os.urandom(3 << 20)

    def stream(sink: object, cap: int) -> int:
        for i in range(0, len(data), 1 << 20):
            sink(data[i : i + (1 << 20)])  # type: ignore[operator]
        return len(data)

    m = copy_kernel(stream, "/vmlinuz", "kernel", None, [SHA1, SHA256], Limits())
    assert m.digests == {"sha1": hashlib.sha1(data).digest(),
                         "sha256": hashlib.sha256(data).digest()}  # fmt: skip
    assert m.length == len(data)
    assert len(threads["sha1"]) == 1 and len(threads["sha256"]) == 1
    assert threads["sha1"] != threads["sha256"]
    assert threading.get_ident() not in threads["sha1"] | threads["sha256"]


def test_the_copy_sinks_say_how_many_chunks_they_hold() -> None:
    """What lets the parent read a mapped file into reused buffers."""
    from pvgrub_py.bootloader.extract import copy_initrds, copy_kernel
    from pvgrub_py.bootloader.hashing import DEPTH
    from pvgrub_py.disk.extract import Limits
    from pvgrub_py.tpm.algorithms import SHA1, SHA256

    held: list[object] = []

    def stream(sink: object, cap: int) -> int:
        held.append(getattr(sink, "holds", None))
        sink(b"abc")  # type: ignore[operator]
        return 3

    copy_kernel(stream, "/k", "kernel", None, [SHA1, SHA256], Limits())
    copy_initrds([stream], ["/i"], "initrd", None, [SHA1, SHA256], Limits())
    assert held == [DEPTH + 1, DEPTH + 1]


def test_reused_buffers_never_change_under_a_slow_consumer(tmp_path: object) -> None:
    """copy_extents' ring of `Fanout.holds` + 2 buffers: a consumer that lags
    as far as its queue allows still sees every chunk as it was read."""
    import time

    from pvgrub_py.disk.extents import copy_extents

    data = os.urandom(40 << 10)
    path = os.path.join(str(tmp_path), "image")
    with open(path, "wb") as f:
        f.write(data)
    seen: list[bytes] = []

    def slow(chunk: bytes) -> None:
        time.sleep(0.002)
        seen.append(bytes(chunk))

    fd = os.open(path, os.O_RDONLY)
    try:
        with Fanout([slow, hashlib.sha256().update]) as feed:
            views: list[object] = []

            def sink(chunk: bytes) -> None:
                views.append(chunk)
                feed(chunk)

            extents: list[tuple[int | None, int]] = [(0, 20 << 10), (None, 3000),
                                                     (20 << 10, 20 << 10)]  # fmt: skip
            n = copy_extents(fd, extents, sink, source="image", chunk=1024, ring=feed.holds + 2)
    finally:
        os.close(fd)
    expected = data[: 20 << 10] + bytes(3000) + data[20 << 10 :]
    assert n == len(expected)
    assert b"".join(seen) == expected
    # reused: the file's chunks are views of at most holds + 2 buffers
    buffers = {id(v.obj) for v in views if isinstance(v, memoryview)}  # type: ignore[attr-defined]
    assert 1 < len(buffers) <= feed.holds + 2
