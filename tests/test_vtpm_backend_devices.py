"""VtpmBackend as a driver: one lock per device, and the answers it makes itself.

The old backend held one lock over every device while a TPM executed, so one
slow TPM (a TPM 1.2 self-test takes 24 s under QEMU TCG) stalled every guest;
its error answers were hand-made bytes, and an answer larger than the page
was cut to 4088 bytes (a malformed answer for the guest).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.tpm import tpm12
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.tpm.swtpm import SwtpmTransport
from pvgrub_py.vtpm.backend import FrontendLink, VtpmBackend
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.instances import VtpmInstances

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

UUID_A = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
UUID_B = "8b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"
SLOW = 3.0
#: TPM_FAIL (TPM Main Part 2 section 16, code 9) in a 10-byte TPM 1.2 answer, by hand.
TPM12_FAIL_ANSWER = bytes.fromhex("00c4" "0000000a" "00000009")
#: TPM_RC_FAILURE (TPM 2.0 Part 2 section 6.6.3, 0x101), tag TPM_ST_NO_SESSIONS.
TPM2_FAILURE_ANSWER = bytes.fromhex("8001" "0000000a" "00000101")


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmdev") as h:
        yield h


def guest_with_vtpm(host: SimHost, uuid: str) -> int:
    guest = host.create_domain()
    with host.dom0.xenstore() as xs:
        add_vtpm_device(xs, VtpmDevice(guest, 0, 0, uuid))
    return guest


class SlowTpm:
    """A real swtpm behind a TPM that takes ``SLOW`` seconds per command once armed."""

    def __init__(self, transport: SwtpmTransport) -> None:
        self.transport = transport
        self.armed = False
        self.started = threading.Event()

    def transmit(self, command: bytes) -> bytes:
        if self.armed:
            self.started.set()
            time.sleep(SLOW)
        return self.transport.transmit(command)

    def close(self) -> None:
        self.transport.close()


def test_a_slow_tpm_for_one_guest_does_not_stall_another(host: SimHost) -> None:
    guest_a = guest_with_vtpm(host, UUID_A)
    guest_b = guest_with_vtpm(host, UUID_B)
    digest = hashlib.sha1(b"kernel").digest()
    with SwtpmProcess() as tpm_a, SwtpmProcess() as tpm_b, host.attach(0) as dom0:
        slow, fast = SlowTpm(tpm_a.transport()), tpm_b.transport()

        def instance_for(link: FrontendLink) -> SlowTpm | SwtpmTransport:
            return slow if link.frontend_domid == guest_a else fast

        with (
            VtpmBackend(dom0, instance_for),
            host.attach(guest_a, host.token(guest_a)) as hv_a,
            host.attach(guest_b, host.token(guest_b)) as hv_b,
            TpmFront(hv_a, timeout=SLOW + 10).connect() as front_a,
            TpmFront(hv_b, timeout=10).connect() as front_b,
        ):
            client_a = TpmClient(front_a, version="1.2")
            client_b = TpmClient(front_b, version="1.2")
            slow.armed = True
            a_done = threading.Event()
            a_failed: list[BaseException] = []

            def guest_a_extends() -> None:
                try:
                    client_a.extend(4, {"sha1": digest})
                except BaseException as e:  # reported below, in the test's thread
                    a_failed.append(e)
                finally:
                    a_done.set()

            a = threading.Thread(target=guest_a_extends)
            t_a = time.monotonic()
            a.start()
            assert slow.started.wait(10)
            latencies = []
            for _ in range(20):
                t0 = time.monotonic()
                client_b.extend(4, {"sha1": digest})
                latencies.append(time.monotonic() - t0)
            b_finished = time.monotonic() - t_a
            b_before_a = not a_done.is_set()
            a.join(SLOW + 15)
            a_took = time.monotonic() - t_a
            print(f"\nguest A: 1 extend on a {SLOW:g} s TPM took {a_took:.2f} s; guest B: 20 "
                  f"extends meanwhile, max {max(latencies) * 1000:.1f} ms, "
                  f"total {sum(latencies) * 1000:.1f} ms, all done {b_finished:.2f} s "
                  f"after A started")  # fmt: skip
            assert not a_failed, a_failed
            assert b_before_a, "guest B waited for guest A's TPM"
            assert max(latencies) < 1.0


def test_a_slow_connect_for_one_guest_does_not_stall_another(host: SimHost) -> None:
    """The connect policy (vtpmd's power cycle: 24 s for TPM 1.2 under TCG) runs
    on the device's worker, not under a lock every device needs."""
    guest_a = guest_with_vtpm(host, UUID_A)
    guest_b = guest_with_vtpm(host, UUID_B)
    started = threading.Event()

    def slow_power_cycle(link: FrontendLink) -> None:
        if link.frontend_domid == guest_a:
            started.set()
            time.sleep(SLOW)

    with SwtpmProcess() as tpm, host.attach(0) as dom0:
        transport = tpm.transport()
        with (
            VtpmBackend(dom0, lambda link: transport, on_connect=slow_power_cycle),
            host.attach(guest_a, host.token(guest_a)) as hv_a,
            host.attach(guest_b, host.token(guest_b)) as hv_b,
        ):
            front_a = TpmFront(hv_a, timeout=SLOW + 10)
            a = threading.Thread(target=front_a.connect)
            a.start()
            try:
                assert started.wait(10)
                t0 = time.monotonic()
                with TpmFront(hv_b, timeout=10).connect() as front_b:
                    TpmClient(front_b, version="1.2").read_pcrs([0])
                took = time.monotonic() - t0
                print(f"\nguest B connected and read a PCR in {took * 1000:.0f} ms "
                      f"while guest A's connect policy ran for {SLOW:g} s")  # fmt: skip
                assert took < SLOW - 1
            finally:
                a.join(SLOW + 15)
                front_a.close()


class Answers:
    """A TPM that answers ``answer``, or fails; labelled with ``tpm_version``."""

    def __init__(self, answer: bytes | None, tpm_version: str | None = None) -> None:
        self.answer = answer
        self.tpm_version = tpm_version

    def transmit(self, command: bytes) -> bytes:
        if self.answer is None:
            raise TpmTransportError("swtpm 127.0.0.1:1: connection reset")
        return self.answer

    def close(self) -> None:
        pass


def test_an_answer_larger_than_the_page_is_an_error_answer_and_a_log_line(
    host: SimHost, caplog: pytest.LogCaptureFixture
) -> None:
    guest = guest_with_vtpm(host, UUID_A)
    # A well-formed 5000-byte TPM 1.2 answer: more than the 4088 the page carries.
    huge = bytes.fromhex("00c4" "00001388" "00000000") + bytes(5000 - 10)
    caplog.set_level(logging.WARNING, logger="pvgrub_py.vtpm.backend")
    with host.attach(0) as dom0, VtpmBackend(dom0, lambda link: Answers(huge)) as backend:
        with (
            host.attach(guest, host.token(guest)) as hv,
            TpmFront(hv, timeout=10).connect() as front,
        ):
            assert front.transmit(tpm12.build_pcr_read(0)) == TPM12_FAIL_ANSWER
        errors = backend.links[(guest, 0)].errors
    assert any("5000-byte TPM answer exceeds the 4088-byte tpmif page" in e for e in errors)
    assert "5000-byte TPM answer exceeds" in caplog.text


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.2", TPM12_FAIL_ANSWER), ("2.0", TPM2_FAILURE_ANSWER), (None, TPM12_FAIL_ANSWER)],
)
def test_a_failed_instance_answers_in_its_own_version(
    host: SimHost, version: str | None, expected: bytes
) -> None:
    """A TPM 1.2 command to a failed TPM 2.0 instance gets a TPM 2.0 failure (the
    old backend looked at the command's tag); with no version known, the tag."""
    guest = guest_with_vtpm(host, UUID_A)
    with (
        host.attach(0) as dom0,
        VtpmBackend(dom0, lambda link: Answers(None, version)),
        host.attach(guest, host.token(guest)) as hv,
        TpmFront(hv, timeout=10).connect() as front,
    ):
        assert front.transmit(tpm12.build_pcr_read(0)) == expected


@pytest.mark.parametrize("tpm2", [False, True], ids=["tpm12", "tpm20"])
def test_vtpmd_instances_say_their_version(tmp_path: Path, tpm2: bool) -> None:
    instances = VtpmInstances(str(tmp_path), tpm2=tpm2, provision_unknown=True)
    try:
        link = FrontendLink(3, 0, "/local/domain/0/backend/vtpm/3/0", uuid=UUID_A)
        transport = instances.transport_for(link)
        assert transport.tpm_version == ("2.0" if tpm2 else "1.2")
        # ... and it is the instance's TPM: it answers in that version.
        answer = transport.transmit(tpm12.build_pcr_read(0))
        assert answer[:2] == (b"\x80\x01" if tpm2 else b"\x00\xc4")
    finally:
        instances.stop()
