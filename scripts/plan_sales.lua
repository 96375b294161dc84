-- zhost: job=plan_sales options=csv
-- Sales plan CSV -> plan_sales.  zhost run scripts/plan_sales.lua --csv FILE [--dry-run]
-- Columns (any order, any case): sales_date, city, event_id, plan_tickets, plan_revenue; Russian names
-- too (дата, город, ид события, план билетов, план выручки). Dates ISO or day-first, decimal commas.
-- A bad row fails the whole load with "FILE line N: why" and nothing is written, so a half-loaded plan
-- never shows up in v_plan_vs_fact. A corrected file is simply loaded again (higher _ver wins).
local sales = require("sales_csv")

local path = job.args.csv
if not path or path == "" or path == "true" then
  error("usage: zhost run scripts/plan_sales.lua --csv FILE", 0)
end
local bytes, err = io.read_file(path)
if not bytes then error("cannot read the plan: " .. tostring(err), 0) end

local rows
rows, err = sales.plan_rows(bytes)
if not rows then error(path .. " " .. err, 0) end

-- Two lines for the same key would collapse into one: refuse instead of keeping an arbitrary one.
local seen = {}
for _, r in ipairs(rows) do
  local k = r.sales_date .. "\0" .. r.city .. "\0" .. r.event_id
  if seen[k] then
    error(string.format("%s line %d: duplicates line %d (%s, %s, event %s)", path, r.line, seen[k], r.sales_date,
      r.city, r.event_id ~= "" and r.event_id or "''"), 0)
  end
  seen[k] = r.line
end

local sink, serr = ch.sink("plan_sales")
if not sink then error("ClickHouse table plan_sales: " .. tostring(serr), 0) end
local ver = math.floor(time.now() * 1000)
for _, r in ipairs(rows) do
  sink:add{sales_date = r.sales_date, event_id = r.event_id, city = r.city, plan_tickets = r.plan_tickets,
    plan_revenue = r.plan_revenue, _ver = ver}
end
job:set("plan_rows", #rows)
job:message(string.format("%d plan rows from %s", #rows, path))
