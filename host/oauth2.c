/* oauth2.c — owns OAuth2 access tokens: the Lua `oauth2` module (clients for the refresh_token,
 * client_credentials and agency_client_credentials grants, their token caches in Google's
 * token.json layout or a plain one, single-flight refresh, bearer requests that refresh once on
 * a 401) and the `zhost auth google` command (installed-app loopback consent with PKCE).
 *
 * A client is a refcounted C struct behind a userdata. A refresh is a *flight*: a task of its
 * own running the refresh chunk below (so token requests get the `http` module's retry policy,
 * limits and logs), plus the list of tasks waiting for it. Callers that find the token stale
 * join the flight in progress instead of starting another; each waiter is a zh_pending whose
 * abort unlinks it, and the flight's task keeps running when its waiters go away so the cache
 * still gets the new token. The task's own result table is what every waiter receives. */
#include "oauth2.h"
#include "lrt.h"
#include "curl_uv.h"
#include "hash.h"
#include "host.h"
#include "l_http.h"
#include "l_text.h"
#include "log.h"
#include "commands.h"
#include "modules.h"
#include "secrets.h"
#include "task.h"
#include <lauxlib.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_MT "zhost.oauth2.client"
#define REFRESH_FN "zhost.oauth2.refresh"
#define DEFAULT_GOOGLE_TOKEN_URI "https://oauth2.googleapis.com/token"
#define DEFAULT_GOOGLE_AUTH_URI "https://accounts.google.com/o/oauth2/auth"
#define DEFAULT_GOOGLE_SCOPE "https://www.googleapis.com/auth/gmail.readonly"

/* ---- base64url, PKCE ---- */

void zh_oauth2_pkce_challenge(const char *verifier, zh_buf *out) {
    unsigned char h[ZH_SHA256_LEN];
    zh_hash_bytes(ZH_HASH_SHA256, verifier, strlen(verifier), h);
    zh_text_b64_encode((const char *)h, sizeof h, 1, out);
}

/* Random bytes for PKCE verifiers and state: getrandom() never returns short for <= 256 bytes
 * once the pool is initialised; a failure here means no secure randomness, so we stop. */
static int random_b64url(zh_buf *out, size_t nbytes) {
    unsigned char r[64];
    if (nbytes > sizeof r) nbytes = sizeof r;
    if (getrandom(r, nbytes, 0) != (ssize_t)nbytes) return -1;
    zh_text_b64_encode((const char *)r, nbytes, 1, out);
    return 0;
}

/* ---- expiry timestamps ---- */

bool zh_oauth2_parse_expiry(const char *s, double *out) {
    if (!s) return false;
    int Y, M, D, h, m, sec, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6 || used != 19) return false;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970) return false;
    const char *p = s + used;
    double frac = 0;
    if (*p == '.') {
        double scale = 0.1;
        p++;
        if (*p < '0' || *p > '9') return false;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    if (*p == 'Z') p++;
    else if (!strcmp(p, "+00:00")) p += 6;
    if (*p) return false;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *out = (double)timegm(&tm) + frac;
    return true;
}

