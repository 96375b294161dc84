-- failed_run: a job's latest finished run (within the window) ended in error.
-- Identity failed_run:<job>. Resolves when the job's latest run succeeds. Runs still going and runs
-- cut short by a restart (interrupted) say nothing about the failure, so they neither fire nor resolve.
-- Config (or ALERT_FAILED_RUN_WINDOW_HOURS, ALERT_FAILED_RUN_EXCLUDE_<JOB>):
return {
  severity = "error",
  config = {
    window_hours = 24,            -- only runs started within this many hours count
    -- jobs never alerted on here: the alerts job reports its own failures in its log, and backup
    -- failures have their own rule (backup_failed) with the backup's error
    exclude = { alerts = true, backup = true, backup_full = true, backup_incr = true, backup_prune = true },
  },
  check = function(ctx, cfg)
    local since = ctx.now - math.floor(cfg.window_hours * 3600)
    local rows = ctx.query(([[
      SELECT job, argMax(status, started_at) AS last_status, argMax(message, started_at) AS last_message,
             argMax(run_id, started_at) AS last_run_id, toUnixTimestamp(max(started_at)) AS last_started
      FROM zakaz.meta_job_runs
      WHERE started_at >= toDateTime(%d) AND status IN ('success', 'error')
      GROUP BY job
      ORDER BY job]]):format(since))
    local out = {}
    for _, r in ipairs(rows) do
      if r.last_status == "error" and not cfg.exclude[r.job] and not (ctx.disabled or {})[r.job] then
        out[#out + 1] = {
          subject = r.job, job = r.job,
          title = r.job .. ": последний запуск завершился ошибкой",
          message = r.last_message ~= "" and r.last_message or "(без сообщения)",
          hint = ctx.job_hint(r.job),
          details = { run_id = r.last_run_id, started_at = r.last_started, status = r.last_status },
        }
      end
    end
    return out
  end,
}
