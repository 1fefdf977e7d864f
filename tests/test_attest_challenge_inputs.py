"""`attest challenge` and `attest activate` on hostile and wrong inputs: one line, exit 1
(2 for usage), nothing written, never a hang.  No TPM is needed: MakeCredential is
software, and every refusal here comes before a TPM would be reached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pvgrubctl_run import ctl

pytss = pytest.importorskip("tpm2_pytss", reason="tpm2-pytss (the [attest] extra) is not installed")

#: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
AK_ATTRS = 0x00050072
#: an EK template's: fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy |
#: restricted | decrypt
EK_ATTRS = 0x000300B2


def tpm2b_public(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, attrs: int) -> bytes:
    """A TPM2B_PUBLIC for *key*, built with tpm2-pytss (AES-128-CFB, SHA-256)."""
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public = pytss.TPMT_PUBLIC.from_pem(
        pem, nameAlg=pytss.TPM2_ALG.SHA256, objectAttributes=attrs, symmetric="aes128cfb"
    )
    return bytes(pytss.TPM2B_PUBLIC(publicArea=public).marshal())


@pytest.fixture
def files(tmp_path: Path) -> Path:
    ek = rsa.generate_private_key(65537, 2048).public_key()
    (tmp_path / "ek.pem").write_bytes(
        ek.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ek.pub").write_bytes(tpm2b_public(ek, EK_ATTRS))
    ak = rsa.generate_private_key(65537, 2048).public_key()
    (tmp_path / "ak.pub").write_bytes(tpm2b_public(ak, AK_ATTRS))
    (tmp_path / "ak.name").write_bytes(bytes.fromhex("000b") + os.urandom(32))
    return tmp_path


def challenge(capsys: pytest.CaptureFixture[str], d: Path, *argv: str) -> tuple[int, str, str]:
    status, out, err = ctl(capsys, "attest", "challenge", *argv, "--secret-out", str(d / "s"),
                           "--credential-out", str(d / "c"))  # fmt: skip
    if status != 0:
        assert not (d / "s").exists() and not (d / "c").exists(), "a refusal wrote a file"
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return status, out, err


def test_good_inputs_give_a_credential_blob(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for ek in ("ek.pub", "ek.pem"):
        status, _, err = challenge(capsys, files, "-u", str(files / ek), "--ak-public",
                                   str(files / "ak.pub"))  # fmt: skip
        assert status == 0, err
        blob = (files / "c").read_bytes()
        assert blob[:8] == bytes.fromhex("badcc0de00000001")
        # the encrypted seed is an RSA-2048 OAEP block
        id_size = int.from_bytes(blob[8:10], "big")
        assert int.from_bytes(blob[10 + id_size : 12 + id_size], "big") == 256
        assert len(blob) == 12 + id_size + 256


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("garbage EK", ["-u", "junk", "--ak-public", "ak.pub"], "junk: TPM2B_PUBLIC"),
        ("truncated EK", ["-u", "ek.trunc", "--ak-public", "ak.pub"], "ek.trunc: TPM2B_PUBLIC"),
        ("trailing bytes", ["-u", "ek.long", "--ak-public", "ak.pub"], "ek.long: TPM2B_PUBLIC"),
        ("an AK as EK", ["-u", "ak.pub", "--ak-public", "ak.pub"], "not an endorsement key"),
        ("an EK as AK", ["-u", "ek.pub", "--ak-public", "ek.pub"], "not an attestation key"),
        ("a PEM AK", ["-u", "ek.pub", "--ak-public", "ek.pem"], "needs its TPM2B_PUBLIC"),
        ("P-384 PEM EK", ["-u", "ek384.pem", "--ak-public", "ak.pub"], "RSA 2048 or NIST P-256"),
        ("short name", ["-u", "ek.pub", "--ak-name", "name.short"], "a sha256 Name has 34"),
        ("unknown hash", ["-u", "ek.pub", "--ak-name", "name.alg"], "is not one we know"),
        ("a FIFO", ["-u", "fifo", "--ak-public", "ak.pub"], "is a FIFO, not a regular file"),
        ("a directory", ["-u", ".", "--ak-public", "ak.pub"], "is a directory"),
        ("missing", ["-u", "nothing", "--ak-public", "ak.pub"], "no such file"),
    ],
)
def test_bad_inputs_are_refused_in_one_line(
    files: Path, case: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = files
    (d / "junk").write_bytes(b"\x01\x02not a key at all")
    pub = (d / "ek.pub").read_bytes()
    (d / "ek.trunc").write_bytes(pub[:-7])
    (d / "ek.long").write_bytes(pub + b"\0\0")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    (d / "ek384.pem").write_bytes(
        p384.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (d / "name.short").write_bytes(bytes.fromhex("000b") + bytes(20))
    (d / "name.alg").write_bytes(bytes.fromhex("0099") + bytes(32))
    os.mkfifo(d / "fifo")
    argv = [str(d / a) if not a.startswith("-") else a for a in args]
    status, _, err = challenge(capsys, d, *argv)
    assert status == 1, (case, err)
    assert message in err, (case, err)


def test_usage_errors(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = files
    status, _, err = challenge(capsys, d, "-u", str(d / "ek.pub"), "--ak-name", "zz")
    assert status == 2 and "neither a file nor a hex Name" in err
    status, _, err = challenge(capsys, d, "-u", str(d / "ek.pub"), "--ak-name",
                               "000b" + "00" * 32, "--ca", str(d / "ek.pem"))  # fmt: skip
    assert status == 2 and "--ek-certificate and --ca go together" in err
    # a hex Name on the command line is taken, as tpm2_makecredential -n takes it
    status, _, err = challenge(capsys, d, "-u", str(d / "ek.pub"), "--ak-name", "000b" + "00" * 32)
    assert status == 0, err
    # secret and credential must be two files
    argv = ["attest", "challenge", "-u", str(d / "ek.pub"), "--ak-public", str(d / "ak.pub")]
    status, _, err = ctl(capsys, *argv, "--secret-out", str(d / "x"), "-o", str(d / "x"))
    assert status == 1 and "two outputs" in err and not (d / "x").exists()


def test_a_fifo_given_to_attest_verify_is_refused_not_read(tmp_path: Path) -> None:
    """Reading a FIFO would block until a writer comes: refused before any read."""
    fifo = tmp_path / "ak.fifo"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "attest", "verify", "-u", str(fifo),
         "-m", str(fifo), "-s", str(fifo), "-q", "ab", "--reference", str(fifo)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == f"pvgrubctl: {fifo}: cannot read the public key: is a FIFO, " \
                                  "not a regular file"  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "words"),
    [
        ("challenge", ["tpm2_activatecredential", "--ek-certificate", "--ca", "examples:",
                       "exit status:", "0600"]),
        ("activate", ["tpm2_activatecredential", "PolicySecret", "--ek-handle", "--domid"]),
        ("create-ak", ["tpm2_createak", "tpm2_createek", "--ak-context", "--domid"]),
        ("quote", ["tpm2_quote", "tpm2_checkquote", "serialized", "examples:", "--pcr-out"]),
    ],
)  # fmt: skip
def test_help_is_a_manual_page(
    verb: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = ctl(capsys, "attest", verb, "--help")
    assert status == 0
    description = out.split("\n\n")[1]
    assert description[:1].isalpha(), description  # prose, not a stray escape
    assert "\\\\" not in out
    for word in words:
        assert word in out, (verb, word)
