-- scripts/lib/qtickets_map.lua on recorded and drifting QTickets payloads (no I/O). Every payload
-- is mapped twice, as json.decode's table and as a json.view view of the same text (the loader reads
-- pages as views): both must give identical results.
local map = require("qtickets_map")

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- The two forms the loader can hand the mapping: json.decode's table and a view.
local DECODERS = {
  {name = "table", decode = json.decode},
  {name = "view", decode = function(s)
    local v, err = json.view(s)
    if type(v) == "userdata" and v ~= json.null then assert(json.isview(v), "json.view gave a view") end
    return v, err
  end},
}

-- Deep equality of results. A view inside a result is a failure of its own: rows must not keep a
-- page's document alive.
local function same(a, b, path)
  if json.isview(a) or json.isview(b) then error(path .. ": a result holds a json view", 0) end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b or math.type(a) ~= math.type(b) then
      error(string.format("%s: table gives %s (%s), view gives %s (%s)", path, tostring(a),
        math.type(a) or type(a), tostring(b), math.type(b) or type(b)), 0)
    end
    return
  end
  for k, x in pairs(a) do same(x, b[k], path .. "." .. tostring(k)) end
  for k, x in pairs(b) do if a[k] == nil then same(nil, x, path .. "." .. tostring(k)) end end
end

-- Calls map[fname](x, ...) with x read from json.decode(s) and from json.view(s) (`pick` selects a
-- part of the document, default the whole). The results (all of them) must be identical; returns
-- the table's.
local covered = {}
local function both(fname, s, pick, ...)
  covered[fname] = true
  pick = pick or function(d) return d end
  local got = {}
  for i, d in ipairs(DECODERS) do
    local doc = assert(d.decode(s))
    got[i] = table.pack(map[fname](pick(doc), ...))
  end
  local ok, err = pcall(same, got[1], got[2], fname .. "(" .. s:sub(1, 60) .. ")")
  if not ok then error(err, 2) end
  return table.unpack(got[1], 1, got[1].n)
end

------------------------------------------------------------------------------------- money

eq(map.money(800), "800.00", "int money")
eq(map.money(1222.03), "1222.03", "float money")
eq(map.money(749.99), "749.99")
eq(map.money(0.1 + 0.2), "0.30", "binary noise past 2 digits is rounded")
eq(select(2, map.money(0.1 + 0.2)), "rounded", "and reported")
eq(map.money("1 234,50"), "1234.50", "decimal string")
eq(map.money(-12.5), "-12.50")
eq(map.money(json.null), nil, "null money")
eq(map.cents(1333.33) * 3, 399999, "kopecks add exactly")
local total = 0
for _ = 1, 10 do total = total + map.cents(0.1) end
eq(map.from_cents(total), "1.00", "ten times 0.10")

-- every scalar form money arrives in, read from a table and from a view
local MONEY = '{"i":800,"f":1222.03,"r":333.3333333,"n":-12.5,"s":"1 234,50","d":"200.5","z":0,"x":null,"b":"abc"}'
for _, k in ipairs({"i", "f", "r", "n", "s", "d", "z", "x", "b", "missing"}) do
  local pick = function(d) return d[k] end
  both("cents", MONEY, pick) both("money", MONEY, pick)
