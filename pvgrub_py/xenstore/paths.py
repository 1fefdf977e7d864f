"""Xenstore path rules (docs/misc/xenstore.txt, introduction; xs_wire.h limits).

* characters: ASCII alphanumerics and ``-/_@``;
* no ``//``, no trailing ``/`` except the root itself, not empty;
* a path not starting with ``/`` (or ``@``) is relative to the caller's
  ``/local/domain/<domid>``; a socket client counts as dom0 there, as
  xenstored's get_implicit_path() does;
* ``@...`` names the special watch nodes (@introduceDomain, @releaseDomain)
  and is accepted only where xenstored allows it: WATCH, UNWATCH, GET_PERMS,
  SET_PERMS;
* XENSTORE_ABS_PATH_MAX = 3072 bounds any path; unprivileged domains are
  also held to XENSTORE_REL_PATH_MAX = 2048 bytes *below their own home*
  ``/local/domain/<domid>/`` (xenstored's "path-max" quota is measured after
  that prefix, so a guest's budget does not depend on its domid's digits).

Every violation is EINVAL.  Paths are returned as `str`: after validation
they are pure ASCII, and str keys make the store's dict faster than bytes.
"""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Iterator

from pvgrub_py.xenstore.errors import XsRequestError

XENSTORE_ABS_PATH_MAX = 3072
XENSTORE_REL_PATH_MAX = 2048

ROOT = "/"
INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"
SPECIAL_NODES = (INTRODUCE_DOMAIN, RELEASE_DOMAIN)

_VALID_CHARS = re.compile(rb"[A-Za-z0-9/_@-]*")
_DOMAIN_HOME = re.compile(r"/local/domain/(\d{1,5})/")


def domain_home(domid: int) -> str:
    """``/local/domain/<domid>``: GET_DOMAIN_PATH's answer and the base of
    relative paths."""
    return f"/local/domain/{domid}"


def canonicalize(
    raw: bytes,
    home: str,
    *,
    allow_special: bool = False,
    path_max: int | None = None,
) -> str:
    """The absolute path ``raw`` names for a caller whose home is ``home``.

    ``path_max`` is the unprivileged caller's limit below its domain home
    (None for privileged callers).  Results are cached: clients name the
    same few paths over and over, and this is the costliest step of a READ.
    """
    return _canonicalize(raw, home, allow_special, path_max)


@functools.lru_cache(maxsize=1024)
def _canonicalize(raw: bytes, home: str, allow_special: bool, path_max: int | None) -> str:
    if _VALID_CHARS.fullmatch(raw) is None:
        raise XsRequestError(errno.EINVAL, f"invalid character in path {raw[:64]!r}")
    name = raw.decode("ascii")
    first = name[:1]
    if first == "@":
        if not allow_special:
            raise XsRequestError(errno.EINVAL, f"special path {name!r} not allowed here")
    elif first != "/":
        name = f"{home}/{name}"
    if name.endswith("/") and name != ROOT:
        raise XsRequestError(errno.EINVAL, f"trailing slash in {name!r}")
    if "//" in name:
        raise XsRequestError(errno.EINVAL, f"double slash in {name!r}")
    if len(name) > XENSTORE_ABS_PATH_MAX:
        raise XsRequestError(errno.EINVAL, f"path of {len(name)} bytes exceeds 3072")
    if path_max is not None:
        local = _DOMAIN_HOME.match(name)
        budget = len(name) - (local.end() if local else 0)
        if budget > path_max:
            raise XsRequestError(errno.EINVAL, f"path of {budget} bytes exceeds {path_max}")
    return name


def is_relative(raw: bytes) -> bool:
    """Whether a watch path was given relative, so its events are reported
    relative too (xenstore.txt, WATCH_EVENT)."""
    return not raw.startswith((b"/", b"@"))


def parent(path: str) -> str:
    """The parent node; ``/`` for top-level nodes and for ``@special`` names."""
    slash = path.rfind("/", 1)
    return path[:slash] if slash > 0 else ROOT


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def child(parent_path: str, name: str) -> str:
    return f"/{name}" if parent_path == ROOT else f"{parent_path}/{name}"


def is_child(path: str, ancestor: str) -> bool:
    """xenstore.txt's "child": ``path`` equals ``ancestor`` or lies below it."""
    if ancestor == ROOT:
        return True
    return path.startswith(ancestor) and (len(path) == len(ancestor) or path[len(ancestor)] == "/")


def depth_below(path: str, ancestor: str) -> int:
    """How many levels ``path`` lies below ``ancestor`` (0 for itself);
    ``path`` must be a child of ``ancestor``."""
    if path == ancestor:
        return 0
    if ancestor == ROOT:
        return path.count("/")
    return path.count("/", len(ancestor))


def self_and_ancestors(path: str) -> Iterator[str]:
    """``path``, its parent, ..., ``/``: every watch path that matches an
    event on ``path``."""
    yield path
    while path != ROOT:
        path = parent(path)
        yield path
