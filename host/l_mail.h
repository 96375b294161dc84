/* l_mail.h — building RFC 5322 messages (exposed for the unit tests) and the Lua `mail` module. */
#ifndef ZH_L_MAIL_H
#define ZH_L_MAIL_H

#include "zh.h"

typedef struct zh_mail_msg {
    const char *from;          /* "addr" or "Display Name <addr>" */
    const char *const *to;     /* addresses, n_to of them */
    size_t n_to;
    const char *subject;       /* UTF-8; line breaks become spaces */
    const char *text;          /* UTF-8 plain-text body; any line-break style */
    size_t text_len;
    double date;               /* epoch seconds for the Date header */
    const char *message_id;    /* without angle brackets; NULL = generated */
} zh_mail_msg;

/* Appends the whole message (headers, blank line, body; CRLF line ends) to out. Returns NULL, or
 * a static description of what is wrong (an address with a line break, ...). */
const char *zh_mail_build(const zh_mail_msg *m, zh_buf *out);

/* Appends s as an RFC 2047 header value (encoded words, folded) when it is not plain short ASCII.
 * `used` is how many characters the header line already holds ("Subject: " = 9). */
void zh_mail_encode_header(zh_buf *out, const char *s, size_t used);

/* The bare address of "Name <addr>" or "addr"; malloc'd, NULL when it is not an address. */
char *zh_mail_address(const char *s);

int zh_open_mail(lua_State *L);

#endif
