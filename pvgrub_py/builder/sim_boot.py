"""``pvgrubctl boot --sim``: a measured boot of one guest on a simulated host.

The pieces are the real ones, in separate roles as on a Xen host:

* dom0 (this process) runs the bootloader's selection (for ``--disk``) and
  the builder, and measures through a temporary dom0 tpmif frontend
  (``xen:<backend>``, instance ``uuid``);
* a vTPM backend *domain* runs ``pvgrubctl vtpmd`` (one swtpm per uuid) in
  its own process, or, with ``--vtpm swtpm:...``, our `VtpmBackend` serving
  that external swtpm;
* the new guest, once built, connects its own tpmif frontend to the same
  instance and reads PCR 4 and 5 back: the values an attestation would see.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid as uuid_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootloader.from_disk import boot_from_disk
from pvgrub_py.builder.build import BuildRequest, BuildResult, build_domain, sim_image_factory
from pvgrub_py.builder.profile import GuestProfile
from pvgrub_py.daemon_process import stop_process
from pvgrub_py.errors import InputError, PvgrubError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.measure.vtpm import Connect
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.layout import SUN_PATH_MAX, HostLayout
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.swtpm import SwtpmTransport
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.vtpm.backend import VtpmBackend
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.xen.interface import DomainConfig


@dataclass
class SimBootReport:
    result: BuildResult
    entry: str | None
    config: str | None
    vtpm_domid: int
    vtpm_uuid: str
    guest_pcrs: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.result.to_json(),
            "entry": self.entry,
            "config": self.config,
            "vtpm": {"backend_domid": self.vtpm_domid, "uuid": self.vtpm_uuid},
            "guest_pcrs": {
                bank: {str(p): v.hex() for p, v in pcrs.items()}
                for bank, pcrs in self.guest_pcrs.items()
            },
        }


@contextlib.contextmanager
def sim_host(directory: str | None, *, flask: bool = False) -> Iterator[SimHost]:
    """Join the host running in ``directory``, or start a private one (with
    XSM/FLASK if *flask*; a host joined keeps its own setting)."""
    if directory:
        if (Path(directory) / "hyp.sock").exists():
            yield SimHost.connect(directory)
            return
        with _started(directory, flask) as host:
            yield host
        return
    # A private host lives in a private directory (under $TMPDIR, as every
    # temporary file), removed with everything in it once the host stopped.
    private = tempfile.mkdtemp(prefix="pvgrub-sim-")
    if HostLayout.of(private).check_socket_paths() is not None:
        os.rmdir(private)
        raise InputError(
            f"TMPDIR {tempfile.gettempdir()}",
            f"too long for the simulated host's unix sockets ({SUN_PATH_MAX} bytes); "
            "set a shorter TMPDIR or give --sim DIR",
        )
    try:
        with _started(private, flask) as host:
            yield host
    finally:
        shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def _started(directory: str, flask: bool) -> Iterator[SimHost]:
    """`SimHost.start`, with a directory that cannot be one (a file, a path
    under /proc) turned into one line naming it."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise InputError(directory, "is not a directory; a simulated host needs one")
    try:
        host = SimHost.start(directory, flask=flask)
    except OSError as e:
        raise InputError(
            directory, f"cannot hold a simulated host: {describe_open_error(e)}"
        ) from None
    with host:
        yield host


#: How long an external swtpm (--vtpm swtpm:...) may take to accept a connection.
EXTERNAL_PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class BackendDomain:
    domid: int
    pid: int | None  # vtpmd's process, None when an external swtpm is served in-process


