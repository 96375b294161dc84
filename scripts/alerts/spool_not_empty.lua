-- spool_not_empty: batches ClickHouse did not take wait in the spool for `zhost spool replay`
-- (identity spool_not_empty:spool), or rows replay set aside in the spool's quarantine because
-- ClickHouse rejected their content (spool_not_empty:quarantine). Each resolves when emptied. Abstains (returns
-- false: open alerts stay as they are) while ClickHouse is down.
return {
  severity = "warning",
  needs_clickhouse = false,
  config = {
    min_files = 1, -- fire at this many spool files or more
  },
  check = function(ctx, cfg)
    -- While ClickHouse is down every job spools: that is clickhouse_down's alert, not this one.
    if not ctx.clickhouse_ok then return false end
    local s = ctx.spool
    local out = {}
    if (s.files or 0) >= cfg.min_files then
      out[#out + 1] = {
        subject = "spool",
        title = ("в спуле %d файл(ов), %d строк не записано в ClickHouse"):format(s.files, s.rows),
        message = ("Каталог %s: %d файлов, %d строк, %d байт."):format(s.dir, s.files, s.rows, s.bytes),
        hint = "zhost spool status\nzhost spool replay",
        details = { dir = s.dir, files = s.files, rows = s.rows, bytes = s.bytes },
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
