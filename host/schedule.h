/* schedule.h — (implemented by sched.c; not "sched.h", which would shadow the system header
 * that pthread.h includes) schedules: 5-field cron expressions in an IANA time zone and plain intervals, the
 * next fire time after an instant, durations ("90s", "15m"), and ISO-8601 times with a zone's offset
 * (zones themselves are l_time.h's TZif reader). Pure functions (no loop, no Lua), unit-tested in
 * spec/unit/test_sched.c. */
#ifndef ZH_SCHED_H
#define ZH_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum zh_sched_kind { ZH_SCHED_CRON, ZH_SCHED_INTERVAL };

typedef struct zh_schedule {
    enum zh_sched_kind kind;
    uint64_t minutes;         /* cron: bit m set for minute m (0-59) */
    uint32_t hours;           /* bit h (0-23) */
    uint32_t doms;            /* bit d (1-31) */
    uint16_t months;          /* bit m (1-12) */
    uint8_t dows;             /* bit d (0-6, Sunday = 0) */
    bool dom_any, dow_any;    /* the field was `*`: cron's "either day field matches" rule needs it */
    int64_t interval_s;       /* interval: seconds between fires, anchored to the Unix epoch */
    char tz[64];              /* IANA zone for cron fields, e.g. "Europe/Moscow" */
    char text[128];           /* as written, for display */
} zh_schedule;

/* Parses "every 15m" / "every 2h30m" (interval) or a cron expression: five fields
 * (minute hour day-of-month month day-of-week) with `*`, `a`, `a-b`, `*\/n`, `a-b/n`, `a/n`, lists
 * with `,`, month names jan..dec, day names sun..sat (7 is Sunday too), or @hourly, @daily,
 * @midnight, @weekly, @monthly, @yearly. `tz` must name an installed zone. Returns 0, or -1 with a
 * message in err. */
int zh_sched_parse(const char *text, const char *tz, zh_schedule *out, char *err, size_t errlen);

/* The first fire time strictly after `after` (Unix seconds), or -1 when there is none within
 * eight years (e.g. "0 0 30 2 *"). DST rules for cron, in the schedule's zone:
 *  - a local time that does not exist (clocks jump forward over it) fires at the first instant
 *    after the jump: a 02:30 job runs at 03:30 on that day, once;
 *  - a local time that happens twice (clocks go back) fires once: at its first occurrence, or
 *    at the second when `after` already lies inside the repeated hour before it (a daemon started
 *    there). Sub-hourly expressions therefore pause for the repeated hour. */
int64_t zh_sched_next(const zh_schedule *s, int64_t after);

/* "90", "90s", "15m", "2h", "1d", "1h30m", "250ms" -> seconds. Returns 0, or -1 when malformed. */
int zh_sched_parse_duration(const char *s, double *out);

/* True when tz names an installed IANA zone (a file under $TZDIR or /usr/share/zoneinfo). */
bool zh_sched_zone_valid(const char *tz);
/* Seconds east of UTC in force in zone tz at instant t (an unknown zone reads as UTC). Zones are
 * loaded once per process (see sched.c). */
int zh_sched_utc_offset(const char *tz, int64_t t);
/* ISO-8601 with the zone's offset: 2026-03-01T00:10:00+03:00. */
void zh_sched_format_iso(int64_t t, const char *tz, char *out, size_t n);
/* Parses the ISO-8601 form above (offset required, or Z). Returns 0 or -1. */
int zh_sched_parse_iso(const char *s, int64_t *out);

#endif
