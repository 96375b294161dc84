-- utm.lua — UTM tags of an ad's link, as the fact tables store them (docs/schema.md §3.10).
--
-- utm.parse(url)          -> { utm_source, utm_medium, utm_campaign, utm_content, utm_term,
--                              utm_city, utm_day, utm_month }   (always a table; '' / 0 when absent)
-- utm.from_query(q)       -> the same from a query string ("utm_source=vk&...") or a table of values
-- utm.split_content(s)    -> city, day, month  |  nil   for utm_content = <city>_<dd>_<mm>
-- utm.common(list)        -> the UTM fields all entries of `list` agree on ('' / 0 where they differ)
--
-- Values are URL-decoded and trimmed. utm_city is the lower-cased <city> slug as written ("msk",
-- "spb", "москва"); views map it to the canonical city through dim_city_alias, so no alias table
-- lives here. VK/Direct template macros ("{{campaign_id}}", "{ad_id}") are kept literally.
local M = {}

M.FIELDS = { "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term" }

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- <city>_<dd>_<mm>; the city part may itself contain '_' or '-' ("nizhny_novgorod_05_11").
function M.split_content(s)
  if type(s) ~= "string" then return nil end
  local city, dd, mm = trim(s):match("^(.-)[_%-](%d%d?)[_%-](%d%d?)$")
  if not city or city == "" then return nil end
  local d, m = tonumber(dd), tonumber(mm)
  if d < 1 or d > 31 or m < 1 or m > 12 then return nil end
  return text.lower(city), d, m
end

local function fill(values)
  local out = {}
  for _, f in ipairs(M.FIELDS) do
    local v = values[f]
    out[f] = type(v) == "string" and trim(v) or ""
  end
  local city, d, m = M.split_content(out.utm_content)
  out.utm_city, out.utm_day, out.utm_month = city or "", d or 0, m or 0
  return out
end

function M.from_query(q)
  if type(q) == "string" then q = text.parse_query(q) end
  return fill(type(q) == "table" and q or {})
end

function M.parse(url)
  if type(url) ~= "string" or url == "" then return fill({}) end
  local u = text.parse_url(url)
  if u then return fill(u.query or {}) end
  -- Not a URL we can split (spaces, odd schemes): take whatever follows the first '?'.
  local qs = url:match("%?([^#]*)")
  return fill(qs and text.parse_query(qs) or {})
end

function M.common(list)
  local first = list[1]
  if not first then return fill({}) end
  local out = {}
  for _, f in ipairs(M.FIELDS) do
    local v = first[f]
    for i = 2, #list do
      if list[i][f] ~= v then v = "" break end
    end
    out[f] = v
  end
  return fill(out)
end

return M
