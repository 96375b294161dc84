/* sink.c — owns batched inserts: rows buffered per table, flushed by row count, bytes and age,
 * at most one INSERT in flight per sink (a full buffer makes the adding task wait), failed
 * batches written to the spool, per-group row counters, and the dry-run samples.
 *
 * A batch is streamed: once 256 KiB are buffered and no INSERT is in flight, the INSERT
 * starts and sends rows while the script adds more; reaching the limits, the age or a flush ends
 * its body. ClickHouse parses the batch while it is made instead of after, so the end of a run no
 * longer waits for a whole batch to be sent and parsed. The bytes stay in the batch buffer until
 * ClickHouse answers: a failed or abandoned INSERT is retried or spooled whole, as before.
 *
 * A sink belongs to its group (run), not to its Lua userdata: a script that forgets close()
 * still gets its rows flushed when the run ends. */
#include "sink.h"
#include "log.h"
#include "tunables.h"
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct table_count {
    char *table;
    uint64_t rows, spooled, lost;  /* lost: neither ClickHouse nor the spool took them */
    zh_buf samples;
    int nsamples;
    struct table_count *next;
} table_count;

typedef struct ch_group_stats {
    zh_group *g;
    bool dry_run;
    char *last_error;         /* the latest insert failure of the group, for the run's message */
    char *spool_error;        /* the latest batch the spool refused, for the run's message */
    table_count *tables;
    void (*finish_done)(void *ud);
    void *finish_ud;
    bool finishing;
    struct ch_group_stats *next;
} ch_group_stats;

struct zh_sink {
    zh_host *h;
    ch_group_stats *gs;
    table_count *tc;
    ch_schema *schema;
    zh_sink_opts o;
    zh_buf batch;
    zh_buf spare;             /* the other batch buffer: one is filled while the other is sent */
    uint64_t batch_rows;
    uv_timer_t *age_timer;
    ch_req *inflight;
    uint64_t inflight_rows;
    zh_sink_wait *waiters;
    char *last_error;
    bool closed, detached;
    bool flush_wanted;        /* flush() or the age timer asked while an INSERT was in flight */
    bool streaming;           /* the INSERT in flight is reading `batch` as rows are added */
    struct zh_sink *next;
};

static ch_group_stats *group_stats(zh_host *h, zh_group *g) {
    zh_ch_state *st = h->ch;
    for (ch_group_stats *s = st->groups; s; s = s->next)
        if (s->g == g) return s;
    ch_group_stats *s = zh_xcalloc(1, sizeof *s);
    s->g = g;
    s->next = st->groups;
    st->groups = s;
    return s;
}

static table_count *table_stats(ch_group_stats *gs, const char *table) {
    for (table_count *t = gs->tables; t; t = t->next)
        if (!strcmp(t->table, table)) return t;
    table_count *t = zh_xcalloc(1, sizeof *t);
    t->table = zh_xstrdup(table);
    zh_buf_init(&t->samples);
    t->next = gs->tables;
    gs->tables = t;
    return t;
}

void zh_ch_set_dry_run(zh_host *h, zh_group *g, bool dry) { group_stats(h, g)->dry_run = dry; }

bool zh_ch_is_dry_run(zh_host *h, zh_group *g) {
    for (ch_group_stats *s = h->ch->groups; s; s = s->next)
        if (s->g == g) return s->dry_run;
    return false;
}

static void age_fired(uv_timer_t *t) { zh_sink_flush(t->data); }

