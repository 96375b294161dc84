/* serve.c — owns `zhost serve`: the jobs built from the configuration (and the built-in
 * spool_replay, which autoreplay.c starts instead of a schedule), their timers, their runs
 * (Lua scripts inside the daemon, zhost subcommands in child processes), missed-run catch-up,
 * interrupted-run marking, the state file, SIGHUP reload and the SIGTERM shutdown order:
 * stop triggers → let runs finish until the grace deadline → cancel the rest (rows are flushed
 * or spooled by run.c) → close the servers → free the host.
 *
 * Clock: schedules use zh_serve_now(), the wall clock — or, for tests only, ZHOST_FAKE_NOW
 * (ISO-8601) advancing ZHOST_FAKE_SPEED times faster than real time. Run rows in ClickHouse
 * always carry real times.
 */
#include "serve.h"
#include "autoreplay.h"
#include "clickhouse.h"
#include "commands.h"
#include "control.h"
#include "health.h"
#include "host.h"
#include "log.h"
#include "secrets.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

/* ---- small shared helpers ---- */

double zh_serve_now(zh_serve *s) {
    if (!s->fake_clock) return zh_now_wall();
    return s->fake_base + (zh_now_mono() - s->mono_base) * s->speed;
}

void zh_serve_iso(zh_serve *s, double t, char *out, size_t n) {
    if (t <= 0) {
        out[0] = 0;
        return;
    }
    zh_sched_format_iso((int64_t)floor(t), s->conf->timezone, out, n);
}

static double rand01(void) {
    static uint64_t x;
    if (!x) x = (uint64_t)(zh_now_wall() * 1e6) ^ ((uint64_t)getpid() << 20) ^ 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (double)(x >> 11) / 9007199254740992.0;
}

bool zh_job_enabled(const zh_job *j) { return j->enabled_override >= 0 ? j->enabled_override == 1 : j->c.enabled; }
bool zh_job_running(const zh_job *j) { return j->run || j->child; }

zh_job *zh_serve_find_job(zh_serve *s, const char *name) {
    for (zh_job *j = s->jobs; j; j = j->next)
        if (!j->removed && !strcmp(j->c.name, name)) return j;
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->removed) continue;
        char al[128];
        snprintf(al, sizeof al, "%s", j->c.aliases);
        for (char *save, *t = strtok_r(al, " ", &save); t; t = strtok_r(NULL, " ", &save))
            if (!strcmp(t, name)) return j;
    }
    return NULL;
}

/* ---- ClickHouse queries with one attempt and a short timeout ---- */

typedef struct squery {
    zh_serve *s;
    zh_serve_q_fn fn;
    void *ud;
    double started;
} squery;

static void squery_done(void *ud, const char *body, size_t len, const char *err, int ch_code) {
    squery *q = ud;
    q->fn(q->ud, body, len, err, ch_code, zh_now_mono() - q->started);
    q->s->queries_inflight--;
    free(q);
}

void zh_serve_query(zh_serve *s, const char *sql, double timeout_s, zh_serve_q_fn fn, void *ud) {
    squery *q = zh_xcalloc(1, sizeof *q);
    q->s = s;
    q->fn = fn;
    q->ud = ud;
    q->started = zh_now_mono();
    s->queries_inflight++;
    zh_ch_query_async(s->h, sql, timeout_s, 1, squery_done, q);
}

typedef struct sync_q {
    bool done;
    zh_buf *out;
    char *err;
} sync_q;

static void sync_q_done(void *ud, const char *body, size_t len, const char *err, int code, double latency) {
    (void)code;
    (void)latency;
    sync_q *q = ud;
    q->done = true;
    if (err) q->err = zh_xstrdup(err);
    else if (q->out) zh_buf_add(q->out, body, len);
}

/* Start-up only (nothing else is scheduled yet): runs the loop until the answer. */
static int query_sync(zh_serve *s, const char *sql, double timeout_s, zh_buf *out, char **err) {
    sync_q q = {false, out, NULL};
    zh_serve_query(s, sql, timeout_s, sync_q_done, &q);
    while (!q.done && uv_run(s->h->loop, UV_RUN_ONCE)) {
    }
    if (!q.done) q.err = zh_xstrdup("the loop ended before ClickHouse answered");
    if (q.err) {
        *err = q.err;
        return -1;
    }
    return 0;
}

/* ---- the state file ---- */

static void state_path(zh_serve *s, char *out, size_t n) { snprintf(out, n, "%s/state", s->conf->state_dir); }

static void state_save(zh_serve *s) {
    /* Every change of a job's switch is saved here; the runs' word on their spooled rows (run.c)
     * follows spool_replay's. */
    s->h->spool_auto_replay = false;
    for (zh_job *j = s->jobs; j; j = j->next)
        if (j->spool_replay && !j->removed) s->h->spool_auto_replay = zh_job_enabled(j);
    char path[1100];
    state_path(s, path, sizeof path);
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b, "# zhost scheduler state, written by `zhost serve` (atomically). Edit only while it is stopped.\n"
                    "# job  enabled (1, 0, or - to follow the configuration)  last fire (Unix seconds)"
                    "  in effect (1 or 0: what the alert rules read)\n");
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->removed) continue;
        zh_buf_printf(&b, "%s %s %lld %d\n", j->c.name, j->enabled_override < 0 ? "-" : j->enabled_override ? "1" : "0",
                      (long long)j->last_fire, zh_job_enabled(j) ? 1 : 0);
    }
    char *err = NULL;
    if (zh_write_atomic(path, b.data ? b.data : "", b.len, 0640, &err) != 0) {
        ZH_ERROR(NULL, "msg=\"cannot write the state file\" path=%s error=\"%s\"", path, err);
        free(err);
    }
    zh_buf_free(&b);
}

static void state_load(zh_serve *s) {
    char path[1100];
    state_path(s, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char name[64], en[8];
        long long last = 0;
        if (sscanf(line, "%63s %7s %lld", name, en, &last) < 2) continue;
        for (zh_job *j = s->jobs; j; j = j->next) {
            if (strcmp(j->c.name, name)) continue;
            j->enabled_override = !strcmp(en, "1") ? 1 : !strcmp(en, "0") ? 0 : -1;
            j->last_fire = last > 0 ? last : 0;
        }
    }
    fclose(f);
}

/* ---- jobs ---- */

static void job_conf_copy(zh_job_conf *dst, const zh_job_conf *src) {
    *dst = *src;
    dst->script = src->script ? zh_xstrdup(src->script) : NULL;
    dst->command = src->command ? zh_xstrdup(src->command) : NULL;
    dst->args = src->args ? zh_xstrdup(src->args) : NULL;
}

static void job_conf_clear(zh_job_conf *c) {
    free(c->script);
    free(c->command);
    free(c->args);
    c->script = c->command = c->args = NULL;
}

static void timer_closed(uv_handle_t *hd) { free(hd); }

static void job_timer_cb(uv_timer_t *t);

static zh_job *job_new(zh_serve *s, const zh_job_conf *c) {
    zh_job *j = zh_xcalloc(1, sizeof *j);
    job_conf_copy(&j->c, c);
    j->s = s;
    j->enabled_override = -1;
    j->timer = zh_xcalloc(1, sizeof *j->timer);
    uv_timer_init(s->h->loop, j->timer);
    j->timer->data = j;
    return j;
}

