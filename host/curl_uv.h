/* curl_uv.h — libcurl's multi interface driven by the uv loop, and zh_xfer, one HTTP transfer
 * with its request body, response status, headers and body collected in memory.
 * Both the `http` module and the ClickHouse client are built on zh_xfer. */
#ifndef ZH_CURL_UV_H
#define ZH_CURL_UV_H

#include "zh.h"
#include <curl/curl.h>

zh_curl *zh_curl_new(uv_loop_t *loop);
/* Every transfer must have been finished or aborted before. Handles close asynchronously:
 * run the loop afterwards to release them. */
void zh_curl_free(zh_curl *c);
/* Transfers in flight. */
int zh_curl_active(zh_curl *c);
/* uv_polls made so far: one per connection (kept-alive ones are reused), one per other socket. */
uint64_t zh_curl_polls_made(const zh_curl *c);

typedef struct zh_xfer zh_xfer;
typedef void (*zh_xfer_done_fn)(zh_xfer *x);

struct zh_xfer {
    zh_curl *curl;
    CURL *easy;
    struct curl_slist *req_headers;
    zh_buf req_body;          /* kept across retries so a retry re-sends it */
    /* A streamed request body (zh_xfer_stream_body): bytes [0, stream_avail) of *stream_src may
     * be sent; past them curl is paused until more come or the body is sealed. */
    const zh_buf *stream_src;
    size_t stream_avail, stream_sent;
    bool streaming, stream_sealed, stream_paused;
    long status;              /* HTTP status of the final response, 0 when none */
    zh_buf resp_headers;      /* raw header lines of the final response */
    zh_buf resp_body;
    size_t max_body;          /* response bodies larger than this fail the transfer (0 = 256 MiB) */
    bool body_too_large;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
    bool running;
    double started_at;        /* monotonic */
    zh_xfer_done_fn done;     /* called from the loop, never inside a curl callback */
    void *ud;
};

/* A transfer with a fresh easy handle and the defaults every caller wants (keep-alive, HTTP/2
 * over TLS when offered, gzip/deflate, no signals, redirects off). */
zh_xfer *zh_xfer_new(zh_curl *c);
void zh_xfer_add_header(zh_xfer *x, const char *line);
/* Sets method and body; body may be NULL. A body on GET is sent as it is (QTickets needs it). */
void zh_xfer_set_request(zh_xfer *x, const char *method, const char *url, const char *body, size_t body_len);
/* Exchanges the request body (set by zh_xfer_set_request, before the transfer starts) with *b: a
 * multi-megabyte INSERT is handed over instead of copied, and its buffer handed back after. */
void zh_xfer_swap_request_body(zh_xfer *x, zh_buf *b);
/* Sends the request body as it is being written (chunked): bytes [0, avail) of *src now, more as
 * zh_xfer_stream_avail() reports them, the end when zh_xfer_stream_seal() is called. *src may be
 * reallocated while it grows; it must stay alive until sealed. Set before the transfer starts. */
void zh_xfer_stream_body(zh_xfer *x, const zh_buf *src, size_t avail);
void zh_xfer_stream_avail(zh_xfer *x, size_t avail);
/* The body is complete: it is taken from *src into the request (a retry re-sends it from there),
 * and *src gets the request's empty buffer. */
void zh_xfer_stream_seal(zh_xfer *x, zh_buf *src);
/* Clears the response so the same transfer can be started again (retries). */
void zh_xfer_reset_response(zh_xfer *x);
int zh_xfer_start(zh_xfer *x);
/* Stops a running transfer without calling done. */
void zh_xfer_abort(zh_xfer *x);
void zh_xfer_free(zh_xfer *x);
/* Case-insensitive response header lookup; returns a malloc'd copy or NULL. */
char *zh_xfer_header(const zh_xfer *x, const char *name);
/* Calls fn for every response header (name, value), names lower-cased. */
void zh_xfer_each_header(const zh_xfer *x, void (*fn)(void *ud, const char *name, const char *value), void *ud);
/* A short description of a failed transfer ("timeout after 30 s", "connection refused", ...). */
const char *zh_xfer_error(const zh_xfer *x);

#endif
