"""The event log of a pv-grub boot: built from its measurements, written safely.

The log is the record a verifier needs to replay PCR 4 and 5: one EV_IPL
event per `Measurement`, in extend order, with the very digests that were
extended and the event data `Measurement.event_data` defines.  It is built
from the same `Measurement` values the TPM extender consumes, so the two
cannot disagree.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Sequence

from pvgrub_py.errors import InputError, PvgrubError, UsageError
from pvgrub_py.eventlog.codec import spec_id_header_event
from pvgrub_py.eventlog.records import Event, EventLog, SpecIdEvent
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.tpm.algorithms import SHA1, HashAlgorithm

#: TCG_EfiSpecIDEventStruct fields for the logs we write (PFP 1.04 §9.4.5.1):
#: platformClass 0 (client), spec version 2.0 errata 0 and uintnSize 2 (UINTN
#: is 64 bits), the values every crypto-agile fixture from real firmware and
#: tpm2-tools' own test logs carry.  (PFP 1.04 itself says errata 2; no reader
#: we know of acts on it, and matching deployed firmware is the safer bet.)
SPEC_PLATFORM_CLASS = 0
SPEC_VERSION_MAJOR = 2
SPEC_VERSION_MINOR = 0
SPEC_ERRATA = 0
SPEC_UINTN_SIZE = 2


def spec_id_for(banks: Sequence[HashAlgorithm]) -> SpecIdEvent:
    """The SpecID event declaring ``banks``, in that order."""
    return SpecIdEvent(
        platform_class=SPEC_PLATFORM_CLASS,
        spec_version_minor=SPEC_VERSION_MINOR,
        spec_version_major=SPEC_VERSION_MAJOR,
        spec_errata=SPEC_ERRATA,
        uintn_size=SPEC_UINTN_SIZE,
        algorithms=tuple((alg.alg_id, alg.digest_size) for alg in banks),
    )


def log_for_measurements(
    measurements: Sequence[Measurement], banks: Sequence[HashAlgorithm], tpm2: bool
) -> EventLog:
    """The event log recording ``measurements``.

    ``tpm2`` False gives a TCG 1.2 SHA-1 log (TCG_PCR_EVENT records), the only
    format a TPM 1.2 has: ``banks`` must then include SHA-1, and its other
    banks are left out because a TPM 1.2 has no PCRs for them.  ``tpm2`` True
    gives a crypto-agile log whose SpecID event declares ``banks`` and whose
    every event carries one digest per bank (PFP 1.04 §9.4.5.1 requires an
    event to carry all the declared banks).

    Raises `UsageError` for a bank list that cannot make such a log and
    `PvgrubError` when a measurement lacks a digest it should have, which
    means the caller hashed in fewer banks than it asked the log for.
    """
    chosen: list[HashAlgorithm] = []
    for alg in banks:
        if alg not in chosen:
            chosen.append(alg)
    if not tpm2:
        if SHA1 not in chosen:
            raise UsageError("a TPM 1.2 (SHA-1 format) event log needs the sha1 bank")
        chosen = [SHA1]
    elif not chosen:
        raise UsageError("a crypto-agile event log needs at least one bank")
    events = [_event_for(m, chosen) for m in measurements]
    if not tpm2:
        return EventLog(format="sha1", spec_id=None, header_event=None, events=events)
    spec_id = spec_id_for(chosen)
    return EventLog(
        format="crypto-agile",
        spec_id=spec_id,
        header_event=spec_id_header_event(spec_id),
        events=events,
    )


def _event_for(m: Measurement, banks: Sequence[HashAlgorithm]) -> Event:
    digests: dict[str, bytes] = {}
    for alg in banks:
        digest = m.digests.get(alg.name)
        if digest is None:
            raise PvgrubError(f"measurement of {m.what} has no {alg.name} digest to log")
        if len(digest) != alg.digest_size:
            raise PvgrubError(
                f"measurement of {m.what}: {alg.name} digest is {len(digest)} bytes, "
                f"not {alg.digest_size}"
            )
        digests[alg.name] = bytes(digest)
    return Event(pcr=m.pcr, event_type=m.event_type, digests=digests, data=m.event_data)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one.

    A verifier that reads a half-written log would report a tampered boot,
    so the bytes go to a new file in the same directory, are fsynced, and
    the file is renamed over ``path`` (rename is atomic within a file
    system, and replaces a symlink at ``path`` rather than following it).
    On any failure the temporary file is removed and ``path`` is untouched.
    The file is created 0644 less the umask, like any file a program
    creates: a log holds digests and paths, not secrets.  The directory is
    fsynced afterwards on a best-effort basis: if that fails the rename may
    not survive a power cut, but the file is then the old one or the
    complete new one, never a partial one.

    Errors are `InputError` naming ``path``.  `PendingFile` splits this in
    two for callers that must know the write will succeed before they do
    something irreversible (the bootloader, before the first extend).
    """
    pending = PendingFile(path)
    try:
        pending.write(data)
    except BaseException:
        pending.abort()
        raise
    pending.commit()


class PendingFile:
    """A file written in full under a temporary name, renamed into place later.

    `__init__` checks ``path`` and creates the temporary file (exclusively,
    never through a symlink), `write` writes and fsyncs everything, and
    `commit` only renames, the one step left that touches ``path``.  So
    every failure that does not depend on the rename itself (a missing or
    read-only directory, a full disk, ``path`` naming a directory, a device,
    a FIFO or a socket, which the rename would replace) happens
    before `commit`.  `abort` removes the temporary file; it is idempotent
    and a no-op after `commit`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        check_replaceable(path)
        self.tmp: str | None
        self.tmp, self._fd = _create_temp(path, self.directory, os.path.basename(path))

    def write(self, data: bytes) -> None:
        """Write *data* in full and fsync it (call once)."""
        if self.tmp is None or self._fd < 0:
            raise PvgrubError(f"{self.path}: already written")
        fd, self._fd = self._fd, -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as e:
            raise InputError(self.path, f"cannot write: {_problem(e)}") from None
        finally:
            os.close(fd)

    def commit(self) -> None:
        if self.tmp is None:
            raise PvgrubError(f"{self.path}: nothing pending to commit")
        if self._fd >= 0:
            raise PvgrubError(f"{self.path}: commit before write")
        try:
            os.replace(self.tmp, self.path)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise InputError(self.path, f"cannot write: {_problem(e)}") from None
            raise
        self.tmp = None
        _fsync_directory(self.directory)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def check_replaceable(path: str) -> None:
    """Refuse what an atomic write must not rename over: a directory at *path*, or a
    device, a FIFO or a socket (the new file would replace it: as root,
    --event-log=/dev/null would leave a log where /dev/null was).  A regular file
    or a symlink (replaced, not followed) is fine, and so is nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(path, f"cannot write: {_problem(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, "cannot write: is a directory")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise InputError(path, "cannot write: not a regular file, and it would be replaced")


def _problem(e: OSError) -> str:
    return e.strerror or str(e)


def _create_temp(path: str, directory: str, base: str) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(16):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(
                path, f"cannot create a temporary file in {directory}: {_problem(e)}"
            ) from None
    raise InputError(path, f"cannot create a temporary file in {directory}: all names taken")


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
