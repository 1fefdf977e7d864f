"""The domain builder that mirrors pv-grub's ``kexec()``: measure, then build.

request -> allocate -> kernel/module memory -> console/xenstore ports ->
MEASURE (pv-grub's plan) -> boot_xen_init -> parse_image -> mem_init ->
boot_mem_init -> build_image -> boot_image -> grant table seed ->
introduce to xenstore -> unpause
"""
