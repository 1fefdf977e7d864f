"""``pvgrubctl boot``: build and start a measured PV guest (pv-grub's kexec(), from dom0)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootloader.from_disk import boot_from_disk
from pvgrub_py.builder.build import BuildRequest, BuildResult, build_domain, libxc_image_factory
from pvgrub_py.builder.profile import load_profile
from pvgrub_py.builder.report import format_boot_report
from pvgrub_py.builder.sim_boot import SimBootArgs, boot_in_sim, sim_host, vtpm_backend_domain
from pvgrub_py.cli.common import check_input, check_output, int_in_range, show_warnings
from pvgrub_py.cli.connect import VtpmConnector, open_hypervisor
from pvgrub_py.errors import UsageError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.tpm.algorithms import BY_NAME
from pvgrub_py.tpm.uri import parse_vtpm_uri

DESCRIPTION = """\
Build and start a PV guest the way pv-grub's kexec() did, from dom0:
choose the kernel (from DISK, exactly as the pvgrub-py bootloader does, or
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

#: libxl refuses less than this for a PV guest's maxmem in practice; our builder too.
MIN_MEMORY_MB = 16
#: 1 TiB: far above any guest this builds, and a bound on what a typo asks the host for.
MAX_MEMORY_MB = 1 << 20

EPILOG = """\
examples:
  pvgrubctl boot --sim guest.img
  pvgrubctl boot --sim --flask --vtpm-label system_u:system_r:vtpm_t guest.img
  pvgrubctl boot --sim --kernel vmlinuz --initrd initrd.img --cmdline "root=/dev/xvda1 ro" --tpm2
  pvgrubctl boot --sim /tmp/host guest.img --json --event-log boot.log
  pvgrubctl boot --vtpm xen:1 --vtpm-uuid 7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d guest.img

--sim takes an optional DIR: to boot a DISK on a private host, put DISK
first or write --sim= (pvgrubctl boot guest.img --sim).  --disk DISK,
--ramdisk and pygrub's --entry/--args are accepted too.

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
        help="boot on the simulated host in DIR: joined if one runs there, else started "
        "there and stopped after the boot; without DIR, a private host in a temporary "
        "directory (under $TMPDIR) that is removed afterwards",
    )
    src = p.add_argument_group("what to boot")
    src.add_argument("disk", nargs="?", metavar="DISK",
                     help="a guest disk image (file or block device): boot the entry pvgrub-py "
                          "would choose; excludes --kernel")  # fmt: skip
    src.add_argument(
        "--disk",
        dest="disk_option",
        metavar="DISK",
        help="the same as DISK, for scripts written before DISK was positional",
    )
    src.add_argument("--entry", metavar="E",
                     help="with DISK: the entry to boot, as pvgrub-py --entry (an index, a "
                          "title, an id or a GRUB submenu>entry path; default: the config's)"
                     )  # fmt: skip
    src.add_argument("--args", metavar="A", default="",
                     help="with DISK: appended to the entry's cmdline, as pvgrub-py --args "
                          "(xl's extra=)")  # fmt: skip
    src.add_argument(
        "--config-dialect",
        choices=[d.value for d in Dialect],
        default=None,
        metavar="{grub,petitboot}",
        help="with DISK: read grub.cfg/syslinux configs as GRUB (default) or petitboot "
        "does where they differ, as pvgrub-py --config-dialect",
    )
    src.add_argument("--kernel", metavar="FILE",
                     help="the guest kernel (bzImage, ELF, or either gzipped; at most 1 GiB) "
                          "instead of a DISK; needs --cmdline")  # fmt: skip
    src.add_argument("--initrd", "--ramdisk", metavar="FILE",
                     help="with --kernel: the initial ramdisk (at most 1 GiB; default none); "
                          "--ramdisk is pygrub's name for it")  # fmt: skip
    src.add_argument(
        "--cmdline",
        metavar="STR",
        default=None,
        help="with --kernel: the kernel command line, without the kernel path",
    )
    p.add_argument("--memory", type=int_in_range(MIN_MEMORY_MB, MAX_MEMORY_MB), default=256,
                   metavar="MB", help="the guest's memory in MiB (default 256)")  # fmt: skip
    p.add_argument("--name", default="", help="the guest's name in xenstore (default: none)")
    vt = p.add_argument_group("measurement")
    vt.add_argument(
        "--vtpm",
        metavar="URI",
        help="with --sim: an external swtpm (swtpm:tcp:HOST:PORT, swtpm:unix:PATH) served as "
        "the guest's vTPM by a simulated backend domain (default: vtpmd and its own swtpm); "
        "on a real host: xen:BACKEND, the domain running pvgrubctl vtpmd",
    )
    vt.add_argument(
        "--vtpm-uuid",
        metavar="UUID",
        help="on a real host: the guest's vTPM instance behind --vtpm xen:BACKEND; the guest "
        "gets a vtpm device for it (the simulator picks a fresh one)",
    )
    vt.add_argument("--tpm2", action="store_true", help="a TPM 2.0 vTPM (default TPM 1.2)")
    vt.add_argument(
        "--require-vtpm",
        action="store_true",
        help="on a real host: fail closed if the vTPM cannot be used (always on with --sim)",
    )
    vt.add_argument(
        "--vtpm-label",
        metavar="LABEL",
        help="fail closed unless the vTPM backend's XSM (FLASK) label is LABEL, or ends "
        "with SUFFIX for *SUFFIX (as pvgrub-py; needs a host with FLASK)",
    )
    vt.add_argument(
        "--event-log",
        metavar="OUT",
        help="write the TCG event log of this boot to OUT (atomically)",
    )
    vt.add_argument(
        "--no-event-log-nv",
        dest="event_log_nv",
        action="store_false",
        help="do not hand a TPM 2.0 guest its event log in the vTPM's NV indices "
        "0x0140F000.. (by default they get the crypto-agile log, --event-log's bytes, "
        "and the platform hierarchy is then disabled; pvgrubctl eventlog nv-read reads it)",
    )
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
        default=None,
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
    if args.disk_option is not None:
        if args.disk is not None and args.disk != args.disk_option:
            raise UsageError(f"two disks: {args.disk} and --disk {args.disk_option}")
        args.disk = args.disk_option
    if (args.disk is None) == (args.kernel is None):
        raise UsageError("give either a DISK or --kernel")
    if args.kernel is not None and args.cmdline is None:
        raise UsageError("--kernel needs --cmdline")
    if args.disk is not None and (args.initrd or args.cmdline is not None):
        raise UsageError("--initrd/--cmdline come from the disk's boot config with a DISK")
    disk_only = [
        o
        for o, v in (
            ("--entry", args.entry),
            ("--args", args.args or None),
            ("--config-dialect", args.config_dialect),
        )
        if v is not None
    ]
    if args.kernel is not None and disk_only:
        raise UsageError(f"{'/'.join(disk_only)} choose from a DISK; with --kernel there is none")
    if args.sim is None:
        if args.vtpm is not None and not args.vtpm.startswith("xen:"):
            raise UsageError("on a real host --vtpm is the guest's vTPM backend: xen:BACKEND")
        sim_only = [
            o
            for o, v in (
                ("--flask", args.flask or None),
                ("--backend-seclabel", args.backend_seclabel),
                ("--profile", args.profile),
            )
            if v is not None
        ]
        if sim_only:
            raise UsageError(
                f"{'/'.join(sim_only)} is for the simulated host (--sim)"
                + ("; a real host boots Xen with it" if args.flask else "")
            )
    else:
        if args.vtpm_uuid is not None:
            raise UsageError(
                "--vtpm-uuid names a real host's vTPM instance; with --sim each "
                "boot gets a fresh one"
            )
        if args.backend_seclabel is not None and not args.flask:
            raise UsageError("--backend-seclabel is the label on a host with --flask")
    _check_inputs(args)


def _check_inputs(args: argparse.Namespace) -> None:
    """Every file named, refused before any host starts if it could block or
    never end (a FIFO, a device), or is larger than the bootloader boots."""
    if args.disk is not None:
        check_input(args.disk, allow_block_device=True, max_size=None)
    if args.kernel is not None:
        check_input(args.kernel, what="kernel")
    if args.initrd is not None:
        check_input(args.initrd, what="initrd")
    if args.profile is not None:
        check_input(args.profile, what="profile", max_size=MAX_PROFILE_BYTES)
    if args.event_log is not None:  # an event log that cannot be written fails the boot
        check_output(args.event_log)


#: A minios.cfg-style profile is a few lines.
MAX_PROFILE_BYTES = 1 << 20


def _sim_dir_or_disk(args: argparse.Namespace) -> None:
    """``boot --sim guest.img``: --sim takes an optional DIR, so argparse hands
    it the disk.  A DIR that is an existing file or block device, with no DISK
    given, is the DISK, booted on a private host."""
    if args.sim and args.disk is None and args.disk_option is None and args.kernel is None:
        path = Path(args.sim)
        if path.exists() and not path.is_dir():
            args.disk, args.sim = args.sim, ""


def run(args: argparse.Namespace) -> int:
    _sim_dir_or_disk(args)
    _check(args)
    show_warnings("pvgrub-py")  # the measurement's, worded as the bootloader's
    if args.sim is None:
        return run_on_xen(args)
    dialect = Dialect(args.config_dialect or Dialect.GRUB.value)
    sim_args = SimBootArgs(
        sim_dir=args.sim or None,
        disk=args.disk,
        entry=args.entry,
        dialect=dialect,
        extra_args=args.args,
        kernel=args.kernel,
        initrd=args.initrd,
        cmdline=args.cmdline or "",
        memory_mb=args.memory,
        vtpm=args.vtpm,
        tpm2=args.tpm2,
        require_vtpm=True,
        vtpm_label=args.vtpm_label,
        event_log_nv=args.event_log_nv,
        name=args.name,
        profile=load_profile(Path(args.profile)) if args.profile else load_profile(),
    )
    with (
        tempfile.TemporaryDirectory(prefix="pvgrub-boot-") as work,
        sim_host(sim_args.sim_dir, flask=args.flask) as host,
    ):
        state = str(Path(work) / "vtpm-state")
        seclabel = (args.backend_seclabel or BACKEND_SECLABEL) if args.flask else None
        with vtpm_backend_domain(host, state, args.tpm2, args.vtpm, seclabel) as backend:
            report = boot_in_sim(sim_args, host, backend.domid, Path(work),
                                 VtpmConnector(host.dom0))  # fmt: skip
        return _report(args, report.result, report.to_json())


def run_on_xen(args: argparse.Namespace) -> int:
    """The real host: our libxenguest calls, measured through a dom0 tpmif
    attach to the guest's vTPM instance (``--vtpm xen:BE --vtpm-uuid U``),
    which the guest then gets as its own vtpm device."""
    backend = parse_vtpm_uri(args.vtpm).backend_domid if args.vtpm else None
    with tempfile.TemporaryDirectory(prefix="pvgrub-boot-") as work:
        kernel, initrd, cmdline = args.kernel, args.initrd, args.cmdline or ""
        kernel_source = initrd_source = None
        if args.disk is not None:
            dialect = Dialect(args.config_dialect or Dialect.GRUB.value)
            boot = boot_from_disk(args.disk, args.entry, Path(work), dialect, args.args)
            kernel, initrd, cmdline = boot.kernel, boot.initrd, boot.cmdline
            kernel_source, initrd_source = boot.kernel_source, boot.initrd_source
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
            event_log_nv=args.event_log_nv,
        )
        hv = open_hypervisor(None)
        try:
            result = build_domain(hv, request, libxc_image_factory(), VtpmConnector(hv))
        finally:
            hv.close()
    return _report(args, result, result.to_json())


def _event_log_bytes(args: argparse.Namespace, result: BuildResult) -> bytes:
    """The log the builder made (and delivered to a TPM 2.0 guest), else one of
    the measurements in the format --tpm2 names."""
    if result.event_log is not None:
        return result.event_log
    banks = tuple(BY_NAME[b] for b in result.measurements[0].digests)
    return serialise(log_for_measurements(result.measurements, banks, tpm2=args.tpm2))


def _report(args: argparse.Namespace, result: BuildResult, doc: dict[str, object]) -> int:
    """The event log of a measured boot, then the report, text or JSON.

    An unmeasured boot (no --vtpm, or one unreachable without --require-vtpm)
    gets no event log: a log claims that its extends reached a TPM."""
    if args.event_log and not result.measured:
        print(f"pvgrubctl boot: warning: nothing was measured, so no event log was written "
              f"to {args.event_log}", file=sys.stderr)
    elif args.event_log:
        write_atomic(args.event_log, _event_log_bytes(args, result))
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_boot_report(doc))
    return 0
