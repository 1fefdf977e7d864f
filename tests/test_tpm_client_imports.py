"""A TPM 2.0 client never loads the TPM 1.2 codec (`pvgrub_py.tpm.client`).

Every measured boot creates a `TpmClient`; importing `pvgrub_py.tpm.tpm12`
costs it ~1.2 ms of CPU that only a TPM 1.2 needs.  Run in a fresh
interpreter, so that no other test's import decides the answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys
from pvgrub_py.tpm.client import TpmClient

class Tpm2:
    # TPM_ST_NO_SESSIONS, a 10-byte response, TPM_RC_SUCCESS: the answer a
    # TPM 2.0 gives the version probe's header and a TPM2_Startup.
    def transmit(self, command: bytes) -> bytes:
        return bytes.fromhex("8001" "0000000a" "00000000")
    def close(self) -> None:
        pass

client = TpmClient(Tpm2())
client.startup()
print(client.version, "pvgrub_py.tpm.tpm12" in sys.modules)
"""


def test_a_tpm2_client_does_not_import_the_tpm12_codec() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
                       check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2.0", "False"]
