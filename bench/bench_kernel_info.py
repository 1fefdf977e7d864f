#!/usr/bin/env python3
"""kernel-info: the python backend against the libxenguest backend, same run, same kernel.

Both get the same measured bytes (read once).  The target (<= 1.5x) is
judged as the issue states it: ``kernel-info --backend python`` against
``kernel-info --backend libxenguest``, which runs two ``xc_dom_parse_image``
calls (PV and PVH containers), each decompressing the payload.  Because that
is twice the decompression, a single PV parse (the least libxenguest can do)
is reported beside it as ``ratio_vs_single_parse``, for honesty; on zstd
kernels python-zstandard's decoder is slower than Debian's libzstd, which
shows there.

Prints JSON; usage: bench/bench_kernel_info.py [KERNEL]  (default: the sample guest's Debian
kernel, the newest /boot/vmlinuz-* or one ``apt-get download``-ed once and cached, as
``make demo`` finds it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvgrub_py.kernel.libxenguest_backend import inspect_libxenguest, run_parse  # noqa: E402
from pvgrub_py.kernel.python_backend import inspect_python  # noqa: E402
from pvgrub_py.kernel.source import read_kernel  # noqa: E402
from pvgrub_py.sample_guest import find_kernel  # noqa: E402
from pvgrub_py.xen.domain_image import X86_64_HOST_CAPS  # noqa: E402
from pvgrub_py.xen.xenctrl import XenCtrl  # noqa: E402

TARGET = 1.5


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str]) -> int:
    kernels = argv[1:] or [str(find_kernel())]
    src = read_kernel(kernels[0])

    def single_pv_parse() -> None:
        with XenCtrl.open_dummy() as xc:
            run = run_parse(xc, src.raw, False, 1 << 30, X86_64_HOST_CAPS, want_blob=False)
            assert run.ok, run.error

    inspect_python(src)  # warm caches and imports
    python_s = best_of(3, lambda: inspect_python(src))
    backend_s = best_of(3, lambda: inspect_libxenguest(src))
    single_s = best_of(3, single_pv_parse)
    result = {
        "kernel": kernels[0],
        "file_bytes": len(src.raw),
        "python_backend_s": round(python_s, 4),
        "libxenguest_backend_s": round(backend_s, 4),
        "libxenguest_single_parse_s": round(single_s, 4),
        "ratio_vs_backend": round(python_s / backend_s, 3),
        "ratio_vs_single_parse": round(python_s / single_s, 3),
        "target": TARGET,
        "meets_target": python_s / backend_s <= TARGET,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
