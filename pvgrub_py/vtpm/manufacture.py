"""Manufacture, list, check and destroy the vTPM instances ``vtpmd`` serves.

An instance lives in ``<state-root>/<uuid>/`` (the directory `vtpm.instances`
hands swtpm as ``--tpmstate dir=``), next to swtpm's own files:

* ``vtpm.json``: our metadata (uuid, TPM version, encryption, times, paths);
* ``certs/``: the EK certificates ``swtpm_setup --write-ek-cert-files`` wrote
  (DER, plus a PEM copy of the RSA one) and ``ca-chain.pem``, the local CA's
  issuer and root certificates as they were when the instance was made.

Manufacture is stock ``swtpm_setup``: the EK and its certificate in NV
(``0x01c00002`` for the RSA EK on TPM 2.0), a platform certificate, both
issued by ``swtpm_localca`` with a configuration of ours whose ``statedir``
is the given CA directory (never the system-wide one), the NV locked, and on
TPM 2.0 the sha1 and sha256 PCR banks both active (pv-grub extends sha1).

Encryption at rest is swtpm's own: ``--key`` with AES-256-CBC, the key a
file of 64 hex digits (mode 0600 or stricter, owned by the caller, root in
production).  The key reaches swtpm_setup and swtpm only as an inherited
file descriptor (``--keyfile-fd``, ``--key fd=``), never on a command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pvgrub_py.daemon_process import poll_until_ready, stop_process
from pvgrub_py.errors import PvgrubError, UsageError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.socket_address import SocketAddress
from pvgrub_py.tpm.swtpm import SwtpmTransport

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.tpm.client import TpmVersion

SWTPM = "swtpm"
SWTPM_SETUP = "swtpm_setup"
SWTPM_LOCALCA = "swtpm_localca"
CIPHER = "aes-256-cbc"
METADATA = "vtpm.json"
CERTS = "certs"
CA_CHAIN = "ca-chain.pem"
EK_CERT_DER = "ek-rsa2048.crt"
EK_CERT_PEM = "ek-rsa2048.pem"
#: swtpm_localca's files in its statedir: the issuer (intermediate) and the root it makes.
CA_ISSUER = "issuercert.pem"
CA_ROOT = "swtpm-localca-rootca-cert.pem"
#: swtpm's permanent-state file, per TPM version (the instance exists once it does).
PERMALL = {"2.0": "tpm2-00.permall", "1.2": "tpm-00.permall"}
#: The volatile state swtpm resumes on start (written by ``CMD_STORE_VOLATILE``).
VOLATILE = {"2.0": "tpm2-00.volatilestate", "1.2": "tpm-00.volatilestate"}
MAX_METADATA = 64 * 1024
MAX_KEY_FILE = 4096
SETUP_TIMEOUT = 180.0
START_TIMEOUT = 10.0
FORMAT = 1
#: What swtpm_localca writes into the platform certificate (all three are required).
PLATFORM = ("--platform-manufacturer pvgrub-py", "--platform-version 1.0", "--platform-model vTPM")


class VtpmServiceError(PvgrubError):
    pass


def canonical_uuid(text: str) -> str:
    """*text* as a canonical lower-case UUID, or a usage error: it names a
    directory, so nothing but 8-4-4-4-12 hex digits (no ``..``, no ``/``)."""
    try:
        value = str(uuidlib.UUID(text))
    except ValueError:
        value = ""
    if not value or value != text.lower():
        raise UsageError(f"vTPM uuid {text!r} is not a canonical UUID (8-4-4-4-12 hex digits)")
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mtime(path: str) -> str:
    t = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the key file -----------------------------------------------------------------------


def open_key_file(path: str, what: str = "key file") -> int:
    """An fd on *path*, positioned at 0, once it is a regular file of 64 hex
    digits (an optional ``0x`` and trailing newline allowed) that only its
    owner, the caller, can read.  The caller closes it."""
    source = f"{what} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise VtpmServiceError(f"{source}: {describe_open_error(e)}") from None
    try:
        _check_key_fd(fd, source, regular=True)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_key(spec: str, what: str = "key file") -> bytes:
    """The 32-byte AES-256 key that *spec* names: a path (checked as
    `open_key_file` checks it) or ``fd:N``, an inherited descriptor (a pipe,
    or a file that passes the same mode and owner checks), read to its end
    and left open.  Never the key itself: it does not go on a command line."""
    if spec.startswith("fd:"):
        number = spec[3:]
        if not number.isdigit() or len(number) > 6:
            raise UsageError(f"{what} {spec!r}: not fd:N with N a descriptor number")
        source = f"{what} {spec}"
        try:
            return _check_key_fd(int(number), source, regular=False)
        except OSError as e:
            raise VtpmServiceError(f"{source}: {describe_open_error(e)}") from None
    fd = open_key_file(spec, what)
    try:
        return _check_key_fd(fd, f"{what} {spec}", regular=True)
    finally:
        os.close(fd)


def _check_key_fd(fd: int, source: str, *, regular: bool) -> bytes:
    """The key read from *fd*, a regular file (when *regular*, or when it is
    one) readable by its owner, the caller, only; a pipe otherwise."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        if st.st_mode & 0o077:
            raise VtpmServiceError(
                f"{source}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; chmod 600 it"
            )
        if st.st_uid != os.geteuid():
            raise VtpmServiceError(f"{source}: owned by uid {st.st_uid}, not by uid {os.geteuid()}")
        data = os.pread(fd, MAX_KEY_FILE + 1, 0)
    elif regular or not stat.S_ISFIFO(st.st_mode):
        raise VtpmServiceError(f"{source}: not a regular file{'' if regular else ' or a pipe'}")
    else:
        data = b""
        while len(data) <= MAX_KEY_FILE:
            chunk = os.read(fd, MAX_KEY_FILE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    text = data.decode("ascii", errors="replace").strip().removeprefix("0x")
    if (
        len(data) > MAX_KEY_FILE
        or len(text) != 64
        or any(c not in "0123456789abcdefABCDEF" for c in text)
    ):
        raise VtpmServiceError(
            f"{source}: not an AES-256 key (64 hex digits, e.g. from `openssl rand -hex 32`)"
        )
    return bytes.fromhex(text)


@contextmanager
def key_fd_of(path: str | None) -> Iterator[int | None]:
    """The key file *path* opened (and checked) for a swtpm to inherit, closed
    after the block; None for no key."""
    fd = None if path is None else open_key_file(path)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


# -- metadata ---------------------------------------------------------------------------


@dataclasses.dataclass
class Instance:
    """One manufactured instance, as ``vtpm.json`` describes it."""

    uuid: str
    tpm_version: str
    encrypted: bool
    key_file: str | None
    created: str
    directory: str
    ca_dir: str

    @property
    def ek_certificate(self) -> str | None:
        path = os.path.join(self.directory, CERTS, EK_CERT_PEM)
        return path if os.path.exists(path) else None

    @property
    def ca_certificate(self) -> str | None:
        path = os.path.join(self.directory, CERTS, CA_CHAIN)
        return path if os.path.exists(path) else None

    @property
    def state_file(self) -> str:
        return os.path.join(self.directory, PERMALL[self.tpm_version])

    @property
    def last_used(self) -> str | None:
        """When swtpm last wrote the state (its files' newest mtime)."""
        times = []
        prefix = PERMALL[self.tpm_version].removesuffix("permall")
        for name in (prefix + "permall", prefix + "volatilestate"):
            path = os.path.join(self.directory, name)
            if os.path.exists(path):
                times.append(_mtime(path))
        return max(times) if times else None

    def as_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "tpm_version": self.tpm_version,
            "encrypted": self.encrypted,
            "cipher": CIPHER if self.encrypted else None,
            "key_file": self.key_file,
            "state_dir": self.directory,
            "ek_certificate": self.ek_certificate,
            "ca_certificate": self.ca_certificate,
            "ca_dir": self.ca_dir,
            "pcr_banks": ["sha1", "sha256"] if self.tpm_version == "2.0" else ["sha1"],
            "created": self.created,
            "last_used": self.last_used,
        }


