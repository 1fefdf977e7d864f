"""The guest's TPM 2.0 bridge, sans I/O: Linux's vTPM proxy chip on one side,
the guest's tpmif frontend on the other.

Linux's ``xen-tpmfront`` registers every vTPM as a TPM 1.2 chip, so a stock
guest kernel cannot use a TPM 2.0 vTPM.  ``pvgrub-guest-tpm`` instead asks
the kernel's vTPM proxy (``/dev/vtpmx``, ``tpm_vtpm_proxy``) for a TPM 2.0
chip and answers it from userspace: every command the kernel writes to the
proxy's file descriptor is forwarded over tpmif (`TpmFront`) and the answer
written back.  This module decides what happens to each frame; the drivers
(`pvgrub_py.vtpm.proxy_device`, `pvgrub_py.vtpm.bridge_driver`) do the I/O.

What the kernel sends (Linux ``drivers/char/tpm/tpm_vtpm_proxy.c``,
``tpm-chip.c``, ``tpm2-cmd.c``):

* one whole command per write into the proxy's 4096-byte buffer
  (``TPM_BUFSIZE``); a read shorter than the command fails with EIO, so the
  driver reads 4096 bytes.  An answer longer than 4096 bytes fails the
  write, and the kernel takes an answer only when its header's size equals
  the bytes written (``tpm_try_transmit``);
* ``TPM2_CC_SET_LOCALITY`` (0x20001000, a vendor command code), tag
  ``TPM_ST_SESSIONS`` and one byte of locality, when it claims a locality
  (``vtpm_proxy_request_locality``): the proxy's own command, which only
  the process behind the proxy can answer.  A non-zero response code makes
  the kernel's request fail.  We answer it here (success, tag
  ``TPM_ST_NO_SESSIONS``, as swtpm's proxy mode does) and pass the locality
  with every later command in the tpmif page's locality byte;
* at registration (``tpm_chip_register`` -> ``tpm_chip_bootstrap``, run from
  the proxy's work queue right after the ioctl): SET_LOCALITY(0), then
  ``tpm2_auto_startup``: ``TPM2_SelfTest(fullTest = NO)``; only if that
  answers ``TPM_RC_INITIALIZE`` (a TPM that was never started) come
  ``TPM2_Startup(SU_CLEAR)`` and a second SelfTest; then
  ``TPM2_GetCapability(TPM_PROPERTIES, TPM_PT_TOTAL_COMMANDS)`` and
  ``TPM2_GetCapability(TPM_CAP_COMMANDS, TPM2_CC_FIRST, n)`` (the command
  attribute table), ``TPM2_GetCapability(TPM_CAP_PCRS)`` (the banks); then,
  with the TPM hwrng, ``TPM2_GetRandom``.  A kernel built with
  ``CONFIG_TCG_TPM2_HMAC`` also makes a primary key in the null hierarchy
  (TPM2_CreatePrimary, ContextSave, FlushContext) and starts HMAC sessions,
  at registration or at first use depending on its version;
* no answer in time: the kernel polls the proxy for the answer for a
  per-command duration (``tpm2_calc_ordinal_duration``: 750 ms for
  PCR_Extend and GetCapability, 2 s for SelfTest, GetRandom and NV_Read,
  300 s for key creation, 120 s for the rest), then fails the call with
  ETIME and moves on; the answer we write after that is refused (EIO) or
  dropped by its next command.  So the round trip over tpmif must stay well
  inside 750 ms for the common commands.

**Why the bootloader's PCRs survive registration.**  None of those commands
writes a PCR: SelfTest, GetCapability and GetRandom only read, the null
hierarchy's key and sessions are not PCRs, and SET_LOCALITY never reaches
the TPM.  The one command that resets PCRs,
``TPM2_Startup(SU_CLEAR)``, is sent only after a SelfTest answered
``TPM_RC_INITIALIZE``, and the vTPM the guest reaches has been started
already: vtpmd powers an instance up with Startup(CLEAR) before the
bootloader's dom0 frontend measures into it, and a guest frontend never
power-cycles it (`pvgrub_py.vtpm.instances`).  A TPM 2.0 refuses a second
Startup with ``TPM_RC_INITIALIZE`` without touching its PCRs (TPM 2.0 Part 3,
TPM2_Startup), so even a Startup(CLEAR) sent later from userspace through
/dev/tpm0 resets nothing.  The bridge itself never originates a command:
no _TPM_Init, no Startup, no reset; it forwards the kernel's commands as
they are.  When the daemon closes the proxy descriptor the kernel marks the
proxy closed before it unregisters the chip, so the ``TPM2_Shutdown`` of
``tpm_del_char_device`` never reaches the vTPM either.

Malformed frames (never sent by a sane kernel, but the descriptor is a
boundary all the same) get a TPM 2.0 error answer, tag
``TPM_ST_NO_SESSIONS``, size 10, and are not forwarded:

* fewer than 10 bytes, a header size that is not the number of bytes read,
  or a command larger than a tpmif page carries (4088 bytes):
  ``TPM_RC_COMMAND_SIZE``;
* a tag that is not TPM 2.0's (0x8001, 0x8002): ``TPM_RC_BAD_TAG``, as a
  TPM 2.0 answers one;
* SET_LOCALITY with a body that is not one byte: ``TPM_RC_COMMAND_SIZE``;
  with a locality above 4: ``TPM_RC_VALUE`` on parameter 1.

A command the vTPM cannot answer (no frontend connection, the backend gone
or silent past the tpmif timeout, an answer that is not a framed TPM
response) is answered ``TPM_RC_FAILURE``: the kernel's caller gets an error
instead of a hang.  A transport failure also asks the driver to reconnect
the frontend; until it has, commands are answered ``TPM_RC_FAILURE`` at once.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pvgrub_py.tpm import tpm2
from pvgrub_py.tpm.header import HEADER, HEADER_SIZE
from pvgrub_py.tpm.rc import RC_FMT1, RC_VER1, TPM2_RC_FAILURE, TPM_RC_BAD_TAG
from pvgrub_py.vtpm.shared_page import MAX_PACKET
from pvgrub_py.vtpm.tpmif import MAX_LOCALITY

#: The vTPM proxy's vendor command (Linux include/uapi/linux/vtpm_proxy.h).
TPM2_CC_SET_LOCALITY = 0x20001000
#: The proxy's request/response buffer (Linux ``TPM_BUFSIZE``).
PROXY_BUFFER_SIZE = 4096

# TPM 2.0 Part 2, 6.6 (TPM_RC): format-zero codes and a format-one parameter error.
TPM_RC_COMMAND_SIZE = RC_VER1 + 0x042
TPM_RC_VALUE = RC_FMT1 + 0x004
TPM_RC_P = 0x040  # the error is in a parameter...
TPM_RC_1 = 0x100  # ...number 1

SUCCESS = HEADER.pack(tpm2.TPM_ST_NO_SESSIONS, HEADER_SIZE, 0)


def error_answer(code: int) -> bytes:
    """A 10-byte TPM 2.0 error answer (tag TPM_ST_NO_SESSIONS)."""
    return tpm2.encode_error_response(code)


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameRead:
    """What one read of the proxy descriptor returned: one command, as the kernel wrote it."""

    data: bytes


@dataclass(frozen=True)
class TpmAnswered:
    """The vTPM's answer to the `Forward` in flight."""

    response: bytes


