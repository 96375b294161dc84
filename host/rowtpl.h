/* rowtpl.h — row templates: JSON views -> rows of one table, compiled once (see rowtpl.c). */
#ifndef ZH_ROWTPL_H
#define ZH_ROWTPL_H

#include "ch_internal.h"
#include "jsonview.h"

typedef struct zh_rowtpl zh_rowtpl;

/* Compiles the template spec (the Lua table at idx) for the columns of schema s, which must
 * outlive the template. The template is stored in *slot as soon as it exists, so the caller's
 * finalizer frees it even when compiling raises; misuse (an unknown column, option or
 * conversion, a default the column cannot take) raises naming the column. */
void zh_rowtpl_compile(lua_State *L, int idx, const ch_schema *s, zh_rowtpl **slot);
void zh_rowtpl_free(zh_rowtpl *t);
const ch_schema *zh_rowtpl_schema(const zh_rowtpl *t);

/* Appends the rows that the object `root` makes (one per item of the template's `each` list, or
 * one from root itself) to out as JSONEachRow lines. Returns the number of rows, or -1 with a
 * message in err (a value its column cannot take) and out as it was. L is only used to read
 * numeric strings the way Lua does. `count`: the rows go into a sink (zh_rowtpl_rows counts them).
 * *kept (may be NULL): whether root passed the template's `only` conditions; when not, no rows. */
long long zh_rowtpl_encode(zh_rowtpl *t, lua_State *L, const zh_jnode *root, zh_buf *out, bool count, bool *kept,
                           char *err, size_t errlen);

/* The items of a list as a template's `each` reads them: an array's, or the values of an object PHP
 * made of a filtered array ({"0": …, "2": …}) in key order; none for anything else. *items (the
 * caller frees it; NULL when there are none) is valid as the node is. */
size_t zh_rowtpl_list(const zh_jnode *list, zh_jnode **items);

/* Rows made so far, and decimals rounded to fit their scale. */
uint64_t zh_rowtpl_rows(const zh_rowtpl *t);
uint64_t zh_rowtpl_rounded(const zh_rowtpl *t);

#endif
