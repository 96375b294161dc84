/* Unit tests for l_time.c: civil dates, TZif zones (Moscow's 2011/2014 changes, Berlin's DST both
 * ways, the POSIX footer after 2037, a southern zone), parsing and formatting. Expected instants
 * were computed independently with Python's zoneinfo. */
#include "l_time.h"
#include "zt.h"
#include <stdlib.h>

static zh_tz *zone(const char *name) {
    char *err = NULL;
    zh_tz *z = zh_time_zone_load(name, &err);
    if (!z) fprintf(stderr, "cannot load %s: %s\n", name, err ? err : "?");
    free(err);
    return z;
}

static int64_t local(const zh_tz *z, int y, int m, int d, int hh, int mi, int ss) {
    return zh_time_from_local(z, zh_time_days_from_civil(y, m, d) * 86400 + hh * 3600 + mi * 60 + ss);
}

static void civil_dates(void) {
    ZT_EQ_INT(zh_time_days_from_civil(1970, 1, 1), 0);
    ZT_EQ_INT(zh_time_days_from_civil(2000, 3, 1), 11017);
    ZT_EQ_INT(zh_time_days_from_civil(1969, 12, 31), -1);
    ZT_EQ_INT(zh_time_days_from_civil(0, 1, 1), -719528);
    for (int64_t days = -800000; days < 3000000; days += 997) {
        int64_t y;
        int m, d;
        zh_time_civil_from_days(days, &y, &m, &d);
        ZT_EQ_INT(zh_time_days_from_civil(y, m, d), days);
    }
    ZT_EQ_INT(zh_time_days_in_month(2024, 2), 29);
    ZT_EQ_INT(zh_time_days_in_month(1900, 2), 28);
    ZT_EQ_INT(zh_time_days_in_month(2000, 2), 29);
    ZT_EQ_INT(zh_time_days_in_month(2025, 13), 0);
}

static void moscow_history(void) {
    zh_tz *z = zone("Europe/Moscow");
    ZT_CHECK(z != NULL);
    if (!z) return;
    ZT_EQ_INT(local(z, 2010, 7, 1, 12, 0, 0), 1277971200);     /* MSD +04 */
    ZT_EQ_INT(local(z, 2010, 12, 1, 12, 0, 0), 1291194000);    /* MSK +03 */
    ZT_EQ_INT(local(z, 2011, 3, 27, 1, 59, 59), 1301180399);   /* last second of +03 */
    ZT_EQ_INT(local(z, 2011, 3, 27, 3, 0, 0), 1301180400);     /* permanent +04 from here */
    ZT_EQ_INT(local(z, 2011, 3, 27, 2, 30, 0), 1301180400 + 1800); /* in the gap: moved forward */
    ZT_EQ_INT(local(z, 2012, 7, 1, 12, 0, 0), 1341129600);     /* summer 2012 still +04 */
    ZT_EQ_INT(zh_time_utc_offset(z, 1356998400, NULL), 4 * 3600); /* winter 2013: +04, no DST */
    ZT_EQ_INT(local(z, 2014, 10, 26, 1, 30, 0), 1414272600);   /* repeated hour: the earlier (+04) */
    ZT_EQ_INT(local(z, 2015, 1, 1, 0, 0, 0), 1420059600);      /* back to +03 */
    const char *abbr = NULL;
    ZT_EQ_INT(zh_time_utc_offset(z, 1761987600, &abbr), 3 * 3600);
    ZT_EQ_STR(abbr, "MSK");
    ZT_EQ_INT(zh_time_utc_offset(z, 4102444800LL, NULL), 3 * 3600); /* 2100: footer rule */
    zh_time_zone_free(z);
}

