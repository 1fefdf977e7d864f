"""Export a vTPM instance to an archive and import it on another host.

The archive is a plain (uncompressed) POSIX tar of the instance directory:
``UUID/vtpm.json``, swtpm's state files and ``UUID/certs/``, sealed for
transport with a migration key (`seal`: AES-256-GCM, the header naming the
format and the uuid authenticated with it).  The state stays as swtpm wrote
it, so an encrypted instance's stays encrypted with the host key inside; no
key goes into the archive (the importing host names its copy of the host
key with ``--key-file``; the state is not re-encrypted).  Without a
migration key only an encrypted instance is exported, as a plain tar.

A running instance (a swtpm that vtpmd serves holds its state directory)
is exported through swtpm's control channel instead of its files:
``CMD_GET_STATEBLOB`` gives the permanent state (NV, seeds), the volatile
state (PCRs, loaded objects, sessions) and, TPM 1.2, a TPM_SaveState's
blob, each as swtpm would store it (encrypted with its key for an encrypted
instance; never decrypted here), as ``UUID/stateblob.*``.  The snapshot is
taken between two TPM commands; a guest that is paused or saved (``xl save
-p``) sends none meanwhile.  Import gives them back to a swtpm on the new
state directory (``CMD_SET_STATEBLOB`` before ``CMD_INIT``: its state file
format is swtpm's own, not the blob's), which writes its state files and
its volatile state (``CMD_STORE_VOLATILE``); vtpmd resumes that on the
instance's next start, PCRs included, for the first guest that connects
(the restored domain).

An archive is untrusted input: only regular files and directories with the
names above are accepted, each at most `MAX_MEMBER` bytes, at most
`MAX_MEMBERS` of them; links, devices, absolute or ``..`` names, a second
uuid and anything else are refused with one line before anything is written.
An import is checked (`manufacture.check`) before it is made visible.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable

from pvgrub_py.daemon_process import poll_until_ready, stop_process
from pvgrub_py.errors import PvgrubError, UsageError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.swtpm import (
    BLOB_PERMANENT,
    BLOB_SAVESTATE,
    BLOB_VOLATILE,
    SocketAddress,
    SwtpmControl,
)
from pvgrub_py.vtpm import import_ledger, manufacture, seal
from pvgrub_py.vtpm.instances import RunRecord
from pvgrub_py.vtpm.manufacture import Instance, VtpmServiceError

MAX_MEMBER = 1 << 20
MAX_MEMBERS = 32
MAX_ARCHIVE = 16 << 20
#: A sealed archive: the archive, its header, nonce and tag.
MAX_SEALED = MAX_ARCHIVE + seal.MAX_HEADER + seal.NONCE + seal.TAG
#: What an instance directory may hold, besides ``certs/``.
TOP_FILES = re.compile(
    r"^(vtpm\.json|tpm2?-00\.(permall|volatilestate|savestate)"
    r"|stateblob\.(permanent|volatile|savestate))$"
)
#: A running instance's state, as swtpm's control channel gives it, by archive name.
BLOBS = {
    "stateblob.permanent": BLOB_PERMANENT,
    "stateblob.volatile": BLOB_VOLATILE,
    "stateblob.savestate": BLOB_SAVESTATE,
}
STATE_FILES = re.compile(r"^tpm2?-00\.")
RESTORE_TIMEOUT = 10.0
CERT_FILES = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.(crt|pem)$")


def export(inst: Instance, output: str, migration_key: bytes | None = None) -> tuple[int, bool]:
    """Write *inst* to a new file *output* (mode 0600, never overwritten),
    sealed with *migration_key* (`seal`) when one is given; the number of
    files archived, and whether the instance was running (its state then
    comes from its swtpm's control channel).  Without a migration key only an
    encrypted instance is exported: an unencrypted one's EK private key and
    seeds would travel in the clear."""
    if migration_key is None and not inst.encrypted:
        raise UsageError(
            f"vTPM {inst.uuid} is not encrypted: its EK private key and seeds would travel in "
            "the clear; give a --migration-key-file"
        )
    with contextlib.ExitStack() as held:
        blobs: dict[str, bytes] | None = None
        try:
            held.enter_context(manufacture.exclusive(inst))
        except VtpmServiceError as busy:
            blobs = _running_blobs(inst, busy)
        members = _members(inst, state_files=blobs is None)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arcname, path in members:
                info = tarfile.TarInfo(arcname)
                if path is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o700
                    tar.addfile(info)
                    continue
                with open(path, "rb") as src:
                    data = src.read(MAX_MEMBER + 1)
                if len(data) > MAX_MEMBER:
                    raise VtpmServiceError(f"{path}: larger than {MAX_MEMBER} bytes")
                info.size, info.mode = len(data), 0o600
                info.mtime = int(os.stat(path).st_mtime)
                tar.addfile(info, io.BytesIO(data))
            for name, data in (blobs or {}).items():
                info = tarfile.TarInfo(f"{inst.uuid}/{name}")
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    if len(body) > MAX_ARCHIVE:
        raise VtpmServiceError(f"{inst.directory}: over {MAX_ARCHIVE} bytes to export")
    if migration_key is not None:
        body = seal.seal(inst.uuid, body, migration_key)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise VtpmServiceError(f"{output}: {describe_open_error(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
    except BaseException:
        os.unlink(output)
        raise
    files = sum(1 for _, p in members if p is not None) + len(blobs or {})
    return files, blobs is not None


def _running_blobs(inst: Instance, busy: VtpmServiceError) -> dict[str, bytes]:
    """The state of the swtpm vtpmd runs on *inst* (its ``swtpm-run.json``),
    through its control channel; *busy* (the locked state directory) if no
    recorded swtpm runs there."""
    record = RunRecord.read(inst.directory)
    if record is None or not record.live(inst.directory):
        raise busy
    control = SwtpmControl(SocketAddress(path=record.ctrl), timeout=10.0)
    blobs: dict[str, bytes] = {}
    for name, kind in BLOBS.items():
        try:
            data, encrypted = control.get_state_blob(kind)
        except TpmTransportError as e:
            if kind == BLOB_SAVESTATE:  # only after a TPM 1.2 TPM_SaveState
                continue
            raise VtpmServiceError(
                f"{inst.directory}: cannot take the running vTPM's state: {e}"
            ) from None
        except PvgrubError as e:
            raise VtpmServiceError(
                f"{inst.directory}: cannot take the running vTPM's state: {e}"
            ) from None
        if not data:
            continue
        if inst.encrypted and not encrypted:
            raise VtpmServiceError(
                f"{inst.directory}: swtpm gave the {name} of an encrypted vTPM unencrypted; "
                "not exported"
            )
        blobs[name] = data
    if "stateblob.permanent" not in blobs:
        raise VtpmServiceError(f"{inst.directory}: the running swtpm gave no permanent state")
    return blobs


def _members(inst: Instance, *, state_files: bool = True) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = [(inst.uuid, None)]
    for name in sorted(os.listdir(inst.directory)):
        path = os.path.join(inst.directory, name)
        if name.startswith("stateblob.") or (not state_files and STATE_FILES.match(name)):
            continue
        if TOP_FILES.match(name) and os.path.isfile(path) and not os.path.islink(path):
            out.append((f"{inst.uuid}/{name}", path))
    certs = os.path.join(inst.directory, manufacture.CERTS)
    if os.path.isdir(certs):
        out.append((f"{inst.uuid}/{manufacture.CERTS}", None))
        for name in sorted(os.listdir(certs)):
            path = os.path.join(certs, name)
            if CERT_FILES.match(name) and os.path.isfile(path) and not os.path.islink(path):
                out.append((f"{inst.uuid}/{manufacture.CERTS}/{name}", path))
    return out


def _read_archive(
    archive: str, migration_key: bytes | None
) -> tuple[str, dict[str, bytes], seal.Opened | None]:
    """The uuid and the files (relative name -> bytes) of an export archive,
    and its seal; a sealed one (`seal`) is authenticated with *migration_key*
    before it is parsed, and one that is not sealed is refused when a key is
    given."""
    try:
        fd = os.open(archive, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VtpmServiceError(f"{archive}: not a regular file")
            data = f.read(MAX_SEALED + 1)
    except OSError as e:
        raise VtpmServiceError(f"{archive}: {describe_open_error(e)}") from None
    opened = None
    if seal.is_sealed(data):
        if migration_key is None:
            raise UsageError(
                f"{archive}: sealed with a migration key: give it with --migration-key-file"
            )
        if len(data) > MAX_SEALED:
            raise VtpmServiceError(f"{archive}: larger than {MAX_SEALED} bytes; not an export")
        opened = seal.open_sealed(archive, data, migration_key)
        data = opened.archive
    elif migration_key is not None:
        raise VtpmServiceError(
            f"{archive}: not sealed with a migration key (a plain archive, or not an export); "
            "refused since --migration-key-file was given"
        )
    if len(data) > MAX_ARCHIVE:
        raise VtpmServiceError(f"{archive}: larger than {MAX_ARCHIVE} bytes; not an export")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:  # no decompression
            uuid, files = _unpack(archive, tar)
    except (tarfile.TarError, EOFError) as e:
        raise VtpmServiceError(f"{archive}: not a tar archive, or a damaged one: {e}") from None
    if opened is not None and uuid != opened.uuid:
        raise VtpmServiceError(
            f"{archive}: sealed for vTPM {opened.uuid} but holds vTPM {uuid}; refused"
        )
    if manufacture.METADATA not in files:
        raise VtpmServiceError(f"{archive}: no {manufacture.METADATA}; not a vTPM export")
    if any(name in BLOBS for name in files):
        if "stateblob.permanent" not in files:
            raise VtpmServiceError(f"{archive}: state blobs without the permanent one")
        if any(STATE_FILES.match(name) for name in files):
            raise VtpmServiceError(f"{archive}: both state files and state blobs; which is it?")
    return uuid, files, opened


def _unpack(archive: str, tar: tarfile.TarFile) -> tuple[str, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    uuid = None
    for count, m in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise VtpmServiceError(f"{archive}: more than {MAX_MEMBERS} members")
        parts = m.name.split("/")
        try:
            head = manufacture.canonical_uuid(parts[0])
        except UsageError:
            raise VtpmServiceError(
                f"{archive}: member {m.name!r} is not under a uuid directory"
            ) from None
        if head != parts[0] or (uuid is not None and head != uuid):
            raise VtpmServiceError(f"{archive}: member {m.name!r}: not the archive's one uuid")
        uuid = head
        rest = parts[1:]
        if m.isdir():
            if rest not in ([], [manufacture.CERTS]):
                raise VtpmServiceError(f"{archive}: unexpected directory {m.name!r}")
            continue
        ok = (len(rest) == 1 and TOP_FILES.match(rest[0])) or (
            len(rest) == 2 and rest[0] == manufacture.CERTS and CERT_FILES.match(rest[1])
        )
        if not m.isreg() or not ok:
            raise VtpmServiceError(f"{archive}: unexpected member {m.name!r}")
        if m.size > MAX_MEMBER:
            raise VtpmServiceError(f"{archive}: member {m.name!r} is over {MAX_MEMBER} bytes")
        name = "/".join(rest)
        if name in files:
            raise VtpmServiceError(f"{archive}: member {m.name!r} appears twice")
        src = tar.extractfile(m)
        if src is None:
            raise VtpmServiceError(f"{archive}: member {m.name!r} has no data")
        data = src.read(MAX_MEMBER + 1)
        if len(data) > MAX_MEMBER:  # the header lied about the size
            raise VtpmServiceError(f"{archive}: member {m.name!r} is over {MAX_MEMBER} bytes")
        files[name] = data
    if uuid is None:
        raise VtpmServiceError(f"{archive}: empty; not a vTPM export")
    return uuid, files


def import_archive(
    state_root: str,
    archive: str,
    key_file: str | None,
    *,
    migration_key: bytes | None = None,
    new_uuid: str | None = None,
    max_age: float = import_ledger.DEFAULT_MAX_AGE,
) -> tuple[Instance, str]:
    """Unpack *archive* (sealed with *migration_key*, when given) into
    ``state_root/UUID`` (never over an existing instance; UUID is *new_uuid*
    when given, else the archive's), record *key_file* as its key, and check
    it loads; the instance and the check's one-line result.  A sealed archive
    must pass *state_root*'s ledger (`import_ledger`: not a replay, nor older
    than *max_age* seconds, 0 for no limit) and is recorded there.  On any
    failure nothing is left."""
    archived, files, opened = _read_archive(archive, migration_key)
    uuid = archived if new_uuid is None else manufacture.canonical_uuid(new_uuid)
    state_root = os.path.abspath(state_root)
    target = os.path.join(state_root, uuid)
    if os.path.lexists(target):
        raise VtpmServiceError(f"{target}: vTPM instance {uuid} already exists")
    try:
        os.makedirs(state_root, mode=0o700, exist_ok=True)
    except OSError as e:
        raise VtpmServiceError(f"{state_root}: {describe_open_error(e)}") from None
    if opened is None:
        return _import_files(state_root, archive, archived, uuid, files, key_file)
    with import_ledger.admitting(state_root, archive, opened, max_age) as admission:
        # Recorded before it is moved into place: an import cut short after that
        # needs a new export, never lets the same one in twice.
        return _import_files(state_root, archive, archived, uuid, files, key_file,
                             before_commit=admission.record)  # fmt: skip


def _import_files(
    state_root: str,
    archive: str,
    archived: str,
    uuid: str,
    files: dict[str, bytes],
    key_file: str | None,
    *,
    before_commit: Callable[[], None] | None = None,
) -> tuple[Instance, str]:
    target = os.path.join(state_root, uuid)
    staging = tempfile.mkdtemp(prefix=f".import-{uuid}-", dir=state_root)
    try:
        os.mkdir(os.path.join(staging, manufacture.CERTS), 0o700)
        blobs = {name: data for name, data in files.items() if name in BLOBS}
        for name, data in files.items():
            if name in blobs:
                continue  # given to swtpm below, never stored as they are
            fd = os.open(os.path.join(staging, name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # fmt: skip
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            inst = manufacture.read_metadata(staging, archived)
        except VtpmServiceError as e:
            raise VtpmServiceError(f"{archive}: {manufacture.METADATA}: {e}") from None
        inst.uuid = uuid  # written below: the instance's name on this host
        if inst.encrypted and key_file is None:
            raise UsageError(f"vTPM {uuid} is encrypted: give the key with --key-file")
        if key_file is not None:
            if not inst.encrypted:
                raise UsageError(f"vTPM {uuid} is not encrypted: --key-file does not apply")
            inst.key_file = os.path.abspath(key_file)
        if blobs:
            _restore_blobs(archive, staging, inst, blobs)
        result = manufacture.check(inst)
        manufacture.write_metadata(inst)
        if before_commit is not None:
            before_commit()
        try:
            os.rename(staging, target)
        except OSError as e:
            raise VtpmServiceError(f"{target}: {describe_open_error(e)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manufacture.load(state_root, uuid), result


def _restore_blobs(archive: str, directory: str, inst: Instance, blobs: dict[str, bytes]) -> None:
    """Give *blobs* to a swtpm on *directory* (with the instance's key) before
    its ``CMD_INIT``, and have it store them: its state file, and its volatile
    state, which a swtpm started on the directory later resumes."""
    if shutil.which(manufacture.SWTPM) is None:
        raise VtpmServiceError("swtpm is not installed (Debian package swtpm)")
    work = tempfile.mkdtemp(prefix="pvgrub-vtpm-import-")
    try:
        data, ctrl, log = (os.path.join(work, n) for n in ("tpm.sock", "ctrl.sock", "log"))
        with manufacture.key_fd_of(inst.key_file) as key_fd:
            cmd = manufacture.swtpm_command(
                tpm2=inst.tpm_version == "2.0",
                state_dir=directory,
                data=data,
                ctrl=ctrl,
                log=log,
                key_fd=key_fd,
                initialise=False,
            )
            proc = manufacture.start_swtpm(cmd, key_fd)
        control = SwtpmControl(SocketAddress(path=ctrl), timeout=RESTORE_TIMEOUT)
        try:
            if not poll_until_ready(proc, lambda: os.path.exists(ctrl), RESTORE_TIMEOUT):
                raise VtpmServiceError("swtpm did not start")
            for name, kind in BLOBS.items():
                if name in blobs:
                    control.set_state_blob(kind, blobs[name], encrypted=inst.encrypted)
            control.init(delete_volatile=False)
            if "stateblob.volatile" in blobs:
                control.store_volatile()
            control.shutdown()
            proc.wait(RESTORE_TIMEOUT)
        except (PvgrubError, subprocess.TimeoutExpired) as e:
            raise VtpmServiceError(
                f"{archive}: swtpm does not take its state ({e}; "
                f"{manufacture._log_line(log, first=True)}): wrong key, or damaged"
            ) from None
        finally:
            stop_process(proc, 5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
