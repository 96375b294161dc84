/* Unit tests for l_jsonview.cc (json.view over simdjson): scalars and their Lua types, nested access,
 * #, ipairs and pairs in document order, the array position cache, invalid JSON as nil + err,
 * read-only views, <close> and use after close, json.totable, PHP-style \uXXXX escapes, and the reuse
 * of closed documents' buffers. */
#include "jsonview.h"
#include "zt.h"
#include <limits.h>
#include <lauxlib.h>
#include <lualib.h>

static lua_State *L;

/* Runs Lua code with `json` (view, isview, totable, null) in scope; returns its string result. */
static const char *run(const char *code) {
    static char out[512];
    lua_settop(L, 0);
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(out, sizeof out, "ERROR: %s", lua_tostring(L, -1));
        return out;
    }
    const char *s = lua_tostring(L, -1);
    snprintf(out, sizeof out, "%s", s ? s : "(not a string)");
    return out;
}

static void scalars(void) {
    ZT_EQ_STR(run("local v = json.view('{\"i\":10000,\"f\":1222.03,\"w\":1500.0,\"s\":\"x\",\"t\":true,\"n\":null,"
                  "\"big\":18446744073709551615,\"neg\":-5}')\n"
                  "return table.concat({math.type(v.i), v.i, math.type(v.f), v.f, math.type(v.w), v.w, v.s,"
                  " tostring(v.t), tostring(v.n == json.null), type(v.big), v.big, v.neg}, ' ')"),
              "integer 10000 float 1222.03 integer 1500 x true true string 18446744073709551615 -5");
    ZT_EQ_STR(run("local v = json.view('{\"a\":1}') return tostring(v.missing) .. ' ' .. tostring(v[1])"), "nil nil");
    /* A scalar document is returned as the plain value. */
    ZT_EQ_STR(run("return tostring(json.view('42')) .. tostring(json.view('\"s\"'))"), "42s");
}

static void nested_and_iteration(void) {
    ZT_EQ_STR(run("local v = json.view('{\"data\":[{\"id\":1,\"b\":[{\"p\":5},{\"p\":6}]},{\"id\":2,\"b\":[]}]}')\n"
                  "local out = {}\n"
                  "for i, o in ipairs(v.data) do out[#out + 1] = i .. ':' .. o.id .. ':' .. #o.b end\n"
                  "out[#out + 1] = v.data[1].b[2].p\n"
                  "out[#out + 1] = #v.data\n"
                  "out[#out + 1] = tostring(v.data[3])\n"
                  "return table.concat(out, ' ')"),
              "1:1:2 2:2:0 6 2 nil");
    /* pairs keeps document order; arrays give 1-based indexes. */
    ZT_EQ_STR(run("local v = json.view('{\"z\":1,\"a\":[7,8],\"m\":\"x\"}')\n"
                  "local out = {}\n"
                  "for k, x in pairs(v) do out[#out + 1] = k .. '=' .. (json.isview(x) and #x or x) end\n"
                  "for i, x in pairs(v.a) do out[#out + 1] = i .. '=' .. x end\n"
                  "return table.concat(out, ' ')"),
              "z=1 a=2 m=x 1=7 2=8");
    /* Random order after sequential access: the position cache must not return stale elements. */
    ZT_EQ_STR(run("local a = json.view('[10,20,30,40,50]')\n"
                  "return table.concat({a[4], a[5], a[2], a[1], a[3], a[3], tostring(a[6]), tostring(a[0]),"
                  " tostring(a[2.5]), tostring(a.x)}, ' ')"),
              "40 50 20 10 30 30 nil nil nil nil");
}

static void escapes(void) {
    /* PHP's json_encode: Cyrillic as \uXXXX, '/' as '\/'. */
    ZT_EQ_STR(run("local v = json.view('{\"name\":\"\\\\u0421\\\\u0435\\\\u0440\\\\u0433\\\\u0435\\\\u0439\","
                  "\"url\":\"https:\\\\/\\\\/vk.com\"}') return v.name .. ' ' .. v.url"),
              "Сергей https://vk.com");
}

