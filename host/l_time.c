/* l_time.c — owns the Lua `time` module and the pure date/time code under it (l_time.h): a TZif
 * reader for the system's IANA zones (with the POSIX-TZ footer for instants after the last listed
 * transition), civil-date arithmetic, ISO-8601 / day-first / RFC 1123 parsing, and formatting.
 *
 * Why not localtime/mktime with TZ set per call: TZ is process-wide state read by every thread
 * and by the logger's timestamps; reading the zone files ourselves keeps each call independent
 * and makes every zone available at once. Loaded zones are cached in the module's state (a
 * userdata upvalue of every function, freed by its __gc), not in a global. */
#include "l_time.h"
#include "zh.h"
#include <lauxlib.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_TZ "Europe/Moscow"
#define MAX_ZONE_FILE (1 << 20)
#define MIN_EPOCH ZH_TIME_MIN_EPOCH
#define MAX_EPOCH ZH_TIME_MAX_EPOCH

/* ---------------------------------------------------------------- civil dates */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
static int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int zh_time_days_in_month(int64_t y, int m) {
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12) return 0;
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Counts in 400-year eras (146097 days each) with March-based years, so February's length only
 * matters at the end of a year. */
int64_t zh_time_days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t mp = (m + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void zh_time_civil_from_days(int64_t days, int64_t *y, int *m, int *d) {
    days += 719468;
    int64_t era = floor_div(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* ---------------------------------------------------------------- zones */

typedef struct {
    char kind; /* 'J' (1..365, no Feb 29), 'N' (0..365), 'M' (month.week.weekday) */
    int a, b, c;
    int32_t secs; /* local time of day of the change; may be negative or past 24h */
} tz_rule_date;

typedef struct {
    char std[16], dst[16];
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    tz_rule_date start, end;
} tz_posix;

typedef struct {
    int32_t off;
    uint8_t isdst;
    uint8_t abbr;
} tz_type;

struct zh_tz {
    char *name;
    int64_t *trans;
    uint8_t *trans_type;
    int ntrans;
    tz_type *types;
    int ntypes;
    char *abbrs;
    int nabbrs;
    int has_posix;
    tz_posix posix;
};

void zh_time_zone_free(zh_tz *z) {
    if (!z) return;
    free(z->name);
    free(z->trans);
    free(z->trans_type);
    free(z->types);
    free(z->abbrs);
    free(z);
}

const char *zh_time_zone_name(const zh_tz *z) { return z ? z->name : "UTC"; }

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static int64_t be64(const unsigned char *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

static const char *posix_name(const char *p, char *out, size_t cap) {
    size_t n = 0;
    if (*p == '<') {
        p++;
        while (*p && *p != '>') {
            if (n + 1 < cap) out[n++] = *p;
            p++;
        }
        if (*p != '>') return NULL;
        p++;
    } else {
        while (isalpha((unsigned char)*p)) {
            if (n + 1 < cap) out[n++] = *p;
            p++;
        }
    }
    out[n] = 0;
    return n >= 3 ? p : NULL;
}

/* [+-]h[h][:mm[:ss]], hours up to 167 (RFC 8536 allows extended rule times). */
static const char *posix_hms(const char *p, int32_t *out) {
    int sign = 1;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (!isdigit((unsigned char)*p)) return NULL;
    int32_t h = 0, m = 0, s = 0;
    while (isdigit((unsigned char)*p) && h < 1000) h = h * 10 + (*p++ - '0');
    if (h > 167) return NULL;
    if (*p == ':') {
        p++;
        if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) return NULL;
        m = (p[0] - '0') * 10 + (p[1] - '0');
        p += 2;
        if (*p == ':') {
            p++;
            if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1])) return NULL;
            s = (p[0] - '0') * 10 + (p[1] - '0');
            p += 2;
        }
    }
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *posix_num(const char *p, int *out) {
    if (!isdigit((unsigned char)*p)) return NULL;
    int v = 0;
    while (isdigit((unsigned char)*p) && v < 10000) v = v * 10 + (*p++ - '0');
    *out = v;
    return p;
}

static const char *posix_date(const char *p, tz_rule_date *r) {
    if (*p == 'M') {
        r->kind = 'M';
        if (!(p = posix_num(p + 1, &r->a)) || *p++ != '.') return NULL;
        if (!(p = posix_num(p, &r->b)) || *p++ != '.') return NULL;
        if (!(p = posix_num(p, &r->c))) return NULL;
        if (r->a < 1 || r->a > 12 || r->b < 1 || r->b > 5 || r->c > 6) return NULL;
    } else if (*p == 'J') {
        r->kind = 'J';
        if (!(p = posix_num(p + 1, &r->a)) || r->a < 1 || r->a > 365) return NULL;
    } else {
        r->kind = 'N';
        if (!(p = posix_num(p, &r->a)) || r->a > 365) return NULL;
    }
    r->secs = 7200;
    if (*p == '/' && !(p = posix_hms(p + 1, &r->secs))) return NULL;
    return p;
}

/* e.g. "CET-1CEST,M3.5.0,M10.5.0/3" or "<+03>-3" or "MSK-3". Note the POSIX sign: west is positive. */
static int posix_parse(const char *s, tz_posix *t) {
    memset(t, 0, sizeof *t);
    const char *p = posix_name(s, t->std, sizeof t->std);
    int32_t off;
    if (!p || !(p = posix_hms(p, &off))) return -1;
    t->std_off = -off;
    if (!*p) return 0;
    if (!(p = posix_name(p, t->dst, sizeof t->dst))) return -1;
    t->has_dst = 1;
    t->dst_off = t->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = posix_hms(p, &off))) return -1;
        t->dst_off = -off;
    }
    if (!*p) { /* no rule given: POSIX's default is the US rule */
        t->start = (tz_rule_date){'M', 3, 2, 0, 7200};
        t->end = (tz_rule_date){'M', 11, 1, 0, 7200};
        return 0;
    }
    if (*p++ != ',' || !(p = posix_date(p, &t->start)) || *p++ != ',' || !(p = posix_date(p, &t->end))) return -1;
    return *p ? -1 : 0;
}

