/* l_mail.c — owns outgoing e-mail: building RFC 5322 messages (Date, Message-ID, MIME headers,
 * RFC 2047 subjects, base64 bodies) and sending them over SMTP with libcurl on the host's curl
 * multi, as the Lua `mail` module (mail.send, mail.message).
 *
 * A send is a mail_op: one zh_xfer uploading the message from memory. It waits like any other
 * primitive (zh_task_await), is freed in exactly one place (op_free), and is never retried here:
 * the caller (the alerts job) owns the retry policy, so a message is not sent twice behind its
 * back. Dot-stuffing of the DATA stream is libcurl's job. */
#include "l_mail.h"
#include "curl_uv.h"
#include "log.h"
#include "task.h"
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

/* ---- message building ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_add(zh_buf *out, const unsigned char *p, size_t n) {
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        char q[4] = {b64chars[v >> 18 & 63], b64chars[v >> 12 & 63], b64chars[v >> 6 & 63], b64chars[v & 63]};
        zh_buf_add(out, q, 4);
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        char q[4] = {b64chars[v >> 18 & 63], b64chars[v >> 12 & 63], i + 1 < n ? b64chars[v >> 6 & 63] : '=', '='};
        zh_buf_add(out, q, 4);
    }
}

/* Length of the UTF-8 sequence starting at p (1 for stray bytes, so splitting never loops). */
static size_t utf8_len(const unsigned char *p, size_t left) {
    size_t n = 1;
    if (*p >= 0xF0) n = 4;
    else if (*p >= 0xE0) n = 3;
    else if (*p >= 0xC0) n = 2;
    if (n > left) return 1;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 1;
    return n;
}

static bool plain_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return strstr(s, "=?") == NULL;
}

void zh_mail_encode_header(zh_buf *out, const char *s, size_t used) {
    /* Line breaks in a header would start a new header (injection): they become spaces. */
    size_t n = strlen(s);
    char *clean = zh_xstrndup(s, n);
    for (size_t i = 0; i < n; i++)
        if (clean[i] == '\r' || clean[i] == '\n' || clean[i] == '\t') clean[i] = ' ';
    if (plain_ascii(clean, n) && used + n <= 78) {
        zh_buf_add(out, clean, n);
        free(clean);
        return;
    }
    /* Encoded words of at most 42 bytes (56 base64 characters, 68 with the wrapper) so that
     * "Subject: " plus one word stays within 78 columns; words split on whole characters. */
    const unsigned char *p = (const unsigned char *)clean, *end = p + n;
    bool first = true;
    while (p < end || first) {
        size_t take = 0;
        while (p + take < end) {
            size_t c = utf8_len(p + take, (size_t)(end - p - take));
            if (take + c > 42) break;
            take += c;
        }
        if (!first) zh_buf_adds(out, "\r\n ");
        zh_buf_adds(out, "=?UTF-8?B?");
        b64_add(out, p, take);
        zh_buf_adds(out, "?=");
        p += take;
        first = false;
    }
    free(clean);
}

char *zh_mail_address(const char *s) {
    if (!s) return NULL;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20) return NULL; /* a line break anywhere is an injection attempt */
    const char *lt = strrchr(s, '<'), *b = s, *e;
    if (lt) {
        b = lt + 1;
        e = strchr(b, '>');
        if (!e) return NULL;
    } else {
        while (*b == ' ') b++;
        e = b + strlen(b);
        while (e > b && e[-1] == ' ') e--;
    }
    size_t n = (size_t)(e - b);
    if (n < 3 || n > 320) return NULL;
    const char *at = NULL;
    for (const char *p = b; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == ',' || c == '"' || c == '(' || c == ')') return NULL;
        if (c == '@') at = p;
    }
    if (!at || at == b || at == e - 1) return NULL;
    return zh_xstrndup(b, n);
}

/* The display-name part of "Name <addr>", trimmed; NULL when there is none. */
static char *display_name(const char *s) {
    const char *lt = strrchr(s, '<');
    if (!lt) return NULL;
    const char *b = s, *e = lt;
    while (b < e && (*b == ' ' || *b == '"')) b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '"')) e--;
    return e > b ? zh_xstrndup(b, (size_t)(e - b)) : NULL;
}

