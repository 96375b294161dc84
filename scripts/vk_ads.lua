-- zhost: job=vk_ads secrets=vk options=mode,level,plans,accounts
-- VK Ads daily statistics -> zakaz.fact_vk_ads_daily (docs/loaders/ads.md, docs/schema.md §3.10).
--
-- Two modes:
--   v2      ads.vk.com API v2: client-credentials token (agency variant for client accounts), kept
--           in a token cache and refreshed, never re-issued per run; ad plans / ad groups / banners
--           listed with limit/offset paging; statistics/<level>/day.json in chunks of <= 200 ids
--           and <= 92 days. Chosen when VK_ADS_CLIENT_ID is set, or with --mode v2.
--   legacy  api.vk.com ads.getStatistics (v5.131) for accounts still in the old cabinet: errors
--           come with HTTP 200; 6/9 mean slow down, 601 means stop for the day. Chosen with
--           --mode legacy, or when only VK_TOKEN is configured.
--
-- Options: --days N | --since D [--to D] (default: the last VK_DAYS_BACK=30 days up to today,
-- Moscow), --dry-run, --mode v2|legacy, --level banners|ad_groups|ad_plans (v2), --plans 1,2 (v2:
-- only these ad plans), --accounts 1,2 (legacy: instead of VK_ACCOUNT_IDS).
local utm = require("utm")
local vk = require("vk_lib")
local loader = require("loader")

local args = job.args
local fail = loader.fail
local env, env_alias = loader.settings(job)

