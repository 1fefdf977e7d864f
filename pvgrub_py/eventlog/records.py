"""A TCG event log as plain values: events, the SpecID header, the log.

Two wire formats carry the same information (TCG EFI Protocol Specification
rev 13 §5.1 and §5.2):

* the TCG 1.2 "SHA1" log, a sequence of TCG_PCR_EVENT, one SHA-1 digest each;
* the TPM 2.0 "crypto-agile" log, one TCG_PCR_EVENT carrying the SpecID
  event (TCG PC Client Platform Firmware Profile (PFP) 1.04 §9.4.5.1) and
  then TCG_PCR_EVENT2 records with one digest per active PCR bank.

Digests are keyed by the bank names tpm2-tools uses (``sha1``, ``sha256``,
...; see `pvgrub_py.tpm.algorithms`).  An algorithm the TCG registry table
there does not know, but that a SpecID event declares with its size, is keyed
``0x%04x`` by its TPM_ALG_ID, so such a log still parses and round-trips.
"""

from __future__ import annotations

import re

from pvgrub_py.record import field, record
from pvgrub_py.tpm.algorithms import BY_ID, BY_NAME

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Literal

    LogFormat = Literal["sha1", "crypto-agile"]

#: PFP 1.04 §9.4.1, Table 9 "Events": the pre-UEFI (BIOS) event types.
EV_PREBOOT_CERT = 0x00000000
EV_POST_CODE = 0x00000001
EV_UNUSED = 0x00000002
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_S_CRTM_CONTENTS = 0x00000007
EV_S_CRTM_VERSION = 0x00000008
EV_CPU_MICROCODE = 0x00000009
EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
EV_TABLE_OF_DEVICES = 0x0000000B
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_IPL_PARTITION_DATA = 0x0000000E
EV_NONHOST_CODE = 0x0000000F
EV_NONHOST_CONFIG = 0x00000010
EV_NONHOST_INFO = 0x00000011
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012

#: The same table, UEFI part (EV_EFI_EVENT_BASE = 0x80000000).
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

EVENT_TYPE_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("EV_") and isinstance(value, int)
}

#: PFP 1.04 §9.4.5.1: the signature that opens a crypto-agile log.
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
#: PFP 1.04 §9.4.5.3: EV_NO_ACTION in PCR 0 telling the TPM2_Startup locality.
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"

_HEX_NAME = re.compile(r"0x([0-9a-f]{4})")


def event_type_name(event_type: int) -> str:
    """The PFP name of an event type, or its hex value for one not in Table 9."""
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")


def bank_name(alg_id: int) -> str:
    """The digest key for a TPM_ALG_ID: the tpm2-tools name, else ``0x%04x``."""
    alg = BY_ID.get(alg_id)
    return alg.name if alg is not None else f"0x{alg_id:04x}"


def bank_alg_id(name: str) -> int | None:
    """Undo `bank_name`; None for a name that is neither form."""
    alg = BY_NAME.get(name)
    if alg is not None:
        return alg.alg_id
    m = _HEX_NAME.fullmatch(name)
    return int(m.group(1), 16) if m else None


@record(frozen=True)
class Event:
    """One measurement record: TCG_PCR_EVENT or TCG_PCR_EVENT2.

    ``digests`` keeps the order of the TPML_DIGEST_VALUES on the wire, so a
    parsed event serialises back to the same bytes.
    """

    pcr: int
    event_type: int
    digests: dict[str, bytes] = field(hash=False)
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@record(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEventStruct, the data of a crypto-agile log's first event.

    PFP 1.04 §9.4.5.1: it names every hash algorithm the log's TCG_PCR_EVENT2
    records carry and the size of its digests, so that a parser can walk
    records whose algorithms it does not itself implement.
    """

    platform_class: int
    spec_version_minor: int
    spec_version_major: int
    spec_errata: int
    #: 1: UINTN is 32 bits; 2: UINTN is 64 bits.
    uintn_size: int
    #: (TPM_ALG_ID, digest size) in log order.
    algorithms: tuple[tuple[int, int], ...]
    vendor_info: bytes = b""

    @property
    def bank_names(self) -> tuple[str, ...]:
        return tuple(bank_name(alg_id) for alg_id, _ in self.algorithms)


@record
class EventLog:
    """A whole log.

    For ``crypto-agile`` logs `spec_id` is the decoded SpecID event and
    `header_event` the TCG_PCR_EVENT that carried it (PCR 0, EV_NO_ACTION, a
    zero SHA-1 digest); `spec_id` is the source of truth and the codec
    rebuilds the header from it.  SHA-1 logs have neither: a TCG 1.2 log has
    no header, and any EV_NO_ACTION "Spec ID Event00" it opens with is just
    its first event.

    `quirks` lists, one line each, the deviations from the specification the
    parser accepted (see `pvgrub_py.eventlog.codec.parse`); a log we build or
    serialise has none.
    """

    format: LogFormat
    spec_id: SpecIdEvent | None
    header_event: Event | None
    events: list[Event]
    quirks: list[str] = field(default_factory=list)

    @property
    def banks(self) -> tuple[str, ...]:
        """The banks the log declares: sha1 for a SHA-1 log, else SpecID's."""
        if self.format == "sha1" or self.spec_id is None:
            return ("sha1",)
        return self.spec_id.bank_names

    @property
    def extended_pcrs(self) -> list[int]:
        """The PCRs the log's events extend, in order (EV_NO_ACTION extends none):
        the ones to read from a TPM to check the log against it."""
        return sorted({e.pcr for e in self.events if e.event_type != EV_NO_ACTION})
