"""`pvgrubctl attest challenge/activate/quote` against real swtpms and stock tpm2-tools.

Every side of ours is checked against the stock tool on the other side:
our challenge is activated by ``tpm2_activatecredential``, a stock
``tpm2_makecredential`` credential by our activate; a challenge for another
TPM's EK is refused by both activators; our quote is checked by
``tpm2_checkquote`` and ``attest verify`` and its PCR file is byte for byte
``tpm2_quote``'s.  EK certificates come from a vTPM manufactured by
``pvgrubctl vtpm create`` (stock swtpm_setup/swtpm_localca), the refused ones
from a CA made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_public_key
from cryptography.x509.oid import NameOID
from pvgrubctl_run import ctl
from swtpm_tools import ToolsTpm, needs_tools, tools_tpm

from pvgrub_py.cli.pvgrubctl import main as pvgrubctl

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss (the [attest] extra) is not installed")

pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.integration,
    needs_tools,
    pytest.mark.skipif(
        any(
            shutil.which(t) is None
            for t in ("tpm2_makecredential", "tpm2_activatecredential", "tpm2_checkquote")
        ),
        reason="tpm2-tools' credential and quote tools are not installed (make setup)",
    ),
]


@dataclass
class Keys:
    """A TPM with an EK and an AK made by tpm2-tools."""

    tpm: ToolsTpm
    dir: Path

    def make(self, ek_alg: str = "rsa") -> Keys:
        d = self.dir
        self.tpm.tool("tpm2_createek", "-c", str(d / "ek.ctx"), "-G", ek_alg,
                      "-u", str(d / "ek.pub"))  # fmt: skip
        self.tpm.tool("tpm2_flushcontext", "-t")  # swtpm holds 3 transient objects
        self.tpm.tool("tpm2_readpublic", "-c", str(d / "ek.ctx"), "-f", "pem",
                      "-o", str(d / "ek.pem"))  # fmt: skip
        self.tpm.tool("tpm2_flushcontext", "-t")
        self.tpm.tool("tpm2_createak", "-C", str(d / "ek.ctx"), "-c", str(d / "ak.ctx"),
                      "-u", str(d / "ak.pub"), "-n", str(d / "ak.name"),
                      "-G", "rsa", "-g", "sha256", "-s", "rsassa")  # fmt: skip
        self.tpm.tool("tpm2_flushcontext", "-t")
        return self

    def stock_activate(self, cred: Path, out: Path) -> subprocess.CompletedProcess[str]:
        """tpm2_activatecredential with the EK policy session, as tpm2-tools documents it."""
        session = self.dir / "session.ctx"
        self.tpm.tool("tpm2_startauthsession", "--policy-session", "-S", str(session))
        self.tpm.tool("tpm2_policysecret", "-S", str(session), "-c", "e")
        done = subprocess.run(
            ["tpm2_activatecredential", "-T", self.tpm.tcti, "-c", str(self.dir / "ak.ctx"),
             "-C", str(self.dir / "ek.ctx"), "-i", str(cred), "-o", str(out),
             "-P", f"session:{session}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.tpm.tool("tpm2_flushcontext", "-t")
        self.tpm.tool("tpm2_flushcontext", "-s")
        return done


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keys]:
    with tools_tpm() as tpm:
        yield Keys(tpm, tmp_path).make()


@pytest.mark.parametrize("ek_form", ["ek.pub", "ek.pem"])
def test_our_challenge_is_activated_by_tpm2_activatecredential(
    keys: Keys, ek_form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys.dir
    status, _, err = ctl(capsys, "attest", "challenge", "--ek-public", str(d / ek_form),
                           "--ak-name", str(d / "ak.name"), "--secret-out", str(d / "secret"),
                           "--credential-out", str(d / "cred"))  # fmt: skip
    assert status == 0, err
    secret = (d / "secret").read_bytes()
    assert len(secret) == 32 and (d / "secret").stat().st_mode & 0o077 == 0
    done = keys.stock_activate(d / "cred", d / "answer")
    assert done.returncode == 0, done.stderr
    assert (d / "answer").read_bytes() == secret


def test_challenge_by_ak_public_names_the_same_ak(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys.dir
    status, _, err = ctl(capsys, "attest", "challenge", "-u", str(d / "ek.pub"),
                         "--ak-public", str(d / "ak.pub"), "--secret-out", str(d / "secret"),
                         "-o", str(d / "cred"))  # fmt: skip
    assert status == 0, err
    assert keys.stock_activate(d / "cred", d / "answer").returncode == 0
    assert (d / "answer").read_bytes() == (d / "secret").read_bytes()
    # an EK is no AK: its public area is refused as one, and nothing is written
    status, _, err = ctl(capsys, "attest", "challenge", "-u", str(d / "ek.pub"),
                         "--ak-public", str(d / "ek.pub"), "--secret-out", str(d / "s2"),
                         "-o", str(d / "c2"))  # fmt: skip
    assert status == 1 and "not an attestation key" in err and len(err.splitlines()) == 1
    assert not (d / "s2").exists() and not (d / "c2").exists()


def test_stock_makecredential_is_activated_by_ours(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys.dir
    secret = hashlib.sha256(b"verifier's secret").digest()
    (d / "secret").write_bytes(secret)
    subprocess.run(
        ["tpm2_makecredential", "-T", "none", "-u", str(d / "ek.pub"), "-s", str(d / "secret"),
         "-n", (d / "ak.name").read_bytes().hex(), "-o", str(d / "cred")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    status, _, err = ctl(capsys, "attest", "activate", "--tpm", keys.tpm.uri, "--credential",
                         str(d / "cred"), "--ak-context", str(d / "ak.ctx"),
                         "--secret-out", str(d / "answer"))  # fmt: skip
    assert status == 0, err
    assert (d / "answer").read_bytes() == secret
    assert (d / "answer").stat().st_mode & 0o077 == 0


def test_a_challenge_for_another_tpms_ek_cannot_be_activated(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    with tools_tpm() as other_tpm:
        other = Keys(other_tpm, other_dir).make()
    d = keys.dir
    # the verifier is told the other TPM's EK, the AK is this TPM's
    status, _, err = ctl(capsys, "attest", "challenge", "-u", str(other.dir / "ek.pub"),
                         "--ak-name", str(d / "ak.name"), "--secret-out", str(d / "secret"),
                         "-o", str(d / "cred"))  # fmt: skip
    assert status == 0, err
    status, _, err = ctl(capsys, "attest", "activate", "--tpm", keys.tpm.uri, "--credential",
                           str(d / "cred"), "--ak-context", str(d / "ak.ctx"),
                           "--secret-out", str(d / "answer"))  # fmt: skip
    assert status == 1
    assert "TPM2_ActivateCredential" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (d / "answer").exists()
    # the oracle agrees: tpm2_activatecredential cannot either
    done = keys.stock_activate(d / "cred", d / "stock-answer")
    assert done.returncode != 0
    # ...and a challenge for this TPM's EK but another AK's Name is refused as well
    status, _, err = ctl(capsys, "attest", "challenge", "-u", str(d / "ek.pub"),
                         "--ak-name", str(other.dir / "ak.name"), "--secret-out",
                         str(d / "secret2"), "-o", str(d / "cred2"))  # fmt: skip
    assert status == 0, err
    status, _, err = ctl(capsys, "attest", "activate", "--tpm", keys.tpm.uri, "--credential",
                         str(d / "cred2"), "--ak-context", str(d / "ak.ctx"),
                         "--secret-out", str(d / "answer"))  # fmt: skip
    assert status == 1 and not (d / "answer").exists(), err


def test_damaged_credential_files_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good_head = bytes.fromhex("badcc0de00000001")
    cases = {
        "empty": b"",
        "magic": bytes.fromhex("deadbeef00000001") + bytes(8),
        "version": bytes.fromhex("badcc0de00000002") + bytes(8),
        "short": good_head + b"\x01\x00" + b"x" * 10,
        "trailing": good_head + b"\x00\x01x\x00\x01y" + b"zz",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        status, _, err = ctl(capsys, "attest", "activate", "--tpm", "swtpm:tcp:127.0.0.1:1",
                             "--credential", str(path), "--ak-handle", "0x81010002",
                             "--secret-out", str(tmp_path / "out"))  # fmt: skip
        assert status == 1, name
        assert err.startswith(f"pvgrubctl: {path}: credential blob"), (name, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- EK certificates from a manufactured vTPM --------------------------------------------

UUID = "0f4c2c59-9d1a-4f60-8e39-2f0a4d1b6c11"


@dataclass
class Manufactured:
    keys: Keys
    ek_der: Path
    ca_chain: Path


@pytest.fixture(scope="module")
def manufactured() -> Iterator[Manufactured]:
    """A vTPM made by ``pvgrubctl vtpm create``, served by a stock swtpm: its EK
    (tpm2_createek), AK, the EK certificate from NV and the CA chain."""
    if shutil.which("swtpm_setup") is None or shutil.which("swtpm_localca") is None:
        pytest.skip("swtpm-tools (swtpm_setup, swtpm_localca) are not installed")
    root = Path(tempfile.mkdtemp(prefix="pvgrub-attest-ek-"))
    try:
        state = root / "state"
        assert pvgrubctl(["vtpm", "create", "--state-dir", str(state), "--uuid", UUID,
                          "--tpm2"]) == 0  # fmt: skip
        work = root / "work"
        work.mkdir()
        with tools_tpm(state_dir=str(state / UUID)) as tpm:
            tpm.tool("tpm2_nvread", "0x01c00002", "-o", str(work / "ek.der"))
            yield Manufactured(Keys(tpm, work).make(), work / "ek.der",
                               state / UUID / "certs" / "ca-chain.pem")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _challenge_with_cert(
    capsys: pytest.CaptureFixture[str], m: Manufactured, cert: Path, ek: Path, out: Path
) -> tuple[int, str, str]:
    return ctl(capsys, "attest", "challenge", "--ek-public", str(ek), "--ek-certificate",
               str(cert), "--ca", str(m.ca_chain), "--ak-public", str(m.keys.dir / "ak.pub"),
               "--secret-out", str(out / "secret"),
               "--credential-out", str(out / "cred"))  # fmt: skip


@pytest.mark.slow
def test_ek_certificate_of_the_vtpm_ca_is_accepted_and_activates(
    manufactured: Manufactured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = manufactured
    status, out, err = _challenge_with_cert(capsys, m, m.ek_der, m.keys.dir / "ek.pub", tmp_path)
    assert status == 0, err
    assert "EK certificate verified" in out
    done = m.keys.stock_activate(tmp_path / "cred", tmp_path / "answer")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "answer").read_bytes() == (tmp_path / "secret").read_bytes()


def _rogue_ca_cert(ek_pem: Path, tmp_path: Path, like: x509.Certificate) -> Path:
    """A certificate for the same EK key, issued by a CA made here (same names as the
    real issuer, so only the signature tells them apart)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ek_key = load_pem_public_key(ek_pem.read_bytes())
    cert = (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(like.issuer)
        .public_key(ek_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "rogue.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


@pytest.mark.slow
def test_ek_certificate_not_from_the_ca_is_refused(
    manufactured: Manufactured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = manufactured
    real = x509.load_der_x509_certificate(m.ek_der.read_bytes())
    rogue = _rogue_ca_cert(m.keys.dir / "ek.pem", tmp_path, real)
    status, out, err = _challenge_with_cert(capsys, m, rogue, m.keys.dir / "ek.pub", tmp_path)
    assert status == 1
    assert err.startswith(f"pvgrubctl: {rogue}: the EK certificate is not signed by a "
                          f"certificate of {m.ca_chain}")  # fmt: skip
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "secret").exists() and not (tmp_path / "cred").exists()
    # openssl agrees that it does not chain to the CA
    done = subprocess.run(["openssl", "verify", "-CAfile", str(m.ca_chain), str(rogue)],
                          capture_output=True, check=False)  # fmt: skip
    assert done.returncode != 0


@pytest.mark.slow
def test_ek_certificate_for_another_ek_is_refused(
    manufactured: Manufactured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = manufactured
    with tools_tpm() as other_tpm:
        other = Keys(other_tpm, tmp_path).make()
    # a genuine certificate of the CA, but for the manufactured vTPM's EK, not this one
    status, _, err = _challenge_with_cert(capsys, m, m.ek_der, other.dir / "ek.pub", tmp_path)
    assert status == 1 and "certifies another key than the EK public key" in err, err
    assert not (tmp_path / "cred").exists()


@pytest.mark.slow
def test_ek_certificate_self_signed_or_expired_is_refused(
    manufactured: Manufactured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = manufactured
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    now = datetime.datetime.now(datetime.UTC)
    ek_key = load_pem_public_key((m.keys.dir / "ek.pem").read_bytes())
    for tag, before, after in (("self", -1, 365), ("expired", -30, -1)):
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ek_key)  # type: ignore[arg-type]
            .serial_number(1)
            .not_valid_before(now + datetime.timedelta(days=before))
            .not_valid_after(now + datetime.timedelta(days=after))
        )  # fmt: skip
        cert = tmp_path / f"{tag}.pem"
        cert.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))
        status, _, err = _challenge_with_cert(capsys, m, cert, m.keys.dir / "ek.pub", tmp_path)
        assert status == 1, tag
        want = "valid from" if tag == "expired" else "is not signed by a certificate of"
        assert want in err, (tag, err)
    # a usage error: a certificate without its CA
    status, _, err = ctl(capsys, "attest", "challenge", "-u", str(m.keys.dir / "ek.pub"),
                         "--ek-certificate", str(m.ek_der), "--ak-public",
                         str(m.keys.dir / "ak.pub"), "--secret-out", str(tmp_path / "s"),
                         "-o", str(tmp_path / "c"))  # fmt: skip
    assert status == 2 and "--ca" in err


