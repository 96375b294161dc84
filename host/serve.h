/* serve.h — `zhost serve`: the configuration file, the jobs and their runs, the scheduler clock,
 * the persistent state, and what the health server (health.c) and the control channel
 * (control.c) read and change. */
#ifndef ZH_SERVE_H
#define ZH_SERVE_H

#include "clickhouse.h"
#include "run.h"
#include "schedule.h"
#include "zh.h"

typedef struct zh_serve zh_serve;
typedef struct zh_job zh_job;

/* One [job NAME] section. */
typedef struct zh_job_conf {
    char name[64];
    char aliases[128];        /* space-separated other names (the old timer names) */
    char *script;             /* Lua script (resolved path), or NULL */
    char *command;            /* zhost subcommand words ("backup full"), or NULL */
    char *args;               /* extra "--name value" words for the script or command, or NULL */
    zh_schedule sched;
    double timeout_s, jitter_s;
    int days;                 /* --days for scheduled runs, 0 = the script's default */
    bool enabled;             /* default; `zhost enable|disable` overrides it in the state file */
} zh_job_conf;

typedef struct zh_fresh_rule {
    char source[64];
    int warn_days, error_days;
} zh_fresh_rule;

/* The whole file. Paths are resolved (relative ones against `root`). */
typedef struct zh_conf {
    char *path;               /* the file read, or NULL for built-in defaults */
    char *root, *state_dir, *spool_dir, *scripts_dir, *secrets_dir, *log_file, *socket;
    char timezone[64];        /* display zone and default cron zone */
    double grace_s;           /* SIGTERM: how long running jobs may finish */
    double log_max_bytes;
    bool health_enabled;
    char listen_host[64];
    int listen_port;
    int max_connections;
    double idle_timeout_s;
    double ch_timeout_s;      /* health checks' ClickHouse timeout */
    /* [spool]: the daemon's own replay (job spool_replay, autoreplay.c) */
    bool auto_replay;         /* default on; `zhost enable|disable spool_replay` override it */
    double replay_every_s;    /* at most one automatic replay per this long (counted from the last one's end) */
    double replay_max_every_s; /* after failed replays in a row the interval doubles up to this */
    double replay_timeout_s;  /* a replay child is stopped after this */
    double replay_check_s;    /* how often the spool is looked at */
    zh_fresh_rule fresh_default;
    zh_fresh_rule *fresh;
    int nfresh;
    zh_job_conf *jobs;
    int njobs;
} zh_conf;

/* Reads a configuration file. Returns NULL with *err (malloc'd, "file:line: message"). */
zh_conf *zh_conf_load(const char *path, char **err);
/* Same for text (tests); `origin` names it in errors and `dir` resolves relative paths. */
zh_conf *zh_conf_parse(const char *text, size_t len, const char *origin, const char *dir, char **err);
void zh_conf_free(zh_conf *c);
/* The configuration file to use: flag, else $ZHOST_CONF, else /etc/zhost/zhost.conf, else
 * ./conf/zhost.conf. NULL when none exists. */
const char *zh_conf_find(const char *flag);
/* The control socket named by a configuration file, read leniently (the rest of the file may
 * be broken). Returns 0, or -1 when the file cannot be read. */
int zh_conf_socket(const char *path, char *out, size_t n);
/* Thresholds for a freshness source. */
const zh_fresh_rule *zh_conf_fresh_rule(const zh_conf *c, const char *source);

/* The daemon's own job that delivers the spool (autoreplay.c); no [job] section may take the name. */
#define ZH_SPOOL_REPLAY_JOB "spool_replay"

