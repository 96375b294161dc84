/* rowenc.c — owns turning a Lua row into one JSONEachRow line for a known table schema.
 *
 * Why the schema: ClickHouse 18.16 refuses quoted decimals ("12.50") in JSONEachRow, so a money
 * string must be written as a bare number, while the same string into a String column must be
 * quoted. Integers stay integers, 64-bit ids given as strings pass through digit for digit, and a
 * decimal string is never turned into a binary float. nil leaves the column to its default. */
#include "ch_internal.h"
#include "l_text.h"
#include "l_time.h"
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int kind_of(const char *t, size_t n, bool *is_unsigned) {
#define IS(lit) (n >= sizeof(lit) - 1 && !strncmp(t, lit, sizeof(lit) - 1))
    if (is_unsigned) *is_unsigned = IS("UInt");
    if (IS("Int") || IS("UInt")) return CH_INT;
    if (IS("Float")) return CH_FLOAT;
    if (IS("Decimal")) return CH_DECIMAL;
    if (IS("String") || IS("FixedString")) return CH_STRING;
    if (IS("DateTime")) return CH_DATETIME;
    if (IS("Date")) return CH_DATE;
    if (IS("UUID")) return CH_UUID;
    if (IS("Enum")) return CH_ENUM;
    if (IS("Bool")) return CH_BOOL;
    if (IS("Array(")) return CH_ARRAY;
    return CH_OTHER;
#undef IS
}

/* Strips Nullable( ) and LowCardinality( ) wrappers; returns the inner type's start and length. */
static const char *unwrap(const char *t, size_t *n, bool *nullable) {
    for (;;) {
        if (*n > 9 && !strncmp(t, "Nullable(", 9) && t[*n - 1] == ')') {
            if (nullable) *nullable = true;
            t += 9;
            *n -= 10;
        } else if (*n > 15 && !strncmp(t, "LowCardinality(", 15) && t[*n - 1] == ')') {
            t += 15;
            *n -= 16;
        } else {
            return t;
        }
    }
}

void zh_rowenc_classify(ch_column *c) {
    size_t n = strlen(c->type);
    c->nullable = false;
    const char *t = unwrap(c->type, &n, &c->nullable);
    c->kind = kind_of(t, n, &c->is_unsigned);
    c->elem_kind = CH_OTHER;
    c->scale = -1;
    const char *d = strstr(c->type, "Decimal");
    int p, sc;
    if (d && (sscanf(d, "Decimal(%d, %d)", &p, &sc) == 2 || sscanf(d, "Decimal(%d,%d)", &p, &sc) == 2 ||
              sscanf(d, "Decimal32(%d)", &sc) == 1 || sscanf(d, "Decimal64(%d)", &sc) == 1 ||
              sscanf(d, "Decimal128(%d)", &sc) == 1 || sscanf(d, "Decimal256(%d)", &sc) == 1) &&
        sc >= 0 && sc <= 76)
        c->scale = sc;
    if (c->kind == CH_ARRAY && n > 7) {
        size_t en = n - 7;
        const char *e = unwrap(t + 6, &en, NULL);
        c->elem_kind = kind_of(e, en, NULL);
    }
}

void zh_rowenc_double(double d, char *out, size_t n) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, d);
        if (strtod(out, NULL) == d) return;
    }
}

bool zh_rowenc_is_decimal(const char *s, size_t n, bool allow_exp) {
    size_t i = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    size_t digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    }
    if (!digits) return false;
    if (allow_exp && i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        size_t ed = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, ed++;
        if (!ed) return false;
    }
    return i == n;
}

