/* curl_uv.c — owns the curl multi handle and its uv wiring (one uv_timer, one uv_poll per socket,
 * as in curl's multi-uv example) and zh_xfer, one in-memory HTTP transfer.
 *
 * A connection's uv_poll lives as long as its socket, not as long as one request on it: curl
 * removes a kept-alive socket from its watch list after every response, and closing and making
 * the poll again each time cost ~6 system calls per request (ioctl, epoll_ctl add/del/mod; a
 * 100,000-order load made 11,000 epoll_ctl calls). Sockets curl opens for connections come from
 * open_socket() and go through close_socket(), which closes the poll before the descriptor; any
 * other socket curl watches (its resolver's wake-up pipe) is unwatched at once, as before.
 *
 * Completions are delivered from check_done(), called after curl_multi_socket_action returns,
 * so a done callback may start new transfers (retries) without re-entering curl. */
#include "curl_uv.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct zh_curl {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    int active;
    bool closing;
    /* Indexed by descriptor: the connection sockets curl opened (open_socket) and their polls. */
    struct sock_ctx **socks;
    size_t nsocks;
    uint64_t polls_made; /* uv_polls initialised, for the tests */
};

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    zh_curl *c;
    bool connection; /* opened by open_socket: kept until close_socket */
    int events;      /* what the poll waits for now (UV_READABLE|UV_WRITABLE) */
    bool watched;    /* curl wants to hear about it; false between requests */
} sock_ctx;

static sock_ctx **sock_slot(zh_curl *c, curl_socket_t fd, bool grow) {
    if (fd < 0) return NULL;
    if ((size_t)fd >= c->nsocks) {
        if (!grow) return NULL;
        size_t n = c->nsocks ? c->nsocks : 64;
        while (n <= (size_t)fd) n *= 2;
        c->socks = zh_xrealloc(c->socks, n * sizeof *c->socks);
        memset(c->socks + c->nsocks, 0, (n - c->nsocks) * sizeof *c->socks);
        c->nsocks = n;
    }
    return &c->socks[fd];
}

static void check_done(zh_curl *c) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        zh_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(c->multi, easy);
        c->active--;
        if (!x) continue;
        x->running = false;
        x->result = x->body_too_large ? CURLE_WRITE_ERROR : rc;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->status);
        if (x->done) x->done(x);
    }
}

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_ctx *sc = p->data;
    zh_curl *c = sc->c;
    if (!sc->watched) {
        /* an idle kept-alive connection became readable (the server closed it): curl is not
         * watching it, and finds out when it next checks the connection */
        uv_poll_stop(&sc->poll);
        sc->events = 0;
        return;
    }
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR; /* curl must hear about socket errors (curl/curl#14254) */
    } else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(c->multi, sc->fd, flags, &running);
    check_done(c);
}

static void on_timer(uv_timer_t *t) {
    zh_curl *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static void sock_closed(uv_handle_t *h) { free(h->data); }

static void close_poll(sock_ctx *sc) {
    /* curl may still hold the pointer when it closes a socket it watches; not while it is being
     * cleaned up (zh_curl_free), when the multi handle must not be used */
    if (sc->watched && !sc->c->closing) curl_multi_assign(sc->c->multi, sc->fd, NULL);
    sc->watched = false;
    if (sc->connection) {
        sock_ctx **slot = sock_slot(sc->c, sc->fd, false);
        if (slot && *slot == sc) *slot = NULL;
    }
    uv_poll_stop(&sc->poll);
    uv_close((uv_handle_t *)&sc->poll, sock_closed);
}

/* A poll for fd, not started; NULL when libuv refuses the descriptor. */
static sock_ctx *poll_new(zh_curl *c, curl_socket_t fd, bool connection) {
    sock_ctx *sc = zh_xcalloc(1, sizeof *sc);
    sc->fd = fd;
    sc->c = c;
    sc->connection = connection;
    if (uv_poll_init_socket(c->loop, &sc->poll, fd) != 0) {
        free(sc);
        return NULL;
    }
    sc->poll.data = sc;
    c->polls_made++;
    return sc;
}

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
    zh_curl *c = clientp;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd == CURL_SOCKET_BAD || purpose != CURLSOCKTYPE_IPCXN) return fd;
    sock_ctx **slot = sock_slot(c, fd, true);
    if (*slot) close_poll(*slot); /* a descriptor closed behind our back; cannot happen via curl */
    sock_ctx *sc = poll_new(c, fd, true);
    if (!sc) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    *slot = sc;
    return fd;
}

