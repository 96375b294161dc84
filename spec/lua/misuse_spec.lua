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
print(string.format("%d calls, %d raised, process alive", calls, raised))
