/* httpd.c — owns the HTTP/1.1 transport of the health server: accepting (at most
 * max_connections at once; more are closed at once), a bounded hand-written request parser, one
 * request at a time per connection (pipelined requests wait their turn), deadlines so a slow or
 * silent client only holds its own connection, and keep-alive.
 *
 * Memory: a connection owns its buffer and handles (freed in the close callbacks); a request is
 * owned by the handler from dispatch until zh_httpd_respond, which frees it whether or not the
 * connection still exists. */
#include "httpd.h"
#include "log.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    zh_httpd *srv;
    char *buf;
    size_t len, cap;
    size_t consumed;          /* bytes of the request being handled, dropped after the answer */
    zh_http_req *req;
    bool keep_alive, closing, reading;
    int handles;              /* open uv handles (tcp, timer) */
    struct hconn *prev, *next;
} hconn;

struct zh_httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    zh_httpd_opts o;
    char host[64];
    hconn *conns;
    zh_httpd_stats st;
    bool closing, listener_closed;
};

static void conn_close(hconn *c);

static void srv_maybe_free(zh_httpd *s) {
    if (s->closing && s->listener_closed && !s->conns) free(s);
}

static void listener_closed(uv_handle_t *hd) {
    zh_httpd *s = hd->data;
    s->listener_closed = true;
    srv_maybe_free(s);
}

static void conn_handle_closed(uv_handle_t *hd) {
    hconn *c = hd->data;
    if (--c->handles > 0) return;
    zh_httpd *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->st.open--;
    free(c->buf);
    free(c);
    srv_maybe_free(s);
}

static void conn_close(hconn *c) {
    if (c->closing) return;
    c->closing = true;
    if (c->req) c->req->conn = NULL; /* the handler answers into the void */
    c->req = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void on_timeout(uv_timer_t *t) {
    hconn *c = t->data;
    c->srv->st.timeouts++;
    conn_close(c);
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

typedef struct wreq {
    uv_write_t w;
    hconn *c;
    char *data;
    bool close_after;
} wreq;

static void try_parse(hconn *c);
static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status) {
    wreq *wr = (wreq *)w;
    hconn *c = wr->c;
    bool close_after = wr->close_after;
    free(wr->data);
    free(wr);
    if (c->closing) return;
    if (status < 0 || close_after) {
        conn_close(c);
        return;
    }
    /* Keep-alive: drop the answered request, wait for the next one (or parse a pipelined one). */
    memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
    c->len -= c->consumed;
    c->consumed = 0;
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->srv->o.timeout_s * 1000), 0);
    if (!c->reading) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    try_parse(c);
}

static void send_raw(hconn *c, int status, const char *ctype, const char *extra, const char *body, size_t len,
                     bool head_only, bool close_after) {
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nAccess-Control-Allow-Origin: *\r\n"
                  "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: %s\r\n%s\r\n",
                  status, reason(status), ctype, len, close_after ? "close" : "keep-alive", extra ? extra : "");
    if (!head_only && len) zh_buf_add(&b, body, len);
    wreq *wr = zh_xcalloc(1, sizeof *wr);
    wr->c = c;
    wr->data = b.data;
    wr->close_after = close_after;
    uv_buf_t ub = uv_buf_init(b.data, (unsigned)b.len);
    /* The response deadline: a client that does not read cannot keep the connection. */
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->srv->o.timeout_s * 1000), 0);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0) {
        free(wr->data);
        free(wr);
        conn_close(c);
    }
}

static void reject(hconn *c, int status, const char *msg) {
    c->srv->st.bad_requests++;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    char body[256];
    int n = snprintf(body, sizeof body, "{\"status\":\"error\",\"error\":\"%s\"}\n", msg);
    send_raw(c, status, "application/json", NULL, body, (size_t)n, false, true);
}

static void req_free(zh_http_req *r) {
    free(r->path);
    free(r->query);
    free(r->body);
    free(r);
}

void zh_httpd_respond(zh_http_req *req, int status, const char *ctype, const char *extra, const char *body, size_t len) {
    hconn *c = req->conn;
    bool head = !strcmp(req->method, "HEAD");
    req_free(req);
    if (!c || c->closing) return;
    c->req = NULL;
    bool close_after = !c->keep_alive || c->srv->closing;
    send_raw(c, status, ctype, extra, body, len, head, close_after);
}

