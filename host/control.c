/* control.c — owns the operator channel: the daemon's unix socket (<state_dir>/zhost.sock, mode
 * 0660, so only the service user, its group and root can connect — that is the authentication;
 * every change is logged with the caller's uid) and the client commands `zhost status`, `logs`,
 * `enable`, `disable`, `trigger` and `restart`, which work from any directory.
 *
 * Protocol: the client sends one line of tab-separated words ("trigger\tqtickets\t3\n"); the
 * daemon answers "<exit code>\n<text for the operator>" and closes. */
#include "control.h"
#include "autoreplay.h"
#include "clickhouse.h"
#include "commands.h"
#include "log.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct zh_control {
    zh_serve *s;
    uv_pipe_t listener;
    bool stopped, listener_open;
    struct cconn *conns;
};

typedef struct cconn {
    uv_pipe_t pipe;
    uv_timer_t timer;
    zh_control *ctl;
    char buf[4096];
    size_t len;
    bool parsed, answered, closing;
    int handles;
    long uid;
    struct cconn *next;
} cconn;

static void cconn_closed(uv_handle_t *hd) {
    cconn *c = hd->data;
    if (--c->handles) return;
    zh_control *ctl = c->ctl;
    for (cconn **pp = &ctl->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c);
}

static void cconn_close(cconn *c) {
    if (c->closing) return;
    c->closing = true;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, cconn_closed);
    uv_close((uv_handle_t *)&c->pipe, cconn_closed);
}

typedef struct cwrite {
    uv_write_t w;
    cconn *c;
    char *data;
} cwrite;

static void cwritten(uv_write_t *w, int status) {
    cwrite *cw = (cwrite *)w;
    (void)status;
    cconn_close(cw->c);
    free(cw->data);
    free(cw);
}

/* Answers and closes. c may already be closing (client gone): then the answer is dropped. */
static void answer(cconn *c, int code, const char *text) {
    c->answered = true;
    if (c->closing) return;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "%d\n%s", code, text);
    if (b.len && b.data[b.len - 1] != '\n') zh_buf_addc(&b, '\n');
    cwrite *cw = zh_xcalloc(1, sizeof *cw);
    cw->c = c;
    cw->data = b.data;
    uv_buf_t ub = uv_buf_init(b.data, (unsigned)b.len);
    if (uv_write(&cw->w, (uv_stream_t *)&c->pipe, &ub, 1, cwritten) != 0) {
        free(cw->data);
        free(cw);
        cconn_close(c);
    }
}

/* ---- status ---- */

static void status_text(zh_serve *s, zh_buf *b) {
    /* The JOB column is as wide as the longest name (qtickets_refunds is 16), so columns line up. */
    int w = 14;
    for (zh_job *j = s->jobs; j; j = j->next)
        if (!j->removed && (int)strlen(j->c.name) > w) w = (int)strlen(j->c.name);
    zh_buf_printf(b, "%-*s %-8s %-16s %-26s %-12s %-26s %9s %9s\n", w, "JOB", "ENABLED", "SCHEDULE", "NEXT RUN",
                  "LAST STATUS", "LAST RUN", "ROWS", "DURATION");
    for (zh_job *j = s->jobs; j; j = j->next) {
        if (j->removed) continue;
        char next[40] = "-", last[40] = "-", st[24] = "-";
        if (j->next_fire > 0) zh_serve_iso(s, (double)j->next_fire, next, sizeof next);
        if (j->last_known) {
            zh_serve_iso(s, j->last_started, last, sizeof last);
            snprintf(st, sizeof st, "%s", j->last_status);
        }
        if (zh_job_running(j)) snprintf(st, sizeof st, "running");
        char rows[24] = "-", dur[24] = "-";
        if (j->last_known) {
            snprintf(rows, sizeof rows, "%llu", (unsigned long long)j->last_rows);
            snprintf(dur, sizeof dur, "%.1fs", j->last_duration);
        }
        zh_buf_printf(b, "%-*s %-8s %-16s %-26s %-12s %-26s %9s %9s\n", w, j->c.name, zh_job_enabled(j) ? "yes" : "no",
                      j->c.sched.text, next, st, last, rows, dur);
    }
}

