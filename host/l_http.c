/* l_http.c — owns the Lua `http` module: requests built on zh_xfer, the retry policy
 * (exponential backoff with full jitter, Retry-After), and per-source limits (concurrency cap,
 * requests per second). A source is a name a script chooses (default: the URL's host).
 *
 * A request is an http_op: queued for a slot of its source, running, or sleeping before a
 * retry. Its uv timer is closed, and the op freed, in exactly one place (op_destroy). */
#include "l_http.h"
#include "lrt.h"
#include "curl_uv.h"
#include "l_time.h"
#include "jsonview.h"
#include "log.h"
#include "task.h"
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct retry_policy {
    int attempts;            /* total tries, first included */
    double base, cap;        /* backoff: random(0, min(cap, base * 2^n)) seconds */
    double retry_after_max;  /* longest Retry-After honoured, seconds */
    bool on_5xx, on_429, on_network;
} retry_policy;

typedef struct http_op http_op;

typedef struct http_source {
    char *name;
    int max_active;
    double rps;              /* 0 = unlimited */
    double tokens, last_refill;
    int active;
    retry_policy retry;
    bool retry_set;
    http_op *queue_head, *queue_tail;
    uv_timer_t *refill_timer; /* armed while requests wait for an rps token */
    uint64_t requests, retries, failures;
    struct http_source *next;
} http_source;

typedef struct zh_http_state {
    zh_host *h;
    http_source *sources;
    retry_policy default_retry;
    int default_max_active;
    double default_rps;
    uint64_t rng;
} zh_http_state;

enum op_state { OP_QUEUED, OP_RUNNING, OP_BACKOFF, OP_DONE };

struct http_op {
    zh_pending base;
    zh_http_state *st;
    http_source *src;
    zh_xfer *x;
    zh_group *group;
    retry_policy retry;
    enum op_state state;
    int attempt;
    double timeout_s;
    double started_at;
    char *method, *url;
    char *error;             /* final failure, when no response */
    uv_timer_t timer;
    http_op *next_queued;
};

static const char *job_of(http_op *op) { return op->group ? op->group->job : NULL; }

static double rand01(zh_http_state *st) {
    /* xorshift64*: jitter only, no security role. */
    uint64_t x = st->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    st->rng = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void source_free_timer(uv_handle_t *hd) { free(hd); }

static http_source *source_get(zh_http_state *st, const char *name) {
    for (http_source *s = st->sources; s; s = s->next)
        if (!strcmp(s->name, name)) return s;
    http_source *s = zh_xcalloc(1, sizeof *s);
    s->name = zh_xstrdup(name);
    s->max_active = st->default_max_active;
    s->rps = st->default_rps;
    s->tokens = 1;
    s->last_refill = zh_now_mono();
    s->next = st->sources;
    st->sources = s;
    return s;
}

void zh_http_init(zh_host *h) {
    zh_http_state *st = zh_xcalloc(1, sizeof *st);
    st->h = h;
    st->default_retry = (retry_policy){4, 0.5, 30, 120, true, true, true};
    st->default_max_active = 8;
    st->default_rps = 0;
    st->rng = (uint64_t)zh_now_wall() * 1000003u ^ (uint64_t)(uintptr_t)st;
    if (!st->rng) st->rng = 88172645463325252ULL;
    h->http = st;
}

void zh_http_shutdown(zh_host *h) {
    zh_http_state *st = h->http;
    if (!st) return;
    while (st->sources) {
        http_source *s = st->sources;
        st->sources = s->next;
        if (s->refill_timer) uv_close((uv_handle_t *)s->refill_timer, source_free_timer);
        free(s->name);
        free(s);
    }
    free(st);
    h->http = NULL;
}

/* ---- slots and the rps bucket ---- */

static void op_start(http_op *op);
static void pump(http_source *s);

static void refill(http_source *s) {
    if (s->rps <= 0) return;
    double now = zh_now_mono();
    s->tokens += (now - s->last_refill) * s->rps;
    double burst = s->rps < 1 ? 1 : s->rps;
    if (s->tokens > burst) s->tokens = burst;
    s->last_refill = now;
}

static void refill_fired(uv_timer_t *t) { pump(t->data); }

static void pump(http_source *s) {
    while (s->queue_head && s->active < s->max_active) {
        if (s->rps > 0) {
            refill(s);
            if (s->tokens < 1) {
                double wait_ms = ceil((1 - s->tokens) / s->rps * 1000.0);
                uint64_t ms = wait_ms < 86400e3 ? (uint64_t)wait_ms : 86400000u; /* rps = 1e-300 */
                if (!s->refill_timer) {
                    s->refill_timer = zh_xcalloc(1, sizeof *s->refill_timer);
                    uv_timer_init(s->queue_head->st->h->loop, s->refill_timer);
                    s->refill_timer->data = s;
                }
                uv_timer_start(s->refill_timer, refill_fired, ms ? ms : 1, 0);
                return;
            }
            s->tokens -= 1;
        }
        http_op *op = s->queue_head;
        s->queue_head = op->next_queued;
        if (!s->queue_head) s->queue_tail = NULL;
        op->next_queued = NULL;
        op_start(op);
    }
}

static void enqueue_op(http_op *op) {
    http_source *s = op->src;
    op->state = OP_QUEUED;
    op->next_queued = NULL;
    if (s->queue_tail) s->queue_tail->next_queued = op; else s->queue_head = op;
    s->queue_tail = op;
    pump(s);
}

static void dequeue_op(http_op *op) {
    http_source *s = op->src;
    http_op **pp = &s->queue_head, *prev = NULL;
    while (*pp && *pp != op) { prev = *pp; pp = &(*pp)->next_queued; }
    if (!*pp) return;
    *pp = op->next_queued;
    if (s->queue_tail == op) s->queue_tail = prev;
}

/* ---- the op lifecycle ---- */

static void op_closed(uv_handle_t *hd) {
    http_op *op = hd->data;
    free(op->method);
    free(op->url);
    free(op->error);
    free(op);
}

static void op_destroy(http_op *op) {
    zh_xfer_free(op->x);
    op->x = NULL;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, op_closed);
}

