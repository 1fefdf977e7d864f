"""``pvgrubctl boot``: build and start a measured PV guest (pv-grub's kexec(), from dom0)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.builder.build import BuildResult
from pvgrub_py.builder.profile import load_profile
from pvgrub_py.builder.report import format_boot_report
from pvgrub_py.builder.sim_boot import SimBootArgs, boot_in_sim, sim_host, vtpm_backend_domain
from pvgrub_py.errors import UsageError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.tpm.algorithms import BY_NAME

DESCRIPTION = """\
Build and start a PV guest the way pv-grub's kexec() did, from dom0:
choose the kernel (from --disk, exactly as the pvgrub-py bootloader does, or
--kernel/--initrd/--cmdline), create the domain, measure kernel, cmdline and
initrd into the guest's vTPM (PCR 4, 5, 5) BEFORE the kernel is parsed,
then boot_xen_init, parse_image, mem_init, build_image, boot_image, seed the
console and xenstore grants, introduce the domain to xenstore and unpause.

With --sim the host is simulated (started, or joined when DIR runs one): the
guest gets a vTPM served by a backend domain running vtpmd (one swtpm per
guest), and after boot the guest itself reads PCR 4 and 5 back through its
own tpmif frontend.  Without --sim the real Xen libraries are used (a dom0
with privcmd): --vtpm xen:BACKEND --vtpm-uuid UUID name the guest's vTPM
instance, served by `pvgrubctl vtpmd` in BACKEND."""

#: What Xen's example FLASK policy names a vTPM domain (tools/flask/policy, vtpm_t).
BACKEND_SECLABEL = "system_u:system_r:vtpm_t"

EPILOG = """\
examples:
  pvgrubctl boot --sim --disk guest.img
  pvgrubctl boot --sim --flask --vtpm-label system_u:system_r:vtpm_t --disk guest.img
  pvgrubctl boot --sim --kernel vmlinuz --initrd initrd.img --cmdline "root=/dev/xvda1 ro" --tpm2
  pvgrubctl boot --sim /tmp/host --disk guest.img --json --event-log boot.log

exit status: 0 booted, 1 the build or the measurement failed (nothing is left
behind: the domain is destroyed and its nodes removed), 2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "boot",
        help="build and start a measured PV guest",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sim",
        nargs="?",
        const="",
        metavar="DIR",
        help="use the simulated host in DIR (started if not running; a private "
        "one when DIR is omitted)",
    )
    src = p.add_argument_group("what to boot")
    src.add_argument("--disk", metavar="DISK", help="a guest disk image: choose as pvgrub-py does")
    src.add_argument("--entry", metavar="E", help="with --disk: the menu entry (index, title, id)")
    src.add_argument(
        "--config-dialect",
        choices=[d.value for d in Dialect],
        default="grub",
        help="with --disk: read grub.cfg/syslinux configs as GRUB (default) or petitboot "
        "does where they differ, as pvgrub-py --config-dialect",
    )
    src.add_argument("--kernel", metavar="FILE")
    src.add_argument("--initrd", metavar="FILE")
    src.add_argument("--cmdline", metavar="STR", default=None)
    p.add_argument("--memory", type=int, default=256, metavar="MB", help="guest memory (256)")
    p.add_argument("--name", default="", help="the guest's name")
    vt = p.add_argument_group("measurement")
    vt.add_argument(
        "--vtpm",
        metavar="URI",
        help="an external swtpm (swtpm:tcp:HOST:PORT, swtpm:unix:PATH) to serve as "
        "the guest's vTPM behind a simulated backend domain; default: vtpmd",
    )
    vt.add_argument(
        "--vtpm-uuid",
        metavar="UUID",
        help="on a real host: the guest's vTPM instance behind --vtpm xen:BACKEND; the guest "
        "gets a vtpm device for it",
    )
    vt.add_argument("--tpm2", action="store_true", help="a TPM 2.0 vTPM (default TPM 1.2)")
    vt.add_argument(
        "--require-vtpm",
        action="store_true",
        help="fail closed if the vTPM cannot be used (always on with --sim)",
    )
    vt.add_argument(
        "--vtpm-label",
        metavar="LABEL",
        help="fail closed unless the vTPM backend's XSM (FLASK) label is LABEL, or ends "
        "with SUFFIX for *SUFFIX (as pvgrub-py; needs a host with FLASK)",
    )
    vt.add_argument("--event-log", metavar="OUT", help="write the TCG event log of this boot")
    vt.add_argument(
        "--flask",
        action="store_true",
        help="with --sim: the private host runs XSM/FLASK (as Xen booted with flask=enforcing)"
        " and the vTPM backend domain gets --backend-seclabel; a host joined in DIR keeps "
        "its own setting",
    )
    vt.add_argument(
        "--backend-seclabel",
        metavar="CONTEXT",
        default=BACKEND_SECLABEL,
        help=f"with --sim --flask: the vTPM backend domain's context (xl.cfg seclabel=; "
        f"default {BACKEND_SECLABEL})",
    )
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="with --sim: the guest's frontends, minios.cfg style (default stubdom/sim-guest.cfg)",
    )
    p.add_argument("--json", action="store_true", help="print the build report as JSON")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if (args.disk is None) == (args.kernel is None):
        raise UsageError("give either --disk or --kernel")
    if args.kernel is not None and args.cmdline is None:
        raise UsageError("--kernel needs --cmdline")
    if args.disk is not None and (args.initrd or args.cmdline is not None):
        raise UsageError("--initrd/--cmdline come from the disk's boot config with --disk")
    if args.sim is None and args.vtpm is not None and not args.vtpm.startswith("xen:"):
        raise UsageError("on a real host --vtpm is the guest's vTPM backend: xen:BACKEND")
    if args.sim is None and args.flask:
        raise UsageError("--flask is for the simulated host (--sim); a real host boots Xen with it")
    if args.memory < 16:
        raise UsageError("--memory must be at least 16 MB")


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.sim is None:
        return run_on_xen(args)
    sim_args = SimBootArgs(
        sim_dir=args.sim or None,
        disk=args.disk,
        entry=args.entry,
        dialect=Dialect(args.config_dialect),
        kernel=args.kernel,
        initrd=args.initrd,
        cmdline=args.cmdline or "",
        memory_mb=args.memory,
        vtpm=args.vtpm,
        tpm2=args.tpm2,
        require_vtpm=True,
        vtpm_label=args.vtpm_label,
        name=args.name,
        profile=load_profile(Path(args.profile)) if args.profile else load_profile(),
    )
    with (
        tempfile.TemporaryDirectory(prefix="pvgrub-boot-") as work,
        sim_host(sim_args.sim_dir, flask=args.flask) as host,
    ):
        state = str(Path(work) / "vtpm-state")
        seclabel = args.backend_seclabel if args.flask else None
        with vtpm_backend_domain(host, state, args.tpm2, args.vtpm, seclabel) as backend:
            report = boot_in_sim(sim_args, host, backend.domid, Path(work))
        return _report(args, report.result, report.to_json())


