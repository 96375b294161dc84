/* rowtpl.c — owns row templates (`sink:template{…}`): a declarative mapping from a JSON view to
 * the rows of one sink's table. The script still says, column by column, which field a value comes
 * from and which conversion it takes — the same ones text.id, text.decimal and time.parse +
 * time.format do, so a template and the equivalent Lua code make identical rows. The template is
 * compiled once; then each call runs in C over the view's simdjson document: the per-row work of a
 * loader (field lookups, conversions, JSONEachRow encoding) makes no Lua call and no Lua value.
 * Simple filters (`only`: a field is truthy, a time field falls in a window) run here too, so a
 * loader whose filter is only that can hand a whole page's list to C (template:add_each, l_ch.c);
 * anything that needs logic or per-order state stays in the script.
 *
 * Ownership: the template owns its paths, encoded constants and zone; the schema belongs to the
 * sink, whose userdata the template's userdata keeps alive (l_ch.c). */
#include "rowtpl.h"
#include "l_text.h"
#include "l_time.h"
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum conv { CV_VALUE, CV_ID, CV_DECIMAL, CV_DATETIME, CV_INT };
static const char *const conv_names[] = {"value", "id", "decimal", "datetime", "int", NULL};

enum dflt { DF_OMIT, DF_BYTES, DF_NULL, DF_COLUMN };

/* A field path: "a" or "a.b.c" in the current item, "^a" in the object the call was given. */
typedef struct tpl_path {
    bool from_root;
    int root_slot; /* from_root: where a call keeps what it found, looked up once per call */
    int item_slot; /* not from_root: which of the item's fields read in one pass its first part is; -1 none */
    int nparts;
    char **parts;
    size_t *lens;
} tpl_path;

/* A condition of `only` on the object given to add: the object makes rows only when all hold. */
enum cond_test { CD_TRUTHY, CD_DATETIME };
static const char *const cond_names[] = {"truthy", "datetime", NULL};

typedef struct tpl_cond {
    int test;
    tpl_path path;
    bool has_from, has_to; /* CD_DATETIME: the window [from, to) in epoch seconds */
    double from, to;
} tpl_cond;

typedef struct tpl_col {
    int col; /* index in the schema */
    int conv;
    int scale;          /* decimal: fraction digits, -1 = as written */
    int max_int_digits; /* decimal: what the column's precision leaves for the integer part, 0 = any */
    bool has_min;
    long long min;
    tpl_path *paths; /* tried in order; the first that gives a value wins */
    int npaths;
    bool is_const; /* `value = …`: the bytes below, every row */
    int dflt;      /* when no path gives a value */
    char *bytes;   /* the constant's or the default's encoded value */
    size_t nbytes;
    int dflt_from; /* DF_COLUMN: index in cols[] of the column whose value is copied */
    bool root_only; /* every path starts with '^': the same value for every item of a call */
} tpl_col;

struct zh_rowtpl {
    const ch_schema *schema;
    bool has_each;
    tpl_path each;
    char *each_text;
    tpl_cond *conds; /* `only`, in the order given: the first that fails decides */
    int nconds;
    tpl_col *cols; /* in evaluation order: a default_from column after the one it copies */
    int ncols;
    int nroot; /* paths read from the object given (^…) */
    /* The distinct first parts of the item paths: each item's fields are read in one pass
     * (zh_jnode_fields), not one scan of the item per path. */
    zh_jkeys first;
    zh_tz *zone;
    uint64_t rows, rounded;
};

static void path_free(tpl_path *p) {
    for (int i = 0; i < p->nparts; i++) free(p->parts[i]);
    free(p->parts);
    free(p->lens);
    p->parts = NULL;
    p->lens = NULL;
    p->nparts = 0;
}

void zh_rowtpl_free(zh_rowtpl *t) {
    if (!t) return;
    path_free(&t->each);
    free(t->each_text);
    for (int i = 0; i < t->nconds; i++) path_free(&t->conds[i].path);
    free(t->conds);
    for (int i = 0; i < t->ncols; i++) {
        for (int j = 0; j < t->cols[i].npaths; j++) path_free(&t->cols[i].paths[j]);
        free(t->cols[i].paths);
        free(t->cols[i].bytes);
    }
    free(t->cols);
    if (t->zone) zh_time_zone_free(t->zone);
    free(t);
}

const ch_schema *zh_rowtpl_schema(const zh_rowtpl *t) { return t->schema; }
uint64_t zh_rowtpl_rows(const zh_rowtpl *t) { return t->rows; }
uint64_t zh_rowtpl_rounded(const zh_rowtpl *t) { return t->rounded; }

/* ---- compiling ---- */

/* Whether the Lua string at idx has a NUL byte: C code would read only the text before it, a path
 * "f\0g" as "f" — another field than the script named. */
static bool has_nul(lua_State *L, int idx) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return strlen(s) != n;
}

