-- vk_lib.lua — pure helpers of scripts/vk_ads.lua (no I/O): chunking, API error decoding, and the
-- mapping of VK Ads v2 / legacy statistics to fact_vk_ads_daily rows.
local tsv = require("direct_tsv") -- dec2: exact decimal text with 2 fraction digits
local M = {}

-- chunks({1,2,3,4,5}, 2) -> {{1,2},{3,4},{5}}
function M.chunks(list, n)
  local out, cur = {}, nil
  for i, v in ipairs(list) do
    if (i - 1) % n == 0 then
      cur = {}
      out[#out + 1] = cur
    end
    cur[#cur + 1] = v
  end
  return out
end

-- date_chunks("2025-01-01", "2025-06-30", 92) -> {{from, to}, ...}, each at most max_days long
function M.date_chunks(since, to, max_days)
  local out = {}
  local from = since
  while time.days_between(from, to) >= 0 do
    local last = time.add_days(from, max_days - 1)
    if time.days_between(last, to) < 0 then last = to end
    out[#out + 1] = { from, last }
    from = time.add_days(last, 1)
  end
  return out
end

-- Every date from `since` to `to`, inclusive.
function M.dates(since, to)
  local out, d = {}, since
  while time.days_between(d, to) >= 0 do
    out[#out + 1] = d
    d = time.add_days(d, 1)
  end
  return out
end

-- "1.5E+3" -> "1500", "0E-8" -> "0.00000000": the plain form of a decimal in exponent notation,
-- which Python's Decimal (VK's server side) prints for some values. nil when s is not one.
local function unexp(s)
  local sign, ip, fp, e = s:match("^%s*([-+]?)(%d*)%.?(%d*)[eE]([-+]?%d+)%s*$")
  e = tonumber(e)
  if not sign or (ip == "" and fp == "") or math.abs(e) > 30 then return nil end
  local digits, point = ip .. fp, #ip + e
  if point <= 0 then digits, point = string.rep("0", 1 - point) .. digits, 1 end
  if point > #digits then digits = digits .. string.rep("0", point - #digits) end
  local frac = digits:sub(point + 1)
  return sign .. digits:sub(1, point) .. (frac ~= "" and ("." .. frac) or "")
end

-- VK money ("23328.92", "86.4", "0", "0E-8", or a number from the legacy API) -> "23328.92" |
-- nil, err when it is not a decimal.
function M.money_or_err(v)
  if type(v) == "number" then
    if math.type(v) == "integer" then return string.format("%d.00", v) end
    v = text.decimal(v) -- a float already; 15 significant digits is what it can carry
  end
  if v == nil or v == json.null then return "0.00" end
  if type(v) ~= "string" then return nil, "not a decimal: " .. type(v) end
  return tsv.dec2(unexp(v) or v)
end

function M.money(v)
  local s, err = M.money_or_err(v)
  if not s then error("VK money value: " .. err, 2) end
  return s
end

-- A count (shows, clicks, impressions): a JSON integer, an integral float or a string of digits;
-- null or absent is 0. nil, err for anything else, so type drift never becomes a silent 0.
function M.count(v)
  if v == nil or v == json.null then return 0 end
  if type(v) == "number" then
    local n = math.tointeger(v)
    if n then return n end
  elseif type(v) == "string" and v:match("^%s*%d+%s*$") then
    local n = math.tointeger(tonumber(v))
    if n then return n end
  end
  return nil, "not a whole number: " .. (type(v) == "string" and ("'" .. v .. "'") or tostring(v))
end

function M.int(v)
  if type(v) == "number" then return math.tointeger(v) or math.floor(v) end
  if type(v) == "string" then return math.tointeger(tonumber(v)) or 0 end
  return 0
end

-- VK Ads v2 error body -> code, message. Statistics: {"error":{"code","message"}};
-- auth: {"code","message"}; token endpoint: {"error","error_description"}.
function M.v2_error(body)
  local doc = type(body) == "string" and json.decode(body) or body
  if type(doc) ~= "table" then return nil, nil end
  local e = doc.error
  if type(e) == "table" then return e.code and tostring(e.code), e.message and tostring(e.message) end
  if type(e) == "string" then return e, doc.error_description end
  if type(doc.code) == "string" then return doc.code, doc.message end
  return nil, nil
end

-- Error codes of v2 statistics that concern the ids of the request.
function M.is_id_error(code)
  return code == "ERR_ACCESS_DENIED" or (type(code) == "string" and code:match("^ERR_WRONG_")
    and code ~= "ERR_WRONG_DATE" and code ~= "ERR_WRONG_PARAMETER" and code ~= "ERR_WRONG_RESOURCE") or false
end

-- Which of `ids` a message names ("Wrong banners ids: 5,7" -> {5, 7}).
function M.ids_named(msg, ids)
  local found = {}
  if type(msg) ~= "string" then return found end
  local set = {}
  for num in msg:gmatch("%d+") do set[num] = true end
  for _, id in ipairs(ids) do
    if set[tostring(id)] then found[#found + 1] = id end
  end
  return found
end

-- The legacy API (api.vk.com) HTML-escapes the strings it returns: a campaign "Rock & Roll" comes
-- as "Rock &amp; Roll", a link's "&utm_medium=" as "&amp;utm_medium=". Undo the entities it writes.
local ENTITIES = { amp = "&", quot = '"', lt = "<", gt = ">", apos = "'" }
function M.unhtml(s)
  if type(s) ~= "string" then return s end
  return (s:gsub("&(#?)([%w]+);", function(num, name)
    if num == "#" then
      local n = name:match("^[xX](%x+)$") and tonumber(name:sub(2), 16) or tonumber(name)
      if n and n > 0 and n <= 0x10FFFF then return utf8.char(n) end
      return nil
    end
    return ENTITIES[name]
  end))
end

-- Legacy API body -> nil | {code=, msg=}
function M.legacy_error(doc)
  if type(doc) ~= "table" or type(doc.error) ~= "table" then return nil end
  return { code = M.int(doc.error.error_code), msg = tostring(doc.error.error_msg or "") }
end

-- Legacy error code -> "retry" (slow down and retry), "stop" (fail), with the reason.
function M.legacy_action(code)
  if code == 6 then return "retry", "too many requests per second" end
  if code == 9 then return "retry", "flood control" end
  if code == 10 or code == 1 then return "retry", "internal server error" end
  if code == 601 then return "stop", "daily request limit reached; retry tomorrow" end
  if code == 5 then return "stop", "authorization failed: check VK_TOKEN (a user token with the ads scope)" end
  return "stop", nil
end

-- impressions, clicks, spent of one statistics entry, read from fields named imp/clk/sp of t;
-- nil, "field: what is wrong" when one of them is not a number VK would send.
local function measures(t, imp, clk, sp)
  local i, ierr = M.count(t[imp])
  if not i then return nil, imp .. " " .. ierr end
  local c, cerr = M.count(t[clk])
  if not c then return nil, clk .. " " .. cerr end
  local s, serr = M.money_or_err(t[sp])
  if not s then return nil, sp .. " " .. serr end
  return i, c, s
end

-- One v2 "rows" entry {date, base={shows, clicks, spent}} -> impressions, clicks, spent | nil, err
function M.v2_measures(r)
  local b = type(r) == "table" and type(r.base) == "table" and r.base or {}
  return measures(b, "shows", "clicks", "spent")
end

-- One legacy stats entry {day, impressions, clicks, spent} -> impressions, clicks, spent | nil, err
function M.legacy_measures(s)
  return measures(type(s) == "table" and s or {}, "impressions", "clicks", "spent")
end

return M
