/* l_jsonview.cc — owns json.view / response:json_view(): a JSON document parsed in C by simdjson
 * (Debian's libsimdjson) and handed to Lua as a lazy, read-only view, plus json.isview and
 * json.totable. Only the values a script touches become Lua values: a QTickets page is ~100 KB of
 * which a loader reads a tenth, and building the whole Lua table (lua-cjson) cost as much CPU as
 * the mapping itself. C code that reads many fields per call (row templates, rowtpl.c) walks the
 * same documents through the zh_jnode functions at the end, without making Lua values.
 *
 * Ownership: a document lives in a "doc" userdata (its __gc runs the C++ destructor). Every view
 * userdata — the root and each nested object or array handed out — holds the doc in its user value,
 * so the document stays alive while any view of it is reachable. view:__close (a `<close>` variable)
 * frees the document early; later use of any view of it raises. One simdjson parser per Lua state
 * (its index buffers grow to the largest document) lives in the registry.
 *
 * C++ only inside: the Lua API is C and raises with longjmp, so no object with a destructor is alive
 * on the C++ stack when a Lua function that can raise is called. */
#include "jsonview.h"

extern "C" {
#include <lauxlib.h>
#include <lua.h>
}

#include <simdjson.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

using namespace simdjson;

namespace {

struct jv_doc {
    dom::document doc;
    bool closed;
};

/* Tells a view from another userdata of the same size without touching the metatable: field
 * access is the hot path of every loader. */
const uint64_t VIEW_MAGIC = 0x7765697673686a7aull; /* "zjhsview" */

struct jv_view {
    uint64_t magic;
    jv_doc *d;
    dom::element e;
    bool is_array;
    /* ipairs and v[i] loops walk arrays in order: remember where the last index was found, so
     * each step is one tape jump instead of a walk from the start. */
    bool cached;
    size_t last_i;
    dom::array::iterator last_it;
};

/* Registry keys are the addresses of these: a light-userdata key costs no string compare, and the
 * metatable is fetched on every field access. */
const char DOC_MT = 0, VIEW_MT = 0, PARSER_KEY = 0;

/* Documents whose views are gone keep their buffers here for the next parse: a page's tape and
 * string buffer are ~10x its size, and allocating them fresh for every page cost a page fault per
 * 4 KiB touched (3% of a loader's CPU) plus malloc's trimming and re-growing of the heap. Bounded in
 * count and size, so an odd huge document is not kept. */
const int DOC_POOL_SLOTS = 4;
const size_t DOC_POOL_MAX_CAPACITY = size_t(512) << 10; /* JSON bytes; its buffers are ~10x that */

struct jv_parser {
    dom::parser *p;
    int pooled;
    dom::document pool[DOC_POOL_SLOTS];
};

/* A moved-from document keeps its old capacity figure with null buffers (simdjson 3.0's defaulted
 * move): reset it, or a later parse into it would trust the figure and write through null. */
void release_document(dom::document &doc) {
    error_code never_fails = doc.allocate(0); /* allocate(0) only frees */
    (void)never_fails;
}

void move_document(dom::document &to, dom::document &from) {
    to = std::move(from);
    release_document(from);
}

int parser_gc(lua_State *L) {
    jv_parser *jp = static_cast<jv_parser *>(lua_touserdata(L, 1));
    delete jp->p;
    jp->p = nullptr;
    for (int i = 0; i < DOC_POOL_SLOTS; i++) release_document(jp->pool[i]);
    jp->pooled = 0;
    return 0;
}

jv_parser *live_parser(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &PARSER_KEY);
    jv_parser *jp = static_cast<jv_parser *>(lua_touserdata(L, -1));
    lua_pop(L, 1);
    return jp && jp->p ? jp : nullptr;
}

int doc_gc(lua_State *L) {
    jv_doc *d = static_cast<jv_doc *>(lua_touserdata(L, 1));
    if (d) {
        jv_parser *jp = d->closed ? nullptr : live_parser(L);
        size_t cap = d->doc.capacity();
        if (jp && jp->pooled < DOC_POOL_SLOTS && cap > 0 && cap <= DOC_POOL_MAX_CAPACITY) {
            move_document(jp->pool[jp->pooled++], d->doc);
        } else {
            d->doc.~document();
            new (&d->doc) dom::document(); /* an idempotent __gc: a second call destroys an empty one */
        }
        d->closed = true;
    }
    return 0;
}

