"""Drop every privilege a guest-disk parser could abuse (XSA-443 class).

pygrub's ``depriv()`` (Xen tools/pygrub/src/pygrub, commit e0342ae555) runs
its parser in a forked child that unshares its mount, IPC and network
namespaces, lowers its rlimits, chroots into an empty tmpfs and becomes the
``--runas`` uid.  `enter_sandbox` does the same, in this order, each step
fatal if it fails (a half-dropped sandbox is worse than none, because the
admin believes in it):

1. ``unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET)``: no host network
   (only a down loopback), no SysV IPC objects of the host, and mounts
   that nobody else sees.  Python 3.11 has no ``os.unshare`` (3.12 does),
   so the libc function is called through ctypes;
2. ``mount --make-rprivate /`` so nothing we mount propagates back;
3. an empty read-only tmpfs mounted on *root* (a directory the parent
   created and will remove), then ``chroot``: the parser sees no host
   file at all.  If tmpfs cannot be mounted the empty directory itself
   is the root;
4. rlimits, soft = hard so they cannot be raised again: RLIMIT_AS 256 MiB
   (a size field claiming gigabytes ends in MemoryError, not in the
   dom0 OOM killer), RLIMIT_FSIZE 1 GiB, no core files, no processes
   (RLIMIT_NPROC 0: the child cannot fork), no locked memory and no
   POSIX message queues (as pygrub's ``downgrade_rlimits``);
5. ``PR_SET_NO_NEW_PRIVS``: no exec can ever regain privileges;
6. ``setgroups([])``, ``setresgid``, ``setresuid`` to the uid: the last
   step clears every capability;
7. ``PR_SET_PDEATHSIG(SIGKILL)`` (after the uid change, which clears it):
   the child dies with its parent.

The child receives the disk as an already-open descriptor and writes to a
pipe; it needs no path on the host after step 3.  Everything it will ever
import must be in hand before (`preload.prepare`), since the host's
Python library is not visible from inside the chroot.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Callable

from pvgrub_py.errors import PvgrubError
from pvgrub_py.record import record

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

MIB = 1 << 20
#: RLIMIT_FSIZE: the largest file the parser may write (it writes none: its
#: output goes to a pipe), a bound on writes, not on what it reads or boots.
WRITE_FILE_MAX = 1 << 30

#: (resource, limit) pairs applied as both soft and hard limits.
LIMITS: tuple[tuple[int, int], ...] = (
    (resource.RLIMIT_AS, 256 * MIB),
    (resource.RLIMIT_FSIZE, WRITE_FILE_MAX),
    (resource.RLIMIT_CORE, 0),
    (resource.RLIMIT_NPROC, 0),
    (resource.RLIMIT_MEMLOCK, 0),
    (resource.RLIMIT_MSGQUEUE, 0),
)


class SandboxError(PvgrubError):
    """A privilege-dropping step failed: the parser must not run."""


@record(frozen=True)
class SandboxReport:
    """What was achieved, for tests and ``--debug``."""

    tmpfs_root: bool


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"cannot deprivilege the parser: {what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    native = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        try:
            native(flags)
        except OSError as e:
            raise SandboxError(f"cannot deprivilege the parser: unshare: {e.strerror}") from None
        return
    fn = _lib().unshare
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    _check(fn(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
    fn = _lib().mount
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                   ctypes.c_char_p]  # fmt: skip
    fn.restype = ctypes.c_int
    _check(
        fn(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def prctl(option: int, arg: int) -> None:
    fn = _lib().prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    _check(fn(option, arg, 0, 0, 0), f"prctl({option})")


def _os_step(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except OSError as e:
        raise SandboxError(f"cannot deprivilege the parser: {what}: {e.strerror}") from None


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL) alone: for the unconfined parser child."""
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)


def enter_sandbox(uid: int, root: str, *, gid: int | None = None) -> SandboxReport:
    """Steps 1-7 of the module docstring, in the calling (forked) process."""
    if uid == 0:
        raise SandboxError("cannot deprivilege the parser: refusing uid 0")
    gid = uid if gid is None else gid
    parent = os.getppid()
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET)
    mount(None, "/", None, MS_REC | MS_PRIVATE, "")
    try:
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
              "size=4k,nr_inodes=4,mode=0555")  # fmt: skip
        tmpfs = True
    except SandboxError:
        tmpfs = False  # the empty directory we were given is the root then
    _os_step("chdir", os.chdir, root)
    _os_step("chroot", os.chroot, ".")
    _os_step("chdir /", os.chdir, "/")
    for res, value in LIMITS:
        _os_step(f"setrlimit({res})", resource.setrlimit, res, (value, value))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _os_step("setgroups", os.setgroups, [])
    _os_step("setresgid", os.setresgid, gid, gid, gid)
    _os_step("setresuid", os.setresuid, uid, uid, uid)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)
    if os.getresuid() != (uid, uid, uid) or os.getgroups():
        raise SandboxError("cannot deprivilege the parser: the uid change did not take")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SandboxError("cannot deprivilege the parser: uid 0 could be regained")
    return SandboxReport(tmpfs_root=tmpfs)