/* The field path at the top of the stack. */
static void parse_path(lua_State *L, const char *what, tpl_path *p) {
    if (has_nul(L, -1)) luaL_error(L, "sink:template: %s: NUL byte in field path", what);
    const char *s = lua_tostring(L, -1);
    p->from_root = s[0] == '^';
    if (p->from_root) s++;
    if (!*s) luaL_error(L, "sink:template: %s: empty field path", what);
    int n = 1;
    for (const char *c = s; *c; c++) n += *c == '.';
    p->parts = zh_xcalloc((size_t)n, sizeof *p->parts);
    p->lens = zh_xcalloc((size_t)n, sizeof *p->lens);
    const char *start = s;
    for (const char *c = s;; c++) {
        if (*c == '.' || !*c) {
            size_t len = (size_t)(c - start);
            if (!len) luaL_error(L, "sink:template: %s: empty part in field path '%s'", what, s);
            p->parts[p->nparts] = zh_xmalloc(len + 1);
            memcpy(p->parts[p->nparts], start, len);
            p->parts[p->nparts][len] = 0;
            p->lens[p->nparts++] = len;
            if (!*c) break;
            start = c + 1;
        }
    }
}

/* Decimal(P, S), Decimal32/64/128(S), possibly inside Nullable( ): the scale and the digits
 * left for the integer part. */
static void decimal_shape(const char *type, int *scale, int *int_digits) {
    const char *d = strstr(type, "Decimal");
    *scale = -1;
    *int_digits = 0;
    if (!d) return;
    int p = 0, s = 0;
    if (sscanf(d, "Decimal(%d, %d)", &p, &s) == 2 || sscanf(d, "Decimal(%d,%d)", &p, &s) == 2) {
    } else if (sscanf(d, "Decimal32(%d)", &s) == 1) {
        p = 9;
    } else if (sscanf(d, "Decimal64(%d)", &s) == 1) {
        p = 18;
    } else if (sscanf(d, "Decimal128(%d)", &s) == 1) {
        p = 38;
    } else {
        return;
    }
    *scale = s;
    *int_digits = p - s > 0 ? p - s : 0;
}

/* Encodes the Lua value at idx (a constant or a default) for column c into col->bytes. */
static void encode_literal(lua_State *L, int idx, const ch_schema *s, const ch_column *c, tpl_col *col, bool is_default) {
    if (lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL) { /* json.null */
        col->dflt = c->nullable ? DF_NULL : DF_OMIT;
        return;
    }
    zh_buf b;
    zh_buf_init(&b);
    char err[200];
    const char *e = zh_rowenc_value(L, idx, c, &b, err, sizeof err);
    if (e) {
        zh_buf_free(&b);
        luaL_error(L, "sink:template: column '%s' (%s) of %s: %s %s", c->name, c->type, s->table,
                   is_default ? "default" : "value", e);
    }
    col->bytes = b.data ? b.data : zh_xstrdup("");
    col->nbytes = b.len;
    col->dflt = DF_BYTES;
}

static int find_col(const ch_schema *s, const char *name) {
    for (int i = 0; i < s->ncols; i++)
        if (!strcmp(s->cols[i].name, name)) return i;
    return -1;
}

/* The column spec at the top of the stack: "path", or {path…, as=, scale=, min=, default=,
 * default_from=, value=}. default_from is resolved by the caller (*from gets its name, on the
 * Lua stack of the spec). */
static void compile_col(lua_State *L, const ch_schema *s, const char *name, tpl_col *col, const char **from) {
    int ci = find_col(s, name);
    if (ci < 0) {
        zh_buf cols;
        zh_buf_init(&cols);
        for (int i = 0; i < s->ncols && cols.len < 300; i++)
            if (!s->cols[i].materialized) zh_buf_printf(&cols, "%s%s", cols.len ? ", " : "", s->cols[i].name);
        lua_pushfstring(L, "sink:template: %s has no column '%s' (columns: %s)", s->table, name, cols.data ? cols.data : "");
        zh_buf_free(&cols);
        lua_error(L);
    }
    const ch_column *c = &s->cols[ci];
    if (c->materialized) luaL_error(L, "sink:template: column '%s' of %s is computed by ClickHouse and cannot be written", name, s->table);
    col->col = ci;
    col->conv = CV_VALUE;
    col->dflt = DF_OMIT;
    col->dflt_from = -1;
    decimal_shape(c->type, &col->scale, &col->max_int_digits);
    int spec = lua_gettop(L);
    if (lua_type(L, spec) == LUA_TSTRING) {
        col->paths = zh_xcalloc(1, sizeof *col->paths);
        col->npaths = 1;
        parse_path(L, name, &col->paths[0]);
        return;
    }
    if (!lua_istable(L, spec)) luaL_error(L, "sink:template: column '%s': expected a field path or a table, got %s", name, luaL_typename(L, spec));
    /* every key must be known: a misspelt option would silently change the rows */
    lua_pushnil(L);
    while (lua_next(L, spec)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TNUMBER) continue;
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        static const char *const known[] = {"as", "scale", "min", "default", "default_from", "value", NULL};
        bool ok = false;
        for (int i = 0; known[i]; i++) ok |= !strcmp(k, known[i]);
        if (!ok) luaL_error(L, "sink:template: column '%s': unknown option '%s' (as, scale, min, default, default_from, value)", name, k);
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, spec);
    lua_getfield(L, spec, "value");
    if (!lua_isnil(L, -1)) {
        if (n) luaL_error(L, "sink:template: column '%s': value = … is a constant; it takes no field paths", name);
        encode_literal(L, -1, s, c, col, false);
        col->is_const = true;
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    if (!n) luaL_error(L, "sink:template: column '%s': no field path (give {\"field\", …} or value = …)", name);
    col->paths = zh_xcalloc((size_t)n, sizeof *col->paths);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, spec, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sink:template: column '%s': field path %d is not a string", name, (int)i);
        parse_path(L, name, &col->paths[col->npaths++]);
        lua_pop(L, 1);
    }
    lua_getfield(L, spec, "as");
    if (!lua_isnil(L, -1)) {
        const char *as = lua_tostring(L, -1);
        int k = 0;
        while (conv_names[k] && (!as || strcmp(as, conv_names[k]))) k++;
        if (!conv_names[k])
            luaL_error(L, "sink:template: column '%s': unknown conversion '%s' (value, id, decimal, datetime, int)", name,
                       as ? as : luaL_typename(L, -1));
        col->conv = k;
    }
    lua_getfield(L, spec, "scale");
    if (!lua_isnil(L, -1)) {
        int isint = 0;
        lua_Integer sc = lua_tointegerx(L, -1, &isint);
        if (!isint || sc < 0 || sc > 38) luaL_error(L, "sink:template: column '%s': scale must be 0..38", name);
        col->scale = (int)sc;
    }
    lua_getfield(L, spec, "min");
    if (!lua_isnil(L, -1)) {
        int isint = 0;
        col->min = (long long)lua_tointegerx(L, -1, &isint);
        if (!isint) luaL_error(L, "sink:template: column '%s': min must be an integer", name);
        if (col->conv != CV_INT) luaL_error(L, "sink:template: column '%s': min goes with as = \"int\"", name);
        col->has_min = true;
    }
    lua_getfield(L, spec, "default");
    lua_getfield(L, spec, "default_from");
    if (!lua_isnil(L, -2) && !lua_isnil(L, -1)) luaL_error(L, "sink:template: column '%s': default and default_from exclude each other", name);
    if (!lua_isnil(L, -2)) encode_literal(L, -2, s, c, col, true);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING || has_nul(L, -1))
            luaL_error(L, "sink:template: column '%s': default_from must be a column name", name);
        *from = lua_tostring(L, -1); /* stays valid: the spec table holds the string */
        col->dflt = DF_COLUMN;
    }
    lua_settop(L, spec);
}

