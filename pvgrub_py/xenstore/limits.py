"""Running out of something without falling over: descriptors and log lines.

Both daemons of the simulated host (xenstored and the host daemon) serve
guests that may open connections until the process runs out of file
descriptors.  Three tools keep dom0's service alive when that happens:

* `descriptor_headroom`: how many more descriptors this process may open.
  A guest's request that would take the last `reserve_for` ones is refused
  (EMFILE, or the daemon's nearest errno) so dom0 always finds some;
* `SpareDescriptor`: one descriptor held back for `accept` itself.  When
  ``accept`` fails with EMFILE the connection stays queued and the listener
  stays readable, so an event loop spins on it and nobody new gets in.
  Closing the spare, accepting, closing what was accepted and re-opening the
  spare (the "reserve fd" idiom of libevent and libuv users) empties the
  queue: the client is refused with end-of-file instead of hanging;
* `RateLimitedLog`: one line per reason and interval, counting what was
  suppressed, never a traceback: a guest must not be able to fill dom0's
  disk with our complaints about it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import time

#: Descriptors a guest may never take (at least this many, or an eighth of
#: the limit when that is more).
MIN_RESERVE = 64


def descriptor_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_descriptor_limit(target: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one (at most
    ``target``), as daemons serving many clients do; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return descriptor_limit()


def open_descriptors() -> int:
    """How many descriptors this process has open (Linux: /proc/self/fd)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return 0


def reserve_for_dom0(limit: int | None = None) -> int:
    limit = descriptor_limit() if limit is None else limit
    return max(MIN_RESERVE, limit // 8)


def descriptor_headroom() -> int:
    """Descriptors this process may still open before EMFILE."""
    return descriptor_limit() - open_descriptors()


def guest_may_open(count: int = 1) -> bool:
    """Whether an unprivileged client may make us open ``count`` more
    descriptors without eating into dom0's reserve."""
    return descriptor_headroom() - count >= reserve_for_dom0()


class SpareDescriptor:
    """One descriptor kept open so that a listener at EMFILE can still
    accept (and at once close) the connection at the head of its queue."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self.reopen()

    def reopen(self) -> None:
        if self._fd is None:
            with contextlib.suppress(OSError):
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def refuse_one(self, listener: socket.socket) -> bool:
        """Accept and close one queued connection using the spare; True if
        one was refused so."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            sock, _addr = listener.accept()
        except OSError:
            return False
        finally:
            self.reopen()
        with contextlib.suppress(OSError):
            sock.close()
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RateLimitedLog:
    """``warning(key, fmt, *args)`` logs the first time ``key`` is seen in
    each ``interval``; the next line for that key says how many were
    suppressed meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 256):
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, fmt: str, *args: object) -> bool:
        """True if the line was written."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()  # bounded: a guest cannot make us remember every key
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fmt += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self._log.warning(fmt, *args)
        return True
