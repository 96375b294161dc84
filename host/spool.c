/* spool.c — owns the disk spool: batches that ClickHouse did not take are appended (fsync'd) to
 * <spool>/<db.table>~<run_id>.jsonl; `zhost spool status` lists them and `zhost spool replay`
 * delivers them in bounded pieces, remembering its progress in a .done file so a replay that is
 * itself interrupted does not start over (`zhost serve` runs this same command in a child process
 * when rows wait that nobody holds: autoreplay.c). Rows replayed twice are harmless: every table has a
 * natural key and a version, and the views deduplicate with argMax. A row ClickHouse rejects for
 * its content is set aside in <spool>/quarantine with the reason, so it cannot block the spool.
 *
 * Locks: a spool file is appended to only under an exclusive flock, which the process keeps for
 * as long as the run that spooled to it may append more (zh_spool_hold/zh_spool_release) and the
 * kernel drops when that process dies, however it dies. Replay takes the same lock without
 * waiting, so it never reads a batch half-written nor deletes a file a live run still appends to;
 * it skips such a file and says so. A writer that finds a file locked by someone else for longer
 * than a write (a replay delivering it) writes beside it under another name rather than wait. */
#include "ch_internal.h"
#include "commands.h"
#include "host.h"
#include "log.h"
#include "secrets.h"
#include "serve.h"
#include "tunables.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static uint64_t spool_limit(void) {
    return (uint64_t)zh_tunable_number("ZHOST_SPOOL_MAX_BYTES", (double)((uint64_t)2 << 30));
}

static bool safe_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* A spool file this process keeps locked for a run that may append to it again. */
typedef struct held_file {
    char *table, *path;
    int fd;
    struct held_file *next;
} held_file;

typedef struct held_run {
    char rid[40];
    held_file *files;
    struct held_run *next;
} held_run;

struct zh_spool_state {
    held_run *runs;
    zh_spool_counts *counts; /* ch.spool_status()'s, counted incrementally */
};

static uint64_t spool_bytes(const char *dir);

/* The run id as it appears in file names. */
static void rid_of(const char *run_id, char rid[40]) {
    size_t i = 0;
    for (const char *p = run_id && *run_id ? run_id : "norun"; *p && i < 39; p++)
        if (safe_name_char(*p)) rid[i++] = *p;
    rid[i] = 0;
}

static held_run *find_run(zh_host *h, const char *rid) {
    for (held_run *r = h->spool ? h->spool->runs : NULL; r; r = r->next)
        if (!strcmp(r->rid, rid)) return r;
    return NULL;
}

static void held_close(held_file *f) {
    close(f->fd); /* drops the lock */
    free(f->table);
    free(f->path);
    free(f);
}

void zh_spool_hold(zh_host *h, const char *run_id) {
    char rid[40];
    rid_of(run_id, rid);
    if (find_run(h, rid)) return;
    if (!h->spool) h->spool = zh_xcalloc(1, sizeof *h->spool);
    held_run *r = zh_xcalloc(1, sizeof *r);
    memcpy(r->rid, rid, sizeof r->rid);
    r->next = h->spool->runs;
    h->spool->runs = r;
}

void zh_spool_release(zh_host *h, const char *run_id) {
    char rid[40];
    rid_of(run_id, rid);
    for (held_run **pp = h->spool ? &h->spool->runs : NULL; pp && *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->rid, rid)) continue;
        held_run *r = *pp;
        *pp = r->next;
        while (r->files) {
            held_file *f = r->files;
            r->files = f->next;
            held_close(f);
        }
        free(r);
        return;
    }
}

void zh_spool_shutdown(zh_host *h) {
    while (h->spool && h->spool->runs) zh_spool_release(h, h->spool->runs->rid);
    if (h->spool) zh_spool_counts_free(h->spool->counts);
    free(h->spool);
    h->spool = NULL;
}

/* The file the run already holds for this table, if it is still in the spool (an operator may
 * have moved it away: appending to it then would lose the rows). */
static held_file *held_for(held_run *r, const char *table) {
    for (held_file **pp = &r->files; *pp; pp = &(*pp)->next) {
        held_file *f = *pp;
        if (strcmp(f->table, table)) continue;
        struct stat st;
        if (fstat(f->fd, &st) == 0 && st.st_nlink > 0) return f;
        *pp = f->next;
        held_close(f);
        return NULL;
    }
    return NULL;
}