static bool tchar(int ch) { return isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch); }

/* Parses what is buffered. Dispatches at most one request; answers malformed ones with 4xx. */
static void try_parse(hconn *c) {
    zh_httpd *s = c->srv;
    if (c->req || c->closing || c->consumed) return;
    char *end = NULL;
    for (size_t i = 0; i + 3 < c->len; i++) {
        if (c->buf[i] == '\r' && c->buf[i + 1] == '\n' && c->buf[i + 2] == '\r' && c->buf[i + 3] == '\n') {
            end = c->buf + i;
            break;
        }
    }
    if (!end) {
        if (c->len > s->o.max_head) reject(c, 431, "request head too large");
        return;
    }
    size_t head_len = (size_t)(end - c->buf) + 4;
    if (head_len > s->o.max_head) {
        reject(c, 431, "request head too large");
        return;
    }
    /* Request line. */
    const char *p = c->buf, *hend = end;
    char method[8];
    size_t ml = 0;
    while (p < hend && *p != ' ' && ml < sizeof method - 1) {
        if (!isupper((unsigned char)*p)) {
            reject(c, 400, "bad request line");
            return;
        }
        method[ml++] = *p++;
    }
    method[ml] = 0;
    if (!ml || p >= hend || *p != ' ') {
        reject(c, 400, "bad request line");
        return;
    }
    p++;
    const char *target = p;
    while (p < hend && *p != ' ') {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            reject(c, 400, "bad request target");
            return;
        }
        p++;
    }
    size_t tl = (size_t)(p - target);
    if (!tl || target[0] != '/' || tl > 2048 || p >= hend) {
        reject(c, 400, "bad request target");
        return;
    }
    p++;
    bool http10;
    if (hend - p >= 10 && !strncmp(p, "HTTP/1.1\r\n", 10)) http10 = false;
    else if (hend - p >= 10 && !strncmp(p, "HTTP/1.0\r\n", 10)) http10 = true;
    else if (hend - p == 8 && (!strncmp(p, "HTTP/1.1", 8) || !strncmp(p, "HTTP/1.0", 8))) http10 = p[7] == '0';
    else {
        reject(c, 400, "bad HTTP version");
        return;
    }
    const char *line = memchr(p, '\n', (size_t)(hend - p));
    line = line ? line + 1 : hend;
    /* Headers. */
    long long clen = -1;
    bool keep = !http10, chunked = false;
    char accept[128] = "";
    int nh = 0;
    while (line < hend) {
        const char *eol = line;
        while (eol < hend && *eol != '\r') eol++;
        if (eol < hend && eol[1] != '\n') {
            reject(c, 400, "bad header line");
            return;
        }
        if (++nh > 100) {
            reject(c, 431, "too many headers");
            return;
        }
        const char *colon = line;
        while (colon < eol && tchar((unsigned char)*colon)) colon++;
        if (colon == line || colon >= eol || *colon != ':') {
            reject(c, 400, "bad header line");
            return;
        }
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t')) v++;
        const char *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t vl = (size_t)(ve - v);
        for (const char *q = v; q < ve; q++) {
            if ((unsigned char)*q < 0x20 && *q != '\t') {
                reject(c, 400, "bad header value");
                return;
            }
        }
        if (nl == 14 && !strncasecmp(line, "Content-Length", 14)) {
            long long n = 0;
            if (!vl || vl > 12) {
                reject(c, 400, "bad Content-Length");
                return;
            }
            for (size_t i = 0; i < vl; i++) {
                if (!isdigit((unsigned char)v[i])) {
                    reject(c, 400, "bad Content-Length");
                    return;
                }
                n = n * 10 + (v[i] - '0');
            }
            if (clen >= 0 && clen != n) {
                reject(c, 400, "conflicting Content-Length");
                return;
            }
            clen = n;
        } else if (nl == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
            chunked = true;
        } else if (nl == 10 && !strncasecmp(line, "Connection", 10)) {
            for (size_t i = 0; i + 5 <= vl; i++)
                if (!strncasecmp(v + i, "close", 5)) keep = false;
            for (size_t i = 0; i + 10 <= vl; i++)
                if (!strncasecmp(v + i, "keep-alive", 10)) keep = true;
        } else if (nl == 6 && !strncasecmp(line, "Accept", 6)) {
            snprintf(accept, sizeof accept, "%.*s", (int)(vl < sizeof accept ? vl : sizeof accept - 1), v);
        }
        line = eol + 2;
    }
    if (chunked) {
        reject(c, 501, "chunked request bodies are not supported");
        return;
    }
    size_t blen = clen > 0 ? (size_t)clen : 0;
    if (blen > s->o.max_body) {
        reject(c, 413, "request body too large");
        return;
    }
    if (c->len < head_len + blen) return; /* the body is still coming */
    zh_http_req *r = zh_xcalloc(1, sizeof *r);
    r->srv = s;
    r->conn = c;
    snprintf(r->method, sizeof r->method, "%s", method);
    const char *qm = memchr(target, '?', tl);
    size_t pl = qm ? (size_t)(qm - target) : tl;
    r->path = zh_xstrndup(target, pl);
    r->query = qm ? zh_xstrndup(qm + 1, tl - pl - 1) : zh_xstrdup("");
    r->body = zh_xstrndup(c->buf + head_len, blen);
    r->body_len = blen;
    snprintf(r->accept, sizeof r->accept, "%s", accept);
    c->keep_alive = keep;
    c->consumed = head_len + blen;
    c->req = r;
    s->st.requests++;
    /* One request at a time: stop reading until it is answered (bounds pipelining). */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    uv_timer_stop(&c->timer);
    s->o.handler(r, s->o.ud);
}

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
    hconn *c = hd->data;
    (void)sz;
    size_t limit = c->srv->o.max_head + c->srv->o.max_body + 1;
    if (c->cap < limit) {
        c->cap = limit;
        c->buf = zh_xrealloc(c->buf, c->cap);
    }
    size_t room = c->cap - c->len;
    buf->base = c->buf + c->len;
    buf->len = room;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    hconn *c = st->data;
    (void)buf;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0) return;
    c->len += (size_t)n;
    if (c->len >= c->cap) {
        /* Full and still no complete request: too large either way. */
        try_parse(c);
        if (!c->req && !c->closing && c->reading) reject(c, 413, "request too large");
        return;
    }
    try_parse(c);
}

