"""``pvgrub-guest-tpm``: a TPM 2.0 for a stock Xen guest kernel, from userspace.

The wiring of `pvgrub_py.vtpm.bridge_driver` (the guest's tpmif frontend and
the proxy bridge) to the kernel's vTPM proxy (`pvgrub_py.vtpm.proxy_device`).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pvgrub_py import __version__
from pvgrub_py.cli.common import ArgumentParser, check_output, int_in_range, run
from pvgrub_py.cli.connect import open_guest_hypervisor
from pvgrub_py.errors import PvgrubError
from pvgrub_py.eventlog.builder import write_atomic
from pvgrub_py.eventlog.codec import parse
from pvgrub_py.eventlog.nv_channel import load_event_log
from pvgrub_py.eventlog.replay import compare, replay
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.transport import TpmTransport
from pvgrub_py.vtpm.bridge_driver import GuestTpmBridge
from pvgrub_py.vtpm.frontend import DEFAULT_TIMEOUT
from pvgrub_py.vtpm.proxy_device import VTPMX_PATH, ProxyEndpoint, create_chip

PROG = "pvgrub-guest-tpm"
#: Where the boot's event log goes: the kernel has no log for a proxy chip
#: (securityfs' binary_bios_measurements is missing), so tools are pointed here.
DEFAULT_EVENT_LOG = "/run/pvgrub-py/binary_bios_measurements"
#: Where the guest kernel lists its xenbus devices (a bound driver shows as ``driver``).
SYSFS_XEN_DEVICES = "/sys/bus/xen/devices"
#: Where a registered chip shows (tpm/tpmN, tpmrm/tpmrmN): the kernel adds them
#: last, once it has started the chip through us.
SYSFS_CLASS = "/sys/class"
#: DOMID_FIRST_RESERVED - 1 (xen/include/public/xen.h).
MAX_DOMID = 0x7FEF

DESCRIPTION = f"""\
Give a Xen PV or PVH guest a TPM 2.0 device (/dev/tpmN and /dev/tpmrmN) backed
by its vTPM, without patching the guest kernel.

Linux's xen-tpmfront registers every vTPM as a TPM 1.2.  {PROG} instead
connects to the guest's vtpm device (xenstore device/vtpm/N) as its tpmif
frontend from userspace, checks that the vTPM is a TPM 2.0, then asks the
kernel's vTPM proxy (/dev/vtpmx, module tpm_vtpm_proxy) for a TPM 2.0 chip and
forwards every command the kernel sends it to the vTPM.  The chip lives as
long as this program runs.

The kernel's own start-up of the new chip (SelfTest, GetCapability) leaves
the PCRs the bootloader extended as they are; this program never resets the
vTPM or sends a command of its own beyond one TPM2_GetCapability that tells
a TPM 2.0 from a TPM 1.2.

xen-tpmfront must not be bound to the device: with it bound, {PROG} refuses
to start.  Install stubdom/guest-tpm/pvgrub-guest-tpm.conf in
/etc/modprobe.d (it blacklists xen-tpmfront and loads tpm_vtpm_proxy and
the Xen device drivers) and pvgrub-guest-tpm.service as the systemd unit.

If the vTPM backend goes away, a command in flight is answered with
TPM_RC_FAILURE after --timeout seconds (and a 2 s cancel), later commands
fail at once, and the frontend reconnects as soon as the backend is back:
the chip stays, and works again.  Connects and disconnects are logged as
one line each on stderr; repeated warnings at most once every 10 s.

Save, restore, migration: "pvgrubctl vtpm suspend DOMAIN" in dom0 asks this
daemon to let go before "xl save" (it looks every 0.25 s, closes its ring and
stays disconnected while asked); the restored domain is a new domain, whose
domid it reads again, and it reconnects by itself.  A connection a save
catches open cannot be unbound after the restore (Linux's evtchn driver
BUGs on that): it is left bound, and the kernel trips over it only when
this daemon exits; reboot such a guest at its next opportunity.