static int close_socket(void *clientp, curl_socket_t fd) {
    zh_curl *c = clientp;
    sock_ctx **slot = sock_slot(c, fd, false);
    /* the poll goes first: libuv must not watch a closed descriptor (it may be reused at once) */
    if (slot && *slot) close_poll(*slot);
    return close(fd);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp) {
    (void)easy;
    zh_curl *c = userp;
    sock_ctx *sc = socketp;
    if (!sc) {
        sock_ctx **slot = sock_slot(c, s, false);
        if (slot) sc = *slot;
    }
    if (action == CURL_POLL_REMOVE) {
        if (!sc) return 0;
        curl_multi_assign(c->multi, s, NULL);
        if (sc->connection) {
            /* kept for the next request on this connection; stopped lazily (on_poll) */
            sc->watched = false;
        } else {
            close_poll(sc);
        }
        return 0;
    }
    if (c->closing) return 0;
    if (!sc && !(sc = poll_new(c, s, false))) return -1;
    if (!sc->watched) {
        sc->watched = true;
        curl_multi_assign(c->multi, s, sc);
    }
    int ev = 0;
    if (action & CURL_POLL_IN) ev |= UV_READABLE;
    if (action & CURL_POLL_OUT) ev |= UV_WRITABLE;
    /* uv_poll_start always re-arms (two epoll_ctl calls): only when the events change */
    if (ev != sc->events || !uv_is_active((uv_handle_t *)&sc->poll)) {
        uv_poll_start(&sc->poll, ev, on_poll);
        sc->events = ev;
    }
    return 0;
}

static int on_timeout(CURLM *multi, long ms, void *userp) {
    (void)multi;
    zh_curl *c = userp;
    if (ms < 0) {
        uv_timer_stop(&c->timer);
    } else {
        /* 0 means "as soon as possible": the next loop turn, never from inside this callback. */
        uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
    }
    return 0;
}

zh_curl *zh_curl_new(uv_loop_t *loop) {
    zh_curl *c = zh_xcalloc(1, sizeof *c);
    c->loop = loop;
    c->multi = curl_multi_init();
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 128L);
    return c;
}

static void timer_closed(uv_handle_t *h) { free(h->data); }

void zh_curl_free(zh_curl *c) {
    if (!c) return;
    c->closing = true;
    curl_multi_cleanup(c->multi); /* closes cached connections: close_socket, on_socket REMOVE */
    for (size_t i = 0; i < c->nsocks; i++)
        if (c->socks[i]) close_poll(c->socks[i]); /* none should be left: curl closed them all */
    free(c->socks);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, timer_closed);
}

int zh_curl_active(zh_curl *c) { return c->active; }

uint64_t zh_curl_polls_made(const zh_curl *c) { return c->polls_made; }

/* ---- zh_xfer ---- */

static size_t on_body(char *ptr, size_t size, size_t n, void *ud) {
    zh_xfer *x = ud;
    size_t len = size * n;
    size_t cap = x->max_body ? x->max_body : (size_t)256 << 20;
    if (x->resp_body.len + len > cap) {
        x->body_too_large = true;
        return 0;
    }
    if (!x->resp_body.cap) {
        /* First piece: size the buffer from Content-Length, so a page is not regrown (and
         * copied) a dozen times on its way in. */
        curl_off_t cl = -1;
        if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl > 0 &&
            (size_t)cl <= cap && cl <= ((curl_off_t)64 << 20))
            zh_buf_reserve(&x->resp_body, (size_t)cl);
    }
    zh_buf_add(&x->resp_body, ptr, len);
    return len;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *ud) {
    zh_xfer *x = ud;
    size_t len = size * n;
    /* A new status line starts a new response (100 Continue, redirects): keep only the last. */
    if (len >= 5 && !strncmp(ptr, "HTTP/", 5)) x->resp_headers.len = 0;
    zh_buf_add(&x->resp_headers, ptr, len);
    return len;
}

zh_xfer *zh_xfer_new(zh_curl *c) {
    zh_xfer *x = zh_xcalloc(1, sizeof *x);
    x->curl = c;
    x->easy = curl_easy_init();
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* 128 KiB reads instead of 16 KiB: a 120 KB page arrives in one or two callbacks. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 128L * 1024);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "zhost/" ZH_VERSION);
    zh_buf_init(&x->req_body);
    zh_buf_init(&x->resp_headers);
    zh_buf_init(&x->resp_body);
    return x;
}

void zh_xfer_add_header(zh_xfer *x, const char *line) {
    x->req_headers = curl_slist_append(x->req_headers, line);
}

void zh_xfer_set_request(zh_xfer *x, const char *method, const char *url, const char *body, size_t body_len) {
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    x->req_body.len = 0;
    if (body) {
        zh_buf_add(&x->req_body, body, body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req_body.data);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        /* curl would send "Expect: 100-continue" for large bodies and wait a second. */
        zh_xfer_add_header(x, "Expect:");
    }
    if (!strcmp(method, "GET") && !body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(method, "POST")) {
        if (!body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        }
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
}

void zh_xfer_swap_request_body(zh_xfer *x, zh_buf *b) {
    zh_buf t = x->req_body;
    x->req_body = *b;
    *b = t;
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->req_body.data ? x->req_body.data : "");
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req_body.len);
}

