/* health.c — owns the health endpoints: what each answers, when it is ok/warning/error, and the
 * ClickHouse probes behind them. A probe (SELECT version(), the freshness view, run history) is
 * cached for a second or more and shared by every request waiting for it, so a flood of requests
 * costs ClickHouse at most one query per probe per TTL and never delays jobs; every probe has a
 * short timeout (health.clickhouse_timeout). Answers never contain secrets: only job names,
 * schedules, statuses, counts and run messages (which log.c already redacts). */
#include "health.h"
#include "autoreplay.h"
#include "l_time.h"
#include "clickhouse.h"
#include "httpd.h"
#include "log.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_PING, P_FRESH, P_DAILY, P_RECENT, NPROBES };
enum { EP_HEALTHZ, EP_DETAILED, EP_FRESHNESS, EP_METRICS, EP_PAGE, EP_OTHER, NEP };
static const char *const ep_names[NEP] = {"/healthz", "/healthz/detailed", "/healthz/freshness", "/metrics", "/", "other"};

typedef struct page page;

typedef struct probe {
    const char *sql;
    double ttl;
    double fetched;           /* monotonic time of the last answer, 0 = never */
    bool inflight, ok;
    char *error;
    int ch_code;
    zh_buf body;
    double latency;
    page **waiters;
    int nwaiters, capwaiters;
} probe;

struct zh_health {
    zh_serve *s;
    zh_httpd *httpd;
    probe probes[NPROBES];
    zh_spool_info spool;
    zh_spool_counts *spool_counts; /* so each refresh reads only what was spooled since the last */
    double spool_at;
    uint64_t by_code[NEP][4]; /* 2xx, 4xx, 503, other */
    int pages;                /* requests waiting on probes */
    bool stopped, freeing;
};

struct page {
    zh_health *hs;
    zh_http_req *req;
    int ep, waiting;
};

/* The daily probe compares started_at with a DateTime: 18.16 compares DateTime with Date as raw
 * numbers (the filter kept every run ever); a day more than the 14 shown covers the server's time
 * zone differing from the schedule's (sparkline() picks the days). */
static const char *const probe_sql[NPROBES] = {
    "SELECT version() FORMAT TabSeparated",
    "SELECT source, ifNull(toString(latest_date), ''), days_behind, total_rows FROM v_data_freshness FORMAT TabSeparated",
    "SELECT job, toString(toDate(started_at)) AS d, sum(rows_processed), countIf(status = 'error') FROM meta_job_runs "
    "WHERE started_at >= toDateTime(today() - 14) GROUP BY job, d ORDER BY job, d FORMAT TabSeparated",
    "SELECT job, status, toUnixTimestamp(started_at), rows_processed, visitParamExtractFloat(metrics, 'duration'), "
    "replaceAll(message, '\\n', ' ') FROM meta_job_runs ORDER BY started_at DESC LIMIT 20 FORMAT TabSeparated",
};
static const double probe_ttl[NPROBES] = {1, 5, 30, 5};

static void respond(page *pg, int status, const char *ctype, zh_buf *body);

/* ---- probes ---- */

static void render(page *pg);

static void probe_done(void *ud, const char *body, size_t len, const char *err, int code, double latency) {
    probe *p = ud;
    p->inflight = false;
    p->fetched = zh_now_mono();
    p->latency = latency;
    p->ch_code = code;
    free(p->error);
    p->error = err ? zh_xstrdup(err) : NULL;
    p->ok = !err;
    p->body.len = 0;
    if (body) zh_buf_add(&p->body, body, len);
    zh_buf_cstr(&p->body);
    page **w = p->waiters;
    int n = p->nwaiters;
    p->waiters = NULL;
    p->nwaiters = p->capwaiters = 0;
    for (int i = 0; i < n; i++)
        if (--w[i]->waiting == 0) render(w[i]);
    free(w);
}

/* Makes sure probe i is fresh; returns true when pg must wait for it. */
static bool probe_need(zh_health *hs, int i, page *pg) {
    probe *p = &hs->probes[i];
    if (!p->inflight && p->fetched > 0 && zh_now_mono() - p->fetched < p->ttl) return false;
    if (p->nwaiters == p->capwaiters) {
        p->capwaiters = p->capwaiters ? p->capwaiters * 2 : 8;
        p->waiters = zh_xrealloc(p->waiters, (size_t)p->capwaiters * sizeof *p->waiters);
    }
    p->waiters[p->nwaiters++] = pg;
    if (!p->inflight) {
        p->inflight = true;
        zh_serve_query(hs->s, p->sql, hs->s->conf->ch_timeout_s, probe_done, p);
    }
    return true;
}

/* ---- shared pieces ---- */

static void now_iso(zh_health *hs, char *out, size_t n) { zh_serve_iso(hs->s, zh_now_wall(), out, n); }

static const char *fresh_status(const zh_fresh_rule *r, long days) {
    if (days > r->error_days) return "error";
    if (days > r->warn_days) return "warning";
    return "ok";
}

/* A source whose loader jobs are all switched off (zhost disable, enabled = false) is not stale: its
 * status is "disabled" and it does not turn the answer red. Sources without a known loader, or whose
 * loaders are not configured at all, are judged as usual. */
