"""``VtpmBackend``: serve tpmif frontends, over the hypervisor interface.

A thin driver over `BackendCore` (`pvgrub_py.vtpm.tpmif`), one core per
device: this module does the I/O the cores ask for (Mini-OS ``tpmback.c``
behaviour, in a dom0 process):

* watch ``backend/vtpm`` of our domain; a new ``<fe>/<devid>`` is adopted
  (`DeviceFound`: ``feature-protocol-v2 = 1``, InitWait) and its
  frontend's state is watched and fed to the core with the frontend's
  ``ring-ref``, ``event-channel`` and ``feature-protocol-v2``;
* `MapRing`: map the grant, bind the event channel, run the connect policy
  (vtpmd power-cycles the instance for a dom0 frontend); `WriteReady`,
  Connected;
* each connected device has its own thread, waiting on its own event
  channel handle: a kick feeds the page's state; `Execute` runs the command
  on the device's TPM on that thread; the answer goes back as `RespondWith`;
* ``online = 0`` from the toolstack, a removed device: `ToolstackRemoves`,
  `DeviceRemoved`.

Locks: one per device, held only while its core takes an event and the
quick actions run (xenstore writes, the page, a notify).  What may block,
connecting (a TPM 1.2 power cycle self-tests: 24 s under QEMU TCG) and
executing a command, runs on the device's own thread without it, so one
slow TPM never stalls another guest's handshake or commands.  Devices of
one instance (one uuid: a dom0 frontend and the guest's) share an instance
lock around the TPM, which must see one command at a time.  The device's
thread also does the adaptive polling of its page, so a busy guest's
commands are served without a thread hand-off.

Which TPM serves a device is the caller's policy (`InstanceProvider`), as is
what happens when a frontend connects (`ConnectHook`).  A provider's
transport that has a ``tpm_version`` ("1.2" or "2.0") gets error answers in
that version; otherwise the command's tag decides.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pvgrub_py.errors import PvgrubError
from pvgrub_py.tpm.errors import TpmError
from pvgrub_py.tpm.transport import TpmTransport
from pvgrub_py.vtpm.shared_page import SharedPage, SharedPageError, TpmifState
from pvgrub_py.vtpm.tpmif import BackendCore
from pvgrub_py.vtpm.tpmif_events import (
    Action,
    Command,
    DeviceFound,
    DeviceRemoved,
    Event,
    Execute,
    ExecutionFailed,
    Fail,
    MapRing,
    Notify,
    PacketUnreadable,
    PageKicked,
    PeerStateChanged,
    PublishFeatures,
    ReadPacket,
    RespondWith,
    Response,
    RingFailed,
    RingMapped,
    SetPageState,
    ToolstackRemoves,
    UnmapRing,
    WriteReady,
    WriteState,
)
from pvgrub_py.vtpm.xenbus import XenbusState, read_state, write_state
from pvgrub_py.xen.interface import (
    EventChannels,
    GrantMap,
    Hypervisor,
    MappedGrant,
    XenError,
)

log = logging.getLogger(__name__)

#: How long to keep polling a page for the next command after an answer.
SPIN_SECONDS = 0.0003
#: The longest reason written into a device's ``error`` node.
MAX_ERROR_NODE = 128


class ConnectRefused(PvgrubError):
    """A connect policy's refusal: the device goes to Closing with ``public`` (no
    host detail) in its ``error`` node; the message goes to the log."""

    def __init__(self, message: str, public: str = "vTPM instance unavailable") -> None:
        super().__init__(message)
        self.public = public[:MAX_ERROR_NODE]


class _Worker:
    """One thread for one device's blocking work, started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # keep the device's worker alive for its next job
                log.exception("%s: worker job failed", self.name)

    def pending(self) -> bool:
        return not self._jobs.empty()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
            self._thread = None


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
    evtchn: EventChannels | None = None  # the device thread's own handle
    served: int = 0
    errors: list[str] = field(default_factory=list)
    core: BackendCore = field(default_factory=BackendCore)
    lock: threading.Lock = field(default_factory=threading.Lock)
    worker: _Worker | None = None
    executes: list[Execute] = field(default_factory=list)  # for the device thread
    #: The instance serving this connection and its lock, looked up once per ring.
    instance: tuple[TpmTransport, threading.Lock] | None = None

    @property
    def connected(self) -> bool:
        return self.page is not None

    @property
    def name(self) -> str:
        return f"vtpm {self.frontend_domid}/{self.devid}"

    @property
    def token(self) -> str:
        return f"vtpm-fe-{self.frontend_domid}-{self.devid}"


