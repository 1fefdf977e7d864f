"""``TpmFront``: a tpmif frontend, Linux-style, over the hypervisor interface.

Handshake (Linux ``drivers/char/tpm/xen-tpmfront.c``, reference §2.4):

1. read ``backend`` and ``backend-id`` from our device node, and wait for
   the backend to reach InitWait (it has then published
   ``feature-protocol-v2``);
2. share one page with the backend and allocate an unbound event channel
   for it;
3. write ``ring-ref``, ``event-channel`` and ``feature-protocol-v2 = 1``,
   then switch to Initialised;
4. wait for the backend to reach Connected, require its
   ``feature-protocol-v2``, switch to Connected.

A command is sent by copying it to the page, setting the length, then the
state SUBMIT, then notifying.  The answer is awaited with a deadline; on
expiry the command is cancelled (state CANCEL, notify) and an error raised,
never a hang (Mini-OS tpmfront blocks forever; a dom0 bootloader must not).

Close follows Mini-OS (which makes a later reconnect possible, the kexec'd
kernel case): Closing, remove ring-ref/event-channel, Closed, wait for the
backend to go Closed or back to InitWait, then Initialising again.

As a `TpmTransport`, a TpmFront plugs straight into `TpmClient`.  Once
connected, `peer_label` is the backend's XSM label: FLASK's label of the
domain that bound our event channel (what pv-grub checked for
``--vtpm-label``, Mini-OS ``evtchn_get_peercontext(tpm->evtchn, ...)``).
"""

from __future__ import annotations

import contextlib
import time

from pvgrub_py.tpm.errors import TpmProtocolError, TpmTransportError
from pvgrub_py.tpm.transport import check_command, response_size
from pvgrub_py.vtpm.shared_page import SharedPage, SharedPageError, TpmifState
from pvgrub_py.vtpm.xenbus import XenbusError, XenbusState, read_state, wait_for_state, write_state
from pvgrub_py.xen.interface import (
    EventChannels,
    GrantShare,
    Hypervisor,
    SharedPages,
    XenError,
    XenStore,
)

DEFAULT_TIMEOUT = 30.0
#: How long a cancelled command may take to be acknowledged.
CANCEL_GRACE = 2.0
#: How long to poll the page for an answer before sleeping on the channel.
SPIN_SECONDS = 0.0003


