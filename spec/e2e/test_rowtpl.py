"""Row templates (sink:template, host/rowtpl.c, docs/lua-api.md): a template must make exactly the
rows the equivalent Lua mapping makes — here qtickets_map.order_rows, the real loader's mapping —
for every type drift the QTickets docs list, and fail clearly on misuse. Real ClickHouse: both
mappings load their own table and the tables are compared row by row."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

# The template under test: qtickets_map.basket_template (scripts/lib), which bench/ingest.lua uses.
TEMPLATE = r'''
local null = json.null
local basket_template = require("qtickets_map").basket_template
'''

BIG = "18446744073709551615"  # above 2^63-1: json.view gives its digits as a string


def order(oid, baskets, **kw):
    o = {"id": oid, "event_id": 33, "payed": 1, "payed_at": "2025-11-01T12:00:00+03:00",
         "created_at": "2025-11-01T11:59:00+03:00", "baskets": baskets}
    o.update(kw)
    return o


def basket(bid, **kw):
    b = {"id": bid, "show_id": 7, "price": 1500, "original_price": 1700, "quantity": 1,
         "deleted_at": None, "refunded_at": None, "refunded_amount": None}
    b.update(kw)
    return b


def drift_page():
    """Every drift of /work/shared/api/qtickets.md the basket mapping meets, one basket each."""
    n = [1000]

    def b(**kw):
        n[0] += 1
        return basket(n[0], **kw)

    baskets = [
        b(), b(price=1222.03), b(price="1 222,03"), b(price="1222.035"), b(price="abc"), b(price=None),
        b(price=12345678901234567890), b(price=-0.5), b(price=0.005), b(price=True), b(price="-12,00"),
        b(price=1e-7), b(price=100000000000000.5), b(price={"amount": 5}),
        b(original_price=None), b(original_price="bad"), b(quantity="3"), b(quantity="2.0"), b(quantity="2.5"),
        b(quantity=-1), b(quantity=None), b(quantity=True), b(quantity=1e20), b(quantity="0x10"), b(quantity=" 4 "),
        b(quantity=2.0), b(deleted_at="2025-11-01T10:00:00+03:00"), b(deleted_at="2025-11-01 10:00:00"),
        b(deleted_at=""), b(deleted_at="garbage"), b(deleted_at=0), b(refunded_at="2025-11-02T07:00:00Z"),
        b(refunded_at="2025-11-02T07:00:00.750+05:00", refunded_amount="750.5"), b(refunded_amount=0),
        b(refunded_amount="1 000,009"), b(show_id=None), b(show_id="s-9"), b(show_id=1.5), b(show_id=1e15),
        b(show_id=-4), b(show_id=True), b(show_id={"id": 1}),
    ]
    weird_ids = [basket("x\"y\\z\n\u0416"), basket(BIG), basket(2.0), basket(None), basket(-17)]
    orders = [
        order(1, baskets),
        order("A-2", weird_ids),
        order(3, {"5": basket(3005), "1": basket(3001), "12": basket(3012)}),  # PHP-keyed: key order
        order(4, {"a": basket(4001)}),  # an object that is no list: no rows
        order(5, []),
        order(6, {}),
        order(7, None),
        order(8, [basket(8001), "not a basket", 17, None, [1, 2]]),  # an array item: a row of defaults
        order(9, [basket(9001)], payed_at=None),  # sale_ts falls back to created_at
        order(10, [basket(10001)], payed_at="bad", created_at=None),  # ... and then to epoch 0
        order(11.0, [basket(11001)], event_id="e-11"),
        order(BIG, [basket(12001)], event_id=None),
    ]
    del orders[6]["baskets"]  # no baskets key at all
    return {"data": orders, "paging": {"total": len(orders)}}


class RowTemplate(zhtest.ZhostCase):
    def table(self, name, **kw):
        full = "%s.%s" % (self.db, name)
        zhtest.ch("CREATE TABLE %s AS %s.stg_qtickets_api_baskets_raw ENGINE = MergeTree ORDER BY basket_id"
                  % (full, self.db))
        return full

    def run_script(self, body, *args, page=None):
        page_json = json.dumps(page if page is not None else drift_page())
        assert "]==]" not in page_json
        text = "-- zhost: job=rowtpl_test\nlocal PAGE = [==[%s]==]\n%s\n%s" % (page_json, TEMPLATE, body)
        path = self.script("rowtpl_test.lua", text)
        return self.zhost("run", path, *args, env={"ZHOST_LUA_PATH": os.path.join(zhtest.SOURCE_DIR, "scripts", "lib")})

    def dump(self, table):
        return zhtest.ch("SELECT * FROM %s ORDER BY basket_id, order_id FORMAT JSONEachRow" % table)

    def test_same_rows_as_qtickets_map(self):
        lua_t, tpl_t = self.table("by_lua"), self.table("by_template")
        r = self.run_script('''
local map = require("qtickets_map")
local ver = 1762000000000
local lua_sink = assert(ch.sink("%s"))
local tpl_sink = assert(ch.sink("%s"))
local tpl = basket_template(tpl_sink, ver)
local page = json.view(PAGE)
local lua_rows, tpl_rows, rounded = 0, 0, 0
for _, o in ipairs(page.data) do
  local _, rows, notes = map.order_rows(o, ver)
  for _, row in ipairs(rows) do lua_sink:add(row) end
  for _, n in ipairs(notes) do if n == "money_rounded" then rounded = rounded + 1 end end
  lua_rows = lua_rows + #rows
  local n = tpl:add(o)
  tpl_rows = tpl_rows + n
end
assert(lua_sink:flush())
assert(tpl_sink:flush())
local st = tpl:stats()
job:message(string.format("lua %%d template %%d stats %%d rounded %%d/%%d", lua_rows, tpl_rows, st.rows, rounded, st.rounded))
''' % (lua_t, tpl_t))
        self.assertEqual(r.returncode, 0, r.stderr)
        run = self.runs("rowtpl_test")[-1]
        m = run["message"].split()
        self.assertEqual(m[1], m[3], run["message"])  # the same number of rows
        self.assertEqual(m[3], m[5], run["message"])  # stats().rows counts them
        self.assertGreater(int(m[1]), 55)
        lua_rows, tpl_rows = self.dump(lua_t), self.dump(tpl_t)
        self.assertEqual(lua_rows.splitlines(), tpl_rows.splitlines())
        # The rows are what the docs say, not only equal: spot checks.
        rows = {r["basket_id"]: r for r in map(json.loads, tpl_rows.splitlines())}
        self.assertEqual(rows["1002"]["price"], 1222.03)
        self.assertEqual(rows["1003"]["price"], 1222.03)
        self.assertEqual(rows["1004"]["price"], 1222.04)  # half away from zero
        self.assertEqual(rows["1005"]["price"], 0)  # not money: the default
        self.assertEqual(rows["1007"]["price"], 0)  # too large for Decimal(18,2)
        self.assertEqual(rows["1001"]["original_price"], 1700)
        self.assertEqual(rows["1015"]["original_price"], 1500)  # default_from price
        self.assertEqual([rows[k]["quantity"] for k in ("1017", "1018", "1019", "1020", "1021", "1024", "1025")],
                         [3, 2, 1, 0, 1, 16, 4])
        self.assertEqual(rows["1027"]["deleted_at"], "2025-11-01 10:00:00")
        self.assertEqual(rows["1028"]["deleted_at"], "2025-11-01 10:00:00")  # no offset: Moscow
        self.assertIsNone(rows["1029"]["deleted_at"])
        self.assertEqual(rows["1032"]["refunded_at"], "2025-11-02 10:00:00")
        self.assertEqual(rows["1033"]["refunded_at"], "2025-11-02 05:00:00")
        self.assertEqual(rows["x\"y\\z\n\u0416"]["order_id"], "A-2")
        self.assertIn(BIG, rows)
        self.assertEqual([k for k in rows if k.startswith("30")], ["3001", "3005", "3012"])
        self.assertNotIn("4001", rows)
        self.assertEqual(rows["9001"]["sale_ts"], "2025-11-01 11:59:00")
        # epoch 0 (18.16 prints that DateTime as zeros, current releases as 1970-01-01 03:00:00)
        self.assertIn(rows["10001"]["sale_ts"], ("1970-01-01 03:00:00", "0000-00-00 00:00:00"))
        self.assertEqual(rows["11001"]["order_id"], "11")
        self.assertEqual(rows["12001"]["order_id"], BIG)
        self.assertEqual(rows["1041"]["show_id"], "")  # a boolean is no id
        # rounding is counted like qtickets_map's money_rounded notes
        self.assertEqual(m[6], "rounded")
        a, b = m[7].split("/")
        self.assertEqual(a, b)
        self.assertGreaterEqual(int(b), 3)

    def test_dry_run_and_rows(self):
        tbl = self.table("dry")
        r = self.run_script('''
local sink = assert(ch.sink("%s"))
local tpl = basket_template(sink, 5)
local page = json.view(PAGE)
local text, n = tpl:rows(page.data[3])
assert(n == 3, n)
local consts = sink:template{columns = {basket_id = {value = "k"}, refunded_amount = {value = json.null},
                                        _ver = {value = json.null}}}
local line = consts:rows(json.view("{}"))
assert(line == '{"basket_id":"k","refunded_amount":null}\\n', line)  -- NULL where Nullable, else left out
local ids = {}
for id in text:gmatch('"basket_id":"(%%d+)"') do ids[#ids + 1] = id end
assert(table.concat(ids, ",") == "3001,3005,3012", table.concat(ids, ","))
assert(tpl:stats().rows == 0, "rows() adds nothing")
for _, o in ipairs(page.data) do tpl:add(o) end
assert(sink:flush())
''' % tbl, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(".dry: 56 rows", r.stdout)  # the dry run's count and samples
        self.assertIn('"basket_id":"1001"', r.stdout)
        self.assertEqual(self.scalar("SELECT count() FROM %s" % tbl), "0")

    def test_columns_read_only_from_the_call_object(self):
        # Columns whose paths all start with '^' are made once per call and copied to each item's row
        # (rowtpl.c): each call must still get its own object's values, a value missing in one call
        # must not come from another, and a rounded decimal counts once per row.
        tbl = self.table("root_only")
        page = {"data": [
            {"id": 1, "p": "10.005", "t": "2025-11-01T12:00:00+03:00", "baskets": [{"id": 11}, {"id": 12}, {"id": 13}]},
            {"id": "B-2", "t": "2025-11-02T00:00:00Z", "baskets": [{"id": 21}, {"id": 22}]},
            {"id": 3, "p": 7, "q": "8.5", "baskets": [{"id": 31}, {"id": 32, "q": "99"}]},
        ]}
        r = self.run_script('''
local sink = assert(ch.sink("%s"))
local tpl = sink:template{each = "baskets", columns = {
  basket_id = {"id", as = "id"},
  order_id = {"^id", as = "id"},
  price = {"^p", as = "decimal", default = "0.00"},
  original_price = {"^q", as = "decimal", default_from = "price"},
  sale_ts = {"^t", as = "datetime", default = "2000-01-01 00:00:00"},
  _ver = {value = 1},
}}
local page = json.view(PAGE)
for _, o in ipairs(page.data) do tpl:add(o) end
assert(sink:flush())
local st = tpl:stats()
assert(st.rows == 7 and st.rounded == 3, st.rows .. " rows, " .. st.rounded .. " rounded")
''' % tbl, page=page)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = zhtest.ch("SELECT basket_id, order_id, price, original_price, toString(sale_ts) FROM %s "
                        "ORDER BY basket_id FORMAT TSV" % tbl).strip().split("\n")
        self.assertEqual(got, [
            "11\t1\t10.01\t10.01\t2025-11-01 12:00:00", "12\t1\t10.01\t10.01\t2025-11-01 12:00:00",
            "13\t1\t10.01\t10.01\t2025-11-01 12:00:00",
            "21\tB-2\t0.00\t0.00\t2025-11-02 03:00:00", "22\tB-2\t0.00\t0.00\t2025-11-02 03:00:00",
            "31\t3\t7.00\t8.50\t2000-01-01 00:00:00", "32\t3\t7.00\t8.50\t2000-01-01 00:00:00"])

    def test_backpressure_keeps_every_row(self):
        tbl = self.table("small_batches")
        page = {"data": [order(i, [basket(i * 10 + k) for k in range(3)]) for i in range(1, 201)]}
        r = self.run_script('''
local sink = assert(ch.sink("%s", {max_rows = 7}))
local tpl = basket_template(sink, 5)
local page = json.view(PAGE)
local total = 0
local function worker(first)
  for i = first, #page.data, 4 do
    local n = tpl:add(page.data[i])
    assert(n == 3, "add returns its rows even after waiting: " .. tostring(n))
    total = total + 3
  end
end
local ts = {}
for w = 1, 4 do ts[w] = task.spawn(worker, w) end
for w = 1, 4 do
  local ok, err = task.wait(ts[w])
  if ok == nil and err then error(err, 0) end
end
assert(sink:flush())
assert(total == 600 and tpl:stats().rows == 600, total)
''' % tbl, page=page)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.scalar("SELECT count(), uniqExact(basket_id) FROM %s" % tbl).split(), ["600", "600"])

    def test_only_conditions(self):
        # `only` keeps exactly the orders qtickets_map.truthy and qtickets_map.epoch (in the window)
        # keep, for every drift of a flag and of a time; a template's zone reads times without offset.
        tbl = self.table("only")
        big = int(BIG)
        flags = [1, 0, 2.5, 0.0, -1, True, False, None, "1", "0", "", "false", "FALSE", "No", "nO", "no ", "yes",
                 "true", " 0", "00", "\u0416", {}, [], [1], big, "MISSING"]
        times = ["2025-06-01T12:00:00+03:00", "2025-06-01 12:00:00", "2025-01-01T00:00:00+03:00",
                 "2024-12-31T23:59:59+03:00", "2026-01-01T00:00:00+03:00", "2025-12-31T20:59:59Z",
                 "2025-01-01 00:00:00", "2024-12-31 23:59:59", "2025-12-31 23:59:59", "2025-01-01T00:00:00.5+03:00",
                 "2024-12-31T23:59:59.9+03:00", "2024-12-31T21:00:00Z", None, "", "garbage", 0, {}, "MISSING"]
        orders = []
        for i, f in enumerate(flags):
            orders.append(order(100 + i, [basket(10000 + i)], payed=f))
        for i, t in enumerate(times):
            orders.append(order(200 + i, [basket(20000 + i)], payed_at=t))
        for o in orders:
            for k in ("payed", "payed_at"):
                if o[k] == "MISSING":
                    del o[k]
        r = self.run_script('''
local map = require("qtickets_map")
local sink = assert(ch.sink("%s"))
local from, to = time.parse("2025-01-01"), time.parse("2026-01-01")
local function tpl(only, zone)
  return sink:template{each = "baskets", zone = zone, only = only,
                       columns = {basket_id = {"id", as = "id"}, order_id = {"^id", as = "id"}, _ver = {value = 1}}}
end
local window = tpl{{"payed", is = "truthy"}, {"payed_at", is = "datetime", from = from, to = to}}
local after = tpl{{"payed_at", is = "datetime", from = from}}
local before = tpl{{"payed_at", is = "datetime", to = to}}
local readable = tpl{{"payed_at", is = "datetime"}}
local utc = tpl({{"payed_at", is = "datetime", from = time.parse("2025-01-01", "UTC")}}, "UTC")
local page = json.view(PAGE)
local function check(t, want)
  for i, o in ipairs(page.data) do
    local _, n = t:rows(o)
    assert((n > 0) == want(o), "order " .. tostring(o.id) .. ": " .. tostring(o.payed) .. " " .. tostring(o.payed_at))
  end
end
local epoch = map.epoch
check(window, function(o) local e = epoch(o.payed_at) return map.truthy(o.payed) and e ~= nil and e >= from and e < to end)
check(after, function(o) local e = epoch(o.payed_at) return e ~= nil and e >= from end)
check(before, function(o) local e = epoch(o.payed_at) return e ~= nil and e < to end)
check(readable, function(o) return epoch(o.payed_at) ~= nil end)
check(utc, function(o)
  local e = type(o.payed_at) == "string" and time.parse(o.payed_at, "UTC")
  return e and math.floor(e) >= time.parse("2025-01-01", "UTC") or false
end)
print("counts", window:add_each(page.data))
assert(sink:flush())
-- misuse raises when the template is made, naming the condition (one run for all: pcall)
for _, spec in ipairs{
  {only = {{"payed", is = "truthy"}, {"payed_at", is = "date"}}},
  {only = {{"payed_at", is = "datetime", form = 1}}},
  {only = {{"payed_at", is = "datetime", from = "2025-01-01"}}},
  {only = {{"payed", is = "truthy", to = 5}}},
  {only = {{"^payed", is = "truthy"}}},
  {only = {{"payed", "payed_at", is = "truthy"}}},
  {only = {payed = "truthy"}},
  {only = {{is = "truthy"}}},
  {only = "payed"},
} do
  spec.each, spec.columns = "baskets", {basket_id = "id"}
  print("misuse", select(2, pcall(sink.template, sink, spec)))
end
print("misuse", select(2, pcall(window.add_each, window, {})))
''' % tbl, page={"data": orders})
        self.assertEqual(r.returncode, 0, r.stderr)
        kept = zhtest.ch("SELECT order_id FROM %s ORDER BY toUInt64(order_id) FORMAT TSV" % tbl).split()
        want_flags = [100 + i for i, f in enumerate(flags)
                      if f in (1, 2.5, -1, True, "1", "no ", "yes", "true", " 0", "00", "\u0416", big)]
        want_times = [200 + i for i in (0, 1, 2, 5, 6, 8, 9, 11)]
        self.assertEqual(kept, [str(i) for i in want_flags + want_times])
        n = len(kept)
        self.assertIn("counts\t%d\t%d\t%d" % (n, n, len(orders) - n), r.stdout)
        misuse = [line for line in r.stdout.splitlines() if line.startswith("misuse\t")]
        for want, got in zip([
            "only[2] ('payed_at'): unknown test 'date' (is = \"truthy\" or \"datetime\")",
            "only[1]: unknown option 'form' (is, from, to; one field path)",
            "only[1] ('payed_at'): from must be epoch seconds (a number, as time.parse gives), got string",
            "only[1] ('payed'): to goes with is = \"datetime\"",
            "only[1]: conditions read the object given to add; no '^'",
            "only[1]: one field path per condition",
            "only must be a list of conditions, not a table keyed by 'payed'",
            "only[1]: the first item must be a field path",
            "only must be a list of conditions ({\"field\", is = \"truthy\"}, …), got string",
            "bad argument #2 to '?' (json view of a list (from res:json_view() or json.view) expected, got table)",
        ], misuse):
            self.assertIn(want, got)
        self.assertEqual(len(misuse), 10)

    def test_add_each_waits_mid_list(self):
        # A tiny batch makes add_each wait for the INSERT in flight many times inside one list: it must
        # go on at the next item (every basket once), count what it did, and let other tasks run while
        # it waits. Then an item whose value its column cannot take: named, earlier items' rows kept.
        tbl, bad = self.table("each"), self.table("each_bad")
        data = []
        for i in range(1, 61):
            data.append(order(i, [basket(i * 10 + k) for k in range(3)], payed=0 if i % 7 == 0 else 1))
            if i % 20 == 0:
                data.append(None)
                data.append("not an order")
        page = {"data": data, "keyed": {"2": order(1002, [basket(99992)]), "1": order(1001, [basket(99991)])},
                "bad": [order(1, [basket(1)]), order(2, [basket(2), basket(3)]), 7,
                        order(3, [basket(4), basket(5, quantity=2.5)]), order(4, [basket(6)])]}
        r = self.run_script('''
local sink = assert(ch.sink("%s", {max_rows = 4}))
local only = {{"payed", is = "truthy"}}
local tpl = basket_template(sink, 5, only)
local page = json.view(PAGE)
local done, seen = false, {}
local watcher = task.spawn(function()
  while not done do seen[#seen + 1] = tpl:stats().rows task.sleep(0.001) end
end)
local rows, kept, skipped = tpl:add_each(page.data)
local rows2, kept2, skipped2 = tpl:add_each(page.keyed)
done = true
task.wait(watcher)
local mid = 0
for _, n in ipairs(seen) do if n > 0 and n < rows then mid = mid + 1 end end
assert(sink:flush())
print(string.format("each %%d %%d %%d keyed %%d %%d %%d stats %%d mid %%s", rows, kept, skipped, rows2, kept2, skipped2,
                    tpl:stats().rows, mid > 0))
local bad_sink = assert(ch.sink("%s"))
local bad = bad_sink:template{each = "baskets", columns = {basket_id = {"id", as = "id"}, quantity = "quantity",
                                                             _ver = {value = 5}}}
local ok, err = pcall(bad.add_each, bad, page.bad)
print("bad", ok, err)
print("bad stats", bad:stats().rows, bad_sink:count())
assert(bad_sink:flush())
''' % (tbl, bad), page=page)
        self.assertEqual(r.returncode, 0, r.stderr)
        # 60 orders, 8 of them unpaid (7, 14, …, 56); 6 items that are no object
        self.assertIn("each 156 52 14 keyed 2 2 0 stats 158 mid true", r.stdout)
        self.assertEqual(self.scalar("SELECT count(), uniqExact(basket_id) FROM %s" % tbl).split(), ["158", "158"])
        want = sorted([str(i * 10 + k) for i in range(1, 61) if i % 7 for k in range(3)] + ["99991", "99992"])
        self.assertEqual(zhtest.ch("SELECT basket_id FROM %s ORDER BY basket_id FORMAT TSV" % tbl).split(), want)
        self.assertIn("bad\tfalse\t", r.stdout)
        self.assertIn("list item 4: column 'quantity' (UInt32) of %s: expected a whole number, got 2.5 "
                      "(item 2 of 'baskets')" % bad, r.stdout)
        self.assertIn("bad stats\t3\t3", r.stdout)
        self.assertEqual(zhtest.ch("SELECT basket_id FROM %s ORDER BY basket_id FORMAT TSV" % bad).split(),
                         ["1", "2", "3"])

    def test_template_outliving_its_run(self):
        # A finalizer that runs when the Lua state closes, after the run and its sinks are gone:
        # the template must say so instead of touching the freed schema (ASan build checks).
        tbl = self.table("late")
        r = self.run_script('''
local sink = assert(ch.sink("%s"))
local tpl = basket_template(sink, 5)
print("during: " .. tostring(tpl))
local empty = json.view('{"baskets": []}')
local late = setmetatable({}, {__gc = function()
  io.write("after: ", tostring(tpl), "\\n")
  local ok, err = pcall(tpl.add, tpl, empty)
  io.write("add after: ", tostring(ok), " ", tostring(err), "\\n")
end})
''' % tbl)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("during: template(%s)" % tbl, r.stdout)
        self.assertIn("after: template(its run has ended)", r.stdout)
        self.assertIn("add after: false", r.stdout)
        self.assertIn("no longer usable", r.stdout)

    def misuse(self, spec, call="tpl:add(json.view(PAGE).data[1])"):
        tbl = "%s.misuse" % self.db
        zhtest.ch("CREATE TABLE IF NOT EXISTS %s AS %s.stg_qtickets_api_baskets_raw ENGINE = MergeTree "
                  "ORDER BY basket_id" % (tbl, self.db))
        r = self.run_script('''
local sink = assert(ch.sink("%s"))
local tpl = sink:template(%s)
%s
''' % (tbl, spec, call))
        self.assertEqual(r.returncode, 1, r.stderr)  # a failed run; a sanitizer's report exits otherwise
        for bad in ("Sanitizer", "runtime error:"):
            self.assertNotIn(bad, r.stderr)
        return r.stderr

    def test_misuse_is_named(self):
        cases = [
            ('{each = "baskets", columns = {basket_idd = "id"}}', "has no column 'basket_idd' (columns: basket_id"),
            ('{each = "baskets", columns = {price = {"price", as = "money"}}}', "column 'price': unknown conversion 'money'"),
            ('{each = "baskets", columns = {price = {"price", defualt = 1}}}', "column 'price': unknown option 'defualt'"),
            ('{each = "baskets", colums = {}}', "unknown option 'colums'"),
            ('{each = "baskets", columns = {quantity = {"quantity", as = "int", default = "many"}}}',
             "column 'quantity' (UInt32) of %s.misuse: default expected an integer"),
            ('{each = "baskets", columns = {original_price = {"original_price", default_from = "price"}}}',
             "default_from 'price' is not a column of this template"),
            ('{each = "baskets", columns = {price = {"price", default_from = "original_price"},'
             ' original_price = {"original_price", default_from = "price"}}}', "which has a default_from itself"),
            ('{each = "baskets", zone = "Mars/Base", columns = {price = "price"}}', "zone"),
            ('{each = "baskets", columns = {_ver = {"x", value = 1}}}', "value = … is a constant"),
            ('{each = "baskets", columns = {quantity = {"quantity", min = 0}}}', "min goes with as = \"int\""),
            # C reads a string up to its first NUL byte: "id\0x" would silently be the path "id"
            ('{each = "baskets", columns = {basket_id = "id\\0x"}}', "basket_id: NUL byte in field path"),
            ('{each = "baskets", columns = {basket_id = {"x", "id\\0"}}}', "basket_id: NUL byte in field path"),
            ('{each = "baskets\\0", columns = {basket_id = "id"}}', "each: NUL byte in field path"),
            ('{each = "baskets", columns = {["basket_id\\0x"] = "id"}}', "columns must be keyed by column name"),
            ('{each = "baskets", columns = {price = {"price", default_from = "original_price\\0"},'
             ' original_price = "x"}}', "column 'price': default_from must be a column name"),
            ('{each = "baskets", zone = "Europe/Moscow\\0x", columns = {basket_id = "id"}}',
             "zone: a NUL byte in the time zone name"),
            ('{each = "baskets", zone = {}, columns = {basket_id = "id"}}', "zone must be a time zone name, got table"),
            ('{each = "baskets", columns = {price = {"price", default_from = "price"}}}',
             "column 'price': default_from itself"),
        ]
        for spec, want in cases:
            with self.subTest(spec=spec):
                self.assertIn(want.replace("%s", self.db), self.misuse(spec))
        # at run time: a value its column cannot take names the column and the item
        err = self.misuse('{each = "baskets", columns = {basket_id = "id", quantity = "price"}}',
                          'tpl:add(json.view(\'{"baskets": [{"id": 1, "price": 2}, {"id": 2, "price": 2.5}]}\'))')
        self.assertIn("column 'quantity' (UInt32) of %s.misuse: expected a whole number, got 2.5 (item 2 of 'baskets')"
                      % self.db, err)
        err = self.misuse('{each = "baskets", columns = {basket_id = "id", show_id = "show"}}',
                          'tpl:add(json.view(\'{"baskets": [{"id": 1, "show": {"id": 5}}]}\'))')
        self.assertIn("column 'show_id' (String) of %s.misuse: a JSON object or array" % self.db, err)
        err = self.misuse('{each = "baskets", columns = {basket_id = "id"}}', 'tpl:add({baskets = {}})')
        self.assertIn("json view", err)


if __name__ == "__main__":
    unittest.main()
