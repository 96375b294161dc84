/* run.c — owns a script run from start to its final meta_job_runs row, and the Lua `job` module
 * (the run's name, arguments, secrets, metrics and message).
 *
 * Order at the end of a run: root task done → leftover sub-tasks cancelled → sinks flushed or
 * spooled → status decided (a run that spooled rows has failed) → final row written → on_done.
 * A run the loop can no longer advance is cancelled the same way (zh_run_stalled). zh_run_free
 * works at any stage: it cuts whatever could still call back into the run. */
#include "run.h"
#include "clickhouse.h"
#include "log.h"
#include "lrt.h"
#include "secrets.h"
#include <lauxlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *zh_run_status_name(zh_run_status s) {
    switch (s) {
    case ZH_RUN_RUNNING: return "running";
    case ZH_RUN_SUCCESS: return "success";
    case ZH_RUN_ERROR: return "error";
    case ZH_RUN_INTERRUPTED: return "interrupted";
    }
    return "?";
}

void zh_uuid4(char out[37]) {
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof b) {
        uint64_t x = (uint64_t)(zh_now_wall() * 1e6) ^ (uint64_t)getpid() << 32;
        for (int i = 0; i < 16; i++) { x = x * 6364136223846793005ULL + 1442695040888963407ULL; b[i] = (unsigned char)(x >> 56); }
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void copy_token(const char *v, char *out, size_t n) {
    size_t i = 0;
    while (v[i] && v[i] != ' ' && v[i] != '\t' && v[i] != '\n' && v[i] != '\r' && i + 1 < n) {
        out[i] = v[i];
        i++;
    }
    out[i] = 0;
}

/* The directive line, or "" (first 10 lines only: it is a header, not code). */
static void directive_line(const char *path, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    for (int i = 0; i < 10 && fgets(line, sizeof line, f); i++) {
        char *d = strstr(line, "-- zhost:");
        if (d) {
            snprintf(out, n, "%s", d + 9);
            break;
        }
    }
    fclose(f);
}

void zh_run_read_directive(const char *path, char *job, size_t jl, char *secrets, size_t sl) {
    char d[512];
    directive_line(path, d, sizeof d);
    char *j = strstr(d, "job=");
    if (j && job) copy_token(j + 4, job, jl);
    char *s = strstr(d, "secrets=");
    if (s && secrets) copy_token(s + 8, secrets, sl);
}

int zh_run_check_options(const zh_run_opts *o, char **err) {
    if (!o->extra || !o->extra[0]) return 0;
    char d[512], allowed[400] = "";
    directive_line(o->script, d, sizeof d);
    char *opt = strstr(d, "options=");
    if (opt) copy_token(opt + 8, allowed, sizeof allowed);
    for (const char *const *e = o->extra; e[0]; e += 2) {
        bool ok = false;
        size_t n = strlen(e[0]);
        for (const char *p = allowed; *p;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if (len == n && !strncmp(p, e[0], n)) ok = true;
            p += len + (c ? 1 : 0);
        }
        if (!ok) {
            zh_buf b;
            zh_buf_init(&b);
            zh_buf_printf(&b, "unknown option --%s for %s", e[0], o->script);
            if (*allowed) {
                zh_buf_adds(&b, " (it takes --");
                for (const char *p = allowed; *p; p++) zh_buf_adds(&b, *p == ',' ? ", --" : (char[]){*p, 0});
                zh_buf_adds(&b, " besides --days/--since/--to/--dry-run)");
            } else {
                zh_buf_adds(&b, " (it takes only --days, --since, --to and --dry-run; a script lists more in its "
                                "`-- zhost: options=a,b` line)");
            }
            *err = b.data;
            return -1;
        }
        if (!e[1]) break;
    }
    return 0;
}

void zh_run_names(const zh_run_opts *o, char *job, size_t jl, char *secrets, size_t sl) {
    char sec[64] = "";
    job[0] = 0;
    zh_run_read_directive(o->script, job, jl, sec, sizeof sec);
    if (o->job && *o->job) snprintf(job, jl, "%s", o->job);
    if (!*job) {
        const char *base = strrchr(o->script, '/');
        snprintf(job, jl, "%s", base ? base + 1 : o->script);
        char *dot = strrchr(job, '.');
        if (dot) *dot = 0;
    }
    if (secrets) snprintf(secrets, sl, "%s", *sec ? sec : job);
}

#define ZH_RUN_MESSAGE_MAX 4000

static void set_message(zh_run *r, const char *msg) {
    free(r->message);
    /* The message reaches meta_job_runs, the status page, alert mails and `zhost run`'s last line,
     * none of which goes through the logger: an error text that quotes a token must not either. */
    r->message = msg ? zh_log_redacted(msg) : NULL;
    /* error("bad page: " .. res.body) must not put megabytes into meta_job_runs, the status page
     * and the alert mails: the start says what went wrong. Cut after redaction, so no part of a
     * secret is left behind. */
    size_t n = r->message ? strlen(r->message) : 0;
    if (n > ZH_RUN_MESSAGE_MAX) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%.*s... (%zu bytes in all)", (int)zh_utf8_cut(r->message, n, ZH_RUN_MESSAGE_MAX), r->message, n);
        free(r->message);
        r->message = b.data;
    }
}

