"""``pvgrub-py --runas``: the deprivileged parser child (XSA-443 class).

Run as root (the sandbox needs it): the child really runs as the uid, in
its own namespaces, in an empty root, under the rlimits; a disk that makes
the parser allocate gigabytes fails cleanly; a hang is killed at libxl's
timeout; and the results are byte for byte those of an in-process run.
The pipe protocol is tested against a lying child too.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.bootloader import wire
from pvgrub_py.bootloader.depriv import RemoteSession, bootloader_timeout
from pvgrub_py.bootloader.plan import BootPlan, FileSpec, MenuLine, plan_from_json, plan_to_json
from pvgrub_py.disk.lvm import MAX_METADATA_BYTES
from pvgrub_py.errors import InputError, PvgrubError, UsageError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root"),
]

NOBODY = 65534


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


class Run:
    """pvgrub-py as libxl runs it, in its own output dir, with or without --runas."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.outdir = tmp / f"{name}.d"
        self.outdir.mkdir()
        self.output = tmp / f"{name}.out"
        self.output.touch()
        self.log = tmp / f"{name}.log"

    def argv(self, disk: Path, *extra: str) -> list[str]:
        """pvgrub-py as libxl runs it, writing into this run's output file and directory."""
        return [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--quiet",
                f"--output={self.output}", "--output-format=simple0",
                f"--output-directory={self.outdir}", *extra, str(disk)]  # fmt: skip

    def __call__(
        self, disk: Path, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(disk, *extra), capture_output=True, text=True,
                              timeout=180, env={**os.environ, **(env or {})})  # fmt: skip

    def records(self) -> dict[str, str]:
        items = self.output.read_bytes().split(b"\0")
        assert items[-2:] == [b"", b""]
        return dict(i.decode().split(" ", 1) for i in items[:-2])

    def files(self) -> dict[str, bytes]:
        rec = self.records()
        return {k: Path(rec[k]).read_bytes() for k in ("kernel", "ramdisk") if k in rec}

    def assert_failed_cleanly(self, r: subprocess.CompletedProcess[str]) -> str:
        assert r.returncode == 1, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("pvgrub-py: warning:")]
        assert len(lines) == 1 and lines[0].startswith("pvgrub-py: "), r.stderr
        assert "Traceback" not in r.stderr
        assert self.output.read_bytes() == b""
        assert list(self.outdir.iterdir()) == []
        return lines[0]


def _roots(base: str) -> set[str]:
    return set(glob.glob(os.path.join(base, "pvgrub-py-root.*")))


