/* test_spool.c — the spool's writer locks: a held run keeps its files locked between batches and
 * lets go on release (no fd left behind), a file nobody holds is locked only while written, a
 * file another process keeps locked (a replay delivering it) is written beside rather than waited
 * for, and a held file moved away by an operator is not appended to in the dark. No ClickHouse. */
#include "ch_internal.h"
#include "clickhouse.h"
#include "zt.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* spool.o's command uses zh_opt_value from main.c (not in the library): a weak stand-in. */
__attribute__((weak)) const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    (void)argc, (void)argv, (void)i, (void)name;
    return NULL;
}

static char dir[64];

static const char *path_of(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Whether some open file description other than a new one of ours holds path's lock, as
 * `zhost spool replay` would find it. */
static bool locked(const char *name) {
    int fd = open(path_of(name), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return busy;
}

static int lines(const char *name) {
    FILE *f = fopen(path_of(name), "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

static int put(zh_host *h, const char *run_id, const char *row) {
    char err[256] = "";
    int rc = zh_spool_write(h, "db.t", NULL, run_id, "test", row, strlen(row), 1, err, sizeof err);
    if (rc) fprintf(stderr, "zh_spool_write: %s\n", err);
    return rc;
}

static void a_held_run_keeps_its_file_locked_until_release(void) {
    zh_host h = {.spool_dir = dir};
    zh_spool_hold(&h, "run-a");
    ZT_EQ_INT(put(&h, "run-a", "{\"id\":1}\n"), 0);
    ZT_CHECK(locked("db.t~run-a.jsonl"));
    ZT_EQ_INT(put(&h, "run-a", "{\"id\":2}\n"), 0);
    ZT_CHECK(locked("db.t~run-a.jsonl"));
    ZT_EQ_INT(lines("db.t~run-a.jsonl"), 2);
    zh_spool_release(&h, "run-a");
    ZT_CHECK(!locked("db.t~run-a.jsonl"));
    zh_spool_shutdown(&h);
}

static void a_file_nobody_holds_is_locked_only_while_written(void) {
    zh_host h = {.spool_dir = dir};
    zh_spool_hold(&h, "someone-else");
    ZT_EQ_INT(put(&h, "late-row", "{\"id\":1}\n"), 0);
    ZT_CHECK(!locked("db.t~late-row.jsonl"));
    ZT_EQ_INT(lines("db.t~late-row.jsonl"), 1);
    zh_spool_shutdown(&h);
}

static void many_runs_leave_no_fd_behind(void) {
    zh_host h = {.spool_dir = dir};
    int before = open_fds();
    for (int i = 0; i < 50; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "loop-%d", i);
        zh_spool_hold(&h, rid);
        ZT_EQ_INT(put(&h, rid, "{\"id\":1}\n"), 0);
        ZT_EQ_INT(put(&h, rid, "{\"id\":2}\n"), 0);
        zh_spool_release(&h, rid);
    }
    ZT_EQ_INT(open_fds(), before);
    /* and a host that ends with runs still held closes their files too */
    zh_spool_hold(&h, "left-1");
    zh_spool_hold(&h, "left-2");
    ZT_EQ_INT(put(&h, "left-1", "{\"id\":1}\n"), 0);
    ZT_EQ_INT(put(&h, "left-2", "{\"id\":1}\n"), 0);
    ZT_EQ_INT(open_fds(), before + 2);
    zh_spool_shutdown(&h);
    ZT_EQ_INT(open_fds(), before);
    ZT_CHECK(!locked("db.t~left-1.jsonl"));
}

static void a_file_a_replay_holds_is_written_beside(void) {
    zh_host h = {.spool_dir = dir};
    /* A replay (another open file description) delivers db.t~run-b.jsonl and keeps it locked. */
    int replay = open(path_of("db.t~run-b.jsonl"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ZT_CHECK(replay >= 0 && write(replay, "{\"id\":0}\n", 9) == 9);
    ZT_EQ_INT(flock(replay, LOCK_EX | LOCK_NB), 0);
    zh_spool_hold(&h, "run-b");
    ZT_EQ_INT(put(&h, "run-b", "{\"id\":1}\n"), 0);
    ZT_EQ_INT(put(&h, "run-b", "{\"id\":2}\n"), 0);
    ZT_EQ_INT(lines("db.t~run-b.jsonl"), 1); /* nothing appended behind the replay's back */
    char beside[64];
    snprintf(beside, sizeof beside, "db.t~run-b-%ld-1.jsonl", (long)getpid());
    ZT_EQ_INT(lines(beside), 2);
    ZT_CHECK(locked(beside));
    close(replay);
    zh_spool_release(&h, "run-b");
    ZT_CHECK(!locked(beside));
    zh_spool_shutdown(&h);
}

static void a_held_file_moved_away_is_not_appended_to(void) {
    zh_host h = {.spool_dir = dir};
    zh_spool_hold(&h, "run-c");
    ZT_EQ_INT(put(&h, "run-c", "{\"id\":1}\n"), 0);
    char away[256];
    snprintf(away, sizeof away, "%s/elsewhere.txt", dir);
    ZT_EQ_INT(rename(path_of("db.t~run-c.jsonl"), away), 0);
    unlink(away);
    ZT_EQ_INT(put(&h, "run-c", "{\"id\":2}\n"), 0);
    ZT_EQ_INT(lines("db.t~run-c.jsonl"), 1);
    ZT_CHECK(locked("db.t~run-c.jsonl"));
    zh_spool_shutdown(&h);
}


static void put_file(const char *path, const char *mode, const char *text) {
    FILE *f = fopen(path, mode);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Counting with a zh_spool_counts reads only what was appended, and must still agree with a full
 * count after every kind of change: appends, replay progress (.done), a file replaced under the
 * same name, a file cut back, a file gone. */
static void incremental_counts_agree_with_full_counts(void) {
    char sub[128];
    snprintf(sub, sizeof sub, "%s/counts", dir);
    mkdir(sub, 0700);
    zh_spool_counts *c = zh_spool_counts_new();
    zh_spool_info full, inc;
#define SAME(rows_, bytes_, files_)                                                                           \
    do {                                                                                                     \
        zh_spool_stat(sub, &full);                                                                           \
        zh_spool_stat_cached(sub, c, &inc);                                                                  \
        ZT_EQ_INT((int)full.rows, rows_);                                                                    \
        ZT_EQ_INT((int)inc.rows, rows_);                                                                     \
        ZT_EQ_INT((int)inc.bytes, (int)full.bytes);                                                          \
        ZT_EQ_INT((int)full.bytes, bytes_);                                                                  \
        ZT_EQ_INT(inc.files, files_);                                                                        \
    } while (0)
    char a[200], done[220];
    snprintf(a, sizeof a, "%s/db.t~r1.jsonl", sub);
    snprintf(done, sizeof done, "%s.done", a);
    put_file(a, "w", "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"); /* 3 rows of 9 bytes */
    SAME(3, 27, 1);
    put_file(a, "a", "{\"id\":4}\n{\"id\":5}\n");
    SAME(5, 45, 1);
    put_file(done, "w", "18\n"); /* replay delivered the first two rows */
    SAME(3, 27, 1);
    put_file(done, "w", "36\n");
    SAME(1, 9, 1);
    unlink(done);
    /* replaced by another file under the same name, larger than what was counted */
    char tmp[220];
    snprintf(tmp, sizeof tmp, "%s.new", a);
    FILE *f = fopen(tmp, "w");
    for (int i = 0; f && i < 7; i++) fputs("{\"id\":9}\n", f);
    if (f) fclose(f);
    ZT_EQ_INT(rename(tmp, a), 0);
    SAME(7, 63, 1);
    ZT_EQ_INT(truncate(a, 18), 0); /* a half-written batch cut back */
    SAME(2, 18, 1);
    char b[200];
    snprintf(b, sizeof b, "%s/db.u~r2.jsonl", sub);
    put_file(b, "w", "{\"id\":1}\n");
    SAME(3, 27, 2);
    unlink(a);
    SAME(1, 9, 1);
    unlink(b);
    SAME(0, 0, 0);
#undef SAME
    zh_spool_counts_free(c);
    rmdir(sub);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/zh-spool-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    ZT_RUN(a_held_run_keeps_its_file_locked_until_release);
    ZT_RUN(a_file_nobody_holds_is_locked_only_while_written);
    ZT_RUN(many_runs_leave_no_fd_behind);
    ZT_RUN(a_file_a_replay_holds_is_written_beside);
    ZT_RUN(a_held_file_moved_away_is_not_appended_to);
    ZT_RUN(incremental_counts_agree_with_full_counts);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return ZT_DONE();
}