static const char *const SOURCE_JOBS[][3] = {
    {"qtickets_sales", "qtickets", "qtickets_refunds"},
    {"vk_ads", "vk_ads", NULL},
    {"direct", "direct", NULL},
};

static bool source_switched_off(zh_serve *s, const char *source) {
    for (size_t i = 0; i < sizeof SOURCE_JOBS / sizeof SOURCE_JOBS[0]; i++) {
        if (strcmp(SOURCE_JOBS[i][0], source)) continue;
        int configured = 0;
        for (int k = 1; k < 3 && SOURCE_JOBS[i][k]; k++) {
            zh_job *j = zh_serve_find_job(s, SOURCE_JOBS[i][k]);
            if (!j || j->removed) continue;
            configured++;
            if (zh_job_enabled(j)) return false;
        }
        return configured > 0;
    }
    return false;
}

typedef struct fresh_row {
    char source[64], latest[16];
    long days;
    unsigned long long rows;
} fresh_row;

static int cmp_fresh(const void *a, const void *b) {
    const fresh_row *x = a, *y = b;
    if (x->days != y->days) return x->days < y->days ? 1 : -1;
    return strcmp(x->source, y->source);
}

static int fresh_rows(zh_health *hs, fresh_row **out) {
    probe *p = &hs->probes[P_FRESH];
    *out = NULL;
    if (!p->ok) return -1;
    int n = 0, cap = 0;
    fresh_row *rows = NULL;
    zh_buf f[4];
    for (int i = 0; i < 4; i++) zh_buf_init(&f[i]);
    const char *q = p->body.data ? p->body.data : "", *end = q + p->body.len;
    while (zh_tsv_row(&q, end, f, 4) >= 4 && n < 1000) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            rows = zh_xrealloc(rows, (size_t)cap * sizeof *rows);
        }
        fresh_row *r = &rows[n++];
        snprintf(r->source, sizeof r->source, "%s", f[0].data);
        snprintf(r->latest, sizeof r->latest, "%s", f[1].data);
        r->days = atol(f[2].data);
        r->rows = strtoull(f[3].data, NULL, 10);
    }
    for (int i = 0; i < 4; i++) zh_buf_free(&f[i]);
    qsort(rows, (size_t)n, sizeof *rows, cmp_fresh);
    *out = rows;
    return n;
}

static const char *source_status(zh_health *hs, const fresh_row *r) {
    if (source_switched_off(hs->s, r->source)) return "disabled";
    return fresh_status(zh_conf_fresh_rule(hs->s->conf, r->source), r->days);
}

static void fresh_json(zh_health *hs, const fresh_row *r, zh_buf *b, bool with_source) {
    const zh_fresh_rule *rule = zh_conf_fresh_rule(hs->s->conf, r->source);
    zh_buf_addc(b, '{');
    if (with_source) {
        zh_buf_adds(b, "\"source\":");
        zh_buf_json_str(b, r->source);
        zh_buf_addc(b, ',');
    }
    zh_buf_adds(b, "\"latest_date\":");
    if (r->latest[0]) zh_buf_json_str(b, r->latest);
    else zh_buf_adds(b, "null");
    zh_buf_printf(b, ",\"days_behind\":%ld,\"total_rows\":%llu,\"threshold\":{\"warn\":%d,\"error\":%d},\"status\":\"%s\"}",
                  r->days, r->rows, rule->warn_days, rule->error_days, source_status(hs, r));
}

/* ok | warning | error | disabled | unknown, and why. */
static const char *job_health(zh_job *j, const char **why) {
    *why = "";
    if (!zh_job_enabled(j)) return "disabled";
    if (!j->last_known) {
        *why = "no runs yet";
        return "unknown";
    }
    if (!strcmp(j->last_status, "success")) return "ok";
    if (j->consecutive_failures >= 3) {
        *why = "3 or more failed runs in a row";
        return "error";
    }
    *why = !strcmp(j->last_status, "interrupted") ? "the last run was interrupted" : "the last run failed";
    return "warning";
}

static int rank(const char *st) { return !strcmp(st, "error") ? 2 : !strcmp(st, "warning") ? 1 : 0; }

static void spool_refresh(zh_health *hs) {
    if (hs->spool_at > 0 && zh_now_mono() - hs->spool_at < 5) return;
    if (!hs->spool_counts) hs->spool_counts = zh_spool_counts_new();
    zh_spool_stat_cached(hs->s->conf->spool_dir, hs->spool_counts, &hs->spool);
    hs->spool_at = zh_now_mono();
}

/* ---- /healthz ---- */

static void ep_healthz(page *pg) {
    zh_health *hs = pg->hs;
    probe *p = &hs->probes[P_PING];
    char ts[40];
    now_iso(hs, ts, sizeof ts);
    zh_buf b;
    zh_buf_init(&b);
    if (p->ok) {
        zh_buf_printf(&b, "{\"status\":\"ok\",\"timestamp\":\"%s\",\"checks\":{\"clickhouse\":\"ok\"}}\n", ts);
        respond(pg, 200, "application/json", &b);
    } else {
        zh_buf_printf(&b, "{\"status\":\"error\",\"timestamp\":\"%s\",\"checks\":{\"clickhouse\":\"error\"},\"error\":", ts);
        zh_buf_json_str(&b, p->error ? p->error : "ClickHouse did not answer");
        zh_buf_adds(&b, "}\n");
        respond(pg, 503, "application/json", &b);
    }
}

