/* task.c — owns tasks: coroutines, the ready queue, waiting, cancellation, the CPU budget hook,
 * and the Lua `task` module plus the coroutine/pcall shims that let host yields pass through
 * user coroutines (as OpenResty does).
 *
 * One resume path: task_run() is the only place that resumes a task's coroutine, and it is only
 * called from the idle handler draining the ready queue. */
#include "task.h"
#include "log.h"
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Marks a yield made by the host (a task waiting on I/O) as opposed to a user coroutine.yield. */
static const char yield_marker = 0;
#define YIELD_MARKER ((void *)&yield_marker)

struct zh_waiter {
    zh_pending base;
    zh_task *target;
    struct zh_waiter *next;
};

typedef struct zh_sched_state {
    uv_idle_t idle;
    zh_task *ready_head, *ready_tail;
    zh_task *all;          /* every task not yet freed */
    uint64_t next_id;
    bool idle_active;
} zh_sched_state;

/* SIGINT must reach a script stuck in a busy loop, where the uv loop does not run; the only way
 * a signal handler can tell the Lua hook is a process-wide flag. */
static volatile sig_atomic_t sigint_pending;

/* The watchdog (below) is process-wide because signal handlers have no context: these say what
 * the one loop thread is resuming right now. running_co is the innermost coroutine being resumed
 * (a task's, or a user coroutine inside it); resume_started_ms is when the task's resume began. */
static _Atomic(lua_State *) running_co;
static _Atomic uint_least64_t resume_started_ms;
static pthread_t loop_thread;
/* The host's CPU budget in ms (0: none), for the watchdog's last resort (watchdog_main): it is the
 * same host setting, copied where the watchdog thread can read it. */
static _Atomic uint_least64_t budget_ms;

void zh_task_note_sigint(void) { sigint_pending = 1; }

static void budget_hook(lua_State *L, lua_Debug *ar);

bool zh_task_take_sigint(void) {
    bool was = sigint_pending != 0;
    sigint_pending = 0;
    return was;
}

static void drain_ready(uv_idle_t *idle);

void zh_tasks_init(zh_host *h) {
    zh_sched_state *s = zh_xcalloc(1, sizeof *s);
    uv_idle_init(h->loop, &s->idle);
    s->idle.data = h;
    s->next_id = 1;
    h->tasks = s;
}

static void enqueue(zh_task *t) {
    zh_sched_state *s = t->host->tasks;
    t->state = ZH_TASK_READY;
    t->next_ready = NULL;
    if (s->ready_tail) s->ready_tail->next_ready = t; else s->ready_head = t;
    s->ready_tail = t;
    if (!s->idle_active) {
        uv_idle_start(&s->idle, drain_ready);
        s->idle_active = true;
    }
}

static void dequeue(zh_task *t) {
    zh_sched_state *s = t->host->tasks;
    zh_task **pp = &s->ready_head, *prev = NULL;
    while (*pp && *pp != t) { prev = *pp; pp = &(*pp)->next_ready; }
    if (!*pp) return;
    *pp = t->next_ready;
    if (s->ready_tail == t) s->ready_tail = prev;
    t->next_ready = NULL;
}

static void task_free(zh_task *t) {
    zh_sched_state *s = t->host->tasks;
    if (t->prev_all) t->prev_all->next_all = t->next_all; else s->all = t->next_all;
    if (t->next_all) t->next_all->prev_all = t->prev_all;
    if (t->result_ref != LUA_NOREF && t->host->L) luaL_unref(t->host->L, LUA_REGISTRYINDEX, t->result_ref);
    free(t->error);
    free(t->error_short);
    free(t);
}

void zh_task_release(zh_task *t) {
    if (--t->refs == 0) task_free(t);
}

