/* Unit tests for l_mail.c: RFC 5322 messages, RFC 2047 headers, addresses. */
#include "l_mail.h"
#include "zt.h"
#include <stdlib.h>
#include <time.h>

static int b64val(char c) {
    const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(t, c);
    return c && p ? (int)(p - t) : -1;
}

/* Decodes base64 text (skipping CR, LF and spaces) into out. */
static void b64_decode(const char *s, size_t n, zh_buf *out) {
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int d = b64val(s[i]);
        if (d < 0) continue;
        v = v << 6 | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            zh_buf_addc(out, (char)(v >> bits & 0xff));
        }
    }
}

/* Decodes a header value made of =?UTF-8?B?...?= words separated by folding. */
static char *decode_words(const char *v) {
    zh_buf out;
    zh_buf_init(&out);
    const char *p = v;
    while ((p = strstr(p, "=?UTF-8?B?"))) {
        p += 10;
        const char *e = strstr(p, "?=");
        if (!e) break;
        b64_decode(p, (size_t)(e - p), &out);
        p = e + 2;
    }
    zh_buf_addc(&out, 0);
    return out.data;
}

static size_t longest_line(const char *s) {
    size_t best = 0, cur = 0;
    for (; *s; s++) {
        if (*s == '\n') cur = 0;
        else if (*s != '\r' && ++cur > best) best = cur;
    }
    return best;
}

/* The value of header name in msg (folded lines included), malloc'd. */
static char *header(const char *msg, const char *name) {
    size_t n = strlen(name);
    const char *p = msg;
    while (p && *p && !(p[0] == '\r' && p[1] == '\n')) {
        if (!strncmp(p, name, n) && p[n] == ':') {
            const char *v = p + n + 2, *e = v;
            while ((e = strstr(e, "\r\n")) && e[2] == ' ') e += 2;
            return zh_xstrndup(v, (size_t)(e - v));
        }
        p = strstr(p, "\r\n");
        if (p) p += 2;
    }
    return NULL;
}

static void ascii_subject_stays_plain(void) {
    zh_buf b;
    zh_buf_init(&b);
    zh_mail_encode_header(&b, "qtickets failed", 9);
    zh_buf_addc(&b, 0);
    ZT_EQ_STR(b.data, "qtickets failed");
    zh_buf_free(&b);
}

static void russian_subject_is_encoded_and_folded(void) {
    const char *s = "[zhost] ОШИБКА: qtickets — последний запуск завершился ошибкой, и тема длинная";
    zh_buf b;
    zh_buf_init(&b);
    zh_buf_adds(&b, "Subject: ");
    zh_mail_encode_header(&b, s, 9);
    zh_buf_addc(&b, 0);
    ZT_CHECK(strstr(b.data, "\r\n =?UTF-8?B?") != NULL); /* folded into several words */
    ZT_CHECK(longest_line(b.data) <= 78);
    char *d = decode_words(b.data);
    ZT_EQ_STR(d, s);
    free(d);
    zh_buf_free(&b);
}

static void header_line_breaks_cannot_inject(void) {
    zh_buf b;
    zh_buf_init(&b);
    zh_mail_encode_header(&b, "hi\r\nBcc: victim@example.com", 9);
    zh_buf_addc(&b, 0);
    ZT_CHECK(strstr(b.data, "\r\nBcc") == NULL);
    ZT_CHECK(strstr(b.data, "\n") == NULL);
    zh_buf_free(&b);
}

static void addresses(void) {
    char *a = zh_mail_address("Алерты zhost <alerts@zakaz.example>");
    ZT_EQ_STR(a, "alerts@zakaz.example");
    free(a);
    a = zh_mail_address("  ops@zakaz.example ");
    ZT_EQ_STR(a, "ops@zakaz.example");
    free(a);
    ZT_CHECK(zh_mail_address("not an address") == NULL);
    ZT_CHECK(zh_mail_address("a@b\r\nRCPT TO:<x@y.z>") == NULL);
    ZT_CHECK(zh_mail_address("<@example.com>") == NULL);
    ZT_CHECK(zh_mail_address("user@") == NULL);
    ZT_CHECK(zh_mail_address(NULL) == NULL);
}

