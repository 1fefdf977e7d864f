#!/usr/bin/env python3
"""pvgrub-py against the real pygrub, end to end, plain and restricted.

The disk (issue 3's speed disk): GPT, a BIOS boot partition and an ext4
root holding ``/boot/grub/grub.cfg``, a 14 MB kernel and a 60 MB initrd of
random bytes (built without mounting, as tests/disk_images.py does).  Each
round runs, back to back and alternating, as libxl runs a bootloader
(``--output=FILE --output-format=simple0 --output-directory=DIR``, ``-q``;
DIR on a tmpfs, as libxl's /var/run/xen, unless ``--output-root=work``),
plain and restricted (``--runas=999``: libxl's ``bootloader_restrict``):

* ``pygrub``, ``pygrub-runas``: Debian's /usr/lib/xen-4.17/bin/pygrub,
  which only extracts: the baselines;
* ``pvgrub-py``, ``pvgrub-py-runas``: extract, hash sha1+sha256
  (``--tpm2``), extend a real swtpm whose active banks are those two
  (``--require-vtpm``; power-cycled, untimed, before each run: a used vTPM
  is refused), write the event log.

Reported: the median and best of N rounds of each (wall time of the whole
process: interpreter start-up and imports count), the ratios of the
medians (targets <= 1.0 in both modes), the median CPU time (user + system)
of each run's process tree, steadier than wall time on a shared machine and
what parallelism costs, the peak RSS of each one's process
tree (GNU time: the larger of the parent and the sandboxed child; target
<= 64 MiB), and where pvgrub-py's time goes in each mode,
from runs whose steps are timestamped (`TRACE_DRIVER`): ``startup`` (exec
to our first line), ``imports`` (to the fork, or to opening the disk),
``sandbox_prepare``/``sandbox_enter`` (the child's `preload.prepare` and
`sandbox.enter_sandbox`), ``parse`` (open the disk, find and parse the
config, choose), ``vtpm_open`` (overlapped with the child when
restricted), ``transfer_hash_write`` (the one pass: read from the image,
write, sha1 and sha256), ``log_extend_result``.

Run it with Debian's interpreter (a venv of /usr/bin/python3, pygrub's
shebang), not a pyenv one.  pvgrub-py runs as installed on a host
(``--interpreter=host``, the default): from a fresh venv of
/usr/bin/python3 in the work directory whose site-packages holds one .pth
naming this checkout and the dependencies (the running interpreter's
site-packages), started by its console script as pip installs it; a
development venv's start-up hooks (an editable
install's finder imports pathlib, re and urllib: ~7 ms) are not what a
host runs.  ``--interpreter=dev`` runs the bench's own interpreter
instead, as before.  Byte-compiled files are allowed for both (a Debian
package ships them): ``PYTHONDONTWRITEBYTECODE`` is cleared, a private
``PYTHONPYCACHEPREFIX`` is warmed first and the preload bundle that
``make setup`` builds is built into it.

``--cold`` times every run with the image out of the page cache (dropped,
untimed, before each run), as on a domain's first boot; the default is
warm (every run reads the image from memory).

``--baseline=DIR`` adds ``pvgrub-py@base`` and ``pvgrub-py-runas@base``:
pvgrub-py from another checkout (e.g. ``git archive`` of the commit to
compare with, unpacked into DIR), run in the same alternating rounds, so a
change's before and after share the machine's load.

Results: JSON on stdout and in ``bench/out/bootloader.json``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYGRUB = "/usr/lib/xen-4.17/bin/pygrub"
MB = 1_000_000
KVER = "6.1.0-13-amd64"
KERNEL = f"/boot/vmlinuz-{KVER}"
INITRD = f"/boot/initrd.img-{KVER}"
GRUB_CFG = f"""\
set default=0
set timeout=5
menuentry 'Debian GNU/Linux' {{
    linux {KERNEL} root=/dev/xvda2 ro quiet
    initrd {INITRD}
}}
"""


def build(work: Path) -> Path:
    """The GPT/ext4 disk (mke2fs -d, sfdisk, dd; nothing mounted)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import disk_images as di

    disk = work / "bench-bootloader-gpt.img"
    if disk.exists():
        return disk
    src = work / "root"
    files = {"/boot/grub/grub.cfg": GRUB_CFG.encode(), KERNEL: os.urandom(14 * MB),
             INITRD: os.urandom(60 * MB)}  # fmt: skip
    for rel, data in files.items():
        path = src / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    fs = work / "root.ext4"
    di.make_ext4(fs, src, 160 << 20, "benchroot")
    tmp = work / "partial.img"
    with open(tmp, "wb") as f:
        f.truncate(200 << 20)
    layout = subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(tmp)],
        input="label: gpt\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
        "start=4096, size=327680, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if layout.returncode:
        raise SystemExit(f"sfdisk failed: {layout.stderr.strip()}")
    subprocess.run(["dd", f"if={fs}", f"of={tmp}", "bs=1M", "seek=2", "conv=notrunc,sparse",
                    "status=none"], check=True)  # fmt: skip
    tmp.rename(disk)
    return disk