zh_task *zh_task_spawn(zh_host *h, lua_State *from, int nargs, zh_group *group) {
    zh_sched_state *s = h->tasks;
    zh_task *t = zh_xcalloc(1, sizeof *t);
    t->host = h;
    t->id = s->next_id++;
    t->group = group;
    t->result_ref = LUA_NOREF;
    t->refs = 2; /* one for being alive, one for the caller */
    t->co = lua_newthread(from);
    t->co_ref = luaL_ref(from, LUA_REGISTRYINDEX);
    lua_xmove(from, t->co, nargs + 1);
    t->start_nargs = nargs;
    t->next_all = s->all;
    if (s->all) s->all->prev_all = t;
    s->all = t;
    enqueue(t);
    return t;
}

static void wake_waiters(zh_task *t) {
    struct zh_waiter *w = t->waiters;
    t->waiters = NULL;
    while (w) {
        struct zh_waiter *next = w->next;
        w->next = NULL;
        zh_task_wake(&w->base);
        w = next;
    }
}

static void finish(zh_task *t) {
    zh_host *h = t->host;
    t->state = ZH_TASK_DONE;
    if (t->co) {
        luaL_unref(h->L, LUA_REGISTRYINDEX, t->co_ref);
        t->co = NULL;
        t->co_ref = LUA_NOREF;
    }
    wake_waiters(t);
    if (t->on_done) t->on_done(t, t->on_done_ud);
    zh_task_release(t);
}

static void finish_ok(zh_task *t, int nres) {
    lua_State *co = t->co;
    lua_createtable(co, nres, 1);
    lua_insert(co, -(nres + 1));
    for (int i = nres; i >= 1; i--) lua_rawseti(co, -(i + 1), i); /* table sits below v1..vi */
    lua_pushinteger(co, nres);
    lua_setfield(co, -2, "n");
    lua_xmove(co, t->host->L, 1);
    t->result_ref = luaL_ref(t->host->L, LUA_REGISTRYINDEX);
    t->ok = true;
    finish(t);
}

static int error_tostring(lua_State *L) {
    if (!luaL_callmeta(L, 1, "__tostring")) lua_pushnil(L);
    return 1;
}

/* The text of the error object at idx of the (dead) coroutine co. Its __tostring is the script's
 * code: it runs protected on L, since a __tostring that raises here would panic the process. */
static char *error_message(lua_State *L, lua_State *co, int idx) {
    const char *msg = lua_tostring(co, idx);
    if (msg) return zh_xstrdup(msg);
    lua_pushcfunction(L, error_tostring);
    lua_pushvalue(co, idx);
    lua_xmove(co, L, 1);
    char *r = NULL;
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) r = zh_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (r) return r;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "(error object is a %s value)", luaL_typename(co, idx));
    return b.data;
}

static void finish_error_msg(zh_task *t, const char *msg, const char *traceback) {
    t->ok = false;
    t->error_short = zh_xstrdup(msg);
    t->error = zh_xstrdup(traceback ? traceback : msg);
    finish(t);
}

static void finish_error_from_stack(zh_task *t) {
    lua_State *co = t->co, *L = t->host->L;
    char *msg = error_message(L, co, -1);
    luaL_traceback(L, co, msg, 0);
    finish_error_msg(t, msg, lua_tostring(L, -1));
    lua_pop(L, 1);
    free(msg);
}