/* `only = {{"field", is = "truthy"}, {"field", is = "datetime", from = e1, to = e2}, …}` of the spec
 * at idx. Misuse raises naming the condition: a misspelt test or option, or a bound that is no
 * number, would silently load other rows than the script meant. */
static void compile_conds(lua_State *L, int idx, zh_rowtpl *t) {
    lua_getfield(L, idx, "only");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "sink:template: only must be a list of conditions ({\"field\", is = \"truthy\"}, …), got %s",
                   luaL_typename(L, -1));
    int list = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, list);
    lua_pushnil(L);
    while (lua_next(L, list)) {
        lua_pop(L, 1);
        int isint = 0;
        lua_Integer k = lua_tointegerx(L, -1, &isint);
        if (lua_type(L, -1) != LUA_TNUMBER || !isint || k < 1 || k > n)
            luaL_error(L, "sink:template: only must be a list of conditions, not a table keyed by '%s'",
                       lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    if (n > 64) luaL_error(L, "sink:template: only: more than 64 conditions");
    t->conds = zh_xcalloc(n ? (size_t)n : 1, sizeof *t->conds);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        int c = lua_gettop(L);
        if (!lua_istable(L, c))
            luaL_error(L, "sink:template: only[%d]: expected {\"field\", is = \"truthy\" or \"datetime\"}, got %s", (int)i,
                       luaL_typename(L, c));
        tpl_cond *cd = &t->conds[t->nconds++]; /* counted first: the finalizer frees a half-made one */
        lua_pushnil(L);
        while (lua_next(L, c)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TNUMBER) {
                if (lua_tointeger(L, -1) == 1) continue;
                luaL_error(L, "sink:template: only[%d]: one field path per condition (another test is another item of only)", (int)i);
            }
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
            if (strcmp(k, "is") && strcmp(k, "from") && strcmp(k, "to"))
                luaL_error(L, "sink:template: only[%d]: unknown option '%s' (is, from, to; one field path)", (int)i, k);
        }
        lua_rawgeti(L, c, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sink:template: only[%d]: the first item must be a field path", (int)i);
        char what[32];
        snprintf(what, sizeof what, "only[%d]", (int)i);
        parse_path(L, what, &cd->path);
        if (cd->path.from_root)
            luaL_error(L, "sink:template: only[%d]: conditions read the object given to add; no '^'", (int)i);
        const char *field = lua_tostring(L, -1); /* the spec holds it */
        lua_getfield(L, c, "is");
        const char *is = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int k = 0;
        while (cond_names[k] && (!is || strcmp(is, cond_names[k]))) k++;
        if (!cond_names[k])
            luaL_error(L, "sink:template: only[%d] ('%s'): unknown test '%s' (is = \"truthy\" or \"datetime\")", (int)i, field,
                       is ? is : luaL_typename(L, -1));
        cd->test = k;
        static const char *const bounds[] = {"from", "to"};
        for (int b = 0; b < 2; b++) {
            lua_getfield(L, c, bounds[b]);
            if (!lua_isnil(L, -1)) {
                if (cd->test != CD_DATETIME)
                    luaL_error(L, "sink:template: only[%d] ('%s'): %s goes with is = \"datetime\"", (int)i, field, bounds[b]);
                if (lua_type(L, -1) != LUA_TNUMBER)
                    luaL_error(L, "sink:template: only[%d] ('%s'): %s must be epoch seconds (a number, as time.parse gives), got %s",
                               (int)i, field, bounds[b], luaL_typename(L, -1));
                double v = (double)lua_tonumber(L, -1);
                if (v != v) luaL_error(L, "sink:template: only[%d] ('%s'): %s is NaN", (int)i, field, bounds[b]);
                if (b == 0) cd->has_from = true, cd->from = v;
                else cd->has_to = true, cd->to = v;
            }
            lua_pop(L, 1);
        }
        lua_settop(L, list);
    }
    lua_settop(L, list - 1);
}

