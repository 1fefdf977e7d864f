"""Symbols that exist only in some Xen releases, in the style of
pyca/cryptography's ``_conditional.py``.

cdef has no ``#if``, so cbindings/ declares every variant and its C part
defines a flag per variant (``PVGRUB_HAS_*``, 1 or 0) plus NULL stand-ins
for what the installed headers lack.  At import, `binding.py` hides the
names whose flag is 0, so a missing function is an AttributeError we turn
into a clear "not in this Xen release" rather than a call through NULL.

Known differences (xenguest.h history):

* Xen 4.13 replaced the single ramdisk (``xc_dom_ramdisk_mem``/``_file``)
  by multiboot modules (``xc_dom_module_mem``/``_file``, ``modules[0]`` is
  the ramdisk, ``XG_MAX_MODULES``).  4.17 has only the latter.
"""

from __future__ import annotations

#: flag name -> the library names that exist only when the flag is 1.
CONDITIONAL_NAMES: dict[str, tuple[str, ...]] = {
    "PVGRUB_HAS_XC_DOM_MODULE_MEM": ("xc_dom_module_mem", "xc_dom_module_file"),
    "PVGRUB_HAS_XC_DOM_RAMDISK_MEM": ("xc_dom_ramdisk_mem", "xc_dom_ramdisk_file"),
}
