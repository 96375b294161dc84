/* l_ch.c — owns the Lua `ch` module: query (rows as Lua tables, typed from ClickHouse's own
 * type names), exec, sinks (see sink.c) and small helpers (quote, database, version). */
#include "ch_internal.h"
#include "lrt.h"
#include "log.h"
#include "rowtpl.h"
#include "sink.h"
#include <lauxlib.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SINK_MT "zhost.ch.sink"

enum op_kind { OP_QUERY, OP_RAW, OP_EXEC, OP_DESCRIBE };

typedef struct ch_op {
    zh_pending base;
    ch_req *req;
    enum op_kind kind;
    bool done;
    char *table;               /* OP_DESCRIBE */
    zh_sink_opts sink_opts;
    zh_group *group;
    zh_host *h;
} ch_op;

static void op_req_done(ch_req *r) {
    ch_op *op = r->ud;
    op->done = true;
    zh_task_wake(&op->base);
}

static void op_free(ch_op *op) {
    ch_req_free(op->req);
    free(op->table);
    free(op);
}

static void op_abort(zh_pending *p) {
    ch_op *op = (ch_op *)p;
    ch_req_abort(op->req);
    op_free(op);
}

/* ---- TSV with names and types → Lua rows ---- */

/* A field, telling NULL (a bare \N) from text. */
static const char *tsv_field(const char *p, const char *end, zh_buf *out, bool *is_null, bool *eol) {
    *is_null = end - p >= 2 && p[0] == '\\' && p[1] == 'N' && (p + 2 == end || p[2] == '\t' || p[2] == '\n');
    return zh_ch_tsv_field(p, end, out, eol);
}

static void push_typed(lua_State *L, const char *type, const char *s, size_t n) {
    const char *t = type;
    /* Wrappers nest either way: LowCardinality(Nullable(T)) and Nullable(LowCardinality(T)). */
    for (;;) {
        if (!strncmp(t, "Nullable(", 9)) t += 9;
        else if (!strncmp(t, "LowCardinality(", 15)) t += 15;
        else break;
    }
    if (!strncmp(t, "Int", 3) || !strncmp(t, "UInt", 4)) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s + n && n > 0 && errno == 0 && strncmp(t, "UInt64", 6) != 0 && strncmp(t, "Int128", 6) != 0) {
            lua_pushinteger(L, v);
            return;
        }
        if (!strncmp(t, "UInt64", 6) && n > 0) {
            unsigned long long u = strtoull(s, &end, 10);
            if (end == s + n && u <= (unsigned long long)LUA_MAXINTEGER) {
                lua_pushinteger(L, (lua_Integer)u);
                return;
            }
        }
        lua_pushlstring(L, s, n); /* too big for a Lua integer: keep every digit */
        return;
    }
    if (!strncmp(t, "Float", 5)) {
        lua_pushnumber(L, strtod(s, NULL));
        return;
    }
    /* Current servers have a Bool type (18.16 has none: UInt8); its text "false" would be truthy. */
    if (!strncmp(t, "Bool", 4) && (t[4] == 0 || t[4] == ')')) {
        if (n == 4 && !memcmp(s, "true", 4)) { lua_pushboolean(L, 1); return; }
        if (n == 5 && !memcmp(s, "false", 5)) { lua_pushboolean(L, 0); return; }
    }
    lua_pushlstring(L, s, n);
}

