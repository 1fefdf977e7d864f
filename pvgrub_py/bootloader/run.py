"""One bootloader run, start to finish, leaving nothing behind on failure.

1. open the result descriptor (before any privilege is dropped, as pygrub);
2. the guest side (`guest`): open the disk, find and parse its boot config,
   choose the entry (the interactive menu here, if any) - in a sandboxed
   child with ``--runas`` (`depriv`), else in-process;
3. open the vTPM (so the banks are known before any byte is hashed);
4. stream kernel and initrd(s) from the guest side into exclusive 0600
   files in the output directory, hashing every byte once for every bank;
5. check the guest side ended cleanly, extend PCR 4/5 in pv-grub's order,
   write the event log (atomically);
6. only then write the result records (simple0/simple/sxp) to --output.

Any failure before step 6 removes the extracted files, leaves --output
empty and exits non-zero with one line naming the file and the problem.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

from pvgrub_py.bootloader.guest import GuestSession
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.outdir import OutputDirectory
from pvgrub_py.bootloader.output import format_result
from pvgrub_py.bootloader.plan import BootPlan
from pvgrub_py.disk.extract import Limits
from pvgrub_py.errors import InputError

if TYPE_CHECKING:
    from pvgrub_py.bootloader.measure import VtpmSession


def list_entries(plan: BootPlan, out: TextIO) -> None:
    for i, line in enumerate(plan.menu):
        mark = "*" if i == plan.default_index else " "
        print(f"{mark}{i:3d}  {line.title}", file=out)


def print_config(plan: BootPlan, out: TextIO) -> None:
    """pygrub's ``--isconfig`` report: the chosen kernel, initrd and args."""
    if plan.kernel is not None:
        print(f"  kernel: {plan.kernel.path}", file=out)
    if plan.initrds:
        print(f"  initrd: {' '.join(f.path for f in plan.initrds)}", file=out)
    print(f"  args: {plan.args}", file=out)


def open_output(opts: BootloaderOptions) -> int:
    """The result fd, opened first, as pygrub does (before any privilege drop)."""
    if opts.output is None:
        return sys.stdout.fileno()
    try:
        return os.open(opts.output, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(opts.output, f"cannot open the output file: {e.strerror}") from None


def open_session(opts: BootloaderOptions, limits: Limits) -> GuestSession:
    """Step 2: the guest side, sandboxed with --runas, else here (with the menu)."""
    if opts.runas is not None:
        from pvgrub_py.bootloader.depriv import bootloader_timeout, spawn

        remote = spawn(opts, limits=limits, timeout=bootloader_timeout())
        try:
            remote.read_plan()
        except BaseException:
            remote.close()
            raise
        return remote
    from pvgrub_py.bootloader.guest import open_local_session

    interact = None
    if opts.interactive and not opts.list_entries:
        from pvgrub_py.bootloader.menu import terminal_menu

        interact = terminal_menu(opts)
    return open_local_session(opts, interact, limits=limits)


def run(
    opts: BootloaderOptions, *, sim_dir: str | None = None, limits: Limits | None = None
) -> int:
    limits = limits or Limits()
    out_fd = open_output(opts)
    session = open_session(opts, limits)
    try:
        plan = session.plan
        if opts.list_entries or opts.isconfig:
            session.finish()
            (list_entries if opts.list_entries else print_config)(plan, sys.stdout)
            return 0
        from pvgrub_py.bootloader.measure import open_vtpm, warn

        for note in plan.notes:
            warn(note)
        vtpm = open_vtpm(opts, sim_dir)
        try:
            with OutputDirectory(opts.output_directory) as outdir:
                result = _extract_measure(opts, session, vtpm, outdir, limits)
                os.write(out_fd, result)
                outdir.commit()
        finally:
            vtpm.close()
    finally:
        session.close()
    return 0


def _extract_measure(
    opts: BootloaderOptions,
    session: GuestSession,
    vtpm: VtpmSession,
    outdir: OutputDirectory,
    limits: Limits,
) -> bytes:
    """Steps 4-5; returns the result records for step 6."""
    from pvgrub_py.bootloader.extract import extract_session_files
    from pvgrub_py.bootloader.measure import measure_into
    from pvgrub_py.measure.boot_files import measure_cmdline

    plan = session.plan
    banks = vtpm.banks
    assert plan.kernel is not None
    # Refuse a separator-carrying cmdline (XSA-198 class) before anything is copied.
    cmdline = measure_cmdline(plan.args, banks)
    kernel_path: str | None = None
    ramdisk_path: str | None = None
    if opts.not_really:
        kernel, initrd = extract_session_files(session, None, None, banks, limits)
    else:
        kernel_path, kernel_fd = outdir.create_fd("boot_kernel")
        ramdisk_fd: int | None = None
        try:
            if plan.initrds:
                ramdisk_path, ramdisk_fd = outdir.create_fd("boot_ramdisk")
            kernel, initrd = extract_session_files(session, kernel_fd, ramdisk_fd, banks, limits)
        finally:
            os.close(kernel_fd)
            if ramdisk_fd is not None:
                os.close(ramdisk_fd)
    session.finish()
    result = format_result(
        opts.output_format, kernel_path or plan.kernel.path, ramdisk_path, plan.args
    )
    measurements = [kernel, cmdline, initrd]
    measure_into(vtpm, measurements)
    if opts.event_log:
        from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
        from pvgrub_py.eventlog.codec import serialise

        log = log_for_measurements(measurements, banks, tpm2=vtpm.tpm2)
        write_atomic(opts.event_log, serialise(log))
    return result
