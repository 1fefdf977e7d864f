"""vTPM instances for ``pvgrubctl vtpmd``: one swtpm per guest vTPM uuid.

A vTPM instance is named by the ``uuid`` libxl writes into the vtpm backend
node (Xen tools/libs/light/libxl_vtpm.c, ``libxl__set_xenstore_vtpm``); its
state lives in ``<state-root>/<uuid>/``, made by ``pvgrubctl vtpm create``
(`pvgrub_py.vtpm.manufacture`: ``vtpm.json`` says its TPM version and
whether its state is encrypted).

What is served, and what is refused (the frontend's connect then fails, so
a boot that asked for a vTPM fails closed; never a fresh TPM in its place):

* a known instance is started with its own TPM version and, when encrypted,
  the host key (``--key fd=N``: the key never appears on a command line);
  one whose state file is missing, cannot be decrypted or is corrupt is
  refused (swtpm refuses to start on it; a missing file is never handed to
  swtpm, which would manufacture a new TPM);
* an unknown uuid is refused, unless the daemon was told to provision
  unknown uuids (``provision_unknown``): then it gets a bare swtpm of the
  daemon's version, and a ``vtpm.json`` that makes it known from then on.

Restarts: every swtpm runs in its own session (a SIGTERM or a ``kill -9`` of
the daemon, a ``systemctl restart`` with ``KillMode=process``, does not reach
it), and ``<instance>/swtpm-run.json`` records its pid, start time, boot id
and sockets.  A restarted daemon reattaches to a live swtpm (same process,
its control channel answers): the guest keeps its PCRs.  An instance whose
swtpm is gone (crashed, killed, the host rebooted) is started again from its
state on disk, with reset PCRs: a guest frontend is refused on it (the
guest's vTPM fails closed) until the toolstack power-cycles it for the
guest's next boot.  An unresponsive leftover swtpm (verified to be the one
recorded) is killed first, so an orphan never blocks the restart.

Measured boots only, for one domain: a power cycle by the toolstack (the
bootloader about to measure a boot; libxl runs it before the guest's domain
has its devices, so its domid is not known yet) issues a one-shot binding
ticket.  The first guest frontend that connects afterwards takes it and
binds the instance to its device (domid, devid); from then on only that
device is served, reconnects included (a kexec'd kernel, a vtpmd restart:
the ticket and the binding are kept in ``swtpm-run.json``).  Refused, with
the device's ``error`` node: a frontend of another domain, a second device
of the bound one, a vTPM hot-plugged into a running guest (no ticket: its
PCRs would be reset or another boot's, for it to forge PCR 4/5 with).  The
binding ends when its device goes (the domain destroyed) and at the next
toolstack power cycle, whose ticket the domain bound before it can never
take (a new boot is a new domain), and whose reset ends that domain's
service at its next command.  A new instance made by --provision-unknown
starts with a ticket (tests and demos: no bootloader measured it), and so
does one that resumes a saved boot (``pvgrubctl vtpm import`` of a running
instance's export left its volatile state: the restored domain binds it).

Power cycles: a frontend in the toolstack domain (dom0: the bootloader about
to measure a boot) gets a fresh boot of the instance (TPM_Init, then
TPM_Startup), so the PCRs describe that boot only, as the Xen vTPM docs
require ("every vTPM launch must be paired with a fresh guest launch").  A
frontend of any other domain (the guest's own xen-tpmfront, after the
bootloader measured it) never resets it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from pvgrub_py.daemon_process import poll_until_ready
from pvgrub_py.errors import PvgrubError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.socket_address import SocketAddress
from pvgrub_py.tpm.swtpm import CMD_GET_TPMESTABLISHED, SwtpmControl, SwtpmTransport
from pvgrub_py.vtpm import manufacture
from pvgrub_py.vtpm.backend import ConnectRefused, FrontendLink

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.tpm.client import TpmVersion

log = logging.getLogger(__name__)

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TOOLSTACK_DOMID = 0
#: Where an instance's running swtpm is recorded, in its directory.
RECORD = "swtpm-run.json"
#: sun_path holds 108 bytes with its NUL.
MAX_SOCKET_PATH = 107
#: Bounds, not waits: a healthy swtpm answers in milliseconds, but nested Xen under
#: QEMU TCG on a loaded machine has taken over 10 s to start one.
START_TIMEOUT = 30.0
CONTROL_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MAX_RECORD = 4096


class VtpmInstanceError(ConnectRefused):
    pass


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time (``/proc/PID/stat`` field 22), None if it is gone
    or a zombie: with the boot id, it tells a recorded swtpm from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return []


@dataclass(frozen=True)
class RunRecord:
    pid: int
    start_ticks: int
    boot_id: str
    data: str
    ctrl: str
    run_dir: str  # the sockets' directory: the instance's own, or a private one
    tpm_version: str
    #: A guest frontend may bind the instance (the toolstack power-cycled it).
    ticket: bool = False
    #: The guest device the instance serves, (-1, -1): none.
    bound_domid: int = -1
    bound_devid: int = -1
    #: The domain bound when the toolstack last power-cycled it: never takes that ticket.
    excluded_domid: int = -1

    def write(self, directory: str) -> None:
        path = os.path.join(directory, RECORD)
        tmp = path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f)
        os.replace(tmp, path)

    @classmethod
    def read(cls, directory: str) -> RunRecord | None:
        path = os.path.join(directory, RECORD)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_RECORD + 1)
        try:
            body = json.loads(data)
            if isinstance(body, dict) and "ticket" not in body:
                # A record of a daemon before bindings: its guest, admitted then, keeps
                # its vTPM across the upgrade (the first guest frontend binds it).
                body["ticket"] = True
            record = cls(**body)
        except (ValueError, TypeError, UnicodeDecodeError):
            log.warning("%s: unreadable; its swtpm (if any) is not reattached", path)
            return None
        numbers = (record.pid, record.start_ticks, record.bound_domid, record.bound_devid,
                   record.excluded_domid)  # fmt: skip
        if not (
            all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
            and isinstance(record.ticket, bool)
        ):
            log.warning("%s: malformed; its swtpm (if any) is not reattached", path)
            return None
        return record

    def live(self, directory: str) -> bool:
        """Whether the recorded swtpm still runs: same pid, start time and boot,
        and a swtpm on this state directory."""
        if self.boot_id != _boot_id() or _start_ticks(self.pid) != self.start_ticks:
            return False
        argv = _cmdline(self.pid)
        return (
            bool(argv)
            and os.path.basename(argv[0]) == manufacture.SWTPM
            and (f"dir={directory}" in argv)
        )

    @staticmethod
    def remove(directory: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, RECORD))


class Instance:
    """One running swtpm, started by us or reattached to."""

    def __init__(
        self,
        uuid: str,
        directory: str,
        record: RunRecord,
        process: subprocess.Popen[bytes] | None,
        *,
        reattached: bool,
        boot_lost: bool,
    ) -> None:
        self.uuid = uuid
        self.directory = directory
        self.record = record
        self.tpm_version = record.tpm_version
        self.process = process  # None: reattached, not our child
        self.data = SocketAddress(path=record.data)
        self.ctrl = SocketAddress(path=record.ctrl)
        self.transport = SwtpmTransport(self.data, 30.0)
        self.reattached = reattached
        #: The PCRs no longer describe the guest's boot (the swtpm was started
        #: again after its predecessor died): guests are refused until a power cycle.
        self.boot_lost = boot_lost
        self.power_cycles = 0
        #: Held around the ticket and the binding and their record.
        self._binding = threading.Lock()

    # -- which guest device it serves ----------------------------------------------------

    @property
    def bound(self) -> tuple[int, int] | None:
        record = self.record
        return None if record.bound_domid < 0 else (record.bound_domid, record.bound_devid)

    def serves(self, domid: int, devid: int) -> bool:
        """Whether the guest device (domid, devid) is the one bound to the instance."""
        return self.bound == (domid, devid)

    def _save(self, ticket: bool, bound: tuple[int, int] | None, excluded: int) -> None:
        """Set the ticket and the binding, in the record and then in memory; the
        caller holds ``_binding``.  The record is written first: a restarted
        daemon knows every binding that was acted on."""
        domid, devid = bound if bound is not None else (-1, -1)
        record = dataclasses.replace(
            self.record, ticket=ticket, bound_domid=domid, bound_devid=devid,
            excluded_domid=excluded,
        )  # fmt: skip
        try:
            record.write(self.directory)
        except OSError as e:
            raise VtpmInstanceError(
                f"{self.directory}: cannot record vTPM {self.uuid}'s binding: "
                f"{describe_open_error(e)}"
            ) from None
        self.record = record

    def revoke(self) -> None:
        """Before the toolstack's power cycle (a new boot): the binding ends and
        no ticket is out; the domain bound until now never takes the next one."""
        with self._binding:
            excluded = self.record.bound_domid
            if excluded < 0:
                excluded = self.record.excluded_domid
            self._save(False, None, excluded)

    def issue_ticket(self) -> None:
        """After the power cycle: the first guest frontend from now on may bind."""
        with self._binding:
            self._save(True, None, self.record.excluded_domid)

    def admit(self, domid: int, devid: int) -> None:
        """Serve the guest device (domid, devid), binding the instance to it with
        the ticket if it is the first since the toolstack's power cycle; else
        `VtpmInstanceError` (the device goes to Closing with its reason)."""
        with self._binding:
            bound = self.bound
            if bound == (domid, devid):
                return
            if bound is not None:
                raise VtpmInstanceError(
                    f"vTPM {self.uuid}: serves domain {bound[0]} (device {bound[1]}), "
                    f"whose boot was measured into it; refusing domain {domid} device {devid}",
                    "vTPM in use by another domain or device",
                )
            if self.boot_lost:
                raise VtpmInstanceError(
                    f"vTPM {self.uuid}: its swtpm was restarted and its PCRs are reset; "
                    f"refusing domain {domid} until the toolstack measures its next boot",
                    "vTPM PCRs lost (restart); reboot the guest",
                )
            if not self.record.ticket or domid == self.record.excluded_domid:
                raise VtpmInstanceError(
                    f"vTPM {self.uuid}: no boot was measured into it for domain {domid} "
                    "(a vTPM attached to a running guest, or the same uuid in a second "
                    "guest?); refusing it until the toolstack measures its next boot",
                    "vTPM not measured for this boot; reboot the guest",
                )
            self._save(False, (domid, devid), -1)
        log.info("vTPM %s: bound to domain %d device %d", self.uuid, domid, devid)

    def unbind(self, domid: int, devid: int) -> bool:
        """The bound device went (its domain destroyed, or it was detached): the
        binding ends, and no guest is served until the next power cycle."""
        with self._binding:
            if self.bound != (domid, devid):
                return False
            try:
                self._save(False, None, self.record.excluded_domid)
            except VtpmInstanceError as e:  # ended here all the same
                log.warning("%s", e)
                self.record = dataclasses.replace(
                    self.record, ticket=False, bound_domid=-1, bound_devid=-1
                )
        log.info("vTPM %s: domain %d device %d gone; unbound", self.uuid, domid, devid)
        return True

    @property
    def pid(self) -> int:
        return self.record.pid

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _start_ticks(self.record.pid) == self.record.start_ticks

    def power_cycle(self) -> None:
        # The binding ends before the reset (a bound guest's next command is
        # refused, never run on the new boot's PCRs); the ticket comes after it
        # (a failed reset leaves none out on the old boot's PCRs).
        self.revoke()
        self.transport.close()  # the TPM forgets its connections on init anyway
        SwtpmControl(self.ctrl).init(delete_volatile=True)
        version: TpmVersion = "2.0" if self.tpm_version == "2.0" else "1.2"
        with TpmClient(SwtpmTransport(self.data, 30.0), version=version) as client:
            client.startup()
        self.power_cycles += 1
        self.boot_lost = False
        self.issue_ticket()

    def detach(self) -> None:
        """Let go of the swtpm and leave it running (a daemon restart reattaches)."""
        self.transport.close()

    def stop(self) -> None:
        """Stop the swtpm (its state is on disk) and forget its record."""
        self.transport.close()
        if self.alive():
            with contextlib.suppress(PvgrubError):
                SwtpmControl(self.ctrl, timeout=2.0).shutdown()
            _wait_gone(self.record.pid, self.process, STOP_TIMEOUT)
        RunRecord.remove(self.directory)
        _remove_run_dir(self.directory, self.record)


def _wait_gone(pid: int, process: subprocess.Popen[bytes] | None, grace: float) -> None:
    """Until *pid* exits (SIGKILL after *grace* seconds); reaped if it is our child."""
    if process is not None:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    deadline = time.monotonic() + grace
    while _start_ticks(pid) is not None:
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.01)


def _remove_run_dir(directory: str, record: RunRecord) -> None:
    if os.path.abspath(record.run_dir) == os.path.abspath(directory):
        for path in (record.data, record.ctrl):
            with contextlib.suppress(OSError):
                os.unlink(path)
    elif os.path.basename(record.run_dir).startswith("pvgrub-vtpm-run-"):
        shutil.rmtree(record.run_dir, ignore_errors=True)


def _control_answers(ctrl: str) -> bool:
    try:
        SwtpmControl(SocketAddress(path=ctrl), timeout=CONTROL_TIMEOUT).request(
            CMD_GET_TPMESTABLISHED, answer_size=4
        )
    except PvgrubError:
        return False
    return True


@dataclass(frozen=True)
class _Known:
    """What starting an instance needs to know."""

    tpm_version: str
    key_file: str | None
    adopt: bool  # no vtpm.json yet: write one once swtpm runs


class VtpmInstances:
    def __init__(
        self,
        state_root: str,
        tpm2: bool = False,
        *,
        key_file: str | None = None,
        provision_unknown: bool = False,
    ) -> None:
        self.state_root = os.path.abspath(state_root)
        self.tpm2 = tpm2
        self.key_file = None if key_file is None else os.path.abspath(key_file)
        self.provision_unknown = provision_unknown
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()  # the dict
        self._uuid_locks: dict[str, threading.Lock] = {}  # one start at a time per uuid
        try:
            os.makedirs(state_root, mode=0o700, exist_ok=True)
        except OSError as e:
            raise VtpmInstanceError(
                f"{state_root}: cannot hold vTPM state: {describe_open_error(e)}"
            ) from None
        if not os.path.isdir(state_root):
            raise VtpmInstanceError(f"{state_root}: not a directory; cannot hold vTPM state")
        self._lock_fd = _lock_state_root(self.state_root)
        if self.key_file is not None:  # a bad key file is one line at start, not per guest
            try:
                os.close(manufacture.open_key_file(self.key_file))
            except manufacture.VtpmServiceError as e:
                raise VtpmInstanceError(str(e)) from None

    # -- finding and starting ------------------------------------------------------------

    def get(self, uuid: str) -> Instance:
        if not UUID.match(uuid):
            raise VtpmInstanceError(
                f"vTPM uuid {uuid!r} is not a UUID; refusing it as a name", "bad vTPM uuid"
            )
        key = uuid.lower()
        with self._lock:
            inst = self._instances.get(key)
            if inst is not None and inst.alive():
                return inst
            uuid_lock = self._uuid_locks.setdefault(key, threading.Lock())
        with uuid_lock:
            with self._lock:
                inst = self._instances.get(key)
            if inst is not None and inst.alive():
                return inst
            died = inst is not None
            if inst is not None:
                log.warning("vTPM %s: swtpm (pid %d) died; its PCRs are gone", key, inst.pid)
                inst.transport.close()
                if inst.process is not None:
                    inst.process.wait()
            inst = self._start(key, died)
            with self._lock:
                self._instances[key] = inst
            return inst

    def _known(self, uuid: str, directory: str) -> _Known:
        meta_path = os.path.join(directory, manufacture.METADATA)
        if os.path.isdir(directory) and os.path.lexists(meta_path):
            try:
                meta = manufacture.read_metadata(directory, uuid)
            except manufacture.VtpmServiceError as e:
                raise VtpmInstanceError(str(e), "vTPM instance metadata unreadable") from None
            if not os.path.isfile(meta.state_file):
                raise VtpmInstanceError(
                    f"{meta.state_file}: vTPM {uuid}'s state is missing; refusing to serve "
                    "a fresh TPM in its place",
                    "vTPM state missing",
                )
            key_file = None
            if meta.encrypted:
                key_file = self.key_file or meta.key_file
                if key_file is None:
                    raise VtpmInstanceError(
                        f"vTPM {uuid} is encrypted and vtpmd has no --key-file",
                        "vTPM state cannot be decrypted",
                    )
            return _Known(meta.tpm_version, key_file, adopt=False)
        version = "2.0" if self.tpm2 else "1.2"
        if not self.provision_unknown:
            what = (
                "is not an instance made by `pvgrubctl vtpm create`"
                if os.path.isdir(directory)
                else "is unknown"
            )
            raise VtpmInstanceError(
                f"vTPM {uuid} {what} under {self.state_root}; create it with `pvgrubctl "
                "vtpm create`, or run vtpmd with --provision-unknown",
                "unknown vTPM",
            )
        other = manufacture.PERMALL["1.2" if self.tpm2 else "2.0"]
        if os.path.exists(os.path.join(directory, other)):
            raise VtpmInstanceError(
                f"{directory}: holds TPM {'1.2' if self.tpm2 else '2.0'} state; this vtpmd "
                f"provisions TPM {version}",
                "vTPM version mismatch",
            )
        return _Known(version, self.key_file, adopt=True)

    def _start(self, uuid: str, died: bool) -> Instance:
        directory = os.path.join(self.state_root, uuid)
        known = self._known(uuid, directory)
        record = RunRecord.read(directory) if os.path.isdir(directory) else None
        lost = died
        if record is not None:
            inst = self._reattach(uuid, directory, record)
            if inst is not None:
                return inst
            lost = True  # a swtpm served it and is gone: its PCRs with it
        if known.adopt:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise VtpmInstanceError(f"{directory}: {describe_open_error(e)}") from None
        state_file = os.path.join(directory, manufacture.PERMALL[known.tpm_version])
        fresh = known.adopt and not os.path.exists(state_file)  # --provision-unknown's new TPM
        volatile = os.path.join(directory, manufacture.VOLATILE[known.tpm_version])
        resumed = os.path.isfile(volatile)  # a saved boot (`pvgrubctl vtpm import`)
        inst = _launch(uuid, directory, known, boot_lost=lost)
        if resumed:
            # swtpm resumed it as it started; gone now, so that a later start is
            # never that boot again (a second guest, a hot-plug after this one).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(volatile)
        if (fresh or resumed) and not lost:
            inst.issue_ticket()
        if resumed and not lost:
            log.warning("vTPM %s: resumed its saved state (PCRs included); the first guest "
                        "frontend (the restored domain) binds it", uuid)  # fmt: skip
        if known.adopt:
            manufacture.write_metadata(
                manufacture.Instance(
                    uuid=uuid,
                    tpm_version=known.tpm_version,
                    encrypted=known.key_file is not None,
                    key_file=known.key_file,
                    created=manufacture._now(),
                    directory=directory,
                    ca_dir="",
                )
            )
            log.warning("vTPM %s: provisioned on first use (--provision-unknown)", uuid)
        log.info("vTPM %s: started swtpm pid %d (TPM %s)", uuid, inst.pid, inst.tpm_version)
        return inst

    def _reattach(self, uuid: str, directory: str, record: RunRecord) -> Instance | None:
        if not record.live(directory):
            log.warning("vTPM %s: recorded swtpm (pid %d) is gone", uuid, record.pid)
            RunRecord.remove(directory)
            _remove_run_dir(directory, record)
            return None
        if _control_answers(record.ctrl):
            log.warning("vTPM %s: reattached to running swtpm pid %d", uuid, record.pid)
            return Instance(uuid, directory, record, None, reattached=True, boot_lost=False)
        log.warning("vTPM %s: recorded swtpm pid %d does not answer; killed", uuid, record.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        _wait_gone(record.pid, None, STOP_TIMEOUT)
        RunRecord.remove(directory)
        _remove_run_dir(directory, record)
        return None

    # -- VtpmBackend hooks ---------------------------------------------------------------

    def transport_for(self, link: FrontendLink) -> InstanceTransport:
        inst = self.get(link.uuid)
        if link.frontend_domid == TOOLSTACK_DOMID:
            return InstanceTransport(inst)
        inst.admit(link.frontend_domid, link.devid)
        return InstanceTransport(inst, (link.frontend_domid, link.devid))

    def on_connect(self, link: FrontendLink) -> None:
        inst = self.get(link.uuid)
        if link.frontend_domid == TOOLSTACK_DOMID:
            inst.power_cycle()
            log.info("vTPM %s: power-cycled for a new boot (dom0 frontend)", inst.uuid)
        else:
            inst.admit(link.frontend_domid, link.devid)

    def on_removed(self, link: FrontendLink, still_used: bool) -> None:
        """A device went; the instance stops once no guest device uses it.  A dom0
        device going is the bootloader done measuring: the instance waits for the
        guest's device, with those measurements in it.  The bound guest device
        going ends the binding, even while another device names the uuid."""
        if link.frontend_domid == TOOLSTACK_DOMID or not UUID.match(link.uuid):
            return
        key = link.uuid.lower()
        with self._lock:
            inst = self._instances.get(key)
        if inst is not None:
            inst.unbind(link.frontend_domid, link.devid)
        if still_used:
            return
        with self._lock:
            inst = self._instances.pop(key, None)
        if inst is not None:
            inst.stop()
            log.info("vTPM %s: device gone; swtpm stopped", key)

    def running(self) -> dict[str, Instance]:
        with self._lock:
            return dict(self._instances)

    def sweep(self, in_use: set[str]) -> None:
        """Stop the recorded swtpms (of an earlier daemon) whose uuid no device uses."""
        try:
            names = os.listdir(self.state_root)
        except OSError:
            return
        for name in names:
            if not UUID.match(name) or name in in_use:
                continue
            with self._lock:
                if name in self._instances:
                    continue
            directory = os.path.join(self.state_root, name)
            record = RunRecord.read(directory)
            if record is None:
                continue
            if record.live(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGTERM)
                _wait_gone(record.pid, None, STOP_TIMEOUT)
                log.info("vTPM %s: no device uses it; its swtpm pid %d stopped", name, record.pid)
            RunRecord.remove(directory)
            _remove_run_dir(directory, record)

    def stop(self, keep_running: bool = False) -> None:
        """Let go of every instance; stop their swtpms unless *keep_running*."""
        with self._lock:
            instances = list(self._instances.values())
            self._instances.clear()
        for inst in instances:
            if keep_running and inst.alive():
                inst.detach()
            else:
                inst.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


#: Held by the daemon serving a state root (the kernel drops it when the
#: daemon dies, kill -9 included).
ROOT_LOCK = ".vtpmd.lock"


def _lock_state_root(state_root: str) -> int | None:
    """One daemon per state root: a second would start or reattach to the same
    swtpms and interleave its guests' commands with the first's."""
    path = os.path.join(state_root, ROOT_LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise VtpmInstanceError(f"{path}: {describe_open_error(e)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise VtpmInstanceError(
            f"{state_root}: another vtpmd (pid {holder}) serves this state directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class InstanceTransport:
    """An instance's swtpm connection as the backend sees it: labelled with
    the instance's TPM version, so that the answers the backend makes itself
    (a failed TPM, an answer too large for the page) are in that version."""

    def __init__(self, instance: Instance, guest: tuple[int, int] | None = None) -> None:
        self._instance = instance
        self._guest = guest  # None: the toolstack's frontend
        self.tpm_version = instance.tpm_version

    def transmit(self, command: bytes) -> bytes:
        # Each command, under the instance lock the backend holds: a guest
        # whose binding ended (a power cycle for a new boot) is not served that
        # boot's PCRs on the ring it already had.
        if self._guest is not None and not self._instance.serves(*self._guest):
            raise TpmTransportError(
                f"vTPM {self._instance.uuid}: no longer bound to domain {self._guest[0]} "
                f"device {self._guest[1]}; not served"
            )
        return self._instance.transport.transmit(command)

    def close(self) -> None:
        self._instance.transport.close()


def _run_dir(directory: str) -> str:
    """Where the sockets go: the instance directory when the paths fit in
    sun_path, else a private directory (recorded, so a restart finds it)."""
    if len(os.path.join(directory, "ctrl.sock")) <= MAX_SOCKET_PATH:
        return directory
    return tempfile.mkdtemp(prefix="pvgrub-vtpm-run-")


def _launch(uuid: str, directory: str, known: _Known, *, boot_lost: bool) -> Instance:
    if shutil.which(manufacture.SWTPM) is None:
        raise VtpmInstanceError("swtpm is not installed (Debian package swtpm)", "no swtpm")
    run_dir = _run_dir(directory)
    data, ctrl = os.path.join(run_dir, "tpm.sock"), os.path.join(run_dir, "ctrl.sock")
    log_path = os.path.join(run_dir, "swtpm.log")
    for stale in (data, ctrl):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    with contextlib.suppress(FileNotFoundError):
        os.truncate(log_path, 0)  # its first error line is the one to report
    key_fd = None
    try:
        if known.key_file is not None:
            try:
                key_fd = manufacture.open_key_file(known.key_file)
            except manufacture.VtpmServiceError as e:
                raise VtpmInstanceError(str(e), "vTPM state cannot be decrypted") from None
        cmd = manufacture.swtpm_command(
            tpm2=known.tpm_version == "2.0",
            state_dir=directory,
            data=data,
            ctrl=ctrl,
            log=log_path,
            key_fd=key_fd,
        )
        # Its own session: a signal to the daemon's process group (a terminal's
        # ^C, systemd's KillMode=control-group aside) does not reach it.
        proc = manufacture.start_swtpm(cmd, key_fd, own_session=True)
    finally:
        if key_fd is not None:
            os.close(key_fd)

    def accepts() -> bool:
        try:
            SocketAddress(path=data).connect(0.5).close()
        except PvgrubError:
            return False
        return True

    def refuse() -> VtpmInstanceError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        hung = proc.poll() is None
        if hung:
            proc.kill()
            proc.wait()
        if run_dir != directory:
            shutil.rmtree(run_dir, ignore_errors=True)
        if hung:  # it never exited: too slow, not a state it could not load
            return VtpmInstanceError(
                f"{directory}: swtpm for vTPM {uuid} did not answer within "
                f"{START_TIMEOUT:.0f} s; refusing it",
                "vTPM did not start",
            )
        return VtpmInstanceError(
            f"{directory}: swtpm cannot load vTPM {uuid}'s state "
            f"({manufacture._log_line(log_path, first=True)}): wrong or missing key, or "
            "corrupt state; refusing it",
            "vTPM state cannot be loaded",
        )

    if not poll_until_ready(proc, accepts, START_TIMEOUT):
        raise refuse()
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise refuse()
    record = RunRecord(proc.pid, ticks, _boot_id(), data, ctrl, run_dir, known.tpm_version)
    record.write(directory)
    inst = Instance(uuid, directory, record, proc, reattached=False, boot_lost=boot_lost)
    if not _control_answers(ctrl):
        RunRecord.remove(directory)
        raise refuse()
    return inst