/* ---- /healthz/detailed ---- */

static void ep_detailed(page *pg) {
    zh_health *hs = pg->hs;
    zh_serve *s = hs->s;
    probe *ping = &hs->probes[P_PING];
    char ts[40];
    now_iso(hs, ts, sizeof ts);
    int overall = 0;
    zh_buf c;
    zh_buf_init(&c);
    zh_buf_adds(&c, "\"clickhouse\":{");
    if (ping->ok) {
        char ver[64];
        snprintf(ver, sizeof ver, "%.*s", (int)strcspn(ping->body.data, "\r\n"), ping->body.data);
        zh_buf_adds(&c, "\"status\":\"ok\",\"message\":\"\",\"version\":");
        zh_buf_json_str(&c, ver);
        zh_buf_printf(&c, ",\"latency_ms\":%.1f}", ping->latency * 1000);
    } else {
        overall = 2;
        zh_buf_adds(&c, "\"status\":\"error\",\"message\":");
        zh_buf_json_str(&c, ping->error ? ping->error : "ClickHouse did not answer");
        zh_buf_adds(&c, ",\"version\":null,\"latency_ms\":null}");
    }
    /* Freshness: only when ClickHouse answered; a missing view is a warning, not an outage. */
    zh_buf_adds(&c, ",\"data_freshness\":{");
    probe *fp = &hs->probes[P_FRESH];
    fresh_row *rows;
    int n = fresh_rows(hs, &rows);
    for (int i = 0; i < n; i++) {
        if (i) zh_buf_addc(&c, ',');
        zh_buf_json_str(&c, rows[i].source);
        zh_buf_addc(&c, ':');
        fresh_json(hs, &rows[i], &c, false);
        int r = rank(source_status(hs, &rows[i]));
        if (r > overall) overall = r;
    }
    free(rows);
    zh_buf_addc(&c, '}');
    if (n < 0 && ping->ok) {
        zh_buf_adds(&c, ",\"data_freshness_error\":");
        zh_buf_json_str(&c, fp->error ? fp->error : "unavailable");
        if (overall < 1) overall = 1;
    }
    zh_buf_adds(&c, ",\"job_runs\":{");
    bool first = true;
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->removed) continue;
        if (!first) zh_buf_addc(&c, ',');
        first = false;
        const char *why;
        const char *st = job_health(j, &why);
        int r = rank(st);
        if (r > overall) overall = r;
        zh_buf_json_str(&c, j->c.name);
        zh_buf_printf(&c, ":{\"status\":\"%s\",\"reason\":", st);
        zh_buf_json_str(&c, why);
        zh_buf_adds(&c, ",\"last_status\":");
        if (j->last_known) zh_buf_json_str(&c, j->last_status);
        else zh_buf_adds(&c, "null");
        zh_buf_adds(&c, ",\"last_run\":");
        if (j->last_known) {
            char t[40];
            zh_serve_iso(s, j->last_started, t, sizeof t);
            zh_buf_json_str(&c, t);
        } else {
            zh_buf_adds(&c, "null");
        }
        zh_buf_adds(&c, ",\"job\":");
        zh_serve_job_json(s, j, &c);
        zh_buf_addc(&c, '}');
    }
    zh_buf_addc(&c, '}');
    spool_refresh(hs);
    bool spool_warn = hs->spool.files || hs->spool.quarantined_rows;
    const char *spool_st = spool_warn ? "warning" : "ok";
    if (spool_warn && overall < 1) overall = 1;
    zh_job *rj = zh_serve_find_job(s, ZH_SPOOL_REPLAY_JOB);
    bool auto_replay = rj && zh_job_enabled(rj);
    char hint[256] = "";
    double next_in;
    int failed = zh_autoreplay_backoff(s->autoreplay, &next_in);
    if (hs->spool.files && auto_replay && failed > 0) {
        /* Backing off: say when, so a quiet hour after a failure is not taken for a stuck daemon. */
        char when[48] = "at its next look";
        if (next_in > 0) snprintf(when, sizeof when, "in about %.0f s", ceil(next_in));
        snprintf(hint, sizeof hint, "the daemon replays it once ClickHouse answers (job spool_replay); %d replay%s in a row "
                                    "failed, the next %s: `zhost logs spool_replay`", failed, failed > 1 ? "s" : "", when);
    } else if (hs->spool.files && auto_replay)
        snprintf(hint, sizeof hint, "the daemon replays it once ClickHouse answers (job spool_replay, at most every %.0f s); "
                                    "rows that stay: `zhost logs spool_replay`", s->conf->replay_every_s);
    else if (hs->spool.files)
        snprintf(hint, sizeof hint, "automatic replay is off: deliver with `zhost spool replay` (or `zhost enable spool_replay`)");
    else if (hs->spool.quarantined_rows)
        snprintf(hint, sizeof hint, "rows ClickHouse rejected are in the spool's quarantine/ (see the .errors files)");
    zh_buf_printf(&c, ",\"spool\":{\"status\":\"%s\",\"files\":%d,\"rows\":%llu,\"bytes\":%llu,\"quarantined_rows\":%llu,"
                      "\"auto_replay\":%s,\"replay_failures\":%d,\"hint\":", spool_st,
                  hs->spool.files, (unsigned long long)hs->spool.rows, (unsigned long long)hs->spool.bytes,
                  (unsigned long long)hs->spool.quarantined_rows, auto_replay ? "true" : "false", failed);
    zh_buf_json_str(&c, hint);
    zh_buf_addc(&c, '}');
    static const char *const names[] = {"ok", "warning", "error"};
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "{\"status\":\"%s\",\"timestamp\":\"%s\",\"version\":\"%s\",\"uptime\":%.0f,\"checks\":{", names[overall],
                  ts, ZH_VERSION, zh_now_wall() - s->started_wall);
    zh_buf_add(&b, c.data, c.len);
    zh_buf_adds(&b, "}}\n");
    zh_buf_free(&c);
    respond(pg, overall == 2 ? 503 : 200, "application/json", &b);
}

