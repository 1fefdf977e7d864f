"""Measure the chosen boot into the guest's vTPM, with pv-grub's policy.

The vTPM is reached before anything is extracted, so its active banks are
known and every file is hashed once in all of them.  Then, in pv-grub's
order: PCR 4 <- kernel, PCR 5 <- cmdline, PCR 5 <- initrd.

* no ``--vtpm``: boot unmeasured, with a warning;
* ``--vtpm`` that cannot be reached: without ``--require-vtpm``/
  ``--vtpm-label`` boot unmeasured with a warning (pv-grub booted silently
  when ``init_tpmfront`` failed); with them, fail closed;
* a reached vTPM whose extend fails: always fatal (pv-grub asserted);
* ``--vtpm-label``: the backend's security label must match; where it
  cannot be read the boot fails closed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.policy import vtpm_label_matches
from pvgrub_py.errors import PvgrubError
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.algorithms import DEFAULT_BANKS, SHA1, HashAlgorithm

if TYPE_CHECKING:
    # The TPM stack is imported only when a --vtpm is given: an unmeasured
    # boot should not pay for it (bench/bench_bootloader.py).
    from pvgrub_py.tpm.client import TpmClient


class MeasuredBootError(PvgrubError):
    """The user asked for a measured boot and it cannot be had: do not boot."""


@dataclass
class VtpmSession:
    client: TpmClient | None
    banks: tuple[HashAlgorithm, ...]
    tpm2: bool

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def warn(message: str) -> None:
    print(f"pvgrub-py: warning: {message}", file=sys.stderr)


def backend_label(uri: str) -> str | None:
    """The vTPM backend's XSM label, where the platform can tell it.

    FLASK labels are not available through the interfaces we have (neither
    on the simulator nor on a host without XSM), so this is None and
    ``--vtpm-label`` fails closed.
    """
    return None


def open_vtpm(opts: BootloaderOptions, sim_dir: str | None = None) -> VtpmSession:
    default_banks = DEFAULT_BANKS if opts.tpm2 else (SHA1,)
    if opts.vtpm is None:
        warn("no --vtpm given: booting unmeasured")
        return VtpmSession(None, default_banks, opts.tpm2)
    from pvgrub_py.tpm.client import TpmClient
    from pvgrub_py.tpm.uri import open_transport, parse_vtpm_uri

    try:
        transport = open_transport(
            parse_vtpm_uri(opts.vtpm),
            uuid=opts.vtpm_uuid,
            sim_dir=sim_dir,
            timeout=opts.vtpm_timeout,
        )
        client = TpmClient(transport)
    except PvgrubError as e:
        if opts.measurement_required:
            raise MeasuredBootError(
                f"vTPM {opts.vtpm} unavailable and a measured boot is required: {e}"
            ) from None
        warn(f"vTPM {opts.vtpm} unavailable ({e}): booting unmeasured")
        return VtpmSession(None, default_banks, opts.tpm2)
    try:
        if opts.vtpm_label is not None:
            label = backend_label(opts.vtpm)
            if label is None:
                raise MeasuredBootError(
                    f"cannot verify vtpm label of {opts.vtpm}: no XSM label available"
                )
            if not vtpm_label_matches(label, opts.vtpm_label):
                raise MeasuredBootError(f"mismatched vtpm label: {label!r} != {opts.vtpm_label!r}")
        tpm2 = client.version == "2.0"
        if opts.tpm2 and not tpm2:
            raise MeasuredBootError(
                f"vTPM {opts.vtpm} is a TPM {client.version}, --tpm2 asked for 2.0"
            )
        banks = client.active_banks()
    except BaseException:
        client.close()
        raise
    return VtpmSession(client, banks, tpm2)


def measure_into(session: VtpmSession, measurements: Sequence[Measurement]) -> bool:
    """Extend; True if measured.  Any TPM failure here is fatal."""
    if session.client is None:
        return False
    from pvgrub_py.measure.extend import extend_measurements
    from pvgrub_py.tpm.errors import TpmError

    try:
        extend_measurements(session.client, measurements)
    except TpmError as e:
        raise MeasuredBootError(f"measurement failed, not booting: {e}") from None
    return True