zh_sink *zh_sink_new(zh_host *h, zh_group *g, ch_schema *schema, const zh_sink_opts *o) {
    zh_sink *s = zh_xcalloc(1, sizeof *s);
    s->h = h;
    s->gs = group_stats(h, g);
    s->tc = table_stats(s->gs, schema->table);
    s->schema = schema;
    s->o = *o;
    /* Every INSERT into a MergeTree table writes a part (and later merges it): ~10-25 ms of
     * ClickHouse CPU whatever its size (bench/README.md). 50,000 rows per INSERT is where that cost
     * stops mattering; two such buffers (one filling, one in flight) stay within ~32 MiB. */
    if (!s->o.max_rows) s->o.max_rows = 50000;
    if (!s->o.max_bytes) s->o.max_bytes = 16u << 20;
    /* A sink that does not say: the operator's $ZHOST_SINK_MAX_AGE (how long a row may wait
     * before it is sent; the fault tests shorten it to see delivered rows sooner), else 5 s. */
    if (s->o.max_age_s <= 0) s->o.max_age_s = zh_tunable_number("ZHOST_SINK_MAX_AGE", 5);
    zh_buf_init(&s->batch);
    zh_buf_init(&s->spare);
    s->age_timer = zh_xcalloc(1, sizeof *s->age_timer);
    uv_timer_init(h->loop, s->age_timer);
    s->age_timer->data = s;
    s->next = h->ch->sinks;
    h->ch->sinks = s;
    return s;
}

static void wake_waiters(zh_sink *s, bool only_full) {
    zh_sink_wait **pp = &s->waiters;
    while (*pp) {
        zh_sink_wait *w = *pp;
        bool ready = w->want_idle ? zh_sink_idle(s) : !only_full;
        if (ready) {
            *pp = w->next;
            w->next = NULL;
            zh_task_wake(&w->base);
        } else {
            pp = &w->next;
        }
    }
}

static void check_group_finished(ch_group_stats *gs, zh_host *h);

/* Less than h->ch->stream_bytes (256 KiB unless $ZHOST_CH_STREAM_BYTES says otherwise; 0 never
 * streams) is sent in one piece when the batch is flushed: a run-log row or a day of ad statistics
 * gains nothing from a stream. */
static bool stream_due(zh_sink *s) {
    size_t at = s->h->ch->stream_bytes;
    /* A stream stays open while rows come in (up to stream_max_open_s): a sink with a time limit
     * of its own sends whole batches, so that the limit is the server's time to take one. */
    return at && !s->o.timeout_s && s->batch.len >= at && zh_ch_can_stream(s->h);
}

/* The streamed INSERT's body ends here: its rows become the request's, new rows start a batch. */
static void seal_stream(zh_sink *s) {
    s->streaming = false;
    s->inflight_rows = s->batch_rows;
    ZH_DEBUG(s->gs && s->gs->g ? s->gs->g->job : NULL, "msg=\"insert\" table=%s rows=%llu bytes=%zu streamed=true",
             s->schema->table, (unsigned long long)s->batch_rows, s->batch.len);
    zh_xfer_stream_seal(s->inflight->x, &s->batch);
    /* the batch buffer is the request's now; rows go on into the one the previous INSERT gave back */
    zh_buf_free(&s->batch);
    s->batch = s->spare;
    zh_buf_init(&s->spare);
    s->batch.len = 0;
    s->batch_rows = 0;
    uv_timer_stop(s->age_timer);
}

static void insert_done(ch_req *r);

static void start_stream(zh_sink *s) {
    char q[512];
    snprintf(q, sizeof q, "INSERT INTO %s FORMAT JSONEachRow", s->schema->table);
    s->inflight = ch_req_new(s->h, q, NULL, 0, insert_done, s);
    ch_req_limit(s->inflight, 0, s->o.attempts);
    s->inflight_rows = 0;
    s->streaming = true;
    zh_xfer_stream_body(s->inflight->x, &s->batch, s->batch.len);
    /* the age timer ends the stream; not later than the server would wait for its body */
    uint64_t max_open_ms = (uint64_t)(s->h->ch->stream_max_open_s * 1000);
    if (uv_timer_get_due_in(s->age_timer) > max_open_ms) uv_timer_start(s->age_timer, age_fired, max_open_ms, 0);
    ZH_DEBUG(s->gs->g ? s->gs->g->job : NULL, "msg=\"insert stream started\" table=%s", s->schema->table);
    ch_req_start(s->inflight);
}

void zh_sink_start_due_streams(zh_host *h) {
    for (zh_sink *s = h->ch->sinks; s; s = s->next)
        if (!s->inflight && s->gs && !s->gs->dry_run && s->batch_rows && stream_due(s)) start_stream(s);
}