static void status_job_text(zh_serve *s, zh_job *j, zh_buf *b) {
    char t[40];
    zh_buf_printf(b, "job:            %s", j->c.name);
    if (j->c.aliases[0]) zh_buf_printf(b, "  (also: %s)", j->c.aliases);
    zh_buf_addc(b, '\n');
    zh_buf_printf(b, "enabled:        %s%s\n", zh_job_enabled(j) ? "yes" : "no",
                  j->enabled_override >= 0 ? " (set by zhost enable/disable)" : " (configuration default)");
    zh_buf_printf(b, "runs:           %s%s\n", j->c.command ? "zhost " : "", j->c.command ? j->c.command : j->c.script);
    if (j->spool_replay) {
        double cap = s->conf->replay_max_every_s > s->conf->replay_every_s ? s->conf->replay_max_every_s : s->conf->replay_every_s;
        zh_buf_printf(b, "schedule:       when rows wait in the spool and ClickHouse answers, at most every %.0f s, up to "
                         "%.0f s after failed replays (looks every %.0f s; [spool] in the configuration)\n",
                      s->conf->replay_every_s, cap, s->conf->replay_check_s);
        double next_in;
        int failed = zh_autoreplay_backoff(s->autoreplay, &next_in);
        if (failed > 0)
            zh_buf_printf(b, "back-off:       %d failed replay%s in a row; the next automatic one in about %.0f s "
                             "(sooner for rows of another table; `zhost trigger spool_replay` replays now)\n",
                          failed, failed > 1 ? "s" : "", ceil(next_in));
    } else
        zh_buf_printf(b, "schedule:       %s (%s)%s", j->c.sched.text, j->c.sched.tz, j->c.jitter_s > 0 ? "" : "\n");
    if (j->c.jitter_s > 0) zh_buf_printf(b, ", random delay up to %.0f s\n", j->c.jitter_s);
    if (j->c.timeout_s > 0) zh_buf_printf(b, "timeout:        %.0f s\n", j->c.timeout_s);
    if (j->next_fire > 0) {
        zh_serve_iso(s, (double)j->next_fire, t, sizeof t);
        zh_buf_printf(b, "next run:       %s\n", t);
    } else {
        zh_buf_adds(b, "next run:       -\n");
    }
    if (zh_job_running(j)) {
        zh_serve_iso(s, j->run_started, t, sizeof t);
        zh_buf_printf(b, "running:        since %s (%s, run %s)\n", t, j->trigger, j->run_id);
    }
    if (j->last_known) {
        zh_serve_iso(s, j->last_started, t, sizeof t);
        zh_buf_printf(b, "last run:       %s at %s, %.1f s, %llu rows (run %s)\n", j->last_status, t, j->last_duration,
                      (unsigned long long)j->last_rows, j->last_run_id);
        if (j->last_message) zh_buf_printf(b, "last message:   %s\n", j->last_message);
    } else {
        zh_buf_adds(b, "last run:       none known\n");
    }
    if (j->last_success > 0) {
        zh_serve_iso(s, j->last_success, t, sizeof t);
        zh_buf_printf(b, "last success:   %s\n", t);
    }
    zh_buf_printf(b, "failures:       %d in a row\n", j->consecutive_failures);
    if (j->runs_skipped) zh_buf_printf(b, "skipped:        %llu (previous run still going)\n", (unsigned long long)j->runs_skipped);
}

static void unknown_job(zh_serve *s, const char *name, zh_buf *b) {
    zh_buf_printf(b, "unknown job '%s'; jobs:", name);
    for (zh_job *j = s->jobs; j; j = j->next)
        if (!j->removed) zh_buf_printf(b, " %s", j->c.name);
    zh_buf_addc(b, '\n');
}

/* ---- logs ---- */