static bool is_integer_text(const char *s, size_t n, bool allow_minus) {
    size_t i = 0;
    if (i < n && s[i] == '-' && allow_minus) i++;
    if (i == n) return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static int two(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* Written YYYY-MM-DD or YYYY-MM-DD hh:mm:ss (or with a T), whether or not the calendar has it. */
static bool date_shaped(const char *s, size_t n) {
    return n == 10 && s[4] == '-' && s[7] == '-' && is_integer_text(s, 4, false) && is_integer_text(s + 5, 2, false) &&
           is_integer_text(s + 8, 2, false);
}

static bool datetime_shaped(const char *s, size_t n) {
    if (n == 10) return date_shaped(s, n);
    return n == 19 && date_shaped(s, 10) && (s[10] == ' ' || s[10] == 'T') && s[13] == ':' && s[16] == ':' &&
           is_integer_text(s + 11, 2, false) && is_integer_text(s + 14, 2, false) && is_integer_text(s + 17, 2, false);
}

/* A shaped value naming a day (and time) of the calendar, or ClickHouse's zero date 0000-00-00:
 * ClickHouse itself takes 2025-02-30 without a word and stores 2025-03-02. */
static bool on_calendar(const char *s, size_t n) {
    if (memcmp(s, "0000-00-00", 10)) {
        int d = two(s + 8);
        if (d < 1 || d > zh_time_days_in_month(atoi(s), two(s + 5))) return false;
    }
    return n == 10 || (two(s + 11) < 24 && two(s + 14) < 60 && two(s + 17) < 60);
}

/* Copies runs of bytes that need no escape in one go: row encoding is on every row's path and
 * most text (ids, dates, Cyrillic names) has nothing to escape. */
void zh_rowenc_json_string(zh_buf *b, const char *s, size_t n) {
    zh_buf_reserve(b, n + 2);
    zh_buf_addc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (i > run) zh_buf_add(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': zh_buf_add(b, "\\\"", 2); break;
        case '\\': zh_buf_add(b, "\\\\", 2); break;
        case '\n': zh_buf_add(b, "\\n", 2); break;
        case '\r': zh_buf_add(b, "\\r", 2); break;
        case '\t': zh_buf_add(b, "\\t", 2); break;
        default: zh_buf_printf(b, "\\u%04x", c);
        }
    }
    if (n > run) zh_buf_add(b, s + run, n - run);
    zh_buf_addc(b, '"');
}

/* Decimal text of v without printf (row encoding writes one or more per row). */
static void add_int(zh_buf *b, long long v) {
    char tmp[24];
    char *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    zh_buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

#define FAIL(...) (snprintf(errbuf, errlen, __VA_ARGS__), errbuf)

/* A value quoted in an error message: at most 40 bytes, never cut inside a UTF-8 character. */
static const char *clip(const char *s, size_t n, char buf[48]) {
    size_t m = zh_utf8_cut(s, n, 40);
    memcpy(buf, s, m);
    buf[m] = 0;
    return buf;
}

/* Encodes one scalar for a column of the given kind: the part of the encoding that does not
 * depend on where the value came from (a Lua value of sink:add, or a JSON value of a row
 * template, rowtpl.cc). */
const char *zh_rowenc_scalar(const zh_scalar *v, int kind, bool is_unsigned, int scale, zh_buf *out, char *errbuf,
                             size_t errlen) {
    char qb[48];
    char num[64];
    switch (kind) {
    case CH_INT:
        if (v->type == ZS_INT) {
            if (is_unsigned && v->i < 0) return FAIL("expected an unsigned integer, got %lld", v->i);
            add_int(out, v->i);
            return NULL;
        }
        if (v->type == ZS_DOUBLE) {
            double d = v->d;
            if (d != floor(d) || fabs(d) >= 9.2e18) return FAIL("expected a whole number, got %.17g", d);
            if (is_unsigned && d < 0) return FAIL("expected an unsigned integer, got %.0f", d);
            zh_buf_printf(out, "%.0f", d);
            return NULL;
        }
        if (v->type == ZS_STRING) {
            if (!is_integer_text(v->s, v->n, !is_unsigned) || v->n > 20)
                return FAIL("expected an integer, got \"%s\"", clip(v->s, v->n, qb));
            zh_buf_add(out, v->s, v->n);
            return NULL;
        }
        zh_buf_addc(out, v->b ? '1' : '0');
        return NULL;
    case CH_FLOAT:
    case CH_DECIMAL:
        if (v->type == ZS_INT) {
            add_int(out, v->i);
            return NULL;
        }
        if (v->type == ZS_DOUBLE) {
            if (!isfinite(v->d)) return FAIL("expected a finite number");
            if (kind == CH_DECIMAL && scale >= 0) {
                /* A float's digits past the column's scale are binary noise (12.3 * 3 is
                 * 36.900000000000006), and ClickHouse 18.16 fails the whole batch on them ("Decimal
                 * value is too small"; 1e-05 as well): round as text.decimal(v, scale) does. */
                int n = zh_text_number(false, 0, v->d, num);
                if (n < 0) return FAIL("expected a decimal number that fits, got %.17g", v->d);
                char r[64 + 76 + 48];
                size_t rn = 0;
                if (scale > 76) scale = 76;
                zh_text_decimal_rescale(num, (size_t)n, scale, r, &rn);
                zh_buf_add(out, r, rn);
                return NULL;
            }
            zh_rowenc_double(v->d, num, sizeof num);
            zh_buf_adds(out, num);
            return NULL;
        }
        if (v->type == ZS_STRING) {
            const char *s = v->s;
            size_t n = v->n;
            if (!zh_rowenc_is_decimal(s, n, kind == CH_FLOAT)) return FAIL("expected a decimal number, got \"%s\"", clip(s, n, qb));
            if (s[0] == '+') s++, n--;
            if (s[0] == '.') zh_buf_addc(out, '0'); /* ".5" is not JSON */
            zh_buf_add(out, s, n);
            if (s[n - 1] == '.') zh_buf_addc(out, '0');
            return NULL;
        }
        return FAIL("expected a number or a decimal string, got boolean");
    case CH_BOOL:
        if (v->type == ZS_BOOL) {
            zh_buf_adds(out, v->b ? "true" : "false");
            return NULL;
        }
        if (v->type == ZS_INT) {
            zh_buf_adds(out, v->i ? "true" : "false");
            return NULL;
        }
        return FAIL("expected a boolean, got %s", v->type == ZS_STRING ? "string" : "number");
    case CH_DATE:
    case CH_DATETIME: {
        if ((v->type == ZS_INT || v->type == ZS_DOUBLE) && kind == CH_DATETIME) {
            double d = v->type == ZS_INT ? (double)v->i : v->d;
            if (!isfinite(d) || d < 0) return FAIL("expected unix seconds >= 0");
            zh_buf_printf(out, "\"%lld\"", v->type == ZS_INT ? v->i : (long long)floor(d));
            return NULL;
        }
        if (v->type != ZS_STRING)
            return FAIL("expected a %s string, got %s", kind == CH_DATE ? "YYYY-MM-DD" : "YYYY-MM-DD hh:mm:ss",
                        v->type == ZS_BOOL ? "boolean" : "number");
        const char *s = v->s;
        size_t n = v->n;
        if (kind == CH_DATE ? !date_shaped(s, n) : !datetime_shaped(s, n))
            return FAIL("expected %s, got \"%s\"", kind == CH_DATE ? "YYYY-MM-DD" : "YYYY-MM-DD hh:mm:ss", clip(s, n, qb));
        if (!on_calendar(s, n)) return FAIL("\"%s\" is no %s of the calendar", clip(s, n, qb), n == 10 ? "day" : "time");
        if (n == 19 && s[10] == 'T') {
            char tmp[20];
            memcpy(tmp, s, 19);
            tmp[10] = ' ';
            zh_rowenc_json_string(out, tmp, 19);
        } else {
            zh_rowenc_json_string(out, s, n);
        }
        return NULL;
    }
    default: /* strings and everything ClickHouse parses from a quoted string */
        if (v->type == ZS_STRING) {
            zh_rowenc_json_string(out, v->s, v->n);
            return NULL;
        }
        if (v->type == ZS_INT) {
            char tmp[24];
            int k = snprintf(tmp, sizeof tmp, "%lld", v->i);
            zh_rowenc_json_string(out, tmp, (size_t)k);
            return NULL;
        }
        if (v->type == ZS_DOUBLE) {
            zh_rowenc_double(v->d, num, sizeof num);
            zh_rowenc_json_string(out, num, strlen(num));
            return NULL;
        }
        return FAIL("expected a string, got boolean");
    }
}

static const char *encode_value(lua_State *L, int idx, int kind, bool is_unsigned, int elem_kind, int scale, zh_buf *out,
                                char *errbuf, size_t errlen, int depth) {
    int t = lua_type(L, idx);
    zh_scalar v = {0};
    switch (t) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v.type = ZS_INT;
            v.i = (long long)lua_tointeger(L, idx);
        } else {
            v.type = ZS_DOUBLE;
            v.d = lua_tonumber(L, idx);
        }
        break;
    case LUA_TSTRING:
        v.type = ZS_STRING;
        v.s = lua_tolstring(L, idx, &v.n);
        break;
    case LUA_TBOOLEAN:
        v.type = ZS_BOOL;
        v.b = lua_toboolean(L, idx);
        break;
    default:
        if (t == LUA_TTABLE && kind == CH_ARRAY) {
            if (depth > 4) return FAIL("arrays nested too deep");
            lua_Integer n = luaL_len(L, idx);
            zh_buf_addc(out, '[');
            for (lua_Integer i = 1; i <= n; i++) {
                if (i > 1) zh_buf_addc(out, ',');
                lua_rawgeti(L, idx, i);
                const char *e = encode_value(L, lua_gettop(L), elem_kind, false, CH_OTHER, scale, out, errbuf, errlen, depth + 1);
                lua_pop(L, 1);
                if (e) return e;
            }
            zh_buf_addc(out, ']');
            return NULL;
        }
        switch (kind) {
        case CH_INT: return FAIL("expected an integer, got %s", lua_typename(L, t));
        case CH_FLOAT:
        case CH_DECIMAL: return FAIL("expected a number or a decimal string, got %s", lua_typename(L, t));
        case CH_BOOL: return FAIL("expected a boolean, got %s", lua_typename(L, t));
        case CH_DATE:
        case CH_DATETIME:
            return FAIL("expected a %s string, got %s", kind == CH_DATE ? "YYYY-MM-DD" : "YYYY-MM-DD hh:mm:ss", lua_typename(L, t));
        case CH_ARRAY: return FAIL("expected an array (a Lua sequence), got %s", lua_typename(L, t));
        default: return FAIL("expected a string, got %s", lua_typename(L, t));
        }
    }
    if (kind == CH_ARRAY) return FAIL("expected an array (a Lua sequence), got %s", lua_typename(L, t));
    return zh_rowenc_scalar(&v, kind, is_unsigned, scale, out, errbuf, errlen);
}

