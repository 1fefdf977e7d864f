"""``pvgrubctl sim``: the pieces of a simulated Xen host: host, xenstored, boot-many."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import cast

from pvgrub_py.cli.cmd_sim_boot_many import add_boot_many_parser
from pvgrub_py.cli.common import ArgumentParser, check_parent_writable, run
from pvgrub_py.errors import InputError, UsageError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.sim.cli import add_host_parser
from pvgrub_py.xenstore.daemon import XenstoredServer, run_daemon
from pvgrub_py.xenstore.store import Quotas

SIM_DESCRIPTION = """\
Run the parts of a Xen host that pvgrub-py's simulator needs, without Xen:
the whole host (hypervisor daemon and xenstored), a xenstored alone, or a
scale test booting many measured guests on one host.  Each part speaks the
real protocol, so the unmodified clients (pyxs, libxenstore and its
xenstore-* tools) work against it.  See "pvgrubctl sim PART --help"."""

SIM_EPILOG = """\
examples:
  pvgrubctl sim host --dir /tmp/host &
  pvgrubctl sim xenstored --socket /tmp/xs/socket
  pvgrubctl sim boot-many 8"""

XENSTORED_DESCRIPTION = """\
A xenstore daemon speaking the xs_wire protocol (docs/misc/xenstore.txt) on a
unix socket: the whole tree, permissions, transactions with EAGAIN on
conflict, watches, INTRODUCE/RELEASE and the special @introduceDomain and
@releaseDomain watches, quotas.  It starts with the nodes a fresh xenstored
has (/tool/xenstored) and keeps everything in memory.

Clients on SOCKET are dom0 and privileged, like clients of a real host's
/var/run/xenstored/socket.  When dom0 INTRODUCEs domain N, the daemon also
listens on SOCKET.d/N; a client connecting there *is* domain N
(unprivileged, relative paths based at /local/domain/N), standing in for
the domain's ring page.  RELEASE closes that socket and its clients.

Without --foreground the daemon forks once it listens; the command prints
SOCKET and exits 0, leaving the daemon to run until SIGTERM.  With
--foreground it prints SOCKET when ready and serves until SIGTERM or SIGINT.
Either way, shutdown removes the sockets it created."""

XENSTORED_EPILOG = """\
examples:
  pvgrubctl sim xenstored --socket /tmp/xs/socket --foreground
  XENSTORED_PATH=/tmp/xs/socket xenstore-write /local/domain/5/name guest
  XENSTORED_PATH=/tmp/xs/socket xenstore-ls -f -p /
  XENSTORED_PATH=/tmp/xs/socket.d/5 xenstore-read name     # as dom5

