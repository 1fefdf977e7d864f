"""One bootloader run, start to finish, leaving nothing behind on failure.

1. open the result descriptor (before any privilege is dropped, as pygrub),
   truncated, never through a symlink;
2. the guest side (`guest`): open the disk, find and parse its boot config,
   choose the entry (the interactive menu here, if any) - in a sandboxed
   child with ``--runas`` (`depriv`), else in-process;
3. open the vTPM (so the banks are known before any byte is hashed) and
   check that its PCR 4 and 5 are at their reset values;
4. create the output directory and stream kernel and initrd(s) from the
   guest side into exclusive 0600 files there, hashing every byte once for
   every bank;
5. check the guest side ended cleanly; write the event log, in full and
   fsynced, under a temporary name, and the result records (simple0/simple/
   sxp) to an --output file; with a TPM 2.0 vTPM, define the NV indices
   that hand the guest its log (`measure.vtpm.measure_into`); only then
   extend PCR 4/5 in pv-grub's order, write the log into those indices and
   rename the event log file into place;
6. write the result records to stdout when there is no --output file.

So everything that can fail is opened, created or written before the first
extend.  Any failure removes the extracted files and the directories this
run created, leaves --output empty and exits non-zero with one line naming
the file and the problem; warnings are printed only for a boot that went
ahead.  An unmeasured boot writes no event log: a log claims its extends
reached a TPM (an old file at the --event-log path is removed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys

from pvgrub_py.bootloader.debug import debug
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.plan import BootPlan
from pvgrub_py.errors import InputError
from pvgrub_py.inputs import describe_open_error, file_kind

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO

    from pvgrub_py.bootloader.guest import GuestSession
    from pvgrub_py.bootloader.outdir import OutputDirectory
    from pvgrub_py.disk.limits import Limits
    from pvgrub_py.eventlog.builder import PendingFile
    from pvgrub_py.measure.plan import Measurement
    from pvgrub_py.measure.vtpm import Connect, VtpmSession


def _print(out: BinaryIO, text: str) -> None:
    """A line of guest-derived text, its bytes as the config had them.

    Titles and paths decoded with ``surrogateescape`` go back to the exact
    bytes, whatever the locale; nothing guest-controlled can raise here.
    """
    out.write(text.encode("utf-8", "surrogateescape") + b"\n")


def list_entries(plan: BootPlan, out: BinaryIO) -> None:
    for i, line in enumerate(plan.menu):
        mark = "*" if i == plan.default_index else " "
        _print(out, f"{mark}{i:3d}  {line.title}")


def print_config(plan: BootPlan, out: BinaryIO) -> None:
    """pygrub's ``--isconfig`` report: the chosen kernel, initrd and args."""
    if plan.kernel is not None:
        _print(out, f"  kernel: {plan.kernel.path}")
    if plan.initrds:
        _print(out, f"  initrd: {' '.join(f.path for f in plan.initrds)}")
    _print(out, f"  args: {plan.args}")