void zh_rowtpl_compile(lua_State *L, int idx, const ch_schema *s, zh_rowtpl **slot) {
    idx = lua_absindex(L, idx);
    int top = lua_gettop(L);
    luaL_checktype(L, idx, LUA_TTABLE);
    zh_rowtpl *t = zh_xcalloc(1, sizeof *t);
    *slot = t;
    zh_jkeys_init(&t->first);
    t->schema = s;
    lua_getfield(L, idx, "each");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sink:template: each must be a field path");
        t->each_text = zh_xstrdup(lua_tostring(L, -1));
        parse_path(L, "each", &t->each);
        if (t->each.from_root) luaL_error(L, "sink:template: each is read from the object given; no '^'");
        t->has_each = true;
    }
    lua_getfield(L, idx, "zone");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sink:template: zone must be a time zone name, got %s", luaL_typename(L, -1));
    if (!lua_isnil(L, -1) && has_nul(L, -1)) luaL_error(L, "sink:template: zone: a NUL byte in the time zone name");
    const char *zone = lua_isnil(L, -1) ? "Europe/Moscow" : lua_tostring(L, -1);
    char *zerr = NULL;
    t->zone = zh_time_zone_load(zone, &zerr);
    if (!t->zone) {
        lua_pushfstring(L, "sink:template: zone: %s", zerr ? zerr : zone);
        free(zerr);
        lua_error(L);
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        if (strcmp(k, "each") && strcmp(k, "zone") && strcmp(k, "columns") && strcmp(k, "only"))
            luaL_error(L, "sink:template: unknown option '%s' (each, zone, only, columns)", k);
    }
    compile_conds(L, idx, t);
    lua_getfield(L, idx, "columns");
    if (!lua_istable(L, -1)) luaL_error(L, "sink:template: columns = {name = spec, …} is required");
    int cols = lua_gettop(L);
    /* Sorted names: the column order of the rows does not depend on the hash order of the spec. */
    lua_newtable(L);
    int names = lua_gettop(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, cols)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || has_nul(L, -1)) luaL_error(L, "sink:template: columns must be keyed by column name");
        lua_pushvalue(L, -1);
        lua_rawseti(L, names, ++n);
    }
    if (!n) luaL_error(L, "sink:template: no columns");
    lua_getglobal(L, "table");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "sort");
        lua_pushvalue(L, names);
        lua_call(L, 1, 0);
    }
    lua_pop(L, 1);
    if (n > 256) luaL_error(L, "sink:template: more than 256 columns");
    t->cols = zh_xcalloc((size_t)n, sizeof *t->cols);
    const char *refs[256]; /* default_from names; the spec table holds the strings */
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, names, i + 1);
        const char *name = lua_tostring(L, -1);
        lua_getfield(L, cols, name);
        refs[i] = NULL;
        /* counted first: compile_col may raise with the column half made, and the template's
         * finalizer frees what it holds */
        t->ncols++;
        compile_col(L, s, name, &t->cols[t->ncols - 1], &refs[i]);
        lua_pop(L, 2);
    }
    /* default_from: the column copied is evaluated first; it may not itself copy */
    for (int i = 0; i < t->ncols; i++) {
        if (!refs[i]) continue;
        int j = 0;
        while (j < t->ncols && strcmp(s->cols[t->cols[j].col].name, refs[i])) j++;
        const char *name = s->cols[t->cols[i].col].name;
        if (j == t->ncols) luaL_error(L, "sink:template: column '%s': default_from '%s' is not a column of this template", name, refs[i]);
        if (j == i) luaL_error(L, "sink:template: column '%s': default_from itself", name);
        if (refs[j]) luaL_error(L, "sink:template: column '%s': default_from '%s', which has a default_from itself", name, refs[i]);
        t->cols[i].dflt_from = j;
    }
    /* evaluation order: plain columns, then the ones that copy */
    tpl_col *ordered = zh_xcalloc((size_t)t->ncols, sizeof *ordered);
    int map[256], k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < t->ncols; i++)
            if ((refs[i] != NULL) == (pass == 1)) {
                map[i] = k;
                ordered[k++] = t->cols[i];
            }
    for (int i = 0; i < t->ncols; i++)
        if (ordered[i].dflt == DF_COLUMN) ordered[i].dflt_from = map[ordered[i].dflt_from];
    free(t->cols);
    t->cols = ordered;
    for (int i = 0; i < t->ncols; i++) {
        tpl_col *col = &t->cols[i];
        col->root_only = !col->is_const && col->npaths > 0;
        for (int j = 0; j < col->npaths; j++) {
            tpl_path *p = &col->paths[j];
            p->item_slot = -1;
            if (p->from_root) {
                if (t->nroot < 256) p->root_slot = t->nroot++;
                continue;
            }
            col->root_only = false;
            /* the name belongs to the path, which lives as long as the template; a template with
             * more distinct first names than the set takes reads the rest one by one */
            p->item_slot = zh_jkeys_add(&t->first, p->parts[0], p->lens[0]);
        }
    }
    if (t->nroot >= 256) luaL_error(L, "sink:template: more than 255 '^' paths");
    lua_settop(L, top);
}

