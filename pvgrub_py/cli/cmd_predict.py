"""``pvgrubctl predict``: the PCRs a measured boot will produce, before it runs."""

from __future__ import annotations

import argparse
import json
import sys

from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import predict_pcrs, prediction_document
from pvgrub_py.measure.report import format_measurements, format_pcrs
from pvgrub_py.tpm.algorithms import SHA1, parse_banks

DESCRIPTION = """\
Compute, offline, the values PCR 4 and PCR 5 of a guest's vTPM will hold
after a measured boot of KERNEL, INITRD and CMDLINE, starting from zero PCRs.

The measurements are exactly pv-grub's, in this order:
  1. PCR 4 <- H(kernel), after a whole-file gzip is removed;
  2. PCR 5 <- H(cmdline), without the kernel path and without a NUL;
  3. PCR 5 <- H(initrd) as stored, or H of no bytes without an initrd."""

EPILOG = """\
examples:
  pvgrubctl predict --kernel /boot/vmlinuz-6.1.0-28-amd64 \\
      --initrd /boot/initrd.img-6.1.0-28-amd64 --cmdline "root=/dev/xvda1 ro"
  pvgrubctl predict --kernel vmlinuz --cmdline "console=hvc0" --bank sha256 --json

The --json document is a stable interface:
  {"measurements": [{"pcr": 4, "what": "kernel", "source": PATH,
                     "digests": {"sha1": HEX, "sha256": HEX}}, ...],
   "pcrs": {"sha1": {"4": HEX, "5": HEX}, "sha256": {...}}}

exit status: 0 success, 1 a file could not be read or is malformed,
2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="predict PCR 4 and 5 for a kernel, initrd and cmdline",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kernel", required=True, metavar="FILE", help="the guest kernel image")
    p.add_argument("--initrd", metavar="FILE", help="the initial ramdisk (omit for none)")
    p.add_argument("--cmdline", required=True, metavar="STR",
                   help="the kernel command line, without the kernel path")  # fmt: skip
    p.add_argument("--bank", default="sha1,sha256", metavar="ALG[,ALG...]",
                   help="PCR banks to compute (default: sha1,sha256)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the stable JSON document")
    p.add_argument("--event-log", metavar="OUT",
                   help="also write the TCG event log this boot will produce")  # fmt: skip
    p.add_argument("--log-format", choices=("auto", "sha1", "crypto-agile"), default="auto",
                   help="event log format: sha1 (TPM 1.2, TCG_PCR_EVENT) or crypto-agile "
                        "(TPM 2.0); auto picks sha1 when sha1 is the only bank")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    banks = parse_banks(args.bank)
    log_format = args.log_format
    if log_format == "auto":
        log_format = "sha1" if banks == (SHA1,) else "crypto-agile"
    if log_format == "sha1" and SHA1 not in banks:
        from pvgrub_py.errors import UsageError

        raise UsageError("--log-format sha1 needs the sha1 bank")
    measurements = measure_boot_files(args.kernel, args.initrd, args.cmdline, banks)
    values = predict_pcrs(measurements, banks)
    if args.event_log:
        log = log_for_measurements(measurements, banks, tpm2=log_format == "crypto-agile")
        write_atomic(args.event_log, serialise(log))
    if args.json:
        json.dump(prediction_document(measurements, values), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("Measurements, in extend order:")
        print(format_measurements(measurements))
        print("Predicted PCRs (from a zero start):")
        print(format_pcrs(values))
    return 0
