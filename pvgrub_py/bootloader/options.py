"""The bootloader's command line, exactly as libxl and xl users write it.

libxl runs (``make_bootloader_args``, tools/libs/light/libxl_bootloader.c)::

    BOOTLOADER [--kernel=P] [--ramdisk=P] [--args=A] [--runas=UID --quiet]
               --output=FILE --output-format=simple0 --output-directory=DIR
               [bootloader_args ...] DISK

pygrub's own options are accepted too, with pygrub's GNU-getopt rules (options
may follow the disk; ``--opt=value`` or ``--opt value``).  The measurement
options arrive the same way, normally through xl's ``bootloader_args``.
"""

from __future__ import annotations

import re

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootloader.gnu_getopt import GetoptError, gnu_getopt
from pvgrub_py.errors import UsageError
from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Literal

    from pvgrub_py.measure.policy import MeasurePolicy

    OutputFormat = Literal["sxp", "simple", "simple0"]

#: pygrub's default when no --output-directory is given.
DEFAULT_OUTPUT_DIRECTORY = "/var/run/xen/pvgrub-py/"

#: Seconds to reach the vTPM (a xen: backend connecting, a fresh boot of the
#: instance) and for each TPM command.  A TPM 1.2 power cycle in swtpm takes
#: well under a second on a host, about 24 s in a dom0 under QEMU TCG.
DEFAULT_VTPM_TIMEOUT = 30.0
#: Largest --vtpm-timeout: libxl kills a bootloader after 120 s by default.
MAX_VTPM_TIMEOUT = 3600.0

#: Largest --runas: uid_t is 32 bits and (uid_t)-1 means "no change" to setuid.
MAX_UID = 0xFFFFFFFE
#: Largest --offset: a byte position an off_t (lseek, pread) can hold.
MAX_OFFSET = (1 << 63) - 1

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

SHORT_OPTIONS = "qilnhV"
LONG_OPTIONS = [
    # libxl / pygrub
    "quiet", "interactive", "list-entries", "not-really", "help", "version",
    "output=", "output-format=", "output-directory=", "offset=", "runas=",
    "entry=", "kernel=", "ramdisk=", "initrd=", "args=", "isconfig", "debug",
    "default_args=", "extra_args=", "config-dialect=",
    # measurement
    "vtpm=", "vtpm-uuid=", "require-vtpm", "vtpm-label=", "event-log=", "tpm2",
    "vtpm-timeout=", "no-event-log-nv",
]  # fmt: skip


@record
class BootloaderOptions:
    disk: str = ""
    interactive: bool = True
    #: -i was given: say so when there is no terminal to show the menu on.
    interactive_explicit: bool = False
    list_entries: bool = False
    not_really: bool = False
    isconfig: bool = False
    debug: bool = False
    output: str | None = None  # None: stdout
    output_format: OutputFormat = "sxp"
    output_directory: str = DEFAULT_OUTPUT_DIRECTORY
    offset: int | None = None
    runas: int | None = None
    entry: str | None = None
    kernel: str | None = None  # an in-image path that bypasses the menu
    ramdisk: str | None = None
    args: str = ""  # appended to the chosen entry's args
    default_args: str | None = None  # used when the entry has none
    extra_args: str = ""  # appended after everything
    #: Whose reading of a config to follow where GRUB and petitboot differ.
    dialect: Dialect = Dialect.GRUB
    vtpm: str | None = None
    vtpm_uuid: str | None = None
    require_vtpm: bool = False
    vtpm_label: str | None = None
    #: Bound on reaching the vTPM and on each TPM command, in seconds.
    vtpm_timeout: float = DEFAULT_VTPM_TIMEOUT
    event_log: str | None = None
    #: Hand a TPM 2.0 guest its event log in the vTPM's NV (--no-event-log-nv: no).
    event_log_nv: bool = True
    tpm2: bool = False
    #: --version was asked for (print it and exit).
    version: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def measurement_required(self) -> bool:
        """pv-grub's fail-closed mode: asked for a vTPM, so never boot unmeasured."""
        return self.require_vtpm or self.vtpm_label is not None

    def measure_policy(self) -> MeasurePolicy:
        """What `pvgrub_py.measure.vtpm` measures into, and how strictly."""
        from pvgrub_py.measure.policy import MeasurePolicy

        return MeasurePolicy(
            vtpm=self.vtpm, uuid=self.vtpm_uuid, required=self.require_vtpm,
            label=self.vtpm_label, tpm2=self.tpm2, timeout=self.vtpm_timeout,
        )  # fmt: skip


def _int(option: str, value: str, upper: int) -> int:
    """A decimal integer in [0, *upper*]; anything else is a one-line usage error.

    ASCII digits only: ``int()`` also takes ``"1_000"``, ``" 7 "`` and other
    scripts' digits, none of which libxl or pygrub would ever pass.
    """
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            raise UsageError(f"{option} must not be negative")
        raise UsageError(f"{option} needs an integer, not {value!r}")
    if len(text) > len(str(upper)) or int(text) > upper:
        raise UsageError(f"{option}={value} is out of range (at most {upper})")
    return int(text)


