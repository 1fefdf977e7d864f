"""The builder: pv-grub's ``kexec()`` sequence, measured, over the hypervisor interface.

Order (Xen stubdom/grub/kexec.c `kexec()`; tools/libs/guest/xg_dom_compat_linux.c
`xc_linux_build` and tools/libs/light/libxl_dom.c `libxl__build_pv`), each step a
call on `DomainImageSteps`:

1. create the domain (max vcpus and memory), allocate the image, give it
   the kernel and module blobs, allocate the console and xenstore ports;
2. **measure**: PCR 4 <- kernel, PCR 5 <- cmdline, PCR 5 <- initrd, before
   anything parses the kernel (an exploited parser still leaves its input
   in the PCRs), with pv-grub's policy (fail closed on request);
3. ``boot_xen_init``; 4. ``parse_image``, requiring ``xen-3.0-x86_64``;
5. ``mem_init``, ``boot_mem_init``, ``build_image``, ``boot_image``;
6. seed the console and xenstore grant entries;
7. give the domain its xenstore home (libxl's nodes), introduce it to
   xenstored with its store frame and port, write its console and vtpm
   device nodes, then unpause.

Any failure destroys the half-built domain and removes every node and file
it had: a failed build leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pvgrub_py.builder.image import DomainImageSteps, ImageLayout
from pvgrub_py.errors import InputError, PvgrubError, UsageError
from pvgrub_py.eventlog.builder import log_for_measurements
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.measure.boot_files import measure_cmdline
from pvgrub_py.measure.digest import MultiHasher
from pvgrub_py.measure.kernel import KernelMeasurer
from pvgrub_py.measure.plan import INITRD_PCR, KERNEL_PCR, Measurement
from pvgrub_py.measure.policy import MeasurePolicy
from pvgrub_py.measure.sources import open_regular
from pvgrub_py.measure.vtpm import Connect, VtpmSession, measure_into, open_vtpm
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
from pvgrub_py.xen.interface import DomainConfig, Hypervisor

PV64 = "xen-3.0-x86_64"


@dataclass(frozen=True)
class BuildRequest:
    kernel: str
    cmdline: str
    initrd: str | None = None
    memory_mb: int = 256
    vcpus: int = 1
    name: str = ""
    vtpm: str | None = None  # where the builder measures (a vTPM address)
    vtpm_uuid: str | None = None
    require_vtpm: bool = False
    vtpm_label: str | None = None
    tpm2: bool = False
    guest_vtpm_backend: int | None = None  # give the guest a vtpm device on this domain
    #: how the measurements name the files (the path on the guest disk when
    #: the bootloader chose them); default: the local paths
    kernel_source: str | None = None
    initrd_source: str | None = None
    console: bool = True  # write the console nodes xenconsoled reads
    #: hand a TPM 2.0 guest its event log in the vTPM's NV (`measure_into`)
    event_log_nv: bool = True

    def measure_policy(self) -> MeasurePolicy:
        """The bootloader's measurement policy, from the builder's request."""
        return MeasurePolicy(
            vtpm=self.vtpm, uuid=self.vtpm_uuid, required=self.require_vtpm,
            label=self.vtpm_label, tpm2=self.tpm2,
        )  # fmt: skip


@dataclass
class BuildResult:
    domid: int
    name: str
    backend: str
    guest_type: str
    memory_mb: int
    vcpus: int
    console_port: int
    xenstore_port: int
    console_frame: int
    xenstore_frame: int
    measurements: list[Measurement]
    measured: bool
    layout: ImageLayout | None = None
    seeded_grants: list[dict[str, int]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: the serialised event log of a measured boot (what --event-log writes
    #: and, TPM 2.0, what the guest finds in its vTPM's NV); None if unmeasured
    event_log: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "domid": self.domid,
            "name": self.name,
            "backend": self.backend,
            "guest_type": self.guest_type,
            "memory_mb": self.memory_mb,
            "vcpus": self.vcpus,
            "console": {"port": self.console_port, "frame": self.console_frame},
            "xenstore": {"port": self.xenstore_port, "frame": self.xenstore_frame},
            "measured": self.measured,
            "measurements": [
                {
                    "pcr": m.pcr,
                    "what": m.what,
                    "source": m.source,
                    "digests": {b: d.hex() for b, d in m.digests.items()},
                }
                for m in self.measurements
            ],
            "layout": None if self.layout is None else self.layout.to_json(),
            "seeded_grants": self.seeded_grants,
            "timings_ms": self.timings_ms,
        }


ImageFactory = Callable[[Hypervisor, int, str, str], DomainImageSteps]


def _read_whole(role: str, path: str) -> bytes:
    """A kernel or initrd, whole: `open_regular` refuses one over `MAX_BOOT_FILE`."""
    with open_regular(role, path) as (f, size):
        # Read what fstat announced (plus one byte to notice growth): asking
        # for the cap itself makes Python allocate 1 GiB up front, which a
        # small dom0 cannot (seen on nested Xen: MemoryError).
        data = f.read(size + 1)
    if len(data) > size:
        raise InputError(f"{role} {path}", "grew while being read")
    return data


def _measure(
    request: BuildRequest, kernel: bytes, initrd: bytes, session: VtpmSession
) -> list[Measurement]:
    banks = session.banks
    km = KernelMeasurer(
        banks, f"kernel {request.kernel}", trailer=kernel[-4:] if len(kernel) >= 6 else None
    )
    km.update(kernel)
    kd, klen = km.finish()
    ih = MultiHasher(banks)
    ih.update(initrd)
    initrd_name = (request.initrd_source or request.initrd) if request.initrd else None
    return [
        Measurement(KERNEL_PCR, "kernel", request.kernel_source or request.kernel, kd, klen),
        measure_cmdline(request.cmdline, banks),
        Measurement(INITRD_PCR, "initrd", initrd_name, ih.digests(), ih.length),
    ]


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self._t) * 1000, 2)
        self._t = now


def build_domain(
    hv: Hypervisor, request: BuildRequest, image_factory: ImageFactory, connect: Connect
) -> BuildResult:
    """Build and start *request* on *hv*, measured into the vTPM *connect*
    reaches (the program wires it: usually a tpmif attach on *hv* itself)."""
    timer = _Timer()
    kernel = _read_whole("kernel", request.kernel)
    initrd = _read_whole("initrd", request.initrd) if request.initrd else b""
    measure_cmdline(request.cmdline, ())  # refuse a NUL before creating anything
    timer.lap("read")
    control = hv.domains()
    config = DomainConfig(max_vcpus=request.vcpus, max_memkb=request.memory_mb * 1024,
                          name=request.name)  # fmt: skip
    domid = control.create(config)
    image: DomainImageSteps | None = None
    session: VtpmSession | None = None
    built = False
    try:
        timer.lap("create")
        image = image_factory(hv, domid, request.cmdline, f"kernel {request.kernel}")
        image.kernel_mem(kernel)
        image.module_mem(initrd)
        console_port = control.alloc_unbound_in(domid, 0)
        xenstore_port = control.alloc_unbound_in(domid, 0)
        image.set_ports(console_port, xenstore_port)
        timer.lap("allocate")
        session = open_vtpm(request.measure_policy(), connect)
        measurements = _measure(request, kernel, initrd, session)
        log = None
        if session.client is not None:
            log = serialise(log_for_measurements(measurements, session.banks, tpm2=session.tpm2))
        nv_log = log if request.event_log_nv else None
        measured = measure_into(session, measurements, event_log=nv_log)
        timer.lap("measure")
        image.boot_xen_init(domid)
        guest_type = image.parse_image()
        if guest_type != PV64:
            raise InputError(f"kernel {request.kernel}", f"guest type {guest_type!r}, not {PV64}")
        timer.lap("parse")
        image.mem_init(request.memory_mb)
        image.boot_mem_init()
        image.build_image()
        image.boot_image()
        image.gnttab_seed(0, 0)
        frames = image.magic_frames()
        timer.lap("build")
        copy_ms = image.copy_ms
        if copy_ms:
            timer.ms["build"] = round(timer.ms["build"] - copy_ms, 2)
            timer.ms["copy"] = round(copy_ms, 2)
        _introduce(hv, domid, request, frames.xenstore_mfn, xenstore_port,
                   frames.console_mfn, console_port)  # fmt: skip
        control.unpause(domid)
        timer.lap("start")
        built = True
        return BuildResult(
            domid=domid, name=request.name or f"guest{domid}", backend=image.backend,
            guest_type=guest_type, memory_mb=request.memory_mb, vcpus=request.vcpus,
            console_port=console_port, xenstore_port=xenstore_port,
            console_frame=frames.console_mfn, xenstore_frame=frames.xenstore_mfn,
            measurements=measurements, measured=measured, layout=image.layout(),
            seeded_grants=list(image.seeded), timings_ms=timer.ms,
            event_log=log if measured else None,
        )  # fmt: skip
    finally:
        if session is not None:
            session.close()
        if not built:
            _undo(hv, domid, request.guest_vtpm_backend)
        if image is not None:
            image.release(destroyed=not built)


def _introduce(
    hv: Hypervisor, domid: int, request: BuildRequest,
    store_mfn: int, store_port: int, console_mfn: int, console_port: int,
) -> None:  # fmt: skip
    """libxl's xenstore part of a domain: home, name, console, devices, introduce."""
    home = f"/local/domain/{domid}"
    with hv.xenstore() as xs:
        xs.mkdir(home)
        xs.set_perms(home, ["n0", f"r{domid}"])
        xs.write(f"{home}/domid", str(domid).encode())
        xs.write(f"{home}/name", (request.name or f"guest{domid}").encode())
        for sub in ("device", "control", "data"):
            xs.mkdir(f"{home}/{sub}")
            xs.set_perms(f"{home}/{sub}", [f"n{domid}"])
        if request.console:
            xs.mkdir(f"{home}/console")
            xs.write(f"{home}/console/ring-ref", str(console_mfn).encode())
            xs.write(f"{home}/console/port", str(console_port).encode())
            xs.write(f"{home}/console/type", b"xenconsoled")
        xs.write(f"{home}/store/ring-ref", str(store_mfn).encode())
        xs.write(f"{home}/store/port", str(store_port).encode())
        if request.guest_vtpm_backend is not None:
            add_vtpm_device(xs, VtpmDevice(domid, request.guest_vtpm_backend, 0,
                                           request.vtpm_uuid or ""))  # fmt: skip
        xs.introduce_domain(domid, store_mfn, store_port)