void zh_oauth2_format_expiry(double t, char out[32]) {
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- files ---- */

/* Pushes the JSON object in path. On failure pushes nothing and returns a message (malloc'd);
 * *missing is set when the file does not exist. */
static char *read_json_file(lua_State *L, const char *path, bool *missing) {
    size_t len = 0;
    *missing = false;
    char *text = zh_read_file(path, 1u << 20, &len); /* token files are tiny; refuse anything else */
    zh_buf e;
    zh_buf_init(&e);
    if (!text) {
        *missing = errno == ENOENT;
        zh_buf_printf(&e, "%s: %s", path, strerror(errno));
        return e.data;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.json.decode_safe");
    lua_pushlstring(L, text, len);
    free(text);
    lua_call(L, 1, 2);
    if (!lua_istable(L, -2)) {
        zh_buf_printf(&e, "%s: %s", path, lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a JSON object");
        lua_pop(L, 2);
        return e.data;
    }
    lua_pop(L, 1);
    zh_buf_free(&e);
    return NULL;
}

/* Encodes the table on top (popped) and writes it atomically. */
static char *write_json_file(lua_State *L, const char *path) {
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.cjson.encode");
    lua_insert(L, -2);
    char *err = NULL;
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        zh_buf e;
        zh_buf_init(&e);
        zh_buf_printf(&e, "%s: cannot encode: %s", path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return e.data;
    }
    size_t n;
    const char *js = lua_tolstring(L, -1, &n);
    zh_buf text;
    zh_buf_init(&text);
    zh_buf_add(&text, js, n);
    zh_buf_addc(&text, '\n');
    lua_pop(L, 1);
    zh_write_atomic(path, text.data, text.len, 0600, &err);
    zh_buf_free(&text);
    return err;
}

/* The job whose task is running, for log lines. */
static const char *current_job(zh_host *h) {
    zh_task *t = h->current;
    return t && t->group ? t->group->job : NULL;
}

static const char *field_str(lua_State *L, int idx, const char *k) {
    lua_getfield(L, idx, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0 ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the string stays alive: the table at idx references it */
    return s;
}


/* ---- clients ---- */

enum grant { GRANT_REFRESH, GRANT_CLIENT, GRANT_AGENCY };
static const char *const grant_names[] = {"refresh_token", "client_credentials", "agency_client_credentials", NULL};

typedef struct flight flight;

typedef struct oauth_client {
    int refs;                  /* the userdata, plus one per flight */
    zh_host *h;
    char *token_url, *client_id, *client_secret, *scope, *source, *cache, *hint;
    enum grant grant;
    bool google;               /* cache in Google's token.json layout */
    double margin, timeout;
    char *access_token, *refresh_token;
    double expires_at;         /* epoch seconds; 0 = unknown (refresh before use) */
    double lifetime;           /* of the last token we obtained, 0 when loaded from the cache */
    struct stat cache_st;      /* the cache as we last read or wrote it */
    bool cache_seen;
    flight *flight;            /* refresh in progress, or NULL */
    uint64_t refreshes;
} oauth_client;

struct token_waiter {
    zh_pending base;
    flight *f;
    bool linked;
    struct token_waiter *next;
};

struct flight {
    int refs;                  /* the client while in progress, plus one per waiter */
    oauth_client *c;
    zh_task *task;             /* the refresh task; we hold the spawner's reference */
    struct token_waiter *waiters;
};

typedef struct { oauth_client *c; } client_ud;

static void client_release(oauth_client *c) {
    if (--c->refs > 0) return;
    free(c->token_url);
    free(c->client_id);
    free(c->client_secret);
    free(c->scope);
    free(c->source);
    free(c->cache);
    free(c->hint);
    free(c->access_token);
    free(c->refresh_token);
    free(c);
}

static void flight_release(flight *f) {
    if (--f->refs > 0) return;
    /* After zh_tasks_shutdown the task system is gone and has freed the task itself. */
    if (f->c->h->tasks) zh_task_release(f->task);
    client_release(f->c);
    free(f);
}

static oauth_client *check_client(lua_State *L, int idx) {
    client_ud *u = luaL_checkudata(L, idx, CLIENT_MT);
    if (!u->c) luaL_error(L, "oauth2: the client was closed");
    return u->c;
}

static void set_str(char **dst, const char *v) {
    free(*dst);
    *dst = v ? zh_xstrdup(v) : NULL;
}

static void set_access_token(oauth_client *c, const char *tok, double expires_at) {
    set_str(&c->access_token, tok);
    c->expires_at = tok ? expires_at : 0;
    zh_log_secret(tok);
}

static void set_refresh_token(oauth_client *c, const char *rt) {
    set_str(&c->refresh_token, rt);
    zh_log_secret(rt);
}

static bool token_valid(const oauth_client *c) {
    if (!c->access_token || c->expires_at <= 0) return false;
    /* A margin larger than the token's whole life would refresh on every call. */
    double margin = c->margin;
    if (c->lifetime > 0 && margin > c->lifetime / 2) margin = c->lifetime / 2;
    return c->expires_at - zh_now_wall() > margin;
}

/* Takes token, expiry and refresh token from a cache document on top of the stack. A token
 * equal to the one we hold is left alone, so one we invalidated stays invalid. */
static void absorb_cache(lua_State *L, oauth_client *c) {
    int t = lua_gettop(L);
    const char *tok = field_str(L, t, c->google ? "token" : "access_token");
    double exp = 0;
    if (!zh_oauth2_parse_expiry(field_str(L, t, "expiry"), &exp)) {
        lua_getfield(L, t, "expires_at");
        exp = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        lua_pop(L, 1);
    }
    if (tok && (!c->access_token || strcmp(tok, c->access_token) != 0)) {
        set_access_token(c, tok, exp);
        c->lifetime = 0;
    }
    const char *rt = field_str(L, t, "refresh_token");
    if (rt) set_refresh_token(c, rt);
}

/* Re-reads the cache when it changed on disk since we last saw it (another process refreshed,
 * or `zhost auth google` wrote a new token.json). Errors leave the client as it was. */
static void cache_reload(lua_State *L, oauth_client *c) {
    if (!c->cache) return;
    struct stat st;
    if (stat(c->cache, &st) != 0) return;
    if (c->cache_seen && st.st_ino == c->cache_st.st_ino && st.st_size == c->cache_st.st_size &&
        st.st_mtim.tv_sec == c->cache_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == c->cache_st.st_mtim.tv_nsec)
        return;
    /* Remembered even when unreadable, so a broken file is reported once, not on every call. */
    c->cache_st = st;
    c->cache_seen = true;
    bool missing;
    char *err = read_json_file(L, c->cache, &missing);
    if (err) {
        ZH_WARN(current_job(c->h), "msg=\"oauth2: cannot read the token cache\" error=\"%s\"", err);
        free(err);
        return;
    }
    absorb_cache(L, c);
    lua_pop(L, 1);
}

/* Merges the client's tokens into the cache file, keeping every field we do not manage. */
static char *cache_write(lua_State *L, oauth_client *c, const char *token_type, const char *scope) {
    bool missing;
    char *err = read_json_file(L, c->cache, &missing);
    if (err) {
        if (!missing) ZH_WARN(current_job(c->h), "msg=\"oauth2: rewriting an unreadable token cache\" error=\"%s\"", err);
        free(err);
        lua_newtable(L);
    }
    int t = lua_gettop(L);
    char iso[32];
    zh_oauth2_format_expiry(c->expires_at, iso);
    if (c->google) {
        lua_pushstring(L, c->access_token);
        lua_setfield(L, t, "token");
        lua_pushstring(L, iso);
        lua_setfield(L, t, "expiry");
        /* No refresh token means a refused one was dropped: do not leave it for the next run. */
        lua_pushstring(L, c->refresh_token);
        lua_setfield(L, t, "refresh_token");
        /* A fresh file must still be a token.json google-auth can load. */
        struct { const char *k, *v; } fill[] = {
            {"token_uri", c->token_url}, {"client_id", c->client_id}, {"client_secret", c->client_secret}};
        for (size_t i = 0; i < sizeof fill / sizeof *fill; i++) {
            if (!fill[i].v || field_str(L, t, fill[i].k)) continue;
            lua_pushstring(L, fill[i].v);
            lua_setfield(L, t, fill[i].k);
        }
        lua_getfield(L, t, "scopes");
        bool has_scopes = lua_istable(L, -1);
        lua_pop(L, 1);
        const char *sc = scope ? scope : c->scope;
        if (!has_scopes && sc) {
            lua_newtable(L);
            int n = 0;
            for (const char *p = sc; *p;) {
                while (*p == ' ') p++;
                const char *e = p;
                while (*e && *e != ' ') e++;
                if (e > p) {
                    lua_pushlstring(L, p, (size_t)(e - p));
                    lua_rawseti(L, -2, ++n);
                }
                p = e;
            }
            lua_setfield(L, t, "scopes");
        }
    } else {
        lua_pushstring(L, c->access_token);
        lua_setfield(L, t, "access_token");
        lua_pushinteger(L, (lua_Integer)c->expires_at);
        lua_setfield(L, t, "expires_at");
        lua_pushstring(L, iso);
        lua_setfield(L, t, "expiry");
        lua_pushstring(L, c->refresh_token); /* nil when dropped, as above */
        lua_setfield(L, t, "refresh_token");
        if (token_type) {
            lua_pushstring(L, token_type);
            lua_setfield(L, t, "token_type");
        }
        if (scope) {
            lua_pushstring(L, scope);
            lua_setfield(L, t, "scope");
        }
    }
    err = write_json_file(L, c->cache);
    struct stat st;
    if (!err && stat(c->cache, &st) == 0) {
        c->cache_st = st;
        c->cache_seen = true;
    }
    return err;
}

/* ---- the flight: one refresh, many waiters ---- */

static int waiter_push(zh_pending *p, lua_State *co) {
    struct token_waiter *w = (struct token_waiter *)p;
    zh_task *t = w->f->task;
    int n;
    if (t->ok && t->result_ref != LUA_NOREF) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, t->result_ref);
        lua_getfield(co, -1, "n");
        n = (int)lua_tointeger(co, -1);
        lua_pop(co, 1);
        if (n < 0 || n > 8) n = 3;
        lua_checkstack(co, n + 2);
        for (int i = 1; i <= n; i++) lua_rawgeti(co, -i, i);
        lua_remove(co, -(n + 1));
    } else {
        /* The refresh task died (cancelled with its run, or a bug): same shape as other failures. */
        lua_checkstack(co, 6);
        lua_pushnil(co);
        lua_pushfstring(co, "oauth2: token refresh failed: %s", t->error_short ? t->error_short : "unknown error");
        lua_createtable(co, 0, 3);
        lua_pushinteger(co, 0);
        lua_setfield(co, -2, "status");
        lua_pushliteral(co, "refresh_failed");
        lua_setfield(co, -2, "error");
        lua_pushvalue(co, -2);
        lua_setfield(co, -2, "error_description");
        n = 3;
    }
    flight_release(w->f);
    free(w);
    return n;
}

static void waiter_abort(zh_pending *p) {
    struct token_waiter *w = (struct token_waiter *)p;
    if (w->linked) {
        struct token_waiter **pp = &w->f->waiters;
        while (*pp && *pp != w) pp = &(*pp)->next;
        if (*pp) *pp = w->next;
    }
    flight_release(w->f);
    free(w);
}

static void flight_done(zh_task *t, void *ud) {
    (void)t;
    flight *f = ud;
    if (f->c->flight == f) f->c->flight = NULL;
    struct token_waiter *w = f->waiters;
    f->waiters = NULL;
    while (w) {
        struct token_waiter *next = w->next;
        w->linked = false;
        w->next = NULL;
        zh_task_wake(&w->base);
        w = next;
    }
    flight_release(f); /* the client's reference */
}

/* client:token() -> access token, or nil, err, info */
static int l_token(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    if (token_valid(c)) {
        lua_pushstring(L, c->access_token);
        return 1;
    }
    if (!c->flight) {
        cache_reload(L, c);
        if (token_valid(c)) {
            lua_pushstring(L, c->access_token);
            return 1;
        }
    }
    zh_task *cur = zh_task_current(L, true);
    if (!c->flight) {
        flight *f = zh_xcalloc(1, sizeof *f);
        f->refs = 1;
        f->c = c;
        c->refs++;
        lua_getfield(L, LUA_REGISTRYINDEX, REFRESH_FN);
        lua_pushvalue(L, 1);
        f->task = zh_task_spawn(c->h, L, 1, cur->group);
        f->task->on_done = flight_done;
        f->task->on_done_ud = f;
        c->flight = f;
        c->refreshes++;
    }
    struct token_waiter *w = zh_xcalloc(1, sizeof *w);
    w->base.push = waiter_push;
    w->base.abort = waiter_abort;
    w->f = c->flight;
    w->f->refs++;
    w->linked = true;
    w->next = c->flight->waiters;
    c->flight->waiters = w;
    return zh_task_await(L, &w->base);
}

/* client:invalidate([token]) — the next token() refreshes. With a token, only when that is still
 * the current one (a 401 for a token someone already replaced needs no second refresh). */
static int l_invalidate(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    const char *tok = luaL_optstring(L, 2, NULL);
    if (tok && (!c->access_token || strcmp(tok, c->access_token) != 0)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    c->expires_at = 0;
    lua_pushboolean(L, 1);
    return 1;
}

/* client:info() -> { valid=, expires_in=, refreshes=, refreshing=, has_refresh_token=, grant=, token_url=, cache= } */
static int l_info(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushboolean(L, token_valid(c));
    lua_setfield(L, -2, "valid");
    if (c->access_token && c->expires_at > 0) {
        lua_pushnumber(L, c->expires_at - zh_now_wall());
        lua_setfield(L, -2, "expires_in");
    }
    lua_pushinteger(L, (lua_Integer)c->refreshes);
    lua_setfield(L, -2, "refreshes");
    lua_pushboolean(L, c->flight != NULL);
    lua_setfield(L, -2, "refreshing");
    lua_pushboolean(L, c->refresh_token != NULL);
    lua_setfield(L, -2, "has_refresh_token");
    lua_pushstring(L, grant_names[c->grant]);
    lua_setfield(L, -2, "grant");
    lua_pushstring(L, c->token_url);
    lua_setfield(L, -2, "token_url");
    if (c->cache) {
        lua_pushstring(L, c->cache);
        lua_setfield(L, -2, "cache");
    }
    return 1;
}

static int l_gc(lua_State *L) {
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (u->c) {
        oauth_client *c = u->c;
        u->c = NULL;
        client_release(c);
    }
    return 0;
}

static int l_tostring(lua_State *L) {
    client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
    if (!u->c) lua_pushliteral(L, "oauth2.client (closed)");
    else lua_pushfstring(L, "oauth2.client (%s, %s)", grant_names[u->c->grant], u->c->token_url);
    return 1;
}

/* ---- helpers for the refresh chunk (private; not reachable from scripts) ---- */

/* P.config(client) -> table the chunk builds its requests from */
static int p_config(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    lua_createtable(L, 0, 14);
    struct { const char *k, *v; } s[] = {
        {"token_url", c->token_url}, {"client_id", c->client_id}, {"client_secret", c->client_secret},
        {"refresh_token", c->refresh_token}, {"scope", c->scope}, {"source", c->source}, {"hint", c->hint},
        {"grant", grant_names[c->grant]},
    };
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        if (!s[i].v) continue;
        lua_pushstring(L, s[i].v);
        lua_setfield(L, -2, s[i].k);
    }
    char *host = zh_http_host_of_url(c->token_url);
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    free(host);
    size_t ul = strlen(c->token_url);
    if (ul > 11 && !strcmp(c->token_url + ul - 11, "/token.json")) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_add(&b, c->token_url, ul - 11);
        zh_buf_adds(&b, "/token/delete.json");
        lua_pushlstring(L, b.data, b.len);
        zh_buf_free(&b);
        lua_setfield(L, -2, "delete_url");
    }
    lua_pushboolean(L, c->google);
    lua_setfield(L, -2, "google");
    lua_pushnumber(L, c->timeout);
    lua_setfield(L, -2, "timeout");
    lua_getiuservalue(L, 1, 1);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_setfield(L, -2, "extra");
    return 1;
}

/* P.store(client, response) -> access token: adopts a successful token response and writes the
 * cache. A cache that cannot be written is logged, not fatal: the token in hand is good. */
static int p_store(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *tok = field_str(L, 2, "access_token");
    if (!tok) return luaL_error(L, "oauth2: token response without access_token");
    double life = 0;
    lua_getfield(L, 2, "expires_in");
    int isnum = 0;
    lua_Number n = lua_tonumberx(L, -1, &isnum); /* Google sends an integer, VK a string */
    lua_pop(L, 1);
    if (isnum && n > 0 && n < 1e9) life = (double)n;
    else life = 3600; /* no lifetime given: assume an hour, so a dead token is found soon */
    set_access_token(c, tok, zh_now_wall() + life);
    c->lifetime = life;
    const char *rt = field_str(L, 2, "refresh_token");
    if (rt) set_refresh_token(c, rt);
    if (c->cache) {
        char *err = cache_write(L, c, field_str(L, 2, "token_type"), field_str(L, 2, "scope"));
        if (err) {
            ZH_ERROR(current_job(c->h),
                     "msg=\"oauth2: could not save the new token; the next run must request another\" error=\"%s\"", err);
            free(err);
        }
    }
    lua_pushstring(L, c->access_token);
    return 1;
}

/* P.forget(client [, refresh_only]) — after token/delete.json, or when a refresh token was refused */
static int p_forget(lua_State *L) {
    oauth_client *c = check_client(L, 1);
    if (!lua_toboolean(L, 2)) set_access_token(c, NULL, 0);
    set_refresh_token(c, NULL);
    return 0;
}

static int p_warn(lua_State *L) {
    const char *msg = luaL_checkstring(L, 1);
    ZH_WARN(current_job(zh_host_of(L)), "msg=\"%s\"", msg);
    return 0;
}

/* The refresh sequence, token-endpoint error decoding, and the bearer-request wrappers. They are
 * Lua over `http` because a token request is an ordinary HTTP request: same retries for network
 * errors and 5xx, same per-source limits, same logs. */
static const char lua_source[] =
    "local http, json, P = ...\n"
    "local M = {}\n"
    "local function decode(s)\n"
    "  local v = json.decode(s or '')\n"
    "  if type(v) == 'table' then return v end\n"
    "end\n"
    "local function post(cfg, url, form, label)\n"
    "  local res, err = http.request{ method = 'POST', url = url, form = form, source = cfg.source,\n"
    "    timeout = cfg.timeout, headers = { Accept = 'application/json' } }\n"
    "  if not res then\n"
    "    return nil, label .. ' to ' .. url .. ' failed: ' .. tostring(err),\n"
    "      { status = 0, error = 'network', error_description = tostring(err) }\n"
    "  end\n"
    "  return res\n"
    "end\n"
    /* The error conventions seen at token endpoints: RFC 6749 {error, error_description}, Google
     * API envelopes {error={code,message,status}}, VK {code, message}. */
    "local function describe(cfg, res, url, label)\n"
    "  local body = decode(res.body)\n"
    "  local code, desc\n"
    "  if body then\n"
    "    local e = body.error\n"
    "    if type(e) == 'string' then code, desc = e, body.error_description\n"
    "    elseif type(e) == 'table' then code, desc = e.status or e.code, e.message\n"
    "    elseif type(body.code) == 'string' then code, desc = body.code, body.message end\n"
    "  end\n"
    "  if code ~= nil then code = tostring(code) end\n"
    "  if desc ~= nil then desc = tostring(desc) end\n"
    "  local info = { status = res.status, error = code, error_description = desc, body = res.body }\n"
    "  local detail = code and (desc and desc ~= '' and (code .. ': ' .. desc) or code)\n"
    "  local msg\n"
    "  if code == 'invalid_grant' and cfg.google then\n"
    "    msg = 'Google refused the refresh token (' .. detail .. '). Re-authorize: ' .. (cfg.hint or 'zhost auth google') ..\n"
    "      ' (refresh tokens of apps in \"Testing\" publishing status expire after 7 days; publish the app'\n"
    "      .. ' \"In production\" in the Google Cloud console to keep them)'\n"
    "  elseif code == 'invalid_grant' then\n"
    "    msg = cfg.host .. ' refused the refresh token (' .. detail .. ')' ..\n"
    "      (cfg.hint and ('. Re-authorize: ' .. cfg.hint) or '')\n"
    "  elseif code == 'invalid_client' then\n"
    "    msg = cfg.host .. ' rejected client_id ' .. tostring(cfg.client_id) .. ' (' .. detail ..\n"
    "      '): check client_id and client_secret'\n"
    "  else\n"
    "    local snippet = ''\n"
    "    if not code and res.body and #res.body > 0 then snippet = ': ' .. res.body:sub(1, 200) end\n"
    "    msg = label .. ' to ' .. url .. ' failed: HTTP ' .. res.status .. (code and (' (' .. detail .. ')') or snippet)\n"
    "  end\n"
    "  return nil, msg, info\n"
    "end\n"
    "local function accept(c, cfg, res)\n"
    "  local body = decode(res.body)\n"
    "  if not body or type(body.access_token) ~= 'string' or body.access_token == '' then\n"
    "    return nil, 'token endpoint ' .. cfg.token_url .. ' answered HTTP ' .. res.status ..\n"
    "      ' without an access_token', { status = res.status, error = 'no_access_token', body = res.body }\n"
    "  end\n"
    "  return P.store(c, body)\n"
    "end\n"
    "local function ok(res) return res.status >= 200 and res.status < 300 end\n"
    "function M.refresh(c)\n"
    "  local cfg = P.config(c)\n"
    "  local function form(t)\n"
    "    local f = { client_id = cfg.client_id, client_secret = cfg.client_secret }\n"
    "    for k, v in pairs(t) do f[k] = v end\n"
    "    return f\n"
    "  end\n"
    "  if cfg.refresh_token then\n"
    "    local res, err, info = post(cfg, cfg.token_url,\n"
    "      form{ grant_type = 'refresh_token', refresh_token = cfg.refresh_token }, 'token request')\n"
    "    if not res then return nil, err, info end\n"
    "    if ok(res) then return accept(c, cfg, res) end\n"
    "    if cfg.grant == 'refresh_token' or res.status >= 500 or res.status == 429 then\n"
    "      return describe(cfg, res, cfg.token_url, 'token request')\n"
    "    end\n"
    "    P.warn('oauth2: ' .. cfg.host .. ' refused the stored refresh token (HTTP ' .. res.status ..\n"
    "      '); requesting a new token with grant ' .. cfg.grant)\n"
    "    P.forget(c, true)\n"
    "  elseif cfg.grant == 'refresh_token' then\n"
    "    return nil, 'oauth2: no refresh token for ' .. cfg.token_url ..\n"
    "      (cfg.hint and ('. Authorize first: ' .. cfg.hint) or ': give refresh_token= or a cache file that holds one'),\n"
    "      { status = 0, error = 'no_refresh_token' }\n"
    "  end\n"
    "  local f = form{ grant_type = cfg.grant, scope = cfg.scope }\n"
    "  for k, v in pairs(cfg.extra) do f[k] = v end\n"
    "  local res, err, info = post(cfg, cfg.token_url, f, 'token request')\n"
    "  if not res then return nil, err, info end\n"
    "  if ok(res) then return accept(c, cfg, res) end\n"
    "  return describe(cfg, res, cfg.token_url, 'token request')\n"
    "end\n"
    "local function send(opts, tok)\n"
    "  local o, h = {}, {}\n"
    "  for k, v in pairs(opts) do o[k] = v end\n"
    "  if opts.headers ~= nil then\n"
    "    if type(opts.headers) ~= 'table' then error('oauth2: request headers must be a table', 3) end\n"
    "    for k, v in pairs(opts.headers) do\n"
    "      if not (type(k) == 'string' and k:lower() == 'authorization') then h[k] = v end\n"
    "    end\n"
    "  end\n"
    "  h.Authorization = 'Bearer ' .. tok\n"
    "  o.headers = h\n"
    "  return http.request(o)\n"
    "end\n"
    "function M.request(c, opts)\n"
    "  if type(opts) ~= 'table' then error('oauth2: client:request(opts) needs an options table', 2) end\n"
    "  local tok, err, info = c:token()\n"
    "  if not tok then return nil, err, info end\n"
    "  local res, rerr = send(opts, tok)\n"
    "  if res and res.status == 401 then\n"
    "    c:invalidate(tok)\n"
    "    tok, err, info = c:token()\n"
    "    if not tok then return nil, err, info end\n"
    "    res, rerr = send(opts, tok)\n"
    "  end\n"
    "  return res, rerr\n"
    "end\n"
    "local function with_url(c, method, url, opts)\n"
    "  if type(url) ~= 'string' then error('oauth2: client:' .. method:lower() .. '(url [, opts]) needs a url', 3) end\n"
    "  if opts ~= nil and type(opts) ~= 'table' then error('oauth2: options must be a table', 3) end\n"
    "  local o = {}\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  o.url, o.method = url, method\n"
    "  return M.request(c, o)\n"
    "end\n"
    "function M.get(c, url, opts) return with_url(c, 'GET', url, opts) end\n"
    "function M.post(c, url, opts) return with_url(c, 'POST', url, opts) end\n"
    "function M.delete_tokens(c, opts)\n"
    "  if opts ~= nil and type(opts) ~= 'table' then error('oauth2: client:delete_tokens([opts]) takes a table', 2) end\n"
    "  opts = opts or {}\n"
    "  local cfg = P.config(c)\n"
    "  local url = opts.url or cfg.delete_url\n"
    "  if type(url) ~= 'string' then error('oauth2: delete_tokens needs url= (token_url does not end in /token.json)', 2) end\n"
    "  local res, err, info = post(cfg, url, { client_id = cfg.client_id, client_secret = cfg.client_secret,\n"
    "    username = opts.username, user_id = opts.user_id }, 'token delete request')\n"
    "  if not res then return nil, err, info end\n"
    "  if ok(res) then P.forget(c); return true end\n"
    "  return describe(cfg, res, url, 'token delete request')\n"
    "end\n"
    "return M\n";

/* ---- constructors ---- */

static const char *opt_str(lua_State *L, int idx, const char *k, const char *fn) {
    lua_getfield(L, idx, k);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: '%s' must be a string (got %s)", fn, k, luaL_typename(L, -1));
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1);
    return s;
}