static void op_finish(http_op *op) {
    op->state = OP_DONE;
    zh_task_wake(&op->base);
}

static bool is_network_error(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST: case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2: case CURLE_HTTP2_STREAM: case CURLE_SSL_CONNECT_ERROR:
    case CURLE_BAD_CONTENT_ENCODING:
        return true;
    default:
        return false;
    }
}

/* Retry-After (RFC 9110 10.2.3): delay-seconds (digits only) or an HTTP-date in any of its three
 * forms (l_time.c). Returns seconds to wait (0 for a date already past), or -1 when the header is
 * absent or unreadable, which means the ordinary backoff. Only IMF-fixdate was read before (with
 * strptime, which also took trailing garbage), and strtod took "-5", "1e3", "0x10", "inf". */
double zh_http_retry_after(const char *v, double now) {
    if (!v) return -1;
    size_t n = strlen(v);
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    if (!n) return -1;
    size_t digits = 0;
    while (digits < n && v[digits] >= '0' && v[digits] <= '9') digits++;
    if (digits == n) return strtod(v, NULL);
    int64_t t;
    if (zh_time_parse_http_date(v, n, (int64_t)now, &t) != 0) return -1;
    double d = (double)t - now;
    return d < 0 ? 0 : d;
}

static void backoff_fired(uv_timer_t *t) {
    http_op *op = t->data;
    enqueue_op(op);
}

