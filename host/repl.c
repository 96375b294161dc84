/* repl.c — owns `zhost repl`: reading input (libedit on a terminal, plain lines from a pipe or
 * file), compiling it the way lua.c does (`return <line>` first, "<eof>" errors ask for another
 * line), running each input as a task in a group of its own while the uv loop turns, printing
 * results (zh_repl_format), Ctrl-C (cancel the input, or clear the line at the prompt), the
 * history file, and the `secrets(name)` helper.
 *
 * On a terminal the line is read through libedit's callback interface with stdin watched by a
 * uv_poll, so the loop (and with it the host's signal handling) keeps running at the prompt.
 * libedit's own signal handlers are switched off (rl_catch_signals = 0): they re-send the signal
 * to the whole process group and flip the terminal mode behind our back. The host's SIGINT
 * handler stays the only one; at the prompt it clears the line, during an input it cancels it. */
#include "repl.h"
#include "commands.h"
#include "host.h"
#include "l_http.h"
#include "log.h"
#include "lrt.h"
#include "secrets.h"
#include "task.h"
#include <editline/readline.h>
#include <lauxlib.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

enum {
    HISTORY_MAX = 1000,        /* entries kept in memory and in the history file */
    INPUT_MAX = 1 << 20,       /* bytes one (multi-line) input may accumulate */
};

/* ---- printing values ---- */

enum {
    FMT_DEPTH = 16,            /* nested tables shown; deeper ones print as {...} */
    FMT_ENTRIES = 200,         /* entries shown per table, then "... (N more)" */
    FMT_KEYS = 100000,         /* keys sorted per table; a bigger table shows its first ones */
    FMT_STRING = 4096,         /* bytes of a string shown, then its length */
    FMT_OUTPUT = 256 * 1024,   /* bytes of output per value, then "(output truncated)" */
    FMT_WIDTH = 78,            /* a table goes on one line when it fits this many columns */
};

typedef struct fmt {
    lua_State *L;
    const void *path[FMT_DEPTH + 1]; /* tables being printed, outermost first: cycle detection */
    int depth;
    bool truncated;
} fmt;

enum { RANK_NUMBER, RANK_STRING, RANK_BOOLEAN, RANK_OTHER };

typedef struct fkey {
    int rank;
    bool isint;
    lua_Integer ival;
    lua_Number num;
    const char *s;             /* string keys: points into the key, kept alive by the keys table */
    size_t len;
    int type;
    const void *ptr;
    int pos;                   /* index of the key in the keys table */
} fkey;

static int fkey_cmp(const void *a, const void *b) {
    const fkey *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    switch (x->rank) {
    case RANK_NUMBER:
        if (x->isint && y->isint) return x->ival < y->ival ? -1 : x->ival > y->ival;
        return x->num < y->num ? -1 : x->num > y->num;
    case RANK_STRING: {
        int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
        if (c) return c;
        return x->len < y->len ? -1 : x->len > y->len;
    }
    case RANK_BOOLEAN:
        return x->ival < y->ival ? -1 : x->ival > y->ival;
    default:
        if (x->type != y->type) return x->type < y->type ? -1 : 1;
        return (uintptr_t)x->ptr < (uintptr_t)y->ptr ? -1 : (uintptr_t)x->ptr > (uintptr_t)y->ptr;
    }
}

static void put_string(zh_buf *b, const char *s, size_t len) {
    size_t n = len;
    if (n > FMT_STRING) {
        n = FMT_STRING;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* do not cut a UTF-8 character */
    }
    zh_buf_addc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': zh_buf_adds(b, "\\\""); break;
        case '\\': zh_buf_adds(b, "\\\\"); break;
        case '\n': zh_buf_adds(b, "\\n"); break;
        case '\r': zh_buf_adds(b, "\\r"); break;
        case '\t': zh_buf_adds(b, "\\t"); break;
        default:
            if (c < 0x20 || c == 0x7f) zh_buf_printf(b, "\\x%02x", c);
            else zh_buf_addc(b, (char)c);
        }
    }
    zh_buf_addc(b, '"');
    if (n < len) zh_buf_printf(b, "... (%zu bytes)", len);
}

