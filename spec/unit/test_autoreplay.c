/* test_autoreplay.c — how the daemon reads a `zhost spool replay` child it started (job
 * spool_replay): the summary line, the output line kept as the reason, and the verdict — what is
 * recorded as success or error, and which automatic replays are not recorded at all (nothing
 * delivered). The daemon itself (timer, ClickHouse question, child) is tested end to end in
 * spec/e2e/test_serve_autoreplay.py. No ClickHouse. */
#include "autoreplay.h"
#include "clickhouse.h"
#include "zt.h"
#include <string.h>

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

int main(void) {
    ZT_RUN(test_summary);
    ZT_RUN(test_note);
    ZT_RUN(test_verdict);
    return ZT_DONE();
}