@contextlib.contextmanager
def vtpm_backend_domain(
    host: SimHost,
    state_dir: str,
    tpm2: bool,
    external: str | None,
    seclabel: str | None = None,
) -> Iterator[BackendDomain]:
    """A domain that serves vTPMs: vtpmd in its own process, or an external swtpm.

    *seclabel* is its XSM (FLASK) context, xl.cfg's ``seclabel=`` (a host
    with FLASK only)."""
    address = parse_vtpm_uri(external) if external is not None else None
    if address is not None:
        if address.socket is None:
            raise PvgrubError(f"--vtpm {external}: only a swtpm address can back a guest vTPM")
        # Reachable now, or one line now: not a backend whose every command
        # fails and a TPM_RC_FAILURE from deep inside the measurement.
        address.socket.connect(EXTERNAL_PROBE_TIMEOUT).close()
    be = host.create_domain(DomainConfig(name="vtpm-backend"), xsm_label=seclabel)
    with host.dom0.xenstore() as xs:  # the toolstack gives a driver domain its backend dir
        xs.mkdir(f"/local/domain/{be}/backend/vtpm")
        xs.set_perms(f"/local/domain/{be}/backend", [f"n{be}"])
        xs.set_perms(f"/local/domain/{be}/backend/vtpm", [f"n{be}"])
    if address is not None:
        assert address.socket is not None
        transport = SwtpmTransport(address.socket)
        with host.attach(be) as hv, VtpmBackend(hv, lambda link: transport):
            yield BackendDomain(be, None)
        transport.close()
        return
    cmd = [
        sys.executable,
        "-m",
        "pvgrub_py.cli.pvgrubctl",
        "vtpmd",
        "--sim",
        str(host.dir),
        "--domid",
        str(be),
        "--state-dir",
        state_dir,
        # A simulated host's guests are made on the fly and gone with the host.
        "--provision-unknown",
        "--stop-instances-on-exit",
    ] + (["--tpm2"] if tpm2 else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready.startswith("vtpmd: serving"):
            err = proc.stderr.read() if proc.stderr else ""
            raise PvgrubError(f"vtpmd did not start: {err.strip() or ready.strip()}")
        yield BackendDomain(be, proc.pid)
    finally:
        stop_process(proc, 10)


def guest_reads_pcrs(host: SimHost, domid: int) -> dict[str, dict[int, bytes]]:
    with host.attach(domid) as hv, TpmFront(hv, timeout=30).connect() as front:
        client = TpmClient(front)
        return client.read_pcrs([4, 5])


@dataclass
class SimBootArgs:
    sim_dir: str | None
    disk: str | None = None
    entry: str | None = None
    dialect: Dialect = Dialect.GRUB
    extra_args: str = ""
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""
    memory_mb: int = 256
    vtpm: str | None = None
    tpm2: bool = False
    require_vtpm: bool = True
    vtpm_label: str | None = None
    event_log_nv: bool = True
    name: str = ""
    profile: GuestProfile = field(default_factory=GuestProfile)


def boot_in_sim(
    args: SimBootArgs, host: SimHost, backend_domid: int, workdir: Path, connect: Connect
) -> SimBootReport:
    """Build and boot *args* on *host*, measured through *connect* (the program's
    dom0 tpmif attach) into a fresh instance of *backend_domid*'s vTPM."""
    entry_title: str | None = None
    config: str | None = None
    kernel_source: str | None = None
    initrd_source: str | None = None
    kernel, initrd, cmdline = args.kernel, args.initrd, args.cmdline
    if args.disk is not None:
        boot = boot_from_disk(args.disk, args.entry, workdir, args.dialect, args.extra_args)
        kernel, initrd, cmdline = boot.kernel, boot.initrd, boot.cmdline
        entry_title, config = boot.entry, boot.config
        kernel_source, initrd_source = boot.kernel_source, boot.initrd_source
    if kernel is None:
        raise PvgrubError("nothing to boot: give --disk or --kernel")
    instance = str(uuid_mod.uuid4())
    request = BuildRequest(
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        memory_mb=args.memory_mb,
        name=args.name,
        vtpm=f"xen:{backend_domid}",
        vtpm_uuid=instance,
        require_vtpm=args.require_vtpm,
        vtpm_label=args.vtpm_label,
        tpm2=args.tpm2,
        guest_vtpm_backend=backend_domid if args.profile.tpmfront else None,
        console=args.profile.console,
        kernel_source=kernel_source,
        initrd_source=initrd_source,
        event_log_nv=args.event_log_nv,
    )
    result = build_domain(host.dom0, request, sim_image_factory(str(host.dir)), connect)
    report = SimBootReport(result, entry_title, config, backend_domid, instance)
    if args.profile.tpmfront:
        report.guest_pcrs = guest_reads_pcrs(host, result.domid)
    return report
