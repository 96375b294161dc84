-- Spec of scripts/lib/alerting.lua: identity, dedup with a repeat interval, resolution, retry of
-- undelivered notifications, state merging, configuration overrides and the digest text.
local A = require("alerting")

local function finding(rule, subject, severity, title)
  local r = { name = rule, severity = severity or "error" }
  return assert(A.normalize_findings(r, { { subject = subject, job = subject, title = title or (subject .. " failed"),
    message = "boom", hint = "zhost logs " .. subject } }))[1]
end

local function results(list, extra)
  local by = extra or {}
  for _, f in ipairs(list) do
    by[f.rule] = by[f.rule] or { ok = true, findings = {} }
    table.insert(by[f.rule].findings, f)
  end
  return by
end

local function kinds(notes)
  local out = {}
  for _, n in ipairs(notes) do out[#out + 1] = n.kind .. ":" .. n.id end
  table.sort(out)
  return table.concat(out, ",")
end

local NOW, DAY = 1762160400, 86400

-- identity
assert(A.identity("failed_run", "qtickets") == "failed_run:qtickets")
assert(#A.new_id() == 36 and A.new_id() ~= A.new_id())
assert(A.fingerprint("abc") == A.fingerprint("abc") and A.fingerprint("abc") ~= A.fingerprint("abd"))

-- a new condition: one note, an open state not yet sent
local f = finding("failed_run", "qtickets")
local p = A.plan({ now = NOW, repeat_s = DAY, results = results({ f }), state = {}, pending = {} })
assert(kinds(p.notes) == "new:failed_run:qtickets", kinds(p.notes))
local n = p.notes[1]
assert(n.type == "error" and n.created_at == NOW and n.job == "qtickets" and n.title == "qtickets failed")
local st = p.states["failed_run:qtickets"]
assert(st.state == "open" and st.first_seen == NOW and st.last_sent == nil and st.last_alert_id == n.alert_id)
A.mark_delivered(p, {}, NOW)
assert(st.last_sent == NOW and st.sent_count == 1)

-- still firing inside the repeat interval: nothing is sent, last_seen moves
local state = { ["failed_run:qtickets"] = st }
p = A.plan({ now = NOW + 7200, repeat_s = DAY, results = results({ f }), state = state, pending = {} })
assert(#p.notes == 0, kinds(p.notes))
assert(p.states["failed_run:qtickets"].last_seen == NOW + 7200)
assert(p.states["failed_run:qtickets"].first_seen == NOW)

-- after the repeat interval: one repeat
p = A.plan({ now = NOW + DAY, repeat_s = DAY, results = results({ f }), state = state, pending = {} })
assert(kinds(p.notes) == "repeat:failed_run:qtickets", kinds(p.notes))
assert(json.decode(p.notes[1].details).since == NOW)

-- a warning that becomes an error is sent at once
local w = finding("stale_data", "vk_ads", "warning")
local wp = A.plan({ now = NOW, repeat_s = DAY, results = results({ w }), state = {}, pending = {} })
A.mark_delivered(wp, {}, NOW)
local escalated = finding("stale_data", "vk_ads", "error")
p = A.plan({ now = NOW + 60, repeat_s = DAY, results = results({ escalated }), state = wp.states, pending = {} })
assert(kinds(p.notes) == "new:stale_data:vk_ads" or kinds(p.notes) == "repeat:stale_data:vk_ads", kinds(p.notes))
assert(p.states["stale_data:vk_ads"].severity == "error")

-- an undelivered notification is retried, not duplicated
local unsent = A.plan({ now = NOW, repeat_s = DAY, results = results({ f }), state = {}, pending = {} })
local pend = A.pending_from_rows({ { { alert_id = unsent.notes[1].alert_id, created_at = tostring(NOW), rule = "failed_run",
  subject = "qtickets", alert_type = "error", title = "t", message = "m", delivered = 0 } } }, NOW - DAY)
assert(#pend == 1 and pend[1].kind == "retry" and pend[1].created_at == NOW)
p = A.plan({ now = NOW + 7200, repeat_s = DAY, results = results({ f }), state = unsent.states, pending = pend })
assert(kinds(p.notes) == "retry:failed_run:qtickets", kinds(p.notes))
assert(p.notes[1].alert_id == unsent.notes[1].alert_id)
A.mark_delivered(p, unsent.states, NOW + 7200)
assert(p.states["failed_run:qtickets"].last_sent == NOW + 7200)
-- a copy stored with delivered = 1 means it went out; old rows fall out of the retry window
assert(#A.pending_from_rows({ { { alert_id = "a", created_at = NOW, delivered = 0 } },
  { { alert_id = "a", created_at = NOW, delivered = "1" } } }, 0) == 0)
assert(#A.pending_from_rows({ { { alert_id = "b", created_at = NOW - 8 * DAY, delivered = 0 } } }, NOW - 7 * DAY) == 0)

-- the condition clears: one resolved note; the state closes
p = A.plan({ now = NOW + 3 * 3600, repeat_s = DAY, results = { failed_run = { ok = true, findings = {} } },
  state = state, pending = {} })
assert(kinds(p.notes) == "resolved:failed_run:qtickets", kinds(p.notes))
assert(p.notes[1].type == "resolved" and p.notes[1].title == "Решено: qtickets failed")
assert(p.notes[1].job == "qtickets")
assert(p.states["failed_run:qtickets"].state == "resolved")
assert(p.states["failed_run:qtickets"].resolved_at == NOW + 3 * 3600)
local resolved_state = p.states

-- a rule that was not evaluated, or failed, resolves nothing
p = A.plan({ now = NOW, repeat_s = DAY, results = {}, state = state, pending = {} })
assert(#p.notes == 0)
p = A.plan({ now = NOW, repeat_s = DAY, results = { failed_run = { ok = false, error = "x" } }, state = state, pending = {} })
assert(#p.notes == 0)
-- scope: only subjects looked at can resolve
local re = { ["rule_error:a"] = { rule = "rule_error", subject = "a", state = "open", details = "{}", ver = 1 },
  ["rule_error:b"] = { rule = "rule_error", subject = "b", state = "open", details = "{}", ver = 1 } }
p = A.plan({ now = NOW, repeat_s = DAY, results = { rule_error = { ok = true, findings = {}, scope = { a = true } } },
  state = re, pending = {} })
assert(kinds(p.notes) == "resolved:rule_error:a", kinds(p.notes))

-- firing again after resolution opens a new episode
p = A.plan({ now = NOW + 5 * DAY, repeat_s = DAY, results = results({ f }), state = resolved_state, pending = {} })
assert(kinds(p.notes) == "new:failed_run:qtickets", kinds(p.notes))
assert(p.states["failed_run:qtickets"].first_seen == NOW + 5 * DAY)

-- merging stored and spooled state: the highest version wins; spooled datetimes are text
local merged = A.merge_states({
  { { rule = "r", subject = "s", state = "open", last_sent = 0, sent_count = 1, last_ver = 10 } },
  { { rule = "r", subject = "s", state = "resolved", last_sent = "1762160405", sent_count = "2", _ver = 11 } },
})
assert(merged["r:s"].state == "resolved" and merged["r:s"].last_sent == 1762160405 and merged["r:s"].sent_count == 2)
merged = A.merge_states({ { { rule = "r", subject = "s", state = "open", last_ver = 12, last_sent = 0 } } })
assert(merged["r:s"].last_sent == nil)
assert(#A.parse_jsonl('{"a":1}\n\n{"a":2}\n') == 2)

-- findings are checked
assert(not A.normalize_findings({ name = "x", severity = "error" }, { { title = "no subject" } }))
assert(not A.normalize_findings({ name = "x", severity = "error" }, { { subject = "s", severity = "fatal" } }))
assert(#A.normalize_findings({ name = "x", severity = "error" }, { { subject = "s" }, { subject = "s" } }) == 1)
assert(#A.normalize_findings({ name = "x" }, false) == 0)

-- configuration overrides keep the default's type
local env = { ALERT_STALE_DATA_MAX_DAYS_VK_ADS = "4", ALERT_STALE_DATA_ENABLED = "false", ALERT_STALE_DATA_LABEL = "x" }
local cfg = A.configure("stale_data", { max_days = { default = 2, vk_ads = 2 }, enabled = true, label = "y", n = 3 },
  function(k) return env[k] end)
assert(cfg.max_days.vk_ads == 4 and cfg.max_days.default == 2 and cfg.enabled == false and cfg.label == "x" and cfg.n == 3)
-- a value that does not read keeps the default and is reported (it was dropped silently); a
-- map entry overridden to false is false (`o and cast(o) or default` gave the default back)
local problems = {}
env = { ALERT_STALE_DATA_MAX_DAYS_VK_ADS = "4d", ALERT_STALE_DATA_ENABLED = "da", ALERT_STALE_DATA_N = "nan",
        ALERT_STALE_DATA_FLAGS_X = "off", ALERT_STALE_DATA_FLAGS_Y = " On " }
cfg = A.configure("stale_data", { max_days = { vk_ads = 2 }, enabled = true, n = 3, flags = { x = true, y = false } },
  function(k) return env[k] end, problems)
assert(cfg.max_days.vk_ads == 2 and cfg.enabled == true and cfg.n == 3, "defaults kept")
assert(cfg.flags.x == false and cfg.flags.y == true, "boolean map entries")
table.sort(problems, function(a, b) return a.name < b.name end)
assert(#problems == 3, #problems)
assert(problems[1].name == "ALERT_STALE_DATA_ENABLED" and problems[1].value == "da" and problems[1].default == true)
assert(problems[2].name == "ALERT_STALE_DATA_MAX_DAYS_VK_ADS" and problems[2].value == "4d" and problems[2].default == 2)
assert(problems[3].name == "ALERT_STALE_DATA_N" and problems[3].range == "число")

-- rule files
local rule, err = A.load_rule("return {", "rules/broken.lua")
assert(not rule and err:find("broken.lua"), err)
rule, err = A.load_rule("return { severity = 'error' }", "rules/nocheck.lua")
assert(not rule and err:find("check"), err)
rule, err = A.load_rule("error('at load')", "rules/raises.lua")
assert(not rule and err:find("at load"), err)
rule = assert(A.load_rule("return { check = function() return {} end }", "rules/my_rule.lua"))
assert(rule.name == "my_rule" and rule.severity == "warning" and rule.needs_clickhouse == true)
local shipped = assert(fs.list("scripts/alerts", ".lua"))
local names = {}
for _, file in ipairs(shipped) do
  local r = assert(A.load_rule(assert(io.read_file("scripts/alerts/" .. file)), "scripts/alerts/" .. file))
  names[#names + 1] = r.name
end
assert(table.concat(names, ",") ==
  "backup_failed,backup_stale,clickhouse_down,failed_run,no_recent_success,repeated_failures,spool_not_empty,stale_data", table.concat(names, ","))

-- the digest
local one = A.plan({ now = NOW, repeat_s = DAY, results = results({ f }), state = {}, pending = {} }).notes
local subject, text = A.render(one, { now = NOW, repeat_hours = 24 })
assert(subject == "[zhost] ОШИБКА: qtickets failed", subject)
assert(text:find("failed_run:qtickets (новый)", 1, true), text)
assert(text:find("Задача: qtickets", 1, true) and text:find("Сообщение: boom", 1, true))
assert(text:find("\n  zhost logs qtickets\n", 1, true), text)
-- times are Moscow time and say so, whatever the process zone (UTC in the Docker image)
assert(text:find("Время: 2025-11-03 12:00:00 MSK\n", 1, true), text)
assert(text:find("проверка 2025-11-03 12:00:00 MSK.", 1, true), text)
local many = A.plan({ now = NOW, repeat_s = DAY, results = results({ f, w }),
  state = { ["failed_run:old"] = { rule = "failed_run", subject = "old", state = "open", details = '{"title":"old"}', ver = 1 } },
  pending = {} }).notes
subject = A.render(many, { now = NOW })
assert(subject == "[zhost] ОШИБКА: алерты (активных 2, решённых 1)", subject)
assert(A.job_hint("vk_ads"):find("zhost run scripts/vk_ads.lua --days 1", 1, true))
assert(A.job_hint("vk_ads"):find("WHERE job = 'vk_ads'", 1, true))
-- jobs whose script is not scripts/<job>.lua get their real command
assert(A.job_hint("gmail_ingest"):find("zhost run scripts/gmail.lua --job gmail_ingest", 1, true))
assert(A.job_hint("qtickets_refunds"):find("zhost run scripts/qtickets.lua --job qtickets_refunds --days 30", 1, true))
assert(A.job_hint("backup_full"):find("zhost backup full", 1, true))
assert(not A.job_hint("gmail_ingest"):find("scripts/gmail_ingest.lua", 1, true))
assert(A.job_hint("direct"):find("zhost trigger direct", 1, true))
-- zhost's own command runs (`zhost backup verify|restore` by hand) have no script and are no daemon
-- job unless configured: the mail must not send the operator to scripts/backup_verify.lua
for _, j in ipairs({ "backup_verify", "backup_restore", "backup" }) do
  assert(not A.job_hint(j):find("scripts/" .. j .. ".lua", 1, true), A.job_hint(j))
end
assert(A.job_hint("backup_verify"):find("zhost backup verify", 1, true), A.job_hint("backup_verify"))
assert(A.job_hint("backup_restore"):find("zhost backup restore ", 1, true), A.job_hint("backup_restore"))
-- never daemon jobs: no `zhost logs`/`zhost trigger` (they answer "unknown job")
assert(not A.job_hint("backup_restore"):find("zhost trigger", 1, true), A.job_hint("backup_restore"))
assert(not A.job_hint("backup"):find("zhost logs backup\n", 1, true), A.job_hint("backup"))
-- with the daemon's job list (its state file): logs/trigger only for the jobs it has
assert(not A.job_hint("backup_verify", { qtickets = true }):find("zhost trigger backup_verify", 1, true))
assert(A.job_hint("backup_verify", { backup_verify = true }):find("zhost trigger backup_verify", 1, true))
assert(A.job_hint("qtickets", { qtickets = true }):find("zhost logs qtickets", 1, true))
-- the sales plan is loaded from a file: --csv, not --days
assert(A.job_hint("plan_sales"):find("zhost run scripts/plan_sales.lua --csv FILE", 1, true), A.job_hint("plan_sales"))
assert(not A.job_hint("plan_sales"):find("--days", 1, true), A.job_hint("plan_sales"))
print("alerts_engine_spec: ok")
