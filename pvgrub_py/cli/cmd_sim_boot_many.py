"""``pvgrubctl sim boot-many N``: scale test of measured boots on one simulated host."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pvgrub_py.builder.scale import boot_many
from pvgrub_py.builder.sim_boot import sim_host, vtpm_backend_domain
from pvgrub_py.sample_guest import CMDLINE, find_kernel, make_initrd

DESCRIPTION = """\
Boot N PV guests on one simulated host, each with its own vTPM instance (its
own swtpm behind a vtpmd backend domain), measured before the kernel is
parsed; every guest then reads PCR 4 and 5 back through its own tpmif
frontend and they are compared with the offline prediction.  Prints guests
per second, the builder's own overhead per guest (everything but reading,
hashing/extending and parsing the kernel) and peak memory per guest."""


def add_boot_many_parser(parts: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = parts.add_parser(
        "boot-many",
        help="boot N measured guests on one simulated host",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("count", type=int, metavar="N", help="how many guests")
    p.add_argument("--parallel", type=int, default=4, help="concurrent builds (4)")
    p.add_argument("--kernel", help="guest kernel (default: the sample guest's Debian kernel)")
    p.add_argument("--initrd", help="guest initrd (default: the sample initramfs)")
    p.add_argument("--cmdline", default=CMDLINE)
    p.add_argument("--memory", type=int, default=128, metavar="MB", help="per guest (128)")
    p.add_argument("--tpm2", action="store_true")
    p.add_argument("--sim", metavar="DIR", help="join or start the host in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
                )
    json.dump(report.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not report.failures and not report.mismatches else 1
