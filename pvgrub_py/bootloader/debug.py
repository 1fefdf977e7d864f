"""``--debug``: each step of a run, one line each on stderr.

pygrub's ``--debug`` turned on its own logging; ours says what the run
does, in order, so an admin reading ``/var/log/xen/bootloader.N.log`` can
tell where a boot went and what was measured: the options, the config and
the entry chosen, the vTPM and its banks, each file's length and digests,
each extend, the event log and the result.  `logging` is imported only
when ``--debug`` is given (its import costs a run that libxl waits for);
without it `debug` is one test of a flag.  With ``--runas`` only the
parent's steps appear: the sandboxed child's stderr is ``/dev/null``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

_logger: Any = None


def enable() -> None:
    """Log every following `debug` call to stderr."""
    global _logger
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pvgrub-py: debug: %(message)s"))
    logger = logging.getLogger("pvgrub_py.bootloader")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    _logger = logger


def enabled() -> bool:
    return _logger is not None


def debug(message: str) -> None:
    if _logger is not None:
        _logger.debug("%s", message)
