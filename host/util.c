/* util.c — owns the small shared helpers: checked allocation, the growable buffer, JSON string
 * literals, directory creation, atomic file replacement, clocks, option values. */
#include "zh.h"
#include "commands.h"
#include "tunables.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(void) {
    fputs("zhost: out of memory\n", stderr);
    abort();
}

void *zh_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *zh_xcalloc(size_t n, size_t m) {
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) oom();
    return p;
}

void *zh_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom();
    return q;
}

char *zh_xstrdup(const char *s) { return zh_xstrndup(s, strlen(s)); }

char *zh_xstrndup(const char *s, size_t n) {
    char *p = zh_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void zh_buf_init(zh_buf *b) {
    b->data = NULL;
    b->len = b->cap = 0;
    b->mapped = false;
}

void zh_buf_free(zh_buf *b) {
    if (b->mapped) munmap(b->data, b->cap);
    else free(b->data);
    zh_buf_init(b);
}

#define HUGE_PAGE (2u << 20)

/* size bytes (a multiple of HUGE_PAGE) at a HUGE_PAGE boundary: only whole aligned 2 MiB ranges
 * can be huge pages. NULL when the kernel says no. */
static char *map_aligned(size_t size) {
    size_t span = size + HUGE_PAGE;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t at = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    size_t head = at - (uintptr_t)p, tail = span - head - size;
    if (head) munmap(p, head);
    if (tail) munmap((char *)at + size, tail);
#ifdef MADV_HUGEPAGE
    madvise((void *)at, size, MADV_HUGEPAGE); /* a hint: THP may be off, then 4 KiB pages */
#endif
    return (char *)at;
}

void zh_buf_map(zh_buf *b, size_t cap) {
    /* $ZHOST_HUGE_PAGES=0: the operator's way out where huge pages misbehave (direct compaction
     * stalls on a fragmented host, say); read on each call (once per big buffer), no state kept */
    if (zh_tunable_is("ZHOST_HUGE_PAGES", "0")) return;
    if (cap < b->len + 1) cap = b->len + 1;
    cap = (cap + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (b->mapped && b->cap >= cap) return;
    char *p = map_aligned(cap);
    if (!p) return;
    if (b->len) memcpy(p, b->data, b->len);
    p[b->len] = 0;
    if (b->mapped) munmap(b->data, b->cap);
    else free(b->data);
    b->data = p;
    b->cap = cap;
    b->mapped = true;
}

void zh_buf_reserve(zh_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    if (b->mapped) {
        size_t was = b->cap;
        zh_buf_map(b, cap);
        if (b->cap != was) return;
        /* no bigger mapping to be had: back to the heap */
        char *p = zh_xmalloc(cap);
        memcpy(p, b->data, b->len + 1);
        munmap(b->data, b->cap);
        b->data = p;
        b->cap = cap;
        b->mapped = false;
        return;
    }
    b->data = zh_xrealloc(b->data, cap);
    b->cap = cap;
}

void zh_buf_add_slow(zh_buf *b, const void *p, size_t n) {
    zh_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void zh_buf_adds(zh_buf *b, const char *s) { zh_buf_add(b, s, strlen(s)); }


void zh_buf_printf(zh_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { va_end(ap2); return; }
    if ((size_t)n < sizeof tmp) {
        zh_buf_add(b, tmp, (size_t)n);
    } else {
        zh_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

const char *zh_buf_cstr(zh_buf *b) {
    if (!b->data) zh_buf_reserve(b, 0), b->data[0] = 0;
    return b->data;
}

void zh_buf_json_str(zh_buf *b, const char *s) {
    zh_buf_addc(b, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': zh_buf_adds(b, "\\\""); break;
        case '\\': zh_buf_adds(b, "\\\\"); break;
        case '\n': zh_buf_adds(b, "\\n"); break;
        case '\r': zh_buf_adds(b, "\\r"); break;
        case '\t': zh_buf_adds(b, "\\t"); break;
        case '<': zh_buf_adds(b, "\\u003c"); break;
        default:
            if (*p < 0x20) zh_buf_printf(b, "\\u%04x", *p);
            else zh_buf_addc(b, (char)*p);
        }
    }
    zh_buf_addc(b, '"');
}

/* ---- files ---- */

char *zh_read_file(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    zh_buf b;
    zh_buf_init(&b);
    char chunk[16384];
    size_t n;
    errno = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        zh_buf_add(&b, chunk, n);
        if (max && b.len > max) break;
    }
    int e = ferror(f) ? (errno ? errno : EIO) : max && b.len > max ? EFBIG : 0;
    fclose(f);
    if (e) {
        zh_buf_free(&b);
        errno = e;
        return NULL;
    }
    zh_buf_cstr(&b);
    *len = b.len;
    return b.data;
}

int zh_mkdirs(const char *path, unsigned mode) {
    char *tmp = zh_xstrdup(path);
    int rc = 0;
    for (char *p = tmp + 1; *p && rc == 0; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST) rc = -1;
        *p = '/';
    }
    if (rc == 0 && mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST) rc = -1;
    int e = errno;
    free(tmp);
    errno = e;
    return rc;
}

static char *errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *errorf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = zh_xmalloc(n > 0 ? (size_t)n + 1 : 1);
    if (n > 0) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    else s[0] = 0;
    va_end(ap2);
    return s;
}

static void set_err(char **err, char *msg) {
    if (err) *err = msg;
    else free(msg);
}

/* The directory part of path ("." when there is none, "/" for a file at the root). */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return zh_xstrdup(".");
    if (slash == path) return zh_xstrdup("/");
    return zh_xstrndup(path, (size_t)(slash - path));
}

