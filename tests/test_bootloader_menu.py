"""The interactive menu, driven the way an admin drives it: in tmux, with keys.

tmux gives pvgrub-py a real terminal (as libxl's pty does) and ``send-keys``
types on it; ``capture-pane`` shows what the admin sees.  Each test runs
its own tmux server (``-L``) so parallel runs never share one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import disk_images
import pytest

from pvgrub_py.eventlog.codec import parse
from pvgrub_py.measure.boot_files import measure_boot_files
from pvgrub_py.measure.predict import predict_pcrs
from pvgrub_py.tpm.algorithms import BY_NAME
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.launcher import SwtpmProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make setup)"),
]

KERNELS = {
    "a": disk_images.payload("menu-kernel-a", 1 << 20),
    "b": disk_images.payload("menu-kernel-b", (1 << 20) + 7),
}
INITRDS = {
    "a": disk_images.payload("menu-initrd-a", 2 << 20),
    "b": disk_images.payload("menu-initrd-b", (2 << 20) + 3),
}
ARGS = {"a": "root=/dev/xvda ro quiet", "b": "root=/dev/xvda ro single"}
GRUB_CFG = """\
set default=0
set timeout=3
menuentry 'Debian GNU/Linux' {
    linux /boot/vmlinuz-a root=/dev/xvda ro quiet
    initrd /boot/initrd-a
}
menuentry 'Debian GNU/Linux (recovery mode)' {
    linux /boot/vmlinuz-b root=/dev/xvda ro single
    initrd /boot/initrd-b
}
"""


@pytest.fixture(scope="module")
def two_entry_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare ext4 guest disk whose grub.cfg has two entries and a 3 s timeout."""
    work = tmp_path_factory.mktemp("menu-disk")
    src = work / "root"
    files = {"boot/grub/grub.cfg": GRUB_CFG.encode()}
    for k in "ab":
        files[f"boot/vmlinuz-{k}"] = KERNELS[k]
        files[f"boot/initrd-{k}"] = INITRDS[k]
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    img = work / "two-entries.ext4"
    disk_images.make_ext4(img, src, 32 << 20, "menuroot")
    return img