/* Opens path for appending under this process's exclusive lock. Returns the fd, -1 with errno on
 * an error, or -2 while another process keeps the file locked. */
static int open_locked(const char *path, bool wait_briefly) {
    for (int attempt = 0; attempt < 10; attempt++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0) return -1;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) return fd; /* no flock here (an odd filesystem): rows before locks */
            close(fd);
            /* `spool status` probing, or another process's single write, lets go within
             * milliseconds; a replay delivering the file does not, and nobody should wait for it. */
            if (!wait_briefly) break;
            nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_nlink == 0) {
            /* A replay delivered and removed it between our open and our lock: start a new one. */
            close(fd);
            continue;
        }
        return fd;
    }
    return -2;
}

/* Opens (creates) the spool file for a batch of db_table from run rid, locked; path receives its
 * name. A file another process keeps locked (a replay is delivering it) is left to it: the batch
 * goes to a new file named after this process. */
static int open_spool_file(zh_host *h, const char *db_table, const char *rid, char *path, size_t n) {
    snprintf(path, n, "%s/%s~%s.jsonl", h->spool_dir, db_table, rid);
    int fd = open_locked(path, true);
    for (int i = 1; fd == -2 && i <= 100; i++) {
        snprintf(path, n, "%s/%s~%s-%ld-%d.jsonl", h->spool_dir, db_table, rid, (long)getpid(), i);
        fd = open_locked(path, false);
    }
    if (fd == -2) {
        errno = EWOULDBLOCK;
        fd = -1;
    }
    return fd;
}

int zh_spool_write(zh_host *h, const char *db_table, const char *job, const char *run_id, const char *error,
                   const char *rows, size_t len, uint64_t nrows, char *err, size_t errlen) {
    (void)error;
    uint64_t waiting = spool_bytes(h->spool_dir);
    if (waiting + len > spool_limit()) {
        snprintf(err, errlen, "spool %s is full (%llu bytes, limit %llu)", h->spool_dir, (unsigned long long)waiting,
                 (unsigned long long)spool_limit());
        return -1;
    }
    zh_mkdirs(h->spool_dir, 0700);
    char rid[40];
    rid_of(run_id, rid);
    /* A run still going keeps its file locked between batches; anything else (a run log row
     * written after its run, rows of the host's shutdown) holds the lock only while writing. */
    held_run *run = find_run(h, rid);
    held_file *held = run ? held_for(run, db_table) : NULL;
    char path[1200];
    int fd;
    if (held) {
        snprintf(path, sizeof path, "%s", held->path);
        fd = held->fd;
    } else {
        fd = open_spool_file(h, db_table, rid, path, sizeof path);
        if (fd < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        if (run) {
            held = zh_xcalloc(1, sizeof *held);
            held->table = zh_xstrdup(db_table);
            held->path = zh_xstrdup(path);
            held->fd = fd;
            held->next = run->files;
            run->files = held;
        }
    }
    /* A write that fails half-way (disk full) must not leave part of the batch behind: the rows it
     * holds are reported lost, and a partial last line would glue itself to the next batch. */
    struct stat st0;
    off_t start = fstat(fd, &st0) == 0 ? st0.st_size : -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, rows + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            if (start >= 0 && ftruncate(fd, start) != 0) ZH_ERROR(job, "msg=\"cannot cut a partial batch\" file=%s", path);
            if (!held) close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (start >= 0 && ftruncate(fd, start) != 0) ZH_ERROR(job, "msg=\"cannot cut a partial batch\" file=%s", path);
        if (!held) close(fd);
        return -1;
    }
    if (!held && close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    ZH_WARN(job, "msg=\"rows spooled\" file=%s rows=%llu", path, (unsigned long long)nrows);
    return 0;
}

/* Every *.jsonl in the spool directory, in directory order; the caller frees names. */
static int list_names(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 6 && !strcmp(e->d_name + l - 6, ".jsonl")) {
            *out = zh_xrealloc(*out, (size_t)(n + 1) * sizeof **out);
            (*out)[n++] = zh_xstrdup(e->d_name);
        }
    }
    closedir(d);
    return n;
}