RUNAS_UID = 999
VARIANTS = ("pygrub", "pvgrub-py", "pygrub-runas", "pvgrub-py-runas")
#: With ``--baseline=DIR``: pvgrub-py from another checkout (``git worktree``
#: or ``git archive`` of the commit to compare with), in the same rounds.
BASE = "@base"


def _plain(which: str) -> str:
    return which.removesuffix(BASE)


class Runner:
    """Runs each bootloader as libxl does, in fresh output files.

    Every run's working directory is the work directory: ``python -m`` (the
    ``dev`` interpreter's way in) puts the working directory first on
    sys.path, so a run started from the checkout imported the checkout's
    pvgrub_py for the ``@base`` variants too (their ratios measured this
    checkout twice).
    """

    def __init__(
        self, disk: Path, work: Path, env: dict[str, str], python: str, command: list[str],
        outputs: Path, baseline: str | None = None, *, cold: bool = False,
    ) -> None:  # fmt: skip
        self.disk = disk
        self.work = work
        self.env = env
        self.python = python
        #: What starts pvgrub-py: its console script on a host.
        self.command = command
        #: Where each run's --output-directory is made (libxl: a tmpfs).
        self.outputs = outputs
        #: Each timed run starts with the image out of the page cache.
        self.cold = cold
        #: The environment of the ``@base`` variants: the baseline checkout
        #: first on the path (before the .pth entry naming this one).
        self.base_env = dict(env, PYTHONPATH=baseline) if baseline else env

    def env_of(self, which: str) -> dict[str, str]:
        return self.base_env if which.endswith(BASE) else self.env

    def _paths(self, name: str) -> tuple[Path, Path]:
        outdir = self.outputs / f"{name}.d"
        outdir.mkdir(exist_ok=True)
        for p in outdir.iterdir():
            p.unlink()
        out = self.work / f"{name}.out"
        out.write_bytes(b"")
        return out, outdir

    def argv(self, which: str, extra: tuple[str, ...] = ()) -> list[str]:
        out, outdir = self._paths(which)
        common = ["-q", f"--output={out}", "--output-format=simple0",
                  f"--output-directory={outdir}"]  # fmt: skip
        if _plain(which).endswith("-runas"):
            common.append(f"--runas={RUNAS_UID}")
        if which.startswith("pygrub"):
            return [PYGRUB, *common, str(self.disk)]
        log = self.work / f"{which}.log"
        return [*self.command, *common, "--tpm2", f"--event-log={log}", *extra,
                str(self.disk)]  # fmt: skip

    def time(self, which: str, extra: tuple[str, ...] = ()) -> tuple[float, float]:
        """(wall seconds, CPU seconds of the process tree: user + system).

        The CPU time is steadier than the wall time on a shared machine, and
        shows what parallelism (the parser child, the hashing threads) costs.
        """
        argv = self.argv(which, extra)
        if self.cold:
            self.drop_image_cache()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=self.env_of(which), cwd=self.work)  # fmt: skip
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{which} failed: {err.decode(errors='replace').strip()}")
        return elapsed, usage.ru_utime + usage.ru_stime

    def drop_image_cache(self) -> None:
        """The image out of the page cache, as on a domain's first boot
        (its pages are clean: POSIX_FADV_DONTNEED drops them)."""
        fd = os.open(self.disk, os.O_RDONLY)
        try:
            os.fsync(fd)  # a freshly built image's pages may still be dirty
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def peak_rss_mib(self, which: str, extra: tuple[str, ...] = ()) -> float:
        """The peak RSS of the run's process tree (the parent, or the
        sandboxed child if larger), from GNU time's ``wait4``: a small
        process forks the run, so none of this bench's memory is counted."""
        argv = ["/usr/bin/time", "-f", "MAXRSS %M", *self.argv(which, extra)]
        r = subprocess.run(argv, capture_output=True, text=True, env=self.env_of(which),
                           cwd=self.work, check=False)  # fmt: skip
        line = [ln for ln in r.stderr.splitlines() if ln.startswith("MAXRSS ")]
        if r.returncode or not line:
            raise SystemExit(f"{which} failed: {r.stderr.strip()}")
        return int(line[-1].split()[1]) / 1024