static void put_number(lua_State *L, zh_buf *b, int idx) {
    if (lua_isinteger(L, idx)) {
        zh_buf_printf(b, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
        return;
    }
    lua_pushvalue(L, idx); /* lua_tolstring converts in place: work on a copy */
    zh_buf_adds(b, lua_tostring(L, -1));
    lua_pop(L, 1);
}

static void put_opaque(lua_State *L, zh_buf *b, int idx) {
    const char *name = luaL_typename(L, idx);
    bool named = false;
    if (lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
        lua_pushliteral(L, "__name");
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            zh_buf_printf(b, "<%s: %p>", lua_tostring(L, -1), lua_topointer(L, idx));
            named = true;
        }
        lua_pop(L, 2);
    }
    if (!named) zh_buf_printf(b, "<%s: %p>", name, lua_topointer(L, idx));
}

static size_t column(const zh_buf *b) {
    size_t i = b->len;
    while (i > 0 && b->data[i - 1] != '\n') i--;
    return b->len - i;
}

static void newline(zh_buf *b, int indent) {
    zh_buf_addc(b, '\n');
    for (int i = 0; i < indent; i++) zh_buf_adds(b, "  ");
}

static bool put_value(fmt *f, zh_buf *b, int idx, int indent, size_t stop);

/* stop == 0: indented layout; else one line, giving up (false) once b->len passes stop. */
static bool put_table(fmt *f, zh_buf *b, int t, int indent, size_t stop) {
    lua_State *L = f->L;
    zh_http_response_fill(L, t); /* the walk below is raw: a response's body must be a field */
    const void *p = lua_topointer(L, t);
    for (int i = 0; i < f->depth; i++) {
        if (f->path[i] == p) {
            zh_buf_adds(b, "<cycle>");
            return !stop || b->len <= stop;
        }
    }
    if (f->depth >= FMT_DEPTH || !lua_checkstack(L, 10)) {
        zh_buf_adds(b, "{...}");
        return !stop || b->len <= stop;
    }
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        n++;
        if (stop && n > FMT_WIDTH / 3) { /* ", x" per entry: cannot fit one line */
            lua_pop(L, 1);
            return false;
        }
    }
    if (n == 0) {
        zh_buf_adds(b, "{}");
        return !stop || b->len <= stop;
    }
    int base = lua_gettop(L);
    size_t cap = n > FMT_KEYS ? FMT_KEYS : n;
    /* Userdata, not malloc: a memory error below unwinds without leaking it. */
    fkey *keys = lua_newuserdatauv(L, cap * sizeof *keys, 0);
    lua_createtable(L, (int)cap, 0);
    int kt = lua_gettop(L);
    size_t k = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (k == cap) {
            lua_pop(L, 1);
            break;
        }
        fkey *e = &keys[k];
        memset(e, 0, sizeof *e);
        e->type = lua_type(L, -1);
        switch (e->type) {
        case LUA_TNUMBER:
            e->rank = RANK_NUMBER;
            e->isint = lua_isinteger(L, -1);
            e->ival = e->isint ? lua_tointeger(L, -1) : 0;
            e->num = lua_tonumber(L, -1);
            break;
        case LUA_TSTRING:
            e->rank = RANK_STRING;
            e->s = lua_tolstring(L, -1, &e->len); /* a string key: no conversion happens */
            break;
        case LUA_TBOOLEAN:
            e->rank = RANK_BOOLEAN;
            e->ival = lua_toboolean(L, -1);
            break;
        default:
            e->rank = RANK_OTHER;
            e->ptr = lua_topointer(L, -1);
        }
        e->pos = (int)k + 1;
        lua_pushvalue(L, -1);
        lua_rawseti(L, kt, e->pos);
        k++;
    }
    qsort(keys, k, sizeof *keys, fkey_cmp);
    bool array = k == n;
    for (size_t i = 0; array && i < k; i++)
        if (!keys[i].isint || keys[i].ival != (lua_Integer)i + 1) array = false;

    f->path[f->depth++] = p;
    zh_buf_addc(b, array ? '[' : '{');
    size_t shown = k < FMT_ENTRIES ? k : FMT_ENTRIES;
    bool ok = true;
    size_t i;
    for (i = 0; i < shown && ok; i++) {
        if (b->len > FMT_OUTPUT) {
            f->truncated = true;
            break;
        }
        if (i) zh_buf_adds(b, stop ? ", " : ",");
        if (!stop) newline(b, indent + 1);
        lua_rawgeti(L, kt, keys[i].pos);
        if (!array) {
            switch (keys[i].rank) {
            case RANK_STRING: put_string(b, keys[i].s, keys[i].len); break;
            case RANK_NUMBER: put_number(L, b, -1); break;
            case RANK_BOOLEAN: zh_buf_adds(b, keys[i].ival ? "true" : "false"); break;
            default: put_opaque(L, b, -1);
            }
            zh_buf_adds(b, ": ");
        }
        lua_rawget(L, t);
        int v = lua_gettop(L);
        if (stop) {
            ok = put_value(f, b, v, indent + 1, stop);
        } else if (lua_type(L, v) == LUA_TTABLE) {
            size_t mark = b->len, col = column(b);
            size_t room = col + 20 < FMT_WIDTH ? FMT_WIDTH - col : 20;
            if (!put_value(f, b, v, indent + 1, b->len + room)) {
                b->len = mark;
                put_value(f, b, v, indent + 1, 0);
            }
        } else {
            put_value(f, b, v, indent + 1, 0);
        }
        lua_pop(L, 1);
    }
    if (ok && i == shown && n > shown) {
        zh_buf_adds(b, stop ? ", " : ",");
        if (!stop) newline(b, indent + 1);
        zh_buf_printf(b, "... (%zu more)", n - shown);
    }
    if (!stop) newline(b, indent);
    zh_buf_addc(b, array ? ']' : '}');
    f->depth--;
    lua_settop(L, base);
    return ok && (!stop || b->len <= stop);
}

