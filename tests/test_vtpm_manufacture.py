"""``pvgrubctl vtpm``: instances manufactured by stock swtpm_setup, checked by stock tools.

What an instance holds is read back independently of pvgrub-py: a stock
swtpm given the key file serves the state to tpm2-tools (``tpm2_nvread`` of
the EK certificate, ``tpm2_createek``, ``tpm2_pcrread``), ``openssl verify``
checks the certificate chain and `cryptography` compares the EK's modulus.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_public_key
from swtpm_tools import ToolsTpm, tools_tpm

from pvgrub_py.cli import pvgrubctl

TOOLS = (
    "swtpm",
    "swtpm_setup",
    "swtpm_localca",
    "tpm2_nvread",
    "tpm2_createek",
    "tpm2_pcrread",
    "tpm2_getcap",
    "openssl",
)
pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason="swtpm, swtpm-tools, tpm2-tools or openssl missing (make setup)",
    ),
    pytest.mark.slow,
]

UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
EK_CERT_NV = "0x01c00002"
PLATFORM_CERT_NV = "0x1c08000"
#: TPM_PCRRead(0) (TPM 1.2 main spec part 3, 16.2): tag, size, ordinal 0x15, PCR index.
TPM12_PCRREAD_0 = bytes.fromhex("00c10000000e0000001500000000")


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = pvgrubctl.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def create(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    uuid: str,
    version: str,
    key: Path | None = None,
    *extra: str,
) -> tuple[int, str, str]:
    """``pvgrubctl vtpm create`` of *uuid* under *state* (encrypted when *key* is given)."""
    argv = ["vtpm", "create", "--state-dir", str(state), "--uuid", uuid, version, *extra]
    if key is not None:
        argv += ["--key-file", str(key)]
    return ctl(capsys, *argv)


def write_key(path: Path, mode: int = 0o600) -> Path:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(mode)
    return path


@contextmanager
def stock_swtpm(state_dir: str, key: str | None, tpm2: bool = True) -> Iterator[ToolsTpm]:
    """A stock swtpm on *state_dir* (``--key file=KEY``), on the port pair tpm2-tools wants;
    AssertionError if it exits at start (a state it cannot load)."""
    with tools_tpm(tpm2, state_dir=state_dir, key_file=key) as tpm:
        yield tpm


def swtpm_starts(state_dir: str, key: str | None, tpm2: bool = True) -> bool:
    try:
        with stock_swtpm(state_dir, key, tpm2) as tpm:
            # swtpm may accept a connection before it loads the state: a command
            # proves it answers
            if tpm2:
                tpm.tool("tpm2_getcap", "properties-fixed")
            else:
                answer = tpm.raw(TPM12_PCRREAD_0)
                assert answer[6:10] == bytes(4), answer.hex()
    except (AssertionError, OSError):  # exited, or dropped the connection
        return False
    return True


@pytest.fixture(scope="module")
def made() -> Iterator[tuple[Path, Path, dict[str, object]]]:
    """One encrypted TPM 2.0 instance: (state root, key file, ``show --json``)."""
    root = Path(tempfile.mkdtemp(prefix="pvgrub-vtpmsvc-"))
    try:
        key = write_key(root / "host.key")
        state = root / "state"
        assert (
            pvgrubctl.main(
                [
                    "vtpm",
                    "create",
                    "--state-dir",
                    str(state),
                    "--uuid",
                    UUID,
                    "--tpm2",
                    "--key-file",
                    str(key),
                ]
            )
            == 0
        )
        out = io.StringIO()
        with redirect_stdout(out):
            assert pvgrubctl.main(["vtpm", "show", "--state-dir", str(state), UUID, "--json"]) == 0
        yield state, key, json.loads(out.getvalue())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def copy_instance(state: Path, dest: Path) -> Path:
    """A copy of the instance (a test that damages it must not damage the shared one)."""
    shutil.copytree(state, dest, symlinks=True)
    return dest


# -- create, show ------------------------------------------------------------------------


def test_create_then_show_json(made: tuple[Path, Path, dict[str, object]]) -> None:
    state, key, info = made
    directory = state / UUID
    assert info["uuid"] == UUID
    assert info["tpm_version"] == "2.0"
    assert info["encrypted"] is True
    assert info["key_file"] == str(key)
    assert info["state_dir"] == str(directory)
    assert Path(str(info["ek_certificate"])).is_file()
    assert Path(str(info["ca_certificate"])).is_file()
    assert info["created"] and info["last_used"]
    # state where vtpmd looks for it (vtpm/instances.py: <state-root>/<uuid>/)
    assert (directory / "tpm2-00.permall").is_file()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # the key's contents are nowhere in the metadata, and the state is not plain
    secret = key.read_text().strip()
    assert secret not in (directory / "vtpm.json").read_text()
    assert secret.encode() not in (directory / "tpm2-00.permall").read_bytes()


def test_ek_certificate_in_nv_verifies_and_certifies_the_ek(
    made: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    state, key, info = made
    with stock_swtpm(str(state / UUID), str(key)) as tpm:
        tpm.tool("tpm2_nvread", EK_CERT_NV, "-o", str(tmp_path / "ek.der"))
        tpm.tool(
            "tpm2_createek", "-c", "-", "-G", "rsa", "-u", str(tmp_path / "ek.pem"), "-f", "pem"
        )
        nv_indices = tpm.tool("tpm2_getcap", "handles-nv-index")
        banks = tpm.tool("tpm2_getcap", "pcrs")
        pcrs = tpm.pcrread("sha1:4,5+sha256:4,5")
    der = (tmp_path / "ek.der").read_bytes()
    cert = x509.load_der_x509_certificate(der)
    # the certificate the instance lists is the one in NV
    listed = x509.load_pem_x509_certificate(Path(str(info["ek_certificate"])).read_bytes())
    assert listed == cert
    # issued by the local CA: openssl on the NV copy, against ca_certificate
    (tmp_path / "ek-nv.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(info["ca_certificate"]), str(tmp_path / "ek-nv.pem")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # ...and rooted at the CA's own self-signed root, not at anything system-wide
    chain = x509.load_pem_x509_certificates(Path(str(info["ca_certificate"])).read_bytes())
    assert any(c.subject == c.issuer for c in chain)
    assert str(info["ca_dir"]).startswith(str(state))
    # it certifies the EK the TPM derives (same RSA modulus)
    ek_pub = load_pem_public_key((tmp_path / "ek.pem").read_bytes())
    cert_pub = cert.public_key()
    assert isinstance(ek_pub, rsa.RSAPublicKey) and isinstance(cert_pub, rsa.RSAPublicKey)
    assert ek_pub.public_numbers().n == cert_pub.public_numbers().n
    # a platform certificate in NV as well
    assert PLATFORM_CERT_NV in nv_indices.lower()
    # sha1 and sha256 allocated (swtpm_setup's default is sha256 alone)
    assert set(pcrs) == {"sha1", "sha256"}
    assert pcrs["sha1"][4] == bytes(20) and pcrs["sha256"][4] == bytes(32)
    allocated = {
        line.split(":")[0].strip("- ").strip()
        for line in banks.splitlines()
        if ": [" in line and "[ ]" not in line
    }
    assert {"sha1", "sha256"} <= allocated, banks


# -- encryption at rest -----------------------------------------------------------------


def test_state_needs_its_key(made: tuple[Path, Path, dict[str, object]], tmp_path: Path) -> None:
    state, key, _ = made
    directory = copy_instance(state / UUID, tmp_path / UUID)
    wrong = write_key(tmp_path / "wrong.key")
    assert swtpm_starts(str(directory), str(key))
    assert not swtpm_starts(str(directory), None)
    assert not swtpm_starts(str(directory), str(wrong))


def test_show_check_loads_state(
    made: tuple[Path, Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, _, _ = made
    status, out, err = ctl(capsys, "vtpm", "show", "--state-dir", str(state), UUID, "--check")
    assert status == 0, err
    assert "state loads (TPM 2.0, PCR banks sha1,sha256)" in out


def _damaged(state: Path, tmp_path: Path) -> Path:
    root = tmp_path / "state"
    copy_instance(state / UUID, root / UUID)
    return root


@pytest.mark.parametrize("damage", ["wrong-key", "truncated", "missing", "key-gone"])
def test_show_check_fails_loudly(
    made: tuple[Path, Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    state, _, _ = made
    root = _damaged(state, tmp_path)
    permall = root / UUID / "tpm2-00.permall"
    extra: list[str] = []
    if damage == "wrong-key":
        extra = ["--key-file", str(write_key(tmp_path / "wrong.key"))]
    elif damage == "truncated":
        data = permall.read_bytes()
        permall.write_bytes(data[: len(data) // 2])
    elif damage == "missing":
        permall.unlink()
    else:
        extra = ["--key-file", str(tmp_path / "no-such.key")]
    status, out, err = ctl(
        capsys, "vtpm", "show", "--state-dir", str(root), UUID, "--check", *extra
    )
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pvgrubctl: "), err
    assert "Traceback" not in err
    expected = {
        "wrong-key": "cannot load the state",
        "truncated": "cannot load the state",
        "missing": "state missing",
        "key-gone": "no-such.key",
    }
    assert expected[damage] in err, err


def test_keys_never_on_a_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """swtpm_setup and swtpm (the check's and swtpm_setup's own) run through
    shims that record their argv: the key's path and contents appear in none."""
    shims = tmp_path / "bin"
    shims.mkdir()
    log = tmp_path / "argv.log"
    for tool in ("swtpm_setup", "swtpm"):
        real = shutil.which(tool)
        assert real is not None
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0 $*" >> {log}\nexec {real} "$@"\n')
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    key = write_key(tmp_path / "host.key")
    state = tmp_path / "state"
    status, _, err = create(capsys, state, UUID, "--tpm2", key=key)
    assert status == 0, err
    status, _, err = ctl(capsys, "vtpm", "show", "--state-dir", str(state), UUID, "--check")
    assert status == 0, err
    lines = log.read_text().splitlines()
    assert any(ln.startswith(f"{shims}/swtpm_setup ") and "--keyfile-fd" in ln for ln in lines)
    assert any(ln.startswith(f"{shims}/swtpm socket") and "--key fd=" in ln for ln in lines)
    secret = key.read_text().strip()
    for line in lines:
        assert secret not in line and str(key) not in line, line