static int push_rows(lua_State *L, const char *body, size_t len) {
    const char *p = body, *end = body + len;
    zh_buf f;
    zh_buf_init(&f);
    bool is_null, eol;
    /* names */
    lua_newtable(L);
    int names = lua_gettop(L), ncols = 0;
    while (p < end) {
        p = tsv_field(p, end, &f, &is_null, &eol);
        lua_pushlstring(L, f.data ? f.data : "", f.len);
        lua_rawseti(L, names, ++ncols);
        if (eol) break;
    }
    lua_newtable(L);
    int types = lua_gettop(L), nt = 0;
    while (p < end) {
        p = tsv_field(p, end, &f, &is_null, &eol);
        lua_pushlstring(L, f.data ? f.data : "", f.len);
        lua_rawseti(L, types, ++nt);
        if (eol) break;
    }
    lua_newtable(L);
    int rows = lua_gettop(L), nrows = 0;
    while (p < end) {
        lua_createtable(L, 0, ncols);
        for (int c = 1; c <= ncols && p < end; c++) {
            p = tsv_field(p, end, &f, &is_null, &eol);
            if (!is_null) {
                lua_rawgeti(L, types, c);
                const char *type = lua_tostring(L, -1);
                lua_pop(L, 1);
                lua_rawgeti(L, names, c);
                push_typed(L, type ? type : "String", f.data ? f.data : "", f.len);
                lua_rawset(L, -3);
            }
            if (eol) break;
        }
        lua_rawseti(L, rows, ++nrows);
    }
    zh_buf_free(&f);
    lua_replace(L, names);
    lua_settop(L, names);
    return 1;
}

static int push_sink(lua_State *L, zh_sink *s);

static int op_push(zh_pending *p, lua_State *co) {
    ch_op *op = (ch_op *)p;
    ch_req *r = op->req;
    int n;
    if (!r->ok) {
        lua_pushnil(co);
        lua_pushstring(co, r->error ? r->error : "ClickHouse request failed");
        n = 2;
        if (op->kind == OP_DESCRIBE) {
            ch_schema *cached = ch_schema_load_cached(op->h, op->table);
            if (cached) {
                ZH_WARN(op->group ? op->group->job : NULL,
                        "msg=\"ClickHouse unreachable; using the cached schema, rows will be spooled if it stays down\" table=%s error=\"%s\"",
                        op->table, r->error);
                lua_pop(co, 2);
                n = push_sink(co, zh_sink_new(op->h, op->group, cached, &op->sink_opts));
            } else {
                lua_pop(co, 1);
                lua_pushfstring(co, "cannot open a sink for %s: %s", op->table, r->error ? r->error : "?");
            }
        }
    } else if (op->kind == OP_QUERY) {
        n = push_rows(co, r->x->resp_body.data ? r->x->resp_body.data : "", r->x->resp_body.len);
    } else if (op->kind == OP_RAW) {
        lua_pushlstring(co, r->x->resp_body.data ? r->x->resp_body.data : "", r->x->resp_body.len);
        n = 1;
    } else if (op->kind == OP_EXEC) {
        lua_pushboolean(co, 1);
        n = 1;
    } else {
        ch_schema *s = ch_schema_parse(op->table, r->x->resp_body.data ? r->x->resp_body.data : "", r->x->resp_body.len);
        if (s->ncols == 0) {
            ch_schema_free(s);
            lua_pushnil(co);
            lua_pushfstring(co, "table %s has no columns", op->table);
            n = 2;
        } else {
            ch_schema_save(op->h, s, r->x->resp_body.data, r->x->resp_body.len);
            n = push_sink(co, zh_sink_new(op->h, op->group, s, &op->sink_opts));
        }
    }
    op_free(op);
    return n;
}

static int start_op_opts(lua_State *L, enum op_kind kind, const char *query, const char *body, size_t len, double timeout_s,
                         int attempts) {
    zh_host *h = zh_host_of(L);
    zh_task *t = zh_task_current(L, true);
    ch_op *op = zh_xcalloc(1, sizeof *op);
    op->base.push = op_push;
    op->base.abort = op_abort;
    op->kind = kind;
    op->h = h;
    op->group = t->group;
    op->req = ch_req_new(h, query, body, len, op_req_done, op);
    ch_req_limit(op->req, timeout_s, attempts);
    ch_req_start(op->req);
    return zh_task_await(L, &op->base);
}

