-- scripts/lib/loader.lua and scripts/lib/money.lua: settings with old names, whole numbers, the
-- date window, exact kopecks.
local loader = require("loader")
local money = require("money")
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- settings: "" is unset, the new name wins, the old one still works
local vals = {NEW = "", OLD = "legacy", BOTH = "new", BOTH_OLD = "old", N = "5"}
local fake = {secrets_dir = "secrets", secrets = "x"}
function fake:env(k) return vals[k] end
local env, env_alias = loader.settings(fake)
eq(env("NEW", "dflt"), "dflt", "empty is unset") eq(env("N"), "5") eq(env("MISSING"), nil)
eq(env_alias("NEW", "OLD", "dflt"), "legacy", "old name") eq(env_alias("BOTH", "BOTH_OLD"), "new", "new name wins")
eq(env_alias("MISSING", "ALSO_MISSING", "d"), "d") eq(env_alias("MISSING", nil, "d"), "d")

-- whole numbers and the window fail with plain messages
eq(loader.whole("X", "12", 1, 20), 12)
local ok, err = pcall(loader.whole, "QTICKETS_DAYS", "0", 1, 3660)
assert(not ok and err == "QTICKETS_DAYS must be a whole number from 1 to 3660 (got '0')", err)
ok, err = pcall(loader.whole, "--limit", "2.5", 1, 9)
assert(not ok and err:find("^%-%-limit must be a whole number"), err)
eq(loader.number("DIRECT_RETRY_BASE", "0.1", 0, 3600), 0.1)
ok, err = pcall(loader.number, "DIRECT_RETRY_BASE", "soon", 0, 3600)
assert(not ok and err == "DIRECT_RETRY_BASE must be a number from 0 to 3600 (got 'soon')", err)
ok, err = pcall(loader.number, "X", "nan", 0, 1)
assert(not ok, "NaN is no number here")
local since, to = loader.window({since = "2025-11-01", to = "2025-11-03"}, 30)
eq(since, "2025-11-01") eq(to, "2025-11-03")
since, to = loader.window({}, 30, 3)
eq(to, time.today()) eq(time.days_between(since, to), 2, "days = 3 overrides the default")
ok, err = pcall(loader.window, {since = "2025-13-01"}, 30)
assert(not ok and type(err) == "string" and not err:find("loader.lua"), tostring(err))

-- money: exact kopecks, rounding half away from zero, flagged
eq(money.cents("1222.03"), 122203) eq(money.cents("-0.5"), -50) eq(money.cents(".05"), 5) eq(money.cents("7"), 700)
local n, note = money.cents("0.005") eq(n, 1) eq(note, "rounded")
n, note = money.cents("-0.125") eq(n, -13) eq(note, "rounded")
n, note = money.cents("1.10") eq(n, 110) eq(note, nil)
n, note = money.cents("12 руб") eq(n, nil) assert(note:find("invalid decimal"))
n, note = money.cents("12345678901234567.00") eq(n, nil) assert(note:find("too large"))
eq(money.from_cents(123450), "1234.50") eq(money.from_cents(-5), "-0.05") eq(money.from_cents(0), "0.00")
print("loader_spec ok")
