"""pvgrubctl on hostile or mistaken input (issue 12): never a hang, never a
traceback, one line naming the file, bounded work, nothing left behind."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvgrub_py.cli import pvgrubctl
from pvgrub_py.cli.pvgrubctl import main

PVGRUBCTL = [sys.executable, "-m", "pvgrub_py.cli.pvgrubctl"]


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*PVGRUBCTL, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def one_line_error(r: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert r.returncode == status, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.fixture
def regular(tmp_path: Path) -> str:
    path = tmp_path / "file"
    path.write_bytes(b"not much")
    return str(path)


# -- inputs that are not regular files: refused at once ------------------------------------

FIFO_CASES = [
    ["predict", "F"],
    ["predict", "--kernel", "F", "--cmdline", "x"],
    ["predict", "--kernel", "R", "--initrd", "F", "--cmdline", "x"],
    ["kernel-info", "F"],
    ["kernel-info", "--backend", "python", "F"],
    ["eventlog", "show", "F"],
    ["eventlog", "verify", "F", "--pcrs", "R"],
    ["eventlog", "verify", "R", "--pcrs", "F"],
    ["boot", "--kernel", "F", "--cmdline", "x"],
    ["boot", "--kernel", "R", "--initrd", "F", "--cmdline", "x"],
    ["boot", "F"],
    ["boot", "--disk", "F"],
    ["boot", "--sim", "--disk", "F"],
    ["boot", "--kernel", "R", "--cmdline", "x", "--sim", "--profile", "F"],
]


@pytest.mark.parametrize("argv", FIFO_CASES, ids=lambda a: " ".join(a))
def test_a_fifo_without_writer_is_refused_not_waited_for(
    argv: list[str], fifo: str, tmp_path: Path
) -> None:
    log = tmp_path / "ok.log"
    log.write_bytes(b"\0" * 32)  # a regular file where the case needs one
    args = [fifo if a == "F" else str(log) if a == "R" else a for a in argv]
    r = run_cli(*args, timeout=30)  # the old code blocked in open() forever
    one_line_error(r, 1, fifo, "FIFO")


@pytest.mark.parametrize(
    "argv",
    [["kernel-info", "/dev/zero"], ["eventlog", "show", "/dev/zero"],
     ["predict", "--kernel", "/dev/zero", "--cmdline", "x"], ["predict", "/dev/zero"],
     ["eventlog", "show", "/"], ["eventlog", "verify", "/dev/null", "--pcrs", "/dev/zero"]],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_devices_and_directories_are_refused(argv: list[str]) -> None:
    one_line_error(run_cli(*argv, timeout=30), 1)


@pytest.mark.parametrize("role", ["--kernel", "--initrd"])
def test_predict_refuses_what_the_bootloader_would_not_boot(role: str, tmp_path: Path) -> None:
    """pvgrub-py caps kernels and initrds at 1 GiB: predicting past the cap
    predicts a boot that never happens (and a 2 TiB sparse file took an hour)."""
    huge, small = tmp_path / "huge", tmp_path / "small"
    with open(huge, "wb") as f:
        f.truncate(2 << 40)
    small.write_bytes(b"k")
    files = {"--kernel": str(small), "--initrd": str(small), role: str(huge)}
    started = time.monotonic()
    r = run_cli("predict", "--kernel", files["--kernel"], "--initrd", files["--initrd"],
                "--cmdline", "x", timeout=30)  # fmt: skip
    one_line_error(r, 1, str(huge), "2048 GiB exceeds the 1 GiB cap")
    assert time.monotonic() - started < 30


def test_predict_accepts_exactly_the_cap(tmp_path: Path) -> None:
    from pvgrub_py.inputs import MAX_BOOT_FILE

    initrd, kernel = tmp_path / "initrd", tmp_path / "kernel"
    with open(initrd, "wb") as f:
        f.truncate(MAX_BOOT_FILE + 1)
    kernel.write_bytes(b"k")
    r = run_cli("predict", "--kernel", str(kernel), "--initrd", str(initrd), "--cmdline", "x")
    one_line_error(r, 1, "exceeds the 1 GiB cap")


# -- event logs ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", [["show"], ["verify", "--pcrs", "PCRS"]])
def test_an_empty_event_log_is_an_error_naming_it(
    action: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty, pcrs = tmp_path / "empty.log", tmp_path / "pcrs.json"
    empty.write_bytes(b"")
    pcrs.write_text('{"sha1": {"4": "' + "00" * 20 + '"}}')
    argv = [str(pcrs) if a == "PCRS" else a for a in action]
    assert main(["eventlog", argv[0], str(empty), *argv[1:]]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"pvgrubctl: {empty}: is empty: not an event log (it records no event)\n"


# -- paths that are not what the option wants ----------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory under /tmp: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bi", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_boot_sim_dir_that_is_a_file(regular: str) -> None:
    r = run_cli("boot", "--sim", regular, "--disk", regular)
    one_line_error(r, 1, regular, "not a directory")


def test_boot_sim_dir_that_cannot_be_made() -> None:
    r = run_cli("boot", "--sim", "/proc/sys/x", "--kernel", "/etc/hostname", "--cmdline", "x")
    one_line_error(r, 1, "/proc/sys/x")


@pytest.mark.parametrize("path", ["FILE", "/proc/sys/x"])
def test_sim_host_dir_that_cannot_be_one(path: str, regular: str) -> None:
    directory = regular if path == "FILE" else path
    one_line_error(run_cli("sim", "host", "--dir", directory), 1, directory)


def test_sim_host_log_that_cannot_be_written(short_tmp: Path) -> None:
    r = run_cli("sim", "host", "--dir", str(short_tmp / "h"), "--log", "/nonexistent-dir/log")
    one_line_error(r, 1, "/nonexistent-dir/log")


def test_sim_xenstored_creates_the_socket_folder(short_tmp: Path) -> None:
    """The help's own example: --socket /tmp/xs/socket, with no /tmp/xs yet."""
    socket, pid_file = short_tmp / "xs" / "socket", short_tmp / "pid"
    r = run_cli("sim", "xenstored", "--socket", str(socket), "--pid-file", str(pid_file))
    assert r.returncode == 0, r.stderr
    try:
        assert r.stdout.strip() == str(socket) and socket.is_socket()
        assert (socket.parent.stat().st_mode & 0o777) == 0o700
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_vtpmd_creates_no_state_dir_when_it_cannot_serve(short_tmp: Path) -> None:
    state = short_tmp / "nonexistent" / "x"
    r = run_cli("vtpmd", "--sim", str(short_tmp / "no-host"), "--state-dir", str(state))
    one_line_error(r, 1)
    assert not (short_tmp / "nonexistent").exists()


