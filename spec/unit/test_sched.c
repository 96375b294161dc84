/* Unit tests for sched.c: cron parsing, next fire times in Moscow and across DST, durations. */
#include "schedule.h"
#include "zt.h"
#include <stdlib.h>

static int64_t iso(const char *s) {
    int64_t t = 0;
    if (zh_sched_parse_iso(s, &t) != 0) {
        fprintf(stderr, "bad test timestamp %s\n", s);
        abort();
    }
    return t;
}

/* next fire after `after`, formatted in the schedule's zone */
static const char *next_str(const char *expr, const char *tz, const char *after) {
    static char buf[256];
    zh_schedule s;
    char err[200];
    if (zh_sched_parse(expr, tz, &s, err, sizeof err) != 0) {
        snprintf(buf, sizeof buf, "parse error: %s", err);
        return buf;
    }
    int64_t n = zh_sched_next(&s, iso(after));
    if (n < 0) return "none";
    zh_sched_format_iso(n, tz, buf, sizeof buf);
    return buf;
}

static void parses_fields_and_rejects_garbage(void) {
    zh_schedule s;
    char err[200];
    ZT_EQ_INT(zh_sched_parse("*/15 * * * *", "Europe/Moscow", &s, err, sizeof err), 0);
    ZT_EQ_INT(s.kind, ZH_SCHED_CRON);
    ZT_CHECK(s.minutes == ((1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45)));
    ZT_EQ_INT(zh_sched_parse("0,30 8-18/2 1-7 jan-mar mon-fri", "UTC", &s, err, sizeof err), 0);
    ZT_CHECK(s.hours == ((1u << 8) | (1u << 10) | (1u << 12) | (1u << 14) | (1u << 16) | (1u << 18)));
    ZT_CHECK(s.months == ((1u << 1) | (1u << 2) | (1u << 3)));
    ZT_CHECK(s.dows == 0x3e);
    ZT_EQ_INT(zh_sched_parse("0 0 * * 7", "UTC", &s, err, sizeof err), 0);
    ZT_CHECK(s.dows == 1);
    ZT_EQ_INT(zh_sched_parse("@daily", "UTC", &s, err, sizeof err), 0);
    ZT_CHECK(s.minutes == 1 && s.hours == 1);
    ZT_EQ_INT(zh_sched_parse("every 15m", "UTC", &s, err, sizeof err), 0);
    ZT_EQ_INT(s.kind, ZH_SCHED_INTERVAL);
    ZT_EQ_INT(s.interval_s, 900);
    ZT_EQ_INT(zh_sched_parse("every 1h30m", "UTC", &s, err, sizeof err), 0);
    ZT_EQ_INT(s.interval_s, 5400);
    const char *bad[] = {"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
                         "*/0 * * * *", "5-1 * * * *", "a * * * *", "every", "every 0s", "every 5x", "@sometimes",
                         "1,,2 * * * *", "*/ * * * *", NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = 0;
        int rc = zh_sched_parse(bad[i], "UTC", &s, err, sizeof err);
        if (rc != -1) fprintf(stderr, "accepted bad schedule '%s'\n", bad[i]);
        ZT_EQ_INT(rc, -1);
        ZT_CHECK(err[0] != 0);
    }
    ZT_EQ_INT(zh_sched_parse("0 0 * * *", "Mars/Olympus", &s, err, sizeof err), -1);
    ZT_CHECK(strstr(err, "Mars/Olympus") != NULL);
    ZT_EQ_INT(zh_sched_parse("0 0 * * *", "../etc/passwd", &s, err, sizeof err), -1);
}

