/* spool.c — owns the disk spool: batches that ClickHouse did not take are appended (fsync'd) to
 * <spool>/<db.table>~<run_id>.jsonl; `zhost spool status` lists them and `zhost spool replay`
 * delivers them in bounded pieces, remembering its progress in a .done file so a replay that is
 * itself interrupted does not start over. Rows replayed twice are harmless: every table has a
 * natural key and a version, and the views deduplicate with argMax. A row ClickHouse rejects for
 * its content is set aside in <spool>/quarantine with the reason, so it cannot block the spool. */
#include "ch_internal.h"
#include "commands.h"
#include "host.h"
#include "log.h"
#include "secrets.h"
#include "serve.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t spool_limit(void) {
    const char *v = getenv("ZHOST_SPOOL_MAX_BYTES");
    return v && atoll(v) > 0 ? (uint64_t)atoll(v) : (uint64_t)2 << 30;
}

static bool safe_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

int zh_spool_write(zh_host *h, const char *db_table, const char *job, const char *run_id, const char *error,
                   const char *rows, size_t len, uint64_t nrows, char *err, size_t errlen) {
    (void)error;
    zh_spool_info info;
    zh_spool_stat(h->spool_dir, &info);
    if (info.bytes + len > spool_limit()) {
        snprintf(err, errlen, "spool %s is full (%llu bytes, limit %llu)", h->spool_dir, (unsigned long long)info.bytes,
                 (unsigned long long)spool_limit());
        return -1;
    }
    zh_mkdirs(h->spool_dir, 0700);
    char rid[40];
    size_t i = 0;
    for (const char *p = run_id && *run_id ? run_id : "norun"; *p && i < sizeof rid - 1; p++)
        if (safe_name_char(*p)) rid[i++] = *p;
    rid[i] = 0;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s~%s.jsonl", h->spool_dir, db_table, rid);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
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
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (start >= 0 && ftruncate(fd, start) != 0) ZH_ERROR(job, "msg=\"cannot cut a partial batch\" file=%s", path);
        close(fd);
        return -1;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    ZH_WARN(job, "msg=\"rows spooled\" file=%s rows=%llu", path, (unsigned long long)nrows);
    return 0;
}

/* Every *.jsonl in the spool directory; the caller frees names. */
static int list_files(const char *dir, char ***out) {
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

static void file_stat(const char *path, uint64_t *rows, uint64_t *bytes) {
    FILE *f = fopen(path, "rb");
    *rows = 0;
    *bytes = 0;
    if (!f) return;
    long long skip = read_done_offset(path);
    if (skip > 0) fseek(f, skip, SEEK_SET);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *bytes += n;
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n') (*rows)++;
    }
    fclose(f);
}

/* Rows waiting in <spool>/quarantine (not counted as spooled: replay never reads them). */
static void quarantine_stat(const char *spool_dir, int *files, uint64_t *rows) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/quarantine", spool_dir);
    char **names;
    *files = list_files(dir, &names);
    *rows = 0;
    for (int i = 0; i < *files; i++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint64_t r, b;
        file_stat(path, &r, &b);
        *rows += r;
        free(names[i]);
    }
    free(names);
}

void zh_spool_stat(const char *dir, zh_spool_info *out) {
    memset(out, 0, sizeof *out);
    quarantine_stat(dir, &out->quarantined_files, &out->quarantined_rows);
    char **names;
    int n = list_files(dir, &names);
    for (int i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint64_t r, b;
        file_stat(path, &r, &b);
        out->files++;
        out->rows += r;
        out->bytes += b;
        free(names[i]);
    }
    free(names);
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

static int replay_file(replay_ctx *c, size_t piece_bytes, char **err) {
    const char *path = c->path;
    FILE *f = fopen(path, "rb");
    if (!f) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", path, strerror(errno));
        *err = b.data;
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
    fclose(f);
    if (rc == 0) {
        char done[1300];
        snprintf(done, sizeof done, "%s.done", path);
        unlink(path);
        unlink(done);
    }
    return rc;
}

int zh_cmd_spool(int argc, char **argv) {
    const char *secrets = NULL, *spool = NULL, *conf_flag = NULL, *v;
    const char *verb = NULL;
    bool json = false;
    size_t piece = 4u << 20;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) secrets = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--spool"))) spool = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--piece-bytes"))) piece = (size_t)atoll(v);
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
    char **names;
    int n = list_files(h->spool_dir, &names);
    int rc = 0;
    if (!strcmp(verb, "status")) {
        uint64_t trows = 0, tbytes = 0;
        if (json) printf("{\"dir\":\"%s\",\"files\":[", h->spool_dir);
        else printf("spool %s\n", h->spool_dir);
        for (int i = 0; i < n; i++) {
            char path[1200], table[256] = "?";
            snprintf(path, sizeof path, "%s/%s", h->spool_dir, names[i]);
            table_of(names[i], table, sizeof table);
            uint64_t r, b;
            file_stat(path, &r, &b);
            trows += r;
            tbytes += b;
            if (json) printf("%s{\"file\":\"%s\",\"table\":\"%s\",\"rows\":%llu,\"bytes\":%llu}", i ? "," : "", names[i], table,
                             (unsigned long long)r, (unsigned long long)b);
            else printf("  %-40s %10llu rows %12llu bytes  %s\n", table, (unsigned long long)r, (unsigned long long)b, names[i]);
        }
        int qfiles;
        uint64_t qrows;
        quarantine_stat(h->spool_dir, &qfiles, &qrows);
        if (json) printf("],\"total_files\":%d,\"total_rows\":%llu,\"total_bytes\":%llu,\"quarantined_rows\":%llu}\n", n,
                         (unsigned long long)trows, (unsigned long long)tbytes, (unsigned long long)qrows);
        else printf("total: %d files, %llu rows, %llu bytes\n", n, (unsigned long long)trows, (unsigned long long)tbytes);
        if (qfiles && !json)
            printf("quarantine: %llu rows ClickHouse rejected, in %s/quarantine (see the .errors files)\n",
                   (unsigned long long)qrows, h->spool_dir);
    } else {
        uint64_t delivered = 0, rejected = 0;
        int failed = 0;
        for (int i = 0; i < n; i++) {
            char path[1200], table[256];
            snprintf(path, sizeof path, "%s/%s", h->spool_dir, names[i]);
            if (!table_of(names[i], table, sizeof table)) {
                fprintf(stderr, "zhost spool: %s: cannot tell the table from the file name; left in place\n", path);
                failed++;
                continue;
            }
            char *err = NULL;
            replay_ctx c = {.h = h, .path = path, .name = names[i], .table = table};
            if (replay_file(&c, piece ? piece : (4u << 20), &err) != 0) {
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
        printf("replay: %llu rows delivered, %d files left, %llu rows quarantined\n", (unsigned long long)delivered, failed,
               (unsigned long long)rejected);
        rc = failed || rejected ? 1 : 0;
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    zh_host_free(h);
    zh_conf_free(conf);
    return rc;
}
