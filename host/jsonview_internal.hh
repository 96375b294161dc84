/* jsonview_internal.hh — the layout of json.view's userdata (l_jsonview.cc), shared with the row
 * templates (rowtpl.cc), which read views in C++ without going through Lua. Nothing else includes it. */
#ifndef ZH_JSONVIEW_INTERNAL_HH
#define ZH_JSONVIEW_INTERNAL_HH

extern "C" {
#include <lua.h>
}

#include <simdjson.h>

#include <cstddef>
#include <cstdint>

namespace zh_jsonview {

struct jv_doc {
    simdjson::dom::document doc;
    bool closed;
};

/* Tells a view from another userdata of the same size without touching the metatable: field
 * access is the hot path of every loader. */
const uint64_t VIEW_MAGIC = 0x7765697673686a7aull; /* "zjhsview" */

struct jv_view {
    uint64_t magic;
    jv_doc *d;
    simdjson::dom::element e;
    bool is_array;
    /* ipairs and v[i] loops walk arrays in order: remember where the last index was found, so
     * each step is one tape jump instead of a walk from the start. */
    bool cached;
    size_t last_i;
    simdjson::dom::array::iterator last_it;
};

/* The view at idx, or nullptr when it is something else; raises when its document was closed. */
jv_view *view_at(lua_State *L, int idx);

} // namespace zh_jsonview

#endif
