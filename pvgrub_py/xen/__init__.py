"""The small hypervisor interface everything above it is written against.

`interface` defines it; the simulator (`pvgrub_py.sim`) and the real Xen
libraries through cffi (`pvgrub_py.xen.libxc`) implement it.  The tpmif
frontend and backend, the bootloader and the domain builder never know which
one they run on.
"""