static double opt_num(lua_State *L, int idx, const char *k, double def, double lo, double hi, const char *fn) {
    lua_getfield(L, idx, k);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "%s: '%s' must be a number", fn, k);
        v = lua_tonumber(L, -1);
        if (!(v >= lo && v <= hi)) luaL_error(L, "%s: '%s' must be between %f and %f (got %f)", fn, k, lo, hi, v);
    }
    lua_pop(L, 1);
    return v;
}

/* scope = "a b" or {"a", "b"} -> "a b" pushed and returned; NULL (nothing pushed) when absent. */
static const char *opt_scope(lua_State *L, int idx, const char *fn) {
    lua_getfield(L, idx, "scope");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, idx, "scopes");
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
    if (!lua_istable(L, -1)) luaL_error(L, "%s: 'scope' must be a string or a list of strings", fn);
    zh_buf b;
    zh_buf_init(&b);
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            zh_buf_free(&b);
            luaL_error(L, "%s: 'scope' must be a string or a list of strings", fn);
        }
        if (i > 1) zh_buf_addc(&b, ' ');
        zh_buf_adds(&b, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    zh_buf_free(&b);
    return lua_rawlen(L, -1) ? lua_tostring(L, -1) : NULL;
}

typedef struct client_spec {
    const char *token_url, *client_id, *client_secret, *refresh_token, *scope, *cache, *source, *hint;
    int grant; /* -1: choose */
    bool google;
    double margin, timeout;
    int extra_idx; /* 0 when none */
} client_spec;

