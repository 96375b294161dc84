/* secrets.c — owns reading secrets files: KEY=VALUE lines, `export` prefixes, # comments,
 * single quotes (literal) and double quotes (with \n \t \" \\ escapes). Values are registered with
 * the logger so they never appear in log lines. */
#include "secrets.h"
#include "log.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *zh_secrets_dir(const char *flag) {
    if (flag && *flag) return flag;
    const char *e = getenv("ZHOST_SECRETS");
    if (e && *e) return e;
    return "secrets";
}

static int fail(char **err, const char *origin, int line, const char *what) {
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_printf(&b, "%s:%d: %s", origin, line, what);
    *err = b.data;
    return -1;
}

int zh_secrets_parse(const char *text, size_t len, const char *origin, zh_secret_fn fn, void *ud, char **err) {
    const char *p = text, *end = text + len;
    int line = 0;
    /* A Windows editor's UTF-8 byte-order mark before the first key. */
    if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;
    zh_buf val;
    zh_buf_init(&val);
    while (p < end) {
        line++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *s = p;
        p = eol + 1;
        while (s < eol && (*s == ' ' || *s == '\t')) s++;
        if (s == eol || *s == '#' || *s == '\r') continue;
        if (eol - s > 7 && !strncmp(s, "export", 6) && (s[6] == ' ' || s[6] == '\t')) s += 7;
        while (s < eol && (*s == ' ' || *s == '\t')) s++;
        const char *k = s;
        while (s < eol && (*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9'))) s++;
        if (s == k) { zh_buf_free(&val); return fail(err, origin, line, "expected KEY=VALUE"); }
        char key[128];
        size_t kl = (size_t)(s - k);
        if (kl >= sizeof key) { zh_buf_free(&val); return fail(err, origin, line, "key too long"); }
        memcpy(key, k, kl);
        key[kl] = 0;
        while (s < eol && (*s == ' ' || *s == '\t')) s++;
        if (s == eol || *s != '=') { zh_buf_free(&val); return fail(err, origin, line, "expected '=' after the key"); }
        s++;
        while (s < eol && (*s == ' ' || *s == '\t')) s++;
        val.len = 0;
        zh_buf_add(&val, "", 0);
        if (s < eol && (*s == '"' || *s == '\'')) {
            char q = *s++;
            bool closed = false;
            while (s < eol) {
                if (*s == q) { closed = true; s++; break; }
                if (q == '"' && *s == '\\' && s + 1 < eol) {
                    s++;
                    char c = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s == 'r' ? '\r' : *s;
                    zh_buf_addc(&val, c);
                    s++;
                    continue;
                }
                zh_buf_addc(&val, *s++);
            }
            if (!closed) { zh_buf_free(&val); return fail(err, origin, line, "unterminated quoted value"); }
            while (s < eol && (*s == ' ' || *s == '\t' || *s == '\r')) s++;
            if (s < eol && *s != '#') { zh_buf_free(&val); return fail(err, origin, line, "text after the closing quote"); }
        } else {
            const char *v = s, *ve = eol;
            /* An unquoted value ends at " #" (inline comment) or the end of the line. */
            for (const char *c = v; c < eol; c++)
                if (*c == '#' && c > v && (c[-1] == ' ' || c[-1] == '\t')) { ve = c; break; }
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r')) ve--;
            zh_buf_add(&val, v, (size_t)(ve - v));
        }
        zh_log_setting(key, val.data);
        fn(ud, key, val.data);
    }
    zh_buf_free(&val);
    return 1;
}

int zh_secrets_read(const char *dir, const char *name, zh_secret_fn fn, void *ud, char **err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/.env.%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", path, strerror(errno));
        *err = b.data;
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
        ZH_WARN(NULL, "msg=\"secrets file is readable by every user; chmod 600 it\" file=%s", path);
    zh_buf text;
    zh_buf_init(&text);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) zh_buf_add(&text, chunk, n);
    fclose(f);
    int rc = zh_secrets_parse(text.data ? text.data : "", text.len, path, fn, ud, err);
    zh_buf_free(&text);
    return rc;
}
