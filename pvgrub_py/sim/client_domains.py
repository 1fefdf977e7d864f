"""Domain control of a simulated host (libxenctrl's ``xc_domain_*``).

Anyone can hold one; only dom0's calls succeed (EPERM otherwise), as opening privcmd
in a guest succeeds and its domctls fail.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from pvgrub_py.sim.connection import HostConnection
from pvgrub_py.sim.protocol import Frame, Op
from pvgrub_py.xen.interface import DomainConfig, DomainInfo, XenError, XsmNotEnabledError

_INFO_ARGS = 7


def _infos(args: Sequence[int], handles: bytes) -> list[DomainInfo]:
    result = []
    for i in range(len(args) // _INFO_ARGS):
        domid, paused, dying, shutdown, max_memkb, tot_pages, max_vcpus = args[
            i * _INFO_ARGS : (i + 1) * _INFO_ARGS
        ]
        result.append(
            DomainInfo(
                domid=domid,
                paused=bool(paused),
                dying=bool(dying),
                shutdown=bool(shutdown),
                max_memkb=max_memkb,
                tot_pages=tot_pages,
                max_vcpus=max_vcpus,
                handle=handles[i * 16 : (i + 1) * 16],
            )
        )
    return result


def xsm_call(
    conn: HostConnection, op: Op, args: Sequence[int], data: bytes, *, function: str
) -> Frame:
    """An ``xsm_op``: ENOSYS from the host means it runs without FLASK."""
    try:
        frame, _ = conn.call(op, args, data, function=function)
    except XenError as e:
        if e.errno == errno.ENOSYS:
            raise XsmNotEnabledError(function, e.message) from None
        raise
    return frame


class SimDomainControl:
    def __init__(self, conn: HostConnection) -> None:
        self._conn = conn

    def create(self, config: DomainConfig) -> int:
        handle = bytes(config.handle)
        frame, _ = self._conn.call(
            Op.DOM_CREATE,
            [config.max_vcpus, config.max_memkb, int(config.pvh), len(handle)],
            handle + config.name.encode(),
            function="xc_domain_create",
        )
        return frame.args[0]

    def destroy(self, domid: int) -> None:
        self._conn.call(Op.DOM_DESTROY, [domid], function="xc_domain_destroy")

    def pause(self, domid: int) -> None:
        self._conn.call(Op.DOM_PAUSE, [domid], function="xc_domain_pause")

    def unpause(self, domid: int) -> None:
        self._conn.call(Op.DOM_UNPAUSE, [domid], function="xc_domain_unpause")

    def info(self, domid: int) -> DomainInfo:
        frame, _ = self._conn.call(Op.DOM_INFO, [domid], function="xc_domain_getinfo")
        return _infos(frame.args, frame.data)[0]

    def list_domains(self) -> Sequence[DomainInfo]:
        frame, _ = self._conn.call(Op.DOM_LIST, function="xc_domain_getinfolist")
        return _infos(frame.args, frame.data)

    def set_max_memory(self, domid: int, max_memkb: int) -> None:
        self._conn.call(Op.DOM_SET_MAXMEM, [domid, max_memkb], function="xc_domain_setmaxmem")

    def set_max_vcpus(self, domid: int, max_vcpus: int) -> None:
        self._conn.call(Op.DOM_SET_MAXVCPUS, [domid, max_vcpus], function="xc_domain_max_vcpus")

    def alloc_unbound_in(self, domid: int, remote_domid: int) -> int:
        """``xc_evtchn_alloc_unbound(domid, remote)``: a port *in* ``domid`` that
        ``remote`` may bind, owned by no process (the toolstack's xenstore port)."""
        frame, _ = self._conn.call(
            Op.DOM_ALLOC_UNBOUND, [domid, remote_domid], function="xc_evtchn_alloc_unbound"
        )
        return frame.args[0]

    def set_xsm_label(self, domid: int, label: str) -> None:
        """Give ``domid`` the FLASK context ``label`` (the simulator's stand-in for
        libxl's ``seclabel=``; on Xen, ``xc_flask_context_to_sid`` then the SID at
        create, or ``xc_flask_relabel_domain``).  dom0 only; `XsmNotEnabledError`
        on a host without FLASK; EINVAL for a malformed context."""
        xsm_call(
            self._conn, Op.XSM_SET_LABEL, [domid], label.encode("utf-8", "surrogateescape"),
            function="xc_flask_relabel_domain",
        )  # fmt: skip