local function split_ids(s, what)
  local out = {}
  for part in tostring(s):gmatch("[^,%s]+") do
    local n = math.tointeger(tonumber(part))
    if not n or n <= 0 then fail(what .. ": '" .. part .. "' is not a numeric id") end
    out[#out + 1] = n
  end
  return out
end

-- Settings are checked before anything is fetched: a value that is not a number fails the run
-- naming it, instead of a 1-day window (VK_DAYS_BACK), no rate limit (VK_ADS_RPS), account 0
-- (VK_ADS_ACCOUNT_ID) or a Lua error at the first pause (VK_API_RETRY_PAUSE).
local since, to = loader.window(args, loader.whole("VK_DAYS_BACK", env("VK_DAYS_BACK", "30"), 1, 3650))
local VER = math.floor(time.now() * 1000)
-- VK_TIMEOUT (the original system's name): seconds per HTTP request, in both modes.
local TIMEOUT = loader.whole("VK_TIMEOUT", env("VK_TIMEOUT", "60"), 1, 600)
-- A 200 whose body is no JSON (cut or mangled on the way) is asked for again: this many tries in
-- all, VK_API_RETRY_PAUSE × the try's number seconds apart.
local DAMAGED_ATTEMPTS = 4
local DAMAGED_PAUSE = loader.number("VK_API_RETRY_PAUSE", env("VK_API_RETRY_PAUSE", "2"), 0, 3600)
-- The legacy user token; the original system's secrets also called it VK_API_TOKEN or VK_ACCESS_TOKEN.
local VK_TOKEN = env_alias("VK_TOKEN", "VK_API_TOKEN") or env_alias("VK_TOKEN", "VK_ACCESS_TOKEN")

local mode = args.mode
if mode == nil then
  if env("VK_ADS_CLIENT_ID") then mode = "v2"
  elseif VK_TOKEN then mode = "legacy"
  else job:need("VK_ADS_CLIENT_ID", "VK_ADS_CLIENT_SECRET") end
end
if mode ~= "v2" and mode ~= "legacy" then fail("--mode must be v2 or legacy (got '" .. tostring(mode) .. "')") end

local sink = assert(ch.sink("fact_vk_ads_daily"))
local rows_added = 0

local function add(r, u)
  sink:add{
    stat_date = r.stat_date, account_id = r.account_id, campaign_id = r.campaign_id,
    ad_group_id = r.ad_group_id, ad_id = r.ad_id, campaign_name = r.campaign_name or "",
    impressions = r.impressions, clicks = r.clicks, spent = r.spent,
    utm_source = u.utm_source, utm_medium = u.utm_medium, utm_campaign = u.utm_campaign,
    utm_content = u.utm_content, utm_term = u.utm_term, utm_city = u.utm_city,
    utm_day = u.utm_day, utm_month = u.utm_month, _ver = VER,
  }
  rows_added = rows_added + 1
end

---------------------------------------------------------------------------- v2 (ads.vk.com)

local function run_v2()
  local base = env("VK_ADS_BASE_URL", "https://ads.vk.com"):gsub("/+$", "")
  local client_id, client_secret = job:need("VK_ADS_CLIENT_ID", "VK_ADS_CLIENT_SECRET")
  local level = args.level or env("VK_ADS_LEVEL", "banners")
  if level ~= "banners" and level ~= "ad_groups" and level ~= "ad_plans" then
    fail("--level must be banners, ad_groups or ad_plans (got '" .. level .. "')")
  end
  local account_id = loader.whole("VK_ADS_ACCOUNT_ID", env("VK_ADS_ACCOUNT_ID", "0"), 0, math.maxinteger)
  -- The daily quota is per user and method; 3 rps stays well inside the documented limits.
  http.configure("vk_ads", { rps = loader.number("VK_ADS_RPS", env("VK_ADS_RPS", "3"), 0.1, 1000), concurrency = 2 })

  local agencies = {}
  for name in (env("VK_ADS_AGENCY_CLIENT_NAME") or ""):gmatch("[^,%s]+") do agencies[#agencies + 1] = name end
  if #agencies == 0 then agencies[1] = false end

  -- One account: its own token (and cache), lists, statistics. Returns the number of rows.
  local function load_account(agency)
    local label = agency and ("agency client " .. agency) or "own account"
    local cache = env("VK_ADS_TOKEN_CACHE")
    if not cache or #agencies > 1 then
      local id = (client_id .. (agency and ("." .. agency) or "")):gsub("[^%w%-_.]", "_")
      cache = job.state_dir .. "/.vk_ads_token." .. id .. ".json"
    end
    local oc = oauth2.client{
      token_url = base .. "/api/v2/oauth2/token.json", client_id = client_id, client_secret = client_secret,
      grant = agency and "agency_client_credentials" or "client_credentials",
      extra = agency and { agency_client_name = agency } or nil,
      cache = cache, format = "plain", source = "vk_ads_oauth", timeout = TIMEOUT,
    }

    -- The API allows 5 live tokens per client and user; a 6th request is a 403. Delete them
    -- once (token/delete.json) and ask again, rather than failing every night until they expire.
    local deleted = false
    local function token()
      local tok, err, info = oc:token()
      if not tok and info and info.status == 403 and not deleted then
        deleted = true
        log.warn("VK Ads token limit reached; deleting this client's tokens once and requesting a new one",
          { account = label, error = err })
        job:metric("token_deletes", 1)
        local ok, derr = oc:delete_tokens(agency and { username = agency } or nil)
        if not ok then fail("VK Ads token limit reached and token/delete.json failed: " .. tostring(derr)) end
        tok, err = oc:token()
      end
      if not tok then fail("VK Ads token for " .. label .. ": " .. tostring(err)) end
      return tok
    end

    local warned_quota = false
    local function note_limits(res)
      if res:header("x-ratelimit-rps-remaining") == "0" then
        job:metric("rate_limit_pauses", 1)
        sleep(1) -- the per-second window is spent: let it roll over before the next call
      end
      for _, w in ipairs({ "Hourly", "Daily" }) do
        if res:header("x-ratelimit-" .. w:lower() .. "-remaining") == "0" and not warned_quota then
          warned_quota = true
          log.warn("VK Ads " .. w:lower() .. " request quota is used up; further calls will get 429")
        end
      end
    end

    -- GET base/api/v2/<path>: doc on 200, else nil, response. A 401 (expired_token,
    -- invalid_token) refreshes the token and repeats the request.
    local function api(path, query)
      local url = base .. "/api/v2/" .. path
      local refreshes, damaged = 0, 0
      while true do
        local tok = token()
        local res, err = http.request{ method = "GET", url = url, query = query, source = "vk_ads", timeout = TIMEOUT,
          headers = { Authorization = "Bearer " .. tok, Accept = "application/json" } }
        if not res then fail("VK Ads " .. path .. ": " .. tostring(err)) end
        note_limits(res)
        if res.status == 401 and refreshes < 2 then
          refreshes = refreshes + 1
          local code = vk.v2_error(res.body)
          log.warn("VK Ads rejected the access token; refreshing it", { code = code, path = path })
          job:metric("token_refreshes", 1)
          oc:invalidate(tok)
        elseif res.status == 200 then
          local doc, jerr = res:json()
          if type(doc) == "table" then return doc end
          -- Cut or mangled on the way (what curl sees as broken the host retries already): the
          -- statistics are VK's to give again, so ask again before failing the run.
          damaged = damaged + 1
          local why = string.format("VK Ads %s: the 200 answer is not valid JSON (%s): %s", path, tostring(jerr),
            (res.body or ""):sub(1, 120))
          if damaged >= DAMAGED_ATTEMPTS then
            fail(string.format("%s — gave up after %d attempts", why, damaged))
          end
          job:metric("api_retries", 1)
          log.warn("VK Ads answer damaged; asking again", { path = path, attempt = damaged, error = tostring(jerr) })
          sleep(DAMAGED_PAUSE * damaged)
        else
          return nil, res
        end
      end
    end

    -- `dates` (statistics): the chunk's window, so that a refusal such as ERR_WRONG_DATE says which.
    local function http_fail(path, res, dates)
      local code, msg = vk.v2_error(res.body)
      local limits = ""
      if res.status == 429 then
        limits = string.format(" (rate limit; remaining rps=%s hourly=%s daily=%s)",
          tostring(res:header("x-ratelimit-rps-remaining")), tostring(res:header("x-ratelimit-hourly-remaining")),
          tostring(res:header("x-ratelimit-daily-remaining")))
      end
      fail(string.format("VK Ads %s (%s%s): HTTP %d%s%s%s", path, label, dates and (", " .. dates) or "", res.status,
        code and (" " .. code) or "", msg and (": " .. msg) or (code and "" or (": " .. (res.body or ""):sub(1, 200))),
        limits))
    end

    local function list(resource, fields)
      local items, offset = {}, 0
      while true do
        -- sorting=id: offset paging over an order that new or edited objects cannot reshuffle
        local doc, res = api(resource .. ".json", { fields = fields, limit = 50, offset = offset,
          sorting = "id", _status__in = "active,blocked,deleted" })
        if not doc then http_fail(resource .. ".json", res) end
        job:metric("pages", 1)
        local page = doc.items
        local total = tonumber(doc.count)
        if type(page) ~= "table" then
          fail(string.format("VK Ads %s.json (%s): the page at offset %d has no items list", resource, label, offset))
        end
        -- An empty page before `count` is reached would silently drop the rest of the list (and
        -- their statistics): VK's paging went wrong, so fail rather than load part of the account.
        if #page == 0 and total and offset < total then
          fail(string.format("VK Ads %s.json (%s): the page at offset %d is empty, but count is %d",
            resource, label, offset, total))
        end
        for _, it in ipairs(page) do items[#items + 1] = it end
        offset = offset + #page
        -- Stop at `count`; without one, a short page is the last (a missing count must not cut the
        -- list after the first 50 objects).
        if #page == 0 or (total and offset >= total) or (not total and #page < 50) then break end
      end
      return items
    end

    local plans = list("ad_plans", "id,name,status")
    local groups = list("ad_groups", "id,name,status,ad_plan_id")
    local banners = list("banners", "id,ad_group_id,status,urls")

    local plan_name, plan_known = {}, {}
    for _, p in ipairs(plans) do
      local id = vk.int(p.id)
      plan_name[id], plan_known[id] = tostring(p.name or ""), true
    end
    local wanted
    local plans_opt = args.plans or env("VK_ADS_PLAN_IDS")
    if plans_opt then
      wanted = {}
      for _, id in ipairs(split_ids(plans_opt, "--plans")) do
        if not plan_known[id] then
          fail(string.format("VK Ads: ad plan %d is not in %s (unknown id or no access); %d plans are listed",
            id, label, #plans))
        end
        wanted[id] = true
      end
    end

    local plan_of_group = {}
    for _, g in ipairs(groups) do plan_of_group[vk.int(g.id)] = vk.int(g.ad_plan_id) end
    -- Per object of the chosen level: its ids in the fact key and its UTM.
    local objects, order = {}, {}
    local function object(id, key)
      if not objects[id] then
        objects[id] = { key = key, utms = {} }
        order[#order + 1] = id
      end
      return objects[id]
    end
    for _, g in ipairs(groups) do
      local gid = vk.int(g.id)
      local pid = plan_of_group[gid]
      if (not wanted or wanted[pid]) and level ~= "banners" then
        if level == "ad_groups" then object(gid, { pid, gid, 0 })
        else object(pid, { pid, 0, 0 }) end
      end
    end
    for _, p in ipairs(plans) do
      local pid = vk.int(p.id)
      if level == "ad_plans" and (not wanted or wanted[pid]) then object(pid, { pid, 0, 0 }) end
    end
    -- Banners whose answer carries no link URL get empty UTM fields. Named, so that an empty UTM
    -- is explained (a banner without a link, or an answer that only references the link by id).
    local without_link = {}
    for _, b in ipairs(banners) do
      local bid, gid = vk.int(b.id), vk.int(b.ad_group_id)
      local pid = plan_of_group[gid] or 0
      if not wanted or wanted[pid] then
        local url = type(b.urls) == "table" and type(b.urls.primary) == "table" and b.urls.primary.url or nil
        if type(url) ~= "string" or url == "" then without_link[#without_link + 1] = tostring(bid) end
        local u = utm.parse(type(url) == "string" and url or "")
        local o
        if level == "banners" then o = object(bid, { pid, gid, bid })
        elseif level == "ad_groups" then o = object(gid, { pid, gid, 0 })
        else o = object(pid, { pid, 0, 0 }) end
        o.utms[#o.utms + 1] = u
      end
    end
    for _, id in ipairs(order) do
      local o = objects[id]
      o.utm = (#o.utms == 1) and o.utms[1] or utm.common(o.utms)
    end
    if #without_link > 0 then
      job:metric("banners_without_link", #without_link)
      log.warn("banners without a link URL in VK's answer: their UTM fields are empty", {account = label,
        count = #without_link, banners = table.concat(without_link, ",", 1, math.min(#without_link, 10))})
    end

    local path = "statistics/" .. level .. "/day.json"
    local singular = ({ banners = "banner", ad_groups = "ad group", ad_plans = "ad plan" })[level]

    -- One statistics request; when VK refuses it over an id it does not name, halve the chunk
    -- until the id is found, so the error always says which one.
    local function stats(ids, from, till)
      local doc, res = api(path, { id = table.concat(ids, ","), date_from = from, date_to = till, metrics = "base" })
      if doc then
        if type(doc.items) ~= "table" then
          fail(string.format("VK Ads %s (%s): the answer for %s..%s (%d %ss from %s) has no items list", path, label,
            from, till, #ids, singular, tostring(ids[1])))
        end
        return doc.items
      end
      local code, msg = vk.v2_error(res.body)
      if not vk.is_id_error(code) then http_fail(path, res, from .. ".." .. till) end
      local named = vk.ids_named(msg, ids)
      if #named == 0 and #ids > 1 then
        local mid = #ids // 2
        local a, b = {}, {}
        for i, id in ipairs(ids) do if i <= mid then a[#a + 1] = id else b[#b + 1] = id end end
        local ia, ib = stats(a, from, till), stats(b, from, till)
        for _, it in ipairs(ib) do ia[#ia + 1] = it end
        return ia -- both halves passed: the refusal was not about one id after all
      end
      if #named == 0 then named = ids end
      local what = code == "ERR_ACCESS_DENIED" and "access denied to" or "unknown or foreign"
      fail(string.format("VK Ads %s (%s): %s %s %s (%s: %s)", path, label, what, singular,
        table.concat(named, ","), code, tostring(msg)))
    end

    local work = {}
    for _, ids in ipairs(vk.chunks(order, 200)) do
      for _, range in ipairs(vk.date_chunks(since, to, 92)) do work[#work + 1] = { ids, range[1], range[2] } end
    end
    local results = loader.map(work, 2, function(w) return stats(w[1], w[2], w[3]) end)
    local n, zeroed = 0, 0
    local function row(o, date, imp, clk, spent)
      add({ stat_date = date, account_id = account_id, campaign_id = o.key[1], ad_group_id = o.key[2],
        ad_id = o.key[3], campaign_name = plan_name[o.key[1]], impressions = imp, clicks = clk, spent = spent }, o.utm)
      n = n + 1
    end
    for wi, items in ipairs(results) do
      local ids, from, till = work[wi][1], work[wi][2], work[wi][3]
      local got = {}
      for _, item in ipairs(items) do
        local o = objects[vk.int(item.id)]
        if not o then fail(string.format("VK Ads %s answered for %s %s, which was not asked for", path, singular, tostring(item.id))) end
        for _, r in ipairs(type(item.rows) == "table" and item.rows or {}) do
          local imp, clk, spent = vk.v2_measures(r)
          if not imp then
            fail(string.format("VK Ads %s (%s): %s %s, %s: base.%s", path, label, singular, tostring(item.id),
              tostring(r.date), clk))
          end
          row(o, r.date, imp, clk, spent)
          got[vk.int(item.id) .. "|" .. tostring(r.date)] = true
        end
      end
      -- VK lists every day of every object asked for, zero days included; a day or an object it
      -- leaves out had no delivery, and is written with zeros so an earlier figure is replaced.
      local dates = vk.dates(from, till)
      for _, id in ipairs(ids) do
        for _, d in ipairs(dates) do
          if not got[id .. "|" .. d] then
            row(objects[id], d, 0, 0, "0.00")
            zeroed = zeroed + 1
          end
        end
      end
    end
    -- Rows an earlier run wrote for these ad plans at another level (VK_ADS_LEVEL or --level
    -- changed) have other keys, so every view would add them to this run's: a switch from banners
    -- to ad_groups doubled the spend of the window. They are written again with zeros. Not fatal
    -- when ClickHouse cannot answer (the rows above are spooled then; the next run looks again).
    local plan_ids, seen_plan = {}, {}
    for _, id in ipairs(order) do
      local pid = objects[id].key[1]
      if not seen_plan[pid] then seen_plan[pid], plan_ids[#plan_ids + 1] = true, pid end
    end
    if #plan_ids > 0 then
      local other = ({ banners = "ad_id = 0", ad_groups = "(ad_id != 0 OR ad_group_id = 0)",
        ad_plans = "(ad_id != 0 OR ad_group_id != 0)" })[level]
      local old, qerr = ch.query(string.format([[SELECT toString(stat_date) AS d, campaign_id, ad_group_id, ad_id,
          campaign_name, utm_source, utm_medium, utm_campaign, utm_content, utm_term, utm_city, utm_day, utm_month
        FROM zakaz.v_vk_ads_latest
        WHERE stat_date >= toDate(%s) AND stat_date <= toDate(%s) AND account_id = %d AND campaign_id IN (%s)
          AND %s AND (impressions > 0 OR clicks > 0 OR spent > 0)]], ch.quote(since), ch.quote(to), account_id,
        table.concat(plan_ids, ","), other))
      if not old then
        log.warn("could not look for rows written earlier at another level; the next run looks again",
          { account = label, error = tostring(qerr) })
      elseif #old > 0 then
        for _, o in ipairs(old) do
          add({ stat_date = o.d, account_id = account_id, campaign_id = o.campaign_id, ad_group_id = o.ad_group_id,
            ad_id = o.ad_id, campaign_name = o.campaign_name, impressions = 0, clicks = 0, spent = "0.00" }, o)
        end
        zeroed = zeroed + #old
        log.warn("rows written earlier at another level than " .. level .. " are zeroed, so they are not added "
          .. "to this run's", { account = label, rows = #old })
      end
    end
    if zeroed > 0 then job:metric("rows_zeroed", zeroed) end
    log.info("VK Ads account loaded", { account = label, level = level, objects = #order, rows = n })
    return n
  end

  loader.map(agencies, 2, load_account)
  return string.format("v2 %s..%s: %d rows", since, to, rows_added)
end

---------------------------------------------------------------------------- legacy (api.vk.com)

local function run_legacy()
  local api_url = env("VK_API_URL", "https://api.vk.com/method"):gsub("/+$", "")
  local version = env("VK_API_VERSION", "5.131")
  local token = VK_TOKEN or job:need("VK_TOKEN")
  local accounts = split_ids(args.accounts or job:need("VK_ACCOUNT_IDS"), "VK_ACCOUNT_IDS")
  local pause = DAMAGED_PAUSE
  http.configure("vk_api", { rps = loader.number("VK_API_RPS", env("VK_API_RPS", "2"), 0.1, 1000), concurrency = 2 })

  -- POST with the token in the form body: it never appears in a URL, a log line or a proxy log.
  local function call(method, params)
    -- every message names the account (and the dates of a statistics call): several are loaded at once
    local what = string.format("VK API %s (account %s%s)", method, tostring(params.account_id),
      params.date_from and (", " .. params.date_from .. ".." .. params.date_to) or "")
    local form = { access_token = token, v = version }
    for k, v in pairs(params) do form[k] = v end
    local damaged = 0
    for attempt = 1, 6 do
      local res, err = http.request{ method = "POST", url = api_url .. "/" .. method, form = form, source = "vk_api",
        timeout = TIMEOUT }
      if not res then fail(what .. ": " .. tostring(err)) end
      if res.status ~= 200 then fail(what .. ": HTTP " .. res.status .. ": " .. (res.body or ""):sub(1, 200)) end
      local doc, jerr = res:json()
      while type(doc) ~= "table" do
        -- cut or mangled on the way: ask again (as Direct's loader does) before failing the run
        damaged = damaged + 1
        local why = string.format("%s: the 200 answer is not valid JSON (%s): %s", what, tostring(jerr),
          (res.body or ""):sub(1, 120))
        if damaged >= DAMAGED_ATTEMPTS then fail(string.format("%s — gave up after %d attempts", why, damaged)) end
        job:metric("api_retries", 1)
        log.warn("VK API answer damaged; asking again", { method = method, attempt = damaged, error = tostring(jerr) })
        sleep(DAMAGED_PAUSE * damaged)
        res, err = http.request{ method = "POST", url = api_url .. "/" .. method, form = form, source = "vk_api",
          timeout = TIMEOUT }
        if not res then fail(what .. ": " .. tostring(err)) end
        if res.status ~= 200 then fail(what .. ": HTTP " .. res.status .. ": " .. (res.body or ""):sub(1, 200)) end
        doc, jerr = res:json()
      end
      local e = vk.legacy_error(doc)
      if not e then
        -- Without a response the answer is not "nothing": read as an empty list it would zero
        -- every loaded day of the account (see the end of run_legacy).
        if type(doc.response) ~= "table" then
          fail(string.format("%s: the answer has no response list and no error: %s", what,
            (res.body or ""):sub(1, 200)))
        end
        return doc.response
      end
      local action, reason = vk.legacy_action(e.code)
      if action == "retry" and attempt < 6 then
        job:metric("api_slowdowns", 1)
        log.warn("VK API asks to slow down; pausing", { method = method, code = e.code, attempt = attempt })
        sleep(pause * attempt)
      else
        fail(string.format("%s failed: error %d: %s%s", what, e.code, e.msg,
          reason and (" (" .. reason .. ")") or ""))
      end
    end
  end

  -- ads.getAds and ads.getAdsLayout answer at most 2000 ads, without saying so (dev.vk.com), and
  -- limit/offset work only for a single campaign. An answer that reaches the cap is taken as cut:
  -- the ads are listed again campaign by campaign, page by page, or every ad past the cap would
  -- lose its statistics silently.
  local ads_cap = loader.whole("VK_API_ADS_CAP", env("VK_API_ADS_CAP", "2000"), 1, 100000)
  local function list_ads(method, acc, camps)
    local all = call(method, { account_id = acc, include_deleted = 1 }) or {}
    job:metric("pages", 1)
    if #all < ads_cap then return all end
    log.info("VK API " .. method .. " reached its cap; listing the ads per campaign", { account = acc, cap = ads_cap })
    all = {}
    for _, c in ipairs(camps) do
      local offset = 0
      while true do
        local page = call(method, { account_id = acc, include_deleted = 1, campaign_ids = "[" .. vk.int(c.id) .. "]",
          limit = ads_cap, offset = offset }) or {}
        job:metric("pages", 1)
        for _, a in ipairs(page) do all[#all + 1] = a end
        offset = offset + #page
        if #page < ads_cap then break end
      end
    end
    return all
  end

  local function load_account(acc)
    local camps = call("ads.getCampaigns", { account_id = acc, include_deleted = 1 }) or {}
    job:metric("pages", 1)
    local ads = list_ads("ads.getAds", acc, camps)
    local cname = {}
    for _, c in ipairs(camps) do cname[vk.int(c.id)] = vk.unhtml(tostring(c.name or "")) end
    local links, missing = {}, false
    for _, a in ipairs(ads) do
      links[vk.int(a.id)] = a.link_url
      if type(a.link_url) ~= "string" then missing = true end
    end
    if missing then -- link_url is documented on ads.getAdsLayout
      for _, a in ipairs(list_ads("ads.getAdsLayout", acc, camps)) do
        if type(a.link_url) == "string" then links[vk.int(a.id)] = a.link_url end
      end
    end
    local ad_info, ids = {}, {}
    for _, a in ipairs(ads) do
      local id = vk.int(a.id)
      ad_info[id] = { campaign_id = vk.int(a.campaign_id), utm = utm.parse(vk.unhtml(type(links[id]) == "string" and links[id] or "")) }
      ids[#ids + 1] = id
    end
    local out = {}
    -- ~100 ids per call: long id lists get HTTP 414 from api.vk.com.
    for _, chunk in ipairs(vk.chunks(ids, 100)) do
      for _, range in ipairs(vk.date_chunks(since, to, 92)) do
        local res = call("ads.getStatistics", { account_id = acc, ids_type = "ad", ids = table.concat(chunk, ","),
          period = "day", date_from = range[1], date_to = range[2] }) or {}
        job:metric("pages", 1)
        for _, item in ipairs(res) do
          local ad = ad_info[vk.int(item.id)]
          for _, s in ipairs(ad and type(item.stats) == "table" and item.stats or {}) do
            if type(s.day) == "string" then
              local imp, clk, spent = vk.legacy_measures(s)
              if not imp then
                fail(string.format("VK API ads.getStatistics (account %d): ad %s, %s: %s", acc, tostring(item.id), s.day, clk))
              end
              out[#out + 1] = { stat_date = s.day, account_id = acc, campaign_id = ad.campaign_id, ad_group_id = 0,
                ad_id = vk.int(item.id), campaign_name = cname[ad.campaign_id], impressions = imp,
                clicks = clk, spent = spent, utm = ad.utm }
            end
          end
        end
      end
    end
    return out
  end

  local results = loader.map(accounts, 2, load_account)
  local seen = {}
  for _, rows in ipairs(results) do
    for _, r in ipairs(rows) do
      add(r, r.utm)
      seen[table.concat({ r.stat_date, r.account_id, r.campaign_id, r.ad_group_id, r.ad_id }, "|")] = true
    end
  end
  -- The legacy API omits days without delivery. A day loaded earlier with figures that has none
  -- now (a correction) is written with zeros, so re-loads replace rather than keep stale spend.
  local q = string.format([[SELECT toString(stat_date) AS d, account_id, campaign_id, ad_group_id, ad_id,
      campaign_name, utm_source, utm_medium, utm_campaign, utm_content, utm_term, utm_city, utm_day, utm_month
    FROM zakaz.v_vk_ads_latest
    WHERE stat_date >= toDate(%s) AND stat_date <= toDate(%s) AND account_id IN (%s)
      AND (impressions > 0 OR clicks > 0 OR spent > 0)]], ch.quote(since), ch.quote(to), table.concat(accounts, ","))
  local old, qerr = ch.query(q)
  if not old then fail("reading earlier VK rows: " .. tostring(qerr)) end
  local zeroed = 0
  for _, o in ipairs(old) do
    local k = table.concat({ o.d, tostring(o.account_id), tostring(o.campaign_id), tostring(o.ad_group_id),
      tostring(o.ad_id) }, "|")
    if not seen[k] then
      add({ stat_date = o.d, account_id = o.account_id, campaign_id = o.campaign_id, ad_group_id = o.ad_group_id,
        ad_id = o.ad_id, campaign_name = o.campaign_name, impressions = 0, clicks = 0, spent = "0.00" }, o)
      zeroed = zeroed + 1
    end
  end
  if zeroed > 0 then job:set("rows_zeroed", zeroed) end
  return string.format("legacy %s..%s: %d rows from %d account(s)", since, to, rows_added, #accounts)
end

local summary = mode == "v2" and run_v2() or run_legacy()
job:set("mode", mode)
job:message(summary)
log.info("VK Ads done", { mode = mode, since = since, to = to, rows = rows_added })
