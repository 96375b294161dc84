/* run.h — one run of one script: the job it belongs to, its arguments and secrets, its root
 * task, the end-of-run flush, and its meta_job_runs rows. */
#ifndef ZH_RUN_H
#define ZH_RUN_H

#include "zh.h"
#include "task.h"

typedef struct zh_run_opts {
    const char *script;       /* path of the Lua script */
    const char *job;          /* job name; default: the script's `-- zhost: job=` line or file name */
    int days;                 /* --days N, 0 when absent */
    const char *since, *to;   /* --since/--to YYYY-MM-DD, NULL when absent */
    bool dry_run;
    const char *const *extra; /* further "--name value" pairs for the script, NULL-terminated */
    double timeout_s;         /* wall-clock limit for the whole run, 0 = none */
    bool record;              /* write meta_job_runs rows (off for dry runs and `check`) */
} zh_run_opts;

typedef enum { ZH_RUN_RUNNING, ZH_RUN_SUCCESS, ZH_RUN_ERROR, ZH_RUN_INTERRUPTED } zh_run_status;

struct zh_run {
    zh_group group;           /* first: tasks and sinks of this run */
    zh_host *h;
    char run_id[37];
    char *script, *secrets_name;
    zh_run_opts opts;
    double started_wall, started_mono;
    zh_task *root;
    zh_run_status status;
    char *message;            /* error message (one line) or the script's job.message() */
    char *traceback;
    char *need_error;         /* the last job:need() failure: a setting missing, not a bug to trace */
    int metrics_ref;          /* Lua table of script metrics */
    int env_ref;              /* Lua table of secrets for this run */
    int job_ref;              /* the run's `job` table, cut from the run when it is freed */
    bool finishing;
    bool running_row_pending; /* the "running" meta_job_runs insert has not answered yet */
    uv_timer_t *timeout_timer;
    void (*on_done)(zh_run *r, void *ud);
    void *on_done_ud;
};

/* Loads and starts a script. On a load error (missing file, syntax error) returns NULL with
 * *err set; nothing is recorded. on_done runs after the final meta_job_runs row is written. */
zh_run *zh_run_start(zh_host *h, const zh_run_opts *o, void (*on_done)(zh_run *, void *), void *ud, char **err);
/* Stops a run early (signal, timeout, `zhost restart`): tasks are cancelled, rows flushed. */
void zh_run_cancel(zh_run *r, const char *reason, zh_run_status as);
/* The loop has nothing left to do but the run has not finished: its tasks wait on something no
 * handle will ever deliver (each other, say). Cancels it as failed, naming where its script
 * waits; the loop then has the flush and the final row to do. Returns false when the run was
 * already finishing (a host bug: then only zh_run_free is left). */
bool zh_run_stalled(zh_run *r);
/* Safe at any stage, before zh_host_free: a run freed before it finished has its remaining tasks
 * cancelled, its buffered and in-flight rows spooled and its ClickHouse callbacks dropped, and
 * its `job` table refuses further use, so nothing reaches the run once it is freed. */
void zh_run_free(zh_run *r);
const char *zh_run_status_name(zh_run_status s);
/* Generates a random UUID v4 string. */
void zh_uuid4(char out[37]);
/* The job name (--job, else the directive, else the file name) and the secrets name (the
 * directive's secrets=, else the job name) of a run. */
void zh_run_names(const zh_run_opts *o, char *job, size_t jl, char *secrets, size_t sl);
/* Script options beyond the standard ones must be declared in the directive
 * (`-- zhost: job=x options=csv,mode`), so a misspelt --dryrun is refused instead of ignored.
 * Returns 0, or -1 with *err set (malloc'd). */
int zh_run_check_options(const zh_run_opts *o, char **err);
/* Reads the `-- zhost: job=NAME secrets=NAME` directive from a script's first lines. */
void zh_run_read_directive(const char *path, char *job, size_t jl, char *secrets, size_t sl);

#endif