static void job_free(zh_job *j) {
    job_conf_clear(&j->c);
    if (j->timer) uv_close((uv_handle_t *)j->timer, timer_closed);
    free(j->last_message);
    free(j);
}

static void job_unlink(zh_serve *s, zh_job *j) {
    for (zh_job **pp = &s->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void job_arm(zh_job *j) {
    zh_serve *s = j->s;
    uv_timer_stop(j->timer);
    if (!zh_job_enabled(j) || s->stopping || j->removed || j->spool_replay) {
        j->next_fire = 0; /* spool_replay has no schedule: autoreplay.c starts it */
        return;
    }
    double now = zh_serve_now(s);
    if (!j->next_fire) {
        j->next_fire = zh_sched_next(&j->c.sched, (int64_t)floor(now));
        if (j->next_fire < 0) {
            j->next_fire = 0;
            ZH_WARN(j->c.name, "msg=\"schedule never fires\" schedule=\"%s\"", j->c.sched.text);
            return;
        }
        j->due_at = (double)j->next_fire + (j->c.jitter_s > 0 ? rand01() * j->c.jitter_s : 0);
    }
    /* Re-check at least every minute, so a wall-clock step is noticed. */
    double wait = (j->due_at - now) / s->speed;
    if (wait < 0) wait = 0;
    if (wait > 60) wait = 60;
    uv_timer_start(j->timer, job_timer_cb, (uint64_t)(wait * 1000) + 1, 0);
}

static void log_rotate(zh_serve *s) {
    struct stat st;
    if (stat(s->conf->log_file, &st) != 0 || (double)st.st_size < s->conf->log_max_bytes) return;
    char old[1100];
    snprintf(old, sizeof old, "%s.1", s->conf->log_file);
    rename(s->conf->log_file, old);
    zh_log_set_file(s->conf->log_file);
}

static void job_fire(zh_job *j) {
    zh_serve *s = j->s;
    double now = zh_serve_now(s);
    int64_t nominal = j->next_fire;
    char when[40];
    zh_sched_format_iso(nominal, j->c.sched.tz, when, sizeof when);
    j->last_fire = nominal;
    int64_t base = nominal > (int64_t)floor(now) ? nominal : (int64_t)floor(now);
    j->next_fire = 0;
    state_save(s);
    if (zh_job_running(j)) {
        j->runs_skipped++;
        ZH_WARN(j->c.name, "msg=\"skipped: the previous run is still going\" scheduled=%s running_run_id=%s", when, j->run_id);
    } else {
        log_rotate(s);
        ZH_INFO(j->c.name, "msg=\"job due\" scheduled=%s", when);
        char err[256];
        const char *why = zh_serve_start_job(s, j, "schedule", j->c.days, err, sizeof err);
        if (why) ZH_ERROR(j->c.name, "msg=\"could not start\" error=\"%s\"", why);
    }
    int64_t next = zh_sched_next(&j->c.sched, base);
    if (next > 0) {
        j->next_fire = next;
        j->due_at = (double)next + (j->c.jitter_s > 0 ? rand01() * j->c.jitter_s : 0);
    }
    job_arm(j);
}

static void job_timer_cb(uv_timer_t *t) {
    zh_job *j = t->data;
    if (!j->next_fire) return;
    if (zh_serve_now(j->s) + 0.0005 < j->due_at) {
        job_arm(j);
        return;
    }
    job_fire(j);
}

/* ---- finishing runs ---- */

static void serve_check_done(zh_serve *s) {
    if (!s->stopping) return;
    for (zh_job *j = s->jobs; j; j = j->next)
        if (zh_job_running(j)) return;
    s->done = true;
}

static void job_record_finish(zh_job *j, const char *status, double started, double duration, uint64_t rows,
                              const char *message, const char *run_id) {
    zh_serve *s = j->s;
    j->last_known = true;
    snprintf(j->last_status, sizeof j->last_status, "%s", status);
    snprintf(j->last_run_id, sizeof j->last_run_id, "%s", run_id ? run_id : "");
    j->last_started = started;
    j->last_duration = duration;
    j->last_rows = rows;
    free(j->last_message);
    j->last_message = message && *message ? zh_xstrdup(message) : NULL;
    j->rows_total += rows;
    j->duration_sum += duration;
    if (!strcmp(status, "success")) {
        j->runs_success++;
        j->consecutive_failures = 0;
        j->last_success = started + duration;
    } else if (!strcmp(status, "interrupted")) {
        j->runs_interrupted++;
    } else {
        j->runs_error++;
        j->consecutive_failures++;
    }
    (void)s;
}

static void job_after_run(zh_job *j) {
    zh_serve *s = j->s;
    j->run_id[0] = 0;
    if (j->removed) {
        job_unlink(s, j);
        job_free(j);
        serve_check_done(s);
        return;
    }
    if (j->restart_pending && !s->stopping) {
        j->restart_pending = false;
        char err[256];
        const char *why = zh_serve_start_job(s, j, "restart", j->restart_days, err, sizeof err);
        if (why) ZH_ERROR(j->c.name, "msg=\"could not restart\" error=\"%s\"", why);
    }
    j->restart_pending = false;
    serve_check_done(s);
}

static void reap_cb(uv_timer_t *t) {
    zh_serve *s = t->data;
    for (int i = 0; i < s->ndead; i++) zh_run_free(s->dead_runs[i]);
    s->ndead = 0;
}

/* A script job whose tasks all wait for each other can never finish: fail it now, as `zhost run`
 * does when its loop runs out of work, instead of leaving it "running" (and the job blocked by
 * no-overlap) until its timeout. */
static void stall_cb(uv_timer_t *t) {
    zh_serve *s = t->data;
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (!j->run || !zh_task_group_deadlocked(s->h, &j->run->group)) continue;
        ZH_WARN(j->c.name, "msg=\"run stalled: its tasks wait for each other\" run_id=%s", j->run->run_id);
        zh_run_stalled(j->run);
    }
}

static void run_done(zh_run *r, void *ud) {
    zh_job *j = ud;
    zh_serve *s = j->s;
    double duration = zh_now_mono() - r->started_mono;
    uint64_t rows = zh_ch_group_rows(s->h, &r->group);
    j->http_requests += r->group.http_requests;
    j->http_retries += r->group.http_retries;
    job_record_finish(j, zh_run_status_name(r->status), r->started_wall, duration, rows, r->message, r->run_id);
    j->run = NULL;
    /* run.c is still on the stack: free the run on the next loop turn. */
    if (s->ndead < (int)(sizeof s->dead_runs / sizeof s->dead_runs[0])) {
        s->dead_runs[s->ndead++] = r;
    } else {
        ZH_WARN(NULL, "msg=\"too many finished runs waiting to be freed; leaking one\"");
    }
    uv_timer_start(s->reap_timer, reap_cb, 0, 0);
    job_after_run(j);
}

/* ---- command jobs: a zhost subcommand in a child process ---- */

typedef struct zh_child {
    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    zh_job *job;
    char run_id[37];
    double started_wall, started_mono, timeout_s;
    zh_buf line;
    char last_line[300];
    char problem[300];        /* spool_replay: the line that says what went wrong (zh_autoreplay_note) */
    int64_t exit_status;
    int term_signal;
    int open_handles;
    bool exited, timed_out, cancelled, term_sent;
} zh_child;

static void child_emit_line(zh_child *c, const char *text, size_t n) {
    while (n && (text[n - 1] == '\r' || text[n - 1] == ' ')) n--;
    if (!n) return;
    if (n > 4000) n = 4000;
    char *line = zh_xstrndup(text, n);
    snprintf(c->last_line, sizeof c->last_line, "%s", line);
    if (c->job->spool_replay) zh_autoreplay_note(c->problem, sizeof c->problem, line);
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b, "msg=\"output\" line=");
    zh_buf_json_str(&b, line);
    zh_log_line(ZH_LOG_INFO, c->job->c.name, b.data);
    zh_buf_free(&b);
    free(line);
}

