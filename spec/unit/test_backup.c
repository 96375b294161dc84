/* test_backup.c — the pure parts of backup.c: the manifest JSON reader, database
 * qualifier rewriting for restores, file names and backup names. */
#include "backup.h"
#include "zt.h"
#include <stdlib.h>

/* backup.o pulls clickhouse.o, which pulls spool.o, whose command uses zh_opt_value from main.c
 * (not in the library). A weak stand-in links the test and yields to a real definition. */
__attribute__((weak)) const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    (void)argc, (void)argv, (void)i, (void)name;
    return NULL;
}

static void test_json_reader(void) {
    const char *text = "{\"name\": \"chbk_x\", \"n\": 18446744073709551615, \"neg\": -1, \"s\": \"42\",\n"
                       " \"arr\": [1, {\"k\": true}, null, \"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\"], \"empty\": {}, \"e2\": []}";
    char *err = NULL;
    zh_json *j = zh_json_parse(text, strlen(text), &err);
    ZT_CHECK(j != NULL);
    if (!j) {
        free(err);
        return;
    }
    ZT_EQ_STR(zh_json_str(j, "name"), "chbk_x");
    ZT_CHECK(zh_json_u64(j, "n", 0) == UINT64_MAX); /* exact: not through a double */
    ZT_EQ_INT(zh_json_u64(j, "neg", 7), 7);
    ZT_EQ_INT(zh_json_u64(j, "s", 0), 42);
    ZT_EQ_INT(zh_json_u64(j, "missing", 5), 5);
    ZT_CHECK(zh_json_str(j, "n") == NULL);
    const zh_json *arr = zh_json_get(j, "arr");
    ZT_CHECK(arr && arr->t == ZH_JSON_ARR && arr->n == 4);
    if (arr && arr->n == 4) {
        ZT_CHECK(zh_json_get(arr->items[1], "k")->b);
        ZT_CHECK(arr->items[2]->t == ZH_JSON_NULL);
        ZT_EQ_STR(arr->items[3]->s, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
    }
    ZT_EQ_INT(zh_json_get(j, "empty")->n, 0);
    zh_json_free(j);

    static const char *bad[] = {"", "{", "{\"a\" 1}", "[1,]", "{\"a\":1} x", "\"unterminated", "[\"\\x\"]",
                                "{\"a\":\"\x01\"}", "nul", "[\"\\u12\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err = NULL;
        zh_json *b = zh_json_parse(bad[i], strlen(bad[i]), &err);
        ZT_CHECK(b == NULL);
        ZT_CHECK(err && strstr(err, "at byte"));
        zh_json_free(b);
        free(err);
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[400];
    memset(deep, '[', sizeof deep);
    err = NULL;
    ZT_CHECK(zh_json_parse(deep, sizeof deep, &err) == NULL);
    ZT_CHECK(err && strstr(err, "nested too deep"));
    free(err);
}

static void check_rewrite(const char *in, const char *from, const char *to, const char *want) {
    char *got = zh_backup_rewrite_db(in, from, to);
    ZT_EQ_STR(got, want);
    free(got);
}

static void test_rewrite_db(void) {
    check_rewrite("CREATE VIEW bi.v AS SELECT * FROM zakaz.t JOIN zakaz.u USING id", "zakaz", "scratch",
                  "CREATE VIEW bi.v AS SELECT * FROM scratch.t JOIN scratch.u USING id");
    /* quoted identifiers, string literals, comments, longer names and members stay */
    check_rewrite("SELECT 'zakaz.t', `zakaz`.t, \"zakaz\".u, zakaz_x.t, x.zakaz.y, zakaz, 1.5 -- zakaz.c\nFROM zakaz.t",
                  "zakaz", "r1", "SELECT 'zakaz.t', r1.t, r1.u, zakaz_x.t, x.zakaz.y, zakaz, 1.5 -- zakaz.c\nFROM r1.t");
    check_rewrite("SELECT '\\'zakaz.t' /* zakaz.t */ FROM zakaz.t", "zakaz", "r", "SELECT '\\'zakaz.t' /* zakaz.t */ FROM r.t");
    /* a target that needs quoting is quoted */
    check_rewrite("FROM zakaz.t", "zakaz", "my-db", "FROM `my-db`.t");
    check_rewrite("FROM `odd db`.t", "odd db", "plain", "FROM plain.t");
    /* unterminated input does not read past the end */
    check_rewrite("SELECT 'open", "zakaz", "r", "SELECT 'open");
    check_rewrite("SELECT `open", "zakaz", "r", "SELECT `open");
    check_rewrite("/* open", "zakaz", "r", "/* open");
}

static void test_names(void) {
    char *f = zh_backup_file_name("sales_2024-01");
    ZT_EQ_STR(f, "sales_2024-01");
    free(f);
    f = zh_backup_file_name(".inner.mv/x y");
    ZT_EQ_STR(f, "%2Einner%2Emv%2Fx%20y");
    free(f);
    double ep = 0;
    bool full = false;
    ZT_CHECK(zh_backup_parse_name("chbk_20250101_023000_full", &ep, &full));
    ZT_CHECK(full);
    ZT_EQ_INT((long long)ep, 1735698600);
    ZT_CHECK(zh_backup_parse_name("chbk_20250101_023000_incr", NULL, &full));
    ZT_CHECK(!full);
    ZT_CHECK(!zh_backup_parse_name("chbk_20250101_023000_diff", NULL, NULL));
    ZT_CHECK(!zh_backup_parse_name("chbk_2025010_1023000_full", NULL, NULL));
    ZT_CHECK(!zh_backup_parse_name("chbk_20250101_023000_full.part", NULL, NULL));
    ZT_CHECK(!zh_backup_parse_name("xhbk_20250101_023000_full", NULL, NULL));
}

static void test_row_text_across_versions(void) {
    const char *dec = "CREATE TABLE zakaz.t (`price` Decimal(18, 2), `_ver` UInt64) ENGINE = ReplacingMergeTree(_ver) ORDER BY _ver";
    const char *flt = "CREATE TABLE zakaz.t (`r` Nullable(Float64)) ENGINE = MergeTree ORDER BY tuple()";
    const char *str = "CREATE TABLE zakaz.t (`s` String, `d` DateTime('Europe/Moscow')) ENGINE = MergeTree ORDER BY s";
    /* 18.16 writes 1.50, 21.9 and later 1.5 */
    ZT_CHECK(!zh_backup_same_row_text("18.16.1", "24.8.4.13", dec));
    ZT_CHECK(!zh_backup_same_row_text("25.3.2.39", "18.16.1", flt));
    ZT_CHECK(!zh_backup_same_row_text("21.8.15.7", "21.9.2.17", dec));
    ZT_CHECK(zh_backup_same_row_text("18.16.1", "24.8.4.13", str));
    ZT_CHECK(zh_backup_same_row_text("23.8.1.1", "25.3.2.39", dec));
    ZT_CHECK(zh_backup_same_row_text("18.16.1", "18.16.1", dec));
    ZT_CHECK(zh_backup_same_row_text("19.17.4.11", "21.8.15.7", dec));
    ZT_CHECK(zh_backup_same_row_text(NULL, "24.8.4.13", dec));
    ZT_CHECK(zh_backup_same_row_text("", "24.8.4.13", dec));
    ZT_CHECK(zh_backup_same_row_text("18.16.1", NULL, dec));
}

int main(void) {
    ZT_RUN(test_json_reader);
    ZT_RUN(test_row_text_across_versions);
    ZT_RUN(test_rewrite_db);
    ZT_RUN(test_names);
    return ZT_DONE();
}
