"""The hypervisor interface: domains, grants, event channels, xenstore.

It is deliberately small: exactly what a vTPM frontend/backend pair and a
PV domain builder need, in the shape of the Xen libraries that provide it on
a real host (libxenctrl, libxengntshr, libxengnttab, libxenevtchn,
libxenstore), so the libxc implementation is a thin wrapper and the
simulator has no freedom to be more forgiving than Xen.

Every failing call raises `XenError(errno, function, message)`, the errno
Xen or the simulator reported, so callers can test for EPERM/ENOENT/EINVAL
the same way on both (XenError is also an OSError: ``except OSError`` sees
the same errno).  One refinement: an XSM/FLASK operation on a host
without FLASK raises `XsmNotEnabledError` (a XenError with ENOSYS), so a
caller can say why a security label cannot be had.  The hypervisor, its
handles (grant share/map, event channels, xenstore) and what they hand out
(shared pages, mapped grants) are context managers and are released on
``close()``; a released resource is never used again.  `DomainControl` is
the exception: one shared handle that the `Hypervisor` closes.

tests/test_hypervisor_contract.py holds the simulator and the libxc
implementation to the same results and errnos for the same calls.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pvgrub_py.errors import PvgrubError

PAGE_SIZE = 4096
DOMID_SELF = 0x7FF0
#: Reserved grant references (xen/include/public/grant_table.h).
GNTTAB_RESERVED_CONSOLE = 0
GNTTAB_RESERVED_XENSTORE = 1


class XenError(PvgrubError, OSError):
    """A failed hypervisor call: ``errno``, the function, and what it was doing.

    It is also an `OSError` (pyca/pynacl's and pygit2's pattern: the project's
    base class and the matching built-in), with ``errno`` and ``strerror`` as
    ``OSError(err, os.strerror(err))`` has them, so a caller may catch either:
    ``except OSError`` around a hypervisor call sees the errno Xen gave.
    ``str()`` is the one line the CLIs print: the function, what it was doing,
    the errno's text and name.
    """

    #: Always set (OSError's may be None).
    errno: int
    strerror: str

    def __init__(self, err: int, function: str, message: str = "") -> None:
        super().__init__(err, os.strerror(err) if err else "failed")
        self.function = function
        self.message = message
        name = errno_mod.errorcode.get(err, str(err))
        detail = f": {message}" if message else ""
        self._line = f"{function}{detail}: {self.strerror} ({name})"

    def __str__(self) -> str:
        return self._line


#: What a host without XSM/FLASK means for a label: Xen's dummy XSM module
#: answers every ``xsm_op`` with -ENOSYS (xen/include/xsm/dummy.h,
#: ``xsm_do_xsm_op``), as Debian's Xen does unless booted with ``flask=...``
#: and a policy.
XSM_NOT_ENABLED = "XSM/FLASK is not enabled on this host"


class XsmNotEnabledError(XenError):
    """An XSM/FLASK operation on a host whose hypervisor has no FLASK (ENOSYS)."""

    def __init__(self, function: str, message: str = XSM_NOT_ENABLED) -> None:
        super().__init__(errno_mod.ENOSYS, function, message)


# -- domains ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainConfig:
    """What ``xc_domain_create`` plus max vcpus/memory need for a PV guest."""

    max_vcpus: int = 1
    max_memkb: int = 256 * 1024
    pvh: bool = False
    handle: bytes = bytes(16)  # the xl UUID of the domain
    name: str = ""


@dataclass(frozen=True)
class DomainInfo:
    domid: int
    paused: bool
    dying: bool
    shutdown: bool
    max_memkb: int
    tot_pages: int
    max_vcpus: int
    handle: bytes


class DomainControl(Protocol):
    """libxenctrl's domain calls (``xc_domain_*``); dom0 (privileged) only."""

    def create(self, config: DomainConfig) -> int: ...
    def destroy(self, domid: int) -> None: ...
    def pause(self, domid: int) -> None: ...
    def unpause(self, domid: int) -> None: ...
    def info(self, domid: int) -> DomainInfo: ...
    def list_domains(self) -> Sequence[DomainInfo]: ...
    def set_max_memory(self, domid: int, max_memkb: int) -> None: ...
    def set_max_vcpus(self, domid: int, max_vcpus: int) -> None: ...
    def alloc_unbound_in(self, domid: int, remote_domid: int) -> int: ...


# -- grants -----------------------------------------------------------------------------


class SharedPages(Protocol):
    """Pages this domain granted to another (libxengntshr ``share_pages``)."""

    @property
    def refs(self) -> Sequence[int]: ...
    @property
    def memory(self) -> memoryview: ...  # len == PAGE_SIZE * len(refs), writable
    def close(self) -> None: ...  # end foreign access and free the pages
    def __enter__(self) -> SharedPages: ...
    def __exit__(self, *exc: object) -> None: ...


