/* l_text.c — owns the Lua `text` module and the pure text code under it (l_text.h): base64 and
 * base64url, URL encoding and parsing, UTF-8 validation and Cyrillic-aware lower-casing, charset
 * conversion through iconv(3), CSV reading, exact decimal normalisation, MD5/SHA-256 (libcrypto).
 *
 * Lua wrappers build their output in a "scratch" zh_buf held by a userdata with a __gc, so an
 * error raised while pushing results (out of memory) never leaks the buffer. */
#include "l_text.h"
#include "hash.h"
#include <lauxlib.h>
#include <lualib.h>
#include <errno.h>
#include <iconv.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- base64 */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void zh_text_b64_encode(const char *in, size_t n, int url, zh_buf *out) {
    const char *abc = url ? b64_url : b64_std;
    const unsigned char *p = (const unsigned char *)in;
    zh_buf_reserve(out, (n + 2) / 3 * 4 + 1);
    out->data[out->len] = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char q[4] = {abc[v >> 18], abc[v >> 12 & 63], abc[v >> 6 & 63], abc[v & 63]};
        zh_buf_add(out, q, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        zh_buf_addc(out, abc[v >> 18]);
        zh_buf_addc(out, abc[v >> 12 & 63]);
        if (!url) zh_buf_adds(out, "==");
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        zh_buf_addc(out, abc[v >> 18]);
        zh_buf_addc(out, abc[v >> 12 & 63]);
        zh_buf_addc(out, abc[v >> 6 & 63]);
        if (!url) zh_buf_addc(out, '=');
    }
}

static int b64_value(unsigned char c, int url) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

int zh_text_b64_decode(const char *in, size_t n, int url, zh_buf *out, size_t *bad) {
    uint32_t acc = 0;
    int k = 0, pad = 0;
    zh_buf_reserve(out, n / 4 * 3 + 3);
    out->data[out->len] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') {
            pad++;
            if (k < 2 || k + pad > 4) {
                *bad = i;
                return -1;
            }
            continue;
        }
        int v = b64_value(c, url);
        if (v < 0 || pad) {
            *bad = i;
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        if (++k == 4) {
            char q[3] = {(char)(acc >> 16), (char)(acc >> 8), (char)acc};
            zh_buf_add(out, q, 3);
            acc = 0;
            k = 0;
        }
    }
    if (k == 1) { /* six bits cannot make a byte */
        *bad = n;
        return -1;
    }
    if (k == 2) zh_buf_addc(out, (char)(acc >> 4));
    if (k == 3) {
        zh_buf_addc(out, (char)(acc >> 10));
        zh_buf_addc(out, (char)(acc >> 2));
    }
    return 0;
}

/* ---------------------------------------------------------------- URLs */

void zh_text_url_encode(const char *s, size_t n, zh_buf *out) {
    static const char hex[] = "0123456789ABCDEF";
    zh_buf_reserve(out, n + 1);
    out->data[out->len] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            zh_buf_addc(out, (char)c);
        } else {
            char q[3] = {'%', hex[c >> 4], hex[c & 15]};
            zh_buf_add(out, q, 3);
        }
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void zh_text_url_decode(const char *s, size_t n, zh_buf *out) {
    zh_buf_reserve(out, n + 1);
    out->data[out->len] = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            zh_buf_addc(out, (char)(hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2])));
            i += 2;
        } else {
            zh_buf_addc(out, s[i] == '+' ? ' ' : s[i]);
        }
    }
}

/* ---------------------------------------------------------------- UTF-8 */

int zh_text_is_utf8(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        else return 0;
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

void zh_text_lower(const char *str, size_t n, zh_buf *out) {
    const unsigned char *s = (const unsigned char *)str;
    zh_buf_reserve(out, n + 1);
    out->data[out->len] = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            zh_buf_addc(out, (char)(c + 32));
        } else if (i + 1 < n && (s[i + 1] & 0xC0) == 0x80 && (c == 0xC3 || c == 0xD0)) {
            unsigned char d = s[i + 1];
            char q[2] = {(char)c, (char)d};
            if (c == 0xC3 && d >= 0x80 && d <= 0x9E && d != 0x97) { /* À..Þ except × */
                q[1] = (char)(d + 0x20);
            } else if (c == 0xD0 && d >= 0x80 && d <= 0x8F) { /* Ѐ..Џ (Ё, Є, І, Ї, Ў...) -> U+0450.. */
                q[0] = (char)0xD1, q[1] = (char)(d + 0x10);
            } else if (c == 0xD0 && d >= 0x90 && d <= 0x9F) { /* А..П */
                q[1] = (char)(d + 0x20);
            } else if (c == 0xD0 && d >= 0xA0 && d <= 0xAF) { /* Р..Я */
                q[0] = (char)0xD1, q[1] = (char)(d - 0x20);
            }
            zh_buf_add(out, q, 2);
            i++;
        } else {
            zh_buf_addc(out, (char)c);
        }
    }
}

