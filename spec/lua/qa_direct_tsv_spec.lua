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
