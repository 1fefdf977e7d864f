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
from pvgrub_py.xen.interface import Hypervisor

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
        `NotTpm2Error`)."""
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
        if self.front is not None:
            self.log(f"vTPM {self.node} disconnected: {reason}")
            self._close(self.front)
            self.front = None
        self._stale_hv = True
        self._next_attempt = 0.0  # try again at once

    def _reopen_hypervisor(self) -> None:
        """A new handle on this domain, which may now have another domid."""
        assert self.reopen is not None
        fresh = self.reopen()
        if self._opened_hv:
            with contextlib.suppress(PvgrubError):
                self.hv.close()
        if fresh.domid != self.hv.domid:
            self.log(f"this domain is now domain {fresh.domid} (was {self.hv.domid})")
        self.hv, self._opened_hv, self._stale_hv = fresh, True, False

    def _reconnect(self) -> None:
        self._next_attempt = time.monotonic() + self.retry
        try:
            if self._stale_hv and self.reopen is not None:
                self._reopen_hypervisor()
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
            self._close(self.front)
            self.front = None
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
            if self.front is None and time.monotonic() >= self._next_attempt:
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