/* ---- /healthz/freshness ---- */

static void ep_freshness(page *pg) {
    zh_health *hs = pg->hs;
    char ts[40];
    now_iso(hs, ts, sizeof ts);
    zh_buf b;
    zh_buf_init(&b);
    fresh_row *rows;
    int n = fresh_rows(hs, &rows);
    if (n <= 0) {
        probe *fp = &hs->probes[P_FRESH];
        zh_buf_printf(&b, "{\"status\":\"error\",\"timestamp\":\"%s\",\"data\":[],\"error\":", ts);
        zh_buf_json_str(&b, n == 0 ? "v_data_freshness has no rows" : fp->error ? fp->error : "unavailable");
        zh_buf_adds(&b, "}\n");
        free(rows);
        respond(pg, 503, "application/json", &b);
        return;
    }
    int overall = 0;
    zh_buf d;
    zh_buf_init(&d);
    for (int i = 0; i < n; i++) {
        if (i) zh_buf_addc(&d, ',');
        fresh_json(hs, &rows[i], &d, true);
        int r = rank(source_status(hs, &rows[i]));
        if (r > overall) overall = r;
    }
    free(rows);
    static const char *const names[] = {"ok", "warning", "error"};
    zh_buf_printf(&b, "{\"status\":\"%s\",\"timestamp\":\"%s\",\"data\":[", names[overall], ts);
    zh_buf_add(&b, d.data, d.len);
    zh_buf_adds(&b, "]}\n");
    zh_buf_free(&d);
    respond(pg, overall == 2 ? 503 : 200, "application/json", &b);
}

/* ---- /metrics ---- */

static void prom_label(zh_buf *b, const char *v) {
    for (; *v; v++) {
        if (*v == '"' || *v == '\\') zh_buf_addc(b, '\\');
        if (*v == '\n') zh_buf_adds(b, "\\n");
        else zh_buf_addc(b, *v);
    }
}

