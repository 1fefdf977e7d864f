"""The simulated host's XSM: off, as on Debian's Xen, or FLASK with a label per domain.

Off (the default): Xen's dummy XSM module answers every ``xsm_op`` with
-ENOSYS (xen/include/xsm/dummy.h, ``xsm_do_xsm_op``), so asking for a label
raises `XsmNotEnabledError`.  That is what a stock Debian Xen 4.17 does: it
runs FLASK only when booted with ``flask=enforcing`` (or ``permissive``) and
a policy.

On: every domain has a security context.  A domain created without one gets
what Xen's example policy gives a domain without ``seclabel=``: the initial
SIDs ``dom0`` and ``domU``, whose contexts are `DOM0_LABEL` and `DOMU_LABEL`
(tools/flask/policy, docs/misc/xsm-flask.txt).  ``--xsm-label DOMID=CONTEXT``
on the host's command line labels a domain by domid: dom0 at start, any other
domain when it is created with that domid.  The toolstack may also label a
domain it creates (libxl's ``seclabel=``, `Machine.set_xsm_label`).

What the simulator does not model: the policy itself.  Every context of the
right shape is accepted and every domain may read every label (on Xen,
``FLASK_SID_TO_CONTEXT`` needs the caller's ``security:check_context``
permission, which the example policy grants dom0).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pvgrub_py.errors import UsageError
from pvgrub_py.xen.interface import XenError

DOM0_LABEL = "system_u:system_r:dom0_t"
DOMU_LABEL = "system_u:system_r:domU_t"
#: Xen copies a context from a guest into at most a page.
MAX_LABEL = 4096
#: user:role:type, then an optional MLS/MCS range (which may hold colons).
_CONTEXT = re.compile(r"[^\s:]+:[^\s:]+:[^\s:]+(:\S+)?")


def check_label(label: str, function: str) -> str:
    """EINVAL for what ``FLASK_CONTEXT_TO_SID`` could never accept."""
    too_long = len(label.encode("utf-8", "surrogateescape")) >= MAX_LABEL
    if too_long or not _CONTEXT.fullmatch(label):
        raise XenError(errno.EINVAL, function, f"{label!r} is not a security context")
    return label


def parse_label_option(spec: str) -> tuple[int, str]:
    """``DOMID=CONTEXT`` (``--xsm-label``) as (domid, context); UsageError if malformed."""
    domid, sep, label = spec.partition("=")
    if not sep or not domid.isdigit():
        raise UsageError(f"--xsm-label {spec!r}: expected DOMID=CONTEXT")
    try:
        return int(domid), check_label(label, "--xsm-label")
    except XenError:
        raise UsageError(
            f"--xsm-label {spec!r}: {label!r} is not a security context (user:role:type[:range])"
        ) from None


@dataclass
class Flask:
    """FLASK is on; ``labels`` are the command line's, by domid."""

    labels: Mapping[int, str] = field(default_factory=dict)

    def initial_label(self, domid: int) -> str:
        return self.labels.get(domid) or (DOM0_LABEL if domid == 0 else DOMU_LABEL)
