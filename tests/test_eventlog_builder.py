"""pvgrub_py.eventlog.builder: logs of pv-grub measurements, atomic writes.

The integration tests hand our logs to the real ``tpm2_eventlog`` (Debian
tpm2-tools) and check that it reads them and replays them to our PCRs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from as_nobody import as_nobody, shared_tmp

from pvgrub_py.errors import InputError, PvgrubError, UsageError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import parse, serialise
from pvgrub_py.eventlog.records import EV_IPL, EV_NO_ACTION, SpecIdEvent
from pvgrub_py.eventlog.replay import PcrValues, replay
from pvgrub_py.measure.plan import Measurement, What
from pvgrub_py.tpm.algorithms import SHA1, SHA256, SHA384, SHA512, HashAlgorithm

ALL_BANKS = (SHA1, SHA256, SHA384, SHA512)


def measurement(pcr: int, what: What, source: str | None, content: bytes) -> Measurement:
    digests = {alg.name: hashlib.new(alg.name, content).digest() for alg in ALL_BANKS}
    return Measurement(pcr, what, source, digests, len(content))


def pv_grub_boot(initrd: bytes | None = b"initrd bytes") -> list[Measurement]:
    """pv-grub's three extends: PCR 4 kernel, PCR 5 cmdline, PCR 5 initrd."""
    cmdline = "root=/dev/xvda1 ro console=hvc0"
    return [
        measurement(4, "kernel", "/boot/vmlinuz-6.1.0-28-amd64", b"\x7fELF kernel"),
        measurement(5, "cmdline", cmdline, cmdline.encode()),
        measurement(5, "initrd", None if initrd is None else "/boot/initrd.img", initrd or b""),
    ]


def expected_pcrs(measurements: Sequence[Measurement], banks: Sequence[HashAlgorithm]) -> PcrValues:
    """PCR = H(PCR || digest) from zero, in plain hashlib (not the code under test)."""
    values: PcrValues = {alg.name: {} for alg in banks}
    for m in measurements:
        for alg in banks:
            bank = values[alg.name]
            old = bank.get(m.pcr, bytes(hashlib.new(alg.name).digest_size))
            bank[m.pcr] = hashlib.new(alg.name, old + m.digests[alg.name]).digest()
    return values


def test_tpm12_log_is_sha1_format_with_sha1_digests_only() -> None:
    ms = pv_grub_boot()
    log = log_for_measurements(ms, (SHA1, SHA256), tpm2=False)
    assert log.format == "sha1" and log.spec_id is None and log.header_event is None
    assert [(e.pcr, e.event_type, e.data) for e in log.events] == [
        (m.pcr, EV_IPL, m.event_data) for m in ms
    ]
    assert all(list(e.digests) == ["sha1"] for e in log.events)
    assert replay(parse(serialise(log), "built")) == expected_pcrs(ms, (SHA1,))


def test_tpm12_log_needs_the_sha1_bank() -> None:
    with pytest.raises(UsageError, match="sha1 bank"):
        log_for_measurements(pv_grub_boot(), (SHA256,), tpm2=False)


def test_tpm2_log_declares_the_banks_in_a_specid_event() -> None:
    ms = pv_grub_boot(initrd=None)
    log = log_for_measurements(ms, (SHA256, SHA1, SHA256), tpm2=True)
    assert log.spec_id == SpecIdEvent(
        platform_class=0,
        spec_version_minor=0,
        spec_version_major=2,
        spec_errata=0,
        uintn_size=2,
        algorithms=((0x000B, 32), (0x0004, 20)),
    )
    assert log.header_event is not None and log.header_event.event_type == EV_NO_ACTION
    assert [list(e.digests) for e in log.events] == [["sha256", "sha1"]] * 3
    assert log.events[2].data == b"initrd: (none)"
    data = serialise(log)
    assert parse(data, "built") == log
    assert replay(log) == expected_pcrs(ms, (SHA256, SHA1))


def test_tpm2_log_needs_a_bank() -> None:
    with pytest.raises(UsageError):
        log_for_measurements(pv_grub_boot(), (), tpm2=True)


def test_a_measurement_without_a_requested_digest_is_refused() -> None:
    m = Measurement(4, "kernel", "/vmlinuz", {"sha1": bytes(20)}, 0)
    with pytest.raises(PvgrubError, match="no sha256 digest"):
        log_for_measurements([m], (SHA1, SHA256), tpm2=True)
    bad = Measurement(4, "kernel", "/vmlinuz", {"sha1": bytes(19)}, 0)
    with pytest.raises(PvgrubError, match="19 bytes"):
        log_for_measurements([bad], (SHA1,), tpm2=False)