/* { timeout = seconds per attempt, attempts = n } of ch.query, ch.exec and ch.sink; 0 where not given. */
static void read_limits(lua_State *L, int idx, const char *fn, double *timeout_s, int *attempts) {
    *timeout_s = 0;
    *attempts = 0;
    lua_getfield(L, idx, "timeout");
    if (!lua_isnil(L, -1)) {
        int isnum;
        *timeout_s = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(*timeout_s > 0) || *timeout_s > 3600)
            luaL_error(L, "%s: timeout must be seconds in (0, 3600] (got %s)", fn, luaL_tolstring(L, -1, NULL));
    }
    lua_getfield(L, idx, "attempts");
    if (!lua_isnil(L, -1)) {
        int isnum;
        lua_Integer a = lua_tointegerx(L, -1, &isnum);
        if (!isnum || a < 1 || a > 100)
            luaL_error(L, "%s: attempts must be a whole number 1..100 (got %s)", fn, luaL_tolstring(L, -1, NULL));
        *attempts = (int)a;
    }
    lua_pop(L, 2);
}

/* The optional {timeout=, attempts=} of ch.query and ch.exec at idx, checked; 0 where not given. */
static void statement_limits(lua_State *L, int idx, const char *fn, double *timeout_s, int *attempts) {
    *timeout_s = 0;
    *attempts = 0;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    static const char *const known[] = {"timeout", "attempts", NULL};
    zh_lrt_check_keys(L, idx, known, fn, "option");
    read_limits(L, idx, fn, timeout_s, attempts);
}

/* ch.query(sql [, {timeout=, attempts=}]) -> rows | nil, err. With a FORMAT clause of its own: the
 * raw body. timeout: seconds per attempt (default 300); attempts: default ZHOST_CH_ATTEMPTS or 4. */
static int l_query(lua_State *L) {
    const char *sql = luaL_checkstring(L, 1);
    double timeout_s;
    int attempts;
    statement_limits(L, 2, "ch.query", &timeout_s, &attempts);
    char *s = ch_substitute_db(zh_host_of(L), sql);
    zh_buf b;
    zh_buf_init(&b);
    enum op_kind kind = OP_QUERY;
    size_t stmt_end;
    if (zh_ch_sql_own_format(s, &stmt_end)) {
        kind = OP_RAW; /* the caller chose a format: return the body */
        zh_buf_adds(&b, s);
    } else {
        /* ours goes after the statement's last token: after a trailing ';' it made two statements */
        zh_buf_add(&b, s, stmt_end);
        zh_buf_adds(&b, "\nFORMAT TabSeparatedWithNamesAndTypes");
    }
    free(s);
    lua_pushstring(L, b.data);
    zh_buf_free(&b);
    const char *body = lua_tostring(L, -1);
    return start_op_opts(L, kind, NULL, body, strlen(body), timeout_s, attempts);
}

/* ch.exec(sql [, {timeout=, attempts=}]) -> true | nil, err. A dry run writes nothing, and exec is
 * how scripts write outside sinks (ALTER, INSERT ... SELECT), so there the statement is only logged.
 * The limits are ch.query's: a script that must not wait 4 x 300 s on a hung server says so. */
static int l_exec(lua_State *L) {
    const char *sql = luaL_checkstring(L, 1);
    double timeout_s;
    int attempts;
    statement_limits(L, 2, "ch.exec", &timeout_s, &attempts);
    zh_host *h = zh_host_of(L);
    zh_task *t = zh_task_current(L, true);
    if (zh_ch_is_dry_run(h, t->group)) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_adds(&b, "msg=\"dry run: ch.exec statement not sent\" sql=\"");
        for (const char *p = sql; *p && p - sql < 300; p++) zh_buf_addc(&b, *p == '"' ? '\'' : *p);
        zh_buf_adds(&b, "\"");
        zh_log_line(ZH_LOG_INFO, t->group ? t->group->job : NULL, zh_buf_cstr(&b));
        zh_buf_free(&b);
        lua_pushboolean(L, 1);
        return 1;
    }
    char *s = ch_substitute_db(zh_host_of(L), sql);
    lua_pushstring(L, s);
    free(s);
    const char *body = lua_tostring(L, -1);
    return start_op_opts(L, OP_EXEC, NULL, body, strlen(body), timeout_s, attempts);
}

