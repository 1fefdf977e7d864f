"""What can go wrong between a xenstore client and our daemon.

Two kinds, because the daemon reacts differently to each
(docs/misc/xenstore.txt, "Xenstore protocol details - introduction"):

* `XsRequestError`: the request was well framed but cannot be honoured.  It is
  answered with an ERROR message whose payload is the errno *name*
  (``EINVAL\\0``), and the connection lives on.
* `XsProtocolError`: the byte stream itself is broken (a header announcing more
  than XENSTORE_PAYLOAD_MAX bytes).  xenstored cannot resynchronise such a
  stream, so it drops that one client; so do we.
"""

from __future__ import annotations

import errno as _errno

from pvgrub_py.errors import PvgrubError

#: The ``xsd_errors`` table of xs_wire.h, in its order: the only names a reply
#: may carry.  A failure outside it is reported as EINVAL, as xenstored's
#: send_error() does for an untranslatable errno.
XSD_ERROR_NAMES: tuple[str, ...] = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)

#: errno number -> name, for the names above (numbers are the host's, as both
#: pyxs and libxenstore map the name back with the host's errno table).
XSD_ERRORS: dict[int, str] = {getattr(_errno, name): name for name in XSD_ERROR_NAMES}


class XenstoreError(PvgrubError):
    """Base of every xenstore failure."""


class XsProtocolError(XenstoreError):
    """The client's byte stream cannot be parsed any further; drop the client."""


class XsRequestError(XenstoreError):
    """A request failed with one of the xs_wire.h errno names.

    ``errno`` is the host errno number; ``name`` is what goes on the wire.
    ``detail`` is for our log only: the wire carries the bare name.
    """

    def __init__(self, errno: int, detail: str = "") -> None:
        self.errno = errno if errno in XSD_ERRORS else _errno.EINVAL
        self.name = XSD_ERRORS[self.errno]
        self.detail = detail
        super().__init__(f"{self.name}: {detail}" if detail else self.name)
