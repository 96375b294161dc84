/* util.c — owns the small shared helpers: checked allocation, the growable buffer, clocks. */
#include "zh.h"
#include "commands.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

void zh_buf_init(zh_buf *b) { b->data = NULL; b->len = b->cap = 0; }

void zh_buf_free(zh_buf *b) {
    free(b->data);
    zh_buf_init(b);
}

void zh_buf_reserve(zh_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = zh_xrealloc(b->data, cap);
    b->cap = cap;
}

void zh_buf_add(zh_buf *b, const void *p, size_t n) {
    zh_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void zh_buf_adds(zh_buf *b, const char *s) { zh_buf_add(b, s, strlen(s)); }

void zh_buf_addc(zh_buf *b, char c) {
    zh_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = 0;
}

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
    if (*i + 1 >= argc) {
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
