"""``pvgrub-py``, the xl bootloader: libxl's protocol, pygrub's options, measured.

options (argv) -> disk -> bootcfg -> chosen entry -> extract + measure -> output
"""
