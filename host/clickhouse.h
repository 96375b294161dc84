/* clickhouse.h — the ClickHouse client over its HTTP interface: settings, queries, sinks that
 * batch rows per table, the disk spool for batches that cannot be delivered, and the run log. */
#ifndef ZH_CLICKHOUSE_H
#define ZH_CLICKHOUSE_H

#include "zh.h"
#include "task.h"

/* Reads CLICKHOUSE_* from the environment (already merged with secrets/.env.ch by the caller). */
void zh_ch_init(zh_host *h);
void zh_ch_shutdown(zh_host *h);
/* Loads <secrets_dir>/.env.ch into the process environment where variables are not already set.
 * A missing file is fine (the environment may hold everything); an unreadable or malformed one
 * returns -1 with *err (malloc'd, names the file), so that no command goes on with defaults. */
int zh_ch_load_env(const char *secrets_dir, char **err);
const char *zh_ch_database(zh_host *h);

/* Dry-run: sinks count and sample rows but write nothing. Applies to the group's sinks. */
void zh_ch_set_dry_run(zh_host *h, zh_group *g, bool dry);
/* Whether the group runs dry (false for groups never set, e.g. REPL inputs). */
bool zh_ch_is_dry_run(zh_host *h, zh_group *g);

/* Flushes (or spools) every open sink of the group, then calls done. */
void zh_ch_group_finish(zh_host *h, zh_group *g, void (*done)(void *ud), void *ud);
/* Rows accepted, rows spooled, and a JSON object {"table": rows, ...} for the group. */
uint64_t zh_ch_group_rows(zh_host *h, zh_group *g);
uint64_t zh_ch_group_spooled(zh_host *h, zh_group *g);
/* Rows lost: ClickHouse did not take them and neither did the spool (full, unwritable); and the
 * spool's latest refusal ("spool DIR is full ..."), or NULL. */
uint64_t zh_ch_group_lost(zh_host *h, zh_group *g);
const char *zh_ch_group_spool_error(zh_host *h, zh_group *g);
/* The latest insert failure of the group ("ClickHouse error 27: ..."), or NULL. */
const char *zh_ch_group_last_error(zh_host *h, zh_group *g);
void zh_ch_group_tables_json(zh_host *h, zh_group *g, zh_buf *out);
/* For --dry-run: prints per-table row counts and sample rows to stdout. */
void zh_ch_group_print_dry_run(zh_host *h, zh_group *g);
/* Releases the group's counters (the group's sinks must be finished). */
void zh_ch_group_forget(zh_host *h, zh_group *g);

typedef struct zh_run_record {
    const char *job, *run_id, *status, *message, *metrics_json;
    double started_at, finished_at; /* epoch seconds; finished_at 0 while running */
    uint64_t rows;
} zh_run_record;

/* Inserts a meta_job_runs row (version = now); calls done(ud, err) with err NULL on success. Each
 * attempt may take 30 s; while ClickHouse is silent (its latest request timed out and none has been
 * answered since) the row gets one 5 s attempt, and is not retried once it is. A row ClickHouse
 * does not take is spooled. */
void zh_ch_record_run(zh_host *h, const zh_run_record *r, void (*done)(void *ud, const char *err), void *ud);
/* The owner of ud is going away: rows of it still in flight are written (or spooled) all the
 * same, but their done callbacks are not called. */
void zh_ch_record_detach(zh_host *h, void *ud);
/* Rows of ud still in flight are abandoned: neither written nor spooled, no callback. For a row
 * that a newer one supersedes (a run's "running" row once its final row is due). Returns how many. */
int zh_ch_record_drop(zh_host *h, void *ud);

/* Marks meta_job_runs rows of this host (and job, unless NULL) still "running" whose process is
 * gone (pid in the row's metrics) as "interrupted". One short attempt; returns how many. */
int zh_ch_mark_stale_runs(zh_host *h, const char *job);
/* The same on the loop, for `zhost run`: the check and the run go on together (the run's own row
 * has a live pid, so it is never marked). sc (the caller's) counts what is left: 0 once the
 * question is answered and every mark written. */
typedef struct zh_stale_check {
    zh_host *h;
    int pending, marked;
    bool answered;            /* ClickHouse answered the question (false: ask again later) */
} zh_stale_check;
void zh_ch_mark_stale_runs_start(zh_host *h, const char *job, zh_stale_check *sc);

/* One statement on the loop, for callers that must not block it (health probes, the status page,
 * `zhost serve`'s start-up): fn is called exactly once, from the loop (or at once when the
 * request cannot start), with the response body (NUL-terminated, len bytes) and err NULL, or with
 * body NULL, a one-line err and the ClickHouse error code (0 when none). `timeout_s` bounds each
 * attempt, connecting included; `attempts` 0 means the configured number of tries (retries only
 * on connection errors and overload, with backoff). */
typedef void (*zh_ch_query_fn)(void *ud, const char *body, size_t len, const char *err, int ch_code);
void zh_ch_query_async(zh_host *h, const char *sql, double timeout_s, int attempts, zh_ch_query_fn fn, void *ud);