/* The same, oldest first. */
static int list_files(const char *dir, char ***out) {
    int n = list_names(dir, out);
    /* Oldest first: names start with the table, so sort by modification time. */
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            char a[1200], b[1200];
            struct stat sa, sb;
            snprintf(a, sizeof a, "%s/%s", dir, (*out)[i]);
            snprintf(b, sizeof b, "%s/%s", dir, (*out)[j]);
            if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sb.st_mtime < sa.st_mtime) {
                char *t = (*out)[i];
                (*out)[i] = (*out)[j];
                (*out)[j] = t;
            }
        }
    }
    return n;
}

static long long read_done_offset(const char *path) {
    char p[1300];
    snprintf(p, sizeof p, "%s.done", path);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    long long off = 0;
    if (fscanf(f, "%lld", &off) != 1) off = 0;
    fclose(f);
    return off;
}

static void write_done_offset(const char *path, long long off) {
    char p[1300], text[32];
    snprintf(p, sizeof p, "%s.done", path);
    int n = snprintf(text, sizeof text, "%lld\n", off);
    zh_write_atomic(p, text, (size_t)n, 0600, NULL);
}

/* Newlines in [from, to) of the open file. */
static uint64_t count_lines(FILE *f, uint64_t from, uint64_t to) {
    uint64_t rows = 0;
    if (to <= from || fseeko(f, (off_t)from, SEEK_SET) != 0) return 0;
    char buf[65536];
    uint64_t left = to - from;
    while (left) {
        size_t n = fread(buf, 1, left < sizeof buf ? (size_t)left : sizeof buf, f);
        if (!n) break;
        for (size_t i = 0; i < n; i++) rows += buf[i] == '\n';
        left -= n;
    }
    return rows;
}

/* What was counted of one file, so the next count reads only what was appended (spool files only
 * grow, and replay's progress only moves forward). Health checks and ch.spool_status() count the
 * spool often, and during a long ClickHouse outage it holds up to 2 GiB: reading all of it each
 * time blocked the loop for seconds. */
typedef struct count_entry {
    char *path;
    dev_t dev;
    ino_t ino;
    uint64_t size, lines;           /* newlines in [0, size) */
    uint64_t done, lines_done;      /* newlines in [0, done): rows replay already delivered */
    bool seen;
    struct count_entry *next;
} count_entry;

struct zh_spool_counts {
    count_entry *entries;
};

zh_spool_counts *zh_spool_counts_new(void) { return zh_xcalloc(1, sizeof(zh_spool_counts)); }

void zh_spool_counts_free(zh_spool_counts *c) {
    if (!c) return;
    while (c->entries) {
        count_entry *e = c->entries;
        c->entries = e->next;
        free(e->path);
        free(e);
    }
    free(c);
}

static void file_stat(zh_spool_counts *c, const char *path, uint64_t *rows, uint64_t *bytes, int64_t *mtime) {
    *rows = 0;
    *bytes = 0;
    if (mtime) *mtime = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return;
    }
    if (mtime) *mtime = (int64_t)st.st_mtime;
    uint64_t size = (uint64_t)st.st_size, done = 0;
    long long d = read_done_offset(path);
    if (d > 0) done = (uint64_t)d < size ? (uint64_t)d : size;
    count_entry tmp = {0}, *e = &tmp;
    if (c) {
        for (e = c->entries; e && strcmp(e->path, path); e = e->next) {}
        if (!e) {
            e = zh_xcalloc(1, sizeof *e);
            e->path = zh_xstrdup(path);
            e->next = c->entries;
            c->entries = e;
        }
        e->seen = true;
    }
    /* Another file under the same name, or one that shrank: count it from the start. */
    if (e->dev != st.st_dev || e->ino != st.st_ino || size < e->size || done < e->done) {
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->size = e->lines = e->done = e->lines_done = 0;
    }
    e->lines += count_lines(f, e->size, size);
    e->size = size;
    e->lines_done += count_lines(f, e->done, done);
    e->done = done;
    fclose(f);
    *rows = e->lines - e->lines_done;
    *bytes = size - done;
}

