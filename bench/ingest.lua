-- zhost: job=bench_ingest secrets=qtickets options=base,table,concurrency,decode,batch,map
-- The ingest benchmark's zhost job (bench/README.md): every page of QTickets-shaped orders from
-- bench/pagefake.py -> basket rows (qtickets_map's rules: a row template, or with --map lua its
-- helpers) -> one ClickHouse table.
-- --decode view parses each page with json.view (simdjson, lazy); --decode cjson with res:json(). Unlike scripts/qtickets.lua it keeps no per-order state (no seen-ids set, no events), so its
-- memory must not grow with the number of orders: that is one of the things measured.
--   zhost run bench/ingest.lua --base URL --table DB.TABLE [--concurrency 4] [--decode view|cjson]
--                              [--map template|lua] [--batch N]
-- C workers each take the next page number, fetch it, map it and hand its rows to the sink; the
-- sink's backpressure (one INSERT in flight, bounded buffer) stops the workers when ClickHouse lags.
local map = require("qtickets_map")

local args = job.args
local base = assert(args.base, "--base URL is required")
local tbl = assert(args.table, "--table DB.TABLE is required")
local concurrency = math.tointeger(tonumber(args.concurrency or "4"))
local decode = args.decode or "view"
if decode == "view" and not json.view then decode = "cjson" end
http.configure("bench", {concurrency = concurrency})

-- --batch N: rows per INSERT (the sink's default is 50,000 rows / 16 MiB / 5 s)
local batch = math.tointeger(tonumber(args.batch or ""))
local sink = assert(ch.sink(tbl, batch and {max_rows = batch, max_bytes = batch * 400} or nil))
local ver = math.floor(time.now() * 1000)
local from_epoch, to_epoch = time.parse("2025-01-01"), time.parse("2027-01-01")
local body_tpl = {
  where = {{column = "payed", value = 1}},
  orderBy = {id = "asc"},
}

local function fetch(page)
  local b = {where = body_tpl.where, orderBy = body_tpl.orderBy, page = page}
  local res, err = http.request{method = "GET", url = base .. "/orders", json = b, source = "bench",
    headers = {Authorization = "Bearer qt-test-token", Accept = "application/json"}}
  if not res then error("page " .. page .. ": " .. err, 0) end
  if res.status ~= 200 then error("page " .. page .. ": HTTP " .. res.status, 0) end
  local v, jerr
  if decode == "view" then v, jerr = res:json_view() else v, jerr = res:json() end
  if not v then error("page " .. page .. ": " .. tostring(jerr), 0) end
  return v
end

local orders, rows, filtered = 0, 0, 0
local null = json.null
local str, money, ts, epoch, truthy = map.str, map.money, map.ts, map.epoch, map.truthy
local tointeger = math.tointeger

-- A decoded object (json.decode) or a view of one (json.view) — json.null is a light userdata, and
-- an array view in its place only yields nils: the same code maps both.
local function is_obj(x)
  local t = type(x)
  return t == "table" or (t == "userdata" and x ~= null)
end

-- The basket rows of qtickets_map.order_rows, column for column, built with its helpers (the
-- bench keeps no per-order notes and no per-order row list, so its memory stays flat).
local function add_baskets(o)
  local order_id, event_id = str(o.id), str(o.event_id)
  local payed_at = ts(o.payed_at)
  local created_at = ts(o.created_at) or payed_at or time.format(0)
  local sale_ts = payed_at or created_at
  local baskets = o.baskets
  if not is_obj(baskets) then return 0 end
  local n = 0
  for _, b in ipairs(baskets) do
    if is_obj(b) then
      local q = b.quantity
      local qty = tointeger(q) or tointeger(tonumber(q ~= null and q or "") or 1) or 1
      if qty < 0 then qty = 0 end
      local price = money(b.price) or "0.00"
      sink:add{
        basket_id = str(b.id),
        order_id = order_id,
        event_id = event_id,
        show_id = str(b.show_id),
        price = price,
        original_price = money(b.original_price) or price,
        quantity = qty,
        deleted_at = ts(b.deleted_at) or null,
        refunded_at = ts(b.refunded_at) or null,
        refunded_amount = money(b.refunded_amount) or null,
        sale_ts = sale_ts,
        _ver = ver,
      }
      n = n + 1
    end
  end
  return n
end

-- --map template (the default with views): the same rows from a row template compiled once and
-- run in C (sink:template, docs/lua-api.md), the filter too (its `only`: qtickets_map.truthy's
-- and epoch's readings), and the page's orders handed to C in one add_each call; --map lua:
-- the filter below and add_baskets above.
local mapping = args.map or (decode == "view" and "template" or "lua")
if mapping == "template" and decode ~= "view" then error("--map template needs --decode view", 0) end
local baskets_tpl = mapping == "template" and map.basket_template(sink, ver, {
  {"payed", is = "truthy"},
  {"payed_at", is = "datetime", from = from_epoch, to = to_epoch},
})

local function load(v)
  local data = v.data
  if baskets_tpl then
    -- counted after the call: add_each may wait (backpressure) while other workers count
    local n, kept, skipped = baskets_tpl:add_each(data)
    rows, orders, filtered = rows + n, orders + kept, filtered + skipped
    return
  end
  for i = 1, #data do
    local o = data[i]
    local p = is_obj(o) and truthy(o.payed) and epoch(o.payed_at)
    if p and p >= from_epoch and p < to_epoch then
      -- not `rows = rows + add_baskets(o)`: sink:add may wait (backpressure), other workers add
      -- to `rows` meanwhile, and the value read before the call would overwrite theirs
      local n = add_baskets(o)
      rows = rows + n
      orders = orders + 1
    else
      filtered = filtered + 1
    end
  end
end

local first = fetch(1)
local pages = math.max(1, (math.tointeger(first.paging.total) + 49) // 50)
load(first)
first = nil

local nextp = 2
local function worker()
  while nextp <= pages do
    local p = nextp
    nextp = nextp + 1
    load(fetch(p))
  end
end
local ws = {}
for i = 1, concurrency do ws[i] = task.spawn(worker) end
for i = 1, concurrency do
  local ok, err = task.wait(ws[i])
  if ok == nil and err then error(err, 0) end
end
assert(sink:flush())
job:set("orders", orders)
job:set("basket_rows", rows)
job:set("filtered_out", filtered)
job:message(string.format("%d pages, %d orders, %d basket rows (%s, %s)", pages, orders, rows, decode, mapping))