static bool put_value(fmt *f, zh_buf *b, int idx, int indent, size_t stop) {
    lua_State *L = f->L;
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: zh_buf_adds(b, "nil"); break;
    case LUA_TBOOLEAN: zh_buf_adds(b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: put_number(L, b, idx); break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        put_string(b, s, n);
        break;
    }
    case LUA_TTABLE: return put_table(f, b, idx, indent, stop);
    default: put_opaque(L, b, idx);
    }
    return !stop || b->len <= stop;
}

static int format_protected(lua_State *L) {
    fmt *f = lua_touserdata(L, 1);
    zh_buf *b = lua_touserdata(L, 2);
    f->L = L;
    if (lua_type(L, 3) == LUA_TTABLE) {
        size_t mark = b->len, col = column(b);
        size_t room = col + 20 < FMT_WIDTH ? FMT_WIDTH - col : 20;
        if (put_value(f, b, 3, 0, b->len + room)) return 0;
        b->len = mark;
        f->depth = 0;
    }
    put_value(f, b, 3, 0, 0);
    return 0;
}

int zh_repl_format(lua_State *L, int idx, zh_buf *out) {
    idx = lua_absindex(L, idx);
    fmt f;
    memset(&f, 0, sizeof f);
    zh_buf_reserve(out, 64); /* so b->data is never NULL while formatting */
    lua_pushcfunction(L, format_protected);
    lua_pushlightuserdata(L, &f);
    lua_pushlightuserdata(L, out);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        zh_buf_printf(out, " <cannot print: %s>", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        lua_pop(L, 1);
        return -1;
    }
    if (f.truncated) zh_buf_adds(out, "\n... (output truncated)");
    return 0;
}