static void task_run(zh_task *t) {
    zh_host *h = t->host;
    int nargs;
    if (t->start_nargs >= 0) {
        nargs = t->start_nargs;
        t->start_nargs = -1;
    } else {
        zh_pending *p = t->pending;
        t->pending = NULL;
        nargs = p->push(p, t->co);
    }
    t->state = ZH_TASK_RUNNING;
    t->resumed_at = zh_now_mono();
    zh_task *outer = h->current;
    h->current = t;
    int nres = 0;
    lua_State *outer_co = atomic_exchange(&running_co, t->co);
    uint_least64_t outer_started = atomic_exchange(&resume_started_ms, (uint_least64_t)(t->resumed_at * 1000) | 1);
    int st = lua_resume(t->co, NULL, nargs, &nres);
    atomic_store(&resume_started_ms, outer_started);
    atomic_store(&running_co, outer_co);
    h->current = outer;
    if (st == LUA_YIELD) {
        if (nres == 1 && lua_touserdata(t->co, -1) == YIELD_MARKER && t->pending) {
            lua_pop(t->co, 1);
            t->state = ZH_TASK_WAITING;
            return;
        }
        lua_pop(t->co, nres);
        finish_error_msg(t, "coroutine.yield() outside a coroutine: a task waits with sleep() or task.wait()", NULL);
    } else if (st == LUA_OK) {
        finish_ok(t, nres);
    } else {
        finish_error_from_stack(t);
    }
}

static void drain_ready(uv_idle_t *idle) {
    zh_host *h = idle->data;
    zh_sched_state *s = h->tasks;
    /* Run only the tasks queued so far, so tasks that keep waking each other cannot starve I/O. */
    zh_task *last = s->ready_tail;
    while (s->ready_head) {
        zh_task *t = s->ready_head;
        s->ready_head = t->next_ready;
        if (!s->ready_head) s->ready_tail = NULL;
        t->next_ready = NULL;
        t->refs++;
        task_run(t);
        zh_task_release(t);
        if (t == last) break;
    }
    if (!s->ready_head && s->idle_active) {
        uv_idle_stop(&s->idle);
        s->idle_active = false;
    }
}

zh_task *zh_task_current(lua_State *L, bool require_task) {
    zh_task *t = zh_host_of(L)->current;
    if (!t && require_task) luaL_error(L, "this function must be called from a task (a running script)");
    return t;
}

int zh_task_await(lua_State *L, zh_pending *p) { return zh_task_await_k(L, p, 0, NULL); }

int zh_task_await_k(lua_State *L, zh_pending *p, lua_KContext ctx, lua_KFunction k) {
    zh_task *t = zh_host_of(L)->current;
    if (!t) {
        p->abort(p);
        return luaL_error(L, "I/O outside a task: call it from a script or task.spawn");
    }
    if (!lua_isyieldable(L)) {
        p->abort(p);
        return luaL_error(L, "I/O where the script cannot wait (inside require, a metamethod, "
                             "a table.sort comparator or a string.gsub callback)");
    }
    p->task = t;
    t->pending = p;
    lua_pushlightuserdata(L, YIELD_MARKER);
    return lua_yieldk(L, 1, ctx, k);
}

void zh_task_wake(zh_pending *p) {
    zh_task *t = p->task;
    if (!t || t->state != ZH_TASK_WAITING || t->pending != p) return;
    enqueue(t);
}

void zh_task_cancel(zh_task *t, const char *reason) {
    if (t->state == ZH_TASK_DONE) return;
    if (t->state == ZH_TASK_RUNNING) {
        /* Only the task itself (or its hook) runs now; make its next check raise. */
        t->killed = true;
        lua_State *co = atomic_load(&running_co);
        if (co) lua_sethook(co, budget_hook, LUA_MASKCOUNT, 1);
        return;
    }
    if (t->state == ZH_TASK_READY) dequeue(t);
    t->refs++;
    if (t->pending) {
        zh_pending *p = t->pending;
        t->pending = NULL;
        p->abort(p);
    }
    if (t->co) {
        zh_host *h = t->host;
        zh_task *outer = h->current;
        h->current = NULL;
        lua_resetthread(t->co); /* runs __close handlers; they cannot wait */
        h->current = outer;
    }
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "cancelled: %s", reason ? reason : "no reason given");
    finish_error_msg(t, b.data, NULL);
    zh_buf_free(&b);
    zh_task_release(t);
}

