/* Unit tests for curl_uv.c: transfers on the uv loop against zh_httpd on loopback, and the
 * lifetime of each connection's uv_poll (one per connection, kept across kept-alive requests,
 * closed with its socket). */
#include "curl_uv.h"
#include "httpd.h"
#include "zt.h"
#include <stdio.h>
#include <stdlib.h>

static void answer(zh_http_req *req, void *ud) {
    (void)ud;
    char body[64];
    int n = snprintf(body, sizeof body, "hello %s", req->path);
    zh_httpd_respond(req, 200, "text/plain", NULL, body, (size_t)n);
}

typedef struct {
    uv_loop_t loop;
    zh_httpd *srv;
    zh_curl *curl;
    char url[64];
    int done, ok;
    uint64_t turns; /* loop iterations (a prepare handle counts them) */
    uv_prepare_t turn;
} fixture;

static void count_turn(uv_prepare_t *p) { ((fixture *)p->data)->turns++; }

static void setup(fixture *f, double server_timeout_s) {
    memset(f, 0, sizeof *f);
    uv_loop_init(&f->loop);
    zh_httpd_opts o = {.host = "127.0.0.1", .port = 0, .max_connections = 8, .timeout_s = server_timeout_s,
                       .max_head = 8192, .max_body = 8192, .handler = answer};
    char *err = NULL;
    f->srv = zh_httpd_start(&f->loop, &o, &err);
    ZT_CHECK(f->srv != NULL);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d/x", zh_httpd_port(f->srv));
    f->curl = zh_curl_new(&f->loop);
    uv_prepare_init(&f->loop, &f->turn);
    f->turn.data = f;
    uv_prepare_start(&f->turn, count_turn);
}

