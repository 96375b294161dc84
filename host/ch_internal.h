/* ch_internal.h — what the ClickHouse files (clickhouse.c, rowenc.c, sink.c, spool.c, l_ch.c, and
 * backup.c, which streams Native dumps through ch_req with its own curl callbacks) share among
 * themselves; nothing outside them includes it. Everyone else uses clickhouse.h. */
#ifndef ZH_CH_INTERNAL_H
#define ZH_CH_INTERNAL_H

#include "clickhouse.h"
#include "curl_uv.h"

typedef struct ch_req ch_req;
typedef void (*ch_req_done_fn)(ch_req *r);

/* One statement sent to ClickHouse, retried on connection errors and 5xx with full-jitter
 * backoff. The body is kept, so a retry on a reset keep-alive connection re-sends it. */
struct ch_req {
    zh_host *h;
    zh_xfer *x;
    int attempt, max_attempts;
    bool quiet_no_retry;      /* no retry while ClickHouse is silent (zh_ch_state.silent): run-log rows */
    uv_timer_t timer;         /* backoff; closed by ch_req_free */
    bool ok;
    int ch_code;              /* ClickHouse error code, 0 when none */
    char *error;              /* one-line error, NULL on success */
    ch_req_done_fn done;
    void *ud;
};

typedef struct ch_column {
    char *name;
    size_t name_len;
    char *json_key;           /* the name as a JSON string plus ':', written before every value */
    size_t json_key_len;
    char *type;               /* as DESCRIBE prints it */
    char *default_expr;       /* DEFAULT/MATERIALIZED expression, or NULL */
    bool materialized;        /* MATERIALIZED/ALIAS: never sent */
    int kind;                 /* enum ch_kind, from the type (rowenc.c) */
    int elem_kind;            /* for arrays */
    bool nullable, is_unsigned;
    int scale;                /* Decimal's (also an array's elements'): fraction digits, else -1 */
} ch_column;

enum ch_kind { CH_OTHER, CH_INT, CH_FLOAT, CH_DECIMAL, CH_STRING, CH_DATE, CH_DATETIME, CH_UUID, CH_ENUM, CH_BOOL, CH_ARRAY };
/* Sets kind/elem_kind/nullable/is_unsigned from c->type. */
void zh_rowenc_classify(ch_column *c);
/* A value on its way into a column, wherever it came from (sink:add's Lua value or a row
 * template's JSON value). Strings are not owned. */
typedef struct zh_scalar {
    enum { ZS_INT, ZS_DOUBLE, ZS_STRING, ZS_BOOL } type;
    long long i;
    double d;
    const char *s;
    size_t n;
    bool b;
} zh_scalar;
/* Appends v encoded for a column of `kind` (enum ch_kind). Returns NULL, or a message in errbuf. */
/* A float into a Decimal column is rounded to its `scale` (-1: unknown, kept). */
const char *zh_rowenc_scalar(const zh_scalar *v, int kind, bool is_unsigned, int scale, zh_buf *out, char *errbuf,
                             size_t errlen);
/* Appends s as a JSON string (quotes and escapes). */
void zh_rowenc_json_string(zh_buf *b, const char *s, size_t n);

typedef struct ch_schema {
    char *table;              /* db.table */
    ch_column *cols;
    int ncols;
} ch_schema;
/* Appends the Lua value at idx (not nil, not json.null) encoded for column c. */
const char *zh_rowenc_value(lua_State *L, int idx, const ch_column *c, zh_buf *out, char *errbuf, size_t errlen);
/* Appends the value ClickHouse 18.16 would not fill itself for each column of s that seen[] says
 * was not written (DEFAULT now()), each preceded by ',' unless *first. */
void zh_rowenc_fill_defaults(const ch_schema *s, const bool *seen, bool *first, zh_buf *out);

struct zh_sink;

