/* test_clickhouse.c — what zhost reads from ClickHouse's HTTP answers, as 18.16 and current
 * releases (23.x-25.x) write them: error bodies and the exception-code header, and DESCRIBE TABLE
 * answers (extra columns and current type names). See docs/clickhouse-compat.md. */
#include "ch_internal.h"
#include "zt.h"
#include <stdlib.h>

/* clickhouse.o pulls spool.o, whose command uses zh_opt_value from main.c (not in the library). */
__attribute__((weak)) const char *zh_opt_value(int argc, char **argv, int *i, const char *name) {
    (void)argc, (void)argv, (void)i, (void)name;
    return NULL;
}

static void check_error(long status, const char *body, const char *hdr, int want_code, const char *want) {
    int code = -1;
    char *msg = ch_error_message(status, body, body ? strlen(body) : 0, hdr, &code);
    ZT_EQ_INT(code, want_code);
    ZT_EQ_STR(msg, want);
    free(msg);
}

static void test_error_bodies(void) {
    /* 18.16 */
    check_error(404, "Code: 60, e.displayText() = DB::Exception: Table default.nosuch doesn't exist., e.what() = DB::Exception\n",
                NULL, 60, "ClickHouse error 60: Table default.nosuch doesn't exist.");
    check_error(500, "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: \"1.5\"}: (at row 1)\n"
                     ", e.what() = DB::Exception\n",
                NULL, 27, "ClickHouse error 27: Cannot parse input: expected , before: \"1.5\"}: (at row 1)");
    /* 19.x-21.x */
    check_error(404, "Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist. (version 19.11.4.24 (official build))\n",
                NULL, 60, "ClickHouse error 60: Table default.x doesn't exist.");
    /* current, with the header */
    check_error(404, "Code: 60. DB::Exception: Table zakaz.nosuch does not exist. (UNKNOWN_TABLE) (version 24.8.4.13 (official build))\n",
                "60", 60, "ClickHouse error 60: Table zakaz.nosuch does not exist. (UNKNOWN_TABLE)");
    /* current, a JSON output format: the exception inside the format (http_write_exception_in_output_format) */
    check_error(500,
                "{\n\t\"meta\":\n\t[\n\t\t{\n\t\t\t\"name\": \"throwIf(1)\",\n\t\t\t\"type\": \"UInt8\"\n\t\t}\n\t],\n\n"
                "\t\"data\":\n\t[\n\n\t],\n\n\t\"rows\": 0,\n\n"
                "\t\"exception\": \"Code: 395. DB::Exception: Value passed to 'throwIf' function is non-zero: while executing "
                "'FUNCTION throwIf(1 :: 0) -> throwIf(1) UInt8 : 1'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version 24.3.1.1)\"\n}\n",
                "395", 395,
                "ClickHouse error 395: Value passed to 'throwIf' function is non-zero: while executing "
                "'FUNCTION throwIf(1 :: 0) -> throwIf(1) UInt8 : 1'. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)");
    /* the same without the header (a proxy that drops it); an escaped quote and slash in the text */
    check_error(500, "{\"exception\": \"Code: 62. DB::Exception: Syntax error near \\\"x\\\" in \\/tmp. (SYNTAX_ERROR)\"}\n", NULL,
                62, "ClickHouse error 62: Syntax error near \"x\" in /tmp. (SYNTAX_ERROR)");
    /* 23.9-24.2 with wait_end_of_query=1 and a JSON format: an empty body, the code only in the header */
    check_error(500, "", "395", 395, "ClickHouse error 395 (HTTP 500, no message)");
    /* not ClickHouse's answer: no code, so a 5xx stays retryable */
    check_error(502, "<html>Bad gateway. Error code: 502</html>", NULL, 0,
                "ClickHouse HTTP 502: <html>Bad gateway. Error code: 502</html>");
    check_error(503, NULL, NULL, 0, "ClickHouse HTTP 503");
}

