"""A wall-clock budget for everything that reads one guest disk.

Bounding sizes is not enough: a corrupt filesystem can make a reader loop
forever without reading much.  Fuzzing the candidate readers (400 corrupted
images per filesystem) found two such loops in dissect.btrfs (a binary
search over a zeroed B-tree node in its ``tree.py``, a read loop in its
``stream.py`` that makes no progress on a zero-length extent), and FAT
cluster chains or B-tree pointers can form cycles.  So
the disk layer runs under a deadline, enforced in two places:

* every read of the image goes through `pvgrub_py.disk.bounded`, which calls
  `Budget.check` first, so a loop that keeps reading stops at the deadline;
* a loop that spins in pure Python without reading (walking cached tree
  nodes) is interrupted by `cpu_deadline`, an ``ITIMER_REAL`` alarm whose
  handler raises `BudgetExceeded` at the next bytecode boundary.  Signal
  handlers only run in the main thread, so this second guard is active
  only there (which is where the deprivileged child does its work); in
  other threads the read-path check still applies.

The alarm re-fires every 50 ms after the deadline, so a reader that catches
``Exception`` broadly cannot swallow it for good.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pvgrub_py.errors import InputError

#: Whole-disk budget when the caller names none: generous for a 2 GiB
#: kernel+initrd read at FAT speed (~75 MB/s), small enough to end a hang.
DEFAULT_SECONDS = 120.0

_REFIRE_SECONDS = 0.05


class BudgetExceeded(InputError):
    """The time budget for reading a guest disk ran out."""


class Budget:
    """A deadline on the monotonic clock, shared by all readers of one disk."""

    def __init__(self, seconds: float = DEFAULT_SECONDS, *, source: str = "disk") -> None:
        if seconds <= 0:
            raise ValueError("a time budget must be positive")
        self.seconds = seconds
        self.source = source
        self._deadline = time.monotonic() + seconds

    def restart(self, seconds: float | None = None) -> None:
        """Start a new deadline, e.g. after an interactive menu has waited.

        The budget bounds work done on the disk, not time spent waiting for
        a user; a caller that keeps a `Disk` open across a menu restarts it
        before extracting.
        """
        if seconds is not None:
            if seconds <= 0:
                raise ValueError("a time budget must be positive")
            self.seconds = seconds
        self._deadline = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def exceeded(self) -> BudgetExceeded:
        return BudgetExceeded(
            self.source,
            f"gave up after {self.seconds:g} s: the disk's metadata makes the reader loop "
            "(corrupt or hostile image)",
        )

    def check(self) -> None:
        """Raise `BudgetExceeded` once the deadline has passed."""
        if time.monotonic() >= self._deadline:
            raise self.exceeded()


_state = threading.local()


@contextmanager
def cpu_deadline(budget: Budget | None) -> Iterator[None]:
    """Interrupt pure-Python loops inside the block when *budget* runs out.

    Re-entrant: only the outermost block arms the timer.  Any timer and
    handler that were installed before are restored on exit.
    """
    if (
        budget is None
        or getattr(_state, "armed", False)
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    remaining = budget.remaining()
    if remaining <= 0:
        raise budget.exceeded()

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise budget.exceeded()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_timer = signal.setitimer(signal.ITIMER_REAL, remaining, _REFIRE_SECONDS)
    started = time.monotonic()
    _state.armed = True
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _state.armed = False
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0] > 0:
            left = max(old_timer[0] - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_timer[1])