# -- quotes ---------------------------------------------------------------------------------


def _extend_boot(tpm: ToolsTpm, tmp_path: Path) -> tuple[Path, Path, str]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel bytes " * 100)
    initrd.write_bytes(b"initrd bytes " * 50)
    cmdline = "root=/dev/xvda1 ro quiet"
    for pcr, data in ((4, kernel.read_bytes()), (5, cmdline.encode()), (5, initrd.read_bytes())):
        digests = ",".join(f"{b}={hashlib.new(b, data).hexdigest()}" for b in ("sha1", "sha256"))
        tpm.tool("tpm2_pcrextend", f"{pcr}:{digests}")
    return kernel, initrd, cmdline


@pytest.mark.parametrize("fmt", ["serialized", "values"])
def test_our_quote_is_tpm2_quotes_and_is_accepted(
    keys: Keys, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = keys.dir
    kernel, initrd, cmdline = _extend_boot(keys.tpm, tmp_path)
    status, out, err = ctl(capsys, "predict", "--kernel", str(kernel), "--initrd", str(initrd),
                           "--cmdline", cmdline, "--json")  # fmt: skip
    assert status == 0, err
    (d / "ref.json").write_text(out)
    nonce = "5eed" + "00112233445566778899"
    sel = "sha256:4,5+sha1:0,4,5"
    status, _, err = ctl(capsys, "attest", "quote", "--tpm", keys.tpm.uri, "--ak-context",
                         str(d / "ak.ctx"), "--nonce", nonce, "--pcrs", sel, "--message",
                         str(d / "q.msg"), "--signature", str(d / "q.sig"), "--pcr-out",
                         str(d / "q.pcrs"), "--pcrs-format", fmt)  # fmt: skip
    assert status == 0, err
    # tpm2_quote on the same TPM writes the same PCR file
    keys.tpm.tool("tpm2_quote", "-c", str(d / "ak.ctx"), "-l", sel, "-q", nonce,
                  "-m", str(d / "t.msg"), "-s", str(d / "t.sig"), "-o", str(d / "t.pcrs"),
                  "-F", fmt)  # fmt: skip
    keys.tpm.tool("tpm2_flushcontext", "-t")
    assert (d / "q.pcrs").read_bytes() == (d / "t.pcrs").read_bytes()
    # tpm2_checkquote accepts our three files (tpm2-tools 5.4's reads the serialized
    # PCR file only: "-F" is deprecated and ignored; without -f it checks the rest)...
    check = ["tpm2_checkquote", "-u", str(d / "ak.pub"), "-m", str(d / "q.msg"),
             "-s", str(d / "q.sig"), "-g", "sha256"]  # fmt: skip
    if fmt == "serialized":
        check += ["-f", str(d / "q.pcrs")]
    done = subprocess.run([*check, "-q", nonce], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    # ...and `attest verify` against the predicted boot
    status, out, err = ctl(capsys, "attest", "verify", "-u", str(d / "ak.pub"), "-m",
                           str(d / "q.msg"), "-s", str(d / "q.sig"), "-q", nonce,
                           "--reference", str(d / "ref.json"))  # fmt: skip
    assert status == 0 and out.startswith("OK:"), out + err
    # a wrong nonce: both reject
    wrong = "5eed" + "ff" * 10
    done = subprocess.run([*check, "-q", wrong], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    status, out, _ = ctl(capsys, "attest", "verify", "-u", str(d / "ak.pub"), "-m",
                         str(d / "q.msg"), "-s", str(d / "q.sig"), "-q", wrong,
                         "--reference", str(d / "ref.json"))  # fmt: skip
    assert status == 1 and out.startswith("REJECT: nonce")


def test_quote_usage_errors(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    d = keys.dir
    base = ["attest", "quote", "--tpm", keys.tpm.uri, "--ak-context", str(d / "ak.ctx"),
            "-m", str(d / "m"), "-s", str(d / "s")]  # fmt: skip
    for extra in (
        ["--nonce", "ab", "--pcrs", "md5:4"],
        ["--nonce", "ab", "--pcrs", "sha256:24"],
        ["--nonce", "", "--pcrs", "sha256:4"],
        ["--nonce", "zz", "--pcrs", "sha256:4"],
    ):
        status, _, err = ctl(capsys, *base, *extra)
        assert status == 2, (extra, err)
        assert len(err.strip().splitlines()) == 1
    status, _, err = ctl(capsys, "attest", "quote", "--tpm", keys.tpm.uri, "--ak-handle",
                         "0x01000000", "--nonce", "ab", "-m", "m", "-s", "s")  # fmt: skip
    assert status == 2 and "persistent handle" in err
    assert not (d / "m").exists()


@pytest.mark.parametrize("ak_alg", ["rsa", "ecc"])
def test_create_ak_files_are_tpm2_tools_files(
    tmp_path: Path, ak_alg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """create-ak's EK, AK public, Name and context as tpm2-tools reads them: stock
    tpm2_makecredential/tpm2_activatecredential and tpm2_quote/tpm2_checkquote on them."""
    d = tmp_path
    with tools_tpm() as tpm:
        status, _, err = ctl(capsys, "attest", "create-ak", "--tpm", tpm.uri, "--ak-alg", ak_alg,
                             "--ek-public", str(d / "ek.pub"), "--ak-public", str(d / "ak.pub"),
                             "--ak-context", str(d / "ak.ctx"),
                             "--ak-name", str(d / "ak.name"))  # fmt: skip
        assert status == 0, err
        # the Name tpm2-tools computes from the public area is the one written
        tpm.tool("tpm2_loadexternal", "-C", "o", "-u", str(d / "ak.pub"),
                 "-n", str(d / "ext.name"), "-c", str(d / "ext.ctx"))  # fmt: skip
        tpm.tool("tpm2_flushcontext", "-t")
        assert (d / "ak.name").read_bytes() == (d / "ext.name").read_bytes()
        # the EK is tpm2_createek's
        tpm.tool("tpm2_createek", "-c", str(d / "ek.ctx"), "-G", "rsa", "-u", str(d / "ek2.pub"))
        tpm.tool("tpm2_flushcontext", "-t")
        assert (d / "ek.pub").read_bytes() == (d / "ek2.pub").read_bytes()
        # stock MakeCredential for them, stock ActivateCredential with our context
        (d / "secret").write_bytes(b"s" * 32)
        subprocess.run(
            ["tpm2_makecredential", "-T", "none", "-u", str(d / "ek.pub"), "-s",
             str(d / "secret"), "-n", (d / "ak.name").read_bytes().hex(), "-o", str(d / "cred")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        done = Keys(tpm, d).stock_activate(d / "cred", d / "answer")
        assert done.returncode == 0, done.stderr
        assert (d / "answer").read_bytes() == b"s" * 32
        # stock tpm2_quote with our context, checked with our public key
        tpm.tool("tpm2_quote", "-c", str(d / "ak.ctx"), "-l", "sha256:4,5", "-q", "c0ffee",
                 "-m", str(d / "q.msg"), "-s", str(d / "q.sig"),
                 "-o", str(d / "q.pcrs"))  # fmt: skip
        tpm.tool("tpm2_flushcontext", "-t")
    done = subprocess.run(
        ["tpm2_checkquote", "-u", str(d / "ak.pub"), "-m", str(d / "q.msg"), "-s",
         str(d / "q.sig"), "-f", str(d / "q.pcrs"), "-q", "c0ffee", "-g", "sha256"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_an_ecc_ek_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ECC P-256 EK (tpm2_createek -G ecc): the seed is ECDH, not RSA-OAEP."""
    d = tmp_path
    with tools_tpm() as tpm:
        keys = Keys(tpm, d).make("ecc")
        status, _, err = ctl(capsys, "attest", "challenge", "-u", str(d / "ek.pub"),
                             "--ak-public", str(d / "ak.pub"), "--secret-out", str(d / "s1"),
                             "-o", str(d / "c1"))  # fmt: skip
        assert status == 0, err
        done = keys.stock_activate(d / "c1", d / "a1")
        assert done.returncode == 0, done.stderr
        assert (d / "a1").read_bytes() == (d / "s1").read_bytes()
        status, _, err = ctl(capsys, "attest", "activate", "--tpm", tpm.uri, "-i", str(d / "c1"),
                             "--ak-context", str(d / "ak.ctx"), "--ek-alg", "ecc",
                             "--secret-out", str(d / "a2"))  # fmt: skip
        assert status == 0, err
        assert (d / "a2").read_bytes() == (d / "s1").read_bytes()
        # the RSA EK of the same TPM cannot open a credential made for its ECC EK
        status, _, err = ctl(capsys, "attest", "activate", "--tpm", tpm.uri, "-i", str(d / "c1"),
                             "--ak-context", str(d / "ak.ctx"),
                             "--secret-out", str(d / "a3"))  # fmt: skip
        assert status == 1 and not (d / "a3").exists(), err
