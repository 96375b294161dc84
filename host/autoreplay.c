/* autoreplay.c — owns the daemon's own spool replay: when rows wait in the spool and ClickHouse
 * answers again, `zhost serve` delivers them without an operator, as the job spool_replay.
 *
 * Every [spool] check_every the spool folder is listed and each file's lock probed (no file is
 * read, ClickHouse is not asked while the spool is empty). When some file is held by nobody (a
 * run still appending keeps its files locked; spool.c), the job is not running, it is enabled,
 * and the last replay ended at least replay_every ago, ClickHouse is asked `SELECT 1` (one
 * attempt, [health] clickhouse_timeout). When it answers, the job starts: `zhost spool replay
 * --spool DIR` in a child process, through serve.c's command jobs (output logged under the job,
 * timeout, SIGTERM at shutdown, no overlap).
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
 * the credentials changed) stays in the spool: each attempt fails the run with ClickHouse's
 * error, and the next comes replay_every later, never sooner.
 *
 * Owns: the check timer (closed in zh_autoreplay_free), the spool row counts used for the log
 * line, and the time the last replay ended. The job itself is serve.c's. */
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
    double last_end;          /* monotonic end of the last replay run, 0 = none since the start */
    bool asking, stopped;
};

void zh_autoreplay_job_conf(const zh_conf *c, zh_job_conf *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ZH_SPOOL_REPLAY_JOB);
    out->command = (char *)"spool replay"; /* copied by job_new; never written */
    snprintf(out->sched.text, sizeof out->sched.text, "when spooled");
    snprintf(out->sched.tz, sizeof out->sched.tz, "%s", c->timezone);
    out->timeout_s = 3600;
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
    ZH_INFO(j->c.name, "msg=\"ClickHouse answers and rows wait in the spool: replaying it\" files=%d rows=%llu",
            info.files, (unsigned long long)info.rows);
    char ebuf[256];
    const char *why = zh_serve_start_job(s, j, "auto", 0, ebuf, sizeof ebuf);
    if (why) {
        ZH_ERROR(j->c.name, "msg=\"could not start the spool replay\" error=\"%s\"", why);
        a->last_end = zh_now_mono(); /* not again before replay_every */
    }
}

static void check_cb(uv_timer_t *t) {
    zh_autoreplay *a = t->data;
    zh_serve *s = a->s;
    zh_job *j = a->job;
    if (a->stopped || a->asking || s->stopping || zh_job_running(j) || !zh_job_enabled(j)) return;
    if (a->last_end > 0 && zh_now_mono() - a->last_end < s->conf->replay_every_s) return;
    if (zh_spool_waiting(s->conf->spool_dir, NULL) == 0) return;
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

void zh_autoreplay_finished(zh_autoreplay *a, const zh_replay_verdict *v) {
    if (!a) return;
    a->last_end = zh_now_mono();
    zh_serve *s = a->s;
    const char *job = a->job->c.name;
    bool on = zh_job_enabled(a->job) && !a->stopped;
    if (v && !v->record) {
        ZH_INFO(job, "msg=\"nothing delivered: the files left belong to runs still going (or another replay has them); "
                     "looking again in %.0f s\"", s->conf->replay_every_s);
    } else if (v && !strcmp(v->status, "error")) {
        if (on)
            ZH_WARN(job, "msg=\"rows stay in the spool: the replay failed; the next automatic replay is in %.0f s\"",
                    s->conf->replay_every_s);
        else
            ZH_WARN(job, "msg=\"rows stay in the spool: the replay failed; automatic replay is off "
                         "(zhost enable spool_replay, or zhost spool replay by hand)\"");
    }
}