/* ---- the final row ---- */

static void build_metrics(zh_run *r, zh_buf *out) {
    zh_host *h = r->h;
    lua_State *L = h->L;
    double duration = zh_now_mono() - r->started_mono;
    zh_buf_printf(out, "{\"pid\":%ld,\"duration\":%.0f,\"duration_ms\":%.0f,\"http_requests\":%llu,\"retries\":%llu,\"http_bytes\":%llu,",
                  (long)getpid(), duration, duration * 1000, (unsigned long long)r->group.http_requests,
                  (unsigned long long)r->group.http_retries, (unsigned long long)r->group.http_bytes);
    zh_buf_printf(out, "\"rows\":%llu,\"spooled_rows\":%llu,\"lost_rows\":%llu,\"tables\":",
                  (unsigned long long)zh_ch_group_rows(h, &r->group), (unsigned long long)zh_ch_group_spooled(h, &r->group),
                  (unsigned long long)zh_ch_group_lost(h, &r->group));
    zh_ch_group_tables_json(h, &r->group, out);
    if (r->opts.dry_run) zh_buf_adds(out, ",\"dry_run\":true");
    /* Script metrics: numbers and strings. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->metrics_ref);
    if (lua_istable(L, -1)) {
        lua_getfield(L, LUA_REGISTRYINDEX, "zhost.json.encode");
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            size_t n;
            const char *js = lua_tolstring(L, -1, &n);
            if (js && n > 2 && js[0] == '{') {
                zh_buf_addc(out, ',');
                zh_buf_add(out, js + 1, n - 2);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    zh_buf_addc(out, '}');
}

static void record_done(void *ud, const char *err) {
    zh_run *r = ud;
    if (err) ZH_WARN(r->group.job, "msg=\"could not write meta_job_runs\" run_id=%s error=\"%s\"", r->run_id, err);
    if (r->on_done) r->on_done(r, r->on_done_ud);
}

static void write_final(zh_run *r) {
    /* The final row supersedes the "running" row (same run_id, a later _ver): one still in flight
     * is dropped, not waited for. A run shorter than its insert must not end with the request in
     * flight (it leaked); waiting for it instead held the end of every run against a hung
     * ClickHouse for the whole time the running row was allowed. */
    if (r->running_row_pending) {
        if (zh_ch_record_drop(r->h, r))
            ZH_DEBUG(r->group.job, "msg=\"the running row was still in flight; the final row replaces it\" run_id=%s", r->run_id);
        r->running_row_pending = false;
    }
    zh_buf metrics;
    zh_buf_init(&metrics);
    build_metrics(r, &metrics);
    uint64_t rows = zh_ch_group_rows(r->h, &r->group), spooled = zh_ch_group_spooled(r->h, &r->group);
    /* Who delivers them: under a daemon whose spool_replay is on, the daemon (the message lands in
     * meta_job_runs and alert mails: an operator should not replay by hand what is taken anyway). */
    const char *deliver = r->h->spool_auto_replay
                              ? "job spool_replay delivers them once ClickHouse answers (by hand: `zhost spool replay`)"
                              : "deliver them with `zhost spool replay`";
    if (spooled && r->status == ZH_RUN_SUCCESS) {
        r->status = ZH_RUN_ERROR;
        zh_buf m;
        zh_buf_init(&m);
        const char *why = zh_ch_group_last_error(r->h, &r->group);
        zh_buf_printf(&m, "%llu rows spooled to %s (%s); %s", (unsigned long long)spooled, r->h->spool_dir,
                      why ? why : "ClickHouse unavailable", deliver);
        set_message(r, m.data);
        zh_buf_free(&m);
    } else if (spooled) {
        zh_buf m;
        zh_buf_init(&m);
        zh_buf_printf(&m, "%s; %llu rows spooled, %s", r->message ? r->message : "failed", (unsigned long long)spooled, deliver);
        set_message(r, m.data);
        zh_buf_free(&m);
    }
    uint64_t lost = zh_ch_group_lost(r->h, &r->group);
    if (lost) {
        /* Rows neither ClickHouse nor the spool took: the run must say they are gone, not that a
         * replay will bring them. */
        const char *why = zh_ch_group_last_error(r->h, &r->group), *serr = zh_ch_group_spool_error(r->h, &r->group);
        zh_buf m;
        zh_buf_init(&m);
        if (r->status == ZH_RUN_SUCCESS) r->status = ZH_RUN_ERROR;
        else if (r->message) zh_buf_printf(&m, "%s; ", r->message);
        zh_buf_printf(&m, "%llu rows LOST: ClickHouse did not take them (%s) and the spool refused them (%s); "
                          "load the period again",
                      (unsigned long long)lost, why ? why : "unavailable", serr ? serr : "?");
        set_message(r, m.data);
        zh_buf_free(&m);
    }
    double dur = zh_now_mono() - r->started_mono;
    int level = r->status == ZH_RUN_SUCCESS ? ZH_LOG_INFO : ZH_LOG_ERROR;
    zh_log(level, r->group.job, "msg=\"run finished\" run_id=%s status=%s rows=%llu duration=%.1f%s%s%s", r->run_id,
           zh_run_status_name(r->status), (unsigned long long)rows, dur, r->message ? " message=\"" : "",
           r->message ? r->message : "", r->message ? "\"" : "");
    if (!r->opts.record) {
        zh_buf_free(&metrics);
        record_done(r, NULL);
        return;
    }
    zh_run_record rec = {
        .job = r->group.job, .run_id = r->run_id, .status = zh_run_status_name(r->status),
        .message = r->message ? r->message : "", .metrics_json = metrics.data,
        .started_at = r->started_wall, .finished_at = zh_now_wall(), .rows = rows,
    };
    zh_ch_record_run(r->h, &rec, record_done, r);
    zh_buf_free(&metrics);
}