typedef struct logs_req {
    cconn *c;
    zh_serve *s;
    char job[64];
    double since;
    int n;
} logs_req;

static double line_time(const char *line) {
    /* "2026-03-01T00:10:00.123+03:00 ..." */
    if (strlen(line) < 29 || line[10] != 'T' || line[19] != '.') return 0;
    char iso[32];
    snprintf(iso, sizeof iso, "%.19s%.6s", line, line + 23);
    int64_t t;
    return zh_sched_parse_iso(iso, &t) == 0 ? (double)t : 0;
}

static void tail_file(const char *path, const char *needle, double since, char **ring, int n, int *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    /* Only the last 8 MiB: the file is bounded by log_max anyway. */
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long start = size > 8 * 1024 * 1024 ? size - 8 * 1024 * 1024 : 0;
        fseek(f, start, SEEK_SET);
        if (start > 0) {
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {
            }
        }
    }
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, needle)) continue;
        if (since > 0 && line_time(line) < since) continue;
        int slot = *count % n;
        free(ring[slot]);
        ring[slot] = zh_xstrdup(line);
        (*count)++;
    }
    fclose(f);
}

static void logs_answer(logs_req *lr, const char *body, size_t len, const char *err) {
    zh_serve *s = lr->s;
    zh_buf b;
    zh_buf_init(&b);
    char since[40];
    zh_serve_iso(s, lr->since, since, sizeof since);
    zh_buf_printf(&b, "Runs of %s since %s (newest first):\n", lr->job, since);
    if (err) {
        zh_buf_printf(&b, "  (run history unavailable: %s)\n", err);
    } else {
        zh_buf_printf(&b, "  %-26s %-12s %9s %9s  %-36s  %s\n", "STARTED", "STATUS", "DURATION", "ROWS", "RUN ID", "MESSAGE");
        zh_buf f[7];
        for (int i = 0; i < 7; i++) zh_buf_init(&f[i]);
        const char *p = body, *end = body + len;
        int rows = 0;
        while (zh_tsv_row(&p, end, f, 7) >= 7) {
            char t[40];
            zh_serve_iso(s, atof(f[2].data), t, sizeof t);
            /* the run's own measure (duration_ms), else the whole seconds between its rows */
            double dur = atof(f[6].data) > 0 ? atof(f[6].data) : atof(f[3].data) > 0 ? atof(f[3].data) - atof(f[2].data) : 0;
            zh_buf_printf(&b, "  %-26s %-12s %8.1fs %9s  %-36s  %s\n", t, f[1].data, dur, f[4].data, f[0].data, f[5].data);
            rows++;
        }
        if (!rows) zh_buf_adds(&b, "  (no runs in this window)\n");
        for (int i = 0; i < 7; i++) zh_buf_free(&f[i]);
    }
    char needle[80];
    snprintf(needle, sizeof needle, " job=%s ", lr->job);
    char **ring = zh_xcalloc((size_t)lr->n, sizeof *ring);
    int count = 0;
    char older[1100];
    snprintf(older, sizeof older, "%s.1", s->conf->log_file);
    tail_file(older, needle, lr->since, ring, lr->n, &count);
    tail_file(s->conf->log_file, needle, lr->since, ring, lr->n, &count);
    int shown = count < lr->n ? count : lr->n;
    zh_buf_printf(&b, "\nLast %d log lines of %s (%s):\n", shown, lr->job, s->conf->log_file);
    for (int i = 0; i < shown; i++) {
        int slot = (count - shown + i) % lr->n;
        zh_buf_adds(&b, ring[slot]);
    }
    for (int i = 0; i < lr->n; i++) free(ring[i]);
    free(ring);
    answer(lr->c, 0, b.data ? b.data : "");
    zh_buf_free(&b);
    free(lr);
}

static void logs_queried(void *ud, const char *body, size_t len, const char *err, int code, double latency) {
    (void)code;
    (void)latency;
    logs_answer(ud, body, len, err);
}

/* ---- dispatch ---- */