static void moscow_daily_jobs_cross_the_date_boundary(void) {
    /* vk_ads at 00:00 MSK, direct at 00:10 MSK: 21:00 and 21:10 UTC the day before. */
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Moscow", "2026-03-31T23:59:30+03:00"), "2026-04-01T00:00:00+03:00");
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Moscow", "2026-03-31T20:59:30Z"), "2026-04-01T00:00:00+03:00");
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Moscow", "2026-04-01T00:00:00+03:00"), "2026-04-02T00:00:00+03:00");
    ZT_EQ_STR(next_str("10 0 * * *", "Europe/Moscow", "2026-04-01T00:00:00+03:00"), "2026-04-01T00:10:00+03:00");
    ZT_EQ_STR(next_str("10 0 * * *", "Europe/Moscow", "2026-12-31T22:00:00+03:00"), "2027-01-01T00:10:00+03:00");
    /* The same expression in UTC fires three hours later in Moscow terms. */
    ZT_EQ_STR(next_str("0 0 * * *", "UTC", "2026-03-31T23:59:30+03:00"), "2026-04-01T00:00:00+00:00");
    /* Every 15 minutes rolls over midnight; backups at :30 every 4 hours; 02:30 and 03:00 daily. */
    ZT_EQ_STR(next_str("*/15 * * * *", "Europe/Moscow", "2026-02-28T23:50:00+03:00"), "2026-03-01T00:00:00+03:00");
    ZT_EQ_STR(next_str("30 */4 * * *", "Europe/Moscow", "2026-05-01T00:31:00+03:00"), "2026-05-01T04:30:00+03:00");
    ZT_EQ_STR(next_str("30 */4 * * *", "Europe/Moscow", "2026-05-01T20:30:00+03:00"), "2026-05-02T00:30:00+03:00");
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Moscow", "2026-05-01T02:30:00+03:00"), "2026-05-02T02:30:00+03:00");
    ZT_EQ_STR(next_str("0 */2 * * *", "Europe/Moscow", "2026-05-01T23:00:00+03:00"), "2026-05-02T00:00:00+03:00");
    /* Leap day and month ends. */
    ZT_EQ_STR(next_str("0 12 29 2 *", "Europe/Moscow", "2026-03-01T00:00:00+03:00"), "2028-02-29T12:00:00+03:00");
    ZT_EQ_STR(next_str("0 0 31 * *", "Europe/Moscow", "2026-04-01T00:00:00+03:00"), "2026-05-31T00:00:00+03:00");
    ZT_EQ_STR(next_str("0 0 30 2 *", "Europe/Moscow", "2026-04-01T00:00:00+03:00"), "none");
    /* Day-of-month and day-of-week both restricted: either matches. 2026-03-06 is a Friday. */
    ZT_EQ_STR(next_str("0 0 13 * fri", "UTC", "2026-03-01T00:00:00Z"), "2026-03-06T00:00:00+00:00");
    ZT_EQ_STR(next_str("0 0 * * fri", "UTC", "2026-03-06T00:00:00Z"), "2026-03-13T00:00:00+00:00");
    ZT_EQ_STR(next_str("0 0 1-7 * mon", "UTC", "2026-03-01T00:00:00Z"), "2026-03-02T00:00:00+00:00");
}

static void dst_zone_fires_once_per_local_time(void) {
    /* Berlin springs forward on 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist. */
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00+01:00"), "2026-03-29T03:30:00+02:00");
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Berlin", "2026-03-29T03:30:00+02:00"), "2026-03-30T02:30:00+02:00");
    ZT_EQ_STR(next_str("0 3 * * *", "Europe/Berlin", "2026-03-29T01:00:00+01:00"), "2026-03-29T03:00:00+02:00");
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00"), "2026-03-29T00:00:00+01:00");
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Berlin", "2026-03-29T00:00:00+01:00"), "2026-03-30T00:00:00+02:00");
    ZT_EQ_STR(next_str("*/30 * * * *", "Europe/Berlin", "2026-03-29T01:45:00+01:00"), "2026-03-29T03:00:00+02:00");
    /* Falls back on 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice, fires once. */
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Berlin", "2026-10-25T01:00:00+02:00"), "2026-10-25T02:30:00+02:00");
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Berlin", "2026-10-25T02:30:00+02:00"), "2026-10-26T02:30:00+01:00");
    ZT_EQ_STR(next_str("0 0 * * *", "Europe/Berlin", "2026-10-25T00:00:00+02:00"), "2026-10-26T00:00:00+01:00");
    /* Started inside the repeated hour: the second 02:30 is still ahead. */
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10:00+01:00"), "2026-10-25T02:30:00+01:00");
    /* New York, other hemisphere of the calendar: 2026-03-08 02:00 EST -> 03:00 EDT. */
    ZT_EQ_STR(next_str("15 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00"), "2026-03-08T03:15:00-04:00");
    ZT_EQ_STR(next_str("0 9 * * *", "America/New_York", "2026-03-08T00:00:00-05:00"), "2026-03-08T09:00:00-04:00");
    /* Moscow has no DST any more: 2026-03-29 is an ordinary day. */
    ZT_EQ_STR(next_str("30 2 * * *", "Europe/Moscow", "2026-03-29T01:00:00+03:00"), "2026-03-29T02:30:00+03:00");
}

