/* clickhouse.c — owns the connection settings (CLICKHOUSE_* variables and their aliases,
 * secrets/.env.ch), single statements with retries (ch_req), error messages, table schemas,
 * the meta_job_runs rows, and the synchronous helpers used by CLI commands.
 *
 * Credentials travel in X-ClickHouse-User/Key headers (never in URLs or logs); every request
 * asks for wait_end_of_query=1 so an error cannot hide behind an early 200. */
#include "ch_internal.h"
#include "log.h"
#include "secrets.h"
#include "tunables.h"
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *first_env(const char *const *names, const char **which) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) {
            if (which) *which = names[i];
            return v;
        }
    }
    return NULL;
}

static void put_env_if_unset(void *ud, const char *k, const char *v) {
    (void)ud;
    setenv(k, v, 0);
}

int zh_ch_load_env(const char *secrets_dir, char **err) {
    return zh_secrets_read(secrets_dir ? secrets_dir : "secrets", "ch", put_env_if_unset, NULL, err) < 0 ? -1 : 0;
}

static bool truthy(const char *v) {
    return v && (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

void zh_ch_init(zh_host *h) {
    zh_ch_state *st = zh_xcalloc(1, sizeof *st);
    static const char *const url_n[] = {"CLICKHOUSE_URL", NULL};
    static const char *const host_n[] = {"CLICKHOUSE_HOST", "CH_HOST", NULL};
    static const char *const port_n[] = {"CLICKHOUSE_PORT", "CLICKHOUSE_HTTP_PORT", "CH_PORT", NULL};
    static const char *const secure_n[] = {"CLICKHOUSE_SECURE", "CH_SECURE", NULL};
    static const char *const verify_n[] = {"CLICKHOUSE_VERIFY_SSL", "CH_VERIFY_SSL", NULL};
    static const char *const user_n[] = {"CLICKHOUSE_USER", "CH_USER", "CLICKHOUSE_USERNAME", NULL};
    static const char *const pass_n[] = {"CLICKHOUSE_PASSWORD", "CH_PASSWORD", NULL};
    static const char *const db_n[] = {"CLICKHOUSE_DB", "CLICKHOUSE_DATABASE", "CH_DATABASE", NULL};
    static const char *const bi_n[] = {"CLICKHOUSE_BI_DB", NULL};
    const char *which = NULL;
    const char *url = first_env(url_n, NULL);
    zh_buf u;
    zh_buf_init(&u);
    if (url) {
        zh_buf_adds(&u, url);
    } else {
        const char *hostn = first_env(host_n, &which);
        if (which && strcmp(which, "CLICKHOUSE_HOST")) ZH_WARN(NULL, "msg=\"%s is an old name; use CLICKHOUSE_HOST\"", which);
        const char *port = first_env(port_n, &which);
        if (which && strcmp(which, "CLICKHOUSE_PORT")) ZH_WARN(NULL, "msg=\"%s is an old name; use CLICKHOUSE_PORT\"", which);
        bool secure = truthy(first_env(secure_n, NULL));
        zh_buf_printf(&u, "%s://%s:%s", secure ? "https" : "http", hostn ? hostn : "127.0.0.1",
                      port ? port : (secure ? "8443" : "8123"));
    }
    if (!u.len || u.data[u.len - 1] != '/') zh_buf_addc(&u, '/');
    st->url = u.data;
    const char *verify = first_env(verify_n, NULL);
    st->verify_tls = !verify || truthy(verify);
    const char *user = first_env(user_n, NULL), *pass = first_env(pass_n, NULL);
    st->user = zh_xstrdup(user ? user : "default");
    st->password = zh_xstrdup(pass ? pass : "");
    zh_log_secret(st->password);
    const char *db = first_env(db_n, NULL);
    st->database = zh_xstrdup(db ? db : "zakaz");
    const char *bi = first_env(bi_n, NULL);
    st->bi_database = zh_xstrdup(bi ? bi : "bi");
    st->max_attempts = (int)zh_tunable_number("ZHOST_CH_ATTEMPTS", 4);
    st->backoff_base = 0.5;
    st->backoff_cap = zh_tunable_number("ZHOST_CH_BACKOFF_CAP", 8);
    /* An INSERT is streamed from this many bytes of batch on; 0 never streams (for a proxy in
     * front of ClickHouse that cannot pass a chunked request body). */
    st->stream_bytes = (size_t)zh_tunable_number("ZHOST_CH_STREAM_BYTES", 256 << 10);
    /* Servers stop waiting for a request body that stays silent (current releases'
     * http_receive_timeout is 30 s): a stream ends well within that, even with a long max_age. */
    st->stream_max_open_s = zh_tunable_number("ZHOST_CH_STREAM_SECONDS", 20);
    st->rng = (uint64_t)(zh_now_wall() * 1e6) | 1;
    h->ch = st;
}

const char *zh_ch_database(zh_host *h) { return h->ch->database; }
const char *zh_ch_bi_database(zh_host *h) { return h->ch->bi_database; }

/* ---- requests ---- */

/* The code of the "Code: N. DB::Exception" (or 18.x's "Code: N, e.displayText() = DB::Exception")
 * that starts a ClickHouse exception text at p, or 0. The shape is checked so that a proxy's page
 * saying "Error code: 502" is not taken for ClickHouse's answer. */
static int code_at(const char *p, const char *end) {
    if (end - p < 7 || strncmp(p, "Code: ", 6) || p[6] < '0' || p[6] > '9') return 0;
    const char *q = p + 6;
    while (q < end && *q >= '0' && *q <= '9') q++;
    static const char *const after[] = {". DB::Exception", ", e.displayText() = DB::Exception"};
    for (int i = 0; i < 2; i++) {
        size_t k = strlen(after[i]);
        if ((size_t)(end - q) >= k && !memcmp(q, after[i], k)) return atoi(p + 6);
    }
    return 0;
}

char *ch_error_message(long status, const char *body, size_t len, const char *hdr_code, int *code) {
    zh_buf b;
    zh_buf_init(&b);
    const char *p = body ? body : "";
    size_t n = body ? len : 0;
    const char *end = p + n;
    /* "Code: 60, e.displayText() = DB::Exception: text, e.what() = ..." (18.x),
     * "Code: 60, e.displayText() = DB::Exception: text (version ...)" (19.x-21.x) or
     * "Code: 60. DB::Exception: text. (UNKNOWN_TABLE) (version ...)" (current). Since 23.9 a
     * query with a JSON or XML output format gets the same text inside the format instead
     * ({"exception": "Code: 62. ..."}, http_write_exception_in_output_format), so the text is
     * also looked for inside the body. */
    const char *text = NULL;
    int c = code_at(p, end);
    if (c) {
        text = p;
    } else {
        for (const char *q = p; q < end && (q = memmem(q, (size_t)(end - q), "Code: ", 6)); q++) {
            if ((c = code_at(q, end))) {
                text = q;
                break;
            }
        }
    }
    /* Current servers also send the code as a header; it holds even when the body is empty (a JSON
     * format with wait_end_of_query=1 on 23.9-24.2 sends none) or not ClickHouse's. */
    int hc = hdr_code ? atoi(hdr_code) : 0;
    if (hc > 0) c = hc;
    if (c) {
        zh_buf_printf(&b, "ClickHouse error %d", c);
        const char *src = text ? text : p;
        bool wrapped = text && text != p && text[-1] == '"'; /* inside a JSON string */
        const char *ex = memmem(src, (size_t)(end - src), "DB::Exception: ", 15);
        if (ex) src = ex + 15;
        const char *stop_at = end;
        static const char *const stops[] = {", e.what()", " (version ", "</exception>", NULL};
        for (int i = 0; stops[i]; i++) {
            const char *st = memmem(src, (size_t)(stop_at - src), stops[i], strlen(stops[i]));
            if (st) stop_at = st;
        }
        if (wrapped) {
            for (const char *q = src; q < stop_at; q++) {
                if (*q == '\\' && q + 1 < stop_at) q++;
                else if (*q == '"') stop_at = q;
            }
        }
        while (stop_at > src && (stop_at[-1] == '\n' || stop_at[-1] == ' ')) stop_at--;
        if (stop_at > src) {
            zh_buf_adds(&b, ": ");
            size_t m = zh_utf8_cut(src, (size_t)(stop_at - src), 600);
            for (size_t i = 0; i < m; i++) {
                char ch = src[i];
                if (wrapped && ch == '\\' && i + 1 < m) {
                    ch = src[++i];
                    if (ch == 'n' || ch == 't') ch = ' ';
                }
                zh_buf_addc(&b, ch == '\n' ? ' ' : ch);
            }
        } else {
            zh_buf_printf(&b, " (HTTP %ld, no message)", status);
        }
    } else {
        zh_buf_printf(&b, "ClickHouse HTTP %ld", status);
        if (n) {
            zh_buf_adds(&b, ": ");
            size_t m = zh_utf8_cut(p, n, 300);
            for (size_t i = 0; i < m; i++) zh_buf_addc(&b, p[i] == '\n' ? ' ' : p[i]);
        }
    }
    if (code) *code = c;
    return b.data;
}

static double ch_rand01(zh_ch_state *st) {
    st->rng ^= st->rng << 13;
    st->rng ^= st->rng >> 7;
    st->rng ^= st->rng << 17;
    return (double)(st->rng >> 11) / 9007199254740992.0;
}

static void ch_retry_fired(uv_timer_t *t) {
    ch_req *r = t->data;
    ch_req_start(r);
}

/* Errors worth retrying: the server is unreachable or overloaded, not "your SQL is wrong". */
static bool retryable(zh_xfer *x, int code) {
    if (x->result != CURLE_OK) return true;
    if (x->status >= 500 && code == 0) return true;
    if (x->status == 429) return true; /* a proxy or load balancer in front of ClickHouse */
    switch (code) {
    case 159: /* TIMEOUT_EXCEEDED */
    case 202: /* TOO_MANY_SIMULTANEOUS_QUERIES */
    case 209: /* SOCKET_TIMEOUT */
    case 210: /* NETWORK_ERROR */
    case 252: /* TOO_MANY_PARTS */
        return true;
    default:
        return x->status == 503;
    }
}

static void ch_xfer_done(zh_xfer *x) {
    ch_req *r = x->ud;
    zh_ch_state *st = r->h->ch;
    if (x->result == CURLE_OK) st->silent = false;
    else if (x->result == CURLE_OPERATION_TIMEDOUT) st->silent = true;
    free(r->error);
    r->error = NULL;
    r->ch_code = 0;
    /* A server that stops reading (shutting down, say) may take the rows it has and answer 200
     * before the request is all sent: that is not the whole batch, and the rest would be lost. */
    curl_off_t sent = 0;
    curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &sent);
    bool whole = x->streaming ? x->stream_sealed && x->stream_sent == x->req_body.len
                              : (size_t)sent >= x->req_body.len;
    if (x->result == CURLE_OK && x->status == 200 && whole) {
        r->ok = true;
        r->done(r);
        return;
    }
    if (x->result == CURLE_OK && x->status == 200) {
        zh_buf b;
        zh_buf_init(&b);
        if (x->streaming && !x->stream_sealed)
            zh_buf_printf(&b, "ClickHouse at %s answered 200 before the end of the request (%zu bytes sent, more to come)",
                          st->url, x->stream_sent);
        else
            zh_buf_printf(&b, "ClickHouse at %s answered 200 before the end of the request (%zu of %zu bytes sent)",
                          st->url, x->streaming ? x->stream_sent : (size_t)sent, x->req_body.len);
        r->error = b.data;
    } else if (x->result != CURLE_OK) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "ClickHouse unreachable at %s: %s", st->url, zh_xfer_error(x));
        r->error = b.data;
    } else {
        char *hc = zh_xfer_header(x, "X-ClickHouse-Exception-Code");
        r->error = ch_error_message(x->status, x->resp_body.data, x->resp_body.len, hc, &r->ch_code);
        free(hc);
    }
    if (r->attempt < r->max_attempts && (retryable(x, r->ch_code) || (x->status == 200 && !whole)) &&
        !(r->quiet_no_retry && st->silent)) {
        double cap = st->backoff_base * pow(2, r->attempt - 1);
        if (cap > st->backoff_cap) cap = st->backoff_cap;
        double delay = ch_rand01(st) * cap;
        r->attempt++;
        ZH_WARN(NULL, "msg=\"clickhouse retry\" attempt=%d of=%d delay=%.2f error=\"%s\"", r->attempt, r->max_attempts,
                delay, r->error);
        uv_timer_start(&r->timer, ch_retry_fired, (uint64_t)(delay * 1000), 0);
        return;
    }
    r->ok = false;
    r->done(r);
}