/* Forgets files that were not counted this time (delivered, moved away). */
static void counts_sweep(zh_spool_counts *c) {
    if (!c) return;
    for (count_entry **pp = &c->entries; *pp;) {
        count_entry *e = *pp;
        if (e->seen) {
            e->seen = false;
            pp = &e->next;
        } else {
            *pp = e->next;
            free(e->path);
            free(e);
        }
    }
}

/* Rows waiting in <spool>/quarantine (not counted as spooled: replay never reads them). */
static void quarantine_stat(zh_spool_counts *c, const char *spool_dir, int *files, uint64_t *rows) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/quarantine", spool_dir);
    char **names;
    *files = list_files(dir, &names);
    *rows = 0;
    for (int i = 0; i < *files; i++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint64_t r, b;
        file_stat(c, path, &r, &b, NULL);
        *rows += r;
        free(names[i]);
    }
    free(names);
}

void zh_spool_stat_cached(const char *dir, zh_spool_counts *c, zh_spool_info *out) {
    memset(out, 0, sizeof *out);
    quarantine_stat(c, dir, &out->quarantined_files, &out->quarantined_rows);
    char **names;
    int n = list_files(dir, &names);
    for (int i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint64_t r, b;
        int64_t mtime;
        file_stat(c, path, &r, &b, &mtime);
        out->files++;
        out->rows += r;
        out->bytes += b;
        if (mtime > 0 && (!out->oldest || mtime < out->oldest)) out->oldest = mtime;
        free(names[i]);
    }
    free(names);
    counts_sweep(c);
}

void zh_spool_stat(const char *dir, zh_spool_info *out) { zh_spool_stat_cached(dir, NULL, out); }

void zh_spool_stat_host(zh_host *h, zh_spool_info *out) {
    if (!h->spool) h->spool = zh_xcalloc(1, sizeof *h->spool);
    if (!h->spool->counts) h->spool->counts = zh_spool_counts_new();
    zh_spool_stat_cached(h->spool_dir, h->spool->counts, out);
}

/* Bytes waiting in the spool, from the files' sizes alone: what the size limit needs on every
 * batch spooled, without reading the spool. */
static uint64_t spool_bytes(const char *dir) {
    char **names;
    int n = list_files(dir, &names);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        long long done = read_done_offset(path);
        uint64_t size = (uint64_t)st.st_size, skip = done > 0 ? (uint64_t)done : 0;
        total += size > skip ? size - skip : 0;
    }
    free(names);
    return total;
}

/* db.table from "<db.table>~<run>.jsonl" */
static bool table_of(const char *name, char *out, size_t n) {
    const char *tilde = strchr(name, '~');
    if (!tilde || (size_t)(tilde - name) >= n) return false;
    memcpy(out, name, (size_t)(tilde - name));
    out[tilde - name] = 0;
    for (char *p = out; *p; p++)
        if (!safe_name_char(*p)) return false;
    return strchr(out, '.') != NULL;
}

/* Codes ClickHouse gives when the rows themselves are wrong (a value the column cannot take, a
 * line that is not JSON), as opposed to the server, the table or the credentials: only these
 * may set rows aside. 49 is how 18.16 reports an unknown Enum element. */
static bool content_error(int code) {
    switch (code) {
    case 6: case 25: case 26: case 27: case 32: case 33: case 38: case 41: case 49: case 53: case 69: case 70:
    case 72: case 117: case 131: case 349: case 691:
        return true;
    default:
        return false;
    }
}

typedef struct replay_ctx {
    zh_host *h;
    const char *path, *name, *table;
    uint64_t delivered, rejected;
    char *first_reject;       /* the first rejection's message, for the report */
} replay_ctx;

/* Appends rows ClickHouse refused to <spool>/quarantine/<name>, and the reason to .errors beside
 * it; fsync'd, because the rows leave the spool once this returns 0. */
