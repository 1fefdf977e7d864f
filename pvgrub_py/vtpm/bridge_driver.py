"""`GuestTpmBridge`: drives a `ProxyBridge` between a vTPM proxy chip and a tpmif frontend.

The I/O half of ``pvgrub-guest-tpm`` (the protocol is `pvgrub_py.vtpm.proxy_bridge`):
it connects the guest's `TpmFront` to ``device/vtpm/N``, requires a TPM 2.0
behind it, then reads the kernel's commands from a `ProxyEndpoint`, performs
what the core asks (forward over tpmif, answer the kernel, reconnect) and
logs one line per connect and disconnect through ``log``.

A backend that goes away while a command is pending is noticed by the
frontend's deadline: the command is cancelled after ``timeout`` seconds
(plus `pvgrub_py.vtpm.frontend.CANCEL_GRACE` for the cancel), the kernel
gets ``TPM_RC_FAILURE``, the frontend is closed (Closing, Closed, then
Initialising, ready for a backend) and connected again, one attempt every
``retry`` seconds, whenever the backend shows up in InitWait again.  Until
then commands are answered ``TPM_RC_FAILURE`` at once; those warnings are
rate-limited.

A guest restored from ``xl save`` (or migrated) is a new domain: another
domid, and none of the old grants or event channels.  Given ``reopen``,
every attempt after a lost connection first opens the hypervisor anew
(`pvgrub_py.cli.connect.open_guest_hypervisor` reads the domid again), so the
frontend finds ``device/vtpm/N`` under the domain it now is; the proxy chip,
and so ``/dev/tpm0``, stays the same throughout.

Before ``xl save`` the toolstack asks the frontend to let go
(`pvgrub_py.vtpm.suspend`, ``pvgrubctl vtpm suspend``): a connection that
lives through a save cannot be closed after the restore (Linux's evtchn
driver BUGs on unbinding the stale port).  Between commands, at most every
`suspend.POLL_SECONDS`, the bridge looks for the request; while it stands
the frontend stays closed.  Should a save catch it connected all the same,
the stale channel is abandoned (`TpmFront.abandon`), never unbound.

Single-threaded: one command at a time, as the proxy sends them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from pvgrub_py.errors import PvgrubError
from pvgrub_py.tpm.client import detect_version
from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.vtpm import suspend
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.proxy_bridge import (
    Action,
    Forward,
    FrameRead,
    FrontendUp,
    ProxyBridge,
    Reconnect,
    Reply,
    TpmAnswered,
    TpmFailed,
    Warn,
)
from pvgrub_py.vtpm.proxy_device import ProxyEndpoint
from pvgrub_py.xen.interface import Hypervisor, XenStore

#: How long closing a dead connection may wait for the backend to answer.
CLOSE_WAIT = 1.0


class NotTpm2Error(PvgrubError):
    """The vTPM behind the device is not a TPM 2.0."""


class RateLimitedLog:
    """At most one line per ``kind`` every ``interval`` seconds; the next line
    says how many were left out."""

    def __init__(
        self,
        log: Callable[[str], None],
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return
        self._last[kind] = now
        dropped = self._dropped.pop(kind, 0)
        self._log(message + (f" ({dropped} more like it not shown)" if dropped else ""))


class _Borrowed:
    """The connected frontend as a `TpmTransport` whose close leaves it open."""

    def __init__(self, front: TpmFront) -> None:
        self._front = front

    def transmit(self, command: bytes) -> bytes:
        return self._front.transmit(command)

    def close(self) -> None:
        pass


class GuestTpmBridge:
    def __init__(
        self,
        hv: Hypervisor,
        devid: int = 0,
        *,
        timeout: float = 30.0,
        retry: float = 1.0,
        log: Callable[[str], None] = lambda line: None,
        reopen: Callable[[], Hypervisor] | None = None,
    ) -> None:
        self.hv = hv
        self.reopen = reopen
        #: The hypervisor in use was opened by `reopen` (ours to close), not given.
        self._opened_hv = False
        #: The connection was lost: open the hypervisor anew before the next attempt.
        self._stale_hv = False
        #: The toolstack asked the frontend to let go (a save follows).
        self.parked = False
        self._xs: XenStore | None = None
        self._next_suspend_check = 0.0
        self.devid = devid
        self.timeout = timeout
        self.retry = retry
        self.log = log
        self.warn = RateLimitedLog(log)
        self.core = ProxyBridge()
        self.front: TpmFront | None = None
        self.connects = 0
        self._next_attempt = 0.0

    @property
    def node(self) -> str:
        return f"device/vtpm/{self.devid}"

    # -- the frontend connection ---------------------------------------------------------

    def connect(self, wait: float) -> None:
        """Connect within ``wait`` seconds to a TPM 2.0, or raise (a TPM 1.2:
        `NotTpm2Error`; a standing request to let go, `pvgrub_py.vtpm.suspend`)."""
        self.check_suspend(now=True)
        if self.parked:
            raise PvgrubError(
                f"vTPM {self.node}: the toolstack asked it to let go (pvgrubctl vtpm suspend); "
                "not connecting until the request is withdrawn"
            )
        self._open(wait)

    def _open(self, wait: float) -> None:
        front = TpmFront(self.hv, self.devid, timeout=self.timeout, connect_timeout=wait)
        front.connect()
        try:
            version = detect_version(front)
        except BaseException:
            self._close(front)
            raise
        if version != "2.0":
            self._close(front)
            raise NotTpm2Error(
                f"vTPM {self.node} is a TPM {version}; the proxy bridge serves TPM 2.0 only "
                "(xen-tpmfront serves a TPM 1.2)"
            )
        self.front = front
        self.connects += 1
        self.core.receive(FrontendUp())
        self.log(f"vTPM {self.node} connected (backend domain {front.backend_domid}, TPM 2.0)")

    def _close(self, front: TpmFront) -> None:
        front.timeout = min(front.timeout, CLOSE_WAIT)  # the backend may be gone
        with contextlib.suppress(PvgrubError):
            front.close()

    def _drop(self, reason: str) -> None:
        front, self.front = self.front, None
        if front is not None:
            self.log(f"vTPM {self.node} disconnected: {reason}")
            self._let_go(front)
        self._stale_hv = True  # the next attempt opens this domain anew: it may have moved
        self._next_attempt = 0.0  # try again at once

    def _let_go(self, front: TpmFront) -> None:
        """Close *front*, unless a save/restore or a migration ended it: our
        port is then stale, and unbinding it would trip the kernel's BUG_ON
        (`pvgrub_py.vtpm.suspend`), so it is abandoned instead."""
        if front.still_published():
            self._close(front)
            return
        front.abandon()
        self.log(
            f"vTPM {self.node}: this domain was saved or migrated with its vTPM connected; "
            "the old event channel is left bound (unbinding it now would crash the kernel, "
            "which will still trip over it when this daemon exits: reboot the guest at its "
            "next opportunity, and run pvgrubctl vtpm suspend before xl save)"
        )

    def _use(self, fresh: Hypervisor) -> None:
        """Work through *fresh* from now on; close the one it replaces if it was ours."""
        if fresh.domid != self.hv.domid:
            self.log(f"this domain is now domain {fresh.domid} (was {self.hv.domid})")
        self._close_xenstore()
        if self._opened_hv:
            with contextlib.suppress(PvgrubError):
                self.hv.close()
        self.hv, self._opened_hv = fresh, True

    # -- the toolstack's request to let go ------------------------------------------------

    def _close_xenstore(self) -> None:
        if self._xs is not None:
            with contextlib.suppress(PvgrubError):
                self._xs.close()
            self._xs = None

    def check_suspend(self, *, now: bool = False) -> None:
        """Follow the toolstack's request (`pvgrub_py.vtpm.suspend`): let go of
        the connection when asked, then say so (``pvgrub-suspended``), and
        reconnect once the request is withdrawn or this domain was restored (a
        new domain, whose device has no request).  At most every
        `suspend.POLL_SECONDS`, unless *now*."""
        moment = time.monotonic()
        if moment < self._next_suspend_check and not now:
            return
        self._next_suspend_check = moment + suspend.POLL_SECONDS
        try:
            if self._xs is None:
                self._xs = self.hv.xenstore()
            wanted = suspend.requested(self._xs, self.hv.domid, self.devid)
        except PvgrubError:
            self._close_xenstore()  # opened anew next time
            if not self.parked:
                return
            # Our domain's node is out of reach: restored or migrated, a new domain.
            # Unparked, the next attempt opens this domain anew and looks again.
            wanted = False
        if wanted and not self.parked:
            self.parked = True
            self.log(f"vTPM {self.node}: the toolstack asks it to let go (a save follows)")
            if self.front is not None:
                self._drop("let go for a save")
            self._acknowledge()
        elif not wanted and self.parked:
            self.parked = False
            with contextlib.suppress(PvgrubError):  # our answer to it, if still there
                if self._xs is not None:
                    suspend.withdraw_acknowledgement(self._xs, self.hv.domid, self.devid)
            self._stale_hv = True  # restored: another domid, perhaps
            self._next_attempt = 0.0
            self.log(f"vTPM {self.node}: the request to let go is gone; reconnecting")

    def _acknowledge(self) -> None:
        """Tell the toolstack the frontend let go: its port is unbound by now."""
        try:
            if self._xs is None:
                self._xs = self.hv.xenstore()
            suspend.acknowledge(self._xs, self.hv.domid, self.devid)
        except PvgrubError as e:
            self.warn("suspend", f"vTPM {self.node}: cannot acknowledge the request: {e}")

    def _reconnect(self) -> None:
        self._next_attempt = time.monotonic() + self.retry
        try:
            if self._stale_hv and self.reopen is not None:
                self._use(self.reopen())
                self._stale_hv = False
            self.check_suspend(now=True)  # never publish a ring against a standing request
            if self.parked:
                return
            self._open(self.retry)
        except PvgrubError as e:
            self._stale_hv = True
            self.warn("reconnect", f"vTPM {self.node}: waiting for the backend: {e}")

    def transport(self) -> _Borrowed:
        """The connection as a `TpmTransport` (for reading the vTPM before the chip exists)."""
        if self.front is None:
            raise PvgrubError(f"vTPM {self.node} is not connected")
        return _Borrowed(self.front)

    def close(self) -> None:
        """Close the frontend, and the hypervisor if `reopen` opened it (the
        one given to the constructor is the caller's)."""
        if self.front is not None:
            self._let_go(self.front)
            self.front = None
        self._close_xenstore()
        if self._opened_hv:
            self.hv.close()
            self._opened_hv = False

    # -- serving the proxy ---------------------------------------------------------------

    def serve(
        self,
        endpoint: ProxyEndpoint,
        stop: threading.Event,
        until_ready: Callable[[], bool] | None = None,
    ) -> None:
        """Answer the chip's commands until ``stop`` is set or the chip is gone.

        ``until_ready`` is called between commands until it returns True: the
        kernel registers a proxy chip (and creates its device nodes) only
        after we answered its start-up commands, so whoever waits for the
        device must be told from inside this loop."""
        while not stop.is_set():
            if until_ready is not None and until_ready():
                until_ready = None
            self.check_suspend()
            if self.front is None and not self.parked and time.monotonic() >= self._next_attempt:
                self._reconnect()
            if not endpoint.wait(0.25 if until_ready is None else 0.05):
                continue
            frame = endpoint.read()
            if frame is None:
                return  # the chip is gone
            self.perform(self.core.receive(FrameRead(frame)), endpoint)

    def perform(self, actions: list[Action], endpoint: ProxyEndpoint) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Forward):
                queue.extend(self.core.receive(self._forward(action)))
            elif isinstance(action, Reply):
                if not endpoint.write(action.response):
                    self.warn("late", "the kernel stopped waiting before the vTPM answered")
            elif isinstance(action, Reconnect):
                self._drop(action.reason)
            elif isinstance(action, Warn):
                self.warn(action.kind, f"vTPM {self.node}: {action.message}")

    def _forward(self, action: Forward) -> TpmAnswered | TpmFailed:
        if self.front is None:
            return TpmFailed("not connected")
        try:
            return TpmAnswered(self.front.transmit(action.command, action.locality))
        except TpmProtocolError as e:
            return TpmFailed(str(e), connection_lost=False)
        except PvgrubError as e:  # TpmTransportError, XenError: the connection is gone
            return TpmFailed(str(e))
