/* zt.h — the smallest unit-test harness: ZT_TEST functions registered in main via ZT_RUN,
 * checks that record failures with file:line and go on, a closing "N passed, M failed" line. */
#ifndef ZT_H
#define ZT_H

#include <stdio.h>
#include <string.h>

static int zt_failed_checks;
static int zt_tests_passed, zt_tests_failed;

#define ZT_CHECK(cond)                                                                                    \
    do {                                                                                                  \
        if (!(cond)) {                                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                      \
            zt_failed_checks++;                                                                           \
        }                                                                                                 \
    } while (0)

#define ZT_EQ_INT(a, b)                                                                                   \
    do {                                                                                                  \
        long long zt_a = (long long)(a), zt_b = (long long)(b);                                           \
        if (zt_a != zt_b) {                                                                               \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, zt_a, zt_b); \
            zt_failed_checks++;                                                                           \
        }                                                                                                 \
    } while (0)

#define ZT_EQ_STR(a, b)                                                                                   \
    do {                                                                                                  \
        const char *zt_a = (a), *zt_b = (b);                                                              \
        if (!zt_a || !zt_b || strcmp(zt_a, zt_b) != 0) {                                                  \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b,     \
                    zt_a ? zt_a : "(null)", zt_b ? zt_b : "(null)");                                      \
            zt_failed_checks++;                                                                           \
        }                                                                                                 \
    } while (0)

#define ZT_RUN(fn)                                                                                        \
    do {                                                                                                  \
        int zt_before = zt_failed_checks;                                                                 \
        fn();                                                                                             \
        if (zt_failed_checks == zt_before) {                                                              \
            zt_tests_passed++;                                                                            \
        } else {                                                                                          \
            zt_tests_failed++;                                                                            \
            fprintf(stderr, "FAIL %s\n", #fn);                                                            \
        }                                                                                                 \
    } while (0)

#define ZT_DONE()                                                                                         \
    (printf("%d passed, %d failed\n", zt_tests_passed, zt_tests_failed), zt_tests_failed ? 1 : 0)

#endif
