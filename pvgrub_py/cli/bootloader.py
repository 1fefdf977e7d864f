"""``pvgrub-py``: the xl bootloader (``bootloader = "pvgrub-py"``)."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from pvgrub_py.errors import PvgrubError

#: Container objects allocated between two collections of the youngest
#: generation (CPython's default: 700).  A whole boot, imports included,
#: makes ~22 000 (bench/bench_bootloader.py), so with this no collection
#: runs at all: ~10 ms of the ~30 collections the default costs.  A hostile
#: config that keeps making cyclic garbage still triggers one every 50 000
#: objects, so what it can pile up stays bounded.  Set by `main`, before
#: the bootloader's modules are imported.
GC_THRESHOLD = 50_000

USAGE = """\
usage: pvgrub-py [-q|-i] [-l] [-n] [--entry=E] [--kernel=P] [--ramdisk=P|--initrd=P]
                 [--args=A] [--default_args=A] [--extra_args=A] [--offset=N]
                 [--isconfig] [--config-dialect=grub|petitboot] [--debug]
                 [--runas=UID] [--output=FILE] [--output-format=sxp|simple|simple0]
                 [--output-directory=DIR]
                 [--vtpm=URI] [--vtpm-uuid=UUID] [--require-vtpm] [--vtpm-label=LABEL]
                 [--vtpm-timeout=SECONDS] [--event-log=FILE] [--no-event-log-nv]
                 [--tpm2] DISK
       pvgrub-py -h|--help | -V|--version

Choose a guest kernel from DISK (a whole disk image, a partition or a bare
filesystem; MBR, GPT, LVM2 and qcow2; ext2/3/4, xfs, btrfs, FAT, iso9660)
the way GRUB would (grub.cfg with GRUB script semantics, BLS entries,
extlinux/isolinux, menu.lst), copy it and its initrd into the output
directory, measure them into the guest's vTPM exactly as pv-grub did
(PCR 4 <- kernel, PCR 5 <- cmdline, PCR 5 <- initrd) and tell the
toolstack what to boot.  libxl calls it as:

  pvgrub-py [--kernel=P] [--ramdisk=P] [--args=A] [--runas=UID --quiet]
            --output=FILE --output-format=simple0 --output-directory=DIR
            [bootloader_args ...] DISK

DISK must be a regular file or a block device (a FIFO, a character device
or a directory is refused at once).

