-- backup_failed: the newest backup of a mode (full or incremental) failed. Read from
-- zakaz.v_backup_runs (ok/fail rows, with the backup's name and error) and from the `backup` runs
-- in zakaz.meta_job_runs, which also hold the failures that never got a backup name (another
-- backup held the folder's lock). Identity backup_failed:full or backup_failed:incr, so a failing
-- nightly full is not "resolved" by the next incremental. Resolves when that mode next succeeds.
-- A backup that was never run reports nothing (backup_stale speaks for missing backups).
local BACKUP_HINT = {
  "zhost logs backup_%s",
  "zhost backup list",
  "zhost backup verify",
  "zhost trigger backup_%s    # после исправления",
  "SELECT ts, backup_name, mode, status, error_msg FROM zakaz.v_backup_runs ORDER BY ts DESC LIMIT 10;",
}

local MODE_LABEL = { full = "полный", incr = "инкрементальный" }

return {
  severity = "error",
  check = function(ctx)
    -- Aliases differ from the column names: 18.16 rejects "f(x) AS x" as a cyclic alias.
    local from_runs = ctx.query([[
      SELECT mode AS m, argMax(status, ts) AS last_status, argMax(error_msg, ts) AS last_error,
             argMax(backup_name, ts) AS last_name, toUnixTimestamp(max(ts)) AS last_t
      FROM zakaz.v_backup_runs
      WHERE mode IN ('full', 'incr') AND status IN ('ok', 'fail')
      GROUP BY m]])
    local from_jobs = ctx.query([[
      SELECT visitParamExtractString(metrics, 'mode') AS m, argMax(status, started_at) AS last_status,
             argMax(message, started_at) AS last_message, argMax(run_id, started_at) AS last_run_id,
             toUnixTimestamp(max(started_at)) AS last_t
      FROM zakaz.meta_job_runs
      WHERE job = 'backup' AND status IN ('success', 'error')
      GROUP BY m]])
    -- The newest attempt of each mode; the backup_runs row wins a tie (same run, more detail).
    local newest = {}
    for _, r in ipairs(from_runs) do
      if MODE_LABEL[r.m] then
        newest[r.m] = { t = tonumber(r.last_t) or 0, failed = r.last_status == "fail", name = r.last_name,
          error = r.last_error }
      end
    end
    for _, r in ipairs(from_jobs) do
      local t = tonumber(r.last_t) or 0
      if MODE_LABEL[r.m] and (not newest[r.m] or t > newest[r.m].t) then
        local failed = r.last_status == "error"
        newest[r.m] = { t = t, failed = failed, name = not failed and r.last_message or nil,
          error = failed and r.last_message or "", run_id = r.last_run_id }
      end
    end
    local out = {}
    for _, mode in ipairs({ "full", "incr" }) do
      local n = newest[mode]
      if n and n.failed then
        local err = (n.error and n.error ~= "") and n.error or "(без сообщения)"
        out[#out + 1] = {
          subject = mode, job = "backup_" .. mode,
          title = ("резервная копия (%s) не создана"):format(MODE_LABEL[mode]),
          message = ("Последний %s бэкап%s, начатый %s, завершился ошибкой: %s"):format(MODE_LABEL[mode],
            n.name and (" " .. n.name) or "", time.format(n.t, "%Y-%m-%d %H:%M:%S %Z"), err),
          hint = (table.concat(BACKUP_HINT, "\n"):gsub("%%s", mode)),
          details = { mode = mode, backup_name = n.name, started_at = n.t, error = err, run_id = n.run_id },
        }
      end
    end
    return out
  end,
}
