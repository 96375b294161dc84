/* zh.h — the host object shared by every subsystem, and small helpers used everywhere.
 *
 * One process runs one zh_host: one uv loop, one Lua state, one curl multi handle.
 * Subsystems keep their state in the struct below (never in file-level globals);
 * each subsystem's header declares its own zh_<subsystem>_* functions. */
#ifndef ZH_H
#define ZH_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <uv.h>
#include <lua.h>

#define ZH_VERSION "0.1.0"

typedef struct zh_host zh_host;
typedef struct zh_task zh_task;
typedef struct zh_curl zh_curl;
typedef struct zh_run zh_run;

struct zh_host {
    uv_loop_t *loop;
    lua_State *L;
    zh_curl *curl;              /* curl multi driven by the loop (curl_uv.c) */
    zh_task *current;           /* task whose Lua code is running right now, or NULL */
    bool exiting_now;           /* a second Ctrl-C: nothing waits for ClickHouse any more (main.c) */
    bool interrupted_in_lua;    /* SIGINT stopped a task busy in Lua (task.c); its run is interrupted */
    struct zh_sched_state *tasks; /* ready queue and task bookkeeping (task.c) */
    struct zh_http_state *http;   /* per-source limits and retry policies (l_http.c) */
    struct zh_ch_state *ch;       /* ClickHouse connection settings and open sinks (clickhouse.c) */
    struct zh_spool_state *spool; /* spool files kept locked for runs still appending to them (spool.c) */
    zh_run *run;                /* the script run in progress (run.c), NULL in the REPL */
    const char *secrets_dir;    /* --secrets / ZHOST_SECRETS / "./secrets" */
    const char *scripts_dir;    /* directory of the running script, for require() */
    const char *spool_dir;      /* where undeliverable batches go */
    bool spool_auto_replay;     /* a daemon delivers spool_dir by itself (its job spool_replay is on): run
                                 * messages say so. serve.c keeps it current; `zhost run` reads $ZHOST_AUTO_REPLAY */
    int verbose;                /* -v count */
    double cpu_budget_s;        /* max CPU seconds a task may run without yielding */
    uv_async_t sigint_async;    /* woken from the SIGINT/SIGTERM handler (host.c) */
    void (*on_signal)(zh_host *h, int signum); /* what the current command does on a signal */
    void *on_signal_ud;
};

/* Growable byte buffer. Owner frees with zh_buf_free. */
typedef struct zh_buf {
    char *data;
    size_t len, cap;
    bool mapped; /* data is a page mapping of cap bytes (zh_buf_map), not a malloc block */
} zh_buf;

void zh_buf_init(zh_buf *b);
void zh_buf_free(zh_buf *b);
void zh_buf_reserve(zh_buf *b, size_t extra);
/* Moves the bytes to a 2 MiB-aligned page mapping of at least cap bytes that the kernel may back
 * with transparent huge pages: a sink's batch buffer (many MiB, written once per batch) then costs
 * one page fault per 2 MiB instead of one per 4 KiB. Later growth stays mapped; zh_buf_free unmaps.
 * When no mapping can be made, or $ZHOST_HUGE_PAGES is 0, the buffer stays as it was (slower, not
 * wrong). */
void zh_buf_map(zh_buf *b, size_t cap);
void zh_buf_add_slow(zh_buf *b, const void *p, size_t n);
void zh_buf_adds(zh_buf *b, const char *s);
/* Inline: row encoding appends a dozen pieces per row. The data stays NUL-terminated. */
static inline void zh_buf_add(zh_buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        zh_buf_add_slow(b, p, n);
        return;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}
static inline void zh_buf_addc(zh_buf *b, char c) { zh_buf_add(b, &c, 1); }
void zh_buf_printf(zh_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns a NUL-terminated view (the buffer keeps ownership). */
const char *zh_buf_cstr(zh_buf *b);

void *zh_xmalloc(size_t n);
void *zh_xcalloc(size_t n, size_t m);
void *zh_xrealloc(void *p, size_t n);
char *zh_xstrdup(const char *s);
char *zh_xstrndup(const char *s, size_t n);

/* The longest prefix of s[0..len) of at most max bytes that does not split a UTF-8 character. */
size_t zh_utf8_cut(const char *s, size_t len, size_t max);

/* A JSON string literal for s (NULL as ""): quotes, backslashes and control characters escaped,
 * and `<` as \u003c so the text can sit inside an HTML <script>. */
void zh_buf_json_str(zh_buf *b, const char *s);

/* Files. */
/* mkdir -p: creates path and its missing parents with `mode`. Returns 0 (also when it exists),
 * or -1 with errno set. */
int zh_mkdirs(const char *path, unsigned mode);
/* The whole file as malloc'd text with a NUL after its *len bytes, or NULL with errno set (EFBIG
 * when it is larger than max; max 0: no limit). */
char *zh_read_file(const char *path, size_t max, size_t *len);
/* A file that replaces `path` atomically: written under a temporary name in the same directory,
 * then fsynced, renamed over path and the directory fsynced, so readers (and a crash) see the old
 * file or the new one, never a torn one. Errors (*err, malloc'd) name the file. */
typedef struct zh_atomic_file {
    int fd;
    char *path, *tmp;
} zh_atomic_file;
/* Creates the temporary file with `mode` (creating missing parent directories with `dir_mode`
 * when it is not 0). Returns 0, or -1 with *err set. */
int zh_atomic_open(zh_atomic_file *f, const char *path, unsigned mode, unsigned dir_mode, char **err);
int zh_atomic_write(zh_atomic_file *f, const void *p, size_t n, char **err);
/* Commits (fsync, rename, directory fsync). The file is closed either way; on failure the
 * temporary file is removed and path is unchanged. Returns 0, or -1 with *err set. */
int zh_atomic_commit(zh_atomic_file *f, char **err);
/* Drops the temporary file; path is unchanged. */
void zh_atomic_abort(zh_atomic_file *f);
/* The whole thing for data already in memory. Returns 0, or -1 with *err set. */
int zh_write_atomic(const char *path, const void *data, size_t len, unsigned mode, char **err);

/* Monotonic seconds (from the uv loop's clock when a loop is given, else fresh). */
double zh_now_mono(void);
/* Wall-clock seconds since the epoch, with sub-second precision. */
double zh_now_wall(void);

/* The host that owns a Lua state (stored in the state's extra space by lrt.c). */
static inline zh_host *zh_host_of(lua_State *L) { return *(zh_host **)lua_getextraspace(L); }

#endif
