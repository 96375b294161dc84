"""Row templates against the Lua helpers they stand for: a seeded, deterministic differential test.

docs/lua-api.md §7 promises that a template's conversions give exactly what the Lua helpers give for
the value json.view gives for the same field:

  as = "id"        text.id(v)
  as = "decimal"   text.decimal(v, scale), and no value when the result has more integer digits
                   than the Decimal column's precision leaves
  as = "datetime"  time.format(math.floor(time.parse(v, zone)), nil, zone); no value for a
                   non-string, "", an unparsable text or an instant time.format refuses
  as = "int"       math.tointeger(v), smaller than `min` -> min
  (default)        v itself, encoded as sink:add encodes it (a JSON null gives no value)

and that `each` reads a PHP-keyed object as qtickets_map.list does. Here thousands of generated
field values (integers around 2^53/2^63/2^64, money-like and awkward floats, decimal texts with
groups, signs, garbage, numeric strings, ISO-8601 times with and without offsets, impossible dates,
years 0000/9999, DST edges in Moscow and Berlin, booleans, nulls, nested values, missing fields)
go through `template:rows(view)` and through the helper; the expected line is what a constant
template (`value = <the helper's result>`, encoded like sink:add) makes. A value a column cannot
take must fail on both sides with the same reason.

Random template specs (unknown options, wrong types, huge column counts, deep paths, `each` on
non-lists, PHP keys like "01", "-0", "1e2", "") must be refused with a message or work, never crash:
the ASan build (ZHOST_BIN=build-asan/zhost) turns a memory error into a report, which fails here.

The seed is fixed, so a failure reproduces; the cases that found bugs are kept in FIXED_* below.
"""
import json
import os
import random
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

SEED = 20251129
N_VALUES = 10000  # items per run; every conversion sees every item
N_LISTS = 1500
N_SPECS = 400

TABLE = """CREATE TABLE {t} (k UInt32, s String, i64 Int64, u32 UInt32, d18 Decimal(18, 2),
d9 Decimal(9, 4), dt Nullable(DateTime('Europe/Moscow')), f64 Float64) ENGINE = MergeTree ORDER BY k"""

# Field values that found a discrepancy (or sit on an edge worth keeping), as raw JSON tokens.
FIXED_VALUES = [
    # as = "int": integral floats between 9.2e18 and 2^63 are integers for math.tointeger
    "9.22e18", "-9.223372036854775808e18", "9.2233720368547748e18", "9.223372036854775807e18",
    # as = "int": a numeric string longer than the template's scratch buffer
    json.dumps("0" * 250 + "17"), json.dumps(" " * 300 + "5"), json.dumps("1" + "0" * 300),
    # as = "datetime": a fraction that rounded time.parse's float up to the next second (the
    # template kept the second written; time.parse no longer rounds up)
    json.dumps("2025-11-01T12:00:00.9999999Z"), json.dumps("2025-11-01T12:00:59.999999999+03:00"),
    json.dumps("1969-12-31T23:59:59.99999999Z"), json.dumps("0000-01-01T00:00:00.9999999Z"),
    # as = "datetime": instants outside the years 0000-9999 (UTC) that time.format refuses (the
    # template wrote "0000-01-01 00:30:00", "-001-12-31 …" or raised on "10000-01-01 …")
    json.dumps("0000-01-01T00:30:00+01:00"), json.dumps("0000-01-01 00:30:00"), json.dumps("0000-01-01"),
    json.dumps("9999-12-31T23:59:59-05:00"), json.dumps("9999-12-31 23:59:59"), json.dumps("9999-12-31T23:00:00Z"),
    # as = "decimal": a carry that adds an integer digit
    json.dumps("99999.99995"), "99999.99995", json.dumps("9999999999999999.995"),
    # integers around 2^53, 2^63 and 2^64 (the largest a view takes)
    "9007199254740992", "9007199254740993", "-9007199254740993", "9007199254740993.0",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808", "18446744073709551615",
    json.dumps("9223372036854775807"), json.dumps("9223372036854775808"), json.dumps("-9223372036854775808"),
    json.dumps("0x7fffffffffffffff"), json.dumps("0xffffffffffffffff"), json.dumps("0x1p4"),
    "-0.0", "-0", "1e-400", "5e-324", "1.7976931348623157e308",
]

# PHP-keyed lists whose keys found a discrepancy with qtickets_map.list.
FIXED_LISTS = [
    {"9999999999999999999": {"k": 1}},  # above 2^63-1: no list (was read as key 9999…, overflowing)
    {"-9223372036854775808": {"k": 1}, "0": {"k": 2}},  # the smallest integer is a key
    {"9223372036854775807": {"k": 1}, "-9223372036854775807": {"k": 2}},
    {"9223372036854775808": {"k": 1}},
    {"-0": {"k": 1}}, {"01": {"k": 1}}, {"1e2": {"k": 1}}, {"": {"k": 1}}, {" 1": {"k": 1}}, {"+1": {"k": 1}},
]


# ---------------------------------------------------------------------------------- generators

def jstr(s, r):
    return json.dumps(s, ensure_ascii=r.random() < 0.5)