InstanceProvider = Callable[[FrontendLink], TpmTransport]
ConnectHook = Callable[[FrontendLink], None]
#: Called once a device is forgotten: (its link, whether another device has its uuid).
RemovedHook = Callable[[FrontendLink, bool], None]


class VtpmBackend:
    def __init__(
        self,
        hv: Hypervisor,
        instance_for: InstanceProvider,
        *,
        on_connect: ConnectHook | None = None,
        on_removed: RemovedHook | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        self.hv = hv
        self.instance_for = instance_for
        self.on_connect = on_connect
        self.on_removed = on_removed
        self.poll_interval = poll_interval
        self.root = f"/local/domain/{hv.domid}/backend/vtpm"
        self.links: dict[tuple[int, int], FrontendLink] = {}
        self._registry = threading.Lock()  # links, _instance_locks: short holds
        self._rescanning = threading.Lock()  # one rescan at a time
        self._instance_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._xs = hv.xenstore()
        self._gnttab: GrantMap = hv.grant_map()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> VtpmBackend:
        self._xs.mkdir(self.root)
        self._xs.watch(self.root, "vtpm-backend")
        t = threading.Thread(target=self._watch_loop, name="vtpmback-watch", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._registry:
            links = list(self.links.values())
            self.links.clear()
        for link in links:
            if link.worker is not None:
                link.worker.stop()
            with link.lock:
                self._unmap(link)
        for closer in (self._gnttab.close, self._xs.close):
            with contextlib.suppress(XenError):
                closer()

    def device_uuids(self) -> set[str]:
        """The (lower-case) uuids of the devices under our backend directory now."""
        found: set[str] = set()
        for fe in self._xs.directory(self.root) or []:
            for devid in self._xs.directory(f"{self.root}/{fe}") or []:
                with contextlib.suppress(XenError):
                    uuid = self._xs.read(f"{self.root}/{fe}/{devid}/uuid")
                    if uuid is not None:
                        found.add(uuid.decode(errors="replace").strip().lower())
        return found

    def __enter__(self) -> VtpmBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving a core ------------------------------------------------------------------

    def _feed(self, link: FrontendLink, event: Event) -> None:
        """Give ``event`` to the device's core and do what it asks; the caller
        holds ``link.lock``.  Follow-up events (a packet read) go in at once."""
        events: list[Event] | None = None
        while True:
            for action in link.core.receive(event):
                follow = self._perform(link, action)
                if follow is not None:
                    events = [follow] if events is None else [*events, follow]
            if not events:
                return
            event, events = events[0], events[1:]

    def _perform(self, link: FrontendLink, action: Action) -> Event | None:
        # The per-command actions first: this runs several times a command.
        if isinstance(action, ReadPacket):
            return self._read_packet(link)
        if isinstance(action, Execute):
            link.executes.append(action)  # run by the device thread, without the lock
        elif isinstance(action, RespondWith):
            if link.page is not None:
                link.page.write_packet(action.response)
                link.page.state = TpmifState.FINISH
                link.served += 1
        elif isinstance(action, Notify):
            self._notify(link)
        elif isinstance(action, SetPageState):
            if link.page is not None:
                link.page.state = action.state
        elif isinstance(action, Fail):
            link.errors.append(action.reason)
            log.warning("%s: %s", link.name, action.reason)
        elif isinstance(action, WriteState):
            if not self._still_there(link):
                return None
            write_state(self._xs, link.backend_path, action.state)
            if action.state == XenbusState.CLOSED:
                log.info("%s closed for the toolstack", link.name)
        elif isinstance(action, PublishFeatures):
            self._xs.write(f"{link.backend_path}/feature-protocol-v2", b"1")
        elif isinstance(action, WriteReady):
            if not self._still_there(link):
                return None
            self._xs.write(f"{link.backend_path}/ready", b"1")
            with contextlib.suppress(XenError):
                self._xs.rm(f"{link.backend_path}/error")
            log.info("%s connected (uuid %s)", link.name, link.uuid)
        elif isinstance(action, MapRing):
            link.uuid = self._read_text(f"{link.backend_path}/uuid")  # may be rewritten
            self._work(link, lambda: self._map_ring(link, action))
        elif isinstance(action, UnmapRing):
            self._unmap(link)
        return None

    def _still_there(self, link: FrontendLink) -> bool:
        """Whether the toolstack's device is still there: a write into a removed
        device would recreate its directory in xenstore for good (a rescan that
        listed it just before the toolstack removed it, a connect that
        outlived its frontend)."""
        if self._xs.read(f"{link.backend_path}/frontend") is not None:
            return True
        log.info("%s: removed meanwhile; its state is not written", link.name)
        return False

    def _work(self, link: FrontendLink, job: Callable[[], None]) -> None:
        if link.worker is None:
            link.worker = _Worker(f"vtpmback-{link.frontend_domid}-{link.devid}")
        link.worker.submit(job)

    def _instance_lock(self, link: FrontendLink) -> threading.Lock:
        with self._registry:
            key = link.uuid.lower()
            lock = self._instance_locks.get(key)
            if lock is None:
                lock = self._instance_locks[key] = threading.Lock()
            return lock

    def _read_text(self, path: str) -> str:
        return (self._xs.read(path) or b"").decode(errors="replace")

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
        with self._rescanning:
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
        link.uuid = self._read_text(f"{path}/uuid")
        with link.lock:
            self._feed(link, DeviceFound())
        self._xs.watch(f"{link.frontend_path}/state", link.token)
        with self._registry:
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
        fe = link.frontend_path
        state = read_state(self._xs, fe)
        event = PeerStateChanged(state)
        if state in (XenbusState.INITIALISED, XenbusState.CONNECTED) and not link.connected:
            event = PeerStateChanged(
                state,
                protocol_v2=self._xs.read(f"{fe}/feature-protocol-v2"),
                ring_ref=self._xs.read(f"{fe}/ring-ref"),
                event_channel=self._xs.read(f"{fe}/event-channel"),
            )
        with link.lock:
            self._feed(link, event)
        return None

    def _toolstack_removes(self, link: FrontendLink) -> None:
        """libxl removes a device (``libxl__initiate_device_generic_remove``, on
        ``xl destroy`` or a guest's shutdown) by writing ``online = 0`` and state
        Closing, then waits up to 10 s for the backend to write Closed before it
        gives up with "unable to remove device".  Nested Xen showed exactly that
        for every measured guest until the backend answered."""
        with link.lock:
            if read_state(self._xs, link.backend_path) == XenbusState.CLOSED:
                return
            if self._xs.read(f"{link.backend_path}/frontend") is None:
                self._feed(link, DeviceRemoved())  # already removed: a write would recreate it
                return
            self._feed(link, ToolstackRemoves())

    def _forget(self, link: FrontendLink) -> None:
        with link.lock:
            self._feed(link, DeviceRemoved())
            self._unmap(link)
        with contextlib.suppress(XenError):
            self._xs.unwatch(f"{link.frontend_path}/state", link.token)
        uuid = link.uuid.lower()
        with self._registry:
            if self.links.get((link.frontend_domid, link.devid)) is link:
                del self.links[(link.frontend_domid, link.devid)]
            still_used = any(other.uuid.lower() == uuid for other in self.links.values())
            if not still_used:
                self._instance_locks.pop(uuid, None)
        if link.worker is not None:
            link.worker.stop(timeout=0)  # it ends after its current job
        if self.on_removed is not None:
            try:
                self.on_removed(link, still_used)
            except Exception:  # the policy's failure must not stop the watch loop
                log.exception("%s: removal hook failed", link.name)

    # -- connecting (on the device's worker) ---------------------------------------------

    def _map_ring(self, link: FrontendLink, action: MapRing) -> None:
        """Map, bind and run the connect policy, without the device lock (the
        policy may power-cycle a TPM for seconds); report to the core; then
        serve the ring on this thread until it goes.  The event channel handle
        is this thread's alone: only it waits on it, and it closes it (which
        unbinds the port) when the ring goes."""
        evtchn = self.hv.event_channels()
        try:
            if self._connect(link, action, evtchn):
                # A command the frontend submitted before we (re)mapped its ring
                # (a daemon restart) got its notify while nobody listened.
                self._serve(link)
                self._serve_ring(link, evtchn)
        finally:
            with link.lock:
                if link.evtchn is evtchn:  # still ours: the backend is stopping
                    self._unmap(link)
            with contextlib.suppress(XenError):
                evtchn.close()

    def _connect(self, link: FrontendLink, action: MapRing, evtchn: EventChannels) -> bool:
        mapping: MappedGrant | None = None
        try:
            mapping = self._gnttab.map_grant(link.frontend_domid, action.ring_ref, writable=True)
            page = SharedPage(mapping.memory)
            port = evtchn.bind_interdomain(link.frontend_domid, action.port)
            if self.on_connect is not None:
                with self._instance_lock(link):
                    self.on_connect(link)
        except PvgrubError as e:  # XenError from the hypervisor, or the policy's refusal
            _close(mapping)
            with link.lock:
                if isinstance(e, ConnectRefused) and self._still_there(link):
                    # What the frontend (and the toolstack) can read: Xen's
                    # xenbus_dev_fatal writes a device's error the same way.
                    self._xs.write(f"{link.backend_path}/error", e.public.encode())
                self._feed(link, RingFailed(action.token, str(e)))
            return False
        with link.lock:
            if self._xs.read(f"{link.backend_path}/frontend") is None:
                # The toolstack removed the device while on_connect ran (a frontend that
                # gave up waiting): writing ready/state now would recreate the removed
                # directory in xenstore, and the stale link would never be forgotten.
                _close(mapping)
                log.warning("%s: removed while connecting; dropped", link.name)
                self._feed(link, DeviceRemoved())
                return False
            link.mapping, link.page, link.port, link.evtchn = mapping, page, port, evtchn
            self._feed(link, RingMapped(action.token))
            if not link.core.connected:  # the core dropped a connect it no longer wanted
                self._unmap(link)
                return False
        return True

    def _unmap(self, link: FrontendLink) -> None:
        """Let the ring go; the caller holds ``link.lock``.  The grant is unmapped
        here; the port goes with the device thread's handle, which it closes as
        soon as it sees the ring gone (never closed under a thread waiting on it)."""
        _close(link.mapping)
        link.port, link.page, link.mapping, link.evtchn = -1, None, None, None
        link.instance = None  # the next connection asks the provider again

    # -- ring side (on the device's thread) ----------------------------------------------

    def _serve_ring(self, link: FrontendLink, evtchn: EventChannels) -> None:
        """Wait for kicks on the device's own channel and serve them, until the
        ring goes, the backend stops, or the device has other work queued."""
        while not self._stop.is_set() and link.evtchn is evtchn:
            if link.worker is not None and link.worker.pending():
                return  # a reconnect: the next job maps the new ring
            try:
                port = evtchn.wait(self.poll_interval)
            except XenError as e:
                if link.evtchn is evtchn:
                    log.warning("%s: event channel: %s", link.name, e)
                return
            if port is None:
                continue
            # Unmask first, then look at the page: a notify that lands while
            # we serve is then delivered again, never lost.
            with contextlib.suppress(XenError):
                evtchn.unmask(port)
            self._serve(link)

    def _serve(self, link: FrontendLink) -> None:
        """Feed the page's state; run what the core asks to execute; then watch
        the page briefly for the next command (adaptive polling: a measuring
        client sends it right after reading an answer, sooner than a wake-up
        through the event channel would take; the notify that comes with it
        is then a harmless repeat)."""
        job = self._kick(link)
        while job is not None:
            self._execute(link, job)
            job = None
            deadline = time.perf_counter() + SPIN_SECONDS
            while time.perf_counter() < deadline:
                with link.lock:  # the watch thread may unmap the page meanwhile
                    page = link.page
                    if page is None:
                        return
                    if page.state != TpmifState.SUBMIT:
                        continue
                job = self._kick(link)
                break

    def _kick(self, link: FrontendLink) -> Execute | None:
        with link.lock:
            if link.page is None:
                return None
            self._feed(link, PageKicked(link.page.state))
            jobs, link.executes = link.executes, []
        return jobs[0] if jobs else None

    def _read_packet(self, link: FrontendLink) -> Event:
        if link.page is None:
            return PacketUnreadable("the ring is gone")
        try:
            return Command(link.page.read_packet())
        except SharedPageError as e:
            return PacketUnreadable(str(e))

    def _execute(self, link: FrontendLink, action: Execute) -> None:
        """Run one command on the device's TPM, without the device lock."""
        event: Event
        try:
            if link.instance is None:
                transport = self.instance_for(link)
                version = getattr(transport, "tpm_version", None)
                if version in ("1.2", "2.0"):
                    with link.lock:
                        link.core.tpm_version = version
                link.instance = (transport, self._instance_lock(link))
            transport, instance_lock = link.instance
            with instance_lock:
                answer = transport.transmit(action.command)
        except TpmError as e:
            event = ExecutionFailed(action.token, str(e))
        except Exception as e:  # the guest must get an answer whatever the TPM did
            event = ExecutionFailed(action.token, f"{type(e).__name__}: {e}")
        else:
            event = Response(answer, action.token)
        with link.lock:
            self._feed(link, event)

    def _notify(self, link: FrontendLink) -> None:
        if link.evtchn is None:
            return
        try:
            link.evtchn.notify(link.port)
        except XenError as e:
            link.errors.append(str(e))


def _close(mapping: MappedGrant | None) -> None:
    if mapping is not None:
        with contextlib.suppress(XenError):
            mapping.close()