static bool valid_table(const char *t) {
    if (!*t) return false;
    int dots = 0;
    for (const char *p = t; *p; p++) {
        if (*p == '.') dots++;
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
    }
    return dots <= 1 && t[0] != '.' && t[strlen(t) - 1] != '.';
}

/* ch.sink(table [, {max_rows=, max_bytes=, max_age=, timeout=, attempts=}]) -> sink | nil, err.
 * timeout/attempts bound every statement the sink sends (its DESCRIBE and each INSERT). */
static int l_sink(lua_State *L) {
    const char *table = luaL_checkstring(L, 1);
    if (!valid_table(table)) return luaL_error(L, "ch.sink: bad table name '%s'", table);
    zh_host *h = zh_host_of(L);
    zh_sink_opts o = {0};
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_istable(L, 2)) return luaL_error(L, "ch.sink: options must be a table (got %s)", luaL_typename(L, 2));
        static const char *const known[] = {"max_rows", "max_bytes", "max_age", "timeout", "attempts", NULL};
        zh_lrt_check_keys(L, 2, known, "ch.sink", "option");
        /* 0 or a negative count became the default (a negative one, cast to size_t, no limit at all) */
        static const char *const counts[] = {"max_rows", "max_bytes"};
        size_t *dest[] = {&o.max_rows, &o.max_bytes};
        for (int i = 0; i < 2; i++) {
            lua_getfield(L, 2, counts[i]);
            if (!lua_isnil(L, -1)) {
                int isint;
                lua_Integer v = lua_tointegerx(L, -1, &isint);
                if (!isint || v < 1)
                    return luaL_error(L, "ch.sink: %s must be a whole number >= 1 (got %s)", counts[i], luaL_tolstring(L, -1, NULL));
                *dest[i] = (size_t)v;
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, 2, "max_age");
        if (!lua_isnil(L, -1)) {
            int isnum;
            o.max_age_s = lua_tonumberx(L, -1, &isnum);
            /* <= 0 became 5 s; NaN and huge values overflowed the timer's milliseconds */
            if (!isnum || !(o.max_age_s > 0 && o.max_age_s <= 86400))
                return luaL_error(L, "ch.sink: max_age must be seconds in (0, 86400] (got %s)", luaL_tolstring(L, -1, NULL));
        }
        lua_pop(L, 1);
        read_limits(L, 2, "ch.sink", &o.timeout_s, &o.attempts);
    }
    char *full;
    if (strchr(table, '.')) {
        full = ch_substitute_db(h, table);
    } else {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s.%s", h->ch->database, table);
        full = b.data;
    }
    zh_buf q;
    zh_buf_init(&q);
    zh_buf_printf(&q, "DESCRIBE TABLE %s FORMAT TabSeparated", full);
    lua_pushstring(L, q.data);
    zh_buf_free(&q);
    const char *body = lua_tostring(L, -1);
    zh_task *t = zh_task_current(L, true);
    ch_op *op = zh_xcalloc(1, sizeof *op);
    op->base.push = op_push;
    op->base.abort = op_abort;
    op->kind = OP_DESCRIBE;
    op->h = h;
    op->group = t->group;
    op->table = full;
    op->sink_opts = o;
    op->req = ch_req_new(h, NULL, body, strlen(body), op_req_done, op);
    ch_req_limit(op->req, o.timeout_s, o.attempts);
    ch_req_start(op->req);
    return zh_task_await(L, &op->base);
}

/* ---- sink userdata ---- */

typedef struct { zh_sink *s; } sink_ud;

static int push_sink(lua_State *L, zh_sink *s) {
    sink_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = s;
    luaL_setmetatable(L, SINK_MT);
    return 1;
}

