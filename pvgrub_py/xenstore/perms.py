"""Node permissions: the ``w/r/b/n<domid>`` strings and xenstored's access rule.

xenstore.txt (GET_PERMS/SET_PERMS) and the XenBus wiki "Permissions":

* a node carries one or more entries; the *first* names the owner and, with
  its letter, the access every domain not listed later gets;
* later entries grant their letter to one domain each; the first matching
  entry wins;
* the owner and privileged callers (dom0, the toolstack socket) always have
  read, write and the right to change permissions;
* after SET_TARGET, a device-model domain is treated as its target domain
  when matching the owner and the ACL (xenstore.txt, SET_TARGET).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from pvgrub_py.xenstore.errors import XsRequestError

# Bit values of xenstore_lib.h's enum xs_perm_type.
NONE = 0
READ = 1
WRITE = 2
OWNER = 8
ALL = READ | WRITE | OWNER

_LETTER_TO_ACCESS = {"n": NONE, "r": READ, "w": WRITE, "b": READ | WRITE}
_ACCESS_TO_LETTER = {v: k for k, v in _LETTER_TO_ACCESS.items()}
_PERM = re.compile(rb"([nrwb])([0-9]{1,5})")
DOMID_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class Perm:
    """One entry: ``domid`` gets ``access`` (a combination of READ and WRITE)."""

    domid: int
    access: int

    def __str__(self) -> str:
        return f"{_ACCESS_TO_LETTER[self.access & (READ | WRITE)]}{self.domid}"


#: What a node carries: owner/default first, then the per-domain ACL.
NodePerms = tuple[Perm, ...]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: what the access rule needs to know about a connection."""

    domid: int
    privileged: bool
    target: int | None = None


DOM0 = Caller(domid=0, privileged=True)


def parse_perm(text: bytes) -> Perm:
    """``b"r5"`` -> Perm(5, READ).  Anything else is EINVAL."""
    match = _PERM.fullmatch(text)
    if match is None:
        raise XsRequestError(errno.EINVAL, f"bad permission {text[:32]!r}")
    domid = int(match.group(2))
    if domid > DOMID_MAX:
        raise XsRequestError(errno.EINVAL, f"domid {domid} in permission out of range")
    return Perm(domid, _LETTER_TO_ACCESS[match.group(1).decode()])


def parse_perms(items: list[bytes]) -> NodePerms:
    if not items:
        raise XsRequestError(errno.EINVAL, "no permissions given")
    return tuple(parse_perm(item) for item in items)


def format_perms(perms: NodePerms) -> list[bytes]:
    return [str(p).encode() for p in perms]


def with_owner(perms: NodePerms, domid: int) -> NodePerms:
    """The same permissions with ``domid`` as owner: what a node an
    unprivileged domain creates gets (xenstored's construct_node())."""
    if perms[0].domid == domid:
        return perms
    return (Perm(domid, perms[0].access), *perms[1:])


def access_for(perms: NodePerms, caller: Caller) -> int:
    """READ/WRITE/OWNER bits ``caller`` has on a node with ``perms``."""
    owner = perms[0].domid
    target = caller.target
    if caller.privileged or owner == caller.domid or (target is not None and owner == target):
        return ALL
    for entry in perms[1:]:
        if entry.domid == caller.domid or (target is not None and entry.domid == target):
            return entry.access
    return perms[0].access