def run_on_xen(args: argparse.Namespace) -> int:
    """The real host: our libxenguest calls, measured through a dom0 tpmif
    attach to the guest's vTPM instance (``--vtpm xen:BE --vtpm-uuid U``),
    which the guest then gets as its own vtpm device."""
    from pvgrub_py.builder.build import BuildRequest, build_domain, libxc_image_factory
    from pvgrub_py.builder.sim_boot import files_from_disk
    from pvgrub_py.tpm.uri import parse_vtpm_uri
    from pvgrub_py.xen.connect import open_hypervisor

    backend = parse_vtpm_uri(args.vtpm).backend_domid if args.vtpm else None
    with tempfile.TemporaryDirectory(prefix="pvgrub-boot-") as work:
        kernel, initrd, cmdline = args.kernel, args.initrd, args.cmdline or ""
        kernel_source = initrd_source = None
        if args.disk is not None:
            choice, kpath, ipath = files_from_disk(
                args.disk, args.entry, Path(work), Dialect(args.config_dialect)
            )
            kernel, initrd, cmdline = str(kpath), str(ipath) if ipath else None, choice.args
            kernel_source = choice.kernel.path
            initrd_source = " ".join(i.path for i in choice.initrds) or None
        request = BuildRequest(
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            memory_mb=args.memory,
            name=args.name,
            vtpm=args.vtpm,
            vtpm_uuid=args.vtpm_uuid,
            require_vtpm=args.require_vtpm,
            vtpm_label=args.vtpm_label,
            tpm2=args.tpm2,
            guest_vtpm_backend=backend if args.vtpm_uuid else None,
            kernel_source=kernel_source,
            initrd_source=initrd_source,
        )
        hv = open_hypervisor(None)
        try:
            result = build_domain(hv, request, libxc_image_factory())
        finally:
            hv.close()
    return _report(args, result, result.to_json())


def _report(args: argparse.Namespace, result: BuildResult, doc: dict[str, object]) -> int:
    """The event log of the boot, then the report, text or JSON."""
    if args.event_log:
        banks = tuple(BY_NAME[b] for b in result.measurements[0].digests)
        log = log_for_measurements(result.measurements, banks, tpm2=args.tpm2)
        write_atomic(args.event_log, serialise(log))
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_boot_report(doc))
    return 0