static void insert_done(ch_req *r) {
    zh_sink *s = r->ud;
    /* Ended before its body did (ClickHouse refused it or is gone): the batch is the INSERT's. */
    if (s->streaming) seal_stream(s);
    if (r->ok) {
        s->tc->rows += 0; /* counted when added; nothing more to do */
    } else {
        char err[512];
        const char *job = s->gs->g ? s->gs->g->job : NULL;
        const char *run_id = s->gs->g ? s->gs->g->run_id : "";
        if (zh_spool_write(s->h, s->schema->table, job, run_id, r->error, r->x->req_body.data, r->x->req_body.len,
                           s->inflight_rows, err, sizeof err) == 0) {
            s->tc->spooled += s->inflight_rows;
            ZH_ERROR(job, "msg=\"insert failed, batch spooled\" table=%s rows=%llu error=\"%s\"", s->schema->table,
                     (unsigned long long)s->inflight_rows, r->error);
        } else {
            s->tc->lost += s->inflight_rows;
            free(s->gs->spool_error);
            s->gs->spool_error = zh_xstrdup(err);
            ZH_ERROR(job, "msg=\"insert failed and the spool refused the batch: rows LOST\" table=%s rows=%llu error=\"%s\" spool_error=\"%s\"",
                     s->schema->table, (unsigned long long)s->inflight_rows, r->error, err);
        }
        free(s->last_error);
        s->last_error = zh_xstrdup(r->error);
        free(s->gs->last_error);
        s->gs->last_error = zh_xstrdup(r->error);
    }
    s->inflight = NULL;
    s->inflight_rows = 0;
    zh_xfer_swap_request_body(r->x, &s->spare); /* take the sent batch's buffer back */
    size_t sent = s->spare.len;
    s->spare.len = 0;
    /* The rows added while that INSERT finished went into the other buffer. They move to the
     * buffer just given back, whose first `sent` bytes are in memory already, so the other one
     * only ever holds what comes in such a wait: otherwise both grow to a whole batch, and fresh
     * memory costs a zeroing by the kernel on first touch (~14 MB per buffer at the defaults,
     * ~5% of a bulk load's CPU; bench/README.md). */
    if (s->batch.len < sent) {
        if (s->batch.len)
            ZH_DEBUG(s->gs->g ? s->gs->g->job : NULL, "msg=\"rows added meanwhile moved to the sent batch's buffer\" table=%s bytes=%zu",
                     s->schema->table, s->batch.len);
        zh_buf_add(&s->spare, s->batch.data ? s->batch.data : "", s->batch.len);
        zh_buf t = s->batch;
        s->batch = s->spare;
        s->spare = t;
        s->spare.len = 0;
    }
    ch_req_free(r);
    if (s->batch_rows >= s->o.max_rows || s->batch.len >= s->o.max_bytes || s->closed || s->gs->finishing ||
        s->flush_wanted)
        zh_sink_flush(s);
    else if (stream_due(s))
        start_stream(s);
    wake_waiters(s, false);
    if (s->gs->finishing) check_group_finished(s->gs, s->h);
}

bool zh_sink_flush(zh_sink *s) {
    uv_timer_stop(s->age_timer);
    /* The age timer is stopped either way, so rows buffered behind an INSERT in flight must be
     * sent when it completes: otherwise a flush() waiting for idle would wait forever. */
    if (s->inflight) {
        if (s->streaming) seal_stream(s);
        else if (s->batch_rows) s->flush_wanted = true;
        return false;
    }
    s->flush_wanted = false;
    if (!s->batch_rows) return true;
    if (s->gs->dry_run) {
        s->batch.len = 0;
        s->batch_rows = 0;
        return true;
    }
    char q[512];
    snprintf(q, sizeof q, "INSERT INTO %s FORMAT JSONEachRow", s->schema->table);
    s->inflight_rows = s->batch_rows;
    /* The batch is handed to the request, not copied; rows go on into the spare buffer. */
    s->inflight = ch_req_new(s->h, q, "", 0, insert_done, s);
    ch_req_limit(s->inflight, s->o.timeout_s, s->o.attempts);
    zh_xfer_swap_request_body(s->inflight->x, &s->batch);
    zh_buf_free(&s->batch); /* the request's empty body */
    /* The next rows go into the buffer the previous INSERT gave back (insert_done), already grown
     * to a batch's size: growing a fresh one by doubling copied every batch ~20 times over. */
    s->batch = s->spare;
    zh_buf_init(&s->spare);
    s->batch.len = 0;
    s->batch_rows = 0;
    ZH_DEBUG(s->gs->g ? s->gs->g->job : NULL, "msg=\"insert\" table=%s rows=%llu bytes=%zu", s->schema->table,
             (unsigned long long)s->inflight_rows, s->inflight->x->req_body.len);
    ch_req_start(s->inflight);
    return false;
}

