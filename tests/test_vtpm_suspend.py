"""``pvgrubctl vtpm suspend|resume``: a guest's vTPM frontend lets go before ``xl save``.

On the simulator, vtpmd in its own process with a real swtpm, the guest's
pvgrub-guest-tpm a `GuestTpmBridge` in a thread.  The save/restore itself
(new domid, export and import) is in test_vtpm_export_running.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pvgrubctl_run import run as pvgrubctl
from test_guest_tpm_bridge import Running, measure_from_dom0, rc_of
from test_vtpm_tpmif import Vtpmd, guest_with_vtpm

from pvgrub_py.errors import PvgrubError
from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host, wait_until
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.vtpm.bridge_driver import GuestTpmBridge
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.vtpm.suspend import NODE, frontend_dir

pytestmark = [pytest.mark.integration, pytest.mark.swtpm]

GET_RANDOM = bytes.fromhex("80010000000c0000017b0010")
#: TPM_RC_FAILURE (TPM 2.0 Part 2, 6.6.3): the bridge's answer while it has no vTPM.
TPM_RC_FAILURE = 0x101


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vsus") as h:
        yield h


@pytest.fixture
def vtpmd(host: SimHost, tmp_path: Path) -> Iterator[Vtpmd]:
    vtpmd = Vtpmd(host, tmp_path / "vtpm-state", tpm2=True)
    yield vtpmd
    vtpmd.stop()


def vtpm(host: SimHost, *argv: str) -> subprocess.CompletedProcess[str]:
    return pvgrubctl("vtpm", *argv, "--sim", str(host.dir), timeout=60)


def test_suspend_lets_go_and_resume_reconnects_with_the_same_pcrs(
    host: SimHost, vtpmd: Vtpmd
) -> None:
    guest = guest_with_vtpm(host)
    measure_from_dom0(host, b"kernel")
    with host.attach(guest, host.token(guest)) as hv:
        running = Running(hv, timeout=5)
        try:
            before = TpmClient(running.kernel, version="2.0").read_pcrs([4])
            with host.dom0.xenstore() as xs:
                xs.write(f"/local/domain/{guest}/name", b"guest-a")
            r = vtpm(host, "suspend", "guest-a")  # by name, as xl takes it
            assert r.returncode == 0, r.stderr
            assert f"domain {guest}: vTPM frontend device/vtpm/0 let go in" in r.stdout
            assert running.bridge.parked and running.bridge.front is None
            # Parked: answered at once with a failure, and no reconnect behind our back.
            started = time.monotonic()
            assert rc_of(running.kernel.transmit(GET_RANDOM)) == TPM_RC_FAILURE
            assert time.monotonic() - started < 1.0
            time.sleep(1.5)  # a reconnect attempt would have happened by now
            assert running.bridge.front is None and running.bridge.connects == 1
            r = vtpm(host, "resume", str(guest))
            assert r.returncode == 0, r.stderr

            def works() -> bool:
                return rc_of(running.kernel.transmit(GET_RANDOM)) == 0

            assert wait_until(works, timeout=20, step=0.2), running.lines
            assert running.bridge.connects == 2
            assert TpmClient(running.kernel, version="2.0").read_pcrs([4]) == before
            with host.dom0.xenstore() as xs:
                assert xs.read(f"{frontend_dir(guest, 0)}/{NODE}") is None
        finally:
            running.close()


def test_a_frontend_that_does_not_let_go_fails_in_time_and_the_request_is_withdrawn(
    host: SimHost, vtpmd: Vtpmd
) -> None:
    """A frontend that ignores the request (the kernel's xen-tpmfront, or a guest
    that will not): one line, exit 1, and no request left behind."""
    guest = guest_with_vtpm(host)
    measure_from_dom0(host, b"kernel")
    with (
        host.attach(guest, host.token(guest)) as hv,
        TpmFront(hv, timeout=10).connect() as front,
    ):
        started = time.monotonic()
        r = vtpm(host, "suspend", str(guest), "--timeout", "1")
        assert time.monotonic() - started < 10
        assert r.returncode == 1, r.stdout
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert "did not let go within 1 s" in r.stderr and "Do not save" in r.stderr
        with host.dom0.xenstore() as xs:
            assert xs.read(f"{frontend_dir(guest, 0)}/{NODE}") is None
        assert rc_of(front.transmit(GET_RANDOM)) == 0  # untouched


def test_a_restore_under_the_same_domid_abandons_the_stale_port(
    host: SimHost, vtpmd: Vtpmd
) -> None:
    """A restored or migrated domain can get its old domid back (the first guest on
    a fresh host), so the bridge decides from its own ring, not the domid: the
    toolstack made the device anew (no ring-ref or event-channel of ours, state
    Initialising), so the port is abandoned, never unbound (on Linux, a kernel
    BUG) and nothing is written into the new device directory.  A plain backend
    restart keeps our ring published: that case closes and unbinds as before."""
    guest = guest_with_vtpm(host)
    measure_from_dom0(host, b"kernel")
    with host.attach(guest, host.token(guest)) as hv:
        running = Running(hv, timeout=2)
        try:
            front = running.bridge.front
            assert front is not None and front.still_published()
            evtchn = front._evtchn
            assert evtchn is not None
            touched: list[str] = []
            real_unbind, real_close = evtchn.unbind, evtchn.close
            evtchn.unbind = lambda port: (touched.append("unbind"), real_unbind(port))[1]  # type: ignore[method-assign]
            evtchn.close = lambda: (touched.append("close"), real_close())[1]  # type: ignore[method-assign]
            node = frontend_dir(guest, 0)
            with host.dom0.xenstore() as xs:  # what libxl writes for the restored domain
                xs.rm(f"{node}/ring-ref")
                xs.rm(f"{node}/event-channel")
                xs.write(f"{node}/state", b"1")
            assert not front.still_published()
            vtpmd.stop()  # the old backend is gone with the old domain
            assert rc_of(running.kernel.transmit(GET_RANDOM)) == TPM_RC_FAILURE

            def let_go() -> bool:  # the bridge drops the connection after answering
                return any("saved or migrated with its vTPM connected" in x for x in running.lines)

            assert wait_until(let_go, timeout=10, step=0.1), running.lines
            assert running.bridge.front is None
            assert touched == [], touched
            with host.dom0.xenstore() as xs:
                # The old connection's close (Closing, Closed) never reached the new
                # device; a new connection attempt to it may have begun (Initialised).
                assert xs.read(f"{node}/state") in (b"1", b"3"), xs.read(f"{node}/state")
        finally:
            running.close()


def test_a_daemon_started_while_the_request_stands_does_not_connect(
    host: SimHost, vtpmd: Vtpmd
) -> None:
    """A daemon (re)started while dom0 waits for a save must not publish a ring."""
    guest = guest_with_vtpm(host)
    with host.dom0.xenstore() as xs:
        xs.write(f"{frontend_dir(guest, 0)}/{NODE}", b"1")
    with host.attach(guest, host.token(guest)) as hv:
        bridge = GuestTpmBridge(hv, 0, timeout=5)
        with pytest.raises(PvgrubError, match="asked it to let go"):
            bridge.connect(wait=5)
        assert bridge.front is None
        bridge.close()
    with host.dom0.xenstore() as xs:
        assert xs.read(f"{frontend_dir(guest, 0)}/event-channel") is None


@pytest.mark.parametrize(
    ("domain", "why"),
    [("no-such-guest", "no running domain named 'no-such-guest'"), ("77", "has no vTPM device 0")],
)
def test_a_domain_without_a_vtpm_is_one_line(host: SimHost, domain: str, why: str) -> None:
    r = vtpm(host, "suspend", domain)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert why in r.stderr and "Traceback" not in r.stderr