int zh_task_cancel_group(zh_host *h, zh_group *group, const char *reason) {
    int n = 0;
    bool again = true;
    /* Cancelling one task can free or wake others; restart the scan after each cancel. */
    while (again) {
        again = false;
        for (zh_task *t = h->tasks->all; t; t = t->next_all) {
            if (t->group == group && t->state != ZH_TASK_DONE && t->state != ZH_TASK_RUNNING) {
                zh_task_cancel(t, reason);
                n++;
                again = true;
                break;
            }
        }
    }
    return n;
}

int zh_task_count_group(zh_host *h, zh_group *group) {
    int n = 0;
    for (zh_task *t = h->tasks->all; t; t = t->next_all)
        if (t->group == group && t->state != ZH_TASK_DONE) n++;
    return n;
}

bool zh_task_where(zh_task *t, char *out, size_t n) {
    if (!t->co || t->state == ZH_TASK_DONE || t->start_nargs >= 0) return false;
    lua_Debug ar;
    /* Level 0 is the C function that yielded (task.wait, sink:flush, ...): the first frame with
     * a line is the script's call. */
    for (int level = 0; lua_getstack(t->co, level, &ar); level++) {
        if (!lua_getinfo(t->co, "Sl", &ar) || ar.currentline <= 0) continue;
        snprintf(out, n, "%s:%d", ar.short_src, ar.currentline);
        return true;
    }
    return false;
}

static void idle_closed(uv_handle_t *hd) { (void)hd; }

void zh_tasks_shutdown(zh_host *h) {
    zh_sched_state *s = h->tasks;
    if (!s) return;
    bool again = true;
    while (again) {
        again = false;
        for (zh_task *t = s->all; t; t = t->next_all) {
            if (t->state != ZH_TASK_DONE) {
                zh_task_cancel(t, "shutting down");
                again = true;
                break;
            }
        }
    }
    /* What is left are finished tasks still referenced by handles; detach them. */
    while (s->all) {
        zh_task *t = s->all;
        s->all = t->next_all;
        if (s->all) s->all->prev_all = NULL;
        t->prev_all = t->next_all = NULL;
        t->refs = 0;
        if (t->result_ref != LUA_NOREF) luaL_unref(h->L, LUA_REGISTRYINDEX, t->result_ref);
        free(t->error);
        free(t->error_short);
        free(t);
    }
    uv_idle_stop(&s->idle);
    uv_close((uv_handle_t *)&s->idle, idle_closed);
    uv_run(h->loop, UV_RUN_NOWAIT);
    free(s);
    h->tasks = NULL;
}

/* ---- the CPU budget and SIGINT hook ---- */

/* A count hook left on all the time puts every VM instruction through luaG_traceexec: about a
 * tenth of a mapping job's CPU. So the hook is set only when needed, asynchronously, as lua.c does
 * for Ctrl-C: a watchdog thread notices a resume that has run longer than WATCH_AFTER_MS, or a
 * pending SIGINT, and sends the loop thread WATCH_SIGNAL; its handler sets a count hook on the
 * coroutine running then; the hook raises if the task must stop and otherwise removes itself. */
#define WATCH_PERIOD_MS 100
#define WATCH_AFTER_MS 200
#define WATCH_SIGNAL SIGURG /* ignored by default and used by nothing here (Go uses it alike) */

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    zh_host *h = zh_host_of(L);
    zh_task *t = h->current;
    if (t) {
        if (t->killed) luaL_error(L, "task stopped");
        if (sigint_pending) {
            t->killed = true;
            h->interrupted_in_lua = true; /* the loop could not run the signal's handler: tell the run */
            luaL_error(L, "interrupted");
        }
        if (h->cpu_budget_s > 0 && zh_now_mono() - t->resumed_at > h->cpu_budget_s) {
            t->killed = true;
            char msg[160];
            snprintf(msg, sizeof msg, "script ran %.1f s without waiting (CPU budget exceeded; an endless loop?)",
                     zh_now_mono() - t->resumed_at);
            luaL_error(L, "%s", msg);
        }
    }
    lua_sethook(L, NULL, 0, 0); /* nothing to stop yet: the watchdog sets it again if need be */
}

