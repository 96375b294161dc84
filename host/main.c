/* main.c — owns the command line: global options, dispatch to commands, `run`, `check`,
 * `version` and `help`. Exit codes: 0 success, 1 the command failed, 2 usage error. */
#include "commands.h"
#include "tunables.h"
#include "clickhouse.h"
#include "host.h"
#include "log.h"
#include "l_time.h"
#include "lrt.h"
#include "run.h"
#include "schedule.h"
#include "secrets.h"
#include "task.h"
#include <curl/curl.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>



/* NULL when `s` is a day of the calendar written YYYY-MM-DD; else why not, into buf. */
static const char *date_problem(const char *opt, const char *s, char *buf, size_t cap) {
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    bool shape = strlen(s) == 10 && s[4] == '-' && s[7] == '-';
    for (int i = 0; shape && i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) shape = false;
    if (!shape) {
        snprintf(buf, cap, "zhost run: %s takes a date YYYY-MM-DD (got '%s')", opt, s);
        return buf;
    }
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    if (m < 1 || m > 12) {
        snprintf(buf, cap, "zhost run: %s %s is not a date: there is no month %02d", opt, s, m);
        return buf;
    }
    int last = zh_time_days_in_month(y, m);
    if (d < 1 || d > last) {
        snprintf(buf, cap, "zhost run: %s %s is not a date: %s %04d has %d days", opt, s, months[m - 1], y, last);
        return buf;
    }
    return NULL;
}

/* Seconds for --timeout / --cpu-budget: a number, or a duration like 90s, 10m, 1h (as in the serve
 * configuration); 0 only where it means "none". atof took "10m" as 10 s and "abc" as no limit. */
static bool parse_seconds(const char *v, bool zero_ok, double *out) {
    double d;
    if (zh_sched_parse_duration(v, &d) || !(d >= 0) || (d == 0 && !zero_ok) || d > 7 * 86400.0) return false;
    *out = d;
    return true;
}

typedef struct run_result {
    int exit_code;
    bool done;
    zh_run *run;
    int stop_signals;  /* SIGINT/SIGTERM received */
    bool stop_waiting; /* a signal after the run ended: do not wait for the stale-run marks */
} run_result;

static void run_finished(zh_run *r, void *ud) {
    run_result *res = ud;
    res->exit_code = r->status == ZH_RUN_SUCCESS ? 0 : 1;
    if (r->status != ZH_RUN_SUCCESS)
        fprintf(stderr, "zhost: %s failed: %s\n", r->group.job, r->message ? r->message : zh_run_status_name(r->status));
    res->done = true;
}

static void run_on_signal(zh_host *h, int signum) {
    run_result *res = h->on_signal_ud;
    if (!res || signum == SIGHUP) return;
    /* Whatever the run is doing, once it has ended the operator is not kept waiting for the look
     * for runs left running (at most 5 s; the next start looks again). Set here too, not only once
     * the run is done: a Ctrl-C that lands while the final row is being written (the run ends a
     * moment later) used to wait out that look. */
    res->stop_waiting = true;
    if (res->done) {
        /* The run is over; only the look for runs left running by a killed process goes on. */
        uv_stop(h->loop);
        return;
    }
    if (++res->stop_signals > 1) {
        /* Again while the run is finishing (flushing rows, writing its final row) — ClickHouse may be
         * slow or gone, and the operator wants the prompt back: stop waiting. zh_run_free spools
         * what was not delivered; the next start marks the run interrupted. */
        h->exiting_now = true;
        uv_stop(h->loop);
        return;
    }
    zh_run_cancel(res->run, signum == SIGINT ? "interrupted (SIGINT)" : "stopped (SIGTERM)", ZH_RUN_INTERRUPTED);
}