static void child_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
    (void)hd;
    (void)sz;
    buf->base = zh_xmalloc(4096);
    buf->len = 4096;
}

static void child_handle_closed(uv_handle_t *hd);

static void child_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    zh_child *c = st->data;
    if (n > 0) {
        zh_buf_add(&c->line, buf->base, (size_t)n);
        size_t start = 0;
        for (size_t i = 0; i < c->line.len; i++) {
            if (c->line.data[i] == '\n') {
                child_emit_line(c, c->line.data + start, i - start);
                start = i + 1;
            }
        }
        if (start) {
            memmove(c->line.data, c->line.data + start, c->line.len - start);
            c->line.len -= start;
        }
        if (c->line.len > 8192) { /* bounded: a line without end is cut */
            child_emit_line(c, c->line.data, c->line.len);
            c->line.len = 0;
        }
    }
    free(buf->base);
    if (n < 0) {
        if (c->line.len) child_emit_line(c, c->line.data, c->line.len);
        c->line.len = 0;
        uv_read_stop(st);
        if (!uv_is_closing((uv_handle_t *)st)) uv_close((uv_handle_t *)st, child_handle_closed);
    }
}

static void child_recorded(void *ud, const char *err) {
    zh_child *c = ud;
    zh_job *j = c->job;
    if (err) ZH_WARN(j->c.name, "msg=\"could not write meta_job_runs\" run_id=%s error=\"%s\"", c->run_id, err);
    zh_buf_free(&c->line);
    free(c);
    j->child = NULL;
    job_after_run(j);
}

static void child_finish(zh_child *c) {
    zh_job *j = c->job;
    zh_serve *s = j->s;
    double duration = zh_now_mono() - c->started_mono;
    const char *status;
    char msg[512];
    uint64_t rows = 0;
    /* spool_replay: `zhost spool replay`'s exit status and summary say what the run did. */
    bool judged = j->spool_replay && c->exited && !c->term_signal && !c->timed_out && !c->cancelled;
    zh_replay_verdict v = {.record = false};
    if (judged) {
        zh_autoreplay_judge(c->exit_status, c->last_line, c->problem, !strcmp(j->trigger, "auto"), &v);
        if (!v.record) {
            ZH_INFO(j->c.name, "msg=\"run finished: nothing it could deliver; not recorded\" run_id=%s duration=%.1f",
                    c->run_id, duration);
            zh_autoreplay_finished(s->autoreplay, NULL, &v);
            child_recorded(c, NULL);
            return;
        }
        status = v.status;
        rows = v.rows;
        snprintf(msg, sizeof msg, "%s", v.message);
    } else if (c->exited && c->exit_status == 0 && !c->term_signal) {
        status = "success";
        /* what the command made (`zhost backup full` ends with the backup's folder, prune with its
         * counts): the run's message in meta_job_runs, `zhost status` and `zhost logs` */
        snprintf(msg, sizeof msg, "%s", c->last_line);
    } else if (c->timed_out) {
        status = "error";
        snprintf(msg, sizeof msg, "timed out after %.0f s", c->timeout_s);
    } else if (c->cancelled) {
        status = "interrupted";
        snprintf(msg, sizeof msg, "stopped: %s", s->stopping ? "zhost is shutting down" : "restarted by an operator");
    } else if (c->term_signal) {
        status = "error";
        snprintf(msg, sizeof msg, "killed by signal %d; last output: %.300s", c->term_signal, c->last_line);
    } else {
        status = "error";
        snprintf(msg, sizeof msg, "exited with status %lld; last output: %.300s", (long long)c->exit_status, c->last_line);
    }
    job_record_finish(j, status, c->started_wall, duration, rows, msg, c->run_id);
    zh_log(strcmp(status, "success") ? ZH_LOG_ERROR : ZH_LOG_INFO, j->c.name,
           "msg=\"run finished\" run_id=%s status=%s duration=%.1f%s%s%s", c->run_id, status, duration,
           msg[0] ? " message=\"" : "", msg, msg[0] ? "\"" : "");
    if (j->spool_replay) zh_autoreplay_finished(s->autoreplay, status, judged ? &v : NULL);
    char metrics[128];
    snprintf(metrics, sizeof metrics, "{\"duration\":%.0f,\"duration_ms\":%.0f,\"exit_code\":%lld}", duration,
             duration * 1000, (long long)c->exit_status);
    zh_run_record rec = {.job = j->c.name, .run_id = c->run_id, .status = status, .message = msg,
                         .metrics_json = metrics, .started_at = c->started_wall, .finished_at = zh_now_wall(), .rows = rows};
    zh_ch_record_run(s->h, &rec, child_recorded, c);
}

/* A process handle whose spawn failed: free its child record once libuv lets go of it. */
static void spawn_failed_closed(uv_handle_t *hd) { free(hd->data); }

static void child_handle_closed(uv_handle_t *hd) {
    zh_child *c = hd->data;
    if (--c->open_handles == 0) child_finish(c);
}

static void child_exit(uv_process_t *p, int64_t status, int sig) {
    zh_child *c = p->data;
    c->exited = true;
    c->exit_status = status;
    c->term_signal = sig;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, child_handle_closed);
    uv_close((uv_handle_t *)p, child_handle_closed);
    /* Output still in the pipe is read until EOF (the pipe closes itself then). */
}

static void child_kill_cb(uv_timer_t *t) {
    zh_child *c = t->data;
    if (c->exited) return;
    if (!c->term_sent) {
        c->term_sent = true;
        uv_process_kill(&c->proc, SIGTERM);
        uv_timer_start(&c->timer, child_kill_cb, 10000, 0);
    } else {
        ZH_WARN(c->job->c.name, "msg=\"child did not stop after SIGTERM; killing\" pid=%d", c->proc.pid);
        uv_process_kill(&c->proc, SIGKILL);
    }
}

static void child_timeout_cb(uv_timer_t *t) {
    zh_child *c = t->data;
    c->timed_out = true;
    ZH_ERROR(c->job->c.name, "msg=\"timed out; stopping the child\" timeout=%.0f", c->timeout_s);
    child_kill_cb(t);
}