static void op_done(zh_xfer *x) {
    http_op *op = x->ud;
    http_source *s = op->src;
    s->active--;
    if (op->group) op->group->http_bytes += x->resp_body.len;
    double took = zh_now_mono() - x->started_at;
    const char *reason = NULL;
    char why[96];
    double retry_after = -1;
    if (x->result != CURLE_OK) {
        if (op->retry.on_network && is_network_error(x->result) && !x->body_too_large) reason = zh_xfer_error(x);
    } else if ((x->status == 429 && op->retry.on_429) || (x->status >= 500 && x->status <= 599 && op->retry.on_5xx)) {
        snprintf(why, sizeof why, "HTTP %ld", x->status);
        reason = why;
        char *ra = zh_xfer_header(x, "retry-after");
        retry_after = zh_http_retry_after(ra, zh_now_wall());
        free(ra);
    }
    ZH_DEBUG(job_of(op), "msg=http method=%s url=\"%s\" status=%ld attempt=%d time=%.3f%s%s", op->method,
             op->url, x->status, op->attempt, took, x->result != CURLE_OK ? " error=" : "",
             x->result != CURLE_OK ? zh_xfer_error(x) : "");
    if (reason && op->attempt < op->retry.attempts && !(retry_after > op->retry.retry_after_max)) {
        double cap = op->retry.base * pow(2, op->attempt - 1);
        if (cap > op->retry.cap) cap = op->retry.cap;
        double delay = rand01(op->st) * cap;
        if (retry_after >= 0 && retry_after > delay) delay = retry_after;
        /* Never sleep past the request's overall deadline. */
        double left = op->timeout_s * op->retry.attempts - (zh_now_mono() - op->started_at);
        if (delay > left && left > 0) delay = left;
        op->attempt++;
        s->retries++;
        if (op->group) op->group->http_retries++;
        ZH_WARN(job_of(op), "msg=\"http retry\" method=%s url=\"%s\" reason=\"%s\" attempt=%d of=%d delay=%.2f",
                op->method, op->url, reason, op->attempt, op->retry.attempts, delay);
        op->state = OP_BACKOFF;
        if (!(delay <= 86400)) delay = 86400; /* base = cap = math.huge: a day, not an overflow */
        uv_timer_start(&op->timer, backoff_fired, (uint64_t)(delay * 1000), 0);
        pump(s);
        return;
    }
    if (x->result != CURLE_OK) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s %s: %s", op->method, op->url, zh_xfer_error(x));
        if (op->attempt > 1) zh_buf_printf(&b, " (after %d attempts)", op->attempt);
        op->error = b.data;
        s->failures++;
    } else if (reason && retry_after > op->retry.retry_after_max) {
        ZH_WARN(job_of(op), "msg=\"http retry-after too long\" url=\"%s\" retry_after=%.0f max=%.0f", op->url,
                retry_after, op->retry.retry_after_max);
    }
    op_finish(op);
    pump(s);
}

static void op_start(http_op *op) {
    op->state = OP_RUNNING;
    op->src->active++;
    op->src->requests++;
    if (op->group) op->group->http_requests++;
    if (zh_xfer_start(op->x) != 0) {
        op->src->active--;
        op->error = zh_xstrdup("could not start the transfer");
        op_finish(op);
    }
}

static void op_abort(zh_pending *p) {
    http_op *op = (http_op *)p;
    switch (op->state) {
    case OP_QUEUED: dequeue_op(op); break;
    case OP_RUNNING:
        zh_xfer_abort(op->x);
        op->src->active--;
        pump(op->src);
        break;
    case OP_BACKOFF: uv_timer_stop(&op->timer); break;
    case OP_DONE: break;
    }
    op_destroy(op);
}

static void push_header(void *ud, const char *name, const char *value) {
    lua_State *L = ud;
    lua_getfield(L, -1, name);
    if (lua_isstring(L, -1)) {
        lua_pushliteral(L, ", ");
        lua_pushstring(L, value);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushstring(L, value);
    }
    lua_setfield(L, -2, name);
}

#define RESPONSE_MT "zhost.http.response"

/* A response's body stays in C until a script reads res.body (or pairs() over the response):
 * loaders that only call res:json_view() get the bytes parsed in place, without copying every
 * page into a Lua string and simdjson copying it again for its padding. The bytes live in a
 * body_holder userdata that an ephemeron table in the registry keys by the response table, so
 * they go when the response goes; reading res.body turns them into the field, once. */
#define BODY_MT "zhost.http.body"
static const char BODY_KEYS = 0; /* its address: the registry key of the ephemeron table */

typedef struct body_holder {
    zh_buf b;
} body_holder;

static int body_holder_gc(lua_State *L) {
    body_holder *h = luaL_checkudata(L, 1, BODY_MT);
    zh_buf_free(&h->b);
    return 0;
}

/* Moves *body (non-empty) into a holder for the response table at t. */
static void keep_body(lua_State *L, int t, zh_buf *body) {
    t = lua_absindex(L, t);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &BODY_KEYS);
    lua_pushvalue(L, t);
    body_holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    zh_buf_init(&h->b);
    luaL_setmetatable(L, BODY_MT);
    h->b = *body; /* nothing below raises before the holder is in the table: it owns the bytes */
    zh_buf_init(body);
    zh_buf_reserve(&h->b, ZH_JSON_PADDING);
    memset(h->b.data + h->b.len, 0, ZH_JSON_PADDING);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The holder of the response table at t, or NULL (body already a field, or no response). Valid
 * while t is reachable. */