static int quarantine(replay_ctx *c, const char *row, size_t len, const char *why, char **err) {
    char dir[1100], path[1400];
    snprintf(dir, sizeof dir, "%s/quarantine", c->h->spool_dir);
    zh_mkdirs(dir, 0700);
    size_t nl = strlen(c->name) - 6; /* without ".jsonl" */
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%.*s%s", dir, (int)nl, c->name, i ? ".errors" : ".jsonl");
        zh_buf text;
        zh_buf_init(&text);
        if (i) zh_buf_printf(&text, "%s\t%s\n", why, c->table);
        else zh_buf_add(&text, row, len);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        bool ok = fd >= 0 && write(fd, text.data, text.len) == (ssize_t)text.len && fsync(fd) == 0;
        if (fd >= 0 && close(fd) != 0) ok = false;
        zh_buf_free(&text);
        if (!ok) {
            zh_buf b;
            zh_buf_init(&b);
            zh_buf_printf(&b, "cannot set a rejected row aside in %s: %s (rejected: %s)", path, strerror(errno), why);
            *err = b.data;
            return -1;
        }
    }
    return 0;
}

/* Delivers rows [a, b) of piece (line starts in at[], at[b] is the end). A rejection for the
 * rows' content is narrowed down by halves, so one bad row costs a few extra inserts and the
 * good rows around it still get in; the bad row goes to the quarantine. Any other failure (the
 * server is down, the table is missing) stops the replay with the rows kept in the spool. */
static int deliver(replay_ctx *c, const char *piece, const size_t *at, size_t a, size_t b, char **err) {
    int code;
    char *e = NULL;
    if (zh_ch_insert_sync(c->h, c->table, piece + at[a], at[b] - at[a], &code, &e) == 0) {
        c->delivered += b - a;
        return 0;
    }
    if (!content_error(code)) {
        *err = e;
        return -1;
    }
    if (b - a == 1) {
        int rc = quarantine(c, piece + at[a], at[b] - at[a], e, err);
        if (rc == 0) {
            c->rejected++;
            if (!c->first_reject) c->first_reject = zh_xstrdup(e);
        }
        free(e);
        return rc;
    }
    free(e);
    size_t mid = a + (b - a) / 2;
    if (deliver(c, piece, at, a, mid, err) != 0) return -1;
    return deliver(c, piece, at, mid, b, err);
}

/* Delivers the file open (and locked) at fd, which it closes; deletes the file once all of it is in
 * ClickHouse, before the lock goes, so no writer can append to it in between. */
static int replay_file(replay_ctx *c, int fd, size_t piece_bytes, char **err) {
    const char *path = c->path;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", path, strerror(errno));
        *err = b.data;
        close(fd);
        return -1;
    }
    long long off = read_done_offset(path);
    if (off > 0) fseek(f, off, SEEK_SET);
    zh_buf piece;
    zh_buf_init(&piece);
    size_t *at = NULL, nat = 0, capat = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0;
    for (;;) {
        got = getline(&line, &cap, f);
        bool eof = got < 0;
        if (!eof && (got == 0 || line[got - 1] != '\n')) {
            ZH_WARN(NULL, "msg=\"spool file ends in a partial row (a crash while writing); skipped\" file=%s", path);
            eof = true;
        }
        if (!eof) {
            if (nat + 2 > capat) {
                capat = capat ? capat * 2 : 1024;
                at = zh_xrealloc(at, capat * sizeof *at);
            }
            at[nat++] = piece.len;
            zh_buf_add(&piece, line, (size_t)got);
        }
        if (piece.len && (eof || piece.len >= piece_bytes)) {
            at[nat] = piece.len;
            if (deliver(c, piece.data, at, 0, nat, err) != 0) {
                rc = -1;
                break;
            }
            off += (long long)piece.len;
            write_done_offset(path, off);
            piece.len = 0;
            nat = 0;
        }
        if (eof) break;
    }
    free(line);
    free(at);
    zh_buf_free(&piece);
    if (rc == 0) {
        char done[1300];
        snprintf(done, sizeof done, "%s.done", path);
        if (unlink(path) != 0 && errno != ENOENT) {
            /* Delivered but still here: the next replay would deliver it again. */
            zh_buf b;
            zh_buf_init(&b);
            zh_buf_printf(&b, "delivered, but cannot remove it: %s", strerror(errno));
            *err = b.data;
            rc = -1;
        }
        unlink(done);
    }
    fclose(f);
    return rc;
}

