-- no_recent_success: a job has not succeeded within its expected period. Jobs that never ran
-- at all are not reported (a switched-off channel such as gmail is not an alert).
-- Identity no_recent_success:<job>. Resolves with the next successful run.
-- Config (or ALERT_NO_RECENT_SUCCESS_PERIOD_HOURS_<JOB>, e.g. ..._QTICKETS=2):
return {
  severity = "error",
  config = {
    period_hours = { qtickets = 1, vk_ads = 26, direct = 26 },
  },
  check = function(ctx, cfg)
    local names = {}
    for job in pairs(cfg.period_hours) do names[#names + 1] = ctx.quote(job) end
    if #names == 0 then return {} end
    table.sort(names)
    local rows = ctx.query(([[
      SELECT job, toUnixTimestamp(maxIf(started_at, status = 'success')) AS last_ok,
             toUnixTimestamp(max(started_at)) AS last_run, count() AS runs
      FROM zakaz.meta_job_runs
      WHERE job IN (%s)
      GROUP BY job
      ORDER BY job]]):format(table.concat(names, ", ")))
    local out = {}
    for _, r in ipairs(rows) do
      local period = cfg.period_hours[r.job] * 3600
      local last_ok = tonumber(r.last_ok) or 0
      if ctx.now - last_ok > period and not (ctx.disabled or {})[r.job] then
        local when = last_ok > 0 and time.format(last_ok, "%Y-%m-%d %H:%M:%S %Z") or "никогда"
        out[#out + 1] = {
          subject = r.job, job = r.job,
          title = ("%s: нет успешного запуска за %g ч"):format(r.job, cfg.period_hours[r.job]),
          message = ("Последний успешный запуск: %s; последний запуск: %s."):format(when,
            time.format(tonumber(r.last_run) or 0, "%Y-%m-%d %H:%M:%S %Z")),
          hint = ctx.job_hint(r.job),
          details = { last_success = last_ok, last_run = r.last_run, period_hours = cfg.period_hours[r.job] },
        }
      end
    end
    return out
  end,
}
