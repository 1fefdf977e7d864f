"""``VtpmBackend``: serve tpmif frontends, over the hypervisor interface.

The Mini-OS tpmback behaviour (reference §2.5), in a dom0 process:

* watch ``backend/vtpm`` of our domain; each new ``<fe>/<devid>`` gets
  ``feature-protocol-v2 = 1`` and state InitWait, and its frontend's state
  is watched;
* frontend Initialised or Connected: read ``ring-ref`` and
  ``event-channel`` (checked: decimal, in range), require the frontend's
  ``feature-protocol-v2``, map the grant, bind the event channel, write
  ``ready = 1``, go Connected;
* SUBMIT on the page: hand the packet to the vTPM instance, write the
  answer, FINISH, notify.  CANCEL while idle: IDLE, notify;
* frontend Closing: Closing; Closed: unmap, unbind, back to InitWait, so a
  later frontend (the kexec'd kernel's) can connect again; device removed:
  forget it.

Which TPM serves a device is the caller's policy (`InstanceProvider`), as is
what happens when a frontend connects (vtpmd power-cycles the instance for a
dom0 frontend: a fresh boot before measuring).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pvgrub_py.errors import PvgrubError
from pvgrub_py.tpm.errors import TpmError
from pvgrub_py.tpm.transport import TpmTransport
from pvgrub_py.vtpm.shared_page import MAX_PACKET, SharedPage, SharedPageError, TpmifState
from pvgrub_py.vtpm.xenbus import XenbusState, read_state, write_state
from pvgrub_py.xen.interface import EventChannels, GrantMap, Hypervisor, MappedGrant, XenError

log = logging.getLogger(__name__)

#: TPM_FAIL (TPM 1.2) / TPM_RC_FAILURE (2.0) answers when the instance fails,
#: so the frontend gets an error instead of a hang.
TPM12_FAIL = bytes.fromhex("00c40000000a00000009")
TPM2_FAILURE = bytes.fromhex("80010000000a00000101")
#: How long to keep polling a page for the next command after an answer.
SPIN_SECONDS = 0.0003


@dataclass
class FrontendLink:
    """One device: a frontend (domain, devid) and our side of it."""

    frontend_domid: int
    devid: int
    backend_path: str
    frontend_path: str = ""
    uuid: str = ""
    mapping: MappedGrant | None = None
    page: SharedPage | None = None
    port: int = -1
    served: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.page is not None

    @property
    def name(self) -> str:
        return f"vtpm {self.frontend_domid}/{self.devid}"


InstanceProvider = Callable[[FrontendLink], TpmTransport]
ConnectHook = Callable[[FrontendLink], None]


def _decimal(raw: bytes | None, limit: int) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= limit else None


class VtpmBackend:
    def __init__(
        self,
        hv: Hypervisor,
        instance_for: InstanceProvider,
        *,
        on_connect: ConnectHook | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        self.hv = hv
        self.instance_for = instance_for
        self.on_connect = on_connect
        self.poll_interval = poll_interval
        self.root = f"/local/domain/{hv.domid}/backend/vtpm"
        self.links: dict[tuple[int, int], FrontendLink] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._xs = hv.xenstore()
        self._evtchn: EventChannels = hv.event_channels()
        self._gnttab: GrantMap = hv.grant_map()
        self._by_port: dict[int, FrontendLink] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> VtpmBackend:
        self._xs.mkdir(self.root)
        self._xs.watch(self.root, "vtpm-backend")
        for target in (self._watch_loop, self._serve_loop):
            t = threading.Thread(target=target, name=f"vtpmback-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            for link in list(self.links.values()):
                self._disconnect(link)
            self.links.clear()
        for closer in (self._evtchn.close, self._gnttab.close, self._xs.close):
            with contextlib.suppress(XenError):
                closer()

    def __enter__(self) -> VtpmBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- xenstore side -------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._xs.wait_event(self.poll_interval) is not None:
                    self.rescan()
            except PvgrubError as e:  # keep serving the other devices
                log.warning("vtpm backend: %s", e)

    def rescan(self) -> None:
        """Bring every device in line with its frontend's state."""
        with self._lock:
            seen: set[tuple[int, int]] = set()
            for fe_text in self._xs.directory(self.root) or []:
                for devid_text in self._xs.directory(f"{self.root}/{fe_text}") or []:
                    if not (fe_text.isdigit() and devid_text.isdigit()):
                        continue
                    key = (int(fe_text), int(devid_text))
                    seen.add(key)
                    link = self.links.get(key) or self._adopt(*key)
                    if link is not None:
                        self._step_unless_removed(link)
            for key in set(self.links) - seen:
                self._forget(self.links[key])

    def _adopt(self, fe: int, devid: int) -> FrontendLink | None:
        path = f"{self.root}/{fe}/{devid}"
        frontend = self._xs.read(f"{path}/frontend")
        if frontend is None:
            return None  # the toolstack is still writing the device; next event
        link = FrontendLink(fe, devid, path, frontend.decode(errors="replace"))
        link.uuid = (self._xs.read(f"{path}/uuid") or b"").decode(errors="replace")
        self._xs.write(f"{path}/feature-protocol-v2", b"1")
        write_state(self._xs, path, XenbusState.INIT_WAIT)
        self._xs.watch(f"{link.frontend_path}/state", f"vtpm-fe-{fe}-{devid}")
        self.links[(fe, devid)] = link
        return link

    def _step_unless_removed(self, link: FrontendLink) -> None:
        """`_step`, except for a device the toolstack removed while we looked.

        Between listing the device and reading its frontend's nodes, the
        toolstack may remove both halves (a domain destroyed, a dom0 frontend
        detaching); the frontend read then fails (EACCES: its parent is not
        ours to read).  That is a removal, which the next rescan completes by
        forgetting the link, not an error.  A failure while the device is
        still there is an error and is raised."""
        try:
            self._step(link)
        except XenError:
            if self._xs.read(f"{link.backend_path}/frontend") is None:
                return
            raise

    def _step(self, link: FrontendLink) -> None:
        if (self._xs.read(f"{link.backend_path}/online") or b"").strip() == b"0":
            return self._toolstack_removes(link)
        state = read_state(self._xs, link.frontend_path)
        if state in (XenbusState.INITIALISED, XenbusState.CONNECTED) and not link.connected:
            self._connect(link)
        elif state == XenbusState.CLOSING:
            write_state(self._xs, link.backend_path, XenbusState.CLOSING)
        elif state == XenbusState.CLOSED or (state == XenbusState.INITIALISING and link.connected):
            self._disconnect(link)
            write_state(self._xs, link.backend_path, XenbusState.INIT_WAIT)

    def _toolstack_removes(self, link: FrontendLink) -> None:
        """libxl removes a device (``libxl__initiate_device_generic_remove``, on
        ``xl destroy`` or a guest's shutdown) by writing ``online = 0`` and state
        Closing, then waits up to 10 s for the backend to write Closed before it
        gives up with "unable to remove device".  Nested Xen showed exactly that
        for every measured guest until the backend answered."""
        self._disconnect(link)
        if read_state(self._xs, link.backend_path) == XenbusState.CLOSED:
            return None
        if self._xs.read(f"{link.backend_path}/frontend") is None:
            return None  # already removed: a write would recreate it
        write_state(self._xs, link.backend_path, XenbusState.CLOSED)
        log.info("%s closed for the toolstack", link.name)
        return None

    def _connect(self, link: FrontendLink) -> None:
        fe_path = link.frontend_path
        ref = _decimal(self._xs.read(f"{fe_path}/ring-ref"), 0xFFFFFFFF)
        port = _decimal(self._xs.read(f"{fe_path}/event-channel"), 0xFFFFFFFF)
        if ref is None or port is None:
            return self._refuse(link, "ring-ref or event-channel missing or not a number")
        if (self._xs.read(f"{fe_path}/feature-protocol-v2") or b"").strip() != b"1":
            return self._refuse(link, "frontend does not speak tpmif protocol v2")
        # The toolstack may have (re)written the instance uuid since adoption.
        link.uuid = (self._xs.read(f"{link.backend_path}/uuid") or b"").decode(errors="replace")
        try:
            link.mapping = self._gnttab.map_grant(link.frontend_domid, ref, writable=True)
            link.page = SharedPage(link.mapping.memory)
            link.port = self._evtchn.bind_interdomain(link.frontend_domid, port)
        except XenError as e:
            self._disconnect(link)
            return self._refuse(link, str(e))
        if self.on_connect is not None:
            try:
                self.on_connect(link)
            except PvgrubError as e:
                self._disconnect(link)
                return self._refuse(link, str(e))
        if self._xs.read(f"{link.backend_path}/frontend") is None:
            # The toolstack removed the device while on_connect ran (a frontend that
            # gave up waiting): writing ready/state now would recreate the removed
            # directory in xenstore, and the stale link would never be forgotten.
            self._disconnect(link)
            log.warning("%s: removed while connecting; dropped", link.name)
            return None
        self._by_port[link.port] = link
        self._xs.write(f"{link.backend_path}/ready", b"1")
        write_state(self._xs, link.backend_path, XenbusState.CONNECTED)
        log.info("%s connected (uuid %s)", link.name, link.uuid)

    def _refuse(self, link: FrontendLink, why: str) -> None:
        link.errors.append(why)
        log.warning("%s: %s", link.name, why)
        write_state(self._xs, link.backend_path, XenbusState.CLOSING)

    def _disconnect(self, link: FrontendLink) -> None:
        if link.port >= 0:
            self._by_port.pop(link.port, None)
            with contextlib.suppress(XenError):
                self._evtchn.unbind(link.port)
            link.port = -1
        link.page = None
        if link.mapping is not None:
            with contextlib.suppress(XenError):
                link.mapping.close()
            link.mapping = None

    def _forget(self, link: FrontendLink) -> None:
        self._disconnect(link)
        with contextlib.suppress(XenError):
            self._xs.unwatch(
                f"{link.frontend_path}/state", f"vtpm-fe-{link.frontend_domid}-{link.devid}"
            )
        del self.links[(link.frontend_domid, link.devid)]

    # -- ring side -----------------------------------------------------------------------

    def _serve_loop(self) -> None:
        while not self._stop.is_set():
            try:
                port = self._evtchn.wait(self.poll_interval)
            except XenError as e:
                log.warning("vtpm backend: event channel: %s", e)
                continue
            if port is None:
                continue
            # Unmask first, then look at the page: a notify that lands while
            # we serve is then delivered again, never lost.
            with contextlib.suppress(XenError):
                self._evtchn.unmask(port)
            with self._lock:
                link = self._by_port.get(port)
                if link is not None and link.page is not None:
                    self._serve(link, link.page)
                    self._serve_follow_ups(link)

    def _serve_follow_ups(self, link: FrontendLink) -> None:
        """Adaptive polling: a measuring client sends its next command right
        after reading an answer, sooner than a wake-up through the event
        channel would take; watch the page briefly before going back to
        sleep.  The notify that comes with it is then a harmless repeat."""
        deadline = time.perf_counter() + SPIN_SECONDS
        while time.perf_counter() < deadline and link.page is not None:
            if link.page.state == TpmifState.SUBMIT:
                self._serve(link, link.page)
                deadline = time.perf_counter() + SPIN_SECONDS

    def _serve(self, link: FrontendLink, page: SharedPage) -> None:
        state = page.state
        if state == TpmifState.CANCEL:
            page.state = TpmifState.IDLE
            self._notify(link)
            return
        if state != TpmifState.SUBMIT:
            return  # spurious or already answered
        try:
            request = page.read_packet()
        except SharedPageError as e:
            link.errors.append(str(e))
            page.state = TpmifState.IDLE  # refuse, as a cancel: the frontend gets an error
            self._notify(link)
            return
        answer = self._execute(link, request)
        page.write_packet(answer[:MAX_PACKET])
        page.state = TpmifState.FINISH
        link.served += 1
        self._notify(link)

    def _execute(self, link: FrontendLink, request: bytes) -> bytes:
        try:
            return self.instance_for(link).transmit(request)
        except TpmError as e:
            link.errors.append(str(e))
            log.warning("%s: TPM instance failed: %s", link.name, e)
            return TPM2_FAILURE if request[:2] in (b"\x80\x01", b"\x80\x02") else TPM12_FAIL

    def _notify(self, link: FrontendLink) -> None:
        try:
            self._evtchn.notify(link.port)
        except XenError as e:
            link.errors.append(str(e))
