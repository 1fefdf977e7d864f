"""``make demo``: a measured boot of a sample guest in the simulator, end to end.

1. build the sample guest disk: GPT, an ext4 /boot with a Debian-style
   grub.cfg, a real Debian kernel and a small initrd (stubdom/sample-guest);
2. predict PCR 4/5 from the disk alone (``pvgrubctl predict DISK``);
3. boot it on a simulated Xen host (``pvgrubctl boot DISK --sim``): the
   bootloader's choice, measured into a vTPM served by vtpmd in a backend
   domain (swtpm behind it), then built; the guest reads its own PCRs back
   through its tpmif frontend; TPM 1.2 (Xen's vTPM) and TPM 2.0;
4. show the TCG event log, replayed by us and by ``tpm2_eventlog``, and
   check that every one of these agrees.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pvgrub_py.builder.report import format_boot_report
from pvgrub_py.errors import PvgrubError
from pvgrub_py.sample_guest import build_sample_disk

PVGRUBCTL = [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl"]


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def pvgrubctl(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*PVGRUBCTL, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise PvgrubError(f"pvgrubctl {args[0]} failed: {r.stderr.strip()}")
    return r


def tpm2_eventlog_pcrs(path: Path) -> str:
    if shutil.which("tpm2_eventlog") is None:
        return "(tpm2_eventlog not installed)"
    r = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise PvgrubError(f"tpm2_eventlog {path}: {r.stderr.strip()}")
    return "pcrs:" + r.stdout.partition("pcrs:")[2].rstrip()


def as_bytes(doc: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {bank: {pcr: value.lower() for pcr, value in pcrs.items()} for bank, pcrs in doc.items()}


def boot(disk: Path, out: Path, tpm2: bool, predicted: dict[str, Any]) -> bool:
    flavour = "TPM 2.0" if tpm2 else "TPM 1.2"
    log = out / f"eventlog-{'tpm20' if tpm2 else 'tpm12'}.bin"
    banner(f"boot on the simulator, {flavour} vTPM (vtpmd + swtpm in a backend domain)")
    started = time.monotonic()
    args = ["boot", str(disk), "--sim", "--event-log", str(log), "--json"]
    doc = json.loads(pvgrubctl(*args, *(["--tpm2"] if tpm2 else [])).stdout)
    print(format_boot_report(doc))
    print(f"({time.monotonic() - started:.1f} s)")
    guest = as_bytes(doc["guest_pcrs"])
    want = {b: v for b, v in as_bytes(predicted["pcrs"]).items() if b in guest}
    match = all(guest[b] == want.get(b) for b in guest)
    print(f"guest's own PCRs {'MATCH' if match else 'DIFFER FROM'} `pvgrubctl predict DISK`")
    banner(f"event log {log.name}")
    print(pvgrubctl("eventlog", "show", str(log)).stdout.rstrip())
    print(f"\ntpm2_eventlog {log.name}:\n{tpm2_eventlog_pcrs(log)}")
    pcrs_doc = out / f"guest-pcrs-{'tpm20' if tpm2 else 'tpm12'}.json"
    pcrs_doc.write_text(json.dumps(doc["guest_pcrs"]))
    verify = subprocess.run(
        [*PVGRUBCTL, "eventlog", "verify", str(log), "--pcrs", str(pcrs_doc)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"pvgrubctl eventlog verify: {verify.stdout.strip() or verify.stderr.strip()}")
    return match and verify.returncode == 0


def output_path() -> Path:
    """Where the demo keeps its disk, event logs and PCR documents: ``demo-out/``
    in the checkout (git ignores it; ``make demo`` runs there), or
    ``$PVGRUB_DEMO_OUT``."""
    chosen = os.environ.get("PVGRUB_DEMO_OUT")
    return Path(chosen) if chosen else Path(__file__).resolve().parent.parent / "demo-out"


def output_dir() -> Path:
    """`output_path`, emptied: runs never pile up (the disk alone is ~45 MB)
    and nothing goes to /tmp.  Only a folder an earlier run made is emptied."""
    out = output_path()
    marker = out / ".pvgrub-demo"
    if out.exists() and any(out.iterdir()):
        if not marker.exists():  # never empty a directory the demo did not make
            raise OSError(errno.ENOTEMPTY, "not empty and not a previous demo's output", str(out))
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return out


def main() -> int:
    try:
        out = output_dir()
    except OSError as e:
        print(f"demo: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        banner("1. sample guest disk (stubdom/sample-guest)")
        print(
            "building: GPT, ext4 /boot with grub.cfg, a Debian kernel, an initramfs ...", flush=True
        )
        disk, guest = build_sample_disk(out)
        print(f"disk    {disk} ({disk.stat().st_size >> 20} MiB)\nkernel  {guest.kernel}")
        listing = subprocess.run(
            [sys.executable, "-m", "pvgrub_py.cli.bootloader", "-l", str(disk)],
            capture_output=True,
            text=True,
            check=False,
        )
        print("menu (pvgrub-py -l):\n" + listing.stdout.rstrip())
        banner("2. pvgrubctl predict DISK (offline, before any boot)")
        predicted: dict[str, Any] = json.loads(
            pvgrubctl("predict", str(disk), "--bank", "sha1,sha256,sha384,sha512", "--json").stdout
        )
        print(pvgrubctl("predict", str(disk)).stdout.rstrip())
        ok = all([boot(disk, out, tpm2, predicted) for tpm2 in (False, True)])
    except PvgrubError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    banner("result")
    print("measured boot: prediction, vTPM, guest view and event logs agree" if ok else "MISMATCH")
    print(f"files kept in {out}; {time.monotonic() - started:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