static void teardown(fixture *f) {
    zh_curl_free(f->curl);
    zh_httpd_close(f->srv);
    uv_close((uv_handle_t *)&f->turn, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    ZT_EQ_INT(uv_loop_close(&f->loop), 0); /* every handle (polls included) was closed */
}

static void request_done(zh_xfer *x) {
    fixture *f = x->ud;
    f->done++;
    if (x->result == CURLE_OK && x->status == 200 && x->resp_body.len == 8 && !memcmp(x->resp_body.data, "hello /x", 8))
        f->ok++;
    else
        fprintf(stderr, "request failed: %s, status %ld\n", zh_xfer_error(x), x->status);
    zh_xfer_free(x);
}

/* One request, run to its end on the loop. */
static void get(fixture *f, bool close_after) {
    zh_xfer *x = zh_xfer_new(f->curl);
    if (close_after) zh_xfer_add_header(x, "Connection: close");
    zh_xfer_set_request(x, "GET", f->url, NULL, 0);
    x->done = request_done;
    x->ud = f;
    int before = f->done;
    ZT_EQ_INT(zh_xfer_start(x), 0);
    while (f->done == before && uv_run(&f->loop, UV_RUN_ONCE)) {}
    ZT_EQ_INT(f->done, before + 1);
}

static void stop_loop(uv_timer_t *t) { (void)t; }

/* Runs the loop for ms milliseconds with nothing of ours to do. */
static void idle(fixture *f, uint64_t ms) {
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, stop_loop, ms, 0);
    while (uv_is_active((uv_handle_t *)&t) && uv_run(&f->loop, UV_RUN_ONCE)) {}
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void kept_alive_connection_keeps_its_poll(void) {
    fixture f;
    setup(&f, 10);
    for (int i = 0; i < 20; i++) get(&f, false);
    ZT_EQ_INT(f.ok, 20);
    ZT_EQ_INT(zh_httpd_stats_of(f.srv)->connections, 1);
    ZT_EQ_INT(zh_curl_polls_made(f.curl), 1); /* was one per request */
    teardown(&f);
}

static void closed_connections_close_their_polls(void) {
    /* Connection: close — curl closes each socket, the next one often gets the same descriptor:
     * a poll left behind for it would watch the wrong socket (or a closed one) */
    fixture f;
    setup(&f, 10);
    for (int i = 0; i < 10; i++) get(&f, true);
    ZT_EQ_INT(f.ok, 10);
    ZT_EQ_INT(zh_httpd_stats_of(f.srv)->connections, 10);
    ZT_EQ_INT(zh_curl_polls_made(f.curl), 10);
    teardown(&f);
}

static void server_closing_an_idle_connection(void) {
    /* The server drops the idle connection (its 50 ms timeout) while curl is not watching it: the
     * poll must stop instead of waking the loop for ever on the readable end of stream, and the
     * next request goes on a new connection. */
    fixture f;
    setup(&f, 0.05);
    get(&f, false);
    uint64_t turns_before = f.turns;
    idle(&f, 300);
    ZT_CHECK(zh_httpd_stats_of(f.srv)->timeouts >= 1);
    ZT_CHECK(f.turns - turns_before < 50); /* a level-triggered busy loop makes thousands */
    get(&f, false);
    ZT_EQ_INT(f.ok, 2);
    ZT_EQ_INT(zh_httpd_stats_of(f.srv)->connections, 2);
    ZT_EQ_INT(zh_curl_polls_made(f.curl), 2);
    teardown(&f);
}

static void idle_connections_closed_at_free(void) {
    /* zh_curl_free closes the cached connections: their polls close with them (teardown checks
     * that uv_loop_close finds no handle left) */
    fixture f;
    setup(&f, 10);
    get(&f, false);
    idle(&f, 20);
    ZT_EQ_INT(f.ok, 1);
    teardown(&f);
}

static void never_done(zh_xfer *x) {
    (void)x;
    ZT_CHECK(!"an aborted transfer completed");
}

typedef struct {
    zh_xfer *x;
    uint64_t polls;
    bool freed;
} abort_ctx;

/* Runs right after curl's own 0 ms timer in the same turn of the loop: curl has made the socket
 * and started its connect, libuv has not polled it yet. */
static void abort_now(uv_timer_t *t) {
    abort_ctx *a = t->data;
    ZT_CHECK(zh_curl_polls_made(a->x->curl) > a->polls); /* the connect is under way */
    zh_xfer_free(a->x);
    a->freed = true;
}

/* A transfer aborted while its connect is in progress, then freed: curl closes that socket itself
 * (not through CURLOPT_CLOSESOCKETFUNCTION), and the poll started for it must not outlive it.
 * libuv aborted the process (epoll_ctl EBADF) when it next polled the closed descriptor. */
static void aborted_while_connecting(void) {
    fixture f;
    setup(&f, 10);
    for (int round = 0; round < 10; round++) {
        abort_ctx a = {.x = zh_xfer_new(f.curl)};
        zh_xfer_set_request(a.x, "POST", f.url, "INSERT", 6);
        a.x->done = never_done;
        a.polls = zh_curl_polls_made(f.curl);
        ZT_EQ_INT(zh_xfer_start(a.x), 0);
        uv_timer_t t;
        uv_timer_init(&f.loop, &t);
        t.data = &a;
        uv_timer_start(&t, abort_now, 0, 0);
        while (!a.freed && uv_run(&f.loop, UV_RUN_ONCE)) {}
        uv_close((uv_handle_t *)&t, NULL);
        idle(&f, 5);
    }
    get(&f, false); /* the client still works */
    ZT_EQ_INT(f.ok, 1);
    teardown(&f);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ZT_RUN(kept_alive_connection_keeps_its_poll);
    ZT_RUN(closed_connections_close_their_polls);
    ZT_RUN(server_closing_an_idle_connection);
    ZT_RUN(idle_connections_closed_at_free);
    ZT_RUN(aborted_while_connecting);
    curl_global_cleanup();
    return ZT_DONE();
}
