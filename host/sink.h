/* sink.h — batched inserts into one table (see sink.c). */
#ifndef ZH_SINK_H
#define ZH_SINK_H

#include "ch_internal.h"

typedef struct zh_sink zh_sink;

typedef struct zh_sink_opts {
    size_t max_rows, max_bytes;
    double max_age_s;
    double timeout_s;         /* per attempt of each INSERT; 0: the ClickHouse default (300 s) */
    int attempts;             /* per INSERT; 0: ZHOST_CH_ATTEMPTS */
} zh_sink_opts;

/* Takes ownership of schema. */
zh_sink *zh_sink_new(zh_host *h, zh_group *g, ch_schema *schema, const zh_sink_opts *o);
/* Encodes and buffers the row at idx. Returns NULL, or an error message (misuse: bad row).
 * *must_wait is set when the caller should wait for the in-flight insert (backpressure). */
const char *zh_sink_add(zh_sink *s, lua_State *L, int idx, bool *must_wait, char *err, size_t errlen);
/* Rows encoded elsewhere (a row template, rowtpl.cc) go straight into the batch: append whole
 * JSONEachRow lines to zh_sink_batch() from offset `before`, then zh_sink_commit() counts them and
 * flushes or asks for backpressure like zh_sink_add. */
zh_buf *zh_sink_batch(zh_sink *s);
const ch_schema *zh_sink_schema(zh_sink *s);
void zh_sink_commit(zh_sink *s, size_t before, uint64_t nrows, bool *must_wait);
/* Starts sending what is buffered; returns true when nothing is left to wait for. */
bool zh_sink_flush(zh_sink *s);
bool zh_sink_idle(zh_sink *s);
uint64_t zh_sink_rows(zh_sink *s);
uint64_t zh_sink_spooled(zh_sink *s);
/* Rows of the table neither ClickHouse nor the spool took in this run. */
uint64_t zh_sink_lost(zh_sink *s);
const char *zh_sink_table(zh_sink *s);
const char *zh_sink_last_error(zh_sink *s);
void zh_sink_close(zh_sink *s);
bool zh_sink_closed(zh_sink *s);
/* The Lua userdata was collected; the sink lives on until its group finishes. */
void zh_sink_detach(zh_sink *s);
/* False once its group (run) is gone: the userdata must not touch it any more. */
bool zh_sink_usable(zh_sink *s);

/* A task waiting on a sink (backpressure or flush) — see l_ch.c. */
typedef struct zh_sink_wait {
    zh_pending base;
    zh_sink *sink;
    bool want_idle;           /* flush(): wait until nothing is buffered or in flight */
    long long count;          /* template:add(): the rows it added, returned after the wait */
    struct zh_sink_wait *next;
    int (*push_result)(struct zh_sink_wait *w, lua_State *co);
} zh_sink_wait;
void zh_sink_add_waiter(zh_sink *s, zh_sink_wait *w);
void zh_sink_remove_waiter(zh_sink *s, zh_sink_wait *w);

#endif