jv_parser *parser_of(lua_State *L) {
    jv_parser *jp = live_parser(L);
    if (jp) return jp;
    jp = static_cast<jv_parser *>(lua_newuserdatauv(L, sizeof(jv_parser), 0));
    jp->p = nullptr;
    jp->pooled = 0;
    for (int i = 0; i < DOC_POOL_SLOTS; i++) new (&jp->pool[i]) dom::document();
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, parser_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    jp->p = new (std::nothrow) dom::parser();
    if (!jp->p) luaL_error(L, "json.view: out of memory");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &PARSER_KEY);
    return jp;
}

/* The view at idx, or NULL when it is something else. */
jv_view *to_view(lua_State *L, int idx) {
    jv_view *v = static_cast<jv_view *>(lua_touserdata(L, idx));
    if (!v || lua_type(L, idx) != LUA_TUSERDATA) return nullptr;
    /* Only this file makes full userdata of this size that start with the magic; anything else
     * is checked against the metatable. */
    if (lua_rawlen(L, idx) == sizeof(jv_view) && v->magic == VIEW_MAGIC) return v;
    if (!lua_getmetatable(L, idx)) return nullptr;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &VIEW_MT);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? v : nullptr;
}

jv_view *check_open(lua_State *L, int idx) {
    jv_view *v = to_view(L, idx);
    if (!v) {
        luaL_typeerror(L, idx, "json view");
        return nullptr;
    }
    if (v->d->closed) luaL_error(L, "json view: its document was closed");
    return v;
}

/* Pushes element e of the document whose doc userdata is at doc_idx. */
void push_element(lua_State *L, int doc_idx, jv_doc *d, dom::element e) {
    switch (e.type()) {
    case dom::element_type::ARRAY:
    case dom::element_type::OBJECT: {
        jv_view *v = static_cast<jv_view *>(lua_newuserdatauv(L, sizeof(jv_view), 1));
        new (v) jv_view();
        v->magic = VIEW_MAGIC;
        v->d = d;
        v->e = e;
        v->is_array = e.type() == dom::element_type::ARRAY;
        v->cached = false;
        lua_pushvalue(L, doc_idx);
        lua_setiuservalue(L, -2, 1);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &VIEW_MT);
        lua_setmetatable(L, -2);
        return;
    }
    case dom::element_type::INT64:
        lua_pushinteger(L, static_cast<lua_Integer>(int64_t(e.get_int64().value_unsafe())));
        return;
    case dom::element_type::UINT64: {
        /* Above 2^63-1: no Lua integer holds it and a float would round it; keep the digits. */
        char buf[24];
        int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)uint64_t(e.get_uint64().value_unsafe()));
        lua_pushlstring(L, buf, size_t(n));
        return;
    }
    case dom::element_type::DOUBLE: {
        double x = e.get_double().value_unsafe();
        /* As json.decode: integral numbers up to 2^53 become integers (1500.0 -> 1500). */
        if (x == std::floor(x) && std::fabs(x) <= 9007199254740992.0) lua_pushinteger(L, static_cast<lua_Integer>(x));
        else lua_pushnumber(L, x);
        return;
    }
    case dom::element_type::STRING: {
        std::string_view s = e.get_string().value_unsafe();
        lua_pushlstring(L, s.data(), s.size());
        return;
    }
    case dom::element_type::BOOL:
        lua_pushboolean(L, e.get_bool().value_unsafe());
        return;
    case dom::element_type::NULL_VALUE:
        lua_pushlightuserdata(L, nullptr); /* json.null, as lua-cjson has it */
        return;
    }
    lua_pushnil(L);
}

bool array_at(jv_view *v, size_t i, dom::element *out) {
    dom::array a = v->e.get_array().value_unsafe();
    dom::array::iterator it, end = a.end();
    size_t k;
    if (v->cached && i >= v->last_i) {
        it = v->last_it;
        k = v->last_i;
    } else {
        it = a.begin();
        k = 0;
    }
    while (k < i && it != end) {
        ++it;
        k++;
    }
    if (it == end) return false;
    v->cached = true;
    v->last_i = k;
    v->last_it = it;
    *out = *it;
    return true;
}

int view_index(lua_State *L) {
    jv_view *v = check_open(L, 1);
    dom::element child;
    if (v->is_array) {
        int isint = 0;
        lua_Integer i = lua_tointegerx(L, 2, &isint);
        if (!isint || i < 1 || !array_at(v, size_t(i - 1), &child)) return 0;
    } else {
        if (lua_type(L, 2) != LUA_TSTRING) return 0;
        size_t kl;
        const char *k = lua_tolstring(L, 2, &kl);
        dom::object o = v->e.get_object().value_unsafe();
        auto r = o.at_key(std::string_view(k, kl));
        if (r.error()) return 0;
        child = r.value_unsafe();
    }
    lua_getiuservalue(L, 1, 1);
    push_element(L, lua_gettop(L), v->d, child);
    return 1;
}

