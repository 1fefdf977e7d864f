"""pv-grub's measured-boot policy (stubdom/grub/kexec.c, ``tpm_hash2pcr``), for
every caller that measures a boot: the bootloader and the domain builder.

* No vTPM asked for: boot unmeasured, but say so (pv-grub was silent; a
  dom0 tool should not be).
* ``--require-vtpm`` or ``--vtpm-label``: fail closed.  No vTPM, a vTPM whose
  label does not match, or any failed extend stops the boot.

The label rule is pv-grub's: an exact match, or, when the wanted label starts
with ``*``, a suffix match of the rest (``*:vm_r:vtpm_t`` matches
``system_u:vm_r:vtpm_t``).  pv-grub required the suffix to start strictly
inside the peer's label (``offset > 0``), so ``*x`` does not match ``x``.
"""

from __future__ import annotations

from pvgrub_py.record import record


def vtpm_label_matches(actual: str, wanted: str) -> bool:
    if actual == wanted:
        return True
    if wanted.startswith("*"):
        suffix = wanted[1:]
        return len(actual) > len(suffix) and actual.endswith(suffix)
    return False


@record(frozen=True)
class MeasurePolicy:
    """Which vTPM to measure into and how strictly, whoever boots (the
    bootloader and the domain builder each build one from their options).

    *vtpm* is the address as the user wrote it (None: boot unmeasured, with a
    warning), *uuid* the instance behind a ``xen:`` backend; *required*
    fails closed where a vTPM cannot be had (``--require-vtpm``, and always
    with a *label*); *tpm2* asks for a TPM 2.0 (default banks: all of
    `DEFAULT_BANKS`, else SHA-1); *timeout* bounds reaching the vTPM and
    each command, in seconds.
    """

    vtpm: str | None
    uuid: str | None = None
    required: bool = False
    label: str | None = None
    tpm2: bool = False
    timeout: float = 30.0

    @property
    def measurement_required(self) -> bool:
        """pv-grub's fail-closed mode: a vTPM asked for is never given up."""
        return self.required or self.label is not None