def num_token(r):
    c = r.randrange(13)
    sign = r.choice(["", "-"])
    if c == 0:
        return str(r.randint(-1000, 1000))
    if c == 1:
        return sign + str(2 ** 53 + r.randint(-3, 3))
    if c == 2:
        return r.choice([str(2 ** 63 - 1 - r.randint(0, 3)), str(-2 ** 63 + r.randint(0, 3)), str(2 ** 63 + r.randint(0, 3))])
    if c == 3:
        return str(2 ** 64 - 1 - r.randint(0, 5))
    if c == 4:  # money
        return "%s%d.%02d" % (sign, r.randint(0, 10 ** r.randint(1, 9)), r.randint(0, 99))
    if c == 5:  # many digits
        return repr(r.uniform(-1e6, 1e6))
    if c == 6:  # tiny
        return "%s%de-%d" % (sign, r.randint(1, 9), r.randint(3, 330))
    if c == 7:  # huge
        return "%s%d.%de%d" % (sign, r.randint(1, 9), r.randint(0, 999), r.randint(13, 307))
    if c == 8:
        return r.choice(["-0.0", "-0", "0.0", "-0e0", "0e-5", "0", "0.000"])
    if c == 9:
        return r.choice(["1E+2", "2.5e-3", "1e3", "12e-1", "1.0e1", "125e-3", "1e0", "7E2", "-3e+0"])
    if c == 10:  # floats near 2^53 and 2^63
        return r.choice(["9007199254740993.0", "9.007199254740993e15", "9.22e18", "9.2233720368547748e18",
                         "9.223372036854775807e18", "-9.223372036854775808e18", "-9.2233720368547758e18",
                         "1.8446744073709552e19", "9.2e18", "-9.2e18", "9.21e18", "-9.2200000000000001e18",
                         "4.5e15", "1e16", "123456789012345678.0"])
    if c == 11:  # k/100 as doubles: decimal rounding of binary fractions
        return r.choice(["1222.035", "0.005", "2.675", "1.005", "100000000000000.5", "0.125", "1.115", "-0.005",
                         "99999.99995", "99999.9999", "1234567890123456.7", "12345678901234567.8", "0.045"])
    return "%s%d.%s" % (sign, r.randint(0, 99999), "".join(r.choice("0123456789") for _ in range(r.randint(1, 20))))


GROUPS = [" ", "\u00a0", "\u202f", "\u2009", "'", "  ", ",", ".", "_"]


def decimal_text(r):
    sign = r.choice(["", "", "", "-", "+", "\u2212", "--", "- ", "+-"])
    nd = r.choice([0, 1, 1, 2, 3, 4, 5, 6, 7, 9, 12, 16, 17, 18, 20, 25, 40, 97])
    digits = "".join(r.choice("0123456789") for _ in range(nd))
    if r.random() < 0.2:
        digits = "0" * r.randint(1, 5) + digits
    if r.random() < 0.3 and len(digits) > 3:
        g = r.choice(GROUPS)
        parts = []
        while len(digits) > 3:
            parts.insert(0, digits[-3:])
            digits = digits[:-3]
        parts.insert(0, digits)
        digits = g.join(parts)
    s = sign + digits
    if r.random() < 0.6:
        s += r.choice([",", "."]) + "".join(r.choice("0123456789") for _ in range(r.choice([0, 1, 2, 2, 3, 4, 5, 8, 40])))
    if r.random() < 0.05:
        s += r.choice(["e3", "E-2", "e", "e+1"])
    if r.random() < 0.2:
        ws = r.choice([" ", "\t", "\u00a0", "\n", "\u2009", "\ufeff"])
        s = ws + s + r.choice(["", ws])
    if r.random() < 0.1 and s:
        i = r.randrange(len(s) + 1)
        s = s[:i] + r.choice(["a", "$", "€", " руб", "%", "_", ",", ".", " "]) + s[i:]
    return s


INTISH = ["0x10", " 4 ", "2.0", "1e3", "", "  ", "-0", "+5", "0x", "1_000", "inf", "nan", "-inf", "0x7fffffffffffffff",
          "0xffffffffffffffff", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
          "-9223372036854775809", "1e400", "0x1p4", "\t12\n", "12\u0000", "3.", ".5", "1e18", "1e19", "5e-1", "-2.5",
          "0X1F", "0x-1", "- 1", "1 2", "١٢", "\u00a012", "1e+2", "00012", "-00", "4.0000000000000001", "12abc"]


def intish_text(r):
    c = r.randrange(5)
    if c == 0:
        return r.choice(INTISH)
    if c == 1:
        return r.choice(["", " ", "  ", "\t"]) + str(r.randint(-10 ** r.randint(1, 19), 10 ** r.randint(1, 19))) + \
            r.choice(["", " ", "\n"])
    if c == 2:
        return "0x%x" % r.randint(0, 2 ** r.choice([8, 32, 63, 64]) - 1)
    if c == 3:
        return "%d.%s" % (r.randint(-999, 999), r.choice(["0", "00", "5", "000001"]))
    return "%de%d" % (r.randint(-99, 99), r.randint(-3, 20))


ID_CHARS = "aZ09-_ .:/\"\\\n\t\r\u0000\u0001\u001f\u007fЖ€𝄞\u2028"


def id_text(r):
    return "".join(r.choice(ID_CHARS) for _ in range(r.randint(0, 12)))


