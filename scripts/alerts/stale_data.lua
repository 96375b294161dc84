-- stale_data: a source in zakaz.v_data_freshness (and the Gmail channel, zakaz.v_data_freshness_gmail)
-- is more days behind than allowed. Identity stale_data:<source>. Resolves when the source catches up.
-- A source is looked at only while it is in use: its loader job ran (whatever the outcome) within
-- active_hours. A switched-off source (Direct not bought, Gmail off by default) would otherwise be
-- "stale" forever; a source whose loader stopped running unexpectedly is no_recent_success's alert,
-- and a loader that runs and fails keeps its source looked at. Sources without a known loader are
-- always looked at.
-- Config (or ALERT_STALE_DATA_MAX_DAYS_<SOURCE>, e.g. ALERT_STALE_DATA_MAX_DAYS_VK_ADS=3,
-- ALERT_STALE_DATA_ACTIVE_HOURS):
local LOADERS = {
  qtickets_sales = { "qtickets", "qtickets_refunds" },
  vk_ads = { "vk_ads" },
  direct = { "direct" },
  qtickets_gmail = { "gmail_ingest" },
}
return {
  severity = "warning",
  config = {
    -- days_behind above this fires; `default` covers sources not listed
    max_days = { default = 2, qtickets_sales = 2, vk_ads = 2, direct = 2, qtickets_gmail = 2 },
    -- a source counts as switched on while its loader ran within this many hours (daily loaders
    -- run every 24 h, Gmail every 4 h)
    active_hours = 48,
  },
  check = function(ctx, cfg)
    local since = ctx.now - math.floor(cfg.active_hours * 3600)
    local names = {}
    for _, jobs in pairs(LOADERS) do
      for _, j in ipairs(jobs) do names[#names + 1] = ctx.quote(j) end
    end
    table.sort(names)
    local ran = {}
    for _, r in ipairs(ctx.query(([[
      SELECT DISTINCT job FROM zakaz.meta_job_runs
      WHERE started_at >= toDateTime(%d) AND job IN (%s)]]):format(since, table.concat(names, ", ")))) do
      ran[r.job] = true
    end
    local function in_use(source)
      local jobs = LOADERS[source]
      if not jobs then return true end
      for _, j in ipairs(jobs) do
        if ran[j] and not (ctx.disabled or {})[j] then return true end
      end
      return false
    end
    local rows = ctx.query([[
      SELECT source, toString(latest_date) AS latest, days_behind, total_rows
      FROM zakaz.v_data_freshness ORDER BY source]])
    -- The Gmail view is read only while the channel is on, as the view may be absent where it never was.
    if in_use("qtickets_gmail") then
      for _, r in ipairs(ctx.query([[
        SELECT source, toString(latest_date) AS latest, days_behind, total_rows
        FROM zakaz.v_data_freshness_gmail]])) do
        rows[#rows + 1] = r
      end
    end
    local out = {}
    for _, r in ipairs(rows) do
      local limit = cfg.max_days[r.source] or cfg.max_days.default
      local behind = tonumber(r.days_behind) or 0
      if behind > limit and in_use(r.source) then
        local job = LOADERS[r.source] and LOADERS[r.source][1] or r.source
        local empty = tonumber(r.total_rows) == 0
        out[#out + 1] = {
          subject = r.source, job = job,
          title = empty and (r.source .. ": данных нет") or
            ("%s: данные устарели на %d дн."):format(r.source, behind),
          message = empty and "В источнике нет ни одной строки." or
            ("Последняя дата: %s, отставание %d дн. (допустимо %d)."):format(r.latest, behind, limit),
          hint = ctx.job_hint(job) .. "\nSELECT * FROM zakaz." ..
            (r.source == "qtickets_gmail" and "v_data_freshness_gmail" or "v_data_freshness") .. ";",
          details = { latest_date = r.latest, days_behind = behind, total_rows = r.total_rows, max_days = limit },
        }
      end
    end
    return out
  end,
}