static int push_client(lua_State *L, const client_spec *s) {
    zh_host *h = zh_host_of(L);
    client_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = NULL;
    luaL_setmetatable(L, CLIENT_MT);
    int ud = lua_gettop(L);
    if (s->extra_idx) {
        lua_pushvalue(L, s->extra_idx);
        lua_setiuservalue(L, ud, 1);
    }
    oauth_client *c = zh_xcalloc(1, sizeof *c);
    c->refs = 1;
    c->h = h;
    c->token_url = zh_xstrdup(s->token_url);
    c->client_id = zh_xstrdup(s->client_id);
    c->client_secret = s->client_secret ? zh_xstrdup(s->client_secret) : NULL;
    c->scope = s->scope ? zh_xstrdup(s->scope) : NULL;
    c->cache = s->cache ? zh_xstrdup(s->cache) : NULL;
    c->hint = s->hint ? zh_xstrdup(s->hint) : NULL;
    c->google = s->google;
    c->margin = s->margin;
    c->timeout = s->timeout;
    if (s->source) {
        c->source = zh_xstrdup(s->source);
    } else {
        /* Token requests get their own http source so API traffic limits never hold them up. */
        char *host = zh_http_host_of_url(s->token_url);
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "oauth2:%s", host);
        free(host);
        c->source = b.data;
    }
    c->grant = s->grant >= 0 ? (enum grant)s->grant : (s->refresh_token || s->google ? GRANT_REFRESH : GRANT_CLIENT);
    zh_log_secret(s->client_secret);
    if (s->refresh_token) set_refresh_token(c, s->refresh_token);
    u->c = c;
    /* A refresh token in the cache is newer than one given here (VK rotates them). */
    cache_reload(L, c);
    lua_settop(L, ud);
    return 1;
}