static void on_watch_signal(int signum) {
    (void)signum;
    int saved = errno;
    lua_State *co = atomic_load(&running_co);
    if (co) lua_sethook(co, budget_hook, LUA_MASKCOUNT, 1);
    errno = saved;
}

/* The hook runs only between VM instructions. A resume stuck inside one C call — a backtracking
 * pattern such as ("a"):rep(40):find(("a*"):rep(40) .. "b") runs for ages in lstrlib without one —
 * can be stopped neither by the budget nor by Ctrl-C or SIGTERM (their handlers wait for the loop).
 * STOP_GRACE_MS after such a stop was due, the process ends: its run stays `running` in the run
 * log and the next start marks it interrupted, which beats a process only SIGKILL ends (under
 * serve, a job slot held until its timeout; at the REPL, a prompt that never comes back). */
#define STOP_GRACE_MS 5000

static void stuck_exit(const char *why) {
    char msg[300];
    int n = snprintf(msg, sizeof msg,
                     "zhost: %s, but the script did not stop within %d s: it is stuck inside one C call "
                     "(a backtracking string pattern?); the process ends\n",
                     why, STOP_GRACE_MS / 1000);
    if (n > 0 && write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) < 0) n = 0;
    _exit(1);
}

static void *watchdog_main(void *arg) {
    (void)arg;
    uint_least64_t sigint_seen_ms = 0; /* when a Ctrl-C was first seen pending during this resume */
    for (;;) {
        struct timespec ts = {0, WATCH_PERIOD_MS * 1000000L};
        nanosleep(&ts, NULL);
        uint_least64_t started = atomic_load(&resume_started_ms);
        if (!atomic_load(&running_co) || !started) {
            sigint_seen_ms = 0;
            continue;
        }
        uint_least64_t now = (uint_least64_t)(zh_now_mono() * 1000);
        uint_least64_t ran = now - (started & ~(uint_least64_t)1);
        if (!sigint_pending) sigint_seen_ms = 0;
        else if (!sigint_seen_ms) sigint_seen_ms = now;
        uint_least64_t budget = atomic_load(&budget_ms);
        if (budget && ran >= budget + STOP_GRACE_MS) stuck_exit("the CPU budget was exceeded");
        if (sigint_seen_ms && now - sigint_seen_ms >= STOP_GRACE_MS) stuck_exit("interrupted");
        if (sigint_pending || ran >= WATCH_AFTER_MS) pthread_kill(loop_thread, WATCH_SIGNAL);
    }
    return NULL;
}

static void watchdog_start(void) {
    loop_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_watch_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(WATCH_SIGNAL, &sa, NULL);
    /* The watchdog takes no signals itself: SIGINT and the rest go to the loop thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t tid;
    if (pthread_create(&tid, &attr, watchdog_main, NULL) != 0)
        ZH_WARN(NULL, "msg=\"no watchdog thread: the CPU budget and Ctrl-C cannot stop a busy script\"");
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void zh_task_start_watchdog(lua_State *L) {
    double budget = zh_host_of(L)->cpu_budget_s;
    atomic_store(&budget_ms, budget > 0 ? (uint_least64_t)(budget * 1000) : 0);
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, watchdog_start);
}

/* ---- Lua: pcall/xpcall that cannot swallow a kill ---- */

static int pcall_finish(lua_State *L, int status, lua_KContext extra) {
    if (status != LUA_OK && status != LUA_YIELD) {
        zh_task *t = zh_host_of(L)->current;
        if (t && t->killed) return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int zh_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, pcall_finish);
    return pcall_finish(L, status, 0);
}

static int zh_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f, handler, true, f, args... */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, pcall_finish);
    return pcall_finish(L, status, 2);
}

