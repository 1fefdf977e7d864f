"""`pvgrubctl attest verify` on real quotes: swtpm, stock tpm2-tools, tpm2_checkquote as oracle.

A swtpm TPM 2.0 gets a boot's three extends from ``tpm2_pcrextend`` with
digests computed here by hashlib (tests/pcr_rule.py's rule, not the code
under test); ``tpm2_createek``/``tpm2_createak`` make RSA and ECC AKs and
``tpm2_quote`` quotes with a fresh nonce.  Every verdict of ours is
compared with ``tpm2_checkquote``'s on the same files, given the reference
values as its ``-f`` PCR file: where the two differ it is a check
tpm2_checkquote does not make (the quote must select PCR 4 and 5).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pcr_rule import expected_pcrs
from swtpm_tools import ToolsTpm, needs_tools, tools_tpm

from pvgrub_py.attest.reference import keylime_policy, load_reference, pcrlock_document
from pvgrub_py.cli.pvgrubctl import main as pvgrubctl
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.tpm.algorithms import SHA1, SHA256

pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.integration,
    needs_tools,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("tpm2_quote", "tpm2_checkquote", "tpm2_createak")),
        reason="tpm2-tools' quote tools are not installed (make setup)",
    ),
]

BANKS = ("sha1", "sha256")
#: AK kinds: (tpm2_createak -G, -g, -s).
AK_KINDS = {
    "rsassa": ("rsa", "sha256", "rsassa"),
    "rsapss": ("rsa", "sha256", "rsapss"),
    "ecdsa": ("ecc", "sha256", "ecdsa"),
    "ecdsa384": ("ecc", "sha384", "ecdsa"),
}


@dataclass
class Boot:
    kernel: Path
    initrd: Path
    cmdline: str

    def expected(self) -> dict[str, dict[int, bytes]]:
        return expected_pcrs(self.kernel, self.cmdline, self.initrd, BANKS)

    def extend_into(self, tpm: ToolsTpm) -> None:
        """The three extends, digests by hashlib, through tpm2_pcrextend."""
        for pcr, data in (
            (4, self.kernel.read_bytes()),
            (5, self.cmdline.encode()),
            (5, self.initrd.read_bytes()),
        ):
            digests = ",".join(f"{b}={hashlib.new(b, data).hexdigest()}" for b in BANKS)
            tpm.tool("tpm2_pcrextend", f"{pcr}:{digests}")


@dataclass
class Party:
    """A TPM with a boot in it and its AKs."""

    tpm: ToolsTpm
    dir: Path
    aks: dict[str, tuple[Path, Path, Path]] = field(default_factory=dict)  # ctx, tss pub, pem

    def make_aks(self) -> None:
        ek = self.dir / "ek.ctx"
        self.tpm.tool("tpm2_createek", "-c", str(ek), "-G", "rsa", "-u", str(self.dir / "ek.pub"))
        for name, (alg, hash_alg, scheme) in AK_KINDS.items():
            ctx, pub, pem = (self.dir / f"ak-{name}{ext}" for ext in (".ctx", ".pub", ".pem"))
            self.tpm.tool(
                "tpm2_createak",
                "-C",
                str(ek),
                "-c",
                str(ctx),
                "-G",
                alg,
                "-g",
                hash_alg,
                "-s",
                scheme,
                "-u",
                str(pub),
                "-r",
                str(self.dir / "ak.priv"),
            )
            self.tpm.tool("tpm2_flushcontext", "-t")
            self.tpm.tool("tpm2_readpublic", "-c", str(ctx), "-f", "pem", "-o", str(pem))
            self.tpm.tool("tpm2_flushcontext", "-t")
            self.aks[name] = (ctx, pub, pem)

    def quote(self, ak: str, selection: str, nonce: str, tag: str) -> tuple[Path, Path]:
        msg, sig = self.dir / f"{tag}.msg", self.dir / f"{tag}.sig"
        _, hash_alg, scheme = AK_KINDS[ak]
        self.tpm.tool(
            "tpm2_quote",
            "-c",
            str(self.aks[ak][0]),
            "-l",
            selection,
            "-q",
            nonce,
            "-m",
            str(msg),
            "-s",
            str(sig),
            "-g",
            hash_alg,
            "--scheme",
            scheme,
        )
        self.tpm.tool("tpm2_flushcontext", "-t")
        return msg, sig


@dataclass
class World:
    a: Party
    b: Party
    boot_a: Boot
    boot_b: Boot
    refs: dict[str, Path]  # "json-a", "keylime-a", "pcrlock-a", "json-b", "log-a", "log-b"


def _predict_json(boot: Boot, log: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = pvgrubctl(
            [
                "predict",
                "--kernel",
                str(boot.kernel),
                "--initrd",
                str(boot.initrd),
                "--cmdline",
                boot.cmdline,
                "--bank",
                "sha1,sha256",
                "--json",
                "--event-log",
                str(log),
            ]
        )
    assert status == 0
    return out.getvalue()


def _references(boot: Boot, tag: str, d: Path) -> dict[str, Path]:
    refs = {f"json-{tag}": d / f"{tag}.json", f"log-{tag}": d / f"{tag}.eventlog"}
    refs[f"json-{tag}"].write_text(_predict_json(boot, refs[f"log-{tag}"]))
    ms = measure_boot_files(str(boot.kernel), str(boot.initrd), boot.cmdline, (SHA1, SHA256))
    refs[f"keylime-{tag}"] = d / f"{tag}.keylime.json"
    refs[f"keylime-{tag}"].write_text(json.dumps(keylime_policy(predict_pcrs(ms, (SHA1, SHA256)))))
    refs[f"pcrlock-{tag}"] = d / f"{tag}.pcrlock"
    refs[f"pcrlock-{tag}"].write_text(json.dumps(pcrlock_document(ms)))
    return refs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("attest")
    rnd = os.urandom
    (d / "vmlinuz").write_bytes(rnd(200_000))
    (d / "initrd").write_bytes(rnd(300_000))
    boot_a = Boot(d / "vmlinuz", d / "initrd", "root=/dev/xvda1 ro quiet")
    boot_b = Boot(d / "vmlinuz", d / "initrd", "root=/dev/xvda1 ro single")
    refs = _references(boot_a, "a", d) | _references(boot_b, "b", d)
    with tools_tpm() as tpm_a, tools_tpm() as tpm_b:
        (d / "a").mkdir()
        (d / "b").mkdir()
        a, b = Party(tpm_a, d / "a"), Party(tpm_b, d / "b")
        for party, boot in ((a, boot_a), (b, boot_b)):
            boot.extend_into(party.tpm)
            party.make_aks()
            # The TPM holds what the specification says (hashlib), read by tpm2-tools.
            assert party.tpm.pcrread("sha1:4,5+sha256:4,5") == boot.expected()
        yield World(a, b, boot_a, boot_b, refs)


def ours(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = pvgrubctl(["attest", "verify", *argv])
    return status, out.getvalue()


def checkquote(
    pub: Path,
    msg: Path,
    sig: Path,
    nonce: str,
    selection: str,
    values: dict[str, dict[int, bytes]],
    hash_alg: str,
    tmp: Path,
) -> int:
    """tpm2_checkquote's verdict with ``values`` (for ``selection``) as its PCR file."""
    raw = b"".join(
        values[bank][int(p)]
        for part in selection.split("+")
        for bank, _, pcrs in [part.partition(":")]
        for p in pcrs.split(",")
    )
    pcr_file = tmp / "checkquote.pcrs"
    pcr_file.write_bytes(raw)
    proc = subprocess.run(
        [
            "tpm2_checkquote",
            "-u",
            str(pub),
            "-m",
            str(msg),
            "-s",
            str(sig),
            "-q",
            nonce,
            "-f",
            str(pcr_file),
            "-l",
            selection,
            "-g",
            hash_alg,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode


def openssl_pss_verify(pem: Path, msg: Path, sig: Path, tmp: Path) -> int:
    """openssl's verdict on an RSAPSS/sha256 TPMT_SIGNATURE (sigAlg, hash, size: 6 bytes)."""
    raw = tmp / "pss.raw"
    raw.write_bytes(sig.read_bytes()[6:])
    proc = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:auto",
            "-signature",
            str(raw),
            "-verify",
            str(pem),
            str(msg),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode


def test_references_hold_the_specifications_values(world: World) -> None:
    """Each format read back gives the hashlib values; and the formats are the consumers'."""
    want = world.boot_a.expected()
    for fmt in ("json", "keylime", "pcrlock"):
        ref = load_reference(str(world.refs[f"{fmt}-a"]))
        assert ref.format == fmt
        assert ref.values == want
    policy = json.loads(world.refs["keylime-a"].read_text())
    assert policy == {str(p): [want["sha1"][p].hex(), want["sha256"][p].hex()] for p in (4, 5)}
    lock = json.loads(world.refs["pcrlock-a"].read_text())
    items = [
        world.boot_a.kernel.read_bytes(),
        world.boot_a.cmdline.encode(),
        world.boot_a.initrd.read_bytes(),
    ]
    assert lock == {
        "records": [
            {
                "pcr": pcr,
                "digests": [
                    {"hashAlg": b, "digest": hashlib.new(b, data).hexdigest()} for b in BANKS
                ],
            }
            for pcr, data in zip((4, 5, 5), items, strict=True)
        ]
    }


@pytest.mark.parametrize("fmt", ["json", "keylime", "pcrlock"])
@pytest.mark.parametrize("ak", list(AK_KINDS))
def test_accepts_a_quote_of_the_predicted_boot(
    world: World, ak: str, fmt: str, tmp_path: Path
) -> None:
    nonce = os.urandom(20).hex()
    msg, sig = world.a.quote(ak, "sha256:4,5", nonce, f"ok-{ak}-{fmt}")
    _, tss_pub, pem = world.a.aks[ak]
    for pub in (tss_pub, pem):
        status, out = ours(
            "-u",
            str(pub),
            "-m",
            str(msg),
            "-s",
            str(sig),
            "-q",
            nonce,
            "--reference",
            str(world.refs[f"{fmt}-a"]),
        )
        assert status == 0, out
        assert out.startswith("OK: ")
    if ak == "rsapss":
        # tpm2_checkquote cannot verify RSAPSS quotes (tpm2-software/tpm2-tools issue 3283:
        # "Signature verification fails"); openssl checks the signature instead.
        assert openssl_pss_verify(pem, msg, sig, tmp_path) == 0
        return
    assert (
        checkquote(
            tss_pub,
            msg,
            sig,
            nonce,
            "sha256:4,5",
            world.boot_a.expected(),
            AK_KINDS[ak][1],
            tmp_path,
        )
        == 0
    )


@pytest.mark.parametrize("ak", ["rsassa", "ecdsa"])
def test_rejections_agree_with_tpm2_checkquote(world: World, ak: str, tmp_path: Path) -> None:
    hash_alg = AK_KINDS[ak][1]
    _, pub, _ = world.a.aks[ak]
    nonce = os.urandom(20).hex()
    msg, sig = world.a.quote(ak, "sha256:4,5", nonce, f"rej-{ak}")
    ref_a, want_a = world.refs["keylime-a"], world.boot_a.expected()

    def both(
        pub: Path, msg: Path, sig: Path, nonce: str, ref: Path, values: dict[str, dict[int, bytes]]
    ) -> tuple[int, str, int]:
        status, out = ours(
            "-u", str(pub), "-m", str(msg), "-s", str(sig), "-q", nonce, "--reference", str(ref)
        )
        return (
            status,
            out,
            checkquote(pub, msg, sig, nonce, "sha256:4,5", values, hash_alg, tmp_path),
        )

    # A wrong nonce: a replayed quote.
    status, out, theirs = both(pub, msg, sig, os.urandom(20).hex(), ref_a, want_a)
    assert (status, theirs != 0) == (1, True) and out.startswith("REJECT: nonce: "), out

    # A corrupted signature.
    bad_sig = tmp_path / "bad.sig"
    blob = bytearray(sig.read_bytes())
    blob[-1] ^= 0x01
    bad_sig.write_bytes(bytes(blob))
    status, out, theirs = both(pub, msg, bad_sig, nonce, ref_a, want_a)
    assert (status, theirs != 0) == (1, True) and out.startswith("REJECT: signature: "), out

    # A quote of another boot (another TPM, whose boot had another cmdline).
    _, pub_b, _ = world.b.aks[ak]
    msg_b, sig_b = world.b.quote(ak, "sha256:4,5", nonce, f"other-{ak}")
    status, out, theirs = both(pub_b, msg_b, sig_b, nonce, ref_a, want_a)
    assert (status, theirs != 0) == (1, True) and out.startswith("REJECT: pcr-digest: "), out

    # A reference computed for another entry.
    for fmt in ("json", "keylime", "pcrlock"):
        status, out, theirs = both(
            pub, msg, sig, nonce, world.refs[f"{fmt}-b"], world.boot_b.expected()
        )
        assert (status, theirs != 0) == (1, True) and out.startswith("REJECT: pcr-digest: "), out

    # And the genuine quote is accepted by both.
    status, out, theirs = both(pub, msg, sig, nonce, ref_a, want_a)
    assert (status, theirs) == (0, 0), out


@pytest.mark.parametrize("ak", ["rsassa", "ecdsa"])
def test_a_selection_without_pcr5_is_rejected(world: World, ak: str, tmp_path: Path) -> None:
    """tpm2_checkquote checks only what the quote selects; the reference names PCR 5 too."""
    nonce = os.urandom(20).hex()
    msg, sig = world.a.quote(ak, "sha256:4", nonce, f"no5-{ak}")
    _, pub, _ = world.a.aks[ak]
    status, out = ours(
        "-u",
        str(pub),
        "-m",
        str(msg),
        "-s",
        str(sig),
        "-q",
        nonce,
        "--reference",
        str(world.refs["json-a"]),
    )
    assert status == 1 and out.startswith("REJECT: selection: "), out
    # The oracle accepts it: the signature, nonce and PCR 4 are right; PCR 5 is unquoted.
    assert (
        checkquote(
            pub, msg, sig, nonce, "sha256:4", world.boot_a.expected(), AK_KINDS[ak][1], tmp_path
        )
        == 0
    )


def test_both_banks_and_the_event_log(world: World, tmp_path: Path) -> None:
    nonce = os.urandom(16).hex()
    selection = "sha1:4,5+sha256:4,5"
    msg, sig = world.a.quote("rsassa", selection, nonce, "banks")
    _, pub, _ = world.a.aks["rsassa"]
    args = ["-u", str(pub), "-m", str(msg), "-s", str(sig), "-q", nonce, "-g", "sha256"]
    status, out = ours(
        *args, "--reference", str(world.refs["pcrlock-a"]), "--eventlog", str(world.refs["log-a"])
    )
    assert status == 0, out
    assert (
        checkquote(pub, msg, sig, nonce, selection, world.boot_a.expected(), "sha256", tmp_path)
        == 0
    )
    # The log of another boot does not replay to the reference.
    status, out = ours(
        *args,
        "--reference",
        str(world.refs["json-a"]),
        "--eventlog",
        str(world.refs["log-b"]),
        "--json",
    )
    doc = json.loads(out)
    assert status == 1 and doc["verdict"] == "reject"
    assert [c["check"] for c in doc["checks"] if c["ok"] is False] == ["eventlog"]
    # Insisting on another hash than the one signed with is a rejection.
    status, out = ours(*args[:-1], "sha384", "--reference", str(world.refs["json-a"]))
    assert status == 1 and out.startswith("REJECT: signature: "), out