def open_output(opts: BootloaderOptions) -> int:
    """The result fd, opened first, as pygrub does (before any privilege drop).

    Created 0600 if missing, truncated (a longer old file keeps no stale
    tail), never through a symlink (we run as root in a directory others may
    write to), and only a regular file: ``O_NONBLOCK`` keeps a FIFO from
    blocking the open, and anything else is refused.
    """
    if opts.output is None:
        return sys.stdout.fileno()
    name = opts.output
    flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
             | os.O_NOCTTY | os.O_CLOEXEC)  # fmt: skip
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(name, f"cannot open the output file: {describe_open_error(e)}") from None
    else:
        # Checked before the open, so that O_TRUNC never touches what we refuse.
        if not stat.S_ISREG(st.st_mode):
            raise InputError(name, f"output file {_refused(st.st_mode)}")
    try:
        fd = os.open(name, flags, 0o600)
    except OSError as e:
        problem = (
            "is a symbolic link: not followed (--output=- writes to stdout)"
            if e.errno == errno.ELOOP
            else describe_open_error(e)
        )
        raise InputError(name, f"cannot open the output file: {problem}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped in since the lstat
            raise InputError(name, f"output file {_refused(mode)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refused(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symbolic link: not followed (--output=- writes to stdout)"
    return f"is {file_kind(mode)}, not a regular file"


def open_session(
    opts: BootloaderOptions, limits: Limits | None, warnings: list[str] | None = None,
    *, fork: bool = False,
) -> GuestSession:  # fmt: skip
    """Step 2: the guest side, sandboxed with --runas, else here (with the menu).

    With *fork* and no menu to show, the guest side runs in a forked child
    all the same, unconfined (`depriv.spawn` with ``sandbox=False``): the
    bootloader gets its vTPM ready on the other core while it parses.  It
    costs ~10-15 ms of CPU (copy-on-write faults, the pipe) and saves
    ~30 ms of wall time when a second CPU is idle (bench_bootloader.py).
    """
    if opts.runas is not None:
        from pvgrub_py.bootloader.depriv import bootloader_timeout, spawn

        # The plan is read when first asked for: the parent opens the vTPM
        # while the child parses (`_run`).
        return spawn(opts, limits=limits, timeout=bootloader_timeout())
    interact = None
    if opts.interactive and not opts.list_entries:
        from pvgrub_py.bootloader.menu import terminal_menu

        interact = terminal_menu(opts, None if warnings is None else warnings.append)
    if fork and interact is None and not opts.isconfig:
        from pvgrub_py.bootloader.depriv import spawn

        # No deadline of libxl's here, as in-process: the disk layer's
        # own time budget bounds the parser.  The guest side is imported
        # by the child, while this process imports its own and opens the
        # vTPM (~5 ms of a boot when it was imported here, before the fork).
        return spawn(opts, limits=limits, timeout=None, sandbox=False)
    from pvgrub_py.bootloader.guest import open_local_session

    return open_local_session(opts, interact, limits=limits)


def run(opts: BootloaderOptions, *, connect: Connect, limits: Limits | None = None) -> int:
    """One run; *connect* reaches the vTPM of ``--vtpm`` (wired by the program)."""
    if opts.debug:
        from pvgrub_py.bootloader import debug as debug_module

        debug_module.enable()
    debug(f"disk {opts.disk}, output {opts.output or 'stdout'} ({opts.output_format}), "
          f"output directory {opts.output_directory}, vTPM {opts.vtpm or 'none'}")  # fmt: skip
    out_fd = open_output(opts)
    try:
        return _run(opts, out_fd, connect, limits)
    finally:
        if opts.output is not None:
            os.close(out_fd)


def _run(opts: BootloaderOptions, out_fd: int, connect: Connect, limits: Limits | None) -> int:
    # Printed only if the boot goes ahead: a failure is one line, its own.
    warnings: list[str] = []
    # A parser child only pays off with a second CPU to run it on.
    session = open_session(opts, limits, warnings, fork=len(os.sched_getaffinity(0)) > 1)
    try:
        early: VtpmSession | None = None
        early_warnings: list[str] = []
        elsewhere = getattr(session, "parses_elsewhere", False)
        if elsewhere and not (opts.list_entries or opts.isconfig):
            # The child is parsing: get the vTPM ready meanwhile.
            # Its warnings follow the plan's, as in an in-process run.
            from pvgrub_py.measure.vtpm import open_vtpm

            early = open_vtpm(opts.measure_policy(), connect, warn=early_warnings.append,
                              debug=debug)  # fmt: skip
            nv = early.client is not None and early.tpm2 and opts.event_log_nv
            _import_host_side(early.client is not None and bool(opts.event_log), nv)
            if nv:
                from pvgrub_py.measure.vtpm import clear_nv_range

                clear_nv_range(early, debug)
        try:
            booted = _boot(opts, session, early, early_warnings, out_fd, connect, limits,
                           warnings)  # fmt: skip
        finally:
            if early is not None:
                early.close()
    finally:
        session.close()
    if booted:
        from pvgrub_py.warning import warn

        for note in warnings:
            warn(note)
    return 0


def _import_host_side(event_log: bool, nv: bool) -> None:
    """What steps 4-6 import, imported while the child still parses."""
    import pvgrub_py.bootloader.extract
    import pvgrub_py.bootloader.outdir
    import pvgrub_py.bootloader.output
    import pvgrub_py.measure.boot_files
    import pvgrub_py.measure.extend

    if event_log or nv:
        import pvgrub_py.eventlog.builder
        import pvgrub_py.eventlog.codec
    if nv:
        import pvgrub_py.eventlog.nv_channel  # noqa: F401


def _boot(
    opts: BootloaderOptions, session: GuestSession, early: VtpmSession | None,
    early_warnings: list[str], out_fd: int, connect: Connect, limits: Limits | None,
    warnings: list[str],
) -> bool:  # fmt: skip
    """Steps 3-6 (*early*: the vTPM already open); False for -l and --isconfig."""
    from pvgrub_py.disk.limits import Limits

    limits = limits or Limits()
    plan = session.plan
    debug(f"config {plan.config}: {len(plan.menu)} entries, default {plan.default_index}")
    if opts.list_entries or opts.isconfig:
        session.finish()
        out = sys.stdout.buffer
        (list_entries if opts.list_entries else print_config)(plan, out)
        out.flush()
        return False
    from pvgrub_py.measure.vtpm import open_vtpm

    warnings.extend(plan.notes)
    if early is None:
        vtpm = open_vtpm(opts.measure_policy(), connect, warn=warnings.append, debug=debug)
    else:
        vtpm = early
        warnings.extend(early_warnings)
    try:
        # Imported here, not before the fork: the parser child never uses it.
        from pvgrub_py.bootloader.outdir import OutputDirectory

        with OutputDirectory(opts.output_directory) as outdir:
            _extract_measure(opts, session, vtpm, outdir, limits, warnings, out_fd)
            outdir.commit()
    finally:
        if early is None:
            vtpm.close()
    return True


def _write_result(opts: BootloaderOptions, out_fd: int, result: bytes) -> None:
    where = opts.output or "stdout"
    try:
        view = memoryview(result)
        while view:
            view = view[os.write(out_fd, view) :]
    except OSError as e:
        raise InputError(where, f"cannot write the result: {describe_open_error(e)}") from None
    debug(f"result written to {where}")


def _extract_measure(
    opts: BootloaderOptions,
    session: GuestSession,
    vtpm: VtpmSession,
    outdir: OutputDirectory,
    limits: Limits,
    warnings: list[str],
    out_fd: int,
) -> None:
    """Steps 4-6.

    A result file (``--output=FILE``, a regular file) is written before the
    first extend and truncated again if anything fails after it, so a full
    disk shows before a PCR moves; stdout cannot be taken back, so it gets
    the result after the extends.
    """
    from pvgrub_py.bootloader.extract import extract_session_files
    from pvgrub_py.bootloader.output import format_result
    from pvgrub_py.measure.boot_files import measure_cmdline
    from pvgrub_py.measure.vtpm import measure_into

    plan = session.plan
    banks = vtpm.banks
    assert plan.kernel is not None
    debug(f"chosen: kernel {plan.kernel.where}, "
          f"initrd {' '.join(f.where for f in plan.initrds) or '(none)'}")  # fmt: skip
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
    measurements = [kernel, cmdline, initrd]
    for m in measurements:
        digests = ", ".join(f"{bank} {d.hex()}" for bank, d in m.digests.items())
        debug(f"{m.what} ({m.length} bytes): {digests}")
    result = format_result(
        opts.output_format, kernel_path or plan.kernel.path, ramdisk_path, plan.args
    )
    if vtpm.client is None:
        if opts.event_log:
            warnings.append(_no_event_log(opts.event_log))
        _write_result(opts, out_fd, result)
        return
    log, pending = _prepare_event_log(opts, vtpm, measurements)
    to_file = opts.output is not None
    try:
        if to_file:
            _write_result(opts, out_fd, result)
        measure_into(vtpm, measurements, event_log=log if opts.event_log_nv else None,
                     debug=debug, warn=warnings.append)  # fmt: skip
        if pending is not None:
            pending.commit()
            debug(f"event log written to {opts.event_log}")
        if not to_file:
            _write_result(opts, out_fd, result)
    except BaseException:
        if to_file:
            with contextlib.suppress(OSError):
                os.ftruncate(out_fd, 0)
        raise
    finally:
        if pending is not None:
            pending.abort()


def _prepare_event_log(
    opts: BootloaderOptions, vtpm: VtpmSession, measurements: list[Measurement]
) -> tuple[bytes | None, PendingFile | None]:
    """The event log's bytes, when a file or the guest (a TPM 2.0 vTPM's NV)
    gets them, and the --event-log file written and fsynced under a
    temporary name: all that is left after the extends is a rename."""
    wanted_nv = opts.event_log_nv and vtpm.tpm2
    if not opts.event_log and not wanted_nv:
        return None, None
    from pvgrub_py.eventlog.builder import PendingFile, log_for_measurements
    from pvgrub_py.eventlog.codec import serialise

    data = serialise(log_for_measurements(measurements, vtpm.banks, tpm2=vtpm.tpm2))
    if not opts.event_log:
        return data, None
    pending = PendingFile(opts.event_log)
    try:
        pending.write(data)
    except BaseException:
        pending.abort()
        raise
    return data, pending


def _no_event_log(path: str) -> str:
    """No log for an unmeasured boot; and none left from an earlier boot."""
    try:
        st = os.lstat(path)
    except OSError:
        return f"{path}: no event log written: nothing was measured"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: no event log written: nothing was measured"
    try:
        os.unlink(path)
    except OSError as e:
        problem = describe_open_error(e)
        return (f"{path}: no event log written: nothing was measured; the file there "
                f"(not this boot's log) could not be removed: {problem}")  # fmt: skip
    return f"{path}: no event log written: nothing was measured (the old file there was removed)"