def _seconds(option: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{option} needs a number of seconds, not {value!r}") from None
    if not 0 < seconds <= MAX_VTPM_TIMEOUT:  # also refuses nan and inf
        raise UsageError(f"{option} must be more than 0 and at most {MAX_VTPM_TIMEOUT:g} s")
    return seconds


def parse_dialect(value: str) -> Dialect:
    try:
        return Dialect(value)
    except ValueError:
        names = ", ".join(d.value for d in Dialect)
        raise UsageError(f"unknown config dialect {value!r} ({names})") from None


def parse_options(argv: list[str]) -> BootloaderOptions | None:
    """Parse argv; None means --help was asked for."""
    try:
        pairs, rest = gnu_getopt(argv, SHORT_OPTIONS, LONG_OPTIONS)
    except GetoptError as e:
        raise UsageError(str(e)) from None
    opts = BootloaderOptions()
    for name, value in pairs:
        if name in ("-h", "--help"):
            return None
        if name in ("-V", "--version"):
            opts.version = True
            return opts
        _apply(opts, name, value)
    if len(rest) != 1:
        got = "no disk" if not rest else f"{len(rest)} disks ({' '.join(rest)})"
        raise UsageError(f"expected exactly one DISK argument, got {got}")
    opts.disk = rest[0]
    if opts.runas is not None and opts.interactive and not opts.list_entries:
        raise UsageError(
            "--runas needs --entry or -q: a deprivileged bootloader cannot show a menu"
        )
    if opts.runas == 0:
        raise UsageError("--runas=0 would not drop privileges")
    if opts.vtpm_uuid is not None and (opts.vtpm is None or not opts.vtpm.startswith("xen:")):
        raise UsageError("--vtpm-uuid names an instance behind a xen: vTPM; give --vtpm=xen:DOMID")
    if opts.vtpm is not None:
        # A malformed address is a usage error whether or not a measured boot
        # is required: booting unmeasured because of a typo would hide it.
        from pvgrub_py.tpm.uri import parse_vtpm_uri

        parse_vtpm_uri(opts.vtpm)
    if opts.measurement_required and opts.vtpm is None:
        raise UsageError(
            "--require-vtpm/--vtpm-label without --vtpm: there is no vTPM to measure into"
        )
    return opts


def _apply(opts: BootloaderOptions, name: str, value: str) -> None:
    if name in ("-q", "--quiet"):
        opts.interactive = False
    elif name in ("-i", "--interactive"):
        opts.interactive = True
        opts.interactive_explicit = True
    elif name in ("-l", "--list-entries"):
        opts.list_entries = True
    elif name in ("-n", "--not-really"):
        opts.not_really = True
    elif name == "--output":
        if not value:
            raise UsageError("--output needs a file name (or - for stdout)")
        opts.output = None if value == "-" else value
    elif name == "--output-format":
        if value not in ("sxp", "simple", "simple0"):
            raise UsageError(f"unknown output format {value!r} (sxp, simple, simple0)")
        opts.output_format = value  # type: ignore[assignment]
    elif name == "--output-directory":
        if not value:
            raise UsageError("--output-directory needs a directory name")
        opts.output_directory = value
    elif name == "--offset":
        opts.offset = _int(name, value, MAX_OFFSET)
    elif name == "--runas":
        opts.runas = _int(name, value, MAX_UID)
    elif name == "--entry":
        opts.entry = value
        opts.interactive = False  # as pygrub: naming the entry implies no menu
    elif name == "--kernel":
        opts.kernel = value
    elif name in ("--ramdisk", "--initrd"):
        opts.ramdisk = value
    elif name == "--args":
        opts.args = value
    elif name == "--default_args":
        opts.default_args = value
    elif name == "--extra_args":
        opts.extra_args = value
    elif name == "--config-dialect":
        opts.dialect = parse_dialect(value)
    elif name == "--isconfig":
        opts.isconfig = True
    elif name == "--debug":
        opts.debug = True
    elif name == "--vtpm":
        opts.vtpm = value
    elif name == "--vtpm-uuid":
        if not _UUID.fullmatch(value):
            raise UsageError(f"--vtpm-uuid needs a UUID (8-4-4-4-12 hex digits), not {value!r}")
        opts.vtpm_uuid = value
    elif name == "--require-vtpm":
        opts.require_vtpm = True
    elif name == "--vtpm-label":
        if not value:
            raise UsageError("--vtpm-label needs a label")
        opts.vtpm_label = value
    elif name == "--vtpm-timeout":
        opts.vtpm_timeout = _seconds(name, value)
    elif name == "--event-log":
        if not value:
            raise UsageError("--event-log needs a file name")
        opts.event_log = value
    elif name == "--no-event-log-nv":
        opts.event_log_nv = False
    elif name == "--tpm2":
        opts.tpm2 = True