static void test_describe(void) {
    /* 18.16: name, type, default_type, default_expression */
    const char *old = "job\tString\t\t\t\nstarted_at\tDateTime(\\'Europe/Moscow\\')\t\t\t\n"
                      "_loaded_at\tDateTime\tMATERIALIZED\tnow()\t\n";
    ch_schema *s = ch_schema_parse("zakaz.t", old, strlen(old));
    ZT_EQ_INT(s->ncols, 3);
    ZT_EQ_STR(s->cols[1].type, "DateTime('Europe/Moscow')");
    ZT_CHECK(s->cols[2].materialized);
    ch_schema_free(s);
    /* current: + comment, codec_expression, ttl_expression, and types 18.16 never prints */
    const char *cur = "id\tUInt64\t\t\t\t\t\n"
                      "name\tLowCardinality(Nullable(String))\t\t\tshown name\t\t\n"
                      "price\tNullable(Decimal(18, 2))\t\t\t\tCODEC(ZSTD(1))\t\n"
                      "ts\tDateTime64(3, \\'Europe/Moscow\\')\t\t\t\t\t\n"
                      "day\tDate32\t\t\t\t\t\n"
                      "ok\tBool\tDEFAULT\ttrue\t\t\t\n"
                      "tags\tArray(LowCardinality(String))\t\t\t\t\t\n"
                      "created\tDateTime\tDEFAULT\tnow()\t\t\tcreated + toIntervalDay(30)\n"
                      "_loaded_at\tDateTime\tMATERIALIZED\tnow()\tset by the server\t\t\n"
                      "alias_col\tString\tALIAS\tname\t\t\t\n"
                      "eph\tUInt8\tEPHEMERAL\t\t\t\t\n";
    s = ch_schema_parse("zakaz.t", cur, strlen(cur));
    ZT_EQ_INT(s->ncols, 11);
    ZT_CHECK(s->cols[0].kind == CH_INT && s->cols[0].is_unsigned);
    ZT_CHECK(s->cols[1].kind == CH_STRING && s->cols[1].nullable);
    ZT_CHECK(s->cols[2].kind == CH_DECIMAL && s->cols[2].nullable);
    ZT_CHECK(!s->cols[2].materialized && s->cols[2].default_expr == NULL); /* a codec is no default */
    ZT_CHECK(s->cols[3].kind == CH_DATETIME);
    ZT_CHECK(s->cols[4].kind == CH_DATE);
    ZT_CHECK(s->cols[5].kind == CH_BOOL);
    ZT_CHECK(s->cols[6].kind == CH_ARRAY && s->cols[6].elem_kind == CH_STRING);
    ZT_EQ_STR(s->cols[7].default_expr, "now()"); /* not the TTL after it */
    ZT_CHECK(s->cols[8].materialized && s->cols[9].materialized);
    ZT_CHECK(!s->cols[10].materialized);
    ch_schema_free(s);
}

/* ch.query returns the raw body when the SQL ends with its own FORMAT clause, else rows (it adds
 * FORMAT TabSeparatedWithNamesAndTypes after the statement's last token). */
static void test_own_format(void) {
    struct { const char *sql; bool own; const char *stmt; } cases[] = {
        {"SELECT 1 FORMAT CSV", true, "SELECT 1 FORMAT CSV"},
        {"select 1 format JSONEachRow;\n", true, "select 1 format JSONEachRow"},
        {"SELECT 1\nFORMAT\tCSV", true, "SELECT 1\nFORMAT\tCSV"},
        {"SELECT 1 FORMAT CSV -- a note", true, "SELECT 1 FORMAT CSV"},
        {"SELECT 1 FORMAT CSV /* a note */ ; ", true, "SELECT 1 FORMAT CSV"},
        {"SELECT 1 FORMAT `TSV`", true, "SELECT 1 FORMAT `TSV`"},
        /* FORMAT in a comment or a string literal is not the query's */
        {"SELECT 1 -- FORMAT CSV", false, "SELECT 1"},
        {"SELECT 1 -- FORMAT CSV\n", false, "SELECT 1"},
        {"SELECT 1 # FORMAT CSV", false, "SELECT 1"},
        {"SELECT 1 /* FORMAT CSV */", false, "SELECT 1"},
        {"SELECT 1 /* /* nested */ FORMAT CSV */", false, "SELECT 1"},
        {"SELECT 'use FORMAT CSV'", false, "SELECT 'use FORMAT CSV'"},
        {"SELECT 'it\\'s FORMAT CSV'", false, "SELECT 'it\\'s FORMAT CSV'"},
        {"SELECT 'it''s FORMAT CSV'", false, "SELECT 'it''s FORMAT CSV'"},
        {"SELECT \"FORMAT CSV\" FROM t", false, "SELECT \"FORMAT CSV\" FROM t"},
        {"SELECT x FROM t WHERE s = 'FORMAT CSV'", false, "SELECT x FROM t WHERE s = 'FORMAT CSV'"},
        {"SELECT 1 AS format", false, "SELECT 1 AS format"},
        {"SELECT t.format CSV", false, "SELECT t.format CSV"},
        {"SELECT reformat CSV", false, "SELECT reformat CSV"},
        {"SELECT format('{}', 'x')", false, "SELECT format('{}', 'x')"},
        /* our clause goes before a trailing ';' (two statements otherwise) */
        {"SELECT 1;", false, "SELECT 1"},
        {"SELECT 1 ; -- done\n", false, "SELECT 1"},
        /* unterminated: left whole, for ClickHouse to report */
        {"SELECT 'FORMAT CSV", false, "SELECT 'FORMAT CSV"},
        {"SELECT 1 /* FORMAT CSV", false, "SELECT 1 /* FORMAT CSV"},
        {"", false, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t end = 12345;
        bool own = zh_ch_sql_own_format(cases[i].sql, &end);
        if (own != cases[i].own) fprintf(stderr, "  own_format(\"%s\") = %d\n", cases[i].sql, own);
        ZT_CHECK(own == cases[i].own);
        ZT_CHECK(end == strlen(cases[i].stmt) && !strncmp(cases[i].sql, cases[i].stmt, end));
    }
}

int main(void) {
    ZT_RUN(test_error_bodies);
    ZT_RUN(test_describe);
    ZT_RUN(test_own_format);
    return ZT_DONE();
}
