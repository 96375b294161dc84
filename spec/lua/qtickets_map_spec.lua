-- scripts/lib/qtickets_map.lua on recorded and drifting QTickets payloads (no I/O).
local map = require("qtickets_map")

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- money: int, float (shortest text), decimal strings; kopecks stay exact
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

-- ids and flags
eq(map.str(4360), "4360") eq(map.str(4360.0), "4360") eq(map.str("77"), "77") eq(map.str(json.null), "")
eq(map.truthy(true), true) eq(map.truthy(1), true) eq(map.truthy("1"), true)
eq(map.truthy(0), false) eq(map.truthy(false), false) eq(map.truthy(json.null), false) eq(map.truthy(""), false)

-- times: by their offset, written as Moscow wall time
eq(map.ts("2019-07-30T12:50:52+03:00"), "2019-07-30 12:50:52", "moscow offset")
eq(map.ts("2019-07-30T14:50:52+05:00"), "2019-07-30 12:50:52", "another offset, same instant")
eq(map.ts("2025-11-01T23:59:59+00:00"), "2025-11-02 02:59:59", "utc to moscow crosses midnight")
eq(map.ts(json.null), nil) eq(map.ts(""), nil) eq(map.ts("garbage"), nil)

-- utm: [] or object, with or without the prefix, trimmed
local u = map.utm({})
eq(u.utm_source, "", "[] utm")
u = map.utm({utm_source = " vk ", utm_medium = "cpc", utm_content = "msk_01_11"})
eq(u.utm_source, "vk") eq(u.utm_content, "msk_01_11") eq(u.utm_term, "")
u = map.utm({source = "yandex", campaign = 12})
eq(u.utm_source, "yandex") eq(u.utm_campaign, "12")
u = map.utm("utm_source=tg&utm_medium=post")
eq(u.utm_source, "tg") eq(u.utm_medium, "post")
eq(map.utm(json.null).utm_source, "")

-- event names: string or per-language object
eq(map.text_of("Шоу"), "Шоу") eq(map.text_of({en = "Show", ru = "Шоу"}), "Шоу") eq(map.text_of({de = "Schau"}), "Schau")

-- the documented event, decoded the way the API sends it (PHP escapes)
local ev = assert(json.decode([[{"id":24089,"is_active":0,"name":"\u0414\u0435\u0442\u0441\u043a\u0430\u044f","currency_id":"RUB",
 "place_name":"\u0422\u0426 \"\u0421\u043c\u0430\u0439\u043b\"","city_id":24,"city":{"id":24,"name":"\u0422\u043e\u043c\u0441\u043a","timezone":"Asia\/Krasnoyarsk"},
 "shows":[{"id":1,"start_date":"2021-06-16T20:00:00+03:00","finish_date":"2021-07-25T19:55:00+03:00","deleted_at":null},
          {"id":2,"start_date":"2021-06-10T20:00:00+03:00","finish_date":"2021-06-10T22:00:00+03:00","deleted_at":"2021-06-01T00:00:00+03:00"}],
 "deleted_at":null}]]))
local row = map.event_row(ev, 7)
eq(row.event_id, "24089") eq(row.event_name, "Детская") eq(row.city, "Томск") eq(row.city_id, "24")
eq(row.place_name, 'ТЦ "Смайл"') eq(row.start_date, "2021-06-16", "deleted show ignored")
eq(row.end_date, "2021-07-25") eq(row.is_active, 0) eq(row.is_deleted, 0) eq(row.tickets_total, json.null)
eq(row._ver, 7)

-- the documented order, with drift: reserved false, custom "", utm [], float money, a refund
local o = assert(json.decode([[{"id":4360,"payed":true,"payed_at":"2019-07-30T12:50:52+03:00","created_at":"2019-07-30T12:50:36+03:00",
 "deleted_at":null,"client_id":235,"promo_code_id":null,"reserved":false,"event_id":33,"price":1372.03,"original_price":1400,
 "currency_id":"RUB","utm":[],"custom":"",
 "baskets":[{"id":63993,"show_id":41,"original_price":150,"price":150,"quantity":1,"deleted_at":null,"refunded_at":null,"refunded_amount":null},
            {"id":63994,"show_id":41,"original_price":1222.03,"price":1222.03,"quantity":1,"deleted_at":null,
             "refunded_at":"2019-07-31T10:00:00+03:00","refunded_amount":855.42},
            {"id":63995,"show_id":41,"price":500,"deleted_at":"2019-07-30T13:00:00+03:00","refunded_at":null}]}]]))
assert(map.order_in_window(o, time.parse("2019-07-30"), time.parse("2019-07-31")))
local ok, why = map.order_in_window(o, time.parse("2019-07-31"), time.parse("2019-08-01"))
eq(ok, false) eq(why, "outside the window")
local order, baskets = map.order_rows(o, 9)
eq(order.order_id, "4360") eq(order.event_id, "33") eq(order.payed, 1) eq(order.payed_at, "2019-07-30 12:50:52")
eq(order.sale_ts, "2019-07-30 12:50:52") eq(order.deleted_at, json.null) eq(order.price, "1372.03")
eq(order.original_price, "1400.00") eq(order.promo_code_id, "") eq(order.client_id, "235")
eq(order.baskets_total, 3) eq(order.baskets_live, 1) eq(order.utm_source, "")
eq(#baskets, 3)
eq(baskets[2].price, "1222.03") eq(baskets[2].refunded_amount, "855.42") eq(baskets[2].refunded_at, "2019-07-31 10:00:00")
eq(baskets[1].refunded_amount, json.null) eq(baskets[3].quantity, 1, "quantity defaults to 1")
eq(baskets[3].original_price, "500.00", "original price defaults to price") eq(baskets[3].deleted_at, "2019-07-30 13:00:00")
eq(baskets[1].sale_ts, order.sale_ts) eq(baskets[1]._ver, 9)

-- unpaid orders are never in the window
local unpaid = {id = 1, payed = 0, payed_at = json.null, created_at = "2019-07-30T12:50:36+03:00"}
ok, why = map.order_in_window(unpaid, 0, 2 ^ 40)
eq(ok, false) eq(why, "unpaid")
print("qtickets_map_spec ok")