# DST edges: Moscow (summer time until 2011, +4 until 26 Oct 2014), Berlin.
DST_EDGES = [(2010, 3, 28, 2), (2010, 10, 31, 2), (2011, 3, 27, 2), (2014, 10, 26, 1), (2025, 3, 30, 2),
             (2025, 10, 26, 2), (2024, 3, 31, 2), (2024, 10, 27, 2), (1981, 4, 1, 0), (1991, 3, 31, 2)]
OFFSETS = ["Z", "z", "+03:00", "+0300", "+03", "-05:00", " +01:00", "+00:00", "-00:30", "+14:00", "+24:00", "+23:59",
           "+3:00", "+03:0", "-12", "+05:45", " Z", "+01:00 ", "UTC", "+", "-0000"]


def iso_text(r):
    c = r.randrange(10)
    if c == 0:
        return r.choice(["01.11.2025", "2025/11/01", "2025-1-1", "20251101T120000Z", "2025-11-01T24:00:00",
                         "2025-11-01T12:60", "2025-11-01T12:00:60", "2025-11-01T", "2025-11-01T12", "2025-11-01 12:00:00.",
                         "2025-02-29", "2024-02-29", "2025-02-30", "2025-04-31", "2025-13-01", "2025-00-10", "0000-02-29",
                         "garbage", "", " ", "2025-11-01T12:00:00+03:00 trailing", "\u00a02025-11-01", "12:00:00",
                         "2025-11-01T12:00:00Z\u0000"])
    if c <= 3:  # around a DST change, in the zone's wall clock
        y, mo, d, h = r.choice(DST_EDGES)
        s = "%04d-%02d-%02d%s%02d:%02d:%02d" % (y, mo, d, r.choice(["T", " "]), h + r.randint(-1, 1), r.randint(0, 59),
                                                r.randint(0, 59))
        if r.random() < 0.3:
            s += r.choice(OFFSETS[:8])
        return s
    y = r.choice([0, 1, 1900, 1969, 1970, 1971, 2000, 2025, 2038, 2105, 2106, 9998, 9999, r.randint(0, 9999)])
    mo = r.choice([r.randint(1, 12)] * 8 + [0, 13])
    d = r.choice([r.randint(1, 28)] * 6 + [29, 30, 31, 0, 32])
    s = "%04d-%02d-%02d" % (y, mo, d)
    if r.random() < 0.85:
        s += r.choice(["T", "T", " ", "t"])
        s += "%02d:%02d" % (r.choice([r.randint(0, 23)] * 9 + [24, 25]), r.choice([r.randint(0, 59)] * 9 + [60]))
        if r.random() < 0.85:
            s += ":%02d" % r.choice([r.randint(0, 59)] * 9 + [60, 61])
            if r.random() < 0.35:
                s += r.choice([".", ".", ","]) + r.choice(["9999999", "999999999", "5", "000", "924450", "99", "".join(
                    r.choice("0123456789") for _ in range(r.randint(1, 12)))])
        if r.random() < 0.6:
            s += r.choice(OFFSETS)
    if r.random() < 0.1:
        ws = r.choice([" ", "\t", "\n"])
        s = ws + s + ws
    return s


def nested(r, depth=0):
    c = r.randrange(6)
    if depth > 2 or c == 0:
        return r.choice(["{}", "[]", "null", "1", "\"x\""])
    if c <= 2:
        return "{%s}" % ", ".join("%s: %s" % (jstr(r.choice(["a", "f", "0", "", "x.y"]), r), nested(r, depth + 1))
                                  for _ in range(r.randint(0, 3)))
    return "[%s]" % ", ".join(nested(r, depth + 1) for _ in range(r.randint(0, 3)))


def value_token(r):
    """One field value as JSON text, or None for a missing field."""
    c = r.random()
    if c < 0.25:
        return num_token(r)
    if c < 0.42:
        return jstr(decimal_text(r), r)
    if c < 0.52:
        return jstr(intish_text(r), r)
    if c < 0.74:
        return jstr(iso_text(r), r)
    if c < 0.80:
        return jstr(id_text(r), r)
    if c < 0.83:
        return r.choice(["true", "false"])
    if c < 0.87:
        return "null"
    if c < 0.92:
        return nested(r)
    return None


def values_page(r):
    """{"items": [{"k": i, "f": …, "g": …, "n": {"f": …}}, …]}: f is the field under test, g the first
    of two paths (mostly missing), n.f a nested path."""
    tokens = list(FIXED_VALUES)
    while len(tokens) < N_VALUES:
        tokens.append(value_token(r))
    items = []
    for k, tok in enumerate(tokens, 1):
        fields = ['"k": %d' % k]
        if tok is not None:
            fields.append('"f": ' + tok)
        g = r.random()
        if g < 0.1:
            fields.append('"g": null')
        elif g < 0.25:
            gt = value_token(r)
            if gt is not None:
                fields.append('"g": ' + gt)
        n = r.random()
        if n < 0.7:
            inner = value_token(r) if r.random() < 0.5 else tok
            fields.append('"n": {%s}' % ('"f": ' + inner if inner is not None else ""))
        elif n < 0.8:
            fields.append('"n": ' + r.choice(["null", "[1, 2]", "\"f\"", "{\"g\": 1}", "7"]))
        items.append("{%s}" % ", ".join(fields))
    return tokens, '{"items": [%s]}' % ",\n".join(items)


