"""``--runas``: parse the guest disk in a sandboxed child, measure in the parent.

XSA-443 showed that a guest controls every byte pygrub's parsers read, so
since then libxl runs the bootloader "restricted" and pygrub drops to a
per-domain uid before it touches the disk (Xen
tools/libs/light/libxl_bootloader.c and tools/pygrub/src/pygrub; commits
e0342ae555, 1f762642d2, 9c114178ff).  Here:

* The parent (root) opens the disk read-only, creates an empty directory
  for the child's root and a pipe, and forks.
* The child imports everything it may need (`preload.prepare`; nothing on
  the host is visible later), closes every other descriptor, enters the sandbox
  (`sandbox.enter_sandbox`: namespaces, empty root, rlimits, no new
  privileges, the uid) and only then opens the disk descriptor, finds and
  parses the config, chooses the entry and streams the files, as frames
  (`wire`), to the parent.  Any error is one ``FAIL`` line; the child
  never prints.
* The parent reads the plan and the file bytes under a deadline
  (`bootloader_timeout`: libxl's 120 s, ``LIBXL_BOOTLOADER_TIMEOUT``
  honoured, 0 for none), checks every announced length against its own
  caps, and hashes and writes what it receives itself, so what is
  measured is what is written.  On expiry, on a protocol violation or on
  any error of its own it kills the child (SIGKILL) and reaps it.

The parent cannot know what a compromised child "really" read; it only
guarantees that whatever arrives is bounded, measured and exactly what is
booted, which is what measured boot needs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable

from pvgrub_py.bootcfg.limits import MAX_CONFIG_BYTES
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.bootloader.plan import BootPlan, plan_from_json, plan_to_json
from pvgrub_py.bootloader.wire import (
    DATA,
    END,
    FAIL,
    MAP,
    PLAN,
    START,
    ChildTimeout,
    Deadline,
    FrameReader,
    ProtocolError,
    decode_extents,
    encode_extents,
    write_frame,
)
from pvgrub_py.disk.errors import one_line
from pvgrub_py.errors import InputError, PvgrubError, UsageError
from pvgrub_py.inputs import open_named_input

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootloader.choose import BootChoice
    from pvgrub_py.bootloader.guest import Sink
    from pvgrub_py.disk.extents import Extent
    from pvgrub_py.disk.limits import Limits

# The parent imports only what it needs to fork: the child imports the
# parsers (`preload.prepare`) while the parent gets its vTPM ready.

#: libxl_internal.h LIBXL_BOOTLOADER_TIMEOUT.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_ENV = "LIBXL_BOOTLOADER_TIMEOUT"
#: The largest timeout taken: libxl reads it as a C int; a deadline further
#: off would not fit the clocks ``select`` and ``time`` use.
MAX_TIMEOUT = (1 << 31) - 1
#: Linux F_SETPIPE_SZ: a 1 MiB pipe moves a 1 MiB chunk in one go.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20

#: A test may pass a probe that runs in the child right after the drop.
Probe = Callable[[], None]


def bootloader_timeout(environ: dict[str, str] | None = None) -> float | None:
    """libxl's bootloader timeout in seconds; None when disabled (``0``)."""
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV)
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT
    digits = text.strip()
    if digits.startswith("-") and digits[1:].isascii() and digits[1:].isdigit():
        raise UsageError(f"{TIMEOUT_ENV}={text!r} must not be negative")
    if not digits.isascii() or not digits.isdigit():
        raise UsageError(f"{TIMEOUT_ENV}={text!r} is not a whole number of seconds")
    if len(digits) > len(str(MAX_TIMEOUT)) or int(digits) > MAX_TIMEOUT:
        raise UsageError(f"{TIMEOUT_ENV}={text!r} is out of range (at most {MAX_TIMEOUT} s)")
    seconds = int(digits)
    return None if seconds == 0 else float(seconds)