static void flushed(void *ud) {
    zh_run *r = ud;
    if (r->opts.dry_run) zh_ch_group_print_dry_run(r->h, &r->group);
    write_final(r);
}

static void begin_finish(zh_run *r) {
    if (r->finishing) return;
    r->finishing = true;
    if (r->timeout_timer) uv_timer_stop(r->timeout_timer);
    int left = zh_task_cancel_group(r->h, &r->group, "the run's main script finished");
    if (left) ZH_WARN(r->group.job, "msg=\"sub-tasks still running at the end of the run were cancelled\" count=%d", left);
    zh_ch_group_finish(r->h, &r->group, flushed, r);
}

static void root_done(zh_task *t, void *ud) {
    zh_run *r = ud;
    if (r->status == ZH_RUN_RUNNING) {
        if (t->ok) {
            r->status = ZH_RUN_SUCCESS;
        } else if (r->h->interrupted_in_lua) {
            /* Ctrl-C reached a script busy in Lua through the hook, before the loop could cancel
             * the run: the same ending as Ctrl-C while it waits. */
            r->h->interrupted_in_lua = false;
            r->status = ZH_RUN_INTERRUPTED;
            set_message(r, "interrupted (SIGINT)");
        } else {
            r->status = ZH_RUN_ERROR;
            set_message(r, t->error_short);
            free(r->traceback);
            r->traceback = zh_log_redacted(t->error ? t->error : t->error_short);
            /* A missing setting ends the run at 3 a.m. too: the message says what to set where, and
             * a stack dump under it would only bury that. A script's own errors keep theirs. */
            bool need = r->need_error && t->error_short && !strcmp(t->error_short, r->need_error);
            if (!need) fprintf(stderr, "%s\n", r->traceback);
        }
    }
    r->root = NULL;
    zh_task_release(t);
    begin_finish(r);
}