static body_holder *held_body(lua_State *L, int t) {
    t = lua_absindex(L, t);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &BODY_KEYS);
    lua_pushvalue(L, t);
    lua_rawget(L, -2);
    body_holder *h = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return h;
}

/* Makes the held bytes the response's body field and frees them. */
static void fill_body(lua_State *L, int t) {
    t = lua_absindex(L, t);
    body_holder *h = held_body(L, t);
    if (!h) return;
    lua_pushliteral(L, "body");
    lua_pushlstring(L, h->b.data, h->b.len);
    lua_rawset(L, t);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &BODY_KEYS);
    lua_pushvalue(L, t);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    zh_buf_free(&h->b);
}

static int op_push(zh_pending *p, lua_State *co) {
    http_op *op = (http_op *)p;
    int n;
    if (op->error) {
        lua_pushnil(co);
        lua_pushstring(co, op->error);
        n = 2;
    } else {
        zh_xfer *x = op->x;
        lua_createtable(co, 0, 6);
        lua_pushinteger(co, x->status);
        lua_setfield(co, -2, "status");
        if (x->resp_body.len) {
            keep_body(co, -1, &x->resp_body);
        } else {
            lua_pushliteral(co, "");
            lua_setfield(co, -2, "body");
        }
        lua_pushstring(co, op->url);
        lua_setfield(co, -2, "url");
        lua_pushinteger(co, op->attempt);
        lua_setfield(co, -2, "attempts");
        lua_pushnumber(co, zh_now_mono() - op->started_at);
        lua_setfield(co, -2, "time");
        lua_newtable(co);
        zh_xfer_each_header(x, push_header, co);
        lua_setfield(co, -2, "headers");
        luaL_setmetatable(co, RESPONSE_MT);
        n = 1;
    }
    op_destroy(op);
    return n;
}

/* ---- building a request from Lua ---- */

static void url_escape_into(zh_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            zh_buf_addc(b, (char)c);
        } else {
            zh_buf_addc(b, '%');
            zh_buf_addc(b, hex[c >> 4]);
            zh_buf_addc(b, hex[c & 15]);
        }
    }
}

static void add_scalar(lua_State *L, zh_buf *b, int idx, const char *what) {
    int t = lua_type(L, idx);
    if (t == LUA_TBOOLEAN) {
        zh_buf_adds(b, lua_toboolean(L, idx) ? "true" : "false");
    } else if (t == LUA_TNUMBER || t == LUA_TSTRING) {
        size_t n;
        const char *s;
        if (lua_isinteger(L, idx)) {
            lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
        } else {
            lua_pushvalue(L, idx);
        }
        s = lua_tolstring(L, -1, &n);
        url_escape_into(b, s, n);
        lua_pop(L, 1);
    } else {
        luaL_error(L, "http: %s values must be strings, numbers or booleans (got %s)", what, luaL_typename(L, idx));
    }
}