class Tmux:
    """One private tmux server running one pvgrub-py on an 100x30 terminal."""

    def __init__(self, tmp: Path) -> None:
        self.socket = f"pvgrub-test-{os.getpid()}-{tmp.name}"
        self.outdir = tmp / "bootloader.7.d"
        self.outdir.mkdir()
        self.output = tmp / "bootloader.7.out"
        self.output.touch()
        self.status = tmp / "status"
        self.log = tmp / "boot.log"
        self.stderr = tmp / "stderr"
        #: Every byte written to the terminal (tmux pipe-pane): what libxl
        #: appends to /var/log/xen/bootloader.<domid>.log.
        self.raw = tmp / "pty.raw"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    def start(
        self,
        disk: Path,
        *extra: str,
        size: tuple[int, int] = (100, 30),
        as_libxl: bool = False,
    ) -> None:
        """Run pvgrub-py; *as_libxl*: with TERM=vt100 and stderr on the terminal too."""
        argv = [sys.executable, "-m", "pvgrub_py.cli.bootloader", f"--output={self.output}",
                "--output-format=simple0", f"--output-directory={self.outdir}",
                f"--event-log={self.log}", *extra, str(disk)]  # fmt: skip
        if as_libxl:
            run = f"env TERM=vt100 {shlex.join(argv)}"
        else:
            run = f"{shlex.join(argv)} 2>{shlex.quote(str(self.stderr))}"
        cmd = f"{run}; echo $? > {shlex.quote(str(self.status))}; sleep 60"
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-s", "menu", cmd)
        self.tmux("pipe-pane", "-t", "menu", f"cat > {shlex.quote(str(self.raw))}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "menu")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.05)
        err = self.stderr.read_text() if self.stderr.exists() else ""
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}\nstderr: {err}")

    def wait_gone(self, text: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while text in self.screen():
            assert time.monotonic() < end, f"{text!r} never went away"
            time.sleep(0.05)

    def raw_output(self, until: bytes, timeout: float = 10) -> bytes:
        """The bytes written to the terminal so far, once *until* is among them."""
        end = time.monotonic() + timeout
        while True:
            data = self.raw.read_bytes() if self.raw.exists() else b""
            if until in data:
                return data
            assert time.monotonic() < end, f"{until!r} never reached the terminal"
            time.sleep(0.05)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", "menu", *(["-l"] if literal else []), *keys)

    def exit_status(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.status.exists() and self.status.read_text().strip():
                return int(self.status.read_text())
            time.sleep(0.05)
        raise AssertionError(f"pvgrub-py did not finish; screen:\n{self.screen()}")

    def records(self) -> dict[str, str]:
        items = self.output.read_bytes().split(b"\0")
        assert items[-2:] == [b"", b""]
        return dict(i.decode().split(" ", 1) for i in items[:-2])

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.close()


def live_pcrs_equal_prediction(tpm: SwtpmProcess, rec: dict[str, str], cmdline: str) -> None:
    with TpmClient(tpm.transport()) as client:
        live = client.read_pcrs([4, 5])
    banks = tuple(BY_NAME[b] for b in live)
    predicted = predict_pcrs(
        measure_boot_files(rec["kernel"], rec["ramdisk"], cmdline, banks), banks
    )
    assert predicted == live


def test_choose_the_second_entry_and_edit_its_cmdline(two_entry_disk: Path, term: Tmux) -> None:
    with SwtpmProcess(tpm2=True) as tpm:
        term.start(two_entry_disk, f"--vtpm={tpm.uri}", "--require-vtpm", "--tpm2")
        shown = term.wait_for("Will boot selected entry in")
        assert "Debian GNU/Linux (recovery mode)" in shown
        term.keys("Down")
        term.wait_gone("Will boot selected entry")  # any key stops the countdown
        term.keys("e")
        shown = term.wait_for("Edit the kernel command line")
        assert ARGS["b"] in shown
        term.keys(" console=hvc0 extra=1", literal=True)
        term.keys("Enter")
        assert term.exit_status() == 0, term.stderr.read_text()
        rec = term.records()
        edited = ARGS["b"] + " console=hvc0 extra=1"
        assert rec["args"] == edited
        assert Path(rec["kernel"]).read_bytes() == KERNELS["b"]
        assert Path(rec["ramdisk"]).read_bytes() == INITRDS["b"]
        # PCR 5 covers the edited cmdline: the prediction from the files and
        # the edited line equals what the vTPM holds.
        live_pcrs_equal_prediction(tpm, rec, edited)
    events = parse(term.log.read_bytes(), str(term.log)).events
    assert events[1].data == f"cmdline: {edited}".encode()


def test_timeout_expiry_boots_the_default(two_entry_disk: Path, term: Tmux) -> None:
    with SwtpmProcess(tpm2=True) as tpm:
        started = time.monotonic()
        term.start(two_entry_disk, f"--vtpm={tpm.uri}", "--tpm2")
        term.wait_for("Will boot selected entry in 3 seconds")
        term.wait_for("Will boot selected entry in 1 seconds")
        assert term.exit_status() == 0, term.stderr.read_text()
        assert time.monotonic() - started >= 3
        rec = term.records()
        assert rec["args"] == ARGS["a"]
        assert Path(rec["kernel"]).read_bytes() == KERNELS["a"]
        live_pcrs_equal_prediction(tpm, rec, ARGS["a"])


def test_escape_leaves_the_editor_unchanged(two_entry_disk: Path, term: Tmux) -> None:
    term.start(two_entry_disk)
    term.wait_for("Will boot selected entry in")
    term.keys("e")
    term.wait_for("Edit the kernel command line")
    term.keys("BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "junk")
    term.keys("Escape")
    shown = term.wait_for("Press Enter to boot it")
    assert "Will boot selected entry" not in shown  # the countdown stopped at the first key
    term.keys("Enter")
    assert term.exit_status() == 0, term.stderr.read_text()
    assert term.records()["args"] == ARGS["a"]


def test_a_tiny_terminal_still_works(two_entry_disk: Path, term: Tmux) -> None:
    """libxl's pty can be any size; lines that do not fit are dropped, never a crash."""
    term.start(two_entry_disk, size=(24, 4))
    term.wait_for("pvgrub-py")
    term.keys("Down", "Enter")
    assert term.exit_status() == 0, term.stderr.read_text()
    assert term.records()["args"] == ARGS["b"]


def test_no_terminal_boots_the_default_without_a_menu(two_entry_disk: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    base = [sys.executable, "-m", "pvgrub_py.cli.bootloader", "--output-format=simple",
            f"--output-directory={outdir}"]  # fmt: skip
    for extra, warned in (([], False), (["-i"], True)):
        r = subprocess.run([*base, *extra, str(two_entry_disk)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"args {ARGS['a']}\n" in r.stdout
        assert ("not a terminal" in r.stderr) is warned
        assert "\x1b" not in r.stdout


# -- what the header promises ------------------------------------------------------
#: (--vtpm given, more options, what the header says); the --vtpm is absent.
PROMISES = [
    (False, (), "(not measured: no vTPM given)"),
    (True, ("--require-vtpm",), "(measured)"),
    (True, (), "(measured if the vTPM answers)"),
]
PROMISE_IDS = ["no-vtpm", "required", "optional"]


@pytest.mark.parametrize(("vtpm", "extra", "promise"), PROMISES, ids=PROMISE_IDS)
def test_menu_title_follows_the_options(vtpm: bool, extra: tuple[str, ...], promise: str) -> None:
    from pvgrub_py.bootloader.menu import menu_title
    from pvgrub_py.bootloader.options import parse_options

    given = ["--vtpm=swtpm:unix:/nonexistent"] if vtpm else []
    opts = parse_options([*given, *extra, "disk.img"])
    assert opts is not None
    assert menu_title(opts) == f"pvgrub-py: choose the guest kernel to boot {promise}"


@pytest.mark.parametrize(("vtpm", "extra", "promise"), PROMISES, ids=PROMISE_IDS)
def test_header_tells_whether_the_boot_is_measured(
    two_entry_disk: Path, term: Tmux, tmp_path: Path, vtpm: bool, extra: tuple[str, ...],
    promise: str,
) -> None:  # fmt: skip
    """The header keeps its promise: no vTPM boots unmeasured; a required vTPM that
    is absent boots nothing; an optional one that is absent boots unmeasured."""
    given = [f"--vtpm=swtpm:unix:{tmp_path}/absent.sock"] if vtpm else []
    term.start(two_entry_disk, *given, *extra)
    shown = term.wait_for("Will boot selected entry in")
    assert shown.splitlines()[0] == f" pvgrub-py: choose the guest kernel to boot {promise}"
    term.keys("Enter")
    status = term.exit_status()
    if promise == "(measured)":
        assert status == 1
        assert "a measured boot is required" in term.stderr.read_text()
    else:
        assert status == 0, term.stderr.read_text()
        assert "booting unmeasured" in term.stderr.read_text()


# -- what is left on the terminal after the menu ---------------------------------
def test_error_after_the_menu_starts_its_own_line(
    two_entry_disk: Path, term: Tmux, tmp_path: Path
) -> None:
    """As libxl runs it (TERM=vt100, one pty for everything): the error that follows
    the menu is a line of its own in the pty's output (libxl's bootloader log), not
    glued after the escape sequences curses leaves when it ends."""
    term.start(two_entry_disk, f"--vtpm=swtpm:unix:{tmp_path}/absent.sock", "--require-vtpm",
               as_libxl=True)  # fmt: skip
    term.wait_for("Will boot selected entry in")
    term.keys("Enter")
    assert term.exit_status() == 1
    error = f"pvgrub-py: vTPM swtpm:unix:{tmp_path}/absent.sock unavailable".encode()
    lines = [ln for ln in term.raw_output(error).split(b"\n") if error in ln]
    assert len(lines) == 1
    assert lines[0].lstrip(b"\r").startswith(error), lines[0]
    shown = term.wait_for(error[:40].decode())
    assert any(row.startswith(error[:40].decode()) for row in shown.splitlines())


def test_message_after_the_editor_on_a_five_row_terminal(two_entry_disk: Path, term: Tmux) -> None:
    """On five rows the editor's line is the bottom row, where vt100's endwin leaves
    the cursor: the warning that follows gets a row of its own, without the tail of
    the edited cmdline after it."""
    term.start(two_entry_disk, size=(100, 5), as_libxl=True)
    term.wait_for("pvgrub-py: choose")  # no room for the countdown: stop it at once
    term.keys("e")
    term.wait_for("Edit the kernel command line")
    tail = " console=hvc0" + " x=1" * 12
    term.keys(tail, literal=True)
    term.keys("Enter")
    assert term.exit_status() == 0
    warning = "pvgrub-py: warning: no --vtpm given: booting unmeasured"
    rows = [row.rstrip() for row in term.wait_for(warning).splitlines()]
    assert warning in rows, rows
    assert term.records()["args"] == ARGS["a"] + tail