static void berlin_dst(void) {
    zh_tz *z = zone("Europe/Berlin");
    ZT_CHECK(z != NULL);
    if (!z) return;
    const char *abbr = NULL;
    ZT_EQ_INT(zh_time_utc_offset(z, 1751371200, &abbr), 7200); /* 2025-07-01 */
    ZT_EQ_STR(abbr, "CEST");
    ZT_EQ_INT(zh_time_utc_offset(z, 1764590400, &abbr), 3600); /* 2025-12-01 */
    ZT_EQ_STR(abbr, "CET");
    /* spring forward 2025-03-30 02:00 -> 03:00 */
    ZT_EQ_INT(local(z, 2025, 3, 30, 1, 59, 59), 1743296399);
    ZT_EQ_INT(local(z, 2025, 3, 30, 3, 0, 0), 1743296400);
    ZT_EQ_INT(local(z, 2025, 3, 30, 2, 30, 0), 1743298200); /* nonexistent 02:30 reads as 03:30 CEST */
    ZT_EQ_INT(zh_time_utc_offset(z, 1743296399, NULL), 3600);
    ZT_EQ_INT(zh_time_utc_offset(z, 1743296400, NULL), 7200);
    /* fall back 2025-10-26 03:00 -> 02:00: 02:30 happens twice, the first one wins */
    ZT_EQ_INT(local(z, 2025, 10, 26, 2, 30, 0), 1761438600);
    ZT_EQ_INT(zh_time_utc_offset(z, 1761442200, NULL), 3600); /* the second 02:30 */
    /* every instant of a wall-clock time: what the scheduler's DST rules are built on */
    int64_t at[2], gap = 0;
    int64_t l0230 = zh_time_days_from_civil(2025, 10, 26) * 86400 + 2 * 3600 + 30 * 60;
    ZT_EQ_INT(zh_time_local_instants(z, l0230, at, &gap), 2);
    ZT_EQ_INT(at[0], 1761438600);
    ZT_EQ_INT(at[1], 1761442200);
    l0230 = zh_time_days_from_civil(2025, 3, 30) * 86400 + 2 * 3600 + 30 * 60;
    ZT_EQ_INT(zh_time_local_instants(z, l0230, at, &gap), 0);
    ZT_EQ_INT(gap, 1743298200);
    ZT_EQ_INT(zh_time_local_instants(z, l0230 + 3600, at, &gap), 1);
    ZT_EQ_INT(at[0], 1743298200);
    /* beyond the listed transitions: the POSIX rule in the file's footer */
    ZT_EQ_INT(local(z, 2040, 7, 1, 12, 0, 0), 2224749600);
    ZT_EQ_INT(local(z, 2100, 12, 1, 12, 0, 0), 4131342000);
    ZT_EQ_INT(zh_time_utc_offset(z, 2272446000, NULL), 3600); /* 2042-01-04 */
    zh_time_zone_free(z);
}

static void southern_and_american_zones(void) {
    zh_tz *z = zone("Australia/Sydney");
    ZT_CHECK(z != NULL);
    if (z) {
        ZT_EQ_INT(local(z, 2045, 1, 15, 12, 0, 0), 2368054800); /* DST across the new year */
        ZT_EQ_INT(local(z, 2045, 7, 15, 12, 0, 0), 2383696800);
        zh_time_zone_free(z);
    }
    z = zone("America/Sao_Paulo");
    ZT_CHECK(z != NULL);
    if (z) {
        ZT_EQ_INT(zh_time_utc_offset(z, 1700000000, NULL), -3 * 3600);
        zh_time_zone_free(z);
    }
}

static void unknown_zones(void) {
    const char *bad[] = {"Mars/Base", "../../etc/passwd", "/etc/localtime", "", "Europe//Moscow", "Europe/", "zone.tab",
                         "Europe/Mos cow", NULL};
    for (int i = 0; bad[i]; i++) {
        char *err = NULL;
        zh_tz *z = zh_time_zone_load(bad[i], &err);
        ZT_CHECK(z == NULL);
        ZT_CHECK(err && strstr(err, "unknown time zone '"));
        zh_time_zone_free(z);
        free(err);
    }
    zh_tz *utc = zone("UTC");
    ZT_CHECK(utc != NULL);
    if (utc) ZT_EQ_INT(zh_time_utc_offset(utc, 1761987600, NULL), 0);
    zh_time_zone_free(utc);
}

static int parse(const char *s, const zh_tz *z, int64_t *sec, double *frac) {
    char err[160];
    return zh_time_parse(s, strlen(s), z, sec, frac, err, sizeof err);
}

