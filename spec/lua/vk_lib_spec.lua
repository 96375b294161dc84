-- scripts/lib/vk_lib.lua: chunking, VK error decoding, money.
local vk = require("vk_lib")
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- ids in chunks of <= 200
local ids = {}
for i = 1, 401 do ids[i] = i end
local ch = vk.chunks(ids, 200)
eq(#ch, 3) eq(#ch[1], 200) eq(#ch[3], 1) eq(ch[3][1], 401)
eq(#vk.chunks({}, 200), 0)

-- date ranges in chunks of <= 92 days, inclusive, no gaps or overlaps
local dc = vk.date_chunks("2025-01-01", "2025-06-30", 92)
eq(#dc, 2) eq(dc[1][1], "2025-01-01") eq(dc[1][2], "2025-04-02") eq(dc[2][1], "2025-04-03") eq(dc[2][2], "2025-06-30")
dc = vk.date_chunks("2025-11-05", "2025-11-05", 92)
eq(#dc, 1) eq(dc[1][2], "2025-11-05")
eq(#vk.date_chunks("2025-01-01", "2025-04-02", 92), 1, "exactly 92 days")
eq(#vk.dates("2025-02-27", "2025-03-02"), 4)

-- money: VK sends decimal strings; trailing zeros dropped
eq(vk.money("23328.92"), "23328.92") eq(vk.money("86.4"), "86.40") eq(vk.money("0"), "0.00")
eq(vk.money(150), "150.00", "legacy integer") eq(vk.money("150.00"), "150.00") eq(vk.money(nil), "0.00")
eq(vk.money(12.5), "12.50", "float from JSON")
local ok, err = pcall(vk.money, "abc")
assert(not ok and tostring(err):find("invalid decimal"), tostring(err))

-- v2 errors
local code, msg = vk.v2_error('{"error":{"message":"Wrong banners ids: 5,7","code":"ERR_WRONG_BANNERS"}}')
eq(code, "ERR_WRONG_BANNERS") eq(msg, "Wrong banners ids: 5,7")
code, msg = vk.v2_error('{"code":"expired_token","message":"Access token is expired"}')
eq(code, "expired_token")
code = vk.v2_error('{"error":"invalid_request","error_description":"Active access token limit reached"}')
eq(code, "invalid_request")
eq(vk.v2_error("<html>"), nil)
eq(vk.is_id_error("ERR_WRONG_BANNERS"), true) eq(vk.is_id_error("ERR_WRONG_ADPLANS"), true)
eq(vk.is_id_error("ERR_ACCESS_DENIED"), true) eq(vk.is_id_error("ERR_WRONG_DATE"), false)
eq(vk.is_id_error("ERR_WRONG_PARAMETER"), false) eq(vk.is_id_error(nil), false)
local named = vk.ids_named("Wrong banners ids: 5,7", { 5, 6, 7, 55 })
eq(#named, 2) eq(named[1], 5) eq(named[2], 7)
eq(#vk.ids_named("Injected error", { 5 }), 0)

-- v2 measures
local imp, clk, spent = vk.v2_measures({ date = "2025-11-01", base = { shows = 75881, clicks = 270, spent = "23328.92" } })
eq(imp, 75881) eq(clk, 270) eq(spent, "23328.92")
imp, clk, spent = vk.v2_measures({ date = "2025-11-01", base = {} })
eq(imp, 0) eq(spent, "0.00")

-- legacy errors: 6/9 slow down, 601 stop for the day, 5 auth
local e = vk.legacy_error({ error = { error_code = 9, error_msg = "Flood control" } })
eq(e.code, 9) eq(vk.legacy_action(9), "retry") eq(vk.legacy_action(6), "retry")
local action, why = vk.legacy_action(601)
eq(action, "stop") assert(why:find("tomorrow"))
action, why = vk.legacy_action(5)
eq(action, "stop") assert(why:find("VK_TOKEN"))
eq(vk.legacy_error({ response = {} }), nil)

-- type drift in statistics: counts as strings are read, anything that is not a whole number is an
-- error naming the field (never a silent 0); Python Decimal's exponent form is money too
imp, clk, spent = vk.v2_measures({ date = "2025-11-01", base = { shows = "75881", clicks = 270.0, spent = "0E-8" } })
eq(imp, 75881) eq(clk, 270) eq(spent, "0.00")
imp, clk, spent = vk.v2_measures({ date = "2025-11-01", base = { shows = 1, clicks = json.null, spent = "1.2345E+3" } })
eq(clk, 0) eq(spent, "1234.50")
eq(vk.money("5E-3"), "0.01") eq(vk.money("-12.5e1"), "-125.00") eq(vk.money("1E2"), "100.00")
local bad
imp, bad = vk.v2_measures({ date = "2025-11-01", base = { shows = "1 200", clicks = 1, spent = "1" } })
eq(imp, nil) eq(bad, "shows not a whole number: '1 200'")
imp, bad = vk.v2_measures({ date = "2025-11-01", base = { shows = 1, clicks = 2.5, spent = "1" } })
eq(bad, "clicks not a whole number: 2.5")
imp, bad = vk.v2_measures({ date = "2025-11-01", base = { shows = 1, clicks = 1, spent = "12,50" } })
eq(bad, "spent invalid decimal '12,50'")
imp, bad = vk.legacy_measures({ day = "2024-05-01", impressions = "abc", clicks = 1, spent = "1" })
eq(bad, "impressions not a whole number: 'abc'")
imp, clk, spent = vk.legacy_measures({ day = "2024-05-01", impressions = "1200", clicks = "7", spent = 150.5 })
eq(imp, 1200) eq(clk, 7) eq(spent, "150.50")

-- legacy API strings are HTML-escaped: names and links are unescaped before use
eq(vk.unhtml("Rock &amp; Roll &quot;Зима&quot; &#39;24 &lt;b&gt; &#x41;&#1046;"), "Rock & Roll \"Зима\" '24 <b> AЖ")
eq(vk.unhtml("a &unknown; b & c &#0;"), "a &unknown; b & c &#0;") eq(vk.unhtml(nil), nil)
local utm = require("utm")
local u = utm.parse(vk.unhtml("https://msk.qtickets.events/24089?utm_source=vk&amp;utm_medium=cpc&amp;utm_content=msk_19_11"))
eq(u.utm_source, "vk") eq(u.utm_medium, "cpc") eq(u.utm_city, "msk") eq(u.utm_day, 19)