static void add_mailbox(zh_buf *out, const char *spec, const char *addr, size_t used) {
    char *name = display_name(spec);
    if (name) {
        size_t n = strlen(name);
        if (plain_ascii(name, n)) {
            zh_buf_addc(out, '"');
            for (size_t i = 0; i < n; i++) {
                if (name[i] == '"' || name[i] == '\\') zh_buf_addc(out, '\\');
                zh_buf_addc(out, name[i]);
            }
            zh_buf_addc(out, '"');
        } else {
            zh_mail_encode_header(out, name, used);
        }
        zh_buf_adds(out, " ");
        free(name);
    }
    zh_buf_printf(out, "<%s>", addr);
}

/* 128 random bits as hex, for Message-IDs (unique, not secret). */
static void random_hex(char out[33]) {
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof b) {
        uint64_t x = (uint64_t)(zh_now_wall() * 1e6) ^ (uint64_t)getpid() << 40 ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            b[i] = (unsigned char)(x >> 56);
        }
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void add_date(zh_buf *out, double epoch) {
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)epoch;
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0) off = -off;
    /* Names written out: strftime's %a/%b would follow the locale, RFC 5322 wants English. */
    zh_buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld\r\n", days[tm.tm_wday], tm.tm_mday,
                  months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
}

const char *zh_mail_build(const zh_mail_msg *m, zh_buf *out) {
    char *from = zh_mail_address(m->from);
    if (!from) return "'from' is not an e-mail address";
    if (m->n_to == 0) {
        free(from);
        return "no recipients";
    }
    char **to = zh_xcalloc(m->n_to, sizeof *to);
    for (size_t i = 0; i < m->n_to; i++) {
        to[i] = zh_mail_address(m->to[i]);
        if (!to[i]) {
            for (size_t j = 0; j < i; j++) free(to[j]);
            free(to);
            free(from);
            return "a recipient is not an e-mail address";
        }
    }
    add_date(out, m->date);
    zh_buf_adds(out, "From: ");
    add_mailbox(out, m->from, from, 6);
    zh_buf_adds(out, "\r\nTo: ");
    size_t col = 4;
    for (size_t i = 0; i < m->n_to; i++) {
        size_t w = strlen(to[i]) + 2;
        if (i > 0) {
            zh_buf_addc(out, ',');
            col++;
            /* Fold long recipient lists: RFC 5322 asks for lines under 78 characters. */
            if (col + 1 + w > 78) {
                zh_buf_adds(out, "\r\n");
                col = 0;
            }
            zh_buf_addc(out, ' ');
            col++;
        }
        zh_buf_printf(out, "<%s>", to[i]);
        col += w;
    }
    zh_buf_adds(out, "\r\nSubject: ");
    zh_mail_encode_header(out, m->subject ? m->subject : "", 9);
    zh_buf_adds(out, "\r\n");
    const char *domain = strchr(from, '@') + 1;
    if (m->message_id) {
        zh_buf_printf(out, "Message-ID: <%s>\r\n", m->message_id);
    } else {
        char id[33];
        random_hex(id);
        zh_buf_printf(out, "Message-ID: <%s.%lld@%s>\r\n", id, (long long)m->date, domain);
    }
    zh_buf_adds(out, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    zh_buf_adds(out, "X-Mailer: zhost/" ZH_VERSION "\r\n");

    /* Canonical form first: every line ends in CRLF, whatever the script used. */
    zh_buf body;
    zh_buf_init(&body);
    const char *t = m->text ? m->text : "";
    size_t tl = m->text ? m->text_len : 0;
    bool ascii = true;
    size_t line = 0, longest = 0;
    for (size_t i = 0; i < tl; i++) {
        char c = t[i];
        if (c == '\r') {
            if (i + 1 < tl && t[i + 1] == '\n') i++;
            zh_buf_adds(&body, "\r\n");
            line = 0;
        } else if (c == '\n') {
            zh_buf_adds(&body, "\r\n");
            line = 0;
        } else {
            if ((unsigned char)c > 0x7e || ((unsigned char)c < 0x20 && c != '\t')) ascii = false;
            zh_buf_addc(&body, c);
            if (++line > longest) longest = line;
        }
    }
    if (body.len < 2 || memcmp(body.data + body.len - 2, "\r\n", 2) != 0) zh_buf_adds(&body, "\r\n");
    if (ascii && longest <= 998) {
        zh_buf_adds(out, "Content-Transfer-Encoding: 7bit\r\n\r\n");
        zh_buf_add(out, body.data, body.len);
    } else {
        /* base64 rather than 8bit: it needs no 8BITMIME from the relay and no line limits. */
        zh_buf_adds(out, "Content-Transfer-Encoding: base64\r\n\r\n");
        for (size_t i = 0; i < body.len; i += 57) {
            size_t n = body.len - i < 57 ? body.len - i : 57;
            b64_add(out, (const unsigned char *)body.data + i, n);
            zh_buf_adds(out, "\r\n");
        }
    }
    zh_buf_free(&body);
    for (size_t i = 0; i < m->n_to; i++) free(to[i]);
    free(to);
    free(from);
    return NULL;
}

/* ---- sending ---- */

typedef struct mail_op {
    zh_pending base;
    zh_xfer *x;
    struct curl_slist *rcpt;
    zh_buf msg;
    size_t off;
    char *where;              /* "smtp://host:port", for messages */
    char *error;              /* set when the send failed */
    char job[64];
} mail_op;

static void op_free(mail_op *op) {
    zh_xfer_free(op->x);      /* aborts a running transfer; curl no longer references rcpt */
    curl_slist_free_all(op->rcpt);
    zh_buf_free(&op->msg);
    free(op->where);
    free(op->error);
    free(op);
}

static size_t op_read(char *dst, size_t size, size_t n, void *ud) {
    mail_op *op = ud;
    size_t want = size * n, left = op->msg.len - op->off;
    if (want > left) want = left;
    memcpy(dst, op->msg.data + op->off, want);
    op->off += want;
    return want;
}

/* Every reply line of the server (curl hands them over as headers), kept for last_reply. Once the
 * server has answered the end of DATA, the message is its: libcurl then closes the connection (one
 * per message) with a QUIT whose answer it waits for *blocking the loop*, for up to the server
 * response timeout — 120 s by default, the transfer's own timeout does not apply there. A relay
 * that takes the message and never answers QUIT froze the daemon (health server, every job) for
 * two minutes per alert cycle; from here on each answer may take at most 1 s (the least curl 7.88
 * takes), and only QUIT is still to come. */
static size_t op_header(char *ptr, size_t size, size_t n, void *ud) {
    mail_op *op = ud;
    size_t len = size * n;
    zh_buf_add(&op->x->resp_headers, ptr, len);
    bool final = len >= 3 && ptr[0] >= '2' && ptr[0] <= '5' && (len == 3 || ptr[3] != '-');
    if (final && op->msg.len && op->off == op->msg.len)
        curl_easy_setopt(op->x->easy, CURLOPT_SERVER_RESPONSE_TIMEOUT, 1L);
    return len;
}

/* The last reply line of the server ("535 5.7.8 Authentication failed"), or NULL. */
static char *last_reply(const zh_xfer *x) {
    const char *p = x->resp_headers.data;
    size_t n = x->resp_headers.len;
    if (!p || !n) return NULL;
    while (n && (p[n - 1] == '\n' || p[n - 1] == '\r')) n--;
    size_t b = n;
    while (b && p[b - 1] != '\n') b--;
    if (n - b < 3 || p[b] < '4' || p[b] > '5') return NULL; /* only failures are worth quoting */
    return zh_xstrndup(p + b, n - b > 200 ? 200 : n - b);
}

static void op_done(zh_xfer *x) {
    mail_op *op = x->ud;
    if (x->result != CURLE_OK) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", op->where, zh_xfer_error(x));
        char *reply = last_reply(x);
        if (reply) {
            zh_buf_printf(&b, " (server said: %s)", reply);
            free(reply);
        }
        op->error = b.data;
    }
    ZH_DEBUG(op->job[0] ? op->job : NULL, "msg=\"mail sent\" server=%s bytes=%zu error=\"%s\"", op->where, op->msg.len,
             op->error ? op->error : "");
    zh_task_wake(&op->base);
}