/* Day (since the epoch) a rule date falls on in year y. */
static int64_t rule_day(const tz_rule_date *r, int64_t y) {
    int64_t jan1 = zh_time_days_from_civil(y, 1, 1);
    if (r->kind == 'J') return jan1 + r->a - 1 + (is_leap(y) && r->a >= 60);
    if (r->kind == 'N') return jan1 + r->a;
    int64_t first = zh_time_days_from_civil(y, r->a, 1);
    int dow = (int)floor_mod(first + 4, 7); /* 1970-01-01 was a Thursday */
    int64_t day = first + (r->c - dow + 7) % 7 + (int64_t)(r->b - 1) * 7;
    int dim = zh_time_days_in_month(y, r->a);
    while (day >= first + dim) day -= 7;
    return day;
}

static int posix_isdst(const tz_posix *t, int64_t when) {
    if (!t->has_dst) return 0;
    int64_t y;
    int m, d;
    zh_time_civil_from_days(floor_div(when + t->std_off, 86400), &y, &m, &d);
    int64_t start = rule_day(&t->start, y) * 86400 + t->start.secs - t->std_off;
    int64_t end = rule_day(&t->end, y) * 86400 + t->end.secs - t->dst_off;
    if (start < end) return when >= start && when < end;
    return !(when >= end && when < start); /* southern hemisphere: DST spans the new year */
}

static int zone_parse(zh_tz *z, const unsigned char *buf, size_t len) {
    if (len < 44 || memcmp(buf, "TZif", 4) != 0) return -1;
    int version = buf[4];
    size_t off = 0;
    int width = 4;
    for (int pass = 0; pass < 2; pass++) {
        if (off + 44 > len || memcmp(buf + off, "TZif", 4) != 0) return -1;
        const unsigned char *h = buf + off + 20;
        uint32_t isutcnt = be32(h), isstdcnt = be32(h + 4), leapcnt = be32(h + 8), timecnt = be32(h + 12),
                 typecnt = be32(h + 16), charcnt = be32(h + 20);
        if (timecnt > 100000 || typecnt > 256 || charcnt > 10000 || leapcnt > 10000 || isutcnt > 256 || isstdcnt > 256)
            return -1;
        size_t body = (size_t)timecnt * width + timecnt + (size_t)typecnt * 6 + charcnt +
                      (size_t)leapcnt * (width + 4) + isstdcnt + isutcnt;
        off += 44;
        if (off + body > len) return -1;
        if (pass == 0 && version >= '2') { /* skip the 32-bit block, read the 64-bit one */
            off += body;
            width = 8;
            continue;
        }
        if (typecnt == 0) return -1;
        const unsigned char *p = buf + off;
        z->ntrans = (int)timecnt;
        z->trans = zh_xcalloc(timecnt, sizeof *z->trans);
        z->trans_type = zh_xcalloc(timecnt, 1);
        for (uint32_t i = 0; i < timecnt; i++, p += width) z->trans[i] = width == 8 ? be64(p) : (int32_t)be32(p);
        for (uint32_t i = 0; i < timecnt; i++, p++) {
            if (*p >= typecnt) return -1;
            z->trans_type[i] = *p;
        }
        z->ntypes = (int)typecnt;
        z->types = zh_xcalloc(typecnt, sizeof *z->types);
        for (uint32_t i = 0; i < typecnt; i++, p += 6) {
            z->types[i].off = (int32_t)be32(p);
            z->types[i].isdst = p[4];
            z->types[i].abbr = p[5];
            if (p[5] >= charcnt || z->types[i].off < -26 * 3600 || z->types[i].off > 26 * 3600) return -1;
        }
        z->nabbrs = (int)charcnt;
        z->abbrs = zh_xmalloc(charcnt + 1);
        memcpy(z->abbrs, p, charcnt);
        z->abbrs[charcnt] = 0;
        off += body;
        break;
    }
    if (width == 8 && off < len && buf[off] == '\n') {
        const char *s = (const char *)buf + off + 1;
        const char *nl = memchr(s, '\n', len - off - 1);
        if (nl && nl > s && nl - s < 128) {
            char rule[128];
            memcpy(rule, s, (size_t)(nl - s));
            rule[nl - s] = 0;
            z->has_posix = posix_parse(rule, &z->posix) == 0;
        }
    }
    return 0;
}

