"""``--vtpm-label`` in the measurement code, with stand-in transports: what is read,
when (before any TPM command), and every way it fails closed."""

from __future__ import annotations

import errno

import pytest

from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.measure import vtpm as measure
from pvgrub_py.measure.vtpm import MeasuredBootError, backend_label, check_vtpm_label
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.uri import parse_vtpm_uri
from pvgrub_py.xen.interface import XenError, XsmNotEnabledError

VTPM = "system_u:system_r:vtpm_t"
XEN = parse_vtpm_uri("xen:3")
SWTPM = parse_vtpm_uri("swtpm:unix:/run/vtpm.sock")


class Transport:
    """A transport that records what it is asked; ``label`` is a label or an error."""

    def __init__(self, label: str | Exception = VTPM) -> None:
        self.label = label
        self.sent: list[bytes] = []
        self.closed = 0

    def transmit(self, command: bytes) -> bytes:
        self.sent.append(command)
        raise TpmTransportError("the stand-in vTPM does not answer")

    def close(self) -> None:
        self.closed += 1


class LabelledTransport(Transport):
    def peer_label(self) -> str:
        if isinstance(self.label, Exception):
            raise self.label
        return self.label


def test_the_label_is_the_transports_peer_label() -> None:
    assert backend_label(LabelledTransport(), XEN) == VTPM
    check_vtpm_label(LabelledTransport(), XEN, VTPM)
    check_vtpm_label(LabelledTransport(), XEN, "*:system_r:vtpm_t")
    check_vtpm_label(LabelledTransport(), XEN, "*_t")


@pytest.mark.parametrize(
    "wanted", ["system_u:system_r:dom0_t", "*:dom0_t", f"*{VTPM}", VTPM + " ", "vtpm_t"]
)
def test_a_mismatch_names_both_labels(wanted: str) -> None:
    with pytest.raises(MeasuredBootError) as caught:
        check_vtpm_label(LabelledTransport(), XEN, wanted)
    assert str(caught.value) == f"mismatched vtpm label: {VTPM!r} != {wanted!r}"


def test_a_swtpm_vtpm_has_no_label() -> None:
    with pytest.raises(MeasuredBootError) as caught:
        backend_label(Transport(), SWTPM)
    assert str(caught.value) == (
        "cannot verify vtpm label of swtpm:unix:/run/vtpm.sock: a swtpm: vTPM has no XSM label"
    )
    with pytest.raises(MeasuredBootError, match="a swtpm: vTPM has no XSM label"):
        backend_label(LabelledTransport(), SWTPM)  # whatever the transport claims


def test_a_host_without_flask_says_so() -> None:
    no_xsm = XsmNotEnabledError("xc_flask_op", "XSM/FLASK is not enabled on this host (port 5)")
    with pytest.raises(MeasuredBootError) as caught:
        check_vtpm_label(LabelledTransport(no_xsm), XEN, VTPM)
    assert str(caught.value) == (
        "cannot verify vtpm label of xen:3/0: XSM/FLASK is not enabled on this host"
    )


@pytest.mark.parametrize(
    "error",
    [
        XenError(errno.EINVAL, "xc_flask_op", "port 5 of d0 is not bound to a peer"),
        XenError(errno.EACCES, "xc_flask_sid_to_context", "FLASK_SID_TO_CONTEXT of sid 12"),
        TpmTransportError("vTPM /local/domain/0/device/vtpm/7 is not connected"),
    ],
)
def test_any_other_failure_to_read_the_label_fails_closed(error: Exception) -> None:
    with pytest.raises(MeasuredBootError) as caught:
        check_vtpm_label(LabelledTransport(error), XEN, VTPM)
    assert str(caught.value) == f"cannot verify vtpm label of xen:3/0: {error}"


def opts(**kw: object) -> BootloaderOptions:
    base: dict[str, object] = dict(
        disk="d", vtpm="xen:3", vtpm_uuid="u", vtpm_label=VTPM, vtpm_timeout=1.0
    )
    base.update(kw)
    return BootloaderOptions(**base)  # type: ignore[arg-type]


@pytest.fixture
def opened() -> list[Transport]:
    """`connect` returns the next stand-in of this list."""
    return []


def open_vtpm(options: BootloaderOptions, queue: list[Transport]) -> measure.VtpmSession:
    """`measure.open_vtpm` as the bootloader calls it, reaching the stand-ins of *queue*."""

    def connect(address: object, uuid: object, timeout: float) -> Transport:
        return queue.pop(0)

    return measure.open_vtpm(options.measure_policy(), connect)  # type: ignore[arg-type]


def test_open_vtpm_checks_the_label_before_any_tpm_command(opened: list[Transport]) -> None:
    wrong = LabelledTransport("system_u:system_r:evil_t")
    opened.append(wrong)
    with pytest.raises(MeasuredBootError, match="mismatched vtpm label"):
        open_vtpm(opts(), opened)
    assert wrong.sent == [] and wrong.closed == 1
    right = LabelledTransport()
    opened.append(right)
    # The label matches, so the vTPM is asked its version: this one does not answer.
    with pytest.raises(MeasuredBootError, match="unavailable and a measured boot is required"):
        open_vtpm(opts(), opened)
    assert len(right.sent) == 1 and right.closed == 1


def test_open_vtpm_without_a_label_never_asks_for_one(opened: list[Transport]) -> None:
    # A host without FLASK is no obstacle when no label is asked for.
    quiet = LabelledTransport(XsmNotEnabledError("xc_flask_op"))
    opened.append(quiet)
    session = open_vtpm(opts(vtpm_label=None, require_vtpm=False), opened)
    assert session.client is None  # unmeasured, with a warning: it does not answer
    assert len(quiet.sent) == 1 and quiet.closed == 1


def test_a_frontend_has_no_peer_before_it_connects() -> None:
    from pvgrub_py.vtpm.frontend import TpmFront

    class NoHypervisor:
        domid = 0

        def evtchn_peer_label(self, port: int) -> str:
            raise AssertionError("must not be asked")

    front = TpmFront(NoHypervisor())  # type: ignore[arg-type]
    with pytest.raises(TpmTransportError, match="not connected"):
        front.peer_label()
