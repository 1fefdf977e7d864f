"""``pvgrubctl vtpm export --to FILE --migration-key-file MK`` / ``import --from FILE
[--uuid U]`` (issue 15, item 1): the archive sealed for transport.

The old export wrote a plain tar (only the state inside encrypted, with the
host key) and had no migration key, no --to/--from/--uuid, and exported an
unencrypted instance's EK private key and seeds in the clear.  Here a stopped
and a running instance go through a sealed file with real swtpm: PCR and NV
as written before the export (read back with tpm2-tools, or through the
simulated guest's frontend, never through the code under test); a wrong
key, a changed, truncated or relabelled file is one line, exit 1 and nothing
written; the keys are never on any process's command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pvgrubctl_run import run as pvgrubctl
from swtpm_tools import tools_tpm
from test_vtpm_manufacture import write_key

from pvgrub_py.vtpm import manufacture, seal

TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca", "swtpm_ioctl", "tpm2_nvread", "tpm2_pcrextend")
pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason="swtpm, swtpm-tools or tpm2-tools missing (make setup)",
    ),
    pytest.mark.slow,
]

UUID = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
OTHER = "0d3c5e7a-1b2f-4e6d-9c8b-7a6f5e4d3c2b"
NV_INDEX = "0x1500016"
NV_DATA = hashlib.sha256(b"sealed disk key").digest()
EXTEND = bytes.fromhex("ab" * 32)
#: PCR 16 (sha256) after one extend of EXTEND from zero, by hand (TPM 2.0 Part 1, 17.2).
PCR16 = hashlib.sha256(bytes(32) + EXTEND).digest()
#: The header the sealed format starts with: format 2, AES-256-GCM, the uuid, then the
#: export's time in ms and a newline (one line).
HEADER = f"pvgrub-vtpm-export 2 aes-256-gcm {UUID} ".encode()


def header_end(data: bytes) -> int:
    """Where the nonce starts: after the header's newline."""
    assert data.startswith(HEADER)
    return data.index(b"\n") + 1


def one_line_failure(r: subprocess.CompletedProcess[str], status: int = 1) -> None:
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def empty(state: Path) -> bool:
    return not state.exists() or os.listdir(state) == []


@pytest.fixture(scope="module")
def made() -> Iterator[tuple[Path, Path, Path]]:
    """An encrypted TPM 2.0 instance, stopped, whose PCR 16 was extended and an NV
    index written (its volatile state stored, as a swtpm stopped cleanly leaves
    it): (state root, host key, migration key)."""
    root = Path(tempfile.mkdtemp(prefix="pvgrub-vtpm-mk-"))
    try:
        key, mk = write_key(root / "host.key"), write_key(root / "migration.key")
        state = root / "state"
        manufacture.create(str(state), UUID, tpm2=True, key_file=str(key), ca_dir=None)
        with tools_tpm(state_dir=str(state / UUID), key_file=str(key)) as tpm:
            tpm.tool("tpm2_pcrextend", f"16:sha256={EXTEND.hex()}")
            tpm.tool("tpm2_nvdefine", NV_INDEX, "-C", "o", "-s", "32", "-a",
                     "ownerread|ownerwrite")  # fmt: skip
            (root / "nv").write_bytes(NV_DATA)
            tpm.tool("tpm2_nvwrite", NV_INDEX, "-C", "o", "-i", str(root / "nv"))
            tpm.ioctl("-v")  # CMD_STORE_VOLATILE: the PCRs go with the state
        yield state, key, mk
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def sealed(made: tuple[Path, Path, Path]) -> Iterator[Path]:
    """The instance of `made`, exported with its migration key."""
    state, _, mk = made
    out = Path(tempfile.mkdtemp(prefix="pvgrub-vtpm-mk-out-")) / "guest.vtpm"
    r = pvgrubctl("vtpm", "export", "--state-dir", str(state), UUID, "--to", str(out),
                  "--migration-key-file", str(mk))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "sealed with the migration key" in r.stdout and r.stderr == ""
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


def pcr16_and_nv(directory: Path, key: Path) -> tuple[bytes, bytes]:
    """PCR 16 (sha256) and the NV index, read with tpm2-tools from a stock swtpm
    on *directory* that resumes its stored volatile state (no TPM2_Startup)."""
    with tools_tpm(startup=False, state_dir=str(directory), key_file=str(key)) as tpm:
        pcr = tpm.pcrread("sha256:16")["sha256"][16]
        nv = subprocess.run(["tpm2_nvread", "-T", tpm.tcti, NV_INDEX, "-C", "o", "-s", "32"],
                            capture_output=True, timeout=60, check=True).stdout  # fmt: skip
    return pcr, nv


