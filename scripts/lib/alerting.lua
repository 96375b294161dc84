-- alerting.lua — the alert engine's pure logic, shared by scripts/alerts.lua and its specs:
-- loading rule files, identities, the dedup/resolve plan, merging stored state with spooled
-- rows, and the Russian e-mail digest. Nothing here waits on I/O; the job does the queries,
-- the sends and the inserts.
local M = {}

M.SEVERITIES = { error = 3, warning = 2, info = 1 }
M.TYPE_LABEL = { error = "ОШИБКА", warning = "ПРЕДУПРЕЖДЕНИЕ", info = "ИНФО", resolved = "РЕШЕНО" }

-- The identity of a condition: the rule and what it is about ("failed_run:qtickets").
function M.identity(rule, subject)
  return rule .. ":" .. subject
end

-- A v4-style random id. Alert ids only need to be unique, not unguessable.
function M.new_id()
  local t = {}
  for i = 1, 16 do t[i] = math.random(0, 255) end
  t[7] = (t[7] & 0x0f) | 0x40
  t[9] = (t[9] & 0x3f) | 0x80
  return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", table.unpack(t))
end

-- Small stable hash (FNV-1a, 32 bits) of a text, for the state's fingerprint column.
function M.fingerprint(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return string.format("%08x", h)
end

-- ---- rules ----

-- Applies overrides to a rule's config: env(name) is asked for ALERT_<RULE>_<KEY> (scalars) and
-- ALERT_<RULE>_<KEY>_<ENTRY> (entries of map-valued keys), then, for a scalar the rule names in
-- its `env` table, that variable (a setting several rules share). Values keep the type of the default.
-- A value that does not read as the default's type ("2d" for a number, "da" for a boolean) keeps
-- the default, and when `problems` is a table, { name =, value =, default =, range = } is added to it: the
-- caller alerts on it (it was dropped silently, so a typo quietly changed nothing).
local TRUE = { ["1"] = true, ["true"] = true, yes = true, on = true }
local FALSE = { ["0"] = false, ["false"] = false, no = false, off = false }
function M.configure(rule_name, defaults, env, problems)
  local cfg = {}
  -- The caller hands over only the config table, so load_rule attached the rule's extra names to it.
  local mt = getmetatable(defaults or {})
  local extra = type(mt) == "table" and type(mt.env) == "table" and mt.env or {}
  local function cast(name, default, v)
    local out
    if type(default) == "number" then
      out = tonumber(v)
      if out ~= out or out == math.huge or out == -math.huge then out = nil end
    elseif type(default) == "boolean" then
      local word = text.trim(v):lower()
      if TRUE[word] ~= nil then out = true elseif FALSE[word] ~= nil then out = false end
    else
      return v
    end
    if out == nil then
      if problems then
        problems[#problems + 1] = { name = name, value = v, default = default,
          range = type(default) == "number" and "число" or "true или false" }
      end
      return default
    end
    return out
  end
  for k, v in pairs(defaults or {}) do
    local name = ("ALERT_" .. rule_name .. "_" .. k):upper()
    if type(v) == "table" then
      local copy = {}
      for ek, ev in pairs(v) do
        local ename = type(ek) == "string" and (name .. "_" .. ek):upper()
        local o = env and ename and env(ename)
        -- not `o and cast(...) or ev`: a boolean override to false would come back as the default
        if o ~= nil and o ~= "" then copy[ek] = cast(ename, ev, o) else copy[ek] = ev end
      end
      cfg[k] = copy
    else
      local o = env and env(name)
      local oname = name
      if (o == nil or o == "") and env and extra[k] then o, oname = env(extra[k]), extra[k] end
      if o ~= nil and o ~= "" then cfg[k] = cast(oname, v, o) else cfg[k] = v end
    end
  end
  return cfg
end

-- Compiles one rule file's text. Returns the rule table, or nil, err.
function M.load_rule(code, path)
  local stem = path:match("([^/]+)%.lua$") or path
  local fn, err = load(code, "@" .. path)
  if not fn then return nil, err end
  local ok, rule = pcall(fn)
  if not ok then return nil, tostring(rule) end
  if type(rule) ~= "table" or type(rule.check) ~= "function" then
    return nil, path .. ": a rule file must return a table with a check(ctx, config) function"
  end
  rule.name = rule.name or stem
  if not tostring(rule.name):match("^[%w_]+$") then
    return nil, path .. ": rule name must be letters, digits and _"
  end
  rule.severity = rule.severity or "warning"
  if not M.SEVERITIES[rule.severity] then
    return nil, path .. ": severity must be error, warning or info"
  end
  if rule.needs_clickhouse == nil then rule.needs_clickhouse = true end
  if rule.env ~= nil then
    -- env = { key = "VARIABLE" }: another variable that sets a scalar config key.
    if type(rule.env) ~= "table" or type(rule.config) ~= "table" then
      return nil, path .. ": env must map config keys to variable names"
    end
    for k, var in pairs(rule.env) do
      local d = rule.config[k]
      if type(var) ~= "string" or not var:match("^[%w_]+$") or d == nil or type(d) == "table" then
        return nil, path .. ": env." .. tostring(k) .. " must name a variable for a scalar config key"
      end
    end
    setmetatable(rule.config, { env = rule.env })
  end
  rule.file = path
  return rule
end

-- Checks what a rule's check() returned and fills defaults. Returns findings, or nil, err.
function M.normalize_findings(rule, list)
  if list == nil or list == false then return {} end
  if type(list) ~= "table" then return nil, "check() must return a list of findings" end
  local out, seen = {}, {}
  for i, f in ipairs(list) do
    if type(f) ~= "table" or type(f.subject) ~= "string" or f.subject == "" then
      return nil, ("finding %d has no subject"):format(i)
    end
    local sev = f.severity or rule.severity
    if not M.SEVERITIES[sev] then return nil, ("finding %d: bad severity %s"):format(i, tostring(sev)) end
    local id = M.identity(rule.name, f.subject)
    if not seen[id] then -- one finding per identity and cycle
      seen[id] = true
      out[#out + 1] = {
        id = id, rule = rule.name, subject = f.subject, job = f.job or "", severity = sev,
        title = f.title or id, message = f.message or "", hint = f.hint or "", details = f.details or {},
      }
    end
  end
  return out
end

-- ---- state ----

local function num(v)
  if v == nil or v == "" then return nil end
  local n = tonumber(v)
  if n and n > 0 then return math.floor(n) end
  return nil
end

-- Normalizes a state row from ClickHouse or from a spooled JSON line.
function M.state_from_row(r)
  return {
    rule = r.rule, subject = r.subject, state = r.state, severity = r.severity,
    first_seen = num(r.first_seen), last_seen = num(r.last_seen), last_sent = num(r.last_sent),
    sent_count = math.floor(tonumber(r.sent_count) or 0), resolved_at = num(r.resolved_at),
    last_alert_id = r.last_alert_id or "", fingerprint = r.fingerprint or "", details = r.details or "{}",
    ver = math.floor(tonumber(r._ver or r.last_ver) or 0),
  }
end

-- Merges state rows (stored and spooled): the highest version of each identity wins, as the
-- ReplacingMergeTree would after the spool is replayed.
function M.merge_states(lists)
  local by = {}
  for _, list in ipairs(lists) do
    for _, r in ipairs(list) do
      local s = M.state_from_row(r)
      if s.rule and s.subject then
        local id = M.identity(s.rule, s.subject)
        if not by[id] or by[id].ver <= s.ver then by[id] = s end
      end
    end
  end
  return by
end

-- Notifications not yet delivered: alerts rows whose alert_id was never stored with
-- delivered = 1. `since` drops rows older than the retry window.
function M.pending_from_rows(lists, since)
  local by, order = {}, {}
  for _, list in ipairs(lists) do
    for _, r in ipairs(list) do
      local id = r.alert_id
      if id and id ~= "" then
        local d = tonumber(r.delivered) or 0
        local e = by[id]
        if not e then
          e = { row = r, delivered = d }
          by[id] = e
          order[#order + 1] = id
        elseif d > e.delivered then
          e.delivered = d
        end
      end
    end
  end
  local out = {}
  for _, id in ipairs(order) do
    local e = by[id]
    local created = num(e.row.created_at) or 0
    if e.delivered == 0 and created >= (since or 0) then
      local r = e.row
      out[#out + 1] = {
        alert_id = id, created_at = created, job = r.job or "", rule = r.rule or "", subject = r.subject or "",
        type = r.alert_type or "error", title = r.title or "", message = r.message or "",
        details = r.details or "{}", kind = "retry", id = M.identity(r.rule or "", r.subject or ""),
      }
    end
  end
  table.sort(out, function(a, b) return a.created_at < b.created_at end)
  return out
end

-- Parses the JSONEachRow lines of spooled batches.
function M.parse_jsonl(text)
  local rows = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local r = json.decode(line)
    if type(r) == "table" then rows[#rows + 1] = r end
  end
  return rows
end

-- ---- the plan ----

-- Decides what to send and what state to write.
--   o.now          epoch seconds
--   o.repeat_s     an open alert is re-sent after this many seconds
--   o.results      { [rule] = { ok = true, findings = {...}, scope = {[subject]=true} | nil } };
--                  rules missing here, or not ok, were not evaluated: their alerts stay as they are;
--                  { ok = true, findings = {}, removed = true } closes a removed rule's open alerts
--   o.state        { [identity] = state } (M.merge_states)
--   o.pending      undelivered notifications (M.pending_from_rows)
-- Returns { notes = {...}, states = { [identity] = new state } }. Each note has id, alert_id,
-- created_at, kind (new|repeat|resolved|retry), type (error|warning|info|resolved), rule,
-- subject, job, title, message, hint, details (JSON text).
function M.plan(o)
  local now, notes, states = o.now, {}, {}
  local pending_ids = {}
  for _, p in ipairs(o.pending or {}) do
    pending_ids[p.alert_id] = true
    notes[#notes + 1] = p
  end
  local function copy(s)
    local c = {}
    for k, v in pairs(s) do c[k] = v end
    return c
  end
  local function note(kind, typ, f, st)
    local n = {
      id = f.id, alert_id = M.new_id(), created_at = now, kind = kind, type = typ, rule = f.rule,
      subject = f.subject, job = f.job, title = f.title, message = f.message, hint = f.hint or "",
      details = json.encode({ evidence = f.details, hint = f.hint, since = st and st.first_seen or now }),
    }
    notes[#notes + 1] = n
    return n
  end
  local firing = {}
  local rule_names = {}
  for name in pairs(o.results or {}) do rule_names[#rule_names + 1] = name end
  table.sort(rule_names)
  for _, name in ipairs(rule_names) do
    local res = o.results[name]
    if res.ok then
      for _, f in ipairs(res.findings) do
        firing[f.id] = true
        local st = o.state[f.id]
        local info = json.encode({ title = f.title, job = f.job, message = f.message, hint = f.hint, evidence = f.details })
        if not st or st.state ~= "open" then
          local n = note("new", f.severity, f, nil)
          states[f.id] = {
            rule = f.rule, subject = f.subject, state = "open", severity = f.severity, first_seen = now,
            last_seen = now, last_sent = nil, sent_count = 0, resolved_at = nil, last_alert_id = n.alert_id,
            fingerprint = M.fingerprint(f.severity .. "\0" .. f.title), details = info,
          }
        else
          local s = copy(st)
          s.last_seen, s.details = now, info
          local waiting = st.last_alert_id ~= "" and pending_ids[st.last_alert_id]
          local escalated = (M.SEVERITIES[f.severity] or 0) > (M.SEVERITIES[st.severity] or 0)
          local due = escalated or (not waiting and (not st.last_sent or now - st.last_sent >= o.repeat_s))
          if due then
            local n = note(st.last_sent and "repeat" or "new", f.severity, f, st)
            s.last_alert_id = n.alert_id
            s.severity = f.severity
            s.fingerprint = M.fingerprint(f.severity .. "\0" .. f.title)
          end
          states[f.id] = s
        end
      end
    end
  end
  local ids = {}
  for id in pairs(o.state) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    local st = o.state[id]
    local res = o.results and o.results[st.rule]
    if st.state == "open" and not firing[id] and res and res.ok and (not res.scope or res.scope[st.subject]) then
      local info = json.decode(st.details or "") or {}
      local f = {
        id = id, rule = st.rule, subject = st.subject, job = info.job or "",
        title = "Решено: " .. (info.title or id),
        message = (res.removed and ("Правило " .. st.rule .. " удалено из набора правил, его алерт закрыт. Было: ")
          or "Условие больше не выполняется. Было: ") .. (info.message or ""),
        hint = "", details = info.evidence or {},
      }
      local n = note("resolved", "resolved", f, st)
      local s = copy(st)
      s.state, s.resolved_at, s.last_alert_id = "resolved", now, n.alert_id
      states[id] = s
    end
  end
  return { notes = notes, states = states }
end

-- After a send attempt: marks the states whose notifications were delivered.
function M.mark_delivered(plan, state, now)
  for _, n in ipairs(plan.notes) do
    local s = plan.states[n.id]
    if not s and state[n.id] then
      s = {}
      for k, v in pairs(state[n.id]) do s[k] = v end
      plan.states[n.id] = s
    end
    if s then
      s.last_sent = now
      s.sent_count = (s.sent_count or 0) + 1
    end
  end
end

-- ---- the e-mail ----

-- Times in the mail are Moscow time, named ("2026-03-30 21:00:00 MSK"), whatever the process zone
-- (a server or container in UTC made os.date print UTC without saying so).
function M.fmt_time(t)
  return t and t > 0 and time.format(t, "%Y-%m-%d %H:%M:%S %Z") or "—"
end
local fmt_time = M.fmt_time

-- Commands to investigate a job (shown under each alert about it).
-- The command that runs a job by hand, where its script is not scripts/<job>.lua (conf/zhost.conf).
local MANUAL = {
  qtickets_refunds = "zhost run scripts/qtickets.lua --job qtickets_refunds --days 30",
  gmail_ingest = "zhost run scripts/gmail.lua --job gmail_ingest --days 1",
  backup_full = "zhost backup full", backup_incr = "zhost backup incr", backup_prune = "zhost backup prune",
  backup = "zhost backup list",
  -- the run rows of `zhost backup verify|restore` (by hand, or a configured [job backup_verify])
  backup_verify = "zhost backup verify",
  backup_restore = "zhost backup list\nzhost backup restore NAME --into zakaz_restore --bi-into bi_restore --drop-existing",
  -- loaded by hand from a file (no --days): load the corrected file again
  plan_sales = "zhost run scripts/plan_sales.lua --csv FILE",
  -- the daemon's own spool replay: what waits, and the same replay by hand
  spool_replay = "zhost spool status\nzhost spool replay",
}
-- Run rows written by zhost commands themselves, never by a daemon job: `zhost logs`/`trigger` of
-- these names answer "unknown job".
local NOT_A_DAEMON_JOB = { backup = true, backup_restore = true }

-- daemon_jobs: the names of the daemon's jobs (its state file), or nil when not known; `zhost logs`
-- and `zhost trigger` are offered only for those.
function M.job_hint(job, daemon_jobs)
  local q = ch and ch.quote and ch.quote(job) or ("'" .. job .. "'")
  local lines = {}
  if not NOT_A_DAEMON_JOB[job] and (not daemon_jobs or daemon_jobs[job]) then
    lines[#lines + 1] = "zhost logs " .. job
    lines[#lines + 1] = "zhost trigger " .. job .. "   (run it now in the daemon, with its configured options)"
  end
  lines[#lines + 1] = MANUAL[job] or ("zhost run scripts/" .. job .. ".lua --days 1")
  lines[#lines + 1] = "SELECT started_at, status, message FROM zakaz.meta_job_runs WHERE job = " .. q ..
    " ORDER BY started_at DESC LIMIT 10;"
  return table.concat(lines, "\n")
end

local KIND_LABEL = { new = "новый", ["repeat"] = "повтор", resolved = "решён", retry = "не был доставлен ранее" }

local function count_kinds(notes)
  local c = { new = 0, ["repeat"] = 0, resolved = 0, retry = 0 }
  for _, n in ipairs(notes) do c[n.kind] = (c[n.kind] or 0) + 1 end
  return c
end

-- One mail per cycle: the subject names the single alert, or counts them.
function M.render(notes, o)
  o = o or {}
  local subject
  if #notes == 1 then
    local n = notes[1]
    subject = ("[zhost] %s: %s"):format(M.TYPE_LABEL[n.type] or n.type, n.title)
  else
    local c, parts = count_kinds(notes), {}
    local opened = c.new + c["repeat"] + c.retry
    if opened > 0 then parts[#parts + 1] = ("активных %d"):format(opened) end
    if c.resolved > 0 then parts[#parts + 1] = ("решённых %d"):format(c.resolved) end
    local worst = 0
    for _, n in ipairs(notes) do worst = math.max(worst, M.SEVERITIES[n.type] or 0) end
    local label = worst >= 3 and "ОШИБКА" or worst == 2 and "ПРЕДУПРЕЖДЕНИЕ" or worst == 1 and "ИНФО" or "РЕШЕНО"
    subject = ("[zhost] %s: алерты (%s)"):format(label, table.concat(parts, ", "))
  end
  local b = {}
  b[#b + 1] = ("Алерты zhost%s, проверка %s."):format(o.host and (" (" .. o.host .. ")") or "", fmt_time(o.now))
  b[#b + 1] = ""
  for _, n in ipairs(notes) do
    local d = json.decode(n.details or "") or {}
    b[#b + 1] = ("=== %s: %s"):format(M.TYPE_LABEL[n.type] or n.type, n.title)
    b[#b + 1] = ("Алерт: %s (%s)"):format(n.id, KIND_LABEL[n.kind] or n.kind)
    if n.job and n.job ~= "" then b[#b + 1] = "Задача: " .. n.job end
    b[#b + 1] = "Время: " .. fmt_time(n.created_at) ..
      ((d.since and d.since ~= n.created_at) and ("; впервые: " .. fmt_time(d.since)) or "")
    if n.message and n.message ~= "" then b[#b + 1] = "Сообщение: " .. n.message end
    local hint = n.hint ~= "" and n.hint or d.hint
    if hint and hint ~= "" then
      b[#b + 1] = "Что проверить:"
      for line in hint:gmatch("[^\n]+") do b[#b + 1] = "  " .. line end
    end
    b[#b + 1] = ""
  end
  b[#b + 1] = "--"
  b[#b + 1] = ("Открытый алерт повторяется не чаще раза в %s ч; когда условие пропадёт, придёт письмо «РЕШЕНО»."):format(
    o.repeat_hours or 24)
  b[#b + 1] = "Все алерты: SELECT * FROM zakaz.alerts WHERE created_at >= toDateTime(today() - 7) ORDER BY created_at DESC;"
  return subject, table.concat(b, "\n") .. "\n"
end

return M