static void errors(void) {
    ZT_EQ_STR(run("local v, err = json.view('{bad') return tostring(v) .. ' ' .. err:sub(1, 12)"), "nil invalid JSON");
    ZT_EQ_STR(run("local v, err = json.view('') return tostring(v) .. ' ' .. err:sub(1, 12)"), "nil invalid JSON");
    ZT_EQ_STR(run("local v = json.view('{\"a\":1}') local ok, e = pcall(function() v.a = 2 end)"
                  " return tostring(ok) .. ' ' .. tostring(e:find('read-only', 1, true) ~= nil)"),
              "false true");
    ZT_EQ_STR(run("local ok = pcall(json.view, {}) return tostring(ok)"), "false");
    /* <close> frees the document; views of it refuse to be read afterwards instead of crashing. */
    ZT_EQ_STR(run("local inner\n"
                  "do local v <close> = json.view('{\"a\":{\"b\":1}}') inner = v.a end\n"
                  "local ok, e = pcall(function() return inner.b end)\n"
                  "return tostring(ok) .. ' ' .. tostring(e:find('closed') ~= nil) .. ' ' .. tostring(inner)"),
              "false true json view (closed)");
    /* Deep nesting is refused by the parser, not by a crash. */
    ZT_EQ_STR(run("local v, err = json.view(string.rep('[', 5000) .. string.rep(']', 5000))"
                  " return tostring(v) .. ' ' .. tostring(err ~= nil)"),
              "nil true");
}

static void totable(void) {
    ZT_EQ_STR(run("local t = json.totable(json.view('{\"a\":[1,2.5,null,{\"b\":\"c\"}],\"d\":false}'))\n"
                  "return table.concat({type(t), #t.a, math.type(t.a[1]), t.a[2], tostring(t.a[3] == json.null),"
                  " t.a[4].b, tostring(t.d), tostring(json.isview(t))}, ' ')"),
              "table 4 integer 2.5 true c false false");
    ZT_EQ_STR(run("return tostring(json.totable(5)) .. ' ' .. tostring(json.isview(5))"), "5 false");
}

static void many_documents(void) {
    /* Documents are freed by the collector: parse many and drop them. */
    ZT_EQ_STR(run("local n = 0\n"
                  "for i = 1, 2000 do local v = json.view('{\"data\":[' .. string.rep('{\"x\":1},', 50) .. '{}]}')"
                  " n = n + #v.data end\n"
                  "collectgarbage() return tostring(n)"),
              "102000");
}

static bool collect_items(void *ud, const char *key, size_t klen, const zh_jnode *v) {
    (void)key, (void)klen;
    struct collect { zh_jnode *items; int *k; } *c = ud;
    if (*c->k < 3) c->items[(*c->k)++] = *v;
    return true;
}

static int pooled(lua_State *Ls) {
    lua_pushinteger(Ls, zh_jsonview_pooled(Ls));
    return 1;
}

static void reused_documents(void) {
    /* A closed (or collected) document's buffers go to the next parse; views of the closed one must
     * keep refusing, not read the new document through the reused tape. */
    ZT_EQ_STR(run("collectgarbage() collectgarbage('stop')\n"
                  "local held = {} while pooled() > 0 do held[#held + 1] = json.view('[1]') end\n"
                  "local before = pooled()\n"
                  "local old\n"
                  "do local v <close> = json.view('{\"a\":{\"b\":\"old\"}}') old = v.a end\n"
                  "local after_close = pooled()\n"
                  "local w = json.view('{\"a\":{\"b\":\"new\"},\"c\":[1,2,3]}')\n"
                  "local ok, e = pcall(function() return old.b end)\n"
                  "return table.concat({after_close - before, pooled(), tostring(ok), tostring(e:find('closed') ~= nil),"
                  " w.a.b, #w.c}, ' ')"),
              "1 0 false true new 3");
    run("collectgarbage('restart')");
    /* A reused document smaller than the next text grows; the pool stays bounded. */
    ZT_EQ_STR(run("for i = 1, 50 do local v <close> = json.view('[' .. string.rep('\"x\",', i * 100) .. '1]')"
                  " assert(#v == i * 100 + 1 and v[i * 100 + 1] == 1) end\n"
                  "local docs = {} for i = 1, 20 do docs[i] = json.view('[1]') end\n"
                  "docs = nil collectgarbage() collectgarbage()\n"
                  "return tostring(pooled() >= 1 and pooled() <= 4)"),
              "true");
    /* A huge document is freed, not kept. */
    ZT_EQ_STR(run("collectgarbage() collectgarbage('stop')\n"
                  "local held = {} while pooled() > 0 do held[#held + 1] = json.view('[1]') end\n"
                  "do local v <close> = json.view('[' .. string.rep('1,', 400000) .. '1]') end\n"
                  "local n = pooled() collectgarbage('restart') return tostring(n)"),
              "0");
}

