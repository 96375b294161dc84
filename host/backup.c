/* backup.c — owns `zhost backup full|incr|verify|restore|prune|list`: logical backups of the
 * zakaz and bi databases (SHOW CREATE for every table and view, data in ClickHouse's Native
 * format one partition at a time), the manifest with row counts, content checksums and the
 * sha256 of every file, verification of the backup folders, restore into scratch databases with
 * a row-count and checksum comparison, pruning, and the run rows (meta_job_runs_raw,
 * backup_runs). Also the small tool this needs and nothing else has: a JSON reader.
 *
 * Storage is behind bk_store (put/get/list/remove of files under a root); only local disk is
 * implemented. Data travels as the server sends it: gzip made by ClickHouse (HTTP compression)
 * when zlib is linked (we need it to read gzip'd error bodies), else raw Native.
 *
 * Consistency: one SELECT reads one snapshot of a partition's parts; the partition's row count
 * and content checksum are taken before and after its dump and the dump is repeated until they
 * agree, so the manifest describes exactly the rows in the file. Tables are not frozen against
 * each other (18.16 has no BACKUP): the backup is consistent per partition, not across tables.
 *
 * Incrementals are differential: each compares every partition with its base full and dumps only
 * new or changed ones; its manifest lists the whole state (every partition, with the backup that
 * holds its file), so restoring NAME needs NAME and its base only. See docs/backup.md. */
#include "backup.h"
#include "ch_internal.h"
#include "clickhouse.h"
#include "commands.h"
#include "hash.h"
#include "host.h"
#include "log.h"
#include "run.h"
#include "secrets.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef ZH_HAVE_ZLIB
#include <zlib.h>

/* Dumps of a partition that keeps changing before the backup gives up on it (see its use). */
#define DUMP_ATTEMPTS 10
#endif

/* ======================================================================================
 * JSON reader
 * ====================================================================================== */

typedef struct jp {
    const char *p, *end, *start;
    char *err;
    int depth;
} jp;

static void jp_fail(jp *j, const char *what) {
    if (j->err) return;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "%s at byte %ld", what, (long)(j->p - j->start));
    j->err = b.data;
}

static void jp_ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static void utf8_put(zh_buf *b, uint32_t cp) {
    if (cp < 0x80) {
        zh_buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        zh_buf_addc(b, (char)(0xc0 | (cp >> 6)));
        zh_buf_addc(b, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        zh_buf_addc(b, (char)(0xe0 | (cp >> 12)));
        zh_buf_addc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
        zh_buf_addc(b, (char)(0x80 | (cp & 0x3f)));
    } else {
        zh_buf_addc(b, (char)(0xf0 | (cp >> 18)));
        zh_buf_addc(b, (char)(0x80 | ((cp >> 12) & 0x3f)));
        zh_buf_addc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
        zh_buf_addc(b, (char)(0x80 | (cp & 0x3f)));
    }
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *jp_string(jp *j) {
    /* at the opening quote */
    j->p++;
    zh_buf b;
    zh_buf_init(&b);
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            jp_fail(j, "control character in a string");
            zh_buf_free(&b);
            return NULL;
        }
        if (c != '\\') {
            zh_buf_addc(&b, (char)c);
            j->p++;
            continue;
        }
        if (j->p + 1 >= j->end) break;
        char e = j->p[1];
        j->p += 2;
        switch (e) {
        case '"': zh_buf_addc(&b, '"'); break;
        case '\\': zh_buf_addc(&b, '\\'); break;
        case '/': zh_buf_addc(&b, '/'); break;
        case 'b': zh_buf_addc(&b, '\b'); break;
        case 'f': zh_buf_addc(&b, '\f'); break;
        case 'n': zh_buf_addc(&b, '\n'); break;
        case 'r': zh_buf_addc(&b, '\r'); break;
        case 't': zh_buf_addc(&b, '\t'); break;
        case 'u': {
            uint32_t cp;
            if (j->end - j->p < 4 || hex4(j->p, &cp) != 0) {
                jp_fail(j, "bad \\u escape");
                zh_buf_free(&b);
                return NULL;
            }
            j->p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
                uint32_t lo;
                if (hex4(j->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    j->p += 6;
                }
            }
            utf8_put(&b, cp);
            break;
        }
        default:
            jp_fail(j, "bad escape");
            zh_buf_free(&b);
            return NULL;
        }
    }
    if (j->p >= j->end) {
        jp_fail(j, "unterminated string");
        zh_buf_free(&b);
        return NULL;
    }
    j->p++;
    return b.data ? b.data : zh_xstrdup("");
}

static zh_json *jp_value(jp *j);

static zh_json *jp_new(zh_json_type t) {
    zh_json *v = zh_xcalloc(1, sizeof *v);
    v->t = t;
    return v;
}

static void jp_push(zh_json *v, char *key, zh_json *item) {
    v->items = zh_xrealloc(v->items, (size_t)(v->n + 1) * sizeof *v->items);
    if (v->t == ZH_JSON_OBJ) v->keys = zh_xrealloc(v->keys, (size_t)(v->n + 1) * sizeof *v->keys);
    v->items[v->n] = item;
    if (v->t == ZH_JSON_OBJ) v->keys[v->n] = key;
    v->n++;
}

static zh_json *jp_value(jp *j) {
    jp_ws(j);
    if (j->p >= j->end) {
        jp_fail(j, "unexpected end");
        return NULL;
    }
    char c = *j->p;
    if (c == '{' || c == '[') {
        if (++j->depth > 64) {
            jp_fail(j, "nested too deep");
            return NULL;
        }
        bool obj = c == '{';
        zh_json *v = jp_new(obj ? ZH_JSON_OBJ : ZH_JSON_ARR);
        j->p++;
        jp_ws(j);
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
            j->p++;
            j->depth--;
            return v;
        }
        for (;;) {
            char *key = NULL;
            if (obj) {
                jp_ws(j);
                if (j->p >= j->end || *j->p != '"') {
                    jp_fail(j, "expected a key");
                    zh_json_free(v);
                    return NULL;
                }
                key = jp_string(j);
                jp_ws(j);
                if (!key || j->p >= j->end || *j->p != ':') {
                    free(key);
                    jp_fail(j, "expected ':'");
                    zh_json_free(v);
                    return NULL;
                }
                j->p++;
            }
            zh_json *item = jp_value(j);
            if (!item) {
                free(key);
                zh_json_free(v);
                return NULL;
            }
            jp_push(v, key, item);
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
                j->p++;
                break;
            }
            jp_fail(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            zh_json_free(v);
            return NULL;
        }
        j->depth--;
        return v;
    }
    if (c == '"') {
        char *s = jp_string(j);
        if (!s) return NULL;
        zh_json *v = jp_new(ZH_JSON_STR);
        v->s = s;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        const char *s = j->p;
        while (j->p < j->end && strchr("+-0123456789.eE", *j->p)) j->p++;
        zh_json *v = jp_new(ZH_JSON_NUM);
        v->s = zh_xstrndup(s, (size_t)(j->p - s));
        return v;
    }
    static const struct { const char *w; zh_json_type t; bool b; } words[] = {
        {"true", ZH_JSON_BOOL, true}, {"false", ZH_JSON_BOOL, false}, {"null", ZH_JSON_NULL, false}};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        size_t n = strlen(words[i].w);
        if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, words[i].w, n)) {
            j->p += n;
            zh_json *v = jp_new(words[i].t);
            v->b = words[i].b;
            return v;
        }
    }
    jp_fail(j, "unexpected character");
    return NULL;
}

zh_json *zh_json_parse(const char *text, size_t len, char **err) {
    jp j = {text, text + len, text, NULL, 0};
    zh_json *v = jp_value(&j);
    if (v) {
        jp_ws(&j);
        if (j.p != j.end) {
            jp_fail(&j, "trailing characters");
            zh_json_free(v);
            v = NULL;
        }
    }
    if (!v) {
        *err = j.err ? j.err : zh_xstrdup("malformed JSON");
    } else {
        free(j.err);
    }
    return v;
}

void zh_json_free(zh_json *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) {
        zh_json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
    free(v);
}

const zh_json *zh_json_get(const zh_json *o, const char *key) {
    if (!o || o->t != ZH_JSON_OBJ) return NULL;
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return o->items[i];
    return NULL;
}

const char *zh_json_str(const zh_json *o, const char *key) {
    const zh_json *v = zh_json_get(o, key);
    return v && v->t == ZH_JSON_STR ? v->s : NULL;
}

uint64_t zh_json_u64(const zh_json *o, const char *key, uint64_t dflt) {
    const zh_json *v = zh_json_get(o, key);
    if (!v || (v->t != ZH_JSON_NUM && v->t != ZH_JSON_STR) || !v->s[0] || v->s[0] == '-') return dflt;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v->s, &end, 10);
    if (errno || *end) return dflt;
    return (uint64_t)x;
}

/* ======================================================================================
 * Names and SQL text
 * ====================================================================================== */

static bool ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool plain_ident(const char *s) {
    if (!*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!ident_char(*s)) return false;
    return true;
}

/* `name` with backquotes (and backslash escapes) when it needs them. */
static void add_ident(zh_buf *b, const char *name) {
    if (plain_ident(name)) {
        zh_buf_adds(b, name);
        return;
    }
    zh_buf_addc(b, '`');
    for (const char *p = name; *p; p++) {
        if (*p == '`' || *p == '\\') zh_buf_addc(b, '\\');
        zh_buf_addc(b, *p);
    }
    zh_buf_addc(b, '`');
}

/* 'text' with the escapes ClickHouse reads in a string literal. */
static void add_literal(zh_buf *b, const char *s) {
    zh_buf_addc(b, '\'');
    for (const char *p = s; *p; p++) {
        if (*p == '\'' || *p == '\\') zh_buf_addc(b, '\\');
        zh_buf_addc(b, *p);
    }
    zh_buf_addc(b, '\'');
}

static char *qualified(const char *db, const char *name) {
    zh_buf b;
    zh_buf_init(&b);
    add_ident(&b, db);
    zh_buf_addc(&b, '.');
    add_ident(&b, name);
    return b.data;
}

char *zh_backup_rewrite_db(const char *sql, const char *from, const char *to) {
    zh_buf b;
    zh_buf_init(&b);
    const char *p = sql;
    size_t fl = strlen(from);
    while (*p) {
        char c = *p;
        if (c == '\'') {
            /* string literal: copied as is */
            const char *s = p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1]) p++;
                p++;
            }
            if (*p) p++;
            zh_buf_add(&b, s, (size_t)(p - s));
        } else if (c == '-' && p[1] == '-') {
            const char *s = p;
            while (*p && *p != '\n') p++;
            zh_buf_add(&b, s, (size_t)(p - s));
        } else if (c == '/' && p[1] == '*') {
            const char *s = p;
            const char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
            zh_buf_add(&b, s, (size_t)(p - s));
        } else if (c == '`' || c == '"') {
            const char *s = p++;
            zh_buf name;
            zh_buf_init(&name);
            while (*p && *p != c) {
                if (*p == '\\' && p[1]) p++;
                zh_buf_addc(&name, *p++);
            }
            if (*p) p++;
            bool prev_dot = s > sql && s[-1] == '.';
            if (!prev_dot && *p == '.' && name.len == fl && !memcmp(name.data, from, fl)) add_ident(&b, to);
            else zh_buf_add(&b, s, (size_t)(p - s));
            zh_buf_free(&name);
        } else if (ident_char(c) && !(c >= '0' && c <= '9')) {
            const char *s = p;
            while (ident_char(*p)) p++;
            bool prev_dot = s > sql && s[-1] == '.';
            if (!prev_dot && *p == '.' && (size_t)(p - s) == fl && !memcmp(s, from, fl)) add_ident(&b, to);
            else zh_buf_add(&b, s, (size_t)(p - s));
        } else if (c >= '0' && c <= '9') {
            /* a number (1.5, 1e3, 0x1F): its dot is not a qualifier */
            const char *s = p;
            while (ident_char(*p) || *p == '.') p++;
            zh_buf_add(&b, s, (size_t)(p - s));
        } else {
            zh_buf_addc(&b, c);
            p++;
        }
    }
    return b.data ? b.data : zh_xstrdup("");
}

char *zh_backup_file_name(const char *name) {
    zh_buf b;
    zh_buf_init(&b);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (ident_char((char)*p) || *p == '-') zh_buf_addc(&b, (char)*p);
        else zh_buf_printf(&b, "%%%02X", *p);
    }
    return b.data ? b.data : zh_xstrdup("%");
}

bool zh_backup_parse_name(const char *name, double *epoch, bool *full) {
    if (strlen(name) != 25 || strncmp(name, "chbk_", 5) != 0 || name[13] != '_' || name[20] != '_') return false;
    for (int i = 5; i < 20; i++)
        if (i != 13 && !(name[i] >= '0' && name[i] <= '9')) return false;
    bool f = !strcmp(name + 21, "full");
    if (!f && strcmp(name + 21, "incr") != 0) return false;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char tmp[26];
    memcpy(tmp, name, 26);
    if (!strptime(tmp + 5, "%Y%m%d_%H%M%S", &tm)) return false;
    if (epoch) *epoch = (double)timegm(&tm);
    if (full) *full = f;
    return true;
}

static void iso_utc(double epoch, char *out, size_t n) {
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double parse_iso_utc(const char *s) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) return 0;
    return (double)timegm(&tm);
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    if (!s) {
        fputs("zhost: out of memory\n", stderr);
        abort();
    }
    return s;
}

static void human_bytes(uint64_t n, char *out, size_t len) {
    if (n < 10240) snprintf(out, len, "%llu B", (unsigned long long)n);
    else if (n < 10ull << 20) snprintf(out, len, "%.1f KiB", n / 1024.0);
    else if (n < 10ull << 30) snprintf(out, len, "%.1f MiB", n / 1048576.0);
    else snprintf(out, len, "%.1f GiB", n / 1073741824.0);
}

/* ======================================================================================
 * Storage: put/get/list/remove of files under a root. Paths are relative, '/'-separated.
 * Only local disk exists; an S3 store would implement the same operations.
 * ====================================================================================== */

typedef struct bk_store bk_store;
typedef struct bk_store_ops {
    /* Streaming put: nothing is visible under `path` until put_close(commit=true). */
    void *(*put_open)(bk_store *s, const char *path, char **err);
    int (*put_write)(void *w, const void *p, size_t n, char **err);
    int (*put_close)(void *w, bool commit, char **err);
    /* Returns 1 and a reader, 0 when the file does not exist, -1 with *err on other errors. */
    int (*get_open)(bk_store *s, const char *path, void **r, uint64_t *size, char **err);
    long (*get_read)(void *r, void *p, size_t n); /* bytes read, 0 at the end, -1 on error */
    void (*get_close)(void *r);
    /* Names directly under dir ("" = the root), sorted; -1 when dir does not exist. */
    int (*list)(bk_store *s, const char *dir, char ***names);
    /* Removes a file, or a folder with everything in it. */
    int (*remove)(bk_store *s, const char *path, char **err);
} bk_store_ops;

