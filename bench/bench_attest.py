#!/usr/bin/env python3
"""attest verify: quotes verified per second, ours (in-process) against tpm2_checkquote.

A swtpm TPM 2.0 holds a boot's PCR 4 and 5; tpm2_createak makes an RSA-2048
(RSASSA/sha256) and an ECC P-256 (ECDSA/sha256) AK; tpm2_quote makes QUOTES
quotes of sha256:4,5 with distinct nonces for each.  Then, on one core, one
after the other:

* ours: `pvgrub_py.attest` as a library, per quote: parse the AK public key
  (TPM2B_PUBLIC), the TPMS_ATTEST and the TPMT_SIGNATURE from bytes, and run
  every check against a reference loaded once;
* tpm2_checkquote: the stock tool, one process per quote, on the same files,
  with the same reference values as its PCR file (-f, -l), as a verifier
  scripting tpm2-tools runs it.

Targets: ours >= 20x tpm2_checkquote's rate, and >= 2,000 quotes/s.
Prints JSON; usage: bench/bench_attest.py [QUOTES]  (default 20).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from swtpm_tools import tools_tpm  # noqa: E402

from pvgrub_py.attest.quote import parse_attest, parse_public, parse_signature  # noqa: E402
from pvgrub_py.attest.verify import verify_quote  # noqa: E402

TARGET_RATIO = 20.0
TARGET_RATE = 2000.0
AKS = {"rsa": ("rsa", "rsassa"), "ecc": ("ecc", "ecdsa")}


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 20
    # One core for both sides (tpm2_checkquote's processes inherit it).
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    kernel, cmdline, initrd = os.urandom(1 << 16), b"root=/dev/xvda1 ro", os.urandom(1 << 16)
    zero = bytes(32)
    pcr4 = hashlib.sha256(zero + hashlib.sha256(kernel).digest()).digest()
    pcr5 = hashlib.sha256(
        hashlib.sha256(zero + hashlib.sha256(cmdline).digest()).digest()
        + hashlib.sha256(initrd).digest()
    ).digest()
    reference = {"sha256": {4: pcr4, 5: pcr5}}
    results: dict[str, object] = {"quotes": count}
    with tempfile.TemporaryDirectory() as tmp, tools_tpm() as tpm:
        d = Path(tmp)
        for pcr, data in ((4, kernel), (5, cmdline), (5, initrd)):
            tpm.tool("tpm2_pcrextend", f"{pcr}:sha256={hashlib.sha256(data).hexdigest()}")
        (d / "pcrs.bin").write_bytes(pcr4 + pcr5)
        tpm.tool("tpm2_createek", "-c", str(d / "ek.ctx"), "-G", "rsa", "-u", str(d / "ek.pub"))
        for kind, (alg, scheme) in AKS.items():
            ctx, pub = d / f"{kind}.ctx", d / f"{kind}.pub"
            tpm.tool(
                "tpm2_createak",
                "-C",
                str(d / "ek.ctx"),
                "-c",
                str(ctx),
                "-G",
                alg,
                "-g",
                "sha256",
                "-s",
                scheme,
                "-u",
                str(pub),
                "-r",
                str(d / "ak.priv"),
            )
            tpm.tool("tpm2_flushcontext", "-t")
            quotes = []
            for i in range(count):
                nonce = os.urandom(20).hex()
                msg, sig = d / f"{kind}-{i}.msg", d / f"{kind}-{i}.sig"
                tpm.tool(
                    "tpm2_quote",
                    "-c",
                    str(ctx),
                    "-l",
                    "sha256:4,5",
                    "-q",
                    nonce,
                    "-m",
                    str(msg),
                    "-s",
                    str(sig),
                    "-g",
                    "sha256",
                )
                tpm.tool("tpm2_flushcontext", "-t")
                quotes.append((nonce, msg, sig))
            pub_bytes = pub.read_bytes()
            loaded = [(bytes.fromhex(n), m.read_bytes(), s.read_bytes()) for n, m, s in quotes]

            def ours_once(
                loaded: list[tuple[bytes, bytes, bytes]] = loaded, pub_bytes: bytes = pub_bytes
            ) -> None:
                for nonce_b, msg_b, sig_b in loaded:
                    q = parse_attest(msg_b, "m")
                    v = verify_quote(
                        parse_public(pub_bytes, "u"),
                        q.signed,
                        q,
                        parse_signature(sig_b, "s"),
                        nonce_b,
                        reference,
                    )
                    assert v.accepted, v.failed

            ours_once()  # warm up
            rounds = max(1, 4000 // count)
            t0 = time.perf_counter()
            for _ in range(rounds):
                ours_once()
            ours_rate = rounds * count / (time.perf_counter() - t0)

            t0 = time.perf_counter()
            for nonce, msg, sig in quotes:
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
                        str(d / "pcrs.bin"),
                        "-l",
                        "sha256:4,5",
                        "-g",
                        "sha256",
                    ],
                    capture_output=True,
                    check=False,
                )
                assert proc.returncode == 0, proc.stderr
            theirs_rate = count / (time.perf_counter() - t0)
            ratio = ours_rate / theirs_rate
            results[kind] = {
                "ours_quotes_per_s": round(ours_rate),
                "tpm2_checkquote_quotes_per_s": round(theirs_rate, 1),
                "ratio": round(ratio, 1),
                "meets_targets": ratio >= TARGET_RATIO and ours_rate >= TARGET_RATE,
            }
    results["targets"] = {"ratio": TARGET_RATIO, "quotes_per_s": TARGET_RATE}
    print(json.dumps(results, indent=2))
    met = all(isinstance(r, dict) and r["meets_targets"] for k, r in results.items() if k in AKS)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
