"""Compare the PCRs a guest printed on its console with ``pvgrubctl predict --json``.

Usage: python3 compare_pcrs.py PREDICT_JSON GUEST_CONSOLE_LOG tpm12|tpm2
       python3 compare_pcrs.py --eventlog GUEST_CONSOLE_LOG

The guest (stubdom/e2e/guest/init) prints ``GUEST-PCR <bank> <pcr> <hex>``
for PCR 4 and 5 of every bank its vTPM has.  Every bank both sides know must
agree; a TPM 1.2 must show sha1, a TPM 2.0 sha1 and sha256.  Prints one line
(every compared value, guest next to predict) and exits 0 when all agree.

``--eventlog`` compares, instead, the guest's ``GUEST-EVENTLOG-PCR`` lines
(tpm2_eventlog's replay of the log delivered to it, stubdom/e2e/guest/tpm2-guest.sh)
with its ``GUEST-PCR`` lines (tpm2_pcrread on its /dev/tpmrm0), sha1 and sha256.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LINE = r"^{prefix} (\w+) ([45]) ([0-9a-f]+)\s*$"
REQUIRED = {"tpm12": ("sha1",), "tpm2": ("sha1", "sha256")}


def guest_pcrs(console: str, prefix: str = "GUEST-PCR") -> dict[str, dict[str, str]]:
    line = re.compile(LINE.format(prefix=prefix))
    found: dict[str, dict[str, str]] = {}
    for raw in console.splitlines():
        match = line.match(raw.strip("\r"))
        if match:
            found.setdefault(match.group(1), {})[match.group(2)] = match.group(3)
    return found


def compare(predicted: dict[str, dict[str, str]], guest: dict[str, dict[str, str]],
            kind: str, names: tuple[str, str] = ("guest", "predict")) -> tuple[bool, str]:  # fmt: skip
    ok = True
    parts: list[str] = []
    for bank in REQUIRED[kind]:
        if bank not in guest:
            ok = False
            parts.append(f"{bank}: the guest printed no PCRs")
    for bank in sorted(set(guest) & set(predicted)):
        for pcr in ("4", "5"):
            got, want = guest[bank].get(pcr), predicted[bank].get(pcr)
            same = got is not None and got == want
            ok = ok and same
            parts.append(
                f"{bank} PCR{pcr} {names[0]}={got} {names[1]}={want} {'==' if same else '!='}"
            )
    if not set(guest) & set(predicted):
        ok = False
        parts.append(f"no bank in common ({names[0]} {sorted(guest)}, {names[1]} {sorted(predicted)})")
    return ok, "; ".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--eventlog":
        console = Path(argv[2]).read_text(errors="replace")
        replayed = guest_pcrs(console, "GUEST-EVENTLOG-PCR")
        ok, text = compare(guest_pcrs(console), replayed, "tpm2", ("log", "tpm"))
        # compare() requires the banks on its second argument's side: the replay's.
        ok = ok and all(bank in replayed for bank in REQUIRED["tpm2"])
        print(text)
        return 0 if ok else 1
    if len(argv) != 4 or argv[3] not in REQUIRED:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    predicted: dict[str, dict[str, str]] = json.loads(Path(argv[1]).read_text())["pcrs"]
    guest = guest_pcrs(Path(argv[2]).read_text(errors="replace"))
    ok, text = compare(predicted, guest, argv[3])
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
