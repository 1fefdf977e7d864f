"""libxenevtchn (xenevtchn.h): event channels through ``/dev/xen/evtchn``.

One handle owns many local ports and one pending queue; ``xenevtchn_fd`` is
readable when a port fired, ``xenevtchn_pending`` returns (and masks) it and
``xenevtchn_unmask`` re-arms it.
"""

INCLUDES = """
#include <xenevtchn.h>
"""

TYPES = """
typedef struct xenevtchn_handle xenevtchn_handle;
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """"""

FUNCTIONS = """
xenevtchn_handle *xenevtchn_open(xentoollog_logger *logger, unsigned int flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);
"""

CUSTOMIZATIONS = ""
