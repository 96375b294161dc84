-- spool_not_empty: batches ClickHouse did not take wait in the spool (identity spool_not_empty:spool),
-- or rows replay set aside in the spool's quarantine because ClickHouse rejected their content
-- (spool_not_empty:quarantine). Each resolves when emptied. Abstains (returns false: open alerts
-- stay as they are) while ClickHouse is down.
-- Under the daemon with its automatic replay on (job spool_replay, ctx.auto_replay) the spool is
-- delivered within minutes of ClickHouse answering: only files no replay has taken for min_age_minutes
-- are an alert (ClickHouse refuses them, or they belong to a run still going). Without it (switched
-- off, or not known: a run by hand without the daemon's state file) any file is.
return {
  severity = "warning",
  needs_clickhouse = false,
  config = {
    min_files = 1,          -- fire at this many spool files or more
    min_age_minutes = 30,   -- with automatic replay: only when the oldest file was last written this long ago
  },
  check = function(ctx, cfg)
    -- While ClickHouse is down every job spools: that is clickhouse_down's alert, not this one.
    if not ctx.clickhouse_ok then return false end
    local s = ctx.spool
    local out = {}
    local age = (s.oldest or 0) > 0 and ctx.now - s.oldest or 0
    local waiting = (s.files or 0) >= cfg.min_files and (not ctx.auto_replay or age >= cfg.min_age_minutes * 60)
    if waiting and ctx.auto_replay then
      out[#out + 1] = {
        subject = "spool",
        title = ("в спуле %d файл(ов), %d строк не записано в ClickHouse"):format(s.files, s.rows),
        message = ("Каталог %s: %d файлов, %d строк, %d байт; самый старый записан %d мин. назад. Демон доставляет "
          .. "спул сам (задание spool_replay), как только ClickHouse отвечает, но эти строки не взял: ClickHouse их "
          .. "не принимает (например, нет таблицы) или файлы ещё дописывает идущий запуск. Причина — в сообщении "
          .. "последнего запуска spool_replay; после исправления: zhost trigger spool_replay."):format(
          s.dir, s.files, s.rows, s.bytes, math.floor(age / 60)),
        hint = "zhost logs spool_replay\nzhost spool status\nzhost trigger spool_replay",
        details = { dir = s.dir, files = s.files, rows = s.rows, bytes = s.bytes, oldest = s.oldest, auto_replay = true },
      }
    elseif waiting then
      out[#out + 1] = {
        subject = "spool",
        title = ("в спуле %d файл(ов), %d строк не записано в ClickHouse"):format(s.files, s.rows),
        message = ("Каталог %s: %d файлов, %d строк, %d байт. Автоматическая доставка спула демоном выключена "
          .. "(или демона нет): доставьте командой zhost spool replay, или включите её: "
          .. "zhost enable spool_replay."):format(s.dir, s.files, s.rows, s.bytes),
        hint = "zhost spool status\nzhost spool replay",
        details = { dir = s.dir, files = s.files, rows = s.rows, bytes = s.bytes, oldest = s.oldest, auto_replay = false },
      }
    end
    -- Rows replay set aside because ClickHouse rejected their content: no replay will load them.
    if (s.quarantined_rows or 0) > 0 then
      out[#out + 1] = {
        subject = "quarantine",
        title = ("%d строк отклонено ClickHouse и отложено в карантин спула"):format(s.quarantined_rows),
        message = ("Каталог %s/quarantine: строки и причины (файлы .errors). Повторная загрузка их не возьмёт: "
          .. "исправьте данные или загрузите период заново, затем удалите файлы."):format(s.dir),
        hint = "zhost spool status\nls " .. s.dir .. "/quarantine",
        details = { dir = s.dir .. "/quarantine", rows = s.quarantined_rows },
      }
    end
    return out
  end,
}
