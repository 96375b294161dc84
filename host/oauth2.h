/* oauth2.h — OAuth2 access tokens for scripts (the Lua `oauth2` module) and `zhost auth google`.
 * The helpers below are exposed for the unit tests; scripts use the module (see oauth2.c). */
#ifndef ZH_OAUTH2_H
#define ZH_OAUTH2_H

#include "zh.h"

int zh_open_oauth2(lua_State *L);
int zh_cmd_auth(int argc, char **argv);

/* PKCE code_challenge for a verifier: base64url(SHA-256(verifier)). */
void zh_oauth2_pkce_challenge(const char *verifier, zh_buf *out);

/* Google's token.json expiry: naive UTC ISO "2025-06-27T08:38:04.924450Z" (fraction and Z
 * optional). Returns true and epoch seconds in *out when it parses. */
bool zh_oauth2_parse_expiry(const char *s, double *out);
/* Formats epoch seconds the way google-auth reads them: "2025-06-27T08:38:04Z". */
void zh_oauth2_format_expiry(double t, char out[32]);

#endif