/* ---- running ---- */

typedef struct item_list {
    zh_jnode *items;
    long long *keys;
    size_t n, cap;
    bool keyed_ok;
} item_list;

static void list_push(item_list *l, const zh_jnode *v, long long key) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = zh_xrealloc(l->items, l->cap * sizeof *l->items);
        l->keys = zh_xrealloc(l->keys, l->cap * sizeof *l->keys);
    }
    l->items[l->n] = *v;
    l->keys[l->n++] = key;
}

/* A key PHP wrote for a list index: canonical integer text ("7", "-1"; not "07", "+7", "7.0", "-0")
 * of a Lua integer, as qtickets_map.list reads it: "9223372036854775808" is no index (a float in
 * Lua), "-9223372036854775808" is one. */
static bool index_key(const char *k, size_t n, long long *out) {
    bool neg = n && k[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n || n - i > 19 || (k[i] == '0' && n > i + 1)) return false;
    unsigned long long v = 0; /* 19 digits fit */
    for (; i < n; i++) {
        if (k[i] < '0' || k[i] > '9') return false;
        v = v * 10 + (unsigned)(k[i] - '0');
    }
    if (neg ? v == 0 || v > 9223372036854775808ULL : v > 9223372036854775807ULL) return false;
    *out = neg ? -(long long)(v - 1) - 1 : (long long)v;
    return true;
}

static bool collect_item(void *ud, const char *key, size_t klen, const zh_jnode *v) {
    item_list *l = ud;
    long long idx = (long long)l->n;
    if (key && !index_key(key, klen, &idx)) {
        l->keyed_ok = false;
        return false;
    }
    list_push(l, v, idx);
    return true;
}

typedef struct keyed_item {
    long long key;
    size_t pos; /* document order breaks ties: the sort is stable */
} keyed_item;

