"""``pvgrubctl sim host --dir DIR``: run a simulated Xen host in the foreground.

`add_host_parser` is what ``pvgrub_py/cli/cmd_sim.py`` calls to add the verb;
``python -m pvgrub_py.sim host ...`` runs it without the rest of pvgrubctl.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys

from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.sim.daemon import HostDaemon
from pvgrub_py.sim.layout import HostLayout
from pvgrub_py.sim.xenstored import XenstoredLink
from pvgrub_py.sim.xsm import Flask, parse_label_option

#: DOMID_FIRST_RESERVED - 1 (xen/include/public/xen.h).
MAX_DOMID = 0x7FEF

HOST_DESCRIPTION = """\
Run a simulated Xen host: one daemon that is the hypervisor for every process
attached to it (SimHypervisor.attach(DIR, domid=N)), the way Xen is under
every domain.  It owns the domains (dom0 from the start; more through
DomainControl.create), their grant tables (granted pages are memfds shared by
the processes) and event channels (real cross-process notifications), and
enforces Xen's rules on them.  Unless told otherwise it also starts a
xenstored (pvgrubctl sim xenstored) on DIR/xenstored/socket and hands each
attached process a xenstore connection as its own domain.

XSM: like Debian's Xen, the host runs without FLASK unless told otherwise,
and a label asked for (FLASK_GET_PEER_SID, e.g. by pvgrub-py --vtpm-label)
is ENOSYS.  With --flask or --xsm-label every domain has a security
context: dom0 system_u:system_r:dom0_t and the others
system_u:system_r:domU_t (Xen's example policy for domains without
seclabel=), unless --xsm-label names another.

It prints DIR/hyp.sock once processes can attach, and serves until SIGTERM
or SIGINT; shutdown stops its xenstored and removes its sockets and tokens."""

HOST_EPILOG = """\
files in DIR:
  hyp.sock                the hypervisor socket
  tokens/<domid>          the secret proving a domid at attach (mode 0600)
  xenstored/socket        xenstored, for dom0 (XENSTORED_PATH=...)
  xenstored/socket.d/<N>  xenstored for domain N, once dom0 introduced it

examples:
  pvgrubctl sim host --dir /tmp/host &
  pvgrubctl sim host --dir /tmp/host --xsm-label 0=system_u:system_r:dom0_t \
                     --xsm-label 1=system_u:system_r:vtpm_t &
  python3 -c 'from pvgrub_py.sim import SimHost; print(SimHost.connect("/tmp/host").stats())'

exit status: 0 after a clean shutdown, 1 if the host cannot start (DIR is
in use by a running host, a path is too long, xenstored fails), 2 usage."""


def add_host_parser(sim_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sim_subparsers.add_parser(
        "host",
        help="a simulated Xen host (hypervisor daemon + xenstored)",
        description=HOST_DESCRIPTION,
        epilog=HOST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", required=True, metavar="DIR",
                        help="the host directory, created (mode 0700) if missing: sockets, "
                             "tokens and logs, listed below; keep it short (unix socket "
                             "paths are limited to 107 bytes)")  # fmt: skip
    xs = parser.add_mutually_exclusive_group()
    xs.add_argument(
        "--xenstored",
        metavar="SOCKET",
        help="use the xenstored already listening on SOCKET instead of starting one",
    )
    xs.add_argument(
        "--no-xenstored",
        action="store_true",
        help="run without a xenstored: attached processes get no xenstore (xs_open fails "
        "with ENOTCONN)",
    )
    parser.add_argument("--log", metavar="FILE", help="append a debug trace of the daemon to FILE")
    parser.add_argument(
        "--flask", action="store_true", help="run with XSM/FLASK: every domain has a label"
    )
    parser.add_argument(
        "--xsm-label",
        action="append",
        default=[],
        metavar="DOMID=CONTEXT",
        help="the FLASK context of domain DOMID, now (dom0) or when it is created "
        "(repeatable; implies --flask)",
    )
    parser.set_defaults(func=run_host)


def _setup_logging(log_file: str | None) -> None:
    logger = logging.getLogger("pvgrub_py.sim")
    logger.propagate = False
    handler: logging.Handler
    if log_file is not None:
        try:
            handler = logging.FileHandler(log_file)
        except OSError as e:
            raise InputError(log_file, f"cannot write: {describe_open_error(e)}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pvgrubctl sim host: %(message)s"))
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)


def _label_option(spec: str) -> tuple[int, str]:
    """``--xsm-label DOMID=CONTEXT``, with DOMID a domid a domain can have."""
    domid, sep, _ = spec.partition("=")
    if sep and not (domid.isascii() and domid.isdigit() and int(domid) <= MAX_DOMID):
        raise UsageError(f"--xsm-label {spec!r}: DOMID must be a number from 0 to {MAX_DOMID}")
    return parse_label_option(spec)


def _check_dir(path: str) -> None:
    """DIR is a directory, or can be made one: never a file, never under /proc."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(path, "is not a directory; a simulated host needs one")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def run_host(args: argparse.Namespace) -> int:
    labels = dict(_label_option(spec) for spec in args.xsm_label)
    flask = Flask(labels) if args.flask or labels else None
    _check_dir(args.dir)
    if args.xenstored and not _is_socket(args.xenstored):
        raise InputError(args.xenstored, "is not a socket a xenstored listens on")
    _setup_logging(args.log)
    layout = HostLayout.of(args.dir)
    daemon = HostDaemon(layout.root, None, flask)
    try:
        daemon.bind()  # refuses a directory where a host already runs, before anything else
    except OSError as e:
        raise InputError(
            args.dir, f"cannot hold a simulated host: {describe_open_error(e)}"
        ) from None
    try:
        if args.xenstored:
            daemon.xenstored = XenstoredLink(args.xenstored)
        elif not args.no_xenstored:
            layout.xenstored_socket.parent.mkdir(mode=0o700, exist_ok=True)
            daemon.xenstored = XenstoredLink.spawn(
                str(layout.xenstored_socket), str(layout.xenstored_log)
            )
    except BaseException:
        daemon.close()
        raise

    def ready() -> None:
        print(layout.socket, flush=True)

    return daemon.serve(ready)