static bool url_ok(const char *u) { return u && (!strncmp(u, "http://", 7) || !strncmp(u, "https://", 8)); }

/* oauth2.client{ token_url=, client_id=, client_secret=, grant=, refresh_token=, scope=, extra=,
 *                cache=, format=, margin=, source=, timeout= } -> client */
static int l_client(lua_State *L) {
    static const char *const keys[] = {"token_url", "client_id", "client_secret", "grant", "refresh_token", "scope",
                                       "scopes", "extra", "cache", "format", "margin", "source", "timeout", NULL};
    const char *fn = "oauth2.client";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    zh_lrt_check_keys(L, 1, keys, fn, "option");
    client_spec s = {0};
    s.token_url = opt_str(L, 1, "token_url", fn);
    if (!url_ok(s.token_url)) return luaL_error(L, "%s: 'token_url' must be an http:// or https:// URL", fn);
    s.client_id = opt_str(L, 1, "client_id", fn);
    if (!s.client_id || !*s.client_id) return luaL_error(L, "%s: 'client_id' is required", fn);
    s.client_secret = opt_str(L, 1, "client_secret", fn);
    s.refresh_token = opt_str(L, 1, "refresh_token", fn);
    if (s.refresh_token && !*s.refresh_token) s.refresh_token = NULL;
    s.cache = opt_str(L, 1, "cache", fn);
    s.source = opt_str(L, 1, "source", fn);
    const char *grant = opt_str(L, 1, "grant", fn);
    s.grant = -1;
    if (grant) {
        for (int i = 0; grant_names[i]; i++)
            if (!strcmp(grant, grant_names[i])) s.grant = i;
        if (s.grant < 0)
            return luaL_error(L, "%s: 'grant' must be refresh_token, client_credentials or agency_client_credentials", fn);
    }
    const char *format = opt_str(L, 1, "format", fn);
    if (format && strcmp(format, "google") && strcmp(format, "plain"))
        return luaL_error(L, "%s: 'format' must be \"google\" or \"plain\"", fn);
    s.google = format && !strcmp(format, "google");
    if (s.google && !s.cache) return luaL_error(L, "%s: format = \"google\" needs cache = \"path/to/token.json\"", fn);
    s.margin = opt_num(L, 1, "margin", 300, 0, 86400, fn);
    s.timeout = opt_num(L, 1, "timeout", 30, 0.1, 3600, fn);
    lua_getfield(L, 1, "extra");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1)) return luaL_error(L, "%s: 'extra' must be a table of form fields", fn);
        /* Copy it, so later changes to the script's table do not leak into token requests. */
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, -3)) {
            int vt = lua_type(L, -1);
            if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN))
                return luaL_error(L, "%s: 'extra' maps field names to strings or numbers", fn);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        s.extra_idx = lua_gettop(L);
    }
    s.scope = opt_scope(L, 1, fn);
    if (s.scope && !*s.scope) s.scope = NULL;
    return push_client(L, &s);
}

/* oauth2.google{ token=, credentials=, margin=, source=, timeout=, token_url= } -> client, or nil, err */
static int l_google(lua_State *L) {
    static const char *const keys[] = {"token", "credentials", "margin", "source", "timeout", "token_url", NULL};
    const char *fn = "oauth2.google";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    zh_lrt_check_keys(L, 1, keys, fn, "option");
    const char *token = opt_str(L, 1, "token", fn);
    if (!token) return luaL_error(L, "%s: 'token' (the path of token.json) is required", fn);
    const char *creds = opt_str(L, 1, "credentials", fn);
    const char *token_url = opt_str(L, 1, "token_url", fn);
    if (token_url && !url_ok(token_url)) return luaL_error(L, "%s: 'token_url' must be an http:// or https:// URL", fn);
    client_spec s = {0};
    s.grant = GRANT_REFRESH;
    s.google = true;
    s.cache = token;
    s.source = opt_str(L, 1, "source", fn);
    s.margin = opt_num(L, 1, "margin", 300, 0, 86400, fn);
    s.timeout = opt_num(L, 1, "timeout", 30, 0.1, 3600, fn);
    lua_pushfstring(L, "zhost auth google --credentials %s --token %s", creds ? creds : "secrets/gmail/credentials.json", token);
    s.hint = lua_tostring(L, -1);

    bool missing;
    char *err = read_json_file(L, token, &missing);
    if (err) {
        lua_pushnil(L);
        if (missing)
            lua_pushfstring(L, "oauth2.google: %s does not exist: authorize once with %s", token, s.hint);
        else if (access(token, R_OK) != 0 && (errno == EACCES || errno == EPERM))
            /* The token is the service user's (0600): a run by another user, not a bad token.
             * Re-authorizing would replace a good token. */
            lua_pushfstring(L, "oauth2.google: cannot read %s: Permission denied; it belongs to the service's "
                               "user: run as that user (sudo -u zhost zhost run ...), the token itself may be fine",
                            token);
        else
            lua_pushfstring(L, "oauth2.google: cannot read %s (%s); re-authorize with %s", token, err, s.hint);
        free(err);
        return 2;
    }
    int tok = lua_gettop(L);
    int cred = 0;
    if (creds) {
        err = read_json_file(L, creds, &missing);
        if (err) {
            /* token.json usually carries the client too; credentials.json is only a fallback. */
            ZH_DEBUG(NULL, "msg=\"oauth2.google: credentials not read\" error=\"%s\"", err);
            free(err);
        } else {
            lua_getfield(L, -1, "installed");
            if (!lua_istable(L, -1)) {
                lua_pop(L, 1);
                lua_getfield(L, -1, "web");
            }
            if (lua_istable(L, -1)) cred = lua_gettop(L);
            else lua_pop(L, 1);
        }
    }
    s.client_id = field_str(L, tok, "client_id");
    if (!s.client_id && cred) s.client_id = field_str(L, cred, "client_id");
    s.client_secret = field_str(L, tok, "client_secret");
    if (!s.client_secret && cred) s.client_secret = field_str(L, cred, "client_secret");
    s.token_url = token_url ? token_url : field_str(L, tok, "token_uri");
    if (!s.token_url && cred) s.token_url = field_str(L, cred, "token_uri");
    if (!s.token_url) s.token_url = DEFAULT_GOOGLE_TOKEN_URI;
    s.refresh_token = field_str(L, tok, "refresh_token");
    if (!s.client_id) {
        lua_pushnil(L);
        lua_pushfstring(L, "oauth2.google: no client_id in %s%s%s", token, creds ? " or " : "", creds ? creds : "");
        return 2;
    }
    if (!url_ok(s.token_url)) {
        lua_pushnil(L);
        lua_pushfstring(L, "oauth2.google: token_uri in %s is not an http(s) URL", token);
        return 2;
    }
    if (!s.refresh_token) {
        lua_pushnil(L);
        lua_pushfstring(L, "oauth2.google: %s has no refresh_token: re-authorize with %s", token, s.hint);
        return 2;
    }
    return push_client(L, &s);
}

