"""libxengnttab (xengnttab.h): map foreign grants, and share our own pages.

The header declares both halves: ``xengnttab_*`` maps a grant another
domain offered (the tpmif backend maps the frontend's shared page), and
``xengntshr_*`` allocates pages and grants them to a domain (the frontend
side).  Both open a device (``/dev/xen/gntdev``, ``/dev/xen/gntalloc``), so
they fail with ENOENT where there is no hypervisor.
"""

INCLUDES = """
#include <sys/mman.h>
#include <xengnttab.h>
"""

TYPES = """
typedef struct xengntdev_handle xengnttab_handle;
typedef struct xengntdev_handle xengntshr_handle;
#define PROT_READ ...
#define PROT_WRITE ...
"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """"""

FUNCTIONS = """
xengnttab_handle *xengnttab_open(xentoollog_logger *logger, unsigned open_flags);
int xengnttab_close(xengnttab_handle *xgt);
void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref,
                              int prot);
int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count);

xengntshr_handle *xengntshr_open(xentoollog_logger *logger, unsigned open_flags);
int xengntshr_close(xengntshr_handle *xgs);
void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count,
                            uint32_t *refs, int writable);
int xengntshr_unshare(xengntshr_handle *xgs, void *start_address, uint32_t count);
"""

CUSTOMIZATIONS = ""