@pytest.mark.skipif(
    os.path.exists("/dev/xen/xenbus") or os.path.exists("/var/run/xenstored/socket"),
    reason="a real Xen host: vtpmd would serve",
)
def test_vtpmd_on_a_host_without_xen_creates_no_state_dir(short_tmp: Path) -> None:
    """libxc's hypervisor handle opens lazily, so without Xen it is xenstore that
    fails: that must happen before the state directory is made."""
    state = short_tmp / "nonexistent" / "x"
    r = run_cli("vtpmd", "--state-dir", str(state))
    one_line_error(r, 1, "xs_open")
    assert not (short_tmp / "nonexistent").exists()


def test_vtpmd_state_dir_that_is_a_file(short_tmp: Path, regular: str) -> None:
    from pvgrub_py.vtpm.instances import VtpmInstanceError, VtpmInstances

    with pytest.raises(VtpmInstanceError, match=regular):
        VtpmInstances(regular)
    with pytest.raises(VtpmInstanceError, match="/proc/sys/x"):
        VtpmInstances("/proc/sys/x")


# -- numbers out of range -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["sim", "boot-many", "-3"],
        ["sim", "boot-many", "0"],
        ["sim", "boot-many", "2", "--parallel", "0"],
        ["sim", "boot-many", "2", "--parallel", "-1"],
        ["sim", "boot-many", "2", "--memory", "-5"],
        ["sim", "boot-many", "99999999999"],
        ["vtpmd", "--state-dir", "D", "--domid", "-1"],
        ["vtpmd", "--state-dir", "D", "--domid", "32752"],
        ["boot", "--kernel", "K", "--cmdline", "x", "--memory", "0"],
        ["boot", "--kernel", "K", "--cmdline", "x", "--memory", "99999999999"],
        ["predict", "--runas", "-1", "DISK"],
        ["predict", "--runas", "99999999999", "DISK"],
    ],
    ids=lambda a: " ".join(a),
)
def test_numbers_out_of_range_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Parsed only: a number the old code let through started the work."""
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not in" in err


@pytest.mark.parametrize(
    "spec", ["\u00b2=system_u:system_r:domU_t", "99999=system_u:system_r:domU_t", "x=a:b:c"]
)
def test_xsm_label_domids_out_of_range_are_usage_errors(spec: str) -> None:
    from pvgrub_py.errors import UsageError
    from pvgrub_py.sim.cli import _label_option

    with pytest.raises(UsageError, match="DOMID"):
        _label_option(spec)


@pytest.mark.parametrize("spec", ["nodes=\u00b2", "nodes=99999999999", "nodes=-1", "nodes="])
def test_quotas_out_of_range_are_usage_errors(spec: str) -> None:
    from pvgrub_py.cli.cmd_sim import _quotas
    from pvgrub_py.errors import UsageError

    with pytest.raises(UsageError, match="--quota"):
        _quotas([spec])


# -- boot --sim leaves nothing behind ------------------------------------------------------


#: Runs "$@" in a private mount namespace whose /tmp is an overlay over the real one:
#: everything the command creates in /tmp lands in the overlay's upper directory
#: ($1/u), and nothing else does (other programs on the machine write /tmp too, and
#: the checkout itself may live there).  Prints that directory's listing after a marker.
OVERLAY_TMP = """
side=$1; shift
mount -t overlay overlay -o lowerdir=/tmp,upperdir=$side/u,workdir=$side/w /tmp || exit 99
PYTHONDONTWRITEBYTECODE=1 "$@"
rc=$?
echo "--- created in /tmp:"; cd "$side/u" && find . -mindepth 1 | sort
exit $rc
"""


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private view of /tmp")  # fmt: skip
def test_boot_sim_private_host_lives_in_tmpdir_and_is_removed(short_tmp: Path) -> None:
    """A failed boot (the kernel is not one) on a private host: nothing stays in
    $TMPDIR, and nothing at all goes to /tmp when TMPDIR points elsewhere."""
    kernel = short_tmp / "not-a-kernel"
    kernel.write_bytes(b"\x7fELF but not really" * 8)
    tmpdir = short_tmp / "t"
    tmpdir.mkdir()
    side = Path(tempfile.mkdtemp(prefix="pvgrub-test-", dir="/run"))
    try:
        (side / "u").mkdir()
        (side / "w").mkdir()
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", OVERLAY_TMP, "sh",
             str(side), "env", f"TMPDIR={tmpdir}",
             *PVGRUBCTL, "boot", "--sim", "--kernel", str(kernel), "--cmdline", "x"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        created = r.stdout[r.stdout.index("--- created in /tmp:") :].splitlines()[1:]
    finally:
        shutil.rmtree(side, ignore_errors=True)
    one_line_error(r, 1, str(kernel))
    # Only the directories on the way to TMPDIR (copied up when used), all empty.
    inside = "./" + str(tmpdir.relative_to("/tmp"))
    assert all(inside.startswith(c) for c in created), created
    assert list(tmpdir.iterdir()) == []


@pytest.mark.integration
@pytest.mark.swtpm
@pytest.mark.slow
def test_a_successful_boot_prints_no_error_and_leaves_nothing(short_tmp: Path) -> None:
    from pvgrub_py.errors import PvgrubError
    from pvgrub_py.sample_guest import find_kernel
    from pvgrub_py.tpm.launcher import SwtpmProcess

    try:
        kernel = str(find_kernel())
    except PvgrubError as e:
        pytest.skip(str(e))
    tmpdir = short_tmp / "t"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    with SwtpmProcess() as tpm:
        # The in-process backend serving an external swtpm is the one whose log
        # reaches our stderr: before the fix, about one boot in three printed
        # "vtpm backend: xs_read: /local/domain/0/device/vtpm/N/state: Permission
        # denied" (the deterministic test is tests/test_vtpm_teardown.py).
        for extra in ([], ["--tpm2"], *[["--vtpm", tpm.uri]] * 6):
            tpm.power_cycle()  # a used vTPM is refused: each boot gets reset PCRs
            r = run_cli("boot", "--sim", "--kernel", kernel, "--cmdline", "ro", *extra,
                        timeout=300, env=env)  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert r.stderr == ""
            assert list(tmpdir.iterdir()) == []


# -- messages -------------------------------------------------------------------------------


def bindings_built() -> bool:
    from pvgrub_py.xen.availability import availability

    return availability().built


needs_bindings = pytest.mark.skipif(not bindings_built(), reason="Xen bindings not built")


@needs_bindings
def test_libxenguest_errors_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a kernel at all, just some text " * 4)
    r = run_cli("kernel-info", "--backend", "libxenguest", str(junk))
    one_line_error(r, 1, f"pvgrubctl: {junk}: libxenguest: ", "Invalid kernel")


@needs_bindings
def test_both_backends_disagree_when_only_one_knows_the_format() -> None:
    """A plain ELF (no Xen notes): python says ELF, libxenguest finds no loader."""
    r = run_cli("kernel-info", "--backend", "both", sys.executable)
    assert r.returncode == 1
    assert "agree on every fact" not in r.stdout
    assert "format: python ELF, libxenguest unknown" in r.stdout
    assert "disagree on 1 fact(s): format" in r.stderr


def test_top_level_help_describes_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "as later verbs land" not in out
    for verb in ("predict", "eventlog", "boot", "vtpmd", "sim", "doctor", "kernel-info"):
        assert re.search(rf"^ +{verb}\b", out, re.MULTILINE), verb
    for what in ("predict", "event logs", "simulated Xen host", "vTPM", "kernels"):
        assert what in pvgrubctl.DESCRIPTION, what


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pvgrub_py import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pvgrubctl {__version__}\n"


# -- one family: the same names as pvgrub-py and pygrub -------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return pvgrubctl.build_parser().parse_args(list(argv))


def test_ramdisk_is_initrd_everywhere() -> None:
    assert parse("predict", "--kernel", "k", "--ramdisk", "r", "--cmdline", "x").initrd == "r"
    assert parse("boot", "--kernel", "k", "--ramdisk", "r", "--cmdline", "x").initrd == "r"
    assert parse("sim", "boot-many", "2", "--ramdisk", "r").initrd == "r"


def test_vtpm_names_the_vtpm_in_eventlog_verify() -> None:
    assert parse("eventlog", "verify", "L", "--vtpm", "swtpm:unix:/s").tpm == "swtpm:unix:/s"
    assert parse("eventlog", "verify", "L", "--tpm", "swtpm:unix:/s").tpm == "swtpm:unix:/s"


def test_boot_takes_disk_positionally_like_predict() -> None:

    ns = parse("boot", "guest.img", "--entry", "1", "--args", "quiet")
    assert (ns.disk, ns.entry, ns.args) == ("guest.img", "1", "quiet")
    ns = parse("boot", "--disk", "guest.img")
    assert ns.disk_option == "guest.img"


def test_boot_sim_then_a_disk_file_boots_the_disk(regular: str) -> None:
    from pvgrub_py.cli.cmd_boot import _sim_dir_or_disk

    ns = parse("boot", "--sim", regular)
    _sim_dir_or_disk(ns)
    assert (ns.disk, ns.sim) == (regular, "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["boot", "--kernel", "K", "--cmdline", "x", "--profile", "P"], "--profile"),
        (["boot", "--sim", "--vtpm-uuid", "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d",
          "--kernel", "K", "--cmdline", "x"], "--vtpm-uuid"),
        (["boot", "--sim", "--backend-seclabel", "a:b:c", "--kernel", "K", "--cmdline", "x"],
         "--backend-seclabel"),
        (["boot", "--kernel", "K", "--cmdline", "x", "--entry", "1"], "--entry"),
        (["boot", "--kernel", "K", "--cmdline", "x", "--config-dialect", "petitboot"],
         "--config-dialect"),
        (["boot", "D", "--disk", "E"], "two disks"),
        (["predict", "--kernel", "K", "--cmdline", "x", "--log-format", "sha1"], "--log-format"),
    ],
)  # fmt: skip
def test_options_that_would_do_nothing_are_refused(
    argv: list[str], message: str, regular: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([regular if a == "K" else a for a in argv]) == 2
    assert message in capsys.readouterr().err


Named = tuple[str, argparse.ArgumentParser]


def all_parsers() -> Iterator[Named]:
    def walk(name: str, parser: argparse.ArgumentParser) -> Iterator[Named]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield name, parser
        for sub in subs:
            for verb, child in sub.choices.items():
                yield from walk(f"{name} {verb}", child)

    yield from walk("pvgrubctl", pvgrubctl.build_parser())


def test_every_option_of_every_verb_has_a_sentence() -> None:
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in all_parsers()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and (not action.help or action.help == argparse.SUPPRESS or len(action.help) < 12)
    ]
    assert missing == []


def test_every_verb_has_a_description_and_an_example() -> None:
    lacking = [
        name
        for name, parser in all_parsers()
        if not parser.description or "example" not in (parser.epilog or "")
    ]
    assert lacking == []


# -- make demo: its output stays in demo-out/, one run's worth -------------------------------


def test_demo_output_goes_to_demo_out_in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from pvgrub_py import demo

    monkeypatch.delenv("PVGRUB_DEMO_OUT", raising=False)
    checkout = Path(demo.__file__).resolve().parent.parent
    assert demo.output_path() == checkout / "demo-out"
    assert "/demo-out/" in (checkout / ".gitignore").read_text().splitlines()


def test_demo_output_is_emptied_each_run_but_never_a_foreign_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pvgrub_py import demo

    out = tmp_path / "out"
    monkeypatch.setenv("PVGRUB_DEMO_OUT", str(out))
    assert demo.output_dir() == out
    (out / "disk.img").write_bytes(b"x" * 1000)
    assert demo.output_dir() == out and [p.name for p in out.iterdir()] == [".pvgrub-demo"]
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "precious").write_text("keep")
    monkeypatch.setenv("PVGRUB_DEMO_OUT", str(foreign))
    with pytest.raises(OSError, match="not a previous demo's output"):
        demo.output_dir()
    assert (foreign / "precious").read_text() == "keep"


@pytest.mark.parametrize("verb", ["predict", "boot"])
def test_an_event_log_that_cannot_be_written_fails_before_any_work(
    verb: str, regular: str, tmp_path: Path
) -> None:
    """Measure (or boot) first and fail on the log afterwards: a boot without
    its log.  The output is checked first, and the file is not created."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out in ("/nonexistent-dir/boot.log", str(tmp_path), str(fifo)):
        argv = [verb, "--kernel", regular, "--cmdline", "x", "--event-log", out]
        r = run_cli(*(argv + (["--sim"] if verb == "boot" else [])), timeout=60)
        one_line_error(r, 1, out, "cannot write")
        assert r.stdout == ""