def watch_cmdlines(proc: subprocess.Popen[str]) -> list[bytes]:
    """Every process's command line, sampled until *proc* exits."""
    seen: list[bytes] = []
    while proc.poll() is None:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        seen.append(f.read())
                except OSError:
                    pass
        time.sleep(0.005)
    return seen


# -- round trips --------------------------------------------------------------------------


def test_stopped_instance_round_trip_sealed_and_keys_never_on_a_command_line(
    made: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    state, key, mk = made
    secrets = [p.read_text().strip().encode() for p in (key, mk)]
    archive = tmp_path / "guest.vtpm"
    # the migration key by descriptor (fd:N, a pipe), the export watched from /proc
    read_end, write_end = os.pipe()
    os.write(write_end, mk.read_bytes())
    os.close(write_end)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpm", "export", "--state-dir",
         str(state), UUID, "--to", str(archive), "--migration-key-file", f"fd:{read_end}"],
        pass_fds=(read_end,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(read_end)
    seen = watch_cmdlines(proc)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""  # sealed: no warning
    data = archive.read_bytes()
    assert data.startswith(HEADER)  # a sealed file, not a tar
    assert b"vtpm.json" not in data and b"ustar" not in data
    destination = tmp_path / "target"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpm", "import", "--state-dir",
         str(destination), "--from", str(archive), "--migration-key-file", str(mk),
         "--key-file", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen += watch_cmdlines(proc)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"vTPM {UUID}: imported" in out
    # The watch saw them run (import's short-lived checking swtpm it may miss on a loaded
    # machine: the key reaches swtpm as a descriptor, which test_vtpmd_instances checks on
    # the long-lived ones).
    assert any(b"pvgrub_py.cli.pvgrubctl" in c for c in seen)
    assert not [c for c in seen for s in secrets if s in c or s.upper() in c]
    assert pcr16_and_nv(destination / UUID, key) == (PCR16, NV_DATA)


def test_running_instance_round_trip_sealed_under_a_new_uuid(
    tmp_path: Path, made: tuple[Path, Path, Path]
) -> None:
    """A guest's running vTPM (vtpmd on the simulator) exported with --to and a
    migration key, imported with --from under --uuid OTHER: the restored guest,
    whose xl vtpm line names OTHER, finds its PCR 4 and NV index."""
    from test_vtpm_export_running import SECRET, nv_contents
    from test_vtpmd_restart import nv_define, nv_write, rc_of
    from vtpmd_world import (
        KERNEL,
        PCR4,
        Vtpmd,
        dom0_measures,
        guest_with_vtpm,
        kill_swtpms,
        sha1_pcr4,
    )

    from pvgrub_py.sim.testing import temporary_host
    from pvgrub_py.vtpm.frontend import TpmFront

    _, key, mk = made
    source, destination = (Path(tempfile.mkdtemp(prefix=p, dir="/tmp")) for p in ("ma", "mb"))
    archive = tmp_path / "vtpm.sealed"
    try:
        manufacture.create(str(source), UUID, tpm2=True, key_file=str(key), ca_dir=None)
        with temporary_host(prefix="vtpmk") as host:
            vtpmd = Vtpmd(host, source, "--key-file", str(key))
            try:
                guest = guest_with_vtpm(host, UUID)
                dom0_measures(host, UUID, KERNEL)  # the bootloader
                with (
                    host.attach(guest, host.token(guest)) as hv,
                    TpmFront(hv, timeout=10).connect() as front,
                ):
                    assert rc_of(front.transmit(nv_define(32))) == 0
                    assert rc_of(front.transmit(nv_write(SECRET))) == 0
                    r = pvgrubctl("vtpm", "export", "--state-dir", str(source), UUID, "--to",
                                  str(archive), "--migration-key-file", str(mk))  # fmt: skip
                    assert r.returncode == 0, r.stderr
                    assert "running" in r.stdout and "sealed" in r.stdout
            finally:
                vtpmd.stop()
            assert archive.read_bytes().startswith(HEADER)
            r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), "--from",
                          str(archive), "--migration-key-file", str(mk), "--key-file", str(key),
                          "--uuid", OTHER)  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert sorted(os.listdir(destination)) == [".imports.json", ".imports.lock", OTHER]
            assert manufacture.load(str(destination), OTHER).uuid == OTHER
            vtpmd = Vtpmd(host, destination, "--key-file", str(key))
            try:
                restored = guest_with_vtpm(host, OTHER)
                with (
                    host.attach(restored, host.token(restored)) as hv,
                    TpmFront(hv, timeout=10).connect() as front,
                ):
                    assert sha1_pcr4(front) == PCR4
                    assert nv_contents(front) == SECRET
            finally:
                vtpmd.stop()
    finally:
        for path in (source, destination):
            kill_swtpms(path)
            shutil.rmtree(path, ignore_errors=True)