/* ---- Lua: coroutine.resume / coroutine.wrap passing host yields through ---- */

static int co_drive(lua_State *L, int base, int nargs, int wrap);

static int co_continue(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    int base = (int)(ctx >> 1), wrap = (int)(ctx & 1);
    lua_State *co = lua_tothread(L, base);
    int nargs = lua_gettop(L) - base;
    if (!lua_checkstack(co, nargs + 1)) return luaL_error(L, "too many results to resume");
    lua_xmove(L, co, nargs);
    return co_drive(L, base, nargs, wrap);
}

static int co_drive(lua_State *L, int base, int nargs, int wrap) {
    lua_State *co = lua_tothread(L, base);
    int nres = 0;
    lua_State *outer_co = atomic_exchange(&running_co, co);
    int st = lua_resume(co, L, nargs, &nres);
    atomic_store(&running_co, outer_co);
    if (st == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == YIELD_MARKER) {
        /* The inner coroutine waits on the host: suspend the whole chain up to the task. */
        lua_pop(co, 1);
        lua_settop(L, base);
        lua_pushlightuserdata(L, YIELD_MARKER);
        return lua_yieldk(L, 1, ((lua_KContext)base << 1) | wrap, co_continue);
    }
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            return luaL_error(L, "too many results to resume");
        }
        lua_settop(L, base);
        if (!wrap) lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + (wrap ? 0 : 1);
    }
    lua_settop(L, base);
    lua_xmove(co, L, 1); /* the error object */
    zh_task *t = zh_host_of(L)->current;
    if (wrap || (t && t->killed)) {
        if (wrap) lua_resetthread(co);
        return lua_error(L);
    }
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

static int co_check_resumable(lua_State *L, lua_State *co) {
    int st = lua_status(co);
    if (st == LUA_OK && lua_gettop(co) == 0) return luaL_error(L, "cannot resume dead coroutine");
    if (st != LUA_OK && st != LUA_YIELD) return luaL_error(L, "cannot resume dead coroutine");
    if (co == L) return luaL_error(L, "cannot resume non-suspended coroutine");
    return 0;
}

static int zh_co_resume(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume dead coroutine");
        return 2;
    }
    if (co == L || (lua_status(co) == LUA_OK && lua_getstack(co, 0, &(lua_Debug){0}))) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return 2;
    }
    int nargs = lua_gettop(L) - 1;
    if (!lua_checkstack(co, nargs + 1)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "too many arguments to resume");
        return 2;
    }
    lua_xmove(L, co, nargs);
    return co_drive(L, 1, nargs, 0);
}

static int zh_co_wrap_call(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    co_check_resumable(L, co);
    int nargs = lua_gettop(L);
    if (!lua_checkstack(co, nargs + 1)) return luaL_error(L, "too many arguments to resume");
    lua_xmove(L, co, nargs);
    lua_pushvalue(L, lua_upvalueindex(1));
    return co_drive(L, 1, nargs, 1);
}

static int zh_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, zh_co_wrap_call, 1);
    return 1;
}

void zh_task_install_coroutine_shims(lua_State *L, int env_index) {
    env_index = lua_absindex(L, env_index);
    lua_pushcfunction(L, zh_pcall);
    lua_setfield(L, env_index, "pcall");
    lua_pushcfunction(L, zh_xpcall);
    lua_setfield(L, env_index, "xpcall");
    lua_getfield(L, env_index, "coroutine");
    if (lua_istable(L, -1)) {
        lua_pushcfunction(L, zh_co_resume);
        lua_setfield(L, -2, "resume");
        lua_pushcfunction(L, zh_co_wrap);
        lua_setfield(L, -2, "wrap");
    }
    lua_pop(L, 1);
}

/* ---- Lua module `task` ---- */

#define TASK_MT "zhost.task"

typedef struct { zh_task *t; } task_handle;

