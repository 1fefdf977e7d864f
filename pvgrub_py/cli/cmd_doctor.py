"""``pvgrubctl doctor``: can this host run pvgrub-py for real, or only simulated?

Each check is a small function returning a `Check` (what was found, and
when something is missing the fix, as one line an admin can act on), so the
checks are testable with a fake environment and the CLI only prints them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

DESCRIPTION = """\
Check what this host offers pvgrub-py and say how to fix what is missing:

  bindings     the cffi bindings to the Xen libraries were built (needs Debian's
               libxen-dev and pkg-config at install time), the Xen version they
               were built against and the one loaded; without them pvgrub-py
               runs in simulator-only mode
  decompress   the zstandard and lz4 modules the python kernel parser needs
  hypervisor   a Xen hypervisor: /dev/xen/privcmd, and /proc/xen/capabilities
               saying control_d (dom0)
  xenstored    a xenstore daemon: the socket at $XENSTORED_PATH or
               /var/run/xenstored/socket, or /dev/xen/xenbus
  swtpm        swtpm and swtpm_ioctl, the software TPM the vTPM tests and the
               simulator use
  tpm2-tools   tpm2_eventlog, to cross-check event logs

Nothing is changed; every line is a finding."""

EPILOG = """\
examples:
  pvgrubctl doctor
  pvgrubctl doctor --require-xen --json

exit status: 0 when the report was produced (missing pieces are findings, not
errors: a host without Xen is a fine simulator host); 2 usage error.  With
--require-xen, 1 when the bindings, the hypervisor or xenstored are missing."""

OK, MISSING, WARN = "ok", "missing", "warn"
DEFAULT_XENSTORED_SOCKET = "/var/run/xenstored/socket"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, missing, warn
    found: str
    fix: str | None = None


def check_bindings() -> Check:
    from pvgrub_py.xen.availability import availability

    a = availability()
    if not a.built:
        return Check(
            "bindings",
            MISSING,
            f"not built, simulator-only mode ({a.reason})",
            "install Debian packages libxen-dev and pkg-config, then reinstall "
            "pvgrub-py (pip install .)",
        )
    loaded = ", ".join(f"{lib} {v}" for lib, v in sorted(a.loaded.items())) or "none mapped"
    found = f"built against Xen {a.built_against}; loaded {loaded}"
    if any(v != a.built_against for v in a.loaded.values()):
        return Check(
            "bindings",
            WARN,
            found,
            "the Xen libraries changed since the build: reinstall pvgrub-py",
        )
    return Check("bindings", OK, found)


def check_decompressors() -> Check:
    missing = [m for m in ("zstandard", "lz4") if importlib.util.find_spec(m) is None]
    if missing:
        return Check(
            "decompress",
            MISSING,
            f"python modules missing: {', '.join(missing)}",
            f"pip install {' '.join(missing)}",
        )
    return Check("decompress", OK, "gzip, bzip2, xz, lzma, lzo, lz4, zstd")


def check_hypervisor(root: Path = Path("/")) -> Check:
    privcmd = root / "dev/xen/privcmd"
    caps_file = root / "proc/xen/capabilities"
    if not privcmd.exists():
        return Check(
            "hypervisor",
            MISSING,
            f"no {privcmd}: not running on Xen",
            "run on a Xen dom0 (Debian: install xen-system-amd64 and boot the Xen "
            "entry); without it only the simulator and kernel-info work",
        )
    try:
        caps = caps_file.read_text().strip()
    except OSError:
        caps = ""
    if "control_d" not in caps:
        return Check(
            "hypervisor",
            WARN,
            f"{privcmd} present, but this is not dom0",
            "domain building and grant mapping of other guests need dom0 (or a driver domain)",
        )
    return Check("hypervisor", OK, f"{privcmd} present; dom0 ({caps_file}: {caps})")


def check_xenstored(env: Mapping[str, str] = os.environ, root: Path = Path("/")) -> Check:
    path = env.get("XENSTORED_PATH") or str(root / DEFAULT_XENSTORED_SOCKET.lstrip("/"))
    fix = (
        "start xenstored (systemctl start xen-init-dom0 / xencommons) on dom0, or point "
        "XENSTORED_PATH at the simulator's socket (pvgrubctl sim xenstored)"
    )
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(path)
        except OSError as e:
            return Check(
                "xenstored", MISSING, f"socket {path} refuses connections ({e.strerror})", fix
            )
        return Check("xenstored", OK, f"socket {path} accepts connections")
    xenbus = root / "dev/xen/xenbus"
    if xenbus.exists():
        return Check("xenstored", OK, f"{xenbus} present (xenstore through the kernel)")
    return Check("xenstored", MISSING, f"no socket at {path} and no {xenbus}", fix)


def check_program(
    name: str, program: str, package: str, which: Callable[[str], str | None] = shutil.which
) -> Check:
    where = which(program)
    if where is None:
        return Check(name, MISSING, f"{program} not on PATH", f"install Debian package {package}")
    return Check(name, OK, where)


def run_checks() -> list[Check]:
    return [
        check_bindings(),
        check_decompressors(),
        check_hypervisor(),
        check_xenstored(),
        check_program("swtpm", "swtpm", "swtpm"),
        check_program("swtpm_ioctl", "swtpm_ioctl", "swtpm-tools"),
        check_program("tpm2-tools", "tpm2_eventlog", "tpm2-tools"),
    ]


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.status:<8} {c.name:<12} {c.found}")
        if c.fix:
            lines.append(f"{'':<8} {'':<12} fix: {c.fix}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the Xen bindings, hypervisor, xenstored and TPM tools on this host",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    p.add_argument(
        "--require-xen",
        action="store_true",
        help="exit 1 unless the bindings, a hypervisor and xenstored are all there",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        json.dump([asdict(c) for c in checks], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_checks(checks))
    if args.require_xen:
        needed = {"bindings", "hypervisor", "xenstored"}
        if any(c.name in needed and c.status != OK for c in checks):
            print("pvgrubctl: doctor: Xen is not fully available on this host", file=sys.stderr)
            return 1
    return 0