def _undo(hv: Hypervisor, domid: int, vtpm_backend: int | None) -> None:
    """Destroy the half-built domain and its xenstore traces, whatever failed."""
    with contextlib.suppress(PvgrubError):
        hv.domains().destroy(domid)
    with contextlib.suppress(PvgrubError), hv.xenstore() as xs:
        xs.rm(f"/local/domain/{domid}")
        if vtpm_backend is not None:
            xs.rm(f"/local/domain/{vtpm_backend}/backend/vtpm/{domid}")


def sim_image_factory(host_dir: str) -> ImageFactory:
    from pvgrub_py.builder.sim_image import SimDomainImage

    def make(hv: Hypervisor, domid: int, cmdline: str, label: str) -> DomainImageSteps:
        return SimDomainImage(host_dir, domid, cmdline, label)

    return make


def libxc_image_factory() -> ImageFactory:
    from pvgrub_py.builder.libxc_image import LibxcDomainImage
    from pvgrub_py.xen.xenctrl import XenCtrl

    def make(hv: Hypervisor, domid: int, cmdline: str, label: str) -> DomainImageSteps:
        domains = hv.domains()
        if not isinstance(domains, XenCtrl):
            raise UsageError("libxc_image_factory: needs the libxc hypervisor, not the simulator's")
        return LibxcDomainImage(domains, domid, cmdline)

    return make