struct bk_store {
    const bk_store_ops *ops;
    char *root;
    char *desc; /* "local:/var/backups/ch" for logs and backup_runs.target */
};

static char *local_path(bk_store *s, const char *rel) { return xprintf("%s/%s", s->root, rel); }

/* Data reaches the disk before the name appears, so a crash leaves a temporary file, not a torn
 * one. */
static void *local_put_open(bk_store *s, const char *rel, char **err) {
    zh_atomic_file *w = zh_xcalloc(1, sizeof *w);
    char *path = local_path(s, rel);
    int rc = zh_atomic_open(w, path, 0640, 0750, err);
    free(path);
    if (rc != 0) {
        free(w);
        return NULL;
    }
    return w;
}

static int local_put_write(void *wp, const void *p, size_t n, char **err) { return zh_atomic_write(wp, p, n, err); }

static int local_put_close(void *wp, bool commit, char **err) {
    int rc = 0;
    if (commit) rc = zh_atomic_commit(wp, err);
    else zh_atomic_abort(wp);
    free(wp);
    return rc;
}

static int local_get_open(bk_store *s, const char *rel, void **r, uint64_t *size, char **err) {
    char *path = local_path(s, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e != ENOENT) *err = xprintf("%s: %s", path, strerror(e));
        free(path);
        return e == ENOENT ? 0 : -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = xprintf("%s: not a regular file", path);
        close(fd);
        free(path);
        return -1;
    }
    free(path);
    if (size) *size = (uint64_t)st.st_size;
    int *h = zh_xmalloc(sizeof *h);
    *h = fd;
    *r = h;
    return 1;
}

static long local_get_read(void *r, void *p, size_t n) {
    int fd = *(int *)r;
    for (;;) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        return (long)k;
    }
}

static void local_get_close(void *r) {
    close(*(int *)r);
    free(r);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int local_list(bk_store *s, const char *rel, char ***out) {
    char *path = rel && *rel ? local_path(s, rel) : zh_xstrdup(s->root);
    DIR *d = opendir(path);
    free(path);
    *out = NULL;
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        *out = zh_xrealloc(*out, (size_t)(n + 1) * sizeof **out);
        (*out)[n++] = zh_xstrdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof **out, cmp_str);
    return n;
}

static int rm_rf(const char *path, char **err) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : (*err = xprintf("%s: %s", path, strerror(errno)), -1);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            *err = xprintf("%s: %s", path, strerror(errno));
            return -1;
        }
        struct dirent *e;
        int rc = 0;
        while ((e = readdir(d)) && rc == 0) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *sub = xprintf("%s/%s", path, e->d_name);
            rc = rm_rf(sub, err);
            free(sub);
        }
        closedir(d);
        if (rc) return rc;
        if (rmdir(path) != 0) {
            *err = xprintf("%s: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (unlink(path) != 0) {
        *err = xprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int local_remove(bk_store *s, const char *rel, char **err) {
    if (!rel || !*rel || strstr(rel, "..")) {
        *err = xprintf("refusing to remove '%s'", rel ? rel : "");
        return -1;
    }
    char *path = local_path(s, rel);
    int rc = rm_rf(path, err);
    free(path);
    return rc;
}

static const bk_store_ops local_ops = {local_put_open, local_put_write, local_put_close, local_get_open,
                                       local_get_read, local_get_close, local_list, local_remove};

static bk_store *store_open_local(const char *dir) {
    bk_store *s = zh_xcalloc(1, sizeof *s);
    s->ops = &local_ops;
    char abs[4096];
    if (dir[0] != '/' && getcwd(abs, sizeof abs)) s->root = xprintf("%s/%s", abs, dir);
    else s->root = zh_xstrdup(dir);
    size_t l = strlen(s->root);
    while (l > 1 && s->root[l - 1] == '/') s->root[--l] = 0;
    s->desc = xprintf("local:%s", s->root);
    return s;
}

static void store_free(bk_store *s) {
    if (!s) return;
    free(s->root);
    free(s->desc);
    free(s);
}

/* Whole small file (manifests) into memory. Returns 1, 0 (missing) or -1. */
static int store_get_all(bk_store *s, const char *rel, zh_buf *out, char **err) {
    void *r;
    uint64_t size;
    int rc = s->ops->get_open(s, rel, &r, &size, err);
    if (rc <= 0) return rc;
    char buf[65536];
    long k;
    while ((k = s->ops->get_read(r, buf, sizeof buf)) > 0) zh_buf_add(out, buf, (size_t)k);
    s->ops->get_close(r);
    if (k < 0) {
        *err = xprintf("%s/%s: read error", s->root, rel);
        return -1;
    }
    return 1;
}

static int store_put_all(bk_store *s, const char *rel, const void *p, size_t n, char **err) {
    void *w = s->ops->put_open(s, rel, err);
    if (!w) return -1;
    if (s->ops->put_write(w, p, n, err) != 0) {
        s->ops->put_close(w, false, err);
        return -1;
    }
    return s->ops->put_close(w, true, err);
}

/* sha256 and size of a stored file. Returns 1, 0 (missing) or -1. */
static int store_hash(bk_store *s, const char *rel, char hex[65], uint64_t *bytes, char **err) {
    void *r;
    uint64_t size;
    int rc = s->ops->get_open(s, rel, &r, &size, err);
    if (rc <= 0) return rc;
    zh_hash sha = {0};
    zh_hash_init(&sha, ZH_HASH_SHA256);
    char *buf = zh_xmalloc(1 << 20);
    long k;
    uint64_t n = 0;
    while ((k = s->ops->get_read(r, buf, 1 << 20)) > 0) {
        zh_hash_update(&sha, buf, (size_t)k);
        n += (uint64_t)k;
    }
    free(buf);
    s->ops->get_close(r);
    if (k < 0) {
        zh_hash_free(&sha);
        *err = xprintf("%s/%s: read error", s->root, rel);
        return -1;
    }
    zh_hash_hex(&sha, hex);
    *bytes = n;
    return 1;
}

/* The lock: one backup or prune at a time per folder. The file holds "pid name" for people;
 * whether it is held is the kernel's flock, which dies with its process. A pid cannot tell: a
 * killed backup's pid is reused, and after a container restart pids repeat, so a lock judged by
 * kill(pid, 0) could block every backup for good and show a dead backup as in progress. */
static int lock_fd = -1;

static void lock_read_holder(int fd, int *pid, char *holder, size_t n) {
    char line[256];
    ssize_t k = pread(fd, line, sizeof line - 1, 0);
    line[k > 0 ? k : 0] = 0;
    *pid = 0;
    holder[0] = 0;
    char name[200] = "";
    if (sscanf(line, "%d %199s", pid, name) < 1) *pid = 0;
    snprintf(holder, n, "%s", name);
}

static int lock_take(bk_store *s, const char *what, char **err) {
    zh_mkdirs(s->root, 0750);
    char *path = xprintf("%s/.zhost-backup.lock", s->root);
    for (int tries = 0; tries < 5; tries++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            *err = xprintf("%s: %s", path, strerror(errno));
            free(path);
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno, pid;
            char holder[200];
            lock_read_holder(fd, &pid, holder, sizeof holder);
            close(fd);
            if (e == EWOULDBLOCK)
                *err = xprintf("another backup command is running (pid %d, %s); lock %s", pid, holder, path);
            else
                *err = xprintf("%s: flock: %s", path, strerror(e));
            free(path);
            return -1;
        }
        /* The holder before us may have unlinked the file after we opened it: lock the name, not
         * an orphaned inode. */
        struct stat a, b;
        if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            continue;
        }
        int pid;
        char holder[200];
        lock_read_holder(fd, &pid, holder, sizeof holder);
        if (pid > 0) ZH_WARN("backup", "msg=\"taking over a stale lock\" file=%s pid=%d backup=%s", path, pid, holder);
        char line[256];
        int n = snprintf(line, sizeof line, "%d %s\n", (int)getpid(), what);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n) {
            *err = xprintf("cannot write the lock file %s: %s", path, strerror(errno));
            close(fd);
            free(path);
            return -1;
        }
        lock_fd = fd;
        free(path);
        return 0;
    }
    *err = xprintf("cannot take the lock %s", path);
    free(path);
    return -1;
}

static void lock_release(bk_store *s) {
    char *path = xprintf("%s/.zhost-backup.lock", s->root);
    unlink(path); /* before the close, so no one locks a file that is about to go */
    free(path);
    if (lock_fd >= 0) close(lock_fd);
    lock_fd = -1;
}

/* The backup being written right now (from a held lock), or an empty string. */
static void lock_holder(bk_store *s, char *name, size_t n) {
    name[0] = 0;
    char *path = xprintf("%s/.zhost-backup.lock", s->root);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        int pid;
        lock_read_holder(fd, &pid, name, n);
    }
    close(fd); /* also drops a shared lock we got */
}

/* ======================================================================================
 * ClickHouse access: statements with our own URL (database, compression), TSV results,
 * streaming a SELECT into a stored file and a stored file into an INSERT.
 * ====================================================================================== */

typedef struct bk_ctx {
    zh_host *h;
    bk_store *st;
    bool gzip;            /* ask the server for gzip'd dumps */
    double timeout_s;     /* per dump or load request */
    char *server_version;
} bk_ctx;

static char *bk_url(bk_ctx *c, const char *db, const char *query, bool compress) {
    zh_ch_state *st = c->h->ch;
    zh_buf u;
    zh_buf_init(&u);
    zh_buf_adds(&u, st->url);
    zh_buf_adds(&u, "?wait_end_of_query=1");
    if (db) {
        char *e = curl_easy_escape(NULL, db, 0);
        zh_buf_printf(&u, "&database=%s", e);
        curl_free(e);
    }
    if (compress) zh_buf_adds(&u, "&enable_http_compression=1");
    if (query) {
        char *e = curl_easy_escape(NULL, query, 0);
        zh_buf_printf(&u, "&query=%s", e);
        curl_free(e);
    }
    return u.data;
}

/* A request whose URL we choose: no database (the server's default) unless given, because the
 * configured database may not exist yet on a server being restored. */
static ch_req *bk_req(bk_ctx *c, const char *db, const char *url_query, const char *body, size_t len, bool compress,
                      bool *flag) {
    ch_req *r = ch_req_new(c->h, NULL, body, len, ch_req_sync_done, flag);
    char *u = bk_url(c, db, url_query, compress);
    curl_easy_setopt(r->x->easy, CURLOPT_URL, u);
    free(u);
    return r;
}

static int bk_exec(bk_ctx *c, const char *db, const char *sql, zh_buf *out, char **err) {
    bool flag = false;
    return ch_req_run_sync(bk_req(c, db, NULL, sql, strlen(sql), false, &flag), out, err);
}

typedef struct bk_rows {
    int n;
    int *ncols;
    char ***cells;
} bk_rows;

static void rows_free(bk_rows *r) {
    for (int i = 0; i < r->n; i++) {
        for (int j = 0; j < r->ncols[i]; j++) free(r->cells[i][j]);
        free(r->cells[i]);
    }
    free(r->cells);
    free(r->ncols);
    memset(r, 0, sizeof *r);
}

/* Runs a SELECT (FORMAT TabSeparated is appended) and splits the result. */
static int bk_query(bk_ctx *c, const char *sql, bk_rows *out, char **err) {
    memset(out, 0, sizeof *out);
    char *q = xprintf("%s FORMAT TabSeparated", sql);
    zh_buf body;
    zh_buf_init(&body);
    int rc = bk_exec(c, NULL, q, &body, err);
    free(q);
    if (rc != 0) {
        zh_buf_free(&body);
        return -1;
    }
    const char *p = body.data, *end = body.data + body.len;
    zh_buf f;
    zh_buf_init(&f);
    while (p && p < end) {
        out->cells = zh_xrealloc(out->cells, (size_t)(out->n + 1) * sizeof *out->cells);
        out->ncols = zh_xrealloc(out->ncols, (size_t)(out->n + 1) * sizeof *out->ncols);
        char **row = NULL;
        int nc = 0;
        bool eol = false;
        while (!eol) {
            p = zh_ch_tsv_field(p, end, &f, &eol);
            row = zh_xrealloc(row, (size_t)(nc + 1) * sizeof *row);
            row[nc++] = zh_xstrndup(f.data, f.len);
        }
        out->cells[out->n] = row;
        out->ncols[out->n] = nc;
        out->n++;
    }
    zh_buf_free(&f);
    zh_buf_free(&body);
    return 0;
}

static const char *cell(const bk_rows *r, int i, int j) { return i < r->n && j < r->ncols[i] ? r->cells[i][j] : ""; }

/* -- streaming a SELECT into a file -- */

typedef struct dump_ctx {
    bk_ctx *c;
    ch_req *r;
    const char *path;
    void *w;
    zh_hash sha;
    uint64_t bytes;
    double attempt;       /* started_at of the transfer attempt the writer belongs to */
    char *werr;
#ifdef ZH_HAVE_ZLIB
    z_stream z;
    int zstate;           /* 0 unknown, 1 inflating, 2 raw error body */
#endif
} dump_ctx;

static void dump_reset_error(dump_ctx *d) {
#ifdef ZH_HAVE_ZLIB
    if (d->zstate == 1) inflateEnd(&d->z);
    d->zstate = 0;
#else
    (void)d;
#endif
}

/* Error bodies come gzip'd like the data: inflate them into resp_body so that ch_req reads the
 * ClickHouse message (and so its retry decision sees the real error code). */
static void dump_error_body(dump_ctx *d, const char *p, size_t n) {
    zh_xfer *x = d->r->x;
    if (x->resp_body.len > 65536) return;
#ifdef ZH_HAVE_ZLIB
    if (d->zstate == 0) {
        if (n >= 2 && (unsigned char)p[0] == 0x1f && (unsigned char)p[1] == 0x8b) {
            memset(&d->z, 0, sizeof d->z);
            d->zstate = inflateInit2(&d->z, 16 + MAX_WBITS) == Z_OK ? 1 : 2;
        } else {
            d->zstate = 2;
        }
    }
    if (d->zstate == 1) {
        d->z.next_in = (Bytef *)p;
        d->z.avail_in = (uInt)n;
        char out[16384];
        while (d->z.avail_in) {
            d->z.next_out = (Bytef *)out;
            d->z.avail_out = sizeof out;
            int zr = inflate(&d->z, Z_NO_FLUSH);
            zh_buf_add(&x->resp_body, out, sizeof out - d->z.avail_out);
            if (zr != Z_OK) break;
        }
        return;
    }
#endif
    zh_buf_add(&x->resp_body, p, n);
}

