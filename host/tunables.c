/* tunables.c — owns the ZHOST_* environment variables that tune the host (not secrets, not paths,
 * not test clocks): their names, the values each takes, and the one check of all of them when a
 * command starts.
 *
 * Why a check at the start: they were read where they were used, with atoi/atoll/strcmp, and a
 * value that did not read fell back or was half read: ZHOST_SPOOL_MAX_BYTES=2G was a spool of 2
 * bytes (every batch a ClickHouse outage would have spooled was lost), ZHOST_CH_STREAM_BYTES=256k
 * was 256 bytes, ZHOST_CH_ATTEMPTS=three was 4, a misspelt ZHOST_LUA_GC or ZHOST_LOG_LEVEL was
 * ignored. Refusing them before anything runs names the mistake while the operator is looking
 * (`zhost serve` under systemd: the unit fails to start, with the line in the journal), instead of
 * at the first outage.
 *
 * The readers call zh_tunable_number / zh_tunable_is where they need a value; the environment is
 * read each time (tests set these per process), so nothing here is global state. */
#include "tunables.h"
#include "schedule.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { T_COUNT, T_SECONDS, T_BYTES, T_WORD } tunable_kind;

typedef struct {
    const char *name;
    tunable_kind kind;
    double lo, hi;       /* numbers: the range, both ends included */
    const char *words;   /* T_WORD: the accepted words, '|'-separated, case-insensitive */
} tunable;

#define GIB (1024.0 * 1024 * 1024)
static const tunable tunables[] = {
    {"ZHOST_CH_ATTEMPTS", T_COUNT, 1, 100, NULL},
    {"ZHOST_CH_BACKOFF_CAP", T_SECONDS, 0.001, 3600, NULL},
    {"ZHOST_CH_STREAM_BYTES", T_BYTES, 0, 64 * GIB, NULL},
    {"ZHOST_CH_STREAM_SECONDS", T_SECONDS, 0.001, 3600, NULL},
    {"ZHOST_SPOOL_MAX_BYTES", T_BYTES, 1, 1024 * GIB, NULL},
    {"ZHOST_SINK_MAX_AGE", T_SECONDS, 0.001, 86400, NULL},
    {"ZHOST_HUGE_PAGES", T_WORD, 0, 0, "0|1"},
    {"ZHOST_LUA_GC", T_WORD, 0, 0, "generational|incremental"},
    {"ZHOST_LOG_LEVEL", T_WORD, 0, 0, "debug|info|warn|warning|error"},
    {NULL, T_COUNT, 0, 0, NULL},
};

static const tunable *find(const char *name) {
    for (const tunable *t = tunables; t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}

/* "2G", "512 MiB", "256k", "1048576": binary multiples (what a size in memory or on disk means to
 * an operator here), B/iB optional. */
int zh_parse_size(const char *s, double *out) {
    char *end;
    if (!isdigit((unsigned char)*s)) return -1;
    double v = strtod(s, &end);
    while (*end == ' ') end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = GIB; end++; break;
    case 'T': mul = GIB * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    *out = floor(v * mul);
    return 0;
}

static bool word_in(const char *v, const char *words) {
    size_t n = strlen(v);
    for (const char *w = words; *w;) {
        const char *bar = strchr(w, '|');
        size_t k = bar ? (size_t)(bar - w) : strlen(w);
        if (k == n && !strncasecmp(w, v, n)) return true;
        if (!bar) break;
        w = bar + 1;
    }
    return false;
}

/* The value of t in v, or -1 with why filled in. */
static int read_value(const tunable *t, const char *v, double *out, char *why, size_t n) {
    double x = 0;
    int rc = 0;
    switch (t->kind) {
    case T_WORD: {
        if (word_in(v, t->words)) return 0;
        size_t k = (size_t)snprintf(why, n, "one of ");
        for (const char *w = t->words; *w && k + 3 < n; w++) {
            if (*w == '|') why[k++] = ',', why[k++] = ' ';
            else why[k++] = *w;
        }
        why[k < n ? k : n - 1] = 0;
        return -1;
    }
    case T_COUNT: {
        char *end;
        long long k = isdigit((unsigned char)*v) ? strtoll(v, &end, 10) : -1;
        if (k < 0 || *end) rc = -1;
        x = (double)k;
        break;
    }
    case T_SECONDS: rc = zh_sched_parse_duration(v, &x); break; /* the configuration's: 30, 0.5, 2m, 1h 30m */
    case T_BYTES: rc = zh_parse_size(v, &x); break;
    }
    if (rc != 0 || !(x >= t->lo && x <= t->hi)) {
        if (t->kind == T_COUNT) snprintf(why, n, "a whole number from %.0f to %.0f", t->lo, t->hi);
        else if (t->kind == T_SECONDS) snprintf(why, n, "seconds from %g to %g (30, 0.5, 2m)", t->lo, t->hi);
        else snprintf(why, n, "a size in bytes from %.0f (1048576, 512M, 2G)", t->lo);
        return -1;
    }
    *out = x;
    return 0;
}

int zh_tunables_check(char *err, size_t n) {
    for (const tunable *t = tunables; t->name; t++) {
        const char *v = getenv(t->name);
        if (!v || !*v) continue;
        double x;
        char why[96];
        if (read_value(t, v, &x, why, sizeof why) != 0) {
            snprintf(err, n, "%s='%s' does not read: it must be %s (or unset for the default)", t->name, v, why);
            return -1;
        }
    }
    return 0;
}

double zh_tunable_number(const char *name, double dflt) {
    const tunable *t = find(name);
    const char *v = getenv(name);
    if (!t || t->kind == T_WORD || !v || !*v) return dflt;
    double x;
    char why[96];
    return read_value(t, v, &x, why, sizeof why) == 0 ? x : dflt;
}

bool zh_tunable_is(const char *name, const char *word) {
    const char *v = getenv(name);
    return v && !strcasecmp(v, word);
}