/* The pid holding an flock on fd's file, from /proc/locks; 0 when it does not say. */
static long lock_holder(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    FILE *f = fopen("/proc/locks", "r");
    if (!f) return 0;
    char line[256];
    long pid = 0;
    while (!pid && fgets(line, sizeof line, f)) {
        /* "1: FLOCK  ADVISORY  WRITE 4242 fe:00:10960972 0 EOF"; a waiter's line has "->" */
        char kind[16];
        long p;
        unsigned maj, min;
        unsigned long long ino;
        if (strstr(line, "->")) continue;
        if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%llu", kind, &p, &maj, &min, &ino) == 5 && !strcmp(kind, "FLOCK") &&
            maj == major(st.st_dev) && min == minor(st.st_dev) && ino == (unsigned long long)st.st_ino && p > 0)
            pid = p;
    }
    fclose(f);
    return pid;
}

/* Takes fd's exclusive lock without blocking, allowing a holder a few milliseconds to let go (a
 * `spool status` probing, another process's single write). False with errno EWOULDBLOCK while
 * someone keeps it (a run still appending to it); true, unlocked, where flock does not work at all. */
static bool lock_now(int fd) {
    for (int attempt = 0;; attempt++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) return true;
        if (attempt == 5) return false;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
}

/* Whether another process keeps path locked (a run still appending to it, or a replay delivering
 * it), and its pid when /proc/locks tells. A shared lock, dropped at once: writers wait that out. */
static bool locked_by_other(const char *path, long *pid) {
    *pid = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool busy = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (busy) *pid = lock_holder(fd);
    close(fd);
    return busy;
}

int zh_spool_waiting_each(const char *dir, int *held, void (*fn)(void *ud, const char *name), void *ud) {
    char **names;
    /* Unsorted: the daemon asks every check_every, and sorting stats every pair of files. */
    int n = list_names(dir, &names), free_files = 0;
    if (held) *held = 0;
    for (int i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        long pid;
        if (locked_by_other(path, &pid)) {
            if (held) (*held)++;
        } else if (access(path, F_OK) == 0) {
            free_files++;
            if (fn) fn(ud, names[i]);
        }
        free(names[i]);
    }
    free(names);
    return free_files;
}

int zh_spool_waiting(const char *dir, int *held) { return zh_spool_waiting_each(dir, held, NULL, NULL); }

/* One replay at a time per spool: a second one would take the first one's files for running runs.
 * Returns the lock's fd, or -1 with *pid the other replay's (0 if unknown). No spool, no lock. */
static int replay_lock(const char *dir, long *pid) {
    char path[1100];
    snprintf(path, sizeof path, "%s/replay.lock", dir);
    *pid = 0;
    /* Read-only suffices for flock, and lets another operator account open the file root made. */
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -2;
    if (!lock_now(fd)) {
        *pid = lock_holder(fd);
        close(fd);
        return -1;
    }
    return fd;
}

bool zh_spool_replay_summary_parse(const char *line, zh_spool_replay_summary *out) {
    memset(out, 0, sizeof *out);
    unsigned long long delivered, quarantined;
    int left, n = 0;
    if (sscanf(line, "replay: %llu rows delivered, %d files left, %llu rows quarantined%n", &delivered, &left, &quarantined,
               &n) != 3 || n <= 0)
        return false;
    out->delivered = delivered;
    out->files_left = left;
    out->quarantined = quarantined;
    int busy;
    if (sscanf(line + n, "; %d of them still being written", &busy) == 1) out->being_written = busy;
    return true;
}

