"""`cpu_deadline` leaves nothing behind, whenever its alarm fires.

The alarm is asynchronous: its handler runs at whatever bytecode the main
thread is at, including inside the context manager's own setup and
teardown.  These tests make it fire exactly there (``signal.raise_signal``
from inside the arming or disarming ``setitimer``, or from a profile hook
at the entry of an ``__exit__``), then check that no timer is armed, the
previous handler is back, and no stray `BudgetExceeded` arrives later.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from pvgrub_py.disk.budget import Budget, BudgetExceeded, cpu_deadline

_real_setitimer = signal.setitimer


@pytest.fixture(autouse=True)
def _clean_alarm() -> Iterator[None]:
    """Each test starts and ends with no timer and the default handler."""
    _real_setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    yield
    _real_setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _assert_nothing_left(handler: object = signal.SIG_DFL) -> None:
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler
    # A timer left behind would re-fire every 50 ms: spin through three.
    end = time.monotonic() + 0.15
    while time.monotonic() < end:
        pass


def _setitimer_that_fires(when: Callable[[float], bool]) -> Callable[..., Any]:
    """A `signal.setitimer` that delivers SIGALRM once, at the call *when* picks."""
    fired = []

    def setitimer(which: int, seconds: float, interval: float = 0.0) -> tuple[float, float]:
        old = _real_setitimer(which, seconds, interval)
        if not fired and when(seconds):
            fired.append(seconds)
            signal.raise_signal(signal.SIGALRM)  # the handler runs before this returns
        return old

    return setitimer


def test_alarm_while_disarming_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline passes just as the block ends: the alarm is delivered
    # while the timer is being disarmed.
    monkeypatch.setattr(signal, "setitimer", _setitimer_that_fires(lambda s: s == 0))
    with cpu_deadline(Budget(10)):
        pass
    monkeypatch.undo()
    _assert_nothing_left()


def test_alarm_right_after_arming_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The alarm comes before the body starts (a tiny remaining budget).
    monkeypatch.setattr(signal, "setitimer", _setitimer_that_fires(lambda s: s > 0))
    with cpu_deadline(Budget(10)):
        pass
    monkeypatch.undo()
    _assert_nothing_left()


def test_an_alarm_swallowed_during_setup_still_ends_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signal, "setitimer", _setitimer_that_fires(lambda s: s > 0))
    started = time.monotonic()
    with pytest.raises(BudgetExceeded), cpu_deadline(Budget(0.05)):
        while True:
            pass
    assert time.monotonic() - started < 2
    monkeypatch.undo()
    _assert_nothing_left()


def _fire_once(event: str, name: str) -> tuple[Callable[[FrameType, str, Any], None], list[Any]]:
    """A profile hook delivering SIGALRM at the first *event* in a function *name*.

    Only while a handler is installed: under SIG_DFL the signal would end the
    test process.
    """
    fired = []

    def hook(frame: FrameType, ev: str, arg: Any) -> None:
        if (
            ev == event
            and frame.f_code.co_name == name
            and not fired
            and signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        ):
            fired.append(frame.f_code)
            signal.raise_signal(signal.SIGALRM)

    return hook, fired


@contextmanager
def _guard(budget: Budget) -> Iterator[None]:
    """A `contextlib.contextmanager` wrapper, as `Filesystem._guard` is."""
    with cpu_deadline(budget):
        yield


@pytest.mark.parametrize(
    ("wrapped", "event", "where"),
    [
        # The signal arrived as the body finished: handled at the first
        # bytecode of the (outermost) __exit__.
        (False, "call", "__exit__"),
        (True, "call", "__exit__"),
        # The wrapper's __enter__ got the generator's yield back, not yet
        # returned into the with statement.
        (True, "c_return", "__enter__"),
    ],
    ids=["direct-exit", "contextmanager-exit", "contextmanager-enter"],
)
def test_alarm_on_the_way_in_or_out(wrapped: bool, event: str, where: str) -> None:
    def run() -> None:
        if wrapped:
            with _guard(Budget(10)):
                pass
        else:
            with cpu_deadline(Budget(10)):
                pass

    hook, fired = _fire_once(event, where)
    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    assert fired, "the alarm was not delivered"
    _assert_nothing_left()


def test_many_tiny_budgets_leave_nothing() -> None:
    """The real race: deadlines expiring around a body that returns at once."""
    for i in range(400):
        try:
            with _guard(Budget(1e-5 * (1 + i % 40))):
                pass
        except BudgetExceeded:
            pass
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), i
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL, i
    _assert_nothing_left()


def test_a_previous_timer_and_handler_are_restored() -> None:
    calls: list[int] = []

    def theirs(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGALRM, theirs)
    _real_setitimer(signal.ITIMER_REAL, 30.0)
    with pytest.raises(BudgetExceeded), cpu_deadline(Budget(0.05)):
        while True:
            pass
    assert signal.getsignal(signal.SIGALRM) is theirs
    left, interval = signal.getitimer(signal.ITIMER_REAL)
    assert 29.0 < left <= 30.0 and interval == 0.0
    assert calls == []


def test_only_the_outermost_block_arms() -> None:
    with cpu_deadline(Budget(10)):
        handler = signal.getsignal(signal.SIGALRM)
        with cpu_deadline(Budget(0.01)):
            assert signal.getsignal(signal.SIGALRM) is handler
            time.sleep(0.03)  # the inner budget is not enforced by a timer
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 5
    _assert_nothing_left()