int view_len(lua_State *L) {
    jv_view *v = check_open(L, 1);
    size_t n = v->is_array ? v->e.get_array().value_unsafe().size() : v->e.get_object().value_unsafe().size();
    lua_pushinteger(L, lua_Integer(n));
    return 1;
}

int view_newindex(lua_State *L) { return luaL_error(L, "json view is read-only (json.totable makes a copy)"); }

/* pairs(): an iterator over (key, value) of an object or (index, value) of an array, in document
 * order. Its position lives in a userdata upvalue; the view is the loop's state, which keeps the
 * document alive while the loop runs. */
struct jv_iter {
    bool is_array;
    size_t i;
    dom::array::iterator ait, aend;
    dom::object::iterator oit, oend;
};

int iter_next(lua_State *L) {
    jv_view *v = check_open(L, 1);
    jv_iter *it = static_cast<jv_iter *>(lua_touserdata(L, lua_upvalueindex(1)));
    lua_getiuservalue(L, 1, 1);
    int doc_idx = lua_gettop(L);
    if (it->is_array) {
        if (it->ait == it->aend) return 0;
        dom::element e = *it->ait;
        ++it->ait;
        lua_pushinteger(L, lua_Integer(++it->i));
        push_element(L, doc_idx, v->d, e);
    } else {
        if (it->oit == it->oend) return 0;
        std::string_view k = it->oit.key();
        dom::element e = it->oit.value();
        ++it->oit;
        lua_pushlstring(L, k.data(), k.size());
        push_element(L, doc_idx, v->d, e);
    }
    return 2;
}

int view_pairs(lua_State *L) {
    jv_view *v = check_open(L, 1);
    jv_iter *it = static_cast<jv_iter *>(lua_newuserdatauv(L, sizeof(jv_iter), 0));
    new (it) jv_iter();
    it->is_array = v->is_array;
    it->i = 0;
    if (v->is_array) {
        dom::array a = v->e.get_array().value_unsafe();
        it->ait = a.begin();
        it->aend = a.end();
    } else {
        dom::object o = v->e.get_object().value_unsafe();
        it->oit = o.begin();
        it->oend = o.end();
    }
    lua_pushcclosure(L, iter_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

int view_tostring(lua_State *L) {
    jv_view *v = to_view(L, 1);
    if (!v) return luaL_typeerror(L, 1, "json view");
    if (v->d->closed) {
        lua_pushliteral(L, "json view (closed)");
        return 1;
    }
    size_t n = v->is_array ? v->e.get_array().value_unsafe().size() : v->e.get_object().value_unsafe().size();
    lua_pushfstring(L, "json view: %s of %d", v->is_array ? "array" : "object", int(n));
    return 1;
}

int view_close(lua_State *L) {
    jv_view *v = to_view(L, 1);
    if (!v) return 0;
    lua_getiuservalue(L, 1, 1);
    lua_replace(L, 1);
    return doc_gc(L);
}

/* json.totable: a plain Lua copy of a view (numbers, strings and json.null as json.decode gives). */
void copy_element(lua_State *L, dom::element e, int depth) {
    if (depth > 1000) luaL_error(L, "json.totable: nesting too deep");
    luaL_checkstack(L, 4, "json.totable");
    switch (e.type()) {
    case dom::element_type::ARRAY: {
        dom::array a = e.get_array().value_unsafe();
        lua_createtable(L, int(a.size()), 0);
        lua_Integer i = 0;
        for (dom::element x : a) {
            copy_element(L, x, depth + 1);
            lua_rawseti(L, -2, ++i);
        }
        return;
    }
    case dom::element_type::OBJECT: {
        dom::object o = e.get_object().value_unsafe();
        lua_createtable(L, 0, int(o.size()));
        for (dom::key_value_pair kv : o) {
            lua_pushlstring(L, kv.key.data(), kv.key.size());
            copy_element(L, kv.value, depth + 1);
            lua_rawset(L, -3);
        }
        return;
    }
    default:
        push_element(L, 0, nullptr, e); /* scalars never touch the doc */
    }
}

int l_view(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    return zh_jsonview_push(L, s, n);
}

int l_isview(lua_State *L) {
    lua_pushboolean(L, to_view(L, 1) != nullptr);
    return 1;
}

int l_totable(lua_State *L) {
    jv_view *v = to_view(L, 1);
    if (!v) {
        lua_settop(L, 1);
        return 1;
    }
    check_open(L, 1);
    copy_element(L, v->e, 0);
    return 1;
}

} // namespace

static int push_parsed(lua_State *L, const char *s, size_t n, bool padded) {
    jv_parser *jp = parser_of(L);
    dom::parser *p = jp->p;
    jv_doc *d = static_cast<jv_doc *>(lua_newuserdatauv(L, sizeof(jv_doc), 0));
    new (d) jv_doc();
    d->closed = false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &DOC_MT);
    lua_setmetatable(L, -2);
    int doc_idx = lua_gettop(L);
    if (jp->pooled > 0) move_document(d->doc, jp->pool[--jp->pooled]);
    error_code err;
    dom::element root;
    {
        /* realloc_if_needed: a Lua string has no SIMDJSON_PADDING bytes after it, so simdjson
         * reads a padded copy; a response body kept in C has them (l_http.c). */
        auto r = p->parse_into_document(d->doc, reinterpret_cast<const uint8_t *>(s), n, !padded);
        err = r.error();
        if (!err) root = r.value_unsafe();
    }
    if (err) {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON: %s", error_message(err));
        return 2;
    }
    /* The document's buffers are outside Lua's heap: let the collector pace itself as if they were
     * in it, so pages that are dropped get freed at the rate they arrive. */
    lua_gc(L, LUA_GCSTEP, int(n / 1024) + 1);
    push_element(L, doc_idx, d, root);
    lua_remove(L, doc_idx);
    return 1;
}

