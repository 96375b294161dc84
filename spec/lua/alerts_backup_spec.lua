-- Spec of the backup rules (scripts/alerts/backup_failed.lua, backup_stale.lua): each check()
-- against a stub ctx that answers the v_backup_runs and meta_job_runs queries with canned rows,
-- plus the shared-variable override (ALERT_BACKUP_REQUIRED) in alerting.configure. The e2e test
-- (spec/e2e/test_backup_ops.py) runs the same rules against real backups and ClickHouse.
local A = assert(load(assert(io.read_file("scripts/lib/alerting.lua")), "@scripts/lib/alerting.lua"))()
local NOW = 1762160400 -- 2025-11-03 12:00:00 Moscow
local H = 3600

local function rule(name)
  local path = "scripts/alerts/" .. name .. ".lua"
  return assert(A.load_rule(assert(io.read_file(path)), path))
end

-- runs: rows for the v_backup_runs query; jobs: rows for the meta_job_runs query.
local function ctx(runs, jobs)
  local c = { now = NOW, clickhouse_ok = true, quote = ch.quote, job_hint = A.job_hint, queries = {} }
  c.query = function(sql)
    c.queries[#c.queries + 1] = sql
    if sql:find("v_backup_runs", 1, true) then return runs end
    if sql:find("meta_job_runs", 1, true) then return jobs end
    error("unexpected query: " .. sql)
  end
  return c
end

local function run(name, c, env)
  local r = rule(name)
  local list = r.check(c, A.configure(r.name, r.config, function(k) return env and env[k] end))
  return assert(A.normalize_findings(r, list))
end

local function ids(findings)
  local s = {}
  for _, f in ipairs(findings) do s[#s + 1] = f.id end
  return table.concat(s, ",")
end

-- ---- backup_failed ----

-- Never ran: nothing to say.
assert(ids(run("backup_failed", ctx({}, {}))) == "")

-- The newest full failed (backup_runs has the name and the error); the incremental is fine.
local fs_ = run("backup_failed", ctx({
  { m = "full", last_status = "fail", last_error = "Code: 241. DB::Exception: Memory limit exceeded",
    last_name = "chbk_20251103_023000_full", last_t = NOW - 9 * H },
  { m = "incr", last_status = "ok", last_error = "", last_name = "chbk_20251103_083000_incr", last_t = NOW - 3 * H },
}, {
  { m = "full", last_status = "error", last_message = "Code: 241. DB::Exception: Memory limit exceeded",
    last_run_id = "r-full", last_t = NOW - 9 * H },
  { m = "incr", last_status = "success", last_message = "chbk_20251103_083000_incr", last_run_id = "r-incr",
    last_t = NOW - 3 * H },
}))
assert(ids(fs_) == "backup_failed:full", ids(fs_))
local f = fs_[1]
assert(f.severity == "error" and f.job == "backup_full", f.job)
assert(f.title == "резервная копия (полный) не создана", f.title)
assert(f.message:find("chbk_20251103_023000_full", 1, true), f.message)
assert(f.message:find("Memory limit exceeded", 1, true), f.message)
assert(f.hint:find("zhost logs backup_full", 1, true) and f.hint:find("zhost backup verify", 1, true), f.hint)
assert(not f.hint:find("%s", 1, true), f.hint)
assert(f.details.backup_name == "chbk_20251103_023000_full" and f.details.mode == "full")

-- A newer success of the same mode clears it: the rule looks only at the newest attempt per mode.
fs_ = run("backup_failed", ctx({
  { m = "incr", last_status = "ok", last_error = "", last_name = "chbk_20251103_083000_incr", last_t = NOW - 3 * H },
}, {
  { m = "incr", last_status = "success", last_message = "chbk_20251103_083000_incr", last_run_id = "a", last_t = NOW - 3 * H },
}))
assert(ids(fs_) == "", ids(fs_))

-- A failure newer than the last backup_runs row, known only from meta_job_runs (the lock was
-- held, so no backup was named): it wins, with the run's message as the error.
fs_ = run("backup_failed", ctx({
  { m = "incr", last_status = "ok", last_error = "", last_name = "chbk_20251103_043000_incr", last_t = NOW - 7 * H },
}, {
  { m = "incr", last_status = "error", last_message = "another backup command is running (pid 4242, chbk_x)",
    last_run_id = "r-lock", last_t = NOW - 3 * H },
}))
assert(ids(fs_) == "backup_failed:incr", ids(fs_))
assert(fs_[1].message:find("another backup command is running", 1, true), fs_[1].message)
assert(fs_[1].details.run_id == "r-lock" and fs_[1].details.backup_name == nil)
assert(fs_[1].hint:find("zhost logs backup_incr", 1, true))

-- An older failure in meta_job_runs does not beat a newer success in backup_runs; rows of
-- other kinds (verify, prune: no mode) are ignored; an empty error still says something.
fs_ = run("backup_failed", ctx({
  { m = "full", last_status = "ok", last_error = "", last_name = "chbk_20251103_023000_full", last_t = NOW - 9 * H },
}, {
  { m = "full", last_status = "error", last_message = "old failure", last_run_id = "old", last_t = NOW - 33 * H },
  { m = "", last_status = "error", last_message = "not a backup", last_run_id = "x", last_t = NOW },
  { m = "incr", last_status = "error", last_message = "", last_run_id = "y", last_t = NOW - H },
}))
assert(ids(fs_) == "backup_failed:incr", ids(fs_))
assert(fs_[1].message:find("(без сообщения)", 1, true), fs_[1].message)

-- The queries read the right tables and kinds.
local c = ctx({}, {})
run("backup_failed", c)
assert(#c.queries == 2)
assert(c.queries[1]:find("status IN ('ok', 'fail')", 1, true), c.queries[1])
assert(c.queries[2]:find("job = 'backup'", 1, true), c.queries[2])

-- ---- backup_stale ----

-- Backups never ran: quiet (not configured) ...
assert(ids(run("backup_stale", ctx({ { t_full = 0, t_any = 0, attempts = 0 } },
  { { t_full = 0, t_any = 0, attempts = 0 } }))) == "")
-- ... unless required, by the shared variable or the rule's own.
local never = ctx({ { t_full = 0, t_any = 0, attempts = 0 } }, { { t_full = 0, t_any = 0, attempts = 0 } })
fs_ = run("backup_stale", never, { ALERT_BACKUP_REQUIRED = "1" })
assert(ids(fs_) == "backup_stale:full,backup_stale:any", ids(fs_))
assert(fs_[1].message:find("ни разу", 1, true), fs_[1].message)
assert(fs_[1].hint:find("BACKUP_DIR", 1, true), fs_[1].hint)
assert(ids(run("backup_stale", never, { ALERT_BACKUP_STALE_REQUIRED = "true" })) == "backup_stale:full,backup_stale:any")
-- The rule's own variable wins over the shared one.
assert(ids(run("backup_stale", never, { ALERT_BACKUP_REQUIRED = "1", ALERT_BACKUP_STALE_REQUIRED = "0" })) == "")

-- Healthy: full 9.5 h ago, incremental 1.5 h ago.
local healthy = ctx({ { t_full = NOW - 9.5 * H, t_any = NOW - 1.5 * H, attempts = 12 } },
  { { t_full = NOW - 9.5 * H, t_any = NOW - 1.5 * H, attempts = 12 } })
assert(ids(run("backup_stale", healthy)) == "")

-- The full is 30 h old, incrementals go on: only the full is stale.
fs_ = run("backup_stale", ctx({ { t_full = NOW - 30 * H, t_any = NOW - H, attempts = 9 } },
  { { t_full = 0, t_any = 0, attempts = 0 } }))
assert(ids(fs_) == "backup_stale:full", ids(fs_))
assert(fs_[1].title == "нет успешного полного бэкапа за 26 ч", fs_[1].title)
assert(fs_[1].message:find(time.format(NOW - 30 * H, "%Y-%m-%d %H:%M:%S MSK"), 1, true), fs_[1].message)
assert(fs_[1].severity == "error" and fs_[1].job == "backup_full")
assert(fs_[1].hint:find("zhost logs backup_full", 1, true) and fs_[1].hint:find("zhost backup list", 1, true), fs_[1].hint)

-- Everything stopped 8 h ago: the any-kind limit (6 h) fires, the full (8 h) is still fine;
-- the newest success may be known only from meta_job_runs.
fs_ = run("backup_stale", ctx({ { t_full = NOW - 20 * H, t_any = NOW - 20 * H, attempts = 3 } },
  { { t_full = NOW - 8 * H, t_any = NOW - 8 * H, attempts = 3 } }))
assert(ids(fs_) == "backup_stale:any", ids(fs_))
assert(fs_[1].title == "нет успешного бэкапа за 6 ч" and fs_[1].job == "backup_incr", fs_[1].title)

-- Only failures ever: both fire, "никогда".
fs_ = run("backup_stale", ctx({ { t_full = 0, t_any = 0, attempts = 2 } }, { { t_full = 0, t_any = 0, attempts = 2 } }))
assert(ids(fs_) == "backup_stale:full,backup_stale:any", ids(fs_))
assert(fs_[1].message:find("никогда", 1, true), fs_[1].message)

-- Thresholds are configurable like every rule's.
fs_ = run("backup_stale", healthy, { ALERT_BACKUP_STALE_FULL_HOURS = "8", ALERT_BACKUP_STALE_ANY_HOURS = "1" })
assert(ids(fs_) == "backup_stale:full,backup_stale:any", ids(fs_))
assert(fs_[1].title == "нет успешного полного бэкапа за 8 ч", fs_[1].title)

-- ---- alerting: the rule-level `env` names ----
local bad = "return { config = { a = 1 }, env = { a = 5 }, check = function() return {} end }"
local r, err = A.load_rule(bad, "x/bad_env.lua")
assert(r == nil and err:find("env.a must name a variable", 1, true), err)
r, err = A.load_rule("return { config = { m = { x = 1 } }, env = { m = 'V' }, check = function() return {} end }",
  "x/map_env.lua")
assert(r == nil and err:find("env.m", 1, true), err)
r = assert(A.load_rule("return { config = { n = 2 }, env = { n = 'SHARED_N' }, check = function() return {} end }",
  "x/ok_env.lua"))
assert(A.configure(r.name, r.config, function(k) return ({ SHARED_N = "7" })[k] end).n == 7)
assert(A.configure(r.name, r.config, function(k) return ({ SHARED_N = "7", ALERT_OK_ENV_N = "3" })[k] end).n == 3)
assert(A.configure(r.name, r.config, function() return nil end).n == 2)

print("alerts_backup_spec: ok")