def test_an_event_log_never_replaces_a_device(regular: str) -> None:
    """Written atomically (a new file renamed over OUT), --event-log /dev/null
    run as root replaced /dev/null with a regular file."""
    from pvgrub_py.cli.common import check_output
    from pvgrub_py.errors import InputError

    with pytest.raises(InputError, match="not a regular file"):
        check_output("/dev/null")
    check_output(regular)  # an existing log is replaced, as documented


@pytest.mark.parametrize("host_dir", ["FILE", "EMPTY"])
def test_vtpmd_on_a_sim_host_that_is_not_there(
    host_dir: str, regular: str, short_tmp: Path
) -> None:
    path = regular if host_dir == "FILE" else str(short_tmp)
    r = run_cli("vtpmd", "--sim", path, "--state-dir", str(short_tmp / "state"))
    one_line_error(r, 1, path, "no simulated host runs here")
    assert not (short_tmp / "state").exists()


def test_sim_host_xenstored_that_is_not_a_socket(regular: str, short_tmp: Path) -> None:
    r = run_cli("sim", "host", "--dir", str(short_tmp / "h"), "--xenstored", regular, timeout=30)
    one_line_error(r, 1, regular, "not a socket")
    assert not (short_tmp / "h").exists()


def test_boot_sim_with_an_unreachable_external_swtpm_is_one_line(short_tmp: Path) -> None:
    kernel = short_tmp / "k"
    kernel.write_bytes(b"k")
    r = run_cli("boot", "--sim", "--vtpm", f"swtpm:unix:{short_tmp / 'none'}",
                "--kernel", str(kernel), "--cmdline", "x", timeout=120)  # fmt: skip
    one_line_error(r, 1, f"cannot connect to swtpm at unix:{short_tmp / 'none'}")


def test_a_tmpdir_too_long_for_sockets_is_named(tmp_path: Path) -> None:
    tmpdir = tmp_path / ("t" * 90)
    tmpdir.mkdir()
    kernel = tmp_path / "k"
    kernel.write_bytes(b"k")
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    r = run_cli("boot", "--sim", "--kernel", str(kernel), "--cmdline", "x", env=env)
    one_line_error(r, 1, f"TMPDIR {tmpdir}: too long")
    assert list(tmpdir.iterdir()) == []