@dataclass(frozen=True)
class TpmFailed:
    """The `Forward` in flight got no usable answer.  ``connection_lost``: the
    transport failed (backend gone, timed out, not connected), as opposed to
    one malformed answer on a connection that still works."""

    reason: str
    connection_lost: bool = True


@dataclass(frozen=True)
class FrontendUp:
    """The driver connected the tpmif frontend (to a TPM 2.0)."""


Event = FrameRead | TpmAnswered | TpmFailed | FrontendUp

# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """Send ``command`` over tpmif at ``locality``; answer with `TpmAnswered` or `TpmFailed`."""

    command: bytes
    locality: int


@dataclass(frozen=True)
class Reply:
    """Write ``response`` to the proxy descriptor: the kernel's answer."""

    response: bytes


@dataclass(frozen=True)
class Reconnect:
    """Drop the frontend connection and connect again; `FrontendUp` once done."""

    reason: str


@dataclass(frozen=True)
class Warn:
    """A line for the log (the driver may rate-limit it by ``kind``)."""

    kind: str
    message: str


Action = Forward | Reply | Reconnect | Warn


class BridgeState(enum.Enum):
    DISCONNECTED = "disconnected"  # no frontend connection: commands fail at once
    READY = "ready"  # connected, nothing in flight
    FORWARDING = "forwarding"  # a command is with the vTPM


