/* repl.h — `zhost repl` (zh_cmd_repl, declared in commands.h) and the value printer it uses. */
#ifndef ZH_REPL_H
#define ZH_REPL_H

#include "zh.h"

/* Appends a readable rendering of the value at idx to out: nil, booleans and numbers as Lua
 * writes them, strings quoted and escaped, tables JSON-like with sorted keys (one line when they
 * fit, indented otherwise). Cycles, depth, entries per table, string length and total size are
 * bounded. Runs no Lua code: metatables are ignored. Returns 0, or -1 when Lua ran out of memory
 * (out then ends with a note saying so). */
int zh_repl_format(lua_State *L, int idx, zh_buf *out);

#endif