/* Encodes table at idx as k=v&k=v (sorted keys; array values repeat the key). */
void zh_http_encode_form(lua_State *L, int idx, zh_buf *b, const char *what) {
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    int keys = lua_gettop(L), nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "http: %s keys must be strings", what);
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++nk);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_remove(L, -2);
    if (lua_isfunction(L, -1)) {
        lua_pushvalue(L, keys);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }
    bool first = b->len == 0;
    for (int i = 1; i <= nk; i++) {
        lua_rawgeti(L, keys, i);
        size_t kl;
        const char *k = lua_tolstring(L, -1, &kl);
        lua_rawget(L, idx);
        if (lua_istable(L, -1)) {
            lua_Integer n = luaL_len(L, -1);
            for (lua_Integer j = 1; j <= n; j++) {
                lua_rawgeti(L, -1, j);
                if (!first) zh_buf_addc(b, '&');
                first = false;
                url_escape_into(b, k, kl);
                zh_buf_addc(b, '=');
                add_scalar(L, b, -1, what);
                lua_pop(L, 1);
            }
        } else {
            if (!first) zh_buf_addc(b, '&');
            first = false;
            url_escape_into(b, k, kl);
            zh_buf_addc(b, '=');
            add_scalar(L, b, -1, what);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* A retry table: every key known, every value in range (a misspelt key such as `attemps` was
 * ignored, and the request ran with the default policy). `retry = true` is the source's policy. */
static void read_policy(lua_State *L, int idx, retry_policy *rp) {
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        if (!lua_toboolean(L, idx)) rp->attempts = 1;
        return;
    }
    if (lua_isnil(L, idx)) return;
    if (!lua_istable(L, idx)) luaL_error(L, "http: 'retry' must be false or a table of retry settings (got %s)", luaL_typename(L, idx));
    idx = lua_absindex(L, idx);
    static const char *const known[] = {"attempts", "base", "cap", "retry_after_max", "on_5xx", "on_429", "on_network", NULL};
    zh_lrt_check_keys(L, idx, known, "http", "retry setting");
    lua_getfield(L, idx, "attempts");
    if (!lua_isnil(L, -1)) {
        int isint;
        lua_Integer a = lua_tointegerx(L, -1, &isint);
        if (!isint || a < 1 || a > 100)
            luaL_error(L, "http: retry.attempts must be a whole number 1..100 (got %s)", luaL_tolstring(L, -1, NULL));
        rp->attempts = (int)a;
    }
    lua_pop(L, 1);
    struct { const char *k; double *v; } nums[] = {
        {"base", &rp->base}, {"cap", &rp->cap}, {"retry_after_max", &rp->retry_after_max}};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        lua_getfield(L, idx, nums[i].k);
        if (!lua_isnil(L, -1)) {
            int isnum;
            double v = lua_tonumberx(L, -1, &isnum);
            /* NaN slept for ever: (uint64_t)(NaN * 1000) is ~2^63 ms */
            if (!isnum || !(v >= 0))
                luaL_error(L, "http: retry.%s must be seconds >= 0 (got %s)", nums[i].k, luaL_tolstring(L, -1, NULL));
            *nums[i].v = v;
        }
        lua_pop(L, 1);
    }
    struct { const char *k; bool *v; } flags[] = {
        {"on_5xx", &rp->on_5xx}, {"on_429", &rp->on_429}, {"on_network", &rp->on_network}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        lua_getfield(L, idx, flags[i].k);
        if (!lua_isnil(L, -1)) {
            if (!lua_isboolean(L, -1))
                luaL_error(L, "http: retry.%s must be true or false (got %s)", flags[i].k, luaL_tolstring(L, -1, NULL));
            *flags[i].v = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
    }
}

char *zh_http_host_of_url(const char *url) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *e = p;
    while (*e && *e != '/' && *e != '?' && *e != '#') e++;
    const char *at = memchr(p, '@', (size_t)(e - p));
    if (at) p = at + 1;
    return zh_xstrndup(p, (size_t)(e - p));
}

static const char *opt_string(lua_State *L, int idx, const char *k) {
    lua_getfield(L, idx, k);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "http: option '%s' must be a string", k);
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the string stays alive: it is referenced by the options table */
    return s;
}

static int json_encode(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.json.encode");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    return 1;
}

/* Buffers a request is built in. They live in a userdata on the Lua stack while options are read,
 * so a misuse error raised half-way (a bad header, a function inside json=) frees them. */
#define REQ_GUARD_MT "zhost.http.request_guard"

typedef struct req_guard {
    zh_buf full, query, form;
} req_guard;

static int req_guard_gc(lua_State *L) {
    req_guard *g = luaL_checkudata(L, 1, REQ_GUARD_MT);
    zh_buf_free(&g->full);
    zh_buf_free(&g->query);
    zh_buf_free(&g->form);
    return 0;
}

/* An HTTP token (RFC 9110 tchar): what a method or a header name may hold. A method such as
 * "G\r\nX: y" went into the request line as it was. */
static bool is_token(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)) || !c)
            return false;
    }
    return true;
}

/* Checks the headers table (raises on misuse) before anything is allocated for it. */
static bool check_headers(lua_State *L, int idx) {
    bool has_ctype = false;
    if (!lua_istable(L, idx)) {
        if (!lua_isnil(L, idx)) luaL_error(L, "http.request: 'headers' must be a table");
        return false;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            luaL_error(L, "http.request: headers must map names to strings");
        size_t kn, vn;
        const char *k = lua_tolstring(L, -2, &kn), *v = lua_tolstring(L, -1, &vn);
        if (strchr(k, '\n') || strchr(k, '\r') || strchr(v, '\n') || strchr(v, '\r'))
            luaL_error(L, "http.request: header '%s' contains a line break", k);
        if (!is_token(k, kn)) luaL_error(L, "http.request: '%s' is not a header name (letters, digits and -_.!#$%%&'*+^`|~)", k);
        if (strlen(v) != vn) luaL_error(L, "http.request: header '%s' contains a NUL byte", k);
        if (!strcasecmp(k, "content-type")) has_ctype = true;
        lua_pop(L, 1);
    }
    return has_ctype;
}