static size_t dump_write(char *p, size_t size, size_t nm, void *ud) {
    dump_ctx *d = ud;
    size_t n = size * nm;
    zh_xfer *x = d->r->x;
    if (x->started_at != d->attempt) {
        /* a retry: start the file over */
        if (d->w) d->c->st->ops->put_close(d->w, false, &d->werr);
        d->w = NULL;
        zh_hash_init(&d->sha, ZH_HASH_SHA256);
        d->bytes = 0;
        dump_reset_error(d);
        d->attempt = x->started_at;
    }
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        dump_error_body(d, p, n);
        return n;
    }
    if (!d->w) {
        free(d->werr);
        d->werr = NULL;
        d->w = d->c->st->ops->put_open(d->c->st, d->path, &d->werr);
        if (!d->w) {
            d->r->max_attempts = d->r->attempt; /* a disk problem: retrying the query will not help */
            return 0;
        }
    }
    if (d->c->st->ops->put_write(d->w, p, n, &d->werr) != 0) {
        d->r->max_attempts = d->r->attempt;
        return 0;
    }
    zh_hash_update(&d->sha, p, n);
    d->bytes += n;
    return n;
}

/* Runs `sql` (a SELECT ... FORMAT Native) and stores its output at `path`. */
static int bk_dump(bk_ctx *c, const char *sql, const char *path, char sha_hex[65], uint64_t *bytes, char **err) {
    bool flag = false;
    dump_ctx d;
    memset(&d, 0, sizeof d);
    d.c = c;
    d.path = path;
    d.attempt = -1;
    zh_hash_init(&d.sha, ZH_HASH_SHA256);
    ch_req *r = bk_req(c, NULL, NULL, sql, strlen(sql), c->gzip, &flag);
    d.r = r;
    CURL *e = r->x->easy;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dump_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &d);
    /* Keep the server's gzip as it is: curl must neither ask for nor undo an encoding itself. */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    if (c->gzip) zh_xfer_add_header(r->x, "Accept-Encoding: gzip");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000));
    ch_req_start(r);
    ch_req_wait(r);
    dump_reset_error(&d);
    int rc = 0;
    if (!flag || !r->ok || d.werr) {
        if (d.werr) *err = d.werr, d.werr = NULL;
        else *err = zh_xstrdup(r->error ? r->error : "ClickHouse request did not finish");
        if (d.w) c->st->ops->put_close(d.w, false, &d.werr);
        rc = -1;
    } else {
        if (!d.w) d.w = c->st->ops->put_open(c->st, path, err); /* an empty result */
        if (!d.w || c->st->ops->put_close(d.w, true, err) != 0) rc = -1;
        zh_hash_hex(&d.sha, sha_hex);
        *bytes = d.bytes;
    }
    zh_hash_free(&d.sha);
    free(d.werr);
    ch_req_free(r);
    return rc;
}

/* -- streaming a file into an INSERT -- */

typedef struct load_ctx {
    bk_store *st;
    void *rf;
    zh_hash sha;
    uint64_t bytes;
    bool failed;
} load_ctx;

static size_t load_read(char *buf, size_t size, size_t nm, void *ud) {
    load_ctx *l = ud;
    long k = l->st->ops->get_read(l->rf, buf, size * nm);
    if (k < 0) {
        l->failed = true;
        return CURL_READFUNC_ABORT;
    }
    zh_hash_update(&l->sha, buf, (size_t)k);
    l->bytes += (uint64_t)k;
    return (size_t)k;
}

/* INSERT INTO target FORMAT Native with the stored file as the body; the file's sha256 is
 * computed on the way and returned. */
static int bk_load(bk_ctx *c, const char *target, const char *path, char sha_hex[65], char **err) {
    load_ctx l;
    memset(&l, 0, sizeof l);
    l.st = c->st;
    uint64_t size = 0;
    int g = c->st->ops->get_open(c->st, path, &l.rf, &size, err);
    if (g <= 0) {
        if (g == 0) *err = xprintf("%s/%s: missing", c->st->root, path);
        return -1;
    }
    zh_hash_init(&l.sha, ZH_HASH_SHA256);
    char *q = xprintf("INSERT INTO %s FORMAT Native", target);
    bool flag = false;
    ch_req *r = bk_req(c, NULL, q, "", 0, false, &flag);
    free(q);
    /* An INSERT is not retried: a retry after a partial insert would duplicate rows. */
    r->max_attempts = 1;
    CURL *e = r->x->easy;
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, load_read);
    curl_easy_setopt(e, CURLOPT_READDATA, &l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)size);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000));
    /* A reused keep-alive connection may be reset under us, and we cannot re-send. */
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    size_t pl = strlen(path);
    if (pl > 3 && !strcmp(path + pl - 3, ".gz")) zh_xfer_add_header(r->x, "Content-Encoding: gzip");
    ch_req_start(r);
    ch_req_wait(r);
    int rc = 0;
    if (l.failed) {
        *err = xprintf("%s/%s: read error", c->st->root, path);
        rc = -1;
    } else if (!flag || !r->ok) {
        *err = zh_xstrdup(r->error ? r->error : "ClickHouse request did not finish");
        rc = -1;
    } else {
        zh_hash_hex(&l.sha, sha_hex);
    }
    zh_hash_free(&l.sha);
    c->st->ops->get_close(l.rf);
    ch_req_free(r);
    return rc;
}

/* ======================================================================================
 * The manifest
 * ====================================================================================== */

typedef struct bk_part {
    char *id;             /* partition id (system.parts.partition_id), "all" when unpartitioned */
    uint64_t rows;
    char *checksum;       /* groupBitXor(cityHash64(toString(tuple(*)))) as decimal text, "" when unknown */
    char *sig;            /* short hash of the active part names: equal means unchanged */
    char *file;           /* path inside the backup that holds it */
    char *in;             /* name of that backup (this one or the base) */
} bk_part;

typedef struct bk_table {
    char *role;           /* "zakaz" or "bi": which database of the pair */
    char *database;       /* its name on the source server */
    char *name;
    char *engine;
    char *kind;           /* "table", "view" (View, MaterializedView), "inner" (an MV's storage) */
    char *owner;          /* for "inner": the materialized view */
    char *create;         /* SHOW CREATE TABLE; "" for inner tables (the view creates them) */
    char *schema_file;
    bool partitioned;     /* a MergeTree: dumped per partition */
    bool has_data;
    bk_part *parts;
    int nparts;
} bk_table;

typedef struct bk_fileent {
    char *path;
    uint64_t bytes;
    char sha256[65];
} bk_fileent;

typedef struct bk_manifest {
    char *name, *mode, *base, *server_version, *compression, *target;
    double created, finished;
    char *db[2];          /* source names of the zakaz and bi databases */
    bool db_exists[2];
    bk_table *tables;
    int ntables;
    bk_fileent *files;
    int nfiles;
    uint64_t bytes, rows, dumped, reused;
} bk_manifest;

static const char *const roles[2] = {"zakaz", "bi"};

static int role_index(const char *role) { return role && !strcmp(role, "bi") ? 1 : 0; }

static void part_free(bk_part *p) {
    free(p->id);
    free(p->checksum);
    free(p->sig);
    free(p->file);
    free(p->in);
}

static void table_free(bk_table *t) {
    free(t->role);
    free(t->database);
    free(t->name);
    free(t->engine);
    free(t->kind);
    free(t->owner);
    free(t->create);
    free(t->schema_file);
    for (int i = 0; i < t->nparts; i++) part_free(&t->parts[i]);
    free(t->parts);
}

static void manifest_free(bk_manifest *m) {
    if (!m) return;
    free(m->name);
    free(m->mode);
    free(m->base);
    free(m->server_version);
    free(m->compression);
    free(m->target);
    free(m->db[0]);
    free(m->db[1]);
    for (int i = 0; i < m->ntables; i++) table_free(&m->tables[i]);
    free(m->tables);
    for (int i = 0; i < m->nfiles; i++) free(m->files[i].path);
    free(m->files);
    free(m);
}

static bk_table *manifest_add_table(bk_manifest *m) {
    m->tables = zh_xrealloc(m->tables, (size_t)(m->ntables + 1) * sizeof *m->tables);
    bk_table *t = &m->tables[m->ntables++];
    memset(t, 0, sizeof *t);
    return t;
}

static bk_part *table_add_part(bk_table *t) {
    t->parts = zh_xrealloc(t->parts, (size_t)(t->nparts + 1) * sizeof *t->parts);
    bk_part *p = &t->parts[t->nparts++];
    memset(p, 0, sizeof *p);
    return p;
}

/* An incremental's partition that is the base's: recorded as the base's file, not dumped again. */
static void table_reuse_part(bk_table *t, const bk_part *bp, const char *pid, const char *sig) {
    bk_part *p = table_add_part(t);
    p->id = zh_xstrdup(pid);
    p->rows = bp->rows;
    p->checksum = zh_xstrdup(bp->checksum);
    p->sig = zh_xstrdup(sig);
    p->file = zh_xstrdup(bp->file);
    p->in = zh_xstrdup(bp->in);
}

static void manifest_add_file(bk_manifest *m, const char *path, uint64_t bytes, const char *sha) {
    m->files = zh_xrealloc(m->files, (size_t)(m->nfiles + 1) * sizeof *m->files);
    bk_fileent *f = &m->files[m->nfiles++];
    f->path = zh_xstrdup(path);
    f->bytes = bytes;
    snprintf(f->sha256, sizeof f->sha256, "%s", sha);
    m->bytes += bytes;
}

static const bk_fileent *manifest_file(const bk_manifest *m, const char *path) {
    for (int i = 0; i < m->nfiles; i++)
        if (!strcmp(m->files[i].path, path)) return &m->files[i];
    return NULL;
}

static uint64_t table_rows(const bk_table *t) {
    uint64_t n = 0;
    for (int i = 0; i < t->nparts; i++) n += t->parts[i].rows;
    return n;
}

/* The table's checksum is the XOR of its partitions' (groupBitXor is a XOR over rows).
 * Returns false when some partition's checksum is unknown. */
static bool table_checksum(const bk_table *t, uint64_t *out) {
    uint64_t x = 0;
    for (int i = 0; i < t->nparts; i++) {
        if (!t->parts[i].checksum || !t->parts[i].checksum[0]) return false;
        x ^= strtoull(t->parts[i].checksum, NULL, 10);
    }
    *out = x;
    return true;
}

static void manifest_json(const bk_manifest *m, zh_buf *b) {
    char ts[40];
    zh_buf_adds(b, "{\n  \"format\": \"zhost-backup/1\",\n  \"name\": ");
    zh_buf_json_str(b, m->name);
    zh_buf_adds(b, ",\n  \"mode\": ");
    zh_buf_json_str(b, m->mode);
    zh_buf_adds(b, ",\n  \"base\": ");
    if (m->base) zh_buf_json_str(b, m->base);
    else zh_buf_adds(b, "null");
    iso_utc(m->created, ts, sizeof ts);
    zh_buf_printf(b, ",\n  \"created_at\": \"%s\",\n  \"created_epoch\": %.3f", ts, m->created);
    iso_utc(m->finished, ts, sizeof ts);
    zh_buf_printf(b, ",\n  \"finished_at\": \"%s\",\n  \"server_version\": ", ts);
    zh_buf_json_str(b, m->server_version);
    zh_buf_adds(b, ",\n  \"compression\": ");
    zh_buf_json_str(b, m->compression);
    zh_buf_adds(b, ",\n  \"target\": ");
    zh_buf_json_str(b, m->target);
    zh_buf_adds(b, ",\n  \"databases\": [");
    for (int i = 0; i < 2; i++) {
        zh_buf_printf(b, "%s{\"role\": \"%s\", \"name\": ", i ? ", " : "", roles[i]);
        zh_buf_json_str(b, m->db[i]);
        zh_buf_printf(b, ", \"exists\": %s}", m->db_exists[i] ? "true" : "false");
    }
    zh_buf_adds(b, "],\n  \"tables\": [");
    for (int i = 0; i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        zh_buf_adds(b, i ? ",\n    {" : "\n    {");
        zh_buf_adds(b, "\"role\": ");
        zh_buf_json_str(b, t->role);
        zh_buf_adds(b, ", \"database\": ");
        zh_buf_json_str(b, t->database);
        zh_buf_adds(b, ", \"name\": ");
        zh_buf_json_str(b, t->name);
        zh_buf_adds(b, ", \"engine\": ");
        zh_buf_json_str(b, t->engine);
        zh_buf_adds(b, ", \"kind\": ");
        zh_buf_json_str(b, t->kind);
        if (t->owner) {
            zh_buf_adds(b, ", \"owner\": ");
            zh_buf_json_str(b, t->owner);
        }
        zh_buf_printf(b, ", \"partitioned\": %s, \"has_data\": %s", t->partitioned ? "true" : "false",
                      t->has_data ? "true" : "false");
        if (t->has_data) {
            uint64_t x;
            zh_buf_printf(b, ", \"rows\": %llu, \"checksum\": ", (unsigned long long)table_rows(t));
            if (table_checksum(t, &x)) zh_buf_printf(b, "\"%llu\"", (unsigned long long)x);
            else zh_buf_adds(b, "\"\"");
        }
        zh_buf_adds(b, ",\n     \"schema_file\": ");
        zh_buf_json_str(b, t->schema_file ? t->schema_file : "");
        zh_buf_adds(b, ",\n     \"create\": ");
        zh_buf_json_str(b, t->create);
        if (t->has_data) {
            zh_buf_adds(b, ",\n     \"partitions\": [");
            for (int k = 0; k < t->nparts; k++) {
                const bk_part *p = &t->parts[k];
                zh_buf_adds(b, k ? ",\n       {\"id\": " : "\n       {\"id\": ");
                zh_buf_json_str(b, p->id);
                zh_buf_printf(b, ", \"rows\": %llu, \"checksum\": ", (unsigned long long)p->rows);
                zh_buf_json_str(b, p->checksum);
                zh_buf_adds(b, ", \"sig\": ");
                zh_buf_json_str(b, p->sig ? p->sig : "");
                zh_buf_adds(b, ", \"in\": ");
                zh_buf_json_str(b, p->in);
                zh_buf_adds(b, ", \"file\": ");
                zh_buf_json_str(b, p->file);
                zh_buf_addc(b, '}');
            }
            zh_buf_adds(b, t->nparts ? "\n     ]" : "]");
        }
        zh_buf_addc(b, '}');
    }
    zh_buf_adds(b, "\n  ],\n  \"files\": [");
    for (int i = 0; i < m->nfiles; i++) {
        zh_buf_adds(b, i ? ",\n    {\"path\": " : "\n    {\"path\": ");
        zh_buf_json_str(b, m->files[i].path);
        zh_buf_printf(b, ", \"bytes\": %llu, \"sha256\": \"%s\"}", (unsigned long long)m->files[i].bytes, m->files[i].sha256);
    }
    zh_buf_printf(b,
                  "\n  ],\n  \"totals\": {\"bytes\": %llu, \"rows\": %llu, \"files\": %d, \"partitions_dumped\": %llu, "
                  "\"partitions_from_base\": %llu}\n}\n",
                  (unsigned long long)m->bytes, (unsigned long long)m->rows, m->nfiles, (unsigned long long)m->dumped,
                  (unsigned long long)m->reused);
}

static char *dup_or_empty(const char *s) { return zh_xstrdup(s ? s : ""); }

