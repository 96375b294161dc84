-- zhost: job=qtickets secrets=qtickets
-- QTickets REST v1 -> dim_events, stg_qtickets_api_orders_raw, stg_qtickets_api_baskets_raw.
--
-- Window: paid orders whose payed_at falls in [since 00:00, to+1 00:00) Moscow time. Default: the
-- trailing QTICKETS_DAYS (3) days, so refunds made up to a few days after a sale reach the sale's
-- date; the first run on an empty database backfills QTICKETS_INITIAL_BACKFILL_DAYS (30).
-- Filters and paging travel in the JSON body of a GET, as the API wants; every page is re-filtered
-- here because the server may ignore the filters. After page 1 the page count is known and the
-- remaining pages are fetched QTICKETS_CONCURRENCY (8) at a time, then mapped in page order, so a
-- malformed page fails the run after exactly the pages before it were loaded.
-- Pages are read as json.view views (simdjson in C; bench/README.md). Nothing kept from one page to
-- the next is a view: ids are strings, rows hold strings and numbers, so each page's document is
-- freed once its chunk is mapped.
-- See docs/loaders/sales.md.
local map = require("qtickets_map")
local loader = require("loader")

local SOURCE = "qtickets"
local DEFAULT_BASE = "https://qtickets.ru/api/rest/v1"

---------------------------------------------------------------------------------- settings

-- setting(name, old_name, default): the original system's names still work, with a warning.
local _, setting = loader.settings(job)
local whole = loader.whole

local token = setting("QTICKETS_TOKEN", "QTICKETS_API_TOKEN")
if not token then job:need("QTICKETS_TOKEN") end
local base = setting("QTICKETS_BASE_URL", "QTICKETS_API_BASE_URL", DEFAULT_BASE):gsub("/+$", "")
local concurrency = whole("QTICKETS_CONCURRENCY", setting("QTICKETS_CONCURRENCY", nil, "8"), 1, 32)
local timeout = whole("QTICKETS_TIMEOUT", setting("QTICKETS_TIMEOUT", nil, "30"), 1, 600)
local default_days = whole("QTICKETS_DAYS", setting("QTICKETS_DAYS", nil, "3"), 1, 3660)
local backfill_days = whole("QTICKETS_INITIAL_BACKFILL_DAYS", setting("QTICKETS_INITIAL_BACKFILL_DAYS", nil, "30"), 1, 3660)

http.configure(SOURCE, {concurrency = concurrency})

------------------------------------------------------------------------------------ window

-- "Empty" = no successful run of this job yet, or no order in staging. Both are cheap counts.
local function needs_backfill()
  local rows, err = ch.query("SELECT count() AS n FROM zakaz.meta_job_runs WHERE job = " .. ch.quote(job.name) ..
    " AND status = 'success'")
  if not rows then
    log.warn("could not check for earlier runs; using the default window", {error = err})
    return false
  end
  if (tonumber(rows[1].n) or 0) == 0 then return true, "no successful " .. job.name .. " run yet" end
  rows = ch.query("SELECT count() AS n FROM zakaz.stg_qtickets_api_orders_raw")
  if rows and (tonumber(rows[1].n) or 0) == 0 then return true, "no orders in staging yet" end
  return false
end

local args = job.args
local days_arg = args.days
local reason
if not args.days and not args.since then
  local first, why = needs_backfill()
  if first then
    days_arg, reason = backfill_days, why
  end
end
local since, to = loader.window(args, default_days, days_arg)
local from_epoch = time.parse(since)
local to_epoch = time.parse(time.add_days(to, 1))
local from_iso, to_iso = time.format(from_epoch, "iso"), time.format(to_epoch, "iso")
if reason then
  log.info("first run: backfilling " .. backfill_days .. " days", {reason = reason, since = since, to = to})
end
job:set("window", since .. ".." .. to)
if reason then job:set("backfill", true) end

----------------------------------------------------------------------------------- requests

local headers = {
  Authorization = "Bearer " .. token,
  Accept = "application/json",
  ["Cache-Control"] = "no-cache",
}