# -- refusals -----------------------------------------------------------------------------


def _tar_of(sealed_file: Path, mk: Path) -> bytes:
    """The archive inside *sealed_file*, opened with `cryptography` alone."""
    data = sealed_file.read_bytes()
    start = header_end(data)
    head = start + 12
    return AESGCM(bytes.fromhex(mk.read_text().strip())).decrypt(
        data[start:head], data[head:], data[:head]
    )


def _bad_file(kind: str, good: Path, mk: Path, path: Path) -> tuple[Path, str]:
    """A damaged or forged copy of *good*; the words the refusal must hold."""
    data = good.read_bytes()
    denied = "does not authenticate with this migration key"
    if kind == "flipped-byte":
        at = len(data) // 2
        path.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    elif kind == "flipped-tag":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x80]))
    elif kind == "truncated":
        path.write_bytes(data[: len(data) - 100])
    elif kind == "truncated-to-header":
        path.write_bytes(data[: header_end(data) + 5])
        denied = "truncated"
    elif kind == "relabelled":  # the header edited to name another uuid
        path.write_bytes(data.replace(UUID.encode(), OTHER.encode(), 1))
    elif kind == "sealed-for-another-uuid":  # a valid seal whose header names another uuid
        nonce = os.urandom(12)
        head = f"pvgrub-vtpm-export 2 aes-256-gcm {OTHER} {time.time_ns() // 10**6}\n"
        head = head.encode() + nonce
        key = bytes.fromhex(mk.read_text().strip())
        path.write_bytes(head + AESGCM(key).encrypt(nonce, _tar_of(good, mk), head))
        denied = f"sealed for vTPM {OTHER} but holds vTPM {UUID}"
    elif kind == "plain-tar":  # the seal stripped: refused when a migration key is given
        path.write_bytes(_tar_of(good, mk))
        denied = "not sealed with a migration key"
    elif kind == "future-format":
        path.write_bytes(data.replace(b"export 2 aes", b"export 3 aes", 1))
        denied = "sealed with format 3"
    elif kind == "format-1":  # the last version's format: no export time, so no replay check
        first_line = data[: data.index(b" ", len(HEADER) - 1)].replace(b"export 2", b"export 1")
        path.write_bytes(first_line + data[header_end(data) - 1 :])
        denied = "sealed with format 1"
    else:  # pragma: no cover
        raise AssertionError(kind)
    return path, denied


@pytest.mark.parametrize(
    "kind",
    [
        "wrong-key",
        "flipped-byte",
        "flipped-tag",
        "truncated",
        "truncated-to-header",
        "relabelled",
        "sealed-for-another-uuid",
        "plain-tar",
        "future-format",
        "format-1",
    ],
)
def test_import_refuses_what_the_migration_key_does_not_vouch_for(
    made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path, kind: str
) -> None:
    _, key, mk = made
    if kind == "wrong-key":
        bad, denied = sealed, "does not authenticate with this migration key"
        mk = write_key(tmp_path / "wrong.key")
    else:
        bad, denied = _bad_file(kind, sealed, mk, tmp_path / "bad.vtpm")
    destination = tmp_path / "target"
    r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), "--from", str(bad),
                  "--migration-key-file", str(mk), "--key-file", str(key))  # fmt: skip
    one_line_failure(r)
    assert str(bad) in r.stderr and denied in r.stderr, r.stderr
    assert r.stdout == "" and empty(destination)


def test_a_sealed_file_needs_the_migration_key(
    made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path
) -> None:
    _, key, _ = made
    destination = tmp_path / "target"
    r = pvgrubctl("vtpm", "import", "--state-dir", str(destination), str(sealed),
                  "--key-file", str(key))  # fmt: skip
    one_line_failure(r, 2)
    assert "--migration-key-file" in r.stderr and empty(destination)


