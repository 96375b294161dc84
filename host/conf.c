/* conf.c — owns the zhost configuration file (conf/zhost.conf): an INI-like text format read by
 * `zhost serve` and by the operator commands that need to find the daemon. docs/serve.md
 * describes it. Parsing is strict — an unknown key or section is an error naming file and line —
 * so a typo never silently drops a job. */
#include "serve.h"
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *zh_conf_find(const char *flag) {
    if (flag && *flag) return flag;
    const char *e = getenv("ZHOST_CONF");
    if (e && *e) return e;
    /* An installed daemon's file first: an operator in a source checkout must still reach it. */
    if (access("/etc/zhost/zhost.conf", R_OK) == 0) return "/etc/zhost/zhost.conf";
    if (access("conf/zhost.conf", R_OK) == 0) return "conf/zhost.conf";
    return NULL;
}

void zh_conf_free(zh_conf *c) {
    if (!c) return;
    free(c->path);
    free(c->root);
    free(c->state_dir);
    free(c->spool_dir);
    free(c->scripts_dir);
    free(c->secrets_dir);
    free(c->log_file);
    free(c->socket);
    free(c->fresh);
    for (int i = 0; i < c->njobs; i++) {
        free(c->jobs[i].script);
        free(c->jobs[i].command);
        free(c->jobs[i].args);
    }
    free(c->jobs);
    free(c);
}

const zh_fresh_rule *zh_conf_fresh_rule(const zh_conf *c, const char *source) {
    for (int i = 0; i < c->nfresh; i++)
        if (!strcmp(c->fresh[i].source, source)) return &c->fresh[i];
    return &c->fresh_default;
}

/* Raw values of one job until the whole file is read ([zhost] may come last). */
typedef struct raw_job {
    char schedule[128], tz[64];
    int line;
    bool has_schedule;
} raw_job;

typedef struct parser {
    const char *origin;
    zh_conf *c;
    raw_job *raw;
    char *err;
    char root[1024], state[1024], spool[1024], scripts[1024], secrets[1024], logf[1024], sock[1024];
} parser;

static int fail(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *p, int line, const char *fmt, ...) {
    zh_buf b;
    zh_buf_init(&b);
    if (line > 0) zh_buf_printf(&b, "%s:%d: ", p->origin, line);
    else zh_buf_printf(&b, "%s: ", p->origin);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    zh_buf_adds(&b, msg);
    p->err = b.data;
    return -1;
}

static bool valid_name(const char *s) {
    if (!*s || strlen(s) >= 64) return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_' || *s == '-')) return false;
    return true;
}

static int parse_bool(const char *v, bool *out) {
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcmp(v, "1")) *out = true;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcmp(v, "0")) *out = false;
    else return -1;
    return 0;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || *end || errno || n < lo || n > hi) return -1;
    *out = (int)n;
    return 0;
}

static int set_path(char *dst, const char *v) {
    if (strlen(v) >= 1024) return -1;
    snprintf(dst, 1024, "%s", v);
    return 0;
}

static char *resolve(const char *base, const char *v) {
    if (!v || !*v) return NULL;
    if (v[0] == '/') return zh_xstrdup(v);
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "%s/%s", base, v);
    return b.data;
}

static int kv_zhost(parser *p, int line, const char *k, const char *v) {
    zh_conf *c = p->c;
    double d;
    if (!strcmp(k, "root")) return set_path(p->root, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "state_dir")) return set_path(p->state, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "spool_dir")) return set_path(p->spool, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "scripts_dir")) return set_path(p->scripts, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "secrets_dir")) return set_path(p->secrets, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "log_file")) return set_path(p->logf, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "socket")) return set_path(p->sock, v) ? fail(p, line, "path too long") : 0;
    if (!strcmp(k, "timezone")) {
        if (!zh_sched_zone_valid(v)) return fail(p, line, "unknown time zone '%s'", v);
        snprintf(c->timezone, sizeof c->timezone, "%s", v);
        return 0;
    }
    if (!strcmp(k, "grace")) {
        if (zh_sched_parse_duration(v, &d) || d > 86400) return fail(p, line, "grace: a duration like 60s or 5m");
        c->grace_s = d;
        return 0;
    }
    if (!strcmp(k, "log_max")) {
        char *end;
        double n = strtod(v, &end);
        if (end == v || n <= 0) return fail(p, line, "log_max: a size like 16M");
        if (*end == 'K' || *end == 'k') n *= 1024, end++;
        else if (*end == 'M' || *end == 'm') n *= 1024 * 1024, end++;
        else if (*end == 'G' || *end == 'g') n *= 1024.0 * 1024 * 1024, end++;
        if (*end) return fail(p, line, "log_max: a size like 16M");
        c->log_max_bytes = n;
        return 0;
    }
    return fail(p, line, "unknown key '%s' in [zhost]", k);
}