bool zh_sink_idle(zh_sink *s) { return !s->inflight && !s->batch_rows; }

const char *zh_sink_add(zh_sink *s, lua_State *L, int idx, bool *must_wait, char *err, size_t errlen) {
    *must_wait = false;
    size_t before = s->batch.len;
    const char *e = zh_rowenc_row(L, idx, s->schema, &s->batch, err, errlen);
    if (e) return e;
    zh_sink_commit(s, before, 1, must_wait);
    return NULL;
}

zh_buf *zh_sink_batch(zh_sink *s) { return &s->batch; }
const ch_schema *zh_sink_schema(zh_sink *s) { return s->schema; }

void zh_sink_commit(zh_sink *s, size_t before, uint64_t nrows, bool *must_wait) {
    *must_wait = false;
    if (!nrows) return;
    s->tc->rows += nrows;
    if (s->gs->dry_run) {
        /* the first few rows are the samples --dry-run prints; nothing is sent */
        const char *p = s->batch.data + before, *end = s->batch.data + s->batch.len;
        while (s->tc->nsamples < 3 && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl + 1 : end;
            zh_buf_add(&s->tc->samples, p, (size_t)(stop - p));
            s->tc->nsamples++;
            p = stop;
        }
        s->batch.len = before;
        return;
    }
    if (s->batch_rows == 0) uv_timer_start(s->age_timer, age_fired, (uint64_t)(s->o.max_age_s * 1000), 0);
    s->batch_rows += nrows;
    /* A batch past 1 MiB is a big one: its buffer moves to huge pages, sized for a whole batch
     * (page faults were ~5% of a bulk load's CPU, bench/README.md). Small sinks stay on the heap. */
    if (!s->batch.mapped && s->batch.len >= (1u << 20)) {
        size_t want = s->o.max_bytes < (64u << 20) ? s->o.max_bytes : (64u << 20);
        zh_buf_map(&s->batch, want + (1u << 20));
    }
    /* only whole rows are streamed: a row that fails half-way is cut back before this point */
    if (s->streaming) zh_xfer_stream_avail(s->inflight->x, s->batch.len);
    if (s->batch_rows >= s->o.max_rows || s->batch.len >= s->o.max_bytes) {
        if (s->inflight && !s->streaming) *must_wait = true; /* backpressure: memory stays bounded */
        else zh_sink_flush(s);
    } else if (!s->inflight && stream_due(s)) {
        start_stream(s);
    }
}

void zh_sink_add_waiter(zh_sink *s, zh_sink_wait *w) {
    w->sink = s;
    w->next = s->waiters;
    s->waiters = w;
}

void zh_sink_remove_waiter(zh_sink *s, zh_sink_wait *w) {
    for (zh_sink_wait **pp = &s->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return;
        }
    }
}

uint64_t zh_sink_rows(zh_sink *s) { return s->tc ? s->tc->rows : 0; }
uint64_t zh_sink_spooled(zh_sink *s) { return s->tc ? s->tc->spooled : 0; }
uint64_t zh_sink_lost(zh_sink *s) { return s->tc ? s->tc->lost : 0; }
bool zh_sink_usable(zh_sink *s) { return s->gs != NULL; }
const char *zh_sink_table(zh_sink *s) { return s->schema->table; }
const char *zh_sink_last_error(zh_sink *s) { return s->last_error; }
void zh_sink_close(zh_sink *s) {
    s->closed = true;
    zh_sink_flush(s);
}
bool zh_sink_closed(zh_sink *s) { return s->closed; }
void zh_sink_detach(zh_sink *s) { s->detached = true; }