# --- write_atomic ----------------------------------------------------------------


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "guest.eventlog"
    write_atomic(str(target), b"first")
    write_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["guest.eventlog"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~umask


def test_write_atomic_leaves_nothing_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "guest.eventlog"
    target.write_bytes(b"old")

    def fail(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(InputError, match=r"guest\.eventlog: cannot write: Input/output error"):
        write_atomic(str(target), b"new")
    assert os.listdir(tmp_path) == ["guest.eventlog"]
    assert target.read_bytes() == b"old"


def test_write_atomic_leaves_nothing_when_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(InputError, match="No space left"):
        write_atomic(str(tmp_path / "log"), b"new")
    assert os.listdir(tmp_path) == []


def test_write_atomic_cleans_up_on_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(tmp_path / "log"), b"new")
    assert os.listdir(tmp_path) == []


def test_write_atomic_onto_a_directory(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(str(tmp_path / "log"), b"new")
    assert os.listdir(tmp_path) == ["log"]


def test_write_atomic_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot create a temporary file"):
        write_atomic(str(tmp_path / "absent" / "log"), b"new")
    assert os.listdir(tmp_path) == []


def test_write_atomic_in_a_read_only_directory() -> None:
    """As nobody (root ignores directory permissions): a one-line error, nothing left."""
    with shared_tmp() as tmp:
        ro = tmp / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        kind, message = as_nobody(lambda: write_atomic(str(ro / "log"), b"new"))
        assert kind == "InputError" and "Permission denied" in message, (kind, message)
        assert "\n" not in message
        assert os.listdir(ro) == []


def test_write_atomic_temp_names_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".log.aaaa.tmp").write_bytes(b"someone else's")
    write_atomic(str(tmp_path / "log"), b"ours")
    assert (tmp_path / "log").read_bytes() == b"ours"
    assert (tmp_path / ".log.aaaa.tmp").read_bytes() == b"someone else's"


# --- against the real tpm2_eventlog --------------------------------------------------

TPM2_EVENTLOG = shutil.which("tpm2_eventlog")
needs_tool = pytest.mark.skipif(TPM2_EVENTLOG is None, reason="tpm2_eventlog not installed")


def tpm2_eventlog_pcrs(path: Path) -> PcrValues:
    """Run tpm2_eventlog and read its ``pcrs:`` section (as text: no YAML needed)."""
    assert TPM2_EVENTLOG is not None
    out = subprocess.run(
        [TPM2_EVENTLOG, str(path)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    values: PcrValues = {}
    bank: str | None = None
    in_pcrs = False
    for line in out.splitlines():
        if line.startswith("pcrs:"):
            in_pcrs = True
        elif in_pcrs and line.startswith("  ") and not line.startswith("    "):
            bank = line.strip().rstrip(":")
            values[bank] = {}
        elif in_pcrs and bank is not None and line.startswith("    "):
            pcr, _, value = line.partition(":")
            values[bank][int(pcr)] = bytes.fromhex(value.strip().removeprefix("0x"))
    return values


BANK_SETS = [(SHA1,), (SHA256,), (SHA1, SHA256), (SHA256, SHA1), ALL_BANKS]
#: (tpm2, banks): a TPM 1.2 log needs SHA-1 among the banks.
LOG_KINDS = [(False, b) for b in BANK_SETS if SHA1 in b] + [(True, b) for b in BANK_SETS]


def _kind_id(kind: tuple[bool, tuple[HashAlgorithm, ...]]) -> str:
    tpm2, banks = kind
    return ("tpm2-" if tpm2 else "tpm12-") + "+".join(a.name for a in banks)


@pytest.mark.integration
@needs_tool
@pytest.mark.parametrize("kind", LOG_KINDS, ids=_kind_id)
@pytest.mark.parametrize("initrd", [b"initrd bytes", None], ids=["initrd", "no-initrd"])
def test_tpm2_eventlog_reads_our_logs_and_agrees(
    tmp_path: Path, kind: tuple[bool, tuple[HashAlgorithm, ...]], initrd: bytes | None
) -> None:
    tpm2, banks = kind
    ms = pv_grub_boot(initrd)
    log = log_for_measurements(ms, banks, tpm2=tpm2)
    path = tmp_path / "guest.eventlog"
    write_atomic(str(path), serialise(log))
    ours = replay(parse(path.read_bytes(), str(path)))
    assert tpm2_eventlog_pcrs(path) == ours
    assert ours == expected_pcrs(ms, banks if tpm2 else (SHA1,))


@pytest.mark.conformance
@pytest.mark.integration
@needs_tool
@pytest.mark.parametrize(
    "name",
    [
        "event-arch-linux.bin",
        "event-gce-ubuntu-2104-log.bin",
        "event-sd-boot-fedora37.bin",
        "event-uefi-sha1-log.bin",
        "event.bin",
        "go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog",
        "go-attestation/crypto_agile_eventlog",
        "go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
        "go-attestation/windows_gcp_shielded_vm.bin",
    ],
)
def test_tpm2_eventlog_replays_real_logs_as_we_do(fixtures_dir: Path, name: str) -> None:
    path = fixtures_dir / "eventlog" / name
    ours = {b: v for b, v in replay(parse(path.read_bytes(), name)).items() if v}
    assert tpm2_eventlog_pcrs(path) == ours


def test_write_atomic_never_replaces_a_fifo_socket_or_device(tmp_path: Path) -> None:
    """The rename would put the log where the special file was (as root, over
    /dev/null): refused before anything is written, the special file kept."""
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    try:
        for special in (fifo, sock_path, device):
            mode = special.lstat().st_mode
            with pytest.raises(InputError, match="not a regular file"):
                write_atomic(str(special), b"log")
            assert special.lstat().st_mode == mode
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null", "sock"]
    finally:
        sock.close()