static void add_param(zh_buf *u, const char *k, const char *v) {
    char *esc = curl_easy_escape(NULL, v, 0);
    zh_buf_printf(u, "%s%s=%s", strchr(u->data, '?') ? "&" : "?", k, esc);
    curl_free(esc);
}

void zh_ch_set_url_setting(zh_host *h, const char *name, const char *value) {
    /* Every request URL has a '?' already (wait_end_of_query), so each setting starts with '&'. */
    zh_buf u;
    zh_buf_init(&u);
    char *esc = curl_easy_escape(NULL, value, 0);
    zh_buf_printf(&u, "%s&%s=%s", h->ch->url_settings ? h->ch->url_settings : "", name, esc);
    curl_free(esc);
    free(h->ch->url_settings);
    h->ch->url_settings = u.data;
}

ch_req *ch_req_new(zh_host *h, const char *query, const char *body, size_t len, ch_req_done_fn done, void *ud) {
    return ch_req_new_db(h, h->ch->database, query, body, len, done, ud);
}

ch_req *ch_req_new_db(zh_host *h, const char *database, const char *query, const char *body, size_t len,
                      ch_req_done_fn done, void *ud) {
    zh_ch_state *st = h->ch;
    ch_req *r = zh_xcalloc(1, sizeof *r);
    r->h = h;
    r->done = done;
    r->ud = ud;
    r->attempt = 1;
    r->max_attempts = st->max_attempts;
    uv_timer_init(h->loop, &r->timer);
    r->timer.data = r;
    r->x = zh_xfer_new(h->curl);
    zh_buf u;
    zh_buf_init(&u);
    zh_buf_adds(&u, st->url);
    if (database) add_param(&u, "database", database);
    add_param(&u, "wait_end_of_query", "1");
    if (query) add_param(&u, "query", query);
    if (st->url_settings) zh_buf_adds(&u, st->url_settings);
    zh_xfer_set_request(r->x, "POST", u.data, body ? body : "", body ? len : 0);
    zh_buf_free(&u);
    zh_buf hdr;
    zh_buf_init(&hdr);
    zh_buf_printf(&hdr, "X-ClickHouse-User: %s", st->user);
    zh_xfer_add_header(r->x, hdr.data);
    if (st->password[0]) {
        hdr.len = 0;
        zh_buf_printf(&hdr, "X-ClickHouse-Key: %s", st->password);
        zh_xfer_add_header(r->x, hdr.data);
    }
    zh_buf_free(&hdr);
    zh_xfer_add_header(r->x, "Content-Type: text/plain; charset=utf-8");
    if (!st->verify_tls) {
        curl_easy_setopt(r->x->easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(r->x->easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(r->x->easy, CURLOPT_TIMEOUT_MS, 300000L);
    curl_easy_setopt(r->x->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    r->x->done = ch_xfer_done;
    r->x->ud = r;
    return r;
}

void ch_req_start(ch_req *r) {
    if (zh_xfer_start(r->x) != 0) {
        r->ok = false;
        free(r->error);
        r->error = zh_xstrdup("could not start a ClickHouse request");
        r->done(r);
    }
}

void ch_req_limit(ch_req *r, double timeout_s, int attempts) {
    if (attempts > 0) r->max_attempts = attempts;
    if (timeout_s > 0) {
        curl_easy_setopt(r->x->easy, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000));
        if (timeout_s < 5) curl_easy_setopt(r->x->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_s * 1000));
    }
}

void ch_req_abort(ch_req *r) {
    zh_xfer_abort(r->x);
    uv_timer_stop(&r->timer);
}

static void ch_req_closed(uv_handle_t *hd) {
    ch_req *r = hd->data;
    free(r->error);
    free(r);
}

void ch_req_free(ch_req *r) {
    if (!r) return;
    zh_xfer_free(r->x);
    r->x = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, ch_req_closed);
}

void ch_req_sync_done(ch_req *r) { *(bool *)r->ud = true; }

void ch_req_wait(ch_req *r) {
    bool *flag = r->ud;
    while (!*flag && uv_run(r->h->loop, UV_RUN_ONCE)) {
    }
}

char *zh_ch_substitute_db(zh_host *h, const char *sql) {
    zh_ch_state *st = h->ch;
    zh_buf b;
    zh_buf_init(&b);
    const char *p = sql;
    while (*p) {
        bool boundary = p == sql || !((p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z') ||
                                      (p[-1] >= '0' && p[-1] <= '9') || p[-1] == '_' || p[-1] == '.');
        if (boundary && !strncmp(p, "zakaz.", 6)) {
            zh_buf_printf(&b, "%s.", st->database);
            p += 6;
        } else if (boundary && !strncmp(p, "bi.", 3)) {
            zh_buf_printf(&b, "%s.", st->bi_database);
            p += 3;
        } else {
            zh_buf_addc(&b, *p++);
        }
    }
    return b.data ? b.data : zh_xstrdup("");
}

/* ---- a query's own FORMAT clause ---- */

static bool sql_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

bool zh_ch_sql_own_format(const char *sql, size_t *stmt_end) {
    /* The last two tokens that are not ';' decide; a token is a word, a quoted string or
     * identifier, or one other byte. */
    enum { T_NONE, T_WORD, T_QUOTED, T_OTHER };
    int kind[2] = {T_NONE, T_NONE};
    size_t start[2] = {0, 0}, len[2] = {0, 0};
    size_t end_of_last = 0;
    bool open = false; /* an unterminated string or comment runs to the end */
    size_t n = strlen(sql), i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)sql[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == ';') {
            i++;
        } else if ((c == '-' && i + 1 < n && sql[i + 1] == '-') ||
                   (c == '#' && i + 1 < n && (sql[i + 1] == ' ' || sql[i + 1] == '!'))) {
            while (i < n && sql[i] != '\n') i++;
        } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
            int depth = 0;
            while (i < n) {
                if (sql[i] == '/' && i + 1 < n && sql[i + 1] == '*') depth++, i += 2;
                else if (sql[i] == '*' && i + 1 < n && sql[i + 1] == '/') {
                    i += 2;
                    if (--depth == 0) break;
                } else i++;
            }
            if (depth > 0) open = true;
        } else {
            size_t b = i;
            int k;
            if (c == '\'' || c == '"' || c == '`') {
                /* backslash escapes, and a doubled quote is one quote */
                i++;
                bool closed = false;
                while (i < n) {
                    if (sql[i] == '\\' && i + 1 < n) i += 2;
                    else if ((unsigned char)sql[i] == c) {
                        if (i + 1 < n && (unsigned char)sql[i + 1] == c) i += 2;
                        else {
                            i++;
                            closed = true;
                            break;
                        }
                    } else i++;
                }
                if (!closed) {
                    open = true;
                    i = n;
                }
                k = c == '\'' ? T_OTHER : T_QUOTED; /* a format name may be a quoted identifier, not a string */
            } else if (sql_word_byte(c)) {
                while (i < n && sql_word_byte((unsigned char)sql[i])) i++;
                k = T_WORD;
            } else {
                i++;
                k = T_OTHER;
            }
            kind[0] = kind[1], start[0] = start[1], len[0] = len[1];
            kind[1] = k, start[1] = b, len[1] = i - b;
            end_of_last = i;
        }
    }
    if (stmt_end) *stmt_end = open ? n : end_of_last;
    if (open) return false;
    return kind[0] == T_WORD && len[0] == 6 && !strncasecmp(sql + start[0], "FORMAT", 6) &&
           (kind[1] == T_WORD || kind[1] == T_QUOTED) && (start[0] == 0 || sql[start[0] - 1] != '.');
}

