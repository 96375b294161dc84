/* Unit tests for l_text.c: base64/base64url, URL encoding, UTF-8, lower-casing, trimming, iconv,
 * exact decimals, CSV parsing and separator detection. */
#include "l_text.h"
#include "zt.h"
#include <stdlib.h>

static zh_buf b;

static const char *enc(const char *s, size_t n, int url) {
    zh_buf_free(&b);
    zh_text_b64_encode(s, n, url, &b);
    return zh_buf_cstr(&b);
}

static const char *dec(const char *s, int url) {
    zh_buf_free(&b);
    size_t bad = 0;
    if (zh_text_b64_decode(s, strlen(s), url, &b, &bad) != 0) return NULL;
    return zh_buf_cstr(&b);
}

static void base64(void) {
    /* RFC 4648 test vectors */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        ZT_EQ_STR(enc(plain[i], strlen(plain[i]), 0), coded[i]);
        ZT_EQ_STR(dec(coded[i], 0), plain[i]);
    }
    ZT_EQ_STR(enc("fo", 2, 1), "Zm8");
    ZT_EQ_STR(dec("Zm8", 1), "fo");      /* url: padding optional */
    ZT_EQ_STR(dec("Zm8=", 1), "fo");
    ZT_EQ_STR(dec("Zm9v\r\nYmFy", 0), "foobar"); /* MIME line breaks */
    const char bin[] = {(char)0xfb, (char)0xff, (char)0xfe};
    ZT_EQ_STR(enc(bin, 3, 0), "+//+");
    ZT_EQ_STR(enc(bin, 3, 1), "-__-");
    ZT_CHECK(dec("-__-", 1) && !memcmp(b.data, bin, 3) && b.len == 3);
    ZT_CHECK(dec("-__-", 0) == NULL); /* url alphabet in standard decoding */
    ZT_CHECK(dec("+//+", 1) == NULL);
    ZT_CHECK(dec("Zm9vY", 0) == NULL); /* 6 leftover bits */
    ZT_CHECK(dec("Zm=8", 0) == NULL);  /* data after padding */
    ZT_CHECK(dec("Z===", 0) == NULL);
    ZT_CHECK(dec("Zm9v!", 0) == NULL);
    size_t bad = 0;
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_b64_decode("Zm9v*mFy", 8, 0, &b, &bad), -1);
    ZT_EQ_INT(bad, 4);
    /* every length round-trips in both alphabets */
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    for (size_t n = 0; n <= 256; n += 17) {
        for (int url = 0; url < 2; url++) {
            char *e = zh_xstrdup(enc(all, n, url));
            const char *d = dec(e, url);
            ZT_CHECK(d && b.len == n && !memcmp(b.data ? b.data : "", all, n));
            free(e);
        }
    }
}

static const char *run1(void (*fn)(const char *, size_t, zh_buf *), const char *s) {
    zh_buf_free(&b);
    fn(s, strlen(s), &b);
    return zh_buf_cstr(&b);
}