void zh_run_cancel(zh_run *r, const char *reason, zh_run_status as) {
    if (r->finishing || r->status != ZH_RUN_RUNNING) return;
    r->status = as;
    set_message(r, reason);
    if (r->root) {
        zh_task *root = r->root;
        zh_task_cancel(root, reason);
        /* root_done ran through the task's on_done and started the finish. */
    } else {
        begin_finish(r);
    }
}

bool zh_run_stalled(zh_run *r) {
    if (r->finishing || !r->root || r->status != ZH_RUN_RUNNING) return false;
    char where[256];
    int waiting = zh_task_count_group(r->h, &r->group);
    zh_buf m;
    zh_buf_init(&m);
    if (zh_task_where(r->root, where, sizeof where))
        zh_buf_printf(&m, "stalled: the script waits at %s and nothing is left that could wake it", where);
    else
        zh_buf_adds(&m, "stalled: the script waits and nothing is left that could wake it");
    zh_buf_printf(&m, " (%d of its tasks waiting)", waiting);
    zh_run_cancel(r, m.data, ZH_RUN_ERROR);
    zh_buf_free(&m);
    return true;
}

static void timeout_fired(uv_timer_t *t) {
    zh_run *r = t->data;
    char msg[128];
    snprintf(msg, sizeof msg, "timed out after %.0f s", r->opts.timeout_s);
    zh_run_cancel(r, msg, ZH_RUN_ERROR);
}

/* Called only while the run waits for its final row: write_final drops a running row still in
 * flight, so the run is alive here. */
static void running_recorded(void *ud, const char *err) {
    zh_run *r = ud;
    if (err) ZH_DEBUG(r->group.job, "msg=\"could not write the running row\" error=\"%s\"", err);
    r->running_row_pending = false;
}

struct env_fill {
    lua_State *L;
    int idx;
};

static void env_put(void *ud, const char *k, const char *v) {
    struct env_fill *f = ud;
    lua_pushstring(f->L, v);
    lua_setfield(f->L, f->idx, k);
}

static char *dup_opt(const char *s) { return s ? zh_xstrdup(s) : NULL; }