/* http.request{ method=, url=, query=, headers=, body=, json=, form=, timeout=, retry=, source=, max_body= } */
static int l_request(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    zh_host *h = zh_host_of(L);
    zh_http_state *st = h->http;
    zh_task_current(L, true);
    /* A misspelt option (`timout`, `max_bodyy`) was ignored: the request ran with the default. */
    static const char *const known[] = {"url", "method", "query", "headers", "body", "json", "form", "timeout",
                                        "retry", "source", "max_body", "insecure", NULL};
    zh_lrt_check_keys(L, 1, known, "http.request", "option");
    const char *url = opt_string(L, 1, "url");
    if (!url) return luaL_error(L, "http.request: 'url' is required");
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return luaL_error(L, "http.request: url must start with http:// or https:// (got '%s')", url);
    const char *method = opt_string(L, 1, "method");
    lua_getfield(L, 1, "method");
    if (method && lua_rawlen(L, -1) != strlen(method)) return luaL_error(L, "http.request: bad method");
    lua_pop(L, 1);
    req_guard *g = lua_newuserdatauv(L, sizeof *g, 0); /* stack 2 */
    zh_buf_init(&g->full);
    zh_buf_init(&g->query);
    zh_buf_init(&g->form);
    luaL_setmetatable(L, REQ_GUARD_MT);

    /* Phase 1: read and check every option; only the guard's buffers are allocated. */
    zh_buf_adds(&g->full, url);
    lua_getfield(L, 1, "query");
    if (lua_istable(L, -1)) {
        zh_http_encode_form(L, -1, &g->query, "query");
        if (g->query.len) {
            zh_buf_addc(&g->full, strchr(url, '?') ? '&' : '?');
            zh_buf_add(&g->full, g->query.data, g->query.len);
        }
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "http.request: 'query' must be a table");
    }
    lua_pop(L, 1);

    /* Body: exactly one of body / json / form; the text stays on the stack (slot 3). */
    const char *ctype = NULL;
    size_t blen = 0;
    const char *body = NULL;
    int nbodies = 0;
    lua_pushnil(L);
    lua_getfield(L, 1, "body");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "http.request: 'body' must be a string");
        nbodies++;
        lua_replace(L, 3);
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "json");
    if (!lua_isnil(L, -1)) {
        json_encode(L, -1);
        lua_replace(L, 3);
        ctype = "Content-Type: application/json";
        nbodies++;
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "form");
    if (lua_istable(L, -1)) {
        zh_http_encode_form(L, -1, &g->form, "form");
        lua_pushlstring(L, g->form.data ? g->form.data : "", g->form.len);
        lua_replace(L, 3);
        ctype = "Content-Type: application/x-www-form-urlencoded";
        nbodies++;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "http.request: 'form' must be a table");
    }
    lua_pop(L, 1);
    if (nbodies > 1) return luaL_error(L, "http.request: give only one of 'body', 'json' and 'form'");
    if (nbodies) body = lua_tolstring(L, 3, &blen);
    if (!method) method = body ? "POST" : "GET";
    char meth[16];
    size_t ml = strlen(method);
    if (ml == 0 || ml >= sizeof meth || !is_token(method, ml)) return luaL_error(L, "http.request: bad method");
    for (size_t i = 0; i <= ml; i++) meth[i] = (char)(method[i] >= 'a' && method[i] <= 'z' ? method[i] - 32 : method[i]);

    lua_getfield(L, 1, "headers"); /* slot 4 */
    bool has_ctype = check_headers(L, 4);

    /* A timeout of 0, below 0, NaN or past a day is a script's mistake: it used to become 60 s
     * without a word, so `timeout = 0` ("no limit"?) or a value in ms waited a minute. */
    double timeout = 60;
    lua_getfield(L, 1, "timeout");
    if (!lua_isnil(L, -1)) {
        int isnum;
        timeout = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(timeout > 0 && timeout <= 86400))
            return luaL_error(L, "http.request: 'timeout' must be seconds in (0, 86400] (got %s)", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    size_t max_body = 0;
    lua_getfield(L, 1, "max_body");
    if (!lua_isnil(L, -1)) {
        int isint;
        lua_Integer mb = lua_tointegerx(L, -1, &isint);
        /* 0 meant the 256 MiB default, not "no body" */
        if (!isint || mb < 1)
            return luaL_error(L, "http.request: 'max_body' must be a whole number of bytes >= 1 (got %s)",
                              luaL_tolstring(L, -1, NULL));
        max_body = (size_t)mb;
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "insecure");
    bool insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    const char *srcname = opt_string(L, 1, "source");
    char *host = zh_http_host_of_url(zh_buf_cstr(&g->full));
    http_source *s = source_get(st, srcname ? srcname : host);
    free(host);
    retry_policy retry = s->retry_set ? s->retry : st->default_retry;
    lua_getfield(L, 1, "retry");
    read_policy(L, -1, &retry);
    lua_pop(L, 1);

    /* Phase 2: nothing below raises. */
    zh_xfer *x = zh_xfer_new(h->curl);
    zh_xfer_set_request(x, meth, zh_buf_cstr(&g->full), body, blen);
    if (lua_istable(L, 4)) {
        lua_pushnil(L);
        while (lua_next(L, 4)) {
            /* "Name:" with nothing after it would make curl drop the header; "Name;" sends it empty */
            if (*lua_tostring(L, -1)) lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
            else lua_pushfstring(L, "%s;", lua_tostring(L, -2));
            zh_xfer_add_header(x, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
    }
    if (ctype && !has_ctype) zh_xfer_add_header(x, ctype);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    x->max_body = max_body;
    if (insecure) {
        curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }

    http_op *op = zh_xcalloc(1, sizeof *op);
    op->base.push = op_push;
    op->base.abort = op_abort;
    op->st = st;
    op->src = s;
    op->x = x;
    op->group = h->current ? h->current->group : NULL;
    op->retry = retry;
    op->attempt = 1;
    op->timeout_s = timeout;
    op->started_at = zh_now_mono();
    op->method = zh_xstrdup(meth);
    op->url = g->full.data; /* ownership moves to op */
    zh_buf_init(&g->full);
    x->ud = op;
    x->done = op_done;
    uv_timer_init(h->loop, &op->timer);
    op->timer.data = op;
    enqueue_op(op);
    return zh_task_await(L, &op->base);
}

/* http.get(url [, opts]) / http.post(url [, opts]) and friends */
static int method_call(lua_State *L, const char *method) {
    luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 2, LUA_TTABLE);
        /* Copy so the caller's options table is not modified. */
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, 3);
        }
        lua_replace(L, 2);
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, 2, "url");
    lua_pushstring(L, method);
    lua_setfield(L, 2, "method");
    lua_remove(L, 1);
    return l_request(L);
}