static void ep_metrics(page *pg) {
    zh_health *hs = pg->hs;
    zh_serve *s = hs->s;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "# HELP zhost_up 1 while zhost serve runs.\n# TYPE zhost_up gauge\nzhost_up 1\n"
                      "# HELP zhost_start_time_seconds When the daemon started.\n# TYPE zhost_start_time_seconds gauge\n"
                      "zhost_start_time_seconds %.0f\n", s->started_wall);
    probe *ping = &hs->probes[P_PING];
    zh_buf_printf(&b, "# HELP zhost_clickhouse_up 1 when ClickHouse answered the last health probe.\n"
                      "# TYPE zhost_clickhouse_up gauge\nzhost_clickhouse_up %d\n"
                      "# HELP zhost_clickhouse_latency_seconds Latency of the last health probe.\n"
                      "# TYPE zhost_clickhouse_latency_seconds gauge\nzhost_clickhouse_latency_seconds %.4f\n",
                  ping->ok ? 1 : 0, ping->latency);
    struct {
        const char *name, *type, *help;
    } fams[] = {
        {"zhost_job_runs_total", "counter", "Finished runs since the daemon started, by job and status."},
        {"zhost_job_skipped_total", "counter", "Scheduled runs skipped because the previous run was still going."},
        {"zhost_job_rows_total", "counter", "Rows written by the job's runs."},
        {"zhost_job_duration_seconds_total", "counter", "Total run time of finished runs."},
        {"zhost_job_http_requests_total", "counter", "HTTP requests sent by the job's scripts, retries included."},
        {"zhost_job_http_retries_total", "counter", "HTTP retries by the job's scripts."},
        {"zhost_job_last_duration_seconds", "gauge", "Duration of the last finished run."},
        {"zhost_job_last_rows", "gauge", "Rows of the last finished run."},
        {"zhost_job_last_success_timestamp_seconds", "gauge", "When the last successful run finished (0 = unknown)."},
        {"zhost_job_consecutive_failures", "gauge", "Failed runs in a row."},
        {"zhost_job_running", "gauge", "1 while a run is going."},
        {"zhost_job_enabled", "gauge", "1 when the job is enabled."},
        {"zhost_job_next_run_timestamp_seconds", "gauge", "Next scheduled fire (0 = none)."},
    };
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        zh_buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help, fams[f].name, fams[f].type);
        for (zh_job *j = s->jobs; j; j = j->next) {
            if (j->removed) continue;
            zh_buf lbl;
            zh_buf_init(&lbl);
            zh_buf_adds(&lbl, "job=\"");
            prom_label(&lbl, j->c.name);
            zh_buf_addc(&lbl, '"');
            const char *l = lbl.data;
            switch (f) {
            case 0:
                zh_buf_printf(&b, "%s{%s,status=\"success\"} %llu\n", fams[f].name, l, (unsigned long long)j->runs_success);
                zh_buf_printf(&b, "%s{%s,status=\"error\"} %llu\n", fams[f].name, l, (unsigned long long)j->runs_error);
                zh_buf_printf(&b, "%s{%s,status=\"interrupted\"} %llu\n", fams[f].name, l, (unsigned long long)j->runs_interrupted);
                break;
            case 1: zh_buf_printf(&b, "%s{%s} %llu\n", fams[f].name, l, (unsigned long long)j->runs_skipped); break;
            case 2: zh_buf_printf(&b, "%s{%s} %llu\n", fams[f].name, l, (unsigned long long)j->rows_total); break;
            case 3: zh_buf_printf(&b, "%s{%s} %.3f\n", fams[f].name, l, j->duration_sum); break;
            case 4: zh_buf_printf(&b, "%s{%s} %llu\n", fams[f].name, l, (unsigned long long)j->http_requests); break;
            case 5: zh_buf_printf(&b, "%s{%s} %llu\n", fams[f].name, l, (unsigned long long)j->http_retries); break;
            case 6: zh_buf_printf(&b, "%s{%s} %.3f\n", fams[f].name, l, j->last_known ? j->last_duration : 0); break;
            case 7: zh_buf_printf(&b, "%s{%s} %llu\n", fams[f].name, l, (unsigned long long)(j->last_known ? j->last_rows : 0)); break;
            case 8: zh_buf_printf(&b, "%s{%s} %.0f\n", fams[f].name, l, j->last_success); break;
            case 9: zh_buf_printf(&b, "%s{%s} %d\n", fams[f].name, l, j->consecutive_failures); break;
            case 10: zh_buf_printf(&b, "%s{%s} %d\n", fams[f].name, l, zh_job_running(j) ? 1 : 0); break;
            case 11: zh_buf_printf(&b, "%s{%s} %d\n", fams[f].name, l, zh_job_enabled(j) ? 1 : 0); break;
            case 12: zh_buf_printf(&b, "%s{%s} %lld\n", fams[f].name, l, (long long)j->next_fire); break;
            }
            zh_buf_free(&lbl);
        }
    }
    spool_refresh(hs);
    zh_buf_printf(&b, "# HELP zhost_spool_files Batches waiting in the spool.\n# TYPE zhost_spool_files gauge\nzhost_spool_files %d\n"
                      "# HELP zhost_spool_rows Rows waiting in the spool.\n# TYPE zhost_spool_rows gauge\nzhost_spool_rows %llu\n"
                      "# HELP zhost_spool_bytes Bytes in the spool.\n# TYPE zhost_spool_bytes gauge\nzhost_spool_bytes %llu\n"
                      "# HELP zhost_spool_quarantined_rows Rows ClickHouse rejected for their content, set aside by replay.\n"
                      "# TYPE zhost_spool_quarantined_rows gauge\nzhost_spool_quarantined_rows %llu\n",
                  hs->spool.files, (unsigned long long)hs->spool.rows, (unsigned long long)hs->spool.bytes,
                  (unsigned long long)hs->spool.quarantined_rows);
    const zh_httpd_stats *st = zh_httpd_stats_of(hs->httpd);
    zh_buf_printf(&b, "# HELP zhost_health_requests_total Requests to the health server, by path and status class.\n"
                      "# TYPE zhost_health_requests_total counter\n");
    static const char *const cls[] = {"2xx", "4xx", "503", "other"};
    for (int e = 0; e < NEP; e++)
        for (int k = 0; k < 4; k++)
            if (hs->by_code[e][k] || (e == EP_METRICS && k == 0))
                zh_buf_printf(&b, "zhost_health_requests_total{path=\"%s\",code=\"%s\"} %llu\n", ep_names[e], cls[k],
                              (unsigned long long)(hs->by_code[e][k] + (e == EP_METRICS && k == 0)));
    zh_buf_printf(&b, "# HELP zhost_health_connections_rejected_total Connections closed at once: over max_connections.\n"
                      "# TYPE zhost_health_connections_rejected_total counter\nzhost_health_connections_rejected_total %llu\n"
                      "# HELP zhost_health_timeouts_total Connections closed for being too slow.\n"
                      "# TYPE zhost_health_timeouts_total counter\nzhost_health_timeouts_total %llu\n"
                      "# HELP zhost_health_connections_open Open connections.\n# TYPE zhost_health_connections_open gauge\n"
                      "zhost_health_connections_open %d\n",
                  (unsigned long long)st->rejected, (unsigned long long)st->timeouts, st->open);
    respond(pg, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* ---- / : the status page ---- */

static void html_esc(zh_buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': zh_buf_adds(b, "&lt;"); break;
        case '>': zh_buf_adds(b, "&gt;"); break;
        case '&': zh_buf_adds(b, "&amp;"); break;
        case '"': zh_buf_adds(b, "&quot;"); break;
        case '\'': zh_buf_adds(b, "&#39;"); break;
        default: zh_buf_addc(b, *s);
        }
    }
}