local function snippet(s)
  s = tostring(s or ""):gsub("%s+", " ")
  if #s > 200 then s = s:sub(1, 200) .. "…" end
  return s
end

-- What an error answer says: QTickets' {"error": "…", "code": "…"} (or {"message": "…"}) as its text
-- — the body itself is PHP-escaped (\u041d…), unreadable in a run message — else the body.
local function error_text(res)
  local v = res:json()
  if type(v) == "table" then
    local t = type(v.error) == "string" and v.error ~= "" and v.error
      or type(v.message) == "string" and v.message ~= "" and v.message
    if t then
      if type(v.code) == "string" and v.code ~= "" then t = t .. " (" .. v.code .. ")" end
      return snippet(t)
    end
  end
  return snippet(res.body)
end

local token_refused = false -- a 401/403 was met: nothing else can load either

-- GET base..path with an optional JSON body. Returns the decoded value (a view for an object or
-- array), or nil, "<what>: <why>".
local function get(path, body, what)
  local res, err = http.request{method = "GET", url = base .. path, json = body, headers = headers,
    source = SOURCE, timeout = timeout}
  if not res then return nil, what .. ": " .. tostring(err) end
  if res.status == 401 or res.status == 403 then
    token_refused = true
    return nil, what .. ": HTTP " .. res.status .. " " .. error_text(res) ..
      ": QTickets refused the token; set a valid QTICKETS_TOKEN in " .. job.secrets_dir .. "/.env." .. job.secrets, res.status
  end
  if res.status ~= 200 then
    return nil, what .. ": HTTP " .. res.status .. " " .. error_text(res), res.status
  end
  local v = res:json_view()
  if v == nil then
    -- simdjson refuses some text lua-cjson reads (invalid UTF-8 inside a string): such a page loaded
    -- before views were used and still does; a broken one fails with json.decode's message, as before.
    local jerr
    v, jerr = res:json()
    if v == nil then return nil, what .. ": " .. tostring(jerr or "invalid JSON") end
    job:metric("json_fallbacks", 1)
  end
  return v
end

local function copy(t)
  local o = {}
  for k, v in pairs(t) do o[k] = v end
  return o
end

local function label(kind, page, pages)
  return kind .. " page " .. page .. (pages and (" of " .. pages) or "")
end

-- One list page: {data = {...}, paging = {...}} checked for shape. Never raises.
local function fetch_page(kind, body, page, pages)
  local b = copy(body)
  b.page = page
  local what = label(kind, page, pages)
  local v, err = get("/" .. kind, b, what)
  if not v then return {err = err} end
  local data = map.is_obj(v) and v.data -- read once: every read of a view's field is a new view
  local items = data and map.list(data)
  if not items then
    -- json.encode takes no view: the snippet is of a plain copy (an error body is small).
    return {err = what .. ": unexpected response without a data array: " .. snippet(json.encode(json.totable(v)))}
  end
  if not rawequal(items, data) then
    -- PHP's encoding of a filtered list: read as the list it is, and counted.
    job:metric("pages_data_as_object", 1)
  end
  local pg = map.is_obj(v.paging) and v.paging or {}
  local n = #items
  local cur = math.tointeger(tonumber(pg.currentPage))
  if cur and cur ~= page and n > 0 then
    return {err = what .. ": the server answered page " .. cur .. " (is the page in the body ignored?)"}
  end
  return {data = items, n = n, per = math.tointeger(tonumber(pg.perPage)), total = math.tointeger(tonumber(pg.total))}
end