const char *zh_rowenc_value(lua_State *L, int idx, const ch_column *c, zh_buf *out, char *errbuf, size_t errlen) {
    return encode_value(L, lua_absindex(L, idx), c->kind, c->is_unsigned, c->elem_kind, c->scale, out, errbuf, errlen, 0);
}

const char *zh_rowenc_row(lua_State *L, int idx, const ch_schema *s, zh_buf *out, char *errbuf, size_t errlen) {
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) return FAIL("a row must be a table of column = value");
    size_t start = out->len;
    zh_buf_addc(out, '{');
    bool first = true;
    bool seen_small[256] = {0};
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            out->len = start;
            return FAIL("row keys must be column names (strings)");
        }
        size_t kl;
        const char *k = lua_tolstring(L, -2, &kl);
        int ci = ch_schema_find(s, k, kl);
        if (ci < 0) {
            lua_pop(L, 2);
            out->len = start;
            zh_buf cols;
            zh_buf_init(&cols);
            for (int i = 0; i < s->ncols && cols.len < 300; i++) {
                if (s->cols[i].materialized) continue;
                zh_buf_printf(&cols, "%s%s", cols.len ? ", " : "", s->cols[i].name);
            }
            snprintf(errbuf, errlen, "%s has no column '%.*s' (columns: %s)", s->table, (int)kl, k, cols.data ? cols.data : "");
            zh_buf_free(&cols);
            return errbuf;
        }
        const ch_column *c = &s->cols[ci];
        if (c->materialized) {
            lua_pop(L, 2);
            out->len = start;
            return FAIL("column '%s' of %s is computed by ClickHouse and cannot be written", c->name, s->table);
        }
        if (ci < 256) seen_small[ci] = true;
        if (lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
            /* json.null: NULL where the column allows it, else the column's default. */
            if (c->nullable) {
                if (!first) zh_buf_addc(out, ',');
                first = false;
                zh_buf_add(out, c->json_key, c->json_key_len);
                zh_buf_add(out, "null", 4);
            } else if (ci < 256) {
                seen_small[ci] = false;
            }
            lua_pop(L, 1);
            continue;
        }
        if (!first) zh_buf_addc(out, ',');
        first = false;
        zh_buf_add(out, c->json_key, c->json_key_len);
        char inner[200];
        const char *e = encode_value(L, lua_gettop(L), c->kind, c->is_unsigned, c->elem_kind, c->scale, out, inner, sizeof inner, 0);
        lua_pop(L, 1);
        if (e) {
            lua_pop(L, 1);
            out->len = start;
            snprintf(errbuf, errlen, "column '%s' (%s) of %s: %s", c->name, c->type, s->table, inner);
            return errbuf;
        }
    }
    zh_rowenc_fill_defaults(s, seen_small, &first, out);
    zh_buf_add(out, "}\n", 2);
    return NULL;
}

/* 18.16 fills an omitted column with the type's default, not its DEFAULT expression; the common
 * now() default is filled here so loaded-at columns are right on old servers too. */
void zh_rowenc_fill_defaults(const ch_schema *s, const bool *seen, bool *first, zh_buf *out) {
    for (int i = 0; i < s->ncols && i < 256; i++) {
        const ch_column *c = &s->cols[i];
        if (seen[i] || c->materialized || !c->default_expr) continue;
        if (!strcmp(c->default_expr, "now()") && c->kind == CH_DATETIME) {
            if (!*first) zh_buf_addc(out, ',');
            *first = false;
            zh_buf_add(out, c->json_key, c->json_key_len);
            zh_buf_printf(out, "\"%lld\"", (long long)time(NULL));
        }
    }
}
