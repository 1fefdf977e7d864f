"""Hash while copying, on other cores: the bootloader's one pass, in parallel.

The bootloader reads each chunk of the kernel and initrd once, writes it to
the output file and hashes it for every PCR bank (sha1 and sha256 at
least).  Done in one thread, hashing is most of the time (74 MB through
sha1 and sha256 cost twice the read and the write together on the bench
disk).  hashlib releases the GIL for updates of more than 2047 bytes
(CPython ``Modules/hashlib.h``, ``HASHLIB_GIL_MINSIZE``), so each hash
consumer runs in its own thread, fed the very same chunk objects in the
same order through a bounded queue, while the main thread goes on reading
and writing.  Nothing changes about *what* is hashed: every consumer sees
every chunk, in order, exactly once; `Fanout.close` waits for all of them
before any digest is read, and re-raises the first consumer error.

The queues hold at most `DEPTH` chunks each, so memory stays bounded
(DEPTH x chunk size per consumer).  A caller that feeds views of buffers
it reuses (`transfer.BufferRing`) passes ``then``, called once every
consumer is done with the chunk.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

#: A chunk: ``bytes``, or a view of a buffer the caller reuses (``then``).
Chunk = bytes | memoryview
Consumer = Callable[[Chunk], object]

#: Chunks in flight per consumer.
DEPTH = 8
_STOP = object()


class _Mark:
    """Counts the consumers done with a chunk; the last one runs the callback."""

    __slots__ = ("_callback", "_left", "_lock")

    def __init__(self, count: int, callback: Callable[[], object]) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._callback = callback

    def arrive(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._callback()


class _Then:
    """A chunk and the mark to count down once it is consumed."""

    __slots__ = ("chunk", "mark")

    def __init__(self, chunk: Chunk, mark: _Mark) -> None:
        self.chunk = chunk
        self.mark = mark


class _Worker(threading.Thread):
    def __init__(self, consumer: Consumer) -> None:
        super().__init__(name="pvgrub-py-hash", daemon=True)
        self.consumer = consumer
        self.queue: queue.Queue[object] = queue.Queue(DEPTH)
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            mark: _Mark | None = None
            if isinstance(item, _Then):
                mark = item.mark
                item = item.chunk
            elif isinstance(item, _Mark):
                mark = item  # a chunk this failed consumer was not fed
                item = None
            if item is not None and self.error is None:
                try:
                    self.consumer(item)  # type: ignore[arg-type]
                except BaseException as e:  # reported by Fanout.close
                    self.error = e
            item = None  # hold no view of the caller's buffer past its mark
            if mark is not None:
                try:
                    mark.arrive()  # even after an error: the caller waits for it
                except BaseException as e:
                    if self.error is None:
                        self.error = e


class Fanout:
    """Feed each chunk to every consumer, each in its own thread.

    With ``threads=False`` the consumers run inline, in order (the same
    results, for callers that must not start threads).
    """

    def __init__(self, consumers: Sequence[Consumer], *, threads: bool = True) -> None:
        self._inline = list(consumers) if not threads or len(consumers) == 0 else []
        self._workers = [] if self._inline else [_Worker(c) for c in consumers]
        for w in self._workers:
            w.start()
        self._closed = False

    def __call__(self, chunk: Chunk, then: Callable[[], object] | None = None) -> None:
        """Feed *chunk* to every consumer.

        *then*, if given, runs once every consumer is done with *chunk*
        (so the caller may reuse its memory): in the thread of the last
        consumer to get there, whether or not a consumer failed, and always
        before `close` returns (an error it raises there is reported by
        `close`); with inline consumers, at once, here.
        """
        for consumer in self._inline:
            consumer(chunk)
        if then is not None and (not self._workers or self._closed):
            then()
            return
        mark = None if then is None else _Mark(len(self._workers), then)
        feeding = True
        for w in self._workers:
            if w.error is not None:
                feeding = False  # reported at close; stop feeding work that will be discarded
            if feeding:
                w.queue.put(chunk if mark is None else _Then(chunk, mark))
            elif mark is not None:
                w.queue.put(mark)

    def close(self) -> None:
        """Wait for every consumer; raise the first error any of them hit."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.queue.put(_STOP)
        for w in self._workers:
            w.join()
        for w in self._workers:
            if w.error is not None:
                raise w.error

    def __enter__(self) -> Fanout:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            with contextlib.suppress(BaseException):  # the original error wins
                self.close()