/* ---- the secrets(name) helper ---- */

static void add_secret(void *ud, const char *key, const char *value) {
    lua_State *L = ud;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

/* secrets(name) -> table of <secrets>/.env.<name>, or nil, err */
static int l_secrets(lua_State *L) {
    /* Called as a function, or through __call of the proxy table (then arg 1 is the proxy). */
    int arg = lua_istable(L, 1) ? 2 : 1;
    const char *name = luaL_checkstring(L, arg);
    bool good = *name != 0 && *name != '.';
    for (const char *c = name; *c && good; c++)
        good = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
               *c == '-' || *c == '.';
    if (!good) return luaL_error(L, "secrets: bad name '%s' (letters, digits, '_', '-', '.')", name);
    zh_host *h = zh_host_of(L);
    const char *dir = h->secrets_dir ? h->secrets_dir : "secrets";
    lua_newtable(L);
    char *err = NULL;
    int rc = zh_secrets_read(dir, name, add_secret, L, &err);
    if (rc == 1) return 1;
    lua_pushnil(L);
    if (rc == 0) {
        lua_pushfstring(L, "%s/.env.%s: no such file", dir, name);
    } else {
        lua_pushstring(L, err);
        free(err);
    }
    return 2;
}

/* ---- the REPL ---- */

typedef struct repl_input {
    zh_group group;            /* the tasks of this input, cancelled together */
    bool done;
    bool interrupted;
} repl_input;

typedef struct repl {
    zh_host *h;
    int env_ref;               /* the environment every input shares, so globals persist */
    bool tty;
    repl_input *running;       /* input being evaluated, NULL while reading */
    uv_poll_t stdin_poll;      /* tty: stdin readable -> rl_callback_read_char */
    uv_signal_t winch;
    int stdin_flags;           /* restored at exit: uv_poll makes stdin non-blocking */
    char *line;                /* the line libedit handed over */
    bool line_ready, line_eof, line_cancelled;
    bool quit;                 /* SIGTERM/SIGHUP, or SIGINT while a pipe is read */
    int exit_code;
    int failures;
    char *history;             /* history file, NULL for none */
    char *last_history;        /* last entry added, to skip repeats */
} repl;

/* libedit's line callback takes no user pointer and libedit's state is process-wide anyway;
 * this names the REPL that installed the callback. */
static repl *rl_repl;

static void on_rl_line(char *line) {
    repl *r = rl_repl;
    if (!r) {
        free(line);
        return;
    }
    if (line) r->line = line; else r->line_eof = true;
    r->line_ready = true;
}

static void on_stdin(uv_poll_t *p, int status, int events) {
    repl *r = p->data;
    int avail = 0;
    /* A hung-up terminal stays readable with nothing to read: that is end of input, not a
     * character for libedit (which would return nothing, forever). */
    if (status < 0 || (events & UV_DISCONNECT) ||
        (ioctl(STDIN_FILENO, FIONREAD, &avail) == 0 && avail == 0)) {
        r->line_eof = r->line_ready = true;
        return;
    }
    rl_callback_read_char();
}

static void on_winch(uv_signal_t *s, int signum) {
    (void)signum;
    repl *r = s->data;
    if (!r->running) rl_resize_terminal();
}

static void repl_on_signal(zh_host *h, int signum) {
    repl *r = h->on_signal_ud;
    if (signum != SIGINT) r->quit = true;
    if (r->running) {
        r->running->interrupted = true;
        zh_task_cancel_group(h, &r->running->group, signum == SIGINT ? "interrupted" : "stopped by a signal");
    } else if (signum == SIGINT) {
        if (r->tty) {
            r->line_cancelled = true;
        } else {
            r->quit = true;
            r->exit_code = 130;
        }
    }
}

/* Delivers a signal that arrived while the loop was not running to repl_on_signal now. The
 * host's signal handle is unreferenced, and libuv does not poll a loop with nothing referenced. */
static void take_signals(repl *r) {
    uv_handle_t *a = (uv_handle_t *)&r->h->sigint_async;
    uv_ref(a);
    uv_run(r->h->loop, UV_RUN_NOWAIT);
    uv_unref(a);
}

enum { READ_LINE, READ_EOF, READ_CANCELLED };

static int read_tty(repl *r, const char *prompt, char **out) {
    r->line = NULL;
    r->line_ready = r->line_eof = r->line_cancelled = false;
    rl_repl = r;
    rl_callback_handler_install(prompt, on_rl_line);
    uv_poll_start(&r->stdin_poll, UV_READABLE | UV_DISCONNECT, on_stdin);
    while (!r->line_ready && !r->line_cancelled && !r->quit)
        if (!uv_run(r->h->loop, UV_RUN_ONCE)) break;
    uv_poll_stop(&r->stdin_poll);
    rl_callback_handler_remove(); /* back to the terminal's normal mode while the input runs */
    rl_repl = NULL;
    if (r->line) {
        *out = r->line;
        r->line = NULL;
        return READ_LINE;
    }
    if (r->line_cancelled && !r->quit) {
        fputs("^C\n", stdout);
        fflush(stdout);
        return READ_CANCELLED;
    }
    return READ_EOF;
}

static int read_pipe(repl *r, char **out) {
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) {
        free(buf);
        /* Interrupted (or the signal raced with end of input): repl_on_signal says what to do. */
        take_signals(r);
        return READ_EOF;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    *out = buf;
    return READ_LINE;
}

static void history_save(repl *r) {
    if (!r->history) return;
    /* Inputs can hold tokens: create the file private before libedit writes it. */
    int fd = open(r->history, O_WRONLY | O_CREAT, 0600);
    if (fd < 0) return;
    close(fd);
    write_history(r->history);
}

static void history_add(repl *r, const char *entry) {
    if (!r->tty || !*entry) return;
    if (r->last_history && !strcmp(r->last_history, entry)) return;
    add_history(entry);
    free(r->last_history);
    r->last_history = zh_xstrdup(entry);
    history_save(r); /* after every input, so a killed session keeps its history */
}

static bool ends_with_eof(const char *msg) {
    size_t n = strlen(msg), m = strlen("<eof>");
    return n >= m && !strcmp(msg + n - m, "<eof>");
}

enum { CODE_OK, CODE_INCOMPLETE, CODE_BAD };

/* Compiles code into a function on top of L (CODE_OK), or says why not; *err (malloc'd) for
 * CODE_BAD. Expressions compile as `return <code>` so their values print. */
static int compile(repl *r, const char *code, size_t len, char **err) {
    lua_State *L = r->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
    int env = lua_gettop(L);
    zh_buf ret;
    zh_buf_init(&ret);
    zh_buf_adds(&ret, "return ");
    zh_buf_add(&ret, code, len);
    char *ret_err = zh_lrt_load_string(L, ret.data, ret.len, "=stdin", env);
    zh_buf_free(&ret);
    if (!ret_err) {
        lua_remove(L, env);
        return CODE_OK;
    }
    char *plain_err = zh_lrt_load_string(L, code, len, "=stdin", env);
    if (!plain_err) {
        free(ret_err);
        lua_remove(L, env);
        return CODE_OK;
    }
    lua_pop(L, 1);
    /* `{` alone is an unfinished expression, `for i = 1, 3 do` an unfinished statement. */
    bool incomplete = ends_with_eof(plain_err) || ends_with_eof(ret_err);
    free(ret_err);
    if (incomplete) {
        free(plain_err);
        return CODE_INCOMPLETE;
    }
    *err = plain_err;
    return CODE_BAD;
}

static void input_done(zh_task *t, void *ud) {
    (void)t;
    ((repl_input *)ud)->done = true;
}

static void print_results(repl *r, zh_task *t) {
    lua_State *L = r->h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
    lua_getfield(L, -1, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n <= 0) {
        lua_pop(L, 1);
        return;
    }
    zh_buf out;
    zh_buf_init(&out);
    for (int i = 1; i <= n; i++) {
        if (i > 1) zh_buf_addc(&out, '\t');
        lua_rawgeti(L, -1, i);
        zh_repl_format(L, -1, &out);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    zh_buf_addc(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    zh_buf_free(&out);
}

/* Runs the compiled function on top of L as a task; returns whether it succeeded. */
static bool eval(repl *r) {
    zh_host *h = r->h;
    repl_input *in = zh_xcalloc(1, sizeof *in);
    snprintf(in->group.job, sizeof in->group.job, "repl");
    zh_task *t = zh_task_spawn(h, h->L, 0, &in->group);
    t->on_done = input_done;
    t->on_done_ud = in;
    r->running = in;
    while (!in->done) {
        if (!uv_run(h->loop, UV_RUN_ONCE) && !in->done) {
            zh_task_cancel(t, "internal error: the input waits on nothing");
            break;
        }
    }
    /* A Ctrl-C that stopped busy Lua (through the hook) is delivered to repl_on_signal only on
     * the next loop turn: take it now, while it still counts against this input. */
    take_signals(r);
    /* Tasks the input spawned and did not wait for end with it: nothing runs them at the prompt,
     * and they belong to this input's group. */
    zh_task_cancel_group(h, &in->group, "the input they were started from finished");
    r->running = NULL;
    bool ok = t->ok;
    if (ok) {
        print_results(r, t);
    } else {
        fflush(stdout);
        const char *msg = t->error ? t->error : "failed";
        if (in->interrupted) {
            if (r->tty) fputc('\n', stderr); /* the terminal echoed ^C with no newline */
            if (!strncmp(msg, "cancelled: ", 11)) msg = "interrupted"; /* it was waiting: no traceback */
        }
        fprintf(stderr, "%s\n", msg);
        fflush(stderr);
    }
    zh_task_release(t);
    free(in);
    return ok;
}

static int loop(repl *r) {
    zh_buf code;
    zh_buf_init(&code);
    lua_State *L = r->h->L;
    while (!r->quit) {
        char *line = NULL;
        int st = r->tty ? read_tty(r, code.len ? ">> " : "> ", &line) : read_pipe(r, &line);
        if (st == READ_CANCELLED) {
            code.len = 0;
            continue;
        }
        if (st == READ_EOF) {
            if (r->tty) fputc('\n', stdout);
            if (code.len && !r->quit) { /* an unfinished input: say what is missing */
                char *err = NULL;
                lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
                err = zh_lrt_load_string(L, code.data, code.len, "=stdin", -1);
                lua_pop(L, err ? 1 : 2);
                if (err) {
                    fprintf(stderr, "%s\n", err);
                    free(err);
                    r->failures++;
                }
            }
            break;
        }
        if (code.len) zh_buf_addc(&code, '\n');
        zh_buf_adds(&code, line);
        free(line);
        if (code.len > INPUT_MAX) {
            fprintf(stderr, "input longer than %d bytes: dropped\n", INPUT_MAX);
            code.len = 0;
            r->failures++;
            continue;
        }
        const char *s = zh_buf_cstr(&code);
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) {
            code.len = 0;
            continue;
        }
        char *err = NULL;
        int c = compile(r, code.data, code.len, &err);
        if (c == CODE_INCOMPLETE) continue;
        history_add(r, zh_buf_cstr(&code));
        code.len = 0;
        if (c == CODE_BAD) {
            fprintf(stderr, "%s\n", err);
            free(err);
            r->failures++;
            continue;
        }
        if (!eval(r)) r->failures++;
    }
    fflush(stdout);
    zh_buf_free(&code);
    if (r->exit_code) return r->exit_code;
    /* At a terminal errors were seen and dealt with; a piped session reports them like a script. */
    return !r->tty && r->failures ? 1 : 0;
}

static char *history_path(const char *flag) {
    if (flag) return *flag ? zh_xstrdup(flag) : NULL;
    const char *e = getenv("ZHOST_HISTORY");
    if (e) return *e ? zh_xstrdup(e) : NULL;
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "%s/.zhost_history", home);
    return b.data;
}

/* The environment inputs run in: the base modules, globals that persist, and secrets(). */
static void push_env(lua_State *L) {
    zh_lrt_push_env(L, false);
    int env = lua_gettop(L);
    lua_getfield(L, env, "secrets"); /* a `secrets` module in the base environment stays reachable */
    if (lua_istable(L, -1)) {
        lua_newtable(L);
        lua_newtable(L);
        lua_pushcfunction(L, l_secrets);
        lua_setfield(L, -2, "__call");
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2);
    } else {
        lua_pushcfunction(L, l_secrets);
    }
    lua_setfield(L, env, "secrets");
    lua_pop(L, 1);
}