def write_metadata(inst: Instance) -> None:
    body = {
        "format": FORMAT,
        "uuid": inst.uuid,
        "tpm_version": inst.tpm_version,
        "encrypted": inst.encrypted,
        "key_file": inst.key_file,
        "created": inst.created,
        "ca_dir": inst.ca_dir,
        "ek_certificate": f"{CERTS}/{EK_CERT_PEM}",
        "ca_certificate": f"{CERTS}/{CA_CHAIN}",
    }
    path = os.path.join(inst.directory, METADATA)
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_metadata(directory: str, uuid: str) -> Instance:
    path = os.path.join(directory, METADATA)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VtpmServiceError(
            f"{path}: missing: {directory} is not an instance made by `pvgrubctl vtpm create`"
        ) from None
    except OSError as e:
        raise VtpmServiceError(f"{path}: {describe_open_error(e)}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VtpmServiceError(f"{path}: not a regular file")
        data = f.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise VtpmServiceError(f"{path}: larger than {MAX_METADATA} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise VtpmServiceError(f"{path}: not JSON: {e}") from None

    def field(name: str, kind: type | tuple[type, ...]) -> Any:
        value = body.get(name) if isinstance(body, dict) else None
        if not isinstance(value, kind):
            raise VtpmServiceError(f"{path}: field {name!r} missing or of the wrong type")
        return value

    if field("uuid", str) != uuid:
        raise VtpmServiceError(f"{path}: names uuid {body['uuid']!r}, not {uuid}")
    version = field("tpm_version", str)
    if version not in PERMALL:
        raise VtpmServiceError(f"{path}: tpm_version {version!r} is neither '1.2' nor '2.0'")
    return Instance(
        uuid=uuid,
        tpm_version=version,
        encrypted=field("encrypted", bool),
        key_file=field("key_file", (str, type(None))),
        created=field("created", str),
        directory=directory,
        ca_dir=field("ca_dir", str),
    )


def instance_dir(state_root: str, uuid: str) -> str:
    return os.path.join(state_root, canonical_uuid(uuid))


def load(state_root: str, uuid: str) -> Instance:
    directory = instance_dir(state_root, uuid)
    if not os.path.isdir(directory):
        raise VtpmServiceError(f"{directory}: no such vTPM instance")
    return read_metadata(directory, canonical_uuid(uuid))


def list_instances(state_root: str) -> tuple[list[Instance], list[str]]:
    """The instances under *state_root*, and the uuids of directories there
    without metadata (made by vtpmd on first use, not by ``create``)."""
    try:
        names = sorted(os.listdir(state_root))
    except OSError as e:
        raise VtpmServiceError(f"{state_root}: {describe_open_error(e)}") from None
    found, unmanaged = [], []
    for name in names:
        try:
            uuid = canonical_uuid(name)
        except UsageError:
            continue
        directory = os.path.join(state_root, name)
        if not os.path.isdir(directory):
            continue
        if os.path.exists(os.path.join(directory, METADATA)):
            found.append(read_metadata(directory, uuid))
        else:
            unmanaged.append(uuid)
    return found, unmanaged


# -- create -----------------------------------------------------------------------------


def _config_path(path: str, what: str) -> str:
    """An absolute path fit for a swtpm config line (no whitespace, no '#')."""
    path = os.path.abspath(path)
    if any(c.isspace() or c in "#=" for c in path) or not path.isprintable():
        raise UsageError(
            f"{what} {path!r}: whitespace, '#', '=' or control characters "
            "cannot go into a swtpm configuration file"
        )
    return path


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise VtpmServiceError(f"{tool} is not installed (Debian package swtpm-tools)")
    return found


def setup_command(
    *, tpm2: bool, state_dir: str, config: str, certs_dir: str, log: str, key_fd: int | None
) -> list[str]:
    """The swtpm_setup argv (the key, if any, only as ``--keyfile-fd``)."""
    cmd = [SWTPM_SETUP]
    if tpm2:
        cmd += ["--tpm2", "--pcr-banks", "sha1,sha256"]
    cmd += [
        "--tpmstate",
        state_dir,
        "--config",
        config,
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--write-ek-cert-files",
        certs_dir,
        "--not-overwrite",
        "--logfile",
        log,
    ]
    if key_fd is not None:
        cmd += ["--keyfile-fd", str(key_fd), "--cipher", CIPHER]
    return cmd


def _log_line(path: str, *, first: bool = False) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.read(1 << 20).splitlines()]
    except OSError:
        return "no log"
    skip = (
        "Invoking",
        "Ending",
        "Starting",
        "Error getting next filename",
        "Could not remove temporary",
    )
    useful = [ln for ln in lines if ln and not ln.startswith(skip)]
    if not useful:
        return "no log"
    return useful[0] if first else useful[-1]


def create(
    state_root: str, uuid: str, *, tpm2: bool, key_file: str | None, ca_dir: str | None
) -> Instance:
    uuid = canonical_uuid(uuid)
    setup = _require(SWTPM_SETUP)
    localca = _require(SWTPM_LOCALCA)
    state_root = os.path.abspath(state_root)
    ca_dir = _config_path(ca_dir or os.path.join(state_root, "ca"), "CA directory")
    key_path = None if key_file is None else os.path.abspath(key_file)
    directory = os.path.join(state_root, uuid)
    with key_fd_of(key_path) as key_fd:  # a bad key file is refused before anything is made
        try:
            os.makedirs(state_root, mode=0o700, exist_ok=True)
            os.makedirs(ca_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise VtpmServiceError(f"{e.filename}: {describe_open_error(e)}") from None
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            raise VtpmServiceError(f"{directory}: vTPM instance {uuid} already exists") from None
        except OSError as e:
            raise VtpmServiceError(f"{directory}: {describe_open_error(e)}") from None
        created = _now()
        work = tempfile.mkdtemp(prefix="pvgrub-vtpm-create-")
        try:
            _manufacture(setup, localca, directory, work, ca_dir, tpm2, key_fd)
            inst = Instance(
                uuid=uuid,
                tpm_version="2.0" if tpm2 else "1.2",
                encrypted=key_fd is not None,
                key_file=key_path,
                created=created,
                directory=directory,
                ca_dir=ca_dir,
            )
            write_metadata(inst)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return inst


def _manufacture(
    setup: str,
    localca: str,
    directory: str,
    work: str,
    ca_dir: str,
    tpm2: bool,
    key_fd: int | None,
) -> None:
    localca_conf = os.path.join(work, "swtpm-localca.conf")
    localca_opts = os.path.join(work, "swtpm-localca.options")
    setup_conf = os.path.join(work, "swtpm_setup.conf")
    log = os.path.join(work, "swtpm_setup.log")
    with open(localca_conf, "w", encoding="ascii") as f:
        f.write(
            f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\n"
            f"issuercert = {ca_dir}/{CA_ISSUER}\ncertserial = {ca_dir}/certserial\n"
        )
    with open(localca_opts, "w", encoding="ascii") as f:
        f.write("\n".join(PLATFORM) + "\n")
    with open(setup_conf, "w", encoding="ascii") as f:
        f.write(
            f"create_certs_tool = {localca}\ncreate_certs_tool_config = {localca_conf}\n"
            f"create_certs_tool_options = {localca_opts}\n"
        )
    certs = os.path.join(directory, CERTS)
    os.mkdir(certs, 0o700)
    cmd = setup_command(
        tpm2=tpm2, state_dir=directory, config=setup_conf, certs_dir=certs, log=log, key_fd=key_fd
    )
    cmd[0] = setup
    env = dict(os.environ, TMPDIR=work)  # swtpm_setup's own temporary files go there too
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            timeout=SETUP_TIMEOUT,
            pass_fds=() if key_fd is None else (key_fd,),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VtpmServiceError(f"swtpm_setup took over {SETUP_TIMEOUT:.0f} s; gave up") from None
    if proc.returncode != 0:
        raise VtpmServiceError(f"swtpm_setup failed (exit {proc.returncode}): {_log_line(log)}")
    _write_certificates(certs, ca_dir)


def _write_certificates(certs: str, ca_dir: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = os.path.join(certs, EK_CERT_DER)
    if os.path.exists(der):
        with open(der, "rb") as f:
            cert = x509.load_der_x509_certificate(f.read())
        with open(os.path.join(certs, EK_CERT_PEM), "wb") as f:
            f.write(cert.public_bytes(Encoding.PEM))
    chain = b""
    for name in (CA_ISSUER, CA_ROOT):
        path = os.path.join(ca_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                chain += f.read().rstrip(b"\n") + b"\n"
    if not chain:
        raise VtpmServiceError(f"{ca_dir}: swtpm_localca left no {CA_ISSUER}")
    with open(os.path.join(certs, CA_CHAIN), "wb") as f:
        f.write(chain)


# -- check ------------------------------------------------------------------------------


def swtpm_command(
    *,
    tpm2: bool,
    state_dir: str,
    data: str,
    ctrl: str,
    log: str,
    key_fd: int | None,
    initialise: bool = True,
) -> list[str]:
    """The argv of a throw-away swtpm on *state_dir* (the key only as ``fd=``);
    without *initialise*, the TPM waits for ``CMD_INIT`` (state blobs may be
    given to it before)."""
    cmd = [
        SWTPM,
        "socket",
        "--tpmstate",
        f"dir={state_dir}",
        "--server",
        f"type=unixio,path={data}",
        "--ctrl",
        f"type=unixio,path={ctrl}",
        *(["--flags", "not-need-init,startup-clear"] if initialise else []),
        "--log",
        f"file={log},level=1",
    ]
    if key_fd is not None:
        cmd += ["--key", f"fd={key_fd},mode={CIPHER},format=hex"]
    if tpm2:
        cmd.append("--tpm2")
    return cmd


def start_swtpm(
    cmd: Sequence[str], key_fd: int | None, *, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start *cmd* (a `swtpm_command`) with nothing on its standard streams (it
    logs to its ``--log`` file) and *key_fd* passed down; the caller closes its
    own copy of *key_fd*.  With *own_session* it runs in a session of its own,
    from ``/``: a signal to the caller's process group (a terminal's ^C) does
    not reach it, so it can outlive the caller."""
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=() if key_fd is None else (key_fd,),
        start_new_session=own_session,
        cwd="/" if own_session else None,
    )


def check(inst: Instance, key_file: str | None = None) -> str:
    """Load a copy of the instance's state in a throw-away swtpm and read a
    PCR from it; a one-line description on success, `VtpmServiceError` if
    the state is missing, cannot be decrypted or is corrupt.  The instance's
    own files are only read (a running vtpmd is not disturbed)."""
    swtpm = _require(SWTPM)
    if not os.path.isfile(inst.state_file):
        raise VtpmServiceError(f"{inst.state_file}: state missing")
    key_path = key_file if key_file is not None else inst.key_file
    if inst.encrypted and key_path is None:
        raise UsageError(f"vTPM {inst.uuid} is encrypted; give its --key-file")
    work = tempfile.mkdtemp(prefix="pvgrub-vtpm-check-")
    try:
        state = os.path.join(work, "state")
        os.mkdir(state, 0o700)
        for name in os.listdir(inst.directory):
            if name.startswith(("tpm-00.", "tpm2-00.")):
                shutil.copy2(os.path.join(inst.directory, name), state)
        with key_fd_of(key_path if inst.encrypted or key_file is not None else None) as key_fd:
            data, ctrl, log = (os.path.join(work, n) for n in ("tpm.sock", "ctrl.sock", "log"))
            cmd = swtpm_command(
                tpm2=inst.tpm_version == "2.0",
                state_dir=state,
                data=data,
                ctrl=ctrl,
                log=log,
                key_fd=key_fd,
            )
            cmd[0] = swtpm
            proc = start_swtpm(cmd, key_fd)
        try:
            return _probe(inst, proc, SocketAddress(path=data), log)
        finally:
            stop_process(proc, 5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _probe(inst: Instance, proc: subprocess.Popen[bytes], data: SocketAddress, log: str) -> str:
    def accepts() -> bool:
        try:
            data.connect(0.5).close()
        except PvgrubError:
            return False
        return True

    def cannot_load() -> VtpmServiceError:
        return VtpmServiceError(
            f"{inst.state_file}: swtpm cannot load the state ({_log_line(log, first=True)}): "
            "wrong or missing key, or corrupt state"
        )

    if not poll_until_ready(proc, accepts, START_TIMEOUT):
        raise cannot_load()
    try:
        version: TpmVersion = "2.0" if inst.tpm_version == "2.0" else "1.2"
        with TpmClient(SwtpmTransport(data, 10.0), version=version) as client:
            banks = client.active_banks()
            client.read_pcrs([0], banks)
    except PvgrubError as e:
        try:
            proc.wait(2)  # swtpm may take the connection before it loads the state
        except subprocess.TimeoutExpired:
            raise VtpmServiceError(
                f"{inst.state_file}: the loaded TPM does not answer: {e}"
            ) from None
        raise cannot_load() from None
    names = ",".join(b.name for b in banks)
    return f"vTPM {inst.uuid}: state loads (TPM {inst.tpm_version}, PCR banks {names})"


# -- destroy ----------------------------------------------------------------------------


@contextmanager
def exclusive(inst: Instance) -> Iterator[None]:
    """Hold the instance's swtpm lock (``.lock``, the one swtpm takes on its
    state directory) for the duration; `VtpmServiceError` if a swtpm (vtpmd
    serving it) holds it now."""
    lock = os.path.join(inst.directory, ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except OSError as e:
        raise VtpmServiceError(f"{lock}: {describe_open_error(e)}") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VtpmServiceError(
                f"{inst.directory}: in use by a running swtpm (vtpmd?); stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def destroy(inst: Instance) -> None:
    """Remove the instance's directory, unless a swtpm holds its lock (vtpmd serving it)."""
    with exclusive(inst):
        shutil.rmtree(inst.directory)


def describe(inst: Instance) -> Sequence[str]:
    j = inst.as_json()
    return [
        f"{k}: {'-' if v is None else ','.join(v) if isinstance(v, list) else v}"
        for k, v in j.items()
    ]