static void on_connection(uv_stream_t *server, int status) {
    zh_httpd *s = server->data;
    if (status < 0) return;
    hconn *c = zh_xcalloc(1, sizeof *c);
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->st.open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    s->st.connections++;
    if (s->st.open > s->o.max_connections || s->closing) {
        /* Over the bound: close at once; the client retries. */
        s->st.rejected++;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(s->o.timeout_s * 1000), 0);
}

zh_httpd *zh_httpd_start(uv_loop_t *loop, const zh_httpd_opts *o, char **err) {
    zh_httpd *s = zh_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->o = *o;
    snprintf(s->host, sizeof s->host, "%s", o->host ? o->host : "127.0.0.1");
    s->o.host = s->host;
    if (s->o.max_connections <= 0) s->o.max_connections = 256;
    if (s->o.timeout_s <= 0) s->o.timeout_s = 10;
    if (!s->o.max_head) s->o.max_head = 8192;
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(s->host, o->port, (struct sockaddr_in *)&addr);
    if (rc != 0) rc = uv_ip6_addr(s->host, o->port, (struct sockaddr_in6 *)&addr);
    if (rc == 0) {
        uv_tcp_init(loop, &s->listener);
        s->listener.data = s;
        rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
        if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
        if (rc != 0) {
            zh_buf b;
            zh_buf_init(&b);
            zh_buf_printf(&b, "cannot listen on %s:%d: %s", s->host, o->port, uv_strerror(rc));
            *err = b.data;
            s->closing = true;
            uv_close((uv_handle_t *)&s->listener, listener_closed);
            return NULL;
        }
        return s;
    }
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "bad listen address '%s'", s->host);
    *err = b.data;
    free(s);
    return NULL;
}

int zh_httpd_port(zh_httpd *s) {
    struct sockaddr_storage a;
    int len = sizeof a;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&a, &len) != 0) return -1;
    if (a.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&a)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
}

const zh_httpd_stats *zh_httpd_stats_of(zh_httpd *s) { return &s->st; }

void zh_httpd_close(zh_httpd *s) {
    if (!s || s->closing) return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, listener_closed);
    for (hconn *c = s->conns; c; c = c->next) conn_close(c);
}