static bk_manifest *manifest_from_json(const zh_json *j, char **err) {
    if (!j || j->t != ZH_JSON_OBJ) {
        *err = zh_xstrdup("not a JSON object");
        return NULL;
    }
    const char *fmt = zh_json_str(j, "format");
    if (!fmt || strncmp(fmt, "zhost-backup/", 13) != 0) {
        *err = zh_xstrdup("not a zhost backup manifest (no \"format\": \"zhost-backup/1\")");
        return NULL;
    }
    const char *name = zh_json_str(j, "name"), *mode = zh_json_str(j, "mode");
    if (!name || !mode || (strcmp(mode, "full") && strcmp(mode, "incr"))) {
        *err = zh_xstrdup("manifest without a name or a mode full|incr");
        return NULL;
    }
    bk_manifest *m = zh_xcalloc(1, sizeof *m);
    m->name = zh_xstrdup(name);
    m->mode = zh_xstrdup(mode);
    m->base = zh_json_str(j, "base") ? zh_xstrdup(zh_json_str(j, "base")) : NULL;
    m->server_version = dup_or_empty(zh_json_str(j, "server_version"));
    m->compression = dup_or_empty(zh_json_str(j, "compression"));
    m->target = dup_or_empty(zh_json_str(j, "target"));
    m->created = parse_iso_utc(zh_json_str(j, "created_at"));
    m->finished = parse_iso_utc(zh_json_str(j, "finished_at"));
    m->db[0] = zh_xstrdup("zakaz");
    m->db[1] = zh_xstrdup("bi");
    const zh_json *dbs = zh_json_get(j, "databases");
    for (int i = 0; dbs && dbs->t == ZH_JSON_ARR && i < dbs->n; i++) {
        int r = role_index(zh_json_str(dbs->items[i], "role"));
        const char *n = zh_json_str(dbs->items[i], "name");
        if (n) {
            free(m->db[r]);
            m->db[r] = zh_xstrdup(n);
        }
        const zh_json *ex = zh_json_get(dbs->items[i], "exists");
        m->db_exists[r] = !ex || ex->t != ZH_JSON_BOOL || ex->b;
    }
    const zh_json *tables = zh_json_get(j, "tables");
    for (int i = 0; tables && tables->t == ZH_JSON_ARR && i < tables->n; i++) {
        const zh_json *tj = tables->items[i];
        if (!zh_json_str(tj, "name") || !zh_json_str(tj, "kind")) {
            *err = xprintf("table %d of the manifest has no name or kind", i);
            manifest_free(m);
            return NULL;
        }
        bk_table *t = manifest_add_table(m);
        t->role = zh_xstrdup(roles[role_index(zh_json_str(tj, "role"))]);
        t->database = dup_or_empty(zh_json_str(tj, "database"));
        t->name = zh_xstrdup(zh_json_str(tj, "name"));
        t->engine = dup_or_empty(zh_json_str(tj, "engine"));
        t->kind = zh_xstrdup(zh_json_str(tj, "kind"));
        t->owner = zh_json_str(tj, "owner") ? zh_xstrdup(zh_json_str(tj, "owner")) : NULL;
        t->create = dup_or_empty(zh_json_str(tj, "create"));
        t->schema_file = zh_json_str(tj, "schema_file") ? zh_xstrdup(zh_json_str(tj, "schema_file")) : NULL;
        const zh_json *v = zh_json_get(tj, "partitioned");
        t->partitioned = v && v->t == ZH_JSON_BOOL && v->b;
        v = zh_json_get(tj, "has_data");
        t->has_data = v && v->t == ZH_JSON_BOOL && v->b;
        const zh_json *parts = zh_json_get(tj, "partitions");
        for (int k = 0; parts && parts->t == ZH_JSON_ARR && k < parts->n; k++) {
            const zh_json *pj = parts->items[k];
            if (!zh_json_str(pj, "id") || !zh_json_str(pj, "file") || !zh_json_str(pj, "in")) {
                *err = xprintf("partition %d of %s has no id, file or in", k, t->name);
                manifest_free(m);
                return NULL;
            }
            bk_part *p = table_add_part(t);
            p->id = zh_xstrdup(zh_json_str(pj, "id"));
            p->rows = zh_json_u64(pj, "rows", 0);
            p->checksum = dup_or_empty(zh_json_str(pj, "checksum"));
            p->sig = dup_or_empty(zh_json_str(pj, "sig"));
            p->file = zh_xstrdup(zh_json_str(pj, "file"));
            p->in = zh_xstrdup(zh_json_str(pj, "in"));
        }
        m->rows += table_rows(t);
    }
    const zh_json *files = zh_json_get(j, "files");
    for (int i = 0; files && files->t == ZH_JSON_ARR && i < files->n; i++) {
        const char *path = zh_json_str(files->items[i], "path"), *sha = zh_json_str(files->items[i], "sha256");
        if (!path || !sha || strlen(sha) != 64) {
            *err = xprintf("file %d of the manifest has no path or sha256", i);
            manifest_free(m);
            return NULL;
        }
        manifest_add_file(m, path, zh_json_u64(files->items[i], "bytes", 0), sha);
    }
    return m;
}

/* Reads <name>/manifest.json. Returns 1, 0 (no manifest) or -1 (*err). */
static int manifest_load(bk_store *st, const char *name, bk_manifest **out, char **err) {
    *out = NULL;
    char *rel = xprintf("%s/manifest.json", name);
    zh_buf b;
    zh_buf_init(&b);
    int rc = store_get_all(st, rel, &b, err);
    if (rc == 1) {
        char *perr = NULL;
        zh_json *j = zh_json_parse(b.data ? b.data : "", b.len, &perr);
        if (!j) {
            *err = xprintf("%s: %s", rel, perr);
            free(perr);
            rc = -1;
        } else {
            bk_manifest *m = manifest_from_json(j, &perr);
            zh_json_free(j);
            if (!m) {
                *err = xprintf("%s: %s", rel, perr);
                free(perr);
                rc = -1;
            } else if (strcmp(m->name, name) != 0) {
                *err = xprintf("%s: names backup %s, not %s", rel, m->name, name);
                manifest_free(m);
                rc = -1;
            } else {
                *out = m;
            }
        }
    }
    zh_buf_free(&b);
    free(rel);
    return rc;
}

/* Every backup folder name under the root, oldest first (names sort by time). */
static int list_backups(bk_store *st, char ***names) {
    char **all;
    int n = st->ops->list(st, "", &all);
    *names = NULL;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (zh_backup_parse_name(all[i], NULL, NULL)) {
            *names = zh_xrealloc(*names, (size_t)(k + 1) * sizeof **names);
            (*names)[k++] = all[i];
        } else {
            free(all[i]);
        }
    }
    free(all);
    return k;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* ======================================================================================
 * Run rows: meta_job_runs_raw (job backup, backup_verify, ...) and backup_runs, each only
 * when the table exists (a missing run table must not fail a backup, nor spool rows).
 * ====================================================================================== */

typedef struct bk_rec {
    bool checked, job_runs, backup_runs;
    char **cols;          /* backup_runs columns we may send */
    int ncols;
} bk_rec;

static void rec_check(bk_ctx *c, bk_rec *rc) {
    if (rc->checked) return;
    rc->checked = true;
    zh_ch_state *st = c->h->ch;
    zh_buf q;
    zh_buf_init(&q);
    zh_buf_adds(&q, "SELECT name FROM system.tables WHERE database = ");
    add_literal(&q, st->database);
    zh_buf_adds(&q, " AND name IN ('meta_job_runs_raw', 'backup_runs')");
    bk_rows r;
    char *err = NULL;
    if (bk_query(c, q.data, &r, &err) != 0) {
        ZH_WARN("backup", "msg=\"cannot check for the run tables; runs are not recorded\" error=\"%s\"", err);
        free(err);
        zh_buf_free(&q);
        return;
    }
    for (int i = 0; i < r.n; i++) {
        if (!strcmp(cell(&r, i, 0), "meta_job_runs_raw")) rc->job_runs = true;
        if (!strcmp(cell(&r, i, 0), "backup_runs")) rc->backup_runs = true;
    }
    rows_free(&r);
    if (rc->backup_runs) {
        q.len = 0;
        zh_buf_adds(&q, "SELECT name FROM system.columns WHERE database = ");
        add_literal(&q, st->database);
        zh_buf_adds(&q, " AND table = 'backup_runs' AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')");
        if (bk_query(c, q.data, &r, &err) == 0) {
            for (int i = 0; i < r.n; i++) {
                rc->cols = zh_xrealloc(rc->cols, (size_t)(rc->ncols + 1) * sizeof *rc->cols);
                rc->cols[rc->ncols++] = zh_xstrdup(cell(&r, i, 0));
            }
            rows_free(&r);
        } else {
            free(err);
            rc->backup_runs = false;
        }
    }
    zh_buf_free(&q);
}

static void rec_free(bk_rec *rc) {
    for (int i = 0; i < rc->ncols; i++) free(rc->cols[i]);
    free(rc->cols);
}

static void rec_job_done(void *ud, const char *err) {
    if (err) ZH_WARN("backup", "msg=\"run row not written\" error=\"%s\"", err);
    *(bool *)ud = true;
}

static void record_job(bk_ctx *c, bk_rec *rc, const char *job, const char *run_id, const char *status, double started,
                       double finished, uint64_t rows, const char *message, const char *metrics) {
    rec_check(c, rc);
    if (!rc->job_runs) return;
    zh_run_record rec = {.job = job, .run_id = run_id, .status = status, .message = message ? message : "",
                         .metrics_json = metrics ? metrics : "{}", .started_at = started, .finished_at = finished,
                         .rows = rows};
    bool done = false;
    zh_ch_record_run(c->h, &rec, rec_job_done, &done);
    while (!done && uv_run(c->h->loop, UV_RUN_ONCE)) {
    }
}

static bool rec_has(const bk_rec *rc, const char *col) {
    for (int i = 0; i < rc->ncols; i++)
        if (!strcmp(rc->cols[i], col)) return true;
    return false;
}

typedef struct bk_runrow {
    const char *name, *mode, *base, *target, *status, *details, *error;
    double ts;
    uint64_t bytes, duration_ms;
} bk_runrow;

static void record_backup_run(bk_ctx *c, bk_rec *rc, const bk_runrow *r) {
    rec_check(c, rc);
    if (!rc->backup_runs) return;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b, "INSERT INTO ");
    char *qt = qualified(c->h->ch->database, "backup_runs");
    zh_buf_adds(&b, qt);
    free(qt);
    zh_buf_adds(&b, " FORMAT JSONEachRow\n{");
    int n = 0;
#define COL_S(col, v)                                          \
    if (rec_has(rc, col)) {                                    \
        zh_buf_printf(&b, "%s\"%s\":", n++ ? "," : "", col);   \
        zh_buf_json_str(&b, v);                                       \
    }
#define COL_N(col, v)                                                                        \
    if (rec_has(rc, col)) zh_buf_printf(&b, "%s\"%s\":%llu", n++ ? "," : "", col, (unsigned long long)(v));
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)r->ts);
    COL_S("ts", ts);
    COL_S("backup_name", r->name);
    COL_S("mode", r->mode);
    COL_S("base_backup", r->base);
    COL_S("target", r->target);
    COL_S("status", r->status);
    COL_N("bytes", r->bytes);
    COL_N("duration_ms", r->duration_ms);
    COL_S("details", r->details ? r->details : "{}");
    COL_S("error_msg", r->error);
    COL_N("_ver", (uint64_t)(zh_now_wall() * 1000));
#undef COL_S
#undef COL_N
    zh_buf_adds(&b, "}\n");
    char *err = NULL;
    if (bk_exec(c, NULL, b.data, NULL, &err) != 0) {
        ZH_WARN("backup", "msg=\"backup_runs row not written\" backup=%s status=%s error=\"%s\"", r->name, r->status, err);
        free(err);
    }
    zh_buf_free(&b);
}

/* ======================================================================================
 * zhost backup full|incr
 * ====================================================================================== */

static bool engine_is_view(const char *e) { return strstr(e, "View") != NULL; }
static bool engine_is_mergetree(const char *e) { return strstr(e, "MergeTree") != NULL; }
static bool engine_has_data(const char *e) {
    return engine_is_mergetree(e) || !strcmp(e, "Log") || !strcmp(e, "TinyLog") || !strcmp(e, "StripeLog") ||
           !strcmp(e, "Memory");
}

/* Whether `text` mentions `name` as a whole identifier. */
static bool mentions(const char *text, const char *name) {
    size_t n = strlen(name);
    if (!n) return false;
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        bool before = p == text || !ident_char(p[-1]);
        bool after = !ident_char(p[n]);
        if (before && after) return true;
    }
    return false;
}

/* Tables first (by role, then name), then views so that each comes after the views it reads
 * (Kahn's order over name mentions; a cycle from a false mention falls back to name order),
 * then MV storage. */
static void order_tables(bk_manifest *m) {
    int n = m->ntables;
    bk_table *out = zh_xcalloc((size_t)n + 1, sizeof *out);
    bool *used = zh_xcalloc((size_t)n + 1, sizeof *used);
    int k = 0;
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < n; i++)
            if (!used[i] && !strcmp(m->tables[i].kind, "table") && role_index(m->tables[i].role) == r) out[k++] = m->tables[i], used[i] = true;
    for (;;) {
        int pick = -1, left = 0;
        for (int i = 0; i < n && pick < 0; i++) {
            if (used[i] || strcmp(m->tables[i].kind, "view")) continue;
            left++;
            bool ready = true;
            for (int j = 0; j < n && ready; j++)
                if (j != i && !used[j] && !strcmp(m->tables[j].kind, "view") && mentions(m->tables[i].create, m->tables[j].name))
                    ready = false;
            if (ready) pick = i;
        }
        if (pick < 0 && left) {
            for (int i = 0; i < n && pick < 0; i++)
                if (!used[i] && !strcmp(m->tables[i].kind, "view")) pick = i;
        }
        if (pick < 0) break;
        out[k++] = m->tables[pick];
        used[pick] = true;
    }
    for (int i = 0; i < n; i++)
        if (!used[i]) out[k++] = m->tables[i];
    memcpy(m->tables, out, (size_t)n * sizeof *out);
    free(out);
    free(used);
}

static const bk_part *find_part(const bk_manifest *m, const char *role, const char *table, const char *id) {
    if (!m) return NULL;
    for (int i = 0; i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (strcmp(t->role, role) || strcmp(t->name, table)) continue;
        for (int k = 0; k < t->nparts; k++)
            if (!strcmp(t->parts[k].id, id)) return &t->parts[k];
    }
    return NULL;
}

typedef struct pstats {
    uint64_t rows;
    char checksum[32];
} pstats;

