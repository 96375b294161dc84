/* test_autoreplay.c — how the daemon reads a `zhost spool replay` child it started (job
 * spool_replay): the summary line, the output line kept as the reason, and the verdict — what is
 * recorded as success or error, and which automatic replays are not recorded at all (nothing
 * delivered); the [spool] settings of the job; and the pace of automatic replays — the back-off
 * after failed ones, what starts it afresh, and the new files that do not wait for it. The daemon
 * itself (timer, ClickHouse question, child) is tested end to end in
 * spec/e2e/test_serve_autoreplay.py. No ClickHouse. */
#include "autoreplay.h"
#include "clickhouse.h"
#include "zt.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* autoreplay.o pulls serve.o and spool.o, whose commands use zh_opt_value from main.c (not in the
 * library): a weak stand-in. */
__attribute__((weak)) const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    (void)argc, (void)argv, (void)i, (void)name;
    return NULL;
}

static void test_summary(void) {
    zh_spool_replay_summary s;
    ZT_CHECK(zh_spool_replay_summary_parse("replay: 7 rows delivered, 0 files left, 0 rows quarantined", &s));
    ZT_EQ_INT(s.delivered, 7);
    ZT_EQ_INT(s.files_left, 0);
    ZT_EQ_INT(s.quarantined, 0);
    ZT_EQ_INT(s.being_written, 0);
    ZT_CHECK(zh_spool_replay_summary_parse("replay: 12 rows delivered, 3 files left, 2 rows quarantined; 2 of them still "
                                           "being written by running runs: replay again when they have ended", &s));
    ZT_EQ_INT(s.delivered, 12);
    ZT_EQ_INT(s.files_left, 3);
    ZT_EQ_INT(s.quarantined, 2);
    ZT_EQ_INT(s.being_written, 2);
    ZT_CHECK(!zh_spool_replay_summary_parse("zakaz.t: 5 rows delivered", &s));
    ZT_CHECK(!zh_spool_replay_summary_parse("zhost spool: another `zhost spool replay` (pid 4) is delivering /s; run it "
                                            "again when it has ended", &s));
    ZT_CHECK(!zh_spool_replay_summary_parse("", &s));
}

static void test_note(void) {
    char keep[300] = "";
    zh_autoreplay_note(keep, sizeof keep, "zakaz.t: 5 rows delivered");
    zh_autoreplay_note(keep, sizeof keep, "zhost spool: /s/zakaz.t~r.jsonl: still being written by a running run (pid 9), skipped");
    ZT_EQ_STR(keep, "");
    zh_autoreplay_note(keep, sizeof keep, "zhost spool: zakaz.t: 1 rows rejected by ClickHouse (ClickHouse error 131: x) "
                                          "were set aside in /s/quarantine/; the other rows were delivered");
    ZT_CHECK(strstr(keep, "rows rejected") != NULL);
    /* a failure says more than rows set aside, and the first failure is kept */
    zh_autoreplay_note(keep, sizeof keep, "zhost spool: /s/zakaz.u~r.jsonl: ClickHouse error 60: Table zakaz.u doesn't "
                                          "exist. (delivered 0 rows of it before)");
    zh_autoreplay_note(keep, sizeof keep, "zhost spool: /s/zakaz.v~r.jsonl: ClickHouse error 60: Table zakaz.v doesn't "
                                          "exist. (delivered 0 rows of it before)");
    zh_autoreplay_note(keep, sizeof keep, "zhost spool: zakaz.w: 1 rows rejected by ClickHouse (e) were set aside");
    ZT_CHECK(strstr(keep, "zakaz.u~r.jsonl: ClickHouse error 60") != NULL);
}

