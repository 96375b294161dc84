/* Unit tests for oauth2.c: PKCE, base64url and token.json expiry timestamps. (The atomic 0600
 * cache write is zh_write_atomic, tested in test_util.c.) */
#include "oauth2.h"
#include "l_text.h"
#include "zt.h"
#include <stdlib.h>

static void pkce_rfc7636_example(void) {
    /* RFC 7636 appendix B. */
    zh_buf b;
    zh_buf_init(&b);
    zh_oauth2_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", &b);
    ZT_EQ_STR(zh_buf_cstr(&b), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    zh_buf_free(&b);
}

static void b64url_padding_and_alphabet(void) {
    const unsigned char d[] = {0xfb, 0xff, 0xbf, 0x00, 0x10};
    const char *want[] = {"", "-w", "-_8", "-_-_", "-_-_AA", "-_-_ABA"};
    for (size_t n = 0; n <= 5; n++) {
        zh_buf b;
        zh_buf_init(&b);
        zh_text_b64_encode((const char *)d, n, 1, &b);
        ZT_EQ_STR(zh_buf_cstr(&b), want[n]);
        zh_buf_free(&b);
    }
}

static void expiry_formats(void) {
    double t = 0;
    ZT_CHECK(zh_oauth2_parse_expiry("2025-06-27T08:38:04.924450Z", &t));
    ZT_EQ_INT((long long)t, 1751013484);
    ZT_CHECK(t - 1751013484 > 0.92 && t - 1751013484 < 0.93);
    ZT_CHECK(zh_oauth2_parse_expiry("2025-06-27T08:38:04Z", &t));
    ZT_EQ_INT((long long)t, 1751013484);
    ZT_CHECK(zh_oauth2_parse_expiry("2025-06-27T08:38:04", &t)); /* older google-auth: no Z */
    ZT_EQ_INT((long long)t, 1751013484);
    ZT_CHECK(zh_oauth2_parse_expiry("2025-06-27T08:38:04+00:00", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry("2025-06-27 08:38:04", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry("2025-13-27T08:38:04Z", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry("2025-06-27T08:38:04.Z", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry("2025-06-27T08:38:04Zjunk", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry("", &t));
    ZT_CHECK(!zh_oauth2_parse_expiry(NULL, &t));
    char out[32];
    zh_oauth2_format_expiry(1751013484.9, out);
    ZT_EQ_STR(out, "2025-06-27T08:38:04Z");
}

int main(void) {
    ZT_RUN(pkce_rfc7636_example);
    ZT_RUN(b64url_padding_and_alphabet);
    ZT_RUN(expiry_formats);
    return ZT_DONE();
}