/* Row count and content checksum of one partition (or the whole table when pid is NULL). */
static int part_stats(bk_ctx *c, const char *qt, const char *pid, bool *no_checksum, pstats *out, char **err) {
    zh_buf q;
    zh_buf_init(&q);
    for (int attempt = 0; attempt < 2; attempt++) {
        q.len = 0;
        if (*no_checksum) zh_buf_printf(&q, "SELECT toString(count()), '' FROM %s", qt);
        else zh_buf_printf(&q, "SELECT toString(count()), toString(groupBitXor(cityHash64(toString(tuple(*))))) FROM %s", qt);
        if (pid) {
            zh_buf_adds(&q, " WHERE _partition_id = ");
            add_literal(&q, pid);
        }
        bk_rows r;
        char *e = NULL;
        if (bk_query(c, q.data, &r, &e) == 0) {
            out->rows = strtoull(cell(&r, 0, 0), NULL, 10);
            snprintf(out->checksum, sizeof out->checksum, "%s", cell(&r, 0, 1));
            rows_free(&r);
            zh_buf_free(&q);
            return 0;
        }
        if (*no_checksum) {
            *err = e;
            break;
        }
        /* Some column types cannot be turned into text (AggregateFunction states): count only. */
        ZH_WARN("backup", "msg=\"no content checksum for this table; rows are counted only\" table=%s error=\"%s\"", qt, e);
        free(e);
        *no_checksum = true;
    }
    zh_buf_free(&q);
    return -1;
}

typedef struct bk_run_stats {
    uint64_t bytes;
    int tables;
} bk_run_stats;

static int backup_table_data(bk_ctx *c, bk_manifest *m, const bk_manifest *base, bk_table *t, char **err) {
    char *qt = qualified(t->database, t->name);
    char *fname = zh_backup_file_name(t->name);
    bk_rows parts;
    memset(&parts, 0, sizeof parts);
    int rc = 0;
    if (t->partitioned) {
        zh_buf q;
        zh_buf_init(&q);
        zh_buf_adds(&q, "SELECT partition_id, arrayStringConcat(arraySort(groupArray(name)), ','), toString(sum(rows)) "
                        "FROM system.parts WHERE active AND database = ");
        add_literal(&q, t->database);
        zh_buf_adds(&q, " AND table = ");
        add_literal(&q, t->name);
        zh_buf_adds(&q, " GROUP BY partition_id ORDER BY partition_id");
        rc = bk_query(c, q.data, &parts, err);
        zh_buf_free(&q);
    }
    int nparts = t->partitioned ? parts.n : 1;
    bool no_checksum = false;
    for (int i = 0; rc == 0 && i < nparts; i++) {
        const char *pid = t->partitioned ? cell(&parts, i, 0) : "all";
        char sig[65] = "";
        if (t->partitioned) {
            zh_hash_hex_of(ZH_HASH_SHA256, cell(&parts, i, 1), strlen(cell(&parts, i, 1)), sig);
            sig[16] = 0;
        }
        const bk_part *bp = find_part(base, t->role, t->name, pid);
        if (bp && sig[0] && !strcmp(bp->sig, sig)) {
            /* the same parts as in the base: unchanged without reading a row */
            table_reuse_part(t, bp, pid, sig);
            m->reused++;
            continue;
        }
        const char *where_pid = t->partitioned ? pid : NULL;
        pstats before;
        if ((rc = part_stats(c, qt, where_pid, &no_checksum, &before, err)) != 0) break;
        if (before.rows == 0) continue;
        if (bp && bp->rows == before.rows && before.checksum[0] && !strcmp(bp->checksum, before.checksum)) {
            /* merged or rewritten into other parts, same rows */
            table_reuse_part(t, bp, pid, sig);
            m->reused++;
            continue;
        }
        char *fpid = zh_backup_file_name(pid);
        char *file = xprintf("data/%s/%s/%s.native%s", t->role, fname, fpid, c->gzip ? ".gz" : "");
        char *rel = xprintf("%s/%s", m->name, file);
        free(fpid);
        zh_buf q;
        zh_buf_init(&q);
        zh_buf_printf(&q, "SELECT * FROM %s", qt);
        if (where_pid) {
            zh_buf_adds(&q, " WHERE _partition_id = ");
            add_literal(&q, where_pid);
        }
        zh_buf_adds(&q, " FORMAT Native");
        char sha[65];
        uint64_t bytes = 0;
        pstats after;
        bool stable = false;
        /* A partition that other jobs write to (the run log at 02:30, when qtickets also runs; merges
         * of a ReplacingMergeTree folding a run's rows) is dumped again until one dump saw it still:
         * up to DUMP_ATTEMPTS times, waiting longer each time (about 16 s in all), since such
         * writes come in bursts. */
        for (int attempt = 1; attempt <= DUMP_ATTEMPTS && rc == 0; attempt++) {
            if ((rc = bk_dump(c, q.data, rel, sha, &bytes, err)) != 0) break;
            if ((rc = part_stats(c, qt, where_pid, &no_checksum, &after, err)) != 0) break;
            if (after.rows == before.rows && !strcmp(after.checksum, before.checksum)) {
                stable = true;
                break;
            }
            ZH_WARN("backup", "msg=\"partition changed during its dump; dumping again\" table=%s partition=%s attempt=%d",
                    qt, pid, attempt);
            before = after;
            if (attempt < DUMP_ATTEMPTS) usleep(attempt < 6 ? 300000u * (unsigned)attempt : 3000000u);
        }
        zh_buf_free(&q);
        if (rc == 0 && !stable) {
            *err = xprintf("partition %s of %s kept changing during %d dumps", pid, qt, DUMP_ATTEMPTS);
            rc = -1;
        }
        if (rc == 0) {
            bk_part *p = table_add_part(t);
            p->id = zh_xstrdup(pid);
            p->rows = after.rows;
            p->checksum = zh_xstrdup(after.checksum);
            p->sig = zh_xstrdup(sig);
            p->file = zh_xstrdup(file);
            p->in = zh_xstrdup(m->name);
            manifest_add_file(m, file, bytes, sha);
            m->dumped++;
            ZH_DEBUG("backup", "msg=\"partition dumped\" table=%s partition=%s rows=%llu bytes=%llu", qt, pid,
                     (unsigned long long)after.rows, (unsigned long long)bytes);
        }
        free(file);
        free(rel);
    }
    rows_free(&parts);
    if (rc == 0) m->rows += table_rows(t);
    free(qt);
    free(fname);
    return rc;
}

static char *server_version(bk_ctx *c, char **err) {
    bk_rows r;
    if (bk_query(c, "SELECT version()", &r, err) != 0) return NULL;
    char *v = zh_xstrdup(cell(&r, 0, 0));
    rows_free(&r);
    return v;
}

/* Whether two servers write a table's rows as the same text, which the content checksum hashes.
 * 21.9 dropped the trailing zeros of Decimal text, toString included (1.50 -> 1.5; ClickHouse
 * PR #27680, "Backward Incompatible Change"), so a checksum taken on one side of it does not
 * match the same Decimal rows on the other. Float text is left out as well: its printing changed
 * between 18.16 and current releases in ways not checked here (no current server to compare).
 * An unknown version is taken as the same. */
static int text_generation(const char *v) {
    int major = 0, minor = 0;
    if (!v || sscanf(v, "%d.%d", &major, &minor) != 2) return -1;
    return major > 21 || (major == 21 && minor >= 9);
}

bool zh_backup_same_row_text(const char *v1, const char *v2, const char *create) {
    int g1 = text_generation(v1), g2 = text_generation(v2);
    if (g1 < 0 || g2 < 0 || g1 == g2) return true;
    return !create || (!strstr(create, "Decimal") && !strstr(create, "Float"));
}

/* Newest full backup with a readable manifest, or NULL. */
static bk_manifest *newest_full(bk_store *st) {
    char **names;
    int n = list_backups(st, &names);
    bk_manifest *found = NULL;
    for (int i = n - 1; i >= 0 && !found; i--) {
        bool full;
        zh_backup_parse_name(names[i], NULL, &full);
        if (!full) continue;
        char *err = NULL;
        if (manifest_load(st, names[i], &found, &err) < 0) {
            ZH_WARN("backup", "msg=\"skipping a full backup with a bad manifest\" backup=%s error=\"%s\"", names[i], err);
            free(err);
        }
    }
    free_names(names, n);
    return found;
}

/* An incremental's unchanged partitions live in its base: a base with a missing or truncated
 * file would give an incremental that reports success and cannot be restored. Sizes only (a
 * stat per file); `verify` re-hashes. */
static int base_check(bk_store *st, const bk_manifest *base, char **err) {
    for (int i = 0; i < base->nfiles; i++) {
        const bk_fileent *f = &base->files[i];
        char *rel = xprintf("%s/%s", base->name, f->path);
        void *r;
        uint64_t bytes = 0;
        char *e = NULL;
        int g = st->ops->get_open(st, rel, &r, &bytes, &e);
        if (g == 1) st->ops->get_close(r);
        char *what = g == 0 ? xprintf("%s: missing", rel)
                     : g < 0 ? xprintf("%s: %s", rel, e)
                     : bytes != f->bytes ? xprintf("%s: %llu bytes, the manifest says %llu (truncated or changed)", rel,
                                                   (unsigned long long)bytes, (unsigned long long)f->bytes)
                     : NULL;
        free(e);
        free(rel);
        if (what) {
            *err = xprintf("the base full backup %s is damaged (%s); run `zhost backup full` to start a new chain",
                           base->name, what);
            free(what);
            return -1;
        }
    }
    return 0;
}

static int do_backup(bk_ctx *c, bool full, const char *name, bk_manifest **out, char **err) {
    zh_ch_state *chs = c->h->ch;
    bk_manifest *m = zh_xcalloc(1, sizeof *m);
    *out = m;
    m->name = zh_xstrdup(name);
    m->mode = zh_xstrdup(full ? "full" : "incr");
    m->created = zh_now_wall();
    m->compression = zh_xstrdup(c->gzip ? "gzip" : "none");
    m->target = zh_xstrdup(c->st->desc);
    m->db[0] = zh_xstrdup(chs->database);
    m->db[1] = zh_xstrdup(chs->bi_database);
    bk_manifest *base = NULL;
    if (!full) {
        base = newest_full(c->st);
        if (!base) {
            *err = xprintf("no complete full backup in %s to base an incremental on; run `zhost backup full` first",
                           c->st->root);
            return -1;
        }
        for (int r = 0; r < 2; r++) {
            if (strcmp(base->db[r], m->db[r]) != 0) {
                *err = xprintf("the newest full backup %s is of database %s, not %s; run `zhost backup full`", base->name,
                               base->db[r], m->db[r]);
                manifest_free(base);
                return -1;
            }
        }
        if (base_check(c->st, base, err) != 0) {
            manifest_free(base);
            return -1;
        }
        m->base = zh_xstrdup(base->name);
    }
    int rc = 0;
    m->server_version = server_version(c, err);
    if (!m->server_version) rc = -1;
    for (int r = 0; r < 2 && rc == 0; r++) {
        zh_buf q;
        zh_buf_init(&q);
        zh_buf_adds(&q, "SELECT name FROM system.databases WHERE name = ");
        add_literal(&q, m->db[r]);
        bk_rows dr;
        rc = bk_query(c, q.data, &dr, err);
        m->db_exists[r] = rc == 0 && dr.n > 0;
        if (rc == 0) rows_free(&dr);
        if (rc == 0 && !m->db_exists[r]) {
            if (r == 0) {
                *err = xprintf("database %s does not exist", m->db[r]);
                rc = -1;
            } else {
                ZH_WARN("backup", "msg=\"database does not exist; backed up as absent\" database=%s", m->db[r]);
            }
        }
        if (rc || !m->db_exists[r]) {
            zh_buf_free(&q);
            continue;
        }
        q.len = 0;
        zh_buf_adds(&q, "SELECT name, engine FROM system.tables WHERE NOT is_temporary AND database = ");
        add_literal(&q, m->db[r]);
        zh_buf_adds(&q, " ORDER BY name");
        bk_rows tr;
        rc = bk_query(c, q.data, &tr, err);
        zh_buf_free(&q);
        for (int i = 0; rc == 0 && i < tr.n; i++) {
            bk_table *t = manifest_add_table(m);
            t->role = zh_xstrdup(roles[r]);
            t->database = zh_xstrdup(m->db[r]);
            t->name = zh_xstrdup(cell(&tr, i, 0));
            t->engine = zh_xstrdup(cell(&tr, i, 1));
            t->partitioned = engine_is_mergetree(t->engine);
            t->has_data = engine_has_data(t->engine);
            if (!strncmp(t->name, ".inner.", 7) || !strncmp(t->name, ".inner_id.", 10)) {
                t->kind = zh_xstrdup("inner");
                t->create = zh_xstrdup("");
                if (!strncmp(t->name, ".inner.", 7)) {
                    t->owner = zh_xstrdup(t->name + 7);
                } else {
                    /* current servers name MV storage by the view's UUID */
                    zh_buf u;
                    zh_buf_init(&u);
                    zh_buf_adds(&u, "SELECT name FROM system.tables WHERE database = ");
                    add_literal(&u, m->db[r]);
                    zh_buf_adds(&u, " AND toString(uuid) = ");
                    add_literal(&u, t->name + 10);
                    bk_rows ur;
                    if (bk_query(c, u.data, &ur, err) == 0) {
                        t->owner = ur.n ? zh_xstrdup(cell(&ur, 0, 0)) : NULL;
                        rows_free(&ur);
                    } else {
                        rc = -1;
                    }
                    zh_buf_free(&u);
                }
                continue;
            }
            t->kind = zh_xstrdup(engine_is_view(t->engine) ? "view" : "table");
            char *qt = qualified(t->database, t->name);
            char *sql = xprintf("SHOW CREATE TABLE %s", qt);
            bk_rows cr;
            rc = bk_query(c, sql, &cr, err);
            free(sql);
            free(qt);
            if (rc) break;
            t->create = zh_xstrdup(cell(&cr, 0, 0));
            rows_free(&cr);
            char *fname = zh_backup_file_name(t->name);
            t->schema_file = xprintf("schema/%s/%s.sql", roles[r], fname);
            free(fname);
            char *rel = xprintf("%s/%s", m->name, t->schema_file);
            char *text = xprintf("%s;\n", t->create);
            rc = store_put_all(c->st, rel, text, strlen(text), err);
            if (rc == 0) {
                char hex[65];
                zh_hash_hex_of(ZH_HASH_SHA256, text, strlen(text), hex);
                manifest_add_file(m, t->schema_file, strlen(text), hex);
            }
            free(rel);
            free(text);
        }
        rows_free(&tr);
    }
    if (rc == 0) order_tables(m);
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        bk_table *t = &m->tables[i];
        if (!t->has_data) continue;
        rc = backup_table_data(c, m, base, t, err);
        if (rc == 0)
            ZH_INFO("backup", "msg=\"table backed up\" table=%s.%s partitions=%d rows=%llu", t->database, t->name, t->nparts,
                    (unsigned long long)table_rows(t));
    }
    if (rc == 0) {
        m->finished = zh_now_wall();
        zh_buf b;
        zh_buf_init(&b);
        manifest_json(m, &b);
        char *rel = xprintf("%s/manifest.json", m->name);
        /* Last, and atomically: a folder without manifest.json is a backup that did not finish. */
        rc = store_put_all(c->st, rel, b.data, b.len, err);
        free(rel);
        zh_buf_free(&b);
    }
    manifest_free(base);
    return rc;
}

