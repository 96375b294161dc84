-- zhost: job=gmail_ingest secrets=gmail options=query,limit,reload
-- Gmail backup channel: sales reports mailed as CSV attachments (or simple HTML tables) ->
-- stg_qtickets_sales_raw. v_sales_latest uses these rows only for dates the QTickets API has no
-- sales line for, so running this next to the API loader is harmless.
--
-- Secrets (secrets/.env.gmail): GMAIL_QUERY (Gmail search; default "newer_than:<GMAIL_DAYS_BACK>d"),
-- GMAIL_BASE_URL (default https://gmail.googleapis.com), GMAIL_CREDENTIALS_PATH / GMAIL_TOKEN_PATH
-- (default gmail/credentials.json and gmail/token.json under the secrets directory).
-- Options: --days N (newer_than:Nd, replacing the query's newer_than:), --query Q, --limit N,
-- --reload (ignore already loaded ids).
-- See docs/loaders/sales.md.
local sales = require("sales_csv")
local loader = require("loader")

local args = job.args
local env, whole = loader.settings(job), loader.whole
local base = env("GMAIL_BASE_URL", "https://gmail.googleapis.com"):gsub("/+$", "")
local api = base .. "/gmail/v1/users/me"

local query = args.query or job:env("GMAIL_QUERY")
if query == nil or query == "" then
  query = "newer_than:" .. whole("GMAIL_DAYS_BACK", job:env("GMAIL_DAYS_BACK", "7"), 1, 3660) .. "d"
end
-- --days N sets the window: a newer_than: term already in the query (the default newer_than:7d, or
-- one in GMAIL_QUERY) is dropped first, because Gmail ANDs the terms and the narrower one would win
-- (`--days 30` used to load only the last 7 days).
if args.days then
  query = text.trim(((" " .. query):gsub("%s+newer_than:%S*", "")) .. " newer_than:" .. math.tointeger(args.days) .. "d")
end
local limit = args.limit and whole("--limit", args.limit, 1, 100000) or nil
local reload = args.reload ~= nil and args.reload ~= "false"

-- A relative path is looked up in the secrets directory; the original system's
-- "secrets/gmail/token.json" (relative to the working directory) is honoured when that file exists.
local function secret_path(var, default)
  local p = job:env(var)
  if p == nil or p == "" then p = default end
  if p:sub(1, 1) == "/" then return p end
  local in_dir = job.secrets_dir .. "/" .. p
  if io.read_file(in_dir) or not io.read_file(p) then return in_dir end
  return p
end
local creds_path = secret_path("GMAIL_CREDENTIALS_PATH", "gmail/credentials.json")
local token_path = secret_path("GMAIL_TOKEN_PATH", "gmail/token.json")

local client, cerr = oauth2.google{token = token_path, credentials = creds_path, source = "google-oauth"}
if not client then error(cerr, 0) end

------------------------------------------------------------------------------------- requests

local function google_error(body)
  local v = json.decode(body or "")
  if type(v) == "table" and type(v.error) == "table" then
    return tostring(v.error.message or v.error.status or "")
  end
  return (tostring(body or ""):sub(1, 200):gsub("%s+", " "))
end

-- Gmail sends per-user rate limits as 403 with reason rateLimitExceeded / userRateLimitExceeded
-- (domain usageLimits), not only as 429; the http module retries 429 and 5xx, so these are retried
-- here. Other 403s (dailyLimitExceeded, domainPolicy) would answer the same for hours: not retried.
local RATE_REASONS = {rateLimitExceeded = true, userRateLimitExceeded = true}
local RATE_TRIES, RATE_BASE, RATE_CAP = 5, 1, 32

local function rate_limited(res)
  if res.status ~= 403 then return false end
  local v = json.decode(res.body or "")
  local errs = type(v) == "table" and type(v.error) == "table" and v.error.errors
  for _, e in ipairs(type(errs) == "table" and errs or {}) do
    if type(e) == "table" and RATE_REASONS[e.reason] then return true end
  end
  return false
end

-- The decoded answer. A 404 returns nil when missing_ok (a message deleted after it was listed);
-- every other failure raises "gmail <what>: ...".
local function call(path, query_params, what, missing_ok)
  local res, err
  for try = 1, RATE_TRIES do
    res, err = client:request{method = "GET", url = api .. path, query = query_params, source = "gmail",
      timeout = 60, headers = {Accept = "application/json"}}
    if not res or try == RATE_TRIES or not rate_limited(res) then break end
    -- Full jitter as the http module does; a Retry-After, when Gmail sends one, is a floor.
    local wait = math.random() * math.min(RATE_CAP, RATE_BASE * 2 ^ (try - 1))
    local ra = tonumber(res:header("Retry-After") or "")
    if ra and ra > wait then wait = math.min(ra, 120) end
    log.warn("gmail " .. what .. ": HTTP 403 rate limit; retrying", {attempt = try, wait = wait})
    job:metric("rate_limit_retries", 1)
    sleep(wait)
  end
  if not res then error("gmail " .. what .. ": " .. tostring(err), 0) end
  if res.status == 404 and missing_ok then return nil end
  if res.status ~= 200 then
    local hint = res.status == 401 and " (the access token was refused even after a refresh)" or ""
    error("gmail " .. what .. ": HTTP " .. res.status .. " " .. google_error(res.body) .. hint, 0)
  end
  local v, jerr = res:json()
  if type(v) ~= "table" then error("gmail " .. what .. ": " .. tostring(jerr or "not a JSON object"), 0) end
  return v
end

------------------------------------------------------------------------------------- list

local ids, listed = {}, {}
local page_token
repeat
  local v = call("/messages", {q = query, maxResults = 100, pageToken = page_token}, "messages.list")
  job:metric("list_pages", 1)
  for _, m in ipairs(type(v.messages) == "table" and v.messages or {}) do -- no "messages" key when empty
    -- An id met on an earlier page (mail that arrived while paging shifts the pages) is listed once.
    if type(m) == "table" and type(m.id) == "string" and not listed[m.id] then
      listed[m.id] = true
      ids[#ids + 1] = m.id
    end
  end
  page_token = type(v.nextPageToken) == "string" and v.nextPageToken ~= "" and v.nextPageToken or nil
until not page_token or (limit and #ids >= limit)
if limit and #ids > limit then
  for i = #ids, limit + 1, -1 do ids[i] = nil end
end
job:set("messages", #ids)

local loaded = {}
if not reload and #ids > 0 then
  local rows, err = ch.query("SELECT DISTINCT src_msg_id AS id FROM zakaz.stg_qtickets_sales_raw")
  if rows then
    for _, r in ipairs(rows) do loaded[r.id] = true end
  else
    log.warn("could not read the loaded message ids; every listed message is processed", {error = err})
  end
end

------------------------------------------------------------------------------------- messages

local sink, serr = ch.sink("stg_qtickets_sales_raw")
if not sink then error("ClickHouse table stg_qtickets_sales_raw: " .. tostring(serr), 0) end

-- report_rows, not rows: the host writes its own "rows" (and "tables") into the run's metrics, and a
-- second key of that name made the stored JSON ambiguous (readers disagree on which one counts).
local counts = {messages_loaded = 0, messages_skipped = 0, messages_without_report = 0, attachments = 0,
  attachments_ignored = 0, report_rows = 0, rows_skipped = 0, messages_rejected = 0, messages_gone = 0,
  attachments_duplicate = 0, unreadable_attachments = 0, messages_report_unreadable = 0, currency_signs_lost = 0}
local rejected = {}
local lost_msgs = {} -- "id (n)" of loaded messages with n cells whose "?" was read as the ruble sign
-- Messages that gave no report but had attachments zhost does not read: {what = "«subject» (id: files)",
-- sheet = true when one of them is a spreadsheet, kinds = {[".xlsx"] = true}}, and every kind seen.
local unread_msgs, unread_kinds = {}, {}
local ignored = {} -- "file (message id: why)" of CSV attachments that were not read as a sales report

local GONE = "gone (HTTP 404)"

local function part_bytes(msg_id, part)
  local body = type(part.body) == "table" and part.body or {}
  local data = body.data
  -- MessagePartBody.data "may be empty ... when the body data is sent as a separate attachment"
  -- (gmail.md): with an attachmentId, an empty data is no content (it read as an empty file).
  if (type(data) ~= "string" or data == "") and type(body.attachmentId) == "string" then
    local a = call("/messages/" .. msg_id .. "/attachments/" .. body.attachmentId, nil,
      "attachment of message " .. msg_id, true)
    -- 404: the message was deleted between messages.get and attachments.get, as a 404 on the
    -- message itself (load_message skips it whole).
    if not a then return nil, GONE end
    data = a.data
  end
  if type(data) ~= "string" then return nil, "no data" end
  return text.base64url_decode(data)
end

-- Leaves of the MIME tree, depth first (multipart/* and forwarded message/rfc822 nest).
local function leaves(part, out, depth)
  if type(part) ~= "table" or depth > 20 then return out end
  if type(part.parts) == "table" and #part.parts > 0 then
    for _, p in ipairs(part.parts) do leaves(p, out, depth + 1) end
  else
    out[#out + 1] = part
  end
  return out
end

local now_text = time.format(time.now())

local function subject_of(msg)
  local hs = type(msg.payload) == "table" and msg.payload.headers
  for _, h in ipairs(type(hs) == "table" and hs or {}) do
    if type(h) == "table" and type(h.name) == "string" and h.name:lower() == "subject" and type(h.value) == "string" then
      local s = text.trim(sales.mime_words(h.value))
      local cut = utf8.len(s) and utf8.len(s) > 60 and utf8.offset(s, 61)
      return cut and s:sub(1, cut - 1) .. "…" or s
    end
  end
  return ""
end

local function sorted_keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- "«a» (id1), «b» (id2), … (and 3 more)": the first few, so the run message stays readable.
local function first_few(list, n)
  local out = {}
  for i = 1, math.min(n, #list) do out[i] = list[i] end
  return table.concat(out, ", ") .. (#list > n and string.format(" (and %d more)", #list - n) or "")
end

local function message_gone(id)
  -- Deleted (or purged from Trash) since messages.list: nothing left to load.
  counts.messages_gone = counts.messages_gone + 1
  log.warn("message listed but gone (HTTP 404); skipped", {message = id})
end

local function load_message(id)
  local msg = call("/messages/" .. id, {format = "full"}, "message " .. id, true)
  if not msg then return message_gone(id) end
  local ver = math.tointeger(tonumber(msg.internalDate or "")) or math.floor(time.now() * 1000)
  -- Two-digit years ("01.11.25") are read within a year of the mail's date (sales_csv.report_rows).
  local opts = {ref_date = time.date(ver // 1000)}
  local lost = 0 -- amount and currency cells whose "?" was the ruble sign a CP1251 export lost
  local rows, htmls, problems = {}, {}, {}
  local seen = {} -- attachment bytes already read in this message
  local unread = {} -- attachments of a type the loader does not read: {name =, kind =, sheet =}
  for _, part in ipairs(leaves(msg.payload, {}, 0)) do
    local mime = type(part.mimeType) == "string" and part.mimeType:lower() or ""
    local kind, sheet = sales.unread_attachment(part)
    -- A .txt may be Excel's "Unicode Text" save of a report: read it as one, and when it is none,
    -- it stays an attachment zhost does not read (no "not a sales report" note for every text file).
    local txt = kind and sales.is_text_part(part)
    if kind and not txt then
      unread[#unread + 1] = {name = sales.mime_words(part.filename), kind = kind, sheet = sheet}
    elseif txt or sales.is_csv_part(part) then
      local bytes, err = part_bytes(id, part)
      if err == GONE then return message_gone(id) end
      local header, grid
      if txt then
        if bytes then header, grid = sales.csv_grid(bytes, sales.part_charset(part)) end
        if not (header and sales.report_rows(header, grid, opts)) then
          unread[#unread + 1] = {name = sales.mime_words(part.filename), kind = kind, sheet = sheet}
          goto next_part
        end
      end
      counts.attachments = counts.attachments + 1
      if bytes and seen[bytes] then
        -- The same file twice (forwarded as an attachment and attached again): lines of one message
        -- that share a key are summed, so the copy would double its days.
        counts.attachments_duplicate = counts.attachments_duplicate + 1
        log.warn("attachment repeats an earlier one of the message; read once", {message = id,
          file = tostring(part.filename)})
        goto next_part
      end
      if bytes then seen[bytes] = true end
      if bytes and not header then header, grid = sales.csv_grid(bytes, sales.part_charset(part)) end
      local got, stats
      if header then got, stats = sales.report_rows(header, grid, opts) end
      if not got then
        counts.attachments_ignored = counts.attachments_ignored + 1
        local why = tostring(stats or grid or err)
        log.warn("attachment is not a sales report", {message = id, file = tostring(part.filename), error = why})
        -- Named in the run message too: a report whose header zhost does not know looks like "no report".
        local cut = utf8.len(why) and utf8.len(why) > 80 and utf8.offset(why, 81)
        ignored[#ignored + 1] = string.format("%s (%s: %s)", sales.mime_words(tostring(part.filename)), id,
          cut and why:sub(1, cut - 1) .. "…" or why)
      else
        for _, r in ipairs(got) do rows[#rows + 1] = r end
        counts.rows_skipped = counts.rows_skipped + stats.skipped
        lost = lost + stats.signs_lost
        for _, p in ipairs(stats.problems) do problems[#problems + 1] = tostring(part.filename) .. " " .. p end
      end
    elseif mime == "text/html" and (part.filename == nil or part.filename == "") then
      htmls[#htmls + 1] = part
    end
    ::next_part::
  end
  if #rows == 0 then
    -- No CSV: some reports are an HTML table in the body.
    for _, part in ipairs(htmls) do
      local bytes, err = part_bytes(id, part)
      if err == GONE then return message_gone(id) end
      for _, g in ipairs(bytes and sales.html_grids(bytes, sales.part_charset(part)) or {}) do
        local got, stats = sales.report_rows(g.header, g.rows, opts)
        if got then
          for _, r in ipairs(got) do rows[#rows + 1] = r end
          counts.rows_skipped = counts.rows_skipped + stats.skipped
          lost = lost + stats.signs_lost
          for _, p in ipairs(stats.problems) do problems[#problems + 1] = "HTML table " .. p end
        end
      end
    end
  end
  if #problems > 0 then
    -- A sales line that cannot be read would be lost for good once the message counts as loaded:
    -- load none of this message, so the next run tries it again (after the report is fixed).
    counts.messages_rejected = counts.messages_rejected + 1
    for _, p in ipairs(problems) do log.error("unreadable sales line; message not loaded", {message = id, problem = p}) end
    rejected[#rejected + 1] = "message " .. id .. ": " .. problems[1] ..
      (#problems > 1 and string.format(" (and %d more)", #problems - 1) or "")
    return
  end
  if #rows == 0 then
    if #unread > 0 then
      -- An .xlsx report (or a PDF, an image) loads nothing: say so, or the days it covers are a
      -- silent gap. A spreadsheet is most likely a report, so it fails the run (below).
      local names, ks, sheet = {}, {}, false
      for _, a in ipairs(unread) do
        names[#names + 1] = a.name
        ks[a.kind], unread_kinds[a.kind] = true, true
        sheet = sheet or a.sheet
      end
      counts.unreadable_attachments = counts.unreadable_attachments + #unread
      local subject = subject_of(msg)
      log.warn(sheet and "message has only a spreadsheet zhost cannot read (send the report as CSV); nothing loaded"
        or "message has only attachments zhost does not read; nothing loaded",
        {message = id, subject = subject, files = table.concat(names, ", ")})
      unread_msgs[#unread_msgs + 1] = {what = string.format("«%s» (%s: %s)", subject, id, table.concat(names, ", ")),
        sheet = sheet, kinds = ks}
      if sheet then
        counts.messages_report_unreadable = counts.messages_report_unreadable + 1
        return
      end
    end
    counts.messages_without_report = counts.messages_without_report + 1
    return
  end
  for _, r in ipairs(sales.merge(rows)) do
    sink:add{
      src_msg_id = id,
      ingested_at = now_text,
      event_date = r.event_date,
      event_id = r.event_id,
      event_name = r.event_name,
      city = r.city,
      tickets_sold = r.tickets_sold,
      revenue = sales.from_cents(r.revenue_cents),
      refunds = sales.from_cents(r.refunds_cents),
      currency = r.currency,
      _ver = ver,
    }
    counts.report_rows = counts.report_rows + 1
  end
  counts.messages_loaded = counts.messages_loaded + 1
  if lost > 0 then
    -- Read as rubles, as a cell without a sign is: said in the run message, since a "?" is also what
    -- CP1251 makes of ₸ or ₴ (docs/loaders/sales.md).
    counts.currency_signs_lost = counts.currency_signs_lost + lost
    lost_msgs[#lost_msgs + 1] = string.format("%s (%d)", id, lost)
    log.warn("'?' in amount or currency cells read as the ruble sign (a CP1251 export cannot write ₽)",
      {message = id, cells = lost})
  end
end

for _, id in ipairs(ids) do
  if loaded[id] then
    counts.messages_skipped = counts.messages_skipped + 1
  else
    load_message(id)
  end
end

-- A reloaded message writes its rows at the same _ver (its internalDate) as its first load. When the
-- rows differ — a report read differently after an upgrade — the views' argMax(…, _ver) could take
-- either, so the reload would not correct them. A merge keeps the last inserted row of equal versions.
if reload and counts.messages_loaded > 0 then
  local ok, ferr = sink:flush()
  if ok then ok, ferr = ch.exec("OPTIMIZE TABLE zakaz.stg_qtickets_sales_raw FINAL") end
  if not ok then
    log.warn("could not merge the reloaded rows: until ClickHouse merges them, a view may show a line as it "
      .. "was loaded before; run OPTIMIZE TABLE zakaz.stg_qtickets_sales_raw FINAL", {error = ferr})
  end
end

for k, v in pairs(counts) do job:set(k, v) end
local kinds = sorted_keys(unread_kinds)
if #kinds > 0 then job:set("unreadable_types", table.concat(kinds, " ")) end

-- "N message(s) had only ... (.pdf, .xlsx): «subject» (id: file), …" for the messages with (sheet) or
-- without a spreadsheet among their unread attachments; nil when there are none.
local function unread_clause(sheet, what)
  local list, ks = {}, {}
  for _, u in ipairs(unread_msgs) do
    if u.sheet == sheet then
      list[#list + 1] = u.what
      for k in pairs(u.kinds) do ks[k] = true end
    end
  end
  if #list == 0 then return nil end
  return string.format(what, #list, table.concat(sorted_keys(ks), ", ")) .. ": " .. first_few(list, sheet and 5 or 3)
end

local msg = string.format("%d messages listed, %d loaded (%d rows), %d already loaded, %d without a report",
  #ids, counts.messages_loaded, counts.report_rows, counts.messages_skipped, counts.messages_without_report)
local others = unread_clause(false, "%d message(s) had only attachments zhost cannot read (%s)")
local sheets = unread_clause(true, "%d message(s) had only a spreadsheet zhost cannot read (%s), so nothing was " ..
  "loaded from them (the other messages were loaded; these are retried on every run until they are archived or " ..
  "excluded from GMAIL_QUERY — get the report as CSV)")
local full = msg .. (others and "; " .. others or "") .. (#ignored > 0 and string.format(
  "; %d CSV attachment(s) not read as a sales report: %s", #ignored, first_few(ignored, 3)) or "") ..
  (#lost_msgs > 0 and string.format("; %d message(s) had '?' for the ruble sign (a CP1251 export cannot write ₽), " ..
  "read as rubles: %s", #lost_msgs, first_few(lost_msgs, 3)) or "")
job:message(full)
log.info(full, {query = query})
local failures = {}
if #rejected > 0 then
  failures[#failures + 1] = string.format("%d message(s) not loaded because a sales line could not be read (the " ..
    "other messages were loaded; these are retried on the next run): %s", #rejected, table.concat(rejected, "; "))
end
-- There is no warning status, and the alert rules read a run's status: a report that loaded nothing
-- fails the run so that failed_run says so (docs/loaders/sales.md, "Attachments zhost cannot read").
if sheets then failures[#failures + 1] = sheets end
if #failures > 0 then error(table.concat(failures, "; ") .. " [" .. full .. "]", 0) end
