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
the swtpm of the vTPM instance named by the device's uuid: STATE-DIR/UUID,
made by `pvgrubctl vtpm create`, served with its own TPM version, and when
encrypted with the host key (--key-file, given to swtpm by file descriptor).

Refused, so that the boot that asked for the vTPM fails closed (the device
goes to Closing with a one-line `error` node): an unknown uuid (unless
--provision-unknown), an instance whose state is missing, cannot be
decrypted or is corrupt: never a fresh TPM in its place.

Each swtpm runs in its own session and outlives the daemon (its pid and
sockets are recorded in STATE-DIR/UUID/swtpm-run.json): a restarted vtpmd
reattaches to it and to the connected frontends, so a running guest keeps
its PCRs.  A guest whose swtpm is gone is refused until its next boot.  The
swtpm of a device that is gone (its domain destroyed) is stopped.

A frontend in dom0 (the bootloader, through a xen: vTPM address) power-cycles
its instance first, so the measurements it makes start a fresh boot record,
and issues a one-shot ticket: the first guest frontend that connects after
it reaches the same instance without a reset and binds it to its domain and
device (kept in swtpm-run.json, across restarts).  Any other frontend is
refused: another domain with the same uuid, a second device, a vTPM
hot-plugged into a running guest (reset or another boot's PCRs it could
forge with).  The binding ends when its device goes and at the next dom0
power cycle, whose ticket the domain bound before it cannot take.  An
instance imported from a running export resumes its saved state, PCRs
included, for the first guest that connects (the restored domain).

Runs in the foreground until SIGTERM or SIGINT."""

EPILOG = """\
examples:
  pvgrubctl vtpm create --state-dir /var/lib/pvgrub-py/vtpm --uuid U --tpm2 --key-file K
  pvgrubctl vtpmd --state-dir /var/lib/pvgrub-py/vtpm --key-file K
  pvgrubctl vtpmd --sim /tmp/simhost --state-dir /tmp/vtpm --provision-unknown --tpm2
  (as a service: stubdom/systemd/pvgrub-vtpmd.service)

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
    p.add_argument("--key-file", metavar="K",
                   help="the host key (64 hex digits, mode 0600) of the encrypted instances; "
                        "default: the key file each instance's vtpm.json names")  # fmt: skip
    p.add_argument("--provision-unknown", action="store_true",
                   help="serve an unknown uuid with a new bare instance (no EK certificate; "
                        "encrypted with --key-file if given) instead of refusing it; "
                        "for tests and demos, not production")  # fmt: skip
    p.add_argument(
        "--tpm2",
        action="store_true",
        help="with --provision-unknown: provision TPM 2.0 instances (default TPM 1.2)",
    )
    p.add_argument("--stop-instances-on-exit", action="store_true",
                   help="stop every swtpm on SIGTERM/SIGINT (a restart then cannot reattach: "
                        "running guests lose their vTPM); default: leave them running")  # fmt: skip
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
    # One process serves every guest: hand the interpreter from a busy device
    # thread (a guest sending requests in a loop) to a waiting one within
    # 0.5 ms, not the default 5 ms, so that another guest's command waits
    # for it a few times a command at most.
    sys.setswitchinterval(0.0005)
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
        instances = VtpmInstances(
            args.state_dir,
            tpm2=args.tpm2,
            key_file=args.key_file,
            provision_unknown=args.provision_unknown,
        )
    except BaseException:
        hv.close()
        raise
    try:
        backend = VtpmBackend(
            hv,
            instances.transport_for,
            on_connect=instances.on_connect,
            on_removed=instances.on_removed,
        )
        # An earlier daemon's swtpms whose devices are gone stop now; those
        # still in use are reattached when their frontends are.
        instances.sweep(backend.device_uuids())
        with backend:
            unknown = (f"provisioned as TPM {'2.0' if args.tpm2 else '1.2'}"
                       if args.provision_unknown else "refused")  # fmt: skip
            print(f"vtpmd: serving {backend.root} (instances in {instances.state_root}; "
                  f"unknown uuids {unknown})", flush=True)  # fmt: skip
            while not stop.wait(0.5):
                pass
    finally:
        instances.stop(keep_running=not args.stop_instances_on_exit)
        hv.close()
    return 0
