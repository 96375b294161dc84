-- sales_csv: pure parsing of sales reports (CSV attachments and simple HTML tables) into rows of
-- stg_qtickets_sales_raw, and of sales plan CSVs into rows of plan_sales. No I/O: the scripts fetch
-- the bytes, the Lua specs feed recorded ones.
--
-- Reports: `;` or `,` (or tab) separated, UTF-8 (BOM or not), UTF-16 or CP1251, Russian or English
-- header names in any case, ISO or day-first dates, decimal commas and spaces as thousands separators.
-- Money is carried as integer kopecks so that summing duplicate lines stays exact.
local kopecks = require("money")

local M = {}

----------------------------------------------------------------------------------- helpers

-- Units spreadsheets append to a header: currency to a money one ("Сумма, руб.", "Amount (RUB)"),
-- pieces to a count ("Продано, шт.", which was no tickets column: the lines loaded 0 tickets).
local UNITS = {["руб"] = true, ["рублей"] = true, ["р"] = true, ["rub"] = true, ["rur"] = true, ["₽"] = true,
  ["шт"] = true, ["pcs"] = true}

-- "Event_Date", " Дата  события " -> "event date", "дата события"; "Кол-во", "Сумма, руб.",
-- "Возвраты (₽)" -> "кол во", "сумма", "возвраты": punctuation is a space, a trailing unit goes.
local function norm(h)
  h = text.lower(text.trim(h or ""))
  h = h:gsub("[_%-%.,:;()%[%]]", " "):gsub("%s+", " ")
  h = text.trim(h)
  local head, last = h:match("^(.-) (%S+)$")
  if head and UNITS[last] then h = head end
  return h
end
M.norm = norm

local function set(list)
  local s = {}
  for _, x in ipairs(list) do s[norm(x)] = true end
  return s
end

M.REPORT_COLUMNS = {
  event_date = set{"date", "дата", "event date", "дата события", "дата мероприятия", "sale date", "sales date",
    "дата продажи", "дата продаж"},
  event_id = set{"event id", "ид события", "идентификатор", "id события", "идентификатор события", "id"},
  event_name = set{"event", "событие", "название события", "event name", "мероприятие", "название мероприятия",
    "название"},
  city = set{"city", "город"},
  tickets_sold = set{"tickets sold", "продано билетов", "билетов", "tickets", "билеты", "количество билетов",
    "продано", "количество", "кол во", "кол во билетов", "quantity", "qty"},
  revenue = set{"revenue", "выручка", "сумма", "сумма продажи", "сумма продаж", "выручка руб", "sum", "amount"},
  refunds = set{"refunds", "возвраты", "refund", "сумма возвратов", "возврат"},
  currency = set{"currency", "валюта"},
}

M.PLAN_COLUMNS = {
  sales_date = set{"sales date", "date", "дата", "дата продаж", "дата продажи"},
  city = set{"city", "город"},
  event_id = set{"event id", "ид события", "идентификатор", "id события", "идентификатор события"},
  plan_tickets = set{"plan tickets", "план билетов", "план по билетам", "билетов", "tickets"},
  plan_revenue = set{"plan revenue", "план выручки", "план по выручке", "выручка", "revenue"},
}

-- Sale-date names: when a report has one beside an event's date ("Дата мероприятия;Дата продажи"),
-- the sale date is the line's date — the views put Gmail lines beside the API's sales dates.
local SALE_DATE = set{"дата продажи", "дата продаж", "sale date", "sales date"}

-- Which header index holds each wanted column. Returns {field = index}.
local function locate(header, columns)
  local at = {}
  for i, h in ipairs(header) do
    local n = norm(h)
    for field, names in pairs(columns) do
      if names[n] and (not at[field] or (field == "event_date" and SALE_DATE[n] and not SALE_DATE[norm(header[at[field]])])) then
        at[field] = i
      end
    end
  end
  return at
end
M.locate = locate

