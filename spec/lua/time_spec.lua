-- time module through Lua: values, integer/float results, nil-err failures, misuse raising.
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end

-- parse: offsets, Z, fractions, naive strings in the given zone (default Europe/Moscow)
eq(time.parse("2019-07-30T12:50:52+03:00"), 1564480252, "qtickets offset")
assert(math.type(time.parse("2019-07-30T12:50:52+03:00")) == "integer")
eq(time.parse("2019-07-30T12:50:52+0300"), 1564480252, "offset without colon")
eq(time.parse("2019-07-30T09:50:52Z"), 1564480252, "Z")
local g = time.parse("2025-06-27T08:38:04.924450Z")
assert(math.type(g) == "float" and math.abs(g - 1751013484.92445) < 1e-5, "google fractional " .. tostring(g))
-- a fraction close to 1 never makes the float reach the next second (math.floor gives the second written)
for _, s in ipairs({"2025-11-01T12:00:00.9999999Z", "2025-11-01T12:00:00.999999999Z", "0000-01-01T00:00:00.9999999Z",
                    "9999-12-31T23:59:59.9999999Z", "1969-12-31T23:59:59.99999999Z"}) do
  local whole = time.parse((s:gsub("%.%d+", "")))
  local t = time.parse(s)
  eq(math.floor(t), whole, "floor of " .. s)
  assert(t > whole, s)
  eq(time.format(t), time.format(whole), "format of " .. s)
end
eq(time.parse("2025-11-01 12:00:00"), 1761987600, "naive = Moscow")
eq(time.parse("2025-11-01"), 1761944400, "date = Moscow midnight")
eq(time.parse("2025-11-01 12:00:00", "UTC"), 1761998400, "naive in UTC")
eq(time.parse("2025-11-01 12:00:00", "Europe/Berlin"), 1761994800, "naive in Berlin")
local v, err = time.parse("01.11.2025")
assert(v == nil and err:find("invalid time", 1, true), "bad parse returns nil, err")
v, err = time.parse("2025-11-01", "Mars/Base")
assert(v == nil and err == "unknown time zone 'Mars/Base'", err)
assert(not pcall(time.parse, nil), "parse(nil) is misuse")

-- format / date
eq(time.format(1761987600), "2025-11-01 12:00:00", "default format")
eq(time.format(1761987600, "iso"), "2025-11-01T12:00:00+03:00", "iso")
eq(time.format(1761987600, "iso", "Europe/Berlin"), "2025-11-01T10:00:00+01:00", "iso Berlin")
eq(time.format(1751371200, "%H:%M %Z", "Europe/Berlin"), "14:00 CEST", "summer Berlin")
eq(time.format(1761987600.75, "%S"), "00", "fraction floored")
eq(time.date(1761944399), "2025-10-31", "date just before Moscow midnight")
eq(time.date(1761944400), "2025-11-01", "Moscow midnight")
eq(time.date(1761944400, "UTC"), "2025-10-31", "same instant in UTC")
assert(not pcall(time.format, 0, "%Q"), "unknown conversion raises")
v, err = time.format(1e300)
assert(v == nil and err:find("out of range"), "huge epoch")
v, err = time.format(0 / 0)
assert(v == nil, "NaN epoch")

-- round trip through a DST zone
for _, s in ipairs({"2025-03-30T01:59:59+01:00", "2025-03-30T03:00:00+02:00", "2025-10-26T02:30:00+02:00",
                    "2025-10-26T02:30:00+01:00"}) do
  eq(time.format(time.parse(s), "iso", "Europe/Berlin"), s, "round trip " .. s)
end

-- dates
eq(time.parse_date("1.11.2025"), "2025-11-01", "day-first")
eq(time.parse_date("01.11.2025 14:30"), "2025-11-01", "day-first with time")
eq(time.parse_date("2025-11-01T23:30:00+03:00"), "2025-11-01", "iso date part")
v, err = time.parse_date("31.02.2025")
assert(v == nil and err:find("invalid date"), err)
eq(time.add_days("2025-12-31", 1), "2026-01-01", "year boundary")
eq(time.add_days("2024-03-01", -1), "2024-02-29", "leap day")
eq(time.add_days("01.11.2025", 0), "2025-11-01", "normalises")
eq(time.days_between("2025-11-01", "2025-11-03"), 2, "days_between")
eq(time.days_between("2025-11-03", "2025-11-01"), -2, "days_between negative")
assert(time.add_days("bad", 1) == nil)

-- HTTP dates both ways
eq(time.http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777, "rfc1123")
eq(time.http_date("Fri, 27 Jun 2025 11:38:04 +0300"), 1751013484, "rfc5322 offset")
eq(time.http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT", "format http date")
assert(time.http_date("yesterday") == nil)

-- today / now / window
local today = time.today()
assert(today:match("^%d%d%d%d%-%d%d%-%d%d$"), today)
eq(today, time.date(time.now()), "today is the date of now in Moscow")
assert(math.abs(time.now() - os.time()) < 5, "now is wall clock")
eq(time.today("Pacific/Kiritimati"), time.date(time.now(), "Pacific/Kiritimati"), "today in a zone")
local s, t = time.window{days = 3}
eq(t, today, "window to today")
eq(s, time.add_days(today, -2), "3 days ending today")
s, t = time.window{days = "7", to = "2025-11-10"}
eq(s, "2025-11-04", "days string") eq(t, "2025-11-10", "to")
s, t = time.window{since = "01.11.2025", to = "2025-11-03"}
eq(s, "2025-11-01", "since") eq(t, "2025-11-03", "to")
s, t = time.window{since = "2025-11-01"}
eq(s, "2025-11-01", "since only") eq(t, today, "ends today")
s, t = time.window{default_days = 5}
eq(s, time.add_days(today, -4), "default_days")
s, t = time.window{}
eq(s, today, "default one day") eq(t, today, "default one day")
s, t = time.window{since = "", to = "", days = ""}
eq(s, today, "empty CLI strings are absent")
s, err = time.window{since = "2025-11-05", to = "2025-11-03"}
assert(s == nil and err == "window: since 2025-11-05 is after to 2025-11-03", err)
s, err = time.window{days = 3, since = "2025-11-01"}
assert(s == nil and err:find("not both"), err)
s, err = time.window{days = 0}
assert(s == nil and err:find("between 1"), err)
s, err = time.window{since = "2025-13-01"}
assert(s == nil and err:find("invalid since date"), err)
s, err = time.window{days = 1, tz = "Nowhere/Land"}
assert(s == nil and err == "unknown time zone 'Nowhere/Land'", err)
assert(not pcall(time.window, "x"), "window needs a table")
print("time_spec ok")