options (pygrub's):
  -q, --quiet            no menu: boot the default (or --entry) entry.
  -i, --interactive      show the menu (the default, when stdin and stdout are
                         a terminal): Up/Down, Enter boots, 'e' edits this
                         boot's cmdline (what is measured is what is booted);
                         the config's timeout counts down to its default.
  -l, --list-entries     list the menu entries (the default marked '*') and
                         exit; nothing is extracted or measured.
  -n, --not-really       choose and measure, but write no kernel or ramdisk
                         copy; the result names the in-image paths.
  --entry=E              boot entry E: an index, a title, an id or a GRUB
                         "submenu>entry" path (implies -q).
  --kernel=P             boot the kernel at in-image path P instead of the
                         menu entry's (with no initrd unless --ramdisk).
  --ramdisk=P, --initrd=P
                         boot the initrd at in-image path P instead of the
                         entry's (--initrd is the name pvgrubctl uses).
  --args=A               append A to the entry's kernel arguments.
  --default_args=A       arguments for an entry that has none.
  --extra_args=A         append A after everything else.
  --offset=N             use only the filesystem starting at byte N of DISK
                         (0 <= N < 2^63).
  --isconfig             DISK is a boot config file (at most 1 MiB): print the
                         chosen kernel, initrd and args, and exit.
  --config-dialect=D     where GRUB and petitboot read a config differently,
                         follow D: grub (the default: what the guest's GRUB
                         would boot) or petitboot (menuentry bodies run where
                         they stand, `set a=b c` keeps every word, an untyped
                         search is a UUID search, a global syslinux APPEND is
                         kept before a label's; the README lists them all).
  --runas=UID            parse the disk as UID (1 to 4294967294) in a
                         sandboxed child (its own mount, IPC and network
                         namespaces, an empty root, 256 MiB of address space,
                         no new privileges); needs -q or --entry.  The parent
                         kills it after LIBXL_BOOTLOADER_TIMEOUT seconds
                         (default 120, 0: never).
  --output=FILE          write the result here (default, or '-': stdout).  FILE
                         is created 0600 or truncated; a symbolic link or
                         anything but a regular file is refused.
  --output-format=F      sxp (default), simple or simple0 (what libxl reads).
  --output-directory=DIR where the kernel and ramdisk copies go (created 0700
                         if missing, removed again if the run fails; default
                         /var/run/xen/pvgrub-py/).  The result names them by
                         absolute path.
  --debug                log each step (options, config, entry, vTPM and its
                         banks, each file's length and digests, each extend,
                         the event log, the result) to stderr.
  -h, --help             print this help and exit.
  -V, --version          print the version and exit.

measurement options (also from xl's bootloader_args):
  --vtpm=URI             the guest's vTPM: xen:BACKEND[/DEVID] (a tpmif
                         frontend to that backend domain), swtpm:tcp:HOST:PORT
                         or swtpm:unix:PATH.  A malformed URI is a usage error.
                         Its PCR 4 and 5 must be at their reset values (zero)
                         in every active bank, else nothing is measured and
                         nothing booted.
  --vtpm-uuid=UUID       which vTPM instance behind a xen: backend.
  --require-vtpm         fail closed: never boot unmeasured.
  --vtpm-label=LABEL     fail closed unless the XSM (FLASK) label of the xen:
                         vTPM's backend domain (the peer of the tpmif event
                         channel, read before any TPM command) is LABEL, or
                         ends with SUFFIX for "*SUFFIX"; it also fails when
                         the label cannot be read: a host without FLASK, a
                         swtpm: vTPM (no XSM label).
  --vtpm-timeout=SECONDS bound on reaching the vTPM (a xen: backend connecting,
                         the instance's fresh boot) and on each TPM command
                         (default 30, at most 3600).
  --event-log=FILE       write the TCG event log of this boot, atomically (a
                         symlink at FILE is replaced, never followed).  Written
                         only when the boot was measured: an unmeasured boot
                         writes none and removes an old file at FILE.
  --no-event-log-nv      do not hand the guest its event log in the vTPM.  By
                         default a measured boot into a TPM 2.0 vTPM stores
                         the crypto-agile log (the bytes --event-log writes)
                         in NV indices 0x0140F000.. defined under the platform
                         hierarchy, then disables that hierarchy (as platform
                         firmware does), so the guest can read the log
                         (pvgrubctl eventlog nv-read) but not change it.  A
                         failed delivery fails the boot with --require-vtpm or
                         --vtpm-label, else it is a warning.  TPM 1.2: none.
  --tpm2                 expect a TPM 2.0 vTPM (crypto-agile event log).

Without --vtpm, or with an unreachable one and neither --require-vtpm nor
--vtpm-label, the boot is unmeasured and a warning says so.

exit status: 0 success, 1 failure (nothing is left in the output directory
and the output file stays empty), 2 usage error."""


class Terminated(PvgrubError):
    """SIGTERM (libxl sends it when the domain dies during the bootloader)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM: nothing was booted")


def _main(argv: Sequence[str]) -> int:
    from pvgrub_py.bootloader.options import parse_options
    from pvgrub_py.bootloader.run import run as run_bootloader

    opts = parse_options(list(argv))
    if opts is None:
        print(USAGE)
        return 0
    if opts.version:
        from pvgrub_py import __version__

        print(f"pvgrub-py {__version__}")
        return 0
    from pvgrub_py.cli.common import show_warnings
    from pvgrub_py.cli.connect import VtpmConnector

    show_warnings("pvgrub-py")
    return run_bootloader(opts, connect=VtpmConnector())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pvgrub-py`` program; called with *argv*, an ordinary function.

    As a program (no *argv*), it exits at once when done: every file it
    wrote is closed and every child reaped by then, and skipping the
    interpreter's teardown of the disk readers' module state saves ~45 ms
    of a run that libxl waits for (bench/bench_bootloader.py).  It also
    sets `GC_THRESHOLD` before anything else is imported.
    """
    if argv is None:
        gc.set_threshold(GC_THRESHOLD)
        # Unwind like any failure: the output directory is emptied, the
        # sandboxed child killed and reaped, the output file left empty.
        signal.signal(signal.SIGTERM, _on_sigterm)
    from pvgrub_py.program import run

    status = run("pvgrub-py", _main, argv)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