def test_tpm12_create_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = write_key(tmp_path / "host.key")
    state = tmp_path / "state"
    status, _, err = create(capsys, state, UUID, "--tpm12", key=key)
    assert status == 0, err
    status, out, err = ctl(
        capsys, "vtpm", "show", "--state-dir", str(state), UUID, "--json", "--check"
    )
    assert status == 0, err
    info = json.loads(out)
    assert info["tpm_version"] == "1.2" and info["encrypted"] is True
    assert (state / UUID / "tpm-00.permall").is_file()
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", info["ca_certificate"], info["ek_certificate"]],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert swtpm_starts(str(state / UUID), str(key), tpm2=False)
    assert not swtpm_starts(str(state / UUID), None, tpm2=False)


def test_unencrypted_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    status, _, err = create(capsys, state, UUID, "--tpm2")
    assert status == 0, err
    status, out, err = ctl(
        capsys, "vtpm", "show", "--state-dir", str(state), UUID, "--json", "--check"
    )
    assert status == 0, err
    assert json.loads(out)["encrypted"] is False
    assert swtpm_starts(str(state / UUID), None)


# -- list, destroy, hostile input ------------------------------------------------------


def test_list_destroy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert create(capsys, state, UUID, "--tpm2")[0] == 0
    other = "0f0e0d0c-0b0a-4908-8706-050403020100"
    (state / other).mkdir()  # what vtpmd makes for an unknown uuid
    status, out, _ = ctl(capsys, "vtpm", "list", "--state-dir", str(state), "--json")
    assert status == 0
    rows = json.loads(out)
    assert [r["uuid"] for r in rows] == [UUID, other]
    assert rows[1] == {"uuid": other, "unmanaged": True}
    # destroy needs --yes (usage error, nothing removed)
    status, _, err = ctl(capsys, "vtpm", "destroy", "--state-dir", str(state), UUID)
    assert status == 2 and "--yes" in err and (state / UUID).is_dir()
    # refused while a swtpm holds the instance (vtpmd serving it)
    with stock_swtpm(str(state / UUID), None):
        status, _, err = ctl(capsys, "vtpm", "destroy", "--state-dir", str(state), UUID, "--yes")
        assert status == 1 and "in use" in err and (state / UUID).is_dir()
    status, out, err = ctl(capsys, "vtpm", "destroy", "--state-dir", str(state), UUID, "--yes")
    assert status == 0, err
    assert not (state / UUID).exists()
    assert (state / "ca" / "issuercert.pem").is_file()  # the CA stays
    status, _, err = ctl(capsys, "vtpm", "show", "--state-dir", str(state), UUID)
    assert status == 1 and "no such vTPM instance" in err


