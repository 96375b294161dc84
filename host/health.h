/* health.h — the health server's endpoints (/healthz, /healthz/detailed, /healthz/freshness,
 * /metrics and the HTML status page at /) on top of httpd.c. */
#ifndef ZH_HEALTH_H
#define ZH_HEALTH_H

#include "serve.h"

typedef struct zh_health zh_health;

zh_health *zh_health_start(zh_serve *s, char **err);
/* Stops accepting and closes connections (SIGTERM). */
void zh_health_stop(zh_health *hs);
void zh_health_free(zh_health *hs);
/* The configuration was reloaded (thresholds, timeouts). */
void zh_health_reconfigure(zh_health *hs);

#endif