static_assert(SIMDJSON_PADDING <= ZH_JSON_PADDING, "ZH_JSON_PADDING must cover simdjson's padding");

extern "C" int zh_jsonview_push(lua_State *L, const char *s, size_t n) { return push_parsed(L, s, n, false); }

extern "C" int zh_jsonview_push_padded(lua_State *L, const char *s, size_t n) { return push_parsed(L, s, n, true); }

extern "C" int zh_jsonview_pooled(lua_State *L) {
    jv_parser *jp = live_parser(L);
    return jp ? jp->pooled : 0;
}

extern "C" void zh_jsonview_register(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &DOC_MT);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, doc_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "json document");
        lua_setfield(L, -2, "__metatable");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &DOC_MT);
    }
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &VIEW_MT);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 9);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &VIEW_MT);
        static const luaL_Reg mt[] = {
            {"__index", view_index}, {"__len", view_len}, {"__newindex", view_newindex}, {"__pairs", view_pairs},
            {"__tostring", view_tostring}, {"__close", view_close}, {nullptr, nullptr},
        };
        luaL_setfuncs(L, mt, 0);
        lua_pushliteral(L, "json view");
        lua_setfield(L, -2, "__metatable");
        lua_pushliteral(L, "json.view");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"view", l_view}, {"isview", l_isview}, {"totable", l_totable}, {nullptr, nullptr}};
    luaL_setfuncs(L, fns, 0);
}

/* ---- C access (jsonview.h) ---- */

static_assert(sizeof(zh_jnode) >= sizeof(dom::element), "zh_jnode must hold a dom::element");
static_assert(std::is_trivially_copyable<dom::element>::value, "dom::element is copied as bytes");

static inline dom::element node_elem(const zh_jnode *n) {
    dom::element e;
    std::memcpy(static_cast<void *>(&e), n->opaque, sizeof e);
    return e;
}

static inline void node_set(zh_jnode *n, dom::element e) {
    std::memset(n->opaque, 0, sizeof n->opaque);
    std::memcpy(n->opaque, static_cast<const void *>(&e), sizeof e);
}

extern "C" bool zh_jnode_of_view(lua_State *L, int idx, zh_jnode *out) {
    jv_view *v = to_view(L, idx);
    if (!v) return false;
    if (v->d->closed) luaL_error(L, "json view: its document was closed");
    node_set(out, v->e);
    return true;
}

extern "C" int zh_jnode_type(const zh_jnode *n) {
    switch (node_elem(n).type()) {
    case dom::element_type::ARRAY: return ZJ_ARRAY;
    case dom::element_type::OBJECT: return ZJ_OBJECT;
    case dom::element_type::INT64: return ZJ_INT;
    case dom::element_type::UINT64: return ZJ_UINT;
    case dom::element_type::DOUBLE: return ZJ_DOUBLE;
    case dom::element_type::STRING: return ZJ_STRING;
    case dom::element_type::BOOL: return ZJ_BOOL;
    case dom::element_type::NULL_VALUE: return ZJ_NULL;
    }
    return ZJ_MISSING;
}