class RemoteSession:
    """The parent's end: a `GuestSession` fed by the (sandboxed) child."""

    #: The plan is made in another process: the caller can get its vTPM
    #: ready while it is (`run`).
    parses_elsewhere = True

    def __init__(
        self, pid: int, fd: int, root: str, deadline: Deadline, source: str, disk_fd: int = -1
    ) -> None:
        self.pid = pid
        self._fd = fd
        #: The parent's own descriptor of the image: mapped files are read here.
        self._disk_fd = disk_fd
        self._root = root
        self._source = source
        self._reader = FrameReader(fd, deadline)
        self._next = 0
        self._plan: BootPlan | None = None
        self._status: int | None = None

    # -- protocol --------------------------------------------------------
    def _failed(self, payload: bytes) -> PvgrubError:
        """The child's FAIL line (scrubbed: it is guest-influenced text)."""
        text = one_line(payload.decode("utf-8", "replace"), limit=1000)
        self._reap(kill=False)
        return PvgrubError(text or "deprivileged parser failed without a message")

    def _frame(self, *allowed: bytes) -> tuple[bytes, bytes]:
        try:
            kind, payload = self._reader.read_frame(allowed)
        except ProtocolError as e:
            # A child that died mid-way (the OOM killer, a crash) explains a
            # short pipe better than the pipe does.
            status = self._exit_status(grace=1.0) if e.truncated else None
            self._reap(kill=True)
            if status is not None and status != 0:
                raise ProtocolError(f"deprivileged parser {self._describe(status)}") from None
            raise
        except ChildTimeout:
            self._reap(kill=True)
            raise
        if kind == FAIL:
            raise self._failed(payload)
        return kind, payload

    def read_plan(self) -> BootPlan:
        _, payload = self._frame(PLAN)
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._reap(kill=True)
            raise ProtocolError("deprivileged parser: the plan is not JSON") from None
        try:
            self._plan = plan_from_json(doc, self._source)
        except InputError:
            self._reap(kill=True)
            raise
        return self._plan

    @property
    def plan(self) -> BootPlan:
        if self._plan is None:
            return self.read_plan()
        return self._plan

    def stream(self, index: int, sink: Sink, cap: int) -> int:
        files = self.plan.files
        if index != self._next or index >= len(files):
            raise ProtocolError(f"deprivileged parser: file {index} asked for out of order")
        _, payload = self._frame(START)
        try:
            start = json.loads(payload.decode("utf-8"))
            got_index, size = start["index"], start["size"]
            mapped = start.get("mapped", False)
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError):
            self._reap(kill=True)
            raise ProtocolError("deprivileged parser: malformed START frame") from None
        if (
            got_index != index
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(mapped, bool)
            or (mapped and self._disk_fd < 0)
        ):
            self._reap(kill=True)
            raise ProtocolError(f"deprivileged parser: START {start!r} where file {index} was due")
        role = "kernel" if index == 0 else "initrd"
        if size > cap:
            self._reap(kill=True)
            raise InputError(
                files[index].where, f"{role} of {size} bytes exceeds the {cap}-byte cap"
            )
        if mapped:
            done = self._copy_mapped(index, role, size, sink)
            self._next += 1
            return done
        done = 0
        while done < size:
            _, chunk = self._frame(DATA)
            if not chunk or done + len(chunk) > size:
                self._reap(kill=True)
                raise ProtocolError(
                    f"deprivileged parser: {role} data overruns the announced {size} bytes"
                )
            done += len(chunk)
            sink(chunk)
        self._next += 1
        return done

    def _copy_mapped(self, index: int, role: str, size: int, sink: Sink) -> int:
        """Read file *index* from the image where the child says it lies.

        A sink that copies extents itself (``extract.Feed.copy_extents``:
        through reused buffers into a regular output file, then hashed) is
        handed the checked map; any other is fed ``pread`` chunks.
        """
        from pvgrub_py.disk.extents import check_extents, copy_extents

        _, payload = self._frame(MAP)
        try:
            extents = decode_extents(payload)
        except ProtocolError:
            self._reap(kill=True)
            raise
        problem = check_extents(extents, size, _image_size(self._disk_fd))
        if problem is not None:
            self._reap(kill=True)
            raise ProtocolError(f"deprivileged parser: the map of the {role}: {problem}")
        where = self.plan.files[index].where
        copy_itself = getattr(sink, "copy_extents", None)
        if copy_itself is not None:
            return int(copy_itself(self._disk_fd, extents, where))
        return copy_extents(self._disk_fd, extents, sink, source=where)

    def finish(self) -> None:
        self._frame(END)
        status = self._reap(kill=False)
        if status != 0:
            raise ProtocolError(f"deprivileged parser {self._describe(status)} after its result")

    # -- process ---------------------------------------------------------
    @staticmethod
    def _describe(status: int | None) -> str:
        if status is None:
            return "vanished"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                return f"was killed by signal {signal.Signals(sig).name}"
            except ValueError:
                return f"was killed by signal {sig}"
        return f"exited with status {os.WEXITSTATUS(status)}"

    def _exit_status(self, grace: float) -> int | None:
        """The child's status if it exits within *grace* seconds on its own."""
        if self._status is not None or self.pid <= 0:
            return self._status
        end = time.monotonic() + grace
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._status = status
                return status
            if time.monotonic() >= end:
                return None
            time.sleep(0.005)

    def _reap(self, *, kill: bool) -> int | None:
        if self._status is None and self.pid > 0:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self._status = status
        self._cleanup()
        return self._status

    def _cleanup(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._disk_fd >= 0:
            os.close(self._disk_fd)
            self._disk_fd = -1
        if self._root:
            with contextlib.suppress(OSError):
                os.rmdir(self._root)

    def close(self) -> None:
        self._reap(kill=True)


def spawn(
    opts: BootloaderOptions,
    *,
    limits: Limits | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    probe: Probe | None = None,
    sandbox: bool = True,
) -> RemoteSession:
    """Fork the sandboxed parser; the caller reads the plan with ``read_plan``.

    With ``sandbox=False`` (no ``--runas``) the child parses as this
    process would, unconfined: the fork only lets the parent import its own
    side and open the vTPM on the other core meanwhile.  It speaks the same
    protocol, so the parent checks and reads the same way.
    """
    if sandbox and opts.runas is None:
        raise UsageError("deprivileged parsing needs --runas")
    # Regular files (and block devices for a disk) only: a FIFO must not block us.
    if opts.isconfig:
        disk_fd = open_named_input(opts.disk, "config file", max_size=MAX_CONFIG_BYTES)
    else:
        disk_fd = open_named_input(opts.disk, "disk image", allow_block_device=True,
                                   max_size=None)  # fmt: skip
    root = ""
    if sandbox:
        try:
            root = _make_root()
        except OSError as e:
            os.close(disk_fd)
            raise InputError(_tmpdir(), f"cannot create the sandbox root: {e.strerror}") from None
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_SIZE)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported over the pipe
        os.close(read_fd)
        _child(opts, disk_fd, write_fd, root, limits, timeout, probe, sandbox)
    os.close(write_fd)
    if opts.isconfig:
        os.close(disk_fd)
        disk_fd = -1
    source = os.path.basename(opts.disk) or opts.disk
    return RemoteSession(pid, read_fd, root, Deadline(timeout), source, disk_fd)


