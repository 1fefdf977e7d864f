"""pvgrub-py: measured boot for Xen PV/PVH guests.

The data flow, one package each::

    disk image -> bootcfg -> chosen entry -> measure (tpm + eventlog) -> xen builder
"""

__version__ = "0.1.0"
