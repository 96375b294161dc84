-- zhost: job=alerts secrets=alerts options=rules,only,repeat-hours
-- The alerts job (every 2 hours): evaluates every rule in scripts/alerts/*.lua, dedups the
-- firing conditions against zakaz.alert_state, e-mails one digest per cycle, and stores every
-- notification in zakaz.alerts. See docs/alerts.md.
--
-- Options: --rules DIR (rule files), --only r1,r2 (evaluate only these rules),
--          --repeat-hours H (default ALERT_REPEAT_HOURS or 24).
local alerting = require("alerting")

local now = os.time()
local args = job.args

local loader = require("loader")
local env = loader.settings(job)

-- Settings that are not numbers in their range do not stop the cycle — alerting would be off
-- until someone read the run log — nor are they dropped silently (they were: ALERT_REPEAT_HOURS=
-- "24h" was 24, "12h" too): the default is used and the setting is an alert of its own,
-- setting_error:<NAME>, resolved when it reads. Command-line options are typed by an operator
-- watching: those fail the run.
local setting_problems = {}
local settings_read = { SMTP_TLS = true, SMTP_USE_TLS = true }
local function setting(name, default, lo, hi, whole)
  settings_read[name] = true
  local v = env(name)
  if v == nil then return default end
  local n = tonumber(v)
  if n and whole then n = math.tointeger(n) end
  if not n or n ~= n or n < lo or n > hi then
    setting_problems[#setting_problems + 1] = { name = name, value = v, default = default,
      range = string.format("%s от %s до %s", whole and "целое число" or "число", lo, hi) }
    return default
  end
  return n
end
local repeat_hours = args["repeat-hours"] and loader.number("--repeat-hours", args["repeat-hours"], 0, 8760)
  or setting("ALERT_REPEAT_HOURS", 24, 0, 8760)
local retry_days = setting("ALERT_RETRY_DAYS", 7, 0, 365)
local rules_dir = args.rules or env("ALERT_RULES_DIR", fs.script_dir() .. "/alerts")
local only
if args.only then
  only = {}
  for name in tostring(args.only):gmatch("[^,%s]+") do only[name] = true end
end

-- ---- SMTP settings (secrets/.env.alerts) ----
local function truthy(v) return v == "1" or v == "true" or v == "yes" or v == "on" end
local smtp_host = env("SMTP_HOST")
local smtp_user = env("SMTP_USER")
-- An unknown word is the safe default (STARTTLS required), never plain SMTP with the password:
-- SMTP_USE_TLS=Y was "none".
local smtp_tls = env("SMTP_TLS") -- "starttls" | "smtps" | "none"; overrides SMTP_USE_TLS
if smtp_tls then
  smtp_tls = smtp_tls:lower()
  if smtp_tls ~= "starttls" and smtp_tls ~= "smtps" and smtp_tls ~= "none" then
    setting_problems[#setting_problems + 1] = { name = "SMTP_TLS", value = env("SMTP_TLS"), default = "starttls",
      range = "starttls, smtps или none" }
    smtp_tls = "starttls"
  end
else
  local use_tls = text.trim(env("SMTP_USE_TLS", "true")):lower()
  if truthy(use_tls) then
    smtp_tls = "starttls"
  elseif use_tls == "0" or use_tls == "false" or use_tls == "no" or use_tls == "off" then
    smtp_tls = "none"
  else
    setting_problems[#setting_problems + 1] = { name = "SMTP_USE_TLS", value = env("SMTP_USE_TLS"), default = "true",
      range = "true или false" }
    smtp_tls = "starttls"
  end
end
local smtp = nil
local recipients = env("ALERT_EMAIL_TO")
if smtp_host and recipients then
  smtp = {
    host = smtp_host, port = setting("SMTP_PORT", smtp_tls == "smtps" and 465 or 587, 1, 65535, true), user = smtp_user,
    password = env("SMTP_PASSWORD"), tls = smtp_tls, from = env("ALERT_EMAIL_FROM", smtp_user),
    to = recipients, timeout = setting("SMTP_TIMEOUT", 60, 1, 3600),
    insecure = truthy(env("SMTP_INSECURE", "false")), cafile = env("SMTP_CAFILE"),
  }
  if not smtp.from then
    log.warn("ALERT_EMAIL_FROM and SMTP_USER are both empty; cannot send alerts", {})
    smtp = nil
  end
end

-- ---- ClickHouse ----
-- Nothing here waits on ClickHouse for long: a server that takes connections and never answers
-- (hung, overloaded) would hold a statement for 5 minutes per attempt, past the job's timeout.
-- A bounded probe decides whether ClickHouse is up; rule queries and the state reads get their own
-- limit; the rows are stored with a limit too (a short one when the probe failed), and spooled when
-- ClickHouse does not take them.
local ch_probe_s = setting("ALERT_CLICKHOUSE_TIMEOUT", 10, 1, 3600)
local query_s = setting("ALERT_QUERY_TIMEOUT", 30, 1, 3600)
local ch_ok, ch_err = ch.query("SELECT 1 AS ok", { timeout = ch_probe_s, attempts = 2 })
ch_ok = ch_ok ~= nil
-- Set when ClickHouse stops answering after the probe (a query timed out or lost its connection):
-- later queries fail at once with it, and the cycle is evaluated again as one with ClickHouse down.
local ch_lost = nil
local function ch_query(sql)
  if ch_lost then return nil, ch_lost end
  local rows, err = ch.query(sql, { timeout = query_s, attempts = 2 })
  if not rows and err:find("^ClickHouse unreachable") then ch_lost = err end
  return rows, err
end
local spool = ch.spool_status()

-- ---- rules ----
local rules, load_errors = {}, {}
local names, lerr = fs.list(rules_dir, ".lua")
if not names then error("cannot list the alert rules: " .. lerr) end
for _, file in ipairs(names) do
  local path = rules_dir .. "/" .. file
  local stem = file:gsub("%.lua$", "")
  if not only or only[stem] then
    local code, rerr = io.read_file(path)
    local rule, err
    if code then rule, err = alerting.load_rule(code, path) else err = rerr end
    if rule then
      rules[#rules + 1] = rule
    else
      load_errors[stem] = err
      log.error("alert rule does not load", { file = path, error = err })
    end
  end
end

-- Jobs the daemon has switched off (`zhost disable`, or enabled = false in its configuration): its
-- state file (<state dir>/state, last column "in effect") says so, and the job rules stay quiet
-- about them. Under the daemon, ZHOST_SERVE_STATE names that file (job.state_dir may be another
-- folder: the systemd unit's ZHOST_STATE_DIR); a manual run looks in ZHOST_STATE_DIR. No file: none is off.
-- The same file lists every job the daemon has, so the hints in the mail offer `zhost logs`/`trigger`
-- only for those (nil without the file: not known).
local disabled, daemon_jobs = {}, nil
do
  local path = os.getenv("ZHOST_SERVE_STATE")
  if not path or path == "" then path = job.state_dir .. "/state" end
  local text = io.read_file(path)
  for line in (text or ""):gmatch("[^\n]+") do
    local name, effect = line:match("^([%w_%-]+)%s+%S+%s+%S+%s+([01])%s*$")
    if name then
      daemon_jobs = daemon_jobs or {}
      daemon_jobs[name] = true
    end
    if name and effect == "0" then disabled[name] = true end
  end
end

local ctx = {
  now = now,
  disabled = disabled,
  -- the daemon delivers the spool by itself: its job spool_replay exists and is switched on (nil
  -- when not known: no state file)
  auto_replay = daemon_jobs and (daemon_jobs.spool_replay and not disabled.spool_replay or false) or nil,
  clickhouse_ok = ch_ok,
  clickhouse_error = ch_err,
  spool = spool,
  quote = ch.quote,
  job_hint = function(j) return alerting.job_hint(j, daemon_jobs) end,
  -- Rows of a query (at most ALERT_QUERY_TIMEOUT s per attempt, two attempts); raises on failure
  -- so the rule counts as not evaluated.
  query = function(sql)
    local rows, err = ch_query(sql)
    if not rows then error(err, 0) end
    return rows
  end,
}

local results, rule_errors, evaluated
local settings_logged = {}
local function evaluate()
  results, rule_errors, evaluated = {}, {}, {}
  job:set("rules_ok", nil) -- counted again when the cycle is evaluated again
  for stem, err in pairs(load_errors) do
    evaluated[stem] = true
    rule_errors[#rule_errors + 1] = { subject = stem, title = "правило алертов " .. stem .. " не работает", message = err,
      hint = "zhost check " .. rules_dir .. "/" .. stem .. ".lua" }
  end
  local problems, read = {}, {}
  for _, p in ipairs(setting_problems) do problems[#problems + 1] = p end
  for name in pairs(settings_read) do read[name] = true end
  local function read_env(k)
    read[k] = true
    return env(k)
  end
  for _, rule in ipairs(rules) do
    -- read for every rule, evaluated or not, so that its setting alerts are not resolved by a skip
    local cfg = alerting.configure(rule.name, rule.config, read_env, problems)
    if rule.needs_clickhouse and (not ch_ok or ch_lost) then
      log.info("alert rule skipped: ClickHouse is unreachable", { rule = rule.name })
    else
      local ok, list = pcall(rule.check, ctx, cfg)
      local findings, ferr
      if ok then findings, ferr = alerting.normalize_findings(rule, list) else ferr = tostring(list) end
      local stem = rule.file:match("([^/]+)%.lua$")
      evaluated[stem] = true
      if ok and list == false then
        -- The rule cannot tell this cycle: its alerts stay as they are.
        log.info("alert rule abstained", { rule = rule.name })
      elseif findings then
        results[rule.name] = { ok = true, findings = findings }
        job:metric("rules_ok")
      else
        results[rule.name] = { ok = false, error = ferr }
        log.error("alert rule failed", { rule = rule.name, error = ferr })
        -- A failure caused by ClickHouse itself is the clickhouse_down rule's business.
        if ch_ok and not ch_lost then
          rule_errors[#rule_errors + 1] = { subject = stem, title = "правило алертов " .. stem .. " не работает",
            message = ferr, hint = "zhost check " .. rule.file }
        end
      end
    end
  end
  -- Broken rules alert too, so a typo cannot silently switch alerting off; only rules that were
  -- looked at this cycle can resolve their rule_error alert.
  local pseudo = { name = "rule_error", severity = "warning" }
  results.rule_error = { ok = true, findings = alerting.normalize_findings(pseudo, rule_errors), scope = evaluated }
  -- Settings that did not read: the default is in effect. Only the settings read this cycle can
  -- resolve theirs (`read`): the ALERT_<RULE>_* of a rule file that did not load or was left out
  -- by --only stay as they are.
  local found = {}
  for _, p in ipairs(problems) do
    local shown = type(p.default) == "string" and p.default or tostring(p.default)
    local msg = string.format("%s='%s' не читается%s; действует значение по умолчанию: %s", p.name, p.value,
      p.range and (" (нужно: " .. p.range .. ")") or "", shown)
    if not settings_logged[p.name] then -- evaluate() runs twice when ClickHouse stops answering
      settings_logged[p.name] = true
      log.error("alert setting does not read; its default is used", { setting = p.name, value = p.value, default = shown })
    end
    found[#found + 1] = { subject = p.name, title = "настройка алертов " .. p.name .. " не читается", message = msg,
      hint = "исправьте " .. p.name .. " в " .. job.secrets_dir .. "/.env." .. job.secrets .. " (или в окружении сервиса)" }
  end
  results.setting_error = { ok = true, findings = alerting.normalize_findings({ name = "setting_error", severity = "warning" },
    found), scope = read }
end
evaluate()

-- ---- state: stored rows, plus rows still waiting in the spool ----
local db = ch.database()
local function spooled(table_name)
  local out = {}
  local files = fs.list(spool.dir, ".jsonl") or {}
  local prefix = db .. "." .. table_name .. "~"
  for _, f in ipairs(files) do
    if f:sub(1, #prefix) == prefix then
      local text = io.read_file(spool.dir .. "/" .. f)
      for _, r in ipairs(alerting.parse_jsonl(text)) do out[#out + 1] = r end
    end
  end
  return out
end

local stored_state, stored_alerts = {}, {}
local retry_since = now - math.floor(retry_days * 86400)
local function read_stored()
  local rows, err = ch_query([[
    SELECT rule, subject, state, severity, toUnixTimestamp(first_seen) AS t_first_seen,
           toUnixTimestamp(last_seen) AS t_last_seen, toUnixTimestamp(ifNull(last_sent, toDateTime(0))) AS t_last_sent,
           sent_count, toUnixTimestamp(ifNull(resolved_at, toDateTime(0))) AS t_resolved_at, last_alert_id,
           fingerprint, details, last_ver
    FROM zakaz.v_alert_state]])
  if not rows then
    if ch_lost then return end
    error("cannot read zakaz.v_alert_state: " .. err)
  end
  -- Aliases differ from the column names: 18.16 rejects "f(x) AS x" as a cyclic alias.
  for _, r in ipairs(rows) do
    r.first_seen, r.last_seen, r.last_sent, r.resolved_at = r.t_first_seen, r.t_last_seen, r.t_last_sent, r.t_resolved_at
  end
  local state_rows = rows
  rows, err = ch_query(([[
    SELECT alert_id, toUnixTimestamp(min(created_at)) AS t_created, any(job) AS a_job, any(rule) AS a_rule,
           any(subject) AS a_subject, any(alert_type) AS a_type, any(title) AS a_title, any(message) AS a_message,
           any(details) AS a_details, max(delivered) AS max_delivered
    FROM zakaz.alerts
    WHERE created_at >= toDateTime(%d) AND channel = 'email'
    GROUP BY alert_id
    HAVING max_delivered = 0]]):format(retry_since))
  if not rows then
    if ch_lost then return end
    error("cannot read zakaz.alerts: " .. err)
  end
  for i, r in ipairs(rows) do
    rows[i] = { alert_id = r.alert_id, created_at = r.t_created, job = r.a_job, rule = r.a_rule, subject = r.a_subject,
      alert_type = r.a_type, title = r.a_title, message = r.a_message, details = r.a_details, delivered = r.max_delivered }
  end
  stored_state, stored_alerts = state_rows, rows
end
if ch_ok and not ch_lost then read_stored() end
-- ClickHouse stopped answering after the probe: what was found meanwhile cannot be matched against
-- the stored state (not read), so the cycle is evaluated again as one with ClickHouse down —
-- clickhouse_down fires, the rules that need ClickHouse count as not evaluated.
if ch_lost then
  log.warn("ClickHouse stopped answering during the cycle; evaluating it as one with ClickHouse down",
    { error = ch_lost })
  ch_ok, ch_err = false, ch_lost
  ctx.clickhouse_ok, ctx.clickhouse_error = false, ch_lost
  stored_state, stored_alerts = {}, {}
  evaluate()
end
local state = alerting.merge_states({ stored_state, spooled("alert_state") })
local pending = alerting.pending_from_rows({ stored_alerts, spooled("alerts") }, retry_since)

-- A rule whose file is gone closes its open alerts (with a notice saying so): the rule set is the
-- directory. Not when --only narrowed the set, and not while a file fails to load (its rule's name
-- is unknown, so its alerts cannot be told from a removed rule's).
if not only and next(load_errors) == nil then
  local present = { rule_error = true }
  for _, rule in ipairs(rules) do present[rule.name] = true end
  for _, st in pairs(state) do
    if st.state == "open" and not present[st.rule] and not results[st.rule] then
      results[st.rule] = { ok = true, findings = {}, removed = true }
      log.info("alerts of a removed rule are closed", { rule = st.rule })
      job:metric("removed_rule_alerts")
    end
  end
end

local plan = alerting.plan({
  now = now, repeat_s = repeat_hours * 3600, results = results, state = state, pending = pending,
})
local notes = plan.notes
job:set("alerts_firing", 0)
for _, r in pairs(results) do
  if r.ok then job:metric("alerts_firing", #r.findings) end
end
job:set("notifications", #notes)

-- ---- delivery ----
local delivered, send_err = false, nil
if #notes > 0 then
  local subject, text = alerting.render(notes, { now = now, repeat_hours = repeat_hours })
  if job.dry_run then
    io.write(mail.message({ from = smtp and smtp.from or "zhost@localhost", to = smtp and smtp.to or "nobody@localhost",
      subject = subject, text = text }), "\n")
  elseif not smtp then
    log.warn("no SMTP settings: alerts are stored but not e-mailed",
      { notifications = #notes, need = "SMTP_HOST and ALERT_EMAIL_TO in .env.alerts" })
    send_err = "no SMTP settings"
  else
    local msg = { subject = subject, text = text }
    for k, v in pairs(smtp) do msg[k] = v end
    local ok, res, err = pcall(mail.send, msg)
    if ok and res then
      delivered = true
      log.info("alert mail sent", { notifications = #notes, to = smtp.to })
    else
      send_err = ok and err or tostring(res)
      log.error("alert mail not delivered; retrying next cycle", { error = send_err, notifications = #notes })
    end
  end
end
if delivered then alerting.mark_delivered(plan, state, now) end

-- ---- storage ----
local alert_rows, state_rows = {}, {}
for _, n in ipairs(notes) do
  -- A retried notification is stored again under the same alert_id and created_at: the
  -- ReplacingMergeTree keeps one row, now with delivered = 1. An undelivered one is already there.
  if n.kind ~= "retry" or delivered then
    alert_rows[#alert_rows + 1] = {
      alert_id = n.alert_id, created_at = n.created_at, job = n.job or "", rule = n.rule, subject = n.subject,
      alert_type = n.type, title = n.title, message = n.message, details = n.details, channel = "email",
      delivered = delivered and 1 or 0, acknowledged = 0, acknowledged_by = "",
    }
  end
end
for id, s in pairs(plan.states) do
  -- Versions are unix ms, but two cycles can start in the same second: always go past the
  -- version that was read, so the newer row wins in v_alert_state.
  local ver = math.floor(now * 1000)
  if state[id] and state[id].ver >= ver then ver = state[id].ver + 1 end
  state_rows[#state_rows + 1] = {
    rule = s.rule, subject = s.subject, state = s.state, severity = s.severity, first_seen = s.first_seen,
    last_seen = s.last_seen, last_sent = s.last_sent, sent_count = s.sent_count, resolved_at = s.resolved_at,
    last_alert_id = s.last_alert_id, fingerprint = s.fingerprint, details = s.details, _ver = ver,
  }
end
-- Every statement of the two sinks is bounded: ALERT_QUERY_TIMEOUT s per attempt, two attempts;
-- when the probe found ClickHouse down, one attempt of at most 5 s (enough for a server that has
-- come back; a hung one is not waited for). Rows ClickHouse does not take go to the spool, which
-- the next cycle reads as state. Both tables are stored at the same time. A sink is opened even
-- with no rows: that keeps the cached table schema (beside the spool) fresh for an outage.
local store_limits = ch_ok and { timeout = query_s, attempts = 2 } or { timeout = math.min(ch_probe_s, 5), attempts = 1 }
local function store(name, rows)
  local s, err = ch.sink(name, store_limits)
  if not s then
    log.error("cannot store alerts", { table = name, error = err })
    if #rows > 0 then return nil, err end
    return true
  end
  for _, r in ipairs(rows) do s:add(r) end
  return s:close()
end
local stores = { task.spawn(store, "zakaz.alerts", alert_rows), task.spawn(store, "zakaz.alert_state", state_rows) }
local store_errs = {}
for _, h in ipairs(stores) do
  local ok, err = h:wait()
  if not ok then store_errs[#store_errs + 1] = err end
end
local store_err = #store_errs > 0 and table.concat(store_errs, "; ") or nil

local counts = { new = 0, ["repeat"] = 0, resolved = 0, retry = 0 }
for _, n in ipairs(notes) do counts[n.kind] = counts[n.kind] + 1 end
job:set("new", counts.new)
job:set("repeated", counts["repeat"])
job:set("resolved", counts.resolved)
job:set("retried", counts.retry)
job:set("delivered", delivered)
log.info("alerts cycle done", { new = counts.new, ["repeat"] = counts["repeat"], resolved = counts.resolved,
  retry = counts.retry, delivered = delivered, clickhouse = ch_ok })
if send_err and smtp then
  error("alert mail not delivered (the alerts stay unsent and are retried next cycle): " .. send_err, 0)
end
if store_err and not ch_ok then
  -- The usual ending while ClickHouse is down or hung: the mail went out and the rows wait in the
  -- spool (the host adds how many, and the replay command, to this message). Only what is not
  -- just "spooled" is spelt out: a table that could not even be opened (no cached schema).
  local worse = {}
  for _, e in ipairs(store_errs) do
    if not tostring(e):find(": %d+ rows spooled: ") or tostring(e):find(" LOST ") then worse[#worse + 1] = e end
  end
  local s = #notes == 1 and "" or "s"
  local mailed = #notes == 0 and "nothing to e-mail"
    or delivered and ("%d notification%s e-mailed"):format(#notes, s)
    or ("%d notification%s not e-mailed (%s)"):format(#notes, s, tostring(send_err))
  error(("ClickHouse did not answer (%s): %s, the alert rows not stored%s"):format(ch_err, mailed,
    #worse > 0 and (": " .. table.concat(worse, "; ")) or ""), 0)
end
if store_err then error("alerts not stored: " .. store_err, 0) end
job:message(("%d new, %d repeated, %d resolved, %d retried"):format(counts.new, counts["repeat"], counts.resolved,
  counts.retry))