/* ======================================================================================
 * zhost backup verify
 * ====================================================================================== */

enum { VB_OK, VB_BAD, VB_INCOMPLETE, VB_RUNNING };
static double env_num(const char *name, double dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    double d = strtod(v, &end);
    if (*end || d < 0) {
        ZH_WARN("backup", "msg=\"ignoring a bad number\" variable=%s value=\"%s\"", name, v);
        return dflt;
    }
    return d;
}

static const char *const vb_status[] = {"ok", "bad", "incomplete", "in_progress"};

typedef struct vbackup {
    char *name;
    bool full;
    double epoch;
    bk_manifest *m;
    int state;
    char **problems;
    int nproblems;
} vbackup;

typedef struct vreport {
    vbackup *b;
    int n;
    char **problems;      /* every problem, in order */
    int nproblems;
} vreport;

static void vproblem(vreport *v, vbackup *b, char *msg) {
    if (b) {
        b->problems = zh_xrealloc(b->problems, (size_t)(b->nproblems + 1) * sizeof *b->problems);
        b->problems[b->nproblems++] = zh_xstrdup(msg);
        if (b->state == VB_OK) b->state = VB_BAD;
    }
    v->problems = zh_xrealloc(v->problems, (size_t)(v->nproblems + 1) * sizeof *v->problems);
    v->problems[v->nproblems++] = msg;
}

static vbackup *vfind(vreport *v, const char *name) {
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->b[i].name, name)) return &v->b[i];
    return NULL;
}

static void vreport_free(vreport *v) {
    for (int i = 0; i < v->n; i++) {
        free(v->b[i].name);
        manifest_free(v->b[i].m);
        for (int k = 0; k < v->b[i].nproblems; k++) free(v->b[i].problems[k]);
        free(v->b[i].problems);
    }
    free(v->b);
    for (int i = 0; i < v->nproblems; i++) free(v->problems[i]);
    free(v->problems);
}

/* Reads every backup's manifest and (unless quick) re-hashes every file. */
static void verify_scan(bk_store *st, bool quick, vreport *v) {
    memset(v, 0, sizeof *v);
    char **names;
    int n = list_backups(st, &names);
    char holder[200];
    lock_holder(st, holder, sizeof holder);
    v->b = zh_xcalloc((size_t)n + 1, sizeof *v->b);
    for (int i = 0; i < n; i++) {
        vbackup *b = &v->b[v->n++];
        b->name = names[i];
        zh_backup_parse_name(b->name, &b->epoch, &b->full);
        char *err = NULL;
        int rc = manifest_load(st, b->name, &b->m, &err);
        if (rc == 0) {
            if (!strcmp(holder, b->name)) {
                b->state = VB_RUNNING;
            } else {
                b->state = VB_INCOMPLETE;
                /* Say what to do: the folder stays a problem until it is gone. */
                vproblem(v, NULL,
                         xprintf("%s: incomplete: no manifest.json (the backup did not finish: killed or failed; "
                                 "`zhost backup prune` removes it %.0f h after it started, or delete the folder)",
                                 b->name, env_num("ZHOST_BACKUP_KEEP_PARTIAL_HOURS", 24)));
                b->problems = zh_xcalloc(1, sizeof *b->problems);
                b->problems[b->nproblems++] = xprintf("%s/manifest.json: missing", b->name);
            }
            continue;
        }
        if (rc < 0) {
            vproblem(v, b, xprintf("%s", err));
            free(err);
            continue;
        }
        if (b->m->created > 0) b->epoch = b->m->created;
        for (int k = 0; k < b->m->nfiles; k++) {
            const bk_fileent *f = &b->m->files[k];
            char *rel = xprintf("%s/%s", b->name, f->path);
            char hex[65] = "";
            uint64_t bytes = 0;
            int g;
            if (quick) {
                void *r;
                g = st->ops->get_open(st, rel, &r, &bytes, &err);
                if (g == 1) st->ops->get_close(r);
            } else {
                g = store_hash(st, rel, hex, &bytes, &err);
            }
            if (g == 0) {
                vproblem(v, b, xprintf("%s: missing", rel));
            } else if (g < 0) {
                vproblem(v, b, xprintf("%s: %s", rel, err));
                free(err);
            } else if (bytes != f->bytes) {
                vproblem(v, b, xprintf("%s: %llu bytes, the manifest says %llu (truncated or changed)", rel,
                                       (unsigned long long)bytes, (unsigned long long)f->bytes));
            } else if (!quick && strcmp(hex, f->sha256) != 0) {
                vproblem(v, b, xprintf("%s: sha256 mismatch (corrupted): %s, the manifest says %s", rel, hex, f->sha256));
            }
            free(rel);
        }
    }
    free(names);
    /* Chains: every partition's file is in this backup or in its base, and the base is sound. */
    for (int i = 0; i < v->n; i++) {
        vbackup *b = &v->b[i];
        if (!b->m) continue;
        vbackup *base = NULL;
        if (!strcmp(b->m->mode, "incr")) {
            if (!b->m->base) {
                vproblem(v, b, xprintf("%s: incremental without a base", b->name));
            } else if (!(base = vfind(v, b->m->base))) {
                vproblem(v, b, xprintf("%s: chain broken: its base %s is missing", b->name, b->m->base));
            } else if (!base->m) {
                vproblem(v, b, xprintf("%s: chain broken: its base %s is %s", b->name, b->m->base, vb_status[base->state]));
                base = NULL;
            } else if (strcmp(base->m->mode, "full") != 0) {
                vproblem(v, b, xprintf("%s: chain broken: its base %s is not a full backup", b->name, b->m->base));
                base = NULL;
            } else if (base->state != VB_OK) {
                vproblem(v, b, xprintf("%s: chain broken: its base %s failed verification", b->name, b->m->base));
            }
        }
        for (int t = 0; t < b->m->ntables; t++) {
            const bk_table *tb = &b->m->tables[t];
            for (int k = 0; k < tb->nparts; k++) {
                const bk_part *p = &tb->parts[k];
                const bk_manifest *holder_m = !strcmp(p->in, b->name) ? b->m : base && !strcmp(p->in, base->name) ? base->m : NULL;
                if (!holder_m) {
                    if (!base && strcmp(p->in, b->name) != 0) continue; /* already reported as a broken chain */
                    vproblem(v, b, xprintf("%s: partition %s of %s.%s is in %s, which is neither it nor its base", b->name,
                                           p->id, tb->database, tb->name, p->in));
                } else if (!manifest_file(holder_m, p->file)) {
                    vproblem(v, b, xprintf("%s: partition %s of %s.%s refers to %s/%s, which %s does not list", b->name,
                                           p->id, tb->database, tb->name, p->in, p->file, p->in));
                }
            }
        }
    }
}

/* `list` is verify without re-reading files and without the age and "no full" checks. */
static int cmd_verify(bk_store *st, bool json, bool quick, bool list, double fresh_h, double full_h, vreport *v) {
    verify_scan(st, quick || list, v);
    double now = zh_now_wall();
    const vbackup *newest = NULL, *newest_full_b = NULL;
    for (int i = 0; i < v->n; i++) {
        const vbackup *b = &v->b[i];
        if (b->state != VB_OK) continue;
        if (!newest || b->epoch > newest->epoch) newest = b;
        if (b->full && (!newest_full_b || b->epoch > newest_full_b->epoch)) newest_full_b = b;
    }
    if (list) {
        /* nothing more to judge */
    } else if (!newest_full_b) {
        vproblem(v, NULL, xprintf("no sound full backup in %s", st->root));
    } else if (full_h > 0 && now - newest_full_b->epoch > full_h * 3600) {
        vproblem(v, NULL, xprintf("the newest full backup %s is %.1f h old (limit %g h)", newest_full_b->name,
                                  (now - newest_full_b->epoch) / 3600, full_h));
    }
    if (!list && newest && fresh_h > 0 && now - newest->epoch > fresh_h * 3600) {
        vproblem(v, NULL, xprintf("the newest backup %s is %.1f h old (limit %g h)", newest->name,
                                  (now - newest->epoch) / 3600, fresh_h));
    }
    zh_buf out;
    zh_buf_init(&out);
    if (json) {
        char ts[40];
        iso_utc(now, ts, sizeof ts);
        zh_buf_printf(&out, "{\"ok\":%s,\"dir\":", v->nproblems ? "false" : "true");
        zh_buf_json_str(&out, st->root);
        zh_buf_printf(&out, ",\"checked_at\":\"%s\",\"fresh_hours\":%g,\"full_hours\":%g,\"checksums\":%s", ts, fresh_h,
                      full_h, quick ? "false" : "true");
        const vbackup *nb[2] = {newest, newest_full_b};
        const char *nk[2] = {"newest", "newest_full"};
        for (int k = 0; k < 2; k++) {
            zh_buf_printf(&out, ",\"%s\":", nk[k]);
            if (!nb[k]) {
                zh_buf_adds(&out, "null");
                continue;
            }
            zh_buf_adds(&out, "{\"name\":");
            zh_buf_json_str(&out, nb[k]->name);
            zh_buf_printf(&out, ",\"age_hours\":%.3f}", (now - nb[k]->epoch) / 3600);
        }
        zh_buf_adds(&out, ",\"backups\":[");
        for (int i = 0; i < v->n; i++) {
            const vbackup *b = &v->b[i];
            zh_buf_adds(&out, i ? ",{\"name\":" : "{\"name\":");
            zh_buf_json_str(&out, b->name);
            zh_buf_printf(&out, ",\"mode\":\"%s\",\"status\":\"%s\",\"base\":", b->full ? "full" : "incr", vb_status[b->state]);
            if (b->m && b->m->base) zh_buf_json_str(&out, b->m->base);
            else zh_buf_adds(&out, "null");
            iso_utc(b->epoch, ts, sizeof ts);
            zh_buf_printf(&out, ",\"created_at\":\"%s\",\"age_hours\":%.3f", ts, (now - b->epoch) / 3600);
            if (b->m)
                zh_buf_printf(&out, ",\"files\":%d,\"bytes\":%llu,\"rows\":%llu", b->m->nfiles,
                              (unsigned long long)b->m->bytes, (unsigned long long)b->m->rows);
            zh_buf_adds(&out, ",\"problems\":[");
            for (int k = 0; k < b->nproblems; k++) {
                if (k) zh_buf_addc(&out, ',');
                zh_buf_json_str(&out, b->problems[k]);
            }
            zh_buf_adds(&out, "]}");
        }
        zh_buf_adds(&out, "],\"problems\":[");
        for (int k = 0; k < v->nproblems; k++) {
            if (k) zh_buf_addc(&out, ',');
            zh_buf_json_str(&out, v->problems[k]);
        }
        zh_buf_adds(&out, "]}\n");
    } else {
        zh_buf_printf(&out, "backups in %s\n", st->root);
        for (int i = 0; i < v->n; i++) {
            const vbackup *b = &v->b[i];
            char hb[32] = "";
            if (b->m) human_bytes(b->m->bytes, hb, sizeof hb);
            zh_buf_printf(&out, "  %-11s %s  %5.1f h ago", b->state == VB_OK ? "ok" : b->state == VB_BAD ? "BAD"
                                                               : b->state == VB_RUNNING ? "in-progress" : "INCOMPLETE",
                          b->name, (now - b->epoch) / 3600);
            if (b->m) {
                zh_buf_printf(&out, "  %d files  %s  %llu rows", b->m->nfiles, hb, (unsigned long long)b->m->rows);
                if (b->m->base) zh_buf_printf(&out, "  base %s", b->m->base);
            }
            zh_buf_addc(&out, '\n');
            for (int k = 0; k < b->nproblems; k++) zh_buf_printf(&out, "      %s\n", b->problems[k]);
        }
        if (list) {
            zh_buf_printf(&out, "%d backup%s, %d problem%s (sizes only; `zhost backup verify` re-reads every file)\n", v->n,
                          v->n == 1 ? "" : "s", v->nproblems, v->nproblems == 1 ? "" : "s");
            goto print;
        }
        if (newest_full_b)
            zh_buf_printf(&out, "newest full: %s (%.1f h ago, limit %g h)\n", newest_full_b->name,
                          (now - newest_full_b->epoch) / 3600, full_h);
        if (newest)
            zh_buf_printf(&out, "newest backup: %s (%.1f h ago, limit %g h)\n", newest->name, (now - newest->epoch) / 3600,
                          fresh_h);
        if (v->nproblems) {
            zh_buf_printf(&out, "verify: FAILED, %d problem%s:\n", v->nproblems, v->nproblems == 1 ? "" : "s");
            for (int k = 0; k < v->nproblems; k++) zh_buf_printf(&out, "  %s\n", v->problems[k]);
        } else {
            zh_buf_adds(&out, "verify: OK\n");
        }
    }
print:
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    zh_buf_free(&out);
    if (list) return 0;
    if (v->nproblems) fprintf(stderr, "zhost backup verify: %s\n", v->problems[0]);
    return v->nproblems ? 1 : 0;
}

/* ======================================================================================
 * zhost backup restore
 * ====================================================================================== */

typedef struct rs_target {
    const char *from[2]; /* source database names (the manifest's) */
    const char *to[2];   /* scratch database names */
} rs_target;

static char *rewrite_create(const rs_target *tg, const char *create) {
    /* Through a placeholder, so that swapping names (zakaz <-> bi) cannot rewrite twice. */
    char *a = zh_backup_rewrite_db(create, tg->from[0], "\x01zhost_restore_0");
    char *b = zh_backup_rewrite_db(a, tg->from[1], "\x01zhost_restore_1");
    free(a);
    char *c = zh_backup_rewrite_db(b, "\x01zhost_restore_0", tg->to[0]);
    free(b);
    char *d = zh_backup_rewrite_db(c, "\x01zhost_restore_1", tg->to[1]);
    free(c);
    return d;
}

/* The restored name of a materialized view's storage: `.inner.<view>` (Ordinary databases), else
 * `.inner_id.<uuid of the view>` (Atomic databases of current servers; 18.16 has no uuid column). */
static char *inner_name(bk_ctx *c, const char *db, const char *owner, char **err) {
    char *name = NULL;
    for (int form = 0; form < 2 && !name; form++) {
        zh_buf q;
        zh_buf_init(&q);
        zh_buf_adds(&q, "SELECT name FROM system.tables WHERE database = ");
        add_literal(&q, db);
        if (form == 0) {
            zh_buf_adds(&q, " AND name = ");
            char *old = xprintf(".inner.%s", owner);
            add_literal(&q, old);
            free(old);
        } else {
            zh_buf_adds(&q, " AND name IN (SELECT concat('.inner_id.', toString(uuid)) FROM system.tables WHERE database = ");
            add_literal(&q, db);
            zh_buf_adds(&q, " AND name = ");
            add_literal(&q, owner);
            zh_buf_adds(&q, ")");
        }
        bk_rows r;
        char *e = NULL;
        if (bk_query(c, q.data, &r, &e) == 0) {
            if (r.n) name = zh_xstrdup(cell(&r, 0, 0));
            rows_free(&r);
        }
        free(e);
        zh_buf_free(&q);
    }
    if (!name) *err = xprintf("the storage of materialized view %s.%s was not created", db, owner);
    return name;
}

