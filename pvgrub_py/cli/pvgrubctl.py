"""``pvgrubctl``: every verb that is not the xl bootloader itself.

Each verb lives in its own ``cmd_<verb>.py`` module exporting
``register(subparsers)``; the module adds one sub-parser whose default
``func`` takes the parsed namespace and returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from pvgrub_py import __version__
from pvgrub_py.cli.common import ArgumentParser, run

#: One module per verb; adding a verb means adding its module name here.
COMMAND_MODULES: tuple[str, ...] = (
    "pvgrub_py.cli.cmd_predict",
    "pvgrub_py.cli.cmd_eventlog",
    "pvgrub_py.cli.cmd_boot",
    "pvgrub_py.cli.cmd_vtpmd",
    "pvgrub_py.cli.cmd_vtpm",
    "pvgrub_py.cli.cmd_sim",
    "pvgrub_py.cli.cmd_doctor",
    "pvgrub_py.cli.cmd_kernel_info",
    "pvgrub_py.cli.cmd_attest",
)

DESCRIPTION = """\
Measured boot for Xen PV guests, everything but the xl bootloader itself
(that is pvgrub-py): predict the PCRs a boot will produce, show and verify
TCG event logs, build and start measured guests, serve guests' vTPMs from
dom0, verify a guest's TPM quote against the predicted boot, run a
simulated Xen host, check a host, inspect guest kernels.
"pvgrubctl VERB --help" describes each verb, with examples.

Exit status: 0 on success, 1 on a failure, 2 on a usage error."""

EPILOG = """\
examples:
  pvgrubctl predict guest.img --json > expected.json
  pvgrubctl eventlog verify guest.eventlog --pcrs expected.json
  pvgrubctl attest verify -u ak.pub -m quote.msg -s quote.sig -q "$NONCE" \\
      --reference expected.json
  pvgrubctl boot --sim guest.img"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pvgrubctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pvgrubctl {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return run("pvgrubctl", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
