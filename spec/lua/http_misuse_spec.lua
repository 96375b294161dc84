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