def _tmpdir() -> str:
    """``tempfile.gettempdir()`` where its answer is plain (importing tempfile
    costs a boot ~3 ms): ``$TMPDIR`` if it is an absolute directory, else /tmp."""
    where = os.environ.get("TMPDIR", "")
    if os.path.isabs(where) and os.path.isdir(where):
        return where
    if not where and os.path.isdir("/tmp"):
        return "/tmp"
    import tempfile

    return tempfile.gettempdir()


def _make_root() -> str:
    """A fresh, empty 0700 directory, as ``tempfile.mkdtemp`` makes one."""
    base = _tmpdir()
    for _ in range(100):
        path = os.path.join(base, "pvgrub-py-root." + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused name for the sandbox root")


def _image_size(fd: int) -> int:
    """The image's size as the child's `FdSource` sees it."""
    st = os.fstat(fd)
    return st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(fd, 0, os.SEEK_END)


def _child(
    opts: BootloaderOptions,
    disk_fd: int,
    out: int,
    root: str,
    limits: Limits | None,
    timeout: float | None,
    probe: Probe | None,
    sandbox: bool = True,
) -> None:  # pragma: no cover - forked child
    """Never returns: exits 0 after END, 1 after FAIL."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = sorted({0, 1, 2, disk_fd, out})
        lo = 3
        for fd in keep:
            if fd >= lo:
                os.closerange(lo, fd)
                lo = fd + 1
        os.closerange(lo, 65536)
        if sandbox:
            from pvgrub_py.bootloader.preload import prepare
            from pvgrub_py.bootloader.sandbox import enter_sandbox

            prepare()
            enter_sandbox(opts.runas or 0, root)
        else:
            from pvgrub_py.bootloader.sandbox import die_with_parent

            die_with_parent()
        if probe is not None:
            probe()
        _serve(opts, disk_fd, out, limits, timeout)
        status = 0
    except MemoryError:
        limit = " (256 MiB limit)" if sandbox else ""
        _fail(out, f"{os.path.basename(opts.disk)}: the parser ran out of memory"
                   f"{limit}: corrupt or hostile image")  # fmt: skip
    except PvgrubError as e:
        _fail(out, str(e))
    except BaseException as e:
        _fail(out, f"{os.path.basename(opts.disk)}: parser failed: {type(e).__name__}: {e}")
    os._exit(status)


def _fail(out: int, text: str) -> None:  # pragma: no cover - forked child
    data = one_line(text, limit=1000).encode("utf-8", "replace")[:4096]
    with contextlib.suppress(OSError):
        write_frame(out, FAIL, data)


def _serve(
    opts: BootloaderOptions,
    disk_fd: int,
    out: int,
    limits: Limits | None,
    timeout: float | None,
) -> None:  # pragma: no cover - forked child
    from pvgrub_py.bootloader.choose import open_guest_disk
    from pvgrub_py.bootloader.guest import (
        open_planned,
        plan_boot,
        plan_config_file,
        read_config_file,
        role_of,
    )
    from pvgrub_py.disk.budget import DEFAULT_SECONDS, Budget, cpu_deadline
    from pvgrub_py.disk.extract import Limits, stream_open_file

    limits = limits or Limits()

    name = os.path.basename(opts.disk) or opts.disk
    if opts.isconfig:
        plan = plan_config_file(read_config_file(disk_fd), opts.disk, opts)
        write_frame(out, PLAN, json.dumps(plan_to_json(plan)).encode("utf-8"))
        write_frame(out, END)
        return
    # The disk layer's own budget ends a looping reader a little before the
    # parent's deadline, so the admin reads why instead of "killed".
    seconds = DEFAULT_SECONDS if timeout is None else max(1.0, min(DEFAULT_SECONDS, timeout - 2))
    budget = Budget(seconds, source=name)
    # Everything up to the maps reads the guest's metadata under one arming
    # of the budget's alarm (`cpu_deadline` is re-entrant: the readers'
    # own guards, ~80 a boot at ~6 us each, nest in it); the frames are
    # written after it, so an expiry never cuts one in half.
    with cpu_deadline(budget):
        disk = open_guest_disk(disk_fd, opts, name=name, budget=budget)
        plan, choice = plan_boot(disk, opts)
        maps = [] if choice is None else _map_files(choice, len(plan.files), limits)
    write_frame(out, PLAN, json.dumps(plan_to_json(plan)).encode("utf-8"))
    for index, fmap in enumerate(maps):
        if fmap is not None:
            size, extents = fmap
            start = {"index": index, "size": size, "mapped": True}
            write_frame(out, START, json.dumps(start).encode())
            write_frame(out, MAP, encode_extents(extents))
            continue
        assert choice is not None
        # Not mapped (compressed, inline, a reader without runs): streamed,
        # each read under the readers' own guards.
        with open_planned(choice, index) as stream:
            role = role_of(index)
            write_frame(out, START, json.dumps({"index": index, "size": stream.size}).encode())

            def send(chunk: bytes) -> None:
                write_frame(out, DATA, chunk)

            stream_open_file(stream, send, role=role, cap=limits.cap(role))
    write_frame(out, END)


def _map_files(
    choice: BootChoice, count: int, limits: Limits
) -> list[tuple[int, list[Extent]] | None]:  # pragma: no cover - forked child
    """Each planned file's size and extents in the image, capped; None for
    one that does not map onto the image (it is streamed instead)."""
    from pvgrub_py.bootloader.guest import open_planned, role_of
    from pvgrub_py.disk.extents import map_file
    from pvgrub_py.disk.extract import check_cap

    maps: list[tuple[int, list[Extent]] | None] = []
    for index in range(count):
        with open_planned(choice, index) as stream:
            fmap = map_file(stream)
            if fmap is None:
                maps.append(None)
                continue
            role = role_of(index)
            check_cap(stream, role, limits.cap(role))
            maps.append((stream.size, fmap.extents))
    return maps