static int zone_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 200 || name[0] == '/') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(isalnum((unsigned char)c) || c == '_' || c == '-' || c == '+' || c == '/')) return 0;
        if (c == '/' && (name[i + 1] == '/' || name[i + 1] == 0)) return 0;
    }
    return 1;
}

zh_tz *zh_time_zone_load(const char *name, char **err) {
    if (!zone_name_ok(name)) goto unknown;
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir) dir = "/usr/share/zoneinfo";
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len = 0;
    unsigned char *buf = (unsigned char *)zh_read_file(path, MAX_ZONE_FILE, &len);
    if (!buf) goto unknown;
    zh_tz *z = zh_xcalloc(1, sizeof *z);
    if (zone_parse(z, buf, len) != 0) {
        free(buf);
        zh_time_zone_free(z);
        goto unknown;
    }
    free(buf);
    z->name = zh_xstrdup(name);
    return z;
unknown:
    if (err) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "unknown time zone '%.100s'", name);
        *err = b.data;
    }
    return NULL;
}

int zh_time_utc_offset(const zh_tz *z, int64_t t, const char **abbr) {
    if (!z) {
        if (abbr) *abbr = "UTC";
        return 0;
    }
    if ((z->ntrans == 0 || t >= z->trans[z->ntrans - 1]) && z->has_posix) {
        int dst = posix_isdst(&z->posix, t);
        if (abbr) *abbr = dst ? z->posix.dst : z->posix.std;
        return dst ? z->posix.dst_off : z->posix.std_off;
    }
    const tz_type *ty = &z->types[0];
    if (z->ntrans > 0 && t >= z->trans[0]) {
        int lo = 0, hi = z->ntrans - 1; /* last transition <= t */
        while (lo < hi) {
            int mid = lo + (hi - lo + 1) / 2;
            if (z->trans[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        ty = &z->types[z->trans_type[lo]];
    }
    if (abbr) *abbr = z->abbrs + ty->abbr;
    return ty->off;
}

int zh_time_local_instants(const zh_tz *z, int64_t local, int64_t out[2], int64_t *gap) {
    /* Offsets a day either side cover every real transition (none are closer than two days). */
    int before = zh_time_utc_offset(z, local - 86400, NULL);
    int after = zh_time_utc_offset(z, local + 86400, NULL);
    int64_t tb = local - before, ta = local - after;
    int ok_b = zh_time_utc_offset(z, tb, NULL) == before;
    int ok_a = before != after && zh_time_utc_offset(z, ta, NULL) == after;
    int n = 0;
    if (ok_b && ok_a) {
        out[n++] = tb < ta ? tb : ta;
        out[n++] = tb < ta ? ta : tb;
    } else if (ok_b || ok_a) {
        out[n++] = ok_b ? tb : ta;
    } else if (gap) {
        *gap = tb; /* the offset before the jump moves the time past it */
    }
    return n;
}

int64_t zh_time_from_local(const zh_tz *z, int64_t local) {
    int64_t at[2], gap = 0;
    return zh_time_local_instants(z, local, at, &gap) ? at[0] : gap;
}

/* ---------------------------------------------------------------- parsing */

static int ndigits(const char **pp, const char *end, int min, int max, int *out) {
    const char *p = *pp;
    int v = 0, n = 0;
    while (p < end && n < max && isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n < min) return -1;
    *pp = p;
    *out = v;
    return 0;
}

static void trim_span(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

static int fail(char *err, size_t errlen, const char *s, size_t n, const char *why) {
    if (err && errlen) snprintf(err, errlen, "invalid time '%.*s': %s", (int)(n > 60 ? 60 : n), s, why);
    return -1;
}

int zh_time_parse(const char *s0, size_t n0, const zh_tz *z, int64_t *sec, double *frac, char *err, size_t errlen) {
    const char *s = s0;
    size_t n = n0;
    trim_span(&s, &n);
    const char *p = s, *end = s + n;
    int y, mo, d, hh = 0, mi = 0, ss = 0;
    double fr = 0;
    if (ndigits(&p, end, 4, 4, &y) || p >= end || *p++ != '-' || ndigits(&p, end, 2, 2, &mo) || p >= end ||
        *p++ != '-' || ndigits(&p, end, 2, 2, &d))
        return fail(err, errlen, s, n, "expected YYYY-MM-DD[Thh:mm:ss][Z|+hh:mm]");
    if (mo < 1 || mo > 12 || d < 1 || d > zh_time_days_in_month(y, mo)) return fail(err, errlen, s, n, "no such date");
    int has_off = 0, off = 0;
    if (p < end) {
        if (*p != 'T' && *p != 't' && *p != ' ') return fail(err, errlen, s, n, "expected 'T' or ' ' after the date");
        p++;
        if (ndigits(&p, end, 2, 2, &hh) || p >= end || *p++ != ':' || ndigits(&p, end, 2, 2, &mi))
            return fail(err, errlen, s, n, "expected hh:mm after the date");
        if (p < end && *p == ':') {
            p++;
            if (ndigits(&p, end, 2, 2, &ss)) return fail(err, errlen, s, n, "expected seconds after ':'");
            if (p < end && (*p == '.' || *p == ',')) {
                p++;
                const char *f0 = p;
                double scale = 0.1;
                while (p < end && isdigit((unsigned char)*p)) {
                    if (p - f0 < 9) fr += (*p - '0') * scale, scale /= 10;
                    p++;
                }
                if (p == f0) return fail(err, errlen, s, n, "expected digits after the decimal point");
            }
        }
        if (hh > 23 || mi > 59 || ss > 59) return fail(err, errlen, s, n, "time of day out of range");
        if (p < end && *p == ' ') p++;
        if (p < end) {
            if (*p == 'Z' || *p == 'z') {
                p++;
                has_off = 1;
            } else if (*p == '+' || *p == '-') {
                int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
                if (ndigits(&p, end, 2, 2, &oh)) return fail(err, errlen, s, n, "bad UTC offset");
                if (p < end && *p == ':') p++;
                if (p < end && ndigits(&p, end, 2, 2, &om)) return fail(err, errlen, s, n, "bad UTC offset");
                if (oh > 23 || om > 59) return fail(err, errlen, s, n, "UTC offset out of range");
                off = sign * (oh * 3600 + om * 60);
                has_off = 1;
            }
            if (p != end) return fail(err, errlen, s, n, "unexpected text after the time");
        }
    }
    int64_t local = zh_time_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss;
    *sec = has_off ? local - off : zh_time_from_local(z, local);
    *frac = fr;
    return 0;
}

int zh_time_parse_date(const char *s, size_t n, int64_t *yy, int *mm, int *dd) {
    trim_span(&s, &n);
    const char *p = s, *end = s + n;
    int a, b, c;
    if (ndigits(&p, end, 1, 4, &a)) return -1;
    if (p - s == 4 && p < end && *p == '-') {
        p++;
        if (ndigits(&p, end, 1, 2, &b) || p >= end || *p++ != '-' || ndigits(&p, end, 1, 2, &c)) return -1;
        *yy = a, *mm = b, *dd = c;
    } else if (p - s <= 2 && p < end && *p == '.') {
        p++;
        if (ndigits(&p, end, 1, 2, &b) || p >= end || *p++ != '.') return -1;
        const char *y0 = p;
        if (ndigits(&p, end, 4, 4, &c) || p - y0 != 4) return -1;
        *yy = c, *mm = b, *dd = a;
    } else {
        return -1;
    }
    if (p < end) { /* a time may follow; the date is taken as written */
        if ((*p != ' ' && *p != 'T') || p + 1 >= end || !isdigit((unsigned char)p[1])) return -1;
    }
    if (*mm < 1 || *mm > 12 || *dd < 1 || *dd > zh_time_days_in_month(*yy, *mm)) return -1;
    return 0;
}

static const char *const month_abbr[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const month_full[] = {"January", "February", "March",     "April",   "May",      "June",
                                         "July",    "August",   "September", "October", "November", "December"};
static const char *const wday_abbr[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const wday_full[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};

int zh_time_parse_http(const char *s, size_t n, int64_t *sec) {
    trim_span(&s, &n);
    const char *p = s, *end = s + n;
    if (p < end && isalpha((unsigned char)*p)) { /* optional weekday */
        while (p < end && isalpha((unsigned char)*p)) p++;
        if (p < end && *p == ',') p++;
        while (p < end && *p == ' ') p++;
    }
    int d, y, hh, mi, ss = 0, mo = 0;
    if (ndigits(&p, end, 1, 2, &d)) return -1;
    if (p >= end || (*p != ' ' && *p != '-')) return -1;
    p++;
    if (end - p < 3) return -1;
    for (int i = 0; i < 12; i++)
        if (strncasecmp(p, month_abbr[i], 3) == 0) mo = i + 1;
    if (!mo) return -1;
    p += 3;
    if (p >= end || (*p != ' ' && *p != '-')) return -1;
    p++;
    const char *y0 = p;
    if (ndigits(&p, end, 4, 4, &y) || p - y0 != 4) return -1;
    if (p >= end || *p++ != ' ') return -1;
    if (ndigits(&p, end, 1, 2, &hh) || p >= end || *p++ != ':' || ndigits(&p, end, 2, 2, &mi)) return -1;
    if (p < end && *p == ':') {
        p++;
        if (ndigits(&p, end, 2, 2, &ss)) return -1;
    }
    while (p < end && *p == ' ') p++;
    int off = 0;
    if (end - p >= 3 && strncasecmp(p, "GMT", 3) == 0) p += 3;
    else if (end - p >= 3 && strncasecmp(p, "UTC", 3) == 0) p += 3;
    else if (end - p >= 2 && strncasecmp(p, "UT", 2) == 0) p += 2;
    else if (p < end && (*p == 'Z' || *p == 'z')) p++;
    else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, hhmm;
        const char *o0 = p;
        if (ndigits(&p, end, 4, 4, &hhmm) || p - o0 != 4 || hhmm % 100 > 59) return -1;
        off = sign * (hhmm / 100 * 3600 + hhmm % 100 * 60);
    } else {
        return -1;
    }
    while (p < end && *p == ' ') p++;
    if (p < end && *p == '(') { /* RFC 5322 comment, e.g. "(UTC)" */
        while (p < end && *p != ')') p++;
        if (p < end) p++;
    }
    if (p != end) return -1;
    if (mo < 1 || d < 1 || d > zh_time_days_in_month(y, mo) || hh > 23 || mi > 59 || ss > 60) return -1;
    if (ss == 60) ss = 59; /* a leap second: POSIX time has no room for it */
    *sec = zh_time_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off;
    return 0;
}

/* A month's three-letter name at p (any case): 1..12, or 0. */
static int month_at(const char *p, const char *end) {
    if (end - p < 3) return 0;
    for (int i = 0; i < 12; i++)
        if (strncasecmp(p, month_abbr[i], 3) == 0) return i + 1;
    return 0;
}

/* hh:mm:ss, as all three HTTP-date forms write the time. */
static int hms_at(const char **pp, const char *end, int *hh, int *mi, int *ss) {
    const char *p = *pp;
    if (ndigits(&p, end, 2, 2, hh) || p >= end || *p++ != ':' || ndigits(&p, end, 2, 2, mi) || p >= end ||
        *p++ != ':' || ndigits(&p, end, 2, 2, ss))
        return -1;
    *pp = p;
    return 0;
}

static int skip_spaces(const char **pp, const char *end) {
    const char *p = *pp;
    while (p < end && *p == ' ') p++;
    int n = (int)(p - *pp);
    *pp = p;
    return n;
}

static int civil_to_epoch(int64_t y, int mo, int d, int hh, int mi, int ss, int64_t *sec) {
    if (mo < 1 || d < 1 || d > zh_time_days_in_month(y, mo) || hh > 23 || mi > 59 || ss > 60) return -1;
    if (ss == 60) ss = 59;
    *sec = zh_time_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss;
    return 0;
}

int zh_time_parse_http_date(const char *s, size_t n, int64_t now, int64_t *sec) {
    trim_span(&s, &n);
    /* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (and the other RFC 1123 / 5322 spellings) */
    if (zh_time_parse_http(s, n, sec) == 0) return 0;
    const char *p = s, *end = s + n, *w = p;
    while (p < end && isalpha((unsigned char)*p)) p++;
    size_t wlen = (size_t)(p - w);
    if (wlen < 3) return -1;
    int hh, mi, ss, d, mo, y;
    if (p < end && *p == ',') {
        /* obsolete RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        p++;
        if (!skip_spaces(&p, end) || ndigits(&p, end, 2, 2, &d) || p >= end || *p++ != '-') return -1;
        if (!(mo = month_at(p, end))) return -1;
        p += 3;
        if (p >= end || *p++ != '-' || ndigits(&p, end, 2, 2, &y)) return -1;
        if (!skip_spaces(&p, end) || hms_at(&p, end, &hh, &mi, &ss) || !skip_spaces(&p, end)) return -1;
        if (end - p != 3 || strncasecmp(p, "GMT", 3)) return -1;
        /* RFC 9110 5.6.7: a two-digit year that would be more than 50 years ahead is the most
         * recent past year with those digits. */
        int64_t cy;
        int cm, cd;
        zh_time_civil_from_days(now >= 0 ? now / 86400 : (now - 86399) / 86400, &cy, &cm, &cd);
        int64_t full = cy - cy % 100 + y;
        if (full > cy + 50) full -= 100;
        return civil_to_epoch(full, mo, d, hh, mi, ss, sec);
    }
    /* ANSI C asctime(): "Sun Nov  6 08:49:37 1994" (always GMT) */
    if (wlen != 3 || !skip_spaces(&p, end)) return -1;
    if (!(mo = month_at(p, end))) return -1;
    p += 3;
    if (!skip_spaces(&p, end) || ndigits(&p, end, 1, 2, &d)) return -1;
    if (!skip_spaces(&p, end) || hms_at(&p, end, &hh, &mi, &ss) || !skip_spaces(&p, end)) return -1;
    const char *y0 = p;
    if (ndigits(&p, end, 4, 4, &y) || p - y0 != 4 || p != end) return -1;
    return civil_to_epoch(y, mo, d, hh, mi, ss, sec);
}

/* ---------------------------------------------------------------- formatting */

typedef struct {
    char *out;
    size_t cap, len;
} fmt_out;

static void put(fmt_out *o, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->len + 1 < o->cap) o->out[o->len] = s[i];
}

static void putf(fmt_out *o, const char *fmt, long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    put(o, tmp, (size_t)k);
}

/* Two digits without snprintf: DateTime columns are formatted once or more per row loaded. */
static void put2(fmt_out *o, long long v) {
    if (v < 0 || v > 99) {
        putf(o, "%02lld", v);
        return;
    }
    char tmp[2] = {(char)('0' + v / 10), (char)('0' + v % 10)};
    put(o, tmp, 2);
}

static void put_offset(fmt_out *o, int off, int colon) {
    char tmp[16];
    int a = off < 0 ? -off : off;
    int k = snprintf(tmp, sizeof tmp, colon ? "%c%02d:%02d" : "%c%02d%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
    put(o, tmp, (size_t)k);
}

int zh_time_format(char *out, size_t cap, int64_t t, const char *fmt, const zh_tz *z) {
    if (!strcmp(fmt, "iso")) fmt = "%Y-%m-%dT%H:%M:%S%:z";
    const char *abbr;
    int off = zh_time_utc_offset(z, t, &abbr);
    int64_t local = t + off;
    int64_t days = floor_div(local, 86400), secs = floor_mod(local, 86400);
    int64_t y;
    int m, d;
    zh_time_civil_from_days(days, &y, &m, &d);
    int wday = (int)floor_mod(days + 4, 7);
    int yday = (int)(days - zh_time_days_from_civil(y, 1, 1));
    int H = (int)(secs / 3600), M = (int)(secs / 60 % 60), S = (int)(secs % 60);
    fmt_out o = {out, cap, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, p, 1);
            continue;
        }
        char c = *++p;
        switch (c) {
        case 'Y':
            if (y >= 0 && y <= 9999) put2(&o, y / 100), put2(&o, y % 100);
            else putf(&o, "%04lld", y);
            break;
        case 'y': putf(&o, "%02lld", floor_mod(y, 100)); break;
        case 'm': put2(&o, m); break;
        case 'd': put2(&o, d); break;
        case 'e': putf(&o, "%2lld", d); break;
        case 'H': put2(&o, H); break;
        case 'I': putf(&o, "%02lld", H % 12 ? H % 12 : 12); break;
        case 'p': put(&o, H < 12 ? "AM" : "PM", 2); break;
        case 'M': put2(&o, M); break;
        case 'S': put2(&o, S); break;
        case 'j': putf(&o, "%03lld", yday + 1); break;
        case 'u': putf(&o, "%lld", wday ? wday : 7); break;
        case 'w': putf(&o, "%lld", wday); break;
        case 's': putf(&o, "%lld", (long long)t); break;
        case 'F': putf(&o, "%04lld", y), putf(&o, "-%02lld", m), putf(&o, "-%02lld", d); break;
        case 'D': putf(&o, "%02lld", m), putf(&o, "/%02lld", d), putf(&o, "/%02lld", floor_mod(y, 100)); break;
        case 'T': putf(&o, "%02lld", H), putf(&o, ":%02lld", M), putf(&o, ":%02lld", S); break;
        case 'R': putf(&o, "%02lld", H), putf(&o, ":%02lld", M); break;
        case 'z': put_offset(&o, off, 0); break;
        case ':':
            if (p[1] != 'z') return -1;
            p++;
            put_offset(&o, off, 1);
            break;
        case 'Z': put(&o, abbr, strlen(abbr)); break;
        case 'a': put(&o, wday_abbr[wday], 3); break;
        case 'A': put(&o, wday_full[wday], strlen(wday_full[wday])); break;
        case 'b': put(&o, month_abbr[m - 1], 3); break;
        case 'B': put(&o, month_full[m - 1], strlen(month_full[m - 1])); break;
        case '%': put(&o, "%", 1); break;
        default: return -1;
        }
    }
    if (cap) out[o.len < cap ? o.len : cap - 1] = 0;
    return (int)o.len;
}

/* ---------------------------------------------------------------- Lua module */

typedef struct {
    zh_tz **zones; /* loaded on first use; a process sees a few zones, so a list is enough */
    int n, cap;
} time_state;

static int state_gc(lua_State *L) {
    time_state *st = luaL_checkudata(L, 1, "zhost.time.state");
    for (int i = 0; i < st->n; i++) zh_time_zone_free(st->zones[i]);
    free(st->zones);
    st->zones = NULL;
    st->n = st->cap = 0;
    return 0;
}

/* Zone named by argument idx (default Europe/Moscow). On failure pushes nil, err and returns NULL. */
static const zh_tz *zone_arg(lua_State *L, int idx) {
    const char *name = luaL_optstring(L, idx, DEFAULT_TZ);
    time_state *st = lua_touserdata(L, lua_upvalueindex(1));
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->zones[i]->name, name)) return st->zones[i];
    char *err = NULL;
    zh_tz *z = zh_time_zone_load(name, &err);
    if (!z) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        free(err);
        return NULL;
    }
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 8;
        st->zones = zh_xrealloc(st->zones, (size_t)st->cap * sizeof *st->zones);
    }
    st->zones[st->n++] = z;
    return z;
}

