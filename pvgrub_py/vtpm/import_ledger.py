"""Which exports a state directory has imported: no replay, no rollback.

An export sealed with the migration key (`seal`) says, authenticated, which
vTPM it holds and when it was made.  Without a record, whoever kept an old
export could import it again and roll that vTPM back: its NV (counters, a
sealed disk key's policy), its dictionary-attack lockout, a key the guest
since destroyed.  So ``STATE_DIR/.imports.json`` keeps, per vTPM uuid (the
exported one, whatever ``--uuid`` names the copy), the time of the newest
export imported here, and an import is refused when its export is:

* not newer than that one (the same file again, or an older export);
* older than ``max_age`` seconds (an archive kept too long: on a host that
  never saw the vTPM, the age is the only bound), unless ``max_age`` is 0;
* made more than `CLOCK_SKEW` seconds in this host's future.

The ledger survives ``vtpm destroy`` (it is the directory's, not an
instance's).  Import holds ``.imports.lock`` from the check to the record,
so two imports of one file cannot both pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime

from pvgrub_py.vtpm.manufacture import VtpmServiceError
from pvgrub_py.vtpm.seal import Opened, now_ms

LEDGER = ".imports.json"
LOCK = ".imports.lock"
#: How far in the future an export's time may be (the two hosts' clocks differ).
CLOCK_SKEW = 300
#: The default --max-age: a day.
DEFAULT_MAX_AGE = 86400
#: A ledger larger than this is not ours.
MAX_LEDGER = 4 << 20


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(path: str) -> dict[str, int]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_LEDGER + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise VtpmServiceError(f"{path}: cannot read the import ledger: {e.strerror}") from None
    try:
        doc = json.loads(raw) if len(raw) <= MAX_LEDGER else None
        newest = doc["newest_export_ms"] if isinstance(doc, dict) else None
        if not isinstance(newest, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in newest.items()
        ):
            raise ValueError("not a ledger")
    except (ValueError, RecursionError):  # RecursionError: nested beyond the parser
        raise VtpmServiceError(
            f"{path}: the import ledger is damaged; imports are refused until it is "
            "repaired (it is what stops an old export from being imported again)"
        ) from None
    return newest


class Admission:
    """An import that passed the ledger; `record` it just before it is moved into place."""

    def __init__(self, path: str, newest: dict[str, int], opened: Opened) -> None:
        self.path = path
        self.newest = newest
        self.opened = opened

    def record(self) -> None:
        """Write the ledger with this import in it (atomically, then synced with
        its directory, so a power cut cannot forget it); one line on failure."""
        self.newest[self.opened.uuid] = self.opened.created_ms
        doc = {"newest_export_ms": dict(sorted(self.newest.items()))}
        directory = os.path.dirname(self.path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".imports-", dir=directory)  # mode 0600
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise VtpmServiceError(
                f"{self.path}: cannot record the import: {e.strerror}; nothing imported"
            ) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


@contextlib.contextmanager
def admitting(
    state_root: str, source: str, opened: Opened, max_age: float
) -> Iterator[Admission]:
    """Check *opened* (read from *source*) against the ledger of *state_root*
    and its age, holding the ledger's lock until the block ends; one line
    naming *source* when it is refused."""
    lock_path = os.path.join(state_root, LOCK)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise VtpmServiceError(f"{lock_path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            raise VtpmServiceError(f"{lock_path}: cannot lock: {e.strerror}") from None
        path = os.path.join(state_root, LEDGER)
        newest = _read(path)
        made, now = opened.created_ms, now_ms()
        if made > now + CLOCK_SKEW * 1000:
            raise VtpmServiceError(
                f"{source}: exported at {_when(made)}, {(made - now) / 1000:.0f} s in this "
                "host's future; refused (check both hosts' clocks)"
            )
        if max_age > 0 and now - made > max_age * 1000:
            raise VtpmServiceError(
                f"{source}: exported at {_when(made)}, {(now - made) / 1000:.0f} s ago, over "
                f"--max-age {max_age:g} s; refused, since an old export rolls its vTPM back "
                "(give a larger --max-age, or 0, if this is the newest export)"
            )
        last = newest.get(opened.uuid)
        if last is not None and made <= last:
            again = "this very export" if made == last else f"a newer export ({_when(last)})"
            raise VtpmServiceError(
                f"{source}: an export of vTPM {opened.uuid} made at {_when(made)}, but "
                f"{again} was already imported here; refused: a replay would roll the "
                "vTPM back (the times are the exporting hosts' clocks)"
            )
        yield Admission(path, newest, opened)
    finally:
        os.close(fd)  # releases the lock

