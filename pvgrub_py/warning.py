"""Warnings for the admin, through `logging`; the program (cli/) says where they go.

A lower layer calls `warn`; the program registers, with `on_first_warning`,
the set-up of its handler (``pvgrub-py: warning: MESSAGE``, one line on
stderr).  `logging` costs a run that libxl waits for a few milliseconds to
import, so it is imported, and the handler set up, only when there is
something to say (bench/bench_bootloader.py).
"""

from __future__ import annotations

from collections.abc import Callable

#: The logger every warning for the admin goes through.
LOGGER = "pvgrub_py.warning"

_setup: Callable[[], None] | None = None


def on_first_warning(setup: Callable[[], None]) -> None:
    """Run *setup* (the program's handler for `LOGGER`) before the first warning."""
    global _setup
    _setup = setup


def warn(message: str) -> None:
    global _setup
    import logging

    if _setup is not None:
        setup, _setup = _setup, None
        setup()
    logging.getLogger(LOGGER).warning("%s", message)
