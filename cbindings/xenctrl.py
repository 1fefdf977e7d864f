"""libxenctrl (xenctrl.h): the interface handle, version, physinfo, domains, FLASK labels.

Fixed-layout Xen structures (``xen_domctl_createdomain``,
``xen_domctl_getdomaininfo``) change between releases with the domctl
interface version, so Python never sees them: small helpers compiled here in
API mode copy what we need into ``struct pvgrub_*`` types whose layout is
ours.  ``xc_domain_getinfolist`` is used for both one domain and all of
them because it exists unchanged in every release we target, whereas
``xc_domain_getinfo`` was replaced by ``xc_domain_getinfo_single`` in 4.18.

FLASK: xenctrl.h (4.17) has ``xc_flask_sid_to_context`` but no wrapper for
``FLASK_GET_PEER_SID``, so `pvgrub_xc_flask_get_peer_sid` fills a
``xen_flask_op_t`` (xen/include/public/xsm/flask_op.h) and calls the
generic ``xc_flask_op``, which sets the interface version and bounces the
struct for the hypercall.
"""

INCLUDES = """
#include <errno.h>
#include <string.h>
#include <xenctrl.h>
"""

TYPES = """
typedef struct xc_interface_core xc_interface;

#define XC_OPENFLAG_DUMMY ...
#define XC_OPENFLAG_NON_REENTRANT ...

#define XENVER_version ...
#define XENVER_extraversion ...
#define XENVER_capabilities ...
#define XENVER_changeset ...

#define XC_ERROR_NONE ...
#define XC_INTERNAL_ERROR ...
#define XC_INVALID_KERNEL ...
#define XC_INVALID_PARAM ...
#define XC_OUT_OF_MEMORY ...

#define XEN_DOMINF_dying ...
#define XEN_DOMINF_hvm_guest ...
#define XEN_DOMINF_shutdown ...
#define XEN_DOMINF_paused ...
#define XEN_DOMINF_blocked ...
#define XEN_DOMINF_running ...

#define XEN_DOMCTL_CDF_hvm ...
#define XEN_DOMCTL_CDF_hap ...
/* XEN_X86_EMU_LAPIC on x86 (what a PVH domain needs), 0 elsewhere. */
static const unsigned int PVGRUB_PVH_EMULATION_FLAGS;

"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """
struct pvgrub_domain_info {
    uint32_t domid;
    uint32_t flags;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint32_t max_vcpu_id;
    uint32_t nr_online_vcpus;
    uint8_t handle[16];
};

struct pvgrub_physinfo {
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t nr_cpus;
    uint32_t nr_nodes;
    uint32_t cpu_khz;
    uint32_t capabilities;
    uint64_t total_pages;
    uint64_t free_pages;
    uint64_t max_mfn;
};
"""

FUNCTIONS = """
xc_interface *xc_interface_open(xentoollog_logger *logger,
                                xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);
void xc_clear_last_error(xc_interface *xch);
const char *xc_error_code_to_desc(int code);

int pvgrub_xc_last_error(xc_interface *xch, char *message, size_t size);
int pvgrub_xc_version(xc_interface *xch, int *major, int *minor);
int pvgrub_xc_version_string(xc_interface *xch, int cmd, char *out, size_t size);
int pvgrub_xc_physinfo(xc_interface *xch, struct pvgrub_physinfo *out);
int pvgrub_xc_domain_create(xc_interface *xch, uint32_t *domid, uint32_t flags,
                            uint32_t max_vcpus, const uint8_t *handle,
                            uint32_t emulation_flags);
int pvgrub_xc_domain_list(xc_interface *xch, uint32_t first_domid, unsigned int max,
                          struct pvgrub_domain_info *out);

int xc_domain_destroy(xc_interface *xch, uint32_t domid);
int xc_domain_pause(xc_interface *xch, uint32_t domid);
int xc_domain_unpause(xc_interface *xch, uint32_t domid);
int xc_domain_max_vcpus(xc_interface *xch, uint32_t domid, unsigned int max);
int xc_domain_setmaxmem(xc_interface *xch, uint32_t domid, uint64_t max_memkb);
int xc_evtchn_alloc_unbound(xc_interface *xch, uint32_t dom, uint32_t remote_dom);

int pvgrub_xc_flask_get_peer_sid(xc_interface *xch, uint32_t port, uint32_t *sid);
int xc_flask_sid_to_context(xc_interface *xc_handle, int sid, char *buf, uint32_t size);
"""

CUSTOMIZATIONS = r"""
#if defined(__i386__) || defined(__x86_64__)
static const unsigned int PVGRUB_PVH_EMULATION_FLAGS = XEN_X86_EMU_LAPIC;
#else
static const unsigned int PVGRUB_PVH_EMULATION_FLAGS = 0;
#endif

