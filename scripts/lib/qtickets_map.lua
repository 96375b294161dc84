-- qtickets_map: pure mapping from QTickets REST v1 objects to the rows of dim_events,
-- stg_qtickets_api_orders_raw and stg_qtickets_api_baskets_raw (docs/schema.md §3.5-3.7).
-- No I/O here, so the Lua specs can feed it recorded payloads. The payloads drift in type (see
-- /work/shared/api/qtickets.md, pitfalls 3-8); every accessor below tolerates the variants seen.
-- Objects may be json.decode tables or json.view views (the loader reads pages as views: several
-- times cheaper to parse); both give the same rows. Rows hold only strings, numbers and json.null,
-- never a view, so a row kept in a sink does not keep its page's document alive.
local kopecks = require("money")

local M = {}

local null = json.null

local function is_null(v) return v == nil or v == null end
M.is_null = is_null

local isview = json.isview

-- A JSON object or array: a decoded table or a view. (type() of a view is "userdata", as is json.null's.)
local function is_obj(x)
  local t = type(x)
  return t == "table" or (t == "userdata" and isview(x))
end
M.is_obj = is_obj

-- The number of items of a JSON array, as # of json.decode's table gives it: 0 for an object (a view
-- of an object counts its fields, a decoded object has no 1..n part) and for a non-object.
function M.len(x)
  if not is_obj(x) or x[1] == nil then return 0 end
  return #x
end

