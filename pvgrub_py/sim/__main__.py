"""``python -m pvgrub_py.sim host --dir DIR``: the simulator's verbs without pvgrubctl."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import cast

from pvgrub_py.program import run
from pvgrub_py.sim.cli import add_host_parser
from pvgrub_py.usage import ArgumentParser


def main(argv: Sequence[str] | None = None) -> int:
    def body(args: Sequence[str]) -> int:
        parser = ArgumentParser(prog="pvgrubctl sim")
        parts = parser.add_subparsers(dest="part", metavar="PART", required=True)
        add_host_parser(cast("argparse._SubParsersAction[argparse.ArgumentParser]", parts))
        ns = parser.parse_args(args)
        status: int = ns.func(ns)
        return status

    return run("pvgrubctl sim", body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
