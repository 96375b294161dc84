/* tunables.h — the ZHOST_* environment variables that tune the host (tunables.c). */
#ifndef ZH_TUNABLES_H
#define ZH_TUNABLES_H
#include <stdbool.h>
#include <stddef.h>

/* 0 when every set tunable reads; else -1 and err says which and what it takes. */
int zh_tunables_check(char *err, size_t n);
/* "2G", "512 MiB", "256k", "1048576" -> bytes (binary units); -1 when it does not read. */
int zh_parse_size(const char *s, double *out);
/* A numeric tunable's value (counts, seconds, bytes), dflt when unset or not readable. */
double zh_tunable_number(const char *name, double dflt);
/* Whether a word tunable is set to word (case-insensitive). */
bool zh_tunable_is(const char *name, const char *word);

#endif