static void handle(cconn *c, int argc, char **argv) {
    zh_serve *s = c->ctl->s;
    zh_buf b;
    zh_buf_init(&b);
    const char *verb = argv[0];
    zh_job *j = NULL;
    char ebuf[512];
    if (!strcmp(verb, "ping")) {
        answer(c, 0, "pong");
        goto out;
    }
    if (!strcmp(verb, "status")) {
        bool json = argc > 2 && !strcmp(argv[2], "json");
        if (argc > 1 && argv[1][0]) {
            j = zh_serve_find_job(s, argv[1]);
            if (!j) {
                unknown_job(s, argv[1], &b);
                answer(c, 1, b.data);
                goto out;
            }
            if (json) zh_serve_job_json(s, j, &b), zh_buf_addc(&b, '\n');
            else status_job_text(s, j, &b);
        } else if (json) {
            zh_buf_adds(&b, "{\"jobs\":[");
            bool first = true;
            for (zh_job *k = s->jobs; k; k = k->next) {
                if (k->removed) continue;
                if (!first) zh_buf_addc(&b, ',');
                first = false;
                zh_serve_job_json(s, k, &b);
            }
            zh_buf_adds(&b, "]}\n");
        } else {
            status_text(s, &b);
        }
        answer(c, 0, b.data);
        goto out;
    }
    if (argc < 2) {
        answer(c, 2, "missing job name");
        goto out;
    }
    j = zh_serve_find_job(s, argv[1]);
    if (!j) {
        unknown_job(s, argv[1], &b);
        answer(c, 1, b.data);
        goto out;
    }
    if (!strcmp(verb, "logs")) {
        logs_req *lr = zh_xcalloc(1, sizeof *lr);
        lr->c = c;
        lr->s = s;
        snprintf(lr->job, sizeof lr->job, "%s", j->c.name);
        double since_s = argc > 2 ? atof(argv[2]) : 86400;
        int n = argc > 3 ? atoi(argv[3]) : 50;
        lr->n = n < 1 ? 1 : n > 5000 ? 5000 : n;
        lr->since = zh_now_wall() - (since_s > 0 ? since_s : 86400);
        zh_buf q;
        zh_buf_init(&q);
        zh_buf_adds(&q, "SELECT run_id, status, toUnixTimestamp(started_at), "
                        "if(isNull(finished_at), 0, toUnixTimestamp(assumeNotNull(finished_at))), rows_processed, "
                        "replaceAll(message, '\\n', ' '), " ZH_RUN_DURATION_SQL " FROM meta_job_runs WHERE job = '");
        zh_buf_adds(&q, j->c.name); /* job names are [a-z0-9_-] (conf.c) */
        zh_buf_printf(&q, "' AND started_at >= toDateTime(%.0f) ORDER BY started_at DESC LIMIT %d FORMAT TabSeparated",
                      floor(lr->since), lr->n);
        zh_serve_query(s, q.data, 10, logs_queried, lr);
        zh_buf_free(&q);
        goto out;
    }
    if (!strcmp(verb, "enable") || !strcmp(verb, "disable")) {
        bool on = !strcmp(verb, "enable");
        bool was = zh_job_enabled(j);
        ZH_INFO(j->c.name, "msg=\"control: %s\" uid=%ld", verb, c->uid);
        zh_serve_set_enabled(s, j, on);
        char next[40] = "";
        if (j->next_fire > 0) zh_serve_iso(s, (double)j->next_fire, next, sizeof next);
        zh_buf_printf(&b, "%s %s%s%s%s\n", j->c.name, on ? "enabled" : "disabled", was == on ? " (it already was)" : "",
                      next[0] ? "; next run " : "", next);
        if (!on && zh_job_running(j)) zh_buf_printf(&b, "the run in progress (%s) goes on; `zhost restart` does not apply to a disabled job\n", j->run_id);
        answer(c, 0, b.data);
        goto out;
    }
    if (!strcmp(verb, "trigger") || !strcmp(verb, "restart")) {
        int days = argc > 2 ? atoi(argv[2]) : 0;
        ZH_INFO(j->c.name, "msg=\"control: %s\" uid=%ld days=%d", verb, c->uid, days);
        const char *why = !strcmp(verb, "trigger") ? zh_serve_start_job(s, j, "trigger", days > 0 ? days : j->c.days, ebuf, sizeof ebuf)
                                                   : zh_serve_restart_job(s, j, days > 0 ? days : j->c.days, ebuf, sizeof ebuf);
        if (why) {
            answer(c, 1, why);
            goto out;
        }
        if (j->restart_pending) zh_buf_printf(&b, "%s: stopping run %s; it starts again when the stop completes\n", j->c.name, j->run_id);
        else if (zh_job_running(j)) zh_buf_printf(&b, "%s started, run %s\n", j->c.name, j->run_id);
        else zh_buf_printf(&b, "%s finished at once; see `zhost status %s`\n", j->c.name, j->c.name);
        answer(c, 0, b.data);
        goto out;
    }
    zh_buf_printf(&b, "unknown request '%s'", verb);
    answer(c, 2, b.data);
out:
    zh_buf_free(&b);
}

