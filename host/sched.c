/* sched.c — owns schedule arithmetic: parsing cron expressions, intervals and durations, the next
 * fire time in a job's IANA zone (DST rules in schedule.h), and ISO-8601 times with offsets.
 *
 * The search runs on local civil time (seconds since 1970-01-01 00:00 *local*), where cron fields
 * live, and converts each candidate back to UTC, so a transition can never make a minute fire
 * twice or skip a day. Zones and civil dates come from the TZif reader in l_time.c, so nothing
 * here touches the process-wide TZ. */
#include "schedule.h"
#include "l_time.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- civil calendar (days since 1970-01-01, proleptic Gregorian) ---- */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* ---- time zones ---- */

/* Loaded zones, by name. Global mutable state, for these reasons: the schedule functions are pure
 * (no host to keep a cache in), a zone never changes once loaded, everything here runs on the loop
 * thread, and reading and parsing the zone file on every call made each /healthz answer (which
 * formats the time) measurably slower. Bounded: past ZONE_CACHE names a zone is loaded per call. */
#define ZONE_CACHE 16
static struct {
    char name[64];
    zh_tz *zone;
} zone_cache[ZONE_CACHE];

/* The zone named tz, or NULL (read as UTC) when it cannot be loaded. *owned is set when the caller
 * must free it (the cache was full). */
static zh_tz *zone_get(const char *tz, bool *owned) {
    *owned = false;
    if (!tz || strlen(tz) >= sizeof zone_cache[0].name) return NULL;
    int i = 0;
    for (; i < ZONE_CACHE && zone_cache[i].zone; i++)
        if (!strcmp(zone_cache[i].name, tz)) return zone_cache[i].zone;
    zh_tz *z = zh_time_zone_load(tz, NULL);
    if (!z) return NULL;
    if (i == ZONE_CACHE) {
        *owned = true;
        return z;
    }
    snprintf(zone_cache[i].name, sizeof zone_cache[i].name, "%s", tz);
    zone_cache[i].zone = z;
    return z;
}

static void zone_put(zh_tz *z, bool owned) {
    if (owned) zh_time_zone_free(z);
}

bool zh_sched_zone_valid(const char *tz) {
    bool owned;
    zh_tz *z = zone_get(tz, &owned);
    zone_put(z, owned);
    return z != NULL;
}

int zh_sched_utc_offset(const char *tz, int64_t t) {
    bool owned;
    zh_tz *z = zone_get(tz, &owned);
    int off = zh_time_utc_offset(z, t, NULL); /* an unknown zone reads as UTC */
    zone_put(z, owned);
    return off;
}

void zh_sched_format_iso(int64_t t, const char *tz, char *out, size_t n) {
    int off = zh_sched_utc_offset(tz && *tz ? tz : "UTC", t);
    int64_t local = t + off, days = floor_div(local, 86400), secs = local - days * 86400, y;
    int m, d;
    zh_time_civil_from_days(days, &y, &m, &d);
    int aoff = off < 0 ? -off : off;
    snprintf(out, n, "%04lld-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", (long long)y, m, d, (int)(secs / 3600),
             (int)(secs % 3600 / 60), (int)(secs % 60), off < 0 ? '-' : '+', aoff / 3600, aoff % 3600 / 60);
}

static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

int zh_sched_parse_iso(const char *s, int64_t *out) {
    int y, mo, d, H, M, S = 0, oh = 0, om = 0, sign = 1;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d)) return -1;
    if (*p != 'T' && *p != ' ') return -1;
    p++;
    if (digits(&p, 2, &H) || *p++ != ':' || digits(&p, 2, &M)) return -1;
    if (*p == ':') {
        p++;
        if (digits(&p, 2, &S)) return -1;
    }
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits(&p, 2, &oh)) return -1;
        if (*p == ':') p++;
        if (digits(&p, 2, &om)) return -1;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || H > 23 || M > 59 || S > 60) return -1;
    *out = zh_time_days_from_civil(y, mo, d) * 86400 + H * 3600 + M * 60 + S - sign * (oh * 3600 + om * 60);
    return 0;
}

/* ---- durations ---- */

int zh_sched_parse_duration(const char *s, double *out) {
    const char *p = s;
    double total = 0;
    bool any = false;
    while (*p == ' ') p++;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || v < 0) return -1;
        p = end;
        double mul = 1;
        if (!strncmp(p, "ms", 2)) mul = 0.001, p += 2;
        else if (*p == 's') p++;
        else if (*p == 'm') mul = 60, p++;
        else if (*p == 'h') mul = 3600, p++;
        else if (*p == 'd') mul = 86400, p++;
        else if (*p && *p != ' ') return -1;
        total += v * mul;
        any = true;
        while (*p == ' ') p++;
    }
    if (!any) return -1;
    *out = total;
    return 0;
}

