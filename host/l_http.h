/* l_http.h — the Lua `http` module (see l_http.c). */
#ifndef ZH_L_HTTP_H
#define ZH_L_HTTP_H

#include "zh.h"

void zh_http_init(zh_host *h);
void zh_http_shutdown(zh_host *h);
int zh_open_http(lua_State *L);
/* k=v&k=v encoding of the table at idx (sorted keys), appended to b. Raises on bad values. */
void zh_http_encode_form(lua_State *L, int idx, zh_buf *b, const char *what);

/* If the value at idx is an http response whose body is still held in C, makes it the body
 * field (as reading res.body does): for code that walks the table raw (the REPL's printer). */
void zh_http_response_fill(lua_State *L, int idx);

/* Seconds a Retry-After value asks to wait at wall-clock time `now` (0 for a date already past),
 * or -1 when v is NULL or neither delay-seconds nor an HTTP-date (then it counts as absent). */
double zh_http_retry_after(const char *v, double now);

/* The host[:port] part of a URL (user info dropped), malloc'd: the default name of a source. */
char *zh_http_host_of_url(const char *url);

#endif
