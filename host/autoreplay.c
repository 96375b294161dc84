/* autoreplay.c — owns the daemon's own spool replay: when rows wait in the spool and ClickHouse
 * answers again, `zhost serve` delivers them without an operator, as the job spool_replay.
 *
 * Every [spool] check_every the spool folder is listed and each file's lock probed (no file is
 * read, ClickHouse is not asked while the spool is empty). When some file is held by nobody (a
 * run still appending keeps its files locked; spool.c), the job is not running, it is enabled,
 * and the pace allows it (below), ClickHouse is asked `SELECT 1` (one attempt, [health]
 * clickhouse_timeout). When it answers, the job starts: `zhost spool replay --spool DIR` in a
 * child process, through serve.c's command jobs (output logged under the job, replay_timeout,
 * SIGTERM at shutdown, no overlap).
 *
 * Why a child and not the daemon itself: replay inserts synchronously (it runs a loop of its own
 * until each piece is in), which inside the daemon would stall the scheduler, the health server
 * and every script job for as long as a 2 GiB spool takes; and a child is the very command an
 * operator runs, so both take the same locks (one replay per spool, files of running runs
 * skipped) and keep the same progress (.done files).
 *
 * A replay that delivered, quarantined or failed is recorded (one final meta_job_runs row, no
 * `running` row: a replay killed half-way leaves nothing to mark); an automatic one that found
 * nothing it could take records nothing. A file ClickHouse keeps refusing (the table is gone,
 * a column's type changed) stays in the spool: each attempt fails the run with ClickHouse's error.
 *
 * Pace (zh_replay_pace): the next automatic replay waits replay_every after the last one ended.
 * Each failed replay in a row beyond the first doubles that, up to replay_max_every (1 h): a file
 * refused for days costs about 24 failed runs a day, not 288, while every failure is still
 * recorded, so three in a row still turn the job (and /healthz/detailed) `error`. The count starts
 * afresh with a replay that succeeds, an operator's replay (`zhost trigger|restart spool_replay`:
 * they mean "try now", so if it fails the next automatic one is replay_every later), and `zhost
 * enable spool_replay`. Rows of a fresh outage must not wait an hour behind a refused file: a
 * file nobody holds whose table is not among those the last failed replay left brings the next
 * replay back to replay_every. New files of a table already refused wait with it (a dropped table
 * refuses them as well; otherwise each run of its loader would set the back-off back). The count
 * lives in the daemon: a restart starts it afresh.
 *
 * Owns: the check timer (closed in zh_autoreplay_free), the spool row counts used for the log
 * line, and the pace. The job itself is serve.c's. */
#include "autoreplay.h"
#include "log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zh_autoreplay {
    zh_serve *s;
    zh_job *job;
    uv_timer_t *timer;
    zh_spool_counts *counts;
    zh_replay_pace pace;
    char fresh[256];          /* the new file that cut the back-off short, for the log line; "" = none */
    bool asking, stopped;
};

/* ---- the pace ---- */

void zh_replay_pace_clear(zh_replay_pace *p) {
    free(p->refused);
    memset(p, 0, sizeof *p);
}

double zh_replay_pace_wait(const zh_replay_pace *p, double every, double max_every) {
    double cap = max_every > every ? max_every : every, w = every;
    for (int i = 1; i < p->failures && w < cap; i++) w *= 2;
    return w < cap ? w : cap;
}

/* The table a spool file is for: its name up to '~' (<db.table>~<run>.jsonl, spool.c). */
static void table_of(const char *name, char *out, size_t n) {
    snprintf(out, n, "%.*s", (int)strcspn(name, "~"), name);
}

static void note_table(void *ud, const char *name) {
    zh_buf *b = ud;
    char t[256], needle[260];
    table_of(name, t, sizeof t);
    snprintf(needle, sizeof needle, "\n%s\n", t);
    if (!b->len) zh_buf_addc(b, '\n');
    if (!strstr(b->data, needle)) zh_buf_printf(b, "%s\n", t);
}

typedef struct fresh_look {
    const char *refused;
    char *out;
    size_t n;
} fresh_look;

static void look_fresh(void *ud, const char *name) {
    fresh_look *f = ud;
    char t[256], needle[260];
    if (f->out[0]) return;
    table_of(name, t, sizeof t);
    snprintf(needle, sizeof needle, "\n%s\n", t);
    if (!f->refused || !strstr(f->refused, needle)) snprintf(f->out, f->n, "%s", name);
}