local function pages_for(total, per)
  if not total or not per or per <= 0 then return nil end
  return math.max(1, (total + per - 1) // per)
end

-- Is an empty page p the end of the list? Only when its own paging says no item lies at or after
-- it (or it has none). QTickets filters a page after paging it (the keyed {"50":…} pages): a page
-- that lost every item comes as "data": [] while paging.total still counts the pages after it.
local function ends_at(r, p, per)
  local pp = r.per or per
  return not r.total or not pp or (p - 1) * pp >= r.total
end

-- Walks every page of a list, calling on_page(items, page, pages) in page order. Pages after the
-- first are fetched `concurrency` at a time, in chunks, so memory stays bounded on long backfills.
-- Stops at currentPage*perPage >= total, or at an empty page whose own paging says the list ends
-- there (ends_at). Raises "<kind> page N of M: why" on a
-- bad page, after the pages before it were handed to on_page.
local function each_page(kind, body, on_page)
  local ok_pages = 0
  local function fail(err)
    job:set(kind .. "_pages_ok", ok_pages)
    error(err .. " (" .. ok_pages .. " " .. kind .. " page" .. (ok_pages == 1 and "" or "s") ..
      " before it " .. (ok_pages == 1 and "was" or "were") .. " loaded and kept)", 0)
  end
  local first = fetch_page(kind, body, 1, nil)
  job:metric("pages", 1)
  if first.err then fail(first.err) end
  local per = first.per or first.n
  local pages = pages_for(first.total, per)
  -- A total below what page 1 already holds (seen: 0 on a full page) says nothing about the
  -- rest: walk on until a short or empty page instead of stopping after page 1.
  if pages and first.total < first.n then
    log.warn(kind .. ": paging.total is below the items of page 1; reading pages until a short one",
      {total = first.total, items = first.n})
    pages = nil
  end
  on_page(first.data, 1, pages)
  first.data = nil -- page 1's document need not live through the whole walk
  ok_pages = 1
  job:metric("pages_ok", 1)
  if first.n == 0 then
    if not pages or pages <= 1 then return ok_pages end
    log.warn(kind .. " page 1 of " .. pages .. " is empty but paging.total counts more; reading on",
      {total = first.total})
    job:metric("empty_pages", 1)
  end
  if not pages then
    -- No paging block: walk sequentially until a short or empty page.
    local p = 2
    local last = first.n
    while last > 0 and (not per or last >= per) and p <= 100000 do
      local r = fetch_page(kind, body, p, nil)
      job:metric("pages", 1)
      if r.err then fail(r.err) end
      if r.n == 0 then break end
      on_page(r.data, p, nil)
      ok_pages = ok_pages + 1
      job:metric("pages_ok", 1)
      last, p = r.n, p + 1
    end
    return ok_pages
  end
  local nextp, chunk = 2, concurrency * 4
  while nextp <= pages do
    local list = {}
    for p = nextp, math.min(pages, nextp + chunk - 1) do list[#list + 1] = p end
    local shown = pages
    local results, err = task.map(list, concurrency, function(p) return fetch_page(kind, body, p, shown) end)
    if not results then fail(label(kind, list[1], pages) .. ": " .. tostring(err)) end
    job:metric("pages", #list)
    local stop = false
    for i, p in ipairs(list) do
      local r = results[i]
      if r.err then fail(r.err) end
      if r.n == 0 then
        if ends_at(r, p, per) then stop = true break end
        log.warn(label(kind, p, pages) .. " is empty but paging.total counts more; reading on", {total = r.total})
        job:metric("empty_pages", 1)
      end
      on_page(r.data, p, pages)
      ok_pages = ok_pages + 1
      job:metric("pages_ok", 1)
      -- New orders paid during the run extend the list: follow the latest total.
      local np = pages_for(r.total, r.per or per)
      if np and np > pages then pages = np end
    end
    if stop then break end
    nextp = list[#list] + 1
  end
  return ok_pages
end

---------------------------------------------------------------------------------------- load

local ver = math.floor(time.now() * 1000)
local sinks = {}
for _, t in ipairs({"dim_events", "stg_qtickets_api_orders_raw", "stg_qtickets_api_baskets_raw"}) do
  local s, err = ch.sink(t)
  if not s then error("ClickHouse table " .. t .. ": " .. tostring(err), 0) end
  sinks[t] = s
end

local counts = {events = 0, orders = 0, baskets = 0, filtered_out = 0, paid_without_payed_at = 0}
-- Paid orders with no readable payed_at: the window is a range of payment dates, so they cannot be
-- placed in it and are not stored. QTickets documents payed_at on every paid order and nothing to
-- date a payment by instead (created_at is the reservation), so they are named, not guessed at.
local undated = {seen = {}, first = {}}
-- values that were there but not readable (qtickets_map.order_rows problems): the run fails at the end
local unreadable = {count = 0, first = {}}
local known_events, wanted_events = {}, {}

-- The dim_events row of an event object, or nil when it is not one.
local function event_row(e)
  if not map.is_obj(e) or map.is_null(e.id) then return nil end
  return map.event_row(e, ver)
end

local function add_event_row(row)
  if not row or known_events[row.event_id] then return end
  known_events[row.event_id] = true
  sinks.dim_events:add(row)
  counts.events = counts.events + 1
end

local function add_event(e) add_event_row(event_row(e)) end

-- 1. Events (all of them, deleted ones included: old sales still need their city and name).
-- A list that fails (5xx after the retries, a malformed page) does not keep the sales out: the orders
-- still load, the events they refer to are fetched one by one (step 3), and the run fails at the end
-- with the list's error. A refused token fails at once: no order could load either.
local events_ok, events_err = pcall(each_page, "events", {orderBy = {id = "asc"}}, function(items)
  for _, e in ipairs(items) do add_event(e) end
end)
if not events_ok then
  if token_refused then error(events_err, 0) end
  log.warn("the events list failed; loading the orders anyway", {error = events_err})
end

-- 2. Paid orders of the window.
local seen_orders = {}
local order_body = {
  where = {
    {column = "payed", value = 1},
    {column = "payed_at", operator = ">=", value = from_iso},
    {column = "payed_at", operator = "<", value = to_iso},
  },
  orderBy = {id = "asc"},
}

-- Stores an order (a listed or fetched object) with its baskets.
local function store_order(o)
  local order, baskets, notes, problems = map.order_rows(o, ver)
  for _, n in ipairs(notes) do job:metric(n, 1) end
  for _, p in ipairs(problems) do
    unreadable.count = unreadable.count + 1
    if #unreadable.first < 10 then unreadable.first[#unreadable.first + 1] = p end
    log.warn("value not readable, row stored with the column's default", {problem = p})
  end
  sinks.stg_qtickets_api_orders_raw:add(order)
  for _, b in ipairs(baskets) do sinks.stg_qtickets_api_baskets_raw:add(b) end
  counts.orders = counts.orders + 1
  counts.baskets = counts.baskets + #baskets
  if order.event_id ~= "" then wanted_events[order.event_id] = true end
end

local function add_order(o, refetched)
  local ok, why = map.order_in_window(o, from_epoch, to_epoch)
  if not ok then
    counts.filtered_out = counts.filtered_out + 1
    if why == "no payed_at" then
      local id = map.str(o.id)
      if not undated.seen[id] then
        undated.seen[id] = true
        counts.paid_without_payed_at = counts.paid_without_payed_at + 1
        if #undated.first < 10 then undated.first[#undated.first + 1] = id end
        local v = o.payed_at
        log.warn("paid order without a readable payed_at; not stored", {order_id = id,
          payed_at = v == nil and "absent" or type(v) == "string" and string.format("%q", v:sub(1, 40)) or "null"})
      end
      return
    end
    log.debug("order skipped", {order_id = map.is_obj(o) and map.str(o.id) or "?", reason = why})
    return
  end
  local id = map.str(o.id)
  if seen_orders[id] then return end -- a page boundary moved while paging
  seen_orders[id] = true
  if not map.is_obj(o.baskets) then
    -- The list came without baskets (reported for some cabinets): the single order has them.
    -- (add_orders fetched it already, with the others of its page.)
    local r = refetched and refetched[id] or {get("/orders/" .. id, nil, "order " .. id)}
    local one, err, status = r[1], r[2], r[3]
    job:metric("order_refetches", 1)
    if not one and status == 404 then
      -- Deleted between the list and now: keep what the list said (no baskets) rather than fail
      -- this run and every run until the order leaves the window.
      log.warn("order listed without baskets is gone (404); stored without baskets", {order_id = id})
      job:metric("order_refetch_gone", 1)
    elseif not one then
      error(err, 0)
    end
    if map.is_obj(one) and map.is_obj(one.data) then o = one.data end
    -- (o may be a read-only view: order_rows reads absent baskets as none.)
    if not map.is_obj(o.baskets) then log.warn("order without baskets", {order_id = id}) end
  end
  store_order(o)
end

-- The orders of a page. Those listed without baskets are fetched again (GET /orders/{id}) first,
-- `concurrency` at a time: one by one, a page of them took 50 round trips, and a first-run
-- backfill of a cabinet that lists no baskets could outlast the job's timeout.
local function add_orders(items)
  local need, wanted = {}, {}
  for _, o in ipairs(items) do
    if map.is_obj(o) and not map.is_obj(o.baskets) and map.order_in_window(o, from_epoch, to_epoch) then
      local id = map.str(o.id)
      if not seen_orders[id] and not wanted[id] then
        wanted[id] = true
        need[#need + 1] = id
      end
    end
  end
  local refetched = {}
  if #need > 0 then
    local got, merr = task.map(need, concurrency, function(id)
      return table.pack(get("/orders/" .. id, nil, "order " .. id))
    end)
    if not got then error("orders listed without baskets: " .. tostring(merr), 0) end
    for i, id in ipairs(need) do refetched[id] = got[i] end
  end
  for _, o in ipairs(items) do add_order(o, refetched) end
end

local ok, err = pcall(each_page, "orders", order_body, add_orders)

local function publish()
  for k, v in pairs(counts) do job:set(k, v) end
end
if not ok then
  publish()
  error(err .. (events_ok and "" or "; before it, " .. tostring(events_err)), 0)
end

-- 2b. Orders an earlier run stored as sales of this window that this run's list no longer returns.
-- The list holds paid orders only (payed=1 in the body), so an order that stopped being a sale
-- (no longer paid) is not listed again, and a soft-deleted one may be hidden: its stored row
-- would count in the views for good. Each such order is fetched by id and stored as QTickets now
-- has it. One that answers 404 (or 401/403) is left as it was and named (a warning, metrics.orders_gone, the
-- run message): nothing proves it was not a sale, and a wrong base URL or a glitch must not erase
-- sales. Runs only after a complete walk of the list.
local gone = {}
local function recheck_unlisted()
  -- (v_qtickets_orders_latest's conditions, on the orders with a row in the window only: the view
  -- would aggregate the whole table first.)
  local a, b = math.floor(from_epoch), math.floor(to_epoch)
  local rows, qerr = ch.query(string.format("SELECT order_id FROM zakaz.stg_qtickets_api_orders_raw "
    .. "WHERE order_id IN (SELECT order_id FROM zakaz.stg_qtickets_api_orders_raw "
    .. "WHERE sale_ts >= toDateTime(%d) AND sale_ts < toDateTime(%d)) GROUP BY order_id "
    .. "HAVING argMax(payed, _ver) = 1 AND isNull(tupleElement(argMax(tuple(deleted_at), _ver), 1)) "
    .. "AND argMax(sale_ts, _ver) >= toDateTime(%d) AND argMax(sale_ts, _ver) < toDateTime(%d) "
    .. "ORDER BY order_id", a, b, a, b))
  if not rows then
    log.warn("could not read the orders stored for this window; orders no longer listed were not checked",
      {error = qerr})
    return
  end
  local unlisted = {}
  for _, r in ipairs(rows) do
    local id = tostring(r.order_id)
    if not seen_orders[id] then unlisted[#unlisted + 1] = id end
  end
  if #unlisted == 0 then return end
  log.info("orders stored earlier are no longer listed; fetching each", {count = #unlisted})
  local got, merr = task.map(unlisted, concurrency, function(id)
    local one, gerr, status = get("/orders/" .. id, nil, "order " .. id .. " (stored earlier, no longer listed)")
    if not one then return {err = gerr, status = status} end
    local o = map.is_obj(one) and one.data
    if not map.is_obj(o) or map.is_null(o.id) then
      return {err = "order " .. id .. " (stored earlier, no longer listed): unexpected response without a data object: "
        .. snippet(json.encode(json.totable(one)))}
    end
    return {data = o}
  end)
  if not got then error("orders no longer listed: " .. tostring(merr), 0) end
  for i, r in ipairs(got) do
    local id = unlisted[i]
    job:metric("orders_rechecked", 1)
    if r.status == 404 or r.status == 403 or r.status == 401 then
      -- (the token read the whole list a moment ago: a 401/403 here is about this order only)
      gone[#gone + 1] = id .. " (" .. r.status .. ")"
      job:metric("orders_gone", 1)
      log.warn("order stored earlier is no longer listed and QTickets does not return it; left as it was",
        {order_id = id, status = r.status})
    elseif r.err then
      error(r.err, 0)
    elseif select(2, map.order_in_window(r.data, from_epoch, to_epoch)) == "no payed_at" then
      add_order(r.data) -- paid without a payment date: named, not stored (step 3 of the docs)
    else
      seen_orders[id] = true
      store_order(r.data)
    end
  end
end
recheck_unlisted()

-- 3. Events that orders refer to but the list did not return (e.g. filtered out server-side).
local missing = {}
for id in pairs(wanted_events) do
  if not known_events[id] then missing[#missing + 1] = id end
end
table.sort(missing)
if #missing > 0 then
  local got, merr = task.map(missing, concurrency, function(id)
    local v, gerr, status = get("/events/" .. id, nil, "event " .. id)
    if not v then
      -- (a 401/403 here is about this event: the token has just read the lists)
      if status == 404 or status == 403 or status == 401 then
        log.warn("event referenced by orders not found", {event_id = id, status = status})
        return {}
      end
      return {err = gerr}
    end
    -- The row, not the object: no event's document is held until the last one arrives.
    return {row = map.is_obj(v) and event_row(v.data) or nil}
  end)
  -- Only a raise inside the mapping gets here (HTTP failures come back as {err = ...}).
  if not got then error("events referenced by orders: " .. tostring(merr), 0) end
  for _, r in ipairs(got) do
    if r.err then error(r.err, 0) end
    add_event_row(r.row)
  end
end

publish()
local msg = string.format("%s..%s%s: %d orders, %d baskets, %d events, %d filtered out", since, to,
  reason and " (first-run backfill)" or "", counts.orders, counts.baskets, counts.events, counts.filtered_out)
if counts.paid_without_payed_at > 0 then
  msg = msg .. string.format("; %d paid order(s) without a readable payed_at were not stored: %s%s",
    counts.paid_without_payed_at, table.concat(undated.first, ", "),
    counts.paid_without_payed_at > #undated.first and ", …" or "")
end
if #gone > 0 then
  msg = msg .. string.format("; %d order(s) stored earlier are no longer listed and QTickets does not return them (left as they were): %s%s",
    #gone, table.concat(gone, ", ", 1, math.min(#gone, 10)), #gone > 10 and ", …" or "")
end
local failures = {}
if not events_ok then
  failures[#failures + 1] = tostring(events_err) .. "; the orders were loaded, the events they refer to fetched one by one"
end
-- Everything else is loaded; the run still fails, so a price QTickets sent that is not money
-- does not sit in the dashboards as 0.00 with nobody told (the alert names the orders).
if unreadable.count > 0 then
  failures[#failures + 1] = string.format("%d value(s) in QTickets orders could not be read; their rows were stored with the "
    .. "column's default (price 0.00, quantity 1) — check these orders in QTickets, the next run after a fix "
    .. "replaces the rows: %s%s", unreadable.count, table.concat(unreadable.first, "; "),
    unreadable.count > #unreadable.first and "; …" or "")
end
if #failures > 0 then error(table.concat(failures, "; ") .. " (" .. msg .. ")", 0) end
job:message(msg)
log.info(msg)
