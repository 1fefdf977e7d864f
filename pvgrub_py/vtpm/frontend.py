"""``TpmFront``: a tpmif frontend, Linux-style, over the hypervisor interface.

A thin driver over `FrontendCore` (`pvgrub_py.vtpm.tpmif`): the core decides
what happens on the handshake and the page; this module does the xenstore,
grant and event-channel I/O it asks for, owns the clock (the answer's
deadline, the cancel's grace) and a lock: one command at a time per device.

Handshake (Linux ``drivers/char/tpm/xen-tpmfront.c``, ``setup_ring`` and
``backend_changed``):

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
import threading
import time

from pvgrub_py.tpm.errors import TpmProtocolError, TpmTransportError
from pvgrub_py.tpm.transport import check_command
from pvgrub_py.vtpm.shared_page import SharedPage, SharedPageError, TpmifState
from pvgrub_py.vtpm.tpmif import FrontendCore
from pvgrub_py.vtpm.tpmif_events import (
    Action,
    CloseRequested,
    Command,
    Deliver,
    Event,
    Fail,
    Notify,
    PacketUnreadable,
    PageKicked,
    PeerStateChanged,
    PublishRing,
    ReadPacket,
    Response,
    SetPageState,
    Submit,
    TimedOut,
    UnpublishRing,
    WriteState,
)
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
        self.core = FrontendCore()
        self._lock = threading.Lock()
        self._xs: XenStore | None = None
        self._evtchn: EventChannels | None = None
        self._gntshr: GrantShare | None = None
        self._pages: SharedPages | None = None
        self._page: SharedPage | None = None
        self._port = -1

    # -- driving the core ----------------------------------------------------------------

    def _feed(self, event: Event) -> bytes | None:
        """Give ``event`` to the core and do what it asks, in order.  Returns a
        delivered answer; a `Fail` raises."""
        delivered: bytes | None = None
        events: list[Event] | None = None
        while True:
            for action in self.core.receive(event):
                follow = self._perform(action)
                if isinstance(follow, bytes):
                    delivered = follow
                elif follow is not None:
                    events = [follow] if events is None else [*events, follow]
            if not events:
                return delivered
            event, events = events[0], events[1:]

    def _perform(self, action: Action) -> Event | bytes | None:
        # The per-command actions first: this runs several times a command.
        xs = self._xs
        if isinstance(action, Submit):
            assert self._page is not None
            self._page.write_packet(action.command, action.locality)  # then the state, last
            self._page.state = TpmifState.SUBMIT
        elif isinstance(action, Notify):
            assert self._evtchn is not None
            self._evtchn.notify(self._port)
        elif isinstance(action, ReadPacket):
            assert self._page is not None
            try:
                return Response(self._page.read_packet())
            except SharedPageError as e:
                return PacketUnreadable(str(e))
        elif isinstance(action, Deliver):
            return action.response
        elif isinstance(action, Fail):
            error = TpmProtocolError if action.protocol else TpmTransportError
            raise error(f"vTPM {self.node}: {action.reason}")
        elif isinstance(action, SetPageState):
            assert self._page is not None
            self._page.state = action.state
        elif isinstance(action, WriteState):
            assert xs is not None
            write_state(xs, self.node, action.state)
        elif isinstance(action, PublishRing):
            self._publish_ring()
        elif isinstance(action, UnpublishRing):
            assert xs is not None
            xs.rm(f"{self.node}/ring-ref")
            xs.rm(f"{self.node}/event-channel")
        return None

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
            state = wait_for_state(xs, self.backend_path, [XenbusState.INIT_WAIT],
                                   self.connect_timeout, what="vTPM backend")  # fmt: skip
        except XenbusError as e:
            raise TpmTransportError(str(e)) from None
        self._feed(PeerStateChanged(state))  # share the ring, Initialised
        # The backend is there (it went InitWait for us); connecting may take it as
        # long as a command: vtpmd power-cycles the instance for a dom0 frontend, and a
        # TPM 1.2 self-tests on TPM_Init (0.6 s on a host, 24 s on nested Xen under
        # QEMU TCG, where the 10 s attach timeout failed every TPM 1.2 boot).  So
        # connect_timeout bounds finding the backend, timeout bounds its connecting.
        try:
            state = wait_for_state(xs, self.backend_path, [XenbusState.CONNECTED],
                                   max(self.timeout, self.connect_timeout),
                                   fail_on=gone, what="vTPM backend")  # fmt: skip
        except XenbusError as e:
            raise TpmTransportError(str(e)) from None
        feature = xs.read(f"{self.backend_path}/feature-protocol-v2")
        self._feed(PeerStateChanged(state, protocol_v2=feature))  # Connected
        if not self.core.connected:
            raise TpmTransportError(f"vTPM {self.node}: not connected")

    def _publish_ring(self) -> None:
        """Share one page and an unbound channel with the backend, and say so."""
        assert self._xs is not None
        xs = self._xs
        self._gntshr = self.hv.grant_share()
        self._pages = self._gntshr.share_pages(self.backend_domid, 1, writable=True)
        self._page = SharedPage(self._pages.memory)
        self._page.reset()
        self._evtchn = self.hv.event_channels()
        self._port = self._evtchn.alloc_unbound(self.backend_domid)
        xs.write(f"{self.node}/ring-ref", str(self._pages.refs[0]).encode())
        xs.write(f"{self.node}/event-channel", str(self._port).encode())
        xs.write(f"{self.node}/feature-protocol-v2", b"1")

    def peer_label(self) -> str:
        """The XSM (FLASK) label of the domain at the other end of our event
        channel.  We allocated the port for ``backend_domid`` alone, so the
        domain that bound it is the backend, whatever xenstore says about it.
        Only once connected: before, the backend may not have bound it yet.
        `XsmNotEnabledError` on a host without FLASK."""
        if not self.core.connected or self._evtchn is None:
            raise TpmTransportError(f"vTPM {self.node} is not connected")
        return self.hv.evtchn_peer_label(self._port)

    # -- commands (TpmTransport) ---------------------------------------------------------

    def transmit(self, command: bytes, locality: int = 0) -> bytes:
        """Send ``command`` at ``locality`` (written to the page's locality byte,
        as Mini-OS tpmfront does; 0 for a measuring bootloader) and return the
        answer."""
        check_command(command)
        with self._lock:
            if not self.core.connected or self._page is None or self._evtchn is None:
                raise TpmTransportError(f"vTPM {self.node} is not connected")
            # A cancelled command may still be with the backend: wait for it to
            # finish or acknowledge, so its late answer is never taken for the
            # answer to this command (Linux waits for idle likewise).
            if self.core.busy:
                self._pump(self.timeout)
            try:
                answer = self._feed(Command(command, locality))
            except SharedPageError as e:
                raise TpmTransportError(str(e)) from None
            if answer is None:
                answer = self._pump(self.timeout)
            if answer is None and self.core.busy:
                self._cancel()
                raise TpmTransportError(
                    f"vTPM {self.node}: no answer within {self.timeout:g} s; cancelled"
                )
            if answer is None:  # the core ended the command without an answer or a Fail
                raise TpmTransportError(f"vTPM {self.node}: the command ended unanswered")
            return answer

    def _pump(self, timeout: float) -> bytes | None:
        """Feed the page to the core until it is no longer busy (an answer, or
        a cancel acknowledged) or ``timeout`` runs out."""
        assert self._page is not None and self._evtchn is not None
        page, evtchn = self._page, self._evtchn
        # Adaptive polling: a TPM answers most commands in tens of
        # microseconds, less than a sleep/wake-up through the event channel
        # costs, so look at the page briefly before blocking on the channel.
        spin_until = time.perf_counter() + SPIN_SECONDS
        while time.perf_counter() < spin_until:
            if page.state != self.core.page:
                answer = self._feed(PageKicked(page.state))
                if answer is not None or not self.core.busy:
                    return answer
        deadline = time.monotonic() + timeout
        while True:
            if page.state != self.core.page:
                answer = self._feed(PageKicked(page.state))
                if answer is not None or not self.core.busy:
                    return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            port = evtchn.wait(min(left, 1.0))
            if port is not None:
                evtchn.unmask(port)
            else:
                self._check_backend()

    def _check_backend(self) -> None:
        assert self._xs is not None
        state = read_state(self._xs, self.backend_path)
        if state not in (XenbusState.CONNECTED, XenbusState.INITIALISED):
            try:
                self._feed(PeerStateChanged(state))
            except TpmTransportError:
                raise TpmTransportError(
                    f"vTPM backend {self.backend_path} went away ({state.name})"
                ) from None

    def _cancel(self) -> None:
        try:
            self._feed(TimedOut())  # CANCEL, notify
            self._pump(CANCEL_GRACE)
        except (XenError, TpmTransportError):
            pass

    # -- close ---------------------------------------------------------------------------

    def close(self) -> None:
        xs = self._xs
        if xs is not None and self.core.connected:
            try:
                self._feed(CloseRequested())  # Closing, ring nodes gone, Closed
                state = wait_for_state(xs, self.backend_path,
                                       [XenbusState.CLOSED, XenbusState.INIT_WAIT],
                                       min(self.timeout, 5.0), what="vTPM backend")  # fmt: skip
                self._feed(PeerStateChanged(state))  # Initialising
            except (XenbusError, XenError):
                pass  # the backend may be gone; our own resources still go below
            finally:
                # Ready for a later frontend (the kexec'd kernel's xen-tpmfront).
                with contextlib.suppress(XenError):
                    if self.core.state != XenbusState.INITIALISING:
                        self._feed(TimedOut())
        self._release()

    def still_published(self) -> bool:
        """Whether our device directory still holds the ring this frontend
        published (our ``event-channel`` and ``ring-ref``): false once a
        save/restore or a migration recreated the device, whatever the domid
        (a restored domain may get the old one back), and false when it cannot
        be read.  Only then is it safe to unbind our port (`abandon` otherwise)."""
        xs, pages = self._xs, self._pages
        if xs is None or pages is None or self._port < 0:
            return False
        try:
            port = xs.read(f"{self.node}/event-channel")
            ref = xs.read(f"{self.node}/ring-ref")
        except XenError:
            return False
        return port == str(self._port).encode() and ref == str(pages.refs[0]).encode()

    def abandon(self) -> None:
        """Let go of a connection that a save/restore of this domain ended: the
        ring's grant and the xenstore handle are released, but the event
        channel is abandoned (`EventChannels.abandon`), never unbound; nothing
        is written to the device directory, which is no longer ours.  Linux
        still unbinds it when the process exits (and trips the same BUG_ON):
        the guest should be rebooted at its next opportunity."""
        if self._evtchn is not None:
            self._evtchn.abandon()
            self._evtchn = None
            self._port = -1
        with contextlib.suppress(XenError):
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
