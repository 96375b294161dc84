-- QA: direct_tsv.parse follows a reordered column header and, when asked, insists on one.
local tsv = require("direct_tsv")
local F = { "Date", "Impressions", "Cost" }
local rows, info = tsv.parse("Cost\tDate\tImpressions\r\n1230000\t2025-11-03\t10\r\n", F)
assert(info.header and #rows == 1)
assert(rows[1].Date == "2025-11-03" and rows[1].Impressions == "10" and rows[1].Cost == "1230000")
rows = tsv.parse("", F)
assert(rows and #rows == 0, "empty body without the option is an empty report")
local r, err = tsv.parse("", F, { header_required = true })
assert(r == nil and err:find("no column header"), err)
r, err = tsv.parse("2025-11-03\t10\t1\n", F, { header_required = true })
assert(r == nil and err:find("no column header"), err)
rows = tsv.parse("Date\tImpressions\tCost\n", F, { header_required = true })
assert(rows and #rows == 0)
-- a header naming a field twice is data, not a header
r, err = tsv.parse("Date\tDate\tCost\n", F, { header_required = true })
assert(r == nil, "duplicate names are not a header")

-- A UTF-8 byte order mark in front of the body does not hide the title or the column header.
rows, info = tsv.parse("\239\187\191\"r (2025-11-03 - 2025-11-03)\"\nDate\tImpressions\tCost\n2025-11-03\t10\t1230000\n"
  .. "Total rows: 1\n", F, { header_required = true, total_required = true })
assert(rows and #rows == 1 and info.title == "r (2025-11-03 - 2025-11-03)" and rows[1].Date == "2025-11-03",
  "BOM: " .. tostring(info))
rows = tsv.parse("\239\187\191Date\tImpressions\tCost\nTotal rows: 0\n", F, { header_required = true })
assert(rows and #rows == 0, "BOM before the column header")

-- "No data" in a money column is "--", the single dash the Direct docs also show, or nothing; any
-- other text is an error, digits or not (vk_lib reads VK money through dec2).
for _, s in ipairs({ "-", "--", " - ", "" }) do
  assert(tsv.micros(s) == "0.00", "micros " .. s) assert(tsv.money(s) == "0.00", "money " .. s)
  assert(tsv.dec2(s) == "0.00", "dec2 " .. s)
end
assert(tsv.money("12,50") == nil and tsv.micros("12x") == nil and tsv.money("1 230 000") == nil)
assert(tsv.dec2("abc") == nil and tsv.micros("n/a") == nil, "text without digits is not 'no data'")

-- A title line that is not quoted (its exact form is unverified) is still a title when the column
-- header follows it; a line without tabs that is not followed by the header is not one.
rows, info = tsv.parse("zhost_direct_x (2025-11-03 - 2025-11-03)\r\nDate\tImpressions\tCost\r\n2025-11-03\t10\t1230000\r\n"
  .. "Total rows: 1\r\n", F, { header_required = true, total_required = true })
assert(rows and #rows == 1 and info.title == "zhost_direct_x (2025-11-03 - 2025-11-03)", "unquoted title: " .. tostring(info))
r, err = tsv.parse("some text\n2025-11-03\t10\t1230000\nTotal rows: 1\n", F, { header_required = true })
assert(r == nil and err:find("no column header"), tostring(err))