@pytest.mark.parametrize(
    "bad",
    [
        "../etc",
        f"{UUID}/..",
        "7b5b6d2e0c5e4c399a634f4f0e0b1c1d",
        "{" + UUID + "}",
        "urn:uuid:" + UUID,
        "",
    ],
)
def test_uuid_must_be_canonical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    state = tmp_path / "state"
    for argv in (
        ["create", "--state-dir", str(state), "--uuid", bad, "--tpm2"],
        ["show", "--state-dir", str(state), bad],
        ["destroy", "--state-dir", str(state), bad, "--yes"],
    ):
        status, out, err = ctl(capsys, "vtpm", *argv)
        assert status == 2 and out == "" and err.count("\n") == 1, (argv, err)
    assert not state.exists()


@pytest.mark.parametrize("problem", ["mode", "not-hex", "short", "missing", "symlink"])
def test_bad_key_file_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    key = tmp_path / "host.key"
    if problem == "mode":
        write_key(key, 0o644)
    elif problem == "not-hex":
        key.write_text("z" * 64)
        key.chmod(0o600)
    elif problem == "short":
        key.write_text(os.urandom(16).hex())
        key.chmod(0o600)
    elif problem == "symlink":
        key.symlink_to(write_key(tmp_path / "real.key"))
    state = tmp_path / "state"
    status, out, err = create(capsys, state, UUID, "--tpm2", key=key)
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert f"key file {key}" in err
    assert not state.exists()