typedef struct async_q {
    zh_ch_query_fn fn;
    void *ud;
    ch_req *r;
    struct async_q *next; /* zh_ch_state.asyncs: what zh_ch_shutdown must free */
} async_q;

static void async_unlink(zh_host *h, async_q *q) {
    for (async_q **pp = &h->ch->asyncs; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            return;
        }
}

static void async_done(ch_req *r) {
    async_q *q = r->ud;
    async_unlink(r->h, q);
    if (r->ok) q->fn(q->ud, zh_buf_cstr(&r->x->resp_body), r->x->resp_body.len, NULL, 0);
    else q->fn(q->ud, NULL, 0, r->error ? r->error : "ClickHouse request failed", r->ch_code);
    free(q);
    ch_req_free(r);
}

void zh_ch_query_async(zh_host *h, const char *sql, double timeout_s, int attempts, zh_ch_query_fn fn, void *ud) {
    async_q *q = zh_xcalloc(1, sizeof *q);
    q->fn = fn;
    q->ud = ud;
    ch_req *r = ch_req_new(h, NULL, sql, strlen(sql), async_done, q);
    q->r = r;
    q->next = h->ch->asyncs;
    h->ch->asyncs = q;
    if (attempts > 0) r->max_attempts = attempts;
    long ms = (long)(timeout_s * 1000);
    curl_easy_setopt(r->x->easy, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(r->x->easy, CURLOPT_CONNECTTIMEOUT_MS, ms);
    ch_req_start(r);
}

int zh_ch_exec_sync(zh_host *h, const char *sql, zh_buf *out, char **err) {
    return zh_ch_exec_sync_db(h, h->ch->database, sql, out, err);
}

int ch_req_run_sync(ch_req *r, zh_buf *out, char **err) {
    bool *flag = r->ud;
    ch_req_start(r);
    ch_req_wait(r);
    int rc = 0;
    if (!*flag || !r->ok) {
        *err = zh_xstrdup(r->error ? r->error : "ClickHouse request did not finish");
        rc = -1;
    } else if (out) {
        zh_buf_add(out, r->x->resp_body.data ? r->x->resp_body.data : "", r->x->resp_body.len);
    }
    ch_req_free(r);
    return rc;
}

int zh_ch_exec_sync_db(zh_host *h, const char *database, const char *sql, zh_buf *out, char **err) {
    bool flag = false;
    return ch_req_run_sync(ch_req_new_db(h, database, NULL, sql, strlen(sql), ch_req_sync_done, &flag), out, err);
}

int zh_ch_exec_sync_code(zh_host *h, const char *sql, zh_buf *out, int *code, char **err) {
    bool flag = false;
    ch_req *r = ch_req_new_db(h, h->ch->database, NULL, sql, strlen(sql), ch_req_sync_done, &flag);
    ch_req_start(r);
    ch_req_wait(r);
    int rc = 0;
    *code = 0;
    if (!flag || !r->ok) {
        *err = zh_xstrdup(r->error ? r->error : "ClickHouse request did not finish");
        if (flag && r->x->result == CURLE_OK) *code = r->ch_code;
        rc = -1;
    } else if (out) {
        zh_buf_add(out, r->x->resp_body.data ? r->x->resp_body.data : "", r->x->resp_body.len);
    }
    ch_req_free(r);
    return rc;
}

int zh_ch_insert_sync(zh_host *h, const char *db_table, const char *body, size_t len, int *code, char **err) {
    char q[512];
    snprintf(q, sizeof q, "INSERT INTO %s FORMAT JSONEachRow", db_table);
    bool flag = false;
    ch_req *r = ch_req_new(h, q, body, len, ch_req_sync_done, &flag);
    ch_req_start(r);
    ch_req_wait(r);
    int rc = 0;
    if (code) *code = 0;
    if (!flag || !r->ok) {
        *err = zh_xstrdup(r->error ? r->error : "ClickHouse request did not finish");
        if (code && flag && r->x->result == CURLE_OK) *code = r->ch_code;
        rc = -1;
    }
    ch_req_free(r);
    return rc;
}

/* ---- schemas ---- */

const char *zh_ch_tsv_field(const char *p, const char *end, zh_buf *out, bool *eol) {
    out->len = 0;
    zh_buf_reserve(out, 0);
    while (p < end && *p != '\t' && *p != '\n') {
        char c = *p++;
        if (c == '\\' && p < end) {
            char e = *p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'a': c = '\a'; break;
            case 'v': c = '\v'; break;
            case '0': c = '\0'; break;
            default: c = e;
            }
        }
        zh_buf_addc(out, c);
    }
    out->data[out->len] = 0;
    *eol = p >= end || *p == '\n';
    return p < end ? p + 1 : p;
}

