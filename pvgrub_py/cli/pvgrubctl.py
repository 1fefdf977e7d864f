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
    "pvgrub_py.cli.cmd_sim",
    "pvgrub_py.cli.cmd_doctor",
    "pvgrub_py.cli.cmd_kernel_info",
    "pvgrub_py.cli.cmd_vtpmd",
    "pvgrub_py.cli.cmd_boot",
    "pvgrub_py.cli.cmd_attest",
)

DESCRIPTION = """\
Measured boot for Xen guests: predict the PCRs a boot will produce, read and
verify TCG event logs, and (as later verbs land) run the simulator, the vTPM
backend and the domain builder.

Exit status: 0 on success, 1 on a failure, 2 on a usage error."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pvgrubctl",
        description=DESCRIPTION,
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