Before it creates the chip, it reads the boot's TCG event log from the
vTPM's NV memory, where pvgrub-py (the bootloader) left it, replays it
against the vTPM's PCRs and, only if they match, writes it to
--event-log-out (mode 0644, atomically): the kernel has no event log for a
proxy chip, so point tpm2_eventlog or an attestation agent at that file.  A
log that does not replay is reported on stderr and not written; the TPM is
served all the same.

Exit status: 0 after SIGTERM or SIGINT, 1 on a failure (one line on
stderr: no vTPM, a TPM 1.2 vTPM, xen-tpmfront bound, no /dev/vtpmx),
2 on a usage error."""

EPILOG = f"""\
examples:
  {PROG}                                   # device/vtpm/0 of this guest
  {PROG} --ready-file /run/pvgrub-py/tpm-ready
  {PROG} --sim /tmp/simhost --domid 3      # a guest of the simulator

files:
  /dev/vtpmx                      the vTPM proxy's control device
  {DEFAULT_EVENT_LOG}
                                  the boot's event log (--event-log-out)
  /sys/bus/xen/devices/vtpm-N/driver
                                  present when a kernel driver (xen-tpmfront)
                                  holds the device"""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 3600] seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", type=int_in_range(0, 0xFFFF), default=0, metavar="N",
                   help="the vtpm device to serve: xenstore device/vtpm/N of this guest "
                        "(default 0, the first vtpm of the xl config)")  # fmt: skip
    p.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds the vTPM may take to connect or to answer one command "
                        "before the command is cancelled (2 s more), answered "
                        "TPM_RC_FAILURE, and the frontend reconnects "
                        f"(default {DEFAULT_TIMEOUT:g})")  # fmt: skip
    p.add_argument("--ready-file", metavar="PATH",
                   help='once the kernel has registered the chip (/sys/class/tpm/tpmN and '
                        '/sys/class/tpmrm/tpmrmN exist), write "TPM_NUM MAJOR MINOR" and a '
                        "newline to PATH (atomically), for scripts that wait for the chip; "
                        "systemd (Type=notify) is told READY=1 then too")  # fmt: skip
    p.add_argument("--event-log-out", metavar="PATH", default=DEFAULT_EVENT_LOG,
                   help="where to write the boot's event log read from the vTPM's NV memory, "
                        f"if it replays to the vTPM's PCRs (default {DEFAULT_EVENT_LOG}; its "
                        "folder is created 0755)")  # fmt: skip
    p.add_argument("--no-event-log", action="store_true",
                   help="do not read or write the event log")  # fmt: skip
    p.add_argument("--sim", metavar="DIR",
                   help="run as a guest of the simulated host in DIR (pvgrubctl sim host) "
                        "instead of on Xen; needs --domid")  # fmt: skip
    p.add_argument("--domid", type=int_in_range(1, MAX_DOMID), metavar="D",
                   help="with --sim: the guest domain to act as (on Xen the domid is read "
                        "from xenstore)")  # fmt: skip
    p.add_argument("--proxy-fd", type=int_in_range(0, 1 << 20), metavar="FD",
                   help="serve FD, an already open vTPM proxy descriptor (or a "
                        "SOCK_SEQPACKET socket, in tests), instead of creating a chip "
                        'through /dev/vtpmx; --ready-file then holds "fd FD"')  # fmt: skip
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    return p


def _check_no_kernel_driver(devid: int) -> None:
    driver = os.path.join(SYSFS_XEN_DEVICES, f"vtpm-{devid}", "driver")
    if os.path.lexists(driver):
        name = os.path.basename(os.path.realpath(driver))
        raise PvgrubError(
            f"{driver}: a kernel driver ({name}, xen-tpmfront) holds vtpm-{devid}; "
            f"unbind it (echo vtpm-{devid} > {driver}/unbind) and blacklist it "
            "(stubdom/guest-tpm/pvgrub-guest-tpm.conf in /etc/modprobe.d)"
        )


def publish_event_log(transport: TpmTransport, path: str) -> bool:
    """Read the event log pvgrub-py delivered in the vTPM's NV indices, replay
    it against the vTPM's PCRs and write it to *path* if they match.  Every
    outcome but a written log is one line on stderr; none is fatal: the TPM
    works without a log.  True if the log was written."""
    client = TpmClient(transport, version="2.0")
    try:
        data = load_event_log(client)
    except PvgrubError as e:  # NvEventLogError: indices that are not a delivered log
        _log(f"event log not written to {path}: {e}")
        return False
    if data is None:
        _log(f"the vTPM holds no event log (nothing was delivered); {path} not written")
        return False
    try:
        log = parse(data, "the vTPM's NV event log")
        pcrs = log.extended_pcrs
        banks = [b for b in client.active_banks() if b.name in log.banks]
        live = client.read_pcrs(pcrs, banks) if pcrs and banks else {}
    except PvgrubError as e:
        _log(f"event log not written to {path}: {e}")
        return False
    if not live:
        _log(f"event log not written to {path}: it extends no PCR in a bank the vTPM has")
        return False
    mismatches = compare(replay(log), live)
    if mismatches:
        _log(f"event log not written to {path}: it does not replay to the vTPM's PCRs: "
             + "; ".join(m.describe() for m in mismatches))  # fmt: skip
        return False
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        write_atomic(path, data)
    except (PvgrubError, OSError) as e:
        _log(f"event log not written to {path}: {e}")
        return False
    _log(f"event log ({len(log.events)} events) replays to the vTPM's PCRs; written to {path}")
    return True


def _notify_systemd(state: str) -> None:
    """sd_notify(3) for Type=notify: a datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), address)
    except OSError as e:
        print(f"{PROG}: cannot notify systemd at $NOTIFY_SOCKET: {e.strerror}", file=sys.stderr)


