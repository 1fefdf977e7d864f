"""libxentoollog: a logger that collects messages in memory (xentoollog.h).

Every Xen library reports through a ``xentoollog_logger``.  Passing NULL
makes them print to stderr, which would break our one-line error rule and
the xl bootloader protocol on stdout/stderr, so we always pass this logger.
It also is how we learn what libxenguest's ELF loader found: libelf logs
each Xen note and the computed addresses at XTL_DETAIL
(``elf_xen_parse_note``, ``elf_xen_addr_calc_check``), information that
``struct elf_dom_parms`` holds but no installed header declares.

The buffer is bounded (``PVGRUB_LOG_MAX``); later messages are dropped and
``truncated`` says so.
"""

INCLUDES = """
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xentoollog.h>
"""

TYPES = """
typedef struct xentoollog_logger xentoollog_logger;
typedef enum xentoollog_level {
    XTL_NONE, XTL_DEBUG, XTL_VERBOSE, XTL_DETAIL, XTL_PROGRESS, XTL_INFO,
    XTL_NOTICE, XTL_WARN, XTL_ERROR, XTL_CRITICAL, XTL_NUM_LEVELS
} xentoollog_level;
#define PVGRUB_LOG_MAX ...
"""

#: Our own plain structs: declared to cffi and compiled into the C source.
OWN_TYPES = """"""

FUNCTIONS = """
void xtl_logger_destroy(struct xentoollog_logger *logger);
xentoollog_logger *pvgrub_log_new(int min_level);
const char *pvgrub_log_text(xentoollog_logger *logger, size_t *len, int *truncated);
void pvgrub_log_clear(xentoollog_logger *logger);
"""

CUSTOMIZATIONS = r"""
#define PVGRUB_LOG_MAX (4u << 20)

struct pvgrub_log {
    xentoollog_logger vtable;   /* first: the library calls through it */
    int min_level;
    int truncated;
    size_t len, cap;
    char *buf;
};

static void pvgrub_log_append(struct pvgrub_log *log, const char *text, size_t n)
{
    if (log->truncated)
        return;
    if (log->len + n + 1 > PVGRUB_LOG_MAX) {
        log->truncated = 1;
        return;
    }
    if (log->len + n + 1 > log->cap) {
        size_t cap = log->cap ? log->cap : 4096;
        while (cap < log->len + n + 1)
            cap *= 2;
        char *grown = realloc(log->buf, cap);
        if (!grown) {
            log->truncated = 1;
            return;
        }
        log->buf = grown;
        log->cap = cap;
    }
    memcpy(log->buf + log->len, text, n);
    log->len += n;
    log->buf[log->len] = '\0';
}

static void pvgrub_log_vmessage(xentoollog_logger *logger, xentoollog_level level,
                                int errnoval, const char *context,
                                const char *format, va_list al)
{
    struct pvgrub_log *log = (struct pvgrub_log *)logger;
    char line[2048];
    int n, m;

    if ((int)level < log->min_level)
        return;
    n = snprintf(line, sizeof(line), "%d\t%s\t", (int)level, context ? context : "");
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    m = vsnprintf(line + n, sizeof(line) - n, format, al);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    if (errnoval >= 0 && (size_t)n + 32 < sizeof(line))
        n += snprintf(line + n, sizeof(line) - n, " (errno %d)", errnoval);
    while (n > 0 && line[n - 1] == '\n')
        n--;
    pvgrub_log_append(log, line, (size_t)n);
    pvgrub_log_append(log, "\n", 1);
}

static void pvgrub_log_progress(xentoollog_logger *logger, const char *context,
                                const char *doing_what, int percent,
                                unsigned long done, unsigned long total)
{
    (void)logger; (void)context; (void)doing_what; (void)percent; (void)done; (void)total;
}

static void pvgrub_log_destroy(xentoollog_logger *logger)
{
    struct pvgrub_log *log = (struct pvgrub_log *)logger;
    free(log->buf);
    free(log);
}

static xentoollog_logger *pvgrub_log_new(int min_level)
{
    struct pvgrub_log *log = calloc(1, sizeof(*log));
    if (!log)
        return NULL;
    log->vtable.vmessage = pvgrub_log_vmessage;
    log->vtable.progress = pvgrub_log_progress;
    log->vtable.destroy = pvgrub_log_destroy;
    log->min_level = min_level;
    return &log->vtable;
}

static const char *pvgrub_log_text(xentoollog_logger *logger, size_t *len, int *truncated)
{
    struct pvgrub_log *log = (struct pvgrub_log *)logger;
    *len = log->len;
    *truncated = log->truncated;
    return log->buf ? log->buf : "";
}

static void pvgrub_log_clear(xentoollog_logger *logger)
{
    struct pvgrub_log *log = (struct pvgrub_log *)logger;
    log->len = 0;
    log->truncated = 0;
    if (log->buf)
        log->buf[0] = '\0';
}
"""