int zh_tsv_row(const char **pp, const char *end, zh_buf *fields, int max) {
    const char *p = *pp;
    if (p >= end) return -1;
    int n = 0;
    zh_buf spare;
    zh_buf_init(&spare);
    for (int i = 0; i < max; i++) fields[i].len = 0, zh_buf_cstr(&fields[i]);
    bool eol = false;
    while (!eol) {
        p = zh_ch_tsv_field(p, end, n < max ? &fields[n] : &spare, &eol);
        n++;
    }
    zh_buf_free(&spare);
    *pp = p;
    return n;
}

ch_schema *ch_schema_parse(const char *table, const char *tsv, size_t len) {
    ch_schema *s = zh_xcalloc(1, sizeof *s);
    s->table = zh_xstrdup(table);
    const char *p = tsv, *end = tsv + len;
    zh_buf f[4];
    for (int i = 0; i < 4; i++) zh_buf_init(&f[i]);
    int nf;
    while ((nf = zh_tsv_row(&p, end, f, 4)) >= 0) {
        if (nf >= 2 && f[0].len > 0) {
            s->cols = zh_xrealloc(s->cols, (size_t)(s->ncols + 1) * sizeof *s->cols);
            ch_column *c = &s->cols[s->ncols++];
            c->name = zh_xstrdup(f[0].data);
            c->name_len = f[0].len;
            c->json_key = NULL;
            c->json_key_len = 0;
            c->type = zh_xstrdup(f[1].data);
            c->default_expr = NULL;
            c->materialized = false;
            if (nf >= 3 && f[2].len) {
                c->materialized = !strcmp(f[2].data, "MATERIALIZED") || !strcmp(f[2].data, "ALIAS");
                if (nf >= 4) c->default_expr = zh_xstrdup(f[3].data);
            }
            zh_rowenc_classify(c);
            zh_buf key;
            zh_buf_init(&key);
            zh_rowenc_json_string(&key, c->name, c->name_len);
            zh_buf_addc(&key, ':');
            c->json_key = key.data;
            c->json_key_len = key.len;
        }
    }
    for (int i = 0; i < 4; i++) zh_buf_free(&f[i]);
    return s;
}

