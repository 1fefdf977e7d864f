"""``pvgrubctl kernel-info``: what Xen's domain builder will make of a guest kernel."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pvgrub_py.errors import InputError, PvgrubError
from pvgrub_py.kernel.report import KernelReport, compare
from pvgrub_py.kernel.source import KernelSource, read_kernel

DESCRIPTION = """\
Inspect a guest kernel the way Xen's domain builder (libxenguest) will, before
a boot: the image format (bzImage, ELF, either inside a whole-file gzip), the
bzImage setup header (boot protocol, setup_sects, payload offset and length),
the payload compression (gzip, bzip2, xz, lzma, lzo, lz4 or zstd), every Xen
ELF note (GUEST_OS, XEN_VERSION, VIRT_BASE, ENTRY, HYPERCALL_PAGE, FEATURES,
PAE_MODE, LOADER, HV_START_LOW, PADDR_OFFSET, PHYS32_ENTRY, INIT_P2M,
SUPPORTED_FEATURES, MOD_START_PFN, ...) and the guest types it can boot as:
PV (xen-3.0-x86_64, or xen-3.0-x86_32p for i386) and PVH (hvm-3.0-x86_32,
when the kernel has PHYS32_ENTRY).

As pv-grub does, the file is measured (SHA-1 and SHA-256 of the bytes PCR 4
records) before any parser touches it, and both backends parse exactly
those bytes.

Backends:
  libxenguest  Xen's own loader: xc_dom_allocate, xc_dom_kernel_mem and
               xc_dom_parse_image on a dummy libxenctrl handle (no hypervisor
               needed), once as a PV and once as a PVH guest on an x86-64
               host's capabilities.  Needs the Xen bindings (pvgrubctl doctor).
  python       pvgrub-py's own parser (also used by the simulator).
  both         run both and compare every fact both report.
  auto         libxenguest when the bindings are built, else python (default).

Decompression stops at 1 GiB (XC_DOM_DECOMPRESS_MAX), like libxenguest."""

EPILOG = """\
examples:
  pvgrubctl kernel-info /boot/vmlinuz-6.1.0-28-amd64
  pvgrubctl kernel-info --backend both --json vmlinuz > report.json

exit status: 0 the kernel boots on Xen as at least one guest type (and, with
--backend both, the backends agree); 1 it does not, it is malformed, or the
backends disagree (the differences are listed); 2 usage error."""

BACKENDS = ("auto", "libxenguest", "python", "both")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "kernel-info",
        help="show how Xen will load a guest kernel (format, notes, guest types)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="the kernel: bzImage, ELF vmlinux, or either gzipped (a regular file of at most "
        "1 GiB)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="who parses the kernel: libxenguest, python, both (compared) or auto; see "
        "Backends above (default: auto)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report (with both: both reports and their differences) as JSON",
    )
    p.set_defaults(func=run)


def _run_backend(name: str, src: KernelSource) -> KernelReport:
    if name == "python":
        from pvgrub_py.kernel.python_backend import inspect_python

        return inspect_python(src)
    from pvgrub_py.kernel.libxenguest_backend import inspect_libxenguest

    return inspect_libxenguest(src)


def _resolve(backend: str) -> str:
    if backend != "auto":
        return backend
    from pvgrub_py.xen.availability import availability

    return "libxenguest" if availability().built else "python"


def _refused(name: str, src: KernelSource, error: InputError) -> KernelReport:
    report = KernelReport(name, src.label, len(src.raw), src.measurement)
    report.error = str(error)
    return report


def run(args: argparse.Namespace) -> int:
    backend = _resolve(args.backend)
    src = read_kernel(args.file)  # measured here, before any parser runs
    if backend != "both":
        report = _run_backend(backend, src)
        _print({"report": report}, args.json, None)
        return 0 if report.bootable_types else _not_bootable(report)
    reports = {}
    for name in ("python", "libxenguest"):
        try:
            reports[name] = _run_backend(name, src)
        except InputError as e:
            reports[name] = _refused(name, src, e)
    differences = compare(reports["python"], reports["libxenguest"])
    _print(reports, args.json, differences)
    if differences:
        raise PvgrubError(
            f"{src.label}: python and libxenguest disagree on "
            f"{len(differences)} fact(s): " + ", ".join(d.fact for d in differences)
        )
    return 0 if reports["libxenguest"].bootable_types else _not_bootable(reports["libxenguest"])


def _not_bootable(report: KernelReport) -> int:
    if report.error:
        # libxenguest's own messages ("xg_dom_core.c:689: ... Invalid kernel") name no file.
        named = report.error.startswith(f"{report.source}:")
        error = report.error if named else f"{report.source}: {report.backend}: {report.error}"
        print(f"pvgrubctl: {error}", file=sys.stderr)
    else:
        reasons = "; ".join(f"{name}: {v.reason}" for name, v in report.guests.items())
        print(f"pvgrubctl: {report.source}: not bootable on Xen ({reasons})", file=sys.stderr)
    return 1


def _print(reports: dict[str, KernelReport], as_json: bool, differences: Any) -> None:
    from pvgrub_py.kernel.render import format_differences, format_report

    if as_json:
        if differences is None:
            doc: dict[str, Any] = next(iter(reports.values())).to_dict()
        else:
            doc = {name: r.to_dict() for name, r in reports.items()}
            doc["differences"] = [
                {"fact": d.fact, "python": d.left, "libxenguest": d.right} for d in differences
            ]
            doc["agree"] = not differences
        json.dump(doc, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
        return
    print("\n\n".join(format_report(r) for r in reports.values()))
    if differences is not None:
        print()
        print(format_differences(differences, "python", "libxenguest"))


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