static int l_get(lua_State *L) { return method_call(L, "GET"); }
static int l_post(lua_State *L) { return method_call(L, "POST"); }
static int l_put(lua_State *L) { return method_call(L, "PUT"); }
static int l_delete(lua_State *L) { return method_call(L, "DELETE"); }

/* http.configure(source, { concurrency=, rps=, retry = {...} }). Every value is checked before
 * any is applied, so a refused call changes nothing. */
static int l_configure(lua_State *L) {
    zh_http_state *st = zh_host_of(L)->http;
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"concurrency", "rps", "retry", NULL};
    zh_lrt_check_keys(L, 2, known, "http.configure", "option");
    http_source *s = source_get(st, name);
    int max_active = s->max_active;
    lua_getfield(L, 2, "concurrency");
    if (!lua_isnil(L, -1)) {
        int isint;
        lua_Integer c = lua_tointegerx(L, -1, &isint);
        if (!isint || c < 1 || c > 256)
            return luaL_error(L, "http.configure: concurrency must be a whole number 1..256 (got %s)", luaL_tolstring(L, -1, NULL));
        max_active = (int)c;
    }
    lua_pop(L, 1);
    double rps = -1;
    lua_getfield(L, 2, "rps");
    if (!lua_isnil(L, -1)) {
        int isnum;
        rps = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(rps >= 0))
            return luaL_error(L, "http.configure: rps must be requests per second >= 0, 0 for no limit (got %s)",
                              luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    retry_policy retry = s->retry_set ? s->retry : st->default_retry;
    lua_getfield(L, 2, "retry");
    bool has_retry = !lua_isnil(L, -1);
    if (has_retry) read_policy(L, -1, &retry);
    lua_pop(L, 1);
    s->max_active = max_active;
    if (rps >= 0) {
        s->rps = rps;
        s->tokens = rps < 1 ? 1 : rps;
        s->last_refill = zh_now_mono();
    }
    if (has_retry) {
        s->retry = retry;
        s->retry_set = true;
    }
    pump(s);
    return 0;
}