static void c_timeout(uv_timer_t *t) {
    cconn *c = t->data;
    /* A parsed request is always answered (its ClickHouse query has its own timeout). */
    if (!c->parsed) cconn_close(c);
}

static void c_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
    cconn *c = hd->data;
    (void)sz;
    buf->base = c->buf + c->len;
    buf->len = sizeof c->buf - 1 - c->len;
}

static void c_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    cconn *c = st->data;
    (void)buf;
    if (n < 0) {
        uv_read_stop(st);
        /* The client may half-close after its request; only an unanswered, unparsed one ends here. */
        if (!c->parsed) cconn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    char *nl = memchr(c->buf, '\n', c->len);
    if (!nl) {
        if (c->len >= sizeof c->buf - 1) answer(c, 2, "request too long");
        return;
    }
    uv_read_stop(st);
    c->parsed = true;
    *nl = 0;
    char *argv[8];
    int argc = 0;
    char *p = c->buf;
    while (argc < 8) {
        argv[argc++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = 0;
        p = tab + 1;
    }
    if (!argv[0][0]) {
        answer(c, 2, "empty request");
        return;
    }
    handle(c, argc, argv);
}

static void on_conn(uv_stream_t *server, int status) {
    zh_control *ctl = server->data;
    if (status < 0) return;
    cconn *c = zh_xcalloc(1, sizeof *c);
    c->ctl = ctl;
    c->uid = -1;
    uv_pipe_init(server->loop, &c->pipe, 0);
    c->pipe.data = c;
    uv_timer_init(server->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    c->next = ctl->conns;
    ctl->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 || ctl->stopped) {
        cconn_close(c);
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0) {
        struct ucred cr;
        socklen_t l = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == 0) c->uid = (long)cr.uid;
    }
    uv_timer_start(&c->timer, c_timeout, 30000, 0);
    uv_read_start((uv_stream_t *)&c->pipe, c_alloc, c_read);
}

static void listener_closed(uv_handle_t *hd) {
    zh_control *ctl = hd->data;
    ctl->listener_open = false;
}

zh_control *zh_control_start(zh_serve *s, char **err) {
    zh_control *ctl = zh_xcalloc(1, sizeof *ctl);
    ctl->s = s;
    const char *path = s->conf->socket;
    /* We hold the state directory's lock, so a socket file left there is stale. */
    unlink(path);
    uv_pipe_init(s->h->loop, &ctl->listener, 0);
    ctl->listener.data = ctl;
    ctl->listener_open = true;
    mode_t old = umask(0117); /* the socket is created 0660 */
    int rc = uv_pipe_bind(&ctl->listener, path);
    umask(old);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&ctl->listener, 16, on_conn);
    if (rc == 0 && chmod(path, 0660) != 0) rc = uv_translate_sys_error(errno);
    if (rc != 0) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", path, uv_strerror(rc));
        *err = b.data;
        uv_close((uv_handle_t *)&ctl->listener, NULL);
        uv_run(s->h->loop, UV_RUN_NOWAIT);
        free(ctl);
        return NULL;
    }
    return ctl;
}