def _log(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.domid is not None and args.sim is None:
        parser.error("--domid is for the simulator (--sim); on Xen it is read from xenstore")
    if args.sim is not None and args.domid is None:
        parser.error("--sim needs --domid, the guest domain to act as")
    if args.ready_file:
        check_output(args.ready_file)  # now, not once the chip exists
    if args.sim is None:
        _check_no_kernel_driver(args.device)
    os.umask(0o022)  # the ready file (and any event log) are 0644
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hv = open_guest_hypervisor(args.sim, args.domid)
    bridge = GuestTpmBridge(
        hv,
        args.device,
        timeout=args.timeout,
        log=_log,
        reopen=lambda: open_guest_hypervisor(args.sim, args.domid),
    )
    endpoint: ProxyEndpoint | None = None
    try:
        bridge.connect(wait=args.timeout)
        if not args.no_event_log:
            publish_event_log(bridge.transport(), args.event_log_out)
        if args.proxy_fd is not None:
            endpoint = ProxyEndpoint(args.proxy_fd)
            ready, what, nodes = f"fd {args.proxy_fd}\n", f"descriptor {args.proxy_fd}", []
        else:
            fd, chip = create_chip(VTPMX_PATH)
            endpoint = ProxyEndpoint(fd)
            n = chip.tpm_num
            ready, what = chip.ready_line, f"/dev/tpm{n} and /dev/tpmrm{n}"
            nodes = [f"{SYSFS_CLASS}/tpm/tpm{n}", f"{SYSFS_CLASS}/tpmrm/tpmrm{n}"]

        def announce() -> bool:
            """Once the kernel has registered the chip: the ready file, systemd."""
            if not all(os.path.exists(node) for node in nodes):
                return False
            if args.ready_file:
                write_atomic(args.ready_file, ready.encode())
            _log(f"serving {what} (TPM 2.0)")
            _notify_systemd("READY=1")
            return True

        bridge.serve(endpoint, stop, until_ready=announce)
        if not stop.is_set():  # not asked to stop: let systemd's Restart=on-failure act
            raise PvgrubError("the vTPM proxy chip went away")
    finally:
        if endpoint is not None:
            endpoint.close()
        bridge.close()
        hv.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
