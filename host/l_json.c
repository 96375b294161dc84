/* l_json.c — owns the Lua `json` module: lua-cjson underneath, with decode returning nil, err
 * instead of raising, and integral numbers turned back into Lua integers (lua-cjson 2.1.0 decodes
 * every number as a float, so ids would print as 10000.0). json.view, json.isview and json.totable
 * are l_jsonview.cc's (simdjson). */
#include "jsonview.h"
#include "zh.h"
#include <lauxlib.h>
#include <lua-cjson.h>
#include <math.h>

/* Integral floats up to 2^53 are exact, so converting them loses nothing. */
static void integerize(lua_State *L, int idx, int depth) {
    if (depth > 200) return;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int t = lua_type(L, -1);
        if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            double d = lua_tonumber(L, -1);
            if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, (lua_Integer)d);
                lua_rawset(L, idx);
            }
        } else if (t == LUA_TTABLE) {
            integerize(L, -1, depth + 1);
        }
        lua_pop(L, 1);
    }
}

static int l_decode(lua_State *L) {
    size_t n;
    luaL_checklstring(L, 1, &n);
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.cjson.decode");
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON: %s", lua_tostring(L, -2));
        return 2;
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
        integerize(L, -1, 0);
    } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
        double d = lua_tonumber(L, -1);
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
            lua_pop(L, 1);
            lua_pushinteger(L, (lua_Integer)d);
        }
    }
    return 1;
}

static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.cjson.encode");
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        /* Encoding a function or a cyclic table is a programming error. */
        return luaL_error(L, "json.encode: %s", lua_tostring(L, -1));
    }
    return 1;
}

int zh_open_json(lua_State *L) {
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    int cj = lua_gettop(L);
    /* Sparse arrays (ids keyed by number) encode as objects instead of failing. */
    lua_getfield(L, cj, "encode_sparse_array");
    lua_pushboolean(L, 1);
    lua_call(L, 1, 0);
    lua_getfield(L, cj, "encode_number_precision");
    lua_pushinteger(L, 14);
    lua_call(L, 1, 0);
    lua_getfield(L, cj, "decode");
    lua_setfield(L, LUA_REGISTRYINDEX, "zhost.cjson.decode");
    lua_getfield(L, cj, "encode");
    lua_setfield(L, LUA_REGISTRYINDEX, "zhost.cjson.encode");
    static const luaL_Reg fns[] = {{"decode", l_decode}, {"encode", l_encode}, {NULL, NULL}};
    luaL_newlib(L, fns);
    zh_jsonview_register(L); /* json.view, json.isview, json.totable */
    lua_getfield(L, cj, "null");
    lua_setfield(L, -2, "null");
    lua_getfield(L, -1, "decode");
    lua_setfield(L, LUA_REGISTRYINDEX, "zhost.json.decode_safe");
    lua_getfield(L, -1, "encode");
    lua_setfield(L, LUA_REGISTRYINDEX, "zhost.json.encode");
    lua_remove(L, cj);
    return 1;
}