ODD_KEYS = ["01", "-0", "1e2", "", " 1", "1 ", "+1", "0x1", "1.0", "9223372036854775807", "9223372036854775808",
            "-9223372036854775808", "-9223372036854775809", "9999999999999999999", "18446744073709551616", "a", "١",
            "1\u0000", "-", "00", "-01", "99999999999999999999"]


def list_value(r):
    def item():
        c = r.random()
        if c < 0.6:
            return {"k": r.choice([r.randint(-5, 1000), "7", 2.5, None, True, "x"])}
        if c < 0.65:
            return {"j": 1}
        if c < 0.75:
            return [1, {"k": 2}]
        return r.choice([None, 1, "s", True, 2.5, {}])

    c = r.random()
    if c < 0.35:
        return [item() for _ in range(r.randint(0, 5))]
    if c < 0.85:
        keys = set()
        for _ in range(r.randint(0, 5)):
            keys.add(r.choice(ODD_KEYS) if r.random() < 0.12 else str(r.randint(-3, 15)))
        keys = sorted(keys)  # a set's order changes with PYTHONHASHSEED
        r.shuffle(keys)
        return {k: item() for k in keys}
    return r.choice(["list", 5, None, True, "MISSING", {"a": {"k": 1}}])


# ---------------------------------------------------------------------------------- Lua side

LUA_COMMON = r'''
local sink = assert(ch.sink(TABLE))
local null, isview = json.null, json.isview
local EMPTY = json.view("{}")
local RAISES = setmetatable({}, {__tostring = function() return "<raises>" end})

local function esc(s)
  return (tostring(s):gsub("[%c\\\"\128-\255]", function(c) return string.format("\\%03d", c:byte()) end))
end

-- The reason after "of <table>: " in a template's error, without the "value " a constant's has.
local function reason(err)
  err = tostring(err)
  local r = err:match("of [%w_]+%.[%w_]+: (.*)$") or err
  return (r:gsub("^value ", ""))
end

-- The line a template with only `col` makes when that column's value is v (a Lua value as a
-- helper returns it; nil: no value): a constant template encodes v exactly as sink:add does.
local cache = {}
local function keyof(v)
  if math.type(v) == "float" then return "f" .. string.format("%a", v) end
  return type(v):sub(1, 1) .. tostring(v)
end
local function expected(col, v)
  if v == nil then return true, "{}\n" end
  if v == RAISES then return false, RAISES end
  local key = col .. "\0" .. keyof(v)
  local hit = cache[key]
  if not hit then
    local ok, t = pcall(sink.template, sink, {columns = {[col] = {value = v}}})
    if ok then hit = {true, (t:rows(EMPTY))} else hit = {false, reason(t)} end
    cache[key] = hit
  end
  return hit[1], hit[2]
end
'''

LUA_CONVERSIONS = LUA_COMMON + r'''
local page = assert(json.view(assert(io.read_file(PAGE))))

-- The helpers, exactly as docs/lua-api.md §7 says the conversions behave.
local function h_id(v) return text.id(v) end
local function h_int(min)
  return function(v)
    local x = math.tointeger(v)
    if x and min and x < min then x = min end
    return x
  end
end
local function h_decimal(scale, int_digits)
  return function(v)
    local t = type(v)
    if t ~= "number" and t ~= "string" then return nil end
    local m = text.decimal(v, scale)
    if m and int_digits and #m:match("^%-?(%d*)") > int_digits then return nil end
    return m
  end
end
local function h_datetime(zone)
  return function(v)
    if type(v) ~= "string" or v == "" then return nil end
    local e = time.parse(v, zone)
    if not e then return nil end
    return (time.format(math.floor(e), nil, zone))
  end
end
local function h_value(v)
  if v == nil or v == null then return nil end
  if isview(v) then return RAISES end
  return v
end

local function field(item, path)
  local v = item
  for part in path:gmatch("[^.]+") do
    if not isview(v) then return nil end
    v = v[part]
  end
  return v
end

local combos = {
  {"id", "s", {"f", as = "id"}, h_id},
  {"id_nested", "s", {"n.f", as = "id"}, h_id},
  {"id_two_paths", "s", {"g", "f", as = "id"}, h_id},
  {"int", "i64", {"f", as = "int"}, h_int()},
  {"int_min0_u32", "u32", {"f", as = "int", min = 0}, h_int(0)},
  {"int_u32", "u32", {"f", as = "int"}, h_int()},
  {"int_min_neg", "i64", {"f", as = "int", min = -5}, h_int(-5)},
  {"int_two_paths", "i64", {"g", "f", as = "int"}, h_int()},
  {"decimal_18_2", "d18", {"f", as = "decimal"}, h_decimal(2, 16)},
  {"decimal_9_4", "d9", {"f", as = "decimal"}, h_decimal(4, 5)},
  {"decimal_9_4_scale0", "d9", {"f", as = "decimal", scale = 0}, h_decimal(0, 5)},
  {"decimal_text", "s", {"f", as = "decimal"}, h_decimal(nil, nil)},
  {"decimal_text_scale3", "s", {"f", as = "decimal", scale = 3}, h_decimal(3, nil)},
  {"decimal_nested", "d18", {"n.f", as = "decimal"}, h_decimal(2, 16)},
  {"decimal_two_paths", "d18", {"g", "f", as = "decimal"}, h_decimal(2, 16)},
  {"datetime_moscow", "dt", {"f", as = "datetime"}, h_datetime("Europe/Moscow")},
  {"datetime_berlin", "dt", {"f", as = "datetime"}, h_datetime("Europe/Berlin"), "Europe/Berlin"},
  {"datetime_text_utc", "s", {"f", as = "datetime"}, h_datetime("UTC"), "UTC"},
  {"datetime_two_paths", "dt", {"g", "f", as = "datetime"}, h_datetime("Europe/Moscow")},
  {"value_f64", "f64", {"f"}, h_value},
  {"value_s", "s", {"f"}, h_value},
  {"value_i64", "i64", {"f"}, h_value},
  {"value_u32", "u32", {"f"}, h_value},
  {"value_d18", "d18", {"f"}, h_value},
  {"value_dt", "dt", {"f"}, h_value},
  {"value_two_paths", "s", {"g", "f"}, h_value},
}

for _, c in ipairs(combos) do
  local shown = 0
  local name, col, spec, helper, zone = c[1], c[2], c[3], c[4], c[5]
  local tpl = sink:template{columns = {[col] = spec}, zone = zone}
  local paths = {}
  for i = 1, #spec do paths[i] = spec[i] end
  local st = {values = 0, none = 0, raises = 0, bad = 0}
  for _, item in ipairs(page.items) do
    local want
    for _, p in ipairs(paths) do
      want = helper(field(item, p))
      if want ~= nil then break end
    end
    local eok, eline = expected(col, want)
    local gok, gline = pcall(tpl.rows, tpl, item)
    if not gok then
      gline = reason(gline)
      if eline == RAISES and gline:find("^a JSON object or array") then gline = RAISES end
    end
    if eok ~= gok or eline ~= gline then
      st.bad = st.bad + 1
      if shown < 6 then
        shown = shown + 1
        print(string.format("MISMATCH %s k=%d helper=%s want=%s got=%s", name, item.k, esc(want),
                            esc(eok and eline or "raises: " .. tostring(eline)),
                            esc(gok and gline or "raises: " .. tostring(gline))))
      end
    elseif not eok then st.raises = st.raises + 1
    elseif want == nil then st.none = st.none + 1
    else st.values = st.values + 1 end
  end
  print(string.format("STATS %s values=%d none=%d raises=%d bad=%d", name, st.values, st.none, st.raises, st.bad))
end
print("DONE")
'''