/* Rows per day for the last 14 days as an inline SVG polyline. */
static void sparkline(zh_health *hs, const char *job, zh_buf *b) {
    probe *p = &hs->probes[P_DAILY];
    double vals[14] = {0};
    int64_t today = (int64_t)floor((zh_now_wall() + zh_sched_utc_offset(hs->s->conf->timezone, (int64_t)zh_now_wall())) / 86400);
    if (p->ok) {
        zh_buf f[4];
        for (int i = 0; i < 4; i++) zh_buf_init(&f[i]);
        const char *q = p->body.data ? p->body.data : "", *end = q + p->body.len;
        while (zh_tsv_row(&q, end, f, 4) >= 4) {
            if (strcmp(f[0].data, job)) continue;
            int y, m, d;
            if (sscanf(f[1].data, "%d-%d-%d", &y, &m, &d) != 3) continue;
            int64_t day = zh_time_days_from_civil(y, m, d);
            int64_t idx = 13 - (today - day);
            if (idx >= 0 && idx < 14) vals[idx] = atof(f[2].data);
        }
        for (int i = 0; i < 4; i++) zh_buf_free(&f[i]);
    }
    double max = 0, total = 0;
    for (int i = 0; i < 14; i++) {
        if (vals[i] > max) max = vals[i];
        total += vals[i];
    }
    zh_buf_printf(b, "<svg class=\"spark\" width=\"112\" height=\"24\" viewBox=\"0 0 112 24\" role=\"img\" "
                     "data-total=\"%.0f\"><title>rows per day, last 14 days: %.0f in total</title><polyline fill=\"none\" "
                     "stroke=\"#2a6fdb\" stroke-width=\"1.5\" points=\"", total, total);
    for (int i = 0; i < 14; i++)
        zh_buf_printf(b, "%s%.1f,%.1f", i ? " " : "", 4 + i * 8.0, max > 0 ? 21 - vals[i] / max * 18 : 21.0);
    zh_buf_adds(b, "\"/></svg>");
}