class MappedGrant(Protocol):
    """A foreign grant mapped into this domain (libxengnttab ``map_grant_ref``)."""

    @property
    def memory(self) -> memoryview: ...
    def close(self) -> None: ...  # unmap
    def __enter__(self) -> MappedGrant: ...
    def __exit__(self, *exc: object) -> None: ...


class GrantShare(Protocol):
    """A libxengntshr handle; closing it ends access to what it shared."""

    def share_pages(self, domid: int, count: int = 1, writable: bool = True) -> SharedPages: ...
    def close(self) -> None: ...
    def __enter__(self) -> GrantShare: ...
    def __exit__(self, *exc: object) -> None: ...


class GrantMap(Protocol):
    """A libxengnttab handle."""

    def map_grant(self, domid: int, ref: int, writable: bool = True) -> MappedGrant: ...
    def close(self) -> None: ...
    def __enter__(self) -> GrantMap: ...
    def __exit__(self, *exc: object) -> None: ...


# -- event channels ---------------------------------------------------------------------


class EventChannels(Protocol):
    """libxenevtchn: one handle, many local ports, one pending queue.

    ``wait`` returns the next pending local port (and masks it, as
    ``xenevtchn_pending`` does), or None on timeout; ``unmask`` re-arms it.
    ``fileno`` is readable whenever a port is pending, for select/poll.
    """

    def alloc_unbound(self, remote_domid: int) -> int: ...
    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int: ...
    def notify(self, port: int) -> None: ...
    def wait(self, timeout: float | None) -> int | None: ...
    def unmask(self, port: int) -> None: ...
    def unbind(self, port: int) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def abandon(self) -> None:
        """Let go of the handle without unbinding its ports or closing it (it
        stays open until the process exits): for ports a save/restore of this
        domain invalidated, which Linux's evtchn driver cannot unbind
        (drivers/xen/evtchn.c, ``evtchn_unbind_from_user``: ``BUG_ON(irq < 0)``,
        since ``xen_irq_resume`` in events_base.c drops every interdomain
        binding), and whose numbers the restored kernel may have reused for
        its own channels."""
        ...

    def __enter__(self) -> EventChannels: ...
    def __exit__(self, *exc: object) -> None: ...


# -- xenstore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchEvent:
    path: str
    token: str


@runtime_checkable
class XenStore(Protocol):
    """The xenstore operations the vTPM code and the builder use.

    Values are bytes.  Paths are absolute or relative to this domain's home
    (``/local/domain/<domid>``), as in xs_wire.
    """

    def read(self, path: str) -> bytes | None: ...  # None: no such node
    def write(self, path: str, value: bytes) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def rm(self, path: str) -> None: ...
    def directory(self, path: str) -> list[str] | None: ...  # XS_DIRECTORY
    def get_perms(self, path: str) -> list[str]: ...
    def set_perms(self, path: str, perms: Sequence[str]) -> None: ...
    def get_domain_path(self, domid: int) -> str: ...
    def introduce_domain(self, domid: int, mfn: int, port: int) -> None: ...
    def release_domain(self, domid: int) -> None: ...
    def watch(self, path: str, token: str) -> None: ...
    def unwatch(self, path: str, token: str) -> None: ...
    def wait_event(self, timeout: float | None) -> WatchEvent | None: ...
    def close(self) -> None: ...
    def __enter__(self) -> XenStore: ...
    def __exit__(self, *exc: object) -> None: ...


# -- the whole host, as seen from one domain --------------------------------------------


class Hypervisor(Protocol):
    """Everything one domain can reach.  ``domid`` is who we act as.

    ``evtchn_peer_label(port)`` is the XSM (FLASK) security context of the
    domain at the other end of ``port``, a local port of this domain: what
    Mini-OS ``evtchn_get_peercontext`` reads with two ``xsm_op`` calls,
    ``FLASK_GET_PEER_SID`` on the port, then ``FLASK_SID_TO_CONTEXT``
    (xen/include/public/xsm/flask_op.h).  As in Xen (``flask_get_peer_sid``,
    xen/xsm/flask/flask_op.c), only a bound interdomain port has a peer: a
    free or unbound port is EINVAL.  Without FLASK it raises
    `XsmNotEnabledError`.  It is a call on the domain, not on an event
    channel handle, because FLASK looks the port up in the calling domain's
    table, whichever handle bound it.
    """

    @property
    def domid(self) -> int: ...
    def domains(self) -> DomainControl: ...
    def grant_share(self) -> GrantShare: ...
    def grant_map(self) -> GrantMap: ...
    def event_channels(self) -> EventChannels: ...
    def xenstore(self) -> XenStore: ...
    def evtchn_peer_label(self, port: int) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Hypervisor: ...
    def __exit__(self, *exc: object) -> None: ...