quotas (per unprivileged domain, over all its connections; 0 disables;
defaults are xenstored's):
  nodes=1000 watches=128 transactions=10 node-size=2048 permissions=5
  path-max=2048 transaction-nodes=1024 memory=2621440
and one of the simulator's own (on Xen a domain has one ring connection):
  connections=16

exit status: 0 after a clean shutdown (or, without --foreground, once the
daemon listens), 1 if SOCKET cannot be used (a live daemon owns it, it is not
a socket, the path is too long), 2 usage error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser(
        "sim",
        help="run a simulated Xen host, its xenstored alone, or many measured boots on one",
        description=SIM_DESCRIPTION,
        epilog=SIM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts = sim.add_subparsers(dest="part", metavar="PART", required=True)
    add_host_parser(parts)
    add_boot_many_parser(parts)
    xsd = parts.add_parser(
        "xenstored",
        help="a xenstore daemon on a unix socket",
        description=XENSTORED_DESCRIPTION,
        epilog=XENSTORED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    xsd.add_argument(
        "--socket",
        required=True,
        metavar="SOCKET",
        help="the unix socket dom0 clients connect to; its directory is created (mode 0700) "
        "if missing, and per-domain sockets go in SOCKET.d/",
    )
    xsd.add_argument(
        "--foreground",
        action="store_true",
        help="do not fork: serve in this process until SIGTERM or SIGINT, warnings on stderr",
    )
    xsd.add_argument(
        "--log", metavar="FILE", help="append a trace of every request and error to FILE"
    )
    xsd.add_argument(
        "--pid-file", metavar="FILE", help="write the daemon's process id to FILE once it listens"
    )
    xsd.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="NAME=N",
        help="set a quota for unprivileged domains (repeatable; see below)",
    )
    xsd.set_defaults(func=_xenstored)


#: A quota is a count or a size; past 2**31 it bounds nothing a real xenstored would.
MAX_QUOTA = (1 << 31) - 1


def _quotas(specs: list[str]) -> Quotas:
    values: dict[str, int] = {}
    for spec in specs:
        name, sep, number = spec.partition("=")
        attr = Quotas.WIRE_NAMES.get(name)
        plain = number.isascii() and number.isdigit() and int(number) <= MAX_QUOTA
        if not sep or attr is None or not plain:
            names = ", ".join(Quotas.WIRE_NAMES)
            raise UsageError(
                f"--quota {spec!r}: expected NAME=N with N in 0..{MAX_QUOTA} and NAME one "
                f"of {names}"
            )
        values[attr] = int(number)
    return Quotas(**values)


def _setup_logging(log_file: str | None, foreground: bool) -> None:
    logger = logging.getLogger("pvgrub_py.xenstore")
    logger.propagate = False
    if log_file is not None:
        handler: logging.Handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.DEBUG)
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pvgrubctl sim xenstored: %(message)s"))
        logger.setLevel(logging.WARNING)
    else:
        handler = logging.NullHandler()
    logger.addHandler(handler)


def _socket_directory(socket_path: str) -> None:
    """Create SOCKET's directory (0700, as xenstored's /run/xenstored) if missing."""
    parent = os.path.dirname(os.path.abspath(socket_path))
    if os.path.isdir(parent):
        return
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as e:
        raise InputError(parent, f"cannot hold the socket: {describe_open_error(e)}") from None


def _writable(path: str) -> None:
    """Fail now, in the foreground, if FILE (--log, --pid-file) cannot be written."""
    if os.path.isdir(path):
        raise InputError(path, "is a directory, not a file")
    if os.path.lexists(path):
        if not os.access(path, os.W_OK):
            raise InputError(path, "cannot write: permission denied")
        return
    check_parent_writable(path)


def _write_pid_file(path: str | None) -> None:
    if path is not None:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")


def _xenstored(args: argparse.Namespace) -> int:
    quotas = _quotas(args.quota)
    _socket_directory(args.socket)
    for path in (args.log, args.pid_file):
        if path is not None:
            _writable(path)
    server = XenstoredServer(args.socket, quotas)
    server.bind()  # fails here, in the foreground, if SOCKET is unusable
    if args.foreground:
        _setup_logging(args.log, foreground=True)

        def ready() -> None:
            _write_pid_file(args.pid_file)
            print(args.socket, flush=True)

        return run_daemon(server, ready)
    return _daemonize(server, args)


def _daemonize(server: XenstoredServer, args: argparse.Namespace) -> int:
    """Fork; the parent returns once the child serves (so scripts can use
    the socket right after we exit)."""
    sys.stdout.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as signal_pipe:
            ok = signal_pipe.read(1) == b"1"
        if not ok:
            print(f"pvgrubctl: xenstored on {args.socket} exited while starting", file=sys.stderr)
            return 1
        print(args.socket, flush=True)
        return 0
    status = 1
    try:
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _setup_logging(args.log, foreground=False)

        def ready() -> None:
            _write_pid_file(args.pid_file)
            os.write(ready_w, b"1")
            os.close(ready_w)

        status = run_daemon(server, ready)
    finally:
        os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pvgrub_py.cli.cmd_sim xenstored ...``: the sim verb alone,
    for environments where another verb's module cannot be imported."""

    def body(args: Sequence[str]) -> int:
        parser = ArgumentParser(prog="pvgrubctl")
        verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
        register(cast("argparse._SubParsersAction[argparse.ArgumentParser]", verbs))
        ns = parser.parse_args(["sim", *args])
        status: int = ns.func(ns)
        return status

    return run("pvgrubctl", body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
