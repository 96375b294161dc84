/* lrt.c — owns the Lua state: which standard functions scripts get, the shared base environment
 * holding every zhost module, per-run environments that refuse new globals (as Redis does), and
 * loading scripts and their require()d helpers from disk on every run (no caching across runs,
 * so editing a script never needs a restart). */
#include "lrt.h"
#include "log.h"
#include "modules.h"
#include "task.h"
#include "tunables.h"
#include <lauxlib.h>
#include <lualib.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE_ENV "zhost.base_env"
/* A copy of the base environment whose own __index raises "undefined global": the __index of
 * every strict environment. */
#define STRICT_BASE "zhost.strict_base"

/* Standard functions scripts may use. No dofile/loadfile/loadstring with raw paths, no
 * os.exit/execute/remove, no debug hooks: scripts cannot take the host down. */
static const char *const base_allowed[] = {
    "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen", "rawset", "select",
    "setmetatable", "getmetatable", "tonumber", "tostring", "type", "_VERSION", "print", NULL,
};
static const char *const libs_allowed[] = {"string", "table", "math", "utf8", "coroutine", NULL};

/* __index of the strict base (below): reached only for names that are not there. */
static int strict_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "undefined global '%s' (declare it with local, or check the spelling)", lua_tostring(L, 2));
    return luaL_error(L, "undefined global");
}

static int strict_newindex(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "assignment to undeclared global '%s' (use local)", lua_tostring(L, 2));
    return luaL_error(L, "assignment to undeclared global");
}

void zh_lrt_push_env(lua_State *L, bool strict) {
    lua_newtable(L);
    lua_newtable(L);
    if (strict) {
        /* A table, not a function: every use of a global such as `type` or `math` is then a
         * table lookup in the VM, not a call into C (mapping code makes millions of them). */
        lua_getfield(L, LUA_REGISTRYINDEX, STRICT_BASE);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, strict_newindex);
        lua_setfield(L, -2, "__newindex");
    } else {
        lua_getfield(L, LUA_REGISTRYINDEX, BASE_ENV);
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    /* Each run has its own module cache for require(). */
    lua_newtable(L);
    lua_rawsetp(L, -2, (void *)&strict_index);
}

/* load(chunk [, name [, mode [, env]]]): text only; without env the chunk gets a strict one. */
static int l_load(lua_State *L) {
    size_t len;
    const char *code = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (lua_isnoneornil(L, 4)) {
        zh_lrt_push_env(L, true);
    } else {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_pushvalue(L, 4);
    }
    char *err = zh_lrt_load_string(L, code, len, name, -1);
    if (err) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        free(err);
        return 2;
    }
    return 1;
}

static char *compile_error(lua_State *L) {
    char *e = zh_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return e;
}

static void set_env_upvalue(lua_State *L, int env_idx) {
    lua_pushvalue(L, env_idx);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
}

char *zh_lrt_load_string(lua_State *L, const char *code, size_t len, const char *chunkname, int env_idx) {
    env_idx = lua_absindex(L, env_idx);
    if (luaL_loadbufferx(L, code, len, chunkname, "t") != LUA_OK) return compile_error(L);
    set_env_upvalue(L, env_idx);
    return NULL;
}

char *zh_lrt_load_file(lua_State *L, const char *path, int env_idx) {
    env_idx = lua_absindex(L, env_idx);
    size_t len = 0;
    char *text = zh_read_file(path, 0, &len);
    if (!text) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: cannot open: %s", path, strerror(errno));
        return b.data;
    }
    const char *code = text;
    if (len >= 3 && !memcmp(code, "\xEF\xBB\xBF", 3)) { /* a UTF-8 byte-order mark, as lua(1) skips it */
        code += 3;
        len -= 3;
    }
    if (len && code[0] == '#') { /* skip a shebang line */
        const char *nl = memchr(code, '\n', len);
        size_t skip = nl ? (size_t)(nl - code) : len;
        code += skip;
        len -= skip;
    }
    lua_pushfstring(L, "@%s", path);
    char *err = zh_lrt_load_string(L, code, len, lua_tostring(L, -1), env_idx);
    if (err) {
        lua_pop(L, 1);
    } else {
        lua_remove(L, -2);
    }
    free(text);
    return err;
}