static void ep_page(page *pg) {
    zh_health *hs = pg->hs;
    zh_serve *s = hs->s;
    probe *ping = &hs->probes[P_PING];
    char ts[40];
    now_iso(hs, ts, sizeof ts);
    int overall = ping->ok ? 0 : 2;
    zh_buf jobs;
    zh_buf_init(&jobs);
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->removed) continue;
        const char *why;
        const char *st = job_health(j, &why);
        if (rank(st) > overall) overall = rank(st);
        char next[40] = "", last[40] = "";
        if (j->next_fire > 0) zh_serve_iso(s, (double)j->next_fire, next, sizeof next);
        if (j->last_known) zh_serve_iso(s, j->last_started, last, sizeof last);
        zh_buf_adds(&jobs, "<tr data-job=\"");
        html_esc(&jobs, j->c.name);
        zh_buf_adds(&jobs, "\"><td class=\"name\">");
        html_esc(&jobs, j->c.name);
        zh_buf_printf(&jobs, "</td><td class=\"enabled\">%s</td><td><code>", zh_job_enabled(j) ? "yes" : "no");
        html_esc(&jobs, j->c.sched.text);
        zh_buf_adds(&jobs, "</code> ");
        html_esc(&jobs, j->c.sched.tz);
        zh_buf_adds(&jobs, "</td><td>");
        html_esc(&jobs, next[0] ? next : "—");
        zh_buf_printf(&jobs, "</td><td class=\"status st-%s\">%s%s</td><td>", st, st, zh_job_running(j) ? " (running)" : "");
        html_esc(&jobs, last[0] ? last : "—");
        if (j->last_known) zh_buf_printf(&jobs, "</td><td>%.1f s</td><td class=\"rows\">%llu</td><td>", j->last_duration,
                                         (unsigned long long)j->last_rows);
        else zh_buf_adds(&jobs, "</td><td>—</td><td class=\"rows\">—</td><td>");
        sparkline(hs, j->c.name, &jobs);
        zh_buf_adds(&jobs, "</td><td class=\"msg\">");
        html_esc(&jobs, j->last_message ? j->last_message : "");
        zh_buf_adds(&jobs, "</td></tr>\n");
    }
    zh_buf fr;
    zh_buf_init(&fr);
    fresh_row *rows;
    int n = fresh_rows(hs, &rows);
    for (int i = 0; i < n; i++) {
        const char *st = source_status(hs, &rows[i]);
        if (rank(st) > overall) overall = rank(st);
        zh_buf_adds(&fr, "<tr data-source=\"");
        html_esc(&fr, rows[i].source);
        zh_buf_adds(&fr, "\"><td>");
        html_esc(&fr, rows[i].source);
        zh_buf_adds(&fr, "</td><td>");
        html_esc(&fr, rows[i].latest[0] ? rows[i].latest : "—");
        zh_buf_printf(&fr, "</td><td>%ld</td><td>%llu</td><td class=\"status st-%s\">%s</td></tr>\n", rows[i].days,
                      rows[i].rows, st, st);
    }
    free(rows);
    if (n <= 0) {
        zh_buf_adds(&fr, "<tr><td colspan=\"5\" class=\"msg\">freshness unavailable: ");
        html_esc(&fr, n == 0 ? "no rows" : hs->probes[P_FRESH].error ? hs->probes[P_FRESH].error : "no answer");
        zh_buf_adds(&fr, "</td></tr>\n");
    }
    zh_buf rr;
    zh_buf_init(&rr);
    probe *rp = &hs->probes[P_RECENT];
    if (rp->ok) {
        zh_buf f[6];
        for (int i = 0; i < 6; i++) zh_buf_init(&f[i]);
        const char *q = rp->body.data ? rp->body.data : "", *end = q + rp->body.len;
        while (zh_tsv_row(&q, end, f, 6) >= 6) {
            char t[40];
            zh_serve_iso(s, atof(f[2].data), t, sizeof t);
            zh_buf_adds(&rr, "<tr><td>");
            html_esc(&rr, f[0].data);
            zh_buf_adds(&rr, "</td><td>");
            html_esc(&rr, t);
            zh_buf_adds(&rr, "</td><td class=\"status st-");
            html_esc(&rr, f[1].data);
            zh_buf_adds(&rr, "\">");
            html_esc(&rr, f[1].data);
            zh_buf_printf(&rr, "</td><td>%.0f s</td><td>", atof(f[4].data));
            html_esc(&rr, f[3].data);
            zh_buf_adds(&rr, "</td><td class=\"msg\">");
            html_esc(&rr, f[5].data);
            zh_buf_adds(&rr, "</td></tr>\n");
        }
        for (int i = 0; i < 6; i++) zh_buf_free(&f[i]);
    }
    static const char *const names[] = {"ok", "warning", "error"};
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b,
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"60\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>zhost status</title><style>"
                "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}"
                "th,td{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}"
                "th{background:#f4f4f4}.st-ok,.st-success{color:#137333}.st-warning,.st-interrupted,.st-unknown{color:#b06000}"
                ".st-error{color:#c5221f;font-weight:bold}.st-disabled{color:#888}.msg{max-width:40em;color:#555}"
                "code{font-size:90%}</style></head><body>\n");
    zh_buf_printf(&b, "<h1>zhost <span id=\"overall\" class=\"st-%s\">%s</span></h1>\n<p id=\"meta\">%s · ClickHouse ",
                  names[overall], names[overall], ts);
    if (ping->ok) {
        char ver[64];
        snprintf(ver, sizeof ver, "%.*s", (int)strcspn(ping->body.data, "\r\n"), ping->body.data);
        zh_buf_adds(&b, "<span id=\"clickhouse\" class=\"st-ok\">");
        html_esc(&b, ver);
        zh_buf_printf(&b, ", %.0f ms</span>", ping->latency * 1000);
    } else {
        zh_buf_adds(&b, "<span id=\"clickhouse\" class=\"st-error\">unreachable: ");
        html_esc(&b, ping->error ? ping->error : "no answer");
        zh_buf_adds(&b, "</span>");
    }
    zh_buf_printf(&b, " · zhost %s</p>\n<h2>Jobs</h2>\n<table id=\"jobs\"><tr><th>job</th><th>enabled</th><th>schedule</th>"
                      "<th>next run</th><th>status</th><th>last run</th><th>duration</th><th>rows</th><th>rows/day, 14 d</th>"
                      "<th>message</th></tr>\n", ZH_VERSION);
    zh_buf_add(&b, jobs.data, jobs.len);
    zh_buf_adds(&b, "</table>\n<h2>Data freshness</h2>\n<table id=\"freshness\"><tr><th>source</th><th>latest date</th>"
                    "<th>days behind</th><th>rows</th><th>status</th></tr>\n");
    zh_buf_add(&b, fr.data, fr.len);
    zh_buf_adds(&b, "</table>\n<h2>Recent runs</h2>\n<table id=\"runs\"><tr><th>job</th><th>started</th><th>status</th>"
                    "<th>duration</th><th>rows</th><th>message</th></tr>\n");
    zh_buf_add(&b, rr.data, rr.len);
    zh_buf_adds(&b, "</table>\n<p>JSON: <a href=\"/healthz/detailed\">/healthz/detailed</a> · "
                    "<a href=\"/healthz/freshness\">/healthz/freshness</a> · <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n");
    zh_buf_free(&jobs);
    zh_buf_free(&fr);
    zh_buf_free(&rr);
    respond(pg, 200, "text/html; charset=utf-8", &b);
}

/* ---- dispatch ---- */

static void respond(page *pg, int status, const char *ctype, zh_buf *body) {
    zh_health *hs = pg->hs;
    int k = status < 300 ? 0 : status == 503 ? 2 : status < 500 ? 1 : 3;
    hs->by_code[pg->ep][k]++;
    zh_httpd_respond(pg->req, status, ctype, NULL, body->data ? body->data : "", body->len);
    zh_buf_free(body);
    if (pg->waiting >= 0) hs->pages--;
    free(pg);
}

