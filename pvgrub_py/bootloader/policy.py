"""pv-grub's measured-boot policy (stubdom/grub/kexec.c, ``tpm_hash2pcr``).

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


def vtpm_label_matches(actual: str, wanted: str) -> bool:
    if actual == wanted:
        return True
    if wanted.startswith("*"):
        suffix = wanted[1:]
        return len(actual) > len(suffix) and actual.endswith(suffix)
    return False
