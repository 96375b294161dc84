/* jsonview.h — read-only, lazy views of JSON documents parsed by simdjson (see l_jsonview.cc).
 *
 * A C interface so the C host (l_json.c, l_http.c) and the unit tests can use the C++ shim. */
#ifndef ZH_JSONVIEW_H
#define ZH_JSONVIEW_H

#include <lua.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses s[0..n) and pushes a view of its root (a view userdata for an object or array, the
 * plain Lua value for a scalar document). On invalid JSON pushes nil and "invalid JSON: why".
 * Returns the number of values pushed (1 or 2). Raises only on out-of-memory. */
int zh_jsonview_push(lua_State *L, const char *s, size_t n);

/* Adds view, isview, totable and view_stats to the module table at the top of the stack. */
void zh_jsonview_register(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