/* Where require() looks, in order: next to the running script (its lib/, its own directory, and
 * ../lib for scripts in a subdirectory such as scripts/alerts/), each directory of
 * ZHOST_LUA_PATH (colon-separated), then scripts/lib under the current directory — so specs and
 * the REPL outside scripts/ find the shared helpers. Returns the first existing file (malloc'd),
 * or NULL with the places tried in *tried. */
static char *require_find(zh_host *h, const char *rel, zh_buf *tried) {
    const char *dir = h->scripts_dir ? h->scripts_dir : "scripts";
    zh_buf cand;
    zh_buf_init(&cand);
    zh_buf_printf(&cand, "%s/lib%c%s%c%s/../lib%c", dir, 0, dir, 0, dir, 0);
    const char *lp = getenv("ZHOST_LUA_PATH");
    while (lp && *lp) {
        const char *colon = strchr(lp, ':');
        size_t n = colon ? (size_t)(colon - lp) : strlen(lp);
        if (n) {
            zh_buf_add(&cand, lp, n);
            zh_buf_addc(&cand, 0);
        }
        lp = colon ? colon + 1 : NULL;
    }
    zh_buf_add(&cand, "scripts/lib", 12);
    char *found = NULL;
    for (const char *d = cand.data; !found && d < cand.data + cand.len; d += strlen(d) + 1) {
        zh_buf path;
        zh_buf_init(&path);
        zh_buf_printf(&path, "%s/%s.lua", d, rel);
        FILE *f = fopen(path.data, "rb");
        if (f) {
            fclose(f);
            found = path.data;
        } else {
            zh_buf_printf(tried, "%s%s/", tried->len ? ", " : "", d);
            zh_buf_free(&path);
        }
    }
    zh_buf_free(&cand);
    return found;
}

/* require(name): <name>.lua (dots become slashes) from the places above, loaded into a fresh
 * strict environment, cached for the current run only. */
static int l_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    zh_host *h = zh_host_of(L);
    /* Find the calling run's environment: the _ENV upvalue of the caller. */
    lua_Debug ar;
    int env = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "f", &ar)) {
        const char *up = lua_getupvalue(L, -1, 1);
        if (up && !strcmp(up, "_ENV") && lua_istable(L, -1)) {
            lua_rawgetp(L, -1, (void *)&strict_index);
            if (lua_istable(L, -1)) env = lua_gettop(L);
            else lua_pop(L, 1);
        } else if (up) {
            lua_pop(L, 1);
        }
    }
    if (!env) {
        lua_newtable(L);
        env = lua_gettop(L);
    }
    lua_getfield(L, env, name);
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
            return luaL_error(L, "require: bad module name '%s'", name);
    char rel[256];
    snprintf(rel, sizeof rel, "%s", name);
    for (char *p = rel; *p; p++)
        if (*p == '.') *p = '/';
    zh_buf tried;
    zh_buf_init(&tried);
    char *path = require_find(h, rel, &tried);
    char where[1024];
    snprintf(where, sizeof where, "%s", tried.data ? tried.data : "");
    zh_buf_free(&tried); /* before raising: a Lua error would skip the free */
    if (!path) return luaL_error(L, "module '%s' not found in %s", name, where);
    zh_lrt_push_env(L, true);
    /* The module's own require()s use the caller's cache, so a library required by both the
     * script and another library is loaded once per run, as the documentation promises. */
    lua_pushvalue(L, env);
    lua_rawsetp(L, -2, (void *)&strict_index);
    char *err = zh_lrt_load_file(L, path, -1);
    free(path);
    if (err) {
        lua_pushstring(L, err);
        free(err);
        return lua_error(L);
    }
    lua_pushstring(L, name);
    lua_call(L, 1, 1); /* module top level runs here and cannot wait on I/O */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, env, name);
    return 1;
}

/* io subset: reading files (CSV plans, fixtures) and writing to stdout. */
static int l_read_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: read error", path);
        return 2;
    }
    luaL_pushresult(&b);
    return 1;
}

static int l_write(lua_State *L) {
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_checklstring(L, i, &len);
        fwrite(s, 1, len, stdout);
    }
    fflush(stdout);
    return 0;
}

static void register_module(lua_State *L, int env, const char *name, lua_CFunction open) {
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);
    lua_setfield(L, env, name);
}

