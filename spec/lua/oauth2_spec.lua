-- oauth2 module: option checking, token.json loading, cached tokens, invalidate, and the error
-- shape of a failed refresh. Nothing here reaches a real token server (127.0.0.1:1 refuses);
-- refreshes against a live fake are in spec/e2e/test_oauth2.py.
local FIX = "spec/lua/fixtures/oauth2/"

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), "unexpected error: " .. tostring(err))
end

-- Misuse raises.
raises("'token_url' must be an http", oauth2.client, { client_id = "a" })
raises("'token_url' must be an http", oauth2.client, { token_url = "ftp://x/t", client_id = "a" })
raises("'client_id' is required", oauth2.client, { token_url = "http://x/t" })
raises("'grant' must be refresh_token, client_credentials or agency_client_credentials",
  oauth2.client, { token_url = "http://x/t", client_id = "a", grant = "password" })
raises("unknown option 'refresh'", oauth2.client, { token_url = "http://x/t", client_id = "a", refresh = "x" })
raises("'format' must be", oauth2.client, { token_url = "http://x/t", client_id = "a", format = "yaml", cache = "x" })
raises("needs cache", oauth2.client, { token_url = "http://x/t", client_id = "a", format = "google" })
raises("'margin' must be a number", oauth2.client, { token_url = "http://x/t", client_id = "a", margin = "5" })
raises("'extra' maps field names", oauth2.client, { token_url = "http://x/t", client_id = "a", extra = { x = {} } })
raises("'scope' must be a string or a list", oauth2.client, { token_url = "http://x/t", client_id = "a", scope = { 1 } })
raises("'token' (the path of token.json) is required", oauth2.google, {})

-- Defaults: a refresh_token picks the refresh_token grant, otherwise client_credentials.
local cc = oauth2.client{ token_url = "http://127.0.0.1:1/api/v2/oauth2/token.json", client_id = "vkid" }
assert(cc:info().grant == "client_credentials")
assert(cc:info().valid == false and cc:info().refreshes == 0 and cc:info().has_refresh_token == false)
assert(tostring(cc):find("oauth2.client (client_credentials", 1, true))
local rt = oauth2.client{ token_url = "http://127.0.0.1:1/t", client_id = "x", refresh_token = "r-123456" }
assert(rt:info().grant == "refresh_token" and rt:info().has_refresh_token)
raises("needs url=", rt.delete_tokens, rt)
raises("needs an options table", rt.request, rt, "http://x")

-- oauth2.google: a missing or incomplete token.json is an expected failure with the fix in it.
local c, err = oauth2.google{ token = FIX .. "missing.json", credentials = FIX .. "creds.json" }
assert(c == nil and err:find("authorize once with zhost auth google --credentials " .. FIX .. "creds.json --token "
  .. FIX .. "missing.json", 1, true), err)
c, err = oauth2.google{ token = FIX .. "token_no_refresh.json" }
assert(c == nil and err:find("has no refresh_token: re-authorize with zhost auth google", 1, true), err)

-- A token valid until 2099 is used as it is: no request (the token URL would refuse).
local g = assert(oauth2.google{ token = FIX .. "token_valid.json" })
local info = g:info()
assert(info.valid and info.has_refresh_token and info.grant == "refresh_token")
assert(info.token_url == "http://127.0.0.1:1/token" and info.cache == FIX .. "token_valid.json")
assert(info.expires_in > 365 * 86400)
assert(g:token() == "ya29.fixture-token")
assert(g:info().refreshes == 0)

-- invalidate(token) only acts on the current token.
assert(g:invalidate("some-older-token") == false)
assert(g:info().valid)
assert(g:invalidate("ya29.fixture-token") == true)
assert(g:info().valid == false)

-- The forced refresh fails on the network: nil, a message naming the URL, and info.
http.configure("oauth2:127.0.0.1:1", { retry = { attempts = 1 } })
local tok, rerr, rinfo = g:token()
assert(tok == nil)
assert(rerr:find("token request to http://127.0.0.1:1/token failed", 1, true), rerr)
assert(rinfo.status == 0 and rinfo.error == "network")
assert(g:info().refreshes == 1 and g:info().refreshing == false)
-- c:request passes the token failure through without sending anything.
local res, qerr = g:request{ url = "http://127.0.0.1:1/api" }
assert(res == nil and qerr:find("token request", 1, true))
-- The failed refresh left the fixture untouched.
assert(io.read_file(FIX .. "token_valid.json"):find("ya29.fixture-token", 1, true))
