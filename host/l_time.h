/* l_time.h — pure date/time functions behind the Lua `time` module (l_time.c): IANA time zones
 * read from the system's TZif files, civil-date arithmetic, parsing and formatting. Nothing here
 * touches the process-wide TZ or calls localtime/mktime, so results never depend on the host's
 * own zone. Exposed for the unit tests. */
#ifndef ZH_L_TIME_H
#define ZH_L_TIME_H

#include <stddef.h>
#include <stdint.h>

typedef struct zh_tz zh_tz;

/* 0000-01-01T00:00:00Z .. 9999-12-31T23:59:59Z: the instants time.format shows (four-digit years). */
#define ZH_TIME_MIN_EPOCH (-62167219200LL)
#define ZH_TIME_MAX_EPOCH (253402300799LL)

/* Loads /usr/share/zoneinfo/<name> (or $TZDIR/<name>). Returns NULL and sets *err (caller frees)
 * when the name is malformed or the zone does not exist. The caller owns the result. */
zh_tz *zh_time_zone_load(const char *name, char **err);
void zh_time_zone_free(zh_tz *z);
const char *zh_time_zone_name(const zh_tz *z);

/* Seconds east of UTC in force at UTC instant t; *abbr (may be NULL) gets e.g. "MSK". */
int zh_time_utc_offset(const zh_tz *z, int64_t t, const char **abbr);
/* Every UTC instant whose wall-clock time in z is `local` (seconds since 1970-01-01T00:00 local),
 * earliest first. Returns 1 normally, 2 for a time that happens twice (clocks going back), 0 for
 * one that does not exist (clocks going forward); then *gap (may be NULL) gets the time read with
 * the offset before the jump, which lands after it (02:30 -> 03:30). The scheduler (sched.c)
 * builds its DST rules on this. */
int zh_time_local_instants(const zh_tz *z, int64_t local, int64_t out[2], int64_t *gap);
/* UTC instant of a local wall-clock time given as seconds since 1970-01-01T00:00 local.
 * Ambiguous times (clocks going back) take the earlier instant; times that do not exist (clocks
 * going forward) are read with the offset before the jump, landing after it (02:30 -> 03:30). */
int64_t zh_time_from_local(const zh_tz *z, int64_t local);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back. */
int64_t zh_time_days_from_civil(int64_t y, int m, int d);
void zh_time_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int zh_time_days_in_month(int64_t y, int m);

/* Parses ISO-8601 (`YYYY-MM-DD`, `YYYY-MM-DD[T ]hh:mm[:ss[.frac]][Z|±hh[:]mm|±hh]`). Strings without
 * an offset are local time in z. Returns 0 and sets *sec and *frac (0 <= frac < 1), or -1 with a
 * message in err (size errlen). */
int zh_time_parse(const char *s, size_t n, const zh_tz *z, int64_t *sec, double *frac, char *err, size_t errlen);
/* `YYYY-MM-DD`, day-first `D.M.YYYY`/`DD.MM.YYYY`, each optionally followed by a space or `T` and a time
 * that is ignored. Returns 0 and the date, or -1. */
int zh_time_parse_date(const char *s, size_t n, int64_t *y, int *m, int *d);
/* RFC 1123 / RFC 5322 dates: `[Sun, ]06 Nov 1994 08:49:37 GMT` or `... +0300`. Returns 0 or -1. */
int zh_time_parse_http(const char *s, size_t n, int64_t *sec);
/* An HTTP-date in any of the three forms RFC 9110 (5.6.7) says recipients must accept: IMF-fixdate
 * (what zh_time_parse_http reads, with its other RFC 1123 spellings), the obsolete RFC 850 form
 * `Sunday, 06-Nov-94 08:49:37 GMT` (its two-digit year read relative to `now`, epoch seconds) and
 * asctime's `Sun Nov  6 08:49:37 1994`. Returns 0 or -1. */
int zh_time_parse_http_date(const char *s, size_t n, int64_t now, int64_t *sec);
/* strftime-like formatting of instant t in zone z, independent of locale (English names).
 * Supports %Y %m %d %e %H %M %S %y %j %F %T %D %R %z %:z %Z %s %a %A %b %B %u %w %p %I %%.
 * fmt "iso" means `%Y-%m-%dT%H:%M:%S%:z`. Returns the length written (always NUL-terminated,
 * truncated at cap-1), or -1 on an unknown conversion. */
int zh_time_format(char *out, size_t cap, int64_t t, const char *fmt, const zh_tz *z);

#endif
