-- loader: what the loader scripts (direct, vk_ads, qtickets, gmail) share: their settings from the
-- environment or their secrets file with the original system's names still honoured, whole-number
-- checks, the date window from --days / --since / --to, failing a run with a plain message, and
-- task.map whose failure is raised as the worker raised it.
-- A module gets its own environment, not the run's, so the run's `job` is passed in.
local M = {}

-- Fails the run with msg alone (no "file:line:" in front): these messages are for operators.
function M.fail(msg) error(msg, 0) end

-- task.map(items, concurrency, fn) that raises the first worker's error as it was raised.
-- task.map returns "item <i>: <err>": the index of an internal work list, meaningless to an
-- operator, and doubled when workers map again (VK: accounts, then statistics chunks), while the
-- loaders' own messages already name the account, chunk or page.
function M.map(items, concurrency, fn)
  local first
  local results, err = task.map(items, concurrency, function(item, i)
    local r = table.pack(pcall(fn, item, i))
    if not r[1] then
      first = first or r[2]
      error(r[2], 0) -- still a failure for task.map, so it starts no further item
    end
    return table.unpack(r, 2, r.n)
  end)
  if not results then error(first ~= nil and first or err, 0) end
  return results
end

-- v as an integer from lo to hi, or fails naming the setting or option.
function M.whole(name, v, lo, hi)
  local n = math.tointeger(tonumber(v))
  if not n or n < lo or n > hi then
    M.fail(string.format("%s must be a whole number from %d to %d (got '%s')", name, lo, hi, tostring(v)))
  end
  return n
end

-- The same for a number that may have a fraction ("0.5").
function M.number(name, v, lo, hi)
  local n = tonumber(v)
  if not n or n ~= n or n < lo or n > hi then
    M.fail(string.format("%s must be a number from %s to %s (got '%s')", name, lo, hi, tostring(v)))
  end
  return n
end

-- Two readers of the job's settings, where "" counts as unset:
--   env(name [, default])
--   env_alias(name, old [, default]): falls back to the old name, with a warning to rename it.
function M.settings(job)
  local function env(name, default)
    local v = job:env(name)
    if v == nil or v == "" then return default end
    return v
  end
  local function env_alias(name, old, default)
    local v = env(name)
    if v or not old then return v or default end
    v = env(old)
    if v then
      log.warn(old .. " is an old name: rename it to " .. name .. " in " .. job.secrets_dir .. "/.env." .. job.secrets ..
        " (" .. old .. " is deprecated)")
      return v
    end
    return default
  end
  return env, env_alias
end

-- The run's window of dates (YYYY-MM-DD, both ends included) from --days N | --since D [--to D],
-- else the last default_days days up to today (Moscow). Fails the run on bad options.
function M.window(args, default_days, days)
  local since, to = time.window{days = days or args.days, since = args.since, to = args.to, default_days = default_days}
  if not since then M.fail(to) end
  return since, to
end

return M
