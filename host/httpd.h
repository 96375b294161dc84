/* httpd.h — a small HTTP/1.1 server on the uv loop for the health endpoints: bounded
 * connections, bounded request size, a deadline for every request and response, keep-alive,
 * GET/HEAD/POST with Content-Length (no chunked bodies). Handlers may answer later (after a
 * ClickHouse query); a request whose client left is answered into the void and freed. */
#ifndef ZH_HTTPD_H
#define ZH_HTTPD_H

#include "zh.h"

typedef struct zh_httpd zh_httpd;

typedef struct zh_http_req {
    zh_httpd *srv;
    struct hconn *conn;       /* NULL once the client has gone */
    char method[8];
    char *path;               /* target without the query, as sent */
    char *query;              /* after '?', or "" */
    char *body;
    size_t body_len;
    char accept[128];         /* Accept header (truncated) */
} zh_http_req;

typedef void (*zh_httpd_handler)(zh_http_req *req, void *ud);

typedef struct zh_httpd_opts {
    const char *host;
    int port;                 /* 0 = any free port (tests) */
    int max_connections;
    double timeout_s;         /* to receive a request, and to send a response */
    size_t max_head, max_body;
    zh_httpd_handler handler;
    void *ud;
} zh_httpd_opts;

typedef struct zh_httpd_stats {
    uint64_t connections, rejected, requests, bad_requests, timeouts;
    int open;
} zh_httpd_stats;

zh_httpd *zh_httpd_start(uv_loop_t *loop, const zh_httpd_opts *o, char **err);
int zh_httpd_port(zh_httpd *s);
const zh_httpd_stats *zh_httpd_stats_of(zh_httpd *s);
/* Sends the answer and frees req. extra_headers: "Name: value\r\n" lines, or NULL. */
void zh_httpd_respond(zh_http_req *req, int status, const char *content_type, const char *extra_headers,
                      const char *body, size_t len);
/* Stops listening and closes every connection; requests still being handled are orphaned
 * (zh_httpd_respond frees them). Frees the server once its handles are closed. */
void zh_httpd_close(zh_httpd *s);

#endif
