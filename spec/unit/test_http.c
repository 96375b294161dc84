/* Unit tests for l_http.c's reading of Retry-After (RFC 9110 10.2.3): delay-seconds, or an
 * HTTP-date in any of its three forms; a date already past means "now", anything else "absent". */
#include "l_http.h"
#include "zt.h"

#define NOW 784111777.0 /* Sun, 06 Nov 1994 08:49:37 GMT */

static void delay_seconds(void) {
    ZT_CHECK(zh_http_retry_after("120", NOW) == 120);
    ZT_CHECK(zh_http_retry_after(" 0 ", NOW) == 0);
    ZT_CHECK(zh_http_retry_after("007", NOW) == 7);
}

static void the_three_date_forms(void) {
    const char *in_90_s[] = {"Sun, 06 Nov 1994 08:51:07 GMT", "Sunday, 06-Nov-94 08:51:07 GMT",
                             "Sun Nov  6 08:51:07 1994", NULL};
    for (int i = 0; in_90_s[i]; i++) {
        double d = zh_http_retry_after(in_90_s[i], NOW);
        if (d != 90) fprintf(stderr, "  '%s' -> %g\n", in_90_s[i], d);
        ZT_CHECK(d == 90);
    }
}

static void a_past_date_means_now(void) {
    const char *past[] = {"Sun, 06 Nov 1994 08:00:00 GMT", "Sunday, 06-Nov-94 08:00:00 GMT", "Sun Nov  6 08:00:00 1994",
                          "Thu, 01 Jan 1970 00:00:00 GMT", NULL};
    for (int i = 0; past[i]; i++) ZT_CHECK(zh_http_retry_after(past[i], NOW) == 0);
}

static void garbage_is_absent(void) {
    const char *bad[] = {"", "   ", "soon", "-5", "1e3", "0x10", "inf", "nan", "1.5", "120 seconds",
                         "Sun, 06 Nov 1994 08:51:07 GMT trailing", "Sun, 06 Nov 1994 08:51:07", "Sun Nov  6 08:51:07",
                         "Sunday, 06-Nov-94 08:51:07", "Sun, 32 Nov 1994 08:51:07 GMT", NULL};
    for (int i = 0; bad[i]; i++) {
        double d = zh_http_retry_after(bad[i], NOW);
        if (d != -1) fprintf(stderr, "  '%s' -> %g\n", bad[i], d);
        ZT_CHECK(d == -1);
    }
    ZT_CHECK(zh_http_retry_after(NULL, NOW) == -1);
}

int main(void) {
    ZT_RUN(delay_seconds);
    ZT_RUN(the_three_date_forms);
    ZT_RUN(a_past_date_means_now);
    ZT_RUN(garbage_is_absent);
    return ZT_DONE();
}