int zh_atomic_open(zh_atomic_file *f, const char *path, unsigned mode, unsigned dir_mode, char **err) {
    f->path = zh_xstrdup(path);
    f->tmp = NULL;
    f->fd = -1;
    if (dir_mode) {
        char *dir = dir_of(path);
        zh_mkdirs(dir, dir_mode); /* a failure shows as the open below failing */
        free(dir);
    }
    zh_buf t;
    zh_buf_init(&t);
    zh_buf_printf(&t, "%s.tmp.XXXXXX", path);
    f->tmp = t.data;
    /* mkstemp: a fresh name in the same directory, so rename() cannot cross file systems and two
     * writers never share a temporary file. */
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        set_err(err, errorf("%s: cannot create a temporary file next to it: %s", path, strerror(errno)));
        goto fail;
    }
    if (fchmod(f->fd, (mode_t)mode) != 0) {
        set_err(err, errorf("%s: chmod %o: %s", f->tmp, mode, strerror(errno)));
        close(f->fd);
        unlink(f->tmp);
        goto fail;
    }
    return 0;
fail:
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
    return -1;
}

int zh_atomic_write(zh_atomic_file *f, const void *p, size_t n, char **err) {
    const char *c = p;
    while (n) {
        ssize_t k = write(f->fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            set_err(err, errorf("%s: write: %s", f->tmp, k < 0 ? strerror(errno) : "no progress"));
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static void atomic_release(zh_atomic_file *f) {
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
}

void zh_atomic_abort(zh_atomic_file *f) {
    if (!f->tmp) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    atomic_release(f);
}

int zh_atomic_commit(zh_atomic_file *f, char **err) {
    if (fsync(f->fd) != 0) {
        set_err(err, errorf("%s: fsync: %s", f->tmp, strerror(errno)));
        zh_atomic_abort(f);
        return -1;
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        set_err(err, errorf("%s: close: %s", f->tmp, strerror(errno)));
        zh_atomic_abort(f);
        return -1;
    }
    if (rename(f->tmp, f->path) != 0) {
        set_err(err, errorf("%s: rename into place: %s", f->path, strerror(errno)));
        zh_atomic_abort(f);
        return -1;
    }
    /* The rename is durable only once the directory entry is on disk. */
    char *dir = dir_of(f->path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    atomic_release(f);
    return 0;
}

int zh_write_atomic(const char *path, const void *data, size_t len, unsigned mode, char **err) {
    zh_atomic_file f;
    if (zh_atomic_open(&f, path, mode, 0, err) != 0) return -1;
    if (zh_atomic_write(&f, data, len, err) != 0) {
        zh_atomic_abort(&f);
        return -1;
    }
    return zh_atomic_commit(&f, err);
}

double zh_now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double zh_now_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != 0) return NULL;
    /* `--secrets --dry-run` would otherwise take the next option as the value and drop it. */
    if (*i + 1 >= argc || (argv[*i + 1][0] == '-' && argv[*i + 1][1] == '-')) {
        fprintf(stderr, "zhost: %s needs a value\n", name);
        exit(2);
    }
    (*i)++;
    return argv[*i];
}

size_t zh_utf8_cut(const char *s, size_t len, size_t max) {
    if (len <= max) return len;
    size_t n = max;
    /* Step back over continuation bytes so a multi-byte character is never split. */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return n;
}