typedef struct zh_ch_state {
    char *url;                /* base URL ending in '/' */
    char *user, *password, *database, *bi_database;
    bool verify_tls;
    int max_attempts;
    double backoff_base, backoff_cap;
    size_t stream_bytes;      /* a batch this large is streamed (sink.c); 0: never */
    double stream_max_open_s; /* a stream's body ends within this, whatever the sink's max_age */
    /* Whether a chunked request body reaches ClickHouse whole: asked once per process before the
     * first stream (zh_ch_can_stream), since a proxy in front of it may drop such a body. */
    enum { CH_STREAM_UNKNOWN, CH_STREAM_PROBING, CH_STREAM_YES, CH_STREAM_NO } stream_state;
    struct ch_req *stream_probe;
    double stream_probe_after; /* monotonic: no new question before (ClickHouse did not answer) */
    struct zh_sink *sinks;    /* every open sink */
    struct ch_group_stats *groups;
    uint64_t rng;
    /* The latest request that ended got no answer within its time limit (a hung or unreachable
     * server), and none has been answered since: run-log rows then get one short attempt. */
    bool silent;
    char *server_version;     /* cached after the first successful query */
    char *url_settings;       /* "&name=value..." added to every request's URL (zh_ch_set_url_setting) */
    struct record_ctx *records; /* run-log rows in flight; shutdown waits for them briefly */
    struct async_q *asyncs;     /* zh_ch_query_async questions in flight */
} zh_ch_state;

/* Requests. `query` goes in the URL (for INSERTs), `body` in the POST body. */
ch_req *ch_req_new(zh_host *h, const char *query, const char *body, size_t len, ch_req_done_fn done, void *ud);
/* The same against another default database (NULL: the server's default). */
ch_req *ch_req_new_db(zh_host *h, const char *database, const char *query, const char *body, size_t len,
                      ch_req_done_fn done, void *ud);
void ch_req_start(ch_req *r);
/* Before ch_req_start: seconds per attempt (0 keeps 300 s; below 5 s it bounds the connect too)
 * and attempts (0 keeps ZHOST_CH_ATTEMPTS). */
void ch_req_limit(ch_req *r, double timeout_s, int attempts);
/* True once ClickHouse is known to take chunked request bodies; the first call starts finding out
 * (a chunked SELECT whose answer must come back) and says false meanwhile. */
bool zh_ch_can_stream(zh_host *h);
/* Starts the INSERT stream of every sink whose batch is large enough and has none in flight (once
 * ClickHouse is known to take chunked bodies, sink.c). */
void zh_sink_start_due_streams(zh_host *h);
void ch_req_abort(ch_req *r);
void ch_req_free(ch_req *r);
/* Runs the loop until r completes (CLI commands only). r must have been made with
 * ch_req_sync_done as `done` and a `bool` completion flag as `ud`. */
void ch_req_wait(ch_req *r);
void ch_req_sync_done(ch_req *r);
/* Starts such a request, waits for it, appends the body to out (may be NULL) and frees r.
 * Returns 0, or -1 with *err set (malloc'd). */
int ch_req_run_sync(ch_req *r, zh_buf *out, char **err);

/* Schemas: DESCRIBE result parsed, and cached on disk for outages. */
ch_schema *ch_schema_parse(const char *table, const char *tsv, size_t len);
void ch_schema_free(ch_schema *s);
int ch_schema_find(const ch_schema *s, const char *name, size_t len);
void ch_schema_save(zh_host *h, const ch_schema *s, const char *tsv, size_t len);
ch_schema *ch_schema_load_cached(zh_host *h, const char *table);

/* rowenc.c: encodes the Lua table at idx as one JSONEachRow line (with '\n') using the schema.
 * Returns NULL on success, or a message naming the column and what was wrong. */
const char *zh_rowenc_row(lua_State *L, int idx, const ch_schema *s, zh_buf *out, char *errbuf, size_t errlen);
/* Shortest decimal text that reads back as the same double. */
void zh_rowenc_double(double d, char *out, size_t n);
/* Validates a decimal literal (sign, digits, optional fraction, optional exponent for floats). */
bool zh_rowenc_is_decimal(const char *s, size_t n, bool allow_exp);

/* spool.c: appends a failed batch to the spool. Returns 0, or -1 with err filled. */
int zh_spool_write(zh_host *h, const char *db_table, const char *job, const char *run_id, const char *error,
                   const char *rows, size_t len, uint64_t nrows, char *err, size_t errlen);

/* sink.c: cancels every sink's pending work at host shutdown (rows still buffered are spooled). */
void zh_sink_shutdown_all(zh_host *h);

/* "ClickHouse error 60: Table x doesn't exist" from a response body and the value of its
 * X-ClickHouse-Exception-Code header (NULL when absent: 18.16 never sends it). */
char *ch_error_message(long status, const char *body, size_t len, const char *hdr_code, int *code);
/* The old name of zh_ch_substitute_db (clickhouse.h), still used by l_ch.c. */
#define ch_substitute_db zh_ch_substitute_db

#endif