def test_create_never_overwrites(
    made: tuple[Path, Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, key, _ = made
    before = (state / UUID / "tpm2-00.permall").read_bytes()
    status, _, err = create(capsys, state, UUID, "--tpm2", key=key)
    assert status == 1 and "already exists" in err and err.count("\n") == 1
    assert (state / UUID / "tpm2-00.permall").read_bytes() == before


# -- export, import -----------------------------------------------------------------------


def test_export_import_round_trip(
    made: tuple[Path, Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, key, info = made
    archive = tmp_path / "guest.vtpm.tar"
    status, _, err = ctl(
        capsys, "vtpm", "export", "--state-dir", str(state), UUID, "-o", str(archive)
    )
    assert status == 0, err
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert key.read_text().strip().encode() not in archive.read_bytes()
    # never overwrites
    status, _, err = ctl(
        capsys, "vtpm", "export", "--state-dir", str(state), UUID, "-o", str(archive)
    )
    assert status == 1 and err.count("\n") == 1
    # the other host: its own copy of the key
    other = tmp_path / "other"
    other_key = tmp_path / "other.key"
    shutil.copy(key, other_key)
    other_key.chmod(0o600)
    status, _, err = ctl(capsys, "vtpm", "import", "--state-dir", str(other), str(archive))
    assert status == 2 and "--key-file" in err and not (other / UUID).exists()
    wrong = write_key(tmp_path / "wrong.key")
    status, _, err = ctl(
        capsys, "vtpm", "import", "--state-dir", str(other), str(archive), "--key-file", str(wrong)
    )
    assert status == 1 and "cannot load the state" in err, err
    assert os.listdir(other) == []  # no instance, no staging left
    status, out, err = ctl(
        capsys,
        "vtpm",
        "import",
        "--state-dir",
        str(other),
        str(archive),
        "--key-file",
        str(other_key),
    )
    assert status == 0, err
    assert "state loads (TPM 2.0, PCR banks sha1,sha256)" in out
    status, out, _ = ctl(capsys, "vtpm", "show", "--state-dir", str(other), UUID, "--json")
    moved = json.loads(out)
    assert moved["key_file"] == str(other_key) and moved["encrypted"] is True
    assert moved["created"] == info["created"]
    assert (
        Path(moved["ek_certificate"]).read_bytes() == Path(str(info["ek_certificate"])).read_bytes()
    )
    assert swtpm_starts(str(other / UUID), str(other_key))
    assert not swtpm_starts(str(other / UUID), None)


def test_export_refused_while_served(
    made: tuple[Path, Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, key, _ = made
    copy = tmp_path / "state"
    copy_instance(state / UUID, copy / UUID)
    with stock_swtpm(str(copy / UUID), str(key)):
        status, _, err = ctl(
            capsys, "vtpm", "export", "--state-dir", str(copy), UUID, "-o", str(tmp_path / "x.tar")
        )
    assert status == 1 and "in use" in err
    assert not (tmp_path / "x.tar").exists()


def _hostile_archive(path: Path, kind: str) -> None:
    if kind == "not-tar":
        path.write_bytes(b"not a tar archive, just text\n" * 100)
        return
    meta = json.dumps(
        {
            "format": 1,
            "uuid": UUID,
            "tpm_version": "2.0",
            "encrypted": False,
            "key_file": None,
            "created": "2026-01-01T00:00:00Z",
            "ca_dir": "/x",
        }
    )
    if kind == "bad-metadata":
        meta = json.dumps({"uuid": UUID})

    def reg(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        reg(tar, f"{UUID}/vtpm.json", meta.encode())
        if kind == "traversal":
            reg(tar, f"{UUID}/../../etc/evil")
        elif kind == "absolute":
            reg(tar, "/etc/evil")
        elif kind == "symlink":
            info = tarfile.TarInfo(f"{UUID}/tpm2-00.permall")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo(f"{UUID}/tpm2-00.permall")
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
        elif kind == "two-uuids":
            reg(tar, "0f0e0d0c-0b0a-4908-8706-050403020100/vtpm.json", meta.encode())
        elif kind == "other-name":
            reg(tar, f"{UUID}/run.sh")
        elif kind == "oversized":
            reg(tar, f"{UUID}/tpm2-00.permall", bytes(2 << 20))
        elif kind == "bad-metadata":
            pass  # the vtpm.json above lacks every other field


@pytest.mark.parametrize(
    "kind",
    [
        "not-tar",
        "traversal",
        "absolute",
        "symlink",
        "device",
        "two-uuids",
        "other-name",
        "oversized",
        "bad-metadata",
    ],
)
def test_import_refuses_hostile_archives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    archive = tmp_path / "evil.tar"
    _hostile_archive(archive, kind)
    state = tmp_path / "state"
    status, out, err = ctl(capsys, "vtpm", "import", "--state-dir", str(state), str(archive))
    assert status == 1 and out == "" and err.count("\n") == 1, err
    assert str(archive) in err and "Traceback" not in err
    expected = {
        "not-tar": "not a tar archive",
        "traversal": "unexpected member",
        "absolute": "not under a uuid directory",
        "symlink": "unexpected member",
        "device": "unexpected member",
        "two-uuids": "not the archive's one uuid",
        "other-name": "unexpected member",
        "oversized": "is over",
        "bad-metadata": "field 'tpm_version'",
    }
    assert expected[kind] in err, err
    assert not (state / UUID).exists()
    assert not state.exists() or os.listdir(state) == []


def test_vtpmd_serves_an_unencrypted_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vtpmd's own instance code (vtpm/instances.py) opens a manufactured
    instance where it looks for it, with its EK and both banks intact."""
    from pvgrub_py.tpm.client import TpmClient
    from pvgrub_py.tpm.swtpm import SwtpmTransport
    from pvgrub_py.vtpm.instances import VtpmInstances

    state = tmp_path / "state"
    assert create(capsys, state, UUID, "--tpm2")[0] == 0
    instances = VtpmInstances(str(state), tpm2=True)
    try:
        inst = instances.get(UUID.upper())
        with TpmClient(SwtpmTransport(inst.data, 10.0), version="2.0") as client:
            assert [b.name for b in client.active_banks()] == ["sha1", "sha256"]
    finally:
        instances.stop()
    # served once, the instance still checks
    status, _, err = ctl(capsys, "vtpm", "show", "--state-dir", str(state), UUID, "--check")
    assert status == 0, err