static void push_epoch(lua_State *L, int64_t sec, double frac) {
    if (frac == 0) {
        lua_pushinteger(L, (lua_Integer)sec);
        return;
    }
    /* A float has ~7 decimals left at today's epochs: sec + .9999999 would round up to the next
     * second, and math.floor (time.format) would then show a second that was not written. */
    double v = (double)sec + frac;
    if (v >= (double)sec + 1) v = nextafter((double)sec + 1, (double)sec);
    lua_pushnumber(L, v);
}

/* Epoch argument as whole seconds; 0 (with nil, err pushed) when out of range. */
static int epoch_arg(lua_State *L, int idx, int64_t *out) {
    if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        if (v >= MIN_EPOCH && v <= MAX_EPOCH) {
            *out = v;
            return 1;
        }
    } else {
        double v = luaL_checknumber(L, idx);
        if (v >= (double)MIN_EPOCH && v < (double)MAX_EPOCH + 1) {
            *out = (int64_t)floor(v);
            return 1;
        }
    }
    lua_pushnil(L);
    lua_pushstring(L, "time out of range (years 0000-9999)");
    return 0;
}

static void push_date(lua_State *L, int64_t days) {
    int64_t y;
    int m, d;
    zh_time_civil_from_days(days, &y, &m, &d);
    char buf[32];
    int k = snprintf(buf, sizeof buf, "%04lld-%02d-%02d", (long long)y, m, d);
    lua_pushlstring(L, buf, (size_t)k);
}