/* Length of a trimmable character at s (n bytes left), or 0. */
static size_t space_at(const unsigned char *s, size_t n) {
    if (n >= 1 && (s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))) return 1;
    if (n >= 2 && s[0] == 0xC2 && s[1] == 0xA0) return 2;                                         /* NBSP */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 && (s[2] == 0xAF || s[2] == 0x89)) return 3;       /* narrow, thin */
    if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) return 3;                         /* BOM */
    return 0;
}

/* Length of a trimmable character ending at s[n-1], or 0. */
static size_t space_before(const unsigned char *s, size_t n) {
    if (n >= 1 && space_at(s + n - 1, 1)) return 1;
    if (n >= 2 && space_at(s + n - 2, 2) == 2) return 2;
    if (n >= 3 && space_at(s + n - 3, 3) == 3) return 3;
    return 0;
}

void zh_text_trim(const char **s, size_t *n) {
    size_t k;
    while ((k = space_at((const unsigned char *)*s, *n))) *s += k, *n -= k;
    while ((k = space_before((const unsigned char *)*s, *n))) *n -= k;
}

/* ---------------------------------------------------------------- iconv */

int zh_text_iconv(const char *s, size_t n, const char *from, const char *to, zh_buf *out, char *err, size_t errlen) {
    iconv_t cd = iconv_open(to, from);
    if (cd == (iconv_t)-1) {
        snprintf(err, errlen, "unsupported conversion from '%.40s' to '%.40s'", from, to);
        return -1;
    }
    char *in = (char *)s;
    size_t left = n;
    int rc = 0;
    /* One more round with a NULL input flushes stateful encodings' shift sequences. */
    for (int flushing = 0; rc == 0;) {
        zh_buf_reserve(out, left * 2 + 64);
        char *dst = out->data + out->len;
        size_t room = out->cap - out->len - 1;
        size_t r = flushing ? iconv(cd, NULL, NULL, &dst, &room) : iconv(cd, &in, &left, &dst, &room);
        out->len = (size_t)(dst - out->data);
        if (r != (size_t)-1) {
            if (flushing) break;
            flushing = 1;
        } else if (errno == E2BIG) {
            continue;
        } else {
            snprintf(err, errlen, "cannot convert from %.40s to %.40s at byte %zu: %s", from, to, n - left,
                     errno == EILSEQ ? "invalid or unmappable sequence" : "incomplete sequence at the end");
            rc = -1;
        }
    }
    iconv_close(cd);
    if (out->data) out->data[out->len] = 0;
    return rc;
}

/* ---------------------------------------------------------------- decimals */

/* Grouping space at s: ASCII space, NBSP, narrow NBSP, thin space, apostrophe. */
static size_t group_at(const unsigned char *s, size_t n) {
    if (n >= 1 && (s[0] == ' ' || s[0] == '\'')) return 1;
    size_t k = space_at(s, n);
    return k > 1 && !(s[0] == 0xEF) ? k : 0;
}

int zh_text_decimal(const char *str, size_t n, zh_buf *out) {
    zh_text_trim(&str, &n);
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    int neg = 0;
    if (s < end && (*s == '-' || *s == '+')) neg = *s++ == '-';
    else if (end - s >= 3 && s[0] == 0xE2 && s[1] == 0x88 && s[2] == 0x92) neg = 1, s += 3; /* U+2212 minus */
    size_t start = out->len;
    int digits = 0, nonzero = 0;
    int last_digit = 0; /* previous character was a digit: a group space may follow */
    while (s < end) {
        size_t g;
        if (*s >= '0' && *s <= '9') {
            if (nonzero || *s != '0') {
                zh_buf_addc(out, (char)*s);
                nonzero |= *s != '0';
            }
            digits++;
            last_digit = 1;
            s++;
        } else if (last_digit && (g = group_at(s, (size_t)(end - s))) && s + g < end && s[g] >= '0' && s[g] <= '9') {
            s += g;
            last_digit = 0;
        } else {
            break;
        }
    }
    if (out->len == start) zh_buf_addc(out, '0');
    int frac_digits = 0;
    if (s < end && (*s == ',' || *s == '.')) {
        s++;
        zh_buf_addc(out, '.');
        while (s < end && *s >= '0' && *s <= '9') {
            nonzero |= *s != '0';
            zh_buf_addc(out, (char)*s++);
            frac_digits++;
        }
        if (!frac_digits) goto bad;
    }
    if (s != end || digits + frac_digits == 0) goto bad;
    if (neg && nonzero) { /* "-0.00" is just zero */
        zh_buf_reserve(out, 1);
        memmove(out->data + start + 1, out->data + start, out->len - start);
        out->data[start] = '-';
        out->len++;
    }
    out->data[out->len] = 0;
    return 0;
bad:
    out->len = start;
    if (out->data) out->data[start] = 0;
    return -1;
}

