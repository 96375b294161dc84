/* Unit tests for oauth2.c: PKCE, base64url, token.json expiry timestamps, and the
 * atomic 0600 cache write. */
#include "oauth2.h"
#include "l_text.h"
#include "zt.h"
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void atomic_write_replaces_with_0600(void) {
    char dir[] = "/tmp/zh_oauth2_test_XXXXXX";
    ZT_CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/token.json", dir);
    FILE *f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    chmod(path, 0644);
    struct stat before, after;
    stat(path, &before);
    char *err = NULL;
    ZT_EQ_INT(zh_oauth2_write_atomic(path, "{\"token\":\"new\"}", 15, &err), 0);
    ZT_CHECK(err == NULL);
    ZT_EQ_INT(stat(path, &after), 0);
    ZT_EQ_INT(after.st_mode & 0777, 0600);
    ZT_CHECK(after.st_ino != before.st_ino); /* a new file renamed over the old one */
    ZT_EQ_INT(after.st_size, 15);
    ZT_EQ_INT(count_entries(dir), 1);       /* no temp file left behind */
    f = fopen(path, "r");
    char buf[64] = {0};
    fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    ZT_EQ_STR(buf, "{\"token\":\"new\"}");

    char bad[160];
    snprintf(bad, sizeof bad, "%s/missing-dir/token.json", dir);
    ZT_EQ_INT(zh_oauth2_write_atomic(bad, "x", 1, &err), -1);
    ZT_CHECK(err && strstr(err, "missing-dir/token.json"));
    free(err);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    ZT_RUN(pkce_rfc7636_example);
    ZT_RUN(b64url_padding_and_alphabet);
    ZT_RUN(expiry_formats);
    ZT_RUN(atomic_write_replaces_with_0600);
    return ZT_DONE();
}