static int64_t today_days(const zh_tz *z) {
    int64_t now = (int64_t)floor(zh_now_wall());
    return floor_div(now + zh_time_utc_offset(z, now, NULL), 86400);
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, zh_now_wall());
    return 1;
}

static int l_today(lua_State *L) {
    const zh_tz *z = zone_arg(L, 1);
    if (!z) return 2;
    push_date(L, today_days(z));
    return 1;
}

static int l_parse(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const zh_tz *z = zone_arg(L, 2);
    if (!z) return 2;
    int64_t sec;
    double frac;
    char err[160];
    if (zh_time_parse(s, n, z, &sec, &frac, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    push_epoch(L, sec, frac);
    return 1;
}

static int push_formatted(lua_State *L, int64_t t, const char *fmt, const zh_tz *z) {
    char small[128];
    int n = zh_time_format(small, sizeof small, t, fmt, z);
    if (n < 0) return luaL_error(L, "time.format: unsupported conversion in '%s'", fmt);
    if ((size_t)n < sizeof small) {
        lua_pushlstring(L, small, (size_t)n);
        return 1;
    }
    char *big = zh_xmalloc((size_t)n + 1);
    zh_time_format(big, (size_t)n + 1, t, fmt, z);
    lua_pushlstring(L, big, (size_t)n);
    free(big);
    return 1;
}

static int l_format(lua_State *L) {
    int64_t t;
    const char *fmt = luaL_optstring(L, 2, "%Y-%m-%d %H:%M:%S");
    const zh_tz *z = zone_arg(L, 3);
    if (!z) return 2;
    if (!epoch_arg(L, 1, &t)) return 2;
    return push_formatted(L, t, fmt, z);
}

static int l_date(lua_State *L) {
    int64_t t;
    const zh_tz *z = zone_arg(L, 2);
    if (!z) return 2;
    if (!epoch_arg(L, 1, &t)) return 2;
    return push_formatted(L, t, "%Y-%m-%d", z);
}

/* Days since the epoch of a date argument; 0 (with nil, err pushed) when it is not a date. */
static int date_arg(lua_State *L, int idx, const char *what, int64_t *days) {
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    int64_t y;
    int m, d;
    if (zh_time_parse_date(s, n, &y, &m, &d) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid %s '%s' (expected YYYY-MM-DD or DD.MM.YYYY)", what, s);
        return 0;
    }
    *days = zh_time_days_from_civil(y, m, d);
    return 1;
}

static int l_parse_date(lua_State *L) {
    int64_t days;
    if (!date_arg(L, 1, "date", &days)) return 2;
    push_date(L, days);
    return 1;
}

static int l_add_days(lua_State *L) {
    int64_t days;
    lua_Integer k = luaL_checkinteger(L, 2);
    if (!date_arg(L, 1, "date", &days)) return 2;
    if (k < -3000000 || k > 3000000 || days + k < -719528 || days + k > 2932896) {
        lua_pushnil(L);
        lua_pushstring(L, "date out of range (years 0000-9999)");
        return 2;
    }
    push_date(L, days + k);
    return 1;
}

static int l_days_between(lua_State *L) {
    int64_t a, b;
    if (!date_arg(L, 1, "date", &a) || !date_arg(L, 2, "date", &b)) return 2;
    lua_pushinteger(L, (lua_Integer)(b - a));
    return 1;
}

static int l_http_date(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        int64_t t;
        if (!epoch_arg(L, 1, &t)) return 2;
        return push_formatted(L, t, "%a, %d %b %Y %H:%M:%S GMT", NULL);
    }
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t sec;
    /* the obsolete forms too (RFC 9110 5.6.7: recipients must read them): a script reading a
     * Retry-After, Expires or Last-Modified itself gets what the host's own Retry-After reads */
    if (zh_time_parse_http_date(s, n, (int64_t)time(NULL), &sec) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid HTTP date '%s'", s);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)sec);
    return 1;
}

/* Optional field of the window table as a non-empty string, or NULL. The value stays on the
 * stack so the string outlives the call. */
static const char *opt_field_str(lua_State *L, int t, const char *key) {
    lua_getfield(L, t, key);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1)) luaL_error(L, "time.window: %s must be a string", key);
    return s && *s ? s : NULL;
}