class TpmFront:
    def __init__(
        self,
        hv: Hypervisor,
        devid: int = 0,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        expected_backend: int | None = None,
    ) -> None:
        self.hv = hv
        self.devid = devid
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.expected_backend = expected_backend
        self.node = f"/local/domain/{hv.domid}/device/vtpm/{devid}"
        self.backend_path = ""
        self.backend_domid = -1
        self._xs: XenStore | None = None
        self._evtchn: EventChannels | None = None
        self._gntshr: GrantShare | None = None
        self._pages: SharedPages | None = None
        self._page: SharedPage | None = None
        self._port = -1
        self._connected = False

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> TpmFront:
        try:
            self._connect()
        except BaseException:
            self._release()
            raise
        return self

    def _connect(self) -> None:
        xs = self._xs = self.hv.xenstore()
        backend = xs.read(f"{self.node}/backend")
        backend_id = xs.read(f"{self.node}/backend-id")
        if backend is None or backend_id is None or not backend_id.strip().isdigit():
            raise TpmTransportError(f"no vTPM device at {self.node} (backend/backend-id missing)")
        self.backend_path = backend.decode()
        self.backend_domid = int(backend_id)
        if self.expected_backend is not None and self.backend_domid != self.expected_backend:
            raise TpmTransportError(
                f"{self.node} names backend domain {self.backend_domid}, "
                f"not {self.expected_backend} as asked"
            )
        gone = (XenbusState.CLOSING, XenbusState.CLOSED, XenbusState.UNKNOWN)
        try:
            wait_for_state(xs, self.backend_path, [XenbusState.INIT_WAIT, XenbusState.CONNECTED],
                           self.connect_timeout, what="vTPM backend")  # fmt: skip
        except XenbusError as e:
            raise TpmTransportError(str(e)) from None
        self._gntshr = self.hv.grant_share()
        self._pages = self._gntshr.share_pages(self.backend_domid, 1, writable=True)
        self._page = SharedPage(self._pages.memory)
        self._page.reset()
        self._evtchn = self.hv.event_channels()
        self._port = self._evtchn.alloc_unbound(self.backend_domid)
        xs.write(f"{self.node}/ring-ref", str(self._pages.refs[0]).encode())
        xs.write(f"{self.node}/event-channel", str(self._port).encode())
        xs.write(f"{self.node}/feature-protocol-v2", b"1")
        write_state(xs, self.node, XenbusState.INITIALISED)
        # The backend is there (it went InitWait for us); connecting may take it as
        # long as a command: vtpmd power-cycles the instance for a dom0 frontend, and a
        # TPM 1.2 self-tests on TPM_Init (0.6 s on a host, 24 s on nested Xen under
        # QEMU TCG, where the 10 s attach timeout failed every TPM 1.2 boot).  So
        # connect_timeout bounds finding the backend, timeout bounds its connecting.
        try:
            wait_for_state(xs, self.backend_path, [XenbusState.CONNECTED],
                           max(self.timeout, self.connect_timeout),
                           fail_on=gone, what="vTPM backend")  # fmt: skip
        except XenbusError as e:
            raise TpmTransportError(str(e)) from None
        if (xs.read(f"{self.backend_path}/feature-protocol-v2") or b"").strip() != b"1":
            raise TpmTransportError(f"vTPM backend {self.backend_path}: protocol v2 required")
        write_state(xs, self.node, XenbusState.CONNECTED)
        self._connected = True

    def peer_label(self) -> str:
        """The XSM (FLASK) label of the domain at the other end of our event
        channel.  We allocated the port for ``backend_domid`` alone, so the
        domain that bound it is the backend, whatever xenstore says about it.
        Only once connected: before, the backend may not have bound it yet.
        `XsmNotEnabledError` on a host without FLASK."""
        if not self._connected or self._evtchn is None:
            raise TpmTransportError(f"vTPM {self.node} is not connected")
        return self.hv.evtchn_peer_label(self._port)

    # -- commands (TpmTransport) ---------------------------------------------------------

    def transmit(self, command: bytes) -> bytes:
        check_command(command)
        if not self._connected or self._page is None or self._evtchn is None:
            raise TpmTransportError(f"vTPM {self.node} is not connected")
        page, evtchn = self._page, self._evtchn
        # A cancelled command may still be with the backend: wait for it to
        # finish or acknowledge, so its late answer is never taken for the
        # answer to this command (Linux waits for idle likewise).
        busy = page.state in (TpmifState.SUBMIT, TpmifState.CANCEL)
        if busy and self._await_done(self.timeout) is None:
            raise TpmTransportError(f"vTPM {self.node}: still busy with a cancelled command")
        try:
            page.write_packet(command)
        except SharedPageError as e:
            raise TpmTransportError(str(e)) from None
        page.state = TpmifState.SUBMIT
        evtchn.notify(self._port)
        state = self._await_done(self.timeout)
        if state is None:
            self._cancel()
            raise TpmTransportError(
                f"vTPM {self.node}: no answer within {self.timeout:g} s; cancelled"
            )
        if state == TpmifState.IDLE:
            raise TpmTransportError(f"vTPM {self.node}: the backend cancelled the command")
        try:
            answer = page.read_packet()
        except SharedPageError as e:
            raise TpmProtocolError(f"vTPM {self.node}: {e}") from None
        if len(answer) < 10 or response_size(answer) != len(answer):
            raise TpmProtocolError(f"vTPM {self.node}: malformed {len(answer)}-byte answer")
        return answer

    def _await_done(self, timeout: float) -> TpmifState | None:
        """Wait until the backend writes FINISH or IDLE; None on timeout."""
        assert self._page is not None and self._evtchn is not None
        page = self._page
        # Adaptive polling: a TPM answers most commands in tens of
        # microseconds, less than a sleep/wake-up through the event channel
        # costs, so look at the page briefly before blocking on the channel.
        spin_until = time.perf_counter() + SPIN_SECONDS
        while time.perf_counter() < spin_until:
            if page.state in (TpmifState.FINISH, TpmifState.IDLE):
                return TpmifState(page.state)
        deadline = time.monotonic() + timeout
        while True:
            state = self._page.state
            if state in (TpmifState.FINISH, TpmifState.IDLE):
                return TpmifState(state)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            port = self._evtchn.wait(min(left, 1.0))
            if port is not None:
                self._evtchn.unmask(port)
            elif self._backend_gone():
                raise TpmTransportError(f"vTPM backend {self.backend_path} went away")

    def _backend_gone(self) -> bool:
        assert self._xs is not None
        return read_state(self._xs, self.backend_path) not in (
            XenbusState.CONNECTED,
            XenbusState.INITIALISED,
        )

    def _cancel(self) -> None:
        assert self._page is not None and self._evtchn is not None
        self._page.state = TpmifState.CANCEL
        try:
            self._evtchn.notify(self._port)
            self._await_done(CANCEL_GRACE)
        except (XenError, TpmTransportError):
            pass

    # -- close ---------------------------------------------------------------------------

    def close(self) -> None:
        xs = self._xs
        if xs is not None and self._connected:
            self._connected = False
            try:
                write_state(xs, self.node, XenbusState.CLOSING)
                xs.rm(f"{self.node}/ring-ref")
                xs.rm(f"{self.node}/event-channel")
                write_state(xs, self.node, XenbusState.CLOSED)
                wait_for_state(xs, self.backend_path, [XenbusState.CLOSED, XenbusState.INIT_WAIT],
                               min(self.timeout, 5.0), what="vTPM backend")  # fmt: skip
            except (XenbusError, XenError):
                pass  # the backend may be gone; our own resources still go below
            finally:
                # Ready for a later frontend (the kexec'd kernel's xen-tpmfront).
                with contextlib.suppress(XenError):
                    write_state(xs, self.node, XenbusState.INITIALISING)
        self._release()

    def _release(self) -> None:
        if self._evtchn is not None:
            if self._port >= 0:
                with contextlib.suppress(XenError):
                    self._evtchn.unbind(self._port)
            self._evtchn.close()
            self._evtchn = None
        self._page = None
        if self._pages is not None:
            self._pages.close()
            self._pages = None
        if self._gntshr is not None:
            self._gntshr.close()
            self._gntshr = None
        if self._xs is not None:
            self._xs.close()
            self._xs = None

    def __enter__(self) -> TpmFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
