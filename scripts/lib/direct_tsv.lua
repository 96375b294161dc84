-- direct_tsv.lua — Yandex Direct Reports TSV bodies and money (pure; no I/O).
--
-- M.parse(body, fields[, opts]) -> rows, info | nil, err
--   body: the 200 body; fields: the FieldNames sent, in order. Handles the quoted title line, the
--   column header and the "Total rows: N" trailer whether or not skipReportHeader /
--   skipColumnHeader / skipReportSummary were sent, CRLF line ends, and an empty body.
--   A column header holding the same names in another order is followed, not misread.
--   opts.header_required: a caller that never sends skipColumnHeader sets it, so an empty or
--   garbled 200 body is an error instead of an empty report (which would zero loaded rows).
--   rows: list of { [field] = raw string }; info = { title=, header=bool, total=N|nil }.
-- M.count(s)        -> integer: "--", "" and other non-numbers are 0 (Direct prints "--" for
--                      "no data"), never a parse failure
-- M.micros(s)       -> "1234.56" | nil, err: exact roubles from micros text, rounded half-up to
--                      kopecks with integer arithmetic only; "--", "-", "" (empty or dashes) are "0.00"
-- M.money(s)        -> the same for either micros or a decimal ("12.30", returnMoneyInMicros=false)
-- M.dec2(s)         -> a decimal string with exactly 2 fraction digits (half-up) | nil, err
local M = {}

local function split_lines(body)
  local lines = {}
  -- A UTF-8 byte order mark in front would hide the title or the column header.
  for line in (body or ""):gsub("^\239\187\191", ""):gmatch("([^\n]*)\n?") do
    line = line:gsub("\r$", "")
    lines[#lines + 1] = line
  end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  return lines
end

local function split_tabs(line)
  local out, pos = {}, 1
  while true do
    local tab = line:find("\t", pos, true)
    if not tab then
      out[#out + 1] = line:sub(pos)
      return out
    end
    out[#out + 1] = line:sub(pos, tab - 1)
    pos = tab + 1
  end
end

-- The column header line as a list of field names when it is one (the fields in any order), else nil.
local function header_of(line, fields)
  local cols = split_tabs(line)
  if #cols ~= #fields then return nil end
  local want, seen = {}, {}
  for _, f in ipairs(fields) do want[f] = true end
  for _, c in ipairs(cols) do
    if not want[c] or seen[c] then return nil end
    seen[c] = true
  end
  return cols
end

function M.parse(body, fields, opts)
  if type(fields) ~= "table" or #fields == 0 then error("direct_tsv.parse: fields must be a non-empty list", 2) end
  opts = opts or {}
  local lines = split_lines(body)
  local info = { header = false }
  local i = 1
  -- Title: a quoted line, e.g. "name (2025-11-01 - 2025-11-07)" (its exact form is unverified, so a
  -- line without tabs that is followed by the column header is taken as the title too).
  local first = lines[i]
  if first and not first:find("\t", 1, true)
    and (first:sub(1, 1) == '"' or (lines[i + 1] and header_of(lines[i + 1], fields))) then
    info.title = lines[i]:gsub('^"', ""):gsub('"$', "")
    i = i + 1
  end
  local order = lines[i] and header_of(lines[i], fields)
  if order then
    info.header = true
    i = i + 1
  elseif opts.header_required then
    return nil, string.format("Direct report has no column header line (%s) where one was expected: %q",
      table.concat(fields, ","), (lines[i] or body or ""):sub(1, 120))
  end
  order = order or fields
  local rows = {}
  for n = i, #lines do
    local line = lines[n]
    local total = line:match("^Total rows:%s*(%d+)%s*$")
    if total then
      info.total = math.tointeger(tonumber(total))
      if n ~= #lines then return nil, "Direct report: text after the 'Total rows' line (line " .. (n + 1) .. ")" end
    elseif line ~= "" then
      local cols = split_tabs(line)
      if #cols ~= #fields then
        return nil, string.format("Direct report line %d has %d columns, expected %d (%s): %q", n, #cols, #fields,
          table.concat(fields, ","), line:sub(1, 120))
      end
      local row = {}
      for k, f in ipairs(order) do row[f] = cols[k] end
      rows[#rows + 1] = row
    end
  end
  if opts.total_required and not info.total then
    return nil, string.format("Direct report has no 'Total rows' line after %d rows (truncated body?)", #rows)
  end
  if info.total and info.total ~= #rows then
    return nil, string.format("Direct report says 'Total rows: %d' but has %d rows (truncated body?)", info.total, #rows)
  end
  return rows, info
end

function M.count(s)
  if type(s) == "number" then return math.tointeger(s) or 0 end
  if type(s) ~= "string" then return 0 end
  local d = s:match("^%s*(%d+)%s*$")
  return d and math.tointeger(tonumber(d)) or 0
end

-- "No data": Direct prints "--" (the docs also show a single dash); empty or dashes only. Any other
-- text is an error, with or without digits: vk_lib reads VK's money through dec2, where "abc" must
-- not become a silent 0.00.
local function is_null(s)
  return s == nil or s:match("^%s*%-*%s*$") ~= nil
end

-- Non-negative integer text of at most 18 digits -> integer (exact in 64 bits).
local function digits_int(d)
  d = d:gsub("^0+", "")
  if d == "" then return 0 end
  if #d > 18 then return nil end
  return math.tointeger(tonumber(d))
end

local function cents_text(neg, cents)
  local s = string.format("%d.%02d", cents // 100, cents % 100)
  if neg and cents ~= 0 then s = "-" .. s end
  return s
end

function M.micros(s)
  if type(s) == "number" and math.type(s) == "integer" then s = tostring(s) end
  if type(s) ~= "string" then return nil, "micros: not a string" end
  if is_null(s) then return "0.00" end
  local sign, d = s:match("^%s*([%-+]?)(%d+)%s*$")
  if not d then return nil, "invalid micros '" .. s .. "'" end
  local v = digits_int(d)
  if not v then return nil, "micros value too large '" .. s .. "'" end
  -- 1 kopeck = 10,000 micros; Direct already rounds to 10,000, so this only guards odd input.
  return cents_text(sign == "-", (v + 5000) // 10000)
end

function M.dec2(s)
  if type(s) ~= "string" then return nil, "decimal: not a string" end
  if is_null(s) then return "0.00" end
  local sign, ip, fp = s:match("^%s*([%-+]?)(%d*)%.?(%d*)%s*$")
  if not sign or (ip == "" and fp == "") then return nil, "invalid decimal '" .. s .. "'" end
  local i = digits_int(ip)
  if not i or i > 90000000000000000 // 100 then return nil, "decimal too large '" .. s .. "'" end
  fp = fp .. "000"
  local cents = i * 100 + tonumber(fp:sub(1, 2))
  if tonumber(fp:sub(3, 3)) >= 5 then cents = cents + 1 end
  return cents_text(sign == "-", cents)
end

function M.money(s)
  if type(s) == "string" and s:find(".", 1, true) then return M.dec2(s) end
  return M.micros(s)
end

return M