int zh_lrt_open(zh_host *h) {
    lua_State *L = luaL_newstate();
    if (!L) return -1;
    *(zh_host **)lua_getextraspace(L) = h;
    h->L = L;
    luaL_openlibs(L);
    /* Generational collection: a loader's garbage is young (page bodies, row tables, strings),
     * and collecting only the young saves ~6% of a mapping job's CPU (bench/README.md). Nothing
     * here asks for full collections, where Lua 5.4.4's generational mode has a known pacing
     * bug. ZHOST_LUA_GC=incremental is the way back should a workload disagree. */
    if (zh_tunable_is("ZHOST_LUA_GC", "incremental")) lua_gc(L, LUA_GCINC, 0, 0, 0);
    else lua_gc(L, LUA_GCGEN, 0, 0);
    zh_task_start_watchdog(L);

    lua_newtable(L);
    int env = lua_gettop(L);
    for (int i = 0; base_allowed[i]; i++) {
        lua_getglobal(L, base_allowed[i]);
        lua_setfield(L, env, base_allowed[i]);
    }
    for (int i = 0; libs_allowed[i]; i++) {
        /* Copy library tables so scripts cannot change the host's own. */
        lua_getglobal(L, libs_allowed[i]);
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, -3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_remove(L, -2);
        lua_setfield(L, env, libs_allowed[i]);
    }
    /* os: time and dates only. */
    lua_newtable(L);
    static const char *const os_allowed[] = {"time", "clock", "date", "difftime", "getenv", NULL};
    lua_getglobal(L, "os");
    for (int i = 0; os_allowed[i]; i++) {
        lua_getfield(L, -1, os_allowed[i]);
        lua_setfield(L, -3, os_allowed[i]);
    }
    lua_pop(L, 1);
    lua_setfield(L, env, "os");
    lua_newtable(L);
    lua_pushcfunction(L, l_read_file);
    lua_setfield(L, -2, "read_file");
    lua_pushcfunction(L, l_write);
    lua_setfield(L, -2, "write");
    lua_setfield(L, env, "io");
    /* load(): text chunks only, in the caller-provided or a strict environment. */
    lua_pushcfunction(L, l_load);
    lua_setfield(L, env, "load");
    lua_pushcfunction(L, l_require);
    lua_setfield(L, env, "require");
    zh_task_install_coroutine_shims(L, env);

    register_module(L, env, "json", zh_open_json);
    register_module(L, env, "http", zh_open_http);
    register_module(L, env, "task", zh_open_task);
    register_module(L, env, "log", zh_open_log);
    register_module(L, env, "job", zh_open_job);
    register_module(L, env, "ch", zh_open_ch);
    register_module(L, env, "time", zh_open_time);
    register_module(L, env, "text", zh_open_text);
    register_module(L, env, "oauth2", zh_open_oauth2);
    register_module(L, env, "mail", zh_open_mail);
    register_module(L, env, "fs", zh_open_fs);
    lua_getfield(L, env, "task");
    lua_getfield(L, -1, "sleep");
    lua_setfield(L, env, "sleep");
    lua_pop(L, 1);
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, env)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_newtable(L);
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, STRICT_BASE);
    lua_setfield(L, LUA_REGISTRYINDEX, BASE_ENV);
    return 0;
}

void zh_lrt_close(zh_host *h) {
    if (h->L) lua_close(h->L);
    h->L = NULL;
}

/* Option tables of the primitives are checked by name: a misspelt option (`timout`, `attemps`)
 * used to be ignored, and the call went on with the default. */
void zh_lrt_check_keys(lua_State *L, int idx, const char *const *known, const char *fn, const char *kind) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; known[i] && !ok; i++) ok = !strcmp(known[i], lua_tostring(L, -1));
        if (ok) continue;
        const char *key = luaL_tolstring(L, -1, NULL);
        luaL_Buffer list;
        luaL_buffinit(L, &list);
        for (int i = 0; known[i]; i++) {
            if (i) luaL_addstring(&list, ", ");
            luaL_addstring(&list, known[i]);
        }
        luaL_pushresult(&list);
        luaL_error(L, "%s: unknown %s '%s' (known: %s)", fn, kind, key, lua_tostring(L, -1));
    }
}