#: Runs pvgrub-py with each step timestamped (time.time(), one line each, to
#: the file named by argv[1]); the sandboxed child inherits the patches and
#: keeps the trace descriptor open.
TRACE_DRIVER = r"""
import os, sys, time
path, t0 = sys.argv[1], float(sys.argv[2])
del sys.argv[1:3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
def mark(what):
    os.write(fd, f"{what} {time.time():.6f}\n".encode())
os.write(fd, f"exec {t0:.6f}\n".encode())
mark("main")
real_closerange = os.closerange
def closerange(lo, hi):  # the child closes every other descriptor: keep ours
    if lo <= fd < hi:
        real_closerange(lo, fd)
        real_closerange(fd + 1, hi)
    else:
        real_closerange(lo, hi)
os.closerange = closerange
PATCHES = {
    "pvgrub_py.bootloader.run": [("open_session", "session_start", "session_open")],
    "pvgrub_py.bootloader.preload": [("prepare", "child_prepare_start", "child_prepared")],
    "pvgrub_py.bootloader.sandbox": [("enter_sandbox", "child_sandbox_start", "child_sandboxed")],
    "pvgrub_py.bootloader.choose": [("open_guest_disk", "disk_open_start", "disk_opened")],
    "pvgrub_py.bootloader.guest": [("plan_boot", "plan_start", "planned")],
    "pvgrub_py.measure.vtpm": [("open_vtpm", "vtpm_start", "vtpm_open")],
    "pvgrub_py.bootloader.extract": [
        ("extract_session_files", "extract_start", "extract_end")],
}
def timed(module, name, before, after):
    real = getattr(module, name)
    def wrapper(*a, **k):
        mark(before)
        try:
            return real(*a, **k)
        finally:
            mark(after)
    setattr(module, name, wrapper)
class Hook:
    # Patches each module as it is first imported, so the run imports what
    # it would anyway, when it would.  Not an importlib.abc.MetaPathFinder:
    # importing importlib.abc would import tempfile and shutil for the run.
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        real_exec = spec.loader.exec_module
        def exec_module(module):
            real_exec(module)
            for fn, before, after in PATCHES[name]:
                timed(module, fn, before, after)
            if hasattr(module, "_standard_import_system"):
                unhooked(module)
        spec.loader.exec_module = exec_module
        return spec
def unhooked(module):
    # preload trusts its bundle's record of where its names resolve only
    # with the interpreter's own finders installed: it is asked as in an
    # untimed run, whose meta path has no Hook.
    real = module._standard_import_system
    def standard():
        ours = [f for f in sys.meta_path if isinstance(f, Hook)]
        for f in ours:
            sys.meta_path.remove(f)
        try:
            return real()
        finally:
            sys.meta_path[:0] = ours
    module._standard_import_system = standard
sys.meta_path.insert(0, Hook())
import os as _os
real_fork = _os.fork
def fork():
    pid = real_fork()
    if pid == 0:
        mark("child_forked")
    return pid
_os.fork = fork
import runpy
sys.argv[0] = "pvgrub-py"
real_exit = os._exit
parent = os.getpid()
def exit_(status):
    mark("end" if os.getpid() == parent else "child_end")
    real_exit(status)
os._exit = exit_
runpy.run_module("pvgrub_py.cli.bootloader", run_name="__main__")
"""


def trace(runner: Runner, which: str, extra: tuple[str, ...]) -> dict[str, float]:
    """One timestamped run of *which*: its time split, in seconds.

    The driver patches each module as the run first imports it, so imports
    happen where they would.  ``parse`` includes the imports the parse
    itself triggers (the grub.cfg interpreter, the ext4 reader).
    """
    argv = runner.argv(which, extra)
    path = runner.work / f"{which}.trace"
    t0 = time.time()
    options = argv[len(runner.command) :]
    r = subprocess.run([runner.python, "-c", TRACE_DRIVER, str(path), repr(t0), *options],
                       capture_output=True, env=runner.env_of(which), cwd=runner.work,
                       check=False)  # fmt: skip
    if r.returncode:
        raise SystemExit(f"trace of {which} failed: {r.stderr.decode(errors='replace')}")
    marks: dict[str, float] = {}
    for line in path.read_text().splitlines():
        what, when = line.split()
        marks.setdefault(what, float(when))

    def span(a: str, b: str) -> float:
        return round(marks[b] - marks[a], 4) if a in marks and b in marks else 0.0

    return {
        "startup": span("exec", "main"),
        "imports": span("main", "session_start"),
        "sandbox_prepare": span("child_prepare_start", "child_prepared"),
        "sandbox_enter": span("child_sandbox_start", "child_sandboxed"),
        "parse": span("disk_open_start", "planned"),
        "vtpm_open": span("vtpm_start", "vtpm_open"),
        "forked_child": span("session_start", "child_forked"),
        "wait_for_plan": span("vtpm_open", "extract_start"),
        "transfer_hash_write": span("extract_start", "extract_end"),
        "log_extend_result": span("extract_end", "end"),
        "total": span("exec", "end"),
    }


