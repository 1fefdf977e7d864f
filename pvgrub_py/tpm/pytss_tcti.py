"""tpm2-pytss over our transports: one TCTI for every vTPM address.

tpm2-pytss (the Python binding of tpm2-tss's ESAPI) can drive a TCTI
written in Python (``tpm2_pytss.PyTCTI``).  `TransportTcti` is one over
a `TpmTransport`, so the same ESAPI code reaches a swtpm socket and a
``xen:`` tpmif frontend (on the real host or the simulator) alike; what is
behind the transport is wired by the CLI (`pvgrub_py.cli.connect`).

A transport moves one command and its whole response at a time, which is
what a TCTI's transmit/receive pair asks: the response is fetched on
transmit and handed over on receive.  A failure of the transport (a
`TpmError`) is raised again by tpm2-pytss once the ESAPI call returns.

tpm2-pytss is an optional dependency (``pip install .[attest]``); importing
this module without it is a `PvgrubError` saying so.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from pvgrub_py.errors import PvgrubError
from pvgrub_py.tpm.transport import TpmTransport

#: The response size the TCTI announces: tpm2-tss's SYS layer allocates its
#: command and response buffers at TPM2_MAX_COMMAND_SIZE (4096) and refuses a
#: TCTI that asks for more; a longer response is refused by tpm2-pytss.
ESYS_BUFFER = 4096

INSTALL_HINT = "pip install 'tpm2-pytss>=2.3,<3' (Debian: libtss2-dev), or `make setup`"


def import_pytss() -> Any:
    """The ``tpm2_pytss`` package, or a one-line error telling how to install it.

    tpm2-pytss 2.x imports ciphers `cryptography` now calls deprecated
    (Camellia, CFB); their warnings are silenced here, where we know why.
    tpm2-tss's own log is off (``TSS2_LOG``) unless the environment sets it.
    """
    # tpm2-tss logs every refused command on stderr (ERROR:esys:...); our
    # errors are one line of our own, so its log is off unless asked for.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tpm2_pytss
            import tpm2_pytss.utils  # the submodule the callers use
    except ImportError as e:
        raise PvgrubError(f"tpm2-pytss is not available ({e}): {INSTALL_HINT}") from None
    return tpm2_pytss


def transport_tcti(transport: TpmTransport) -> Any:
    """A ``tpm2_pytss.TCTI`` that sends each command over *transport*."""
    pytss = import_pytss()

    base: Any = pytss.PyTCTI

    class TransportTcti(base):  # type: ignore[misc]
        """PyTCTI's two required methods over a one-command-at-a-time transport."""

        def __init__(self, inner: TpmTransport) -> None:
            super().__init__(max_size=ESYS_BUFFER, magic=b"PVGRUBPY")
            self.inner = inner
            self.pending: bytes | None = None

        def do_transmit(self, command: bytes) -> None:
            self.pending = None
            self.pending = self.inner.transmit(bytes(command))

        def do_receive(self, timeout: int) -> bytes:
            # the transport bounds its own wait; *timeout* (ms) is ESAPI's
            if self.pending is None:
                raise PvgrubError("TCTI receive without a command sent")
            response, self.pending = self.pending, None
            return response

    return TransportTcti(transport)