static void render(page *pg) {
    pg->waiting = 0;
    if (pg->hs->stopped) { /* shutting down: the server is gone, answer nothing useful */
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_adds(&b, "{\"status\":\"error\",\"error\":\"shutting down\"}\n");
        respond(pg, 503, "application/json", &b);
        return;
    }
    switch (pg->ep) {
    case EP_HEALTHZ: ep_healthz(pg); break;
    case EP_DETAILED: ep_detailed(pg); break;
    case EP_FRESHNESS: ep_freshness(pg); break;
    case EP_METRICS: ep_metrics(pg); break;
    case EP_PAGE: ep_page(pg); break;
    }
}

static void on_request(zh_http_req *req, void *ud) {
    zh_health *hs = ud;
    page *pg = zh_xcalloc(1, sizeof *pg);
    pg->hs = hs;
    pg->req = req;
    pg->ep = EP_OTHER;
    for (int e = 0; e < EP_OTHER; e++)
        if (!strcmp(req->path, ep_names[e])) pg->ep = e;
    if (!strcmp(req->path, "/healthz/")) pg->ep = EP_HEALTHZ;
    zh_buf b;
    zh_buf_init(&b);
    if (pg->ep == EP_OTHER) {
        pg->waiting = -1;
        zh_buf_adds(&b, "{\"status\":\"error\",\"error\":\"not found\",\"endpoints\":[\"/healthz\",\"/healthz/detailed\","
                        "\"/healthz/freshness\",\"/metrics\",\"/\"]}\n");
        respond(pg, 404, "application/json", &b);
        return;
    }
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        pg->waiting = -1;
        zh_buf_adds(&b, "{\"status\":\"error\",\"error\":\"method not allowed: the health endpoints are read-only (GET)\"}\n");
        hs->by_code[pg->ep][1]++;
        zh_httpd_respond(req, 405, "application/json", "Allow: GET, HEAD\r\n", b.data, b.len);
        zh_buf_free(&b);
        free(pg);
        return;
    }
    if (hs->pages > 4096) {
        pg->waiting = -1;
        zh_buf_adds(&b, "{\"status\":\"error\",\"error\":\"busy\"}\n");
        respond(pg, 503, "application/json", &b);
        return;
    }
    hs->pages++;
    int need[NPROBES] = {0};
    need[P_PING] = 1;
    if (pg->ep == EP_DETAILED || pg->ep == EP_FRESHNESS || pg->ep == EP_PAGE) need[P_FRESH] = 1;
    if (pg->ep == EP_FRESHNESS) need[P_PING] = 0;
    if (pg->ep == EP_PAGE) need[P_DAILY] = need[P_RECENT] = 1;
    /* Count first, then register: a cached probe must not render the page mid-loop. */
    pg->waiting = 1;
    for (int i = 0; i < NPROBES; i++)
        if (need[i] && probe_need(hs, i, pg)) pg->waiting++;
    if (--pg->waiting == 0) render(pg);
}

static void setup_probes(zh_health *hs) {
    for (int i = 0; i < NPROBES; i++) {
        hs->probes[i].sql = probe_sql[i];
        hs->probes[i].ttl = probe_ttl[i];
    }
}

zh_health *zh_health_start(zh_serve *s, char **err) {
    zh_health *hs = zh_xcalloc(1, sizeof *hs);
    hs->s = s;
    setup_probes(hs);
    for (int i = 0; i < NPROBES; i++) zh_buf_init(&hs->probes[i].body);
    zh_httpd_opts o = {.host = s->conf->listen_host, .port = s->conf->listen_port,
                       .max_connections = s->conf->max_connections, .timeout_s = s->conf->idle_timeout_s,
                       .max_head = 8192, .max_body = 65536, .handler = on_request, .ud = hs};
    hs->httpd = zh_httpd_start(s->h->loop, &o, err);
    if (!hs->httpd) {
        free(hs);
        return NULL;
    }
    ZH_INFO(NULL, "msg=\"health server listening\" address=%s:%d", s->conf->listen_host, zh_httpd_port(hs->httpd));
    return hs;
}

void zh_health_reconfigure(zh_health *hs) { (void)hs; /* thresholds and timeouts are read from s->conf on use */ }

void zh_health_stop(zh_health *hs) {
    if (hs->stopped) return;
    hs->stopped = true;
    zh_httpd_close(hs->httpd);
}

void zh_health_free(zh_health *hs) {
    zh_health_stop(hs);
    /* Probes still in flight point at hs: serve.c waits for them before freeing us. */
    for (int i = 0; i < NPROBES; i++) {
        probe *p = &hs->probes[i];
        for (int k = 0; k < p->nwaiters; k++) {
            page *pg = p->waiters[k];
            if (--pg->waiting == 0) {
                zh_httpd_respond(pg->req, 503, "application/json", NULL, "{}", 2);
                free(pg);
            }
        }
        free(p->waiters);
        free(p->error);
        zh_buf_free(&p->body);
    }
    zh_spool_counts_free(hs->spool_counts);
    free(hs);
}