bool zh_replay_pace_due(const zh_replay_pace *p, double now, double every, double max_every, const char *spool_dir,
                        char *fresh, size_t n) {
    fresh[0] = 0;
    double since = p->last_end > 0 ? now - p->last_end : 1e18;
    if (since < every) return false;
    if (since >= zh_replay_pace_wait(p, every, max_every)) return zh_spool_waiting(spool_dir, NULL) > 0;
    fresh_look f = {.refused = p->refused, .out = fresh, .n = n};
    zh_spool_waiting_each(spool_dir, NULL, look_fresh, &f);
    return fresh[0] != 0;
}

void zh_replay_pace_ended(zh_replay_pace *p, double now, int outcome, bool automatic, const char *spool_dir) {
    p->last_end = now;
    if (!automatic || outcome > 0) {
        p->failures = 0;
        free(p->refused);
        p->refused = NULL;
    }
    if (outcome >= 0) return;
    p->failures++;
    zh_buf b;
    zh_buf_init(&b);
    zh_spool_waiting_each(spool_dir, NULL, note_table, &b);
    free(p->refused);
    p->refused = b.len ? zh_xstrdup(b.data) : NULL;
    zh_buf_free(&b);
}

/* ---- the job ---- */

void zh_autoreplay_job_conf(const zh_conf *c, zh_job_conf *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ZH_SPOOL_REPLAY_JOB);
    out->command = (char *)"spool replay"; /* copied by job_new; never written */
    snprintf(out->sched.text, sizeof out->sched.text, "when spooled");
    snprintf(out->sched.tz, sizeof out->sched.tz, "%s", c->timezone);
    out->timeout_s = c->replay_timeout_s;
    out->enabled = c->auto_replay;
}

static void ch_answered(void *ud, const char *body, size_t len, const char *err, int code, double latency) {
    (void)body, (void)len, (void)code, (void)latency;
    zh_autoreplay *a = ud;
    zh_serve *s = a->s;
    zh_job *j = a->job;
    a->asking = false;
    if (err) {
        ZH_DEBUG(j->c.name, "msg=\"rows wait in the spool; ClickHouse does not answer yet\" error=\"%s\"", err);
        return;
    }
    if (a->stopped || s->stopping || zh_job_running(j) || !zh_job_enabled(j)) return;
    zh_spool_info info;
    zh_spool_stat_cached(s->conf->spool_dir, a->counts, &info);
    if (a->fresh[0])
        ZH_INFO(j->c.name, "msg=\"ClickHouse answers and rows wait in the spool: replaying it\" files=%d rows=%llu "
                           "new_file=%s note=\"a table no failed replay left: not waiting out the back-off\"",
                info.files, (unsigned long long)info.rows, a->fresh);
    else
        ZH_INFO(j->c.name, "msg=\"ClickHouse answers and rows wait in the spool: replaying it\" files=%d rows=%llu",
                info.files, (unsigned long long)info.rows);
    char ebuf[256];
    const char *why = zh_serve_start_job(s, j, "auto", 0, ebuf, sizeof ebuf);
    if (why) {
        ZH_ERROR(j->c.name, "msg=\"could not start the spool replay\" error=\"%s\"", why);
        /* a failed attempt like any other: not again before the back-off says so */
        zh_replay_pace_ended(&a->pace, zh_now_mono(), -1, true, s->conf->spool_dir);
    }
}

static void check_cb(uv_timer_t *t) {
    zh_autoreplay *a = t->data;
    zh_serve *s = a->s;
    zh_job *j = a->job;
    if (a->stopped || a->asking || s->stopping || zh_job_running(j) || !zh_job_enabled(j)) return;
    if (!zh_replay_pace_due(&a->pace, zh_now_mono(), s->conf->replay_every_s, s->conf->replay_max_every_s,
                            s->conf->spool_dir, a->fresh, sizeof a->fresh))
        return;
    a->asking = true;
    zh_serve_query(s, "SELECT 1 FORMAT TabSeparated", s->conf->ch_timeout_s, ch_answered, a);
}

static void arm(zh_autoreplay *a) {
    uint64_t every = (uint64_t)(a->s->conf->replay_check_s * 1000);
    if (every < 1) every = 1;
    uv_timer_start(a->timer, check_cb, every, every);
}

zh_autoreplay *zh_autoreplay_start(zh_serve *s, zh_job *job) {
    zh_autoreplay *a = zh_xcalloc(1, sizeof *a);
    a->s = s;
    a->job = job;
    a->counts = zh_spool_counts_new();
    a->timer = zh_xcalloc(1, sizeof *a->timer);
    uv_timer_init(s->h->loop, a->timer);
    a->timer->data = a;
    arm(a);
    uv_unref((uv_handle_t *)a->timer); /* never what keeps the daemon's loop alive */
    return a;
}

void zh_autoreplay_reconfigure(zh_autoreplay *a) {
    if (!a || a->stopped) return;
    arm(a);
}

void zh_autoreplay_stop(zh_autoreplay *a) {
    if (!a) return;
    a->stopped = true;
    uv_timer_stop(a->timer);
}