static int kv_health(parser *p, int line, const char *k, const char *v) {
    zh_conf *c = p->c;
    double d;
    if (!strcmp(k, "enabled")) return parse_bool(v, &c->health_enabled) ? fail(p, line, "enabled: true or false") : 0;
    if (!strcmp(k, "listen")) {
        const char *colon = strrchr(v, ':');
        int port;
        if (!colon || colon == v || (size_t)(colon - v) >= sizeof c->listen_host || parse_int(colon + 1, 0, 65535, &port))
            return fail(p, line, "listen: HOST:PORT, e.g. 127.0.0.1:8080");
        snprintf(c->listen_host, sizeof c->listen_host, "%.*s", (int)(colon - v), v);
        c->listen_port = port;
        return 0;
    }
    if (!strcmp(k, "max_connections"))
        return parse_int(v, 1, 100000, &c->max_connections) ? fail(p, line, "max_connections: 1 to 100000") : 0;
    if (!strcmp(k, "idle_timeout")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 3600) return fail(p, line, "idle_timeout: a duration like 10s");
        c->idle_timeout_s = d;
        return 0;
    }
    if (!strcmp(k, "clickhouse_timeout")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 60) return fail(p, line, "clickhouse_timeout: a duration like 2s");
        c->ch_timeout_s = d;
        return 0;
    }
    return fail(p, line, "unknown key '%s' in [health]", k);
}

static int kv_spool(parser *p, int line, const char *k, const char *v) {
    zh_conf *c = p->c;
    double d;
    if (!strcmp(k, "auto_replay")) return parse_bool(v, &c->auto_replay) ? fail(p, line, "auto_replay: true or false") : 0;
    if (!strcmp(k, "replay_every")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 86400) return fail(p, line, "replay_every: a duration like 5m (at most 1d)");
        c->replay_every_s = d;
        return 0;
    }
    if (!strcmp(k, "check_every")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 3600) return fail(p, line, "check_every: a duration like 30s (at most 1h)");
        c->replay_check_s = d;
        return 0;
    }
    /* A cap below replay_every is no error (whichever line comes first): it means no back-off
     * (autoreplay.c), so a file that only raises replay_every above the 1 h default still loads. */
    if (!strcmp(k, "replay_max_every")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 86400) return fail(p, line, "replay_max_every: a duration like 1h (at most 1d)");
        c->replay_max_every_s = d;
        return 0;
    }
    if (!strcmp(k, "replay_timeout")) {
        if (zh_sched_parse_duration(v, &d) || d <= 0 || d > 7 * 86400.0) return fail(p, line, "replay_timeout: a duration like 1h (at most 7d)");
        c->replay_timeout_s = d;
        return 0;
    }
    return fail(p, line, "unknown key '%s' in [spool]", k);
}

static int kv_freshness(parser *p, int line, const char *k, const char *v) {
    zh_fresh_rule r;
    memset(&r, 0, sizeof r);
    char w[32], e[32], extra[8];
    int n = sscanf(v, "%31s %31s %7s", w, e, extra);
    if (n != 2 || parse_int(w, 0, 10000, &r.warn_days) || parse_int(e, 0, 10000, &r.error_days) || r.error_days < r.warn_days)
        return fail(p, line, "%s: two numbers of days, 'WARN ERROR' (a source is a warning when more than WARN days "
                             "behind, an error when more than ERROR)", k);
    if (!valid_name(k)) return fail(p, line, "bad source name '%s'", k);
    snprintf(r.source, sizeof r.source, "%s", k);
    if (!strcmp(k, "default")) {
        p->c->fresh_default = r;
        return 0;
    }
    p->c->fresh = zh_xrealloc(p->c->fresh, (size_t)(p->c->nfresh + 1) * sizeof *p->c->fresh);
    p->c->fresh[p->c->nfresh++] = r;
    return 0;
}

