"""Asking a guest's vTPM frontend to let go before ``xl save``.

A guest saved while its userspace tpmif frontend (``pvgrub-guest-tpm``) is
connected cannot let that connection go cleanly after ``xl restore``: the
restore drops every interdomain event-channel binding of the guest kernel
(Linux ``xen_irq_resume``, drivers/xen/events/events_base.c), and the
evtchn driver then hits ``BUG_ON(irq < 0)`` when the frontend unbinds its
stale port (drivers/xen/evtchn.c, ``evtchn_unbind_from_user``), or, if the
restored kernel reused the port number, tears down one of its own channels.
So the toolstack asks first, and saves once the frontend has let go:

* dom0 writes ``/local/domain/D/device/vtpm/N/pvgrub-suspend = 1``
  (`request`), a node of the frontend's own device directory;
* the guest's daemon sees it within a quarter of a second, closes its ring
  (unbinding its port while that is still safe), writes
  ``pvgrub-suspended = 1`` (`acknowledge`) and stays disconnected, its chip
  answering TPM_RC_FAILURE, while the request stands;
* `request` returns once that answer is there and the frontend's
  ``event-channel`` node is gone; ``xl save`` follows.  A frontend that
  does not answer (the kernel's xen-tpmfront, an older daemon) makes it
  fail after its timeout, the request withdrawn.

The restored domain is a new one, without the node, so the daemon connects
to it at once.  `cancel` removes the node (no save after all): the daemon
reconnects.  The vTPM instance itself is untouched throughout: its PCRs stay
in the running swtpm, for ``pvgrubctl vtpm export``.
"""

from __future__ import annotations

import contextlib
import time

from pvgrub_py.errors import PvgrubError
from pvgrub_py.vtpm.xenbus import XenbusState, read_state, watch_until
from pvgrub_py.xen.interface import XenStore

#: The request node, in the frontend's device directory.
NODE = "pvgrub-suspend"
#: The frontend's answer, there too: written once its port is unbound.
ACK = "pvgrub-suspended"
#: How often the guest's daemon looks at it while idle.
POLL_SECONDS = 0.25

class SuspendError(PvgrubError):
    """The frontend did not let go in time, or there is no such device."""


def resolve_domain(xs: XenStore, domain: str) -> int:
    """A domid, or the domid of the running domain named *domain* (as xl takes either)."""
    if domain.isdigit() and len(domain) <= 5:
        return int(domain)
    for entry in xs.directory("/local/domain") or []:
        if entry.isdigit() and xs.read(f"/local/domain/{entry}/name") == domain.encode():
            return int(entry)
    raise SuspendError(f"no running domain named {domain!r}")


def frontend_dir(domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/vtpm/{devid}"


def requested(xs: XenStore, domid: int, devid: int) -> bool:
    """Whether the toolstack asks domain *domid*'s frontend *devid* to let go."""
    return (xs.read(f"{frontend_dir(domid, devid)}/{NODE}") or b"").strip() == b"1"


def acknowledge(xs: XenStore, domid: int, devid: int) -> None:
    """The frontend's answer: it let go (its port is unbound)."""
    xs.write(f"{frontend_dir(domid, devid)}/{ACK}", b"1")


def withdraw_acknowledgement(xs: XenStore, domid: int, devid: int) -> None:
    xs.rm(f"{frontend_dir(domid, devid)}/{ACK}")


def _released(xs: XenStore, node: str) -> bool:
    if (xs.read(f"{node}/{ACK}") or b"").strip() != b"1":
        return False
    if xs.read(f"{node}/event-channel") is not None:
        return False
    return read_state(xs, node) != XenbusState.CONNECTED


def request(xs: XenStore, domid: int, devid: int, timeout: float) -> float:
    """Ask, then wait until the frontend has let go; the seconds it took.
    `SuspendError` (the request withdrawn) if it has not within *timeout*."""
    node = frontend_dir(domid, devid)
    if xs.read(f"{node}/backend") is None:
        raise SuspendError(f"domain {domid} has no vTPM device {devid} ({node})")
    started = time.monotonic()
    xs.rm(f"{node}/{ACK}")  # a stale answer (an earlier request) does not count
    xs.write(f"{node}/{NODE}", b"1")
    done = None
    try:
        done = watch_until(xs, node, lambda: _released(xs, node) or None, timeout)
    finally:
        if done is None:  # timed out, interrupted, or xenstore failed: withdraw it
            with contextlib.suppress(PvgrubError):
                cancel(xs, domid, devid)
    if done is None:
        raise SuspendError(
            f"domain {domid}'s vTPM frontend ({node}) did not let go within {timeout:g} s; "
            "request withdrawn. Do not save the domain now: a guest saved with its vTPM "
            "connected crashes its kernel when it is restored"
        )
    return time.monotonic() - started


def cancel(xs: XenStore, domid: int, devid: int) -> None:
    """Withdraw the request (and any answer): the frontend reconnects."""
    xs.rm(f"{frontend_dir(domid, devid)}/{NODE}")
    xs.rm(f"{frontend_dir(domid, devid)}/{ACK}")