void zh_control_stop(zh_control *ctl) {
    if (ctl->stopped) return;
    ctl->stopped = true;
    uv_close((uv_handle_t *)&ctl->listener, listener_closed);
    unlink(ctl->s->conf->socket);
}

void zh_control_free(zh_control *ctl) {
    zh_control_stop(ctl);
    for (cconn *c = ctl->conns; c; c = c->next) cconn_close(c);
    /* Handles close on the next loop turns (the host drains the loop); conns free themselves,
     * and the listener's callback only touches ctl — so run the loop until they are done. */
    while (ctl->listener_open || ctl->conns) uv_run(ctl->s->h->loop, UV_RUN_ONCE);
    free(ctl);
}

/* ---- the client commands ---- */

static const char *find_socket(const char *sock_flag, const char *conf_flag, char *out, size_t n) {
    if (sock_flag) return sock_flag;
    const char *e = getenv("ZHOST_SOCKET");
    if (e && *e) return e;
    const char *path = zh_conf_find(conf_flag);
    if (!path) return NULL;
    if (zh_conf_socket(path, out, n) != 0) {
        fprintf(stderr, "zhost: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    return out;
}

/* Sends one request; prints the answer; returns the daemon's exit code (1 if unreachable). */
static int request(const char *sock_flag, const char *conf_flag, int nwords, const char **words) {
    char buf[1100];
    const char *path = find_socket(sock_flag, conf_flag, buf, sizeof buf);
    if (!path) {
        fprintf(stderr, "zhost: cannot find the daemon: no configuration (pass --conf FILE or --socket PATH, or set ZHOST_CONF)\n");
        return 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "zhost: socket path too long: %s\n", path);
        close(fd);
        return 1;
    }
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "zhost: cannot reach zhost serve at %s: %s\n  (is it running? `systemctl status zhost`; "
                        "permission denied means you are not in the service's group)\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        /* The socket is found from the [zhost] lines alone, so that a half-edited file still
         * reaches a running daemon; when it does not, a broken file is a likely reason. */
        const char *env_sock = getenv("ZHOST_SOCKET");
        const char *conf_path = sock_flag || (env_sock && *env_sock) ? NULL : zh_conf_find(conf_flag);
        char *conf_err = NULL;
        zh_conf *conf = conf_path ? zh_conf_load(conf_path, &conf_err) : NULL;
        if (!conf && conf_err) fprintf(stderr, "  (and the configuration does not load: %s)\n", conf_err);
        free(conf_err);
        zh_conf_free(conf);
        return 1;
    }
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    zh_buf req;
    zh_buf_init(&req);
    for (int i = 0; i < nwords; i++) {
        if (i) zh_buf_addc(&req, '\t');
        for (const char *p = words[i]; *p; p++) zh_buf_addc(&req, *p == '\t' || *p == '\n' ? ' ' : *p);
    }
    zh_buf_addc(&req, '\n');
    size_t off = 0;
    while (off < req.len) {
        ssize_t w = write(fd, req.data + off, req.len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    zh_buf_free(&req);
    zh_buf resp;
    zh_buf_init(&resp);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof chunk)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0) zh_buf_add(&resp, chunk, (size_t)r);
    close(fd);
    if (!resp.len) {
        fprintf(stderr, "zhost: zhost serve at %s closed the connection without an answer\n", path);
        zh_buf_free(&resp);
        return 1;
    }
    char *nl = memchr(resp.data, '\n', resp.len);
    int code = atoi(resp.data);
    const char *text = nl ? nl + 1 : "";
    fputs(text, code == 0 ? stdout : stderr);
    zh_buf_free(&resp);
    return code;
}

typedef struct cli_opts {
    const char *sock, *conf, *job, *since;
    int n, days;
    bool json;
} cli_opts;

enum { O_JSON = 1, O_SINCE = 2, O_LINES = 4, O_DAYS = 8 };

