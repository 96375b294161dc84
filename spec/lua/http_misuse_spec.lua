-- Misused http.request options raise a clear error and leak nothing (the ASan build checks the leak).
local bad = {
  {url = "http://127.0.0.1:9/", timeout = "x"}, {url = "http://127.0.0.1:9/", max_body = "x"},
  {url = "http://127.0.0.1:9/", retry = {attempts = "x"}}, {url = "http://127.0.0.1:9/", query = {a = {function() end}}},
  {url = "http://127.0.0.1:9/", form = {a = function() end}}, {url = "http://127.0.0.1:9/", json = {f = function() end}},
  {url = "http://127.0.0.1:9/", headers = {a = "b\nc"}}, {url = "http://127.0.0.1:9/", headers = {[1] = "x"}},
  {url = "http://127.0.0.1:9/", body = "x", json = {}}, {url = "http://127.0.0.1:9/", method = string.rep("X", 40)},
  {url = "http://127.0.0.1:9/", query = {["k"] = true}, form = 5},
  {url = "http://127.0.0.1:9/", retry = {base = 0/0}}, {url = "http://127.0.0.1:9/", retry = {cap = 0/0}},
  {url = "http://127.0.0.1:9/", retry = {retry_after_max = 0/0}},
}
for i, o in ipairs(bad) do local ok, e = pcall(http.request, o); assert(not ok, i) end
-- The method and header names go into the request as they are: a line break there was sent
-- ("G\r\nX: y" made a header of its own), a space or colon made a malformed request.
for i, o in ipairs{{method = "G\r\nX: y"}, {method = "GE T"}, {method = "GET\0"}, {headers = {["X E"] = "1"}},
                   {headers = {["X:E"] = "1"}}, {headers = {[""] = "1"}}, {headers = {["X-N"] = "a\0b"}}} do
  o.url = "http://127.0.0.1:9/"
  local ok, e = pcall(http.request, o)
  assert(not ok and (e:find("bad method", 1, true) or e:find("is not a header name", 1, true) or e:find("NUL byte", 1, true)),
         "case " .. i .. ": " .. tostring(e))
end
local r, err = http.get("http://127.0.0.1:9/", {query = {a = 1}, headers = {X = "y"}, retry = false, timeout = 2})
assert(r == nil and err)
print("ok")

-- Values that are clearly wrong raise, naming the value and the range; they used to be replaced
-- without a word (timeout = 0, NaN or a value in ms became 60 s; max_body = 0 became 256 MiB) or
-- ignored (a misspelt option or retry setting, retry = 3, on_5xx = 0, which Lua takes for true).
local function raises(f, want, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "did not raise: " .. want)
  assert(tostring(e):find(want, 1, true), "wanted '" .. want .. "', got: " .. tostring(e))
end
local u = "http://127.0.0.1:9/"
for _, t in ipairs{0, -1, 86401, 60000 * 60, math.huge, -math.huge} do
  raises(http.request, "'timeout' must be seconds in (0, 86400] (got " .. tostring(t) .. ")", {url = u, timeout = t})
end
raises(http.request, "'timeout' must be seconds in (0, 86400] (got ", {url = u, timeout = 0/0})
raises(http.request, "'timeout' must be seconds in (0, 86400] (got x)", {url = u, timeout = "x"})
raises(http.get, "'timeout' must be seconds in (0, 86400] (got 0)", u, {timeout = 0})
raises(http.request, "'max_body' must be a whole number of bytes >= 1 (got 0)", {url = u, max_body = 0})
raises(http.request, "'max_body' must be a whole number of bytes >= 1 (got 1.5)", {url = u, max_body = 1.5})
raises(http.request, "unknown option 'timout'", {url = u, timout = 5})
raises(http.request, "'retry' must be false or a table of retry settings (got number)", {url = u, retry = 3})
raises(http.request, "unknown retry setting 'attemps'", {url = u, retry = {attemps = 5}})
raises(http.request, "retry.attempts must be a whole number 1..100 (got 0)", {url = u, retry = {attempts = 0}})
raises(http.request, "retry.base must be seconds >= 0 (got -1)", {url = u, retry = {base = -1}})
raises(http.request, "retry.on_5xx must be true or false (got 0)", {url = u, retry = {on_5xx = 0}})
raises(http.configure, "concurrency must be a whole number 1..256 (got 0)", "misuse", {concurrency = 0})
raises(http.configure, "rps must be requests per second >= 0, 0 for no limit (got ", "misuse", {rps = 0/0})
raises(http.configure, "unknown option 'concurency'", "misuse", {concurency = 2})
raises(http.configure, "unknown retry setting 'cap_s'", "misuse", {concurrency = 3, retry = {cap_s = 1}})
-- accepted: the edges of the ranges, numeric strings, retry = true (the source's policy)
local ok, e = pcall(http.request, {url = u, timeout = 86400, max_body = 1, retry = true})
assert(ok, e)
ok, e = pcall(http.request, {url = u, timeout = "0.5", retry = {attempts = 1, on_5xx = false}})
assert(ok, e)
print("ok: clearly wrong values raise")
