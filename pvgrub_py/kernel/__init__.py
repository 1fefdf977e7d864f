"""Guest kernel inspection: what Xen's domain builder will make of a kernel file.

Data flow, one module each:

    file -> measure first (`source`) -> whole-file gunzip (`source`)
         -> bzImage setup header (`bzimage`) -> payload decompression
            (`compression`, `lz4_legacy`, `lzo`) -> ELF (`elf`)
         -> Xen notes (`xen_notes`) -> domain parameters and guest types
            (`dominfo`) -> `report.KernelReport`

`python_backend` is that pipeline in pure Python; `libxenguest_backend`
asks libxenguest itself (``xc_dom_parse_image`` on a dummy handle) and
fills the same report, so the two can be compared field by field
(`compare`).  Every malformed input raises `pvgrub_py.errors.InputError`
naming the field and its offset; allocation is bounded by the 1 GiB
``XC_DOM_DECOMPRESS_MAX`` cap.
"""
