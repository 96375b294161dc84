-- Spec of the shipped rules in scripts/alerts/: each rule's check() against a stub ctx whose
-- query() returns canned rows, so the SQL's consumers and the thresholds are checked without
-- ClickHouse (the e2e test runs the same rules against a real server).
local A = require("alerting")
local NOW = 1762160400

local function rule(name)
  local path = "scripts/alerts/" .. name .. ".lua"
  return assert(A.load_rule(assert(io.read_file(path)), path))
end

local function ctx(rows, extra)
  local c = {
    now = NOW, clickhouse_ok = true, spool = { dir = "var/spool", files = 0, rows = 0, bytes = 0 },
    quote = ch.quote, job_hint = A.job_hint, queries = {},
  }
  c.query = function(sql)
    c.queries[#c.queries + 1] = sql
    return rows
  end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

local function run(name, c, env)
  local r = rule(name)
  local list = r.check(c, A.configure(r.name, r.config, function(k) return env and env[k] end))
  if list == false then return false end
  return assert(A.normalize_findings(r, list))
end

local function subjects(findings)
  local s = {}
  for _, f in ipairs(findings) do s[#s + 1] = f.id end
  return table.concat(s, ",")
end

-- failed_run: only the latest run counts; excluded jobs are skipped; the window reaches the SQL
local c = ctx({
  { job = "qtickets", last_status = "error", last_message = "HTTP 503", last_run_id = "r1", last_started = NOW - 60 },
  { job = "vk_ads", last_status = "success", last_message = "", last_run_id = "r2", last_started = NOW - 60 },
  { job = "alerts", last_status = "error", last_message = "smtp", last_run_id = "r3", last_started = NOW - 60 },
  { job = "direct", last_status = "error", last_message = "", last_run_id = "r4", last_started = NOW - 60 },
})
local fs_ = run("failed_run", c)
assert(subjects(fs_) == "failed_run:qtickets,failed_run:direct", subjects(fs_))
assert(fs_[1].message == "HTTP 503" and fs_[1].severity == "error" and fs_[1].job == "qtickets")
assert(fs_[1].hint:find("zhost run scripts/qtickets.lua --days 1", 1, true))
assert(fs_[2].message == "(без сообщения)")
assert(c.queries[1]:find(("toDateTime(%d)"):format(NOW - 24 * 3600), 1, true), c.queries[1])
c = ctx({})
run("failed_run", c, { ALERT_FAILED_RUN_WINDOW_HOURS = "6" })
assert(c.queries[1]:find(("toDateTime(%d)"):format(NOW - 6 * 3600), 1, true))

-- stale_data: per-source thresholds, "no data at all", source → job (every loader ran lately)
local function stale_ctx(ran, fresh, gmail)
  local sc = ctx({})
  sc.query = function(sql)
    sc.queries[#sc.queries + 1] = sql
    if sql:find("meta_job_runs", 1, true) then
      local out = {}
      for _, j in ipairs(ran) do out[#out + 1] = { job = j } end
      return out
    elseif sql:find("v_data_freshness_gmail", 1, true) then
      return gmail
    end
    return fresh
  end
  return sc
end
c = stale_ctx({ "qtickets", "vk_ads", "direct" }, {
  { source = "direct", latest = "2025-11-01", days_behind = 2, total_rows = 10 },
  { source = "qtickets_sales", latest = "2025-10-30", days_behind = 4, total_rows = 10 },
  { source = "vk_ads", latest = "", days_behind = 9999, total_rows = 0 },
  { source = "new_feed", latest = "2025-10-31", days_behind = 3, total_rows = 1 },
}, {})
fs_ = run("stale_data", c)
assert(subjects(fs_) == "stale_data:qtickets_sales,stale_data:vk_ads,stale_data:new_feed", subjects(fs_))
assert(fs_[1].job == "qtickets" and fs_[1].severity == "warning")
assert(fs_[1].message:find("отставание 4 дн. (допустимо 2)", 1, true), fs_[1].message)
assert(fs_[2].title == "vk_ads: данных нет")
fs_ = run("stale_data", c, { ALERT_STALE_DATA_MAX_DAYS_QTICKETS_SALES = "5", ALERT_STALE_DATA_MAX_DAYS_DEFAULT = "3" })
assert(subjects(fs_) == "stale_data:vk_ads", subjects(fs_))

-- stale_data: a source whose loader has not run within active_hours is switched off (quiet); the
-- Gmail channel is read only while gmail_ingest runs
local fresh = {
  { source = "direct", latest = "2025-10-01", days_behind = 33, total_rows = 10 },
  { source = "qtickets_sales", latest = "2025-10-30", days_behind = 4, total_rows = 10 },
  { source = "vk_ads", latest = "", days_behind = 9999, total_rows = 0 },
  { source = "new_feed", latest = "2025-10-31", days_behind = 3, total_rows = 1 },
}
local gmail = { { source = "qtickets_gmail", latest = "2025-10-29", days_behind = 5, total_rows = 3 } }
c = stale_ctx({ "qtickets_refunds", "vk_ads" }, fresh, gmail)
fs_ = run("stale_data", c)
assert(subjects(fs_) == "stale_data:qtickets_sales,stale_data:vk_ads,stale_data:new_feed", subjects(fs_))
assert(c.queries[1]:find(("toDateTime(%d)"):format(NOW - 48 * 3600), 1, true), c.queries[1])
for _, q in ipairs(c.queries) do assert(not q:find("v_data_freshness_gmail", 1, true), "gmail view read while off") end
c = stale_ctx({ "qtickets", "direct", "gmail_ingest" }, fresh, gmail)
fs_ = run("stale_data", c, { ALERT_STALE_DATA_ACTIVE_HOURS = "6" })
assert(subjects(fs_) == "stale_data:direct,stale_data:qtickets_sales,stale_data:new_feed,stale_data:qtickets_gmail",
  subjects(fs_))
assert(fs_[4].job == "gmail_ingest" and fs_[4].hint:find("v_data_freshness_gmail", 1, true), fs_[4].hint)
assert(c.queries[1]:find(("toDateTime(%d)"):format(NOW - 6 * 3600), 1, true), c.queries[1])

-- clickhouse_down: fires only when ClickHouse does not answer, and needs no ClickHouse itself
assert(rule("clickhouse_down").needs_clickhouse == false)
assert(#run("clickhouse_down", ctx({})) == 0)
fs_ = run("clickhouse_down", ctx({}, { clickhouse_ok = false, clickhouse_error = "connection refused" }))
assert(subjects(fs_) == "clickhouse_down:clickhouse" and fs_[1].message == "connection refused")

-- spool_not_empty: abstains while ClickHouse is down
assert(#run("spool_not_empty", ctx({})) == 0)
fs_ = run("spool_not_empty", ctx({}, { spool = { dir = "var/spool", files = 2, rows = 40, bytes = 900 } }))
assert(subjects(fs_) == "spool_not_empty:spool" and fs_[1].hint:find("zhost spool replay", 1, true))
assert(run("spool_not_empty", ctx({}, { clickhouse_ok = false, spool = { dir = "d", files = 2, rows = 1, bytes = 1 } })) == false)
-- ... and rows replay set aside in the quarantine are an alert of their own (no replay loads them)
fs_ = run("spool_not_empty", ctx({}, { spool = { dir = "var/spool", files = 0, rows = 0, bytes = 0, quarantined_rows = 3 } }))
assert(subjects(fs_) == "spool_not_empty:quarantine" and fs_[1].hint:find("var/spool/quarantine", 1, true), subjects(fs_))
fs_ = run("spool_not_empty", ctx({}, { spool = { dir = "d", files = 1, rows = 5, bytes = 9, quarantined_rows = 1 } }))
assert(subjects(fs_) == "spool_not_empty:quarantine,spool_not_empty:spool" or
       subjects(fs_) == "spool_not_empty:spool,spool_not_empty:quarantine", subjects(fs_))
-- ... with the daemon's automatic replay on, files it has not taken for 30 min are the alert (ClickHouse
-- refuses them), younger ones are on their way; the hint is the replay job's log, not a manual replay
local young = { dir = "var/spool", files = 2, rows = 40, bytes = 900, oldest = NOW - 5 * 60 }
local old_ = { dir = "var/spool", files = 2, rows = 40, bytes = 900, oldest = NOW - 45 * 60 }
assert(#run("spool_not_empty", ctx({}, { auto_replay = true, spool = young })) == 0)
fs_ = run("spool_not_empty", ctx({}, { auto_replay = true, spool = old_ }))
assert(subjects(fs_) == "spool_not_empty:spool", subjects(fs_))
assert(fs_[1].hint:find("zhost logs spool_replay", 1, true) and not fs_[1].hint:find("zhost spool replay", 1, true), fs_[1].hint)
assert(fs_[1].message:find("spool_replay", 1, true) and fs_[1].message:find("45 мин", 1, true), fs_[1].message)
assert(#run("spool_not_empty", ctx({}, { auto_replay = true, spool = young }), { ALERT_SPOOL_NOT_EMPTY_MIN_AGE_MINUTES = "1" }) == 1)
-- switched off (or not known): any file, and the manual replay is the hint
for _, auto in ipairs({ false, "unknown" }) do
  fs_ = run("spool_not_empty", ctx({}, { auto_replay = auto == false and false or nil, spool = young }))
  assert(subjects(fs_) == "spool_not_empty:spool" and fs_[1].hint:find("zhost spool replay", 1, true), subjects(fs_))
end
-- a failed spool_replay run's hint offers the replay by hand, not a script that does not exist
fs_ = run("failed_run", ctx({ { job = "spool_replay", last_status = "error", last_message = "replay: 0 rows delivered, 1 files left",
                                last_run_id = "r9", last_started = NOW - 60 } }))
assert(fs_[1].hint:find("zhost spool replay", 1, true) and not fs_[1].hint:find("scripts/spool_replay.lua", 1, true), fs_[1].hint)

-- repeated_failures: consecutive errors from the newest run back; a success breaks the streak
c = ctx({
  { job = "direct", status = "error", message = "e3", t = NOW - 10 },
  { job = "direct", status = "error", message = "e2", t = NOW - 20 },
  { job = "direct", status = "error", message = "e1", t = NOW - 30 },
  { job = "vk_ads", status = "error", message = "x", t = NOW - 10 },
  { job = "vk_ads", status = "error", message = "x", t = NOW - 20 },
  { job = "vk_ads", status = "success", message = "", t = NOW - 30 },
  { job = "vk_ads", status = "error", message = "x", t = NOW - 40 },
})
fs_ = run("repeated_failures", c)
assert(subjects(fs_) == "repeated_failures:direct", subjects(fs_))
assert(fs_[1].title == "direct: 3 неудачных запуска подряд" and fs_[1].message == "Последняя ошибка: e3", fs_[1].title)
fs_ = run("repeated_failures", c, { ALERT_REPEATED_FAILURES_THRESHOLD = "2" })
assert(subjects(fs_) == "repeated_failures:direct,repeated_failures:vk_ads", subjects(fs_))
-- the count agrees with its noun (the title is the mail's subject): 5 and 11 take "запусков"
for n, want in pairs({ [5] = "5 неудачных запусков", [11] = "11 неудачных запусков", [21] = "21 неудачный запуск",
                       [22] = "22 неудачных запуска" }) do
  local rows = {}
  for i = 1, n do rows[i] = { job = "direct", status = "error", message = "e", t = NOW - i } end
  fs_ = run("repeated_failures", ctx(rows))
  assert(fs_[1].title == "direct: " .. want .. " подряд", fs_[1].title)
end

-- no_recent_success: per-job periods; never succeeded counts; the job list reaches the SQL
c = ctx({
  { job = "direct", last_ok = NOW - 27 * 3600, last_run = NOW - 3600, runs = 5 },
  { job = "qtickets", last_ok = NOW - 1800, last_run = NOW - 1800, runs = 50 },
  { job = "vk_ads", last_ok = 0, last_run = NOW - 3600, runs = 2 },
})
fs_ = run("no_recent_success", c)
assert(subjects(fs_) == "no_recent_success:direct,no_recent_success:vk_ads", subjects(fs_))
assert(fs_[2].message:find("никогда", 1, true))
-- times are Moscow time and say so, whatever the process zone (UTC in the Docker image)
assert(fs_[1].message == "Последний успешный запуск: 2025-11-02 09:00:00 MSK; последний запуск: 2025-11-03 11:00:00 MSK.",
  fs_[1].message)
assert(c.queries[1]:find("job IN ('direct', 'qtickets', 'vk_ads')", 1, true), c.queries[1])
fs_ = run("no_recent_success", c, { ALERT_NO_RECENT_SUCCESS_PERIOD_HOURS_DIRECT = "30" })
assert(subjects(fs_) == "no_recent_success:vk_ads", subjects(fs_))
print("alerts_rules_spec: ok")