int zh_open_oauth2(lua_State *L) {
    /* The chunk's private helpers, and the modules it calls (fresh tables over the same state). */
    if (luaL_loadbuffer(L, lua_source, sizeof lua_source - 1, "=oauth2") != LUA_OK) return lua_error(L);
    lua_pushcfunction(L, zh_open_http);
    lua_call(L, 0, 1);
    lua_pushcfunction(L, zh_open_json);
    lua_call(L, 0, 1);
    static const luaL_Reg priv[] = {
        {"config", p_config}, {"store", p_store}, {"forget", p_forget}, {"warn", p_warn}, {NULL, NULL},
    };
    luaL_newlib(L, priv);
    lua_call(L, 3, 1);
    int chunk = lua_gettop(L);
    lua_getfield(L, chunk, "refresh");
    lua_setfield(L, LUA_REGISTRYINDEX, REFRESH_FN);

    if (luaL_newmetatable(L, CLIENT_MT)) {
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "oauth2.client");
        lua_setfield(L, -2, "__name");
        static const luaL_Reg methods[] = {
            {"token", l_token}, {"invalidate", l_invalidate}, {"info", l_info}, {NULL, NULL},
        };
        luaL_newlib(L, methods);
        static const char *const lua_methods[] = {"request", "get", "post", "delete_tokens", NULL};
        for (int i = 0; lua_methods[i]; i++) {
            lua_getfield(L, chunk, lua_methods[i]);
            lua_setfield(L, -2, lua_methods[i]);
        }
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 2);
    static const luaL_Reg fns[] = {{"client", l_client}, {"google", l_google}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

/* ---- zhost auth google: installed-app consent over a loopback redirect ----
 *
 * Google blocks the copy/paste (OOB) flow and refuses Gmail scopes in the device flow, so the
 * one headless-friendly way is the loopback redirect: we listen on 127.0.0.1, the browser is
 * sent back to us with ?code=&state=, and we exchange the code (with the PKCE verifier). */

typedef struct auth_flow {
    zh_host *h;
    uv_tcp_t server;
    uv_timer_t timer;
    const char *state;
    char *code;
    char *error;
    bool finished;
} auth_flow;

typedef struct auth_conn {
    uv_tcp_t tcp;
    auth_flow *f;
    zh_buf req;
    zh_buf resp;
    uv_write_t wr;
    bool handled;
} auth_conn;

static void conn_closed(uv_handle_t *hd) {
    auth_conn *ac = hd->data;
    zh_buf_free(&ac->req);
    zh_buf_free(&ac->resp);
    free(ac);
}

static void conn_close(auth_conn *ac) {
    if (!uv_is_closing((uv_handle_t *)&ac->tcp)) uv_close((uv_handle_t *)&ac->tcp, conn_closed);
}

static void conn_written(uv_write_t *wr, int status) {
    (void)status;
    conn_close(wr->data);
}

static void respond(auth_conn *ac, int status, const char *reason, const char *title, const char *text) {
    zh_buf body;
    zh_buf_init(&body);
    zh_buf_printf(&body,
                  "<!doctype html><html><head><meta charset=\"utf-8\"><title>zhost: %s</title></head>"
                  "<body style=\"font-family:sans-serif\"><h2>%s</h2><p>%s</p></body></html>\n",
                  title, title, text);
    zh_buf_printf(&ac->resp,
                  "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                  "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                  status, reason, body.len);
    zh_buf_add(&ac->resp, body.data, body.len);
    zh_buf_free(&body);
    uv_buf_t b = uv_buf_init(ac->resp.data, (unsigned)ac->resp.len);
    ac->wr.data = ac;
    if (uv_write(&ac->wr, (uv_stream_t *)&ac->tcp, &b, 1, conn_written) != 0) conn_close(ac);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Value of `name` in a query string (percent-decoded, '+' as space), malloc'd, or NULL. */
static char *query_param(const char *q, size_t qlen, const char *name) {
    size_t nl = strlen(name);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp) amp = end;
        if ((size_t)(amp - p) > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            zh_buf v;
            zh_buf_init(&v);
            for (const char *s = p + nl + 1; s < amp; s++) {
                if (*s == '+') zh_buf_addc(&v, ' ');
                else if (*s == '%' && amp - s >= 3 && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
                    zh_buf_addc(&v, (char)(hexval(s[1]) * 16 + hexval(s[2])));
                    s += 2;
                } else zh_buf_addc(&v, *s);
            }
            zh_buf_cstr(&v);
            return v.data;
        }
        p = amp + 1;
    }
    return NULL;
}

static void handle_redirect(auth_conn *ac) {
    auth_flow *f = ac->f;
    ac->handled = true;
    const char *r = zh_buf_cstr(&ac->req);
    const char *sp1 = strchr(r, ' ');
    const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(r, "GET ", 4) != 0) {
        respond(ac, 400, "Bad Request", "Bad request", "zhost expected the browser's redirect (a GET request).");
        return;
    }
    const char *target = sp1 + 1, *q = memchr(target, '?', (size_t)(sp2 - target));
    size_t qlen = q ? (size_t)(sp2 - q - 1) : 0;
    char *code = q ? query_param(q + 1, qlen, "code") : NULL;
    char *state = q ? query_param(q + 1, qlen, "state") : NULL;
    char *error = q ? query_param(q + 1, qlen, "error") : NULL;
    if (!code && !error) {
        respond(ac, 404, "Not Found", "Not found", "This address only receives Google's authorization redirect.");
    } else if (f->finished) {
        respond(ac, 409, "Conflict", "Already done", "zhost already received an authorization; this one is ignored.");
    } else if (!state || strcmp(state, f->state) != 0) {
        /* Not our request (a stale tab, or a forged one): keep waiting for the real redirect. */
        fprintf(stderr, "zhost auth: ignored a redirect whose state does not match this run\n");
        respond(ac, 400, "Bad Request", "Wrong state",
                "This redirect does not belong to the running <code>zhost auth google</code>. Use the URL it printed.");
    } else if (error) {
        char *desc = query_param(q + 1, qlen, "error_description");
        zh_buf e;
        zh_buf_init(&e);
        zh_buf_printf(&e, "Google did not grant access (error=%s%s%s)", error, desc ? ": " : "", desc ? desc : "");
        free(desc);
        f->error = e.data;
        f->finished = true;
        respond(ac, 200, "OK", "Authorization failed", "Google did not grant access. See the terminal for details.");
    } else {
        zh_log_secret(code);
        f->code = code;
        code = NULL;
        f->finished = true;
        respond(ac, 200, "OK", "zhost is authorized",
                "zhost received the authorization and is saving the token. You can close this tab.");
    }
    free(code);
    free(state);
    free(error);
}

static void conn_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
    (void)hd;
    if (suggested > 65536) suggested = 65536;
    buf->base = zh_xmalloc(suggested);
    buf->len = suggested;
}

