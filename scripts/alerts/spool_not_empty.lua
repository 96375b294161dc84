-- spool_not_empty: batches ClickHouse did not take wait in the spool for `zhost spool replay`.
-- Identity spool_not_empty:spool. Resolves when the spool is empty again. Abstains (returns
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
    if (s.files or 0) < cfg.min_files then return {} end
    return { {
      subject = "spool",
      title = ("в спуле %d файл(ов), %d строк не записано в ClickHouse"):format(s.files, s.rows),
      message = ("Каталог %s: %d файлов, %d строк, %d байт."):format(s.dir, s.files, s.rows, s.bytes),
      hint = "zhost spool status\nzhost spool replay",
      details = { dir = s.dir, files = s.files, rows = s.rows, bytes = s.bytes },
    } }
  end,
}