/* Loads every partition of t into db.table; each file is hashed on the way and compared. */
static int restore_data(bk_ctx *c, const bk_table *t, const char *db, const char *table, const bk_manifest *m,
                        const bk_manifest *base, char **err) {
    char *qt = qualified(db, table);
    int rc = 0;
    for (int k = 0; rc == 0 && k < t->nparts; k++) {
        const bk_part *p = &t->parts[k];
        const bk_manifest *holder = !strcmp(p->in, m->name) ? m : base && !strcmp(p->in, base->name) ? base : NULL;
        const bk_fileent *f = holder ? manifest_file(holder, p->file) : NULL;
        if (!f) {
            *err = xprintf("partition %s of %s.%s: %s/%s is not in the backup chain", p->id, t->database, t->name, p->in, p->file);
            rc = -1;
            break;
        }
        char *rel = xprintf("%s/%s", p->in, p->file);
        char sha[65];
        rc = bk_load(c, qt, rel, sha, err);
        if (rc == 0 && strcmp(sha, f->sha256) != 0) {
            *err = xprintf("%s/%s: sha256 mismatch (corrupted); the rows it held are suspect", c->st->root, rel);
            rc = -1;
        }
        if (rc != 0 && *err && !strstr(*err, rel)) {
            char *e2 = xprintf("%s: %s", rel, *err);
            free(*err);
            *err = e2;
        }
        free(rel);
    }
    free(qt);
    return rc;
}

static int stop_merges(bk_ctx *c, const char *qt, bool stop) {
    char *sql = xprintf("SYSTEM %s MERGES %s", stop ? "STOP" : "START", qt);
    char *err = NULL;
    int rc = bk_exec(c, NULL, sql, NULL, &err);
    if (rc) {
        ZH_WARN("backup", "msg=\"cannot %s merges\" table=%s error=\"%s\"", stop ? "stop" : "start", qt, err);
        free(err);
    }
    free(sql);
    return rc;
}

typedef struct rs_result {
    int tables, mismatches, view_warnings;
    uint64_t rows;
} rs_result;

static int do_restore(bk_ctx *c, const char *name, const char *into, const char *bi_into, bool drop, rs_result *res,
                      char **err) {
    bk_manifest *m = NULL, *base = NULL;
    int rc = manifest_load(c->st, name, &m, err);
    if (rc == 0) {
        *err = xprintf("%s: no such complete backup in %s (no %s/manifest.json)", name, c->st->root, name);
        return -1;
    }
    if (rc < 0) return -1;
    rc = 0;
    if (m->base) {
        int b = manifest_load(c->st, m->base, &base, err);
        if (b <= 0) {
            if (b == 0) *err = xprintf("%s: its base %s is missing or incomplete", name, m->base);
            manifest_free(m);
            return -1;
        }
    }
    rs_target tg = {{m->db[0], m->db[1]}, {into, bi_into}};
    zh_ch_state *chs = c->h->ch;
    for (int r = 0; r < 2; r++) {
        const char *t = tg.to[r];
        if (!strcmp(t, chs->database) || !strcmp(t, chs->bi_database) || !strcmp(t, m->db[0]) || !strcmp(t, m->db[1]) ||
            !strcmp(t, "system") || !strcmp(t, "default")) {
            *err = xprintf("refusing to restore into %s: restore goes into scratch databases, never a live one", t);
            rc = -1;
        }
    }
    if (rc == 0 && !strcmp(tg.to[0], tg.to[1])) {
        *err = xprintf("--into and --bi-into must differ (both %s)", tg.to[0]);
        rc = -1;
    }
    for (int r = 0; r < 2 && rc == 0; r++) {
        zh_buf q;
        zh_buf_init(&q);
        if (drop) {
            zh_buf_adds(&q, "DROP DATABASE IF EXISTS ");
            add_ident(&q, tg.to[r]);
            rc = bk_exec(c, NULL, q.data, NULL, err);
            q.len = 0;
        }
        if (rc == 0) {
            zh_buf_adds(&q, "CREATE DATABASE IF NOT EXISTS ");
            add_ident(&q, tg.to[r]);
            rc = bk_exec(c, NULL, q.data, NULL, err);
        }
        if (rc == 0) {
            q.len = 0;
            zh_buf_adds(&q, "SELECT count() FROM system.tables WHERE database = ");
            add_literal(&q, tg.to[r]);
            bk_rows cr;
            rc = bk_query(c, q.data, &cr, err);
            if (rc == 0 && strcmp(cell(&cr, 0, 0), "0") != 0) {
                *err = xprintf("database %s is not empty; pick another name or add --drop-existing", tg.to[r]);
                rc = -1;
            }
            rows_free(&cr);
        }
        zh_buf_free(&q);
    }
    char **stopped = NULL;
    int nstopped = 0;
    /* 1. tables, merges stopped so the comparison sees the rows as loaded (a ReplacingMergeTree
     *    would fold duplicates that the source still holds unmerged); 2. their data; */
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (strcmp(t->kind, "table") || !m->db_exists[role_index(t->role)]) continue;
        char *sql = rewrite_create(&tg, t->create);
        rc = bk_exec(c, tg.to[role_index(t->role)], sql, NULL, err);
        if (rc) {
            char *e2 = xprintf("creating %s.%s: %s", t->database, t->name, *err);
            free(*err);
            *err = e2;
        }
        free(sql);
        if (rc == 0 && engine_is_mergetree(t->engine)) {
            char *qt = qualified(tg.to[role_index(t->role)], t->name);
            if (stop_merges(c, qt, true) == 0) {
                stopped = zh_xrealloc(stopped, (size_t)(nstopped + 1) * sizeof *stopped);
                stopped[nstopped++] = qt;
            } else {
                free(qt);
            }
        }
    }
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (!strcmp(t->kind, "table") && t->has_data)
            rc = restore_data(c, t, tg.to[role_index(t->role)], t->name, m, base, err);
    }
    /* 3. views after the data, so a materialized view does not see the loaded rows a second time;
     *    a view that reads a view not made yet is retried while each pass makes progress; */
    int nviews = 0, made = 0;
    bool *done = zh_xcalloc((size_t)m->ntables + 1, sizeof *done);
    for (int i = 0; i < m->ntables; i++) nviews += !strcmp(m->tables[i].kind, "view") && m->db_exists[role_index(m->tables[i].role)];
    /* A plain view that still cannot be made (it reads a database outside the backup, gone on a new
     * server) holds no data: it is a warning below, and the data is still compared. A materialized
     * view that cannot be made fails the restore (its storage could not be loaded). */
    char **view_err = zh_xcalloc((size_t)m->ntables + 1, sizeof *view_err);
    char *last_err = NULL;
    bool stalled = false;
    while (rc == 0 && made < nviews && !stalled) {
        int before = made;
        for (int i = 0; i < m->ntables; i++) {
            const bk_table *t = &m->tables[i];
            if (done[i] || strcmp(t->kind, "view") || !m->db_exists[role_index(t->role)]) continue;
            char *sql = rewrite_create(&tg, t->create);
            char *e = NULL;
            if (bk_exec(c, tg.to[role_index(t->role)], sql, NULL, &e) == 0) {
                done[i] = true;
                made++;
            } else {
                free(last_err);
                last_err = xprintf("creating view %s.%s: %s", t->database, t->name, e);
                free(view_err[i]);
                view_err[i] = e;
            }
            free(sql);
        }
        if (made == before) {
            stalled = true;
            for (int i = 0; i < m->ntables; i++)
                if (!done[i] && view_err[i] && strcmp(m->tables[i].engine, "View") != 0) rc = -1;
            if (rc) {
                *err = last_err;
                last_err = NULL;
            }
        }
    }
    free(last_err);
    /* 4. the storage of materialized views */
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (strcmp(t->kind, "inner") || !t->owner) continue;
        const char *db = tg.to[role_index(t->role)];
        char *in = inner_name(c, db, t->owner, err);
        if (!in) {
            rc = -1;
            break;
        }
        char *qt = qualified(db, in);
        if (engine_is_mergetree(t->engine) && stop_merges(c, qt, true) == 0) {
            stopped = zh_xrealloc(stopped, (size_t)(nstopped + 1) * sizeof *stopped);
            stopped[nstopped++] = zh_xstrdup(qt);
        }
        rc = restore_data(c, t, db, in, m, base, err);
        free(qt);
        free(in);
    }
    /* 5. compare with the manifest */
    char *here = NULL;
    if (rc == 0) {
        char *verr = NULL;
        here = server_version(c, &verr);
        free(verr);
    }
    if (rc == 0) {
        printf("restore %s (%s%s%s) into %s, %s\n", m->name, m->mode, m->base ? " on " : "", m->base ? m->base : "",
               tg.to[0], tg.to[1]);
        printf("  %-48s %14s %14s  %s\n", "table", "rows expected", "rows restored", "content");
    }
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (!t->has_data || !m->db_exists[role_index(t->role)]) continue;
        const char *db = tg.to[role_index(t->role)];
        char *tname = !strcmp(t->kind, "inner") && t->owner ? inner_name(c, db, t->owner, err) : zh_xstrdup(t->name);
        if (!tname) {
            rc = -1;
            break;
        }
        char *qt = qualified(db, tname);
        uint64_t want_x = 0;
        bool have_x = table_checksum(t, &want_x);
        bool comparable = zh_backup_same_row_text(m->server_version, here, t->create);
        bool no_checksum = !have_x;
        pstats got;
        rc = part_stats(c, qt, NULL, &no_checksum, &got, err);
        if (rc == 0) {
            uint64_t want = table_rows(t);
            bool rows_ok = got.rows == want;
            bool sum_ok = !have_x || !comparable || (got.checksum[0] && strtoull(got.checksum, NULL, 10) == want_x);
            char label[300];
            snprintf(label, sizeof label, "%s.%s", db, tname);
            char why[200];
            snprintf(why, sizeof why, "not checked (Decimal/Float text differs between ClickHouse %s and %s)",
                     m->server_version ? m->server_version : "?", here ? here : "?");
            printf("  %-48s %14llu %14llu  %s\n", label, (unsigned long long)want, (unsigned long long)got.rows,
                   !have_x ? "not checked (no checksum)" : !comparable ? why : sum_ok ? "ok" : "MISMATCH");
            if (!rows_ok || !sum_ok) res->mismatches++;
            res->tables++;
            res->rows += got.rows;
        }
        free(qt);
        free(tname);
    }
    /* every view answers */
    for (int i = 0; rc == 0 && i < m->ntables; i++) {
        const bk_table *t = &m->tables[i];
        if (strcmp(t->kind, "view") || !m->db_exists[role_index(t->role)]) continue;
        char *qt = qualified(tg.to[role_index(t->role)], t->name);
        if (!done[i]) {
            printf("  warning: view %s could not be made: %s\n", qt, view_err[i] ? view_err[i] : "?");
            res->view_warnings++;
            free(qt);
            continue;
        }
        char *sql = xprintf("SELECT * FROM %s LIMIT 0", qt);
        char *e = NULL;
        if (bk_exec(c, tg.to[role_index(t->role)], sql, NULL, &e) != 0) {
            printf("  warning: view %s does not answer: %s\n", qt, e);
            res->view_warnings++;
            free(e);
        }
        free(sql);
        free(qt);
    }
    for (int i = 0; i < nstopped; i++) {
        stop_merges(c, stopped[i], false);
        free(stopped[i]);
    }
    free(stopped);
    for (int i = 0; i < m->ntables; i++) free(view_err[i]);
    free(view_err);
    free(done);
    free(here);
    manifest_free(m);
    manifest_free(base);
    return rc;
}

/* ======================================================================================
 * zhost backup prune
 * ====================================================================================== */

typedef struct pr_result {
    int deleted, kept;
    char **names;         /* deleted */
} pr_result;

static int do_prune(bk_ctx *c, double keep_full_d, double keep_incr_d, double keep_partial_h, bool dry, pr_result *res,
                    char **err) {
    vreport v;
    verify_scan(c->st, true, &v);
    double now = zh_now_wall();
    bool *keep = zh_xcalloc((size_t)v.n + 1, sizeof *keep);
    /* The newest full, and the newest that passed the (sizes) check: when the newest full is
     * damaged, the one before it is the last that restores, however old. Names sort by time. */
    int newest_full = -1, newest_sound_full = -1;
    for (int i = 0; i < v.n; i++) {
        if (v.b[i].m && v.b[i].full) newest_full = i;
        if (v.b[i].m && v.b[i].full && v.b[i].state == VB_OK) newest_sound_full = i;
    }
    /* Incrementals first: a kept incremental keeps its base. Only a folder without a manifest is
     * unfinished; one whose manifest is unreadable is a damaged backup, kept by its age like the
     * rest (its files may still be loaded by hand). */
    for (int i = 0; i < v.n; i++) {
        vbackup *b = &v.b[i];
        double age_d = (now - b->epoch) / 86400;
        if (b->state == VB_RUNNING) keep[i] = true;
        else if (b->state == VB_INCOMPLETE) keep[i] = (now - b->epoch) / 3600 < keep_partial_h;
        else if (!b->full) keep[i] = age_d < keep_incr_d;
        else if (!b->m) keep[i] = age_d < keep_full_d;
    }
    for (int i = 0; i < v.n; i++) {
        vbackup *b = &v.b[i];
        if (!b->m || !b->full) continue;
        keep[i] = (now - b->epoch) / 86400 < keep_full_d || i == newest_full || i == newest_sound_full;
        for (int j = 0; j < v.n && !keep[i]; j++)
            if (keep[j] && v.b[j].m && v.b[j].m->base && !strcmp(v.b[j].m->base, b->name)) keep[i] = true;
    }
    int rc = 0;
    for (int i = 0; i < v.n && rc == 0; i++) {
        if (keep[i]) {
            res->kept++;
            continue;
        }
        if (!dry) rc = c->st->ops->remove(c->st, v.b[i].name, err);
        if (rc == 0) {
            res->names = zh_xrealloc(res->names, (size_t)(res->deleted + 1) * sizeof *res->names);
            res->names[res->deleted++] = zh_xstrdup(v.b[i].name);
        }
    }
    free(keep);
    vreport_free(&v);
    return rc;
}

/* ======================================================================================
 * The command
 * ====================================================================================== */


static bool parse_num(const char *opt, const char *v, double *out) {
    char *end;
    double d = strtod(v, &end);
    if (*end || !*v || d < 0 || d > 1e6) {
        fprintf(stderr, "zhost backup: %s needs a non-negative number (got '%s')\n", opt, v);
        return false;
    }
    *out = d;
    return true;
}

