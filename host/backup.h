/* backup.h — `zhost backup`: logical backups of the zakaz and bi databases (schema + Native data
 * by partition), verification, restore into scratch databases, pruning. See docs/backup.md.
 * The helpers below are exposed for the unit tests. */
#ifndef ZH_BACKUP_H
#define ZH_BACKUP_H

#include "zh.h"

/* A small JSON reader for manifests: numbers are kept as their text (64-bit counts stay exact). */
typedef enum { ZH_JSON_NULL, ZH_JSON_BOOL, ZH_JSON_NUM, ZH_JSON_STR, ZH_JSON_ARR, ZH_JSON_OBJ } zh_json_type;
typedef struct zh_json {
    zh_json_type t;
    char *s;                  /* string value, or the number's text */
    bool b;
    int n;                    /* items in an array or object */
    struct zh_json **items;
    char **keys;              /* object keys, parallel to items */
} zh_json;

/* Returns NULL with *err set (malloc'd, with the byte offset) on malformed input. */
zh_json *zh_json_parse(const char *text, size_t len, char **err);
void zh_json_free(zh_json *j);
const zh_json *zh_json_get(const zh_json *obj, const char *key);
/* The string at key, or NULL when absent or not a string. */
const char *zh_json_str(const zh_json *obj, const char *key);
/* The non-negative integer at key (number or decimal string), or `dflt`. */
uint64_t zh_json_u64(const zh_json *obj, const char *key, uint64_t dflt);

/* Rewrites database qualifiers in a statement: every `from.` (bare, `quoted` or "quoted", outside
 * string literals and comments) becomes `to`. — one pair per call; returns malloc'd text. */
char *zh_backup_rewrite_db(const char *sql, const char *from, const char *to);
/* A name that is safe as one path component: [A-Za-z0-9_-] kept, everything else %XX. */
char *zh_backup_file_name(const char *name);
/* Whether `name` is chbk_YYYYMMDD_HHMMSS_full|incr; sets *epoch (UTC) and *full when it is. */
bool zh_backup_parse_name(const char *name, double *epoch, bool *full);

/* Whether a content checksum taken on ClickHouse v1 can be compared with one taken on v2 for a
 * table created by `create` (SHOW CREATE): not when 21.9's Decimal/Float text change lies between
 * them and the table has such columns. Unknown versions (NULL, "") compare. */
bool zh_backup_same_row_text(const char *v1, const char *v2, const char *create);

int zh_cmd_backup(int argc, char **argv);

#endif