LUA_LISTS = LUA_COMMON + r'''
local map = require("qtickets_map")
local page = assert(json.view(assert(io.read_file(PAGE))))
local tpl = sink:template{each = "l", columns = {i64 = {"k", as = "int"}}}
local shown, lists, rows, bad = 0, 0, 0, 0
for _, o in ipairs(page.orders) do
  local want, n = {}, 0
  for _, b in ipairs(map.list(o.l) or {}) do
    if map.is_obj(b) then
      n = n + 1
      local _, line = expected("i64", math.tointeger(isview(b) and b.k or nil))
      want[n] = line
    end
  end
  want = table.concat(want)
  local ok, got, gn = pcall(tpl.rows, tpl, o)
  if not ok or got ~= want or gn ~= n then
    bad = bad + 1
    if shown < 40 then
      shown = shown + 1
      print(string.format("MISMATCH list k=%d want=%d:%s got=%s:%s", o.k, n, esc(want), tostring(gn), esc(got)))
    end
  end
  lists, rows = lists + 1, rows + n
end
print(string.format("STATS lists=%d rows=%d bad=%d", lists, rows, bad))
print("DONE")
'''


# ---------------------------------------------------------------------------------- random specs

def lua_str(s):
    out = []
    for b in s.encode("utf-8"):
        out.append(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else "\\%03d" % b)
    return '"%s"' % "".join(out)


COLUMNS = ["k", "s", "i64", "u32", "d18", "d9", "dt", "f64"]
ANY = ["1", "0", "-1", "2.5", "1e100", "math.huge", "-math.huge", "0/0", "math.maxinteger", "math.mininteger", '"x"', '""',
       '"2"', '"12.50"', '"1 234,50"', '"2025-11-01 12:00:00"', '"-5"', "true", "false", "{}", "{1, 2}", "json.null",
       "EMPTY", "print", "coroutine.create(print)", 'string.rep("9", 5000)', '"\\0"', "-0.0", "2^63",
       '"18446744073709551615"']
CONVS = ['"value"', '"id"', '"decimal"', '"datetime"', '"int"']
BAD_CONVS = ['"Decimal"', '""', '"int "', "1", "true", "{}", "json.null", "print", '"DATETIME"', 'string.rep("x", 3000)']
OPTIONS = ["as", "scale", "min", "default", "default_from", "value"]
BAD_OPTIONS = ["Scale", "defualt", "each", "zone", "columns", "__index", "", "as ", "[0]", "[-1]", "[1.5]", "[true]",
               "[EMPTY]"]
PATHS = ['"f"', '"g"', '"n.f"', '"^f"', '"^n.f"', '"k"', '"items"', '"l"', '"^l"', '"a.a.a"']
BAD_PATHS = ['""', '"^"', '"."', '"a."', '".a"', '"a..b"', '"^^f"', 'string.rep("a.", 3000) .. "a"', '"f\\0g"', '"ж"',
             'string.rep("x", 10000)', '"items.1"', "5", "true", "{}", "json.null", 'string.rep("a.", 999) .. "f"']
