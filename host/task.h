/* task.h — tasks: Lua coroutines driven by the uv loop.
 *
 * Every script run, sub-task and REPL input is a task. A primitive that waits (HTTP, ClickHouse,
 * sleep, waiting on another task) allocates an operation that embeds zh_pending and returns
 * zh_task_await(L, &op->pending). When the operation completes (in a uv or curl callback) it calls
 * zh_task_wake(&op->pending); the loop later resumes the task, calling op->pending.push first to
 * put the results on the coroutine's stack. Lua never runs inside a uv or curl callback. */
#ifndef ZH_TASK_H
#define ZH_TASK_H

#include "zh.h"

typedef struct zh_pending zh_pending;
struct zh_pending {
    /* Push the operation's results onto co and free the operation. Returns the number of values. */
    int (*push)(zh_pending *p, lua_State *co);
    /* The task is being cancelled: stop the operation if it still runs, then free it.
     * Called at most once, and never after push. */
    void (*abort)(zh_pending *p);
    zh_task *task; /* set by zh_task_await */
};

typedef void (*zh_task_done_fn)(zh_task *t, void *ud);

/* Tasks belong to a group (a job run, a REPL input): cancelled together, and the group names
 * the job in every log line. Owners embed it as their first member. */
typedef struct zh_group {
    char job[64];
    char run_id[40];          /* for spool file names and logs; may be empty */
    uint64_t http_requests;   /* attempts sent, retries included */
    uint64_t http_retries;
    uint64_t http_bytes;      /* response bytes received */
} zh_group;

enum zh_task_state { ZH_TASK_READY, ZH_TASK_RUNNING, ZH_TASK_WAITING, ZH_TASK_DONE };

struct zh_task {
    zh_host *host;
    lua_State *co;
    int co_ref;               /* registry ref anchoring the coroutine while the task lives */
    uint64_t id;
    enum zh_task_state state;
    int start_nargs;          /* arguments already on co for the first resume, -1 after it */
    zh_pending *pending;      /* operation being waited on (WAITING) or completed (READY) */
    zh_group *group;          /* owner group (a run); sub-tasks inherit it */
    double resumed_at;        /* monotonic time of the current resume, for the CPU budget */
    bool killed;              /* budget exceeded or interrupted: errors cannot be caught */
    bool ok;                  /* when DONE: finished without error */
    int result_ref;           /* when DONE and ok: registry ref to {n=, ...}; else LUA_NOREF */
    char *error;              /* when DONE and failed: message with traceback */
    char *error_short;        /* when DONE and failed: message only ("file:line: text") */
    zh_task_done_fn on_done;
    void *on_done_ud;
    int refs;                 /* owners: 1 while not DONE, +1 per handle / C owner */
    zh_task *next_ready;
    zh_task *prev_all, *next_all;
    struct zh_waiter *waiters; /* tasks blocked in task.wait on this one */
};

/* Creates the task-system state in h (ready queue, idle handle). */
void zh_tasks_init(zh_host *h);
/* Cancels every task, runs pending aborts, closes handles. Call before lua_close. */
void zh_tasks_shutdown(zh_host *h);

/* New task running the function below nargs arguments on top of `from`'s stack (both popped).
 * The task is queued to start on the next loop turn. The caller holds one reference. */
zh_task *zh_task_spawn(zh_host *h, lua_State *from, int nargs, zh_group *group);
void zh_task_release(zh_task *t);

/* From a lua_CFunction: suspend the current task until zh_task_wake(p). Raises a Lua error if
 * called outside a task or where yielding is impossible (require, metamethods, sort comparators). */
int zh_task_await(lua_State *L, zh_pending *p);
/* As zh_task_await, for a C function that goes on after the wait (a loop that may wait more than
 * once): on resume Lua calls k(L, LUA_YIELD, ctx) with the function's stack as it was before the
 * wait, plus what p->push pushed. */
int zh_task_await_k(lua_State *L, zh_pending *p, lua_KContext ctx, lua_KFunction k);
void zh_task_wake(zh_pending *p);

/* The running task, or NULL (raises when require_task and none). */
zh_task *zh_task_current(lua_State *L, bool require_task);

/* Cancel a task (reason becomes its error). Safe from any callback; no Lua code runs for the
 * cancelled task afterwards except its to-be-closed variables. */
void zh_task_cancel(zh_task *t, const char *reason);
/* Cancel every task of a group; returns how many were live. */
int zh_task_cancel_group(zh_host *h, zh_group *group, const char *reason);
/* Number of tasks of a group that are not DONE. */
/* True when every unfinished task of the group waits (task.wait) for another task of the group:
 * nothing outside can wake any of them. `zhost serve` checks its runs with it; `zhost run` sees
 * the same as its loop running out of work. */
bool zh_task_group_deadlocked(zh_host *h, zh_group *g);
int zh_task_count_group(zh_host *h, zh_group *group);
/* Where a suspended task's Lua code waits ("file.lua:12"), for messages; false when it has no
 * Lua frame (not started, finished, or waiting in C only). */
bool zh_task_where(zh_task *t, char *out, size_t n);

/* Lua module `task` (spawn, wait, map, sleep, id) and the coroutine/pcall replacements that let
 * host yields pass through user coroutines. */
int zh_open_task(lua_State *L);
void zh_task_install_coroutine_shims(lua_State *L, int env_index);

/* Starts (once per process) the watchdog thread that enforces the CPU budget and SIGINT on a task
 * busy in Lua by setting a count hook asynchronously (task.c). */
void zh_task_start_watchdog(lua_State *L);

/* Process-wide flag set from the SIGINT handler (see task.c for why it is global). */
void zh_task_note_sigint(void);
bool zh_task_take_sigint(void);

#endif