/* Common parsing: [JOB] and the options a command allows. */
static int cli_parse(int argc, char **argv, cli_opts *o, int allowed, bool job_required, const char *usage) {
    memset(o, 0, sizeof *o);
    o->n = 50;
    const char *v;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--socket"))) o->sock = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--conf"))) o->conf = v;
        else if ((allowed & O_JSON) && !strcmp(argv[i], "--json")) o->json = true;
        else if ((allowed & O_SINCE) && (v = zh_opt_value(argc, argv, &i, "--since"))) o->since = v;
        else if ((allowed & O_LINES) && ((v = zh_opt_value(argc, argv, &i, "-n")) || (v = zh_opt_value(argc, argv, &i, "--lines")))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 5000) {
                fprintf(stderr, "zhost %s: -n is a number of lines from 1 to 5000 (got '%s')\n", argv[0], v);
                return 2;
            }
            o->n = (int)n;
        } else if ((allowed & O_DAYS) && (v = zh_opt_value(argc, argv, &i, "--days"))) {
            char *end;
            long d = strtol(v, &end, 10);
            if (*end || d < 1 || d > 3660) {
                fprintf(stderr, "zhost %s: --days must be a whole number from 1 to 3660 (got '%s')\n", argv[0], v);
                return 2;
            }
            o->days = (int)d;
        } else if (argv[i][0] != '-' && !o->job) {
            o->job = argv[i];
        } else {
            fprintf(stderr, "zhost %s: unexpected argument '%s'\nusage: %s\n", argv[0], argv[i], usage);
            return 2;
        }
    }
    if (job_required && !o->job) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    return 0;
}

int zh_cmd_status(int argc, char **argv) {
    cli_opts o;
    int rc = cli_parse(argc, argv, &o, O_JSON, false, "zhost status [JOB] [--json] [--conf FILE | --socket PATH]");
    if (rc) return rc;
    const char *w[3] = {"status", o.job ? o.job : "", o.json ? "json" : ""};
    return request(o.sock, o.conf, 3, w);
}

int zh_cmd_logs(int argc, char **argv) {
    cli_opts o;
    int rc = cli_parse(argc, argv, &o, O_SINCE | O_LINES, true, "zhost logs JOB [--since 24h] [-n 50] [--conf FILE | --socket PATH]");
    if (rc) return rc;
    double since = 86400;
    if (o.since && (zh_sched_parse_duration(o.since, &since) || since <= 0)) {
        fprintf(stderr, "zhost logs: --since is a duration like 24h, 90m or 7d\n");
        return 2;
    }
    char s1[32], s2[16];
    snprintf(s1, sizeof s1, "%.0f", since);
    snprintf(s2, sizeof s2, "%d", o.n);
    const char *w[4] = {"logs", o.job, s1, s2};
    return request(o.sock, o.conf, 4, w);
}

static int simple(int argc, char **argv, const char *verb, const char *usage, bool days) {
    cli_opts o;
    int rc = cli_parse(argc, argv, &o, days ? O_DAYS : 0, true, usage);
    if (rc) return rc;
    char d[16];
    snprintf(d, sizeof d, "%d", o.days);
    const char *w[3] = {verb, o.job, d};
    return request(o.sock, o.conf, days ? 3 : 2, w);
}

int zh_cmd_enable(int argc, char **argv) { return simple(argc, argv, "enable", "zhost enable JOB [--conf FILE | --socket PATH]", false); }
int zh_cmd_disable(int argc, char **argv) { return simple(argc, argv, "disable", "zhost disable JOB [--conf FILE | --socket PATH]", false); }
int zh_cmd_trigger(int argc, char **argv) {
    return simple(argc, argv, "trigger", "zhost trigger JOB [--days N] [--conf FILE | --socket PATH]", true);
}
int zh_cmd_restart(int argc, char **argv) {
    return simple(argc, argv, "restart", "zhost restart JOB [--days N] [--conf FILE | --socket PATH]", true);
}
