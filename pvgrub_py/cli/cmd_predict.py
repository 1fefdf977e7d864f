"""``pvgrubctl predict``: the PCRs a measured boot will produce, before it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from pvgrub_py.attest.reference import FORMATS, reference_document
from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.cli.common import check_input, check_output, int_in_range
from pvgrub_py.errors import UsageError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.measure.report import format_measurements, format_pcrs
from pvgrub_py.tpm.algorithms import SHA1, HashAlgorithm, parse_banks

DESCRIPTION = """\
Compute, offline, the values PCR 4 and PCR 5 of a guest's vTPM will hold
after a measured boot, starting from zero PCRs.  Either give the guest
DISK: the entry pvgrub-py would pick (its default, or --entry) is found,
its kernel and initrd streamed out of the image and hashed by the
bootloader's own code, without writing anything; or give the KERNEL,
INITRD and CMDLINE as local files and a string.

The measurements are exactly pv-grub's, in this order:
  1. PCR 4 <- H(kernel), after a whole-file gzip is removed;
  2. PCR 5 <- H(cmdline), without the kernel path and without a NUL;
  3. PCR 5 <- H(initrd) as stored, or H of no bytes without an initrd."""

EPILOG = """\
examples:
  pvgrubctl predict /var/lib/xen/images/guest7.img --json
  pvgrubctl predict guest7.qcow2 --entry "Advanced options for Debian>Debian, with Linux 6.1"
  pvgrubctl predict --kernel /boot/vmlinuz-6.1.0-28-amd64 \\
      --initrd /boot/initrd.img-6.1.0-28-amd64 --cmdline "root=/dev/xvda1 ro"
  pvgrubctl predict --kernel vmlinuz --cmdline "console=hvc0" --bank sha256 --json
  pvgrubctl predict guest7.img --format keylime > guest7.policy
      keylime_tenant ... --tpm_policy "$(cat guest7.policy)"
  pvgrubctl predict guest7.img --bank sha256 --format pcrlock > 600-pvgrub.pcrlock

The --json document is a stable interface:
  {"measurements": [{"pcr": 4, "what": "kernel", "source": PATH,
                     "digests": {"sha1": HEX, "sha256": HEX}}, ...],
   "pcrs": {"sha1": {"4": HEX, "5": HEX}, "sha256": {...}}}

exit status: 0 success, 1 a file could not be read or is malformed,
2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="predict PCR 4 and 5 for a guest disk, or a kernel, initrd and cmdline",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("disk", nargs="?", metavar="DISK",
                   help="the guest disk image (as given to pvgrub-py); excludes --kernel, "
                        "--initrd and --cmdline")  # fmt: skip
    p.add_argument("--entry", metavar="E",
                   help="with DISK: the entry pvgrub-py --entry=E would boot (an index, a "
                        "title, an id or a GRUB submenu>entry path)")  # fmt: skip
    p.add_argument("--args", metavar="A", default="",
                   help="with DISK: what libxl passes as --args (xl's extra=/cmdline=), "
                        "appended to the entry's cmdline")  # fmt: skip
    p.add_argument(
        "--offset",
        type=_offset,
        metavar="N",
        help="with DISK: only the partition starting at byte N (pygrub's --offset)",
    )
    p.add_argument("--config-dialect", choices=[d.value for d in Dialect], default=None,
                   metavar="{grub,petitboot}",
                   help="with DISK: whose reading of grub.cfg and syslinux configs to follow "
                        "where GRUB and petitboot differ, as pvgrub-py --config-dialect "
                        "(default: grub)")  # fmt: skip
    p.add_argument(
        "--runas",
        type=int_in_range(0, (1 << 32) - 2),
        metavar="UID",
        help="with DISK: parse it deprivileged as UID, as pvgrub-py --runas does",
    )
    p.add_argument("--kernel", metavar="FILE",
                   help="instead of a DISK: the guest kernel image (at most 1 GiB, the cap "
                        "pvgrub-py boots with); needs --cmdline")  # fmt: skip
    p.add_argument("--initrd", "--ramdisk", metavar="FILE",
                   help="with --kernel: the initial ramdisk (omit for none; at most 1 GiB); "
                        "--ramdisk is pygrub's name for it")  # fmt: skip
    p.add_argument("--cmdline", metavar="STR",
                   help="with --kernel: the kernel command line, without the kernel "
                        "path")  # fmt: skip
    p.add_argument("--bank", default="sha1,sha256", metavar="ALG[,ALG...]",
                   help="the PCR banks to compute, comma-separated: sha1, sha256, sha384, sha512 "
                        "(default: sha1,sha256)")  # fmt: skip
    p.add_argument("--format", choices=("text", *FORMATS), default=None,
                   help="what to print: text (default) for a person; json, the stable "
                        "document below; keylime, a tpm_policy for keylime_tenant "
                        "--tpm_policy (each PCR's sha1 and sha256 values); pcrlock, "
                        "a systemd-pcrlock .pcrlock file (one record per extend, in "
                        "order)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("--event-log", metavar="OUT",
                   help="also write the TCG event log this boot will produce to OUT "
                        "(atomically)")  # fmt: skip
    p.add_argument("--log-format", choices=("auto", "sha1", "crypto-agile"), default=None,
                   help="with --event-log: its format, sha1 (TPM 1.2, TCG_PCR_EVENT) or "
                        "crypto-agile (TPM 2.0); auto (the default) picks sha1 when sha1 is "
                        "the only bank")  # fmt: skip
    p.set_defaults(func=run, parser=p)


