-- clickhouse_down: ClickHouse does not answer. The alert is e-mailed even though it cannot be
-- stored now; its rows go to the spool and reach zakaz.alerts when the spool is replayed (by the
-- daemon itself, job spool_replay, once ClickHouse answers; or `zhost spool replay`).
-- Identity clickhouse_down:clickhouse.
return {
  severity = "error",
  needs_clickhouse = false,
  check = function(ctx)
    if ctx.clickhouse_ok then return {} end
    return { {
      subject = "clickhouse",
      title = "ClickHouse недоступен",
      message = tostring(ctx.clickhouse_error),
      hint = table.concat({
        "curl http://localhost:8080/healthz",
        "sudo systemctl status clickhouse-server",
        "sudo systemctl restart clickhouse-server",
        "zhost spool status    # строки, ожидающие записи",
      }, "\n"),
      details = { error = tostring(ctx.clickhouse_error) },
    } }
  end,
}
