"""The PCRs a boot of a guest disk will produce, without booting it.

``pvgrubctl predict DISK`` must agree with what ``pvgrub-py`` leaves in the
vTPM, so it runs the bootloader's own code: the same guest session (the
same config search, parser and ``choose()``, deprivileged with
``--runas``), the same one-pass stream-and-hash of the kernel and the
initrds (`extract`), the same cmdline measurement, and only skips the
output files and the TPM.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.bootloader.extract import extract_session_initrds, extract_session_kernel
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.disk.extract import Limits
from pvgrub_py.measure.boot_files import measure_cmdline
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.algorithms import HashAlgorithm


def measure_disk(
    opts: BootloaderOptions, banks: Sequence[HashAlgorithm], *, limits: Limits | None = None
) -> list[Measurement]:
    """pv-grub's three measurements for the entry the bootloader would pick."""
    from pvgrub_py.bootloader.run import open_session

    limits = limits or Limits()
    session = open_session(opts, limits)
    try:
        cmdline = measure_cmdline(session.plan.args, banks)
        kernel = extract_session_kernel(session, None, banks, limits)
        initrd = extract_session_initrds(session, None, banks, limits)
        session.finish()
    finally:
        session.close()
    return [kernel, cmdline, initrd]