static void urls(void) {
    ZT_EQ_STR(run1(zh_text_url_encode, "a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    ZT_EQ_STR(run1(zh_text_url_decode, "%D0%B2%D0%BA+cpc"), "вк cpc");
    ZT_EQ_STR(run1(zh_text_url_decode, "100%25"), "100%");
    ZT_EQ_STR(run1(zh_text_url_decode, "bad%zz%4"), "bad%zz%4"); /* not an escape: kept */
    ZT_EQ_STR(run1(zh_text_url_decode, "%"), "%");
    ZT_EQ_STR(run1(zh_text_url_decode, ""), "");
    char *e = zh_xstrdup(run1(zh_text_url_encode, "Скидка 10% !"));
    ZT_EQ_STR(run1(zh_text_url_decode, e), "Скидка 10% !");
    free(e);
}

static void utf8_lower_trim(void) {
    ZT_CHECK(zh_text_is_utf8("", 0));
    ZT_CHECK(zh_text_is_utf8("Привет, мир €𝄞", strlen("Привет, мир €𝄞")));
    ZT_CHECK(!zh_text_is_utf8("\xcf\xf0\xe8", 3));           /* CP1251 "При" */
    ZT_CHECK(!zh_text_is_utf8("\xc0\xaf", 2));               /* overlong '/' */
    ZT_CHECK(!zh_text_is_utf8("\xed\xa0\x80", 3));           /* surrogate */
    ZT_CHECK(!zh_text_is_utf8("\xf4\x90\x80\x80", 4));       /* above U+10FFFF */
    ZT_CHECK(!zh_text_is_utf8("\xd0", 1));                   /* truncated */
    ZT_EQ_STR(run1(zh_text_lower, "ДАТА Мероприятия ЁЖ Їжак ÀÉ × QWE"), "дата мероприятия ёж їжак àé × qwe");
    ZT_EQ_STR(run1(zh_text_lower, "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"), "абвгдежзийклмнопрстуфхцчшщъыьэюя");
    ZT_EQ_STR(run1(zh_text_lower, "\xd0"), "\xd0"); /* broken UTF-8 passes through */
    const char *s = "\xEF\xBB\xBF \t\xC2\xA0 x y\xE2\x80\xAF\r\n";
    size_t n = strlen(s);
    zh_text_trim(&s, &n);
    ZT_EQ_INT(n, 3);
    ZT_CHECK(!memcmp(s, "x y", 3));
    s = " \xC2\xA0 ";
    n = strlen(s);
    zh_text_trim(&s, &n);
    ZT_EQ_INT(n, 0);
}

static void iconv_cp1251(void) {
    char err[200];
    const char *utf = "Дата;Сумма;Ёлка";
    zh_buf cp;
    zh_buf_init(&cp);
    ZT_EQ_INT(zh_text_iconv(utf, strlen(utf), "UTF-8", "CP1251", &cp, err, sizeof err), 0);
    ZT_EQ_INT(cp.len, 15); /* one byte per letter */
    ZT_CHECK(!memcmp(cp.data, "\xc4\xe0\xf2\xe0;", 5));
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_iconv(cp.data, cp.len, "CP1251", "UTF-8", &b, err, sizeof err), 0);
    ZT_EQ_STR(zh_buf_cstr(&b), utf);
    zh_buf_free(&cp);
    /* large input crosses the output-growing path */
    zh_buf big;
    zh_buf_init(&big);
    for (int i = 0; i < 5000; i++) zh_buf_add(&big, "\xcf\xf0\xe8\xe2\xe5\xf2 ", 7);
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_iconv(big.data, big.len, "CP1251", "UTF-8", &b, err, sizeof err), 0);
    ZT_EQ_INT(b.len, 5000 * 13);
    ZT_CHECK(!memcmp(b.data, "Привет ", 13));
    zh_buf_free(&big);
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_iconv("\xff\xfe", 2, "UTF-8", "CP1251", &b, err, sizeof err), -1);
    ZT_CHECK(strstr(err, "at byte 0"));
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_iconv("x", 1, "NO-SUCH-CHARSET", "UTF-8", &b, err, sizeof err), -1);
    ZT_CHECK(strstr(err, "unsupported conversion"));
    zh_buf_free(&b);
    ZT_EQ_INT(zh_text_iconv("", 0, "CP1251", "UTF-8", &b, err, sizeof err), 0);
    ZT_EQ_INT(b.len, 0);
}

static const char *decimal(const char *s) {
    zh_buf_free(&b);
    if (zh_text_decimal(s, strlen(s), &b) != 0) return NULL;
    return zh_buf_cstr(&b);
}

static void decimals(void) {
    ZT_EQ_STR(decimal("1 234,50"), "1234.50");
    ZT_EQ_STR(decimal("1234.5"), "1234.5");
    ZT_EQ_STR(decimal("1 234"), "1234");
    ZT_EQ_STR(decimal("1\xC2\xA0" "234\xC2\xA0" "567,89"), "1234567.89"); /* NBSP */
    ZT_EQ_STR(decimal("12\xE2\x80\xAF" "345"), "12345");                   /* narrow NBSP */
    ZT_EQ_STR(decimal("-12,00"), "-12.00");
    ZT_EQ_STR(decimal("+5"), "5");
    ZT_EQ_STR(decimal("\xE2\x88\x92" "7.5"), "-7.5"); /* U+2212 minus */
    ZT_EQ_STR(decimal("  007 "), "7");
    ZT_EQ_STR(decimal("0"), "0");
    ZT_EQ_STR(decimal("-0,00"), "0.00");
    ZT_EQ_STR(decimal(",5"), "0.5");
    ZT_EQ_STR(decimal("99999999999999999999.99"), "99999999999999999999.99"); /* beyond any double */
    ZT_EQ_STR(decimal("0.10000000000000000001"), "0.10000000000000000001");
    const char *bad[] = {"", " ", "-", "abc", "1,234.50", "1.2.3", "12,", "1e5", "12 руб", "1  234", " 1 234 ,5",
                         "--1", "1,2 3", "0x10", "nan", NULL};
    for (int i = 0; bad[i]; i++) {
        const char *r = decimal(bad[i]);
        if (r) fprintf(stderr, "decimal('%s') gave '%s'\n", bad[i], r);
        ZT_CHECK(r == NULL);
    }
}

typedef struct {
    char out[2048];
    int rows;
    int stop_after;
} collect;