zh_run *zh_run_start(zh_host *h, const zh_run_opts *o, void (*on_done)(zh_run *, void *), void *ud, char **err) {
    lua_State *L = h->L;
    if (zh_run_check_options(o, err) != 0) return NULL;
    char job[64] = "", secrets[64] = "";
    zh_run_names(o, job, sizeof job, secrets, sizeof secrets);

    zh_lrt_push_env(L, true);
    int env = lua_gettop(L);
    char *lerr = zh_lrt_load_file(L, o->script, env);
    if (lerr) {
        lua_settop(L, env - 1);
        *err = lerr;
        return NULL;
    }
    int fn = lua_gettop(L);

    /* Secrets: the file first, then the process environment wins. */
    lua_newtable(L);
    int senv = lua_gettop(L);
    struct env_fill fill = {L, senv};
    char *serr = NULL;
    const char *dir = h->secrets_dir ? h->secrets_dir : "secrets";
    if (zh_secrets_read(dir, secrets, env_put, &fill, &serr) < 0) {
        lua_settop(L, env - 1);
        *err = serr;
        return NULL;
    }

    zh_run *r = zh_xcalloc(1, sizeof *r);
    r->h = h;
    snprintf(r->group.job, sizeof r->group.job, "%s", job);
    r->script = zh_xstrdup(o->script);
    r->secrets_name = zh_xstrdup(secrets);
    r->opts = *o;
    r->opts.script = r->script;
    r->opts.job = NULL;
    r->opts.since = dup_opt(o->since);
    r->opts.to = dup_opt(o->to);
    r->opts.extra = NULL;
    zh_uuid4(r->run_id);
    snprintf(r->group.run_id, sizeof r->group.run_id, "%s", r->run_id);
    /* Until zh_run_free, this run may append to its spool files: replay must leave them alone. */
    zh_spool_hold(h, r->run_id);
    r->started_wall = zh_now_wall();
    r->started_mono = zh_now_mono();
    r->status = ZH_RUN_RUNNING;
    r->on_done = on_done;
    r->on_done_ud = ud;
    r->env_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops senv */
    lua_newtable(L);
    r->metrics_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    zh_ch_set_dry_run(h, &r->group, o->dry_run);

    /* job.args for this run. */
    lua_newtable(L);
    int args = lua_gettop(L);
    if (o->days > 0) {
        lua_pushinteger(L, o->days);
        lua_setfield(L, args, "days");
    }
    if (o->since) {
        lua_pushstring(L, o->since);
        lua_setfield(L, args, "since");
    }
    if (o->to) {
        lua_pushstring(L, o->to);
        lua_setfield(L, args, "to");
    }
    lua_pushboolean(L, o->dry_run);
    lua_setfield(L, args, "dry_run");
    for (const char *const *e = o->extra; e && e[0]; e += 2) {
        lua_pushstring(L, e[1] ? e[1] : "true");
        lua_setfield(L, args, e[0]);
        if (!e[1]) break;
    }
    /* The run's own `job` table, with the shared functions behind it. */
    lua_newtable(L);
    int jobt = lua_gettop(L);
    lua_pushstring(L, job);
    lua_setfield(L, jobt, "name");
    lua_pushstring(L, r->run_id);
    lua_setfield(L, jobt, "run_id");
    lua_pushvalue(L, args);
    lua_setfield(L, jobt, "args");
    lua_pushboolean(L, o->dry_run);
    lua_setfield(L, jobt, "dry_run");
    lua_pushstring(L, secrets);
    lua_setfield(L, jobt, "secrets");
    /* Scripts keep state next to their secrets (e.g. an OAuth token cache), so they need the
     * directory the host actually read, which --secrets or ZHOST_SECRETS may have moved. */
    lua_pushstring(L, dir);
    lua_setfield(L, jobt, "secrets_dir");
    /* Where scripts keep state they write (token caches): the daemon's state directory when
     * ZHOST_STATE_DIR says so (the secrets directory is read-only under the systemd unit),
     * else next to the secrets as the original system did. */
    const char *state = getenv("ZHOST_STATE_DIR");
    lua_pushstring(L, state && *state ? state : dir);
    lua_setfield(L, jobt, "state_dir");
    lua_pushlightuserdata(L, r);
    lua_setfield(L, jobt, "_run");
    lua_pushvalue(L, jobt);
    r->job_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.job.methods");
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, jobt);
    lua_pushliteral(L, "job");
    lua_pushvalue(L, jobt);
    lua_rawset(L, env);
    lua_settop(L, fn);

    if (o->record) {
        /* The pid lets a later start tell a run killed mid-way from one still going. */
        char running_metrics[48];
        snprintf(running_metrics, sizeof running_metrics, "{\"pid\":%ld}", (long)getpid());
        r->running_row_pending = true;
        zh_ch_record_run(h, &(zh_run_record){.job = job, .run_id = r->run_id, .status = "running", .message = "",
                                             .metrics_json = running_metrics, .started_at = r->started_wall, .rows = 0},
                         running_recorded, r);
    }
    r->root = zh_task_spawn(h, L, 0, &r->group);
    r->root->on_done = root_done;
    r->root->on_done_ud = r;
    lua_settop(L, env - 1);
    if (o->timeout_s > 0) {
        r->timeout_timer = zh_xcalloc(1, sizeof *r->timeout_timer);
        uv_timer_init(h->loop, r->timeout_timer);
        r->timeout_timer->data = r;
        uv_timer_start(r->timeout_timer, timeout_fired, (uint64_t)(o->timeout_s * 1000), 0);
    }
    ZH_INFO(job, "msg=\"run started\" run_id=%s script=%s%s", r->run_id, o->script, o->dry_run ? " dry_run=true" : "");
    return r;
}