struct zh_job {
    zh_job_conf c;
    zh_serve *s;
    int enabled_override;     /* -1: follow the file; 0/1: set by `zhost disable|enable` */
    int64_t last_fire;        /* nominal time of the last fire (scheduler clock), 0 = never */
    int64_t next_fire;        /* nominal time of the next fire, 0 when disabled */
    double due_at;            /* next_fire plus this fire's random delay */
    uv_timer_t *timer;
    /* the run in progress */
    zh_run *run;
    struct zh_child *child;
    char run_id[37];
    double run_started;       /* wall clock */
    char trigger[16];         /* schedule | catch-up | trigger | restart */
    bool restart_pending;
    int restart_days;
    bool removed;             /* dropped from the file by a reload while running */
    bool spool_replay;        /* the daemon's own job: `zhost spool replay` when rows wait (autoreplay.c) */
    /* the last finished run */
    bool last_known;
    char last_status[16], last_run_id[37];
    double last_started, last_duration, last_success;
    uint64_t last_rows;
    char *last_message;
    int consecutive_failures;
    /* counters since the daemon started, for /metrics */
    uint64_t runs_success, runs_error, runs_interrupted, runs_skipped;
    uint64_t rows_total, http_requests, http_retries;
    double duration_sum;
    zh_job *next;
};

struct zh_serve {
    zh_host *h;
    zh_conf *conf;
    char *conf_flag;          /* --conf as given, re-read on SIGHUP */
    char *secrets_flag;
    zh_job *jobs;
    char hostname[128];
    double started_wall;
    /* the scheduler clock: wall time, or ZHOST_FAKE_NOW advancing ZHOST_FAKE_SPEED times
     * faster than real time (tests only) */
    bool fake_clock;
    double fake_base, mono_base, speed;
    bool stopping, grace_over;
    uv_timer_t *grace_timer, *reap_timer;
    uv_timer_t *stall_timer;  /* every 2 s: script runs whose tasks all wait for each other */
    uv_timer_t *stale_timer;  /* until ClickHouse answers: runs left `running` by a crash are marked */
    zh_stale_check stale;
    zh_run *dead_runs[64];    /* finished runs waiting to be freed outside their callbacks */
    int ndead;
    int queries_inflight;     /* ClickHouse queries from zh_serve_query not answered yet */
    struct zh_health *health;
    struct zh_control *control;
    struct zh_autoreplay *autoreplay;
    bool done;
};

/* Scheduler clock, Unix seconds. */
double zh_serve_now(zh_serve *s);
zh_job *zh_serve_find_job(zh_serve *s, const char *name_or_alias);
bool zh_job_enabled(const zh_job *j);
bool zh_job_running(const zh_job *j);
/* Starts a run now. Returns NULL, or a message (static or in errbuf) saying why not. */
const char *zh_serve_start_job(zh_serve *s, zh_job *j, const char *trigger, int days, char *errbuf, size_t errlen);
/* Operator actions (control.c). Return NULL or a message. */
const char *zh_serve_set_enabled(zh_serve *s, zh_job *j, bool on);
const char *zh_serve_restart_job(zh_serve *s, zh_job *j, int days, char *errbuf, size_t errlen);
/* One job as a JSON object (status, health, CLI). */
void zh_serve_job_json(zh_serve *s, zh_job *j, zh_buf *out);
/* ISO-8601 in the configured display zone, or "null"-free empty string for t <= 0. */
void zh_serve_iso(zh_serve *s, double t, char *out, size_t n);

/* A ClickHouse query with one attempt and a timeout (health checks, `zhost logs`): fn gets the
 * body (TabSeparated or whatever the SQL asks for) or err, and the latency in seconds. */
typedef void (*zh_serve_q_fn)(void *ud, const char *body, size_t len, const char *err, int ch_code, double latency);
void zh_serve_query(zh_serve *s, const char *sql, double timeout_s, zh_serve_q_fn fn, void *ud);

/* A meta_job_runs row's duration in seconds, as SQL: the run's own measure (metrics.duration_ms),
 * else the whole seconds of metrics.duration (status history and `zhost logs` read it alike). */
#define ZH_RUN_DURATION_SQL                                                                                     \
    "if(visitParamHas(metrics, 'duration_ms'), visitParamExtractFloat(metrics, 'duration_ms') / 1000, "         \
    "visitParamExtractFloat(metrics, 'duration'))"

/* `zhost serve` */
int zh_cmd_serve(int argc, char **argv);

#endif