end
eq(both("money", MONEY, function(d) return d.r end), "333.33", "rounded from a view too")
eq(select(2, both("money", MONEY, function(d) return d.r end)), "rounded")
eq(both("from_cents", '{"c":123456}', function(d) return d.c end), "1234.56")
-- an object or array where money should be: no amount either way (only the reason's type name differs)
for _, k in ipairs({"o", "a"}) do
  local t = assert(json.decode('{"o":{"v":1},"a":[]}'))[k]
  local v = assert(json.view('{"o":{"v":1},"a":[]}'))[k]
  eq(map.cents(t), nil) eq(map.cents(v), nil, "cents of a view") eq(map.money(v), nil, "money of a view")
end
covered.cents, covered.money = true, true

--------------------------------------------------------------------------- ids and flags

eq(map.str(4360), "4360") eq(map.str(4360.0), "4360") eq(map.str("77"), "77") eq(map.str(json.null), "")
eq(map.truthy(true), true) eq(map.truthy(1), true) eq(map.truthy("1"), true)
eq(map.truthy(0), false) eq(map.truthy(false), false) eq(map.truthy(json.null), false) eq(map.truthy(""), false)

local SCALARS = '{"id":4360,"fid":4360.0,"sid":"77","neg":-5,"t":true,"f":false,"one":1,"zero":0,"s1":"1",' ..
  '"strue":"true","sno":"no","empty":"","nul":null,"obj":{"id":1},"arr":[1],"earr":[]}'
for _, k in ipairs({"id", "fid", "sid", "neg", "t", "f", "one", "zero", "s1", "strue", "sno", "empty", "nul",
                    "obj", "arr", "earr", "missing"}) do
  local pick = function(d) return d[k] end
  both("str", SCALARS, pick) both("truthy", SCALARS, pick) both("is_null", SCALARS, pick)
end
eq(both("str", SCALARS, function(d) return d.obj end), "", "an object is no id")
eq(both("is_null", SCALARS, function(d) return d.nul end), true)

-- is_obj: tables and views are objects; json.null, strings and numbers are not
for _, d in ipairs(DECODERS) do
  local doc = assert(d.decode('{"o":{},"a":[],"n":null,"s":"x","i":1}'))
  eq(map.is_obj(doc), true, d.name) eq(map.is_obj(doc.o), true, d.name .. " {}") eq(map.is_obj(doc.a), true, d.name .. " []")
  eq(map.is_obj(doc.n), false, d.name .. " null") eq(map.is_obj(doc.s), false) eq(map.is_obj(doc.i), false)
  eq(map.is_obj(doc.missing), false)
end
for _, k in ipairs({"o", "a", "n", "s"}) do both("is_obj", '{"o":{},"a":[],"n":null,"s":"x"}', function(d) return d[k] end) end

-- len: the items of an array; 0 for an object (PHP encodes a filtered list {"0":…,"1":…}), as # of
-- json.decode's table gives — # of a view of an object would count its fields
local LISTS = '{"three":[{"id":1},{"id":2},{"id":3}],"empty":[],"php":{"0":{"id":1},"1":{"id":2}},"obj":{"a":1},' ..
  '"s":"abc","n":null}'
for _, k in ipairs({"three", "empty", "php", "obj", "s", "n", "missing"}) do
  both("len", LISTS, function(d) return d[k] end)
end
eq(both("len", LISTS, function(d) return d.three end), 3)
eq(both("len", LISTS, function(d) return d.php end), 0, "an object is no list")
eq(#assert(json.view(LISTS)).php, 2, "(while # of the view counts its fields)")

-- list: an array is itself; PHP's encoding of a filtered list ({"0":…,"2":…}) is its values in key
-- order; an empty [] or {} has no items; any other object, a string or null is no list
covered.list = true
local LIST_CASES = '{"three":[{"id":1},{"id":2},{"id":3}],"empty":[],"eobj":{},' ..
  '"php":{"10":{"id":3},"2":{"id":1},"3":{"id":2}},"obj":{"a":1},"mixed":{"0":{"id":1},"x":2},"s":"abc","n":null}'
local function ids(l)
  if l == nil then return nil end
  local out = {}
  for i = 1, #l do out[i] = l[i].id end
  return table.concat(out, ",")
end
for _, d in ipairs(DECODERS) do
  local doc = assert(d.decode(LIST_CASES))
  eq(ids(map.list(doc.three)), "1,2,3", d.name .. " array")
  local three = doc.three -- (every read of a view's field is a new view: compare one read)
  assert(rawequal(map.list(three), three), d.name .. " an array is itself")
  eq(ids(map.list(doc.php)), "1,2,3", d.name .. " php-keyed object in key order")
  eq(ids(map.list(doc.empty)), "", d.name .. " empty array") eq(ids(map.list(doc.eobj)), "", d.name .. " {}")
  eq(map.list(doc.obj), nil, d.name .. " object") eq(map.list(doc.mixed), nil, d.name .. " mixed keys")
  eq(map.list(doc.s), nil) eq(map.list(doc.n), nil) eq(map.list(doc.missing), nil)
end
-- an order whose baskets came as a PHP-keyed object still has all its basket rows
local PHP_ORDER = '{"id":7,"payed":true,"payed_at":"2025-11-01T12:00:00+03:00","created_at":"2025-11-01T11:59:00+03:00",' ..
  '"price":300,"baskets":{"0":{"id":71,"price":100,"quantity":1},"2":{"id":72,"price":200,"quantity":1}}}'
local _, php_rows = both("order_rows", PHP_ORDER, nil, 1)
eq(#php_rows, 2, "baskets as a keyed object") eq(php_rows[1].basket_id, "71") eq(php_rows[2].price, "200.00")

------------------------------------------------------------------------------------ times

-- by their offset, written as Moscow wall time
eq(map.ts("2019-07-30T12:50:52+03:00"), "2019-07-30 12:50:52", "moscow offset")
eq(map.ts("2019-07-30T14:50:52+05:00"), "2019-07-30 12:50:52", "another offset, same instant")
eq(map.ts("2025-11-01T23:59:59+00:00"), "2025-11-02 02:59:59", "utc to moscow crosses midnight")
eq(map.ts(json.null), nil) eq(map.ts(""), nil) eq(map.ts("garbage"), nil)
local TIMES = '{"msk":"2019-07-30T12:50:52+03:00","z":"2025-11-01T21:30:00Z","compact":"2025-11-02T10:00:00+0300",' ..
  '"n":null,"e":"","g":"garbage","num":1564480252,"o":{"date":"2019-07-30"}}'
for _, k in ipairs({"msk", "z", "compact", "n", "e", "g", "num", "o", "missing"}) do
  local pick = function(d) return d[k] end
  both("epoch", TIMES, pick) both("ts", TIMES, pick)
end
eq(both("ts", TIMES, function(d) return d.z end), "2025-11-02 00:30:00")

---------------------------------------------------------------------------------------- utm

-- [] or object, with or without the prefix, trimmed, a query string, null
local u = map.utm({})
eq(u.utm_source, "", "[] utm")
u = map.utm({utm_source = " vk ", utm_medium = "cpc", utm_content = "msk_01_11"})
eq(u.utm_source, "vk") eq(u.utm_content, "msk_01_11") eq(u.utm_term, "")
u = map.utm({source = "yandex", campaign = 12})
eq(u.utm_source, "yandex") eq(u.utm_campaign, "12")
u = map.utm("utm_source=tg&utm_medium=post")
eq(u.utm_source, "tg") eq(u.utm_medium, "post")
eq(map.utm(json.null).utm_source, "")

local UTMS = {
  '{"utm":[]}', '{"utm":{}}', '{"utm":null}', '{"utm":""}', '{"utm":5}',
  '{"utm":{"utm_source":" vk ","utm_medium":"cpc","utm_content":"msk_01_11"}}',
  '{"utm":{"source":"yandex","campaign":12,"term":null}}',
  '{"utm":{"utm_source":null,"source":"fallback","utm_term":3.5,"utm_medium":{"x":1},"utm_campaign":[]}}',
  '{"utm":"utm_source=tg&utm_medium=post&utm_term=%D0%BE%D0%BA"}',
  '{"utm":["utm_source","vk"]}',
}
for _, s in ipairs(UTMS) do both("utm", s, function(d) return d.utm end) end
eq(both("utm", UTMS[6], function(d) return d.utm end).utm_source, "vk", "view utm")
eq(both("utm", UTMS[7], function(d) return d.utm end).utm_campaign, "12", "view utm without prefix")
eq(both("utm", UTMS[8], function(d) return d.utm end).utm_source, "fallback", "null utm_source -> source")
eq(both("utm", UTMS[9], function(d) return d.utm end).utm_medium, "post", "query string")
eq(#map.UTM, 5)

---------------------------------------------------------------------------------- event names

-- a string or a per-language object
eq(map.text_of("Шоу"), "Шоу") eq(map.text_of({en = "Show", ru = "Шоу"}), "Шоу") eq(map.text_of({de = "Schau"}), "Schau")
local NAMES = '{"s":"  Шоу ","n":42,"ru":{"en":"Show","ru":"Шоу"},"de":{"de":"Schau"},"two":{"fr":"B","de":"A"},' ..
  '"empty_ru":{"ru":"","en":"Show"},"arr":["","Первый"],"num_keys":{"2":"two","10":"ten"},"nul":null,"none":{},' ..
  '"nested":{"ru":{"x":"y"},"default":"Default"},"esc":"\\u0414\\u0435\\u0442\\u0441\\u043a\\u0430\\u044f \\/ 1"}'
for _, k in ipairs({"s", "n", "ru", "de", "two", "empty_ru", "arr", "num_keys", "nul", "none", "nested", "esc", "missing"}) do
  both("text_of", NAMES, function(d) return d[k] end)
end
eq(both("text_of", NAMES, function(d) return d.ru end), "Шоу", "ru first")
eq(both("text_of", NAMES, function(d) return d.two end), "A", "else the first key in sorted order, not document order")
eq(both("text_of", NAMES, function(d) return d.arr end), "Первый", "an array's non-empty item")
eq(both("text_of", NAMES, function(d) return d.num_keys end), "ten", "'10' sorts before '2'")
eq(both("text_of", NAMES, function(d) return d.esc end), "Детская / 1", "PHP escapes")

-------------------------------------------------------------------------------------- events

-- the documented event, encoded the way the API sends it (PHP escapes)
local EVENT = [[{"id":24089,"is_active":0,"name":"\u0414\u0435\u0442\u0441\u043a\u0430\u044f","currency_id":"RUB",
 "place_name":"\u0422\u0426 \"\u0421\u043c\u0430\u0439\u043b\"","city_id":24,"city":{"id":24,"name":"\u0422\u043e\u043c\u0441\u043a","timezone":"Asia\/Krasnoyarsk"},
 "shows":[{"id":1,"start_date":"2021-06-16T20:00:00+03:00","finish_date":"2021-07-25T19:55:00+03:00","deleted_at":null},
          {"id":2,"start_date":"2021-06-10T20:00:00+03:00","finish_date":"2021-06-10T22:00:00+03:00","deleted_at":"2021-06-01T00:00:00+03:00"}],
 "deleted_at":null}]]
for _, d in ipairs(DECODERS) do
  local row = map.event_row(assert(d.decode(EVENT)), 7)
  local what = d.name .. ": "
  eq(row.event_id, "24089", what .. "id") eq(row.event_name, "Детская") eq(row.city, "Томск") eq(row.city_id, "24")
  eq(row.place_name, 'ТЦ "Смайл"') eq(row.start_date, "2021-06-16", what .. "deleted show ignored")
  eq(row.end_date, "2021-07-25") eq(row.is_active, 0) eq(row.is_deleted, 0) eq(row.tickets_total, json.null)
  eq(row._ver, 7)
end
both("event_row", EVENT, nil, 7)

-- drift: ids as strings, city as a string / [] / missing, a per-language name, every show deleted,
-- shows missing or an object, is_active "1", a deleted event, no currency
local EVENTS = {
  '{"id":"24089","is_active":"1","name":{"en":"Show","ru":"Шоу"},"city":"  Омск ","city_id":"55","place_name":{"ru":"Зал"},' ..
    '"shows":[{"start_date":"2025-11-20T19:00:00+03:00","finish_date":null,"deleted_at":null}],"deleted_at":"2025-11-21T00:00:00+03:00"}',
  '{"id":1,"name":"X","city":[],"city_id":7,"shows":[{"start_date":"2025-11-20T19:00:00+03:00","deleted_at":"2025-11-01T00:00:00+03:00"},' ..
    '{"start_date":"2025-11-22T19:00:00+03:00","finish_date":"2025-11-22T21:00:00+03:00","deleted_at":"2025-11-01T00:00:00+03:00"}]}',
  '{"id":2,"name":null,"shows":{"0":{"start_date":"2025-11-20T19:00:00+03:00"}},"currency_id":"KZT","is_active":true}',
  '{"id":3,"name":"Y","city":{"id":"9","name":{"ru":"Казань"}},"shows":[null,"x",{"start_date":"bad"},{"start_date":"2025-12-01T10:00:00Z"}],' ..
    '"currency_id":5}',
  '{"id":4}',
}
for _, s in ipairs(EVENTS) do both("event_row", s, nil, 11) end
local r = both("event_row", EVENTS[1], nil, 11)
eq(r.event_id, "24089") eq(r.event_name, "Шоу") eq(r.city, "Омск") eq(r.city_id, "55") eq(r.place_name, "Зал")
eq(r.start_date, "2025-11-20") eq(r.end_date, "2025-11-20") eq(r.is_active, 1) eq(r.is_deleted, 1)
r = both("event_row", EVENTS[2], nil, 11)
eq(r.city, "") eq(r.city_id, "7") eq(r.start_date, "2025-11-20", "all shows deleted: all count") eq(r.end_date, "2025-11-22")
r = both("event_row", EVENTS[3], nil, 11)
eq(r.start_date, "2025-11-20", "shows as a PHP-keyed object are a list too") eq(r.currency, "KZT") eq(r.event_name, "")
r = both("event_row", EVENTS[4], nil, 11)
eq(r.city, "Казань") eq(r.city_id, "9") eq(r.start_date, "2025-12-01") eq(r.currency, "RUB")

-------------------------------------------------------------------------------------- orders

-- the documented order, with drift: reserved false, custom "", utm [], float money, a refund
local ORDER = [[{"id":4360,"payed":true,"payed_at":"2019-07-30T12:50:52+03:00","created_at":"2019-07-30T12:50:36+03:00",
 "deleted_at":null,"client_id":235,"promo_code_id":null,"reserved":false,"event_id":33,"price":1372.03,"original_price":1400,
 "currency_id":"RUB","utm":[],"custom":"",
 "baskets":[{"id":63993,"show_id":41,"original_price":150,"price":150,"quantity":1,"deleted_at":null,"refunded_at":null,"refunded_amount":null},
            {"id":63994,"show_id":41,"original_price":1222.03,"price":1222.03,"quantity":1,"deleted_at":null,
             "refunded_at":"2019-07-31T10:00:00+03:00","refunded_amount":855.42},
            {"id":63995,"show_id":41,"price":500,"deleted_at":"2019-07-30T13:00:00+03:00","refunded_at":null}]}]]
for _, d in ipairs(DECODERS) do
  local o = assert(d.decode(ORDER))
  local what = d.name .. ": "
  assert(map.order_in_window(o, time.parse("2019-07-30"), time.parse("2019-07-31")), what .. "in the window")
  local ok, why = map.order_in_window(o, time.parse("2019-07-31"), time.parse("2019-08-01"))
  eq(ok, false, what .. "outside") eq(why, "outside the window")
  local order, baskets = map.order_rows(o, 9)
  eq(order.order_id, "4360", what .. "order_id") eq(order.event_id, "33") eq(order.payed, 1)
  eq(order.payed_at, "2019-07-30 12:50:52")
  eq(order.sale_ts, "2019-07-30 12:50:52") eq(order.deleted_at, json.null) eq(order.price, "1372.03")
  eq(order.original_price, "1400.00") eq(order.promo_code_id, "") eq(order.client_id, "235")
  eq(order.baskets_total, 3, what .. "baskets_total") eq(order.baskets_live, 1) eq(order.utm_source, "")
  eq(#baskets, 3, what .. "basket rows")
  eq(baskets[2].price, "1222.03") eq(baskets[2].refunded_amount, "855.42") eq(baskets[2].refunded_at, "2019-07-31 10:00:00")
  eq(baskets[1].refunded_amount, json.null) eq(baskets[3].quantity, 1, "quantity defaults to 1")
  eq(baskets[3].original_price, "500.00", "original price defaults to price") eq(baskets[3].deleted_at, "2019-07-30 13:00:00")
  eq(baskets[1].sale_ts, order.sale_ts) eq(baskets[1]._ver, 9)
end
both("order_rows", ORDER, nil, 9)
both("order_in_window", ORDER, nil, time.parse("2019-07-30"), time.parse("2019-07-31"))
both("order_in_window", ORDER, nil, time.parse("2019-07-31"), time.parse("2019-08-01"))

-- unpaid orders are never in the window
local unpaid = {id = 1, payed = 0, payed_at = json.null, created_at = "2019-07-30T12:50:36+03:00"}
local ok, why = map.order_in_window(unpaid, 0, 2 ^ 40)
eq(ok, false) eq(why, "unpaid")

-- drift seen on the wire (and in spec/e2e/test_qa_qtickets.py): payed "1"/1/"true"/0/false, offsets Z and
-- +0300, string money with too many digits, quantity "3", ids as strings, utm as an object or a query
-- string, baskets missing / null / an object / holding non-objects, no payed_at, no created_at
local ORDERS = {
  '{"id":10,"payed":"1","payed_at":"2025-11-01T21:30:00Z","created_at":"2025-11-01T10:00:00+03:00","event_id":1,' ..
    '"price":"1500.50","utm":{"utm_source":"vk","medium":"cpc"},"baskets":[{"id":100,"show_id":1,"price":"750.25","quantity":2}]}',
  '{"id":"11","payed":1,"payed_at":"2025-11-02T10:00:00+0300","event_id":"1","price":999.9999999,"currency_id":"",' ..
    '"utm":"utm_source=tg&utm_campaign=x","baskets":[{"id":"101","price":333.3333333,"quantity":"3","original_price":null}]}',
  '{"id":13,"payed":true,"payed_at":"2025-11-02T12:00:00+03:00","event_id":2,"deleted_at":"2025-11-02T13:00:00+03:00",' ..
    '"baskets":[{"id":103,"price":"200.5","quantity":2,"refunded_at":"2025-11-03T10:00:00+03:00"},' ..
    '{"id":104,"price":50,"refunded_at":"2025-11-03T10:00:00+03:00","refunded_amount":"30.10"},{"id":105,"price":10,"quantity":-1}]}',
  '{"id":14,"payed":0,"payed_at":"2025-11-02T12:00:00+03:00","event_id":2,"baskets":[{"id":106,"price":999}]}',
  '{"id":15,"payed":false,"payed_at":null,"event_id":2,"baskets":[]}',
  '{"id":16,"payed":"true","payed_at":"2025-11-02T12:00:00+03:00","event_id":2}',
  '{"id":17,"payed":true,"payed_at":"2025-11-02T12:00:00+03:00","baskets":null,"client_id":null,"promo_code_id":"P1"}',
  '{"id":18,"payed":true,"payed_at":"2025-11-02T12:00:00+03:00","baskets":{"0":{"id":1,"price":5}}}',
  '{"id":19,"payed":true,"payed_at":"garbage","baskets":[null,"x",7,{"id":190,"price":{"v":1},"quantity":{"n":2}}]}',
  '{"id":20,"payed":"no","created_at":"2025-11-02T12:00:00+03:00","baskets":[]}',
  '{"id":9007199254740991,"payed":1,"payed_at":"2025-11-02T12:00:00+03:00","event_id":12345678901234,"baskets":[]}',
}
local from, to = time.parse("2025-11-01"), time.parse("2025-11-04")
for _, s in ipairs(ORDERS) do
  both("order_rows", s, nil, 5)
  both("order_in_window", s, nil, from, to)
end
local order, baskets, notes = both("order_rows", ORDERS[1], nil, 5)
eq(order.payed_at, "2025-11-02 00:30:00") eq(order.price, "1500.50") eq(order.utm_source, "vk") eq(order.utm_medium, "cpc")
eq(baskets[1].quantity, 2) eq(baskets[1].price, "750.25") eq(#notes, 0)
order, baskets, notes = both("order_rows", ORDERS[2], nil, 5)
eq(order.order_id, "11") eq(order.price, "1000.00") eq(order.currency, "RUB") eq(order.utm_source, "tg")
eq(baskets[1].basket_id, "101") eq(baskets[1].quantity, 3) eq(baskets[1].price, "333.33")
eq(baskets[1].original_price, "333.33") eq(#notes, 2, "two amounts rounded")
order, baskets = both("order_rows", ORDERS[3], nil, 5)
eq(order.deleted_at, "2025-11-02 13:00:00") eq(order.baskets_total, 3) eq(order.baskets_live, 1)
eq(baskets[2].refunded_amount, "30.10") eq(baskets[3].quantity, 0, "negative quantity")
eq(select(2, both("order_in_window", ORDERS[4], nil, from, to)), "unpaid")
eq(select(2, both("order_in_window", ORDERS[5], nil, from, to)), "unpaid")
eq(both("order_in_window", ORDERS[6], nil, from, to), true)
order, baskets = both("order_rows", ORDERS[6], nil, 5)
eq(order.baskets_total, 0, "no baskets key") eq(#baskets, 0)
order = both("order_rows", ORDERS[7], nil, 5)
eq(order.baskets_total, 0) eq(order.client_id, "") eq(order.promo_code_id, "P1")
eq(both("order_rows", ORDERS[8], nil, 5).baskets_total, 1, "baskets as a PHP-keyed object are a list")
eq(select(2, both("order_in_window", ORDERS[9], nil, from, to)), "no payed_at")
local problems
order, baskets, notes, problems = both("order_rows", ORDERS[9], nil, 5)
eq(order.baskets_total, 1, "non-object baskets skipped") eq(baskets[1].price, "0.00") eq(baskets[1].quantity, 1)
-- ...stored with the defaults, but never silently: each value that was there is a problem line
eq(#problems, 2, "price and quantity objects are problems")
eq(problems[1], "order 19 basket 190 quantity: not a whole number: a JSON object or array")
eq(problems[2], "order 19 basket 190 price: expected a number, got a JSON object or array")
eq(notes[1], "value_unreadable")
-- values that are there but not money or not a count; blanks and nulls are no problem
order, baskets, notes, problems = both("order_rows", '{"id":21,"price":"n/a","original_price":"",' ..
  '"baskets":[{"id":210,"price":"abc","quantity":"2.5","original_price":true,"refunded_amount":"1,2,3"},' ..
  '{"id":211,"price":"","quantity":"","original_price":null,"refunded_amount":null},' ..
  '{"id":212,"price":100,"quantity":1e20}]}', nil, 5)
eq(baskets[1].price, "0.00") eq(baskets[1].quantity, 1) eq(baskets[1].original_price, "0.00")
eq(baskets[1].refunded_amount, json.null) eq(baskets[2].price, "0.00") eq(baskets[3].quantity, 1)
eq(order.price, "0.00") eq(order.original_price, "0.00")
eq(table.concat(problems, "\n"), table.concat({
  "order 21 basket 210 quantity: not a whole number: \"2.5\"",
  "order 21 basket 210 price: invalid decimal 'abc'",
  "order 21 basket 210 refunded_amount: invalid decimal '1,2,3'",
  "order 21 basket 210 original_price: expected a number, got boolean",
  "order 21 basket 212 quantity: not a whole number: number 1e+20",
  "order 21 price: invalid decimal 'n/a'",
}, "\n"))
eq(select(2, both("order_in_window", ORDERS[10], nil, from, to)), "unpaid")
order = both("order_rows", ORDERS[11], nil, 5)
eq(order.order_id, "9007199254740991", "an id up to 2^53 keeps its digits") eq(order.event_id, "12345678901234")
for _, d in ipairs(DECODERS) do
  eq(select(2, map.order_in_window(assert(d.decode('[1,2]')), from, to)), "unpaid", d.name .. ": an array is no order")
  eq(select(2, map.order_in_window(assert(d.decode('{"x":"not an order"}')).x, from, to)), "not an object", d.name)
end

-- A page read as a view: the rows outlive its document. Closing the document makes any use of a
-- view of it raise, so reading every row afterwards proves no row kept one.
do
  local rows = {}
  do
    local page <close> = assert(json.view('{"data":[' .. ORDER .. ',' .. ORDERS[3] .. '],"events":[' .. EVENT .. ']}'))
    for _, o in ipairs(page.data) do
      local ord, bs = map.order_rows(o, 1)
      rows[#rows + 1] = ord
      for _, b in ipairs(bs) do rows[#rows + 1] = b end
    end
    rows[#rows + 1] = map.event_row(page.events[1], 1)
    rows[#rows + 1] = map.utm(page.data[1].utm)
  end
  eq(#rows, 10, "rows of two orders, their baskets, an event and a utm")
  for i, row in ipairs(rows) do
    for k, v in pairs(row) do
      assert(type(v) ~= "userdata" or v == json.null, "row " .. i .. "." .. k .. " holds " .. tostring(v))
    end
  end
end

-- every public function of qtickets_map was fed both a table and a view above, but the template:
-- it needs a sink (ClickHouse), and takes views only; spec/e2e/test_rowtpl.py checks its rows
-- against order_rows'
covered.basket_template = true
for name, f in pairs(map) do
  if type(f) == "function" then assert(covered[name], "qtickets_map." .. name .. " is not checked with views") end
end
print("qtickets_map_spec ok")