static int kv_job(parser *p, int line, zh_job_conf *j, raw_job *raw, const char *k, const char *v) {
    double d;
    if (!strcmp(k, "script")) {
        free(j->script);
        j->script = zh_xstrdup(v);
    } else if (!strcmp(k, "command")) {
        free(j->command);
        j->command = zh_xstrdup(v);
    } else if (!strcmp(k, "args")) {
        free(j->args);
        j->args = zh_xstrdup(v);
    } else if (!strcmp(k, "schedule")) {
        if (strlen(v) >= sizeof raw->schedule) return fail(p, line, "schedule too long");
        snprintf(raw->schedule, sizeof raw->schedule, "%s", v);
        raw->has_schedule = true;
        raw->line = line;
    } else if (!strcmp(k, "timezone")) {
        if (!zh_sched_zone_valid(v)) return fail(p, line, "unknown time zone '%s'", v);
        snprintf(raw->tz, sizeof raw->tz, "%s", v);
    } else if (!strcmp(k, "timeout")) {
        if (zh_sched_parse_duration(v, &d) || d > 7 * 86400.0) return fail(p, line, "timeout: a duration like 10m (0 = none)");
        j->timeout_s = d;
    } else if (!strcmp(k, "jitter")) {
        if (zh_sched_parse_duration(v, &d) || d > 86400) return fail(p, line, "jitter: a duration like 60s");
        j->jitter_s = d;
    } else if (!strcmp(k, "enabled")) {
        if (parse_bool(v, &j->enabled)) return fail(p, line, "enabled: true or false");
    } else if (!strcmp(k, "days")) {
        if (parse_int(v, 0, 3660, &j->days)) return fail(p, line, "days: 0 to 3660");
    } else if (!strcmp(k, "aliases")) {
        if (strlen(v) >= sizeof j->aliases) return fail(p, line, "aliases too long");
        snprintf(j->aliases, sizeof j->aliases, "%s", v);
        for (char *q = j->aliases; *q; q++)
            if (*q == ',') *q = ' ';
    } else {
        return fail(p, line, "unknown key '%s' in [job %s]", k, j->name);
    }
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

static bool name_taken(zh_conf *c, const char *name, int except) {
    for (int i = 0; i < c->njobs; i++) {
        if (i == except) continue;
        if (!strcmp(c->jobs[i].name, name)) return true;
        char al[128];
        snprintf(al, sizeof al, "%s", c->jobs[i].aliases);
        for (char *save, *t = strtok_r(al, " ", &save); t; t = strtok_r(NULL, " ", &save))
            if (!strcmp(t, name)) return true;
    }
    return false;
}

zh_conf *zh_conf_parse(const char *text, size_t len, const char *origin, const char *dir, char **err) {
    parser P;
    memset(&P, 0, sizeof P);
    parser *p = &P;
    p->origin = origin;
    zh_conf *c = zh_xcalloc(1, sizeof *c);
    p->c = c;
    snprintf(c->timezone, sizeof c->timezone, "Europe/Moscow");
    c->grace_s = 60;
    c->log_max_bytes = 16.0 * 1024 * 1024;
    c->health_enabled = true;
    snprintf(c->listen_host, sizeof c->listen_host, "127.0.0.1");
    c->listen_port = 8080;
    c->max_connections = 256;
    c->idle_timeout_s = 10;
    c->ch_timeout_s = 2;
    c->fresh_default = (zh_fresh_rule){"default", 1, 2};
    c->auto_replay = true;
    c->replay_every_s = 300;
    c->replay_check_s = 30;
    c->replay_max_every_s = 3600;
    c->replay_timeout_s = 3600;
    snprintf(p->root, sizeof p->root, "..");
    enum { S_NONE, S_ZHOST, S_HEALTH, S_FRESH, S_SPOOL, S_JOB } sect = S_NONE;
    int lineno = 0;
    const char *q = text, *end = text + len;
    while (q < end) {
        const char *eol = memchr(q, '\n', (size_t)(end - q));
        if (!eol) eol = end;
        lineno++;
        size_t n = (size_t)(eol - q);
        if (n > 1000) {
            fail(p, lineno, "line too long");
            goto bad;
        }
        char buf[1024];
        memcpy(buf, q, n);
        buf[n] = 0;
        q = eol + 1;
        if (memchr(buf, 0, n)) {
            fail(p, lineno, "NUL byte in the file");
            goto bad;
        }
        char *s = trim(buf);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || trim(close + 1)[0]) {
                fail(p, lineno, "a section header looks like [name]");
                goto bad;
            }
            *close = 0;
            char *name = trim(s + 1);
            if (!strcmp(name, "zhost")) sect = S_ZHOST;
            else if (!strcmp(name, "health")) sect = S_HEALTH;
            else if (!strcmp(name, "freshness")) sect = S_FRESH;
            else if (!strcmp(name, "spool")) sect = S_SPOOL;
            else if (!strncmp(name, "job ", 4) || !strncmp(name, "job\t", 4)) {
                char *jn = trim(name + 4);
                if (!valid_name(jn)) {
                    fail(p, lineno, "bad job name '%s' (lower-case letters, digits, _ and -)", jn);
                    goto bad;
                }
                if (!strcmp(jn, ZH_SPOOL_REPLAY_JOB)) {
                    fail(p, lineno, "job name '%s' is the daemon's own spool replay (set it up in [spool])", jn);
                    goto bad;
                }
                if (name_taken(c, jn, -1)) {
                    fail(p, lineno, "job '%s' is defined twice", jn);
                    goto bad;
                }
                c->jobs = zh_xrealloc(c->jobs, (size_t)(c->njobs + 1) * sizeof *c->jobs);
                p->raw = zh_xrealloc(p->raw, (size_t)(c->njobs + 1) * sizeof *p->raw);
                zh_job_conf *j = &c->jobs[c->njobs];
                memset(j, 0, sizeof *j);
                memset(&p->raw[c->njobs], 0, sizeof *p->raw);
                snprintf(j->name, sizeof j->name, "%s", jn);
                j->enabled = true;
                c->njobs++;
                sect = S_JOB;
            } else {
                fail(p, lineno, "unknown section [%s] (zhost, health, freshness, spool or job NAME)", name);
                goto bad;
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            fail(p, lineno, "expected key = value");
            goto bad;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        /* Inline comments: " # ..." (cron expressions never contain '#'). */
        char *hash = strstr(v, " #");
        if (hash) *hash = 0, v = trim(v);
        int rc;
        switch (sect) {
        case S_ZHOST: rc = kv_zhost(p, lineno, k, v); break;
        case S_HEALTH: rc = kv_health(p, lineno, k, v); break;
        case S_FRESH: rc = kv_freshness(p, lineno, k, v); break;
        case S_SPOOL: rc = kv_spool(p, lineno, k, v); break;
        case S_JOB: rc = kv_job(p, lineno, &c->jobs[c->njobs - 1], &p->raw[c->njobs - 1], k, v); break;
        default: rc = fail(p, lineno, "'%s' outside a section", k); break;
        }
        if (rc) goto bad;
    }
    /* Resolve paths and finish the jobs now that [zhost] is known. */
    c->root = p->root[0] == '/' ? zh_xstrdup(p->root) : resolve(dir, p->root);
    char *real_root = realpath(c->root, NULL);
    if (real_root) {
        free(c->root);
        c->root = real_root;
    }
    const char *env_spool = getenv("ZHOST_SPOOL");
    c->state_dir = resolve(c->root, p->state[0] ? p->state : "var/state");
    c->spool_dir = p->spool[0] ? resolve(c->root, p->spool) : env_spool && *env_spool ? zh_xstrdup(env_spool)
                                                                                      : resolve(c->root, "var/spool");
    c->scripts_dir = resolve(c->root, p->scripts[0] ? p->scripts : "scripts");
    c->secrets_dir = p->secrets[0] ? resolve(c->root, p->secrets) : NULL;
    c->log_file = p->logf[0] ? resolve(c->root, p->logf) : resolve(c->state_dir, "zhost.log");
    c->socket = p->sock[0] ? resolve(c->root, p->sock) : resolve(c->state_dir, "zhost.sock");
    if (strlen(c->socket) >= 100) {
        fail(p, 0, "socket path %s is too long for a unix socket (set socket = a shorter path)", c->socket);
        goto bad;
    }
    for (int i = 0; i < c->njobs; i++) {
        zh_job_conf *j = &c->jobs[i];
        raw_job *r = &p->raw[i];
        if (!j->script == !j->command) {
            fail(p, 0, "[job %s] needs exactly one of script = FILE or command = ZHOST-SUBCOMMAND", j->name);
            goto bad;
        }
        if (!r->has_schedule) {
            fail(p, 0, "[job %s] has no schedule", j->name);
            goto bad;
        }
        char serr[256];
        if (zh_sched_parse(r->schedule, r->tz[0] ? r->tz : c->timezone, &j->sched, serr, sizeof serr)) {
            fail(p, r->line, "%s", serr);
            goto bad;
        }
        if (j->script) {
            char *abs = resolve(c->root, j->script);
            free(j->script);
            j->script = abs;
        }
        char al[128];
        snprintf(al, sizeof al, "%s", j->aliases);
        for (char *save, *t = strtok_r(al, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            if (!valid_name(t) || name_taken(c, t, i) || !strcmp(t, ZH_SPOOL_REPLAY_JOB)) {
                fail(p, 0, "[job %s] alias '%s' is not a free job name", j->name, t);
                goto bad;
            }
        }
    }
    free(p->raw);
    return c;
bad:
    free(p->raw);
    zh_conf_free(c);
    *err = p->err ? p->err : zh_xstrdup("bad configuration");
    return NULL;
}

zh_conf *zh_conf_load(const char *path, char **err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", path, strerror(errno));
        *err = b.data;
        return NULL;
    }
    zh_buf text;
    zh_buf_init(&text);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && text.len < (1 << 20)) zh_buf_add(&text, chunk, n);
    fclose(f);
    /* Relative paths are resolved against the file's directory (root = .. by default). */
    char dir[1024];
    char *real = realpath(path, NULL);
    snprintf(dir, sizeof dir, "%s", real ? real : path);
    free(real);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    if (!dir[0]) snprintf(dir, sizeof dir, "/");
    zh_conf *c = zh_conf_parse(text.data ? text.data : "", text.len, path, dir, err);
    zh_buf_free(&text);
    if (c) c->path = zh_xstrdup(path);
    return c;
}

