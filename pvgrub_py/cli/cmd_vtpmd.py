"""``pvgrubctl vtpmd``: the dom0 vTPM backend daemon, one swtpm per guest vTPM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from pvgrub_py.cli.common import int_in_range
from pvgrub_py.cli.connect import open_hypervisor
from pvgrub_py.errors import InputError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.vtpm.backend import VtpmBackend
from pvgrub_py.vtpm.instances import VtpmInstances
from pvgrub_py.xen.interface import Hypervisor

DESCRIPTION = """\
Serve the tpmif backend of this domain (dom0 by default): every vtpm device
the toolstack creates under /local/domain/DOMID/backend/vtpm is connected to
a swtpm instance chosen by the device's uuid, with its state kept in
STATE-DIR/UUID.  TPM 1.2 by default, like Xen's own vTPM; TPM 2.0 with --tpm2.

A frontend in dom0 (the bootloader, through a xen: vTPM address) power-cycles
its instance first, so the measurements it makes start a fresh boot record;
the guest's own frontend later reaches the same instance without a reset.

Runs in the foreground until SIGTERM or SIGINT."""

EPILOG = """\
examples:
  pvgrubctl vtpmd --state-dir /var/lib/pvgrub-py/vtpm
  pvgrubctl vtpmd --sim /tmp/simhost --state-dir /tmp/vtpm --tpm2

xl config of a measured guest served by it:
  vtpm = ["backend=0,uuid=7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"]
  bootloader = "pvgrub-py"
  bootloader_args = ["--vtpm=xen:0", "--vtpm-uuid=7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d",
                     "--require-vtpm"]"""


#: DOMID_FIRST_RESERVED - 1 (xen/include/public/xen.h): the largest domid a domain has.
MAX_DOMID = 0x7FEF


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vtpmd",
        help="run the dom0 vTPM backend daemon (swtpm per guest)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--state-dir", required=True, metavar="DIR",
                   help="where each vTPM instance keeps its swtpm state, in DIR/UUID; created "
                        "(mode 0700) once the hypervisor is reached")  # fmt: skip
    p.add_argument(
        "--tpm2",
        action="store_true",
        help="run TPM 2.0 instances (default TPM 1.2, like Xen's vTPM)",
    )
    p.add_argument("--sim", metavar="HOST_DIR",
                   help="serve on the simulated host running in HOST_DIR (pvgrubctl sim host) "
                        "instead of the real hypervisor")  # fmt: skip
    p.add_argument("--domid", type=int_in_range(0, MAX_DOMID), default=0, metavar="N",
                   help="the domain this backend runs as, whose backend/vtpm directory it "
                        f"serves (0 to {MAX_DOMID}; default 0, dom0)")  # fmt: skip
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every frontend connection and instance start on stderr",
    )
    p.set_defaults(func=run)


def _open_hypervisor(sim: str | None, domid: int) -> Hypervisor:
    """The hypervisor to serve on; a --sim HOST_DIR where no host runs is one line."""
    if sim is not None and not os.path.exists(os.path.join(sim, "hyp.sock")):
        raise InputError(sim, "no simulated host runs here (start one: pvgrubctl sim host --dir)")
    try:
        return open_hypervisor(sim, domid)
    except OSError as e:  # a host's files that are not what they should be
        raise InputError(sim or "hypervisor", describe_open_error(e)) from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="vtpmd: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hv = _open_hypervisor(args.sim, args.domid)
    try:
        # Nothing is created on disk before the host answers: opening libxc's
        # hypervisor handle succeeds on a machine without Xen, xenstore does not.
        hv.xenstore().close()
        instances = VtpmInstances(args.state_dir, tpm2=args.tpm2)
    except BaseException:
        hv.close()
        raise
    try:
        backend = VtpmBackend(hv, instances.transport_for, on_connect=instances.on_connect)
        with backend:
            print(f"vtpmd: serving {backend.root} (TPM {'2.0' if args.tpm2 else '1.2'})",
                  flush=True)  # fmt: skip
            while not stop.wait(0.5):
                pass
    finally:
        instances.stop()
        hv.close()
    return 0
