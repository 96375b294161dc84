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
/* A replay run (automatic or not) has ended: the next automatic one waits replay_every from now,
 * longer after failed replays in a row (zh_replay_pace). status is what was recorded (success,
 * error, interrupted), NULL when nothing was; v is its verdict, or NULL when it did not exit by
 * itself (timed out, stopped, killed). */
void zh_autoreplay_finished(zh_autoreplay *a, const char *status, const zh_replay_verdict *v);
/* `zhost enable|disable spool_replay`: enabling starts the back-off afresh. */
void zh_autoreplay_switched(zh_autoreplay *a, bool on);
/* For the health answer and `zhost status`: failed replays in a row, and in *next_in the seconds
 * until the next automatic replay may start (0: at the next look). */
int zh_autoreplay_backoff(const zh_autoreplay *a, double *next_in);

/* The pace of automatic replays: the next waits replay_every after the last one ended; after
 * failed replays in a row, twice as long for each failure beyond the first, up to replay_max_every
 * (a cap below replay_every: no back-off). A spool file of a table the last failed replay did not
 * leave behind (rows of a fresh outage, once their run has ended) does not wait for the back-off,
 * only for replay_every. The daemon keeps one (no I/O but listing the spool); tests drive it with
 * their own clock. */
typedef struct zh_replay_pace {
    int failures;             /* failed replays in a row since a success, an operator's replay or enable */
    double last_end;          /* monotonic end of the last replay, 0 = none yet */
    char *refused;            /* "\nT1\nT2\n": the tables of the files the last failed replay left; NULL = none */
} zh_replay_pace;

/* Frees what p holds; p is the caller's, and as good as new. */
void zh_replay_pace_clear(zh_replay_pace *p);
/* How long after the last replay's end the next automatic one waits. */
double zh_replay_pace_wait(const zh_replay_pace *p, double every, double max_every);
/* Whether an automatic replay is due at now: the wait is over and a file nobody holds is in
 * spool_dir; or, backing off but replay_every past, such a file is of a table not in p->refused —
 * then fresh (n bytes) gets its name, else "". Lists the spool only once replay_every has passed. */
bool zh_replay_pace_due(const zh_replay_pace *p, double now, double every, double max_every, const char *spool_dir,
                        char *fresh, size_t n);
/* A replay ended at now. outcome: 1 succeeded, -1 failed, 0 neither (nothing it could take, or it
 * was stopped); automatic: the daemon started it — an operator's replay starts the count afresh,
 * its own failure then counting as the first. After a failure spool_dir is listed for the tables
 * of the files left. */
void zh_replay_pace_ended(zh_replay_pace *p, double now, int outcome, bool automatic, const char *spool_dir);

#endif
