/* hash.h — message digests (SHA-256, MD5) over libcrypto's EVP API, for backups' file checksums,
 * PKCE challenges and the Lua `text.md5`/`text.sha256`. One implementation for the whole host. */
#ifndef ZH_HASH_H
#define ZH_HASH_H

#include <stddef.h>

typedef enum { ZH_HASH_SHA256, ZH_HASH_MD5 } zh_hash_kind;

/* Digest sizes in bytes; hex output needs twice that plus a NUL. */
#define ZH_SHA256_LEN 32
#define ZH_MD5_LEN 16

/* An incremental digest. The context lives in libcrypto's heap (EVP_MD_CTX is opaque), so a
 * started digest is owned by its holder until zh_hash_hex finishes it or zh_hash_free drops it.
 * Zero-initialise (or zh_hash_free) before the first zh_hash_init. */
typedef struct zh_hash {
    void *ctx; /* EVP_MD_CTX *, or NULL when not started */
} zh_hash;

/* Starts a digest, or starts it over when one is in progress (the context is reused). */
void zh_hash_init(zh_hash *h, zh_hash_kind kind);
void zh_hash_update(zh_hash *h, const void *p, size_t n);
/* Finishes: writes the digest as lowercase hex and a NUL (65 bytes for SHA-256, 33 for MD5) and
 * releases the context. */
void zh_hash_hex(zh_hash *h, char *out);
/* Releases a digest that will not be finished. Idempotent. */
void zh_hash_free(zh_hash *h);

/* One-shot digests: raw bytes (out holds ZH_SHA256_LEN/ZH_MD5_LEN) or hex. */
void zh_hash_bytes(zh_hash_kind kind, const void *p, size_t n, unsigned char *out);
void zh_hash_hex_of(zh_hash_kind kind, const void *p, size_t n, char *out);

#endif
