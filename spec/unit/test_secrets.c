/* Unit tests for secrets.c: the env-file format. */
#include "secrets.h"
#include "zt.h"
#include <stdlib.h>

typedef struct { char keys[16][64]; char vals[16][256]; int n; } kv;

static void put(void *ud, const char *k, const char *v) {
    kv *s = ud;
    snprintf(s->keys[s->n], 64, "%s", k);
    snprintf(s->vals[s->n], 256, "%s", v);
    s->n++;
}

static void parses_plain_quoted_and_comments(void) {
    const char *text = "# comment\n\nA=1\nexport B = two words \nC=\"q \\\"x\\\"\\n\"\nD='lit $x'\nE=val # note\nF=\n";
    kv s = {0};
    char *err = NULL;
    ZT_EQ_INT(zh_secrets_parse(text, strlen(text), "t", put, &s, &err), 1);
    ZT_EQ_INT(s.n, 6);
    ZT_EQ_STR(s.keys[0], "A");
    ZT_EQ_STR(s.vals[0], "1");
    ZT_EQ_STR(s.vals[1], "two words");
    ZT_EQ_STR(s.vals[2], "q \"x\"\n");
    ZT_EQ_STR(s.vals[3], "lit $x");
    ZT_EQ_STR(s.vals[4], "val");
    ZT_EQ_STR(s.vals[5], "");
}

static void reports_file_and_line(void) {
    const char *text = "A=1\nthis is wrong\n";
    kv s = {0};
    char *err = NULL;
    ZT_EQ_INT(zh_secrets_parse(text, strlen(text), "secrets/.env.x", put, &s, &err), -1);
    ZT_CHECK(err && strstr(err, "secrets/.env.x:2:"));
    free(err);
    err = NULL;
    const char *unterminated = "A=\"open\n";
    ZT_EQ_INT(zh_secrets_parse(unterminated, strlen(unterminated), "f", put, &s, &err), -1);
    ZT_CHECK(err && strstr(err, "unterminated"));
    free(err);
}

/* A file saved by a Windows editor: a UTF-8 byte-order mark before the first key (it used to be
 * "expected KEY=VALUE" on line 1, stopping every command), CRLF line ends, `export` and a tab. */
static void windows_saved_file(void) {
    const char *text = "\xEF\xBB\xBF" "A=1\r\nexport\tB=two\r\nC=\"q\" # c\r\nD='x'\r\nE=\r\n# end\r\n";
    kv s = {0};
    char *err = NULL;
    ZT_EQ_INT(zh_secrets_parse(text, strlen(text), "t", put, &s, &err), 1);
    ZT_CHECK(err == NULL);
    ZT_EQ_INT(s.n, 5);
    ZT_EQ_STR(s.keys[0], "A");
    ZT_EQ_STR(s.vals[0], "1");
    ZT_EQ_STR(s.keys[1], "B");
    ZT_EQ_STR(s.vals[1], "two");
    ZT_EQ_STR(s.vals[2], "q");
    ZT_EQ_STR(s.vals[3], "x");
    ZT_EQ_STR(s.keys[4], "E");
    ZT_EQ_STR(s.vals[4], "");
    free(err);
}

static void dir_precedence(void) {
    ZT_EQ_STR(zh_secrets_dir("/x"), "/x");
    setenv("ZHOST_SECRETS", "/from/env", 1);
    ZT_EQ_STR(zh_secrets_dir(NULL), "/from/env");
    unsetenv("ZHOST_SECRETS");
    ZT_EQ_STR(zh_secrets_dir(NULL), "secrets");
}

int main(void) {
    ZT_RUN(parses_plain_quoted_and_comments);
    ZT_RUN(reports_file_and_line);
    ZT_RUN(windows_saved_file);
    ZT_RUN(dir_precedence);
    return ZT_DONE();
}