static void timer_closed(uv_handle_t *hd) { free(hd); }

void zh_run_free(zh_run *r) {
    if (!r) return;
    zh_host *h = r->h;
    lua_State *L = h->L;
    /* A finished run has nothing left below. One abandoned mid-way (zh_cmd_run after a stall)
     * still has tasks pointing at its group, sinks holding rows and ClickHouse requests that
     * would call back: cut each of them while the run is still there to be called. */
    if (r->root) {
        zh_task *root = r->root;
        r->root = NULL;
        root->on_done = NULL;
        zh_task_release(root);
    }
    if (h->tasks) zh_task_cancel_group(h, &r->group, "the run was abandoned");
    if (h->ch) {
        zh_ch_record_detach(h, r);
        zh_ch_group_forget(h, &r->group);
    }
    /* Its sinks are gone (their rows spooled just above): a replay may take its files now. In
     * `zhost serve` the process goes on, so this is what lets the lock go, and the fds with it. */
    zh_spool_release(h, r->run_id);
    if (L) {
        /* The script's finalizers and __close handlers can still call job functions (at
         * lua_close, or from a later run's collection in `zhost serve`). */
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->job_ref);
        if (lua_istable(L, -1)) {
            lua_pushboolean(L, 0);
            lua_setfield(L, -2, "_run");
        }
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, r->job_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->metrics_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->env_ref);
    }
    if (r->timeout_timer) uv_close((uv_handle_t *)r->timeout_timer, timer_closed);
    free(r->script);
    free(r->secrets_name);
    free((char *)r->opts.since);
    free((char *)r->opts.to);
    free(r->message);
    free(r->traceback);
    free(r->need_error);
    free(r);
}

/* ---- Lua `job` functions (methods of each run's job table) ---- */

static zh_run *run_of(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "_run");
    bool ended = lua_type(L, -1) == LUA_TBOOLEAN;
    zh_run *r = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (ended) luaL_error(L, "job functions cannot be used after the run has ended");
    if (!r) luaL_error(L, "job functions are called with a colon: job:env(...)");
    return r;
}

/* job:env(KEY [, default]) -> process environment, else the secrets file, else default */
static int l_env(lua_State *L) {
    zh_run *r = run_of(L);
    const char *k = luaL_checkstring(L, 2);
    lua_settop(L, 3); /* slot 3: the default, nil when not given */
    const char *v = getenv(k);
    if (v) {
        zh_log_setting(k, v);
        lua_pushstring(L, v);
        return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
    lua_getfield(L, -1, k);
    if (!lua_isnil(L, -1)) return 1;
    lua_pushvalue(L, 3);
    return 1;
}

/* job:need(KEY, ...) -> values; raises naming the missing keys and the file to put them in */
static int l_need(lua_State *L) {
    zh_run *r = run_of(L);
    int n = lua_gettop(L);
    zh_buf missing;
    zh_buf_init(&missing);
    int nmissing = 0;
    for (int i = 2; i <= n; i++) {
        const char *k = luaL_checkstring(L, i);
        lua_pushcfunction(L, l_env);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, i);
        lua_call(L, 2, 1);
        if (lua_isnil(L, -1) || (lua_isstring(L, -1) && lua_rawlen(L, -1) == 0)) {
            if (missing.len) zh_buf_adds(&missing, ", ");
            zh_buf_adds(&missing, k);
            nmissing++;
        }
    }
    if (missing.len) {
        lua_pushfstring(L, "missing %s: set %s in %s/.env.%s or the environment", missing.data, nmissing > 1 ? "them" : "it",
                        r->h->secrets_dir ? r->h->secrets_dir : "secrets", r->secrets_name);
        zh_buf_free(&missing);
        free(r->need_error);
        r->need_error = zh_xstrdup(lua_tostring(L, -1));
        return lua_error(L);
    }
    return n - 1;
}