int zh_conf_socket(const char *path, char *out, size_t n) {
    /* Only [zhost] root, state_dir and socket matter here, so the operator commands still find
     * the daemon while someone is editing (and breaking) the rest of the file. */
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char root[1024] = "..", state[1024] = "var/state", sock[1024] = "", line[1100];
    bool in_zhost = false;
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        size_t l = strlen(s);
        while (l && (s[l - 1] == '\n' || s[l - 1] == '\r')) s[--l] = 0;
        if (*s == '[') {
            in_zhost = !strncmp(s, "[zhost]", 7);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!in_zhost || !eq) continue;
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        char *hash = strstr(v, " #");
        if (hash) *hash = 0, v = trim(v);
        if (!strcmp(k, "root")) snprintf(root, sizeof root, "%s", v);
        else if (!strcmp(k, "state_dir")) snprintf(state, sizeof state, "%s", v);
        else if (!strcmp(k, "socket")) snprintf(sock, sizeof sock, "%s", v);
    }
    fclose(f);
    char dir[1024];
    char *real = realpath(path, NULL);
    snprintf(dir, sizeof dir, "%s", real ? real : path);
    free(real);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    char *r = root[0] == '/' ? zh_xstrdup(root) : resolve(dir, root);
    char *st = resolve(r, state);
    char *sk = sock[0] ? resolve(r, sock) : resolve(st, "zhost.sock");
    snprintf(out, n, "%s", sk);
    free(r);
    free(st);
    free(sk);
    return 0;
}