static zh_sink *check_sink(lua_State *L) {
    sink_ud *u = luaL_checkudata(L, 1, SINK_MT);
    if (!u->s || !zh_host_of(L)->ch || !zh_sink_usable(u->s)) luaL_error(L, "sink is no longer usable (its run has ended)");
    return u->s;
}

static int wait_push(zh_pending *p, lua_State *co) {
    zh_sink_wait *w = (zh_sink_wait *)p;
    int n = w->push_result(w, co);
    free(w);
    return n;
}

static void wait_abort(zh_pending *p) {
    zh_sink_wait *w = (zh_sink_wait *)p;
    zh_sink_remove_waiter(w->sink, w);
    free(w);
}

static int push_true(zh_sink_wait *w, lua_State *co) {
    (void)w;
    lua_pushboolean(co, 1);
    return 1;
}

static int push_flush_result(zh_sink_wait *w, lua_State *co) {
    const char *e = zh_sink_last_error(w->sink);
    if (e && zh_sink_lost(w->sink)) {
        lua_pushnil(co);
        lua_pushfstring(co, "%s: %I rows LOST (the spool refused them), %I rows spooled: %s", zh_sink_table(w->sink),
                        (LUAI_UACINT)zh_sink_lost(w->sink), (LUAI_UACINT)zh_sink_spooled(w->sink), e);
        return 2;
    }
    if (e && zh_sink_spooled(w->sink)) {
        lua_pushnil(co);
        lua_pushfstring(co, "%s: %I rows spooled: %s", zh_sink_table(w->sink), (LUAI_UACINT)zh_sink_spooled(w->sink), e);
        return 2;
    }
    lua_pushboolean(co, 1);
    return 1;
}

/* Suspends the task until the sink takes rows again (or, want_idle, has nothing in flight);
 * push_result gives the waiting call's results, k (may be NULL) goes on after the wait. */
static int await_sink(lua_State *L, zh_sink *s, bool want_idle, int (*push_result)(zh_sink_wait *, lua_State *),
                      long long count, lua_KFunction k) {
    zh_sink_wait *w = zh_xcalloc(1, sizeof *w);
    w->base.push = wait_push;
    w->base.abort = wait_abort;
    w->want_idle = want_idle;
    w->push_result = push_result;
    w->count = count;
    zh_sink_add_waiter(s, w);
    return zh_task_await_k(L, &w->base, 0, k);
}

static int sink_wait(lua_State *L, zh_sink *s, bool want_idle) {
    return await_sink(L, s, want_idle, want_idle ? push_flush_result : push_true, 0, NULL);
}

