"""The files an attest verb writes: all of them or none.

Each file is written in full under a temporary name (`PendingFile`) before
any is renamed into place, so a failure (a missing directory, a full disk,
a path naming a device) leaves every output path as it was.  A secret is
created 0600 from the start, never readable by others even while pending.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pvgrub_py.errors import InputError
from pvgrub_py.eventlog.builder import PendingFile


@dataclass(frozen=True)
class Output:
    path: str
    data: bytes
    secret: bool = False


def write_outputs(outputs: Sequence[Output]) -> None:
    """Write every output, or (on any failure) none of them."""
    paths = [os.path.abspath(o.path) for o in outputs]
    if len(set(paths)) != len(paths):
        raise InputError(outputs[0].path, "the same file is named for two outputs")
    pending: list[PendingFile] = []
    try:
        for out in outputs:
            p = PendingFile(out.path)
            pending.append(p)
            if out.secret and p.tmp is not None:
                try:
                    os.chmod(p.tmp, 0o600)
                except OSError as e:
                    raise InputError(out.path, f"cannot write: {e.strerror or e}") from None
            p.write(out.data)
    except BaseException:
        for p in pending:
            p.abort()
        raise
    for p in pending:
        p.commit()