extern "C" bool zh_jnode_field(const zh_jnode *n, const char *key, size_t klen, zh_jnode *out) {
    dom::element e = node_elem(n);
    if (e.type() != dom::element_type::OBJECT) return false;
    dom::object o = e.get_object().value_unsafe();
    auto r = o.at_key(std::string_view(key, klen));
    if (r.error()) return false;
    node_set(out, r.value_unsafe());
    return true;
}

extern "C" void zh_jkeys_init(zh_jkeys *ks) {
    ks->n = 0;
    std::memset(ks->by_len, -1, sizeof ks->by_len);
}

extern "C" int zh_jkeys_add(zh_jkeys *ks, const char *key, size_t len) {
    int bucket = len < 32 ? (int)len : 32;
    for (int i = ks->by_len[bucket]; i >= 0; i = ks->next[i])
        if (ks->lens[i] == len && !std::memcmp(ks->keys[i], key, len)) return i;
    if (ks->n == ZH_JKEYS_MAX) return -1;
    int i = ks->n++;
    ks->keys[i] = key;
    ks->lens[i] = len;
    ks->next[i] = ks->by_len[bucket];
    ks->by_len[bucket] = (signed char)i;
    return i;
}

extern "C" int zh_jnode_fields(const zh_jnode *n, const zh_jkeys *ks, zh_jnode *out, unsigned char *found) {
    std::memset(found, 0, (size_t)ks->n);
    dom::element e = node_elem(n);
    if (e.type() != dom::element_type::OBJECT || ks->n <= 0) return 0;
    dom::object o = e.get_object().value_unsafe();
    int left = ks->n;
    for (dom::object::iterator it = o.begin(), end = o.end(); it != end; ++it) {
        size_t klen = it.key_length();
        int i = ks->by_len[klen < 32 ? klen : 32];
        if (i < 0) continue;
        const char *k = it.key_c_str();
        for (; i >= 0; i = ks->next[i]) {
            if (found[i] || ks->lens[i] != klen) continue;
            /* keys are short: a byte loop beats a call to memcmp here */
            const char *w = ks->keys[i];
            size_t j = 0;
            while (j < klen && k[j] == w[j]) j++;
            if (j != klen) continue;
            /* the first field of that name, as at_key gives it */
            node_set(&out[i], it.value());
            found[i] = 1;
            if (!--left) return ks->n;
        }
    }
    return ks->n - left;
}

extern "C" int zh_jnode_read(const zh_jnode *n, zh_jvalue *out) {
    dom::element e = node_elem(n);
    switch (e.type()) {
    case dom::element_type::ARRAY: return out->type = ZJ_ARRAY;
    case dom::element_type::OBJECT: return out->type = ZJ_OBJECT;
    case dom::element_type::INT64: out->i = int64_t(e.get_int64().value_unsafe()); return out->type = ZJ_INT;
    case dom::element_type::UINT64: out->u = uint64_t(e.get_uint64().value_unsafe()); return out->type = ZJ_UINT;
    case dom::element_type::DOUBLE: out->d = e.get_double().value_unsafe(); return out->type = ZJ_DOUBLE;
    case dom::element_type::STRING: {
        std::string_view sv = e.get_string().value_unsafe();
        out->s = sv.data();
        out->n = sv.size();
        return out->type = ZJ_STRING;
    }
    case dom::element_type::BOOL: out->b = e.get_bool().value_unsafe(); return out->type = ZJ_BOOL;
    case dom::element_type::NULL_VALUE: return out->type = ZJ_NULL;
    }
    return out->type = ZJ_MISSING;
}

extern "C" void zh_jnode_each(const zh_jnode *n, bool (*fn)(void *ud, const char *key, size_t klen, const zh_jnode *v),
                              void *ud) {
    dom::element e = node_elem(n);
    zh_jnode item;
    if (e.type() == dom::element_type::ARRAY) {
        dom::array a = e.get_array().value_unsafe();
        for (dom::array::iterator it = a.begin(), end = a.end(); it != end; ++it) {
            node_set(&item, *it);
            if (!fn(ud, nullptr, 0, &item)) return;
        }
    } else if (e.type() == dom::element_type::OBJECT) {
        dom::object o = e.get_object().value_unsafe();
        for (dom::object::iterator it = o.begin(), end = o.end(); it != end; ++it) {
            std::string_view k = it.key();
            node_set(&item, it.value());
            if (!fn(ud, k.data(), k.size(), &item)) return;
        }
    }
}