/* Adds a setting to the URL of every later request of this host (CLI commands: migrate). */
void zh_ch_set_url_setting(zh_host *h, const char *name, const char *value);

/* The configured analytics database (CLICKHOUSE_BI_DB, "bi" by default). */
const char *zh_ch_bi_database(zh_host *h);
/* Substitutes the configured database names for `zakaz.` and `bi.` qualifiers. Returns malloc'd
 * text. */
char *zh_ch_substitute_db(zh_host *h, const char *sql);

/* Whether the statement ends with a `FORMAT name` clause of its own, read as ClickHouse reads it:
 * `--` and `# ` line comments, nested block comments, 'strings', "quoted" and `quoted`
 * identifiers are skipped, so FORMAT inside them does not count. *stmt_end (may be NULL) gets the
 * length of the statement without what trails its last token: semicolons, spaces and complete
 * comments (an unterminated string or comment is left in: ClickHouse reports it). */
bool zh_ch_sql_own_format(const char *sql, size_t *stmt_end);

/* Synchronous helpers for commands outside scripts (migrate, spool, status): run the loop
 * until the request completes. Return 0, or -1 with *err set (malloc'd). `out` (may be NULL)
 * receives the response body. */
int zh_ch_exec_sync(zh_host *h, const char *sql, zh_buf *out, char **err);
/* The same with another default database (NULL: the server's own default). */
int zh_ch_exec_sync_db(zh_host *h, const char *database, const char *sql, zh_buf *out, char **err);
/* zh_ch_exec_sync that also gives ClickHouse's error code on failure (0: none, e.g. unreachable). */
int zh_ch_exec_sync_code(zh_host *h, const char *sql, zh_buf *out, int *code, char **err);
/* Inserts an already encoded JSONEachRow body into db.table, synchronously. On failure *code (when
 * not NULL) is ClickHouse's error code, 0 when the server gave none (unreachable, no answer). */
int zh_ch_insert_sync(zh_host *h, const char *db_table, const char *body, size_t len, int *code, char **err);

/* The spool: batches that could not be delivered. */
typedef struct zh_spool_info {
    int files;
    uint64_t rows, bytes;
    int quarantined_files;        /* <spool>/quarantine: rows ClickHouse rejected for their content */
    uint64_t quarantined_rows;
    int64_t oldest;               /* last write of the oldest waiting file (Unix seconds), 0 = none */
} zh_spool_info;
/* Reads every spool file to count its rows (`zhost spool status`). Callers that count often keep
 * a zh_spool_counts: then only what was appended since the last count is read. */
void zh_spool_stat(const char *dir, zh_spool_info *out);
typedef struct zh_spool_counts zh_spool_counts;
zh_spool_counts *zh_spool_counts_new(void);
void zh_spool_counts_free(zh_spool_counts *c);
void zh_spool_stat_cached(const char *dir, zh_spool_counts *c, zh_spool_info *out);
/* The same with the host's own counts (ch.spool_status()). */
void zh_spool_stat_host(zh_host *h, zh_spool_info *out);
/* Spool files no process holds (neither a run still appending nor a replay delivering them):
 * what a replay started now could deliver. *held (may be NULL) counts the others. Reads no
 * file; probes each one's lock. */
int zh_spool_waiting(const char *dir, int *held);
/* The same, calling fn with the name (not the path) of each file no process holds. */
int zh_spool_waiting_each(const char *dir, int *held, void (*fn)(void *ud, const char *name), void *ud);
/* The last line of `zhost spool replay` ("replay: N rows delivered, M files left, K rows
 * quarantined[; B of them still being written ...]"). False when line is not that summary. */
typedef struct zh_spool_replay_summary {
    uint64_t delivered, quarantined;
    int files_left, being_written; /* files_left includes being_written; the rest failed */
} zh_spool_replay_summary;
bool zh_spool_replay_summary_parse(const char *line, zh_spool_replay_summary *out);
/* While a run may still append to its spool files, they stay locked (flock, exclusive) so that
 * `zhost spool replay` leaves them alone: hold from the run's start, release when it can no longer
 * spool (zh_run_free). Files spooled under a run id nobody holds are locked only while written.
 * zh_spool_shutdown releases whatever is still held (zh_host_free). */
void zh_spool_hold(zh_host *h, const char *run_id);
void zh_spool_release(zh_host *h, const char *run_id);
void zh_spool_shutdown(zh_host *h);

/* ClickHouse's TabSeparated output. One field at p (escapes undone) into out, NUL-terminated;
 * *eol says whether it ended its row. Returns where the next field starts. */
const char *zh_ch_tsv_field(const char *p, const char *end, zh_buf *out, bool *eol);
/* One row at *p into fields[0..max) (extra fields are read and dropped); advances *p. Returns the
 * number of fields in the row, or -1 at the end. */
int zh_tsv_row(const char **p, const char *end, zh_buf *fields, int max);

int zh_open_ch(lua_State *L);

#endif
