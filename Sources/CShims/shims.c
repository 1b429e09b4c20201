#include "CShims.h"

static int fabric_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Percent-decodes a URL path or query value in place, like libmicrohttpd's own, except that `%00` stays as it is:
/// a NUL would cut the C string short, so `/v1/workloads/%00` would reach the router as `/v1/workloads/`.
static size_t fabric_unescape(void *cls, struct MHD_Connection *connection, char *s) {
    (void)cls;
    (void)connection;
    char *r = s, *w = s;
    while (*r != 0) {
        if (r[0] == '%' && r[1] != 0 && r[2] != 0) {
            int hi = fabric_hex(r[1]), lo = fabric_hex(r[2]);
            if (hi >= 0 && lo >= 0 && (hi != 0 || lo != 0)) {
                *w++ = (char)(hi * 16 + lo);
                r += 3;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = 0;
    return (size_t)(w - s);
}

struct MHD_Daemon *fabric_mhd_start(const fabric_mhd_options *o,
                                    MHD_AccessHandlerCallback handler, void *handler_cls,
                                    MHD_RequestCompletedCallback completed, void *completed_cls) {
    return MHD_start_daemon(o->flags, o->port, NULL, NULL, handler, handler_cls,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                            MHD_OPTION_SOCK_ADDR, o->bind_address,
                            MHD_OPTION_THREAD_POOL_SIZE, o->thread_pool_size,
                            MHD_OPTION_CONNECTION_LIMIT, o->connection_limit,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_connection_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, o->connection_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->connection_memory_limit,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)o->listen_backlog,
                            MHD_OPTION_UNESCAPE_CALLBACK, fabric_unescape, NULL,
                            MHD_OPTION_END);
}

uint16_t fabric_mhd_bound_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info == NULL ? 0 : info->port;
}

int fabric_sqlite_bind_text(sqlite3_stmt *stmt, int index, const char *text, int length) {
    return sqlite3_bind_text(stmt, index, text, length, SQLITE_TRANSIENT);
}

int fabric_sqlite_bind_blob(sqlite3_stmt *stmt, int index, const void *data, int length) {
    return sqlite3_bind_blob(stmt, index, data, length, SQLITE_TRANSIENT);
}