/* A node's integer or string, through zh_jnode_read (LLONG_MIN / NULL when it is another type). */
static long long zh_jnode_int(const zh_jnode *n) {
    zh_jvalue v;
    return zh_jnode_read(n, &v) == ZJ_INT ? v.i : LLONG_MIN;
}

static const char *zh_jnode_string(const zh_jnode *n, size_t *len) {
    zh_jvalue v;
    if (zh_jnode_read(n, &v) != ZJ_STRING) return NULL;
    *len = v.n;
    return v.s; /* NUL-terminated in simdjson's string buffer */
}

/* zh_jnode_fields: the fields a row template reads, in one pass — each the first of its name (as
 * zh_jnode_field finds it), escaped keys by their text, missing ones not found, no object nothing. */
static void fields_in_one_pass(void) {
    lua_settop(L, 0);
    lua_getglobal(L, "json");
    lua_getfield(L, -1, "view");
    lua_pushstring(L, "[{\"id\":1,\"n\":{\"id\":9},\"price\":\"5.00\",\"id\":2,\"\\u0436\":\"zh\",\"pr\":3,\"a\\u0000b\":4},"
                      "[1,2],{}]");
    ZT_EQ_INT(lua_pcall(L, 1, 1, 0), LUA_OK);
    zh_jnode root, item, v;
    ZT_CHECK(zh_jnode_of_view(L, -1, &root));
    const char *keys[] = {"price", "id", "missing", "\xd0\xb6", "pr", "a\0b", "n"};
    size_t lens[] = {5, 2, 7, 2, 2, 3, 1};
    zh_jkeys ks;
    zh_jkeys_init(&ks);
    for (int i = 0; i < 7; i++) ZT_EQ_INT(zh_jkeys_add(&ks, keys[i], lens[i]), i);
    ZT_EQ_INT(zh_jkeys_add(&ks, "pr", 2), 4); /* already there */
    zh_jnode out[7];
    unsigned char found[7];
    int k = 0;
    zh_jnode items[3];
    struct collect {
        zh_jnode *items;
        int *k;
    } c = {items, &k};
    zh_jnode_each(&root, collect_items, &c);
    ZT_EQ_INT(k, 3);
    item = items[0];
    ZT_EQ_INT(zh_jnode_fields(&item, &ks, out, found), 6);
    ZT_CHECK(found[0] && found[1] && !found[2] && found[3] && found[4] && found[5] && found[6]);
    size_t n;
    ZT_EQ_STR(zh_jnode_string(&out[0], &n), "5.00");
    ZT_EQ_INT(zh_jnode_int(&out[1]), 1); /* the first "id", as zh_jnode_field gives it */
    ZT_CHECK(zh_jnode_field(&item, "id", 2, &v) && zh_jnode_int(&v) == 1);
    ZT_EQ_STR(zh_jnode_string(&out[3], &n), "zh");
    ZT_EQ_INT(zh_jnode_int(&out[4]), 3);
    ZT_EQ_INT(zh_jnode_int(&out[5]), 4);
    ZT_EQ_INT(zh_jnode_type(&out[6]), ZJ_OBJECT);
    /* zh_jnode_read: type and value in one call */
    zh_jvalue jv;
    ZT_EQ_INT(zh_jnode_read(&out[0], &jv), ZJ_STRING);
    ZT_CHECK(jv.n == 4 && !memcmp(jv.s, "5.00", 4));
    ZT_EQ_INT(zh_jnode_read(&out[1], &jv), ZJ_INT);
    ZT_EQ_INT(jv.i, 1);
    ZT_EQ_INT(zh_jnode_read(&out[6], &jv), ZJ_OBJECT);
    ZT_EQ_INT(zh_jnode_read(&items[1], &jv), ZJ_ARRAY);
    lua_getglobal(L, "json");
    lua_getfield(L, -1, "view");
    lua_pushstring(L, "[18446744073709551615,-2.5,false,null,-9223372036854775808]");
    ZT_EQ_INT(lua_pcall(L, 1, 1, 0), LUA_OK);
    zh_jnode arr, el[3];
    ZT_CHECK(zh_jnode_of_view(L, -1, &arr));
    int m = 0;
    struct collect ca = {el, &m};
    zh_jnode_each(&arr, collect_items, &ca);
    ZT_EQ_INT(zh_jnode_read(&el[0], &jv), ZJ_UINT);
    ZT_CHECK(jv.u == 18446744073709551615ULL);
    ZT_EQ_INT(zh_jnode_read(&el[1], &jv), ZJ_DOUBLE);
    ZT_CHECK(jv.d == -2.5);
    ZT_EQ_INT(zh_jnode_read(&el[2], &jv), ZJ_BOOL);
    ZT_CHECK(!jv.b);
    /* names longer than 31 bytes share a bucket; a full set refuses more */
    zh_jkeys big;
    zh_jkeys_init(&big);
    char names[ZH_JKEYS_MAX + 1][48];
    for (int i = 0; i <= ZH_JKEYS_MAX; i++) snprintf(names[i], sizeof names[i], "a_rather_long_field_name_number_%02d", i);
    for (int i = 0; i < ZH_JKEYS_MAX; i++) ZT_EQ_INT(zh_jkeys_add(&big, names[i], strlen(names[i])), i);
    ZT_EQ_INT(zh_jkeys_add(&big, names[ZH_JKEYS_MAX], strlen(names[ZH_JKEYS_MAX])), -1);
    ZT_EQ_INT(zh_jkeys_add(&big, names[7], strlen(names[7])), 7);
    lua_getglobal(L, "json");
    lua_getfield(L, -1, "view");
    lua_pushstring(L, "{\"a_rather_long_field_name_number_08\":8,\"x\":0,\"a_rather_long_field_name_number_07\":7}");
    ZT_EQ_INT(lua_pcall(L, 1, 1, 0), LUA_OK);
    zh_jnode longobj, lout[ZH_JKEYS_MAX];
    unsigned char lfound[ZH_JKEYS_MAX];
    ZT_CHECK(zh_jnode_of_view(L, -1, &longobj));
    ZT_EQ_INT(zh_jnode_fields(&longobj, &big, lout, lfound), 2);
    ZT_CHECK(lfound[7] && lfound[8] && !lfound[9] && zh_jnode_int(&lout[7]) == 7 && zh_jnode_int(&lout[8]) == 8);
    /* an array and an empty object give nothing */
    ZT_EQ_INT(zh_jnode_fields(&items[1], &ks, out, found), 0);
    ZT_CHECK(!found[0] && !found[1] && !found[6]);
    ZT_EQ_INT(zh_jnode_fields(&items[2], &ks, out, found), 0);
    ZT_CHECK(!found[0]);
    lua_settop(L, 0);
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    zh_jsonview_register(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setglobal(L, "json");
    lua_register(L, "pooled", pooled);
    ZT_RUN(scalars);
    ZT_RUN(nested_and_iteration);
    ZT_RUN(escapes);
    ZT_RUN(errors);
    ZT_RUN(totable);
    ZT_RUN(many_documents);
    ZT_RUN(reused_documents);
    ZT_RUN(fields_in_one_pass);
    lua_close(L);
    return ZT_DONE();
}
