#!/usr/bin/env python3
"""tpmif round trips against raw swtpm, measured in the same run.

ours: TPM_Extend through TpmFront (a guest domain of the simulator) ->
      shared page + event channel -> VtpmBackend in the vtpmd process ->
      its swtpm;
base: the same command bytes written to a swtpm's socket directly.

Target: ours runs at 50% or more of the raw rate (ratio of rates >= 0.5).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvgrub_py.sim.testing import temporary_host  # noqa: E402
from pvgrub_py.tpm import tpm12  # noqa: E402
from pvgrub_py.tpm.launcher import SwtpmProcess  # noqa: E402
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device  # noqa: E402
from pvgrub_py.vtpm.frontend import TpmFront  # noqa: E402

COUNT = 1000
UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
COMMAND = tpm12.build_extend(8, bytes(20))


def raw_rate() -> float:
    with SwtpmProcess(network="tcp") as tpm:
        assert tpm.data.port is not None
        with socket.create_connection(("127.0.0.1", tpm.data.port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            best = 0.0
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(COUNT):
                    s.sendall(COMMAND)
                    got = b""
                    while len(got) < 30:
                        got += s.recv(30 - len(got))
                best = max(best, COUNT / (time.perf_counter() - t0))
    return best


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
                best = 0.0
                for _ in range(3):
                    t0 = time.perf_counter()
                    for _ in range(COUNT):
                        front.transmit(COMMAND)
                    best = max(best, COUNT / (time.perf_counter() - t0))
        finally:
            vtpmd.send_signal(signal.SIGTERM)
            vtpmd.wait(timeout=10)
    return best


def main() -> int:
    raw = raw_rate()
    ours = tpmif_rate()
    print(json.dumps({"extends": COUNT, "raw_swtpm_per_s": round(raw), "tpmif_per_s": round(ours),
                      "rate_ratio": round(ours / raw, 3), "target": 0.5}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