static zh_task *check_handle(lua_State *L, int idx) {
    task_handle *th = luaL_checkudata(L, idx, TASK_MT);
    return th->t;
}

static int handle_gc(lua_State *L) {
    task_handle *th = luaL_checkudata(L, 1, TASK_MT);
    if (th->t) {
        zh_task *t = th->t;
        th->t = NULL;
        if (zh_host_of(L)->tasks) zh_task_release(t);
    }
    return 0;
}

/* task.spawn(fn, ...) -> handle */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    zh_host *h = zh_host_of(L);
    zh_task *cur = h->current;
    int nargs = lua_gettop(L) - 1;
    task_handle *th = lua_newuserdatauv(L, sizeof *th, 0);
    th->t = NULL;
    luaL_setmetatable(L, TASK_MT);
    lua_insert(L, 1);
    th->t = zh_task_spawn(h, L, nargs, cur ? cur->group : NULL);
    return 1;
}

static int push_task_result(zh_task *t, lua_State *L) {
    if (t->ok) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
        lua_getfield(L, -1, "n");
        int n = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        luaL_checkstack(L, n, "too many results");
        for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
        lua_remove(L, -(n + 1));
        return n;
    }
    lua_pushnil(L);
    lua_pushstring(L, t->error_short ? t->error_short : "task failed");
    return 2;
}

static int waiter_push(zh_pending *p, lua_State *co) {
    struct zh_waiter *w = (struct zh_waiter *)p;
    int n = push_task_result(w->target, co);
    zh_task_release(w->target);
    free(w);
    return n;
}

static void waiter_abort(zh_pending *p) {
    struct zh_waiter *w = (struct zh_waiter *)p;
    struct zh_waiter **pp = &w->target->waiters;
    while (*pp && *pp != w) pp = &(*pp)->next;
    if (*pp) *pp = w->next;
    zh_task_release(w->target);
    free(w);
}

bool zh_task_group_deadlocked(zh_host *h, zh_group *g) {
    int n = 0;
    for (zh_task *t = h->tasks->all; t; t = t->next_all) {
        if (t->group != g || t->state == ZH_TASK_DONE) continue;
        n++;
        /* anything but task.wait (I/O, a timer, a sink, a task just woken) can still move */
        if (t->state != ZH_TASK_WAITING || !t->pending || t->pending->push != waiter_push) return false;
        if (((struct zh_waiter *)t->pending)->target->group != g) return false;
    }
    return n > 0;
}

/* task.wait(handle) -> results of the task's function, or nil, err */
static int l_wait(lua_State *L) {
    zh_task *t = check_handle(L, 1);
    if (!t) return luaL_error(L, "task.wait: invalid handle");
    if (t->state == ZH_TASK_DONE) return push_task_result(t, L);
    zh_task *cur = zh_task_current(L, true);
    if (cur == t) return luaL_error(L, "task.wait: a task cannot wait for itself");
    struct zh_waiter *w = zh_xcalloc(1, sizeof *w);
    w->base.push = waiter_push;
    w->base.abort = waiter_abort;
    w->target = t;
    t->refs++;
    w->next = t->waiters;
    t->waiters = w;
    return zh_task_await(L, &w->base);
}

/* task.cancel(handle [, reason]) */
static int l_cancel(lua_State *L) {
    zh_task *t = check_handle(L, 1);
    const char *reason = luaL_optstring(L, 2, "cancelled by script");
    if (t && t == zh_host_of(L)->current) return luaL_error(L, "task.cancel: use error() to stop the current task");
    if (t) zh_task_cancel(t, reason);
    return 0;
}

/* handle:done() -> bool */
static int l_done(lua_State *L) {
    zh_task *t = check_handle(L, 1);
    lua_pushboolean(L, t && t->state == ZH_TASK_DONE);
    return 1;
}

typedef struct {
    zh_pending base;
    uv_timer_t timer;
    bool fired;
} sleep_op;