static void whole_message_utf8(void) {
    setenv("TZ", "UTC", 1);
    tzset();
    const char *to[] = {"ops@zakaz.example", "Boss <boss@zakaz.example>"};
    const char *text = "Задача: qtickets\n.точка в начале\nzhost logs qtickets\n";
    zh_mail_msg m = {.from = "Алерты <alerts@zakaz.example>", .to = to, .n_to = 2, .subject = "Алерт: qtickets",
                     .text = text, .text_len = strlen(text), .date = 1767225600, .message_id = "x1@zakaz.example"};
    zh_buf b;
    zh_buf_init(&b);
    ZT_CHECK(zh_mail_build(&m, &b) == NULL);
    zh_buf_addc(&b, 0);
    char *h = header(b.data, "Date");
    ZT_EQ_STR(h, "Thu, 01 Jan 2026 00:00:00 +0000");
    free(h);
    h = header(b.data, "Message-ID");
    ZT_EQ_STR(h, "<x1@zakaz.example>");
    free(h);
    h = header(b.data, "To");
    ZT_EQ_STR(h, "<ops@zakaz.example>, <boss@zakaz.example>");
    free(h);
    h = header(b.data, "From");
    ZT_CHECK(h && strstr(h, "=?UTF-8?B?") == h && strstr(h, " <alerts@zakaz.example>"));
    char *d = decode_words(h);
    ZT_EQ_STR(d, "Алерты");
    free(d);
    free(h);
    h = header(b.data, "MIME-Version");
    ZT_EQ_STR(h, "1.0");
    free(h);
    h = header(b.data, "Content-Type");
    ZT_EQ_STR(h, "text/plain; charset=utf-8");
    free(h);
    h = header(b.data, "Content-Transfer-Encoding");
    ZT_EQ_STR(h, "base64");
    free(h);
    const char *body = strstr(b.data, "\r\n\r\n") + 4;
    ZT_CHECK(longest_line(body) <= 76);
    zh_buf dec;
    zh_buf_init(&dec);
    b64_decode(body, strlen(body), &dec);
    zh_buf_addc(&dec, 0);
    ZT_EQ_STR(dec.data, "Задача: qtickets\r\n.точка в начале\r\nzhost logs qtickets\r\n");
    zh_buf_free(&dec);
    zh_buf_free(&b);
}

static void ascii_body_is_7bit_with_crlf(void) {
    const char *to[] = {"ops@zakaz.example"};
    const char *text = "line one\nline two";
    zh_mail_msg m = {.from = "alerts@zakaz.example", .to = to, .n_to = 1, .subject = "s", .text = text,
                     .text_len = strlen(text), .date = 0};
    zh_buf b;
    zh_buf_init(&b);
    ZT_CHECK(zh_mail_build(&m, &b) == NULL);
    zh_buf_addc(&b, 0);
    ZT_CHECK(strstr(b.data, "Content-Transfer-Encoding: 7bit\r\n\r\nline one\r\nline two\r\n") != NULL);
    char *h = header(b.data, "Message-ID");
    ZT_CHECK(h && h[0] == '<' && strstr(h, "@zakaz.example>"));
    free(h);
    zh_buf_free(&b);
}

static void long_recipient_lists_fold(void) {
    const char *to[12];
    char bufs[12][64];
    for (int i = 0; i < 12; i++) {
        snprintf(bufs[i], sizeof bufs[i], "recipient-number-%02d@zakaz.example", i);
        to[i] = bufs[i];
    }
    zh_mail_msg m = {.from = "a@zakaz.example", .to = to, .n_to = 12, .subject = "s", .text = "t", .text_len = 1};
    zh_buf b;
    zh_buf_init(&b);
    ZT_CHECK(zh_mail_build(&m, &b) == NULL);
    zh_buf_addc(&b, 0);
    ZT_CHECK(longest_line(b.data) <= 78);
    char *h = header(b.data, "To");
    ZT_CHECK(h && strstr(h, "recipient-number-11@zakaz.example"));
    free(h);
    zh_buf_free(&b);
}

static void bad_input_is_reported(void) {
    const char *to[] = {"ops@zakaz.example"};
    const char *bad[] = {"nope"};
    zh_buf b;
    zh_buf_init(&b);
    zh_mail_msg m = {.from = "x", .to = to, .n_to = 1, .subject = "s", .text = "t", .text_len = 1};
    ZT_CHECK(zh_mail_build(&m, &b) != NULL);
    m.from = "a@zakaz.example";
    m.to = bad;
    ZT_CHECK(zh_mail_build(&m, &b) != NULL);
    m.n_to = 0;
    ZT_CHECK(zh_mail_build(&m, &b) != NULL);
    ZT_EQ_INT(b.len, 0);
    zh_buf_free(&b);
}

int main(void) {
    ZT_RUN(ascii_subject_stays_plain);
    ZT_RUN(russian_subject_is_encoded_and_folded);
    ZT_RUN(header_line_breaks_cannot_inject);
    ZT_RUN(addresses);
    ZT_RUN(whole_message_utf8);
    ZT_RUN(ascii_body_is_7bit_with_crlf);
    ZT_RUN(long_recipient_lists_fold);
    ZT_RUN(bad_input_is_reported);
    return ZT_DONE();
}
