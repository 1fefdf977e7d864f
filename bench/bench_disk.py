#!/usr/bin/env python3
"""Disk layer benchmark: open + locate + extract from a GPT/ext4 guest disk.

The disk is what issue 3's speed target names: a GPT disk whose ext4 root
holds ``/boot/grub/grub.cfg``, a 14 MB kernel and a 60 MB initrd (random
bytes, so nothing compresses).  Each measurement runs in a fresh Python
process, so the import cost is real, and the time is split into:

* ``import``  - ``import pvgrub_py.disk`` plus the ext4 reader the sniff loads;
* ``open``    - ``open_disk`` (partition table, sniff) and opening the ext4;
* ``locate``  - the config search, reading grub.cfg, resolving both files;
* ``extract`` - streaming kernel and initrd once each into a sink that writes
  them to an output directory and hashes them (SHA-1 and SHA-256), as the
  bootloader does.

``baseline_cat`` is the same 74 MB read from the raw image file with plain
``os.read`` in 1 MiB chunks and hashed the same way: what the extraction
would cost with no filesystem at all.  Results: JSON on stdout and in
``bench/out/disk.json``; median of ``--runs`` fresh processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
KERNEL = "/boot/vmlinuz-6.1.0-13-amd64"
INITRD = "/boot/initrd.img-6.1.0-13-amd64"


def build(work: Path) -> Path:
    """The GPT/ext4 disk, made without mounting (see tests/disk_images.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import disk_images as di

    disk = work / "bench-gpt.img"
    if disk.exists():
        return disk
    src = work / "root"
    di._write_tree(
        src,
        {
            "/boot/grub/grub.cfg": b"menuentry 'Debian' {\n linux "
            + KERNEL.encode()
            + b" ro\n initrd "
            + INITRD.encode()
            + b"\n}\n",
            KERNEL: os.urandom(14 * MB),
            INITRD: os.urandom(60 * MB),
        },
    )
    fs = work / "root.ext4"
    di.make_ext4(fs, src, 160 << 20, "benchroot")
    di._sparse(disk, 200 << 20)
    di._sfdisk(
        disk,
        """\
        label: gpt
        start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649
        start=4096, size=327680, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
        """,
    )
    di._dd(fs, disk, di._partition_offsets(disk)[2][0])
    return disk


def run_once(image: str, outdir: str) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from pvgrub_py.disk import locate_config, open_disk, read_small_file, resolve_boot_file
    from pvgrub_py.disk.extract import stream_file
    from pvgrub_py.disk.readers import ext4  # noqa: F401 - what the sniff would import

    t1 = time.perf_counter()
    disk = open_disk(image)
    vol = next(v for v in disk.volumes if v.has_filesystem)
    vol.filesystem()
    t2 = time.perf_counter()
    loc = locate_config(disk)
    read_small_file(loc.filesystem, loc.path)
    files = [resolve_boot_file(disk, p, config_volume=loc.volume) for p in (KERNEL, INITRD)]
    t3 = time.perf_counter()
    total = 0
    for i, bf in enumerate(files):
        sha1, sha256 = hashlib.sha1(), hashlib.sha256()
        with open(os.path.join(outdir, f"boot_{i}"), "wb") as out:

            def sink(chunk: bytes, out=out, sha1=sha1, sha256=sha256) -> None:  # type: ignore[no-untyped-def]
                out.write(chunk)
                sha1.update(chunk)
                sha256.update(chunk)

            total += stream_file(bf.filesystem, bf.path, sink, role="initrd")
    t4 = time.perf_counter()
    disk.close()
    return {
        "import_s": t1 - t0,
        "open_s": t2 - t1,
        "locate_s": t3 - t2,
        "extract_s": t4 - t3,
        "total_s": t4 - t0,
        "bytes": total,
        "extract_MBps": total / MB / (t4 - t3),
        "peak_rss_MiB": _vm_hwm() / 1024,
    }


def _vm_hwm() -> int:
    """Peak RSS in KiB of this process image.

    Not ``ru_maxrss``: Linux carries the pre-exec high-water mark into the
    exec'd child, so it would report the parent's peak (which held the
    74 MB of random file contents while building the image).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def baseline_cat(image: str, nbytes: int) -> float:
    """Seconds to read and hash *nbytes* of the raw image in 1 MiB chunks."""
    fd = os.open(image, os.O_RDONLY)
    t0 = time.perf_counter()
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    left, off = nbytes, 4096 * 512
    while left > 0:
        chunk = os.pread(fd, min(1 << 20, left), off)
        sha1.update(chunk)
        sha256.update(chunk)
        off += len(chunk)
        left -= len(chunk)
    os.close(fd)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "disk-work"))
    ap.add_argument("--run-once", nargs=2, metavar=("IMAGE", "OUTDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_once:
        print(json.dumps(run_once(*args.run_once)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    image = build(work)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as outdir:
            out = subprocess.run(
                [sys.executable, __file__, "--run-once", str(image), outdir],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        runs.append(json.loads(out))
    keys = [k for k in runs[0] if k != "bytes"]
    result: dict[str, object] = {
        "disk": "GPT, ext4 (4 KiB blocks), 14 MB kernel + 60 MB initrd",
        "runs": args.runs,
        "median": {k: round(statistics.median(r[k] for r in runs), 4) for k in keys},
        "min": {k: round(min(r[k] for r in runs), 4) for k in keys},
    }
    cats = [baseline_cat(str(image), runs[0]["bytes"]) for _ in range(args.runs)]
    result["baseline_cat_s"] = round(statistics.median(cats), 4)
    result["extract_vs_cat"] = round(
        statistics.median(r["extract_s"] for r in runs) / statistics.median(cats), 2
    )
    text = json.dumps(result, indent=2)
    print(text)
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "disk.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
