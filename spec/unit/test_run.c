/* test_run.c — a run freed at any stage (waiting, rows buffered, an INSERT in flight, its
 * "running" row in flight, after it finished) leaves nothing that calls back into it, keeps its
 * rows (spooled), and its `job` table refuses further use; a run whose tasks wait on each other is
 * ended by zh_run_stalled. No ClickHouse: CLICKHOUSE_URL points at a closed port, sinks open with
 * a cached schema. Meant for the ASan+UBSan build, where a touch of freed memory aborts. */
#include "host.h"
#include "lrt.h"
#include "run.h"
#include "task.h"
#include "zt.h"
#include <curl/curl.h>
#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* run.o pulls clickhouse.o, which pulls spool.o, whose command uses zh_opt_value from main.c
 * (not in the library). A weak stand-in links the test and yields to a real definition. */
__attribute__((weak)) const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    (void)argc, (void)argv, (void)i, (void)name;
    return NULL;
}

static char tmp[64], spool[128];

static const char *script(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static zh_host *host(void) {
    zh_host_opts o = {.secrets_dir = tmp, .scripts_dir = tmp, .spool_dir = spool};
    return zh_host_new(&o);
}

static void on_done(zh_run *r, void *ud) {
    (void)r;
    (*(int *)ud)++;
}

static zh_run *start(zh_host *h, const char *path, bool dry_run, bool record, int *done) {
    zh_run_opts o = {.script = path, .dry_run = dry_run, .record = record};
    char *err = NULL;
    zh_run *r = zh_run_start(h, &o, on_done, done, &err);
    if (!r) fprintf(stderr, "zh_run_start: %s\n", err);
    free(err);
    return r;
}

static bool metric_set(zh_run *r, const char *name) {
    lua_State *L = r->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->metrics_ref);
    lua_getfield(L, -1, name);
    bool set = !lua_isnil(L, -1);
    lua_pop(L, 2);
    return set;
}

/* Turns the loop without blocking (the scripts sleep for days) until the run says "ready". */
static bool run_until_ready(zh_host *h, zh_run *r) {
    for (int i = 0; i < 10000; i++) {
        uv_run(h->loop, UV_RUN_NOWAIT);
        if (metric_set(r, "ready")) return true;
        usleep(1000);
    }
    return false;
}

/* Calls job:metric("late") on a job table kept past its run; returns the error, or NULL. */
static char *late_job_call(lua_State *L, int job_ref) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, job_ref);
    lua_getfield(L, -1, "metric");
    lua_pushvalue(L, -2);
    lua_pushliteral(L, "late");
    char *err = NULL;
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        err = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return err;
}

/* A run that failed to start fails the test and frees the host. */
static bool started(zh_host *h, zh_run *r) {
    ZT_CHECK(r != NULL);
    if (!r) zh_host_free(h);
    return r != NULL;
}

static void run_until_done(zh_host *h, int *done) {
    while (!*done && uv_run(h->loop, UV_RUN_ONCE)) {
    }
}

static int keep_job_table(zh_run *r) {
    lua_State *L = r->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->job_ref);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The spool files of a table, concatenated. */
static char *spooled(const char *table) {
    static char all[65536];
    all[0] = 0;
    DIR *d = opendir(spool);
    if (!d) return all;
    struct dirent *e;
    size_t tl = strlen(table);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, table, tl) || e->d_name[tl] != '~') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", spool, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t have = strlen(all);
        all[have + fread(all + have, 1, sizeof all - have - 1, f)] = 0;
        fclose(f);
    }
    closedir(d);
    return all;
}

/* How many spool files of a table are there, and how many of them someone keeps locked (as
 * `zhost spool replay` would find them). */
static int spool_files(const char *table, int *locked) {
    int n = 0;
    *locked = 0;
    DIR *d = opendir(spool);
    if (!d) return 0;
    struct dirent *e;
    size_t tl = strlen(table);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, table, tl) || e->d_name[tl] != '~') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", spool, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        n++;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) (*locked)++;
        close(fd);
    }
    closedir(d);
    return n;
}

