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
import errno
import logging
import queue
import threading
import time
from collections import deque
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
    WatchEvent,
    XenError,
)

log = logging.getLogger(__name__)

#: How long to keep polling a page for the next command after an answer.
SPIN_SECONDS = 0.0003
#: The last errors a device keeps (older ones are only counted).
MAX_ERRORS = 32
#: At most this many WARNING lines per device per `WARN_WINDOW` seconds.
WARN_BURST = 5
WARN_WINDOW = 60.0
#: Refused requests a device may send at full speed, refilled this many a
#: second; beyond, its device thread sleeps off the excess (a guest sending
#: bad requests in a loop gets this many answers a second, and the others
#: the interpreter meanwhile).
REFUSAL_BURST = 1000.0
REFUSAL_RATE = 20000.0
#: A device whose frontend fires more watch events than this in
#: `FLOOD_WINDOW` seconds (a guest rewriting its own nodes in a loop) is
#: not watched for `FLOOD_MUTE` seconds: its events stop costing us, and the
#: watch set again at the end fires once, so no state change is missed.
FLOOD_EVENTS = 200
FLOOD_WINDOW = 1.0
FLOOD_MUTE = 1.0
#: Watch events taken in one batch before the devices they name are stepped.
MAX_BATCH = 4096
#: The shortest time between two steps of one device: a guest rewriting its
#: own ``state`` in a loop gets at most this many looks a second.
MIN_STEP_INTERVAL = 0.01
#: The longest reason written into a device's ``error`` node.
MAX_ERROR_NODE = 128
RELEASE_TOKEN = "vtpm-release-domain"


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
    #: The last `MAX_ERRORS` errors (a guest's bad requests must not grow memory).
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    error_count: int = 0
    _warned: int = 0
    _warn_window: float = 0.0
    _suppressed: int = 0
    last_step: float = 0.0
    _refusal_credit: float = REFUSAL_BURST
    _refusal_stamp: float = 0.0
    _events: int = 0
    _events_since: float = 0.0
    muted_until: float = 0.0
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

    def throttle_refusal(self) -> None:
        """Called on the device's thread after a refused request: free up to
        `REFUSAL_BURST` (refilled at `REFUSAL_RATE` a second), then it sleeps
        off the excess (a token bucket)."""
        now = time.monotonic()
        self._refusal_credit = min(
            REFUSAL_BURST, self._refusal_credit + (now - self._refusal_stamp) * REFUSAL_RATE
        )
        self._refusal_stamp = now
        self._refusal_credit -= 1
        if self._refusal_credit < 0:
            time.sleep(-self._refusal_credit / REFUSAL_RATE)

    def flooding(self, now: float) -> bool:
        """Count one watch event of this device; whether it is over the limit."""
        if now - self._events_since >= FLOOD_WINDOW:
            self._events_since, self._events = now, 0
        self._events += 1
        return self._events > FLOOD_EVENTS

    def error(self, reason: str) -> None:
        """Keep and log an error, at most `WARN_BURST` log lines per `WARN_WINDOW`
        (a guest sending bad requests in a loop must not fill the log)."""
        self.errors.append(reason)
        self.error_count += 1
        now = time.monotonic()
        if now - self._warn_window >= WARN_WINDOW:
            if self._suppressed:
                log.warning("%s: %d more errors not logged", self.name, self._suppressed)
            self._warn_window, self._warned, self._suppressed = now, 0, 0
        if self._warned < WARN_BURST:
            self._warned += 1
            log.warning("%s: %s", self.name, reason)
            if self._warned == WARN_BURST:
                log.warning("%s: further errors for %.0f s are counted, not logged",
                            self.name, WARN_WINDOW)  # fmt: skip
        else:
            self._suppressed += 1


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
        with contextlib.suppress(XenError):  # a domain's destruction: its devices may stay
            self._xs.watch("@releaseDomain", RELEASE_TOKEN)
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
            link.error(action.reason)
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
        """Take watch events in batches and step each device they name once
        (a device at most every `MIN_STEP_INTERVAL`); a full `rescan` only for
        an event naming no known device.  A guest rewriting its own nodes in
        a loop costs one step of its own device per interval, not a rescan of
        every device per write."""
        deferred: set[tuple[int, int]] = set()
        while not self._stop.is_set():
            try:
                wait = self.poll_interval if not deferred else MIN_STEP_INTERVAL
                event = self._xs.wait_event(wait)
                rescan = release = False
                devices = set(deferred)
                taken = 0
                while event is not None:
                    kind = self._classify(event)
                    if kind == "rescan":
                        rescan = True
                    elif kind == "release":
                        release = True
                    elif isinstance(kind, tuple):
                        devices.add(kind)
                    taken += 1
                    if taken >= MAX_BATCH:
                        break
                    event = self._xs.wait_event(0)
                if release:
                    self._reap_dead_domains()
                self._unmute_due()
                if rescan:
                    self.rescan()
                    deferred.clear()
                    continue
                deferred = self._step_devices(devices)
            except PvgrubError as e:  # keep serving the other devices
                log.warning("vtpm backend: %s", e)

    def _classify(self, event: WatchEvent) -> tuple[int, int] | str | None:
        """The device a watch event is about, or "rescan" / "release"."""
        if event.token == RELEASE_TOKEN:
            return "release"
        if event.token.startswith("vtpm-fe-"):
            parts = event.token.split("-")
            if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
                link = self.links.get((int(parts[2]), int(parts[3])))
                if link is None or link.muted_until:
                    return None
                if link.flooding(time.monotonic()):
                    self._mute(link)
                return (link.frontend_domid, link.devid)
            return None
        prefix = self.root + "/"
        if event.path.startswith(prefix):
            parts = event.path[len(prefix) :].split("/")
            if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
                key = (int(parts[0]), int(parts[1]))
                if key in self.links and parts[2] not in ("frontend", "frontend-id"):
                    return key
        return "rescan"

    def _mute(self, link: FrontendLink) -> None:
        link.muted_until = time.monotonic() + FLOOD_MUTE
        with contextlib.suppress(XenError):
            self._xs.unwatch(f"{link.frontend_path}/state", link.token)
        log.warning("%s: frontend floods its xenstore nodes; not watched for %.0f s",
                    link.name, FLOOD_MUTE)  # fmt: skip

    def _unmute_due(self) -> None:
        now = time.monotonic()
        for link in list(self.links.values()):
            if link.muted_until and now >= link.muted_until:
                link.muted_until = 0.0
                with contextlib.suppress(XenError):  # fires once: the device is stepped
                    self._xs.watch(f"{link.frontend_path}/state", link.token)

    def _step_devices(self, keys: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Step these devices; those stepped too recently are returned, for later."""
        later: set[tuple[int, int]] = set()
        now = time.monotonic()
        with self._rescanning:
            for key in keys:
                link = self.links.get(key)
                if link is None:
                    continue
                if now - link.last_step < MIN_STEP_INTERVAL:
                    later.add(key)
                    continue
                link.last_step = now
                self._step_unless_removed(link)
        return later

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
                        link.last_step = time.monotonic()
                        self._step_unless_removed(link)
            for key in set(self.links) - seen:
                self._forget(self.links[key])

    def _domain_gone(self, domid: int) -> bool:
        """Whether the frontend's domain is destroyed (or dying: our mapping of
        its page is what keeps it a zombie).  Unknown (no right to ask) is no."""
        try:
            info = self.hv.domains().info(domid)
        except XenError as e:
            return e.errno == errno.ESRCH
        return bool(info.dying)

    def _reap_dead_domains(self) -> None:
        """Forget the devices of destroyed frontend domains and remove their
        backend directories, which a toolstack may leave behind (libxl removes
        them; the simulator's destroy_domain does not): their mapping, port and
        instance go now, not never."""
        with self._rescanning:
            for link in list(self.links.values()):
                if link.frontend_domid == self.hv.domid or not self._domain_gone(
                    link.frontend_domid
                ):
                    continue
                log.info("%s: frontend domain %d is gone", link.name, link.frontend_domid)
                self._forget(link)
                with contextlib.suppress(XenError):
                    self._xs.rm(f"{self.root}/{link.frontend_domid}")

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
            if self._domain_gone(link.frontend_domid):
                self._forget(link)
                with contextlib.suppress(XenError):
                    self._xs.rm(f"{self.root}/{link.frontend_domid}")
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
            stale = page.state == TpmifState.SUBMIT
            if stale:
                # Submitted before we said Connected: to an earlier daemon, which
                # may have run it before it died (a restart reattaches to a ring a
                # frontend kept).  A command runs once or not at all: it is
                # cancelled, as a backend acknowledges a CANCEL, and the frontend
                # sees a failed command, never a second extend.
                page.state = TpmifState.IDLE
                link.error("a command submitted before this connection was cancelled, not run")
            link.mapping, link.page, link.port, link.evtchn = mapping, page, port, evtchn
            self._feed(link, RingMapped(action.token))
            if not link.core.connected:  # the core dropped a connect it no longer wanted
                self._unmap(link)
                return False
            if stale:
                self._notify(link)
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
        is then a harmless repeat).  A refused request (no command to run)
        costs its device a pause once it sends them faster than a client with
        a reason ever would: its thread sleeps, and the interpreter goes to
        the other guests' threads."""
        errors = link.error_count
        job = self._kick(link)
        if job is None and link.error_count != errors:
            link.throttle_refusal()
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
            link.error(str(e))


def _close(mapping: MappedGrant | None) -> None:
    if mapping is not None:
        with contextlib.suppress(XenError):
            mapping.close()