ODD_KEYS_LUA = ["01", "-0", "1e2", "", " 1", "+1", "0x1", "9223372036854775808", "-9223372036854775808",
                "99999999999999999999", "1\u0000"]


def opt_key(name):
    return name if name.startswith("[") else "[%s]" % lua_str(name)


def column_spec(r):
    if r.random() < 0.15:
        return r.choice(PATHS + BAD_PATHS)
    if r.random() < 0.03:
        return r.choice(["5", "true", "json.null", "print"])
    parts = [r.choice(PATHS) if r.random() < 0.85 else r.choice(BAD_PATHS) for _ in range(r.choice([0, 1, 1, 1, 2, 3]))]
    if r.random() < 0.02:
        parts.append("table.unpack(MANY_PATHS)")
    for _ in range(r.choice([0, 1, 1, 2, 3, 4])):
        c = r.random()
        if c < 0.35:
            parts.append("as = %s" % (r.choice(CONVS) if r.random() < 0.8 else r.choice(BAD_CONVS)))
        elif c < 0.85:
            name = r.choice(OPTIONS)
            if name == "default_from":
                val = lua_str(r.choice(COLUMNS + ["nope"])) if r.random() < 0.8 else r.choice(ANY)
            elif name == "scale":
                val = r.choice(["0", "2", "4", "38", "39", "-1", "2.5", '"2"', "{}", "math.huge", "0/0"])
            elif name == "min":
                val = r.choice(["0", "-5", "1", "2.5", '"0"', "true", "math.maxinteger", "math.mininteger", "2^63"])
            else:
                val = r.choice(ANY)
            parts.append("%s = %s" % (opt_key(name), val))
        else:
            parts.append("%s = %s" % (opt_key(r.choice(BAD_OPTIONS)), r.choice(ANY)))
    return "{%s}" % ", ".join(parts)


FITS = {"k": ["1", "0"], "s": ['"x"', '""', "5"], "i64": ["1", "-1", '"12"'], "u32": ["0", "7"],
        "d18": ['"0.00"', "1.5", "0"], "d9": ['"1.2345"', "2"], "dt": ["json.null", '"2025-11-01 12:00:00"', "0"],
        "f64": ["1.5", '"1e3"']}


def fitting_column_spec(r, name, names):
    """A column spec that mostly compiles: the refusals above are only part of the story."""
    if r.random() < 0.1:
        return "{value = %s}" % r.choice(FITS[name])
    parts = [r.choice(PATHS) for _ in range(r.choice([1, 1, 2]))]
    conv = r.choice(CONVS)
    parts.append("as = " + conv)
    if conv == '"int"' and r.random() < 0.5:
        parts.append("min = " + r.choice(["0", "-5", "3"]))
    if conv == '"decimal"' and r.random() < 0.3:
        parts.append("scale = " + r.choice(["0", "2", "4"]))
    c = r.random()
    if c < 0.3:
        parts.append("default = " + r.choice(FITS[name]))
    elif c < 0.4:
        parts.append("default_from = " + lua_str(r.choice(names)))
    return "{%s}" % ", ".join(parts)


def template_spec(r):
    """(sink, the Lua constructor of a template spec)."""
    fields = []
    if r.random() < 0.08:  # the wide table: column counts around the 256 limit
        n = r.choice([1, 255, 256, 257, 300])
        path = r.choice(['"f"', '"^f"', '"^n.f"', '"items"'])
        fields.append("columns = WIDE(%d, %s, %s)" % (n, path, r.choice(['"value"', '"id"', '"int"', '"decimal"'])))
        sink = "wide"
    elif r.random() < 0.5:
        names = r.sample(COLUMNS, r.randint(1, len(COLUMNS)))
        fields.append("columns = {%s}" % ", ".join("%s = %s" % (n, fitting_column_spec(r, n, names)) for n in names))
        sink = "diff"
    else:
        cols = []
        for _ in range(r.choice([0, 1, 1, 2, 3, 5, 8])):
            name = r.choice(COLUMNS) if r.random() < 0.9 else r.choice(["nope", "", "K", "s ", "_ver"])
            cols.append("%s = %s" % (opt_key(name), column_spec(r)))
        if r.random() < 0.03:
            cols.append("[1] = %s" % lua_str("f"))
        fields.append("columns = {%s}" % ", ".join(cols) if r.random() < 0.97 else "columns = " + r.choice(ANY))
        sink = "diff"
    if r.random() < 0.5:
        fields.append("each = " + r.choice(['"items"', '"l"', '"n"', '"f"', '"items.l"'] * 6 + BAD_PATHS + ['"^l"']))
    if r.random() < 0.35:
        fields.append("zone = " + r.choice(['"Europe/Berlin"', '"UTC"', '"Europe/Moscow"', '""', '"Mars/Base"',
                                            '"../../etc/passwd"', '"Europe/Moscow\\0x"', 'string.rep("A", 5000)', "5",
                                            "{}", "true", '"/etc/passwd"', '"Europe/"', '"."']))
    if r.random() < 0.05:
        fields.append(r.choice(["colums = {}", "[1] = 1", "[EMPTY] = 1", 'Each = "l"']))
    r.shuffle(fields)
    return sink, "{%s}" % ", ".join(fields)