static void child_stop(zh_child *c) {
    if (c->exited || c->term_sent) return;
    c->cancelled = true;
    uv_timer_stop(&c->timer);
    child_kill_cb(&c->timer);
}

static void child_running_recorded(void *ud, const char *err) {
    (void)ud;
    if (err) ZH_DEBUG(NULL, "msg=\"could not write the running row\" error=\"%s\"", err);
}

static const char *start_child(zh_serve *s, zh_job *j, int days, char *errbuf, size_t errlen) {
    char exe[1024];
    size_t exelen = sizeof exe;
    if (uv_exepath(exe, &exelen) != 0) return "cannot find the zhost executable";
    char *words = zh_xstrdup(j->c.command);
    char *argsw = j->c.args ? zh_xstrdup(j->c.args) : NULL;
    char *argv[64];
    int argc = 0;
    char daysbuf[16];
    argv[argc++] = exe;
    for (char *save, *t = strtok_r(words, " \t", &save); t && argc < 40; t = strtok_r(NULL, " \t", &save)) argv[argc++] = t;
    if (argsw)
        for (char *save, *t = strtok_r(argsw, " \t", &save); t && argc < 60; t = strtok_r(NULL, " \t", &save)) argv[argc++] = t;
    if (j->spool_replay) {
        /* The daemon's spool, whatever $ZHOST_SPOOL says; replay has no --days. A spool nothing was
         * spooled to yet does not exist: replay refuses a named folder that is missing (a typo). */
        zh_mkdirs(s->conf->spool_dir, 0700);
        argv[argc++] = "--spool";
        argv[argc++] = s->conf->spool_dir;
    } else if (days > 0 && argc < 62) {
        snprintf(daysbuf, sizeof daysbuf, "%d", days);
        argv[argc++] = "--days";
        argv[argc++] = daysbuf;
    }
    argv[argc] = NULL;
    zh_child *c = zh_xcalloc(1, sizeof *c);
    c->job = j;
    zh_uuid4(c->run_id);
    c->timeout_s = j->c.timeout_s;
    zh_buf_init(&c->line);
    /* The child's environment: ours plus who it runs for. */
    int nenv = 0;
    while (environ[nenv]) nenv++;
    char **env = zh_xcalloc((size_t)nenv + 5, sizeof *env);
    int k = 0;
    for (int i = 0; i < nenv; i++)
        if (strncmp(environ[i], "ZHOST_JOB=", 10) && strncmp(environ[i], "ZHOST_RUN_ID=", 13) &&
            strncmp(environ[i], "ZHOST_SECRETS=", 14) && strncmp(environ[i], "ZHOST_AUTO_REPLAY=", 18))
            env[k++] = environ[i];
    char e1[128], e2[64], e3[1100], e4[1100];
    snprintf(e1, sizeof e1, "ZHOST_JOB=%s", j->c.name);
    snprintf(e2, sizeof e2, "ZHOST_RUN_ID=%s", c->run_id);
    snprintf(e3, sizeof e3, "ZHOST_SECRETS=%s", s->h->secrets_dir ? s->h->secrets_dir : "secrets");
    env[k++] = e1;
    env[k++] = e2;
    env[k++] = e3;
    /* A `zhost run` child says who delivers what it spools (run.c): this daemon does, for this
     * spool, while spool_replay is on. The folder, not a yes: a child told to spool elsewhere
     * ($ZHOST_SPOOL of our own environment wins over spool_dir for children) is not ours to replay. */
    if (s->h->spool_auto_replay) {
        snprintf(e4, sizeof e4, "ZHOST_AUTO_REPLAY=%s", s->conf->spool_dir);
        env[k++] = e4;
    }
    env[k] = NULL;
    /* stdout and stderr share one pipe, so lines keep their order. */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(errbuf, errlen, "cannot start `zhost %s`: pipe: %s", j->c.command, strerror(errno));
        free(env);
        free(words);
        free(argsw);
        zh_buf_free(&c->line);
        free(c);
        return errbuf;
    }
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = fds[1];
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = fds[1];
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = exe;
    o.args = argv;
    o.env = env;
    o.exit_cb = child_exit;
    o.stdio = stdio;
    o.stdio_count = 3;
    c->proc.data = c;
    int rc = uv_spawn(s->h->loop, &c->proc, &o);
    close(fds[1]);
    free(env);
    free(words);
    free(argsw);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot start `zhost %s`: %s", j->c.command, uv_strerror(rc));
        close(fds[0]);
        uv_close((uv_handle_t *)&c->proc, spawn_failed_closed);
        zh_buf_free(&c->line);
        /* The process handle is closed on the next loop turn; it lives inside c. */
        c->job = NULL;
        c->open_handles = -1;
        c->proc.data = c;
        return errbuf;
    }
    uv_pipe_init(s->h->loop, &c->out, 0);
    c->out.data = c;
    uv_pipe_open(&c->out, fds[0]);
    c->open_handles = 3;
    uv_timer_init(s->h->loop, &c->timer);
    c->timer.data = c;
    if (c->timeout_s > 0) uv_timer_start(&c->timer, child_timeout_cb, (uint64_t)(c->timeout_s * 1000), 0);
    uv_read_start((uv_stream_t *)&c->out, child_alloc, child_read);
    c->started_wall = zh_now_wall();
    c->started_mono = zh_now_mono();
    j->child = c;
    snprintf(j->run_id, sizeof j->run_id, "%s", c->run_id);
    j->run_started = c->started_wall;
    ZH_INFO(j->c.name, "msg=\"run started\" run_id=%s command=\"zhost %s\" pid=%d", c->run_id, j->c.command, c->proc.pid);
    /* A replay writes only its final row, and none when it had nothing to do (autoreplay.c). */
    if (!j->spool_replay)
        zh_ch_record_run(s->h, &(zh_run_record){.job = j->c.name, .run_id = c->run_id, .status = "running", .message = "",
                                                .metrics_json = "{}", .started_at = c->started_wall, .rows = 0},
                         child_running_recorded, NULL);
    return NULL;
}

/* ---- starting runs ---- */

static void load_failed_recorded(void *ud, const char *err) {
    (void)ud;
    if (err) ZH_WARN(NULL, "msg=\"could not write meta_job_runs\" error=\"%s\"", err);
}