static int op_push(zh_pending *p, lua_State *co) {
    mail_op *op = (mail_op *)p;
    int n;
    if (op->error) {
        lua_pushnil(co);
        lua_pushstring(co, op->error);
        n = 2;
    } else {
        lua_pushboolean(co, 1);
        n = 1;
    }
    op_free(op);
    return n;
}

static void op_abort(zh_pending *p) {
    mail_op *op = (mail_op *)p;
    /* Removing a running SMTP transfer makes libcurl close the connection with a QUIT it waits
     * for synchronously, up to the transfer's time left: an expired timeout makes it give up at
     * once instead of stalling the loop. */
    if (op->x && op->x->running) {
        curl_easy_setopt(op->x->easy, CURLOPT_TIMEOUT_MS, 1L);
        curl_easy_setopt(op->x->easy, CURLOPT_SERVER_RESPONSE_TIMEOUT, 1L);
    }
    op_free(op);
}

/* ---- Lua ---- */

static const char *opt_str(lua_State *L, const char *k, bool required) {
    lua_getfield(L, 1, k);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        s = lua_tostring(L, -1);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "mail: '%s' must be a string", k);
    }
    lua_pop(L, 1); /* still referenced by the options table */
    if (required && (!s || !*s)) luaL_error(L, "mail: '%s' is required", k);
    return s;
}