static void parsing(void) {
    zh_tz *msk = zone("Europe/Moscow"), *ber = zone("Europe/Berlin");
    ZT_CHECK(msk && ber);
    if (!msk || !ber) return;
    int64_t t;
    double f;
    ZT_EQ_INT(parse("2019-07-30T12:50:52+03:00", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1564480252);
    ZT_CHECK(f == 0);
    ZT_EQ_INT(parse("2019-07-30T12:50:52+0300", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1564480252);
    ZT_EQ_INT(parse("2019-07-30T09:50:52Z", ber, &t, &f), 0);
    ZT_EQ_INT(t, 1564480252);
    ZT_EQ_INT(parse("2019-07-30T04:50:52-05", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1564480252);
    ZT_EQ_INT(parse("2025-06-27T08:38:04.924450Z", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1751013484);
    ZT_CHECK(f > 0.92444 && f < 0.92446);
    /* naive strings are local time of the given zone */
    ZT_EQ_INT(parse("2025-11-01 12:00:00", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1761987600);
    ZT_EQ_INT(parse("2025-11-01", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1761944400);
    ZT_EQ_INT(parse("2025-11-01 12:00:00", ber, &t, &f), 0);
    ZT_EQ_INT(t, 1761994800);
    ZT_EQ_INT(parse("  2025-11-01T12:00  ", msk, &t, &f), 0);
    ZT_EQ_INT(t, 1761987600);
    ZT_EQ_INT(parse("2025-11-01 12:00:00", NULL, &t, &f), 0); /* NULL zone is UTC */
    ZT_EQ_INT(t, 1761998400);
    const char *bad[] = {"", "2025", "2025-13-01", "2025-02-29", "2025-11-01T25:00:00", "2025-11-01T12:00:00+25:00",
                         "2025-11-01T12:00:00 junk", "01.11.2025", "2025-11-01T12", "2025-11-01T12:00:00.", "2025-1-01",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        char err[160] = "";
        ZT_EQ_INT(zh_time_parse(bad[i], strlen(bad[i]), msk, &t, &f, err, sizeof err), -1);
        ZT_CHECK(strstr(err, "invalid time"));
    }
    zh_time_zone_free(msk);
    zh_time_zone_free(ber);
}

static void dates_and_http(void) {
    int64_t y;
    int m, d;
    ZT_EQ_INT(zh_time_parse_date("2025-11-01", 10, &y, &m, &d), 0);
    ZT_CHECK(y == 2025 && m == 11 && d == 1);
    const char *dm = "1.11.2025";
    ZT_EQ_INT(zh_time_parse_date(dm, strlen(dm), &y, &m, &d), 0);
    ZT_CHECK(y == 2025 && m == 11 && d == 1);
    dm = "31.12.2024 23:59";
    ZT_EQ_INT(zh_time_parse_date(dm, strlen(dm), &y, &m, &d), 0);
    ZT_CHECK(y == 2024 && m == 12 && d == 31);
    const char *bad[] = {"31.02.2025", "2025/11/01", "11-01-2025", "1.11.25", "", "2025-11-01x", "32.01.2025", NULL};
    for (int i = 0; bad[i]; i++) ZT_EQ_INT(zh_time_parse_date(bad[i], strlen(bad[i]), &y, &m, &d), -1);

    int64_t t;
    const char *h = "Sun, 06 Nov 1994 08:49:37 GMT";
    ZT_EQ_INT(zh_time_parse_http(h, strlen(h), &t), 0);
    ZT_EQ_INT(t, 784111777);
    h = "Fri, 27 Jun 2025 11:38:04 +0300 (MSK)";
    ZT_EQ_INT(zh_time_parse_http(h, strlen(h), &t), 0);
    ZT_EQ_INT(t, 1751013484);
    h = "6 Nov 1994 08:49 UT";
    ZT_EQ_INT(zh_time_parse_http(h, strlen(h), &t), 0);
    ZT_EQ_INT(t, 784111740);
    h = "Sun, 06 Nov 1994 08:49:37";
    ZT_EQ_INT(zh_time_parse_http(h, strlen(h), &t), -1);
    h = "Sun, 31 Feb 1994 08:49:37 GMT";
    ZT_EQ_INT(zh_time_parse_http(h, strlen(h), &t), -1);
}

/* RFC 9110 5.6.7: a recipient must read all three HTTP-date forms. */
static void http_date_forms(void) {
    int64_t now = 1764000000; /* 2025-11-24 */
    const char *forms[] = {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                           "Sun Nov  6 08:49:37 1994", "Sun Nov 06 08:49:37 1994", "  Sun Nov  6 08:49:37 1994 ", NULL};
    for (int i = 0; forms[i]; i++) {
        int64_t t = 0;
        ZT_EQ_INT(zh_time_parse_http_date(forms[i], strlen(forms[i]), now, &t), 0);
        ZT_EQ_INT(t, 784111777);
    }
    /* a two-digit year more than 50 years ahead is the most recent past year with those digits */
    int64_t t = 0;
    const char *h = "Tuesday, 01-Jan-75 00:00:00 GMT";
    ZT_EQ_INT(zh_time_parse_http_date(h, strlen(h), now, &t), 0);
    ZT_EQ_INT(t, 3313526400LL); /* 2075: 50 years ahead of 2025 */
    h = "Thursday, 01-Jan-76 00:00:00 GMT";
    ZT_EQ_INT(zh_time_parse_http_date(h, strlen(h), now, &t), 0);
    ZT_EQ_INT(t, 189302400); /* 1976, not 2076 */
    h = "Wednesday, 26-Nov-25 10:00:00 GMT";
    ZT_EQ_INT(zh_time_parse_http_date(h, strlen(h), now, &t), 0);
    ZT_EQ_INT(t, 1764151200);
    const char *bad[] = {"", "soon", "120", "Sunday, 06-Nov-94 08:49:37", "Sunday, 06-Nov-94 08:49:37 MSK",
                         "Sun Nov  6 08:49:37", "Sun Nov  6 08:49:37 94", "Sun Nov 31 08:49:37 1994",
                         "Sun Foo  6 08:49:37 1994", "Sun Nov  6 08:49:37 1994 GMT", "Sun, 06 Nov 1994 08:49:37 GMT x",
                         "Sunday, 06-Nov-94 25:49:37 GMT", NULL};
    for (int i = 0; bad[i]; i++) ZT_EQ_INT(zh_time_parse_http_date(bad[i], strlen(bad[i]), now, &t), -1);
}

static void formatting(void) {
    zh_tz *msk = zone("Europe/Moscow"), *ber = zone("Europe/Berlin");
    ZT_CHECK(msk && ber);
    if (!msk || !ber) return;
    char out[128];
    ZT_EQ_INT(zh_time_format(out, sizeof out, 1761987600, "iso", msk), 25);
    ZT_EQ_STR(out, "2025-11-01T12:00:00+03:00");
    zh_time_format(out, sizeof out, 1761987600, "%Y-%m-%d %H:%M:%S %Z %z", ber);
    ZT_EQ_STR(out, "2025-11-01 10:00:00 CET +0100");
    zh_time_format(out, sizeof out, 1751371200, "%F %T %Z", ber);
    ZT_EQ_STR(out, "2025-07-01 14:00:00 CEST");
    zh_time_format(out, sizeof out, 784111777, "%a, %d %b %Y %H:%M:%S GMT", NULL);
    ZT_EQ_STR(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    zh_time_format(out, sizeof out, 784111777, "%A %B %e %j %u %w %y %I%p %s %%", NULL);
    ZT_EQ_STR(out, "Sunday November  6 310 7 0 94 08AM 784111777 %");
    zh_time_format(out, sizeof out, -1, "%F %T", NULL);
    ZT_EQ_STR(out, "1969-12-31 23:59:59");
    ZT_EQ_INT(zh_time_format(out, sizeof out, 0, "%Q", NULL), -1);
    ZT_EQ_INT(zh_time_format(out, sizeof out, 0, "%", NULL), -1);
    /* truncation reports the full length, like snprintf */
    char small[5];
    ZT_EQ_INT(zh_time_format(small, sizeof small, 1761987600, "%Y-%m-%d", msk), 10);
    ZT_EQ_STR(small, "2025");
    zh_time_zone_free(msk);
    zh_time_zone_free(ber);
}

int main(void) {
    ZT_RUN(civil_dates);
    ZT_RUN(moscow_history);
    ZT_RUN(berlin_dst);
    ZT_RUN(southern_and_american_zones);
    ZT_RUN(unknown_zones);
    ZT_RUN(parsing);
    ZT_RUN(dates_and_http);
    ZT_RUN(http_date_forms);
    ZT_RUN(formatting);
    return ZT_DONE();
}