/* ---- cron parsing ---- */

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static int field_value(const char **p, int lo, int hi, const char *const *names, int nnames, int name_base, int *out) {
    if (isdigit((unsigned char)**p)) {
        int v = 0, nd = 0;
        while (isdigit((unsigned char)**p) && nd < 4) v = v * 10 + (*(*p)++ - '0'), nd++;
        if (isdigit((unsigned char)**p) || v < lo || v > hi) return -1;
        *out = v;
        return 0;
    }
    if (names && isalpha((unsigned char)**p)) {
        for (int i = 0; i < nnames; i++) {
            if (!strncasecmp(*p, names[i], 3) && !isalpha((unsigned char)(*p)[3])) {
                *p += 3;
                *out = i + name_base;
                return 0;
            }
        }
    }
    return -1;
}

/* One field: comma-separated items of `*`, `a`, `a-b`, each optionally `/step`. */
static int parse_field(const char *f, int lo, int hi, const char *const *names, int nnames, int name_base,
                       uint64_t *bits, bool *star) {
    const char *p = f;
    *bits = 0;
    *star = *p == '*';
    for (;;) {
        int a, b, step = 1;
        bool range_given = false;
        if (*p == '*') {
            a = lo;
            b = hi;
            p++;
        } else {
            if (field_value(&p, lo, hi, names, nnames, name_base, &a)) return -1;
            b = a;
            if (*p == '-') {
                p++;
                if (field_value(&p, lo, hi, names, nnames, name_base, &b)) return -1;
                range_given = true;
            }
        }
        if (*p == '/') {
            p++;
            if (!isdigit((unsigned char)*p)) return -1;
            step = 0;
            while (isdigit((unsigned char)*p) && step < 1000) step = step * 10 + (*p++ - '0');
            if (step < 1 || step > hi) return -1;
            if (!range_given && f[0] != '*' && b == a) b = hi; /* "5/15" means 5-max/15 */
        }
        if (a > b) return -1;
        for (int v = a; v <= b; v += step) *bits |= (uint64_t)1 << v;
        if (*p == ',') {
            p++;
            continue;
        }
        return *p ? -1 : 0;
    }
}

static int set_err(char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err) snprintf(err, errlen, fmt, arg);
    return -1;
}

int zh_sched_parse(const char *text, const char *tz, zh_schedule *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    while (*text == ' ' || *text == '\t') text++;
    snprintf(out->text, sizeof out->text, "%s", text);
    size_t tl = strlen(out->text);
    while (tl && (out->text[tl - 1] == ' ' || out->text[tl - 1] == '\t')) out->text[--tl] = 0;
    if (!tz || !*tz) tz = "UTC";
    if (!zh_sched_zone_valid(tz)) return set_err(err, errlen, "unknown time zone '%s' (an IANA name like Europe/Moscow)", tz);
    snprintf(out->tz, sizeof out->tz, "%s", tz);
    if (!strncasecmp(out->text, "every ", 6)) {
        double s;
        if (zh_sched_parse_duration(out->text + 6, &s) || s < 1 || s > 366 * 86400.0)
            return set_err(err, errlen, "bad interval '%s' (e.g. every 15m, every 4h, every 90s)", out->text);
        out->kind = ZH_SCHED_INTERVAL;
        out->interval_s = (int64_t)s;
        return 0;
    }
    const char *expr = out->text;
    static const struct { const char *name, *expr; } macros[] = {
        {"@hourly", "0 * * * *"}, {"@daily", "0 0 * * *"}, {"@midnight", "0 0 * * *"},
        {"@weekly", "0 0 * * 0"}, {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
    };
    if (expr[0] == '@') {
        const char *found = NULL;
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (!strcasecmp(expr, macros[i].name)) found = macros[i].expr;
        if (!found) return set_err(err, errlen, "unknown schedule '%s'", expr);
        expr = found;
    }
    char fields[5][64];
    int nf = 0;
    const char *p = expr;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        if (nf == 5) return set_err(err, errlen, "cron expression '%s' has more than 5 fields", out->text);
        size_t n = 0;
        while (*p && *p != ' ' && *p != '\t') {
            if (n + 1 >= sizeof fields[0]) return set_err(err, errlen, "cron field too long in '%s'", out->text);
            fields[nf][n++] = *p++;
        }
        fields[nf++][n] = 0;
    }
    if (nf != 5)
        return set_err(err, errlen, "cron expression '%s' needs 5 fields (minute hour day month weekday) or 'every N'", out->text);
    uint64_t bits;
    bool star;
    if (parse_field(fields[0], 0, 59, NULL, 0, 0, &bits, &star)) return set_err(err, errlen, "bad minute field '%s'", fields[0]);
    out->minutes = bits;
    if (parse_field(fields[1], 0, 23, NULL, 0, 0, &bits, &star)) return set_err(err, errlen, "bad hour field '%s'", fields[1]);
    out->hours = (uint32_t)bits;
    if (parse_field(fields[2], 1, 31, NULL, 0, 0, &bits, &out->dom_any))
        return set_err(err, errlen, "bad day-of-month field '%s'", fields[2]);
    out->doms = (uint32_t)bits;
    if (parse_field(fields[3], 1, 12, month_names, 12, 1, &bits, &star)) return set_err(err, errlen, "bad month field '%s'", fields[3]);
    out->months = (uint16_t)bits;
    if (parse_field(fields[4], 0, 7, dow_names, 7, 0, &bits, &out->dow_any))
        return set_err(err, errlen, "bad day-of-week field '%s'", fields[4]);
    if (bits & (1u << 7)) bits = (bits | 1u) & 0x7f; /* 7 is Sunday too */
    out->dows = (uint8_t)bits;
    out->kind = ZH_SCHED_CRON;
    return 0;
}

