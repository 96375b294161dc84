/* host.c — owns the zh_host lifecycle and process signals.
 *
 * Signals: the handler only sets a flag (for a script busy in Lua, see task.c) and wakes the
 * loop through a uv_async; everything else happens on the loop in on_async. The async handle is
 * reachable from the handler only through a process-wide pointer, set once here. */
#include "host.h"
#include "clickhouse.h"
#include "curl_uv.h"
#include "l_http.h"
#include "log.h"
#include "lrt.h"
#include "task.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_async_t *signal_async;
static volatile sig_atomic_t last_signal;

static void on_signal_raw(int signum) {
    last_signal = signum;
    if (signum == SIGINT) zh_task_note_sigint();
    if (signal_async) uv_async_send(signal_async);
}

static void on_async(uv_async_t *a) {
    zh_host *h = a->data;
    int signum = last_signal;
    last_signal = 0;
    if (!signum) return;
    if (signum == SIGINT) zh_task_take_sigint();
    if (h->on_signal) h->on_signal(h, signum);
}

void zh_host_install_signals(zh_host *h) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_raw;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal_async = &h->sigint_async;
}

zh_host *zh_host_new(const zh_host_opts *o) {
    /* Before anything is allocated: going on with the defaults would end, after retries, in a
     * misleading "unreachable at 127.0.0.1:8123" or, worse, in writes to another database. */
    char *err = NULL;
    if (zh_ch_load_env(o->secrets_dir, &err) != 0) {
        fprintf(stderr, "zhost: cannot read the ClickHouse settings: %s (fix the file or its permissions)\n", err);
        free(err);
        return NULL;
    }
    zh_host *h = zh_xcalloc(1, sizeof *h);
    h->loop = zh_xcalloc(1, sizeof *h->loop);
    uv_loop_init(h->loop);
    h->secrets_dir = o->secrets_dir;
    h->scripts_dir = o->scripts_dir;
    const char *env_spool = getenv("ZHOST_SPOOL");
    h->spool_dir = o->spool_dir ? o->spool_dir : env_spool && *env_spool ? env_spool : "var/spool";
    h->verbose = o->verbose;
    h->cpu_budget_s = o->cpu_budget_s > 0 ? o->cpu_budget_s : 60;
    uv_async_init(h->loop, &h->sigint_async, on_async);
    h->sigint_async.data = h;
    uv_unref((uv_handle_t *)&h->sigint_async);
    h->curl = zh_curl_new(h->loop);
    zh_tasks_init(h);
    zh_http_init(h);
    zh_ch_init(h);
    if (zh_lrt_open(h) != 0) {
        fprintf(stderr, "zhost: cannot create the Lua state (out of memory)\n");
        free(h->loop);
        free(h);
        return NULL;
    }
    return h;
}

static void walk_close(uv_handle_t *hd, void *ud) {
    (void)ud;
    if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

void zh_host_free(zh_host *h) {
    if (!h) return;
    zh_tasks_shutdown(h);
    zh_ch_shutdown(h);
    zh_spool_shutdown(h);
    zh_http_shutdown(h);
    zh_curl_free(h->curl);
    h->curl = NULL;
    if (signal_async == &h->sigint_async) signal_async = NULL;
    uv_close((uv_handle_t *)&h->sigint_async, NULL);
    uv_run(h->loop, UV_RUN_DEFAULT);
    /* Anything still open now is a leak elsewhere; close it so the loop can end. */
    uv_walk(h->loop, walk_close, NULL);
    uv_run(h->loop, UV_RUN_DEFAULT);
    zh_lrt_close(h);
    uv_loop_close(h->loop);
    free(h->loop);
    free(h);
}
