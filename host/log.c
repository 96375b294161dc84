/* log.c — owns logging: the line format, the level, secret redaction and the optional log file.
 *
 * The logger is process-wide state (level, secret list, file): every subsystem and every signal
 * path logs, often with no host at hand, so it lives here rather than in zh_host. */
#include "log.h"
#include "task.h"
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
    int level;
    char **secrets;
    size_t nsecrets;
    FILE *file;
} logger = {ZH_LOG_INFO, NULL, 0, NULL};

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void zh_log_set_level(int level) { logger.level = level; }
int zh_log_get_level(void) { return logger.level; }

int zh_log_parse_level(const char *s) {
    if (!s) return -1;
    if (!strcasecmp(s, "debug")) return ZH_LOG_DEBUG;
    if (!strcasecmp(s, "info")) return ZH_LOG_INFO;
    if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return ZH_LOG_WARN;
    if (!strcasecmp(s, "error")) return ZH_LOG_ERROR;
    return -1;
}

void zh_log_set_file(const char *path) {
    if (logger.file) fclose(logger.file);
    logger.file = path ? fopen(path, "a") : NULL;
    if (logger.file) setvbuf(logger.file, NULL, _IOLBF, 0);
}

void zh_log_secret(const char *value) {
    /* Short values would redact ordinary words; real secrets are longer. */
    if (!value || strlen(value) < 6) return;
    for (size_t i = 0; i < logger.nsecrets; i++)
        if (!strcmp(logger.secrets[i], value)) return;
    logger.secrets = zh_xrealloc(logger.secrets, (logger.nsecrets + 1) * sizeof *logger.secrets);
    logger.secrets[logger.nsecrets++] = zh_xstrdup(value);
}

/* Settings whose names say they are addresses, names, switches or sizes. Printing them is what an
 * operator needs at 3 a.m. ("cannot reach http://10.0.0.5:8123", not "cannot reach ***"); every
 * other setting, including any name not listed here, is treated as a secret. Lists of ids, an
 * account number and an agency client's login (VK_ACCOUNT_IDS, VK_ADS_PLAN_IDS, VK_ADS_ACCOUNT_ID,
 * VK_ADS_AGENCY_CLIENT_NAME) are what errors name ("ad plan 9100001 is not in agency client x"). */
static const char *const public_suffixes[] = {
    "_URL", "_HOST", "_PORT", "_DB", "_DATABASE", "_USER", "_USERNAME", "_LOGIN", "_SECURE", "_VERIFY_SSL",
    "_USE_TLS", "_TZ", "_TIMEZONE", "_DAYS", "_DAYS_BACK", "_HOURS", "_TIMEOUT", "_CONCURRENCY", "_RPS",
    "_VERSION", "_LEVEL", "_DIR", "_PATH", "_MODE", "_QUERY", "_TO", "_FROM", "_ENABLED", "_IDS",
    "_ACCOUNT_ID", "_CLIENT_NAME", NULL,
};

bool zh_log_key_is_public(const char *key) {
    size_t n = key ? strlen(key) : 0;
    for (const char *const *s = public_suffixes; *s; s++) {
        size_t m = strlen(*s);
        if (n > m && !strcasecmp(key + n - m, *s)) return true;
    }
    return false;
}

/* The secret parts of an address: the password of user:password@ and every query value. */
static void secret_url_parts(const char *url) {
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    size_t span = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', span);
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            char *pw = zh_xstrndup(colon + 1, (size_t)(at - colon - 1));
            zh_log_secret(pw);
            free(pw);
        }
    }
    const char *q = strchr(url, '?');
    while (q && *q) {
        const char *eq = strchr(q, '=');
        if (!eq) break;
        size_t vlen = strcspn(eq + 1, "&#");
        char *v = zh_xstrndup(eq + 1, vlen);
        zh_log_secret(v);
        free(v);
        q = eq[1 + vlen] == '&' ? eq + 2 + vlen : NULL;
    }
}

void zh_log_setting(const char *key, const char *value) {
    if (!value) return;
    if (!zh_log_key_is_public(key)) {
        zh_log_secret(value);
        return;
    }
    if (strstr(value, "://") || strchr(value, '?')) secret_url_parts(value);
}

static void redact(zh_buf *out, const char *text, bool keep_lines) {
    const char *p = text;
    while (*p) {
        size_t best = 0;
        for (size_t i = 0; i < logger.nsecrets; i++) {
            size_t n = strlen(logger.secrets[i]);
            if (n > best && !strncmp(p, logger.secrets[i], n)) best = n;
        }
        if (best) {
            zh_buf_adds(out, "***");
            p += best;
        } else {
            zh_buf_addc(out, *p == '\n' && !keep_lines ? ' ' : *p);
            p++;
        }
    }
}

