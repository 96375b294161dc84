/* host.h — creating and tearing down a zh_host (loop, Lua, curl, subsystems) and signals. */
#ifndef ZH_HOST_H
#define ZH_HOST_H

#include "zh.h"

typedef struct zh_host_opts {
    const char *secrets_dir;
    const char *scripts_dir;
    const char *spool_dir;
    int verbose;
    double cpu_budget_s;
} zh_host_opts;

/* NULL after one line on stderr saying why (secrets/.env.ch unreadable or malformed, no memory):
 * callers only exit. */
zh_host *zh_host_new(const zh_host_opts *o);
/* Close in order: tasks cancelled, ClickHouse and HTTP state released, curl and uv handles
 * closed and the loop drained, then lua_close. */
void zh_host_free(zh_host *h);
/* SIGINT/SIGTERM/SIGHUP go to h->on_signal, on the loop; SIGINT also interrupts busy Lua. */
void zh_host_install_signals(zh_host *h);

#endif