/* sink:add(row) -> true (waits while a full buffer is being sent); a bad row raises */
static int l_sink_add(lua_State *L) {
    zh_sink *s = check_sink(L);
    if (zh_sink_closed(s)) return luaL_error(L, "sink for %s is closed", zh_sink_table(s));
    luaL_checktype(L, 2, LUA_TTABLE);
    char err[512];
    bool must_wait;
    const char *e = zh_sink_add(s, L, 2, &must_wait, err, sizeof err);
    if (e) return luaL_error(L, "%s", e);
    if (must_wait && zh_host_of(L)->current && lua_isyieldable(L)) return sink_wait(L, s, false);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- row templates (rowtpl.c) ---- */

#define ROWTPL_MT "zhost.ch.template"

typedef struct {
    zh_rowtpl *t;
} rowtpl_ud;

/* sink:template(spec) -> template. Misuse (unknown column, option or conversion) raises. */
static int l_sink_template(lua_State *L) {
    zh_sink *s = check_sink(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    rowtpl_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = NULL;
    luaL_setmetatable(L, ROWTPL_MT);
    lua_pushvalue(L, 1); /* the sink userdata: its schema must outlive the template */
    lua_setiuservalue(L, -2, 1);
    zh_rowtpl_compile(L, 2, zh_sink_schema(s), &u->t);
    return 1;
}

static rowtpl_ud *check_tpl(lua_State *L, zh_sink **sink) {
    rowtpl_ud *u = luaL_checkudata(L, 1, ROWTPL_MT);
    lua_getiuservalue(L, 1, 1);
    sink_ud *su = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!u->t || !su || !su->s || !zh_host_of(L)->ch || !zh_sink_usable(su->s))
        luaL_error(L, "template's sink is no longer usable (its run has ended)");
    *sink = su->s;
    return u;
}

static void check_view_arg(lua_State *L, zh_jnode *root) {
    if (!zh_jnode_of_view(L, 2, root))
        luaL_typeerror(L, 2, "json view (from res:json_view() or json.view; a decoded table goes through sink:add)");
}

static int push_count(zh_sink_wait *w, lua_State *co) {
    lua_pushinteger(co, (lua_Integer)w->count);
    return 1;
}

/* template:add(view) -> number of rows added (waits while a full buffer is being sent); a value
 * its column cannot take raises, naming the column and the item */
static int l_tpl_add(lua_State *L) {
    zh_sink *s;
    rowtpl_ud *u = check_tpl(L, &s);
    if (zh_sink_closed(s)) return luaL_error(L, "sink for %s is closed", zh_sink_table(s));
    zh_jnode root;
    check_view_arg(L, &root);
    zh_buf *b = zh_sink_batch(s);
    size_t before = b->len;
    char err[512];
    long long n = zh_rowtpl_encode(u->t, L, &root, b, true, NULL, err, sizeof err);
    if (n < 0) return luaL_error(L, "%s", err);
    bool must_wait;
    zh_sink_commit(s, before, (uint64_t)n, &must_wait);
    if (must_wait && zh_host_of(L)->current && lua_isyieldable(L)) return await_sink(L, s, false, push_count, n, NULL);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int push_nothing(zh_sink_wait *w, lua_State *co) {
    (void)w;
    (void)co;
    return 0;
}

/* template:add_each's stack: 1 template, 2 the list view, then where it is and what it counted,
 * kept there (not in C) because the loop may wait and go on in add_each_k. */
enum { EACH_NEXT = 3, EACH_ROWS, EACH_KEPT, EACH_SKIPPED };

/* The loop of template:add_each from the item at EACH_NEXT. Each object is added exactly as
 * template:add adds it, and a wait comes after the item whose rows filled the batch, as it does
 * after such an add: the loop then yields and goes on at the next item, so no item is added twice
 * or skipped. The list's items are collected again after a wait: nodes are valid within one C call
 * (jsonview.h), and the list view on the stack keeps its document alive meanwhile. */
static int add_each_k(lua_State *L, int status, lua_KContext ctx);

static int add_each_loop(lua_State *L) {
    zh_sink *s;
    rowtpl_ud *u = check_tpl(L, &s);
    if (zh_sink_closed(s)) return luaL_error(L, "sink for %s is closed", zh_sink_table(s));
    zh_jnode list;
    check_view_arg(L, &list);
    size_t i = (size_t)lua_tointeger(L, EACH_NEXT);
    lua_Integer rows = lua_tointeger(L, EACH_ROWS), kept = lua_tointeger(L, EACH_KEPT),
                skipped = lua_tointeger(L, EACH_SKIPPED);
    zh_jnode *items;
    size_t n = zh_rowtpl_list(&list, &items);
    bool can_wait = zh_host_of(L)->current && lua_isyieldable(L);
    char err[512];
    for (; i < n; i++) {
        if (zh_jnode_type(&items[i]) != ZJ_OBJECT) {
            skipped++;
            continue;
        }
        zh_buf *b = zh_sink_batch(s);
        size_t before = b->len;
        bool k;
        long long r = zh_rowtpl_encode(u->t, L, &items[i], b, true, &k, err, sizeof err);
        if (r < 0) {
            free(items);
            return luaL_error(L, "list item %d: %s", (int)i + 1, err);
        }
        if (!k) {
            skipped++;
            continue;
        }
        kept++;
        rows += r;
        bool must_wait;
        zh_sink_commit(s, before, (uint64_t)r, &must_wait);
        if (must_wait && can_wait) {
            free(items);
            lua_pushinteger(L, (lua_Integer)(i + 1));
            lua_replace(L, EACH_NEXT);
            lua_pushinteger(L, rows);
            lua_replace(L, EACH_ROWS);
            lua_pushinteger(L, kept);
            lua_replace(L, EACH_KEPT);
            lua_pushinteger(L, skipped);
            lua_replace(L, EACH_SKIPPED);
            return await_sink(L, s, false, push_nothing, 0, add_each_k);
        }
    }
    free(items);
    lua_pushinteger(L, rows);
    lua_pushinteger(L, kept);
    lua_pushinteger(L, skipped);
    return 3;
}

static int add_each_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    lua_settop(L, EACH_SKIPPED);
    return add_each_loop(L);
}

/* template:add_each(list) -> rows added, objects kept, items skipped: template:add for every item
 * of a list view, in C (waits like add while a full buffer is being sent). An item that is no
 * object, or fails the template's `only`, is skipped. A value its column cannot take raises
 * naming the list item; the rows of the items before it stay added, as separate adds would. */
static int l_tpl_add_each(lua_State *L) {
    zh_sink *s;
    check_tpl(L, &s);
    zh_jnode list;
    if (!zh_jnode_of_view(L, 2, &list))
        luaL_typeerror(L, 2, "json view of a list (from res:json_view() or json.view)");
    lua_settop(L, 2);
    for (int i = EACH_NEXT; i <= EACH_SKIPPED; i++) lua_pushinteger(L, 0);
    return add_each_loop(L);
}

/* template:rows(view) -> the JSONEachRow lines add would make, added nowhere (REPL, tests) */
static int l_tpl_rows(lua_State *L) {
    zh_sink *s;
    rowtpl_ud *u = check_tpl(L, &s);
    zh_jnode root;
    check_view_arg(L, &root);
    zh_buf b;
    zh_buf_init(&b);
    char err[512];
    long long n = zh_rowtpl_encode(u->t, L, &root, &b, false, NULL, err, sizeof err);
    if (n < 0) {
        zh_buf_free(&b);
        return luaL_error(L, "%s", err);
    }
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    zh_buf_free(&b);
    lua_pushinteger(L, (lua_Integer)n);
    return 2;
}

/* template:stats() -> {rows = added so far, rounded = decimals rounded to their scale} */
static int l_tpl_stats(lua_State *L) {
    rowtpl_ud *u = luaL_checkudata(L, 1, ROWTPL_MT);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, u->t ? (lua_Integer)zh_rowtpl_rows(u->t) : 0);
    lua_setfield(L, -2, "rows");
    lua_pushinteger(L, u->t ? (lua_Integer)zh_rowtpl_rounded(u->t) : 0);
    lua_setfield(L, -2, "rounded");
    return 1;
}

