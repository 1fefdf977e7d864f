"""The error hierarchy every layer raises and the CLIs turn into one line.

Every error carries what a Xen admin needs to act: the file, the field, the
offset.  `exit_status` follows the usual convention: 2 for a usage error
(bad arguments), 1 for a failure while doing the work.
"""

from __future__ import annotations


class PvgrubError(Exception):
    """Base of every error this project raises on purpose."""

    exit_status = 1


class UsageError(PvgrubError):
    """The command line is wrong: a bad option value, a missing argument."""

    exit_status = 2


class InputError(PvgrubError):
    """A file the user named (or a guest disk holds) is missing or malformed."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