int zh_cmd_run(int argc, char **argv) {
    zh_run_opts o = {0};
    o.record = true;
    const char *secrets = NULL, *spool = NULL;
    int verbose = 0;
    double budget = 0;
    const char **extra = zh_xcalloc((size_t)argc * 2 + 2, sizeof *extra);
    int nextra = 0;
    const char *v;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--days"))) {
            char *end;
            long d = strtol(v, &end, 10);
            if (*end || d < 1 || d > 3660) {
                fprintf(stderr, "zhost run: --days must be a whole number from 1 to 3660 (got '%s')\n", v);
                free(extra);
                return 2;
            }
            o.days = (int)d;
        } else if ((v = zh_opt_value(argc, argv, &i, "--since"))) {
            o.since = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--to"))) {
            o.to = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) {
            secrets = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--job"))) {
            o.job = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--spool"))) {
            spool = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--timeout"))) {
            if (!parse_seconds(v, true, &o.timeout_s)) {
                fprintf(stderr, "zhost run: --timeout takes seconds or a duration like 10m, up to 7d, 0 for none (got '%s')\n", v);
                free(extra);
                return 2;
            }
        } else if ((v = zh_opt_value(argc, argv, &i, "--cpu-budget"))) {
            if (!parse_seconds(v, false, &budget)) {
                fprintf(stderr, "zhost run: --cpu-budget takes seconds or a duration like 2m, up to 7d (got '%s')\n", v);
                free(extra);
                return 2;
            }
        } else if (!strcmp(argv[i], "--dry-run")) {
            o.dry_run = true;
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            verbose++;
        } else if (!strncmp(argv[i], "--", 2) && argv[i][2]) {
            /* Script-specific options (--csv FILE, --mode legacy, ...) go to job.args. */
            const char *name = argv[i] + 2, *eq = strchr(name, '=');
            if (eq) {
                extra[nextra++] = zh_xstrndup(name, (size_t)(eq - name));
                extra[nextra++] = zh_xstrdup(eq + 1);
            } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                extra[nextra++] = zh_xstrdup(name);
                extra[nextra++] = zh_xstrdup(argv[++i]);
            } else {
                extra[nextra++] = zh_xstrdup(name);
                extra[nextra++] = zh_xstrdup("true");
            }
        } else if (!o.script) {
            o.script = argv[i];
        } else {
            fprintf(stderr, "zhost run: unexpected argument '%s'\n", argv[i]);
            free(extra);
            return 2;
        }
    }
    int rc = 2;
    if (!o.script) {
        fprintf(stderr, "usage: zhost run SCRIPT [--days N | --since YYYY-MM-DD [--to YYYY-MM-DD]] [--dry-run] [--secrets DIR] [-v]\n");
        goto out;
    }
    if (o.days && (o.since || o.to)) {
        fprintf(stderr, "zhost run: give either --days or --since/--to, not both\n");
        goto out;
    }
    {
        char why[160];
        const char *bad = o.since ? date_problem("--since", o.since, why, sizeof why) : NULL;
        if (!bad && o.to) bad = date_problem("--to", o.to, why, sizeof why);
        if (bad) {
            fprintf(stderr, "%s\n", bad);
            goto out;
        }
    }
    if (o.to && !o.since) {
        fprintf(stderr, "zhost run: --to needs --since\n");
        goto out;
    }
    if (o.since && o.to && strcmp(o.since, o.to) > 0) {
        fprintf(stderr, "zhost run: --since %s is after --to %s\n", o.since, o.to);
        goto out;
    }
    if (o.dry_run) o.record = false;
    o.extra = extra;
    {
        char *oerr = NULL;
        if (zh_run_check_options(&o, &oerr) != 0) {
            fprintf(stderr, "zhost run: %s\n", oerr);
            free(oerr);
            goto out;
        }
    }
    if (verbose) zh_log_set_level(ZH_LOG_DEBUG);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", o.script);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    zh_host_opts ho = {.secrets_dir = zh_secrets_dir(secrets), .scripts_dir = dir, .spool_dir = spool,
                       .verbose = verbose, .cpu_budget_s = budget};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        rc = 1;
        goto out;
    }
    /* A run `zhost serve` started (a command job): the daemon delivers this spool by itself. */
    const char *replayed = getenv("ZHOST_AUTO_REPLAY");
    h->spool_auto_replay = replayed && *replayed && !strcmp(replayed, h->spool_dir);
    run_result res = {1, false, NULL, 0, false};
    h->on_signal = run_on_signal;
    h->on_signal_ud = &res;
    zh_host_install_signals(h);
    char *err = NULL;
    zh_stale_check stale = {0};
    if (o.record) {
        /* A run of this job killed earlier (SIGKILL, power loss) must not stay "running" forever.
         * Asked while this run starts (it used to cost every run a round trip first); the process
         * does not exit before the marks are written. */
        char job[64];
        zh_run_names(&o, job, sizeof job, NULL, 0);
        zh_ch_mark_stale_runs_start(h, job, &stale);
    }
    res.run = zh_run_start(h, &o, run_finished, &res, &err);
    if (!res.run) {
        fprintf(stderr, "zhost: %s\n", err);
        free(err);
        zh_host_free(h);
        rc = 1;
        goto out;
    }
    while ((!res.done || (stale.pending > 0 && !res.stop_waiting)) && !h->exiting_now && uv_run(h->loop, UV_RUN_ONCE)) {
    }
    /* The loop ran out of work with the run still waiting (its tasks wait on each other, say):
     * fail it, which still flushes its rows and writes its final row, then run the loop again. */
    if (!res.done && !h->exiting_now && zh_run_stalled(res.run)) {
        while (!res.done && !h->exiting_now && uv_run(h->loop, UV_RUN_ONCE)) {
        }
    }
    if (!res.done && h->exiting_now) {
        fprintf(stderr, "zhost: %s interrupted again: not waiting for ClickHouse; rows not delivered go to the spool "
                        "(zhost spool status), and the next start marks the run interrupted\n",
                res.run->group.job);
        res.exit_code = 1;
    } else if (!res.done) {
        /* Stalled while finishing: a host bug. zh_run_free spools what the run still holds. */
        fprintf(stderr, "zhost: internal error: %s stopped while finishing (the loop ended before its rows and final row were written)\n",
                res.run->group.job);
        res.exit_code = 1;
    }
    /* No signal may reach the run once it is freed; zh_run_free leaves nothing else behind that
     * could call back into it, so the host can then cancel and close whatever is left. */
    h->on_signal = NULL;
    h->on_signal_ud = NULL;
    zh_run_free(res.run);
    res.run = NULL;
    zh_host_free(h);
    rc = res.exit_code;