static void conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    auth_conn *ac = st->data;
    if (nread > 0 && !ac->handled) zh_buf_add(&ac->req, buf->base, (size_t)nread);
    free(buf->base);
    if (ac->handled) return;
    if (nread < 0) {
        conn_close(ac);
        return;
    }
    bool complete = ac->req.len && strstr(zh_buf_cstr(&ac->req), "\r\n\r\n");
    if (complete || ac->req.len > 16384) {
        uv_read_stop(st);
        if (complete) handle_redirect(ac);
        else {
            ac->handled = true;
            respond(ac, 431, "Request Header Fields Too Large", "Request too large", "zhost refused the request.");
        }
    }
}

static void on_connection(uv_stream_t *server, int status) {
    auth_flow *f = server->data;
    if (status < 0) return;
    auth_conn *ac = zh_xcalloc(1, sizeof *ac);
    ac->f = f;
    zh_buf_init(&ac->req);
    zh_buf_init(&ac->resp);
    uv_tcp_init(f->h->loop, &ac->tcp);
    ac->tcp.data = ac;
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) != 0 || uv_read_start((uv_stream_t *)&ac->tcp, conn_alloc, conn_read) != 0)
        conn_close(ac);
}

static void auth_timeout(uv_timer_t *t) {
    auth_flow *f = t->data;
    if (f->finished) return;
    f->error = zh_xstrdup("timed out waiting for the browser's redirect (give more time with --timeout SECONDS)");
    f->finished = true;
}

static void exchange_done(zh_xfer *x) { *(bool *)x->ud = true; }

static void process_closed(uv_handle_t *hd) { free(hd); }

static void browser_exited(uv_process_t *p, int64_t status, int sig) {
    (void)status;
    (void)sig;
    uv_close((uv_handle_t *)p, process_closed);
}

static void open_browser(zh_host *h, const char *url) {
    if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY")) return;
    uv_process_t *p = zh_xcalloc(1, sizeof *p);
    char *args[] = {"xdg-open", (char *)url, NULL};
    uv_stdio_container_t io[3] = {{.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
    uv_process_options_t o = {.exit_cb = browser_exited, .file = "xdg-open", .args = args, .stdio_count = 3, .stdio = io};
    if (uv_spawn(h->loop, p, &o) != 0) uv_close((uv_handle_t *)p, process_closed);
}

static int auth_usage(void) {
    fprintf(stderr, "usage: zhost auth google [--credentials FILE] [--token FILE] [--scope S]... [--port N] "
                    "[--no-browser] [--timeout SECONDS] [--secrets DIR]\n");
    return 2;
}

static int auth_fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "zhost auth google: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

static int auth_google(zh_host *h, const char *creds_path, const char *token_path, const char *scope, int port,
                       bool no_browser, double timeout_s) {
    lua_State *L = h->L;
    int top = lua_gettop(L);
    int rc = 1;
    bool missing;
    char *err = read_json_file(L, creds_path, &missing);
    if (err) {
        rc = auth_fail(missing ? "%s not found (%s): download the OAuth client of type \"Desktop app\" from Google Cloud console, "
                                 "APIs & Services, Credentials, and save it there"
                               : "cannot read the OAuth client file %s (%s)",
                       creds_path, err);
        free(err);
        return rc;
    }
    lua_getfield(L, -1, "installed");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "web");
    }
    if (!lua_istable(L, -1)) {
        lua_settop(L, top);
        return auth_fail("%s has neither an \"installed\" nor a \"web\" client%s", creds_path, "");
    }
    int cred = lua_gettop(L);
    const char *client_id = field_str(L, cred, "client_id");
    const char *client_secret = field_str(L, cred, "client_secret");
    const char *auth_uri = field_str(L, cred, "auth_uri");
    const char *token_uri = field_str(L, cred, "token_uri");
    if (!auth_uri) auth_uri = DEFAULT_GOOGLE_AUTH_URI;
    if (!token_uri) token_uri = DEFAULT_GOOGLE_TOKEN_URI;
    if (!client_id) {
        lua_settop(L, top);
        return auth_fail("%s has no client_id%s", creds_path, "");
    }
    if (!url_ok(auth_uri) || !url_ok(token_uri)) {
        lua_settop(L, top);
        return auth_fail("%s: auth_uri and token_uri must be http(s) URLs%s", creds_path, "");
    }
    zh_log_secret(client_secret);

    zh_buf verifier, state, challenge, url, redirect, form;
    zh_buf_init(&verifier);
    zh_buf_init(&state);
    zh_buf_init(&challenge);
    zh_buf_init(&url);
    zh_buf_init(&redirect);
    zh_buf_init(&form);
    auth_flow f = {.h = h};
    zh_xfer *x = NULL;
    bool listening = false;
    if (random_b64url(&verifier, 48) != 0 || random_b64url(&state, 24) != 0) {
        auth_fail("no secure random numbers available (getrandom: %s)%s", strerror(errno), "");
        goto out;
    }
    zh_oauth2_pkce_challenge(zh_buf_cstr(&verifier), &challenge);
    f.state = zh_buf_cstr(&state);

    uv_tcp_init(h->loop, &f.server);
    f.server.data = &f;
    uv_timer_init(h->loop, &f.timer);
    f.timer.data = &f;
    listening = true;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int e = uv_tcp_bind(&f.server, (const struct sockaddr *)&addr, 0);
    if (!e) e = uv_listen((uv_stream_t *)&f.server, 8, on_connection);
    if (e) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        auth_fail("cannot listen on 127.0.0.1:%s: %s", p, uv_strerror(e));
        goto out;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&f.server, (struct sockaddr *)&bound, &blen);
    int real_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    zh_buf_printf(&redirect, "http://127.0.0.1:%d", real_port);

    lua_createtable(L, 0, 9);
    struct { const char *k, *v; } q[] = {
        {"client_id", client_id}, {"redirect_uri", zh_buf_cstr(&redirect)}, {"response_type", "code"},
        {"scope", scope}, {"access_type", "offline"}, {"prompt", "consent"}, {"state", f.state},
        {"code_challenge", zh_buf_cstr(&challenge)}, {"code_challenge_method", "S256"},
    };
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        lua_pushstring(L, q[i].v);
        lua_setfield(L, -2, q[i].k);
    }
    zh_buf query;
    zh_buf_init(&query);
    zh_http_encode_form(L, -1, &query, "query"); /* into an empty buffer: it adds '&' to a non-empty one */
    lua_pop(L, 1);
    zh_buf_adds(&url, auth_uri);
    zh_buf_addc(&url, strchr(auth_uri, '?') ? '&' : '?');
    zh_buf_add(&url, query.data, query.len);
    zh_buf_free(&query);

    printf("Open this URL in a browser on this machine and allow access:\n\n  %s\n\n", zh_buf_cstr(&url));
    printf("Waiting for the redirect to %s/ (Ctrl-C to give up).\n"
           "On a headless server, forward the port first (ssh -L %d:127.0.0.1:%d THIS_SERVER) and run with --port %d.\n",
           zh_buf_cstr(&redirect), real_port, real_port, real_port);
    fflush(stdout);
    if (!no_browser) open_browser(h, zh_buf_cstr(&url));
    uv_timer_start(&f.timer, auth_timeout, (uint64_t)(timeout_s * 1000), 0);
    while (!f.finished && uv_run(h->loop, UV_RUN_ONCE)) {
    }
    if (f.error || !f.code) {
        auth_fail("%s%s", f.error ? f.error : "the loop ended before the redirect arrived", "");
        goto out;
    }
    printf("Authorization received; exchanging the code at %s\n", token_uri);
    fflush(stdout);

    lua_createtable(L, 0, 6);
    struct { const char *k, *v; } fm[] = {
        {"code", f.code}, {"client_id", client_id}, {"client_secret", client_secret},
        {"redirect_uri", zh_buf_cstr(&redirect)}, {"grant_type", "authorization_code"},
        {"code_verifier", zh_buf_cstr(&verifier)},
    };
    for (size_t i = 0; i < sizeof fm / sizeof *fm; i++) {
        if (!fm[i].v) continue;
        lua_pushstring(L, fm[i].v);
        lua_setfield(L, -2, fm[i].k);
    }
    zh_http_encode_form(L, -1, &form, "form");
    lua_pop(L, 1);
    x = zh_xfer_new(h->curl);
    zh_xfer_set_request(x, "POST", token_uri, form.data, form.len);
    zh_xfer_add_header(x, "Content-Type: application/x-www-form-urlencoded");
    zh_xfer_add_header(x, "Accept: application/json");
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, 60000L);
    bool done = false;
    x->ud = &done;
    x->done = exchange_done;
    if (zh_xfer_start(x) != 0) {
        auth_fail("could not start the request to %s%s", token_uri, "");
        goto out;
    }
    while (!done && uv_run(h->loop, UV_RUN_ONCE)) {
    }
    if (!done || x->result != CURLE_OK) {
        auth_fail("the code exchange at %s failed: %s", token_uri, done ? zh_xfer_error(x) : "the request did not finish");
        goto out;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "zhost.json.decode_safe");
    lua_pushlstring(L, x->resp_body.data ? x->resp_body.data : "", x->resp_body.len);
    lua_call(L, 1, 1);
    int resp = lua_gettop(L);
    if (!lua_istable(L, resp)) {
        lua_newtable(L);
        lua_replace(L, resp);
    }
    const char *access = field_str(L, resp, "access_token");
    const char *refresh = field_str(L, resp, "refresh_token");
    if (x->status < 200 || x->status > 299 || !access) {
        const char *ecode = field_str(L, resp, "error"), *edesc = field_str(L, resp, "error_description");
        zh_buf m;
        zh_buf_init(&m);
        zh_buf_printf(&m, "HTTP %ld", x->status);
        if (ecode) zh_buf_printf(&m, " (%s%s%s)", ecode, edesc ? ": " : "", edesc ? edesc : "");
        auth_fail("the code exchange at %s was refused: %s; run the command again", token_uri, zh_buf_cstr(&m));
        zh_buf_free(&m);
        goto out;
    }
    zh_log_secret(access);
    zh_log_secret(refresh);
    if (!refresh) {
        auth_fail("%s returned no refresh_token%s: remove zhost's access at https://myaccount.google.com/permissions "
                  "and run the command again",
                  token_uri, "");
        goto out;
    }
    lua_getfield(L, resp, "expires_in");
    int isnum = 0;
    lua_Number life = lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || life <= 0) life = 3600;
    char iso[32];
    zh_oauth2_format_expiry(zh_now_wall() + life, iso);
    const char *granted = field_str(L, resp, "scope");
    if (!granted) granted = scope;

    lua_createtable(L, 0, 9);
    struct { const char *k, *v; } tj[] = {
        {"token", access}, {"refresh_token", refresh}, {"token_uri", token_uri}, {"client_id", client_id},
        {"client_secret", client_secret}, {"universe_domain", "googleapis.com"}, {"account", ""}, {"expiry", iso},
    };
    for (size_t i = 0; i < sizeof tj / sizeof *tj; i++) {
        if (!tj[i].v) continue;
        lua_pushstring(L, tj[i].v);
        lua_setfield(L, -2, tj[i].k);
    }
    lua_newtable(L);
    int ns = 0;
    for (const char *p = granted; *p;) {
        while (*p == ' ') p++;
        const char *end = p;
        while (*end && *end != ' ') end++;
        if (end > p) {
            lua_pushlstring(L, p, (size_t)(end - p));
            lua_rawseti(L, -2, ++ns);
        }
        p = end;
    }
    lua_setfield(L, -2, "scopes");
    /* A first `auth` on a fresh checkout has no secrets directory yet. */
    char *token_dir = zh_xstrdup(token_path), *slash = strrchr(token_dir, '/');
    if (slash && slash != token_dir) {
        *slash = 0;
        zh_mkdirs(token_dir, 0700);
    }
    free(token_dir);
    err = write_json_file(L, token_path);
    if (err) {
        auth_fail("could not save the token: %s%s", err, "");
        free(err);
        goto out;
    }
    printf("Saved %s (mode 0600). Scripts read it with oauth2.google{ token = \"%s\" }; if you authorized on\n"
           "another machine, copy it to the server's secrets directory.\n",
           token_path, token_path);
    rc = 0;