static void test_verdict(void) {
    zh_replay_verdict v;
    /* delivered: success, rows = rows delivered, the summary as the message */
    zh_autoreplay_judge(0, "replay: 6 rows delivered, 0 files left, 0 rows quarantined", "", true, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "success");
    ZT_EQ_INT(v.rows, 6);
    ZT_EQ_STR(v.message, "replay: 6 rows delivered, 0 files left, 0 rows quarantined");
    /* an automatic replay that found nothing: not recorded */
    zh_autoreplay_judge(0, "replay: 0 rows delivered, 0 files left, 0 rows quarantined", "", true, &v);
    ZT_CHECK(!v.record);
    /* only files of running runs left (75): not recorded when nothing was delivered ... */
    zh_autoreplay_judge(75, "replay: 0 rows delivered, 2 files left, 0 rows quarantined; 2 of them still being written "
                            "by running runs: replay again when they have ended", "", true, &v);
    ZT_CHECK(!v.record);
    /* ... nor when another replay had the spool */
    zh_autoreplay_judge(75, "zhost spool: another `zhost spool replay` (pid 4) is delivering /s; run it again when it has "
                            "ended", "", true, &v);
    ZT_CHECK(!v.record);
    /* ... but a success when something was delivered beside them */
    zh_autoreplay_judge(75, "replay: 4 rows delivered, 1 files left, 0 rows quarantined; 1 of them still being written by "
                            "running runs: replay again when they have ended", "", true, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "success");
    ZT_EQ_INT(v.rows, 4);
    /* an operator's trigger is recorded even with nothing to do */
    zh_autoreplay_judge(0, "replay: 0 rows delivered, 0 files left, 0 rows quarantined", "", false, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "success");
    /* a file ClickHouse refused: an error that names it, and says the file stays */
    const char *refused = "zhost spool: /s/zakaz.u~r.jsonl: ClickHouse error 60: Table zakaz.u doesn't exist. (delivered 0 "
                          "rows of it before)";
    zh_autoreplay_judge(1, "replay: 3 rows delivered, 1 files left, 0 rows quarantined", refused, true, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "error");
    ZT_EQ_INT(v.rows, 3);
    ZT_CHECK(strstr(v.message, "replay: 3 rows delivered, 1 files left") == v.message);
    ZT_CHECK(strstr(v.message, "Table zakaz.u doesn't exist") != NULL);
    ZT_CHECK(strstr(v.message, "the files stay in the spool") != NULL);
    /* everything delivered but rows set aside in the quarantine: the replay did its part */
    zh_autoreplay_judge(1, "replay: 9 rows delivered, 0 files left, 1 rows quarantined",
                        "zhost spool: zakaz.t: 1 rows rejected by ClickHouse (e) were set aside", true, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "success");
    ZT_CHECK(strstr(v.message, "1 rows rejected by ClickHouse") != NULL);
    /* no summary at all (the spool folder cannot be written): an error with its last line */
    zh_autoreplay_judge(1, "zhost spool: cannot replay /s: Permission denied; nothing delivered", "", true, &v);
    ZT_CHECK(v.record);
    ZT_EQ_STR(v.status, "error");
    ZT_CHECK(strstr(v.message, "exited with status 1; last output: zhost spool: cannot replay /s") == v.message);
}

static zh_conf *conf(const char *text, char **err) {
    *err = NULL;
    return zh_conf_parse(text, strlen(text), "t.conf", "/tmp", err);
}

/* [spool] replay_timeout is the job's timeout; replay_max_every its back-off cap. */
static void test_spool_settings(void) {
    char *err;
    zh_conf *c = conf("[spool]\nreplay_every = 2m\n", &err);
    ZT_CHECK(c != NULL);
    if (!c) return;
    zh_job_conf jc;
    zh_autoreplay_job_conf(c, &jc);
    ZT_EQ_INT(jc.timeout_s, 3600); /* the defaults: an hour each */
    ZT_EQ_INT(c->replay_max_every_s, 3600);
    zh_conf_free(c);
    c = conf("[spool]\nreplay_timeout = 20m\nreplay_max_every = 2h\n", &err);
    ZT_CHECK(c != NULL);
    if (!c) return;
    zh_autoreplay_job_conf(c, &jc);
    ZT_EQ_INT(jc.timeout_s, 1200);
    ZT_EQ_INT(c->replay_max_every_s, 7200);
    zh_conf_free(c);
    static const char *const bad[][2] = {
        {"[spool]\nreplay_timeout = 0\n", "t.conf:2: replay_timeout: a duration like 1h (at most 7d)"},
        {"[spool]\nreplay_timeout = 8d\n", "t.conf:2: replay_timeout: a duration like 1h (at most 7d)"},
        {"[spool]\nreplay_timeout = soon\n", "t.conf:2: replay_timeout: a duration like 1h (at most 7d)"},
        {"[spool]\nreplay_max_every = 0\n", "t.conf:2: replay_max_every: a duration like 1h (at most 1d)"},
        {"[spool]\nreplay_max_every = 2d\n", "t.conf:2: replay_max_every: a duration like 1h (at most 1d)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = conf(bad[i][0], &err);
        ZT_CHECK(c == NULL);
        ZT_CHECK(err && strstr(err, bad[i][1]));
        if (err && !strstr(err, bad[i][1])) fprintf(stderr, "  got: %s\n", err);
        free(err);
        zh_conf_free(c);
    }
}

/* The wait doubles with each failure beyond the first, up to the cap; a cap below replay_every
 * means no back-off. */
static void test_pace_wait(void) {
    zh_replay_pace p = {0};
    static const double want[] = {300, 300, 600, 1200, 2400, 3600, 3600};
    for (int f = 0; f < 7; f++) {
        p.failures = f;
        ZT_EQ_INT(zh_replay_pace_wait(&p, 300, 3600), want[f]);
    }
    p.failures = 100000; /* no overflow, no endless doubling */
    ZT_EQ_INT(zh_replay_pace_wait(&p, 300, 3600), 3600);
    ZT_EQ_INT(zh_replay_pace_wait(&p, 300, 60), 300);
    p.failures = 3;
    ZT_EQ_INT(zh_replay_pace_wait(&p, 7200, 3600), 7200);
}

static char spool[64];

static void spool_file(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", spool, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{\"id\":1}\n", f);
        fclose(f);
    }
}