static void age_timer_closed(uv_handle_t *hd) { free(hd); }

static void sink_free(zh_host *h, zh_sink *s) {
    zh_sink **pp = &h->ch->sinks;
    while (*pp && *pp != s) pp = &(*pp)->next;
    if (*pp) *pp = s->next;
    uv_timer_stop(s->age_timer);
    uv_close((uv_handle_t *)s->age_timer, age_timer_closed);
    zh_buf_free(&s->batch);
    zh_buf_free(&s->spare);
    ch_schema_free(s->schema);
    free(s->last_error);
    free(s);
}

/* A group is finished when none of its sinks has rows buffered or in flight. Sinks whose Lua
 * side is gone are freed then; live userdata keep theirs (closed) until collected. */
static void check_group_finished(ch_group_stats *gs, zh_host *h) {
    if (!gs->finishing) return;
    for (zh_sink *s = h->ch->sinks; s; s = s->next)
        if (s->gs == gs && !zh_sink_idle(s)) return;
    gs->finishing = false;
    for (zh_sink *s = h->ch->sinks, *next; s; s = next) {
        next = s->next;
        if (s->gs == gs) {
            s->closed = true;
            if (s->detached) sink_free(h, s);
        }
    }
    if (gs->finish_done) {
        void (*cb)(void *) = gs->finish_done;
        gs->finish_done = NULL;
        cb(gs->finish_ud);
    }
}

void zh_ch_group_finish(zh_host *h, zh_group *g, void (*done)(void *ud), void *ud) {
    ch_group_stats *gs = group_stats(h, g);
    gs->finish_done = done;
    gs->finish_ud = ud;
    gs->finishing = true;
    for (zh_sink *s = h->ch->sinks; s; s = s->next)
        if (s->gs == gs) zh_sink_flush(s);
    check_group_finished(gs, h);
}

uint64_t zh_ch_group_rows(zh_host *h, zh_group *g) {
    uint64_t n = 0;
    for (table_count *t = group_stats(h, g)->tables; t; t = t->next) n += t->rows;
    return n;
}

uint64_t zh_ch_group_spooled(zh_host *h, zh_group *g) {
    uint64_t n = 0;
    for (table_count *t = group_stats(h, g)->tables; t; t = t->next) n += t->spooled;
    return n;
}

uint64_t zh_ch_group_lost(zh_host *h, zh_group *g) {
    uint64_t n = 0;
    for (table_count *t = group_stats(h, g)->tables; t; t = t->next) n += t->lost;
    return n;
}

const char *zh_ch_group_spool_error(zh_host *h, zh_group *g) { return group_stats(h, g)->spool_error; }

const char *zh_ch_group_last_error(zh_host *h, zh_group *g) { return group_stats(h, g)->last_error; }

void zh_ch_group_tables_json(zh_host *h, zh_group *g, zh_buf *out) {
    zh_buf_addc(out, '{');
    bool first = true;
    for (table_count *t = group_stats(h, g)->tables; t; t = t->next) {
        const char *name = strchr(t->table, '.');
        name = name ? name + 1 : t->table;
        zh_buf_printf(out, "%s\"%s\":%llu", first ? "" : ",", name, (unsigned long long)t->rows);
        first = false;
    }
    zh_buf_addc(out, '}');
}

void zh_ch_group_print_dry_run(zh_host *h, zh_group *g) {
    ch_group_stats *gs = group_stats(h, g);
    printf("dry run: nothing was written to ClickHouse\n");
    if (!gs->tables) printf("  no rows\n");
    for (table_count *t = gs->tables; t; t = t->next) {
        printf("  %s: %llu rows\n", t->table, (unsigned long long)t->rows);
        if (t->samples.len) {
            const char *p = t->samples.data;
            while (*p) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                size_t shown = zh_utf8_cut(p, n, 400);
                printf("    %.*s%s\n", (int)shown, p, shown < n ? "…" : "");
                p += n + (nl ? 1 : 0);
            }
        }
    }
    fflush(stdout);
}