static void put_env_if_unset(void *ud, const char *k, const char *v) {
    (void)ud;
    setenv(k, v, 0);
}

static const char *backup_usage =
    "usage: zhost backup full|incr [--to DIR] [--secrets DIR] [--no-record]\n"
    "       zhost backup verify [--dir DIR] [--json] [--quick] [--fresh-hours H] [--full-hours H]\n"
    "       zhost backup restore NAME --into DB [--bi-into DB] [--drop-existing] [--dir DIR]\n"
    "       zhost backup prune [--dir DIR] [--keep-days N] [--keep-incr-days N] [--dry-run]\n"
    "       zhost backup list [--dir DIR]\n";

int zh_cmd_backup(int argc, char **argv) {
    const char *verb = NULL, *dir = NULL, *secrets = NULL, *into = NULL, *bi_into = NULL, *name = NULL, *v;
    bool json = false, quick = false, drop = false, dry = false, no_record = false;
    double fresh_h = -1, full_h = -1, keep_d = -1, keep_incr_d = -1;
    /* zh_opt_value exits with status 2 when an option lacks its value. */
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--to")) || (v = zh_opt_value(argc, argv, &i, "--dir"))) dir = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) secrets = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--into"))) into = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--bi-into"))) bi_into = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--fresh-hours"))) {
            if (!parse_num("--fresh-hours", v, &fresh_h)) return 2;
        } else if ((v = zh_opt_value(argc, argv, &i, "--full-hours"))) {
            if (!parse_num("--full-hours", v, &full_h)) return 2;
        } else if ((v = zh_opt_value(argc, argv, &i, "--keep-days"))) {
            if (!parse_num("--keep-days", v, &keep_d)) return 2;
        } else if ((v = zh_opt_value(argc, argv, &i, "--keep-incr-days"))) {
            if (!parse_num("--keep-incr-days", v, &keep_incr_d)) return 2;
        } else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--drop-existing")) drop = true;
        else if (!strcmp(argv[i], "--dry-run")) dry = true;
        else if (!strcmp(argv[i], "--no-record")) no_record = true;
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) zh_log_set_level(ZH_LOG_DEBUG);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "zhost backup: unknown option '%s'\n%s", argv[i], backup_usage);
            return 2;
        } else if (!verb) verb = argv[i];
        else if (!name && !strcmp(verb, "restore")) name = argv[i];
        else {
            fprintf(stderr, "zhost backup: unexpected argument '%s'\n%s", argv[i], backup_usage);
            return 2;
        }
    }
    static const char *const verbs[] = {"full", "incr", "verify", "restore", "prune", "list", NULL};
    bool known = false;
    for (int i = 0; verb && verbs[i]; i++) known |= !strcmp(verb, verbs[i]);
    if (!known) {
        fputs(backup_usage, stderr);
        return 2;
    }
    if (!strcmp(verb, "restore")) {
        if (!name || !into) {
            fprintf(stderr, "zhost backup restore: give the backup NAME and --into DB\n%s", backup_usage);
            return 2;
        }
        if (!zh_backup_parse_name(name, NULL, NULL)) {
            fprintf(stderr, "zhost backup restore: '%s' is not a backup name (chbk_YYYYMMDD_HHMMSS_full|incr)\n", name);
            return 2;
        }
    }
    const char *sdir = zh_secrets_dir(secrets);
    /* Optional settings file: BACKUP_DIR, ZHOST_BACKUP_* (the environment wins). */
    char *serr = NULL;
    if (zh_secrets_read(sdir, "backup", put_env_if_unset, NULL, &serr) < 0) {
        fprintf(stderr, "zhost backup: %s\n", serr);
        free(serr);
        return 1;
    }
    if (!dir) dir = getenv("ZHOST_BACKUP_DIR");
    if (!dir || !*dir) dir = getenv("BACKUP_DIR");
    if (!dir || !*dir) {
        /* A run started by `zhost serve` (which sets ZHOST_JOB) works in the service's directory,
         * where var/backups is nobody's choice (/ in Docker, read-only under systemd's
         * ProtectSystem): there the folder must be configured, and saying so is the run's error. */
        const char *job = getenv("ZHOST_JOB");
        if (job && *job) {
            fprintf(stderr, "zhost backup %s: no backup folder configured (set BACKUP_DIR in %s/.env.backup)\n", verb,
                    sdir);
            return 1;
        }
        dir = "var/backups";
    }
    /* The shipped schedule takes an incremental every 4 h: allow one run plus margin. */
    if (fresh_h < 0) fresh_h = env_num("ZHOST_BACKUP_FRESH_HOURS", 6);
    if (full_h < 0) full_h = env_num("ZHOST_BACKUP_FULL_HOURS", 26);
    if (keep_d < 0) keep_d = env_num("ZHOST_BACKUP_KEEP_FULL_DAYS", 28);
    if (keep_incr_d < 0) keep_incr_d = env_num("ZHOST_BACKUP_KEEP_INCR_DAYS", 7);

    bk_ctx c;
    memset(&c, 0, sizeof c);
    c.st = store_open_local(dir);
    c.timeout_s = env_num("ZHOST_BACKUP_TIMEOUT", 3600);
    if (c.timeout_s <= 0) c.timeout_s = 3600;
#ifdef ZH_HAVE_ZLIB
    c.gzip = env_num("ZHOST_BACKUP_GZIP", 1) != 0;
#endif
    zh_host_opts ho = {.secrets_dir = sdir};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        store_free(c.st);
        return 1;
    }
    c.h = h;
    bk_rec rec;
    memset(&rec, 0, sizeof rec);
    char run_id[37];
    zh_uuid4(run_id);
    double started = zh_now_wall();
    int rc = 0;
    char *err = NULL;

    if (!strcmp(verb, "full") || !strcmp(verb, "incr")) {
        bool full = !strcmp(verb, "full");
        char bname[40] = "";
        for (;;) {
            time_t t = (time_t)zh_now_wall();
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(bname, sizeof bname, "chbk_%Y%m%d_%H%M%S_", &tm);
            strcat(bname, verb);
            char **x;
            int n = c.st->ops->list(c.st, bname, &x);
            free_names(x, n < 0 ? 0 : n);
            if (n < 0) break;
            sleep(1); /* a backup of this second exists: names are unique per second */
        }
        if (lock_take(c.st, bname, &err) != 0) {
            fprintf(stderr, "zhost backup %s: %s\n", verb, err);
            char *metrics = xprintf("{\"mode\":\"%s\",\"duration\":0}", verb);
            if (!no_record)
                record_job(&c, &rec, "backup", run_id, "error", started, zh_now_wall(), 0, err, metrics);
            free(metrics);
            free(err);
            rc = 1;
        } else {
            bk_runrow rr = {.name = bname, .mode = verb, .target = c.st->desc, .status = "running", .ts = started};
            if (!no_record) {
                record_job(&c, &rec, "backup", run_id, "running", started, 0, 0, "", "{}");
                record_backup_run(&c, &rec, &rr);
            }
            bk_manifest *m = NULL;
            rc = do_backup(&c, full, bname, &m, &err) == 0 ? 0 : 1;
            double dur = zh_now_wall() - started;
            char hb[32];
            human_bytes(m->bytes, hb, sizeof hb);
            if (rc == 0) {
                printf("backup %s: %d tables, %llu partitions dumped, %llu from base %s, %llu rows, %d files, %s, %.1f s\n",
                       bname, m->ntables, (unsigned long long)m->dumped, (unsigned long long)m->reused,
                       m->base ? m->base : "-", (unsigned long long)m->rows, m->nfiles, hb, dur);
                printf("%s/%s\n", c.st->root, bname);
            } else {
                fprintf(stderr, "zhost backup %s: %s\n", verb, err);
                /* A half-written folder has no value and may be what filled the disk. */
                char *rerr = NULL;
                if (c.st->ops->remove(c.st, bname, &rerr) != 0) {
                    ZH_WARN("backup", "msg=\"cannot remove the unfinished backup\" error=\"%s\"", rerr);
                    free(rerr);
                }
            }
            lock_release(c.st);
            zh_buf det;
            zh_buf_init(&det);
            zh_buf_printf(&det, "{\"mode\":\"%s\",\"duration\":%.3f,\"bytes\":%llu,\"files\":%d,\"tables\":%d,"
                                "\"partitions_dumped\":%llu,\"partitions_from_base\":%llu,\"rows\":%llu,\"name\":",
                          verb, dur, (unsigned long long)m->bytes, m->nfiles, m->ntables, (unsigned long long)m->dumped,
                          (unsigned long long)m->reused, (unsigned long long)m->rows);
            zh_buf_json_str(&det, bname);
            zh_buf_adds(&det, ",\"base\":");
            if (m->base) zh_buf_json_str(&det, m->base);
            else zh_buf_adds(&det, "null");
            zh_buf_adds(&det, ",\"target\":");
            zh_buf_json_str(&det, c.st->desc);
            zh_buf_adds(&det, "}");
            if (!no_record) {
                rr.status = rc == 0 ? "ok" : "fail";
                rr.base = m->base;
                rr.bytes = m->bytes;
                rr.duration_ms = (uint64_t)(dur * 1000);
                rr.details = det.data;
                rr.error = rc == 0 ? "" : err;
                record_backup_run(&c, &rec, &rr);
                record_job(&c, &rec, "backup", run_id, rc == 0 ? "success" : "error", started, zh_now_wall(), m->rows,
                           rc == 0 ? bname : err, det.data);
            }
            zh_buf_free(&det);
            manifest_free(m);
            free(err);
        }
    } else if (!strcmp(verb, "verify") || !strcmp(verb, "list")) {
        vreport v;
        bool list = !strcmp(verb, "list");
        struct stat dst;
        if (stat(c.st->root, &dst) != 0) {
            /* A mistyped --dir or BACKUP_DIR: say so, rather than "0 backups" or "no sound full". */
            int e = errno;
            fprintf(stderr, "zhost backup %s: %s: %s (the backups folder: --dir, $ZHOST_BACKUP_DIR or BACKUP_DIR)\n",
                    verb, c.st->root, strerror(e));
            err = xprintf("%s: %s", c.st->root, strerror(e));
            memset(&v, 0, sizeof v);
            rc = 1;
        } else {
            rc = cmd_verify(c.st, json, quick, list, fresh_h, full_h, &v);
        }
        if (!no_record && !list) {
            char *metrics = xprintf("{\"duration\":%.3f,\"backups\":%d,\"problems\":%d}", zh_now_wall() - started, v.n,
                                    v.nproblems);
            record_job(&c, &rec, "backup_verify", run_id, rc == 0 ? "success" : "error", started, zh_now_wall(), 0,
                       err ? err : v.nproblems ? v.problems[0] : "", metrics);
            free(metrics);
        }
        vreport_free(&v);
        free(err);
        err = NULL;
    } else if (!strcmp(verb, "restore")) {
        char *bi_default = NULL;
        if (!bi_into) bi_into = bi_default = xprintf("%s_bi", into);
        rs_result res = {0};
        rc = do_restore(&c, name, into, bi_into, drop, &res, &err) == 0 ? 0 : 1;
        double dur = zh_now_wall() - started;
        if (rc == 0) {
            printf("restore: %d tables, %llu rows, %d mismatch%s, %d view warning%s, %.1f s\n", res.tables,
                   (unsigned long long)res.rows, res.mismatches, res.mismatches == 1 ? "" : "es", res.view_warnings,
                   res.view_warnings == 1 ? "" : "s", dur);
            if (res.mismatches) {
                fprintf(stderr, "zhost backup restore: %d table%s differ from the manifest\n", res.mismatches,
                        res.mismatches == 1 ? "" : "s");
                rc = 1;
            }
        } else {
            fprintf(stderr, "zhost backup restore: %s\n", err);
        }
        if (!no_record) {
            char *metrics = xprintf("{\"duration\":%.3f,\"backup\":\"%s\",\"tables\":%d,\"mismatches\":%d}", dur, name,
                                    res.tables, res.mismatches);
            record_job(&c, &rec, "backup_restore", run_id, rc == 0 ? "success" : "error", started, zh_now_wall(), res.rows,
                       err ? err : res.mismatches ? "restored tables differ from the manifest" : name, metrics);
            free(metrics);
        }
        free(err);
        free(bi_default);
    } else if (!strcmp(verb, "prune")) {
        struct stat dst;
        if (stat(c.st->root, &dst) != 0) {
            /* A mistyped --dir, or the default var/backups of another working directory: taking the
             * lock would create the folder and report "0 deleted, 0 kept" as a success. */
            fprintf(stderr, "zhost backup prune: %s: %s (the backups folder: --dir, $ZHOST_BACKUP_DIR or BACKUP_DIR)\n",
                    c.st->root, strerror(errno));
            rc = 1;
        } else if (!dry && lock_take(c.st, "prune", &err) != 0) {
            /* --dry-run deletes nothing, so it takes no lock: an operator in the service's group may
             * run it (the lock file is created in the folder, which only the service user may write),
             * and a backup running meanwhile is seen as in progress (its lock) and kept. */
            fprintf(stderr, "zhost backup prune: %s\n", err);
            free(err);
            rc = 1;
        } else {
            pr_result res = {0};
            double keep_partial_h = env_num("ZHOST_BACKUP_KEEP_PARTIAL_HOURS", 24);
            rc = do_prune(&c, keep_d, keep_incr_d, keep_partial_h, dry, &res, &err) == 0 ? 0 : 1;
            if (!dry) lock_release(c.st); /* unlinks the lock file: never someone else's */
            for (int i = 0; i < res.deleted; i++) {
                printf("%s %s\n", dry ? "would delete" : "deleted", res.names[i]);
                if (!dry && !no_record) {
                    bool full = false;
                    double ep = 0;
                    zh_backup_parse_name(res.names[i], &ep, &full);
                    bk_runrow rr = {.name = res.names[i], .mode = full ? "full" : "incr", .target = c.st->desc,
                                    .status = "deleted", .ts = ep};
                    record_backup_run(&c, &rec, &rr);
                }
            }
            printf("prune: %d deleted, %d kept (fulls %g d, incrementals %g d)%s\n", res.deleted, res.kept, keep_d,
                   keep_incr_d, dry ? " [dry run]" : "");
            if (rc) fprintf(stderr, "zhost backup prune: %s\n", err);
            if (!no_record && !dry) {
                char *metrics = xprintf("{\"duration\":%.3f,\"deleted\":%d,\"kept\":%d}", zh_now_wall() - started,
                                        res.deleted, res.kept);
                record_job(&c, &rec, "backup_prune", run_id, rc == 0 ? "success" : "error", started, zh_now_wall(),
                           (uint64_t)res.deleted, rc ? err : "", metrics);
                free(metrics);
            }
            for (int i = 0; i < res.deleted; i++) free(res.names[i]);
            free(res.names);
            free(err);
        }
    }
    rec_free(&rec);
    free(c.server_version);
    zh_host_free(h);
    store_free(c.st);
    return rc;
}