static int l_tpl_gc(lua_State *L) {
    rowtpl_ud *u = luaL_checkudata(L, 1, ROWTPL_MT);
    zh_rowtpl_free(u->t);
    u->t = NULL;
    return 0;
}

static int l_tpl_tostring(lua_State *L) {
    rowtpl_ud *u = luaL_checkudata(L, 1, ROWTPL_MT);
    lua_getiuservalue(L, 1, 1);
    sink_ud *su = lua_touserdata(L, -1);
    /* the schema belongs to the sink, which is freed when its run ends */
    if (u->t && su && su->s && zh_host_of(L)->ch && zh_sink_usable(su->s))
        lua_pushfstring(L, "template(%s)", zh_rowtpl_schema(u->t)->table);
    else lua_pushliteral(L, "template(its run has ended)");
    return 1;
}

/* sink:flush() -> true | nil, err (rows were spooled) */
static int l_sink_flush(lua_State *L) {
    zh_sink *s = check_sink(L);
    if (zh_sink_flush(s)) return push_flush_result(&(zh_sink_wait){.sink = s}, L);
    return sink_wait(L, s, true);
}

/* sink:close() -> like flush, then further adds raise */
static int l_sink_close(lua_State *L) {
    zh_sink *s = check_sink(L);
    if (zh_sink_closed(s) && zh_sink_idle(s)) return push_flush_result(&(zh_sink_wait){.sink = s}, L);
    zh_sink_close(s);
    if (zh_sink_idle(s)) return push_flush_result(&(zh_sink_wait){.sink = s}, L);
    return sink_wait(L, s, true);
}