-- The items of a list, or nil when x is no list. An array (table or view) is itself. PHP encodes an
-- array whose keys are not 0..n-1 — a filtered list — as an object {"0": …, "2": …}: that is a
-- list too, its values in key order (a fresh table). Treating it as "no items" would read a page
-- of orders as the end of the list and load nothing, without a word. Anything else is nil.
function M.list(x)
  if not is_obj(x) then return nil end
  if x[1] ~= nil then return x end
  local keyed = {}
  for k, v in pairs(x) do
    local i = math.tointeger(tonumber(k))
    if not i or tostring(i) ~= tostring(k) then return nil end
    keyed[#keyed + 1] = {i, v}
  end
  if #keyed == 0 then return x end -- [] or {}: no items either way
  table.sort(keyed, function(a, b) return a[1] < b[1] end)
  local out = {}
  for j, kv in ipairs(keyed) do out[j] = kv[2] end
  return out
end

-- Ids arrive as integers (json.decode and json.view turn integral numbers into integers), integral
-- floats or strings; stored as text. nil / null / objects -> "". text.id does it in C.
M.str = text.id

-- true / 1 / "1" / "true" -> true; false / 0 / "" / null -> false (payed, reserved, is_active drift).
function M.truthy(v)
  if is_null(v) or v == false then return false end
  if v == true then return true end
  if type(v) == "number" then return v ~= 0 end
  if type(v) == "string" then
    local s = v:lower()
    return s ~= "" and s ~= "0" and s ~= "false" and s ~= "no"
  end
  return false
end

---------------------------------------------------------------------------------------- money

-- Money as decimal text with two fraction digits, for a Decimal(18,2) column, or nil (+ reason) when
-- absent or not money. Accepts integers, floats (lua-cjson's or a view's double for 1222.03: its
-- shortest text is the wire text for <= 15 significant digits) and decimal strings; text.decimal
-- does the work in C, never through a binary float. More than two fraction digits are rounded half
-- away from zero; the second result is "rounded" then, so callers can count it.
local decimal = text.decimal
function M.money(v)
  local t = type(v)
  if t ~= "number" and t ~= "string" then
    if is_null(v) then return nil, "no value" end
    return nil, "expected a number, got " .. ((t == "table" or t == "userdata") and "a JSON object or array" or t)
  end
  local m, why = decimal(v, 2)
  if m and #m > 19 and #m - (m:byte(1) == 45 and 4 or 3) > 16 then return nil, "amount too large '" .. m .. "'" end
  return m, why
end

-- The same as an integer number of kopecks, so sums and comparisons stay exact.
function M.cents(v)
  local m, why = M.money(v)
  if not m then return nil, why end
  return kopecks.cents(m), why
end

M.from_cents = kopecks.from_cents

----------------------------------------------------------------------------------------- time

-- ISO-8601 with offset -> epoch seconds (converted by the offset, never by the event's city), or nil.
-- (nil and json.null are not strings.) These two run for several fields of every order: lean.
local parse_time, format_time, floor = time.parse, time.format, math.floor
function M.epoch(v)
  if type(v) ~= "string" or v == "" then return nil end
  local e = parse_time(v)
  if not e then return nil end
  return floor(e)
end

-- ISO-8601 with offset -> "YYYY-MM-DD hh:mm:ss" in Moscow time (what DateTime('Europe/Moscow') takes).
function M.ts(v)
  if type(v) ~= "string" or v == "" then return nil end
  local e = parse_time(v)
  if not e then return nil end
  return format_time(floor(e))
end

local function ts_or_null(v)
  return M.ts(v) or null
end

-------------------------------------------------------------------------------------- strings

-- Event name: a string, or a per-language object in multilingual cabinets ({"ru": ..., "en": ...}).
function M.text_of(v)
  if type(v) == "string" then return text.trim(v) end
  if type(v) == "number" then return tostring(v) end
  if is_obj(v) then
    for _, k in ipairs({"ru", "RU", "ru_RU", "default", "en", "EN"}) do
      if type(v[k]) == "string" and v[k] ~= "" then return text.trim(v[k]) end
    end
    local keys = {}
    for k, x in pairs(v) do
      if type(x) == "string" and x ~= "" then keys[#keys + 1] = tostring(k) end
    end
    table.sort(keys)
    if keys[1] then
      local x = v[keys[1]] or v[math.tointeger(tonumber(keys[1])) or keys[1]]
      if type(x) == "string" then return text.trim(x) end
    end
  end
  return ""
end

local UTM = {"utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"}
M.UTM = UTM

-- utm: [] (PHP's empty array), an object with utm_* keys (or the same without the prefix), or a
-- query string. Returns a table with the five utm_* fields, '' when absent.
function M.utm(v)
  local out = {}
  for _, k in ipairs(UTM) do out[k] = "" end
  if type(v) == "string" and v:find("=") then v = text.parse_query(v) end
  if not is_obj(v) then return out end
  for _, k in ipairs(UTM) do
    local x = v[k]
    if is_null(x) then x = v[k:sub(5)] end
    if type(x) == "number" then x = M.str(x) end
    if type(x) == "string" then out[k] = text.trim(x) end
  end
  return out
end

-------------------------------------------------------------------------------------- events

local function city_of(e)
  local c = e.city
  if is_obj(c) then return M.text_of(c.name), M.str(c.id) end
  if type(c) == "string" then return text.trim(c), "" end
  return "", ""
end

-- dim_events row. tickets_total/tickets_left are NULL: this loader does not fetch inventory, and the
-- latest row wins (docs/schema.md §2.1).
function M.event_row(e, ver)
  local city, cid = city_of(e)
  if cid == "" then cid = M.str(e.city_id) end
  local first, last
  local shows = M.list(e.shows) or {}
  local any_live = false
  for _, s in ipairs(shows) do
    if is_obj(s) and is_null(s.deleted_at) then any_live = true end
  end
  for _, s in ipairs(shows) do
    if is_obj(s) and (not any_live or is_null(s.deleted_at)) then
      local st = M.epoch(s.start_date)
      local fin = M.epoch(s.finish_date) or st
      if st and (not first or st < first) then first = st end
      if fin and (not last or fin > last) then last = fin end
    end
  end
  return {
    event_id = M.str(e.id),
    event_name = M.text_of(e.name),
    city = city,
    city_id = cid,
    place_name = M.text_of(e.place_name),
    start_date = first and time.date(first) or null,
    end_date = last and time.date(last) or null,
    tickets_total = null,
    tickets_left = null,
    is_active = M.truthy(e.is_active) and 1 or 0,
    is_deleted = is_null(e.deleted_at) and 0 or 1,
    currency = type(e.currency_id) == "string" and e.currency_id or "RUB",
    _ver = ver,
  }
end

-------------------------------------------------------------------------------------- orders

-- Is the order one this run should store? Paid, and paid inside [from, to) (epoch seconds). The
-- server may ignore the body filters (pitfall 1, 9), so every page is re-checked here.
function M.order_in_window(o, from, to)
  if not is_obj(o) then return false, "not an object" end
  if not M.truthy(o.payed) then return false, "unpaid" end
  local p = M.epoch(o.payed_at)
  if not p then return false, "no payed_at" end
  if p < from or p >= to then return false, "outside the window" end
  return true
end

-- How a value that could not be read is shown in a problem line: short, never the whole payload.
local function shown(v)
  if type(v) == "string" then return string.format("%q", #v > 40 and v:sub(1, 40) .. "…" or v) end
  if type(v) == "userdata" or type(v) == "table" then return "a JSON object or array" end
  return type(v) .. " " .. tostring(v)
end

-- Present but empty: "" and json.null mean "no value" (the column's default), not a problem.
local function blank(v)
  return v == nil or v == null or (type(v) == "string" and not v:find("%S"))
end

-- Order row plus its basket rows, all at the same _ver (docs/schema.md §3.6-3.7).
-- Returns order_row, basket_rows, notes (a list of oddities worth a metric: "money_rounded",
-- "value_unreadable", ...), problems (one line per value that was there but could not be read,
-- naming order, basket, field and value: the row got the column's default — price 0.00,
-- quantity 1 — and the caller must not let that pass silently).
function M.order_rows(o, ver)
  local notes, problems = {}, {}
  local order_id = M.str(o.id)
  local function problem(where, field, why)
    notes[#notes + 1] = "value_unreadable"
    problems[#problems + 1] = string.format("order %s%s %s: %s", order_id, where, field, why)
  end
  local function money(v, default, where, field)
    local m, why = M.money(v)
    if why == "rounded" then notes[#notes + 1] = "money_rounded" end
    if not m then
      if not blank(v) then problem(where, field, #why > 90 and why:sub(1, 90) .. "…" or why) end
      return default
    end
    return m
  end
  local event_id = M.str(o.event_id)
  local payed_at = M.ts(o.payed_at)
  local created_at = M.ts(o.created_at) or payed_at or time.format(0)
  local sale_ts = payed_at or created_at
  local baskets = M.list(o.baskets) or {}
  local rows, live = {}, 0
  for _, b in ipairs(baskets) do
    if is_obj(b) then
      local deleted, refunded = M.ts(b.deleted_at), M.ts(b.refunded_at)
      if not deleted and not refunded then live = live + 1 end
      local where = " basket " .. M.str(b.id)
      local q = b.quantity
      local qty = math.tointeger(q) or (type(q) == "string" and math.tointeger(tonumber(q) or 0.5))
      if not qty then
        qty = 1
        if not blank(q) then problem(where, "quantity", "not a whole number: " .. shown(q)) end
      end
      if qty < 0 then qty = 0 end
      local price = money(b.price, "0.00", where, "price")
      local refunded_amount = money(b.refunded_amount, nil, where, "refunded_amount")
      rows[#rows + 1] = {
        basket_id = M.str(b.id),
        order_id = order_id,
        event_id = event_id,
        show_id = M.str(b.show_id),
        price = price,
        original_price = money(b.original_price, price, where, "original_price"),
        quantity = qty,
        deleted_at = deleted or null,
        refunded_at = refunded or null,
        refunded_amount = refunded_amount or null,
        sale_ts = sale_ts,
        _ver = ver,
      }
    end
  end
  local utm = M.utm(o.utm)
  local price = money(o.price, "0.00", "", "price")
  local order = {
    order_id = order_id,
    event_id = event_id,
    payed = M.truthy(o.payed) and 1 or 0,
    payed_at = payed_at or null,
    created_at = created_at,
    deleted_at = ts_or_null(o.deleted_at),
    sale_ts = sale_ts,
    price = price,
    original_price = money(o.original_price, price, "", "original_price"),
    currency = type(o.currency_id) == "string" and o.currency_id ~= "" and o.currency_id or "RUB",
    utm_source = utm.utm_source,
    utm_medium = utm.utm_medium,
    utm_campaign = utm.utm_campaign,
    utm_content = utm.utm_content,
    utm_term = utm.utm_term,
    client_id = M.str(o.client_id),
    promo_code_id = M.str(o.promo_code_id),
    baskets_total = #rows,
    baskets_live = live,
    _ver = ver,
  }
  return order, rows, notes, problems
end

-- The basket rows of M.order_rows as a row template (sink:template, docs/lua-api.md): the same
-- rows, made in C from a json.view of an order — `tpl:add(order)`. For bulk loads where the
-- mapping's CPU matters (bench/ingest.lua); spec/e2e/test_rowtpl.py checks both give identical
-- rows over every documented type drift. order_rows stays the loader's: it also makes the order
-- row and counts live baskets. `only` (optional): the template's conditions on the order
-- (docs/lua-api.md: `only`), e.g. paid inside a window, so a page goes through `tpl:add_each(list)`.
function M.basket_template(sink, ver, only)
  return sink:template{
    each = "baskets",
    only = only,
    columns = {
      basket_id = {"id", as = "id"},
      order_id = {"^id", as = "id"},
      event_id = {"^event_id", as = "id"},
      show_id = {"show_id", as = "id"},
      price = {"price", as = "decimal", default = "0.00"},
      original_price = {"original_price", as = "decimal", default_from = "price"},
      quantity = {"quantity", as = "int", default = 1, min = 0},
      deleted_at = {"deleted_at", as = "datetime", default = null},
      refunded_at = {"refunded_at", as = "datetime", default = null},
      refunded_amount = {"refunded_amount", as = "decimal", default = null},
      sale_ts = {"^payed_at", "^created_at", as = "datetime", default = time.format(0)},
      _ver = {value = ver},
    },
  }
end

return M