/* An open, locked spool file: a run still appending to it (spool.c). */
static int held_file(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", spool, name);
    spool_file(name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void test_pace(void) {
    snprintf(spool, sizeof spool, "/tmp/zhost-test-pace-XXXXXX");
    if (!mkdtemp(spool)) {
        ZT_CHECK(!"mkdtemp");
        return;
    }
    const double every = 300, cap = 3600;
    char fresh[256];
    zh_replay_pace p = {0};
    /* Nothing waits: nothing is due. A file nobody holds: due at once (no replay yet). */
    ZT_CHECK(!zh_replay_pace_due(&p, 1000, every, cap, spool, fresh, sizeof fresh));
    spool_file("zakaz.gone~r1.jsonl");
    ZT_CHECK(zh_replay_pace_due(&p, 1000, every, cap, spool, fresh, sizeof fresh));
    ZT_EQ_STR(fresh, "");
    /* It fails (the table is gone): the next comes replay_every later, as before the back-off. */
    zh_replay_pace_ended(&p, 1000, -1, true, spool);
    ZT_EQ_INT(p.failures, 1);
    ZT_EQ_STR(p.refused, "\nzakaz.gone\n");
    ZT_CHECK(!zh_replay_pace_due(&p, 1299, every, cap, spool, fresh, sizeof fresh));
    ZT_CHECK(zh_replay_pace_due(&p, 1300, every, cap, spool, fresh, sizeof fresh));
    /* It fails again: now twice as long. */
    zh_replay_pace_ended(&p, 1300, -1, true, spool);
    ZT_EQ_INT(p.failures, 2);
    ZT_CHECK(!zh_replay_pace_due(&p, 1300 + 599, every, cap, spool, fresh, sizeof fresh));
    ZT_CHECK(zh_replay_pace_due(&p, 1300 + 600, every, cap, spool, fresh, sizeof fresh));
    /* Backing off: a new file of the refused table waits with it (it would be refused as well) ... */
    spool_file("zakaz.gone~r2.jsonl");
    ZT_CHECK(!zh_replay_pace_due(&p, 1300 + 400, every, cap, spool, fresh, sizeof fresh));
    /* ... and so does a file of another table while its run still holds it ... */
    int fd = held_file("zakaz.sales~r3.jsonl");
    ZT_CHECK(fd >= 0);
    ZT_CHECK(!zh_replay_pace_due(&p, 1300 + 400, every, cap, spool, fresh, sizeof fresh));
    /* ... but once the run has let go, rows of a fresh outage wait only replay_every, never less. */
    close(fd);
    ZT_CHECK(!zh_replay_pace_due(&p, 1300 + 299, every, cap, spool, fresh, sizeof fresh));
    ZT_CHECK(zh_replay_pace_due(&p, 1300 + 300, every, cap, spool, fresh, sizeof fresh));
    ZT_EQ_STR(fresh, "zakaz.sales~r3.jsonl");
    /* That replay delivers the new rows but the old file is still refused: the back-off goes on,
     * and the new file is no longer new. */
    char path[256];
    snprintf(path, sizeof path, "%s/zakaz.sales~r3.jsonl", spool);
    unlink(path);
    zh_replay_pace_ended(&p, 1600, -1, true, spool);
    ZT_EQ_INT(p.failures, 3);
    ZT_EQ_INT(zh_replay_pace_wait(&p, every, cap), 1200);
    ZT_CHECK(!zh_replay_pace_due(&p, 1600 + 1199, every, cap, spool, fresh, sizeof fresh));
    ZT_CHECK(zh_replay_pace_due(&p, 1600 + 1200, every, cap, spool, fresh, sizeof fresh));
    ZT_EQ_STR(fresh, "");
    /* A replay that found nothing it could take, or was stopped, changes nothing but the clock. */
    zh_replay_pace_ended(&p, 2800, 0, true, spool);
    ZT_EQ_INT(p.failures, 3);
    /* An operator's replay starts the count afresh: failed, it is the first failure. */
    zh_replay_pace_ended(&p, 3000, -1, false, spool);
    ZT_EQ_INT(p.failures, 1);
    ZT_CHECK(zh_replay_pace_due(&p, 3300, every, cap, spool, fresh, sizeof fresh));
    for (int i = 0; i < 10; i++) zh_replay_pace_ended(&p, 3300, -1, true, spool);
    ZT_EQ_INT(zh_replay_pace_wait(&p, every, cap), 3600);
    /* A replay that succeeds ends the back-off. */
    zh_replay_pace_ended(&p, 4000, 1, true, spool);
    ZT_EQ_INT(p.failures, 0);
    ZT_CHECK(p.refused == NULL);
    ZT_EQ_INT(zh_replay_pace_wait(&p, every, cap), 300);
    zh_replay_pace_clear(&p);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", spool);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", spool);
}

int main(void) {
    ZT_RUN(test_summary);
    ZT_RUN(test_note);
    ZT_RUN(test_verdict);
    ZT_RUN(test_spool_settings);
    ZT_RUN(test_pace_wait);
    ZT_RUN(test_pace);
    return ZT_DONE();
}
