"""cffi builders and cdefs for the Xen libraries (see README.md).

Not installed: setup.py runs `build.py` through ``cffi_modules`` when
pkg-config finds libxen-dev, and the result is ``pvgrub_py._xen_cffi``.
"""
