"""Corruption sweep over every image format (slow).

For each format, N seeded mutations of a clean image: truncation at a
random point, or bytes overwritten inside the regions the readers actually
touch (recorded on a clean run; "metadata" = reads of at most 64 KiB).
Each mutation runs the whole disk path (discover volumes, find the config,
stream config, kernel and initrd into a sink that hashes and writes) in a
forked child under RLIMIT_AS and a wall-clock timeout, and is classified:

* ``ok`` - every file streamed and equals the original;
* ``other`` - every file streamed consistently but differs from the original
  (a format-valid corruption of file data: unavoidable, and harmless for
  measured boot because what is measured is what is booted);
* ``input`` - a clean one-line `InputError` (``budget`` of them stopped by
  the time budget, ``memory`` by MemoryError under RLIMIT_AS);
* ``bug`` - any other exception; ``hang`` - killed at the timeout;
  ``crash`` - the child died without a result;
* ``past_end`` - the byte source below `BoundedFile` saw a read past the
  (truncated) end;
* ``split`` - the bytes written differ from the bytes hashed, or their
  length from the size the filesystem declared.

``bug``, ``hang``, ``crash``, ``past_end``, ``split`` and ``memory`` must
all be zero.  ``PVGRUB_DISK_SWEEP_N`` sets N (default 100 per format);
``PVGRUB_DISK_SWEEP_TIMEOUT`` the per-run timeout (default 10 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import select
import signal
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import disk_images
import pytest
from disk_images import DEBIAN_KVER, FEDORA_KVER, Image, MutatedSource

from pvgrub_py.disk import Budget, BudgetExceeded, locate_config, open_disk, stream_file
from pvgrub_py.errors import InputError

pytestmark = pytest.mark.slow

N = int(os.environ.get("PVGRUB_DISK_SWEEP_N", "100"))
TIMEOUT = float(os.environ.get("PVGRUB_DISK_SWEEP_TIMEOUT", "10"))
#: Address-space headroom above what the (forked) parent already maps.
AS_HEADROOM = 512 << 20
#: The disk layer's own time budget: below the timeout, so loops are caught by us.
BUDGET_SECONDS = 5.0
PARALLEL = max(1, min(2, os.cpu_count() or 1))

MUST_BE_ZERO = ("bug", "hang", "crash", "past_end", "split", "memory")
COLUMNS = ("runs", "ok", "other", "input", "budget", *MUST_BE_ZERO)


@dataclass
class Target:
    name: str
    image: Image
    #: (volume GRUB name, path, role)
    files: list[tuple[str, str, str]]
    metadata: list[tuple[int, int]] = field(default_factory=list)
    touched: list[tuple[int, int]] = field(default_factory=list)


def _targets(images: disk_images.ImageFactory) -> list[Target]:
    deb = [
        ("hd0,gpt2", "/boot/grub/grub.cfg", "config"),
        ("hd0,gpt2", f"/boot/vmlinuz-{DEBIAN_KVER}", "kernel"),
        ("hd0,gpt2", f"/boot/initrd.img-{DEBIAN_KVER}", "initrd"),
    ]
    fedora = images.fedora_mbr()
    fed = [
        ("hd0,msdos1", "/grub2/grub.cfg", "config"),
        ("hd0,msdos1", f"/loader/entries/abc-{FEDORA_KVER}.conf", "config"),
        ("hd0,msdos1", f"/vmlinuz-{FEDORA_KVER}", "kernel"),
        ("hd0,msdos1", f"/initramfs-{FEDORA_KVER}.img", "initrd"),
    ]
    lvm = fedora.notes.get("lvm")
    if lvm:
        fed.append((f"lvm/{lvm['vg']}-root", "/etc/fstab", "config"))  # type: ignore[index]
    btr = [
        ("hd0", "/boot/grub/menu.lst", "config"),
        ("hd0", f"/boot/vmlinuz-{DEBIAN_KVER}", "kernel"),
        ("hd0", f"/boot/initrd.img-{DEBIAN_KVER}", "initrd"),
    ]
    fat = [
        ("hd0", "/extlinux/extlinux.conf", "config"),
        ("hd0", "/vmlinuz", "kernel"),
        ("hd0", f"/initrd.img-{DEBIAN_KVER}", "initrd"),
    ]
    iso = [
        ("hd0", "/isolinux/isolinux.cfg", "config"),
        ("hd0", "/isolinux/vmlinuz", "kernel"),
        ("hd0", "/isolinux/initrd.img", "initrd"),
    ]
    return [
        Target("gpt+ext4", images.debian_gpt(), deb),
        Target("mbr+xfs+lvm", fedora, fed),
        Target("btrfs", images.btrfs_bare(), btr),
        Target("fat32", images.fat_bare(), fat),
        Target("iso9660", images.iso(), iso),
        Target("qcow2+gpt+ext4", images.qcow2(), deb),
    ]


def _expected(target: Target) -> dict[str, str]:
    out = {}
    for vol, path, _ in target.files:
        data = target.image.files.get(vol, {}).get(path)
        if data is not None:
            out[f"{vol}:{path}"] = hashlib.sha256(data).hexdigest()
    return out


def _pipeline(target: Target, src: MutatedSource, outdir: Path) -> dict[str, Any]:
    """The disk path under test; returns per-file digests or raises."""
    result: dict[str, Any] = {"files": {}, "split": 0}
    with open_disk(src, name=target.image.path.name, budget=Budget(BUDGET_SECONDS)) as disk:
        locate_config(disk)
        by_name = {v.grub_name: v for v in disk.volumes}
        for vol_name, path, role in target.files:
            vol = by_name.get(vol_name)
            if vol is None:
                raise InputError(vol_name, "volume vanished")
            out = outdir / "file"
            digest = hashlib.sha256()
            with open(out, "wb") as f:

                def sink(chunk: bytes, f: Any = f, digest: Any = digest) -> None:
                    digest.update(chunk)
                    f.write(chunk)

                fs = vol.filesystem()
                declared = fs.stat(path)
                n = stream_file(fs, path, sink, role=role)
            written = hashlib.sha256(out.read_bytes()).hexdigest()
            if (
                written != digest.hexdigest()
                or n != out.stat().st_size
                or declared is None
                or n != declared.size
            ):
                result["split"] += 1
            result["files"][f"{vol_name}:{path}"] = digest.hexdigest()
    return result


def _child(target: Target, mutation: dict[str, Any], wfd: int) -> None:
    outcome: dict[str, Any] = {}
    try:
        soft = _vm_size() + AS_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        src = MutatedSource(
            target.image.path,
            size=mutation.get("size"),
            patches={int(k): v for k, v in mutation.get("patches", {}).items()},
        )
        with tempfile.TemporaryDirectory() as tmp:
            try:
                res = _pipeline(target, src, Path(tmp))
                outcome = {"kind": "done", **res}
            except InputError as exc:
                cause: BaseException | None = exc
                budget = isinstance(exc, BudgetExceeded)
                while isinstance(cause, InputError) and cause.__cause__ is not None:
                    cause = cause.__cause__
                    budget = budget or isinstance(cause, BudgetExceeded)
                outcome = {
                    "kind": "input",
                    "budget": budget,
                    "memory": isinstance(cause, MemoryError),
                    "cause": type(cause).__name__,
                    "message": str(exc)[:300],
                    "one_line": "\n" not in str(exc),
                }
            except MemoryError:
                outcome = {"kind": "memory"}
            except BaseException as exc:
                outcome = {
                    "kind": "bug",
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "trace": traceback.format_exc()[-2000:],
                }
        outcome["past_end"] = src.past_end
    except BaseException as exc:  # the harness itself failed
        outcome = {"kind": "bug", "error": f"harness: {exc!r}"}
    os.write(wfd, json.dumps(outcome).encode())
    os._exit(0)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _mutations(target: Target, n: int) -> list[dict[str, Any]]:
    size = target.image.path.stat().st_size
    end_of_touched = max((o + n_ for o, n_ in target.touched), default=size)
    muts = []
    for i in range(n):
        rng = random.Random(f"{target.name}-{i}")
        kind = ("truncate", "meta", "meta", "any")[i % 4]
        if kind == "truncate":
            limit = end_of_touched if rng.random() < 0.7 else size
            muts.append({"kind": kind, "size": rng.randrange(0, max(1, limit))})
            continue
        regions = target.metadata if kind == "meta" else target.touched
        patches: dict[int, int] = {}
        for _ in range(rng.choice((1, 1, 2, 4, 8, 16))):
            off, length = rng.choice(regions)
            at = off + rng.randrange(max(1, length))
            patches[at] = rng.choice((0, 0xFF, rng.randrange(256), 1))
        muts.append({"kind": kind, "patches": {str(k): v for k, v in patches.items()}})
    return muts


def _record_regions(target: Target) -> None:
    """Run the clean image once, remembering what the readers read."""
    src = MutatedSource(target.image.path, record=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = _pipeline(target, src, Path(tmp))
    assert res["files"] == _expected(target) or all(
        res["files"][k] == v for k, v in _expected(target).items()
    )
    assert src.regions
    target.touched = sorted(set(src.regions))
    target.metadata = [r for r in target.touched if r[1] <= 65536]
    src.close()


def _run_all(
    jobs: list[tuple[Target, dict[str, Any]]],
) -> list[tuple[Target, dict[str, Any], dict[str, Any]]]:
    results: list[tuple[Target, dict[str, Any], dict[str, Any]]] = []
    running: dict[int, tuple[int, int, float, Target, dict[str, Any], bytearray]] = {}
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < PARALLEL:
            target, mutation = queue.pop(0)
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                _child(target, mutation, wfd)
            os.close(wfd)
            running[rfd] = (pid, rfd, time.monotonic(), target, mutation, bytearray())
        ready, _, _ = select.select(list(running), [], [], 0.1)
        for rfd in ready:
            chunk = os.read(rfd, 65536)
            if chunk:
                running[rfd][5].extend(chunk)
                continue
            pid, _, _, target, mutation, buf = running.pop(rfd)
            os.close(rfd)
            _, status = os.waitpid(pid, 0)
            outcome = json.loads(buf) if buf else {"kind": "crash", "status": status}
            results.append((target, mutation, outcome))
        now = time.monotonic()
        for rfd, (pid, _, started, target, mutation, _buf) in list(running.items()):
            if now - started > TIMEOUT:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(rfd)
                del running[rfd]
                results.append((target, mutation, {"kind": "hang"}))
    return results


def _classify(target: Target, outcome: dict[str, Any]) -> list[str]:
    tags: list[str] = []
    kind = outcome["kind"]
    if kind == "done":
        tags.append("ok" if outcome["files"] == _expected(target) else "other")
        if outcome.get("split"):
            tags.append("split")
    elif kind == "input":
        tags.append("input")
        if outcome.get("budget"):
            tags.append("budget")
        if outcome.get("memory"):
            tags.append("memory")
        if not outcome.get("one_line", True):
            tags.append("bug")
    else:
        tags.append(kind)  # bug, hang, crash, memory
    if outcome.get("past_end"):
        tags.append("past_end")
    return tags


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def test_corruption_sweep(
    images: disk_images.ImageFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Import every reader in the parent so that forked children start warm.
    import dissect.btrfs  # type: ignore[import-untyped]
    import dissect.extfs  # type: ignore[import-untyped]
    import dissect.fat  # type: ignore[import-untyped]
    import dissect.hypervisor.disk.qcow2  # type: ignore[import-untyped]
    import dissect.volume.lvm  # type: ignore[import-untyped]
    import dissect.xfs  # type: ignore[import-untyped]  # noqa: F401
    import pycdlib  # noqa: F401

    targets = _targets(images)
    for target in targets:
        _record_regions(target)
    jobs = [(t, m) for t in targets for m in _mutations(t, N)]
    started = time.monotonic()
    results = _run_all(jobs)
    elapsed = time.monotonic() - started

    table: dict[str, Counter[str]] = {t.name: Counter() for t in targets}
    causes: dict[str, Counter[str]] = {t.name: Counter() for t in targets}
    failures: list[str] = []
    for target, mutation, outcome in results:
        tags = _classify(target, outcome)
        table[target.name]["runs"] += 1
        table[target.name].update(tags)
        if outcome["kind"] == "input":
            causes[target.name][outcome.get("cause", "?")] += 1
        if any(t in MUST_BE_ZERO for t in tags):
            failures.append(
                f"{target.name} {tags} {json.dumps(mutation)[:200]} -> {json.dumps(outcome)[:1500]}"
            )

    lines = [
        f"disk corruption sweep: N={N} per format, timeout {TIMEOUT:g} s, "
        f"budget {BUDGET_SECONDS:g} s, RLIMIT_AS = parent VmSize + {AS_HEADROOM >> 20} MiB, "
        f"{elapsed:.0f} s",
        "format".ljust(16) + "".join(c.rjust(9) for c in COLUMNS),
    ]
    total: Counter[str] = Counter()
    for name, counts in table.items():
        total.update(counts)
        lines.append(name.ljust(16) + "".join(str(counts[c]).rjust(9) for c in COLUMNS))
    lines.append("total".ljust(16) + "".join(str(total[c]).rjust(9) for c in COLUMNS))
    lines.append("InputError causes (the reader exception wrapped, or InputError = ours):")
    for name, counter in causes.items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counter.most_common(8)))
    report = "\n".join(lines)
    # The report is kept where PVGRUB_DISK_SWEEP_REPORT says, else with the test's files.
    out = Path(os.environ.get("PVGRUB_DISK_SWEEP_REPORT", tmp_path)) / "disk-sweep.txt"
    out.write_text(report + "\n" + "\n".join(failures) + "\n")
    with capsys.disabled():
        print("\n" + report)
        for f in failures[:20]:
            print("  FAIL", f)
    assert not failures, f"{len(failures)} runs crossed a line that must stay at zero (see {out})"
