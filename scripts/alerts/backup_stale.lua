-- backup_stale: no successful full backup within full_hours, or no successful backup of any kind
-- within any_hours. Successes come from zakaz.v_backup_runs (status ok) and from the `backup`
-- runs in zakaz.meta_job_runs. Identities backup_stale:full and backup_stale:any.
-- Where no backup has ever run, backups are not configured and the rule is quiet, unless
-- `required` is set (ALERT_BACKUP_REQUIRED=1): then never having a backup is the alert.
-- Config (or ALERT_BACKUP_STALE_FULL_HOURS, ALERT_BACKUP_STALE_ANY_HOURS, ALERT_BACKUP_STALE_REQUIRED):
local HINT = table.concat({
  "zhost status %s",
  "zhost logs %s",
  "zhost backup list",
  "SELECT ts, backup_name, mode, status, error_msg FROM zakaz.v_backup_runs ORDER BY ts DESC LIMIT 10;",
}, "\n")

local SETUP_HINT = table.concat({
  "BACKUP_DIR=/var/backups/zhost   # в secrets/.env.backup",
  "zhost enable backup_full && zhost enable backup_incr && zhost enable backup_prune",
  "zhost trigger backup_full",
}, "\n")

return {
  severity = "error",
  config = {
    full_hours = 26,  -- the newest successful full must be younger (daily full at 02:30 + 2 h slack)
    any_hours = 6,    -- the newest successful backup, full or incremental (every 4 h + 2 h slack)
    required = false, -- true: fire even if no backup has ever run
  },
  env = { required = "ALERT_BACKUP_REQUIRED" },
  check = function(ctx, cfg)
    local a = ctx.query([[
      SELECT toUnixTimestamp(maxIf(ts, status = 'ok' AND mode = 'full')) AS t_full,
             toUnixTimestamp(maxIf(ts, status = 'ok')) AS t_any, count() AS attempts
      FROM zakaz.v_backup_runs
      WHERE mode IN ('full', 'incr')]])[1] or {}
    local b = ctx.query([[
      SELECT toUnixTimestamp(maxIf(started_at, status = 'success' AND visitParamExtractString(metrics, 'mode') = 'full'))
               AS t_full,
             toUnixTimestamp(maxIf(started_at, status = 'success')) AS t_any, count() AS attempts
      FROM zakaz.meta_job_runs
      WHERE job = 'backup']])[1] or {}
    local function newest(k) return math.max(tonumber(a[k]) or 0, tonumber(b[k]) or 0) end
    local last_full, last_any = newest("t_full"), newest("t_any")
    local attempts = (tonumber(a.attempts) or 0) + (tonumber(b.attempts) or 0)
    if attempts == 0 and not cfg.required then return {} end
    local function when(t) return t > 0 and time.format(t, "%Y-%m-%d %H:%M:%S %Z") or "никогда" end
    local never = attempts == 0
    local out = {}
    local function check(subject, last, hours, title)
      if ctx.now - last <= hours * 3600 then return end
      local job = subject == "full" and "backup_full" or "backup_incr"
      out[#out + 1] = {
        subject = subject, job = job,
        title = (title):format(hours),
        message = never and "Бэкапы ни разу не запускались, а ALERT_BACKUP_REQUIRED требует их." or
          ("Последний успешный: %s (допустимо %g ч)."):format(when(last), hours),
        hint = never and SETUP_HINT or HINT:format(job, job),
        details = { last_success = last, limit_hours = hours, attempts = attempts },
      }
    end
    check("full", last_full, cfg.full_hours, "нет успешного полного бэкапа за %g ч")
    check("any", last_any, cfg.any_hours, "нет успешного бэкапа за %g ч")
    return out
  end,
}