def host_python(work: Path) -> str:
    """pvgrub-py's interpreter as on a host: a venv of /usr/bin/python3 whose
    site-packages has one .pth naming this checkout and the dependencies
    (this interpreter's site-packages), and no other start-up hook."""
    import site

    venv = (work / "host-venv").absolute()
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    lines = [str(ROOT), *site.getsitepackages()]
    Path(purelib, "pvgrub-py-bench.pth").write_text("".join(f"{p}\n" for p in lines))
    return str(python)


#: The console script pip writes for setup.py's ``pvgrub-py`` entry point
#: (byte for byte what `make setup` installs in .venv/bin with this
#: machine's pip): libxl executes the bootloader's file, so a host starts
#: pvgrub-py through this, not through ``python -m``, whose runpy imports
#: importlib.util and importlib.machinery first (~0.5 ms a run that a host
#: does not pay).
CONSOLE_SCRIPT = """\
#!{python}
import sys
from pvgrub_py.cli.bootloader import main
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(main())
"""


def host_script(python: str) -> str:
    """The ``pvgrub-py`` console script beside the host venv's *python*."""
    script = Path(python).parent / "pvgrub-py"
    script.write_text(CONSOLE_SCRIPT.format(python=python))
    script.chmod(0o755)
    return str(script)