/* ---- next fire ---- */

static bool day_matches(const zh_schedule *s, int64_t days, int dom) {
    int dow = (int)(((days % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
    bool dom_ok = (s->doms >> dom) & 1, dow_ok = (s->dows >> dow) & 1;
    if (s->dom_any || s->dow_any) return dom_ok && dow_ok;
    return dom_ok || dow_ok; /* both restricted: either matches (classic cron) */
}

/* First local civil minute >= local that matches the fields, or -1 beyond the horizon. */
static int64_t next_civil(const zh_schedule *s, int64_t local) {
    int64_t days = floor_div(local, 86400);
    int64_t secs = local - days * 86400;
    int H = (int)(secs / 3600), M = (int)(secs % 3600 / 60);
    int64_t limit = days + 366 * 8;
    while (days <= limit) {
        int64_t y;
        int m, d;
        zh_time_civil_from_days(days, &y, &m, &d);
        if (!((s->months >> m) & 1)) {
            days = m == 12 ? zh_time_days_from_civil(y + 1, 1, 1) : zh_time_days_from_civil(y, m + 1, 1);
            H = M = 0;
            continue;
        }
        if (!day_matches(s, days, d)) {
            days++;
            H = M = 0;
            continue;
        }
        while (H < 24 && !((s->hours >> H) & 1)) H++, M = 0;
        if (H == 24) {
            days++;
            H = M = 0;
            continue;
        }
        while (M < 60 && !((s->minutes >> M) & 1)) M++;
        if (M == 60) {
            H++;
            M = 0;
            if (H == 24) {
                days++;
                H = 0;
            }
            continue;
        }
        return days * 86400 + H * 3600 + M * 60;
    }
    return -1;
}

/* The earliest UTC instant >= from whose local time is `local`; for a local time skipped by a
 * forward jump, the instant read with the offset before the jump. -1 when neither applies. */
static int64_t civil_to_utc(const zh_tz *z, int64_t local, int64_t from) {
    int64_t at[2], gap = -1;
    int n = zh_time_local_instants(z, local, at, &gap);
    for (int i = 0; i < n; i++)
        if (at[i] >= from) return at[i];
    if (n > 0) return -1; /* it exists, only before `from` */
    return gap >= from ? gap : -1;
}

int64_t zh_sched_next(const zh_schedule *s, int64_t after) {
    if (s->kind == ZH_SCHED_INTERVAL) {
        if (s->interval_s <= 0) return -1;
        return (floor_div(after, s->interval_s) + 1) * s->interval_s;
    }
    int64_t from = (floor_div(after, 60) + 1) * 60;
    bool owned;
    zh_tz *z = zone_get(s->tz, &owned); /* NULL (zone gone since parsing) reads as UTC */
    int64_t local = from + zh_time_utc_offset(z, from, NULL), u = -1;
    /* Bounded: each round moves `local` forward by at least a minute; only the repeated hour of a
     * backward transition can need more than one round. */
    for (int i = 0; i < 200 && u < 0; i++) {
        int64_t c = next_civil(s, local);
        if (c < 0) break;
        u = civil_to_utc(z, c, from);
        local = c + 60;
    }
    zone_put(z, owned);
    return u;
}