out:
    for (int i = 0; i < nextra; i++) free((char *)extra[i]);
    free(extra);
    return rc;
}

int zh_cmd_check(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: zhost check SCRIPT...\n");
        return 2;
    }
    lua_State *L = luaL_newstate();
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        lua_newtable(L);
        char *err = zh_lrt_load_file(L, argv[i], -1);
        if (err) {
            fprintf(stderr, "%s\n", err);
            free(err);
            bad++;
        } else {
            printf("%s: ok\n", argv[i]);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_close(L);
    return bad ? 1 : 0;
}

static int cmd_version(int argc, char **argv) {
    if (argc > 1) {
        fprintf(stderr, "zhost version: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    printf("zhost %s (%s, libuv %s, libcurl %s)\n", ZH_VERSION, LUA_RELEASE, uv_version_string(), cv->version);
    return 0;
}

static int cmd_help(int argc, char **argv);

static const zh_command commands[] = {
    {"run", zh_cmd_run,
     "zhost run SCRIPT [--days N | --since YYYY-MM-DD [--to YYYY-MM-DD]] [--dry-run] [--secrets DIR] [--job NAME] [--timeout S] [--cpu-budget S] [--spool DIR] [-v] [--OPTION VALUE...]",
     "Runs one script once. Exit 0 on success, 1 on failure (one-line reason on stderr), 2 on a usage\n"
     "error (a day the month does not have, such as 2024-02-30, is one).\n"
     "--dry-run fetches and maps but writes nothing; it prints row counts and sample rows per table.\n"
     "--timeout S cancels the whole run after S seconds (rows are flushed or spooled); --cpu-budget S\n"
     "stops a script that runs S seconds without waiting (default 60); both take a duration like 10m too. Other --OPTION VALUE pairs reach\n"
     "the script as job.args.OPTION when its `-- zhost: options=...` line declares them."},
    {"check", zh_cmd_check, "zhost check SCRIPT...", "Compiles scripts and reports syntax errors as file:line: message."},
    {"repl", zh_cmd_repl, "zhost repl [--secrets DIR]", "Interactive Lua prompt with every zhost module loaded."},
    {"spool", zh_cmd_spool, "zhost spool status|replay [--json] [--spool DIR] [--conf FILE] [--secrets DIR] [--piece-bytes N]",
     "Shows or delivers batches that could not be inserted into ClickHouse, in bounded pieces\n"
     "(--piece-bytes, default 4M: the most one INSERT of a replay sends).\n"
     "replay skips files a running run still writes (status shows them `being written`). Exit 0 when\n"
     "all was delivered, 1 when a file could not be or rows were quarantined (or the spool is a folder\n"
     "this user cannot write: nothing is delivered then), 75 when only files of runs still going are\n"
     "left: run it again once they have ended.\n"
     "The spool is --spool, else $ZHOST_SPOOL, else the daemon's spool_dir from its configuration\n"
     "(--conf, $ZHOST_CONF, /etc/zhost/zhost.conf or ./conf/zhost.conf), else ./var/spool.\n"
     "`zhost serve` runs the same replay by itself once ClickHouse answers (job spool_replay, [spool]\n"
     "in its configuration); by hand it is for a daemon whose replay is switched off, or to hurry."},
    {"migrate", zh_cmd_migrate, "zhost migrate [--status] [--secrets DIR] [--sql DIR]",
     "Applies the missing numbered migrations from sql/ (or lists them with --status).\n"
     "Exit 1 when ClickHouse cannot be asked (down, wrong password), --status included."},
    {"auth", zh_cmd_auth,
     "zhost auth google [--credentials FILE] [--token FILE] [--scope S]... [--port N] [--no-browser] [--timeout S] [--secrets DIR]",
     "Authorizes zhost to read Gmail: prints a Google consent URL (opened in a browser when one is available),\n"
     "receives the redirect on http://127.0.0.1:PORT (port 0 = any free port), exchanges the code (PKCE S256)\n"
     "and writes token.json in Google's layout, mode 0600. Defaults: --credentials SECRETS/gmail/credentials.json,\n"
     "--token SECRETS/gmail/token.json, --scope https://www.googleapis.com/auth/gmail.readonly, --timeout 600.\n"
     "The browser must reach 127.0.0.1 on this machine: on a headless server use ssh -L PORT:127.0.0.1:PORT\n"
     "with a fixed --port, or authorize on a workstation and copy token.json over."},
    {"backup", zh_cmd_backup,
     "zhost backup full|incr|verify|restore|prune|list [--to DIR] [--secrets DIR] ...",
     "Logical backups of the zakaz and bi databases (see docs/backup.md).\n"
     "  full|incr [--to DIR] [--no-record]          back up everything, or the partitions changed since the newest full\n"
     "  verify [--json] [--quick] [--fresh-hours H] [--full-hours H]\n"
     "                                             check every backup against its manifest, the chains and the ages\n"
     "  restore NAME --into DB [--bi-into DB] [--drop-existing]\n"
     "                                             restore into scratch databases and compare rows and checksums\n"
     "  prune [--keep-days N] [--keep-incr-days N] [--dry-run]\n"
     "                                             delete old backups, never the base of a kept incremental\n"
     "  list                                       the backups, without re-reading their files\n"
     "DIR: --to/--dir, else $ZHOST_BACKUP_DIR, else BACKUP_DIR (also from secrets/.env.backup), else var/backups.\n"
     "Exit 0 on success, 1 on failure (reason on stderr), 2 on a usage error."},
    {"serve", zh_cmd_serve, "zhost serve [--conf FILE] [--secrets DIR] [--check] [-v]",
     "Runs the jobs of the configuration on their schedules, with the health server (/healthz, /metrics, /)\n"
     "and the control socket for the commands below. SIGHUP reloads the configuration; SIGTERM lets running\n"
     "jobs finish within `grace`, then stops them. --check validates the file and prints the plan."},
    {"status", zh_cmd_status, "zhost status [JOB] [--json] [--conf FILE | --socket PATH]",
     "Shows every job (or one): enabled, schedule, next run, last run. Read-only."},
    {"logs", zh_cmd_logs, "zhost logs JOB [--since 24h] [-n 50] [--conf FILE | --socket PATH]",
     "Shows the job's runs from meta_job_runs and its last log lines."},
    {"enable", zh_cmd_enable, "zhost enable JOB [--conf FILE | --socket PATH]",
     "Turns a job's schedule on; survives restarts. Old timer names work (gmail = gmail_ingest)."},
    {"disable", zh_cmd_disable, "zhost disable JOB [--conf FILE | --socket PATH]",
     "Turns a job's schedule off (a run in progress goes on); survives restarts."},
    {"trigger", zh_cmd_trigger, "zhost trigger JOB [--days N] [--conf FILE | --socket PATH]",
     "Starts one run of the job now (fails if it is already running)."},
    {"restart", zh_cmd_restart, "zhost restart JOB [--days N] [--conf FILE | --socket PATH]",
     "Stops the job's current run (its rows are flushed) and starts it again; starts it if idle."},
    {"version", cmd_version, "zhost version", "Prints the version of zhost and its libraries."},
    {"help", cmd_help, "zhost help [COMMAND]", "Shows help for a command."},
    {NULL, NULL, NULL, NULL},
};

static int cmd_help(int argc, char **argv) {
    if (argc >= 2) {
        for (const zh_command *c = commands; c->name; c++) {
            if (!strcmp(c->name, argv[1])) {
                printf("usage: %s\n\n%s\n", c->usage, c->help);
                return 0;
            }
        }
        fprintf(stderr, "zhost: unknown command '%s'\n", argv[1]);
        return 2;
    }
    printf("zhost %s — runs the Zakaz Dashboard data integrations.\n\nCommands:\n", ZH_VERSION);
    for (const zh_command *c = commands; c->name; c++) printf("  %s\n", c->usage);
    printf("\nEvery command that reads secrets takes --secrets DIR (default $ZHOST_SECRETS or ./secrets).\n"
           "zhost help COMMAND shows more.\n");
    return 0;
}

int main(int argc, char **argv) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *lvl = getenv("ZHOST_LOG_LEVEL");
    if (lvl && zh_log_parse_level(lvl) >= 0) zh_log_set_level(zh_log_parse_level(lvl));
    int rc;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        rc = cmd_help(argc > 2 ? argc - 1 : 1, argv + 1);
    } else if (!strcmp(argv[1], "--version")) {
        rc = cmd_version(0, NULL);
    } else {
        rc = -1;
        for (const zh_command *c = commands; c->name; c++) {
            if (!strcmp(c->name, argv[1])) {
                bool wants_help = argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"));
                char terr[256];
                if (wants_help) {
                    printf("usage: %s\n\n%s\n", c->usage, c->help);
                    rc = 0;
                } else if (strcmp(c->name, "help") && strcmp(c->name, "version") &&
                           zh_tunables_check(terr, sizeof terr) != 0) {
                    fprintf(stderr, "zhost: %s\n", terr); /* before anything runs: tunables.c says why */
                    rc = 2;
                } else {
                    rc = c->fn(argc - 1, argv + 1);
                }
                break;
            }
        }
        if (rc == -1) {
            fprintf(stderr, "zhost: unknown command '%s' (see zhost --help)\n", argv[1]);
            rc = 2;
        }
    }
    curl_global_cleanup();
    return rc;
}