const char *zh_serve_start_job(zh_serve *s, zh_job *j, const char *trigger, int days, char *errbuf, size_t errlen) {
    if (s->stopping) return "zhost is shutting down";
    if (zh_job_running(j)) {
        snprintf(errbuf, errlen, "%s is already running (run %s); use `zhost restart %s` to stop it and start again",
                 j->c.name, j->run_id, j->c.name);
        return errbuf;
    }
    snprintf(j->trigger, sizeof j->trigger, "%s", trigger);
    if (j->c.command) return start_child(s, j, days, errbuf, errlen);

    /* Script arguments: "--name value" words become job.args. */
    const char *extra[66];
    int ne = 0;
    char *words = j->c.args ? zh_xstrdup(j->c.args) : NULL;
    if (words) {
        char *tok[64];
        int nt = 0;
        for (char *save, *t = strtok_r(words, " \t", &save); t && nt < 64; t = strtok_r(NULL, " \t", &save)) tok[nt++] = t;
        for (int i = 0; i < nt && ne < 62; i++) {
            if (strncmp(tok[i], "--", 2) || !tok[i][2]) continue;
            extra[ne++] = tok[i] + 2;
            extra[ne++] = i + 1 < nt && strncmp(tok[i + 1], "--", 2) ? tok[++i] : "true";
        }
    }
    extra[ne] = NULL;
    zh_run_opts o = {0};
    o.script = j->c.script;
    o.job = j->c.name;
    o.days = days;
    o.timeout_s = j->c.timeout_s;
    o.record = true;
    o.extra = extra;
    char *err = NULL;
    zh_run *r = zh_run_start(s->h, &o, run_done, j, &err);
    free(words);
    if (!r) {
        /* A script that cannot load is a failed run: health, alerts and `zhost logs` show it. */
        char run_id[37];
        zh_uuid4(run_id);
        snprintf(errbuf, errlen, "%s", err ? err : "cannot start the script");
        free(err);
        ZH_ERROR(j->c.name, "msg=\"run failed to start\" run_id=%s error=\"%s\"", run_id, errbuf);
        double now = zh_now_wall();
        job_record_finish(j, "error", now, 0, 0, errbuf, run_id);
        zh_ch_record_run(s->h, &(zh_run_record){.job = j->c.name, .run_id = run_id, .status = "error", .message = errbuf,
                                                .metrics_json = "{\"duration\":0}", .started_at = now,
                                                .finished_at = now, .rows = 0},
                         load_failed_recorded, NULL);
        return errbuf;
    }
    j->run = r;
    snprintf(j->run_id, sizeof j->run_id, "%s", r->run_id);
    j->run_started = r->started_wall;
    return NULL;
}

const char *zh_serve_set_enabled(zh_serve *s, zh_job *j, bool on) {
    j->enabled_override = on ? 1 : 0;
    if (on) {
        /* The disabled period is not "missed": catch-up starts counting now. */
        j->last_fire = (int64_t)floor(zh_serve_now(s));
        j->next_fire = 0;
    }
    state_save(s);
    job_arm(j);
    if (j->spool_replay) zh_autoreplay_switched(s->autoreplay, on);
    ZH_INFO(j->c.name, "msg=\"%s by operator\"", on ? "enabled" : "disabled");
    return NULL;
}

const char *zh_serve_restart_job(zh_serve *s, zh_job *j, int days, char *errbuf, size_t errlen) {
    if (s->stopping) return "zhost is shutting down";
    if (!zh_job_running(j)) return zh_serve_start_job(s, j, "restart", days, errbuf, errlen);
    j->restart_pending = true;
    j->restart_days = days;
    ZH_INFO(j->c.name, "msg=\"restart requested: stopping the current run\" run_id=%s", j->run_id);
    if (j->run) zh_run_cancel(j->run, "restarted by an operator", ZH_RUN_INTERRUPTED);
    else if (j->child) child_stop(j->child);
    return NULL;
}

/* ---- JSON for one job ---- */