@pytest.fixture
def no_leftover_roots(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The sandbox roots of this test go to a $TMPDIR of its own (the bootloader makes
    them under $TMPDIR, in-process and in the pvgrub-py processes a test starts), so
    another test run on the machine cannot make one appear, and none may be left."""
    base = str(tmp_path_factory.mktemp("sandbox-roots"))
    monkeypatch.setenv("TMPDIR", base)
    yield
    assert _roots(base) == set(), "the sandbox root directory was left behind"


# -- the same results, byte for byte ------------------------------------------
@pytest.mark.parametrize(
    "image", ["debian_gpt", "fedora_mbr", "btrfs_bare", "fat_bare", "iso", "hybrid_iso", "qcow2"]
)
def test_deprivileged_run_equals_in_process_run_byte_for_byte(
    images: disk_images.ImageFactory, tmp_path: Path, image: str, no_leftover_roots: None
) -> None:
    from pvgrub_py.tpm.launcher import SwtpmProcess

    img = getattr(images, image)()
    plain, depriv = Run(tmp_path, "plain"), Run(tmp_path, "depriv")
    # Measured boots, one fresh vTPM each: only a measured boot writes a log.
    with SwtpmProcess(tpm2=True) as ta, SwtpmProcess(tpm2=True) as tb:
        a = plain(img.path, "--tpm2", f"--vtpm={ta.uri}", f"--event-log={plain.log}")
        b = depriv(img.path, "--tpm2", f"--vtpm={tb.uri}", f"--event-log={depriv.log}",
                   f"--runas={NOBODY}")  # fmt: skip
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert a.stderr == b.stderr
    ra, rb = plain.records(), depriv.records()
    assert set(ra) == set(rb) and ra["args"] == rb["args"]
    assert plain.files() == depriv.files()
    assert plain.log.read_bytes() == depriv.log.read_bytes()
    # The extracted files belong to root, 0600, as without --runas.
    for path in (Path(rb["kernel"]), *([Path(rb["ramdisk"])] if "ramdisk" in rb else [])):
        st = path.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)


def test_offset_through_the_sandbox(images: disk_images.ImageFactory, tmp_path: Path) -> None:
    """``--offset`` narrows the disk to the volume there (`choose`, with the
    `copy` module it alone imports inside the sandbox, from memory)."""
    img = images.debian_gpt()
    offset = f"--offset={img.notes['part_offset']}"
    plain, depriv = Run(tmp_path, "plain"), Run(tmp_path, "depriv")
    a = plain(img.path, offset)
    b = depriv(img.path, offset, f"--runas={NOBODY}")
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert plain.files() == depriv.files() != {}


def test_list_entries_and_entry_choice_through_the_sandbox(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    img = images.debian_gpt().path
    cmd = [sys.executable, "-m", "pvgrub_py.cli.bootloader"]
    a = subprocess.run([*cmd, "-l", str(img)], capture_output=True, text=True)
    b = subprocess.run([*cmd, "-l", f"--runas={NOBODY}", str(img)], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("*")
    run = Run(tmp_path, "entry")
    r = run(img, "--entry=no such entry", f"--runas={NOBODY}")
    line = run.assert_failed_cleanly(r)
    assert "no menu entry matches 'no such entry'" in line


def test_isconfig_through_the_sandbox(images: disk_images.ImageFactory, tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(disk_images.DEBIAN_GRUB_CFG)
    cmd = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "-q", "--isconfig"]
    a = subprocess.run([*cmd, str(cfg)], capture_output=True, text=True)
    b = subprocess.run([*cmd, f"--runas={NOBODY}", str(cfg)], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    assert f"  kernel: /boot/vmlinuz-{disk_images.DEBIAN_KVER}\n" in a.stdout


# -- errors from the child ------------------------------------------------------
def test_child_errors_are_one_line_and_leave_nothing(
    images: disk_images.ImageFactory, tmp_path: Path, no_leftover_roots: None
) -> None:
    blank = tmp_path / "blank.ext4"
    (tmp_path / "empty").mkdir()
    disk_images.make_ext4(blank, tmp_path / "empty", 8 << 20, "blank")
    run = Run(tmp_path, "blank")
    line = run.assert_failed_cleanly(run(blank, f"--runas={NOBODY}"))
    assert line.startswith("pvgrub-py: blank.ext4: no boot configuration")
    missing = Run(tmp_path, "missing")
    line = missing.assert_failed_cleanly(missing(tmp_path / "nope.img", f"--runas={NOBODY}"))
    assert "nope.img" in line


def test_a_host_side_failure_kills_the_child_and_leaves_nothing(
    images: disk_images.ImageFactory, tmp_path: Path, no_leftover_roots: None
) -> None:
    """The vTPM is unreachable after the child sent its plan: fail closed, clean up."""
    run = Run(tmp_path, "vtpm")
    r = run(images.debian_gpt().path, f"--runas={NOBODY}", "--require-vtpm",
            f"--vtpm=swtpm:unix:{tmp_path}/absent.sock", f"--event-log={run.log}")  # fmt: skip
    line = run.assert_failed_cleanly(r)
    assert line.startswith("pvgrub-py: vTPM swtpm:unix:")
    assert not run.log.exists()


def test_runas_needs_quiet_or_entry(images: disk_images.ImageFactory) -> None:
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.cli.bootloader", f"--runas={NOBODY}",
                        str(images.debian_gpt().path)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--runas needs" in r.stderr


def lvm_metadata_bomb(path: Path, metadata_bytes: int = MAX_METADATA_BYTES) -> None:
    """An LVM2 PV whose metadata text, within the 1 MiB cap, takes ~500 MB to parse.

    The text is one ``a = [0,0,...]`` line: dissect.volume hands the value
    to ``ast.literal_eval``, whose syntax tree for half a million list items
    takes ~490 MB (measured without limits).  The label, PV header, MDA
    header and raw_locn follow LVM2's ``label.h``/``format-text/layout.h``;
    checksums are not checked by the reader, so they are left zero.
    """
    items = (metadata_bytes - len(b"a = [0]\n")) // 2
    meta = b"a = [" + b"0," * items + b"0]\n"
    assert len(meta) <= metadata_bytes
    size = 4096 + 512 + len(meta) + (1 << 20)
    head = bytearray(4096)
    struct.pack_into("<8sQII8s", head, 512, b"LABELONE", 1, 0, 32, b"LVM2 001")
    pv = struct.pack("<32sQ", b"P" * 32, size)
    pv += struct.pack("<QQQQ", 1 << 20, 0, 0, 0)  # one data area, terminator
    pv += struct.pack("<QQQQ", 4096, len(meta) + 4096, 0, 0)  # one metadata area
    head[544 : 544 + len(pv)] = pv
    mda = struct.pack("<I16sIQQ", 0, b" LVM2 x[5A%r0N*>", 1, 4096, len(meta) + 4096)
    mda += struct.pack("<QQIIQQII", 512, len(meta) + 1, 0, 0, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(bytes(head))
        f.write(mda.ljust(512, b"\0"))
        f.write(meta)
        f.truncate(size)


def test_an_lvm_metadata_bomb_is_refused_before_it_is_parsed(
    tmp_path: Path, no_leftover_roots: None
) -> None:
    # The LVM layer's 64 KiB line cap refuses it before dissect's literal_eval
    # runs (~490 MB without limits); RLIMIT_AS is the second line of defence,
    # exercised by test_a_child_out_of_memory_fails_cleanly.
    bomb = tmp_path / "bomb.img"
    lvm_metadata_bomb(bomb)
    run = Run(tmp_path, "bomb")
    started = time.monotonic()
    line = run.assert_failed_cleanly(run(bomb, f"--runas={NOBODY}"))
    assert line == "pvgrub-py: bomb.img: LVM2 metadata has a line of more than 64 KiB", line
    assert time.monotonic() - started < 30


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(task) as f:
            kids += [int(x) for x in f.read().split()]
    return kids


def test_a_hung_parser_is_killed_at_the_libxl_timeout(
    images: disk_images.ImageFactory, tmp_path: Path, no_leftover_roots: None
) -> None:
    """SIGSTOP the child as soon as it exists: the parent must kill it at 2 s."""
    run = Run(tmp_path, "hang")
    argv = run.argv(images.debian_gpt().path, f"--runas={NOBODY}")
    env = {**os.environ, "LIBXL_BOOTLOADER_TIMEOUT": "2"}
    started = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    stopped = None
    while stopped is None and proc.poll() is None and time.monotonic() - started < 20:
        for kid in _children(proc.pid):
            os.kill(kid, signal.SIGSTOP)
            stopped = kid
        time.sleep(0.002)
    assert stopped is not None, "never saw the parser child"
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    r = subprocess.CompletedProcess(argv, proc.returncode, "", err)
    line = run.assert_failed_cleanly(r)
    assert "no result after 2 s: killed it" in line
    assert 2 <= elapsed < 10
    assert not os.path.exists(f"/proc/{stopped}"), "the child was not reaped"


def test_sigterm_unwinds_like_a_failure(
    images: disk_images.ImageFactory, tmp_path: Path, no_leftover_roots: None
) -> None:
    """libxl sends SIGTERM when the domain dies during the bootloader."""
    run = Run(tmp_path, "term")
    argv = run.argv(images.debian_gpt().path, f"--runas={NOBODY}")
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    started, stopped = time.monotonic(), None
    while stopped is None and proc.poll() is None and time.monotonic() - started < 20:
        for kid in _children(proc.pid):
            os.kill(kid, signal.SIGSTOP)
            stopped = kid
        time.sleep(0.002)
    assert stopped is not None, "never saw the parser child"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    line = run.assert_failed_cleanly(subprocess.CompletedProcess(argv, proc.returncode, "", err))
    assert line == "pvgrub-py: terminated by SIGTERM: nothing was booted"
    assert not os.path.exists(f"/proc/{stopped}")


def test_bootloader_timeout_follows_libxl() -> None:
    assert bootloader_timeout({}) == 120.0
    assert bootloader_timeout({"LIBXL_BOOTLOADER_TIMEOUT": "7"}) == 7.0
    assert bootloader_timeout({"LIBXL_BOOTLOADER_TIMEOUT": "0"}) is None
    with pytest.raises(UsageError):
        bootloader_timeout({"LIBXL_BOOTLOADER_TIMEOUT": "soon"})
    # Beyond what a deadline can hold: a usage error, not an OverflowError later.
    for text in ("99999999999999999999", "99999999999", "\u0661", "-3"):
        with pytest.raises(UsageError):
            bootloader_timeout({"LIBXL_BOOTLOADER_TIMEOUT": text})


# -- the sandbox itself, seen from inside and from outside ---------------------
DRIVER = r"""
import ctypes, errno, json, os, resource, socket, sys, time
from pvgrub_py.bootloader.depriv import spawn
from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.errors import InputError, PvgrubError

def err(fn):
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except MemoryError:
        return "MemoryError"
    return "ok"

def inside():
    facts = {"resuid": os.getresuid(), "resgid": os.getresgid(), "groups": os.getgroups()}
    facts["limits"] = {name: resource.getrlimit(getattr(resource, name))
                       for name in ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC")}
    facts["shadow"] = err(lambda: open("/etc/shadow", "rb"))
    facts["root"] = os.listdir("/")
    facts["write_root"] = err(lambda: open("/x", "wb"))
    facts["nnp"] = ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)
    facts["setuid0"] = err(lambda: os.setuid(0))
    facts["interfaces"] = [name for _, name in socket.if_nameindex()]
    facts["connect"] = err(lambda: socket.create_connection(("127.0.0.1", 22), timeout=1))
    facts["alloc_300m"] = err(lambda: bytearray(300 << 20))
    def fork():
        if os.fork() == 0:
            os._exit(0)
    facts["fork"] = err(fork)
    raise InputError("probe", json.dumps(facts))

def pause():
    time.sleep(3)

def oom():
    bytearray(300 << 20)  # past RLIMIT_AS: MemoryError in the child

def hang():
    while True:
        time.sleep(1)

mode, disk, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
opts = parse_options(["-q", "--runas=65534", disk])
probes = {"inside": inside, "pause": pause, "hang": hang, "oom": oom}
started = time.monotonic()  # before spawn: the deadline starts inside it
session = spawn(opts, timeout=timeout, probe=probes[mode])
print(json.dumps({"pid": session.pid, "root": session._root}), flush=True)
try:
    plan = session.read_plan()
    out = {"plan": plan.kernel.path}
except PvgrubError as e:
    out = {"error": str(e), "type": type(e).__name__}
session.close()
out["elapsed"] = time.monotonic() - started
out["reaped"] = not os.path.exists(f"/proc/{session.pid}")
out["root_removed"] = not os.path.exists(session._root)
print(json.dumps(out), flush=True)
"""


def driver(mode: str, disk: Path, timeout: float = 60) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", DRIVER, mode, str(disk), str(timeout)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def test_inside_the_sandbox(images: disk_images.ImageFactory) -> None:
    proc = driver("inside", images.debian_gpt().path)
    out, _ = proc.communicate(timeout=60)
    _, last = (json.loads(line) for line in out.splitlines())
    assert last["type"] == "PvgrubError" and last["reaped"] and last["root_removed"]
    facts = json.loads(last["error"].split("probe: ", 1)[1])
    assert facts["resuid"] == [NOBODY] * 3 and facts["resgid"] == [NOBODY] * 3
    assert facts["groups"] == []
    assert facts["limits"] == {
        "RLIMIT_AS": [256 << 20] * 2,
        "RLIMIT_FSIZE": [1 << 30] * 2,
        "RLIMIT_CORE": [0, 0],
        "RLIMIT_NPROC": [0, 0],
    }
    assert facts["shadow"] == "ENOENT"  # no /etc at all in the empty root
    assert facts["root"] == []
    assert facts["write_root"] in ("EROFS", "EACCES")
    assert facts["nnp"] == 1
    assert facts["setuid0"] == "EPERM"
    assert facts["interfaces"] == ["lo"]  # a fresh network namespace
    assert facts["connect"] == "ENETUNREACH"  # ... whose loopback is down
    assert facts["alloc_300m"] == "MemoryError"
    assert facts["fork"] == "EAGAIN"


def test_a_child_out_of_memory_fails_cleanly(images: disk_images.ImageFactory) -> None:
    """Past the sandbox's 256 MiB the child fails with one line; nothing is left."""
    proc = driver("oom", images.debian_gpt().path)
    out, _ = proc.communicate(timeout=60)
    _, last = (json.loads(line) for line in out.splitlines())
    assert last["type"] in ("InputError", "PvgrubError"), last
    assert "MemoryError" in last["error"] or "out of memory" in last["error"], last
    assert "\n" not in last["error"]
    assert last["reaped"] and last["root_removed"]


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_outside_view_of_the_sandboxed_child(images: disk_images.ImageFactory) -> None:
    proc = driver("pause", images.debian_gpt().path)
    assert proc.stdout is not None
    head = json.loads(proc.stdout.readline())
    pid = head["pid"]
    deadline = time.monotonic() + 20
    while _status(pid)["Uid"].split()[0] != str(NOBODY):
        assert time.monotonic() < deadline, "the child never dropped to the uid"
        time.sleep(0.01)
    status = _status(pid)
    assert status["Uid"].split() == [str(NOBODY)] * 4
    assert status["Gid"].split() == [str(NOBODY)] * 4
    assert status["Groups"].strip() == ""
    assert status["NoNewPrivs"].strip() == "1"
    assert status["CapEff"].strip() == "0" * 16
    with open(f"/proc/{pid}/limits") as f:
        limits = {line[:26].strip(): line[26:].split()[:2] for line in f.readlines()[1:]}
    assert limits["Max address space"] == [str(256 << 20)] * 2
    assert limits["Max file size"] == [str(1 << 30)] * 2
    assert limits["Max core file size"] == ["0", "0"]
    assert limits["Max processes"] == ["0", "0"]
    for ns in ("mnt", "ipc", "net"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
    assert os.listdir(f"/proc/{pid}/root") == []
    # Only the disk and the pipe are open besides /dev/null on 0-2.
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
    assert len(fds) == 5 and targets[:3] == ["/dev/null"] * 3, targets
    assert any(t.endswith("debian-gpt.img") for t in targets)
    assert any(t.startswith("pipe:") for t in targets)
    out, _ = proc.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert last["plan"].startswith("/boot/vmlinuz-") and last["reaped"] and last["root_removed"]


def test_the_parent_kills_a_hung_child_at_its_deadline(images: disk_images.ImageFactory) -> None:
    proc = driver("hang", images.debian_gpt().path, timeout=1.5)
    out, _ = proc.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert last["type"] == "ChildTimeout" and "no result after 1.5 s" in last["error"]
    assert 1.5 <= last["elapsed"] < 5
    assert last["reaped"] and last["root_removed"]


# -- the protocol against a lying child ---------------------------------------
PLAN = BootPlan(
    config="d.img: /boot/grub/grub.cfg",
    menu=(MenuLine("Debian", "ro", True),),
    default_index=0,
    timeout=5,
    entry_index=0,
    kernel=FileSpec("/vmlinuz", "d.img: /vmlinuz"),
    initrds=(FileSpec("/initrd.img", "d.img: /initrd.img"),),
    args="ro",
    notes=("d.img: /boot/grub/grubenv: the config saves its environment",),
)


def fake_child(
    frames: list[tuple[bytes, bytes]], raw: bytes = b"", argv: tuple[str, ...] = ("/bin/true",)
) -> RemoteSession:
    """A RemoteSession whose 'child' is a thread writing *frames* into the pipe."""
    r, w = os.pipe()

    def write() -> None:
        try:
            for kind, payload in frames:
                os.write(w, struct.pack(">cI", kind, len(payload)) + payload)
            if raw:
                os.write(w, raw)
        except OSError:
            pass
        finally:
            os.close(w)

    threading.Thread(target=write, daemon=True).start()
    root = tempfile.mkdtemp(prefix="pvgrub-py-test-root.")
    pid = os.posix_spawn(argv[0], list(argv), os.environ)  # stands in for the parser
    return RemoteSession(pid, r, root, wire.Deadline(5), "d.img")


def plan_frame(plan: BootPlan = PLAN) -> tuple[bytes, bytes]:
    return wire.PLAN, json.dumps(plan_to_json(plan)).encode()


def start(index: int, size: int) -> tuple[bytes, bytes]:
    return wire.START, json.dumps({"index": index, "size": size}).encode()


def collect(session: RemoteSession, index: int, cap: int = 1 << 30) -> bytes:
    parts: list[bytes] = []
    session.stream(index, parts.append, cap)
    return b"".join(parts)


def test_an_honest_child() -> None:
    s = fake_child([plan_frame(), start(0, 5), (wire.DATA, b"ker"), (wire.DATA, b"nl"),
                    start(1, 0), (wire.END, b"")])  # fmt: skip
    assert s.read_plan() == PLAN
    assert collect(s, 0) == b"kernl" and collect(s, 1) == b""
    s.finish()


@pytest.mark.parametrize(
    ("frames", "raw", "message"),
    [
        ([start(0, 1)], b"", "sent a S frame where P was due"),
        ([plan_frame(), start(1, 3)], b"", "START {'index': 1, 'size': 3} where file 0"),
        ([plan_frame(), start(0, 3), (wire.DATA, b"abcd")], b"", "overruns the announced 3"),
        ([plan_frame(), start(0, 2 << 30)], b"", "exceeds the 1073741824-byte cap"),
        ([plan_frame(), start(0, 3), (wire.DATA, b"ab")], b"", "exited without a result"),
        ([plan_frame()], b"X\0\0\0\0", "unknown frame kind"),
        ([plan_frame()], b"D\x7f\0\0\0", "exceeds its 8388608-byte cap"),
        ([plan_frame(), (wire.FAIL, b"disk.img: bad\nforged line\x1b[2J")], b"", None),
        ([(wire.PLAN, b"{not json")], b"", "the plan is not JSON"),
        ([(wire.PLAN, b'{"config": 1}')], b"", "malformed boot plan"),
    ],
)
def test_a_lying_child_is_refused(
    frames: list[tuple[bytes, bytes]], raw: bytes, message: str | None
) -> None:
    s = fake_child(frames, raw)
    with pytest.raises(PvgrubError) as caught:
        s.read_plan()
        collect(s, 0)
        collect(s, 1)
        s.finish()
    text = str(caught.value)
    assert "\n" not in text and "\x1b" not in text
    if message is None:
        assert text == "disk.img: bad?forged line?[2J"
    else:
        assert message in text, text
    s.close()


def test_a_child_that_dies_mid_stream_is_reported_by_its_signal() -> None:
    s = fake_child([plan_frame(), start(0, 3)], argv=("/bin/sh", "-c", "kill -9 $$"))
    s.read_plan()
    with pytest.raises(wire.ProtocolError, match="was killed by signal SIGKILL"):
        collect(s, 0)


def test_a_silent_child_times_out() -> None:
    r, w = os.pipe()
    root = tempfile.mkdtemp(prefix="pvgrub-py-test-root.")
    started = time.monotonic()  # before the deadline starts: it cannot seem early
    s = RemoteSession(-1, r, root, wire.Deadline(0.3), "d.img")
    with pytest.raises(wire.ChildTimeout, match=r"no result after 0\.3 s"):
        s.read_plan()
    assert 0.3 <= time.monotonic() - started < 2
    os.close(w)
    assert not os.path.exists(root)


def test_plan_json_round_trip_and_hostile_fields() -> None:
    assert plan_from_json(json.loads(json.dumps(plan_to_json(PLAN))), "x") == PLAN
    doc = plan_to_json(PLAN)
    for field, value in [("default_index", 5), ("timeout", "5"), ("entry_index", True),
                         ("args", "x" * ((1 << 20) + 1)), ("menu", [{"title": 1}]),
                         ("kernel", {"path": "/k"}), ("initrds", [None] * 65),
                         ("notes", "x"), ("notes", ["x"] * 17), ("notes", ["a\nb"]),
                         ("notes", ["x" * 1025])]:  # fmt: skip
        with pytest.raises(InputError, match="malformed boot plan"):
            plan_from_json({**doc, field: value}, "x")


def test_frame_header_codec() -> None:
    assert wire.decode_header(wire.encode_header(wire.DATA, 5)) == (wire.DATA, 5)
    with pytest.raises(wire.ProtocolError, match="truncated"):
        wire.decode_header(b"D\0")
    with pytest.raises(ValueError):
        wire.encode_header(wire.END, 1)


# -- grub-reboot's one-time entry: chosen, never cleared, and said so ----------
def test_one_time_entry_is_booted_and_the_admin_is_told(
    tmp_path: Path, no_leftover_roots: None
) -> None:
    """GRUB boots next_entry once and clears it; we cannot write, so we say so."""
    src = tmp_path / "root"
    (src / "boot" / "grub").mkdir(parents=True)
    (src / "boot" / "grub" / "grub.cfg").write_text(
        "load_env\n"
        'if [ "${next_entry}" ]; then set default="${next_entry}"; set next_entry=;'
        " save_env next_entry; fi\n"
        "menuentry usual { linux /boot/a root=/dev/xvda1 }\n"
        "menuentry once { linux /boot/b root=/dev/xvda1 single }\n"
    )
    env = "# GRUB Environment Block\nnext_entry=1\n"
    (src / "boot" / "grub" / "grubenv").write_text(env + "#" * (1024 - len(env)))
    (src / "boot" / "a").write_bytes(b"A" * 4096)
    (src / "boot" / "b").write_bytes(b"B" * 4096)
    img = tmp_path / "guest.ext4"
    disk_images.make_ext4(img, src, 16 << 20, "oneshot")
    before = img.read_bytes()
    for mode, extra in (("plain", ()), ("depriv", (f"--runas={NOBODY}",))):
        run = Run(tmp_path, mode)
        r = run(img, *extra)
        assert r.returncode == 0, r.stderr
        assert run.files()["kernel"] == b"B" * 4096
        notes = [ln for ln in r.stderr.splitlines() if "next_entry" in ln]
        assert len(notes) == 1 and notes[0].startswith("pvgrub-py: warning: "), r.stderr
        assert "stays chosen until the guest clears it" in notes[0]
    assert img.read_bytes() == before