void ch_schema_free(ch_schema *s) {
    if (!s) return;
    for (int i = 0; i < s->ncols; i++) {
        free(s->cols[i].name);
        free(s->cols[i].json_key);
        free(s->cols[i].type);
        free(s->cols[i].default_expr);
    }
    free(s->cols);
    free(s->table);
    free(s);
}

int ch_schema_find(const ch_schema *s, const char *name, size_t len) {
    /* Every row of every sink looks each of its keys up here: compare lengths and first bytes
     * before memcmp (a row table's keys are a dozen short names). */
    for (int i = 0; i < s->ncols; i++) {
        const ch_column *c = &s->cols[i];
        if (c->name_len == len && (len == 0 || c->name[0] == name[0]) && !memcmp(c->name, name, len)) return i;
    }
    return -1;
}

static void schema_path(zh_host *h, const char *table, char *out, size_t n) {
    snprintf(out, n, "%s/schema/%s.tsv", h->spool_dir, table);
}

/* Best effort: without a cached copy an outage only means the schema cannot be looked up. */
void ch_schema_save(zh_host *h, const ch_schema *s, const char *tsv, size_t len) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/schema", h->spool_dir);
    zh_mkdirs(dir, 0700);
    schema_path(h, s->table, path, sizeof path);
    zh_write_atomic(path, tsv, len, 0600, NULL);
}