static int l_sink_count(lua_State *L) {
    zh_sink *s = check_sink(L);
    lua_pushinteger(L, (lua_Integer)zh_sink_rows(s));
    return 1;
}

static int l_sink_gc(lua_State *L) {
    sink_ud *u = luaL_checkudata(L, 1, SINK_MT);
    if (u->s && zh_host_of(L)->ch) zh_sink_detach(u->s);
    u->s = NULL;
    return 0;
}

static int l_sink_tostring(lua_State *L) {
    sink_ud *u = luaL_checkudata(L, 1, SINK_MT);
    if (u->s) lua_pushfstring(L, "sink(%s, %I rows)", zh_sink_table(u->s), (LUAI_UACINT)zh_sink_rows(u->s));
    else lua_pushliteral(L, "sink(closed)");
    return 1;
}

/* ch.quote(s) -> 'escaped' SQL string literal */
static int l_quote(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'' || s[i] == '\\') luaL_addchar(&b, '\\');
        luaL_addchar(&b, s[i]);
    }
    luaL_addchar(&b, '\'');
    luaL_pushresult(&b);
    return 1;
}

static int l_database(lua_State *L) {
    lua_pushstring(L, zh_host_of(L)->ch->database);
    return 1;
}

/* ch.spool_status() -> { dir=, files=, rows=, bytes=, quarantined_rows=, oldest= }: what waits in
 * the spool for replay (oldest: the last write of its oldest file, Unix seconds, 0 when empty), and
 * the rows replay set aside because ClickHouse rejected their content */
static int l_spool_status(lua_State *L) {
    zh_host *h = zh_host_of(L);
    zh_spool_info info;
    zh_spool_stat_host(h, &info);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, h->spool_dir);
    lua_setfield(L, -2, "dir");
    lua_pushinteger(L, info.files);
    lua_setfield(L, -2, "files");
    lua_pushinteger(L, (lua_Integer)info.rows);
    lua_setfield(L, -2, "rows");
    lua_pushinteger(L, (lua_Integer)info.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)info.quarantined_rows);
    lua_setfield(L, -2, "quarantined_rows");
    lua_pushinteger(L, (lua_Integer)info.oldest);
    lua_setfield(L, -2, "oldest");
    return 1;
}

/* The metatable of a userdata class: its methods, __gc and __tostring. */
static void define_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction tostring) {
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}

int zh_open_ch(lua_State *L) {
    static const luaL_Reg sink_methods[] = {
        {"add", l_sink_add},     {"flush", l_sink_flush}, {"close", l_sink_close},
        {"count", l_sink_count}, {"template", l_sink_template}, {NULL, NULL},
    };
    define_class(L, SINK_MT, sink_methods, l_sink_gc, l_sink_tostring);
    static const luaL_Reg template_methods[] = {
        {"add", l_tpl_add}, {"add_each", l_tpl_add_each}, {"rows", l_tpl_rows}, {"stats", l_tpl_stats}, {NULL, NULL},
    };
    define_class(L, ROWTPL_MT, template_methods, l_tpl_gc, l_tpl_tostring);
    static const luaL_Reg fns[] = {
        {"query", l_query}, {"exec", l_exec}, {"sink", l_sink}, {"quote", l_quote}, {"database", l_database},
        {"spool_status", l_spool_status}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
