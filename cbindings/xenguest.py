"""libxenguest (xenguest.h): the ``xc_dom_*`` domain builder.

``struct xc_dom_image`` is not a stable ABI (the SONAME carries the Xen
release, Xen tools/libs/libs.mk) and ``struct elf_dom_parms`` is not in any
installed header, so Python never touches either layout.  The
``pvgrub_dom_*`` helpers below are compiled against the installed
xenguest.h, so the C compiler, not an offset table of ours, finds each
field.  What only ``elf_dom_parms`` holds comes from libxenguest's own
accessors (``xc_dom_virt_base``, ``xc_dom_virt_entry``,
``xc_dom_virt_hypercall``, ``xc_dom_guest_os``, ``xc_dom_feature_get``) and
from the loader's log (see xentoollog.py).

``xc_dom_kernel_mem``/``xc_dom_module_mem`` keep the caller's pointer, so
the Python layer keeps the buffer alive until ``xc_dom_release``.
"""

INCLUDES = """
#include <errno.h>
#include <string.h>
#include <stdbool.h>
#include <xenctrl.h>
#include <xenguest.h>
"""

TYPES = """
struct xc_dom_image { ...; };
typedef uint64_t xen_pfn_t;

#define XC_DOM_DECOMPRESS_MAX ...
#define XENFEAT_NR_SUBMAPS ...

static const long PVGRUB_HAS_XC_DOM_MODULE_MEM;
static const long PVGRUB_HAS_XC_DOM_RAMDISK_MEM;

"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """
struct pvgrub_seg {
    uint64_t vstart;
    uint64_t vend;
    uint64_t pfn;
    uint64_t pages;
};

struct pvgrub_dom_pfns {
    uint64_t start_info_pfn;
    uint64_t console_pfn;
    uint64_t xenstore_pfn;
    uint64_t shared_info_pfn;
    uint64_t console_mfn;
    uint64_t xenstore_mfn;
    uint64_t total_pages;
};
"""

FUNCTIONS = """
struct xc_dom_image *xc_dom_allocate(xc_interface *xch, const char *cmdline,
                                     const char *features);
void xc_dom_release(struct xc_dom_image *dom);
int xc_dom_kernel_max_size(struct xc_dom_image *dom, size_t sz);
int xc_dom_module_max_size(struct xc_dom_image *dom, size_t sz);
int xc_dom_kernel_file(struct xc_dom_image *dom, const char *filename);
int xc_dom_kernel_mem(struct xc_dom_image *dom, const void *mem, size_t memsize);
int xc_dom_boot_xen_init(struct xc_dom_image *dom, xc_interface *xch, uint32_t domid);
int xc_dom_parse_image(struct xc_dom_image *dom);
int xc_dom_mem_init(struct xc_dom_image *dom, unsigned int mem_mb);
int xc_dom_boot_mem_init(struct xc_dom_image *dom);
int xc_dom_build_image(struct xc_dom_image *dom);
int xc_dom_boot_image(struct xc_dom_image *dom);
int xc_dom_gnttab_init(struct xc_dom_image *dom);
int xc_dom_gnttab_seed(xc_interface *xch, uint32_t guest_domid, bool is_hvm,
                       xen_pfn_t console_gfn, xen_pfn_t xenstore_gfn,
                       uint32_t console_domid, uint32_t xenstore_domid);
uint64_t xc_dom_virt_base(struct xc_dom_image *dom);
uint64_t xc_dom_virt_entry(struct xc_dom_image *dom);
uint64_t xc_dom_virt_hypercall(struct xc_dom_image *dom);
char *xc_dom_guest_os(struct xc_dom_image *dom);
bool xc_dom_feature_get(struct xc_dom_image *dom, unsigned int nr);

/* Xen >= 4.13 (multiboot modules): the ramdisk is modules[0]. */
int xc_dom_module_mem(struct xc_dom_image *dom, const void *mem, size_t memsize,
                      const char *cmdline);
int xc_dom_module_file(struct xc_dom_image *dom, const char *filename,
                       const char *cmdline);
/* Xen <= 4.12. */
int xc_dom_ramdisk_mem(struct xc_dom_image *dom, const void *mem, size_t memsize);
int xc_dom_ramdisk_file(struct xc_dom_image *dom, const char *filename);

void pvgrub_dom_set_container(struct xc_dom_image *dom, int hvm);
int pvgrub_dom_set_xen_caps(struct xc_dom_image *dom, const char *caps);
const char *pvgrub_dom_guest_type(struct xc_dom_image *dom);
const void *pvgrub_dom_kernel_blob(struct xc_dom_image *dom, size_t *size);
void pvgrub_dom_kernel_seg(struct xc_dom_image *dom, struct pvgrub_seg *out);
void pvgrub_dom_set_boot_params(struct xc_dom_image *dom, unsigned long flags,
                                unsigned int console_evtchn, unsigned int xenstore_evtchn,
                                uint32_t console_domid, uint32_t xenstore_domid,
                                unsigned int max_vcpus);
