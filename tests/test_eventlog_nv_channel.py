"""The event log handed to a TPM 2.0 guest in its vTPM's NV memory (eventlog.nv_channel).

The oracles are outside pvgrub-py's TPM code: stock ``tpm2_nvread`` reads the
indices, ``tpm2_eventlog`` replays what the guest-side reader returns and
``tpm2_pcrread`` reads the PCRs; ``tpm2_nvdefine``/``tpm2_nvwrite`` plant the
hostile contents, and a guest's attempts to rewrite the log.  Real swtpm
TPM 2.0 (and 1.2) and real ext4 images built with mke2fs.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import disk_images
import pytest
from swtpm_tools import ToolsTpm, needs_tools, tools_tpm
from tpm2_eventlog_yaml import events_and_pcrs

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.eventlog import nv_channel
from pvgrub_py.eventlog.nv_channel import NvEventLogError, load_event_log, store_event_log
from pvgrub_py.tpm import tpm2_nv
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmProtocolError
from pvgrub_py.tpm.uri import parse_vtpm_uri

HEADER = 0x0140F000
KERNEL = disk_images.payload("nv-kernel", 100_000)
INITRD = disk_images.payload("nv-initrd", 50_000)
GRUB_CFG = (
    b"set timeout=0\n"
    b"menuentry 'Guest' {\n"
    b"  linux /boot/vmlinuz root=/dev/xvda1 ro\n"
    b"  initrd /boot/initrd.img\n"
    b"}\n"
)
#: swtpm's TPM_PT_NV_INDEX_MAX: a log longer than this spans several indices.
SWTPM_INDEX_MAX = 2048
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("nv-disk")
    src = work / "root"
    for path, data in (("boot/grub/grub.cfg", GRUB_CFG), ("boot/vmlinuz", KERNEL),
                       ("boot/initrd.img", INITRD)):  # fmt: skip
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    img = work / "disk.img"
    disk_images.make_ext4(img, src, 8 << 20, "nvlog")
    return img


def run(module: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                          timeout=300, env=env)  # fmt: skip


def boot(tmp: Path, disk: Path, tpm: ToolsTpm, *extra: str) -> subprocess.CompletedProcess[bytes]:
    outdir = tmp / "out.d"
    outdir.mkdir(exist_ok=True)
    return run("pvgrub_py.cli.bootloader", "-q", f"--output={tmp / 'result'}",
               "--output-format=simple0", f"--output-directory={outdir}",
               f"--vtpm={tpm.uri}", *extra, str(disk))  # fmt: skip


def tool_fails(tpm: ToolsTpm, *argv: str) -> str:
    """A tpm2-tools command that must fail; its stderr."""
    proc = subprocess.run([argv[0], "-T", tpm.tcti, *argv[1:]], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode != 0, f"{argv} succeeded"
    return proc.stderr


def nvread(tpm: ToolsTpm, index: int, tmp: Path) -> bytes:
    """Stock tpm2_nvread of the whole index, with its (empty) authValue."""
    out = tmp / f"nv-{index:08x}.bin"
    tpm.tool("tpm2_nvread", "-C", f"0x{index:08x}", "-o", str(out), f"0x{index:08x}")
    return out.read_bytes()


def nv_indices(tpm: ToolsTpm) -> list[int]:
    text = tpm.tool("tpm2_getcap", "handles-nv-index")
    return [int(line.strip("- ").strip(), 16) for line in text.splitlines() if line.strip()]


def startup_clear(tpm: ToolsTpm) -> dict[str, int]:
    text = tpm.tool("tpm2_getcap", "properties-variable")
    block = text.split("TPM2_PT_STARTUP_CLEAR:", 1)[1].split("TPM2_PT_", 1)[0]
    return {k.strip(): int(v) for k, _, v in
            (ln.partition(":") for ln in block.splitlines() if ":" in ln)}  # fmt: skip


def read_header(tpm: ToolsTpm, tmp: Path) -> tuple[bytes, int, int, int, int, int, bytes]:
    """The header as the module docstring lays it out, read by tpm2_nvread."""
    magic, version, size, log_size, chunk, count, digest = struct.unpack(
        ">8sHHIII32s", nvread(tpm, HEADER, tmp)
    )
    return magic, version, size, log_size, chunk, count, digest


def delivered_by_tools(tpm: ToolsTpm, tmp: Path) -> bytes:
    """The log as tpm2-tools alone reads it: the data indices the header counts."""
    count = read_header(tpm, tmp)[5]
    return b"".join(nvread(tpm, HEADER + i, tmp) for i in range(1, count + 1))


def client(tpm: ToolsTpm) -> TpmClient:
    return TpmClient(open_transport(parse_vtpm_uri(tpm.uri)))


def replay_by_tool(log: bytes, tmp: Path) -> dict[str, dict[int, bytes]]:
    path = tmp / "replayed.log"
    path.write_bytes(log)
    out = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    return events_and_pcrs(out)[1]


@pytest.fixture
def tpm() -> Iterator[ToolsTpm]:
    with tools_tpm() as t:
        yield t


# --- the boot hands the guest its log ------------------------------------------------

@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_a_measured_boot_leaves_the_event_log_file_bytes_in_nv(
    disk: Path, tpm: ToolsTpm, tmp_path: Path
) -> None:
    log_file = tmp_path / "boot.log"
    r = boot(tmp_path, disk, tpm, "--tpm2", "--require-vtpm", f"--event-log={log_file}")
    assert r.returncode == 0, r.stderr
    log = log_file.read_bytes()
    assert len(log) <= SWTPM_INDEX_MAX
    # tpm2-tools alone: the data index is exactly the file, the header describes it.
    assert nvread(tpm, HEADER + 1, tmp_path) == log
    magic, version, size, log_size, chunk, count, digest = read_header(tpm, tmp_path)
    assert (magic, version, size) == (b"PVGRUBNV", 1, 56)
    assert (log_size, chunk, count) == (len(log), SWTPM_INDEX_MAX, 1)
    assert digest == hashlib.sha256(log).digest()
    assert nv_indices(tpm) == [HEADER, HEADER + 1]
    # The guest's reader returns it, and it replays (tpm2_eventlog) to the live PCRs.
    with client(tpm) as c:
        assert load_event_log(c) == log
    replayed = replay_by_tool(log, tmp_path)
    live = tpm.pcrread("sha1:4,5+sha256:4,5")
    for bank in ("sha1", "sha256"):
        assert {p: replayed[bank][p] for p in (4, 5)} == live[bank]


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_the_guest_cannot_rewrite_or_remove_the_delivered_log(
    disk: Path, tpm: ToolsTpm, tmp_path: Path
) -> None:
    r = boot(tmp_path, disk, tpm, "--tpm2")
    assert r.returncode == 0, r.stderr
    before = delivered_by_tools(tpm, tmp_path)
    flags = startup_clear(tpm)
    assert flags["phEnable"] == 0 and flags["phEnableNV"] == 1
    junk = tmp_path / "junk"
    junk.write_bytes(b"forged")
    index = f"0x{HEADER + 1:08x}"
    # With the index's own (empty) authValue: not a write authorization (AUTHWRITE clear).
    tool_fails(tpm, "tpm2_nvwrite", "-C", index, "-i", str(junk), index)
    # With platform authorization: the hierarchy is disabled.
    assert "hierarchy" in tool_fails(tpm, "tpm2_nvwrite", "-C", "p", "-i", str(junk), index)
    tool_fails(tpm, "tpm2_nvundefine", "-C", "p", index)
    tool_fails(tpm, "tpm2_nvundefine", "-C", "o", index)
    assert delivered_by_tools(tpm, tmp_path) == before


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_a_resumed_vtpm_has_its_platform_hierarchy_back_but_not_its_empty_auth(
    disk: Path, tpm: ToolsTpm, tmp_path: Path
) -> None:
    """TPM2_Startup(STATE) sets phEnable again and keeps platformAuth: the
    random one pvgrub-py set, not the empty one a guest could use."""
    r = boot(tmp_path, disk, tpm, "--tpm2")
    assert r.returncode == 0, r.stderr
    before = delivered_by_tools(tpm, tmp_path)
    tpm.tool("tpm2_shutdown")  # TPM_SU_STATE
    tpm.ioctl("-i")  # _TPM_Init
    tpm.tool("tpm2_startup")  # TPM_SU_STATE: a resume
    assert startup_clear(tpm)["phEnable"] == 1
    index = f"0x{HEADER + 1:08x}"
    assert "authorization failure" in tool_fails(tpm, "tpm2_nvundefine", "-C", "p", index)
    assert delivered_by_tools(tpm, tmp_path) == before


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_a_log_longer_than_an_index_spans_several_and_the_next_boot_replaces_it(
    disk: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    long_args = "x=" + "y" * 5000
    logs = []
    for n, extra in enumerate([[f"--args={long_args}"], ["--args=second"]]):
        with tools_tpm(state_dir=str(state)) as tpm:  # each start: TPM2_Startup(CLEAR)
            log_file = tmp_path / f"boot{n}.log"
            r = boot(tmp_path, disk, tpm, "--tpm2", f"--event-log={log_file}", *extra)
            assert r.returncode == 0, r.stderr
            log = log_file.read_bytes()
            logs.append(log)
            assert delivered_by_tools(tpm, tmp_path) == log
            with client(tpm) as c:
                assert load_event_log(c) == log
            count = -(-len(log) // SWTPM_INDEX_MAX)
            # The first boot's extra indices are gone after the second.
            assert nv_indices(tpm) == [HEADER + i for i in range(count + 1)]
    assert len(logs[0]) > 2 * SWTPM_INDEX_MAX
    assert len(logs[1]) <= SWTPM_INDEX_MAX and logs[0] != logs[1]


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_delivery_changes_no_pcr_and_can_be_turned_off(disk: Path, tmp_path: Path) -> None:
    values = []
    for extra in (["--tpm2"], ["--tpm2", "--no-event-log-nv"]):
        with tools_tpm() as tpm:
            work = tmp_path / str(len(values))
            work.mkdir()
            r = boot(work, disk, tpm, *extra)
            assert r.returncode == 0, r.stderr
            values.append(tpm.pcrread("sha1:4,5+sha256:4,5"))
            delivered = HEADER in nv_indices(tpm)
            assert delivered == ("--no-event-log-nv" not in extra)
            assert startup_clear(tpm)["phEnable"] == (0 if delivered else 1)
    assert values[0] == values[1]
    assert all(any(v) for bank in values[0].values() for v in bank.values())


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@pytest.mark.parametrize("required", [True, False], ids=["required", "not-required"])
def test_a_delivery_that_cannot_happen_fails_closed_before_any_extend(
    disk: Path, tpm: ToolsTpm, tmp_path: Path, required: bool
) -> None:
    tpm.tool("tpm2_hierarchycontrol", "-C", "p", "phEnable", "clear")
    log_file = tmp_path / "boot.log"
    extra = ["--require-vtpm"] if required else []
    r = boot(tmp_path, disk, tpm, "--tpm2", f"--event-log={log_file}", *extra)
    err = r.stderr.decode()
    zero = {"sha1": {4: bytes(20), 5: bytes(20)}, "sha256": {4: bytes(32), 5: bytes(32)}}
    if required:
        assert r.returncode == 1 and err.count("\n") == 1, err
        assert "phEnable clear" in err and "not booting" in err and "Traceback" not in err
        assert tpm.pcrread("sha1:4,5+sha256:4,5") == zero
        assert not log_file.exists()
    else:
        assert r.returncode == 0, err
        assert "warning" in err and "booting without it" in err
        assert tpm.pcrread("sha1:4,5+sha256:4,5") != zero
        assert log_file.exists()


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_a_tpm12_boot_delivers_nothing_and_still_measures(disk: Path, tmp_path: Path) -> None:
    with tools_tpm(tpm2=False) as tpm:
        log_file = tmp_path / "boot.log"
        r = boot(tmp_path, disk, tpm, "--debug", f"--event-log={log_file}")
        assert r.returncode == 0, r.stderr
        assert b"TPM 1.2: no NV channel for the event log" in r.stderr
        assert log_file.exists()


# --- pvgrubctl boot (the builder) ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@pytest.mark.slow
def test_the_builder_delivers_the_same_bytes_as_its_event_log(
    tpm: ToolsTpm, tmp_path: Path
) -> None:
    from kernel_info_images import write_built_kernel

    kernel = write_built_kernel(tmp_path / "vmlinuz")
    log_file = tmp_path / "boot.log"
    r = run("pvgrub_py.cli.pvgrubctl", "boot", "--sim", "--kernel", str(kernel), "--cmdline",
            "ro", "--vtpm", tpm.uri, "--tpm2", "--event-log", str(log_file), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert delivered_by_tools(tpm, tmp_path) == log_file.read_bytes()


# --- pvgrubctl eventlog nv-read -------------------------------------------------------


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_nv_read_writes_the_delivered_log(disk: Path, tpm: ToolsTpm, tmp_path: Path) -> None:
    r = run("pvgrub_py.cli.pvgrubctl", "eventlog", "nv-read", "--tpm", tpm.uri)
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    assert b"holds no event log" in r.stderr
    log_file = tmp_path / "boot.log"
    assert boot(tmp_path, disk, tpm, "--tpm2", f"--event-log={log_file}").returncode == 0
    out = tmp_path / "nv.log"
    r = run("pvgrub_py.cli.pvgrubctl", "eventlog", "nv-read", "--tpm", tpm.uri, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == log_file.read_bytes()
    r = run("pvgrub_py.cli.pvgrubctl", "eventlog", "nv-read", "--vtpm", tpm.uri)
    assert r.returncode == 0 and r.stdout == log_file.read_bytes()


# --- hostile NV contents ----------------------------------------------------------------

OURS = "platformcreate|ppwrite|authread|no_da"


def plant(
    tpm: ToolsTpm, tmp: Path, index: int, data: bytes | None, *,
    size: int | None = None, attributes: str = OURS, hierarchy: str = "p",
) -> None:  # fmt: skip
    """Define *index* with tpm2-tools and write *data* (None: leave it unwritten)."""
    handle = f"0x{index:08x}"
    length = size if size is not None else len(data or b"x")
    tpm.tool("tpm2_nvdefine", "-C", hierarchy, "-s", str(length), "-a", attributes, handle)
    if data is not None:
        path = tmp / f"plant-{index:08x}"
        path.write_bytes(data)
        auth = "p" if hierarchy == "p" else "o"
        tpm.tool("tpm2_nvwrite", "-C", auth, "-i", str(path), handle)


def header(log: bytes, *, magic: bytes = b"PVGRUBNV", version: int = 1, size: int = 56,
           log_size: int | None = None, chunk: int = 2048, count: int | None = None,
           digest: bytes | None = None) -> bytes:  # fmt: skip
    n = len(log) if log_size is None else log_size
    return struct.pack(">8sHHIII32s", magic, version, size, n, chunk,
                       -(-n // chunk) if count is None else count,
                       hashlib.sha256(log).digest() if digest is None else digest)  # fmt: skip


LOG = b"not really a log, but the channel carries bytes" * 3

HOSTILE = {
    "owner-index": ("attributes 0x", lambda t, d: plant(
        t, d, HEADER, header(LOG), attributes="ownerwrite|ownerread|authread|no_da",
        hierarchy="o")),
    "never-written": ("defined but never written", lambda t, d: plant(
        t, d, HEADER, None, size=56)),
    "wrong-magic": ("magic b'PVGRUBXX'", lambda t, d: plant(
        t, d, HEADER, header(LOG, magic=b"PVGRUBXX"))),
    "wrong-version": ("header version 7", lambda t, d: plant(t, d, HEADER, header(LOG, version=7))),
    "short-header": ("holds 40 bytes, the header says 56", lambda t, d: plant(
        t, d, HEADER, header(LOG)[:40])),
    "absurd-log-size": ("log size 4294967295 is out of range", lambda t, d: plant(
        t, d, HEADER, header(LOG, log_size=0xFFFFFFFF))),
    "absurd-count": ("1000000 data indices", lambda t, d: plant(
        t, d, HEADER, header(LOG, count=1_000_000))),
    "zero-chunk": ("chunk size 0", lambda t, d: plant(t, d, HEADER, header(LOG, chunk=0, count=1))),
    "missing-data": ("0x0140f001: missing", lambda t, d: plant(t, d, HEADER, header(LOG))),
    "wrong-data-size": (f"holds 10 bytes, the header says {len(LOG)}", lambda t, d: (
        plant(t, d, HEADER, header(LOG)), plant(t, d, HEADER + 1, LOG[:10]))),
    "wrong-digest": ("SHA-256 does not match", lambda t, d: (
        plant(t, d, HEADER, header(LOG, digest=bytes(32))), plant(t, d, HEADER + 1, LOG))),
}


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_nv_contents_are_a_one_line_error(
    tpm: ToolsTpm, tmp_path: Path, case: str
) -> None:
    message, make = HOSTILE[case]
    make(tpm, tmp_path)
    with client(tpm) as c, pytest.raises(NvEventLogError) as caught:
        load_event_log(c)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    r = run("pvgrub_py.cli.pvgrubctl", "eventlog", "nv-read", "--tpm", tpm.uri)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and message in err, err
    assert err.startswith(f"pvgrubctl: {tpm.uri}: ") and r.stdout == b""


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_a_planted_log_that_is_well_formed_reads_back(tpm: ToolsTpm, tmp_path: Path) -> None:
    """The other side of the hostile cases: tpm2-tools writing the documented
    format is read, so the reader checks the format, not our writer's habits."""
    plant(tpm, tmp_path, HEADER, header(LOG))
    plant(tpm, tmp_path, HEADER + 1, LOG)
    with client(tpm) as c:
        assert load_event_log(c) == LOG


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_store_clears_squatters_in_its_range_and_refuses_oversized_logs(
    tpm: ToolsTpm, tmp_path: Path
) -> None:
    plant(tpm, tmp_path, HEADER + 5, b"guest", attributes="ownerwrite|ownerread|authread",
          hierarchy="o")  # fmt: skip
    log = os.urandom(3000)
    too_big = (nv_channel.MAX_DATA_INDICES * SWTPM_INDEX_MAX) + 1
    with client(tpm) as c:  # swtpm serves one connection at a time: tools after it
        store_event_log(c, log, lock=False)
        with pytest.raises(NvEventLogError, match="needs 65 NV indices"):
            store_event_log(c, bytes(too_big))
    assert nv_indices(tpm) == [HEADER, HEADER + 1, HEADER + 2]
    assert delivered_by_tools(tpm, tmp_path) == log


