"""libxenstore (xenstore.h, xenstore_lib.h): the C xenstore client.

A second client beside pyxs, so our xenstored (and a real one) is checked
against the library every Xen tool links.  ``xs_open(0)`` connects to the
socket named by ``XENSTORED_PATH`` (default ``/var/run/xenstored/socket``)
or falls back to ``/dev/xen/xenbus``.  Strings and arrays it returns are
malloc'd and freed with ``free``.
"""

INCLUDES = """
#include <stdlib.h>
#include <stdbool.h>
#include <xenstore.h>
"""

TYPES = """
struct xs_handle;
typedef uint32_t xs_transaction_t;
#define XBT_NULL ...
struct xs_permissions {
    unsigned int id;
    unsigned int perms;
};
#define XS_PERM_NONE ...
#define XS_PERM_READ ...
#define XS_PERM_WRITE ...
#define XS_WATCH_PATH ...
#define XS_WATCH_TOKEN ...
"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """"""

FUNCTIONS = """
void free(void *ptr);
struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *xsh);
char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path,
                    unsigned int *num);
void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len);
bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,
              unsigned int len);
bool xs_mkdir(struct xs_handle *h, xs_transaction_t t, const char *path);
bool xs_rm(struct xs_handle *h, xs_transaction_t t, const char *path);
struct xs_permissions *xs_get_permissions(struct xs_handle *h, xs_transaction_t t,
                                          const char *path, unsigned int *num);
bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t, const char *path,
                        struct xs_permissions *perms, unsigned int num_perms);
bool xs_watch(struct xs_handle *h, const char *path, const char *token);
bool xs_unwatch(struct xs_handle *h, const char *path, const char *token);
int xs_fileno(struct xs_handle *h);
char **xs_check_watch(struct xs_handle *h);
bool xs_introduce_domain(struct xs_handle *h, unsigned int domid, unsigned long mfn,
                         unsigned int eventchn);
bool xs_release_domain(struct xs_handle *h, unsigned int domid);
char *xs_get_domain_path(struct xs_handle *h, unsigned int domid);
"""

CUSTOMIZATIONS = ""