static void sleep_closed(uv_handle_t *hd) { free(hd->data); }

static int sleep_push(zh_pending *p, lua_State *co) {
    sleep_op *op = (sleep_op *)p;
    uv_close((uv_handle_t *)&op->timer, sleep_closed);
    (void)co;
    return 0;
}

static void sleep_abort(zh_pending *p) {
    sleep_op *op = (sleep_op *)p;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, sleep_closed);
}

static void sleep_fired(uv_timer_t *tm) {
    sleep_op *op = tm->data;
    op->fired = true;
    zh_task_wake(&op->base);
}

/* sleep(seconds) — also task.sleep */
static int l_sleep(lua_State *L) {
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < 1e7, 1, "seconds must be between 0 and 1e7");
    zh_host *h = zh_host_of(L);
    sleep_op *op = zh_xcalloc(1, sizeof *op);
    op->base.push = sleep_push;
    op->base.abort = sleep_abort;
    uv_timer_init(h->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, sleep_fired, (uint64_t)(s * 1000.0 + 0.5), 0);
    return zh_task_await(L, &op->base);
}

static int l_id(lua_State *L) {
    zh_task *t = zh_host_of(L)->current;
    if (!t) return 0;
    lua_pushinteger(L, (lua_Integer)t->id);
    return 1;
}

/* task.map(items, concurrency, fn) — written in Lua over spawn/wait: at most `concurrency`
 * workers pull the next item; the first error stops new items and is returned after the
 * running ones finish. */
static const char map_source[] =
    "local spawn, wait = ...\n"
    "return function(items, concurrency, fn)\n"
    "  if type(items) ~= 'table' then error('task.map: items must be a table', 2) end\n"
    "  if type(concurrency) == 'function' and fn == nil then fn, concurrency = concurrency, 8 end\n"
    "  concurrency = math.tointeger(concurrency)\n"
    "  if not concurrency or concurrency < 1 then error('task.map: concurrency must be a positive integer', 2) end\n"
    "  if type(fn) ~= 'function' then error('task.map: fn must be a function', 2) end\n"
    "  local n, next_i, results, first_err = #items, 1, {}, nil\n"
    "  local function worker()\n"
    "    while not first_err and next_i <= n do\n"
    "      local i = next_i; next_i = i + 1\n"
    "      local ok, res, err = pcall(fn, items[i], i)\n"
    "      if not ok then first_err = first_err or ('item ' .. i .. ': ' .. tostring(res))\n"
    "      else results[i] = res; if res == nil and err ~= nil then first_err = first_err or ('item ' .. i .. ': ' .. tostring(err)) end end\n"
    "    end\n"
    "  end\n"
    "  local workers = {}\n"
    "  for w = 1, math.min(concurrency, n) do workers[w] = spawn(worker) end\n"
    "  for w = 1, #workers do local ok, err = wait(workers[w]); if ok == nil and err then first_err = first_err or err end end\n"
    "  if first_err then return nil, first_err end\n"
    "  return results\n"
    "end\n";

int zh_open_task(lua_State *L) {
    if (luaL_newmetatable(L, TASK_MT)) {
        lua_pushcfunction(L, handle_gc);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        lua_pushcfunction(L, l_wait);
        lua_setfield(L, -2, "wait");
        lua_pushcfunction(L, l_cancel);
        lua_setfield(L, -2, "cancel");
        lua_pushcfunction(L, l_done);
        lua_setfield(L, -2, "done");
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "task");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"spawn", l_spawn}, {"wait", l_wait}, {"cancel", l_cancel},
        {"sleep", l_sleep}, {"id", l_id}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    if (luaL_loadbuffer(L, map_source, sizeof map_source - 1, "=task.map") != LUA_OK) return lua_error(L);
    lua_pushcfunction(L, l_spawn);
    lua_pushcfunction(L, l_wait);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "map");
    return 1;
}