/* http.stats() -> { [source] = { requests=, retries=, failures=, active=, queued= } } */
static int l_stats(lua_State *L) {
    zh_http_state *st = zh_host_of(L)->http;
    lua_newtable(L);
    for (http_source *s = st->sources; s; s = s->next) {
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, (lua_Integer)s->requests);
        lua_setfield(L, -2, "requests");
        lua_pushinteger(L, (lua_Integer)s->retries);
        lua_setfield(L, -2, "retries");
        lua_pushinteger(L, (lua_Integer)s->failures);
        lua_setfield(L, -2, "failures");
        lua_pushinteger(L, s->active);
        lua_setfield(L, -2, "active");
        int q = 0;
        for (http_op *o = s->queue_head; o; o = o->next_queued) q++;
        lua_pushinteger(L, q);
        lua_setfield(L, -2, "queued");
        lua_setfield(L, -2, s->name);
    }
    return 1;
}

/* response:json() -> value or nil, err */
static int l_response_json(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "body");
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.json.decode_safe");
    lua_insert(L, -2);
    lua_call(L, 1, 2);
    return 2;
}

/* response:json_view() -> read-only view of the body (l_jsonview.cc) or nil, err */
static int l_response_json_view(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushliteral(L, "body");
    lua_rawget(L, 1);
    size_t n;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s) return zh_jsonview_push(L, s, n);
    lua_pop(L, 1);
    body_holder *h = held_body(L, 1);
    if (h) return zh_jsonview_push_padded(L, h->b.data, h->b.len);
    lua_pushnil(L);
    lua_pushliteral(L, "response has no body");
    return 2;
}

/* __index: res.body (made from the held bytes on first read), else the methods (upvalue 1). */
static int l_response_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "body")) {
        fill_body(L, 1);
        lua_pushliteral(L, "body");
        lua_rawget(L, 1);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

static int l_response_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1)) return 2;
    lua_pushnil(L);
    return 1;
}

/* __pairs: the body is a field like the others once anyone iterates. */
static int l_response_pairs(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    fill_body(L, 1);
    lua_pushcfunction(L, l_response_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void zh_http_response_fill(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return;
    luaL_getmetatable(L, RESPONSE_MT);
    bool is_response = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (is_response) fill_body(L, idx);
}

/* response:header(name) -> value or nil */
static int l_response_header(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n;
    const char *name = luaL_checklstring(L, 2, &n);
    char low[128];
    if (n >= sizeof low) return 0;
    for (size_t i = 0; i <= n; i++) low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    lua_getfield(L, 1, "headers");
    lua_getfield(L, -1, low);
    return 1;
}

int zh_open_http(lua_State *L) {
    if (luaL_newmetatable(L, REQ_GUARD_MT)) {
        lua_pushcfunction(L, req_guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, RESPONSE_MT)) {
        lua_newtable(L);
        lua_pushcfunction(L, l_response_json);
        lua_setfield(L, -2, "json");
        lua_pushcfunction(L, l_response_json_view);
        lua_setfield(L, -2, "json_view");
        lua_pushcfunction(L, l_response_header);
        lua_setfield(L, -2, "header");
        lua_pushcclosure(L, l_response_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_response_pairs);
        lua_setfield(L, -2, "__pairs");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, BODY_MT)) {
        lua_pushcfunction(L, body_holder_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &BODY_KEYS);
    if (lua_isnil(L, -1)) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &BODY_KEYS);
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"request", l_request}, {"get", l_get}, {"post", l_post}, {"put", l_put}, {"delete", l_delete},
        {"configure", l_configure}, {"stats", l_stats}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
