"""``pvgrubctl sim boot-many N``: N measured guests on one simulated host.

Each guest gets its own vTPM instance (its own swtpm behind the vtpmd
backend domain), is measured through its own dom0 tpmif attach, built,
started, and reads its PCRs back through its own frontend; builds run
``--parallel`` at a time, each worker with its own dom0 connection (and
the program's ``connect_for`` that connection), as concurrent ``xl create``
runs would.
"""

from __future__ import annotations

import resource
import time
import uuid as uuid_mod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pvgrub_py.builder.build import BuildRequest, build_domain, sim_image_factory
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.measure.vtpm import Connect
from pvgrub_py.sim.host import SimHost
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.xen.interface import Hypervisor


@dataclass
class ScaleReport:
    guests: int
    parallel: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    mismatches: int = 0
    builder_overhead_ms: list[float] = field(default_factory=list)
    rss_mib_total: float = 0.0

    def to_json(self) -> dict[str, object]:
        overhead = sorted(self.builder_overhead_ms)
        return {
            "guests": self.guests,
            "parallel": self.parallel,
            "seconds": round(self.seconds, 2),
            "guests_per_s": round(self.guests / self.seconds, 2) if self.seconds else None,
            "failures": self.failures,
            "pcr_mismatches": self.mismatches,
            "builder_overhead_ms_median": overhead[len(overhead) // 2] if overhead else None,
            "builder_overhead_ms_max": overhead[-1] if overhead else None,
            "peak_rss_mib_total": round(self.rss_mib_total, 1),
            "peak_rss_mib_per_guest": round(self.rss_mib_total / self.guests, 2)
            if self.guests
            else None,
        }


def _children_rss_mib(pid: int) -> float:
    """Resident memory of a process tree (vtpmd and its swtpms), from /proc."""
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                pending.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total / 1024


def boot_many(
    host: SimHost,
    backend_domid: int,
    count: int,
    kernel: str,
    initrd: str | None,
    cmdline: str,
    *,
    parallel: int = 4,
    memory_mb: int = 128,
    tpm2: bool = False,
    vtpmd_pid: int | None = None,
    connect_for: Callable[[Hypervisor], Connect],
) -> ScaleReport:
    expected_cache: dict[tuple[str, ...], dict[str, dict[int, bytes]]] = {}

    def one(i: int) -> tuple[str | None, bool, float]:
        instance = str(uuid_mod.uuid4())
        request = BuildRequest(
            kernel=kernel, initrd=initrd, cmdline=cmdline, memory_mb=memory_mb,
            name=f"guest-{i}", vtpm=f"xen:{backend_domid}", vtpm_uuid=instance,
            require_vtpm=True, tpm2=tpm2, guest_vtpm_backend=backend_domid,
        )  # fmt: skip
        with host.attach(0) as dom0:
            try:
                result = build_domain(
                    dom0, request, sim_image_factory(str(host.dir)), connect_for(dom0)
                )
            except Exception as e:
                return f"guest-{i}: {e}", False, 0.0
        timings = result.timings_ms
        # The builder's own work: not reading the files, hashing and extending
        # them, decompressing/parsing the kernel or copying it into guest RAM.
        overhead = sum(
            v for k, v in timings.items() if k not in ("read", "measure", "parse", "copy")
        )
        with host.attach(result.domid) as hv, TpmFront(hv, timeout=60).connect() as front:
            client = TpmClient(front)
            banks = client.active_banks()
            seen = client.read_pcrs([4, 5], banks)
        key = tuple(b.name for b in banks)
        if key not in expected_cache:
            expected_cache[key] = predict_pcrs(
                measure_boot_files(kernel, initrd, cmdline, banks), banks
            )
        return None, seen == expected_cache[key], overhead

    start = time.perf_counter()
    report = ScaleReport(count, parallel, 0.0)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for failure, match, overhead in pool.map(one, range(count)):
            if failure is not None:
                report.failures.append(failure)
            elif not match:
                report.mismatches += 1
            else:
                report.builder_overhead_ms.append(overhead)
    report.seconds = time.perf_counter() - start
    ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.rss_mib_total = ours + (_children_rss_mib(vtpmd_pid) if vtpmd_pid else 0.0)
    return report
