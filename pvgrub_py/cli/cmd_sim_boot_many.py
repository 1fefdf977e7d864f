"""``pvgrubctl sim boot-many N``: scale test of measured boots on one simulated host."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pvgrub_py.builder.scale import boot_many
from pvgrub_py.builder.sim_boot import sim_host, vtpm_backend_domain
from pvgrub_py.cli.common import check_input, int_in_range
from pvgrub_py.cli.connect import VtpmConnector
from pvgrub_py.sample_guest import CMDLINE, find_kernel, make_initrd

DESCRIPTION = """\
Boot N PV guests on one simulated host, each with its own vTPM instance (its
own swtpm behind a vtpmd backend domain), measured before the kernel is
parsed; every guest then reads PCR 4 and 5 back through its own tpmif
frontend and they are compared with the offline prediction.  Prints guests
per second, the builder's own overhead per guest (everything but reading,
hashing/extending and parsing the kernel) and peak memory per guest."""


#: Each guest has its own swtpm (~15 MiB): a bound on what a typo asks of the host.
MAX_GUESTS = 4096
MAX_PARALLEL = 256

EPILOG = """\
examples:
  pvgrubctl sim boot-many 32 --parallel 8
  pvgrubctl sim boot-many 4 --kernel vmlinuz --initrd initrd.img --tpm2

exit status: 0 every guest booted and read back its predicted PCRs, 1 a boot
failed or a guest's PCRs differ (listed in the JSON report), 2 usage error."""


def add_boot_many_parser(parts: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = parts.add_parser(
        "boot-many",
        help="boot N measured guests on one simulated host",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("count", type=int_in_range(1, MAX_GUESTS), metavar="N",
                   help=f"how many guests to boot (1 to {MAX_GUESTS})")  # fmt: skip
    p.add_argument(
        "--parallel",
        type=int_in_range(1, MAX_PARALLEL),
        default=4,
        metavar="K",
        help=f"how many builds run at once (1 to {MAX_PARALLEL}; default 4)",
    )
    p.add_argument(
        "--kernel",
        metavar="FILE",
        help="the guests' kernel (default: the sample guest's Debian kernel)",
    )
    p.add_argument("--initrd", "--ramdisk", metavar="FILE",
                   help="the guests' initrd (default: the sample initramfs); --ramdisk is "
                        "pygrub's name for it")  # fmt: skip
    p.add_argument(
        "--cmdline",
        default=CMDLINE,
        metavar="STR",
        help=f"the guests' kernel command line (default: {CMDLINE!r})",
    )
    p.add_argument(
        "--memory",
        type=int_in_range(16, 1 << 20),
        default=128,
        metavar="MB",
        help="each guest's memory in MiB (default 128)",
    )
    p.add_argument(
        "--tpm2", action="store_true", help="give every guest a TPM 2.0 vTPM (default TPM 1.2)"
    )
    p.add_argument(
        "--sim",
        metavar="DIR",
        help="boot on the simulated host in DIR, joined if one runs there, else "
        "started there (default: a private host, removed afterwards)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path, what in ((args.kernel, "kernel"), (args.initrd, "initrd")):
        if path is not None:
            check_input(path, what=what)
    with tempfile.TemporaryDirectory(prefix="pvgrub-many-") as work:
        kernel = args.kernel or str(find_kernel())
        initrd = args.initrd
        if initrd is None:
            initrd = str(Path(work) / "initrd.img")
            make_initrd(Path(initrd))
        with sim_host(args.sim) as host:
            state = str(Path(work) / "vtpm-state")
            with vtpm_backend_domain(host, state, args.tpm2, None) as backend:
                report = boot_many(
                    host,
                    backend.domid,
                    args.count,
                    kernel,
                    initrd,
                    args.cmdline,
                    parallel=args.parallel,
                    memory_mb=args.memory,
                    tpm2=args.tpm2,
                    vtpmd_pid=backend.pid,
                    connect_for=VtpmConnector,
                )
    json.dump(report.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not report.failures and not report.mismatches else 1