ch_schema *ch_schema_load_cached(zh_host *h, const char *table) {
    char path[1100];
    schema_path(h, table, path, sizeof path);
    size_t len = 0;
    char *tsv = zh_read_file(path, 0, &len);
    ch_schema *s = tsv && len ? ch_schema_parse(table, tsv, len) : NULL;
    free(tsv);
    return s;
}

/* ---- meta_job_runs ---- */

static void fmt_datetime(double epoch, char *out, size_t n) {
    /* Unix seconds as text: ClickHouse reads a 10-digit DateTime as a timestamp, whatever the
     * server's time zone. */
    snprintf(out, n, "%lld", (long long)floor(epoch));
}

/* Seconds per attempt of a meta_job_runs row, and of its one attempt when ClickHouse is silent. */
#define RUN_LOG_TIMEOUT_S 30
#define RUN_LOG_SILENT_TIMEOUT_S 5

typedef struct record_ctx {
    void (*done)(void *ud, const char *err);
    void *ud;
    char *table, *job, *run_id;
    zh_buf body;
    ch_req *req;
    struct record_ctx *next;
} record_ctx;

static void record_free(zh_host *h, record_ctx *c) {
    for (record_ctx **pp = &h->ch->records; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    ch_req_free(c->req);
    zh_buf_free(&c->body);
    free(c->table);
    free(c->job);
    free(c->run_id);
    free(c);
}

static void record_spool(zh_host *h, record_ctx *c, const char *why) {
    char err[256];
    if (zh_spool_write(h, c->table, c->job, c->run_id, why, c->body.data, c->body.len, 1, err, sizeof err) == 0)
        ZH_WARN(c->job, "msg=\"run log row spooled\" run_id=%s error=\"%s\"", c->run_id, why);
    else
        ZH_ERROR(c->job, "msg=\"run log row lost\" run_id=%s error=\"%s\" spool_error=\"%s\"", c->run_id, why, err);
}

static void record_finished(ch_req *r) {
    record_ctx *c = r->ud;
    if (!r->ok) record_spool(r->h, c, r->error);
    if (c->done) c->done(c->ud, r->ok ? NULL : r->error);
    record_free(r->h, c);
}

void zh_ch_record_run(zh_host *h, const zh_run_record *rec, void (*done)(void *ud, const char *err), void *ud) {
    zh_ch_state *st = h->ch;
    record_ctx *c = zh_xcalloc(1, sizeof *c);
    c->done = done;
    c->ud = ud;
    c->job = zh_xstrdup(rec->job);
    c->run_id = zh_xstrdup(rec->run_id);
    zh_buf tb;
    zh_buf_init(&tb);
    zh_buf_printf(&tb, "%s.meta_job_runs_raw", st->database);
    c->table = tb.data;
    char started[32], finished[32], host[128] = "";
    fmt_datetime(rec->started_at, started, sizeof started);
    fmt_datetime(rec->finished_at > 0 ? rec->finished_at : rec->started_at, finished, sizeof finished);
    gethostname(host, sizeof host - 1);
    zh_buf *b = &c->body;
    zh_buf_init(b);
    zh_buf_adds(b, "{\"job\":");
    zh_buf_json_str(b, rec->job);
    zh_buf_adds(b, ",\"run_id\":");
    zh_buf_json_str(b, rec->run_id);
    zh_buf_printf(b, ",\"started_at\":\"%s\"", started);
    /* A running row leaves finished_at to the column's default. */
    if (rec->finished_at > 0) zh_buf_printf(b, ",\"finished_at\":\"%s\"", finished);
    zh_buf_adds(b, ",\"status\":");
    zh_buf_json_str(b, rec->status);
    zh_buf_printf(b, ",\"rows_processed\":%llu,\"message\":", (unsigned long long)rec->rows);
    zh_buf_json_str(b, rec->message ? rec->message : "");
    zh_buf_adds(b, ",\"metrics\":");
    zh_buf_json_str(b, rec->metrics_json ? rec->metrics_json : "{}");
    zh_buf_adds(b, ",\"host\":");
    zh_buf_json_str(b, host);
    /* Versions in microseconds keep "running" < final even within one second. */
    zh_buf_printf(b, ",\"_ver\":%llu}\n", (unsigned long long)(zh_now_wall() * 1e6));
    char q[512];
    snprintf(q, sizeof q, "INSERT INTO %s FORMAT JSONEachRow", c->table);
    c->req = ch_req_new(h, q, b->data, b->len, record_finished, c);
    /* One small row: it never needs a statement's 300 s. A server that has let a request time out
     * (and answered none since) gets one short try, and is not tried again once this row's own
     * attempt has timed out: the row goes to the spool (a hung ClickHouse held the end of every run
     * for 4 x 300 s). */
    if (st->silent) ch_req_limit(c->req, RUN_LOG_SILENT_TIMEOUT_S, 1);
    else ch_req_limit(c->req, RUN_LOG_TIMEOUT_S, 0);
    c->req->quiet_no_retry = true;
    c->next = st->records;
    st->records = c;
    ch_req_start(c->req);
}

void zh_ch_record_detach(zh_host *h, void *ud) {
    if (!h->ch) return;
    for (record_ctx *c = h->ch->records; c; c = c->next)
        if (c->ud == ud) c->done = NULL;
}

int zh_ch_record_drop(zh_host *h, void *ud) {
    int n = 0;
    if (!h->ch) return 0;
    for (record_ctx *c = h->ch->records, *next; c; c = next) {
        next = c->next;
        if (c->ud != ud) continue;
        ch_req_abort(c->req);
        record_free(h, c);
        n++;
    }
    return n;
}

/* ---- runs left "running" by a killed process ---- */

static void stale_marked(void *ud, const char *err) {
    zh_stale_check *sc = ud;
    sc->pending--;
    if (err) ZH_WARN(NULL, "msg=\"could not mark a run interrupted\" error=\"%s\"", err);
}

static bool pid_alive(long pid) {
    if (pid <= 0) return false;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

static void stale_answer(void *ud, const char *body, size_t len, const char *err, int ch_code) {
    (void)len, (void)ch_code;
    zh_stale_check *sc = ud;
    /* No answer (ClickHouse down, no table yet): nothing is marked; the next start asks again. */
    if (err) ZH_DEBUG(NULL, "msg=\"could not look for runs left running\" error=\"%s\"", err);
    else sc->answered = true;
    for (const char *p = err ? "" : body; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        if (n < sizeof line) {
            memcpy(line, p, n);
            line[n] = 0;
            char *f[5] = {0};
            int nf = 0;
            for (char *cur = line, *tok; nf < 5 && (tok = strsep(&cur, "\t"));) f[nf++] = tok;
            /* this process's own run (its row may already be there) has a live pid: never marked */
            if (nf == 5 && !pid_alive(atol(f[4]))) {
                zh_run_record rec = {.job = f[1], .run_id = f[0], .status = "interrupted",
                                     .message = "interrupted: the process stopped before the run finished (marked later)",
                                     .metrics_json = "{}", .started_at = atof(f[2]), .finished_at = zh_now_wall(),
                                     .rows = strtoull(f[3], NULL, 10)};
                ZH_WARN(f[1], "msg=\"marking a run left running as interrupted\" run_id=%s", f[0]);
                sc->pending++;
                sc->marked++;
                zh_ch_record_run(sc->h, &rec, stale_marked, sc);
            }
        }
        if (!nl) break;
        p = nl + 1;
    }
    sc->pending--; /* the question itself */
}

void zh_ch_mark_stale_runs_start(zh_host *h, const char *job, zh_stale_check *sc) {
    zh_ch_state *st = h->ch;
    sc->h = h;
    sc->pending = 1;
    sc->marked = 0;
    sc->answered = false;
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    zh_buf q;
    zh_buf_init(&q);
    zh_buf_printf(&q, "SELECT run_id, job, toUnixTimestamp(started_at), rows_processed, "
                      "visitParamExtractInt(metrics, 'pid') FROM %s.meta_job_runs WHERE status = 'running' AND host = ",
                  st->database);
    zh_buf_adds(&q, "'");
    for (const char *p = host; *p; p++) {
        if (*p == '\'' || *p == '\\') zh_buf_addc(&q, '\\');
        zh_buf_addc(&q, *p);
    }
    zh_buf_adds(&q, "'");
    if (job) {
        zh_buf_adds(&q, " AND job = '");
        for (const char *p = job; *p; p++) {
            if (*p == '\'' || *p == '\\') zh_buf_addc(&q, '\\');
            zh_buf_addc(&q, *p);
        }
        zh_buf_adds(&q, "'");
    }
    zh_buf_adds(&q, " FORMAT TabSeparated");
    /* one short attempt: an unreachable server must not delay the run that follows */
    zh_ch_query_async(h, q.data, 5.0, 1, stale_answer, sc);
    zh_buf_free(&q);
}

int zh_ch_mark_stale_runs(zh_host *h, const char *job) {
    zh_stale_check sc;
    zh_ch_mark_stale_runs_start(h, job, &sc);
    while (sc.pending > 0 && uv_run(h->loop, UV_RUN_ONCE)) {
    }
    return sc.marked;
}

static void record_grace_over(uv_timer_t *t) { *(bool *)t->data = true; }

#define STREAM_PROBE_ANSWER "zhost: a chunked request body reached ClickHouse"

static void stream_probe_done(ch_req *r) {
    zh_ch_state *st = r->ud;
    zh_host *h = r->h;
    const zh_buf *b = &r->x->resp_body;
    size_t n = strlen(STREAM_PROBE_ANSWER);
    bool whole = r->ok && b->len >= n && !memcmp(b->data, STREAM_PROBE_ANSWER, n);
    st->stream_state = whole ? CH_STREAM_YES : CH_STREAM_NO;
    if (!whole && r->x->status == 0) {
        /* no answer at all (ClickHouse down): nothing learnt, ask again with a later batch */
        st->stream_state = CH_STREAM_UNKNOWN;
        st->stream_probe_after = zh_now_mono() + 30;
        ZH_DEBUG(NULL, "msg=\"could not ask whether chunked bodies reach ClickHouse\" error=\"%s\"",
                 r->error ? r->error : "");
    } else if (!whole)
        ZH_WARN(NULL, "msg=\"a chunked request body did not reach ClickHouse whole (a proxy in front of it?): "
                      "INSERTs are sent in one piece\" error=\"%s\"", r->error ? r->error : "unexpected answer");
    st->stream_probe = NULL;
    ch_req_free(r);
    if (whole) zh_sink_start_due_streams(h);
}

bool zh_ch_can_stream(zh_host *h) {
    zh_ch_state *st = h->ch;
    if (!st->stream_bytes) return false;
    if (st->stream_state != CH_STREAM_UNKNOWN) return st->stream_state == CH_STREAM_YES;
    if (zh_now_mono() < st->stream_probe_after) return false;
    st->stream_state = CH_STREAM_PROBING;
    ch_req *r = ch_req_new(h, NULL, NULL, 0, stream_probe_done, st);
    r->max_attempts = 1; /* an unreachable server: batches go whole, as before */
    zh_buf q;
    zh_buf_init(&q);
    zh_buf_adds(&q, "SELECT '" STREAM_PROBE_ANSWER "' FORMAT TabSeparatedRaw");
    zh_xfer_stream_body(r->x, &q, q.len);
    zh_xfer_stream_seal(r->x, &q);
    zh_buf_free(&q);
    st->stream_probe = r;
    ch_req_start(r);
    return false;
}

void zh_ch_shutdown(zh_host *h) {
    zh_ch_state *st = h->ch;
    if (!st) return;
    /* Questions nobody waits for any more (told to exit now): dropped without their callbacks,
     * whose owners may be gone already. */
    while (st->asyncs) {
        async_q *q = st->asyncs;
        st->asyncs = q->next;
        ch_req_abort(q->r);
        ch_req_free(q->r);
        free(q);
    }
    if (st->stream_probe) {
        ch_req_abort(st->stream_probe);
        ch_req_free(st->stream_probe);
        st->stream_probe = NULL;
    }
    if (st->records) {
        /* A run that ends fast can still have its "running" row in flight: give the run log a
         * moment, then spool what is left rather than lose it. */
        bool over = h->exiting_now; /* told to exit now: spool at once */
        uv_timer_t grace;
        uv_timer_init(h->loop, &grace);
        grace.data = &over;
        uv_timer_start(&grace, record_grace_over, 3000, 0);
        while (st->records && !over && uv_run(h->loop, UV_RUN_ONCE)) {
        }
        uv_timer_stop(&grace);
        uv_close((uv_handle_t *)&grace, NULL);
        while (st->records) {
            record_ctx *c = st->records;
            ch_req_abort(c->req);
            record_spool(h, c, "zhost exited before ClickHouse answered");
            if (c->done) c->done(c->ud, "zhost exited before ClickHouse answered");
            record_free(h, c);
        }
        uv_run(h->loop, UV_RUN_NOWAIT);
    }
    zh_sink_shutdown_all(h);
    free(st->url);
    free(st->user);
    free(st->password);
    free(st->database);
    free(st->bi_database);
    free(st->server_version);
    free(st->url_settings);
    free(st);
    h->ch = NULL;
}