def output_root(choice: str, work: Path) -> Path:
    """Where each run's ``--output-directory`` goes.

    libxl makes it in XEN_RUN_DIR (``/var/run/xen/bootloader.DOMID.d``,
    tools/libs/light/libxl_bootloader.c), a tmpfs on Debian (/var/run is
    /run), and both bootloaders write every byte of the kernel and initrd
    there: writing 74 MB into tmpfs costs ~36 ms of CPU (page allocation),
    into ext4's page cache ~17 ms, so the file system changes both sides'
    times.  ``tmpfs`` (the default): /run if it is a tmpfs, else /dev/shm;
    ``work``: the work directory, as this bench did before.
    """
    if choice == "work":
        return work
    for base in ("/run", "/dev/shm"):
        kind = subprocess.run(["stat", "-f", "-c", "%T", base], capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip
        if kind == "tmpfs":
            root = Path(base) / "pvgrub-py-bench"
            root.mkdir(mode=0o700, exist_ok=True)
            return root
    raise SystemExit("no tmpfs at /run or /dev/shm: use --output-root=work")


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "bootloader-work"))
    ap.add_argument("--interpreter", choices=("host", "dev"), default="host",
                    help="pvgrub-py's: a host-like venv (default) or this one")  # fmt: skip
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run pvgrub-py from the checkout DIR (variants *@base), "
                         "in the same alternating rounds")  # fmt: skip
    ap.add_argument("--output-root", choices=("tmpfs", "work"), default="tmpfs",
                    help="where the runs' output directories go: a tmpfs, as libxl's "
                         "/var/run/xen (default), or the work directory")  # fmt: skip
    ap.add_argument("--cold", action="store_true",
                    help="time every run with the disk image out of the page cache "
                         "(a domain's first boot), instead of warm")  # fmt: skip
    args = ap.parse_args()
    if not os.path.exists(PYGRUB):
        raise SystemExit(f"{PYGRUB} not found: install Debian's xen-utils-4.17")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    disk = build(work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["PYTHONPATH"] = str(ROOT)
    python = host_python(work) if args.interpreter == "host" else sys.executable
    baseline = str(Path(args.baseline).resolve()) if args.baseline else None
    command = ([host_script(python)] if args.interpreter == "host"
               else [python, "-m", "pvgrub_py.cli.bootloader"])  # fmt: skip
    outputs = output_root(args.output_root, work)
    if outputs != work:  # the copies are ~450 MB of RAM: none is left behind
        atexit.register(shutil.rmtree, outputs, ignore_errors=True)
    runner = Runner(disk, work, env, python, command, outputs, baseline, cold=args.cold)
    variants = VARIANTS + ((f"pvgrub-py{BASE}", f"pvgrub-py-runas{BASE}") if baseline else ())
    # The bench runs as a script (sys.path[0] is bench/), so the launcher
    # is imported from this checkout, as the runs are.
    sys.path.insert(0, str(ROOT))
    from pvgrub_py.tpm.launcher import SwtpmProcess

    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    rss: dict[str, float] = {}
    splits: dict[str, dict[str, float]] = {}
    # A vTPM with the two banks pv-grub measures into (sha1, sha256) active,
    # as the target is stated; swtpm's default has four.
    state = work / "tpmstate"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--pcr-banks",
                    "sha1,sha256", "--overwrite"], capture_output=True, check=True)  # fmt: skip
    with SwtpmProcess(tpm2=True, state_dir=str(state)) as tpm:
        vtpm = (f"--vtpm={tpm.uri}", "--require-vtpm")

        def once(which: str) -> tuple[float, float]:
            if which.startswith("pygrub"):
                return runner.time(which)
            tpm.power_cycle()  # untimed: a fresh boot of the vTPM
            return runner.time(which, vtpm)

        # The preload bundle `make setup` builds (`--runas` reads the parsers'
        # byte code from it), built into this run's byte-code cache; a
        # baseline checkout that predates it reads file by file.
        for which in variants:
            if which.startswith("pvgrub"):
                subprocess.run([python, "-m", "pvgrub_py.bootloader.preload", "--build"],
                               env=runner.env_of(which), cwd=work, capture_output=True,
                               check=not which.endswith(BASE))  # fmt: skip
        for which in variants:  # warm the page cache and the byte-code caches
            once(which)
        for _ in range(args.rounds):
            for which in variants:
                wall, used = once(which)
                times[which].append(wall)
                cpu[which].append(used)
        for which in variants:
            if which.startswith("pvgrub"):
                tpm.power_cycle()
            rss[which] = runner.peak_rss_mib(which, () if which.startswith("pygrub") else vtpm)
        for which in [v for v in variants if v.startswith("pvgrub")]:
            best: dict[str, float] | None = None
            for _ in range(3):
                tpm.power_cycle()
                doc = trace(runner, which, vtpm)
                if best is None or doc["total"] < best["total"]:
                    best = doc
            assert best is not None
            splits[which] = best
    med = {v: _median(times[v]) for v in variants}
    result: dict[str, Any] = {
        "disk": "GPT, ext4 (4 KiB blocks), 14 MB kernel + 60 MB initrd (random bytes)",
        "python": python,
        "command": command,
        "interpreter": args.interpreter,
        "output_root": str(outputs),
        "page_cache": "cold" if args.cold else "warm",
        "rounds": args.rounds,
        "median_s": {v: round(med[v], 4) for v in variants},
        "best_s": {v: round(min(times[v]), 4) for v in variants},
        "ratio_plain": round(med["pvgrub-py"] / med["pygrub"], 3),
        "ratio_runas": round(med["pvgrub-py-runas"] / med["pygrub-runas"], 3),
        "ratio_target": 1.0,
        **({"ratio_plain_base": round(med[f"pvgrub-py{BASE}"] / med["pygrub"], 3),
            "ratio_runas_base": round(med[f"pvgrub-py-runas{BASE}"] / med["pygrub-runas"], 3)}
           if baseline else {}),
        "cpu_median_s": {v: round(_median(cpu[v]), 4) for v in variants},
        "peak_rss_mib": {v: round(rss[v], 1) for v in variants},
        "peak_rss_target_mib": 64,
        "all_s": {v: [round(t, 4) for t in times[v]] for v in variants},
        "split_s": splits,
        "python_startup_s": round(min(_startup(python, env) for _ in range(5)), 4),
        "pygrub_python_startup_s": round(
            min(_startup("/usr/bin/python3", env) for _ in range(5)), 4
        ),
    }
    text = json.dumps(result, indent=2)
    print(text)
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "bootloader.json").write_text(text + "\n")


def _startup(python: str, env: dict[str, str], *flags: str) -> float:
    """An interpreter's bare start-up (``-c pass``): the floor under each side."""
    t0 = time.perf_counter()
    subprocess.run([python, *flags, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
