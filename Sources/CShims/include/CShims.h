#ifndef FABRIC_CSHIMS_H
#define FABRIC_CSHIMS_H
// Tiny C shims for the calls Swift cannot make directly (variadic functions, function-like macros).
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <sqlite3.h>

/// Options for starting a libmicrohttpd daemon, passed to MHD_start_daemon's variadic option list.
typedef struct fabric_mhd_options {
    unsigned int flags;                 // MHD_USE_* flags
    uint16_t port;
    const struct sockaddr *bind_address; // may be NULL
    unsigned int thread_pool_size;      // 0 = no pool
    unsigned int connection_limit;
    unsigned int per_ip_connection_limit; // 0 = no limit
    unsigned int connection_timeout_s;
    size_t connection_memory_limit;
    int listen_backlog;
} fabric_mhd_options;

/// Starts a daemon with the given access handler and request-completed callback.
struct MHD_Daemon *fabric_mhd_start(const fabric_mhd_options *opts,
                                    MHD_AccessHandlerCallback handler, void *handler_cls,
                                    MHD_RequestCompletedCallback completed, void *completed_cls);

/// The daemon flags of Fabric's HTTP server and of its benchmark twin: a pool of internal poll() threads whose
/// connections may be suspended while an async handler runs (suspend/resume implies the ITC wake-up channel).
/// poll, not epoll: with libmicrohttpd 0.9.75's edge-triggered epoll, a client that sends part of a body and
/// closes at once is only noticed at the connection timeout; poll notices at once, at the same throughput here.
static inline unsigned int fabric_mhd_pool_flags(void) {
    return MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
}

/// The port a started daemon listens on (the real one after binding port 0), or 0 when unknown.
uint16_t fabric_mhd_bound_port(struct MHD_Daemon *daemon);

/// sqlite3_bind_text / _blob with SQLITE_TRANSIENT (a macro Swift cannot import).
int fabric_sqlite_bind_text(sqlite3_stmt *stmt, int index, const char *text, int length);
int fabric_sqlite_bind_blob(sqlite3_stmt *stmt, int index, const void *data, int length);

#endif