static void group_stats_free(ch_group_stats *gs) {
    free(gs->last_error);
    free(gs->spool_error);
    while (gs->tables) {
        table_count *t = gs->tables;
        gs->tables = t->next;
        free(t->table);
        zh_buf_free(&t->samples);
        free(t);
    }
    free(gs);
}

/* Rows a sink still holds when it can no longer deliver them (its run is gone, or the host is):
 * the INSERT in flight is abandoned and, like the buffer, spooled. ClickHouse may have received
 * the abandoned INSERT after all; a replay of rows that did arrive is harmless, the tables
 * deduplicate by key and version. */
static void sink_spool_pending(zh_host *h, zh_sink *s, const char *why_inflight, const char *why_buffered) {
    const char *job = s->gs && s->gs->g ? s->gs->g->job : NULL;
    const char *run_id = s->gs && s->gs->g ? s->gs->g->run_id : "";
    char err[256];
    if (s->inflight) {
        ch_req *r = s->inflight;
        ch_req_abort(r);
        if (s->streaming) seal_stream(s); /* its rows are the INSERT's, not the buffer's */
        if (zh_spool_write(h, s->schema->table, job, run_id, why_inflight, r->x->req_body.data, r->x->req_body.len,
                           s->inflight_rows, err, sizeof err) != 0)
            ZH_ERROR(job, "msg=\"the spool refused the batch: rows LOST\" table=%s rows=%llu error=\"%s\" spool_error=\"%s\"",
                     s->schema->table, (unsigned long long)s->inflight_rows, why_inflight, err);
        ch_req_free(r);
        s->inflight = NULL;
        s->inflight_rows = 0;
    }
    if (s->batch_rows && s->gs && !s->gs->dry_run)
        if (zh_spool_write(h, s->schema->table, job, run_id, why_buffered, s->batch.data, s->batch.len, s->batch_rows,
                           err, sizeof err) != 0)
            ZH_ERROR(job, "msg=\"the spool refused the batch: rows LOST\" table=%s rows=%llu error=\"%s\" spool_error=\"%s\"",
                     s->schema->table, (unsigned long long)s->batch_rows, why_buffered, err);
    s->batch.len = 0;
    s->batch_rows = 0;
    s->flush_wanted = false;
    uv_timer_stop(s->age_timer);
}

void zh_ch_group_forget(zh_host *h, zh_group *g) {
    zh_ch_state *st = h->ch;
    for (ch_group_stats **pp = &st->groups; *pp; pp = &(*pp)->next) {
        ch_group_stats *gs = *pp;
        if (gs->g != g) continue;
        for (zh_sink *s = st->sinks, *next; s; s = next) {
            next = s->next;
            if (s->gs != gs) continue;
            /* Only a run abandoned before its sinks finished (see zh_run_free) gets here with
             * rows: nothing would call back into its group for them any more. */
            if (!zh_sink_idle(s))
                sink_spool_pending(h, s, "the run ended during an INSERT", "the run ended with rows buffered");
            if (s->detached) {
                sink_free(h, s);
            } else {
                /* Still referenced from Lua: keep it, but cut it from the group (and its
                 * counters, freed below); the userdata then refuses to be used. */
                s->gs = NULL;
                s->tc = NULL;
                s->closed = true;
            }
        }
        *pp = gs->next;
        group_stats_free(gs);
        return;
    }
}

void zh_sink_shutdown_all(zh_host *h) {
    zh_ch_state *st = h->ch;
    while (st->sinks) {
        zh_sink *s = st->sinks;
        sink_spool_pending(h, s, "host shut down during an INSERT", "host shut down with rows buffered");
        sink_free(h, s);
    }
    while (st->groups) {
        ch_group_stats *gs = st->groups;
        st->groups = gs->next;
        group_stats_free(gs);
    }
}