void zh_serve_job_json(zh_serve *s, zh_job *j, zh_buf *b) {
    char t[40];
    zh_buf_adds(b, "{\"name\":");
    zh_buf_json_str(b, j->c.name);
    zh_buf_adds(b, ",\"aliases\":[");
    char al[128];
    snprintf(al, sizeof al, "%s", j->c.aliases);
    bool first = true;
    for (char *save, *w = strtok_r(al, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (!first) zh_buf_addc(b, ',');
        first = false;
        zh_buf_json_str(b, w);
    }
    zh_buf_printf(b, "],\"enabled\":%s,\"kind\":\"%s\",", zh_job_enabled(j) ? "true" : "false", j->c.command ? "command" : "script");
    zh_buf_adds(b, j->c.command ? "\"command\":" : "\"script\":");
    zh_buf_json_str(b, j->c.command ? j->c.command : j->c.script);
    zh_buf_adds(b, ",\"schedule\":");
    zh_buf_json_str(b, j->c.sched.text);
    zh_buf_adds(b, ",\"timezone\":");
    zh_buf_json_str(b, j->c.sched.tz);
    zh_buf_printf(b, ",\"timeout\":%.0f,\"jitter\":%.0f,\"next_run\":", j->c.timeout_s, j->c.jitter_s);
    if (j->next_fire > 0) {
        zh_serve_iso(s, (double)j->next_fire, t, sizeof t);
        zh_buf_json_str(b, t);
    } else {
        zh_buf_adds(b, "null");
    }
    zh_buf_printf(b, ",\"running\":%s,\"current_run\":", zh_job_running(j) ? "true" : "false");
    if (zh_job_running(j)) {
        zh_serve_iso(s, j->run_started, t, sizeof t);
        zh_buf_adds(b, "{\"run_id\":");
        zh_buf_json_str(b, j->run_id);
        zh_buf_adds(b, ",\"started\":");
        zh_buf_json_str(b, t);
        zh_buf_adds(b, ",\"trigger\":");
        zh_buf_json_str(b, j->trigger);
        zh_buf_printf(b, ",\"elapsed\":%.1f}", zh_now_wall() - j->run_started);
    } else {
        zh_buf_adds(b, "null");
    }
    zh_buf_adds(b, ",\"last_run\":");
    if (j->last_known) {
        zh_serve_iso(s, j->last_started, t, sizeof t);
        zh_buf_adds(b, "{\"status\":");
        zh_buf_json_str(b, j->last_status);
        zh_buf_adds(b, ",\"run_id\":");
        zh_buf_json_str(b, j->last_run_id);
        zh_buf_adds(b, ",\"started\":");
        zh_buf_json_str(b, t);
        zh_buf_printf(b, ",\"duration\":%.1f,\"rows\":%llu,\"message\":", j->last_duration, (unsigned long long)j->last_rows);
        zh_buf_json_str(b, j->last_message ? j->last_message : "");
        zh_buf_addc(b, '}');
    } else {
        zh_buf_adds(b, "null");
    }
    zh_buf_printf(b, ",\"consecutive_failures\":%d,\"last_success\":", j->consecutive_failures);
    if (j->last_success > 0) {
        zh_serve_iso(s, j->last_success, t, sizeof t);
        zh_buf_json_str(b, t);
    } else {
        zh_buf_adds(b, "null");
    }
    zh_buf_printf(b, ",\"skipped_overlaps\":%llu", (unsigned long long)j->runs_skipped);
    if (j->spool_replay) {
        /* what `zhost status spool_replay` says as its back-off line, for monitoring that reads JSON */
        double next_in = 0;
        int failed = zh_autoreplay_backoff(s->autoreplay, &next_in);
        if (failed > 0)
            zh_buf_printf(b, ",\"replay_backoff\":{\"failed_in_a_row\":%d,\"next_in\":%.0f}", failed, ceil(next_in));
        else
            zh_buf_adds(b, ",\"replay_backoff\":null");
    }
    zh_buf_addc(b, '}');
}

/* ---- start-up: interrupted runs and history ---- */

/* Rows left `running` by a crash or kill (of this daemon, or of a `zhost run` on this host that is
 * no longer alive) get a final `interrupted` row; runs whose process still lives are left alone. */
static void stale_retry_cb(uv_timer_t *t) {
    zh_serve *s = t->data;
    if (s->stale.answered || s->stopping) {
        uv_timer_stop(t);
        return;
    }
    /* Runs this daemon started since have its live pid in their rows: they are never marked. */
    if (s->stale.pending == 0) zh_ch_mark_stale_runs_start(s->h, NULL, &s->stale);
}

/* ClickHouse often answers later than zhost starts (a power cut brings both back; ClickHouse
 * takes its time): while it has not answered, the question is asked again every 30 s, instead of
 * leaving those runs `running` until the next restart of the daemon. */
static void mark_interrupted(zh_serve *s) {
    zh_ch_mark_stale_runs_start(s->h, NULL, &s->stale);
    while (s->stale.pending > 0 && uv_run(s->h->loop, UV_RUN_ONCE)) {
    }
    if (!s->stale.answered) {
        ZH_WARN(NULL, "msg=\"could not look for runs left running by a crash; asking again every 30 s\"");
        uint64_t every = (uint64_t)(30000 / s->speed) + 1;
        uv_timer_start(s->stale_timer, stale_retry_cb, every, every);
    }
}

/* Last runs per job from meta_job_runs, so status survives a restart. */
static void load_history(zh_serve *s) {
    zh_buf out;
    zh_buf_init(&out);
    const char *sql =
        "SELECT job, run_id, status, toUnixTimestamp(started_at), "
        "if(isNull(finished_at), 0, toUnixTimestamp(assumeNotNull(finished_at))), rows_processed, "
        "replaceAll(message, '\\n', ' '), " ZH_RUN_DURATION_SQL " FROM meta_job_runs "
        "WHERE started_at > now() - INTERVAL 30 DAY ORDER BY started_at DESC LIMIT 50 BY job FORMAT TabSeparated";
    char *err = NULL;
    if (query_sync(s, sql, 10, &out, &err) != 0) {
        ZH_WARN(NULL, "msg=\"could not read the run history\" error=\"%s\"", err);
        free(err);
        zh_buf_free(&out);
        return;
    }
    zh_buf f[8];
    for (int i = 0; i < 8; i++) zh_buf_init(&f[i]);
    const char *p = out.data ? out.data : "", *end = p + out.len;
    bool *streak_over = zh_xcalloc(256, sizeof *streak_over);
    while (zh_tsv_row(&p, end, f, 8) >= 8) {
        int idx = 0;
        zh_job *j = s->jobs;
        for (; j && strcmp(j->c.name, f[0].data); j = j->next) idx++;
        if (!j || idx >= 256) continue;
        const char *status = f[2].data;
        if (!strcmp(status, "running")) continue;
        double started = atof(f[3].data), finished = atof(f[4].data);
        if (!j->last_known) {
            j->last_known = true;
            snprintf(j->last_status, sizeof j->last_status, "%s", status);
            snprintf(j->last_run_id, sizeof j->last_run_id, "%s", f[1].data);
            j->last_started = started;
            /* the run's own measure (duration_ms), else the whole seconds between its rows */
            j->last_duration = atof(f[7].data) > 0 ? atof(f[7].data) : finished > 0 ? finished - started : 0;
            j->last_rows = strtoull(f[5].data, NULL, 10);
            j->last_message = f[6].len ? zh_xstrdup(f[6].data) : NULL;
        }
        if (!strcmp(status, "success")) {
            if (j->last_success <= 0) j->last_success = finished > 0 ? finished : started;
            streak_over[idx] = true;
        } else if (!streak_over[idx] && !strcmp(status, "error")) {
            j->consecutive_failures++;
        }
    }
    free(streak_over);
    for (int i = 0; i < 8; i++) zh_buf_free(&f[i]);
    zh_buf_free(&out);
}

/* ---- reload and shutdown ---- */

static void serve_reload(zh_serve *s) {
    char *err = NULL;
    const char *path = zh_conf_find(s->conf_flag);
    zh_conf *nc = path ? zh_conf_load(path, &err) : NULL;
    if (!nc) {
        ZH_ERROR(NULL, "msg=\"reload failed; keeping the running configuration\" error=\"%s\"", err ? err : "no configuration file");
        free(err);
        return;
    }
    /* Paths the host and the servers hold stay as they were until a restart. */
    zh_conf *oc = s->conf;
#define KEEP(f)                                                                                       \
    do {                                                                                              \
        if ((oc->f || nc->f) && (!oc->f || !nc->f || strcmp(oc->f, nc->f)))                           \
            ZH_WARN(NULL, "msg=\"%s changed; it takes effect at the next restart\"", #f);             \
        char *tmp = nc->f;                                                                            \
        nc->f = oc->f;                                                                                \
        oc->f = tmp;                                                                                  \
    } while (0)
    KEEP(root);
    KEEP(state_dir);
    KEEP(spool_dir);
    KEEP(scripts_dir);
    KEEP(secrets_dir);
    KEEP(log_file);
    KEEP(socket);
#undef KEEP
    if (strcmp(oc->listen_host, nc->listen_host) || oc->listen_port != nc->listen_port || oc->health_enabled != nc->health_enabled)
        ZH_WARN(NULL, "msg=\"[health] listen changed; it takes effect at the next restart\"");
    snprintf(nc->listen_host, sizeof nc->listen_host, "%s", oc->listen_host);
    nc->listen_port = oc->listen_port;
    nc->health_enabled = oc->health_enabled;
    int64_t now = (int64_t)floor(zh_serve_now(s));
    for (zh_job *j = s->jobs; j; j = j->next) j->removed = !j->spool_replay;
    /* New jobs go after the others, before spool_replay (the last job, whatever the file holds). */
    zh_job **tail = &s->jobs;
    while (*tail && !(*tail)->spool_replay) tail = &(*tail)->next;
    for (int i = 0; i < nc->njobs; i++) {
        zh_job_conf *c = &nc->jobs[i];
        zh_job *j = s->jobs;
        for (; j && strcmp(j->c.name, c->name); j = j->next) {
        }
        if (j) {
            bool resched = strcmp(j->c.sched.text, c->sched.text) || strcmp(j->c.sched.tz, c->sched.tz) ||
                           j->c.jitter_s != c->jitter_s;
            job_conf_clear(&j->c);
            job_conf_copy(&j->c, c);
            j->removed = false;
            if (resched) j->next_fire = 0;
        } else {
            j = job_new(s, c);
            j->last_fire = now;
            j->next = *tail;
            *tail = j;
            tail = &j->next;
            ZH_INFO(c->name, "msg=\"job added by reload\"");
        }
    }
    for (zh_job **pp = &s->jobs; *pp;) {
        zh_job *j = *pp;
        if (j->removed) {
            ZH_INFO(j->c.name, "msg=\"job removed by reload\"%s", zh_job_running(j) ? " note=\"its current run goes on\"" : "");
            uv_timer_stop(j->timer);
            if (!zh_job_running(j)) {
                *pp = j->next;
                job_free(j);
                continue;
            }
        }
        pp = &j->next;
    }
    s->conf = nc;
    zh_conf_free(oc);
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (!j->spool_replay) continue;
        zh_job_conf rc;
        zh_autoreplay_job_conf(nc, &rc);
        job_conf_clear(&j->c);
        job_conf_copy(&j->c, &rc);
    }
    for (zh_job *j = s->jobs; j; j = j->next) job_arm(j);
    state_save(s);
    if (s->health) zh_health_reconfigure(s->health);
    zh_autoreplay_reconfigure(s->autoreplay);
    ZH_INFO(NULL, "msg=\"configuration reloaded\" path=%s jobs=%d", nc->path ? nc->path : "-", nc->njobs);
}

static void grace_over(uv_timer_t *t) {
    zh_serve *s = t->data;
    s->grace_over = true;
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->run) {
            ZH_WARN(j->c.name, "msg=\"grace period over; cancelling the run (its rows are flushed or spooled)\" run_id=%s", j->run_id);
            zh_run_cancel(j->run, "stopped: zhost was shutting down and the grace period ended", ZH_RUN_INTERRUPTED);
        } else if (j->child) {
            ZH_WARN(j->c.name, "msg=\"grace period over; stopping the child\" run_id=%s", j->run_id);
            child_stop(j->child);
        }
    }
}

