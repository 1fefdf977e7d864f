"""Extend a measurement plan into a live TPM, pv-grub style.

All extends go over one connection, in plan order; the first failure of any
kind (a non-zero return code, a malformed answer, a broken channel) stops
the sequence and propagates, so the caller's boot stops with it, as
pv-grub's ``ASSERT(rv == 0 && resp->status == 0)`` stopped the guest.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.errors import UsageError
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.client import TpmClient


def check_covers_banks(client: TpmClient, measurements: Sequence[Measurement]) -> None:
    """Refuse before the first extend if any active bank was not hashed."""
    for m in measurements:
        missing = [a.name for a in client.active_banks() if a.name not in m.digests]
        if missing:
            raise UsageError(
                f"the TPM has active banks {', '.join(missing)} that the {m.what} was not hashed in"
            )


def extend_measurements(client: TpmClient, measurements: Sequence[Measurement]) -> None:
    check_covers_banks(client, measurements)
    for m in measurements:
        client.extend(m.pcr, m.digests)