int zh_cmd_spool(int argc, char **argv) {
    const char *secrets = NULL, *spool = NULL, *conf_flag = NULL, *v;
    const char *verb = NULL;
    bool json = false;
    size_t piece = 4u << 20;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) secrets = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--spool"))) spool = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--piece-bytes"))) {
            /* atoll read "4M" as 4 bytes: a replay of one row per INSERT */
            double n;
            if (zh_parse_size(v, &n) != 0 || n < 1024 || n > 1024.0 * 1024 * 1024) {
                fprintf(stderr, "zhost spool: --piece-bytes must be a size from 1K to 1G (4M, 4194304), not '%s'\n", v);
                return 2;
            }
            piece = (size_t)n;
        }
        else if ((v = zh_opt_value(argc, argv, &i, "--conf"))) conf_flag = v;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!verb) verb = argv[i];
        else {
            fprintf(stderr, "zhost spool: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!verb || (strcmp(verb, "status") && strcmp(verb, "replay"))) {
        fprintf(stderr, "usage: zhost spool status|replay [--secrets DIR] [--spool DIR] [--json]\n");
        return 2;
    }
    /* Without --spool/$ZHOST_SPOOL, use the daemon's spool (and secrets) from its configuration,
     * so an operator finds the same files from any directory. */
    zh_conf *conf = NULL;
    const char *env_spool = getenv("ZHOST_SPOOL");
    if (!spool && !(env_spool && *env_spool)) {
        const char *path = zh_conf_find(conf_flag);
        char *cerr = NULL;
        if (path && (conf = zh_conf_load(path, &cerr))) {
            spool = conf->spool_dir;
            if (!secrets && !getenv("ZHOST_SECRETS")) secrets = conf->secrets_dir;
        } else if (cerr) {
            fprintf(stderr, "zhost spool: %s (using ./var/spool)\n", cerr);
            free(cerr);
        }
    }
    zh_host_opts ho = {.secrets_dir = zh_secrets_dir(secrets), .spool_dir = spool};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        zh_conf_free(conf);
        return 1;
    }
    /* "0 files" must mean an empty spool, not a folder this user cannot read (rows are waiting
     * there) or a mistyped --spool. A default spool that was never created is just empty. */
    bool named = spool || (env_spool && *env_spool);
    DIR *probe = opendir(h->spool_dir);
    if (probe) {
        closedir(probe);
    } else if (errno != ENOENT || named) {
        fprintf(stderr, "zhost spool: cannot read %s: %s%s\n", h->spool_dir, strerror(errno),
                errno == ENOENT ? " (is the folder name right? without --spool and $ZHOST_SPOOL the daemon's spool is used)"
                : errno == EACCES ? " (run it as the spool's owner, e.g. sudo -u zhost zhost spool status)" : "");
        zh_host_free(h);
        zh_conf_free(conf);
        return 1;
    }
    char **names;
    int n = list_files(h->spool_dir, &names);
    int rc = 0;
    if (!strcmp(verb, "status")) {
        uint64_t trows = 0, tbytes = 0;
        int writing = 0;
        if (json) printf("{\"dir\":\"%s\",\"files\":[", h->spool_dir);
        else printf("spool %s\n", h->spool_dir);
        for (int i = 0; i < n; i++) {
            char path[1200], table[256] = "?";
            snprintf(path, sizeof path, "%s/%s", h->spool_dir, names[i]);
            table_of(names[i], table, sizeof table);
            uint64_t r, b;
            file_stat(NULL, path, &r, &b, NULL);
            long pid;
            bool busy = locked_by_other(path, &pid);
            writing += busy;
            trows += r;
            tbytes += b;
            char who[64] = "";
            if (busy && pid) snprintf(who, sizeof who, " (pid %ld)", pid);
            if (json) {
                printf("%s{\"file\":\"%s\",\"table\":\"%s\",\"rows\":%llu,\"bytes\":%llu,\"being_written\":%s", i ? "," : "",
                       names[i], table, (unsigned long long)r, (unsigned long long)b, busy ? "true" : "false");
                if (busy && pid) printf(",\"writer_pid\":%ld", pid);
                printf("}");
            } else {
                printf("  %-40s %10llu rows %12llu bytes  %s%s%s\n", table, (unsigned long long)r, (unsigned long long)b,
                       names[i], busy ? "  being written" : "", who);
            }
        }
        int qfiles;
        uint64_t qrows;
        quarantine_stat(NULL, h->spool_dir, &qfiles, &qrows);
        if (json) printf("],\"total_files\":%d,\"total_rows\":%llu,\"total_bytes\":%llu,\"being_written_files\":%d,"
                         "\"quarantined_rows\":%llu}\n", n, (unsigned long long)trows, (unsigned long long)tbytes, writing,
                         (unsigned long long)qrows);
        else printf("total: %d files, %llu rows, %llu bytes%s\n", n, (unsigned long long)trows, (unsigned long long)tbytes,
                    writing ? " (files being written belong to runs still going: replay skips them until they end)" : "");
        if (qfiles && !json)
            printf("quarantine: %llu rows ClickHouse rejected, in %s/quarantine (see the .errors files)\n",
                   (unsigned long long)qrows, h->spool_dir);
    } else {
        uint64_t delivered = 0, rejected = 0;
        int failed = 0, skipped = 0;
        long other = 0;
        /* Delivered files are deleted and progress goes to .done files: in a folder this user cannot
         * write, every replay would deliver the same rows again and report nothing left. */
        if (n && access(h->spool_dir, W_OK) != 0) {
            fprintf(stderr, "zhost spool: cannot replay %s: %s; nothing delivered (run it as the spool's owner, "
                            "e.g. sudo -u zhost zhost spool replay)\n", h->spool_dir, strerror(errno));
            for (int i = 0; i < n; i++) free(names[i]);
            free(names);
            zh_host_free(h);
            zh_conf_free(conf);
            return 1;
        }
        int lockfd = n ? replay_lock(h->spool_dir, &other) : -2;
        if (lockfd == -1) {
            char who[64] = "";
            if (other) snprintf(who, sizeof who, " (pid %ld)", other);
            fprintf(stderr, "zhost spool: another `zhost spool replay`%s is delivering %s; run it again when it has ended\n",
                    who, h->spool_dir);
        }
        for (int i = 0; lockfd != -1 && i < n; i++) {
            char path[1200], table[256];
            snprintf(path, sizeof path, "%s/%s", h->spool_dir, names[i]);
            if (!table_of(names[i], table, sizeof table)) {
                fprintf(stderr, "zhost spool: %s: cannot tell the table from the file name; left in place\n", path);
                failed++;
                continue;
            }
            int fd = open(path, O_RDONLY | O_CLOEXEC), open_errno = errno;
            if (fd < 0 && open_errno == ENOENT) continue; /* gone since the listing */
            if (fd >= 0 && !lock_now(fd)) {
                /* A live run may still append to it: what it appends after our last read would be
                 * deleted with the file. Its lock goes when the run ends or its process dies. */
                long pid = lock_holder(fd);
                close(fd);
                if (pid) fprintf(stderr, "zhost spool: %s: still being written by a running run (pid %ld), skipped\n", path, pid);
                else fprintf(stderr, "zhost spool: %s: still being written by a running run, skipped\n", path);
                skipped++;
                continue;
            }
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink == 0) {
                close(fd); /* delivered and removed since the listing */
                continue;
            }
            char *err = NULL;
            replay_ctx c = {.h = h, .path = path, .name = names[i], .table = table};
            int frc;
            if (fd < 0) {
                zh_buf b;
                zh_buf_init(&b);
                zh_buf_printf(&b, "%s", strerror(open_errno));
                err = b.data;
                frc = -1;
            } else {
                frc = replay_file(&c, fd, piece ? piece : (4u << 20), &err);
            }
            if (frc != 0) {
                fprintf(stderr, "zhost spool: %s: %s (delivered %llu rows of it before)\n", path, err,
                        (unsigned long long)c.delivered);
                free(err);
                failed++;
            } else {
                printf("%s: %llu rows delivered\n", table, (unsigned long long)c.delivered);
            }
            if (c.rejected) {
                fprintf(stderr, "zhost spool: %s: %llu rows rejected by ClickHouse (%s) were set aside in %s/quarantine/; "
                                "the other rows were delivered\n",
                        table, (unsigned long long)c.rejected, c.first_reject, h->spool_dir);
                rejected += c.rejected;
            }
            free(c.first_reject);
            delivered += c.delivered;
        }
        if (lockfd == -1) {
            rc = 75;
        } else {
            /* The last line; the daemon's spool_replay job reads it (zh_spool_replay_summary_parse). */
            printf("replay: %llu rows delivered, %d files left, %llu rows quarantined", (unsigned long long)delivered,
                   failed + skipped, (unsigned long long)rejected);
            if (skipped) printf("; %d of them still being written by running runs: replay again when they have ended", skipped);
            printf("\n");
            /* 1: something needs a look (ClickHouse refused, rows set aside); 75 (EX_TEMPFAIL): only
             * files of runs still going are left, come back when they end. */
            rc = failed || rejected ? 1 : skipped ? 75 : 0;
        }
        if (lockfd >= 0) close(lockfd);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    zh_host_free(h);
    zh_conf_free(conf);
    return rc;
}
