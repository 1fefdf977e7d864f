#!/usr/bin/env python3
"""tpmif round trips against the same swtpm path without tpmif, measured in the same run.

ours: TPM_Extend through TpmFront (a guest domain of the simulator) ->
      shared page + event channel -> VtpmBackend in the vtpmd process ->
      its swtpm over a unix socket (how vtpmd reaches its instances);
base: the same command bytes through the same transport (`SwtpmTransport`
      over a unix socket) to a swtpm of our own.

So the ratio is what tpmif adds, nothing else: both sides use one transport
(an earlier version compared against a swtpm over TCP, a slower transport
than vtpmd's, and reported tpmif at 6.2x the raw rate).  Every response is
checked on both sides: its return code, and the PCR value it reports
against the SHA-1 chain the extends must produce; a run with one wrong
answer is a failure, not a rate.

Target: ours runs at 50% or more of the base rate (ratio of rates >= 0.5);
exit status 1 when missed.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvgrub_py.sim.testing import temporary_host  # noqa: E402
from pvgrub_py.tpm import tpm12  # noqa: E402
from pvgrub_py.tpm.launcher import SwtpmProcess  # noqa: E402
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device  # noqa: E402
from pvgrub_py.vtpm.frontend import TpmFront  # noqa: E402

COUNT = 1000
ROUNDS = 3
TARGET = 0.5
UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
PCR = 8
DIGEST = bytes(20)
COMMAND = tpm12.build_extend(PCR, DIGEST)


def expected_chain() -> list[bytes]:
    """PCR 8 after each extend of a fresh TPM, computed here (not by the TPM code)."""
    values, pcr = [], bytes(20)
    for _ in range(COUNT * ROUNDS):
        pcr = hashlib.sha1(pcr + DIGEST).digest()
        values.append(pcr)
    return values


def measure(transmit: Callable[[bytes], bytes], what: str) -> float:
    """The best rate of ROUNDS runs of COUNT extends, every answer checked."""
    chain = expected_chain()
    best = 0.0
    for r in range(ROUNDS):
        expected = chain[r * COUNT : (r + 1) * COUNT]
        answers: list[bytes] = []
        t0 = time.perf_counter()
        for _ in range(COUNT):
            answers.append(transmit(COMMAND))
        best = max(best, COUNT / (time.perf_counter() - t0))
        for i, (answer, value) in enumerate(zip(answers, expected, strict=True)):
            got = tpm12.parse_extend_response(answer)  # raises on a non-zero return code
            if got != value:
                raise SystemExit(
                    f"bench_vtpm: {what}: extend {r * COUNT + i + 1} answered PCR {PCR} = "
                    f"{got.hex()}, expected {value.hex()}"
                )
    return best


def base_rate() -> float:
    with SwtpmProcess() as tpm, tpm.transport() as transport:
        return measure(transport.transmit, "swtpm over its unix socket")


def tpmif_rate() -> float:
    with temporary_host(prefix="bvtpm") as host, tempfile.TemporaryDirectory() as state:
        vtpmd = subprocess.Popen(
            [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpmd", "--sim", str(host.dir),
             "--state-dir", state], stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert vtpmd.stdout is not None and vtpmd.stdout.readline().startswith("vtpmd:")
            guest = host.create_domain()
            with host.dom0.xenstore() as xs:
                add_vtpm_device(xs, VtpmDevice(guest, 0, 0, UUID))
            with host.attach(guest, host.token(guest)) as hv, TpmFront(hv).connect() as front:
                return measure(front.transmit, "tpmif")
        finally:
            vtpmd.send_signal(signal.SIGTERM)
            vtpmd.wait(timeout=10)


def main() -> int:
    base = base_rate()
    ours = tpmif_rate()
    ratio = ours / base
    print(json.dumps({"extends": COUNT, "rounds": ROUNDS, "transport": "unix socket, both",
                      "responses_checked": 2 * COUNT * ROUNDS,
                      "swtpm_per_s": round(base), "tpmif_per_s": round(ours),
                      "rate_ratio": round(ratio, 3), "target": TARGET}, indent=2))  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
