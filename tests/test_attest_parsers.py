"""The attestation parsers and checks on hand-marshalled structures, and fuzzing.

Structures are built here from the TPM 2.0 Part 2 layouts with struct and
signed with `cryptography` keys made here, so the expected verdicts do not
come from the code under test.  Hypothesis then throws random and mutated
bytes (and JSON) at every parser: the only thing allowed out is a one-line
InputError.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pvgrubctl_run import run as pvgrubctl

from pvgrub_py.attest.quote import parse_attest, parse_public, parse_signature
from pvgrub_py.attest.reference import (
    FORMATS,
    load_reference,
    reference_document,
    reference_from_document,
)
from pvgrub_py.attest.verify import verify_quote
from pvgrub_py.errors import InputError

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
AK_ATTRS = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 16) | (1 << 18)  # the AK's

REF = {
    "sha256": {4: hashlib.sha256(b"four").digest(), 5: hashlib.sha256(b"five").digest()},
    "sha1": {4: hashlib.sha1(b"four").digest(), 5: hashlib.sha1(b"five").digest()},
}


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def selection(*banks: tuple[int, tuple[int, ...]]) -> bytes:
    out = struct.pack(">I", len(banks))
    for alg, pcrs in banks:
        bits = bytearray(3)
        for p in pcrs:
            bits[p // 8] |= 1 << (p % 8)
        out += struct.pack(">HB", alg, 3) + bytes(bits)
    return out


def attest(
    nonce: bytes, sel: bytes, digest: bytes, magic: int = 0xFF544347, st_type: int = 0x8018
) -> bytes:
    return (
        struct.pack(">IH", magic, st_type)
        + tpm2b(b"\x00\x0b" + bytes(32))  # qualifiedSigner
        + tpm2b(nonce)
        + struct.pack(">QIIB", 123456, 1, 0, 1)  # clockInfo
        + struct.pack(">Q", 0x2019102300163636)
        + sel
        + tpm2b(digest)
    )


def rsa_public(attrs: int = AK_ATTRS) -> bytes:
    n = RSA_KEY.public_key().public_numbers().n
    body = (
        struct.pack(">HHI", 0x0001, 0x000B, attrs)
        + tpm2b(b"")
        + struct.pack(">HHHHI", 0x0010, 0x0014, 0x000B, 2048, 0)  # sym NULL, RSASSA sha256
        + tpm2b(n.to_bytes(256, "big"))
    )
    return tpm2b(body)


def ecc_public() -> bytes:
    nums = EC_KEY.public_key().public_numbers()
    body = (
        struct.pack(">HHI", 0x0023, 0x000B, AK_ATTRS)
        + tpm2b(b"")
        + struct.pack(">HHHHH", 0x0010, 0x0018, 0x000B, 0x0003, 0x0010)  # ECDSA sha256, P-256
        + tpm2b(nums.x.to_bytes(32, "big"))
        + tpm2b(nums.y.to_bytes(32, "big"))
    )
    return tpm2b(body)


def rsassa(msg: bytes) -> bytes:
    sig = RSA_KEY.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    return struct.pack(">HH", 0x0014, 0x000B) + tpm2b(sig)


def ecdsa(msg: bytes) -> bytes:
    r, s = decode_dss_signature(EC_KEY.sign(msg, ec.ECDSA(hashes.SHA256())))
    return (
        struct.pack(">HH", 0x0018, 0x000B)
        + tpm2b(r.to_bytes(32, "big"))
        + tpm2b(s.to_bytes(32, "big"))
    )


def good_digest() -> bytes:
    return hashlib.sha256(REF["sha256"][4] + REF["sha256"][5]).digest()


NONCE = bytes(range(20))
MSG = attest(NONCE, selection((0x000B, (4, 5))), good_digest())


def judge(msg: bytes, sig: bytes, pub: bytes, nonce: bytes = NONCE) -> list[str]:
    """The names of the failed checks."""
    v = verify_quote(
        parse_public(pub, "ak"),
        parse_attest(msg, "m").signed,
        parse_attest(msg, "m"),
        parse_signature(sig, "s"),
        nonce,
        REF,
    )
    return [c.name for c in v.checks if c.ok is False]


@pytest.mark.parametrize(
    "pub, sign", [(rsa_public, rsassa), (ecc_public, ecdsa)], ids=["rsa", "ecc"]
)
def test_hand_built_quotes(pub: object, sign: object) -> None:
    assert callable(pub) and callable(sign)
    assert judge(MSG, sign(MSG), pub()) == []
    assert judge(MSG, sign(MSG), pub(), nonce=b"x" * 20) == ["nonce"]
    other = attest(NONCE, selection((0x000B, (4, 5))), hashlib.sha256(b"other").digest())
    assert judge(other, sign(other), pub()) == ["pcr-digest"]
    only4 = attest(NONCE, selection((0x000B, (4,))), hashlib.sha256(REF["sha256"][4]).digest())
    assert judge(only4, sign(only4), pub()) == ["selection", "pcr-digest"]
    forged = attest(NONCE, selection((0x000B, (4, 5))), good_digest(), magic=0xFF544348)
    assert "magic" in judge(forged, sign(forged), pub())
    certify = attest(NONCE, selection((0x000B, (4, 5))), good_digest(), st_type=0x8017)
    assert judge(certify, sign(certify), pub())[:1] == ["type"]
    # Both banks, in the order selected: sha1 first, then sha256.
    both = attest(
        NONCE,
        selection((0x0004, (4, 5)), (0x000B, (4, 5))),
        hashlib.sha256(
            REF["sha1"][4] + REF["sha1"][5] + REF["sha256"][4] + REF["sha256"][5]
        ).digest(),
    )
    assert judge(both, sign(both), pub()) == []
    # A TPM2B_ATTEST (size first) is the same quote.
    assert judge(tpm2b(MSG), sign(MSG), pub()) == []


def test_signature_of_another_message_or_key() -> None:
    assert judge(MSG, rsassa(MSG + b"x"), rsa_public()) == ["signature"]
    assert judge(MSG, ecdsa(MSG), rsa_public()) == ["signature"]
    assert judge(MSG, rsassa(MSG), ecc_public()) == ["signature"]


def test_a_key_that_is_not_an_attestation_key() -> None:
    """An unrestricted key signs any digest, so a quote it signed proves nothing."""
    assert judge(MSG, rsassa(MSG), rsa_public(attrs=AK_ATTRS & ~(1 << 16))) == ["ak"]


def test_reference_formats_agree(tmp_path: Path) -> None:
    json_doc = {"pcrs": {b: {str(p): v.hex() for p, v in pcrs.items()} for b, pcrs in REF.items()}}
    keylime = {str(p): [REF["sha1"][p].hex().upper(), REF["sha256"][p].hex()] for p in (4, 5)}
    keylime["mask"] = "0x30"  # type: ignore[assignment]
    for doc, fmt in ((json_doc, "json"), (keylime, "keylime")):
        path = tmp_path / f"{fmt}.ref"
        path.write_text(json.dumps(doc))
        ref = load_reference(str(path))
        assert (ref.format, ref.values) == (fmt, REF)
    digests = [b"k", b"c", b"i"]
    lock = {
        "records": [
            {"pcr": pcr, "digests": [{"hashAlg": "sha256", "digest": d.hex() * 32}]}
            for pcr, d in zip((4, 5, 5), digests, strict=True)
        ]
    }
    ref = reference_from_document(lock, "lock")
    zero = bytes(32)
    want5 = hashlib.sha256(hashlib.sha256(zero + b"c" * 32).digest() + b"i" * 32).digest()
    assert ref.values == {"sha256": {4: hashlib.sha256(zero + b"k" * 32).digest(), 5: want5}}


@pytest.mark.parametrize(
    "doc, problem",
    [
        ({"4": ["00" * 32]}, "has no PCR 5"),
        ({"4": ["00" * 32, "11" * 32], "5": ["00" * 32]}, "more than one sha256"),
        ({"4": "zz", "5": "00"}, "not hex"),
        ({"4": ["00" * 7], "5": ["00" * 32]}, "7 bytes"),
        ({"records": [{"pcr": 4, "digests": [{"hashAlg": "md5", "digest": "00"}]}]}, "md5"),
        ({"records": "x"}, "expected a list"),
        ([], "expected a JSON object"),
    ],
)
def test_bad_references(doc: object, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        reference_from_document(doc, "ref")


def one_line_or_ok(fn: object, data: bytes) -> None:
    assert callable(fn)
    try:
        fn(data, "fuzz")
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz: ")


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    for fn in (parse_attest, parse_signature, parse_public):
        one_line_or_ok(fn, data)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(seed)), st.integers(0, 255), st.integers(0, len(seed))).map(
        lambda t: (seed[: t[0]] + bytes([t[1]]) + seed[t[0] + 1 :])[: max(t[2], 1) + len(seed) // 2]
    )


@FUZZ
@given(
    _mutations(MSG),
    _mutations(rsassa(MSG)),
    _mutations(ecdsa(MSG)),
    _mutations(rsa_public()),
    _mutations(ecc_public()),
)
def test_fuzz_mutated_structures(msg: bytes, s1: bytes, s2: bytes, p1: bytes, p2: bytes) -> None:
    one_line_or_ok(parse_attest, msg)
    one_line_or_ok(parse_signature, s1)
    one_line_or_ok(parse_signature, s2)
    one_line_or_ok(parse_public, p1)
    one_line_or_ok(parse_public, p2)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "4",
                    "5",
                    "mask",
                    "pcrs",
                    "records",
                    "pcr",
                    "digests",
                    "hashAlg",
                    "digest",
                    "sha1",
                    "sha256",
                    "x",
                ]
            )
            | st.text(max_size=3),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_fuzz_reference_documents(doc: object) -> None:
    try:
        reference_from_document(doc, "fuzz")
    except InputError as e:
        assert "\n" not in str(e)


def test_cli_malformed_files_are_one_line(tmp_path: Path) -> None:
    good = {"m": MSG, "s": rsassa(MSG), "u": rsa_public()}
    ref = tmp_path / "ref.json"
    ref.write_text(
        json.dumps({"pcrs": {"sha256": {str(p): v.hex() for p, v in REF["sha256"].items()}}})
    )
    cases = {
        "m": MSG[:40],
        "s": b"\x00\x14\x00\x0b\xff\xff",
        "u": b"-----BEGIN PUBLIC KEY-----\nxx\n",
    }
    for opt, bad in cases.items():
        files = {}
        for k, data in good.items():
            files[k] = tmp_path / f"{k}.bin"
            files[k].write_bytes(bad if k == opt else data)
        argv = [
            sys.executable,
            "-m",
            "pvgrub_py.cli.pvgrubctl",
            "attest",
            "verify",
            "-u",
            str(files["u"]),
            "-m",
            str(files["m"]),
            "-s",
            str(files["s"]),
            "-q",
            NONCE.hex(),
            "--reference",
            str(ref),
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1, proc
        assert proc.stderr.count("\n") == 1 and str(files[opt]) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    # All good: accepted.
    for k, data in good.items():
        (tmp_path / f"{k}.bin").write_bytes(data)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("OK: "), proc
    # Usage errors exit 2.
    for extra in (["-q", "not-hex-nor-file"], ["-g", "md5"], ["-q", ""]):
        proc = subprocess.run(argv + extra, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc


def test_help_is_a_manual_page() -> None:
    proc = pvgrubctl("attest", "verify", "--help", timeout=60)
    assert proc.returncode == 0
    for word in (
        "tpm2_checkquote",
        "examples:",
        "exit status:",
        "--reference",
        "--eventlog",
        "-q NONCE",
        "pcr-digest",
        "Keylime",
        "pcrlock",
    ):
        assert word in proc.stdout, word


def test_every_format_written_reads_back(tmp_path: Path) -> None:
    """reference_document -> file -> load_reference gives the hashlib values, in each format."""
    from pvgrub_py.measure.boot_files import measure_boot_files
    from pvgrub_py.measure.predict import predict_pcrs
    from pvgrub_py.tpm.algorithms import SHA1, SHA256

    (tmp_path / "k").write_bytes(b"kernel bytes")
    ms = measure_boot_files(str(tmp_path / "k"), None, "ro quiet", (SHA1, SHA256))
    values = predict_pcrs(ms, (SHA1, SHA256))
    want = {}
    for bank in ("sha1", "sha256"):
        zero = bytes(hashlib.new(bank).digest_size)
        h = lambda data, b=bank: hashlib.new(b, data).digest()  # noqa: E731
        want[bank] = {4: h(zero + h(b"kernel bytes")), 5: h(h(zero + h(b"ro quiet")) + h(b""))}
    for fmt in FORMATS:
        path = tmp_path / f"ref.{fmt}"
        path.write_text(json.dumps(reference_document(fmt, ms, values)))
        ref = load_reference(str(path))
        assert (ref.format, ref.values) == (fmt, want)
    with pytest.raises(ValueError, match="unknown reference format"):
        reference_document("yaml", ms, values)


def test_selected_pcrs_beyond_the_reference() -> None:
    """PCR 0 quoted too: its reset value without a log, the log's replay with one."""
    pub = parse_public(rsa_public(), "ak")
    zero_first = attest(
        NONCE,
        selection((0x000B, (0, 4, 5))),
        hashlib.sha256(bytes(32) + REF["sha256"][4] + REF["sha256"][5]).digest(),
    )
    q = parse_attest(zero_first, "m")
    sig = parse_signature(rsassa(zero_first), "s")
    assert verify_quote(pub, q.signed, q, sig, NONCE, REF).accepted
    pcr0 = hashlib.sha256(b"firmware").digest()
    log = {"sha256": {0: pcr0, 4: REF["sha256"][4], 5: REF["sha256"][5]}, "sha1": dict(REF["sha1"])}
    v = verify_quote(pub, q.signed, q, sig, NONCE, REF, log)
    assert [c.name for c in v.checks if c.ok is False] == ["pcr-digest"]
    with_log = attest(
        NONCE,
        selection((0x000B, (0, 4, 5))),
        hashlib.sha256(pcr0 + REF["sha256"][4] + REF["sha256"][5]).digest(),
    )
    q = parse_attest(with_log, "m")
    v = verify_quote(pub, q.signed, q, parse_signature(rsassa(with_log), "s"), NONCE, REF, log)
    assert v.accepted, v.failed