static void free_while_waiting(void) {
    const char *path = script("waiting.lua",
                              "-- zhost: job=t_waiting\n"
                              "local guard <close> = setmetatable({}, {__close = function()\n"
                              "  job:metric('closed'); job.closed_ran = true\n"
                              "end})\n"
                              "local keep = setmetatable({}, {__gc = function() job:set('collected', true) end})\n"
                              "task.spawn(function() sleep(1e6) end)\n"
                              "job:set('ready', true)\n"
                              "sleep(1e6)\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, true, false, &done);
    if (!started(h, r)) return;
    ZT_CHECK(run_until_ready(h, r));
    int jt = keep_job_table(r);
    zh_run_free(r);
    ZT_EQ_INT(done, 0);
    lua_State *L = h->L;
    /* The script's __close ran while the run was there to record its metric. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, jt);
    lua_getfield(L, -1, "closed_ran");
    ZT_CHECK(lua_toboolean(L, -1));
    lua_pop(L, 2);
    char *err = late_job_call(L, jt);
    ZT_CHECK(err && strstr(err, "cannot be used after the run has ended"));
    free(err);
    luaL_unref(L, LUA_REGISTRYINDEX, jt);
    zh_host_free(h); /* the __gc finalizer calls job:set now: it must raise, not touch the run */
    ZT_EQ_INT(done, 0);
}

static void free_after_finish(void) {
    const char *path = script("finished.lua",
                              "-- zhost: job=t_finished\n"
                              "local keep = setmetatable({}, {__gc = function() job:set('collected', true) end})\n"
                              "job:set('ready', true)\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, true, false, &done);
    if (!started(h, r)) return;
    run_until_done(h, &done);
    ZT_EQ_INT(done, 1);
    ZT_EQ_INT(r->status, ZH_RUN_SUCCESS);
    int jt = keep_job_table(r);
    zh_run_free(r);
    char *err = late_job_call(h->L, jt);
    ZT_CHECK(err && strstr(err, "cannot be used after the run has ended"));
    free(err);
    luaL_unref(h->L, LUA_REGISTRYINDEX, jt);
    zh_host_free(h);
    ZT_EQ_INT(done, 1);
}

/* What it spooled stays locked while the run may add to it, and is free for a replay as soon as
 * the run is freed, with the host (a `zhost serve` daemon) still going. */
static void spool_locked_while_the_run_lives(void) {
    const char *path = script("locking.lua",
                              "-- zhost: job=t_locking\n"
                              "local s = assert(ch.sink('zakaz.t_locked', {max_age = 600}))\n"
                              "s:add{a = 'spooled-mid-run'}\n"
                              "assert(not s:flush())\n"
                              "job:set('ready', true)\n"
                              "sleep(1e6)\n");
    zh_host *h = host();
    int done = 0, locked = 0;
    zh_run *r = start(h, path, false, false, &done);
    if (!started(h, r)) return;
    ZT_CHECK(run_until_ready(h, r));
    ZT_EQ_INT(spool_files("zakaz.t_locked", &locked), 1);
    ZT_EQ_INT(locked, 1);
    zh_run_free(r);
    ZT_EQ_INT(spool_files("zakaz.t_locked", &locked), 1);
    ZT_EQ_INT(locked, 0);
    zh_host_free(h);
}

static void free_with_rows_buffered(void) {
    const char *path = script("buffered.lua",
                              "-- zhost: job=t_buffered\n"
                              "local s = assert(ch.sink('zakaz.t_buffered', {max_age = 600}))\n"
                              "s:add{a = 'first-buffered'}\n"
                              "s:add{a = 'second-buffered'}\n"
                              "job:set('ready', true)\n"
                              "sleep(1e6)\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, false, false, &done);
    if (!started(h, r)) return;
    ZT_CHECK(run_until_ready(h, r));
    zh_run_free(r);
    /* Not lost: spooled when the run is freed, before the host goes. */
    const char *got = spooled("zakaz.t_buffered");
    ZT_CHECK(strstr(got, "first-buffered") && strstr(got, "second-buffered"));
    zh_host_free(h);
    ZT_EQ_INT(done, 0);
}

static void free_with_insert_in_flight(void) {
    const char *path = script("inflight.lua",
                              "-- zhost: job=t_inflight\n"
                              "local s = assert(ch.sink('zakaz.t_inflight', {max_age = 600}))\n"
                              "s:add{a = 'row-in-flight'}\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, false, false, &done);
    if (!started(h, r)) return;
    /* The script returns, the run starts its end-of-run flush: its INSERT is started on the
     * same loop turn and answered (refused) on a later one. */
    for (int i = 0; i < 10000 && !r->finishing; i++) {
        uv_run(h->loop, UV_RUN_NOWAIT);
        if (!r->finishing) usleep(1000);
    }
    ZT_CHECK(r->finishing);
    ZT_EQ_INT(done, 0);
    zh_run_free(r);
    ZT_CHECK(strstr(spooled("zakaz.t_inflight"), "row-in-flight") != NULL);
    zh_host_free(h);
    ZT_EQ_INT(done, 0);
}

static void free_with_running_row_in_flight(void) {
    const char *path = script("juststarted.lua", "-- zhost: job=t_juststarted\nsleep(1e6)\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, false, true, &done);
    if (!started(h, r)) return;
    zh_run_free(r); /* before its root task ever ran, with its "running" row just sent */
    zh_host_free(h); /* the row's failure arrives here: its callback must not reach the run */
    ZT_EQ_INT(done, 0);
}

static void stalled_run_ends_as_failed(void) {
    const char *path = script("stall.lua",
                              "-- zhost: job=t_stall\n"
                              "local a\n"
                              "local b = task.spawn(function() return task.wait(a) end)\n"
                              "a = task.spawn(function() return task.wait(b) end)\n"
                              "task.wait(a)\n");
    zh_host *h = host();
    int done = 0;
    zh_run *r = start(h, path, true, false, &done);
    if (!started(h, r)) return;
    run_until_done(h, &done);
    ZT_EQ_INT(done, 0);
    ZT_CHECK(zh_run_stalled(r));
    run_until_done(h, &done);
    ZT_EQ_INT(done, 1);
    ZT_EQ_INT(r->status, ZH_RUN_ERROR);
    ZT_CHECK(r->message && strstr(r->message, "stalled: the script waits at ") &&
             strstr(r->message, "stall.lua:5 and nothing is left that could wake it (3 of its tasks waiting)"));
    ZT_CHECK(!zh_run_stalled(r)); /* finished: nothing more to do */
    zh_run_free(r);
    zh_host_free(h);
}

/* A run that spooled rows says who delivers them: under a daemon whose spool_replay is on, the
 * daemon (the operator's command only as the fallback); otherwise the operator's command. */
static void spooled_rows_message(void) {
    char ok[256]; /* script() returns its own buffer */
    snprintf(ok, sizeof ok, "%s",
             script("spools.lua",
                    "-- zhost: job=t_spools\n"
                    "local s = assert(ch.sink('zakaz.t_msg'))\n"
                    "s:add{a = 'x'}\n"));
    const char *bad = script("spools_and_fails.lua",
                             "-- zhost: job=t_spools_fails\n"
                             "local s = assert(ch.sink('zakaz.t_msg'))\n"
                             "s:add{a = 'x'}\n"
                             "error('the API said no', 0)\n");
    static const char daemon[] = "job spool_replay delivers them once ClickHouse answers (by hand: `zhost spool replay`)";
    for (int auto_replay = 0; auto_replay < 2; auto_replay++) {
        for (int failing = 0; failing < 2; failing++) {
            zh_host *h = host();
            h->spool_auto_replay = auto_replay;
            int done = 0;
            zh_run *r = start(h, failing ? bad : ok, false, false, &done);
            if (!started(h, r)) return;
            run_until_done(h, &done);
            ZT_EQ_INT(done, 1);
            ZT_EQ_INT(r->status, ZH_RUN_ERROR);
            const char *m = r->message ? r->message : "";
            if (failing) ZT_CHECK(strncmp(m, "the API said no; 1 rows spooled, ", 33) == 0);
            else ZT_CHECK(strncmp(m, "1 rows spooled to ", 18) == 0);
            const char *tail = auto_replay ? daemon : "deliver them with `zhost spool replay`";
            size_t ml = strlen(m), tl = strlen(tail);
            ZT_CHECK(ml >= tl && !strcmp(m + ml - tl, tail));
            if (!(ml >= tl && !strcmp(m + ml - tl, tail))) fprintf(stderr, "  message: %s\n", m);
            zh_run_free(r);
            zh_host_free(h);
        }
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(tmp, sizeof tmp, "/tmp/zhost-test-run-XXXXXX");
    if (!mkdtemp(tmp)) return 2;
    snprintf(spool, sizeof spool, "%s/spool", tmp);
    char schema_dir[256];
    snprintf(schema_dir, sizeof schema_dir, "%s/schema", spool);
    mkdir(spool, 0700);
    mkdir(schema_dir, 0700);
    script("spool/schema/zakaz.t_buffered.tsv", "a\tString\n");
    script("spool/schema/zakaz.t_inflight.tsv", "a\tString\n");
    script("spool/schema/zakaz.t_locked.tsv", "a\tString\n");
    script("spool/schema/zakaz.t_msg.tsv", "a\tString\n");
    /* Port 1 refuses at once; one attempt, so sinks open from the cached schema without delay. */
    setenv("CLICKHOUSE_URL", "http://127.0.0.1:1", 1);
    setenv("CLICKHOUSE_DB", "zakaz", 1);
    setenv("ZHOST_CH_ATTEMPTS", "1", 1);
    unsetenv("CLICKHOUSE_HOST");
    ZT_RUN(free_while_waiting);
    ZT_RUN(free_after_finish);
    ZT_RUN(spool_locked_while_the_run_lives);
    ZT_RUN(free_with_rows_buffered);
    ZT_RUN(free_with_insert_in_flight);
    ZT_RUN(free_with_running_row_in_flight);
    ZT_RUN(stalled_run_ends_as_failed);
    ZT_RUN(spooled_rows_message);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    curl_global_cleanup();
    return ZT_DONE();
}
