/* l_text.h — pure text functions behind the Lua `text` module (l_text.c): base64, URL encoding,
 * UTF-8 checks and lower-casing, iconv, CSV, exact decimals. None of them call Lua; output goes to
 * a caller-owned zh_buf. Exposed for the unit tests. */
#ifndef ZH_L_TEXT_H
#define ZH_L_TEXT_H

#include "zh.h"
#include <stdbool.h>
#include <stddef.h>

/* Standard alphabet with padding, or (url) the -_ alphabet without padding. */
void zh_text_b64_encode(const char *in, size_t n, int url, zh_buf *out);
/* Whitespace is skipped and padding is optional. Returns 0, or -1 with the offending byte's
 * offset in *bad. */
int zh_text_b64_decode(const char *in, size_t n, int url, zh_buf *out, size_t *bad);

/* Unreserved bytes (A-Z a-z 0-9 - . _ ~) stay, everything else becomes %XX. */
void zh_text_url_encode(const char *s, size_t n, zh_buf *out);
/* %XX becomes the byte, `+` a space; a `%` not followed by two hex digits stays as it is. */
void zh_text_url_decode(const char *s, size_t n, zh_buf *out);

int zh_text_is_utf8(const char *s, size_t n);
/* ASCII, Latin-1 and Cyrillic letters in UTF-8 to lower case; other bytes unchanged. */
void zh_text_lower(const char *s, size_t n, zh_buf *out);
/* Span of s without leading/trailing ASCII whitespace, NBSP, narrow/thin spaces and BOM. */
void zh_text_trim(const char **s, size_t *n);

/* Converts with iconv(3). Returns 0, or -1 with a message in err. */
int zh_text_iconv(const char *s, size_t n, const char *from, const char *to, zh_buf *out, char *err, size_t errlen);

/* Exact decimal: "1 234,50" -> "1234.50", "-12,00" -> "-12.00", "007" -> "7". Returns 0 or -1. */
int zh_text_decimal(const char *s, size_t n, zh_buf *out);

/* The longest decimal text (digits, sign, point) text.decimal accepts. */
#define ZH_TEXT_DECIMAL_MAX 96
/* Rounds the plain decimal d (zh_text_decimal's output) to exactly `scale` fraction digits, half
 * away from zero, into out (at least dn + scale + 48 bytes). Returns whether non-zero digits were
 * dropped. */
bool zh_text_decimal_rescale(const char *d, size_t dn, int scale, char *out, size_t *outn);
/* The plain decimal text of a number (an integer i when is_int, else the double x) into num (64
 * bytes): integers exactly, doubles as the shortest text that reads back as the same double.
 * Returns the length, -1 for NaN and infinities, -2 when the plain text would not fit in 63 bytes
 * (1e300). */
int zh_text_number(bool is_int, long long i, double x, char *num);

/* The separator of a CSV text, guessed from its first line outside quotes: ';', '\t' or ','. */
char zh_text_csv_detect(const char *s, size_t n);

typedef struct zh_text_csv_cb {
    /* Called for each field of a record (unquoted, doubled quotes undone), then end_row. Return
     * nonzero to stop. */
    int (*field)(void *ud, const char *s, size_t n);
    int (*end_row)(void *ud);
    void *ud;
} zh_text_csv_cb;

/* RFC 4180 CSV: quoted fields may hold separators, doubled quotes and newlines; CR LF or LF line
 * ends; a UTF-8 BOM is skipped; empty lines are skipped. scratch holds unescaped fields (the caller
 * owns it). Returns 0; -1 with "line N: ..." in err on malformed input; 1 if a callback stopped. */
int zh_text_csv_parse(const char *s, size_t n, char sep, zh_buf *scratch, const zh_text_csv_cb *cb, char *err,
                      size_t errlen);

#endif