class ProxyBridge:
    """One proxy chip's protocol: `receive` an event, get the actions to perform
    in order.  One command at a time, as the proxy itself allows."""

    def __init__(self, max_command: int = MAX_PACKET, *, connected: bool = False) -> None:
        self.max_command = min(max_command, PROXY_BUFFER_SIZE)
        self.state = BridgeState.READY if connected else BridgeState.DISCONNECTED
        #: The locality the kernel last set with TPM2_CC_SET_LOCALITY.
        self.locality = 0
        self.forwarded = 0
        self.refused = 0

    def receive(self, event: Event) -> list[Action]:
        if isinstance(event, FrameRead):
            return self._frame(event.data)
        if isinstance(event, TpmAnswered):
            return self._answered(event.response)
        if isinstance(event, TpmFailed):
            return self._failed(event)
        if isinstance(event, FrontendUp):
            if self.state is BridgeState.DISCONNECTED:
                self.state = BridgeState.READY
            return []
        raise TypeError(f"not a bridge event: {event!r}")

    # -- frames from the kernel ----------------------------------------------------------

    def _refuse(self, code: int, why: str) -> list[Action]:
        self.refused += 1
        return [Warn("malformed", why), Reply(error_answer(code))]

    def _frame(self, data: bytes) -> list[Action]:
        if self.state is BridgeState.FORWARDING:
            raise AssertionError("proxy bridge: a frame read while a command is with the vTPM")
        if len(data) < HEADER_SIZE:
            return self._refuse(TPM_RC_COMMAND_SIZE, f"a {len(data)}-byte frame has no TPM header")
        tag, size, code = HEADER.unpack_from(data)
        if size != len(data):
            return self._refuse(
                TPM_RC_COMMAND_SIZE, f"the header says {size} bytes, the frame has {len(data)}"
            )
        if tag not in (tpm2.TPM_ST_NO_SESSIONS, tpm2.TPM_ST_SESSIONS):
            return self._refuse(TPM_RC_BAD_TAG, f"tag 0x{tag:04x} is not a TPM 2.0 command tag")
        if code == TPM2_CC_SET_LOCALITY:
            return self._set_locality(data)
        if len(data) > self.max_command:
            return self._refuse(
                TPM_RC_COMMAND_SIZE,
                f"a {len(data)}-byte command exceeds the {self.max_command} bytes tpmif carries",
            )
        if self.state is BridgeState.DISCONNECTED:
            self.refused += 1
            return [
                Warn("disconnected", "the vTPM is not connected; answered TPM_RC_FAILURE"),
                Reply(error_answer(TPM2_RC_FAILURE)),
            ]
        self.state = BridgeState.FORWARDING
        return [Forward(data, self.locality)]

    def _set_locality(self, data: bytes) -> list[Action]:
        if len(data) != HEADER_SIZE + 1:
            return self._refuse(
                TPM_RC_COMMAND_SIZE, f"SET_LOCALITY of {len(data)} bytes, not {HEADER_SIZE + 1}"
            )
        locality = data[HEADER_SIZE]
        if locality > MAX_LOCALITY:
            return self._refuse(
                TPM_RC_VALUE + TPM_RC_P + TPM_RC_1,
                f"SET_LOCALITY {locality}: localities are 0 to {MAX_LOCALITY}",
            )
        self.locality = locality
        return [Reply(SUCCESS)]

    # -- answers from the vTPM -----------------------------------------------------------

    def _answered(self, response: bytes) -> list[Action]:
        if self.state is not BridgeState.FORWARDING:
            return []  # nothing asked for it
        self.state = BridgeState.READY
        why = _unframed(response)
        if why is not None:
            self.refused += 1
            return [Warn("answer", why), Reply(error_answer(TPM2_RC_FAILURE))]
        self.forwarded += 1
        return [Reply(response)]

    def _failed(self, event: TpmFailed) -> list[Action]:
        if self.state is not BridgeState.FORWARDING:
            return []
        self.refused += 1
        actions: list[Action] = [Reply(error_answer(TPM2_RC_FAILURE))]
        if event.connection_lost:
            self.state = BridgeState.DISCONNECTED
            actions.append(Reconnect(event.reason))
        else:
            self.state = BridgeState.READY
            actions.insert(0, Warn("answer", event.reason))
        return actions


def _unframed(response: bytes) -> str | None:
    """Why ``response`` cannot go to the kernel as it is, or None."""
    if len(response) < HEADER_SIZE:
        return f"the vTPM answered {len(response)} bytes, less than a TPM header"
    if len(response) > PROXY_BUFFER_SIZE:
        return f"the vTPM's {len(response)}-byte answer exceeds the proxy's {PROXY_BUFFER_SIZE}"
    (size,) = struct.unpack_from(">I", response, 2)
    if size != len(response):
        return f"the vTPM's answer says {size} bytes and has {len(response)}"
    return None