static void timer_closed(uv_handle_t *hd) { free(hd); }

void zh_autoreplay_free(zh_autoreplay *a) {
    if (!a) return;
    zh_autoreplay_stop(a);
    uv_close((uv_handle_t *)a->timer, timer_closed);
    zh_spool_counts_free(a->counts);
    zh_replay_pace_clear(&a->pace);
    free(a);
}

void zh_autoreplay_note(char *keep, size_t n, const char *line) {
    if (strncmp(line, "zhost spool: ", 13) || strstr(line, "still being written by a running run")) return;
    bool rejection = strstr(line, "rows rejected by ClickHouse") != NULL;
    bool kept_rejection = keep[0] && strstr(keep, "rows rejected by ClickHouse") != NULL;
    if (!keep[0] || (kept_rejection && !rejection)) snprintf(keep, n, "%s", line);
}

void zh_autoreplay_judge(int64_t exit_status, const char *last_line, const char *problem, bool automatic,
                         zh_replay_verdict *out) {
    memset(out, 0, sizeof *out);
    zh_spool_replay_summary sum;
    bool ok = zh_spool_replay_summary_parse(last_line ? last_line : "", &sum);
    const char *line = last_line && *last_line ? last_line : "(no output)";
    bool nothing = !ok || (sum.delivered == 0 && sum.quarantined == 0 && sum.files_left == sum.being_written);
    out->rows = ok ? sum.delivered : 0;
    out->record = true;
    out->status = "success";
    if (exit_status == 0 || exit_status == 75) {
        /* 75: only files of runs still going were left (or another replay is delivering): they are
         * taken next time. An automatic replay that could deliver nothing is not a run worth a row. */
        if (automatic && nothing) out->record = false;
        snprintf(out->message, sizeof out->message, "%s", line);
        return;
    }
    if (exit_status == 1 && ok && sum.files_left == sum.being_written) {
        /* Every file delivered; rows ClickHouse refused for their content were set aside in the
         * quarantine (its own warning and alert), which no replay can change. */
        snprintf(out->message, sizeof out->message, "%s%s%.300s", line, problem && *problem ? "; " : "", problem ? problem : "");
        return;
    }
    out->status = "error";
    if (ok) {
        snprintf(out->message, sizeof out->message, "%s%s%.300s; the files stay in the spool", line,
                 problem && *problem ? "; " : "", problem ? problem : "");
    } else {
        snprintf(out->message, sizeof out->message, "exited with status %lld; last output: %.300s", (long long)exit_status, line);
    }
}

void zh_autoreplay_finished(zh_autoreplay *a, const char *status, const zh_replay_verdict *v) {
    if (!a) return;
    zh_serve *s = a->s;
    const char *job = a->job->c.name;
    int outcome = !status ? 0 : !strcmp(status, "success") ? 1 : !strcmp(status, "error") ? -1 : 0;
    zh_replay_pace_ended(&a->pace, zh_now_mono(), outcome, !strcmp(a->job->trigger, "auto"), s->conf->spool_dir);
    double wait = zh_replay_pace_wait(&a->pace, s->conf->replay_every_s, s->conf->replay_max_every_s);
    bool on = zh_job_enabled(a->job) && !a->stopped;
    if (v && !v->record) {
        ZH_INFO(job, "msg=\"nothing delivered: the files left belong to runs still going (or another replay has them); "
                     "looking again in %.0f s\"", wait);
    } else if (outcome < 0) {
        if (on)
            ZH_WARN(job, "msg=\"rows stay in the spool: the replay failed; the next automatic replay is in %.0f s\" "
                         "failures=%d%s", wait, a->pace.failures,
                    wait > s->conf->replay_every_s ? " note=\"backing off; rows of another table are replayed sooner\"" : "");
        else
            ZH_WARN(job, "msg=\"rows stay in the spool: the replay failed; automatic replay is off "
                         "(zhost enable spool_replay, or zhost spool replay by hand)\"");
    }
}

void zh_autoreplay_switched(zh_autoreplay *a, bool on) {
    if (!a || !on) return;
    /* The operator switched it on (again): whatever failed before, try at the usual pace. */
    a->pace.failures = 0;
    free(a->pace.refused);
    a->pace.refused = NULL;
}

int zh_autoreplay_backoff(const zh_autoreplay *a, double *next_in) {
    *next_in = 0;
    if (!a) return 0;
    const zh_conf *c = a->s->conf;
    if (a->pace.last_end > 0) {
        double left = a->pace.last_end + zh_replay_pace_wait(&a->pace, c->replay_every_s, c->replay_max_every_s) - zh_now_mono();
        if (left > 0) *next_in = left;
    }
    return a->pace.failures;
}
