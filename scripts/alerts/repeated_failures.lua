-- repeated_failures: a job failed N times in a row (its latest N finished runs are errors).
-- Identity repeated_failures:<job>. Resolves after a successful run.
-- Config (or ALERT_REPEATED_FAILURES_THRESHOLD, ALERT_REPEATED_FAILURES_WINDOW_HOURS):
-- "3 неудачных запуска", "5 неудачных запусков", "21 неудачный запуск"
local function failed_runs(n)
  local d, dd = n % 10, n % 100
  if d == 1 and dd ~= 11 then return n .. " неудачный запуск" end
  if d >= 2 and d <= 4 and (dd < 12 or dd > 14) then return n .. " неудачных запуска" end
  return n .. " неудачных запусков"
end

return {
  severity = "error",
  config = {
    threshold = 3,                -- consecutive errors that fire
    window_hours = 72,            -- runs older than this are not looked at
    exclude = { alerts = true },
  },
  check = function(ctx, cfg)
    local since = ctx.now - math.floor(cfg.window_hours * 3600)
    local rows = ctx.query(([[
      SELECT job, status, message, toUnixTimestamp(started_at) AS t
      FROM zakaz.meta_job_runs
      WHERE started_at >= toDateTime(%d) AND status IN ('success', 'error')
      ORDER BY job, t DESC]]):format(since))
    local streak, last_msg, broken = {}, {}, {}
    for _, r in ipairs(rows) do
      if (ctx.disabled or {})[r.job] then broken[r.job] = true end -- switched off: not watched
      if not broken[r.job] then
        if r.status == "error" then
          streak[r.job] = (streak[r.job] or 0) + 1
          last_msg[r.job] = last_msg[r.job] or r.message
        else
          broken[r.job] = true
        end
      end
    end
    local jobs = {}
    for j in pairs(streak) do jobs[#jobs + 1] = j end
    table.sort(jobs)
    local out = {}
    for _, j in ipairs(jobs) do
      if streak[j] >= cfg.threshold and not cfg.exclude[j] then
        out[#out + 1] = {
          subject = j, job = j,
          title = ("%s: %s подряд"):format(j, failed_runs(streak[j])),
          message = "Последняя ошибка: " .. (last_msg[j] or ""),
          hint = ctx.job_hint(j),
          details = { failures = streak[j], threshold = cfg.threshold },
        }
      end
    end
    return out
  end,
}
