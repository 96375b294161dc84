-- Misused http.request options raise a clear error and leak nothing (the ASan build checks the leak).
local bad = {
  {url = "http://127.0.0.1:9/", timeout = "x"}, {url = "http://127.0.0.1:9/", max_body = "x"},
  {url = "http://127.0.0.1:9/", retry = {attempts = "x"}}, {url = "http://127.0.0.1:9/", query = {a = {function() end}}},
  {url = "http://127.0.0.1:9/", form = {a = function() end}}, {url = "http://127.0.0.1:9/", json = {f = function() end}},
  {url = "http://127.0.0.1:9/", headers = {a = "b\nc"}}, {url = "http://127.0.0.1:9/", headers = {[1] = "x"}},
  {url = "http://127.0.0.1:9/", body = "x", json = {}}, {url = "http://127.0.0.1:9/", method = string.rep("X", 40)},
  {url = "http://127.0.0.1:9/", query = {["k"] = true}, form = 5},
}
for i, o in ipairs(bad) do local ok, e = pcall(http.request, o); assert(not ok, i) end
local r, err = http.get("http://127.0.0.1:9/", {query = {a = 1}, headers = {X = "y"}, retry = false, timeout = 2})
assert(r == nil and err)
print("ok")
