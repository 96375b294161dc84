-- Calls every host function with hostile arguments (wrong types, NaN, huge strings, raising
-- metatables): each call may raise, but the process must survive all of them (run under ASan too).
local weird = {
  {}, {nil}, {1}, {-1}, {0}, {1e308}, {-1e308}, {0/0}, {math.huge}, {math.maxinteger}, {math.mininteger},
  {""}, {"x"}, {string.rep("A", 100000)}, {"\0\1\2\255"}, {true}, {false}, {{}}, {{1, 2, {3}}},
  {setmetatable({}, {__index = function() error("boom") end})}, {function() end},
  {"x", "y"}, {"x", {}}, {{}, {}}, {1, 2, 3}, {"%s%s%s%n"}, {"2025-13-45"}, {"http://"}, {"://x"},
  {coroutine.create(function() end)},
}
local skip = {["sleep"] = true, ["task.sleep"] = true, ["mail.send"] = true, ["http.request"] = false}
local calls, raised = 0, 0
local names = {}
for _, mod in ipairs{"json", "http", "task", "log", "ch", "time", "text", "oauth2", "mail", "fs"} do
  local t = _G[mod] or load("return " .. mod)()
  if type(t) == "table" then
    for k, v in pairs(t) do if type(v) == "function" then names[#names + 1] = {mod .. "." .. k, v} end end
  end
end
table.sort(names, function(a, b) return a[1] < b[1] end)
for _, nf in ipairs(names) do
  local name, f = nf[1], nf[2]
  if not skip[name] then
    for _, args in ipairs(weird) do
      local safe = true
      -- functions that would really wait or reach the network with a plausible argument
      if name:match("^http%.") or name:match("^ch%.") or name:match("^oauth2%.") then
        local a = args[1]
        if type(a) == "string" and a:match("^https?://.") then safe = false end
        if type(a) == "table" then safe = false end
        -- ch.query/exec/sink turn numbers into SQL and would really go to the server
        if name:match("^ch%.") and name ~= "ch.quote" and name ~= "ch.database" and name ~= "ch.spool_status"
          and (type(a) == "string" or type(a) == "number") then safe = false end
      end
      if name == "task.wait" or name == "task.map" or name == "task.spawn" then safe = type(args[1]) ~= "function" and type(args[1]) ~= "table" end
      if safe then
        calls = calls + 1
        local ok = pcall(f, table.unpack(args, 1, 3))
        if not ok then raised = raised + 1 end
      end
    end
  end
end
assert(calls > 1000, "too few calls: the module list is wrong")
-- ch.query's options are checked before anything is sent
for _, o in ipairs{ { timeout = -1 }, { timeout = 0 }, { timeout = 0/0 }, { timeout = "x" }, { attempts = 0 },
                    { attempts = 1.5 }, { attempts = 1000 } } do
  local ok, err = pcall(ch.query, "SELECT 1", o)
  assert(not ok and tostring(err):find("ch.query: ", 1, true), tostring(err))
end
assert(not pcall(ch.query, "SELECT 1", 5))
-- the messages name the value and the range, and a misspelt option is not ignored
local function raises(want, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok and tostring(err):find(want, 1, true), "wanted '" .. want .. "', got: " .. tostring(err))
end
raises("ch.query: timeout must be seconds in (0, 3600] (got 0)", ch.query, "SELECT 1", { timeout = 0 })
raises("ch.query: attempts must be a whole number 1..100 (got 1000)", ch.query, "SELECT 1", { attempts = 1000 })
raises("ch.query: unknown option 'timout' (known: timeout, attempts)", ch.query, "SELECT 1", { timout = 5 })
raises("ch.exec: timeout must be seconds in (0, 3600] (got 0)", ch.exec, "SELECT 1", { timeout = 0 })
raises("ch.exec: unknown option 'retries' (known: timeout, attempts)", ch.exec, "SELECT 1", { retries = 2 })
-- ch.sink's options, checked before its DESCRIBE is sent: 0 and negative counts became the
-- defaults (a negative one, as size_t, no limit), a max_age <= 0 became 5 s, NaN overflowed the timer
raises("ch.sink: max_rows must be a whole number >= 1 (got 0)", ch.sink, "t", { max_rows = 0 })
raises("ch.sink: max_rows must be a whole number >= 1 (got -5)", ch.sink, "t", { max_rows = -5 })
raises("ch.sink: max_bytes must be a whole number >= 1 (got 0)", ch.sink, "t", { max_bytes = 0 })
raises("ch.sink: max_age must be seconds in (0, 86400] (got 0)", ch.sink, "t", { max_age = 0 })
raises("ch.sink: max_age must be seconds in (0, 86400] (got ", ch.sink, "t", { max_age = 0/0 })
raises("ch.sink: max_age must be seconds in (0, 86400] (got inf)", ch.sink, "t", { max_age = math.huge })
raises("ch.sink: timeout must be seconds in (0, 3600] (got -1)", ch.sink, "t", { timeout = -1 })
raises("ch.sink: attempts must be a whole number 1..100 (got 0)", ch.sink, "t", { attempts = 0 })
raises("ch.sink: unknown option 'max_age_s' (known: max_rows, max_bytes, max_age, timeout, attempts)", ch.sink, "t",
       { max_age_s = 5 })
raises("ch.sink: options must be a table (got number)", ch.sink, "t", 5)
-- mail.send's timeout: 0, NaN or more than an hour became 60 s
for _, t in ipairs{ 0, -1, 3601 } do
  raises("mail: timeout must be seconds in (0, 3600] (got " .. t .. ")", mail.send,
         { host = "127.0.0.1", port = 9, tls = "none", from = "a@b.cc", to = "x@y.zz", subject = "s", text = "t", timeout = t })
end
print(string.format("%d calls, %d raised, process alive", calls, raised))
