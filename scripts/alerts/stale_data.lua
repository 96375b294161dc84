-- stale_data: a source in zakaz.v_data_freshness is more days behind than allowed.
-- Identity stale_data:<source>. Resolves when the source catches up.
-- Config (or ALERT_STALE_DATA_MAX_DAYS_<SOURCE>, e.g. ALERT_STALE_DATA_MAX_DAYS_VK_ADS=3):
local JOBS = { qtickets_sales = "qtickets", vk_ads = "vk_ads", direct = "direct" }
return {
  severity = "warning",
  config = {
    -- days_behind above this fires; `default` covers sources not listed
    max_days = { default = 2, qtickets_sales = 2, vk_ads = 2, direct = 2 },
  },
  check = function(ctx, cfg)
    local rows = ctx.query([[
      SELECT source, toString(latest_date) AS latest, days_behind, total_rows
      FROM zakaz.v_data_freshness ORDER BY source]])
    local out = {}
    for _, r in ipairs(rows) do
      local limit = cfg.max_days[r.source] or cfg.max_days.default
      local behind = tonumber(r.days_behind) or 0
      if behind > limit then
        local job = JOBS[r.source] or r.source
        local empty = tonumber(r.total_rows) == 0
        out[#out + 1] = {
          subject = r.source, job = job,
          title = empty and (r.source .. ": данных нет") or
            ("%s: данные устарели на %d дн."):format(r.source, behind),
          message = empty and "В источнике нет ни одной строки." or
            ("Последняя дата: %s, отставание %d дн. (допустимо %d)."):format(r.latest, behind, limit),
          hint = ctx.job_hint(job) .. "\nSELECT * FROM zakaz.v_data_freshness;",
          details = { latest_date = r.latest, days_behind = behind, total_rows = r.total_rows, max_days = limit },
        }
      end
    end
    return out
  end,
}