/* xc_get_last_error's message, copied out; returns the xc_error_code. */
static int pvgrub_xc_last_error(xc_interface *xch, char *message, size_t size)
{
    const xc_error *err = xc_get_last_error(xch);
    if (size)
        message[0] = '\0';
    if (!err)
        return XC_ERROR_NONE;
    if (size) {
        strncpy(message, err->message, size - 1);
        message[size - 1] = '\0';
    }
    return err->code;
}

static int pvgrub_xc_version(xc_interface *xch, int *major, int *minor)
{
    int v = xc_version(xch, XENVER_version, NULL);
    if (v < 0)
        return -1;
    *major = v >> 16;
    *minor = v & 0xffff;
    return 0;
}

/* XENVER_extraversion, XENVER_capabilities or XENVER_changeset, NUL-terminated. */
static int pvgrub_xc_version_string(xc_interface *xch, int cmd, char *out, size_t size)
{
    union {
        xen_extraversion_t extra;
        xen_capabilities_info_t caps;
        xen_changeset_info_t changeset;
    } buf;
    memset(&buf, 0, sizeof(buf));
    if (cmd != XENVER_extraversion && cmd != XENVER_capabilities && cmd != XENVER_changeset) {
        errno = EINVAL;
        return -1;
    }
    if (xc_version(xch, cmd, &buf) < 0)
        return -1;
    if (size) {
        size_t n = strnlen((const char *)&buf, sizeof(buf));
        if (n >= size)
            n = size - 1;
        memcpy(out, &buf, n);
        out[n] = '\0';
    }
    return 0;
}

static int pvgrub_xc_physinfo(xc_interface *xch, struct pvgrub_physinfo *out)
{
    xc_physinfo_t info;
    memset(&info, 0, sizeof(info));
    if (xc_physinfo(xch, &info) != 0)
        return -1;
    out->threads_per_core = info.threads_per_core;
    out->cores_per_socket = info.cores_per_socket;
    out->nr_cpus = info.nr_cpus;
    out->nr_nodes = info.nr_nodes;
    out->cpu_khz = info.cpu_khz;
    out->capabilities = info.capabilities;
    out->total_pages = info.total_pages;
    out->free_pages = info.free_pages;
    out->max_mfn = info.max_mfn;
    return 0;
}

/* As libxl__domain_make: default grant/maptrack limits, grant table v1 max. */
static int pvgrub_xc_domain_create(xc_interface *xch, uint32_t *domid, uint32_t flags,
                                   uint32_t max_vcpus, const uint8_t *handle,
                                   uint32_t emulation_flags)
{
    struct xen_domctl_createdomain config;
    memset(&config, 0, sizeof(config));
    config.flags = flags;
    config.max_vcpus = max_vcpus;
    config.max_evtchn_port = -1;
    config.max_grant_frames = -1;
    config.max_maptrack_frames = -1;
    config.grant_opts = XEN_DOMCTL_GRANT_version(1);
    memcpy(config.handle, handle, sizeof(config.handle));
#if defined(__i386__) || defined(__x86_64__)
    config.arch.emulation_flags = emulation_flags;
#else
    (void)emulation_flags;
#endif
    return xc_domain_create(xch, domid, &config);
}

/* Up to max domains from first_domid on; returns how many, or -1. */
static int pvgrub_xc_domain_list(xc_interface *xch, uint32_t first_domid, unsigned int max,
                                 struct pvgrub_domain_info *out)
{
    xc_domaininfo_t info[64];
    int n, i;
    if (max > 64)
        max = 64;
    n = xc_domain_getinfolist(xch, first_domid, max, info);
    if (n < 0)
        return -1;
    for (i = 0; i < n; i++) {
        out[i].domid = info[i].domain;
        out[i].flags = info[i].flags;
        out[i].tot_pages = info[i].tot_pages;
        out[i].max_pages = info[i].max_pages;
        out[i].max_vcpu_id = info[i].max_vcpu_id;
        out[i].nr_online_vcpus = info[i].nr_online_vcpus;
        memcpy(out[i].handle, info[i].handle, 16);
    }
    return n;
}

/* FLASK_GET_PEER_SID: the SID of the domain at the other end of the caller's
 * interdomain event channel `port`.  Returns 0, or -1 with errno (ENOSYS
 * without FLASK, EINVAL for a port that is not a bound interdomain port). */
static int pvgrub_xc_flask_get_peer_sid(xc_interface *xch, uint32_t port, uint32_t *sid)
{
    xen_flask_op_t op;
    memset(&op, 0, sizeof(op));
    op.cmd = FLASK_GET_PEER_SID;
    op.u.peersid.evtchn = port;
    if (xc_flask_op(xch, &op) < 0)
        return -1;
    *sid = op.u.peersid.sid;
    return 0;
}
"""
