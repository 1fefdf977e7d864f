"""TPM failures, as values with context.

Three kinds, because a caller reacts differently to each:

* `TpmReturnCode`: the TPM understood us and said no (a non-zero return code).
  Any of these stops a measured boot, as pv-grub's ``ASSERT(resp->status == 0)``.
* `TpmProtocolError`: the bytes that came back are not a well-formed answer
  to what we sent (short, wrong tag, wrong size field, trailing bytes).
* `TpmTransportError`: the channel failed (refused, closed, timed out).
"""

from __future__ import annotations

from pvgrub_py.errors import PvgrubError


class TpmError(PvgrubError):
    """Base of every TPM failure."""


class TpmProtocolError(TpmError):
    """A malformed or unexpected TPM response."""


class TpmTransportError(TpmError):
    """The TPM could not be reached, or the connection broke mid-command."""


class TpmReturnCode(TpmError):
    """A TPM answered with a non-zero return code.

    ``name`` is the TCG name (TPM_BADINDEX, TPM_RC_VALUE, ...); ``detail``
    says which parameter, handle or session a TPM 2.0 format-one code points
    at, when it does.
    """

    def __init__(self, code: int, name: str, detail: str = "", command: str = "") -> None:
        self.code = code
        self.name = name
        self.detail = detail
        self.command = command
        where = f"{command}: " if command else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{where}TPM returned {name} (0x{code:x}){extra}")
