/* test_tunables.c — the ZHOST_* tuning variables (tunables.c): sizes with units, durations, word
 * lists, and the start-up check that names a value that does not read (they were read with
 * atoi/atoll: ZHOST_SPOOL_MAX_BYTES=2G was a 2-byte spool). */
#include "tunables.h"
#include "zt.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sizes_read_with_binary_units(void) {
    setenv("ZHOST_SPOOL_MAX_BYTES", "2G", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_SPOOL_MAX_BYTES", 7) == 2.0 * 1024 * 1024 * 1024);
    setenv("ZHOST_SPOOL_MAX_BYTES", "512 MiB", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_SPOOL_MAX_BYTES", 7) == 512.0 * 1024 * 1024);
    setenv("ZHOST_SPOOL_MAX_BYTES", "10", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_SPOOL_MAX_BYTES", 7) == 10);
    setenv("ZHOST_CH_STREAM_BYTES", "256k", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_STREAM_BYTES", 7) == 256.0 * 1024);
    setenv("ZHOST_CH_STREAM_BYTES", "0", 1); /* 0 is "never stream", a value of its own */
    ZT_CHECK(zh_tunable_number("ZHOST_CH_STREAM_BYTES", 7) == 0);
    unsetenv("ZHOST_CH_STREAM_BYTES");
    ZT_CHECK(zh_tunable_number("ZHOST_CH_STREAM_BYTES", 7) == 7);
    setenv("ZHOST_SPOOL_MAX_BYTES", "", 1); /* empty is unset */
    ZT_CHECK(zh_tunable_number("ZHOST_SPOOL_MAX_BYTES", 7) == 7);
    unsetenv("ZHOST_SPOOL_MAX_BYTES");
}

static void size_texts(void) {
    double n = 0;
    ZT_EQ_INT(zh_parse_size("4M", &n), 0);
    ZT_CHECK(n == 4.0 * 1024 * 1024);
    ZT_EQ_INT(zh_parse_size("1 KiB", &n), 0);
    ZT_CHECK(n == 1024);
    ZT_EQ_INT(zh_parse_size("3gb", &n), 0);
    ZT_CHECK(n == 3.0 * 1024 * 1024 * 1024);
    static const char *const bad[] = {"", "M", "-1", "4 megs", "4MM", "1e3x", " 4M", "4M "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) ZT_EQ_INT(zh_parse_size(bad[i], &n), -1);
}

static void counts_and_durations(void) {
    setenv("ZHOST_CH_ATTEMPTS", "3", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_ATTEMPTS", 4) == 3);
    setenv("ZHOST_CH_BACKOFF_CAP", "0.2", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_BACKOFF_CAP", 8) == 0.2);
    setenv("ZHOST_CH_BACKOFF_CAP", "2m", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_BACKOFF_CAP", 8) == 120);
    setenv("ZHOST_CH_STREAM_SECONDS", "1m 30s", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_STREAM_SECONDS", 20) == 90);
    setenv("ZHOST_SINK_MAX_AGE", "0.5", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_SINK_MAX_AGE", 5) == 0.5);
    unsetenv("ZHOST_SINK_MAX_AGE");
    /* not readable: the default (the start-up check has refused it before any reader runs) */
    setenv("ZHOST_CH_ATTEMPTS", "three", 1);
    ZT_CHECK(zh_tunable_number("ZHOST_CH_ATTEMPTS", 4) == 4);
    unsetenv("ZHOST_CH_ATTEMPTS");
    unsetenv("ZHOST_CH_BACKOFF_CAP");
    unsetenv("ZHOST_CH_STREAM_SECONDS");
}

static void words(void) {
    setenv("ZHOST_LUA_GC", "Incremental", 1);
    ZT_CHECK(zh_tunable_is("ZHOST_LUA_GC", "incremental"));
    unsetenv("ZHOST_LUA_GC");
    ZT_CHECK(!zh_tunable_is("ZHOST_LUA_GC", "incremental"));
}

static void the_check_names_what_does_not_read(void) {
    char err[256];
    ZT_EQ_INT(zh_tunables_check(err, sizeof err), 0);
    static const char *const bad[][3] = {
        {"ZHOST_SPOOL_MAX_BYTES", "2 gigs", "ZHOST_SPOOL_MAX_BYTES='2 gigs' does not read: it must be a size in bytes"},
        {"ZHOST_SPOOL_MAX_BYTES", "0", "ZHOST_SPOOL_MAX_BYTES='0' does not read"},
        {"ZHOST_SPOOL_MAX_BYTES", "-5", "ZHOST_SPOOL_MAX_BYTES='-5' does not read"},
        {"ZHOST_CH_ATTEMPTS", "0", "ZHOST_CH_ATTEMPTS='0' does not read: it must be a whole number from 1 to 100"},
        {"ZHOST_CH_ATTEMPTS", "2.5", "ZHOST_CH_ATTEMPTS='2.5' does not read"},
        {"ZHOST_CH_BACKOFF_CAP", "soon", "ZHOST_CH_BACKOFF_CAP='soon' does not read: it must be seconds"},
        {"ZHOST_CH_STREAM_SECONDS", "-1", "ZHOST_CH_STREAM_SECONDS='-1' does not read"},
        {"ZHOST_SINK_MAX_AGE", "0", "ZHOST_SINK_MAX_AGE='0' does not read: it must be seconds"},
        {"ZHOST_LUA_GC", "incr", "ZHOST_LUA_GC='incr' does not read: it must be one of generational, incremental"},
        {"ZHOST_HUGE_PAGES", "off", "ZHOST_HUGE_PAGES='off' does not read: it must be one of 0, 1"},
        {"ZHOST_LOG_LEVEL", "verbose", "ZHOST_LOG_LEVEL='verbose' does not read"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i][0], bad[i][1], 1);
        err[0] = 0;
        ZT_EQ_INT(zh_tunables_check(err, sizeof err), -1);
        if (strncmp(err, bad[i][2], strlen(bad[i][2]))) fprintf(stderr, "got: %s\n", err);
        ZT_CHECK(!strncmp(err, bad[i][2], strlen(bad[i][2])));
        unsetenv(bad[i][0]);
    }
    setenv("ZHOST_LOG_LEVEL", "WARNING", 1);
    setenv("ZHOST_HUGE_PAGES", "0", 1);
    ZT_EQ_INT(zh_tunables_check(err, sizeof err), 0);
    unsetenv("ZHOST_LOG_LEVEL");
    unsetenv("ZHOST_HUGE_PAGES");
}

int main(void) {
    ZT_RUN(sizes_read_with_binary_units);
    ZT_RUN(size_texts);
    ZT_RUN(counts_and_durations);
    ZT_RUN(words);
    ZT_RUN(the_check_names_what_does_not_read);
    return ZT_DONE();
}
