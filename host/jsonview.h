/* jsonview.h — read-only, lazy views of JSON documents parsed by simdjson (see l_jsonview.cc).
 *
 * A C interface so the C host (l_json.c, l_http.c) and the unit tests can use the C++ shim. */
#ifndef ZH_JSONVIEW_H
#define ZH_JSONVIEW_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses s[0..n) and pushes a view of its root (a view userdata for an object or array, the
 * plain Lua value for a scalar document). On invalid JSON pushes nil and "invalid JSON: why".
 * Returns the number of values pushed (1 or 2). Raises only on out-of-memory. */
int zh_jsonview_push(lua_State *L, const char *s, size_t n);

/* Bytes that must be readable after the text for zh_jsonview_push_padded (simdjson reads past
 * the end in 64-byte blocks; l_jsonview.cc checks this against SIMDJSON_PADDING). */
#define ZH_JSON_PADDING 64

/* As zh_jsonview_push, for text followed by ZH_JSON_PADDING readable bytes: parsed in place,
 * without the padded copy a Lua string needs. */
int zh_jsonview_push_padded(lua_State *L, const char *s, size_t n);

/* How many parsed documents' buffers are kept for reuse by the next parse (tests). */
int zh_jsonview_pooled(lua_State *L);

/* Adds view, isview, totable and view_stats to the module table at the top of the stack. */
void zh_jsonview_register(lua_State *L);

/* C access to a view's document, for code that reads many fields per call without making Lua
 * values (row templates, rowtpl.c). A node is a position in a document: it is valid only while
 * the view it came from is reachable and open, i.e. within the C call that got it. */
typedef struct zh_jnode {
    uint64_t opaque[2];
} zh_jnode;

enum zh_jtype { ZJ_MISSING, ZJ_NULL, ZJ_BOOL, ZJ_INT, ZJ_UINT, ZJ_DOUBLE, ZJ_STRING, ZJ_ARRAY, ZJ_OBJECT };

/* The node of the view at idx; false when idx holds no view. Raises when its document was closed. */
bool zh_jnode_of_view(lua_State *L, int idx, zh_jnode *out);
int zh_jnode_type(const zh_jnode *n);
/* Field key of an object; false (out untouched) when n is no object or has no such field. */
bool zh_jnode_field(const zh_jnode *n, const char *key, size_t klen, zh_jnode *out);
/* A set of field names looked up together (zh_jnode_fields), bucketed by length so that each field
 * of an object is compared with the one or two wanted names of its length, not with all of them. */
#define ZH_JKEYS_MAX 64
typedef struct zh_jkeys {
    int n;
    const char *keys[ZH_JKEYS_MAX]; /* not copied: the caller keeps them alive */
    size_t lens[ZH_JKEYS_MAX];
    signed char by_len[33];         /* first name of each length 0..31; [32] the longer ones; -1 none */
    signed char next[ZH_JKEYS_MAX]; /* the next name in the same bucket, -1 none */
} zh_jkeys;
void zh_jkeys_init(zh_jkeys *ks);
/* The index of key (len bytes) in the set, added when new; -1 when the set is full. */
int zh_jkeys_add(zh_jkeys *ks, const char *key, size_t len);

/* Looks up the set's fields of an object in one pass over it (a row template reads a dozen
 * fields of each item: one pass instead of a scan per field). found[i] is 1 when out[i] holds the
 * first field named keys[i], as zh_jnode_field would find it. Returns how many were found; 0 when
 * n is no object. */
int zh_jnode_fields(const zh_jnode *n, const zh_jkeys *ks, zh_jnode *out, unsigned char *found);
/* A node's type and, for a scalar, its value, in one call (row templates read every value so). */
typedef struct zh_jvalue {
    int type; /* enum zh_jtype */
    long long i;
    unsigned long long u;
    double d;
    bool b;
    const char *s; /* ZJ_STRING: n bytes in the document, valid as the node is */
    size_t n;
} zh_jvalue;
int zh_jnode_read(const zh_jnode *n, zh_jvalue *out);
/* Calls fn for each item of an array (key NULL) or each field of an object, in document order,
 * until fn returns false. */
void zh_jnode_each(const zh_jnode *n, bool (*fn)(void *ud, const char *key, size_t klen, const zh_jnode *v), void *ud);

#ifdef __cplusplus
}
#endif

#endif