void pvgrub_dom_pfns(struct xc_dom_image *dom, struct pvgrub_dom_pfns *out);
unsigned int pvgrub_dom_num_modules(struct xc_dom_image *dom);
size_t pvgrub_dom_module_size(struct xc_dom_image *dom, unsigned int index);
uint32_t pvgrub_dom_features_active(struct xc_dom_image *dom, unsigned int submap);
"""

CUSTOMIZATIONS = r"""
#ifndef XG_MAX_MODULES
/* Before 4.13 there is one ramdisk and no modules[]. */
static const long PVGRUB_HAS_XC_DOM_MODULE_MEM = 0;
static const long PVGRUB_HAS_XC_DOM_RAMDISK_MEM = 1;
static int (*const xc_dom_module_mem)(struct xc_dom_image *, const void *, size_t,
                                      const char *) = NULL;
static int (*const xc_dom_module_file)(struct xc_dom_image *, const char *,
                                       const char *) = NULL;
#else
static const long PVGRUB_HAS_XC_DOM_MODULE_MEM = 1;
static const long PVGRUB_HAS_XC_DOM_RAMDISK_MEM = 0;
static int (*const xc_dom_ramdisk_mem)(struct xc_dom_image *, const void *, size_t) = NULL;
static int (*const xc_dom_ramdisk_file)(struct xc_dom_image *, const char *) = NULL;
#endif

static void pvgrub_dom_set_container(struct xc_dom_image *dom, int hvm)
{
    dom->container_type = hvm ? XC_DOM_HVM_CONTAINER : XC_DOM_PV_CONTAINER;
}

/* What xc_dom_boot_xen_init would read with XENVER_capabilities. */
static int pvgrub_dom_set_xen_caps(struct xc_dom_image *dom, const char *caps)
{
    size_t n = strlen(caps);
    if (n >= sizeof(dom->xen_caps)) {
        errno = E2BIG;
        return -1;
    }
    memcpy(dom->xen_caps, caps, n + 1);
    return 0;
}

static const char *pvgrub_dom_guest_type(struct xc_dom_image *dom)
{
    return dom->guest_type;
}

/* After xc_dom_parse_image on a bzImage this is the decompressed ELF. */
static const void *pvgrub_dom_kernel_blob(struct xc_dom_image *dom, size_t *size)
{
    *size = dom->kernel_size;
    return dom->kernel_blob;
}

static void pvgrub_dom_kernel_seg(struct xc_dom_image *dom, struct pvgrub_seg *out)
{
    out->vstart = dom->kernel_seg.vstart;
    out->vend = dom->kernel_seg.vend;
    out->pfn = dom->kernel_seg.pfn;
    out->pages = dom->kernel_seg.pages;
}

static void pvgrub_dom_set_boot_params(struct xc_dom_image *dom, unsigned long flags,
                                       unsigned int console_evtchn,
                                       unsigned int xenstore_evtchn,
                                       uint32_t console_domid, uint32_t xenstore_domid,
                                       unsigned int max_vcpus)
{
    dom->flags = flags;
    dom->console_evtchn = console_evtchn;
    dom->xenstore_evtchn = xenstore_evtchn;
    dom->console_domid = console_domid;
    dom->xenstore_domid = xenstore_domid;
    dom->max_vcpus = max_vcpus;
}

/* The magic pages xc_dom_build_image placed; MFNs via xc_dom_p2m (PV). */
static void pvgrub_dom_pfns(struct xc_dom_image *dom, struct pvgrub_dom_pfns *out)
{
    out->start_info_pfn = dom->start_info_pfn;
    out->console_pfn = dom->console_pfn;
    out->xenstore_pfn = dom->xenstore_pfn;
    out->shared_info_pfn = dom->shared_info_pfn;
    out->total_pages = dom->total_pages;
    out->console_mfn = out->xenstore_mfn = (uint64_t)-1;
    if (dom->pv_p2m || xc_dom_translated(dom)) {
        if (dom->console_pfn < dom->p2m_size || xc_dom_translated(dom))
            out->console_mfn = xc_dom_p2m(dom, dom->console_pfn);
        if (dom->xenstore_pfn < dom->p2m_size || xc_dom_translated(dom))
            out->xenstore_mfn = xc_dom_p2m(dom, dom->xenstore_pfn);
    }
}

static unsigned int pvgrub_dom_num_modules(struct xc_dom_image *dom)
{
#ifdef XG_MAX_MODULES
    return dom->num_modules;
#else
    return dom->ramdisk_blob ? 1 : 0;
#endif
}

static size_t pvgrub_dom_module_size(struct xc_dom_image *dom, unsigned int index)
{
#ifdef XG_MAX_MODULES
    return index < dom->num_modules ? dom->modules[index].size : 0;
#else
    return index == 0 ? dom->ramdisk_size : 0;
#endif
}

static uint32_t pvgrub_dom_features_active(struct xc_dom_image *dom, unsigned int submap)
{
    return submap < XENFEAT_NR_SUBMAPS ? dom->f_active[submap] : 0;
}
"""
