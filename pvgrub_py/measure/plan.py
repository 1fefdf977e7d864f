"""The measurement plan of pv-grub's ``tpm_hash2pcr()`` (stubdom/grub/kexec.c).

Three extends, always in this order, always all three:

1. PCR 4 <- H(kernel), the kernel as the domain builder receives it;
2. PCR 5 <- H(cmdline), without the kernel path and without a NUL;
3. PCR 5 <- H(initrd), or H of no bytes when there is no initrd.

A `Measurement` is one of those extends, already hashed in every bank we were
asked for.  It is the unit the TPM extender, the PCR predictor and the event
log writer all consume, so the three can never disagree about what was
measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from pvgrub_py.record import field, record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Literal

    What = Literal["kernel", "cmdline", "initrd"]
else:
    What = str  # a name to import: annotations are the type checker's

KERNEL_PCR = 4
CMDLINE_PCR = 5
INITRD_PCR = 5

#: TCG PC Client EV_IPL (0x0000000D): "events related to the IPL", the type
#: GRUB 2 and systemd-boot also use for kernel, initrd and command line.
EV_IPL = 0x0000000D


@record(frozen=True)
class Measurement:
    pcr: int
    what: What
    #: a path for kernel/initrd, the cmdline text itself for the cmdline;
    #: None for "no initrd".
    source: str | None
    #: bank name (sha1, sha256, ...) -> digest of the measured bytes.
    digests: Mapping[str, bytes] = field(hash=False)
    #: bytes measured, for the report (after any whole-file gunzip).
    length: int = 0

    @property
    def event_type(self) -> int:
        return EV_IPL

    @property
    def event_data(self) -> bytes:
        """The TCG event data: what was measured, in words.

        ``kernel: <path>``, ``cmdline: <text>``, ``initrd: <path>`` or
        ``initrd: (none)``.  For the cmdline the text after the prefix is the
        very byte string that was hashed, so a verifier can check it.
        """
        shown = "(none)" if self.source is None else self.source
        return f"{self.what}: {shown}".encode("utf-8", "surrogateescape")


def parse_event_data(data: bytes) -> tuple[str, str | None] | None:
    """Undo `Measurement.event_data`: (what, source), or None if not ours."""
    text = data.decode("utf-8", "surrogateescape")
    what, sep, rest = text.partition(": ")
    if not sep or what not in ("kernel", "cmdline", "initrd"):
        return None
    if what == "initrd" and rest == "(none)":
        return what, None
    return what, rest