# --- codecs ------------------------------------------------------------------------------


def test_nv_commands_carry_one_empty_password_session() -> None:
    public = tpm2_nv.NvPublic(HEADER, 0x000B, nv_channel.ATTRIBUTES, b"", 56)
    cmd = tpm2_nv.build_nv_define_space(tpm2_nv.TPM_RH_PLATFORM, public)
    # header, authHandle TPM_RH_PLATFORM, a 9-byte TPM_RS_PW session, auth, public area.
    assert cmd == bytes.fromhex(
        "8002" "0000002d" "0000012a" "4000000c"
        "00000009" "40000009" "0000" "00" "0000"
        "0000"
        "000e" "0140f000" "000b" "42040001" "0000" "0038"
    )
    assert tpm2_nv.build_nv_read(HEADER, HEADER, 56, 0) == bytes.fromhex(
        "8002" "00000023" "0000014e" "0140f000" "0140f000"
        "00000009" "40000009" "0000" "00" "0000" "0038" "0000"
    )
    assert tpm2_nv.build_hierarchy_control(0x4000000C, 0x4000000C, False) == bytes.fromhex(
        "8002" "00000020" "00000121" "4000000c"
        "00000009" "40000009" "0000" "00" "0000" "4000000c" "00"
    )
    with pytest.raises(ValueError, match="not an NV index handle"):
        tpm2_nv.build_nv_read_public(0x81000001)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ("8002 0000000e 00000000 00000009", "parameterSize 9 at offset 10 is more than"),
        ("8002 00000015 00000000 00000000 0002 6869 01 0000", "nonceTPM at offset 14 is 2"),
        ("8002 00000017 00000000 00000004 0005 6869 0000 01 0000", "truncated data at offset 16"),
    ],
)
def test_malformed_nv_responses_name_the_field(response: str, message: str) -> None:
    with pytest.raises(TpmProtocolError, match=message):
        tpm2_nv.parse_nv_read_response(bytes.fromhex(response.replace(" ", "")))
    ok = bytes.fromhex("8002 00000017 00000000 00000004 0002 6869 0000 01 0000".replace(" ", ""))
    assert tpm2_nv.parse_nv_read_response(ok) == b"hi"
