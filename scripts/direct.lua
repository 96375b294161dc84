-- zhost: job=direct secrets=direct
-- Yandex Direct daily statistics -> zakaz.fact_direct_daily (docs/loaders/ads.md, docs/schema.md §3.11).
--
-- Reports service, CUSTOM_REPORT (Date, CampaignId, CampaignName, AdGroupId, AdId, Impressions,
-- Clicks, Cost) in TSV, VAT included, money in micros converted exactly to roubles. Offline
-- reports (201/202 with retryIn) are polled with the identical request until 200, up to
-- DIRECT_REPORT_MAX_WAIT seconds in total. Campaign names come from the Campaigns service.
-- UTM: campaign-level mapping from the secrets file (DIRECT_UTM_<CampaignId>), see the docs.
--
-- Options: --days N | --since D [--to D] (default: the last DIRECT_DAYS_BACK=30 days up to
-- today, Moscow), --dry-run.
local tsv = require("direct_tsv")
local utm = require("utm")
local loader = require("loader")

local args = job.args
local fail = loader.fail
-- The original system's variable names still work, with a warning (env_alias).
local env, env_alias = loader.settings(job)

local token = env_alias("DIRECT_TOKEN", "DIRECT_OAUTH_TOKEN")
if not token then job:need("DIRECT_TOKEN") end
local login = job:need("DIRECT_LOGIN")
local base = env_alias("DIRECT_BASE_URL", "DIRECT_API_URL", "https://api.direct.yandex.com/json/v5"):gsub("/+$", "")
-- Settings are checked here, naming the variable, rather than failing later as a Lua arithmetic
-- error or a Direct error 4000.
local max_wait = loader.whole("DIRECT_REPORT_MAX_WAIT", env("DIRECT_REPORT_MAX_WAIT", "900"), 1, 86400)
local retry_base = loader.number("DIRECT_RETRY_BASE", env("DIRECT_RETRY_BASE", "5"), 0, 3600)
local skip_headers = env("DIRECT_SKIP_REPORT_HEADERS", "true") ~= "false"
local chunk_days = loader.whole("DIRECT_CHUNK_DAYS", env("DIRECT_CHUNK_DAYS", "92"), 1, 366)
-- The most rows a report body holds (Direct's documented 1,000,000); change it only if Direct does.
local row_cap = loader.whole("DIRECT_REPORT_ROW_CAP", env("DIRECT_REPORT_ROW_CAP", "1000000"), 1, 1000000000)
-- DIRECT_TIMEOUT (the original system's name): seconds per HTTP request. Unset, a report request
-- may take 300 s (Direct builds an online report while the request waits) and a service call the
-- host's default.
local request_timeout = env("DIRECT_TIMEOUT") and loader.whole("DIRECT_TIMEOUT", env("DIRECT_TIMEOUT"), 1, 3600)

local since, to = loader.window(args, loader.whole("DIRECT_DAYS_BACK", env("DIRECT_DAYS_BACK", "30"), 1, 3650))
local VER = math.floor(time.now() * 1000)

-- Direct allows 5 simultaneous requests per advertiser; stay below.
http.configure("direct", { concurrency = 2, rps = 5 })

local HEADERS = { Authorization = "Bearer " .. token, ["Client-Login"] = login, ["Accept-Language"] = "en" }

local HINTS = {
  [53] = "the OAuth token is invalid, expired or revoked: issue a new one and set DIRECT_TOKEN",
  [54] = "no rights: check DIRECT_LOGIN (sent as Client-Login) and the token's access to that client",
  [58] = "the API application's registration is incomplete",
  [152] = "not enough API units left today: retry after the daily reset",
  [513] = "the login is not connected to Yandex Direct",
  [3000] = "no API access", [3001] = "no access to this API method",
}
-- 52 auth server unavailable, 56 request limit of the method exceeded (a rate limit, not a quota),
-- 506 too many simultaneous requests, 1000-1002 server errors, 9000 offline report queue full:
-- transient, worth waiting for.
local RETRYABLE = { [52] = true, [56] = true, [506] = true, [1000] = true, [1001] = true, [1002] = true,
  [9000] = true }
local MAX_ATTEMPTS = 5

-- A JSON string or number as text; null (json.null), a missing field or a table is "".
local function str(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(math.tointeger(v) or v) end
  return ""
end

local XML_ENTITIES = { lt = "<", gt = ">", quot = '"', apos = "'", amp = "&" }

-- The Reports service's XML error (reports:reportDownloadError/reports:ApiError) -> table | nil
local function xml_error(body)
  if not body:find("ApiError", 1, true) then return nil end
  local function tag(name)
    local v = body:match("<[%w_]*:?" .. name .. "[^>]*>(.-)</")
    return v and (v:gsub("&(%a+);", XML_ENTITIES):gsub("^%s+", ""):gsub("%s+$", "")) or ""
  end
  local code = math.tointeger(tonumber(tag("errorCode")))
  if not code then return nil end
  return { code = code, text = tag("errorMessage"), detail = tag("errorDetail"), request_id = tag("requestId") }
end

-- {error={request_id, error_code, error_string, error_detail}} (or the XML variant) -> table | nil
local function api_error(res, doc)
  if doc == nil then doc = json.decode(res.body or "") end
  local e = type(doc) == "table" and doc.error
  if type(e) ~= "table" then
    e = doc == nil and xml_error(res.body or "")
    if not e then return nil end
    if e.request_id == "" then e.request_id = res:header("requestid") or "" end
    return e
  end
  local rid = str(e.request_id)
  return { code = math.tointeger(tonumber(e.error_code)), text = str(e.error_string), detail = str(e.error_detail),
    request_id = rid ~= "" and rid or (res:header("requestid") or "") }
end

local function error_text(what, res, e)
  if not e then
    return string.format("Direct %s: HTTP %d: %s", what, res.status, (res.body or ""):sub(1, 200))
  end
  local msg = string.format("Direct %s: error %s (%s)", what, tostring(e.code), e.text)
  if e.detail ~= "" then msg = msg .. ": " .. e.detail end
  if HINTS[e.code] then msg = msg .. " — " .. HINTS[e.code] end
  if e.request_id ~= "" then msg = msg .. " [request_id " .. e.request_id .. "]" end
  return msg
end

-- Waits before retrying a transient error; fails once the attempts are used up, with `msg` when
-- given (else the API's error).
local function backoff(what, attempt, res, e, msg)
  if attempt >= MAX_ATTEMPTS then
    fail((msg or error_text(what, res, e)) .. string.format(" (gave up after %d attempts)", attempt))
  end
  local delay = math.min(60, retry_base * 2 ^ (attempt - 1))
  job:metric("api_retries", 1)
  log.warn("Direct transient error; retrying", { what = what, code = e and e.code or res.status, attempt = attempt,
    delay = delay })
  sleep(delay)
end

-- JSON services (campaigns): errors come in the envelope, possibly with HTTP 200.
local function service(name, payload)
  local body = json.encode(payload)
  for attempt = 1, MAX_ATTEMPTS do
    local res, err = http.request{ method = "POST", url = base .. "/" .. name, headers = HEADERS, body = body,
      source = "direct", timeout = request_timeout, retry = { on_5xx = false } }
    if not res then fail("Direct " .. name .. ": " .. tostring(err)) end
    local doc, jerr = json.decode(res.body or "")
    local e = api_error(res, doc)
    if res.status == 200 and not e and type(doc) == "table" and type(doc.result) == "table" then
      return doc.result
    end
    if res.status == 200 and doc == nil then
      -- Cut or mangled on the way (the host already retries what curl sees as broken): ask again.
      backoff(name, attempt, res, nil, string.format("Direct %s: the 200 answer is not valid JSON (%s): %s", name,
        tostring(jerr), (res.body or ""):sub(1, 120)))
    elseif (e and RETRYABLE[e.code]) or res.status >= 500 then
      -- A 5xx is the server's trouble whatever code its envelope carries (as for Reports).
      backoff(name, attempt, res, e)
    else
      fail(error_text(name, res, e))
    end
  end
end

local function campaign_names()
  local names, offset = {}, 0
  while true do
    local r = service("campaigns", { method = "get", params = { SelectionCriteria = {}, FieldNames = { "Id", "Name" },
      Page = { Limit = 10000, Offset = offset } } })
    job:metric("pages", 1)
    for _, c in ipairs(type(r.Campaigns) == "table" and r.Campaigns or {}) do
      -- A name that is not a string (null) is left out: the report's CampaignName is used then.
      if type(c.Name) == "string" then names[math.tointeger(tonumber(c.Id)) or -1] = c.Name end
    end
    local next_offset = math.tointeger(tonumber(r.LimitedBy))
    if not next_offset or next_offset <= offset then break end
    offset = next_offset
  end
  return names
end

local FIELDS = { "Date", "CampaignId", "CampaignName", "AdGroupId", "AdId", "Impressions", "Clicks", "Cost" }

-- One report for [from, till]: polls 201/202 with the identical request until 200.
-- -> rows | nil, msg when Direct answers 502 (processing timed out: a shorter window may pass).
local function report(from, till)
  -- Polls of one run repeat the same name; a different definition never reuses a name, which
  -- Direct would refuse. The run's start time is part of it because Direct answers a known name
  -- with the report it stored then: a second run the same day would get the first run's figures.
  local definition = table.concat({ "CUSTOM_REPORT", from, till, table.concat(FIELDS, ","), "VAT=YES",
    "DISCOUNT=NO", login, tostring(VER) }, "|")
  local name = "zhost_direct_" .. from .. "_" .. till .. "_" .. text.md5(definition):sub(1, 12)
  local body = json.encode({ params = {
    SelectionCriteria = { DateFrom = from, DateTo = till }, FieldNames = FIELDS, OrderBy = { { Field = "Date" } },
    ReportName = name, ReportType = "CUSTOM_REPORT", DateRangeType = "CUSTOM_DATE", Format = "TSV",
    IncludeVAT = "YES", IncludeDiscount = "NO" } })
  local headers = { processingMode = "auto" }
  for k, v in pairs(HEADERS) do headers[k] = v end
  if skip_headers then
    headers.skipReportHeader = "true"
    -- The "Total rows: N" trailer is kept on purpose: it is how a body cut at a line break is told
    -- from a complete report.
  end
  local waited, polls, attempt = 0, 0, 0
  local started = time.now()
  while true do
    local res, err = http.request{ method = "POST", url = base .. "/reports", headers = headers, body = body,
      source = "direct", timeout = request_timeout or 300, retry = { on_5xx = false } }
    if not res then fail("Direct report " .. name .. ": " .. tostring(err)) end
    if res.status == 200 then
      -- skipColumnHeader is never sent, so a body without the header is not a report.
      local rows, perr = tsv.parse(res.body, FIELDS, { header_required = true, total_required = true })
      if rows then
        job:metric("pages", 1)
        log.info("Direct report ready", { report = name, rows = #rows, polls = polls,
          waited = math.floor((time.now() - started) * 10 + 0.5) / 10 })
        return rows
      end
      attempt = attempt + 1
      local e = api_error(res)
      if e then
        -- Direct's error envelope with a 200: the error it names, not a damaged report.
        if RETRYABLE[e.code] then backoff("report " .. name, attempt, res, e)
        else fail(error_text("report " .. name, res, e)) end
      else
        -- Most likely cut or mangled on the way (no trailer, a short last line). The report is
        -- stored on Direct's side, so asking again is cheap; a body that stays broken still fails.
        backoff("report " .. name, attempt, res, nil, "Direct report " .. name .. ": " .. perr)
      end
    elseif res.status == 201 or res.status == 202 then
      polls = polls + 1
      local retry_in = tonumber(res:header("retryin")) or 10
      if retry_in < 0 then retry_in = 0 end
      -- The cap counts the clock, not just the sum of retryIn: slow 202 answers take time too, and a
      -- server that keeps saying "retryIn: 0" would otherwise be polled for ever. Each poll costs at
      -- least a second of the budget for the same reason.
      waited = math.max(waited, time.now() - started)
      if waited + math.max(retry_in, 1) > max_wait then
        fail(string.format("Direct report %s (%s..%s) is still not ready after %d s of waiting and %d polls "
          .. "(DIRECT_REPORT_MAX_WAIT=%d s): run again later or load a shorter window", name, from, till,
          math.floor(waited), polls, math.floor(max_wait)))
      end
      log.info("Direct report is being built; waiting", { report = name, status = res.status, retry_in = retry_in,
        in_queue = res:header("reportsinqueue") })
      job:metric("report_polls", 1)
      job:metric("report_wait_seconds", retry_in)
      sleep(retry_in)
      waited = waited + math.max(retry_in, 1)
    else
      local e = api_error(res)
      attempt = attempt + 1
      -- 500 is "server error while building the report": retried whatever code its body carries.
      if (e and RETRYABLE[e.code]) or (res.status >= 500 and res.status ~= 502) then
        backoff("report " .. name, attempt, res, e)
      elseif res.status == 502 then
        return nil, error_text("report " .. name, res, e) -- timed out on Yandex's side: the caller splits
      else
        fail(error_text("report " .. name, res, e))
      end
    end
  end
end

-- Campaign-level UTM: DIRECT_UTM_<CampaignId>=utm_campaign=...&utm_content=msk_05_11 over the
-- defaults in DIRECT_UTM_DEFAULT (utm_source=yandex&utm_medium=cpc).
-- The value may also be a whole link (the ad's landing page): its query string is read. A utm_* key
-- that is not one of the five fields (a typo such as utm_campaing) is named in a warning.
local UTM_FIELD = {}
for _, f in ipairs(utm.FIELDS) do UTM_FIELD[f] = true end
local function utm_setting(name, default)
  local v = env(name, default)
  local q = text.parse_query(v:match("%?([^#]*)") or v)
  for k in pairs(q) do
    if k:lower():match("^utm") and not UTM_FIELD[k] then
      log.warn(name .. ": '" .. k .. "' is not a UTM field zhost stores (" .. table.concat(utm.FIELDS, ", ")
        .. "); it is ignored")
    end
  end
  return q
end
local default_utm = utm_setting("DIRECT_UTM_DEFAULT", "utm_source=yandex&utm_medium=cpc")
local utm_cache = {}
local function campaign_utm(cid)
  local u = utm_cache[cid]
  if u then return u end
  local q = {}
  for k, v in pairs(default_utm) do q[k] = v end
  for k, v in pairs(utm_setting("DIRECT_UTM_" .. tostring(cid), "")) do q[k] = v end
  u = utm.from_query(q)
  utm_cache[cid] = u
  return u
end

local function id_of(s)
  return math.tointeger(tonumber(s)) or 0 -- "--" (no such level in the row) is id 0
end

local names = campaign_names()
local sink = assert(ch.sink("fact_direct_daily"))
local seen, added = {}, 0

local function add(r, u)
  sink:add{
    stat_date = r.stat_date, account_login = login, campaign_id = r.campaign_id, campaign_name = r.campaign_name,
    ad_group_id = r.ad_group_id, ad_id = r.ad_id, impressions = r.impressions, clicks = r.clicks, cost = r.cost,
    utm_source = u.utm_source, utm_medium = u.utm_medium, utm_campaign = u.utm_campaign,
    utm_content = u.utm_content, utm_term = u.utm_term, utm_city = u.utm_city,
    utm_day = u.utm_day, utm_month = u.utm_month, _ver = VER,
  }
  added = added + 1
end

-- Loads [from, till]. A 502 (the report timed out on Yandex's side; the docs' remedy is a shorter
-- period) loads the two halves instead, down to single days. So does a report that reaches the row
-- cap: it may be cut there, and the zero-filling would then erase every row past the cap.
local function load_window(from, till)
  local rows, terr = report(from, till)
  local days = time.days_between(from, till)
  if rows and #rows >= row_cap then
    if days == 0 then
      fail(string.format("Direct report for %s has %d rows, Direct's cap (DIRECT_REPORT_ROW_CAP=%d): it may be "
        .. "cut, so the day is not loaded", from, #rows, row_cap))
    end
    terr, rows = string.format("%d rows, the cap", #rows), nil
  end
  if not rows then
    if days == 0 then
      fail(terr .. " — the report timed out on Yandex's side even for a single day: run again later")
    end
    local mid = time.add_days(from, days // 2)
    log.warn("Direct report timed out (502) or reached the row cap; loading the window in two halves",
      { from = from, till = till, error = terr })
    job:metric("report_splits", 1)
    load_window(from, mid)
    load_window(time.add_days(mid, 1), till)
    return
  end
  for _, row in ipairs(rows) do
    -- The report's Date is written as the key: a malformed one, or one outside the dates asked for
    -- (which the zero-filling below would not cover), fails the run naming the row.
    local d = row.Date
    if not (d:match("^%d%d%d%d%-%d%d%-%d%d$") and time.parse_date(d) == d) then
      fail(string.format("Direct report %s..%s: row for campaign %s has Date '%s', not YYYY-MM-DD", from, till,
        row.CampaignId, d))
    end
    if time.days_between(from, d) < 0 or time.days_between(d, till) < 0 then
      fail(string.format("Direct report %s..%s: row for campaign %s is dated %s, outside the dates asked for",
        from, till, row.CampaignId, d))
    end
    local cost, cerr = tsv.money(row.Cost)
    if not cost then fail(string.format("Direct report row %s/%s: Cost: %s", row.Date, row.CampaignId, cerr)) end
    local cid = id_of(row.CampaignId)
    local r = { stat_date = row.Date, campaign_id = cid, campaign_name = names[cid] or row.CampaignName,
      ad_group_id = id_of(row.AdGroupId), ad_id = id_of(row.AdId), impressions = tsv.count(row.Impressions),
      clicks = tsv.count(row.Clicks), cost = cost }
    local key = table.concat({ r.stat_date, r.campaign_id, r.ad_group_id, r.ad_id }, "|")
    if seen[key] then fail("Direct report has two rows for " .. key .. " (date|campaign|group|ad)") end
    seen[key] = true
    add(r, campaign_utm(cid))
  end
end

local from = since
while time.days_between(from, to) >= 0 do
  local till = time.add_days(from, chunk_days - 1)
  if time.days_between(till, to) < 0 then till = to end
  load_window(from, till)
  from = time.add_days(till, 1)
end

-- Direct omits rows without statistics. A key loaded earlier with figures and missing now (a
-- correction, e.g. fraud clicks removed) is written with zeros, so a re-load replaces it.
local q = string.format([[SELECT toString(stat_date) AS d, campaign_id, campaign_name, ad_group_id, ad_id
  FROM zakaz.v_direct_latest
  WHERE stat_date >= toDate(%s) AND stat_date <= toDate(%s) AND account_login = %s
    AND (impressions > 0 OR clicks > 0 OR cost > 0)]], ch.quote(since), ch.quote(to), ch.quote(login))
local old, qerr = ch.query(q)
if not old then fail("reading earlier Direct rows: " .. tostring(qerr)) end
local zeroed = 0
for _, o in ipairs(old) do
  local cid = id_of(o.campaign_id)
  local key = table.concat({ o.d, cid, id_of(o.ad_group_id), id_of(o.ad_id) }, "|")
  if not seen[key] then
    add({ stat_date = o.d, campaign_id = cid, campaign_name = names[cid] or o.campaign_name,
      ad_group_id = id_of(o.ad_group_id), ad_id = id_of(o.ad_id), impressions = 0, clicks = 0, cost = "0.00" },
      campaign_utm(cid))
    zeroed = zeroed + 1
  end
end
if zeroed > 0 then job:set("rows_zeroed", zeroed) end
job:message(string.format("%s..%s: %d rows%s", since, to, added,
  zeroed > 0 and string.format(" (%d zeroed)", zeroed) or ""))
