"""``make demo``: a measured boot of a sample guest, end to end, against swtpm.

For each vTPM flavour (TPM 1.2 like Xen's vtpm-stubdom, and TPM 2.0):

1. predict PCR 4/5 offline from the sample guest's kernel, initrd, cmdline;
2. start a private swtpm, measure the guest into it exactly as pv-grub did;
3. read the PCRs back from the TPM and compare them with the prediction;
4. write the TCG event log, show it, replay it, and have ``tpm2_eventlog``
   replay it too.

The simulator and domain builder steps join this script as they land.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pvgrub_py.errors import PvgrubError
from pvgrub_py.eventlog.builder import log_for_measurements, write_atomic
from pvgrub_py.eventlog.codec import parse, serialise
from pvgrub_py.eventlog.render import format_text
from pvgrub_py.eventlog.replay import compare, replay
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.extend import extend_measurements
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.measure.report import format_measurements, format_pcrs
from pvgrub_py.sample_guest import SampleGuest, sample_guest
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def tpm2_eventlog_pcrs(path: Path) -> str:
    if shutil.which("tpm2_eventlog") is None:
        return "(tpm2_eventlog not installed)"
    r = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise PvgrubError(f"tpm2_eventlog {path}: {r.stderr.strip()}")
    _, _, pcrs = r.stdout.partition("pcrs:")
    return "pcrs:" + pcrs.rstrip()


def boot_one(guest: SampleGuest, tpm2: bool, out: Path) -> bool:
    flavour = "TPM 2.0" if tpm2 else "TPM 1.2"
    with SwtpmProcess(tpm2=tpm2) as tpm, TpmClient(tpm.transport()) as client:
        banks = client.active_banks()
        banner(f"{flavour} vTPM ({tpm.uri}), banks {', '.join(b.name for b in banks)}")
        measurements = measure_boot_files(
            str(guest.kernel), str(guest.initrd), guest.cmdline, banks
        )
        predicted = predict_pcrs(measurements, banks)
        print("Measured, in extend order:")
        print(format_measurements(measurements))
        extend_measurements(client, measurements)
        actual = client.read_pcrs([4, 5], banks)
        print("PCRs read back from the vTPM:")
        print(format_pcrs(actual))
        match = actual == predicted
        print(f"offline prediction {'MATCHES' if match else 'DIFFERS FROM'} the vTPM")

        log_path = out / f"eventlog-{'tpm20' if tpm2 else 'tpm12'}.bin"
        log = log_for_measurements(measurements, banks, tpm2=tpm2)
        write_atomic(str(log_path), serialise(log))
        parsed = parse(log_path.read_bytes(), str(log_path))
        replayed = replay(parsed)
        print(f"\nEvent log {log_path}:")
        print(format_text(parsed, replayed))
        mismatches = compare(replayed, actual)
        print(f"event log replay {'MATCHES' if not mismatches else 'DIFFERS FROM'} the vTPM")
        print(f"\ntpm2_eventlog {log_path.name}:")
        print(tpm2_eventlog_pcrs(log_path))
        return match and not mismatches


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="pvgrub-demo-"))
    try:
        guest = sample_guest(out)
        banner("sample guest")
        print(f"kernel  {guest.kernel}\ninitrd  {guest.initrd}\ncmdline {guest.cmdline}")
        ok = all([boot_one(guest, tpm2, out) for tpm2 in (False, True)])
    except PvgrubError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    banner("result")
    print("measured boot: PCRs, prediction and event logs agree" if ok else "MISMATCH")
    print(f"event logs kept in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