static void serve_stop(zh_serve *s, const char *why) {
    if (s->stopping) {
        if (!s->grace_over) {
            ZH_WARN(NULL, "msg=\"second stop signal: cancelling running jobs now\"");
            uv_timer_stop(s->grace_timer);
            grace_over(s->grace_timer);
        }
        return;
    }
    s->stopping = true;
    zh_autoreplay_stop(s->autoreplay);
    for (zh_job *j = s->jobs; j; j = j->next) {
        uv_timer_stop(j->timer);
        j->restart_pending = false;
    }
    if (s->health) zh_health_stop(s->health);
    if (s->control) zh_control_stop(s->control);
    int running = 0;
    for (zh_job *j = s->jobs; j; j = j->next) running += zh_job_running(j);
    ZH_INFO(NULL, "msg=\"stopping\" reason=\"%s\" running_jobs=%d grace=%.0f", why, running, s->conf->grace_s);
    if (!running) {
        s->done = true;
        return;
    }
    uv_timer_start(s->grace_timer, grace_over, (uint64_t)(s->conf->grace_s * 1000), 0);
}

static void serve_on_signal(zh_host *h, int signum) {
    zh_serve *s = h->on_signal_ud;
    if (signum == SIGHUP) {
        if (!s->stopping) serve_reload(s);
        return;
    }
    serve_stop(s, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- the command ---- */

static void print_plan(zh_conf *c) {
    int64_t now = (int64_t)floor(zh_now_wall());
    int w = 14; /* as wide as the longest job name (qtickets_refunds), so the columns line up */
    for (int i = 0; i < c->njobs; i++)
        if ((int)strlen(c->jobs[i].name) > w) w = (int)strlen(c->jobs[i].name);
    for (int i = 0; i < c->njobs; i++) {
        zh_job_conf *j = &c->jobs[i];
        char t[40] = "never";
        int64_t n = zh_sched_next(&j->sched, now);
        if (n > 0) zh_sched_format_iso(n, c->timezone, t, sizeof t);
        printf("%-*s %-8s %-18s %-15s next %s  %s%s\n", w, j->name, j->enabled ? "enabled" : "disabled", j->sched.text,
               j->sched.tz, t, j->command ? "zhost " : "", j->command ? j->command : j->script);
    }
    zh_job_conf rc;
    zh_autoreplay_job_conf(c, &rc);
    printf("%-*s %-8s %-18s %-15s zhost %s: when rows wait in the spool and ClickHouse answers, at most every %.0f s, "
           "up to %.0f s after failures (looks every %.0f s; timeout %.0f s)\n", w, rc.name, rc.enabled ? "enabled" : "disabled",
           rc.sched.text, "", rc.command, c->replay_every_s,
           c->replay_max_every_s > c->replay_every_s ? c->replay_max_every_s : c->replay_every_s, c->replay_check_s, rc.timeout_s);
}

int zh_cmd_serve(int argc, char **argv) {
    const char *conf_flag = NULL, *secrets = NULL, *v;
    bool check = false;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--conf"))) conf_flag = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) secrets = v;
        else if (!strcmp(argv[i], "--check")) check = true;
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) verbose++;
        else {
            fprintf(stderr, "zhost serve: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    const char *path = zh_conf_find(conf_flag);
    if (!path) {
        fprintf(stderr, "zhost serve: no configuration (pass --conf FILE, set ZHOST_CONF, or create conf/zhost.conf)\n");
        return 2;
    }
    char *err = NULL;
    zh_conf *conf = zh_conf_load(path, &err);
    if (!conf) {
        fprintf(stderr, "zhost serve: %s\n", err);
        free(err);
        return 2;
    }
    if (check) {
        printf("%s: ok, %d jobs (state in %s, health on %s:%d)\n", path, conf->njobs, conf->state_dir, conf->listen_host,
               conf->listen_port);
        print_plan(conf);
        zh_conf_free(conf);
        return 0;
    }
    /* The fake clock is checked before anything is taken (state directory, lock, log file): a
     * refused start must leave nothing open or behind. */
    const char *fake = getenv("ZHOST_FAKE_NOW");
    int64_t fake_t = 0;
    if (fake && *fake && zh_sched_parse_iso(fake, &fake_t) != 0) {
        fprintf(stderr, "zhost serve: ZHOST_FAKE_NOW must be ISO-8601 with an offset (got '%s')\n", fake);
        zh_conf_free(conf);
        return 2;
    }
    if (verbose) zh_log_set_level(ZH_LOG_DEBUG);
    /* One daemon per state directory. */
    char lockpath[1100];
    snprintf(lockpath, sizeof lockpath, "%s/zhost.lock", conf->state_dir);
    int lockfd = zh_mkdirs(conf->state_dir, 0750) == 0 ? open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0640) : -1;
    if (lockfd < 0) {
        /* Not another daemon: the folder cannot be made, is not ours, or is read-only. */
        fprintf(stderr, "zhost serve: cannot use the state folder %s: %s (state_dir in %s; it must be writable by this user)\n",
                conf->state_dir, strerror(errno), path);
        zh_conf_free(conf);
        return 1;
    }
    if (flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        char other[32] = "";
        ssize_t got = pread(lockfd, other, sizeof other - 1, 0);
        long opid = got > 0 ? strtol(other, NULL, 10) : 0;
        if (opid > 0) snprintf(other, sizeof other, " (pid %ld)", opid);
        else other[0] = 0;
        fprintf(stderr, "zhost serve: another zhost serve%s uses %s (locked); stop it first (systemctl stop zhost)\n", other,
                conf->state_dir);
        close(lockfd);
        zh_conf_free(conf);
        return 1;
    }
    char pid[32];
    int pl = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(lockfd, 0) == 0 && write(lockfd, pid, (size_t)pl) < 0) {
    }
    zh_log_set_file(conf->log_file);

    zh_serve *s = zh_xcalloc(1, sizeof *s);
    s->conf = conf;
    s->conf_flag = conf_flag ? zh_xstrdup(conf_flag) : NULL;
    s->speed = 1;
    gethostname(s->hostname, sizeof s->hostname - 1);
    if (fake && *fake) {
        s->fake_clock = true;
        s->fake_base = (double)fake_t;
        s->mono_base = zh_now_mono();
        const char *sp = getenv("ZHOST_FAKE_SPEED");
        if (sp && atof(sp) > 0) s->speed = atof(sp);
    }
    s->started_wall = zh_now_wall();
    const char *secrets_dir = zh_secrets_dir(secrets ? secrets : conf->secrets_dir);
    s->secrets_flag = zh_xstrdup(secrets_dir);
    /* Jobs (in process, and `zhost …` children through the environment) keep their token caches in
     * the daemon's state directory and spool where `zhost spool` will look. Set once, before any
     * job runs; the process is single-threaded. */
    if (conf->state_dir) setenv("ZHOST_STATE_DIR", conf->state_dir, 0);
    /* The alerts job reads which jobs are switched off from the state file. ZHOST_STATE_DIR may
     * name another folder (the systemd unit sets /var/lib/zhost for token caches, state_dir is
     * /var/lib/zhost/state), so the file's own path is passed, always this daemon's. */
    if (conf->state_dir) {
        char sf[1100];
        snprintf(sf, sizeof sf, "%s/state", conf->state_dir);
        setenv("ZHOST_SERVE_STATE", sf, 1);
    }
    if (conf->spool_dir) setenv("ZHOST_SPOOL", conf->spool_dir, 0);
    zh_host_opts ho = {.secrets_dir = s->secrets_flag, .scripts_dir = conf->scripts_dir, .spool_dir = conf->spool_dir,
                       .verbose = verbose};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        zh_conf_free(conf);
        free(s->conf_flag);
        free(s->secrets_flag);
        free(s);
        zh_log_set_file(NULL);
        close(lockfd);
        return 1;
    }
    s->h = h;
    h->on_signal = serve_on_signal;
    h->on_signal_ud = s;
    zh_host_install_signals(h);
    s->grace_timer = zh_xcalloc(1, sizeof *s->grace_timer);
    uv_timer_init(h->loop, s->grace_timer);
    s->grace_timer->data = s;
    s->reap_timer = zh_xcalloc(1, sizeof *s->reap_timer);
    uv_timer_init(h->loop, s->reap_timer);
    s->reap_timer->data = s;
    s->stall_timer = zh_xcalloc(1, sizeof *s->stall_timer);
    uv_timer_init(h->loop, s->stall_timer);
    s->stall_timer->data = s;
    uv_timer_start(s->stall_timer, stall_cb, 2000, 2000);
    uv_unref((uv_handle_t *)s->stall_timer); /* never what keeps the daemon's loop alive */
    s->stale_timer = zh_xcalloc(1, sizeof *s->stale_timer);
    uv_timer_init(h->loop, s->stale_timer);
    s->stale_timer->data = s;
    uv_unref((uv_handle_t *)s->stale_timer);

    zh_job **tail = &s->jobs;
    for (int i = 0; i < conf->njobs; i++) {
        *tail = job_new(s, &conf->jobs[i]);
        tail = &(*tail)->next;
    }
    zh_job_conf replay_conf;
    zh_autoreplay_job_conf(conf, &replay_conf);
    zh_job *replay_job = *tail = job_new(s, &replay_conf);
    replay_job->spool_replay = true;
    state_load(s);
    ZH_INFO(NULL, "msg=\"zhost serve starting\" version=%s conf=%s jobs=%d state=%s%s", ZH_VERSION, path, conf->njobs,
            conf->state_dir, s->fake_clock ? " fake_clock=true" : "");
    mark_interrupted(s);
    load_history(s);

    int rc = 0;
    s->control = zh_control_start(s, &err);
    if (!s->control) {
        ZH_ERROR(NULL, "msg=\"cannot open the control socket\" error=\"%s\"", err);
        free(err);
        err = NULL;
        rc = 1;
    }
    if (!rc && conf->health_enabled) {
        s->health = zh_health_start(s, &err);
        if (!s->health) {
            ZH_ERROR(NULL, "msg=\"cannot start the health server\" error=\"%s\"", err);
            free(err);
            rc = 1;
        }
    }
    if (!rc) {
        /* Catch up, once, on what was missed while the daemon was down (systemd Persistent=). */
        int64_t now = (int64_t)floor(zh_serve_now(s));
        for (zh_job *j = s->jobs; j; j = j->next) {
            if (zh_job_enabled(j) && j->last_fire > 0 && !j->spool_replay) {
                int64_t missed = zh_sched_next(&j->c.sched, j->last_fire);
                if (missed > 0 && missed <= now) {
                    char when[40];
                    zh_sched_format_iso(missed, j->c.sched.tz, when, sizeof when);
                    ZH_INFO(j->c.name, "msg=\"catching up a run missed while zhost was down\" scheduled=%s", when);
                    char ebuf[256];
                    const char *why = zh_serve_start_job(s, j, "catch-up", j->c.days, ebuf, sizeof ebuf);
                    if (why) ZH_ERROR(j->c.name, "msg=\"could not start\" error=\"%s\"", why);
                }
            }
            j->last_fire = now;
        }
        state_save(s);
        for (zh_job *j = s->jobs; j; j = j->next) job_arm(j);
        s->autoreplay = zh_autoreplay_start(s, replay_job);
        ZH_INFO(NULL, "msg=\"zhost serve ready\" socket=%s health=%s:%d", conf->socket, conf->listen_host, conf->listen_port);
        /* Done when every job has stopped and no health query is still in flight. */
        while (!(s->done && s->queries_inflight == 0) && uv_run(h->loop, UV_RUN_ONCE)) {
        }
        ZH_INFO(NULL, "msg=\"zhost serve stopped\"");
    }
    /* Close in order: servers, the spool's watch, job timers, finished runs, the host. */
    zh_autoreplay_free(s->autoreplay);
    s->autoreplay = NULL;
    if (s->health) zh_health_free(s->health);
    if (s->control) zh_control_free(s->control);
    s->health = NULL;
    s->control = NULL;
    while (s->jobs) {
        zh_job *j = s->jobs;
        s->jobs = j->next;
        if (j->run) {
            /* Only when start-up failed with a run going: the host shutdown cancels it. */
            zh_run_cancel(j->run, "zhost could not start", ZH_RUN_INTERRUPTED);
        }
        job_free(j);
    }
    reap_cb(s->reap_timer);
    uv_close((uv_handle_t *)s->grace_timer, timer_closed);
    uv_close((uv_handle_t *)s->reap_timer, timer_closed);
    uv_close((uv_handle_t *)s->stall_timer, timer_closed);
    uv_close((uv_handle_t *)s->stale_timer, timer_closed);
    zh_host_free(h);
    for (int i = 0; i < s->ndead; i++) free(s->dead_runs[i]);
    zh_conf_free(s->conf);
    free(s->conf_flag);
    free(s->secrets_flag);
    free(s);
    zh_log_set_file(NULL);
    close(lockfd);
    return rc;
}