/* The names build_metrics writes itself: a script metric of the same name would make the stored
 * JSON carry the key twice, and readers disagree on which one counts (ClickHouse's visitParam
 * functions take the first, most JSON libraries the last). */
static const char *const host_metric_names[] = {"pid", "duration", "duration_ms", "http_requests", "retries",
                                                "http_bytes", "rows", "spooled_rows", "lost_rows", "tables",
                                                "dry_run", NULL};

static const char *check_metric_name(lua_State *L, const char *fn) {
    const char *k = luaL_checkstring(L, 2);
    for (const char *const *n = host_metric_names; *n; n++)
        if (!strcmp(k, *n))
            luaL_error(L, "job:%s: '%s' is one of zhost's own metrics (pid, duration, duration_ms, http_requests, "
                          "retries, http_bytes, rows, spooled_rows, lost_rows, tables, dry_run); give yours another name",
                       fn, k);
    return k;
}

/* job:metric(name, delta) — adds to a counter in the run's metrics */
static int l_metric(lua_State *L) {
    zh_run *r = run_of(L);
    const char *k = check_metric_name(L, "metric");
    lua_Number d = luaL_optnumber(L, 3, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->metrics_ref);
    lua_getfield(L, -1, k);
    if (lua_isinteger(L, -1) && lua_isinteger(L, 3)) {
        lua_Integer v = lua_tointeger(L, -1) + lua_tointeger(L, 3);
        lua_pop(L, 1);
        lua_pushinteger(L, v);
    } else if (lua_isnil(L, -1) && (lua_isinteger(L, 3) || lua_isnone(L, 3))) {
        lua_pop(L, 1);
        lua_pushinteger(L, lua_isnone(L, 3) ? 1 : lua_tointeger(L, 3));
    } else {
        lua_Number v = lua_tonumber(L, -1) + d;
        lua_pop(L, 1);
        lua_pushnumber(L, v);
    }
    lua_setfield(L, -2, k);
    return 0;
}

/* job:set(name, value) — sets a metric (number, string or boolean) */
static int l_set(lua_State *L) {
    zh_run *r = run_of(L);
    const char *k = check_metric_name(L, "set");
    luaL_checkany(L, 3);
    int t = lua_type(L, 3);
    if (t != LUA_TNUMBER && t != LUA_TSTRING && t != LUA_TBOOLEAN && t != LUA_TNIL)
        return luaL_error(L, "job:set: metric values are numbers, strings or booleans");
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->metrics_ref);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, k);
    return 0;
}

/* job:message(text) — the message recorded with a successful run */
static int l_message(lua_State *L) {
    zh_run *r = run_of(L);
    set_message(r, luaL_checkstring(L, 2));
    return 0;
}

/* job:metrics() -> copy of the metrics so far */
static int l_metrics(lua_State *L) {
    zh_run *r = run_of(L);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->metrics_ref);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -5);
    }
    lua_pop(L, 1);
    return 1;
}

int zh_open_job(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"env", l_env}, {"need", l_need}, {"metric", l_metric}, {"set", l_set},
        {"message", l_message}, {"metrics", l_metrics}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "zhost.job.methods");
    return 1;
}
