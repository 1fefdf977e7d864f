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

The rounds alternate between the two sides, and each side's best round
counts: the machine is shared, and a busy moment should slow neither side
alone.

Target: ours runs at 50% or more of the base rate (ratio of rates >= 0.5);
exit status 1 when missed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvgrub_py.sim.testing import temporary_host  # noqa: E402
from pvgrub_py.tpm import tpm12  # noqa: E402
from pvgrub_py.tpm.launcher import SwtpmProcess  # noqa: E402
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device  # noqa: E402
from pvgrub_py.vtpm.frontend import TpmFront  # noqa: E402

COUNT = 1000
ROUNDS = 5
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


def one_round(transmit: Callable[[bytes], bytes], expected: list[bytes], what: str) -> float:
    """The rate of COUNT extends; every answer checked afterwards."""
    answers: list[bytes] = []
    t0 = time.perf_counter()
    for _ in range(COUNT):
        answers.append(transmit(COMMAND))
    rate = COUNT / (time.perf_counter() - t0)
    for answer, value in zip(answers, expected, strict=True):
        got = tpm12.parse_extend_response(answer)  # raises on a non-zero return code
        if got != value:
            raise SystemExit(
                f"bench_vtpm: {what}: an extend answered PCR {PCR} = {got.hex()}, "
                f"expected {value.hex()}"
            )
    return rate


@contextlib.contextmanager
def tpmif_front() -> Iterator[TpmFront]:
    """A guest's TpmFront, served by vtpmd (its own swtpm) on a simulated host."""
    with temporary_host(prefix="bvtpm") as host, tempfile.TemporaryDirectory() as state:
        vtpmd = subprocess.Popen(
            [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "vtpmd", "--sim", str(host.dir),
             "--state-dir", state, "--provision-unknown",
             "--stop-instances-on-exit"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert vtpmd.stdout is not None and vtpmd.stdout.readline().startswith("vtpmd:")
            guest = host.create_domain()
            with host.dom0.xenstore() as xs:
                add_vtpm_device(xs, VtpmDevice(guest, 0, 0, UUID))
            with host.attach(guest, host.token(guest)) as hv, TpmFront(hv).connect() as front:
                yield front
        finally:
            vtpmd.send_signal(signal.SIGTERM)
            vtpmd.wait(timeout=10)


def rates() -> tuple[float, float]:
    """Best of ROUNDS for each side, the rounds alternating (base, tpmif, base, ...),
    so that a busy machine slows both alike rather than one of them."""
    chain = expected_chain()
    base = ours = 0.0
    with SwtpmProcess() as tpm, tpm.transport() as transport, tpmif_front() as front:
        for r in range(ROUNDS):
            expected = chain[r * COUNT : (r + 1) * COUNT]
            base = max(base, one_round(transport.transmit, expected, "swtpm over its socket"))
            ours = max(ours, one_round(front.transmit, expected, "tpmif"))
    return base, ours


def main() -> int:
    base, ours = rates()
    ratio = ours / base
    print(json.dumps({"extends": COUNT, "rounds": ROUNDS, "transport": "unix socket, both",
                      "responses_checked": 2 * COUNT * ROUNDS,
                      "swtpm_per_s": round(base), "tpmif_per_s": round(ours),
                      "rate_ratio": round(ratio, 3), "target": TARGET}, indent=2))  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