static void intervals_are_epoch_aligned(void) {
    ZT_EQ_STR(next_str("every 15m", "Europe/Moscow", "2026-03-31T23:50:00+03:00"), "2026-04-01T00:00:00+03:00");
    ZT_EQ_STR(next_str("every 15m", "Europe/Moscow", "2026-04-01T00:00:00+03:00"), "2026-04-01T00:15:00+03:00");
    ZT_EQ_STR(next_str("every 15m", "Europe/Moscow", "2026-04-01T00:14:59+03:00"), "2026-04-01T00:15:00+03:00");
    ZT_EQ_STR(next_str("every 2s", "UTC", "2026-04-01T00:00:01Z"), "2026-04-01T00:00:02+00:00");
}

static void durations_and_iso(void) {
    double d;
    ZT_EQ_INT(zh_sched_parse_duration("90", &d), 0);
    ZT_CHECK(d == 90);
    ZT_EQ_INT(zh_sched_parse_duration("15m", &d), 0);
    ZT_CHECK(d == 900);
    ZT_EQ_INT(zh_sched_parse_duration("1h30m", &d), 0);
    ZT_CHECK(d == 5400);
    ZT_EQ_INT(zh_sched_parse_duration("250ms", &d), 0);
    ZT_CHECK(d > 0.249 && d < 0.251);
    ZT_EQ_INT(zh_sched_parse_duration("2d", &d), 0);
    ZT_CHECK(d == 172800);
    ZT_EQ_INT(zh_sched_parse_duration("", &d), -1);
    ZT_EQ_INT(zh_sched_parse_duration("5 minutes", &d), -1);
    ZT_EQ_INT(zh_sched_parse_duration("-5s", &d), -1);
    char buf[64];
    zh_sched_format_iso(0, "Europe/Moscow", buf, sizeof buf);
    ZT_EQ_STR(buf, "1970-01-01T03:00:00+03:00");
    zh_sched_format_iso(iso("2026-07-01T12:00:00Z"), "America/New_York", buf, sizeof buf);
    ZT_EQ_STR(buf, "2026-07-01T08:00:00-04:00");
    ZT_EQ_INT(iso("2026-01-01T03:00:00+03:00"), iso("2026-01-01T00:00:00Z"));
    int64_t t;
    ZT_EQ_INT(zh_sched_parse_iso("2026-01-01T00:00:00", &t), -1);
    ZT_EQ_INT(zh_sched_parse_iso("2026-13-01T00:00:00Z", &t), -1);
    /* The offset helper leaves the process zone as it found it. */
    const char *before = getenv("TZ");
    (void)zh_sched_utc_offset("Asia/Tokyo", 0);
    const char *after = getenv("TZ");
    ZT_CHECK((before == NULL) == (after == NULL));
    ZT_EQ_INT(zh_sched_utc_offset("Asia/Tokyo", 0), 9 * 3600);
    ZT_CHECK(zh_sched_zone_valid("Europe/Moscow"));
    ZT_CHECK(!zh_sched_zone_valid("Europe/Nowhere"));
}

int main(void) {
    ZT_RUN(parses_fields_and_rejects_garbage);
    ZT_RUN(moscow_daily_jobs_cross_the_date_boundary);
    ZT_RUN(dst_zone_fires_once_per_local_time);
    ZT_RUN(intervals_are_epoch_aligned);
    ZT_RUN(durations_and_iso);
    return ZT_DONE();
}