def fuzz_docs(r):
    """The documents the random templates run over: lists of every kind, PHP keys, deep nesting."""
    docs = []
    for _ in range(24):
        d = {}
        for key in ("f", "g", "k"):
            if r.random() < 0.7:
                d[key] = json.loads(r.choice(['1', '-7', '2.5', '"12,50"', '"2025-11-01T12:00:00Z"', 'null', 'true',
                                              '{}', '[1]', '"x"', '18446744073709551615', '1e300', '"0x10"']))
        if r.random() < 0.6:
            d["n"] = {"f": r.choice([1, "2", None, [1], {"f": 1}])}
        for key in ("items", "l"):
            c = r.random()
            if c < 0.4:
                d[key] = [dict(d) if r.random() < 0.7 else r.choice([None, 1, "s", [dict(d)]])
                          for _ in range(r.randint(0, 4))]
            elif c < 0.8:
                keys = {r.choice(ODD_KEYS_LUA) if r.random() < 0.3 else str(r.randint(-2, 9))
                        for _ in range(r.randint(0, 4))}
                d[key] = {k: dict(d) for k in sorted(keys)}
            else:
                d[key] = r.choice([None, 5, "list", True])
        docs.append(d)
    deep = '{"a": ' * 999 + '{"f": 1}' + "}" * 999  # what string.rep("a.", 999) .. "f" finds
    return "[%s, %s]" % (", ".join(json.dumps(d) for d in docs), deep)


LUA_SPECS_HEAD = LUA_COMMON + r'''
local sinks = {diff = sink, wide = assert(ch.sink(WIDE_TABLE))}
local docs = assert(json.view(assert(io.read_file(PAGE))))
local MANY_PATHS = {}
for i = 1, 300 do MANY_PATHS[i] = "p" .. i end
local function WIDE(n, path, as)
  local cols = {}
  for i = 0, n - 1 do cols[string.format("c%03d", i)] = {path, as = as} end
  return cols
end
local SPECS = {}
'''

LUA_SPECS_TAIL = r'''
local compiled, refused, rows_ok, rows_err, odd = 0, 0, 0, 0, 0
local function is_misuse(err)
  return type(err) == "string" and err:find("^sink:template: ")
end
for i, mk in ipairs(SPECS) do
  local which, spec = mk()
  local s = sinks[which]
  local ok, tpl = pcall(s.template, s, spec)
  if ok then
    compiled = compiled + 1
    for _, d in ipairs(docs) do
      for _, call in ipairs({tpl.rows, tpl.add}) do
        local rok, err = pcall(call, tpl, d)
        if rok then rows_ok = rows_ok + 1
        elseif type(err) == "string" and err:find("^column '") then rows_err = rows_err + 1
        else odd = odd + 1; print("ODD run " .. i .. ": " .. esc(err)) end
      end
    end
    for _, bad in ipairs({5, "x", {}, json.null, false}) do
      local rok, err = pcall(tpl.rows, tpl, bad)
      if rok or not tostring(err):find("json view", 1, true) then odd = odd + 1; print("ODD arg " .. i .. ": " .. esc(err)) end
    end
  elseif is_misuse(tpl) then
    refused = refused + 1
  else
    odd = odd + 1
    print("ODD compile " .. i .. ": " .. esc(tpl))
  end
end
-- the deep document: a 1000-part path finds its value
assert(sink:template{columns = {i64 = {string.rep("a.", 999) .. "f", as = "int"}}}:rows(docs[#docs]) == '{"i64":1}\n')
-- a closed document: the template refuses it instead of reading freed memory
do
  local t = sink:template{each = "items", columns = {s = {"f", as = "id"}}}
  local v, items
  do
    local doc <close> = json.view('{"items": [{"f": 1}]}')
    v, items = doc, doc.items
  end
  local rok, err = pcall(t.rows, t, v)
  assert(not rok and tostring(err):find("closed", 1, true), tostring(err))
  rok, err = pcall(t.add, t, items)
  assert(not rok and tostring(err):find("closed", 1, true), tostring(err))
end
-- the limits: 256 columns, 255 '^' paths; columns past the 256th of a table still work
local wide = sinks.wide
local one = json.view('{"f": "v"}')
local text, n = wide:template{columns = WIDE(256, "f", "value")}:rows(one)
assert(n == 1 and select(2, text:gsub('"v"', "")) == 256, text)
local ok, err = pcall(wide.template, wide, {columns = WIDE(257, "f", "value")})
assert(not ok and err:find("more than 256 columns", 1, true), err)
ok, err = pcall(wide.template, wide, {columns = WIDE(256, "^f", "value")})
assert(not ok and err:find("more than 255 '^' paths", 1, true), err)
text = wide:template{columns = WIDE(255, "^f", "id")}:rows(one)
assert(select(2, text:gsub('"v"', "")) == 255, text)
text = wide:template{columns = {c299 = "f", c000 = {value = "x"}}}:rows(one)
assert(text == '{"c000":"x","c299":"v"}\n', text)
print(string.format("STATS compiled=%d refused=%d rows_ok=%d rows_err=%d odd=%d", compiled, refused, rows_ok,
                    rows_err, odd))
print("DONE")
'''