def _offset(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _check_form(args: argparse.Namespace) -> None:
    """DISK or --kernel/--cmdline, never both: argparse cannot say it alone."""
    parser: argparse.ArgumentParser = args.parser
    file_form = [o for o, v in (("--kernel", args.kernel), ("--initrd", args.initrd),
                                ("--cmdline", args.cmdline)) if v is not None]  # fmt: skip
    disk_form = [o for o, v in (("--entry", args.entry), ("--args", args.args or None),
                                ("--offset", args.offset), ("--runas", args.runas),
                                ("--config-dialect", args.config_dialect))
                 if v is not None]  # fmt: skip
    if args.disk is not None:
        if file_form:
            parser.error(f"DISK and {'/'.join(file_form)} are mutually exclusive")
        return
    if disk_form:
        parser.error(f"{'/'.join(disk_form)} {'needs' if len(disk_form) == 1 else 'need'} a DISK")
    missing = [o for o, v in (("--kernel", args.kernel), ("--cmdline", args.cmdline)) if v is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)} (or a DISK)")


def _measure_disk(args: argparse.Namespace, banks: tuple[HashAlgorithm, ...]) -> list[Measurement]:
    from pvgrub_py.bootloader.options import BootloaderOptions, parse_dialect
    from pvgrub_py.bootloader.predict import measure_disk

    opts = BootloaderOptions(disk=args.disk, interactive=False, entry=args.entry,
                             args=args.args, offset=args.offset, runas=args.runas)  # fmt: skip
    if args.config_dialect is not None:
        opts.dialect = parse_dialect(args.config_dialect)
    if opts.runas == 0:
        raise UsageError("--runas=0 would not drop privileges")
    return measure_disk(opts, banks)


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse up front what could block (a FIFO), never end (a device, a huge
    sparse file) or be more than pvgrub-py boots: a prediction of a boot the
    bootloader would refuse is no prediction.  The disk may be a block device
    and has no size cap (its files are capped as they are extracted)."""
    if args.event_log:
        check_output(args.event_log)
    if args.disk is not None:
        if os.path.lexists(args.disk):  # a missing disk: the bootloader's own message
            check_input(args.disk, allow_block_device=True, max_size=None)
        return
    check_input(args.kernel, what="kernel")
    if args.initrd is not None:
        check_input(args.initrd, what="initrd")


def run(args: argparse.Namespace) -> int:
    _check_form(args)
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json is --format json; it cannot go with --format {args.format}")
    fmt = "json" if args.json else (args.format or "text")
    banks = parse_banks(args.bank)
    if args.log_format is not None and not args.event_log:
        raise UsageError("--log-format is the format of --event-log OUT; give --event-log")
    log_format = args.log_format or "auto"
    if log_format == "auto":
        log_format = "sha1" if banks == (SHA1,) else "crypto-agile"
    if log_format == "sha1" and SHA1 not in banks:
        raise UsageError("--log-format sha1 needs the sha1 bank")
    _check_inputs(args)
    if args.disk is not None:
        measurements = _measure_disk(args, banks)
    else:
        measurements = measure_boot_files(args.kernel, args.initrd, args.cmdline, banks)
    values = predict_pcrs(measurements, banks)
    if args.event_log:
        log = log_for_measurements(measurements, banks, tpm2=log_format == "crypto-agile")
        write_atomic(args.event_log, serialise(log))
    if fmt != "text":
        json.dump(reference_document(fmt, measurements, values), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("Measurements, in extend order:")
        print(format_measurements(measurements))
        print("Predicted PCRs (from a zero start):")
        print(format_pcrs(values))
    return 0