/* days and default_days: integers, or numeric strings as they come from the command line.
 * Returns 1 when set, 0 when absent, -1 when not a whole number. */
static int opt_field_int(lua_State *L, int t, const char *key, lua_Integer *out) {
    lua_getfield(L, t, key);
    int r = 0;
    if (lua_type(L, -1) == LUA_TSTRING && !*lua_tostring(L, -1)) r = 0;
    else if (!lua_isnil(L, -1)) {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        r = ok ? 1 : -1;
        if (ok) *out = v;
    }
    lua_pop(L, 1);
    return r;
}

static int window_err(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int l_window(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *since = opt_field_str(L, 1, "since"), *to = opt_field_str(L, 1, "to");
    const char *tzname = opt_field_str(L, 1, "tz");
    lua_Integer days = 0, defdays = 1;
    int has_days = opt_field_int(L, 1, "days", &days);
    int has_def = opt_field_int(L, 1, "default_days", &defdays);
    if (has_days < 0) return window_err(L, "window: days must be a whole number");
    if (has_def < 0) return luaL_error(L, "time.window: default_days must be a whole number");
    if (has_days && since) return window_err(L, "window: give either days or since, not both");
    lua_pushstring(L, tzname ? tzname : DEFAULT_TZ);
    const zh_tz *z = zone_arg(L, lua_gettop(L));
    if (!z) return 2;
    int64_t to_d, since_d;
    if (to) {
        lua_pushstring(L, to);
        if (!date_arg(L, lua_gettop(L), "to date", &to_d)) return 2;
    } else {
        to_d = today_days(z);
    }
    if (since) {
        lua_pushstring(L, since);
        if (!date_arg(L, lua_gettop(L), "since date", &since_d)) return 2;
    } else {
        lua_Integer k = has_days ? days : defdays;
        if (k < 1 || k > 36600) return window_err(L, has_days ? "window: days must be between 1 and 36600"
                                                             : "window: default_days must be between 1 and 36600");
        since_d = to_d - (k - 1);
    }
    if (since_d > to_d) {
        push_date(L, since_d);
        push_date(L, to_d);
        lua_pushnil(L);
        lua_pushfstring(L, "window: since %s is after to %s", lua_tostring(L, -3), lua_tostring(L, -2));
        return 2;
    }
    push_date(L, since_d);
    push_date(L, to_d);
    return 2;
}

int zh_open_time(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", l_now},           {"today", l_today},       {"parse", l_parse},
        {"format", l_format},     {"date", l_date},         {"add_days", l_add_days},
        {"days_between", l_days_between}, {"parse_date", l_parse_date}, {"http_date", l_http_date},
        {"window", l_window},     {NULL, NULL},
    };
    luaL_newlibtable(L, fns);
    time_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    if (luaL_newmetatable(L, "zhost.time.state")) {
        lua_pushcfunction(L, state_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
