/* lrt.h — the Lua runtime: state creation, the sandboxed environments scripts run in, module
 * registration, script loading and require(). */
#ifndef ZH_LRT_H
#define ZH_LRT_H

#include "zh.h"

/* Creates h->L with every zhost module registered in a shared base environment. */
int zh_lrt_open(zh_host *h);
void zh_lrt_close(zh_host *h);
/* Pushes a new environment for one script run: reads fall back to the base environment; with
 * strict, assigning or reading an undeclared global raises (typos fail loudly). */
void zh_lrt_push_env(lua_State *L, bool strict);
/* Compiles a file into a function whose _ENV is the table at env_idx, and pushes it.
 * On failure pushes nothing and returns a malloc'd "file:line: message". */
char *zh_lrt_load_file(lua_State *L, const char *path, int env_idx);
/* Same for a string chunk. */
char *zh_lrt_load_string(lua_State *L, const char *code, size_t len, const char *chunkname, int env_idx);
/* Raises "FN: unknown KIND 'x' (known: a, b, …)" when the table at idx has a key that is not in
 * known (NULL-terminated). KIND is "option" or the like. */
void zh_lrt_check_keys(lua_State *L, int idx, const char *const *known, const char *fn, const char *kind);

#endif