int zh_cmd_repl(int argc, char **argv) {
    const char *secrets = NULL, *history = NULL, *v;
    int verbose = 0;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) {
            secrets = v;
        } else if ((v = zh_opt_value(argc, argv, &i, "--history"))) {
            history = v;
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            verbose++;
        } else {
            fprintf(stderr, "zhost repl: unexpected argument '%s'\nusage: zhost repl [--secrets DIR] [--history FILE] [-v]\n",
                    argv[i]);
            return 2;
        }
    }
    if (verbose) zh_log_set_level(ZH_LOG_DEBUG);
    zh_host_opts ho = {.secrets_dir = zh_secrets_dir(secrets), .verbose = verbose};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        return 1;
    }
    repl *r = zh_xcalloc(1, sizeof *r);
    r->h = h;
    r->tty = isatty(STDIN_FILENO);
    push_env(h->L);
    r->env_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    h->on_signal = repl_on_signal;
    h->on_signal_ud = r;
    zh_host_install_signals(h);

    if (r->tty) {
        /* Before libedit initialises: keep its signal handlers out (see the top comment). */
        rl_catch_signals = 0;
        rl_catch_sigwinch = 0;
        rl_readline_name = "zhost";
        rl_initialize();
        using_history();
        stifle_history(HISTORY_MAX);
        r->history = history_path(history);
        if (r->history) read_history(r->history);
        r->stdin_flags = fcntl(STDIN_FILENO, F_GETFL);
        uv_poll_init(h->loop, &r->stdin_poll, STDIN_FILENO);
        r->stdin_poll.data = r;
        uv_signal_init(h->loop, &r->winch);
        r->winch.data = r;
        uv_signal_start(&r->winch, on_winch, SIGWINCH);
        uv_unref((uv_handle_t *)&r->winch);
        printf("zhost %s (%s): Lua with every zhost module. Ctrl-C cancels, Ctrl-D exits.\n", ZH_VERSION, LUA_RELEASE);
        fflush(stdout);
    }
    int rc = loop(r);
    if (r->tty) {
        history_save(r);
        uv_close((uv_handle_t *)&r->stdin_poll, NULL);
        uv_close((uv_handle_t *)&r->winch, NULL);
        if (r->stdin_flags >= 0) fcntl(STDIN_FILENO, F_SETFL, r->stdin_flags);
    }
    luaL_unref(h->L, LUA_REGISTRYINDEX, r->env_ref);
    zh_host_free(h);
    free(r->history);
    free(r->last_history);
    free(r);
    return rc;
}