@pytest.mark.parametrize("kind", ["group-readable", "not-hex", "bad-fd"])
def test_migration_key_file_checked_like_the_host_key(
    made: tuple[Path, Path, Path], tmp_path: Path, kind: str
) -> None:
    state, _, _ = made
    spec, status = str(tmp_path / "mk"), 1
    if kind == "group-readable":
        write_key(tmp_path / "mk").chmod(0o640)
    elif kind == "not-hex":
        (tmp_path / "mk").write_text("z" * 64)
        (tmp_path / "mk").chmod(0o600)
    else:
        spec, status = "fd:three", 2
    out = tmp_path / "x.vtpm"
    r = pvgrubctl("vtpm", "export", "--state-dir", str(state), UUID, "--to", str(out),
                  "--migration-key-file", spec)  # fmt: skip
    one_line_failure(r, status)
    assert "migration key file" in r.stderr and not out.exists()


# -- without a migration key; --to, --from, --uuid --------------------------------------------


def test_export_without_a_migration_key(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """An unencrypted instance is refused (its EK private key and seeds would be
    in the clear); an encrypted one is exported as before, with a warning."""
    plain = tmp_path / "plain"
    manufacture.create(str(plain), OTHER, tpm2=True, key_file=None, ca_dir=None)
    out = tmp_path / "plain.tar"
    r = pvgrubctl("vtpm", "export", "--state-dir", str(plain), OTHER, "--to", str(out))
    one_line_failure(r, 2)
    assert "not encrypted" in r.stderr and "--migration-key-file" in r.stderr
    assert not out.exists()
    state, key, _ = made
    r = pvgrubctl("vtpm", "export", "--state-dir", str(state), UUID, "--to", str(out))
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "not sealed" in r.stderr and r.stderr.count("\n") == 1
    with tarfile.open(out) as tar:
        assert f"{UUID}/vtpm.json" in tar.getnames()
    # and the positional form of import still reads it
    r = pvgrubctl("vtpm", "import", "--state-dir", str(tmp_path / "t"), str(out),
                  "--key-file", str(key))  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_import_uuid_option(made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path) -> None:
    state, key, mk = made
    common = ("--from", str(sealed), "--migration-key-file", str(mk), "--key-file", str(key))
    # not a canonical uuid: a usage error
    r = pvgrubctl("vtpm", "import", "--state-dir", str(tmp_path / "t"), *common,
                  "--uuid", "../" + OTHER)  # fmt: skip
    assert r.returncode == 2 and empty(tmp_path / "t"), r.stderr
    # a uuid that exists: refused, the existing instance untouched
    before = (state / UUID / "tpm2-00.permall").read_bytes()
    r = pvgrubctl("vtpm", "import", "--state-dir", str(state), *common, "--uuid", UUID)
    one_line_failure(r)
    assert "already exists" in r.stderr
    assert (state / UUID / "tpm2-00.permall").read_bytes() == before
    # ARCHIVE and --from together, or neither: usage errors
    r = pvgrubctl("vtpm", "import", "--state-dir", str(tmp_path / "t"), str(sealed), *common)
    one_line_failure(r, 2)
    r = pvgrubctl("vtpm", "import", "--state-dir", str(tmp_path / "t"), "--key-file", str(key))
    one_line_failure(r, 2)
    # a new uuid: its metadata names it, it checks, its state is the exported one
    r = pvgrubctl("vtpm", "import", "--state-dir", str(tmp_path / "t"), *common, "--uuid", OTHER)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "t")) == [".imports.json", ".imports.lock", OTHER]
    r = pvgrubctl("vtpm", "show", "--state-dir", str(tmp_path / "t"), OTHER, "--check")
    assert r.returncode == 0 and OTHER in r.stdout and "state loads" in r.stdout, r.stderr
    assert pcr16_and_nv(tmp_path / "t" / OTHER, key) == (PCR16, NV_DATA)