-- "1,234.50" (en-US Excel) -> "1234.50"; "1.234,50" -> "1234,50". Only when both marks appear and
-- the one before the last is a well-formed thousands grouping, so "1,5" keeps its
-- meaning (text.decimal reads a lone comma as the decimal mark).
local function ungroup(v)
  local sign, ip, mark, fp = v:match("^([+-]?)([%d.,]+)([.,])(%d+)$")
  if not sign then return v end
  local group = mark == "." and "," or "."
  if not ip:find(group, 1, true) or ip:find(mark, 1, true) then return v end
  local parts = {}
  for d in (ip .. group):gmatch("(%d*)%" .. group) do parts[#parts + 1] = d end
  if #parts[1] < 1 or #parts[1] > 3 or not parts[1]:match("^%d+$") then return v end
  for i = 2, #parts do
    if not parts[i]:match("^%d%d%d$") then return v end
  end
  return sign .. table.concat(parts) .. "." .. fp
end

-- v without a unit that a formatted spreadsheet cell carries before or after the number ("1 234,50 ₽",
-- "1234,50р.", "₽ 1 234", "3 шт."); marks are lower-case. Anything else is left for the caller to refuse.
local RUBLES = {"₽", "руб.", "руб", "р.", "р", "rub", "rur"}
local RUBLE_MARK = {}
for _, m in ipairs(RUBLES) do RUBLE_MARK[m] = true end
local PIECES = {"шт.", "шт", "pcs"}
local function drop_unit(v, marks)
  local low = text.lower(v)
  for _, m in ipairs(marks) do
    if #low > #m and low:sub(-#m) == m and not low:sub(1, -#m - 1):find("%a$") then
      return text.trim((v:sub(1, -#m - 1):gsub("\194\160$", "")))
    end
    if #low > #m and low:sub(1, #m) == m and not low:sub(#m + 1):find("^%a") then
      return text.trim((v:sub(#m + 1):gsub("^\194\160", "")))
    end
  end
  return v
end

-- The sign of an amount, in the forms spreadsheets and accounting programs write it: "-1 234,50",
-- "−1 234,50" (U+2212), "(1 234,50)" (accounting format), "1 234,50-" (a trailing minus, as SAP and
-- some 1C forms print), "+5". Returns negative (boolean), the unsigned rest without a ruble unit
-- inside ("(1 234,50 ₽)", "-₽1 234"); nil when a second sign is left ("(-5)", "--5", "(5)-"): no
-- format writes one, and reading it either way could turn a refund into a sale.
local MINUS = "\226\136\146"
local function unsign(v)
  local neg = false
  local inner = v:match("^%((.*)%)$")
  if inner then
    neg, v = true, inner
  elseif v:find("^[-+]") then
    neg, v = v:sub(1, 1) == "-", v:sub(2)
  elseif v:sub(1, #MINUS) == MINUS then
    neg, v = true, v:sub(#MINUS + 1)
  elseif v:find("%d%-$") then
    neg, v = true, v:sub(1, -2)
  end
  v = drop_unit(text.trim(v), RUBLES)
  if v:find("[-+()]") or v:find(MINUS, 1, true) then return nil end
  return neg, v
end

-- Decimal text (spaces, NBSP, decimal comma, 1,234.50 / 1.234,50 grouping allowed, a ruble sign or
-- abbreviation of a currency-formatted cell, a sign as unsign reads it) -> kopecks (integer), or
-- nil, err. A lone "-" is 0: Excel's accounting format shows zero as a dash ("-   ₽").
function M.cents(v)
  if v == nil then return nil, "empty" end
  local given = text.trim(v)
  if given == "" then return nil, "empty" end
  v = drop_unit(given, RUBLES)
  if v == "-" then return 0 end
  local neg
  neg, v = unsign(v)
  if neg == nil or v == "" then return nil, "invalid decimal '" .. given .. "'" end
  -- "1,500" / "1.500" (en-US "#,##0", de grouping), "1,472,546": one mark followed only by groups of
  -- three digits is a thousands mark — money has two fraction digits, so reading it as a decimal mark
  -- (15.00 for "1,500") would be a silent 100-fold error. A leading 0 ("0,125") stays a fraction.
  -- The sign is off already, so "−1,500" reads as "-1,500" does (it was -1.50).
  local head, rest = v:match("^([1-9]%d?%d?)(([.,])%d%d%d.*)$")
  if head and rest:gsub("%" .. rest:sub(1, 1) .. "%d%d%d", "") == "" then
    v = head .. rest:gsub("%D", "")
  end
  v = ungroup(v)
  local d = text.decimal(v)
  if not d then return nil, "invalid decimal '" .. given .. "'" end
  local n, cerr = kopecks.cents(d)
  if not n then return nil, cerr end
  return neg and -n or n -- a report's extra fraction digits are rounded without a note
end

M.from_cents = kopecks.from_cents

-- An amount cell of a report -> kopecks, lost (true when a "?" was read as the ruble sign), or nil,
-- err. Excel's CSV save in CP1251 (the Russian "CSV (разделители — точки с запятой)") writes "?" for
-- a character that code page lacks, and ₽ is one: a cell formatted as rubles comes as "1 234,50 ?",
-- "? 1 234,50", "(1 234,50 ?)", and its zero as "-   ?". A single "?" standing where cents takes a
-- ruble sign, in a cell with no other currency mark, is that sign and is dropped (the caller counts
-- it); any other "?" — between digits, twice, alone, in a count — stays unreadable. Only report
-- amounts: cents itself, counts and the plan keep refusing it.
local function report_amount(v)
  local c, err = M.cents(v)
  if c or select(2, v:gsub("%?", "")) ~= 1 then return c, err end
  local rest = text.lower((v:gsub("%?", "")))
  for _, m in ipairs(RUBLES) do
    if rest:find(m, 1, true) then return nil, err end
  end
  c = M.cents((v:gsub("%?", "₽")))
  if not c then return nil, err end
  return c, true
end

-- Whole number text ("1 234", "12", "1,234", "1.234") -> integer, or nil, err. A count has no
-- fraction, so a comma or dot followed by groups of three digits can only be a thousands mark.
function M.whole(v)
  if type(v) == "string" then v = drop_unit(text.trim(v), PIECES) end
  local t = type(v) == "string" and text.trim(v) or v
  if type(t) == "string" then
    local sign, head, rest = t:match("^([+-]?)(%d%d?%d?)([.,]%d%d%d[.,%d]*)$")
    if sign then
      local mark = rest:sub(1, 1)
      if rest:gsub("%" .. mark .. "%d%d%d", "") == "" then
        v = sign .. head .. rest:gsub("%" .. mark, "")
      end
    end
  end
  local c, err = M.cents(v)
  if not c then return nil, err end
  if c % 100 ~= 0 then return nil, "not a whole number '" .. v .. "'" end
  return c // 100
end

-------------------------------------------------------------------------------- bytes -> grid

-- UTF-16 text (Excel's "Unicode Text" save, tab-separated; other programs' "CSV UTF-16") -> its
-- encoding and the bytes after the byte-order mark, or nil. A BOM (FF FE, FE FF) says it. Without
-- one, NUL bytes do: text in UTF-8 or CP1251 has none, while in UTF-16 every ASCII character (the
-- separators, line ends, digits, dots of dates) has a NUL byte — the second of each pair in
-- little-endian, the first in big-endian. A binary file has NULs at both places and is left alone.
-- UTF-16 was read as UTF-8 (a Cyrillic letter is two bytes such as 04 14, both valid ASCII) or,
-- with an NBSP in it, as CP1251: garbage either way, and the report was "not a sales report".
local function utf16(bytes)
  local b1, b2 = bytes:byte(1, 2)
  if b1 == 0xFF and b2 == 0xFE then return "UTF-16LE", bytes:sub(3) end
  if b1 == 0xFE and b2 == 0xFF then return "UTF-16BE", bytes:sub(3) end
  if #bytes % 2 ~= 0 or not bytes:find("\0", 1, true) then return nil end
  local first, second = 0, 0 -- NULs as the first / second byte of a pair, in the first 512 bytes
  for i = 1, math.min(#bytes, 512) - 1, 2 do
    local x, y = bytes:byte(i, i + 1)
    if x == 0 then first = first + 1 end
    if y == 0 then second = second + 1 end
  end
  if second > 0 and first == 0 then return "UTF-16LE", bytes end
  if first > 0 and second == 0 then return "UTF-16BE", bytes end
  return nil
end

-- Bytes of unknown encoding -> UTF-8: UTF-16 when it has a BOM or reads as one (above), else CP1251
-- unless already valid UTF-8; a charset hint wins over the guess between those two.
function M.to_utf8(bytes, charset)
  local wide, body = utf16(bytes)
  if wide then
    local out, err = text.iconv(body, wide, "UTF-8")
    if not out then return nil, wide .. " text: " .. err end
    if out:sub(1, 3) == "\239\187\191" then out = out:sub(4) end
    return out
  end
  charset = charset and charset:lower() or nil
  if charset and charset ~= "" and charset ~= "utf-8" and charset ~= "utf8" and charset ~= "us-ascii"
      and not text.is_utf8(bytes) then
    local out = text.iconv(bytes, charset, "UTF-8")
    if out then return out end
  end
  if text.is_utf8(bytes) then
    if bytes:sub(1, 3) == "\239\187\191" then bytes = bytes:sub(4) end
    return bytes
  end
  local out, err = text.iconv(bytes, "CP1251", "UTF-8")
  if not out then return nil, err end
  return out
end

-- The rows of a CSV that RFC 4180 refuses. A writer that quotes nothing leaves a field such as
-- "Щелкунчик". Балет as it is, and its leading quote reads as an opening one ("unexpected character
-- after a closing quote", or a quote never closed): the whole report was dropped as "not a sales
-- report". Each record is parsed on its own; a record still refused is split at every separator,
-- its fields as written (one wholly in quotes, with none inside, loses them).
-- A record is a line, or a line whose quotes do not pair up read with the lines after it until they
-- do: a cell with a line break (Excel's Alt+Enter, written quoted over two lines) in the same file
-- as a stray quote was split into two broken lines. Lines are joined only when they look like the
-- pieces of one record: the first and the last of them each have fewer separators than the header
-- has fields (a line of a whole record with a stray quote has them all, and two such lines, the
-- first quote left open and a later one closing it, must stay two sales lines), and RFC 4180 reads
-- the joined text as exactly one record as wide as the header. At most JOIN_MAX lines are joined,
-- so a quote never closed costs a few tries, not the file; a line not joined is read alone.
local JOIN_MAX = 10
local function lenient_rows(s, sep)
  local lines = {}
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = (line:gsub("\r$", "")) end
  local function quotes(line) return select(2, line:gsub('"', "")) end
  local function part(line, width) return not width or select(2, line:gsub("%" .. sep, "")) + 1 < width end
  local rows, width = {}, nil
  local i = 1
  while i <= #lines do
    local line = lines[i]
    local record, used
    if quotes(line) % 2 == 1 and part(line, width) then
      local q = quotes(line)
      for j = i + 1, math.min(#lines, i + JOIN_MAX - 1) do
        q = q + quotes(lines[j])
        if q % 2 == 0 then
          local r = part(lines[j], width) and text.csv(table.concat(lines, "\n", i, j), {sep = sep})
          if r and #r == 1 and (not width or #r[1] == width) then record, used = r[1], j end
          break
        end
      end
    end
    if record then
      i = used
    elseif line ~= "" then
      local r = text.csv(line, {sep = sep})
      if r and r[1] then
        record = r[1]
      else
        record = {}
        for f in (line .. sep):gmatch("(.-)%" .. sep) do
          local inner = f:match('^%s*"(.*)"%s*$')
          record[#record + 1] = inner and not inner:find('"', 1, true) and inner or f
        end
      end
    end
    if record then
      rows[#rows + 1] = record
      width = width or #record
    end
    i = i + 1
  end
  return rows
end

-- Whether RFC 4180 has read whole lines into one cell: a stray quote left open and another one
-- lines later closing it make every line between part of one cell, and their sales vanished
-- without a word. A cell with line breaks is taken for a wrapped name (Alt+Enter) unless one of its
-- record's physical lines is a whole record by itself, or it spans more than JOIN_MAX lines; then
-- the file is read by lenient_rows.
local function swallowed(rows, sep) -- rows[1] is the header
  local width = #rows[1]
  if width < 2 then return false end
  local function seps(t) return select(2, t:gsub("%" .. sep, "")) end
  for n = 2, #rows do
    local r = rows[n]
    for k, c in ipairs(r) do
      if c:find("\n", 1, true) then
        local parts = {}
        for piece in (c .. "\n"):gmatch("([^\n]*)\n") do parts[#parts + 1] = piece end
        if #parts > JOIN_MAX then return true end
        -- a physical line that is a whole record by itself, with separators inside the quoted text
        -- (a wrapped cell in the last column has its record's every separator before it: not one)
        local first, last = seps(parts[1]), seps(parts[#parts])
        if (first > 0 and first + (k - 1) >= width - 1) or (last > 0 and last + (#r - k) >= width - 1) then
          return true
        end
        for i = 2, #parts - 1 do
          if seps(parts[i]) >= width - 1 then return true end
        end
      end
    end
  end
  return false
end

-- CSV bytes -> header (list), rows (list of lists), or nil, err.
function M.csv_grid(bytes, charset)
  local s, err = M.to_utf8(bytes, charset)
  if not s then return nil, err end
  -- The separator is guessed from the first line, and that line is the header. Two things put
  -- something else there: Excel's "sep=;" line (it names the separator), and a title above the
  -- header ("Отчёт о продажах за 01.11.2025"), which made the whole file one column and the report
  -- "not a sales report". So the header is the first of the first ten lines that has a date and a
  -- city column, read with the separator its own line suggests (or the one "sep=" names; a title
  -- may follow that line too). A line that leaves a quoted cell open is read with the lines after
  -- it as one record (up to ten): Excel quotes a header cell with a line break in it
  -- ("Продано<Alt+Enter>билетов"), and read alone such a header was not found below a title.
  local opts
  local named, after = s:match("^sep=([;,\t|])[ \t]*\r?\n()")
  if named then s, opts = s:sub(after), {sep = named} end
  local function header_at(from, to) -- the separator when s:sub(from, to) is a report's header
    local line = s:sub(from, to):gsub("\r$", "")
    local sep = named or text.detect_csv(line)
    local cells = line ~= "" and text.csv(line, {sep = sep})
    local at = cells and cells[1] and locate(cells[1], M.REPORT_COLUMNS) or {}
    return at.event_date and at.city and sep
  end
  local pos = 1
  for n = 1, 10 do
    if pos > #s then break end
    local stop = s:find("\n", pos, true) or #s + 1
    local sep = header_at(pos, stop - 1)
    local quotes, last = select(2, s:sub(pos, stop - 1):gsub('"', "")), stop
    for _ = 1, 10 do
      if sep or quotes % 2 == 0 or last > #s then break end
      local nxt = s:find("\n", last + 1, true) or #s + 1
      quotes, last = quotes + select(2, s:sub(last + 1, nxt - 1):gsub('"', "")), nxt
      if quotes % 2 == 0 then sep = header_at(pos, last - 1) end
    end
    if sep then
      if n > 1 then s, opts = s:sub(pos), {sep = sep} end
      break
    end
    pos = stop + 1
  end
  local rows
  rows, err = text.csv(s, opts)
  local sep = opts and opts.sep or text.detect_csv(s)
  if not rows and (err:find("after a closing quote", 1, true) or err:find("unterminated quoted", 1, true)) then
    rows = lenient_rows(s, sep)
  elseif rows and #rows > 1 and swallowed(rows, sep) then
    rows = lenient_rows(s, sep)
  end
  if not rows then return nil, err end
  if #rows == 0 then return nil, "empty file" end
  local header = table.remove(rows, 1)
  return header, rows
end

local ENTITIES = {amp = "&", lt = "<", gt = ">", quot = '"', apos = "'", nbsp = " ", laquo = "«", raquo = "»",
  mdash = "—", ndash = "–", minus = "−"}

local function unescape(s)
  s = s:gsub("&#[xX](%x+);", function(h) return utf8.char(tonumber(h, 16)) end)
  s = s:gsub("&#(%d+);", function(d) return utf8.char(tonumber(d)) end)
  s = s:gsub("&(%a+);", function(n) return ENTITIES[n:lower()] end)
  return s
end

-- The rows of one table's markup (no nested table in it) -> list of lists of cell texts. A cell
-- with colspan=N takes N columns (the text in the first), one with rowspan=N is repeated in the N-1
-- rows below (a date cell spanning the lines of its day), so every value stays under its header.
local function html_rows(tbl)
  local rows, carry = {}, {} -- carry[col] = {text =, left = rows still to fill}
  for tr in tbl:gmatch("<tr[^>]*>(.-)</tr>") do
    local cells, col = {}, 1
    local function fill_carried()
      while carry[col] do
        local c = carry[col]
        cells[col], c.left = c.text, c.left - 1
        if c.left == 0 then carry[col] = nil end
        col = col + 1
      end
    end
    for attrs, cell in tr:gmatch("<t[hd]([^>]*)>(.-)</t[hd]>") do
      cell = cell:gsub("<br%s*/?>", " "):gsub("<[^>]*>", "")
      cell = text.trim((unescape(cell):gsub("%s+", " ")))
      local cspan = math.min(tonumber(attrs:match("[Cc][Oo][Ll][Ss][Pp][Aa][Nn]%s*=%s*[\"']?(%d+)")) or 1, 100)
      local rspan = math.min(tonumber(attrs:match("[Rr][Oo][Ww][Ss][Pp][Aa][Nn]%s*=%s*[\"']?(%d+)")) or 1, 10000)
      for j = 1, math.max(cspan, 1) do
        fill_carried()
        cells[col] = j == 1 and cell or ""
        if rspan > 1 then carry[col] = {text = cells[col], left = rspan - 1} end
        col = col + 1
      end
    end
    fill_carried()
    if #cells > 0 then rows[#rows + 1] = cells end
  end
  return rows
end

-- The tables of an HTML document -> list of grids {header, rows}. Handles what mail reports use:
-- <table><tr><th|td>…</td></tr></table>, attributes, <thead>/<tbody>, inline tags inside cells,
-- colspan/rowspan, and tables nested in layout tables (the usual HTML mail: the report table sits
-- in a <td> of an outer one). Innermost tables are read first and cut out of their parents, so
-- a parent's cell does not swallow a nested table's header.
function M.html_grids(html, charset)
  local s, err = M.to_utf8(html, charset)
  if not s then return nil, err end
  s = s:gsub("<!%-%-.-%-%->", "")
  s = s:gsub("<(/?)(%a+)", function(sl, t) return "<" .. sl .. t:lower() end)
  local grids = {}
  while true do
    local cs, ce = s:find("</table%s*>")
    if not cs then break end
    local os_, oe -- the last <table> opened before this close: the innermost
    local pos = 1
    while true do
      local a = s:find("<table%f[%s>]", pos)
      if not a or a > cs then break end
      os_, oe = a, s:find(">", a, true)
      pos = oe + 1
    end
    if os_ then
      local rows = html_rows(s:sub(oe + 1, cs - 1))
      -- The header is the first row with a date and a city column (a caption row spanning the
      -- table may come first), else the first row.
      local h = 1
      for i = 1, math.min(#rows, 5) do
        local at = locate(rows[i], M.REPORT_COLUMNS)
        if at.event_date and at.city then h = i break end
      end
      if #rows > 0 then
        local header = rows[h]
        grids[#grids + 1] = {header = header, rows = table.move(rows, h + 1, #rows, 1, {})}
      end
      s = s:sub(1, os_ - 1) .. " " .. s:sub(ce + 1)
    else
      s = s:sub(1, cs - 1) .. s:sub(ce + 1) -- a stray </table>
    end
  end
  return grids
end

--------------------------------------------------------------------------------- grid -> rows

-- A totals line's label in the date or city column: "Итого", "Всего:", "Total", "Итого за день" —
-- a whole word, so "Итоговый" is not one.
local TOTALS = {"итого", "всего", "итог", "total", "totals", "subtotal", "grand total"}
local function is_total(v)
  local l = text.lower(v)
  for _, w in ipairs(TOTALS) do
    if l == w or (l:sub(1, #w) == w and l:sub(#w + 1, #w + 1):find("^[%s%p]")) then return true end
  end
  return false
end

-- The same label in the event column, where a city's subtotal of a day sits ("01.11.2025;Москва;Итого")
-- and would load as an event beside the real ones: only the whole cell ("Итого", "Всего:", "Total") or
-- "Итого …", since an event may well be called "Всего лишь…" or "Total Recall".
local function total_event(v)
  local l = text.lower(v):gsub("%s*:$", "")
  if l == "итого" or l == "всего" or l == "итог" or l == "total" or l == "subtotal" or l == "grand total" then
    return true
  end
  return l:sub(1, #"итого") == "итого" and l:sub(#"итого" + 1, #"итого" + 1):find("^[%s%p]") ~= nil
end

-- A report's date cell -> "YYYY-MM-DD", or nil, why. What time.parse_date reads (ISO, DD.MM.YYYY,
-- a time after either), and DD.MM.YY — Excel's "ДД.ММ.ГГ" format exports what it shows, "01.11.25",
-- and every such line was refused as a bad date. Only the dotted day-first form, the one the
-- four-digit parser reads day first: with dashes the parser reads the year first ("25-11-01" may be
-- either), a slash is month first in en-US ("01/11/25"), and both stay refused. A two-digit year is
-- 20YY, and a date so read must lie within a year of ref (the mail's date): a year-first "25.11.01"
-- has the same shape and would read as 2001-11-25; refused, it fails the message loudly instead of
-- placing its sales 24 years back. This is the report parser's alone: time.parse_date, which reads
-- API data and command-line dates, takes no two-digit year.
local function report_date(v, ref)
  local d = time.parse_date(v)
  if d then return d end
  local dd, mm, yy, rest = v:match("^(%d%d?)%.(%d%d?)%.(%d%d)(.*)$")
  if not dd or not (rest == "" or rest:find("^[ T]%d")) then return nil end
  d = time.parse_date(string.format("20%s-%s-%s", yy, mm, dd))
  if not d then return nil end
  local off = time.days_between(ref, d)
  if off and (off < -366 or off > 366) then
    return nil, string.format("a two-digit year: %s is more than a year from %s", d, ref)
  end
  return d
end

-- A report grid -> sales rows {event_date, event_id, event_name, city, tickets_sold, revenue_cents,
-- refunds_cents, currency}, plus stats {skipped = n, problems = {...}, signs_lost = n (cells whose
-- "?" was read as the ruble sign, see report_amount)}. nil, err when the header
-- has no date or city column (not a sales report). opts.ref_date ("YYYY-MM-DD", default today) is the
-- date two-digit years are checked against: the loader passes the mail's date.
function M.report_rows(header, rows, opts)
  local ref = opts and opts.ref_date or time.date(time.now())
  local at = locate(header, M.REPORT_COLUMNS)
  if not at.event_date then return nil, "no date column in header: " .. table.concat(header, ", ") end
  if not at.city then return nil, "no city column in header: " .. table.concat(header, ", ") end
  -- Without either, every line would load as 0 tickets and 0 revenue and zero its day.
  if not at.tickets_sold and not at.revenue then
    return nil, "no tickets or revenue column in header: " .. table.concat(header, ", ")
  end
  local out, stats = {}, {skipped = 0, problems = {}, signs_lost = 0}
  local function cell(r, f)
    local i = at[f]
    return i and r[i] and text.trim(r[i]) or ""
  end
  -- A line break inside a name (Excel's Alt+Enter in a quoted CSV field) is a space, as in an HTML
  -- report: "Щелкунчик.<LF>Вечерний показ" was stored with the break, a key apart from the same
  -- event written on one line (another line of the report, the same day's HTML report), and both
  -- counted. Numbers and dates are left as they are: a break in one is no form a program writes.
  local function name(r, f)
    return (cell(r, f):gsub("%s*[\r\n]+%s*", " "))
  end
  for n, r in ipairs(rows) do
    local date, city = cell(r, "event_date"), name(r, "city")
    local d, why
    if date ~= "" then d, why = report_date(date, ref) end
    local tickets, revenue, refunds = 0, 0, 0
    local bad, lost_r, lost_f
    -- Totals lines ("Итого" under the dates; a day's "01.11.2025;Итого", which loaded as a city
    -- named Итого and doubled the day) and blank separators are skipped quietly.
    local quiet = date == "" or city == "" or is_total(date) or is_total(city) or total_event(cell(r, "event_name"))
    if quiet then
      bad = "no date or city"
    elseif not d then
      bad = "bad date '" .. date .. "'" .. (why and " (" .. why .. ")" or "")
    else
      if at.tickets_sold and cell(r, "tickets_sold") ~= "" then
        tickets = M.whole(cell(r, "tickets_sold"))
        if not tickets then bad = "bad tickets '" .. cell(r, "tickets_sold") .. "'" end
      end
      if not bad and at.revenue and cell(r, "revenue") ~= "" then
        revenue, lost_r = report_amount(cell(r, "revenue"))
        if not revenue then bad = "bad revenue '" .. cell(r, "revenue") .. "'" end
      end
      if not bad and at.refunds and cell(r, "refunds") ~= "" then
        refunds, lost_f = report_amount(cell(r, "refunds"))
        if not refunds then bad = "bad refunds '" .. cell(r, "refunds") .. "'" end
      end
    end
    if bad then
      stats.skipped = stats.skipped + 1
      if not quiet then stats.problems[#stats.problems + 1] = "row " .. n .. ": " .. bad end
    else
      -- A currency cell that is a ruble mark ("₽", "руб.") is RUB, as a line without one; a lone "?"
      -- is the ₽ a CP1251 export could not write (above). Stored as written, "?" and "₽" were
      -- currencies of their own beside the API's "RUB".
      local cur = cell(r, "currency")
      local lost = (lost_r == true and 1 or 0) + (lost_f == true and 1 or 0)
      if cur == "?" then
        cur, lost = "RUB", lost + 1
      elseif RUBLE_MARK[text.lower(cur)] then
        cur = "RUB"
      end
      stats.signs_lost = stats.signs_lost + lost
      out[#out + 1] = {
        event_date = d,
        event_id = name(r, "event_id"),
        event_name = name(r, "event_name"),
        city = city,
        tickets_sold = tickets,
        revenue_cents = revenue,
        refunds_cents = refunds,
        currency = cur ~= "" and cur:upper() or "RUB",
      }
    end
  end
  return out, stats
end

-- Sums lines that share the staging key (event_date, lower(city), event_name, event_id): the key
-- collapses them anyway, so writing them separately would keep only one (docs/schema.md §3.8).
function M.merge(rows)
  local by, order = {}, {}
  for _, r in ipairs(rows) do
    local k = table.concat({r.event_date, text.lower(r.city), r.event_name, r.event_id}, "\0")
    local a = by[k]
    if a then
      a.tickets_sold = a.tickets_sold + r.tickets_sold
      a.revenue_cents = a.revenue_cents + r.revenue_cents
      a.refunds_cents = a.refunds_cents + r.refunds_cents
    else
      a = {}
      for f, v in pairs(r) do a[f] = v end
      by[k] = a
      order[#order + 1] = a
    end
  end
  return order
end

----------------------------------------------------------------------------------- attachments

local CSV_MIMES = {["text/csv"] = true, ["text/comma-separated-values"] = true, ["application/csv"] = true,
  ["text/x-csv"] = true, ["application/x-csv"] = true, ["text/tab-separated-values"] = true}

-- RFC 2047 encoded words ("=?UTF-8?B?...?=", "=?windows-1251?Q?...?=") -> UTF-8 text. Gmail
-- usually decodes attachment names, but not always (/work/shared/api/gmail.md, pitfall 5); an
-- undecodable word is left as it is.
function M.mime_words(s)
  if type(s) ~= "string" or not s:find("=?", 1, true) then return s end
  s = s:gsub("(%?=)%s+(=%?)", "%1%2") -- whitespace between adjacent encoded words is not text
  return (s:gsub("=%?([^?]+)%?([BbQq])%?([^?]*)%?=", function(cs, enc, data)
    local raw
    if enc == "B" or enc == "b" then
      raw = text.base64_decode(data)
    else
      raw = data:gsub("_", " "):gsub("=(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    end
    if not raw then return nil end
    cs = cs:gsub("%*.*$", ""):lower() -- RFC 2231 language suffix
    if cs == "utf-8" or cs == "utf8" or cs == "us-ascii" then return raw end
    return text.iconv(raw, cs, "UTF-8")
  end))
end

-- Is this MIME part a CSV report? By type, or by the .csv (or .tsv) extension under a generic type
-- (application/octet-stream, application/vnd.ms-excel, ...).
function M.is_csv_part(part)
  local mime = type(part.mimeType) == "string" and part.mimeType:lower():gsub("%s*;.*$", "") or ""
  local name = type(part.filename) == "string" and text.lower(M.mime_words(part.filename)) or ""
  if text.ends_with(name, ".csv") or text.ends_with(name, ".tsv") then return true end
  return CSV_MIMES[mime] == true
end

-- Is this attachment a .txt file, which may be a report: Excel's "Unicode Text" save (UTF-16,
-- tab-separated) is named .txt. The loader reads one as a report when it is one, and otherwise
-- counts it among the attachments it does not read, as before.
function M.is_text_part(part)
  local name = type(part.filename) == "string" and text.lower(M.mime_words(part.filename)) or ""
  return text.ends_with(name, ".txt")
end

-- Spreadsheet formats a sales report can come in but zhost does not parse (QTickets exports, a
-- manager's "Save as Excel"). application/vnd.ms-excel is here only when the name is not .csv:
-- is_csv_part takes those first.
local SHEET_EXTS = {xlsx = true, xls = true, xlsm = true, xlsb = true, ods = true}
local SHEET_MIMES = {["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"] = true,
  ["application/vnd.ms-excel"] = true, ["application/vnd.ms-excel.sheet.macroenabled.12"] = true,
  ["application/vnd.ms-excel.sheet.binary.macroenabled.12"] = true,
  ["application/vnd.oasis.opendocument.spreadsheet"] = true}

-- An attachment (a part with a file name) the loader does not read: its kind (".xlsx", or the MIME
-- type when the name has no extension) and whether it is a spreadsheet, i.e. most likely a report
-- that zhost cannot load. nil for CSV parts and for body parts (no file name).
function M.unread_attachment(part)
  local name = type(part.filename) == "string" and text.lower(M.mime_words(part.filename)) or ""
  if name == "" or M.is_csv_part(part) then return nil end
  local mime = type(part.mimeType) == "string" and part.mimeType:lower():gsub("%s*;.*$", "") or ""
  local ext = name:match("%.([%w]+)$")
  local kind = ext and "." .. ext or (mime ~= "" and mime or "?")
  return kind, SHEET_EXTS[ext or ""] == true or SHEET_MIMES[mime] == true
end

-- charset= of a part's Content-Type header, or nil.
function M.part_charset(part)
  for _, h in ipairs(type(part.headers) == "table" and part.headers or {}) do
    if type(h) == "table" and type(h.name) == "string" and h.name:lower() == "content-type" and type(h.value) == "string" then
      local cs = h.value:match('[Cc][Hh][Aa][Rr][Ss][Ee][Tt]="?([%w%-_]+)')
      if cs then return cs:lower() end
    end
  end
  return nil
end

------------------------------------------------------------------------------------------ plan

-- Plan CSV text -> plan rows {sales_date, city, event_id, plan_tickets, plan_revenue (decimal text)}
-- or nil, "line N: why". Line numbers count physical lines of the file (1 = the header).
function M.plan_rows(bytes)
  local s, err = M.to_utf8(bytes)
  if not s then return nil, err end
  local rows
  rows, err = text.csv(s)
  if not rows then return nil, err end
  if #rows == 0 then return nil, "line 1: the file is empty" end
  -- physical line of each record: right when no field spans lines, which plan files never do
  local lines = {}
  local ln = 0
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    if line:gsub("\r$", "") ~= "" then lines[#lines + 1] = ln end
  end
  if #lines ~= #rows then lines = nil end
  local function lineno(i) return lines and lines[i] or i end
  local header = rows[1]
  local at = locate(header, M.PLAN_COLUMNS)
  local need = {"sales_date", "city", "event_id", "plan_tickets", "plan_revenue"}
  local missing = {}
  for _, f in ipairs(need) do
    if not at[f] then missing[#missing + 1] = f end
  end
  if #missing > 0 then
    return nil, "line " .. lineno(1) .. ": missing column(s) " .. table.concat(missing, ", ") ..
      " (header: " .. table.concat(header, ", ") .. ")"
  end
  local out = {}
  for i = 2, #rows do
    local r = rows[i]
    -- A spreadsheet writes rows it once used as bare separators (";;;;"): not a plan line.
    local blank = true
    for _, c in ipairs(r) do
      if text.trim(c) ~= "" then blank = false break end
    end
    if blank then goto next_row end
    local function cell(f) return text.trim(r[at[f]] or "") end
    local function fail(why) return nil, "line " .. lineno(i) .. ": " .. why end
    local d = time.parse_date(cell("sales_date"))
    if not d then return fail("bad sales_date '" .. cell("sales_date") .. "'") end
    if cell("city") == "" then return fail("empty city") end
    local t = M.whole(cell("plan_tickets"))
    if not t or t < 0 then return fail("bad plan_tickets '" .. cell("plan_tickets") .. "'") end
    local rv = M.cents(cell("plan_revenue"))
    if not rv or rv < 0 then return fail("bad plan_revenue '" .. cell("plan_revenue") .. "'") end
    out[#out + 1] = {sales_date = d, city = cell("city"), event_id = cell("event_id"), plan_tickets = t,
      plan_revenue = M.from_cents(rv), line = lineno(i)}
    ::next_row::
  end
  return out
end

return M
