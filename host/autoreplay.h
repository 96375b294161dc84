/* autoreplay.h — the daemon delivers its spool by itself (job spool_replay); see autoreplay.c. */
#ifndef ZH_AUTOREPLAY_H
#define ZH_AUTOREPLAY_H

#include "serve.h"

typedef struct zh_autoreplay zh_autoreplay;

/* The settings of the job spool_replay from the configuration ([spool]); out's strings are
 * static: job_new copies them. */
void zh_autoreplay_job_conf(const zh_conf *c, zh_job_conf *out);
/* Starts looking at the spool every [spool] check_every; job is the daemon's spool_replay job. */
zh_autoreplay *zh_autoreplay_start(zh_serve *s, zh_job *job);
/* After a reload: the intervals may have changed. */
void zh_autoreplay_reconfigure(zh_autoreplay *a);
/* Shutdown: no more looks (a replay going on is the job's, stopped like any child). */
void zh_autoreplay_stop(zh_autoreplay *a);
/* After the loop has ended (no ClickHouse question of ours is in flight then). */
void zh_autoreplay_free(zh_autoreplay *a);

/* How a `zhost spool replay` child that exited by itself is recorded. */
typedef struct zh_replay_verdict {
    bool record;              /* false: it had nothing to deliver (automatic runs only): no row, no status change */
    const char *status;       /* success | error */
    char message[512];
    uint64_t rows;            /* rows delivered */
} zh_replay_verdict;
/* exit_status: the child's; last_line: its last output line (the summary); problem: its first
 * "zhost spool: FILE: ..." failure line, or ""; automatic: started by the daemon, not by an operator. */
void zh_autoreplay_judge(int64_t exit_status, const char *last_line, const char *problem, bool automatic,
                         zh_replay_verdict *out);
/* Keeps in keep (n bytes) the child's output line that best says what went wrong: its first
 * failure ("zhost spool: FILE: error ..."), else its first note of rows set aside; lines about files
 * of running runs are not problems. */
void zh_autoreplay_note(char *keep, size_t n, const char *line);
/* A replay run (automatic or not) has ended: the next automatic one waits replay_every from now.
 * v is its verdict, or NULL when it did not exit by itself (timed out, stopped, killed). */
void zh_autoreplay_finished(zh_autoreplay *a, const zh_replay_verdict *v);

#endif