static size_t on_read(char *ptr, size_t size, size_t n, void *ud) {
    zh_xfer *x = ud;
    size_t room = size * n;
    const zh_buf *src = x->stream_sealed ? &x->req_body : x->stream_src;
    size_t avail = x->stream_sealed ? x->req_body.len : x->stream_avail;
    if (x->stream_sent < avail) {
        size_t k = avail - x->stream_sent < room ? avail - x->stream_sent : room;
        memcpy(ptr, src->data + x->stream_sent, k);
        x->stream_sent += k;
        return k;
    }
    if (x->stream_sealed) return 0;
    x->stream_paused = true;
    return CURL_READFUNC_PAUSE;
}

void zh_xfer_stream_body(zh_xfer *x, const zh_buf *src, size_t avail) {
    CURL *e = x->easy;
    x->streaming = true;
    x->stream_sealed = false;
    x->stream_src = src;
    x->stream_avail = avail;
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1); /* unknown: chunked */
    /* Bigger reads than curl's 64 KiB: fewer trips through on_read for a multi-megabyte INSERT. */
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
}

static void stream_resume(zh_xfer *x) {
    if (!x->stream_paused || !x->running) return;
    x->stream_paused = false;
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

void zh_xfer_stream_avail(zh_xfer *x, size_t avail) {
    x->stream_avail = avail;
    if (x->stream_sent < avail) stream_resume(x);
}

void zh_xfer_stream_seal(zh_xfer *x, zh_buf *src) {
    zh_buf t = x->req_body;
    x->req_body = *src;
    *src = t;
    src->len = 0;
    x->stream_src = NULL;
    x->stream_sealed = true;
    stream_resume(x);
}

void zh_xfer_reset_response(zh_xfer *x) {
    x->status = 0;
    x->resp_headers.len = 0;
    x->resp_body.len = 0;
    x->body_too_large = false;
    x->result = CURLE_OK;
    x->errbuf[0] = 0;
}

int zh_xfer_start(zh_xfer *x) {
    zh_xfer_reset_response(x);
    /* a retry sends a streamed body again from its start */
    x->stream_sent = 0;
    x->stream_paused = false;
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->req_headers);
    x->started_at = zh_now_mono();
    CURLMcode rc = curl_multi_add_handle(x->curl->multi, x->easy);
    if (rc != CURLM_OK) return -1;
    x->running = true;
    x->curl->active++;
    return 0;
}

/* A transfer removed while its connect is still in progress: curl (7.88) closes that socket
 * itself, without CURLOPT_CLOSESOCKETFUNCTION, after telling us CURL_POLL_REMOVE, which keeps a
 * connection's poll for its next request. The poll would then watch a closed descriptor, and
 * libuv aborts the process when epoll_ctl refuses it (EBADF). So after a removal, polls whose
 * descriptor is gone are closed; nothing can have reused the number in between. */
static void close_polls_of_closed_sockets(zh_curl *c) {
    for (size_t fd = 0; fd < c->nsocks; fd++)
        if (c->socks[fd] && fcntl((int)fd, F_GETFD) == -1 && errno == EBADF) close_poll(c->socks[fd]);
}

void zh_xfer_abort(zh_xfer *x) {
    if (!x->running) return;
    curl_multi_remove_handle(x->curl->multi, x->easy);
    x->running = false;
    x->curl->active--;
    close_polls_of_closed_sockets(x->curl);
}

void zh_xfer_free(zh_xfer *x) {
    if (!x) return;
    zh_xfer_abort(x);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->req_headers);
    zh_buf_free(&x->req_body);
    zh_buf_free(&x->resp_headers);
    zh_buf_free(&x->resp_body);
    free(x);
}

void zh_xfer_each_header(const zh_xfer *x, void (*fn)(void *ud, const char *name, const char *value), void *ud) {
    const char *p = x->resp_headers.data, *end = p + x->resp_headers.len;
    if (!p) return;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon && strncmp(p, "HTTP/", 5) != 0) {
            char name[128];
            size_t nl = (size_t)(colon - p);
            if (nl < sizeof name) {
                for (size_t i = 0; i < nl; i++) name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
                name[nl] = 0;
                const char *v = colon + 1, *ve = eol;
                while (v < ve && (*v == ' ' || *v == '\t')) v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
                char *val = zh_xstrndup(v, (size_t)(ve - v));
                fn(ud, name, val);
                free(val);
            }
        }
        p = eol + 1;
    }
}

struct find_ctx {
    const char *name;
    char *found;
};

static void find_one(void *ud, const char *name, const char *value) {
    struct find_ctx *f = ud;
    if (!f->found && !strcasecmp(name, f->name)) f->found = zh_xstrdup(value);
}

char *zh_xfer_header(const zh_xfer *x, const char *name) {
    struct find_ctx f = {name, NULL};
    zh_xfer_each_header(x, find_one, &f);
    return f.found;
}

const char *zh_xfer_error(const zh_xfer *x) {
    if (x->body_too_large) return "response body too large";
    if (x->result == CURLE_OPERATION_TIMEDOUT) return "timeout";
    if (x->errbuf[0]) return x->errbuf;
    return curl_easy_strerror(x->result);
}
