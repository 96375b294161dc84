/* hash.c — owns the host's message digests: SHA-256 and MD5 through libcrypto's EVP API (see
 * hash.h). libcrypto fails here only when it cannot allocate, which we treat like any other
 * out-of-memory: the process stops. */
#include "hash.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

static void crypto_failed(void) {
    fputs("zhost: libcrypto digest failed (out of memory?)\n", stderr);
    abort();
}

static const EVP_MD *md_of(zh_hash_kind kind) { return kind == ZH_HASH_MD5 ? EVP_md5() : EVP_sha256(); }

void zh_hash_init(zh_hash *h, zh_hash_kind kind) {
    if (!h->ctx && !(h->ctx = EVP_MD_CTX_new())) crypto_failed();
    if (!EVP_DigestInit_ex(h->ctx, md_of(kind), NULL)) crypto_failed();
}

void zh_hash_update(zh_hash *h, const void *p, size_t n) {
    if (n && !EVP_DigestUpdate(h->ctx, p, n)) crypto_failed();
}

static void to_hex(const unsigned char *d, unsigned n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}

void zh_hash_hex(zh_hash *h, char *out) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_DigestFinal_ex(h->ctx, d, &n)) crypto_failed();
    zh_hash_free(h);
    to_hex(d, n, out);
}

void zh_hash_free(zh_hash *h) {
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
}

void zh_hash_bytes(zh_hash_kind kind, const void *p, size_t n, unsigned char *out) {
    if (!EVP_Digest(p, n, out, NULL, md_of(kind), NULL)) crypto_failed();
}

void zh_hash_hex_of(zh_hash_kind kind, const void *p, size_t n, char *out) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!EVP_Digest(p, n, d, &len, md_of(kind), NULL)) crypto_failed();
    to_hex(d, len, out);
}
