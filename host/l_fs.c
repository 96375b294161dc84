/* l_fs.c — owns the Lua `fs` module: read-only directory listing and the running script's
 * directory, so a job can find the files it loads at run time (the alerts job reads one rule per
 * file from scripts/alerts/, and editing or adding a rule needs no restart). Nothing here
 * writes: scripts still cannot change the disk. */
#include "zh.h"
#include <lauxlib.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Does name end with suffix? */
static bool has_suffix(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    return n >= s && !strcmp(name + n - s, suffix);
}

/* fs.list(dir [, suffix]) -> sorted array of regular-file names (no hidden files) | nil, err */
static int l_list(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    const char *suffix = luaL_optstring(L, 2, NULL);
    DIR *d = opendir(dir);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (suffix && !has_suffix(e->d_name, suffix)) continue;
        zh_buf path;
        zh_buf_init(&path);
        zh_buf_printf(&path, "%s/%s", dir, e->d_name);
        struct stat st;
        bool regular = stat(path.data, &st) == 0 && S_ISREG(st.st_mode);
        zh_buf_free(&path);
        if (!regular) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = zh_xrealloc(names, cap * sizeof *names);
        }
        names[n++] = zh_xstrdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_names);
    /* Copy into Lua only after the C side is complete, so a memory error cannot leak names. */
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return 1;
}

/* fs.script_dir() -> directory of the running script ("scripts"), for files that sit beside it */
static int l_script_dir(lua_State *L) {
    const char *d = zh_host_of(L)->scripts_dir;
    lua_pushstring(L, d ? d : "scripts");
    return 1;
}

int zh_open_fs(lua_State *L) {
    static const luaL_Reg fns[] = {{"list", l_list}, {"script_dir", l_script_dir}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