out:
    if (listening) {
        uv_timer_stop(&f.timer);
        uv_close((uv_handle_t *)&f.timer, NULL);
        uv_close((uv_handle_t *)&f.server, NULL);
        uv_run(h->loop, UV_RUN_NOWAIT);
    }
    zh_xfer_free(x);
    free(f.code);
    free(f.error);
    zh_buf_free(&verifier);
    zh_buf_free(&state);
    zh_buf_free(&challenge);
    zh_buf_free(&url);
    zh_buf_free(&redirect);
    zh_buf_free(&form);
    lua_settop(L, top);
    return rc;
}


int zh_cmd_auth(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "google") != 0) return auth_usage();
    const char *creds = NULL, *token = NULL, *secrets = NULL, *v;
    int port = 0;
    bool no_browser = false;
    double timeout_s = 600;
    zh_buf scope;
    zh_buf_init(&scope);
    for (int i = 2; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--credentials"))) {
            creds = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--token"))) {
            token = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) {
            secrets = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--scope"))) {
            if (scope.len) zh_buf_addc(&scope, ' ');
            zh_buf_adds(&scope, v);
        } else if ((v = zh_opt_value(argc, argv, &i, "--port"))) {
            char *end;
            long p = strtol(v, &end, 10);
            if (*end || p < 0 || p > 65535) {
                fprintf(stderr, "zhost auth google: --port must be 0..65535 (got '%s')\n", v);
                zh_buf_free(&scope);
                return 2;
            }
            port = (int)p;
        } else if ((v = zh_opt_value(argc, argv, &i, "--timeout"))) {
            char *end;
            timeout_s = strtod(v, &end);
            if (*end || !(timeout_s > 0 && timeout_s < 86400)) {
                fprintf(stderr, "zhost auth google: --timeout must be a number of seconds (got '%s')\n", v);
                zh_buf_free(&scope);
                return 2;
            }
        } else if (!strcmp(argv[i], "--no-browser")) {
            no_browser = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            zh_buf_free(&scope);
            printf("usage: zhost auth google [--credentials FILE] [--token FILE] [--scope S]... [--port N] [--no-browser]\n"
                   "                         [--timeout SECONDS] [--secrets DIR]\n(see zhost help auth)\n");
            return 0;
        } else {
            fprintf(stderr, "zhost auth google: unexpected argument '%s'\n", argv[i]);
            zh_buf_free(&scope);
            return auth_usage();
        }
    }
    const char *dir = zh_secrets_dir(secrets);
    zh_buf cpath, tpath;
    zh_buf_init(&cpath);
    zh_buf_init(&tpath);
    zh_buf_printf(&cpath, "%s/gmail/credentials.json", dir);
    zh_buf_printf(&tpath, "%s/gmail/token.json", dir);
    if (!scope.len) zh_buf_adds(&scope, DEFAULT_GOOGLE_SCOPE);
    zh_host_opts ho = {.secrets_dir = dir};
    zh_host *h = zh_host_new(&ho);
    int rc = 1;
    if (h) { /* when not, zh_host_new said why */
        rc = auth_google(h, creds ? creds : zh_buf_cstr(&cpath), token ? token : zh_buf_cstr(&tpath), zh_buf_cstr(&scope),
                         port, no_browser, timeout_s);
        zh_host_free(h);
    }
    zh_buf_free(&cpath);
    zh_buf_free(&tpath);
    zh_buf_free(&scope);
    return rc;
}