/* Collects `to` (a string with commas, or an array of strings) into a Lua array at the top. */
static int collect_recipients(lua_State *L) {
    lua_newtable(L);
    int arr = lua_gettop(L), n = 0;
    lua_getfield(L, 1, "to");
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        while (*s) {
            const char *c = strchr(s, ',');
            size_t len = c ? (size_t)(c - s) : strlen(s);
            const char *b = s, *e = s + len;
            while (b < e && (*b == ' ' || *b == '\t')) b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
            if (e > b) {
                lua_pushlstring(L, b, (size_t)(e - b));
                lua_rawseti(L, arr, ++n);
            }
            s = c ? c + 1 : s + len;
        }
    } else if (t == LUA_TTABLE) {
        lua_Integer len = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "mail: 'to' must hold strings");
            lua_rawseti(L, arr, ++n);
        }
    } else {
        luaL_error(L, "mail: 'to' is required (an address, a comma list or an array of addresses)");
    }
    lua_pop(L, 1);
    if (n == 0) luaL_error(L, "mail: 'to' has no addresses");
    return arr;
}

/* Builds the message from the options table at 1 into out; raises on misuse. Leaves the
 * recipients array on the stack and returns its index. */
static int build_from_opts(lua_State *L, zh_buf *out, const char **from_out) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *from = opt_str(L, "from", false);
    if (!from) from = opt_str(L, "user", false);
    if (!from) luaL_error(L, "mail: 'from' is required");
    const char *subject = opt_str(L, "subject", true);
    lua_getfield(L, 1, "text");
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "mail: 'text' is required (a string)");
    size_t tl;
    const char *text = lua_tolstring(L, -1, &tl);
    lua_pop(L, 1);
    int arr = collect_recipients(L);
    size_t n = (size_t)lua_rawlen(L, arr);
    const char **to = zh_xcalloc(n, sizeof *to);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, arr, (lua_Integer)i + 1);
        to[i] = lua_tostring(L, -1); /* anchored by arr */
        lua_pop(L, 1);
    }
    zh_mail_msg m = {.from = from, .to = to, .n_to = n, .subject = subject, .text = text, .text_len = tl,
                     .date = zh_now_wall()};
    const char *err = zh_mail_build(&m, out);
    free(to);
    if (err) {
        zh_buf_free(out);
        luaL_error(L, "mail: %s", err);
    }
    *from_out = from;
    return arr;
}

/* mail.message{ from=, to=, subject=, text= } -> the RFC 5322 text that mail.send would send */
static int l_message(lua_State *L) {
    zh_buf out;
    zh_buf_init(&out);
    const char *from;
    build_from_opts(L, &out, &from);
    lua_pushlstring(L, out.data, out.len);
    zh_buf_free(&out);
    return 1;
}

static bool valid_host(const char *h) {
    if (!*h || strlen(h) > 253) return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '-' || *p == ':' || *p == '_'))
            return false;
    return true;
}

/* mail.send{ host=, port=, user=, password=, tls=, from=, to=, subject=, text=, timeout=,
 *            insecure=, cafile= } -> true | nil, err */