def test_to_and_its_old_names(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    state, _, mk = made
    nonces = set()
    for flag in ("--to", "--output", "-o"):
        out = tmp_path / f"x{flag}"
        r = pvgrubctl("vtpm", "export", "--state-dir", str(state), UUID, flag, str(out),
                      "--migration-key-file", str(mk))  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert out.read_bytes().startswith(HEADER)
        data = out.read_bytes()
        nonces.add(data[header_end(data) : header_end(data) + 12])
    assert len(nonces) == 3  # a fresh nonce per export, under one key


# -- replays ------------------------------------------------------------------------------


def _import(destination: Path, archive: Path, key: Path, mk: Path, *extra: str) -> (
    subprocess.CompletedProcess[str]
):  # fmt: skip
    return pvgrubctl("vtpm", "import", "--state-dir", str(destination), "--from", str(archive),
                     "--migration-key-file", str(mk), "--key-file", str(key), *extra)  # fmt: skip


def _resealed(good: Path, mk: Path, path: Path, created_ms: int) -> Path:
    """*good*'s archive sealed again with the migration key, stamped *created_ms*:
    what the key's holder could have written at that time."""
    data = seal.seal(UUID, _tar_of(good, mk), bytes.fromhex(mk.read_text().strip()),
                     created_ms=created_ms)  # fmt: skip
    path.write_bytes(data)
    return path


def test_an_export_imports_once_and_an_older_one_never(
    made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path
) -> None:
    """The issue's gap: an old sealed export imported again rolls the vTPM back
    (its NV, its lockout, keys the guest destroyed).  Before the ledger, the
    second import of the same file after a destroy succeeded."""
    state, key, mk = made
    destination = tmp_path / "target"
    assert _import(destination, sealed, key, mk).returncode == 0
    ledger = json.loads((destination / ".imports.json").read_text())
    assert list(ledger["newest_export_ms"]) == [UUID]
    r = pvgrubctl("vtpm", "destroy", "--state-dir", str(destination), UUID, "--yes")
    assert r.returncode == 0, r.stderr
    # The same file again: a replay, also under another uuid.
    for extra in ((), ("--uuid", OTHER)):
        r = _import(destination, sealed, key, mk, *extra)
        one_line_failure(r)
        assert "this very export was already imported here" in r.stderr, r.stderr
        assert sorted(os.listdir(destination)) == [".imports.json", ".imports.lock"]
    # A newer export imports; then the older one is a rollback.
    newer = tmp_path / "newer.vtpm"
    r = pvgrubctl("vtpm", "export", "--state-dir", str(state), UUID, "--to", str(newer),
                  "--migration-key-file", str(mk))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _import(destination, newer, key, mk).returncode == 0
    pvgrubctl("vtpm", "destroy", "--state-dir", str(destination), UUID, "--yes")
    r = _import(destination, sealed, key, mk)
    one_line_failure(r)
    assert "a newer export" in r.stderr and "roll the vTPM back" in r.stderr, r.stderr


def test_an_export_too_old_or_from_the_future_is_refused(
    made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path
) -> None:
    _, key, mk = made
    now = time.time_ns() // 10**6
    old = _resealed(sealed, mk, tmp_path / "old.vtpm", now - 2 * 86400 * 1000)
    r = _import(tmp_path / "a", old, key, mk)
    one_line_failure(r)
    assert "over --max-age 86400 s" in r.stderr and str(old) in r.stderr, r.stderr
    assert not (tmp_path / "a" / UUID).exists()
    r = _import(tmp_path / "a", old, key, mk, "--max-age", "259200")
    assert r.returncode == 0, r.stderr
    r = _import(tmp_path / "b", old, key, mk, "--max-age", "0")  # no limit
    assert r.returncode == 0, r.stderr
    future = _resealed(sealed, mk, tmp_path / "future.vtpm", now + 3600 * 1000)
    r = _import(tmp_path / "c", future, key, mk)
    one_line_failure(r)
    assert "in this host's future" in r.stderr, r.stderr
    # The time is authenticated: edited, the file no longer opens.
    data = old.read_bytes()
    edited = tmp_path / "edited.vtpm"
    stamp = str(now - 2 * 86400 * 1000).encode()
    edited.write_bytes(data.replace(stamp, str(now).encode(), 1))
    r = _import(tmp_path / "d", edited, key, mk)
    one_line_failure(r)
    assert "does not authenticate" in r.stderr, r.stderr


def test_a_damaged_ledger_refuses_imports(
    made: tuple[Path, Path, Path], sealed: Path, tmp_path: Path
) -> None:
    _, key, mk = made
    destination = tmp_path / "target"
    destination.mkdir()
    (destination / ".imports.json").write_text("{not json")
    r = _import(destination, sealed, key, mk)
    one_line_failure(r)
    assert "import ledger is damaged" in r.stderr and not (destination / UUID).exists()


def test_help_gives_the_xl_procedure() -> None:
    for verb in ("export", "import"):
        r = pvgrubctl("vtpm", verb, "--help")
        assert r.returncode == 0
        for step in ("vtpm suspend DOM", "xl save -p DOM", "--to", "--migration-key-file",
                     "xl destroy DOM", "--from", "--key-file", "xl restore"):  # fmt: skip
            assert step in r.stdout, (verb, step)
