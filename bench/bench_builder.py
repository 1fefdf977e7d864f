#!/usr/bin/env python3
"""Scale of measured boots on one simulated host (issue: the kexec() mirror).

* 32 guests, each with its own swtpm: guests/s, peak memory per guest and
  the builder's own overhead per guest (target < 50 ms: everything but
  reading, hashing/extending, decompressing and copying the kernel);
* 64 guests alive at once on one host, with 8 builds in flight: must work.
"""

from __future__ import annotations

import json
import subprocess
import sys


def boot_many(count: int, parallel: int) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.pvgrubctl", "sim", "boot-many",
                        str(count), "--parallel", str(parallel)],
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-2000:] or r.stdout[-2000:]}
    result: dict[str, object] = json.loads(r.stdout)
    return result


def main() -> int:
    results = {
        "serial_8": boot_many(8, 1),
        "guests_32": boot_many(32, 4),
        "concurrent_64": boot_many(64, 8),
    }
    print(json.dumps(results, indent=2))
    return 0 if all("error" not in v for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