static int c_field(void *ud, const char *s, size_t n) {
    collect *c = ud;
    size_t l = strlen(c->out);
    snprintf(c->out + l, sizeof c->out - l, "[%.*s]", (int)n, s);
    return 0;
}

static int c_row(void *ud) {
    collect *c = ud;
    size_t l = strlen(c->out);
    snprintf(c->out + l, sizeof c->out - l, "\n");
    return ++c->rows == c->stop_after;
}

static const char *csv(const char *s, char sep, char *err) {
    static collect c;
    memset(&c, 0, sizeof c);
    zh_text_csv_cb cb = {c_field, c_row, &c};
    zh_buf scratch;
    zh_buf_init(&scratch);
    int rc = zh_text_csv_parse(s, strlen(s), sep, &scratch, &cb, err, 200);
    zh_buf_free(&scratch);
    return rc == 0 ? c.out : NULL;
}

static void csv_edges(void) {
    char err[200] = "";
    ZT_EQ_STR(csv("a,b\n1,2\n", ',', err), "[a][b]\n[1][2]\n");
    ZT_EQ_STR(csv("a,b\r\n1,2", ',', err), "[a][b]\n[1][2]\n");               /* CRLF, no final newline */
    ZT_EQ_STR(csv("\xEF\xBB\xBF" "a;b\n", ';', err), "[a][b]\n");             /* BOM */
    ZT_EQ_STR(csv("\"x;y\";\"say \"\"hi\"\"\";\"\"\n", ';', err), "[x;y][say \"hi\"][]\n");
    ZT_EQ_STR(csv("\"multi\r\nline\";2\n3;4\n", ';', err), "[multi\r\nline][2]\n[3][4]\n");
    ZT_EQ_STR(csv("a,b\n\n\r\n1,2\n\n", ',', err), "[a][b]\n[1][2]\n");       /* empty lines skipped */
    ZT_EQ_STR(csv("a,,\n,\n", ',', err), "[a][][]\n[][]\n");                   /* empty fields kept */
    ZT_EQ_STR(csv("a,b,", ',', err), "[a][b][]\n");
    ZT_EQ_STR(csv("\"q\" ,x\n", ',', err), "[q][x]\n");                       /* space after closing quote */
    ZT_EQ_STR(csv("ab\"c,d\n", ',', err), "[ab\"c][d]\n");                     /* stray quote inside a field */
    ZT_EQ_STR(csv("a\tb\n", '\t', err), "[a][b]\n");
    ZT_EQ_STR(csv("", ',', err), "");
    ZT_CHECK(csv("a,b\n1,\"open\nstill\n", ',', err) == NULL);
    ZT_EQ_STR(err, "line 2: unterminated quoted field");
    ZT_CHECK(csv("a\n\n\"x\"y,1\n", ',', err) == NULL);
    ZT_EQ_STR(err, "line 3: unexpected character after a closing quote");
    ZT_CHECK(csv("\"a\nb\"\n\"c", ',', err) == NULL);
    ZT_EQ_STR(err, "line 3: unterminated quoted field"); /* lines inside quotes are counted */
    /* a callback can stop the parse */
    collect c;
    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    zh_text_csv_cb cb = {c_field, c_row, &c};
    zh_buf scratch;
    zh_buf_init(&scratch);
    ZT_EQ_INT(zh_text_csv_parse("a\nb\n", 4, ',', &scratch, &cb, err, sizeof err), 1);
    ZT_EQ_INT(c.rows, 1);
    zh_buf_free(&scratch);
}

static void csv_detect(void) {
    ZT_EQ_INT(zh_text_csv_detect("a;b;c\n1,5;2,5;3\n", 17), ';');
    ZT_EQ_INT(zh_text_csv_detect("a,b,c\n", 6), ',');
    ZT_EQ_INT(zh_text_csv_detect("a\tb\tc\n", 6), '\t');
    ZT_EQ_INT(zh_text_csv_detect("\"a,b,c\";d\n", 10), ';'); /* commas inside quotes don't count */
    ZT_EQ_INT(zh_text_csv_detect("single\n", 7), ',');
    ZT_EQ_INT(zh_text_csv_detect("", 0), ',');
    const char *s = "\xEF\xBB\xBF\xD0\x98\xD0\xBC\xD1\x8F;\xD0\xA1\xD1\x83\xD0\xBC\xD0\xBC\xD0\xB0\n";
    ZT_EQ_INT(zh_text_csv_detect(s, strlen(s)), ';');
}

int main(void) {
    zh_buf_init(&b);
    ZT_RUN(base64);
    ZT_RUN(urls);
    ZT_RUN(utf8_lower_trim);
    ZT_RUN(iconv_cp1251);
    ZT_RUN(decimals);
    ZT_RUN(csv_edges);
    ZT_RUN(csv_detect);
    zh_buf_free(&b);
    return ZT_DONE();
}
