"""One bootloader run, start to finish, leaving nothing behind on failure.

1. open the vTPM (so the banks are known before any byte is hashed);
2. open the guest disk, find and parse its boot config, choose the entry;
3. stream kernel and initrd(s) into exclusive 0600 files in the output
   directory, hashing every byte once for every bank;
4. extend PCR 4/5 in pv-grub's order; write the event log (atomically);
5. only then write the result records (simple0/simple/sxp) to --output.

Any failure before step 5 removes the extracted files, leaves --output
empty and exits non-zero with one line naming the file and the problem.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from pvgrub_py.bootcfg.entry import BootMenu
from pvgrub_py.bootloader.choose import BootChoice, choose
from pvgrub_py.bootloader.extract import extract_initrds, extract_kernel
from pvgrub_py.bootloader.measure import VtpmSession, measure_into, open_vtpm, warn
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.outdir import OutputDirectory
from pvgrub_py.bootloader.output import format_result
from pvgrub_py.disk.extract import Limits
from pvgrub_py.disk.volumes import open_disk
from pvgrub_py.errors import InputError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import serialise
from pvgrub_py.measure.boot_files import measure_cmdline


def list_entries(menu: BootMenu, out: TextIO) -> None:
    for i, entry in enumerate(menu.entries):
        mark = "*" if i == menu.default_index else " "
        print(f"{mark}{i:3d}  {entry.title_path or entry.title}", file=out)


def open_output(opts: BootloaderOptions) -> int:
    """The result fd, opened first, as pygrub does (before any privilege drop)."""
    if opts.output is None:
        return sys.stdout.fileno()
    try:
        return os.open(opts.output, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(opts.output, f"cannot open the output file: {e.strerror}") from None


def run(
    opts: BootloaderOptions, *, sim_dir: str | None = None, limits: Limits | None = None
) -> int:
    limits = limits or Limits()
    out_fd = open_output(opts)
    if opts.interactive:
        warn("the interactive menu is not available yet: booting the default entry")
    with open_disk(opts.disk) as disk:
        if opts.list_entries:
            menu_only = choose(disk, opts).menu
            list_entries(menu_only, sys.stdout)
            return 0
        choice = choose(disk, opts)
        session = open_vtpm(opts, sim_dir)
        try:
            with OutputDirectory(opts.output_directory) as outdir:
                result = _extract_measure(opts, choice, session, outdir, limits)
                os.write(out_fd, result)
                outdir.commit()
        finally:
            session.close()
    return 0


def _extract_measure(
    opts: BootloaderOptions,
    choice: BootChoice,
    session: VtpmSession,
    outdir: OutputDirectory,
    limits: Limits,
) -> bytes:
    """Steps 3-4; returns the result records for step 5."""
    banks = session.banks
    kernel_path: str | None = None
    ramdisk_path: str | None = None
    if opts.not_really:
        kernel = extract_kernel(choice.kernel, None, banks, limits)
        initrd = extract_initrds(choice.initrds, None, banks, limits)
    else:
        kernel_path, kernel_out = outdir.create("boot_kernel")
        with kernel_out:
            kernel = extract_kernel(choice.kernel, kernel_out, banks, limits)
        if choice.initrds:
            ramdisk_path, ramdisk_out = outdir.create("boot_ramdisk")
            with ramdisk_out:
                initrd = extract_initrds(choice.initrds, ramdisk_out, banks, limits)
        else:
            initrd = extract_initrds((), None, banks, limits)
    measurements = [kernel, measure_cmdline(choice.args, banks), initrd]
    # Refuse a separator-carrying cmdline (XSA-198 class) before measuring it.
    result = format_result(
        opts.output_format, kernel_path or choice.kernel.path, ramdisk_path, choice.args
    )
    measure_into(session, measurements)
    if opts.event_log:
        log = log_for_measurements(measurements, banks, tpm2=session.tpm2)
        write_atomic(opts.event_log, serialise(log))
    return result