/* ---------------------------------------------------------------- CSV */

static size_t skip_bom(const char *s, size_t n) { return n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3) ? 3 : 0; }

char zh_text_csv_detect(const char *s, size_t n) {
    size_t i = skip_bom(s, n);
    int semi = 0, comma = 0, tab = 0, quoted = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '"') quoted = !quoted;
        else if (quoted) continue;
        else if (c == '\n' || c == '\r') break;
        else if (c == ';') semi++;
        else if (c == ',') comma++;
        else if (c == '\t') tab++;
    }
    if (semi >= comma && semi >= tab && semi > 0) return ';';
    if (tab >= comma && tab > 0) return '\t';
    return ',';
}

int zh_text_csv_parse(const char *s, size_t n, char sep, zh_buf *scratch, const zh_text_csv_cb *cb, char *err,
                      size_t errlen) {
    size_t i = skip_bom(s, n);
    long line = 1;
    while (i < n) {
        /* at the start of a record */
        if (s[i] == '\n' || s[i] == '\r') { /* empty line */
            i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
            line++;
            continue;
        }
        for (;;) { /* one field per round */
            const char *field;
            size_t flen;
            if (s[i] == '"' && i < n) {
                long opened = line;
                scratch->len = 0;
                i++;
                for (;;) {
                    if (i >= n) {
                        snprintf(err, errlen, "line %ld: unterminated quoted field", opened);
                        return -1;
                    }
                    if (s[i] == '"') {
                        if (i + 1 < n && s[i + 1] == '"') {
                            zh_buf_addc(scratch, '"');
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (s[i] == '\n') line++;
                    zh_buf_addc(scratch, s[i++]);
                }
                while (i < n && (s[i] == ' ' || s[i] == '\t') && s[i] != sep) i++;
                if (i < n && s[i] != sep && s[i] != '\n' && s[i] != '\r') {
                    snprintf(err, errlen, "line %ld: unexpected character after a closing quote", line);
                    return -1;
                }
                field = scratch->data ? scratch->data : "";
                flen = scratch->len;
            } else {
                size_t st = i;
                while (i < n && s[i] != sep && s[i] != '\n' && s[i] != '\r') i++;
                field = s + st;
                flen = i - st;
            }
            if (cb->field(cb->ud, field, flen)) return 1;
            if (i < n && s[i] == sep) {
                i++;
                if (i >= n) { /* "a,b," at the very end: one more empty field */
                    if (cb->field(cb->ud, "", 0)) return 1;
                }
                if (i < n) continue;
            }
            break;
        }
        if (cb->end_row(cb->ud)) return 1;
        if (i < n) { /* at a line end */
            i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
            line++;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- Lua module */

#define SCRATCH_MT "zhost.text.scratch"

static int scratch_gc(lua_State *L) {
    zh_buf *b = luaL_checkudata(L, 1, SCRATCH_MT);
    zh_buf_free(b);
    return 0;
}

/* Pushes a userdata holding an empty zh_buf that is freed when collected. */
static zh_buf *scratch_new(lua_State *L) {
    zh_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    zh_buf_init(b);
    if (luaL_newmetatable(L, SCRATCH_MT)) {
        lua_pushcfunction(L, scratch_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

static int push_buf(lua_State *L, zh_buf *b) {
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    return 1;
}

static int fail(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int l_b64_encode_impl(lua_State *L, int url) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_buf *b = scratch_new(L);
    zh_text_b64_encode(s, n, url, b);
    return push_buf(L, b);
}

static int l_b64_decode_impl(lua_State *L, int url) {
    size_t n, bad;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_buf *b = scratch_new(L);
    if (zh_text_b64_decode(s, n, url, b, &bad) != 0) {
        lua_pushnil(L);
        if (bad >= n) lua_pushfstring(L, "invalid %s: truncated input", url ? "base64url" : "base64");
        else lua_pushfstring(L, "invalid %s at byte %d", url ? "base64url" : "base64", (int)bad + 1);
        return 2;
    }
    return push_buf(L, b);
}

static int l_base64_encode(lua_State *L) { return l_b64_encode_impl(L, 0); }
static int l_base64_decode(lua_State *L) { return l_b64_decode_impl(L, 0); }
static int l_base64url_encode(lua_State *L) { return l_b64_encode_impl(L, 1); }
static int l_base64url_decode(lua_State *L) { return l_b64_decode_impl(L, 1); }

static int l_url_encode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_buf *b = scratch_new(L);
    zh_text_url_encode(s, n, b);
    return push_buf(L, b);
}

static int l_url_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_buf *b = scratch_new(L);
    zh_text_url_decode(s, n, b);
    return push_buf(L, b);
}

/* Pushes a table of the query string s..s+n (no leading '?'); the first value of a repeated key wins. */
static void push_query(lua_State *L, const char *s, size_t n) {
    lua_newtable(L);
    int t = lua_gettop(L);
    zh_buf *kb = scratch_new(L), *vb = scratch_new(L);
    const char *end = s + n;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *pe = amp ? amp : end;
        if (pe > s) {
            const char *eq = memchr(s, '=', (size_t)(pe - s));
            kb->len = vb->len = 0;
            zh_text_url_decode(s, (size_t)((eq ? eq : pe) - s), kb);
            if (eq) zh_text_url_decode(eq + 1, (size_t)(pe - eq - 1), vb);
            if (kb->len) {
                lua_pushlstring(L, kb->data, kb->len);
                if (lua_rawget(L, t) == LUA_TNIL) {
                    lua_pushlstring(L, kb->data, kb->len);
                    lua_pushlstring(L, vb->data ? vb->data : "", vb->len);
                    lua_rawset(L, t);
                }
                lua_pop(L, 1);
            }
        }
        s = amp ? amp + 1 : end;
    }
    lua_settop(L, t);
}

static int l_parse_query(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *hash = memchr(s, '#', n);
    if (hash) n = (size_t)(hash - s);
    if (n && s[0] == '?') s++, n--;
    push_query(L, s, n);
    return 1;
}

static int scheme_len(const char *s, size_t n) {
    if (!n || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return 0;
    size_t i = 1;
    while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                     s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    return i < n && s[i] == ':' && i < 32 ? (int)i : 0;
}

static void set_lstr(lua_State *L, const char *key, const char *s, size_t n) {
    lua_pushlstring(L, s, n);
    lua_setfield(L, -2, key);
}

static int l_parse_url(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_text_trim(&s, &n);
    if (!n) return fail(L, "invalid URL: empty");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return fail(L, "invalid URL: control character");
    const char *end = s + n, *frag = memchr(s, '#', n);
    if (frag) end = frag;
    const char *q = memchr(s, '?', (size_t)(end - s));
    const char *rest_end = q ? q : end;
    lua_newtable(L);
    const char *p = s;
    int sl = scheme_len(s, (size_t)(rest_end - s));
    int has_auth = 0;
    char scheme[32] = "";
    if (sl && rest_end - s >= sl + 3 && p[sl + 1] == '/' && p[sl + 2] == '/') {
        for (int i = 0; i < sl; i++) scheme[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
        scheme[sl] = 0;
        lua_pushstring(L, scheme);
        lua_setfield(L, -2, "scheme");
        p += sl + 3;
        has_auth = 1;
    } else if (rest_end - p >= 2 && p[0] == '/' && p[1] == '/') {
        p += 2;
        has_auth = 1;
    } else if (sl) {
        /* "host:8080/x" has digits after the colon; "mailto:x" is a scheme with an opaque path */
        const char *c = s + sl + 1;
        while (c < rest_end && *c >= '0' && *c <= '9') c++;
        if (c > s + sl + 1 && (c == rest_end || *c == '/')) {
            has_auth = 1;
        } else {
            for (int i = 0; i < sl; i++) scheme[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            scheme[sl] = 0;
            lua_pushstring(L, scheme);
            lua_setfield(L, -2, "scheme");
            p += sl + 1;
        }
    } else if (p < rest_end && p[0] != '/') {
        has_auth = 1; /* scheme-less link: "vk.com/club1?utm_source=x" */
    }
    if (has_auth) {
        const char *a_end = memchr(p, '/', (size_t)(rest_end - p));
        if (!a_end) a_end = rest_end;
        const char *at = NULL;
        for (const char *c = p; c < a_end; c++)
            if (*c == '@') at = c;
        if (at) {
            set_lstr(L, "user", p, (size_t)(at - p));
            p = at + 1;
        }
        const char *h0 = p, *h1, *port_s = NULL;
        if (p < a_end && *p == '[') {
            const char *rb = memchr(p, ']', (size_t)(a_end - p));
            if (!rb) return fail(L, "invalid URL: unterminated '[' in host");
            h0 = p + 1;
            h1 = rb;
            if (rb + 1 < a_end) {
                if (rb[1] != ':') return fail(L, "invalid URL: bad host");
                port_s = rb + 2;
            }
        } else {
            const char *colon = memchr(p, ':', (size_t)(a_end - p));
            h1 = colon ? colon : a_end;
            if (colon) port_s = colon + 1;
        }
        if (h1 == h0) return fail(L, "invalid URL: empty host");
        luaL_Buffer hb;
        luaL_buffinit(L, &hb);
        for (const char *c = h0; c < h1; c++) luaL_addchar(&hb, (*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
        luaL_pushresult(&hb);
        lua_setfield(L, -2, "host");
        long port = 0;
        if (port_s && port_s < a_end) {
            for (const char *c = port_s; c < a_end; c++) {
                if (*c < '0' || *c > '9' || port > 65535) return fail(L, "invalid URL: bad port");
                port = port * 10 + (*c - '0');
            }
            if (port < 1 || port > 65535) return fail(L, "invalid URL: bad port");
        } else if (!strcmp(scheme, "https")) {
            port = 443;
        } else if (!strcmp(scheme, "http")) {
            port = 80;
        }
        if (port) {
            lua_pushinteger(L, port);
            lua_setfield(L, -2, "port");
        }
        p = a_end;
    }
    if (p < rest_end) set_lstr(L, "path", p, (size_t)(rest_end - p));
    else set_lstr(L, "path", has_auth ? "/" : "", has_auth ? 1 : 0);
    const char *qs = q ? q + 1 : end;
    set_lstr(L, "raw_query", qs, (size_t)(end - qs));
    push_query(L, qs, (size_t)(end - qs));
    lua_setfield(L, -2, "query");
    if (frag) set_lstr(L, "fragment", frag + 1, (size_t)(s + n - frag - 1));
    return 1;
}

static int l_iconv(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *from = luaL_checkstring(L, 2), *to = luaL_checkstring(L, 3);
    zh_buf *b = scratch_new(L);
    char err[200];
    if (zh_text_iconv(s, n, from, to, b, err, sizeof err) != 0) return fail(L, err);
    return push_buf(L, b);
}

static int l_is_utf8(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, zh_text_is_utf8(s, n));
    return 1;
}

static char sep_opt(lua_State *L, int opts, const char *s, size_t n) {
    if (lua_isnoneornil(L, opts)) return zh_text_csv_detect(s, n);
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_getfield(L, opts, "sep");
    char sep;
    if (lua_isnil(L, -1)) {
        sep = zh_text_csv_detect(s, n);
    } else {
        size_t sl;
        const char *ss = lua_tolstring(L, -1, &sl);
        if (!ss || sl != 1 || *ss == '"' || *ss == '\n' || *ss == '\r')
            luaL_error(L, "text.csv: opts.sep must be one character other than a quote or a line end");
        sep = ss[0];
    }
    lua_pop(L, 1);
    return sep;
}

static int l_detect_csv(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char sep = zh_text_csv_detect(s, n);
    lua_pushlstring(L, &sep, 1);
    return 1;
}

typedef struct {
    lua_State *L;
    int rows;   /* stack index of the result table */
    int row;    /* stack index of the row being filled */
    lua_Integer nrows, nfields;
} csv_lua;

static int csv_lua_field(void *ud, const char *s, size_t n) {
    csv_lua *c = ud;
    if (!c->row) {
        lua_newtable(c->L);
        c->row = lua_gettop(c->L);
        c->nfields = 0;
    }
    lua_pushlstring(c->L, s, n);
    lua_rawseti(c->L, c->row, ++c->nfields);
    return 0;
}

static int csv_lua_end(void *ud) {
    csv_lua *c = ud;
    if (c->row) {
        lua_rawseti(c->L, c->rows, ++c->nrows);
        c->row = 0;
    }
    return 0;
}

/* If opts.encoding is set, converts the text to UTF-8 first ("auto": CP1251 unless it already is
 * valid UTF-8). Leaves the text to parse at the top of the stack and returns 1, or pushes nil, err
 * and returns 0 when the text cannot be converted. */
static int csv_input(lua_State *L, int opts) {
    if (lua_type(L, opts) == LUA_TTABLE) {
        lua_getfield(L, opts, "encoding");
        if (!lua_isnil(L, -1)) {
            const char *enc = luaL_checkstring(L, -1);
            size_t n;
            const char *s = lua_tolstring(L, 1, &n);
            if (!strcasecmp(enc, "auto")) enc = zh_text_is_utf8(s, n) ? "UTF-8" : "CP1251";
            if (strcasecmp(enc, "UTF-8") && strcasecmp(enc, "UTF8")) {
                zh_buf *b = scratch_new(L);
                char err[200];
                if (zh_text_iconv(s, n, enc, "UTF-8", b, err, sizeof err) != 0) {
                    fail(L, err);
                    return 0;
                }
                push_buf(L, b);
                lua_remove(L, -2);
                lua_remove(L, -2);
                return 1;
            }
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 1);
    return 1;
}

/* Parses argument 1 with options at 2; pushes the rows table, or nil and an error (returns 2). */
static int csv_rows(lua_State *L) {
    luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (!csv_input(L, 2)) return 2;
    int text = lua_gettop(L);
    size_t n;
    const char *s = lua_tolstring(L, text, &n);
    char sep = sep_opt(L, 2, s, n);
    zh_buf *scratch = scratch_new(L);
    lua_newtable(L);
    csv_lua c = {L, lua_gettop(L), 0, 0, 0};
    zh_text_csv_cb cb = {csv_lua_field, csv_lua_end, &c};
    char err[200];
    if (zh_text_csv_parse(s, n, sep, scratch, &cb, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_settop(L, c.rows);
    return 1;
}

static int l_csv(lua_State *L) { return csv_rows(L); }

static int l_csv_records(lua_State *L) {
    int r = csv_rows(L);
    if (r == 2) return 2;
    int rows = lua_gettop(L);
    lua_newtable(L);
    int keys = lua_gettop(L);
    lua_Integer nkeys = 0;
    zh_buf *b = scratch_new(L);
    if (lua_rawgeti(L, rows, 1) == LUA_TTABLE) {
        nkeys = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= nkeys; i++) {
            size_t hn;
            lua_rawgeti(L, -1, i);
            const char *h = lua_tolstring(L, -1, &hn);
            zh_text_trim(&h, &hn);
            b->len = 0;
            zh_text_lower(h, hn, b);
            push_buf(L, b);
            lua_rawseti(L, keys, i);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_Integer nrows = (lua_Integer)lua_rawlen(L, rows);
    for (lua_Integer r = 2; r <= nrows; r++) {
        lua_rawgeti(L, rows, r);
        int row = lua_gettop(L);
        lua_newtable(L);
        lua_Integer nf = (lua_Integer)lua_rawlen(L, row);
        for (lua_Integer i = 1; i <= nkeys && i <= nf; i++) {
            lua_rawgeti(L, keys, i);
            if (lua_rawlen(L, -1) == 0) {
                lua_pop(L, 1);
                continue;
            }
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) != LUA_TNIL) { /* a repeated header name: the first column wins */
                lua_pop(L, 2);
                continue;
            }
            lua_pop(L, 1);
            lua_rawgeti(L, row, i);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, out, r - 1);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, keys);
    return 2;
}

static int l_trim(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_text_trim(&s, &n);
    lua_pushlstring(L, s, n);
    return 1;
}

static int l_split(lua_State *L) {
    size_t n, sn;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *sep = luaL_checklstring(L, 2, &sn);
    int plain = lua_toboolean(L, 3);
    if (sn == 0) return luaL_error(L, "text.split: empty separator");
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_Integer k = 0;
    size_t pos = 0;
    if (plain) {
        for (;;) {
            const char *hit = memmem(s + pos, n - pos, sep, sn);
            size_t stop = hit ? (size_t)(hit - s) : n;
            lua_pushlstring(L, s + pos, stop - pos);
            lua_rawseti(L, t, ++k);
            if (!hit) break;
            pos = stop + sn;
        }
        return 1;
    }
    /* Patterns go through the host's own string.find, so they mean what they mean in Lua. */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    if (!lua_istable(L, -1)) return luaL_error(L, "text.split: string library not loaded");
    lua_getfield(L, -1, "find");
    int find = lua_gettop(L);
    for (;;) {
        lua_pushvalue(L, find);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_pushinteger(L, (lua_Integer)pos + 1);
        lua_call(L, 3, 2);
        if (lua_isnil(L, -2)) {
            lua_pop(L, 2);
            lua_pushlstring(L, s + pos, n - pos);
            lua_rawseti(L, t, ++k);
            break;
        }
        lua_Integer a = lua_tointeger(L, -2), b = lua_tointeger(L, -1);
        lua_pop(L, 2);
        if (b < a) return luaL_error(L, "text.split: separator pattern '%s' matches an empty string", sep);
        lua_pushlstring(L, s + pos, (size_t)(a - 1) - pos);
        lua_rawseti(L, t, ++k);
        pos = (size_t)b;
    }
    lua_settop(L, t);
    return 1;
}

static int l_lower(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    zh_buf *b = scratch_new(L);
    zh_text_lower(s, n, b);
    return push_buf(L, b);
}

static int l_starts_with(lua_State *L) {
    size_t n, pn;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &pn);
    lua_pushboolean(L, pn <= n && memcmp(s, p, pn) == 0);
    return 1;
}

static int l_ends_with(lua_State *L) {
    size_t n, pn;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &pn);
    lua_pushboolean(L, pn <= n && memcmp(s + n - pn, p, pn) == 0);
    return 1;
}

/* Longest text.decimal result: Decimal256 holds 76 digits, and a cap keeps the work per call bounded. */
#define DECIMAL_MAX ZH_TEXT_DECIMAL_MAX

/* Rounds the plain decimal d (zh_text_decimal's output: [-]digits[.digits]) to exactly `scale`
 * fraction digits, half away from zero, into out (at least dn + scale + 4 bytes). Returns whether
 * non-zero digits were dropped. */
bool zh_text_decimal_rescale(const char *d, size_t dn, int scale, char *out, size_t *outn) {
    char digits[DECIMAL_MAX + 48];
    bool neg = dn && d[0] == '-';
    if (neg) d++, dn--;
    const char *dot = memchr(d, '.', dn);
    size_t ip = dot ? (size_t)(dot - d) : dn, fp = dot ? dn - ip - 1 : 0;
    const char *frac = dot ? dot + 1 : "";
    /* digits: '0' guard for a carry out of the integer part, integer digits, kept fraction digits */
    size_t k = 0;
    digits[k++] = '0';
    memcpy(digits + k, d, ip);
    k += ip;
    bool dropped = false, up = false;
    for (int i = 0; i < scale; i++) digits[k++] = (size_t)i < fp ? frac[i] : '0';
    if (fp > (size_t)scale) {
        up = frac[scale] >= '5';
        for (size_t i = (size_t)scale; i < fp; i++) dropped |= frac[i] != '0';
    }
    if (up) {
        size_t i = k;
        while (i-- > 0) {
            if (digits[i] == '9') digits[i] = '0';
            else {
                digits[i]++;
                break;
            }
        }
    }
    /* drop the guard unless the carry reached it; keep one integer digit */
    size_t skip = digits[0] == '0' ? 1 : 0;
    char *o = out;
    bool nonzero = false;
    for (size_t i = skip; i < k; i++) nonzero |= digits[i] != '0';
    if (neg && nonzero) *o++ = '-';
    size_t int_digits = skip ? ip : ip + 1;
    memcpy(o, digits + skip, int_digits);
    o += int_digits;
    if (scale > 0) {
        *o++ = '.';
        memcpy(o, digits + skip + int_digits, (size_t)scale);
        o += scale;
    }
    *outn = (size_t)(o - out);
    return dropped;
}

/* Writes the digits of |i| (and '-' when negative) ending at end; returns the start. */
static char *int_digits(long long i, char *end) {
    unsigned long long u = i < 0 ? 0 - (unsigned long long)i : (unsigned long long)i;
    char *p = end;
    do *--p = (char)('0' + u % 10), u /= 10;
    while (u);
    if (i < 0) *--p = '-';
    return p;
}

/* The plain decimal text of a Lua number into num (64 bytes): integers exactly, floats as the
 * shortest text that reads back as the same double (for a number the source wrote with up to 15
 * significant digits — 1222.03 — that is the source's text). Returns the length, or -1 for NaN and
 * infinities. The text is already what zh_text_decimal would make of it. */
static int number_text(lua_State *L, int idx, char *num) {
    return zh_text_number(lua_isinteger(L, idx), (long long)lua_tointeger(L, idx), lua_tonumber(L, idx), num);
}

int zh_text_number(bool is_int, long long i, double x, char *num) {
    if (is_int) {
        char tmp[24];
        char *p = int_digits(i, tmp + sizeof tmp);
        int n = (int)(tmp + sizeof tmp - p);
        memcpy(num, p, (size_t)n);
        num[n] = 0;
        return n;
    }
    if (!isfinite(x)) return -1;
    /* Money has at most two fraction digits, so try those first without printf: when k/100 is
     * exactly this double and |x| < 1e13 (a step of 0.01 is then many doubles wide), "k/100" is
     * the only two-digit text that reads back as x. */
    double k = nearbyint(x * 100);
    if (fabs(x) < 1e13 && k / 100 == x) {
        char tmp[24];
        long long c = llabs((long long)k);
        char *p = int_digits(c / 100, tmp + sizeof tmp);
        int n = 0;
        if (k < 0 && c != 0) num[n++] = '-';
        size_t il = (size_t)(tmp + sizeof tmp - p);
        memcpy(num + n, p, il);
        n += (int)il;
        int cents = (int)(c % 100);
        if (cents) {
            num[n++] = '.';
            num[n++] = (char)('0' + cents / 10);
            if (cents % 10) num[n++] = (char)('0' + cents % 10);
        }
        num[n] = 0;
        return n;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(num, 64, "%.*g", p, x);
        if (strtod(num, NULL) == x) break;
    }
    /* 1e+20, 1.5e-07: move the point in those digits. "%.2f"/"%.20f" added ".00" to 1e20, made
     * 1.5e-07 "0.00000015000000000000" and -1e-300 zero, and cut 1e300's 304 characters at 63. */
    char *e = strchr(num, 'e');
    if (e) {
        int exp10 = atoi(e + 1);
        char digits[24];
        int nd = 0, point = -1;
        const char *q = num + (num[0] == '-');
        for (; q < e; q++) {
            if (*q == '.') point = nd;
            else digits[nd++] = *q;
        }
        if (point < 0) point = nd;
        point += exp10; /* digits before the decimal point */
        while (nd > 0 && nd > point && digits[nd - 1] == '0') nd--;
        char out[64];
        int o = 0;
        if (num[0] == '-') out[o++] = '-';
        int need = o + (point <= 0 ? 2 - point + nd : (point >= nd ? point : nd + 1));
        if (need > 63) return -2;
        if (point <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int k = 0; k < -point; k++) out[o++] = '0';
            for (int k = 0; k < nd; k++) out[o++] = digits[k];
        } else {
            for (int k = 0; k < point; k++) out[o++] = k < nd ? digits[k] : '0';
            if (point < nd) {
                out[o++] = '.';
                for (int k = point; k < nd; k++) out[o++] = digits[k];
            }
        }
        out[o] = 0;
        memcpy(num, out, (size_t)o + 1);
    }
    /* printf's text may still carry "-0" or a leading "0."; normalise it the usual way */
    char tmp[64];
    zh_buf b;
    zh_buf_init(&b);
    int n = -1;
    if (zh_text_decimal(num, strlen(num), &b) == 0 && b.len < sizeof tmp) {
        memcpy(tmp, b.data, b.len);
        n = (int)b.len;
    }
    zh_buf_free(&b);
    if (n < 0) return -1;
    memcpy(num, tmp, (size_t)n);
    num[n] = 0;
    return n;
}

static int l_decimal(lua_State *L) {
    int scale = (int)luaL_optinteger(L, 2, -1);
    luaL_argcheck(L, scale >= -1 && scale <= 38, 2, "scale must be 0..38");
    char out[DECIMAL_MAX + 48]; /* sign, carry, point and up to 38 fraction digits of padding */
    size_t outn = 0;
    bool dropped = false;
    int t = lua_type(L, 1);
    if (t == LUA_TNUMBER) {
        char num[64];
        int n = number_text(L, 1, num);
        if (n == -2) {
            lua_pushnil(L);
            lua_pushfstring(L, "decimal too long '%s'", lua_tolstring(L, 1, NULL));
            return 2;
        }
        if (n < 0) return fail(L, "not a finite number");
        if (scale < 0) {
            lua_pushlstring(L, num, (size_t)n);
            return 1;
        }
        dropped = zh_text_decimal_rescale(num, (size_t)n, scale, out, &outn);
    } else if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, 1, &n);
        /* No Lua call between the buffer's malloc and free: nothing can raise past it. */
        zh_buf b;
        zh_buf_init(&b);
        int rc = zh_text_decimal(s, n, &b);
        bool too_long = rc == 0 && b.len > DECIMAL_MAX;
        if (rc == 0 && !too_long) {
            if (scale < 0) {
                memcpy(out, b.data, b.len);
                outn = b.len;
            } else {
                dropped = zh_text_decimal_rescale(b.data, b.len, scale, out, &outn);
            }
        }
        zh_buf_free(&b);
        if (rc != 0 || too_long) {
            lua_pushnil(L);
            lua_pushfstring(L, too_long ? "decimal too long '%s'" : "invalid decimal '%s'", s);
            return 2;
        }
    } else {
        return luaL_typeerror(L, 1, "string or number");
    }
    lua_pushlstring(L, out, outn);
    if (!dropped) return 1;
    lua_pushliteral(L, "rounded");
    return 2;
}

/* text.id(v): an id as text whatever type the source sent it in. Loaders call it for every id of
 * every row, hence C and no printf. */
static int l_id(lua_State *L) {
    switch (lua_type(L, 1)) {
    case LUA_TSTRING:
        lua_settop(L, 1);
        return 1;
    case LUA_TNUMBER: {
        lua_Integer i;
        if (lua_isinteger(L, 1)) {
            i = lua_tointeger(L, 1);
        } else {
            double x = lua_tonumber(L, 1);
            if (!(x == floor(x) && fabs(x) < 9007199254740992.0)) {
                luaL_tolstring(L, 1, NULL);
                return 1;
            }
            i = (lua_Integer)x;
        }
        char tmp[24];
        char *p = int_digits((long long)i, tmp + sizeof tmp);
        lua_pushlstring(L, p, (size_t)(tmp + sizeof tmp - p));
        return 1;
    }
    default: /* nil, json.null, booleans, tables, views: no id */
        lua_pushliteral(L, "");
        return 1;
    }
}

static int digest(lua_State *L, zh_hash_kind kind) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char hex[2 * ZH_SHA256_LEN + 1];
    zh_hash_hex_of(kind, s, n, hex);
    lua_pushstring(L, hex);
    return 1;
}

static int l_md5(lua_State *L) { return digest(L, ZH_HASH_MD5); }
static int l_sha256(lua_State *L) { return digest(L, ZH_HASH_SHA256); }

int zh_open_text(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"base64_encode", l_base64_encode},
        {"base64_decode", l_base64_decode},
        {"base64url_encode", l_base64url_encode},
        {"base64url_decode", l_base64url_decode},
        {"url_encode", l_url_encode},
        {"url_decode", l_url_decode},
        {"parse_query", l_parse_query},
        {"parse_url", l_parse_url},
        {"iconv", l_iconv},
        {"is_utf8", l_is_utf8},
        {"detect_csv", l_detect_csv},
        {"csv", l_csv},
        {"csv_records", l_csv_records},
        {"trim", l_trim},
        {"split", l_split},
        {"lower", l_lower},
        {"starts_with", l_starts_with},
        {"ends_with", l_ends_with},
        {"decimal", l_decimal},
        {"id", l_id},
        {"md5", l_md5},
        {"sha256", l_sha256},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
