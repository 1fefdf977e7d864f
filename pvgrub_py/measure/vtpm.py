"""Measure the chosen boot into the guest's vTPM, with pv-grub's policy
(`policy.MeasurePolicy`), for the bootloader and the domain builder alike.

The vTPM is reached before anything is extracted, so its active banks are
known and every file is hashed once in all of them.  Then, in pv-grub's
order: PCR 4 <- kernel, PCR 5 <- cmdline, PCR 5 <- initrd.

* no ``--vtpm``: boot unmeasured, with a warning;
* ``--vtpm`` that cannot be reached: without ``--require-vtpm``/
  ``--vtpm-label`` boot unmeasured with a warning (pv-grub booted silently
  when ``init_tpmfront`` failed); with them, fail closed;
* a reached vTPM whose extend fails: always fatal (pv-grub asserted);
* ``--vtpm-label``: right after the vTPM is reached, before any command is
  sent to it, the backend's XSM (FLASK) label must match (pv-grub's rule,
  `policy.vtpm_label_matches`); where it cannot be read (a ``swtpm:`` vTPM,
  a host without FLASK, any failure) the boot fails closed;
* a reached vTPM whose PCR 4 or 5 is not at its reset value (all zeros
  after ``TPM_Startup(ST_CLEAR)``) in any active bank: refused, whatever
  the options, before anything is extended (`check_reset_pcrs`).  Its final
  PCRs would match neither the event log nor a prediction: a second boot
  into a ``swtpm:`` vTPM that was never power-cycled, or a vTPM someone
  else extended.

With TPM 2.0, `measure_into` also hands the guest the boot's event log in
the vTPM's NV memory (`pvgrub_py.eventlog.nv_channel`): the indices are
cleared and defined before the first extend, written and locked after the
last one.  Where that fails the boot fails (nothing extended, when it fails
before) if a measured boot is required, else it goes ahead with a warning
and no log for the guest.  TPM 1.2 has no such channel: skipped.

How an address becomes a transport (a swtpm socket, a dom0 tpmif attach on
the real host or the simulator) is the program's business: it is wired in
cli/ and passed in as a `Connect`.  Warnings go through `pvgrub_py.warning`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pvgrub_py.errors import PvgrubError
from pvgrub_py.measure.plan import Measurement
from pvgrub_py.measure.policy import MeasurePolicy, vtpm_label_matches
from pvgrub_py.record import record
from pvgrub_py.tpm.algorithms import DEFAULT_BANKS, SHA1, HashAlgorithm
from pvgrub_py.warning import warn

TYPE_CHECKING = False

if TYPE_CHECKING:
    # The TPM stack is imported only when a --vtpm is given: an unmeasured
    # boot should not pay for it (bench/bench_bootloader.py).
    from pvgrub_py.eventlog.nv_channel import NvDelivery, NvRange
    from pvgrub_py.tpm.client import TpmClient
    from pvgrub_py.tpm.transport import TpmTransport
    from pvgrub_py.tpm.uri import VtpmAddress


#: Opens the transport to a vTPM: (address, instance uuid, timeout in seconds).
Connect = Callable[["VtpmAddress", "str | None", float], "TpmTransport"]


def _quiet(message: str) -> None:
    pass


class MeasuredBootError(PvgrubError):
    """The user asked for a measured boot and it cannot be had: do not boot."""


@record
class VtpmSession:
    client: TpmClient | None
    banks: tuple[HashAlgorithm, ...]
    tpm2: bool
    #: The policy's fail-closed mode: a failed event log delivery stops the boot.
    required: bool = False
    #: The NV range `clear_nv_range` cleared ahead of `measure_into`, or why
    #: it could not (reported by `measure_into`, as if it had failed there).
    nv_range: NvRange | PvgrubError | None = None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


#: PCRs pv-grub's measurements go into, and so the ones that must start at reset.
MEASURED_PCRS = (4, 5)


def check_reset_pcrs(client: TpmClient, banks: Sequence[HashAlgorithm], name: str) -> None:
    """Refuse a vTPM whose PCR 4 or 5 is not at its reset value in any bank.

    After ``TPM_Startup(ST_CLEAR)`` PCRs 0-15 are all zeros (TPM 1.2 Part 3
    §3.2 TPM_Startup and the PC Client specification's PCR reset values; TPM
    2.0 Part 3 TPM2_Startup likewise), and the
    measurement specification's final values assume it.  A read that fails
    fails closed too: what cannot be checked is not measured into.
    """
    from pvgrub_py.tpm.errors import TpmError

    try:
        values = client.read_pcrs(MEASURED_PCRS, banks)
    except TpmError as e:
        raise MeasuredBootError(
            f"vTPM {name}: cannot read PCR 4 and 5 before measuring: {e}"
        ) from None
    for alg in banks:
        for pcr in MEASURED_PCRS:
            value = values.get(alg.name, {}).get(pcr)
            if value is None or any(value):
                raise MeasuredBootError(
                    f"vTPM {name}: PCR {pcr} ({alg.name}) is not at its reset value: it was "
                    "extended before (a second boot into this vTPM?); nothing was measured, "
                    "restart the vTPM"
                )


def backend_label(transport: TpmTransport, address: VtpmAddress) -> str:
    """The vTPM backend's XSM label, as pv-grub read it before measuring.

    pv-grub (stubdom/grub/kexec.c, ``tpm_hash2pcr``) asked FLASK for the
    context of the peer of the tpmfront event channel and refused to boot
    if it could not.  A ``xen:`` transport reads the same thing through the
    hypervisor interface (`interface.Hypervisor.evtchn_peer_label`); a
    ``swtpm:`` socket has no XSM label at all.  Anything short of a label is
    a `MeasuredBootError`: ``--vtpm-label`` fails closed.
    """
    from pvgrub_py.tpm.transport import PeerLabelled
    from pvgrub_py.xen.interface import XSM_NOT_ENABLED, XsmNotEnabledError

    cannot = f"cannot verify vtpm label of {address}"
    if address.kind != "xen" or not isinstance(transport, PeerLabelled):
        raise MeasuredBootError(f"{cannot}: a {address.kind}: vTPM has no XSM label")
    try:
        return transport.peer_label()
    except XsmNotEnabledError:
        raise MeasuredBootError(f"{cannot}: {XSM_NOT_ENABLED}") from None
    except PvgrubError as e:
        raise MeasuredBootError(f"{cannot}: {e}") from None


def check_vtpm_label(transport: TpmTransport, address: VtpmAddress, wanted: str) -> None:
    """pv-grub's ``--vtpm-label`` rule (`policy.vtpm_label_matches`), before any
    command reaches the vTPM."""
    label = backend_label(transport, address)
    if not vtpm_label_matches(label, wanted):
        raise MeasuredBootError(f"mismatched vtpm label: {label!r} != {wanted!r}")


def open_vtpm(
    policy: MeasurePolicy,
    connect: Connect,
    *,
    warn: Callable[[str], None] = warn,
    debug: Callable[[str], None] = _quiet,
) -> VtpmSession:
    """The vTPM of *policy*, reached with *connect* and checked (label,
    version, PCR 4/5 at reset), or an unmeasured session under pv-grub's
    policy; *warn* gets what the admin should read when the boot goes ahead
    unmeasured, *debug* each step."""
    default_banks = DEFAULT_BANKS if policy.tpm2 else (SHA1,)
    if policy.vtpm is None:
        warn("no --vtpm given: booting unmeasured")
        return VtpmSession(None, default_banks, policy.tpm2)
    from pvgrub_py.tpm.client import TpmClient
    from pvgrub_py.tpm.uri import parse_vtpm_uri

    def unavailable(e: PvgrubError) -> VtpmSession:
        if policy.measurement_required:
            raise MeasuredBootError(
                f"vTPM {policy.vtpm} unavailable and a measured boot is required: {e}"
            ) from None
        warn(f"vTPM {policy.vtpm} unavailable ({e}): booting unmeasured")
        return VtpmSession(None, default_banks, policy.tpm2)

    try:
        address = parse_vtpm_uri(policy.vtpm)
        transport = connect(address, policy.uuid, policy.timeout)
    except PvgrubError as e:
        return unavailable(e)
    try:
        if policy.label is not None:
            check_vtpm_label(transport, address, policy.label)
        client = TpmClient(transport)
    except MeasuredBootError:
        transport.close()
        raise
    except PvgrubError as e:
        transport.close()
        return unavailable(e)
    except BaseException:
        transport.close()
        raise
    try:
        tpm2 = client.version == "2.0"
        if policy.tpm2 and not tpm2:
            raise MeasuredBootError(
                f"vTPM {policy.vtpm} is a TPM {client.version}, --tpm2 asked for 2.0"
            )
        banks = client.active_banks()
        debug(f"vTPM {policy.vtpm}: TPM {client.version}, banks "
              f"{', '.join(b.name for b in banks)}")  # fmt: skip
        check_reset_pcrs(client, banks, policy.vtpm)
        debug("vTPM PCR 4 and 5 are at their reset values in every bank")
    except BaseException:
        client.close()
        raise
    return VtpmSession(client, banks, tpm2, policy.measurement_required)


def measure_into(
    session: VtpmSession,
    measurements: Sequence[Measurement],
    *,
    event_log: bytes | None = None,
    debug: Callable[[str], None] = _quiet,
    warn: Callable[[str], None] = warn,
) -> bool:
    """Extend; True if measured.  Any TPM failure of an extend is fatal.

    *event_log*, the serialised log of these measurements, is delivered to
    the guest in a TPM 2.0 vTPM's NV memory (see the module docstring); None
    delivers nothing.  *warn* gets a delivery that failed when no measured
    boot is required.
    """
    if session.client is None:
        return False
    from pvgrub_py.measure.extend import extend_measurements
    from pvgrub_py.tpm.errors import TpmError

    delivery = None
    if event_log is not None:
        delivery = _prepare_delivery(session, session.client, len(event_log), debug, warn)
    try:
        extend_measurements(session.client, measurements)
    except TpmError as e:
        raise MeasuredBootError(f"measurement failed, not booting: {e}") from None
    for m in measurements:
        digests = ", ".join(f"{bank} {d.hex()}" for bank, d in m.digests.items())
        debug(f"extended PCR {m.pcr} with the {m.what}: {digests}")
    if delivery is not None and event_log is not None:
        from pvgrub_py.eventlog.nv_channel import deliver

        try:
            deliver(delivery, event_log)
        except PvgrubError as e:
            _delivery_failed(session, e, warn)
        else:
            debug(f"event log ({len(event_log)} bytes) delivered in the vTPM's NV memory, "
                  "platform hierarchy disabled")  # fmt: skip
    return True


def _delivery_failed(session: VtpmSession, e: PvgrubError, warn: Callable[[str], None]) -> None:
    what = f"the event log cannot be delivered to the guest in the vTPM's NV memory: {e}"
    if session.required:
        raise MeasuredBootError(f"{what}; not booting") from None
    warn(f"{what}; booting without it")


def clear_nv_range(session: VtpmSession, debug: Callable[[str], None] = _quiet) -> None:
    """The part of the event log's NV delivery that needs no log (the TPM's
    limits, pvgrub-py's range cleared: ~0.7 ms of TPM commands), done now:
    the bootloader calls it while its parser child is still parsing, off
    the path from the last byte hashed to the boot.  Nothing is defined or
    written, and no PCR moves; a failure is kept for `measure_into` to
    report where it would have met it (`session.nv_range`)."""
    if session.client is None or not session.tpm2:
        return
    from pvgrub_py.eventlog.nv_channel import clear_range

    try:
        session.nv_range = clear_range(session.client)
    except PvgrubError as e:
        session.nv_range = e
        debug(f"event log NV range not cleared: {e}")
    else:
        debug("event log NV range cleared ahead of the extract (its indices are defined "
              "after it)")  # fmt: skip


def _prepare_delivery(
    session: VtpmSession, client: TpmClient, size: int,
    debug: Callable[[str], None], warn: Callable[[str], None],
) -> NvDelivery | None:  # fmt: skip
    """The NV indices for a log of *size* bytes, defined before the first extend."""
    if not session.tpm2:
        debug("TPM 1.2: no NV channel for the event log, the guest gets none")
        return None
    from pvgrub_py.eventlog.nv_channel import define_store, prepare_store

    cleared = session.nv_range
    if isinstance(cleared, PvgrubError):
        _delivery_failed(session, cleared, warn)
        return None
    try:
        if cleared is None:
            delivery = prepare_store(client, size)
        else:
            delivery = define_store(client, cleared, size)
    except PvgrubError as e:
        _delivery_failed(session, e, warn)
        return None
    debug(f"NV indices defined for the event log ({size} bytes)")
    return delivery