static int cmp_keyed(const void *a, const void *b) {
    const keyed_item *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Items in key order; O(n log n), since a list is whatever the API sent. */
static void sort_by_key(item_list *l) {
    if (l->n < 2) return;
    keyed_item *order = zh_xmalloc(l->n * sizeof *order);
    for (size_t i = 0; i < l->n; i++) order[i] = (keyed_item){l->keys[i], i};
    qsort(order, l->n, sizeof *order, cmp_keyed);
    zh_jnode *items = zh_xmalloc(l->n * sizeof *items);
    for (size_t i = 0; i < l->n; i++) {
        items[i] = l->items[order[i].pos];
        l->keys[i] = order[i].key;
    }
    free(l->items);
    l->items = items;
    l->cap = l->n;
    free(order);
}

size_t zh_rowtpl_list(const zh_jnode *list, zh_jnode **items) {
    *items = NULL;
    /* A list is an array, or an object PHP made of a filtered array ({"0": …, "2": …}): its values
     * in key order. Anything else has no items. */
    int lt = zh_jnode_type(list);
    if (lt != ZJ_ARRAY && lt != ZJ_OBJECT) return 0;
    item_list l = {.keyed_ok = true};
    zh_jnode_each(list, collect_item, &l);
    if (lt == ZJ_OBJECT) {
        if (!l.keyed_ok) l.n = 0;
        else sort_by_key(&l);
    }
    free(l.keys);
    if (!l.n) {
        free(l.items);
        return 0;
    }
    *items = l.items;
    return l.n;
}

static bool lookup(const tpl_path *p, const zh_jnode *item, const zh_jnode *root, zh_jnode *out);

/* As qtickets_map.truthy reads the Lua value json.view gives for the node: null, false, 0 and the
 * strings "", "0", "false", "no" (ASCII case ignored, as string.lower does) are false, so are
 * objects and arrays; a number above 2^63-1 is its digits, a true string. */
static bool node_truthy(const zh_jnode *n) {
    zh_jvalue v;
    switch (zh_jnode_read(n, &v)) {
    case ZJ_BOOL: return v.b;
    case ZJ_INT: return v.i != 0;
    case ZJ_UINT: return true;
    case ZJ_DOUBLE: return v.d != 0;
    case ZJ_STRING: {
        static const char *const no[] = {"0", "false", "no"};
        if (!v.n) return false;
        for (int i = 0; i < 3; i++) {
            size_t len = strlen(no[i]);
            if (v.n != len) continue;
            size_t j = 0;
            while (j < len && (v.s[j] >= 'A' && v.s[j] <= 'Z' ? v.s[j] + 32 : v.s[j]) == no[i][j]) j++;
            if (j == len) return false;
        }
        return true;
    }
    default: return false;
    }
}

/* Whether the object given to add passes every condition of `only`. */
static bool keeps(const zh_rowtpl *t, const zh_jnode *root) {
    for (int i = 0; i < t->nconds; i++) {
        const tpl_cond *cd = &t->conds[i];
        zh_jnode node;
        if (!lookup(&cd->path, root, root, &node)) return false;
        if (cd->test == CD_TRUTHY) {
            if (!node_truthy(&node)) return false;
            continue;
        }
        /* as qtickets_map.epoch: time.parse's reading in the template's zone, whole seconds */
        zh_jvalue v;
        if (zh_jnode_read(&node, &v) != ZJ_STRING || !v.n) return false;
        int64_t sec;
        double frac;
        char err[160];
        if (zh_time_parse(v.s, v.n, t->zone, &sec, &frac, err, sizeof err) != 0) return false;
        if (cd->has_from && !((double)sec >= cd->from)) return false;
        if (cd->has_to && !((double)sec < cd->to)) return false;
    }
    return true;
}

/* What a call found at the ^paths, looked up on first use: the same for every item of the call.
 * So is the value of a column whose paths all start with '^': its encoded bytes are kept too. */
typedef struct root_cache {
    const zh_jnode *root;
    zh_jnode *nodes;
    signed char *state;     /* 0 not looked up, 1 found, -1 missing */
    signed char *col_state; /* per column: 0 not made yet, 1 value bytes kept, -1 no value */
    size_t *col_off, *col_len;
    uint64_t *col_rounded; /* decimals the value rounded: counted again for each row it goes in */
    zh_buf col_bytes;
} root_cache;

static bool lookup(const tpl_path *p, const zh_jnode *item, const zh_jnode *root, zh_jnode *out) {
    zh_jnode cur = p->from_root ? *root : *item;
    for (int i = 0; i < p->nparts; i++)
        if (!zh_jnode_field(&cur, p->parts[i], p->lens[i], &cur)) return false;
    *out = cur;
    return true;
}

/* The item's fields read in one pass (encode_row): first[k] is there when found[k]. */
typedef struct item_fields {
    zh_jnode first[ZH_JKEYS_MAX];
    unsigned char found[ZH_JKEYS_MAX];
} item_fields;

static bool lookup_in_item(const tpl_path *p, const item_fields *f, const zh_jnode *item, zh_jnode *out) {
    if (p->item_slot < 0) return lookup(p, item, NULL, out);
    if (!f->found[p->item_slot]) return false;
    zh_jnode cur = f->first[p->item_slot];
    for (int i = 1; i < p->nparts; i++)
        if (!zh_jnode_field(&cur, p->parts[i], p->lens[i], &cur)) return false;
    *out = cur;
    return true;
}

/* The node as the Lua value json.view would give for it: integral doubles up to 2^53 become
 * integers, integers above 2^63-1 their digits. 1 = a scalar in *v, 0 = null, -1 = object/array. */
static int node_scalar(const zh_jnode *n, zh_scalar *v, char *digits /* 24 */) {
    zh_jvalue jv;
    switch (zh_jnode_read(n, &jv)) {
    case ZJ_INT: v->type = ZS_INT; v->i = jv.i; return 1;
    case ZJ_UINT:
        v->type = ZS_STRING;
        v->n = (size_t)snprintf(digits, 24, "%llu", jv.u);
        v->s = digits;
        return 1;
    case ZJ_DOUBLE: {
        double x = jv.d;
        if (x == floor(x) && fabs(x) <= 9007199254740992.0) {
            v->type = ZS_INT;
            v->i = (long long)x;
        } else {
            v->type = ZS_DOUBLE;
            v->d = x;
        }
        return 1;
    }
    case ZJ_STRING: v->type = ZS_STRING; v->s = jv.s; v->n = jv.n; return 1;
    case ZJ_BOOL: v->type = ZS_BOOL; v->b = jv.b; return 1;
    case ZJ_ARRAY:
    case ZJ_OBJECT: return -1;
    default: return 0;
    }
}

/* Converts the node for column col. Returns 1 with *v set (pointing into scratch or the
 * document), 0 when it gives no value, -1 when it is an object or array and no conversion says
 * what to make of that. */
static int convert(zh_rowtpl *t, const tpl_col *col, lua_State *L, const zh_jnode *node, zh_scalar *v, char *scratch,
                   size_t scap) {
    char digits[24];
    zh_scalar in = {0};
    int k = node ? node_scalar(node, &in, digits) : 0;
    switch (col->conv) {
    case CV_VALUE:
        if (k <= 0) return k;
        *v = in;
        if (in.s == digits) { /* digits live on this frame */
            memcpy(scratch, digits, in.n);
            v->s = scratch;
        }
        return 1;
    case CV_ID: /* as text.id: anything that is no number or string is "" */
        v->type = ZS_STRING;
        v->s = "";
        v->n = 0;
        if (k != 1) return 1;
        if (in.type == ZS_STRING) {
            if (in.s == digits) memcpy(scratch, digits, in.n);
            v->s = in.s == digits ? scratch : in.s;
            v->n = in.n;
        } else if (in.type == ZS_INT) {
            v->n = (size_t)zh_text_number(true, in.i, 0, scratch);
            v->s = scratch;
        } else if (in.type == ZS_DOUBLE) { /* Lua's tostring of a float: %.14g, ".0" when it looks integral */
            int m = snprintf(scratch, scap, "%.14g", in.d);
            if (strspn(scratch, "-0123456789") == (size_t)m) m += snprintf(scratch + m, scap - (size_t)m, ".0");
            v->n = (size_t)m;
            v->s = scratch;
        }
        return 1;
    case CV_DECIMAL: {
        if (k != 1 || in.type == ZS_BOOL) return 0;
        char plain[ZH_TEXT_DECIMAL_MAX + 48];
        size_t pn;
        if (in.type == ZS_STRING) {
            zh_buf b;
            zh_buf_init(&b);
            int rc = zh_text_decimal(in.s, in.n, &b);
            bool fits = rc == 0 && b.len <= ZH_TEXT_DECIMAL_MAX;
            if (fits) memcpy(plain, b.data, b.len);
            pn = b.len;
            zh_buf_free(&b);
            if (!fits) return 0;
        } else {
            int m = zh_text_number(in.type == ZS_INT, in.i, in.d, plain);
            if (m < 0) return 0;
            pn = (size_t)m;
        }
        size_t on = pn;
        if (col->scale >= 0) {
            if (zh_text_decimal_rescale(plain, pn, col->scale, scratch, &on)) t->rounded++;
        } else {
            memcpy(scratch, plain, pn);
        }
        if (col->max_int_digits) { /* too large for the column: no value, not a failed INSERT */
            const char *p = scratch + (scratch[0] == '-');
            const char *dot = memchr(p, '.', on - (size_t)(p - scratch));
            size_t ip = dot ? (size_t)(dot - p) : on - (size_t)(p - scratch);
            if ((int)ip > col->max_int_digits) return 0;
        }
        v->type = ZS_STRING;
        v->s = scratch;
        v->n = on;
        return 1;
    }
    case CV_DATETIME: {
        if (k != 1 || in.type != ZS_STRING || !in.n) return 0;
        int64_t sec;
        double frac;
        char err[160];
        if (zh_time_parse(in.s, in.n, t->zone, &sec, &frac, err, sizeof err) != 0) return 0;
        if (sec < ZH_TIME_MIN_EPOCH || sec > ZH_TIME_MAX_EPOCH) return 0; /* time.format refuses it too */
        int m = zh_time_format(scratch, scap, sec, "%Y-%m-%d %H:%M:%S", t->zone);
        if (m <= 0) return 0;
        v->type = ZS_STRING;
        v->s = scratch;
        v->n = (size_t)m;
        return 1;
    }
    case CV_INT: { /* as math.tointeger: integers, integral floats, numeric strings */
        if (k != 1) return 0;
        long long x;
        if (in.type == ZS_INT) {
            x = in.i;
        } else if (in.type == ZS_DOUBLE) {
            /* Lua's float -> integer rule: every integral float in [-2^63, 2^63) */
            if (in.d != floor(in.d) || !(in.d >= -0x1p63 && in.d < 0x1p63)) return 0;
            x = (long long)in.d;
        } else if (in.type == ZS_STRING) {
            /* Lua reads the numeral (spaces, hex, exponents; leading zeros of any length) */
            char *text = in.n < scap ? scratch : zh_xmalloc(in.n + 1);
            memcpy(text, in.s, in.n);
            text[in.n] = 0;
            bool num = strlen(text) == in.n && lua_stringtonumber(L, text);
            if (text != scratch) free(text);
            if (!num) return 0;
            int isint = 0;
            x = (long long)lua_tointegerx(L, -1, &isint);
            lua_pop(L, 1);
            if (!isint) return 0;
        } else {
            return 0;
        }
        if (col->has_min && x < col->min) x = col->min;
        v->type = ZS_INT;
        v->i = x;
        return 1;
    }
    }
    return 0;
}

static const char *row_fail(zh_rowtpl *t, const tpl_col *col, const char *why, long long item, char *err, size_t errlen) {
    const ch_column *c = &t->schema->cols[col->col];
    if (item >= 0)
        snprintf(err, errlen, "column '%s' (%s) of %s: %s (item %lld of '%s')", c->name, c->type, t->schema->table, why,
                 item + 1, t->each_text);
    else snprintf(err, errlen, "column '%s' (%s) of %s: %s", c->name, c->type, t->schema->table, why);
    return err;
}

/* One row from item (root itself when there is no `each`). */
static const char *encode_row(zh_rowtpl *t, lua_State *L, const zh_jnode *item, root_cache *rc, long long item_no,
                              zh_buf *out, char *err, size_t errlen) {
    const ch_schema *s = t->schema;
    bool seen[256] = {0};
    size_t vstart[256], vlen[256];
    bool has[256];
    char scratch[ZH_TEXT_DECIMAL_MAX + 96];
    bool first = true;
    item_fields fields;
    if (t->first.n) zh_jnode_fields(item, &t->first, fields.first, fields.found);
    zh_buf_addc(out, '{');
    for (int i = 0; i < t->ncols; i++) {
        const tpl_col *col = &t->cols[i];
        const ch_column *c = &s->cols[col->col];
        has[i] = false;
        int got = 0;
        zh_scalar v;
        const char *bytes = NULL;
        size_t nbytes = 0;
        uint64_t rounded_before = t->rounded;
        bool keep = false; /* a ^-only column made for the first time: keep its bytes for the next items */
        if (col->root_only && rc->col_state[i]) {
            if (rc->col_state[i] > 0) {
                got = 1;
                bytes = rc->col_bytes.data + rc->col_off[i];
                nbytes = rc->col_len[i];
                t->rounded += rc->col_rounded[i];
            }
        } else if (!col->is_const) {
            for (int p = 0; p < col->npaths && got == 0; p++) {
                const tpl_path *path = &col->paths[p];
                zh_jnode node;
                const zh_jnode *at = NULL;
                if (path->from_root) {
                    int k = path->root_slot;
                    if (!rc->state[k]) rc->state[k] = lookup(path, rc->root, rc->root, &rc->nodes[k]) ? 1 : -1;
                    if (rc->state[k] > 0) at = &rc->nodes[k];
                } else if (lookup_in_item(path, &fields, item, &node)) {
                    at = &node;
                }
                got = convert(t, col, L, at, &v, scratch, sizeof scratch);
            }
            if (got < 0) return row_fail(t, col, "a JSON object or array; say what to make of it with as = …", item_no, err, errlen);
            if (col->root_only) {
                keep = got > 0;
                if (!keep) rc->col_state[i] = -1;
            }
        }
        int copy = -1; /* default_from: the value of cols[copy], already in out */
        if (got == 0) {
            int d = col->dflt; /* a constant's too: json.null makes it DF_NULL or DF_OMIT */
            if (d == DF_OMIT) continue;
            if (d == DF_NULL) bytes = "null", nbytes = 4;
            else if (d == DF_BYTES) bytes = col->bytes, nbytes = col->nbytes;
            else if (has[col->dflt_from]) copy = col->dflt_from;
            else continue;
        }
        if (!first) zh_buf_addc(out, ',');
        first = false;
        zh_buf_add(out, c->json_key, c->json_key_len);
        size_t at = out->len;
        if (copy >= 0) {
            /* reserve first: the bytes copied are in out, which may move while it grows */
            zh_buf_reserve(out, vlen[copy]);
            zh_buf_add(out, out->data + vstart[copy], vlen[copy]);
        } else if (bytes) {
            zh_buf_add(out, bytes, nbytes);
        } else {
            char why[200];
            if (zh_rowenc_scalar(&v, c->kind, c->is_unsigned, c->scale, out, why, sizeof why))
                return row_fail(t, col, why, item_no, err, errlen);
            if (keep) {
                rc->col_state[i] = 1;
                rc->col_off[i] = rc->col_bytes.len;
                rc->col_len[i] = out->len - at;
                rc->col_rounded[i] = t->rounded - rounded_before;
                zh_buf_add(&rc->col_bytes, out->data + at, out->len - at);
            }
        }
        if (col->col < 256) seen[col->col] = true;
        has[i] = true;
        vstart[i] = at;
        vlen[i] = out->len - at;
    }
    zh_rowenc_fill_defaults(s, seen, &first, out);
    zh_buf_add(out, "}\n", 2);
    return NULL;
}

static long long encode_rows(zh_rowtpl *t, lua_State *L, const zh_jnode *root, zh_buf *out, char *err, size_t errlen) {
    size_t start = out->len;
    long long rows = 0;
    zh_jnode nodes[256];
    signed char state[256] = {0}, col_state[256] = {0};
    size_t col_off[256], col_len[256];
    uint64_t col_rounded[256];
    root_cache rc = {root, nodes, state, col_state, col_off, col_len, col_rounded, {0}};
    if (!t->has_each) {
        if (zh_jnode_type(root) != ZJ_OBJECT && zh_jnode_type(root) != ZJ_ARRAY) return 0;
        const char *e = encode_row(t, L, root, &rc, -1, out, err, errlen);
        zh_buf_free(&rc.col_bytes);
        if (e) {
            out->len = start;
            return -1;
        }
        return 1;
    }
    zh_jnode list, *items;
    if (!lookup(&t->each, root, root, &list)) return 0;
    size_t nitems = zh_rowtpl_list(&list, &items);
    const char *e = NULL;
    for (size_t i = 0; i < nitems && !e; i++) {
        int it = zh_jnode_type(&items[i]);
        if (it != ZJ_OBJECT && it != ZJ_ARRAY) continue;
        e = encode_row(t, L, &items[i], &rc, (long long)i, out, err, errlen);
        if (!e) rows++;
    }
    free(items);
    zh_buf_free(&rc.col_bytes);
    if (e) {
        out->len = start;
        return -1;
    }
    return rows;
}

long long zh_rowtpl_encode(zh_rowtpl *t, lua_State *L, const zh_jnode *root, zh_buf *out, bool count, bool *kept,
                           char *err, size_t errlen) {
    bool k = keeps(t, root);
    if (kept) *kept = k;
    if (!k) return 0;
    uint64_t rounded = t->rounded;
    long long n = encode_rows(t, L, root, out, err, errlen);
    if (n > 0 && count) t->rows += (uint64_t)n;
    if (!count || n < 0) t->rounded = rounded;
    return n;
}