class RowTemplateDiff(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        self.table = "%s.diff" % self.db
        zhtest.ch(TABLE.format(t=self.table))

    def run_lua(self, body, page_text, *args):
        page = os.path.join(self.tmp, "page.json")
        with open(page, "w") as fh:
            fh.write(page_text)
        text = "-- zhost: job=rowtpl_diff\nlocal TABLE, PAGE = %s, %s\n%s" % (
            json.dumps(self.table), json.dumps(page), body)
        path = self.script("rowtpl_diff.lua", text)
        r = self.zhost("run", path, "--dry-run", *args,
                       env={"ZHOST_LUA_PATH": os.path.join(zhtest.SOURCE_DIR, "scripts", "lib")})
        for bad in ("Sanitizer", "runtime error:"):
            self.assertNotIn(bad, r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("DONE", r.stdout, r.stderr[-3000:])
        return r.stdout

    def test_conversions_give_what_the_lua_helpers_give(self):
        rnd = random.Random(SEED)
        tokens, page = values_page(rnd)
        out = self.run_lua(LUA_CONVERSIONS, page)
        mismatches = [l for l in out.splitlines() if l.startswith("MISMATCH")]
        shown = []
        for l in mismatches:
            k = int(re.search(r" k=(\d+)", l).group(1))
            shown.append("%s\n    field f: %s" % (l, tokens[k - 1]))
        self.assertEqual(mismatches, [], "\n".join(shown))
        stats = {}
        for l in out.splitlines():
            if l.startswith("STATS "):
                f = l.split()
                stats[f[1]] = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in f[2:]}
        self.assertEqual(len(stats), 26, out)
        for name, st in stats.items():
            with self.subTest(conversion=name):
                # every conversion saw thousands of values, and both outcomes
                self.assertEqual(sum(st.values()), len(tokens))
                self.assertGreater(st["values"], 300, st)
                if not name.startswith("id"):
                    self.assertGreater(st["none"], 100, st)
        for name in ("int_u32", "value_f64", "value_i64", "value_u32", "value_d18", "value_dt"):
            self.assertGreater(stats[name]["raises"], 20, (name, stats[name]))

    def test_each_reads_lists_as_qtickets_map_list(self):
        rnd = random.Random(SEED + 1)
        orders = []
        for k, l in enumerate(FIXED_LISTS + [list_value(rnd) for _ in range(N_LISTS)], 1):
            o = {"k": k}
            if l != "MISSING":
                o["l"] = l
            orders.append(o)
        out = self.run_lua(LUA_LISTS, json.dumps({"orders": orders}))
        mismatches = [l for l in out.splitlines() if l.startswith("MISMATCH")]
        self.assertEqual(mismatches, [], "\n".join(mismatches))
        st = dict(kv.split("=") for kv in out.split("STATS ")[1].split("\n")[0].split())
        self.assertEqual(int(st["lists"]), len(orders))
        self.assertGreater(int(st["rows"]), 1500)

    def test_random_specs_are_refused_or_work_never_crash(self):
        rnd = random.Random(SEED + 2)
        wide = "%s.wide" % self.db
        zhtest.ch("CREATE TABLE %s (%s) ENGINE = MergeTree ORDER BY c000"
                  % (wide, ", ".join("c%03d String" % i for i in range(300))))
        specs = [template_spec(rnd) for _ in range(N_SPECS)]
        body = "local WIDE_TABLE = %s\n%s" % (json.dumps(wide), LUA_SPECS_HEAD)
        body += "".join("SPECS[%d] = function() return %s, %s end\n" % (i + 1, json.dumps(w), spec)
                        for i, (w, spec) in enumerate(specs))
        out = self.run_lua(body + LUA_SPECS_TAIL, fuzz_docs(rnd))
        odd = [l for l in out.splitlines() if l.startswith("ODD")]
        self.assertEqual(odd, [], "\n".join(odd[:40]))
        st = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in out.split("STATS ")[1].split("\n")[0].split()}
        self.assertEqual(st["compiled"] + st["refused"], N_SPECS)
        # the generator makes both kinds, and compiled templates both make rows and refuse values
        self.assertGreater(st["compiled"], 40, st)
        self.assertGreater(st["refused"], 150, st)
        self.assertGreater(st["rows_ok"], 1000, st)
        self.assertGreater(st["rows_err"], 50, st)
        # Uncaught, a refused spec ends the run like any script error: exit 1 and one reason line.
        for _, spec in [s for s in specs if s[0] == "diff"][:48:8]:
            with self.subTest(spec=spec[:200]):
                path = self.script("rowtpl_misuse.lua", "-- zhost: job=rowtpl_misuse\nlocal EMPTY = json.view('{}')\n"
                                   "local sink = assert(ch.sink(%s))\nlocal t = sink:template(%s)\n"
                                   "t:rows(json.view('{\"items\": [{\"f\": 1}], \"f\": {}}'))\n"
                                   % (json.dumps(self.table), spec))
                r = self.zhost("run", path, "--dry-run")
                for bad in ("Sanitizer", "runtime error:"):
                    self.assertNotIn(bad, r.stderr)
                self.assertIn(r.returncode, (0, 1), r.stderr)  # never a signal
                if r.returncode == 1:
                    last = r.stderr.strip().splitlines()[-1]
                    self.assertRegex(last, r"^zhost: rowtpl_misuse failed: \S+rowtpl_misuse\.lua:\d+: ")


if __name__ == "__main__":
    unittest.main()