void zh_log_redact(zh_buf *out, const char *text) { redact(out, text, false); }

char *zh_log_redacted(const char *text) {
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b, "");
    redact(&b, text, true);
    return b.data;
}

void zh_log_line(int level, const char *job, const char *body) {
    if (level < logger.level) return;
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    localtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ld", now.tv_nsec / 1000000);
    char off[8];
    strftime(off, sizeof off, "%z", &tm);
    zh_buf line;
    zh_buf_init(&line);
    zh_buf_printf(&line, "%s%.3s:%s %s job=%s ", ts, off, off + 3, level_names[level], job && *job ? job : "-");
    zh_log_redact(&line, body);
    zh_buf_addc(&line, '\n');
    fwrite(line.data, 1, line.len, stderr);
    if (logger.file) fwrite(line.data, 1, line.len, logger.file);
    zh_buf_free(&line);
}

void zh_log(int level, const char *job, const char *fmt, ...) {
    if (level < logger.level) return;
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        zh_log_line(level, job, small);
        return;
    }
    char *big = zh_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    zh_log_line(level, job, big);
    free(big);
}

/* ---- Lua ---- */

static bool needs_quotes(const char *s, size_t n) {
    if (n == 0) return true;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' || s[i] == '"' || s[i] == '=' || (unsigned char)s[i] < 0x20) return true;
    return false;
}

static void add_value(zh_buf *b, lua_State *L, int idx) {
    size_t n;
    const char *s = luaL_tolstring(L, idx, &n);
    if (needs_quotes(s, n)) {
        zh_buf_addc(b, '"');
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\') zh_buf_addc(b, '\\');
            zh_buf_addc(b, s[i] == '\n' ? ' ' : s[i]);
        }
        zh_buf_addc(b, '"');
    } else {
        zh_buf_add(b, s, n);
    }
    lua_pop(L, 1);
}

static int is_secret_key(const char *k) {
    static const char *words[] = {"token", "password", "secret", "authorization", NULL};
    char low[64];
    size_t i = 0;
    for (; k[i] && i < sizeof low - 1; i++) low[i] = (char)(k[i] >= 'A' && k[i] <= 'Z' ? k[i] + 32 : k[i]);
    low[i] = 0;
    for (int w = 0; words[w]; w++)
        if (strstr(low, words[w])) return 1;
    return 0;
}

static int l_log_at(lua_State *L, int level) {
    if (level < logger.level) return 0;
    zh_buf b;
    zh_buf_init(&b);
    luaL_tolstring(L, 1, NULL);
    zh_buf_adds(&b, "msg=");
    add_value(&b, L, -1);
    lua_pop(L, 1);
    if (lua_type(L, 2) == LUA_TTABLE) {
        /* Sorted keys keep lines stable and greppable. */
        lua_newtable(L);
        int keys = lua_gettop(L), nk = 0;
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, keys, ++nk);
            }
        }
        for (int i = 1; i <= nk; i++) {
            for (int j = i + 1; j <= nk; j++) {
                lua_rawgeti(L, keys, i);
                lua_rawgeti(L, keys, j);
                if (strcmp(lua_tostring(L, -1), lua_tostring(L, -2)) < 0) {
                    lua_rawseti(L, keys, i);
                    lua_rawseti(L, keys, j);
                } else {
                    lua_pop(L, 2);
                }
            }
        }
        for (int i = 1; i <= nk; i++) {
            lua_rawgeti(L, keys, i);
            const char *k = lua_tostring(L, -1);
            zh_buf_printf(&b, " %s=", k);
            if (is_secret_key(k)) {
                zh_buf_adds(&b, "***");
            } else {
                lua_rawget(L, 2);
                add_value(&b, L, -1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    zh_task *t = zh_host_of(L)->current;
    zh_log_line(level, t && t->group ? t->group->job : NULL, zh_buf_cstr(&b));
    zh_buf_free(&b);
    return 0;
}

static int l_debug(lua_State *L) { return l_log_at(L, ZH_LOG_DEBUG); }
static int l_info(lua_State *L) { return l_log_at(L, ZH_LOG_INFO); }
static int l_warn(lua_State *L) { return l_log_at(L, ZH_LOG_WARN); }
static int l_error(lua_State *L) { return l_log_at(L, ZH_LOG_ERROR); }

int zh_open_log(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"debug", l_debug}, {"info", l_info}, {"warn", l_warn}, {"error", l_error}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
