-- scripts/lib/direct_tsv.lua: Direct report bodies, "--", exact micros -> roubles.
local tsv = require("direct_tsv")
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end
local F = { "Date", "CampaignId", "CampaignName", "Impressions", "Clicks", "Cost" }

-- every layout: title + header + trailer, each part skipped, CRLF, empty
local data = "2025-11-01\t123\tSpring sale\t1520\t31\t2480000000\n2025-11-01\t456\tBrand\t88\t--\t--\n"
local full = '"camp_daily (2025-11-01 - 2025-11-07)"\nDate\tCampaignId\tCampaignName\tImpressions\tClicks\tCost\n'
  .. data .. "Total rows: 2\n"
for name, body in pairs({
  full = full,
  no_title = full:gsub('^[^\n]*\n', ""),
  no_trailer = full:gsub("Total rows: 2\n$", ""),
  only_rows = data,
  crlf = full:gsub("\n", "\r\n"),
  no_final_newline = full:gsub("\n$", ""),
}) do
  local rows, info = tsv.parse(body, F)
  assert(rows, name .. ": " .. tostring(info))
  eq(#rows, 2, name .. " rows")
  eq(rows[1].CampaignName, "Spring sale", name) eq(rows[1].Cost, "2480000000", name)
  eq(rows[2].Clicks, "--", name .. " raw dash kept")
end
local rows, info = tsv.parse(full, F)
eq(info.title, "camp_daily (2025-11-01 - 2025-11-07)") eq(info.header, true) eq(info.total, 2)

-- empty reports
rows, info = tsv.parse('"r (2025-11-01 - 2025-11-01)"\nDate\tCampaignId\tCampaignName\tImpressions\tClicks\tCost\nTotal rows: 0\n', F)
eq(#rows, 0, "empty report") eq(info.total, 0)
rows = tsv.parse("", F)
eq(#rows, 0, "empty body")

-- damage is an error, not silent data loss
local r, err = tsv.parse(full:gsub("Total rows: 2", "Total rows: 3"), F)
assert(r == nil and err:find("Total rows: 3"), "trailer mismatch: " .. tostring(err))
r, err = tsv.parse("2025-11-01\t123\n", F)
assert(r == nil and err:find("2 columns, expected 6"), tostring(err))
r, err = tsv.parse(full .. "junk\n", F)
assert(r == nil and err:find("after the 'Total rows'"), tostring(err))

-- counts: "--" is 0
eq(tsv.count("1520"), 1520) eq(tsv.count("--"), 0) eq(tsv.count(""), 0) eq(tsv.count(nil), 0)
eq(math.type(tsv.count("7")), "integer")

-- micros -> roubles, exact, no floats
eq(tsv.micros("2480000000"), "2480.00")
eq(tsv.micros("0"), "0.00") eq(tsv.micros("--"), "0.00") eq(tsv.micros(""), "0.00")
eq(tsv.micros("10000"), "0.01") eq(tsv.micros("1230000"), "1.23")
eq(tsv.micros("4242720000"), "4242.72")
eq(tsv.micros("999999999999990000"), "999999999999.99", "18 digits, beyond a double's 15-16")
eq(tsv.micros("14999"), "0.01", "rounds half-up to kopecks") eq(tsv.micros("4999"), "0.00")
eq(tsv.micros("-1230000"), "-1.23")
eq(tsv.micros(1230000), "1.23", "integer input")
r, err = tsv.micros("12.5x")
assert(r == nil and err:find("invalid micros"), tostring(err))
r, err = tsv.micros("1234567890123456789012")
assert(r == nil and err:find("too large"), tostring(err))

-- decimals (returnMoneyInMicros: false) and money()
eq(tsv.dec2("86.4"), "86.40") eq(tsv.dec2("23328.92"), "23328.92") eq(tsv.dec2("0"), "0.00")
eq(tsv.dec2("1.005"), "1.01", "half-up") eq(tsv.dec2("1.0049"), "1.00") eq(tsv.dec2(".5"), "0.50")
eq(tsv.dec2("--"), "0.00")
eq(tsv.money("2480.00"), "2480.00") eq(tsv.money("2480000000"), "2480.00")
assert(tsv.dec2("1,5") == nil, "comma is not a Direct decimal")