static int l_send(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    zh_host *h = zh_host_of(L);
    zh_task *task = zh_task_current(L, true);
    const char *host = opt_str(L, "host", true);
    if (!valid_host(host)) return luaL_error(L, "mail: bad host '%s'", host);
    const char *tls = opt_str(L, "tls", false);
    if (!tls) tls = "starttls";
    bool smtps = !strcmp(tls, "smtps"), starttls = !strcmp(tls, "starttls");
    if (!smtps && !starttls && strcmp(tls, "none"))
        return luaL_error(L, "mail: tls must be \"starttls\", \"smtps\" or \"none\" (got '%s')", tls);
    lua_Integer port = smtps ? 465 : starttls ? 587 : 25;
    lua_getfield(L, 1, "port");
    if (!lua_isnil(L, -1)) {
        int isnum;
        port = lua_tointegerx(L, -1, &isnum);
        if (!isnum || port < 1 || port > 65535) return luaL_error(L, "mail: port must be 1..65535");
    }
    lua_pop(L, 1);
    const char *user = opt_str(L, "user", false);
    const char *password = opt_str(L, "password", false);
    const char *cafile = opt_str(L, "cafile", false);
    double timeout = 60;
    lua_getfield(L, 1, "timeout");
    if (!lua_isnil(L, -1)) {
        int isnum;
        timeout = lua_tonumberx(L, -1, &isnum);
        /* was 60 s without a word */
        if (!isnum || !(timeout > 0 && timeout <= 3600))
            return luaL_error(L, "mail: timeout must be seconds in (0, 3600] (got %s)", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "insecure");
    bool insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);

    zh_buf msg;
    zh_buf_init(&msg);
    const char *from;
    int arr = build_from_opts(L, &msg, &from); /* may raise: nothing is allocated yet */
    mail_op *op = zh_xcalloc(1, sizeof *op);
    op->msg = msg;
    op->base.push = op_push;
    op->base.abort = op_abort;
    if (task->group) snprintf(op->job, sizeof op->job, "%s", task->group->job);
    zh_buf where;
    zh_buf_init(&where);
    bool v6 = strchr(host, ':') != NULL;
    zh_buf_printf(&where, "%s://%s%s%s:%lld", smtps ? "smtps" : "smtp", v6 ? "[" : "", host, v6 ? "]" : "",
                  (long long)port);
    op->where = where.data;
    char *envelope_from = zh_mail_address(from);
    zh_buf fb;
    zh_buf_init(&fb);
    zh_buf_printf(&fb, "<%s>", envelope_from);
    free(envelope_from);
    size_t n = (size_t)lua_rawlen(L, arr);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, arr, (lua_Integer)i + 1);
        char *a = zh_mail_address(lua_tostring(L, -1));
        lua_pop(L, 1);
        char line[340];
        snprintf(line, sizeof line, "<%s>", a);
        free(a);
        op->rcpt = curl_slist_append(op->rcpt, line);
    }
    if (password && *password) zh_log_secret(password);

    zh_xfer *x = zh_xfer_new(h->curl);
    op->x = x;
    x->ud = op;
    x->done = op_done;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, op->where);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_USE_SSL, (long)(starttls ? CURLUSESSL_ALL : smtps ? CURLUSESSL_ALL : CURLUSESSL_NONE));
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, fb.data);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, op->rcpt);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, op_read);
    curl_easy_setopt(e, CURLOPT_READDATA, op);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, op_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, op);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)op->msg.len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    /* One connection per message: an idle SMTP connection left in the shared cache would be
     * closed later, with a blocking QUIT, in the middle of some unrelated transfer. */
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    if (user && *user) curl_easy_setopt(e, CURLOPT_USERNAME, user);
    if (password) curl_easy_setopt(e, CURLOPT_PASSWORD, password);
    if (cafile) curl_easy_setopt(e, CURLOPT_CAINFO, cafile);
    if (insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    zh_buf_free(&fb); /* curl copies string options */
    if (zh_xfer_start(x) != 0) {
        op->error = zh_xstrdup("could not start the SMTP transfer");
        lua_settop(L, 1);
        return op_push(&op->base, L);
    }
    return zh_task_await(L, &op->base);
}

int zh_open_mail(lua_State *L) {
    static const luaL_Reg fns[] = {{"send", l_send}, {"message", l_message}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
