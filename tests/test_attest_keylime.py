"""Keylime as the oracle: its own quote check and tpm_policy reader, on our keylime output.

Keylime's verifier checks a quote with ``keylime.tpm.tpm_util.checkquote``
(the AK's signature, the nonce, the quote's PCR digest against the PCR values
the agent sent in tpm2-tools' format) and then compares those values with
the ``tpm_policy`` that ``keylime.tpm.tpm_util.readPolicy`` parsed: a PCR in
the policy's mask passes if its value is one of the listed ones (Keylime's
``Tpm.check_pcrs``).  Here a real swtpm quote (stock tpm2-tools, a nonce of
ASCII characters as Keylime's agent uses) goes through Keylime's two
functions with our `keylime_policy`, and through `pvgrubctl attest verify`;
both accept the boot the policy was made for and reject another entry's.

Keylime is not a dependency of this project (its verifier's dependency set
is large): `make setup` installs it into the venv without its dependencies,
for these tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from swtpm_tools import needs_tools, tools_tpm
from test_attest_swtpm import Boot, Party, ours

from pvgrub_py.attest.reference import keylime_policy
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.tpm.algorithms import SHA1, SHA256

if os.environ.get("CI") == "true":  # make setup installs it: in CI the oracle must run
    import keylime.tpm.tpm_util as tpm_util
else:
    tpm_util = pytest.importorskip(
        "keylime.tpm.tpm_util", reason="Keylime is not installed (make setup installs it)"
    )

pytestmark = [pytest.mark.swtpm, pytest.mark.integration, needs_tools]


def keylime_accepts(policy_text: str, pcrs_dict: dict[int, str]) -> bool:
    """Keylime's PCR policy rule: every quoted PCR in the mask has one of the listed values."""
    policy = tpm_util.readPolicy(policy_text)
    mask = int(policy["mask"], 16)
    named = {int(k) for k in policy if k != "mask"}
    assert named <= set(pcrs_dict), "the quote must carry every policy PCR"
    return all(pcrs_dict[p] in policy[str(p)] for p in pcrs_dict if mask >> p & 1)


@pytest.mark.parametrize("ak", ["rsassa", "ecdsa"])
def test_keylime_and_we_agree_on_our_policy(tmp_path: Path, ak: str) -> None:
    (tmp_path / "vmlinuz").write_bytes(os.urandom(100_000))
    (tmp_path / "initrd").write_bytes(os.urandom(100_000))
    boot = Boot(tmp_path / "vmlinuz", tmp_path / "initrd", "root=/dev/xvda1 ro")
    other = Boot(tmp_path / "vmlinuz", tmp_path / "initrd", "root=/dev/xvda1 ro single")
    policies = {}
    for name, b in (("mine", boot), ("other", other)):
        ms = measure_boot_files(str(b.kernel), str(b.initrd), b.cmdline, (SHA1, SHA256))
        policies[name] = json.dumps(keylime_policy(predict_pcrs(ms, (SHA1, SHA256))))
        (tmp_path / f"{name}.json").write_text(policies[name])
    (tmp_path / "party").mkdir()
    with tools_tpm() as tpm:
        party = Party(tpm, tmp_path / "party")
        boot.extend_into(tpm)
        party.make_aks()
        # Keylime's agent sends a nonce of letters and digits; the TPM gets its ASCII bytes.
        nonce = "".join(string.ascii_letters[b % len(string.ascii_letters)] for b in os.urandom(20))
        # The agent sends tpm2_quote -o's PCR blob with the quote.
        msg, sig = tmp_path / "quote.msg", tmp_path / "quote.sig"
        pcrs_file = tmp_path / "quote.pcrs"
        tpm.tool(
            "tpm2_quote",
            "-c",
            str(party.aks[ak][0]),
            "-l",
            "sha256:4,5",
            "-q",
            nonce.encode().hex(),
            "-m",
            str(msg),
            "-s",
            str(sig),
            "-o",
            str(pcrs_file),
            "-g",
            "sha256",
            "--scheme",
            ak,
        )
        tpm.tool("tpm2_flushcontext", "-t")
    _, tss_pub, pem = party.aks[ak]
    pcrs_dict = tpm_util.checkquote(
        pem.read_bytes(),
        nonce,
        sig.read_bytes(),
        msg.read_bytes(),
        pcrs_file.read_bytes(),
        "sha256",
    )
    assert keylime_accepts(policies["mine"], pcrs_dict)
    assert not keylime_accepts(policies["other"], pcrs_dict)
    args = ["-u", str(tss_pub), "-m", str(msg), "-s", str(sig), "-q", nonce.encode().hex()]
    assert ours(*args, "--reference", str(tmp_path / "mine.json"))[0] == 0
    status, out = ours(*args, "--reference", str(tmp_path / "other.json"))
    assert status == 1 and out.startswith("REJECT: pcr-digest: ")
