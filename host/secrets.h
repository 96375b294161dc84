/* secrets.h — KEY=VALUE files in the secrets directory (secrets/.env.<name>). */
#ifndef ZH_SECRETS_H
#define ZH_SECRETS_H

#include "zh.h"

typedef void (*zh_secret_fn)(void *ud, const char *key, const char *value);

/* Reads <dir>/.env.<name>. Returns 1 when read, 0 when the file does not exist, -1 on a parse or
 * read error (*err set, malloc'd, naming file and line). Warns when the file is readable by others. */
int zh_secrets_read(const char *dir, const char *name, zh_secret_fn fn, void *ud, char **err);
/* Parses env-file text (exposed for tests). Same return convention; `origin` names it in errors. */
int zh_secrets_parse(const char *text, size_t len, const char *origin, zh_secret_fn fn, void *ud, char **err);
/* The secrets directory: --secrets, else $ZHOST_SECRETS, else ./secrets. */
const char *zh_secrets_dir(const char *flag);

#endif
