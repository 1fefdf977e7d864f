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

import contextlib
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
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


class _Deadline:
    """One arming of the ``ITIMER_REAL`` alarm by an outermost `cpu_deadline`.

    The alarm is asynchronous: CPython runs the Python handler at the next
    bytecode boundary of the main thread, wherever that is, including inside
    ``__enter__`` after the timer is armed and inside ``__exit__`` before it
    is disarmed.  An exception raised there would skip the rest of the
    setup or teardown and leave the timer (with its 50 ms re-fire) and the
    handler behind, to raise `BudgetExceeded` later in unrelated code.  So
    the handler raises only while this arming is live *and* neither
    ``__enter__`` nor ``__exit__`` of this class (nor those of a
    ``contextlib.contextmanager`` wrapping the ``with`` that armed it, as
    ``Filesystem._guard`` does) is on the interrupted stack; there it
    returns, and the setup and teardown run straight through.  The frame
    check is what closes the window at the first bytecode of ``__exit__``
    (a signal that arrived as the body finished); blocking SIGALRM with
    ``pthread_sigmask`` could not, since that call itself comes after that
    bytecode and a process-directed signal can still reach another thread.
    An alarm swallowed during setup is not lost: the timer re-fires 50 ms
    later, inside the body.  Once ``setitimer`` has disarmed the timer, an
    expiry before it has already been delivered, and pending handlers
    (ours, silent here) run before ``signal.signal`` restores the previous
    one.
    """

    __slots__ = ("_budget", "_live", "_old_handler", "_old_timer", "_owner", "_started")

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._live = False
        self._old_handler: signal._HANDLER = None
        self._old_timer = (0.0, 0.0)
        self._started = 0.0
        #: The frame whose ``with`` entered this block.
        self._owner: FrameType | None = None

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._live and not self._entering_or_leaving(frame):
            raise self._budget.exceeded()

    def _entering_or_leaving(self, frame: FrameType | None) -> bool:
        """Is *frame* (the interrupted one) inside our setup or teardown?

        That is: in ``__enter__``/``__exit__`` here, or in the
        ``contextlib.contextmanager`` wrapper's ``__enter__``/``__exit__``
        around the generator whose ``with`` armed us (``Filesystem._guard``
        is one), before it has suspended or resumed that generator.
        """
        while frame is not None:
            code = frame.f_code
            if code in _SETUP_TEARDOWN:
                return True
            if code in _CONTEXTMANAGER_CODE and self._owner is not None:
                gen = getattr(frame.f_locals.get("self"), "gen", None)
                if getattr(gen, "gi_frame", None) is self._owner:
                    return True
            frame = frame.f_back
        return False

    def __enter__(self) -> None:
        remaining = self._budget.remaining()
        if remaining <= 0:
            raise self._budget.exceeded()
        self._owner = sys._getframe(1)
        self._live = True
        self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            self._old_timer = signal.setitimer(signal.ITIMER_REAL, remaining, _REFIRE_SECONDS)
            self._started = time.monotonic()
            _state.armed = True
        except BaseException:  # e.g. KeyboardInterrupt: the with body never starts
            self._restore()
            raise

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        self._live = False
        self._owner = None  # no frame <-> self cycle left behind
        signal.setitimer(signal.ITIMER_REAL, 0)
        _state.armed = False
        signal.signal(signal.SIGALRM, self._old_handler)
        if self._old_timer[0] > 0:
            left = max(self._old_timer[0] - (time.monotonic() - self._started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, self._old_timer[1])


_SETUP_TEARDOWN = frozenset(
    {_Deadline.__enter__.__code__, _Deadline.__exit__.__code__, _Deadline._restore.__code__}
)
_CONTEXTMANAGER_CODE = frozenset(
    {
        contextlib._GeneratorContextManager.__enter__.__code__,
        contextlib._GeneratorContextManager.__exit__.__code__,
    }
)


def cpu_deadline(budget: Budget | None) -> AbstractContextManager[None]:
    """Interrupt pure-Python loops inside the block when *budget* runs out.

    Re-entrant: only the outermost block arms the timer.  Any timer and
    handler that were installed before are restored on exit, and after the
    block exits, by any path, no timer or handler of ours is left (see
    `_Deadline`).  Outside the main thread this does nothing.
    """
    if (
        budget is None
        or getattr(_state, "armed", False)
        or threading.current_thread() is not threading.main_thread()
    ):
        return nullcontext()
    return _Deadline(budget)
