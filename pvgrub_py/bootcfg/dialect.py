"""Which bootloader's reading of a config to follow where two of them differ.

GRUB 2 and petitboot (the OpenPOWER bootloader, whose parser test suite is
our fixture set) read the same grub.cfg, BLS and syslinux files, and agree
on everything distributions generate.  They differ on a handful of corner
cases, each a deliberate choice on petitboot's side:

- a ``menuentry`` body: GRUB runs it when the entry is booted, with the
  *final* variables and ``$1`` = the title; petitboot runs it where the
  ``menuentry`` stands, with the variables and ``$1``... of that point,
  and what it sets stays set.
- ``set a=b c``: GRUB keeps the first argument (``a=b``); petitboot joins
  the words (``a="b c"``).
- ``search`` with no type: GRUB refuses it ("unspecified search type");
  petitboot searches filesystem UUIDs.  With no ``--set``, GRUB sets
  nothing and petitboot sets ``$root``.
- a UUID ``search`` that finds nothing: GRUB says "no such device" and
  leaves the variable alone; petitboot stores the UUID, so a device with
  it, plugged in later, matches.
- ``test -s DIR``: false in GRUB (it opens the path as a file); true in
  petitboot (a directory's size is non-zero).
- ``source`` nested too deep: our `BootConfigError` (GRUB would recurse
  until it runs out of memory); petitboot stops at 10 levels and keeps the
  entries so far.
- BLS ``title $var``: GRUB keeps it literally; petitboot expands it.
- BLS ``initrd $a /x $b``: GRUB pastes ``($root)`` before the value as it
  stands, cannot open the bare device and loads no initrd; petitboot
  splits the expanded value into paths.
- a syslinux label's ``APPEND``: it replaces the global ``APPEND`` in
  SYSLINUX; petitboot puts the global one first.  petitboot also gives an
  ``APPEND`` after a label-less ``KERNEL`` to that (implicit) entry.

GRUB is the default because it is what the guest's own bootloader would
boot.  `Dialect.PETITBOOT` is for guests whose configs were written for, and
tested with, petitboot; ``pvgrub-py --config-dialect=petitboot`` and
``pvgrubctl predict --config-dialect=petitboot`` select it, so the
prediction and the boot read a config the same way.
"""

from __future__ import annotations

import enum


class Dialect(enum.Enum):
    GRUB = "grub"
    PETITBOOT = "petitboot"


#: petitboot's bound on nested ``source`` (levels below the main config).
PETITBOOT_SOURCE_LEVELS = 10
