-- scripts/lib/sales_csv.lua: report CSV/HTML parsing, header aliases, exact money, plan rows (no I/O).
local sales = require("sales_csv")

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- money in kopecks
eq(sales.cents("1 234,50"), 123450) eq(sales.cents("1\194\160234.5"), 123450) eq(sales.cents("-0,05"), -5)
eq(sales.cents("0.005"), 1, "third digit rounds") eq(sales.cents(""), nil) eq(sales.cents("12 $"), nil)
eq(sales.from_cents(123450), "1234.50") eq(sales.from_cents(-5), "-0.05")
eq(sales.whole("1 300"), 1300) eq(sales.whole("2,5"), nil)

-- negative amounts as accounting forms write them: refund lines of a sales export are negative and must
-- count so. "(1 234,50)" and a trailing minus were refused (the message failed to load); "−1,500" with
-- U+2212 was -1.50 where "-1,500" is -1500.00
for v, want in pairs{["(1 234,50)"] = -123450, ["(1234.50)"] = -123450, ["(1,234.50)"] = -123450,
    ["-1 234,50 ₽"] = -123450, ["-1\194\160234,50\194\160₽"] = -123450, ["−1 234,50"] = -123450,
    ["1 234,50-"] = -123450, ["(1 234,50 ₽)"] = -123450, ["(1 234,50) ₽"] = -123450, ["- 1 234,50"] = -123450,
    ["−1,500"] = -150000, ["−1.234,50"] = -123450, ["(0,50)"] = -50, ["+5"] = 500, ["(0)"] = 0, ["-₽ 1 234"] = -123400, ["-1 234 р."] = -123400,
    ["-"] = 0, [" -   ₽ "] = 0, ["-\194\160р."] = 0} do -- Excel's accounting zero is a dash
  eq(sales.cents(v), want, v)
end
for _, v in ipairs{"(-5)", "--5", "-(5)", "(5)-", "(5", "5)", "((5))", "−", "()", "(abc)", "$(1,234.50)", "–5",
    "2024-11-01", "5-5"} do
  local c, why = sales.cents(v)
  eq(c, nil, v) eq(why, "invalid decimal '" .. v .. "'", v)
end
eq(sales.whole("(2)"), -2) eq(sales.whole("−1,200"), -1200) eq(sales.whole("2-"), -2) eq(sales.whole("-"), 0)

-- header names
eq(sales.norm(" Event_Date "), "event date") eq(sales.norm("ДАТА  События"), "дата события")

-- a CP1251 ';' report with Russian headers, day-first dates, decimal commas, thousands spaces and a totals line
local csv = "Дата;Идентификатор;Название события;Город;Продано билетов;Выручка;Возвраты\r\n" ..
  "01.11.2025;24089;Детская выставка;Москва;1 205;1 472 546,15;0,00\r\n" ..
  "01.11.2025;24089;Детская выставка;Москва;5;6 110,15;305,51\r\n" ..
  "02.11.2025;24103;\"Концерт \"\"AC/DC\"\"; трибьют\";Казань;3;2 970,00;148,50\r\n" ..
  ";;Итого;;1 213;1 481 626,30;454,01\r\n"
local bytes = assert(text.iconv(csv, "UTF-8", "CP1251"))
assert(not text.is_utf8(bytes))
local header, grid = sales.csv_grid(bytes)
local rows, stats = assert(sales.report_rows(header, grid))
eq(#rows, 3) eq(stats.skipped, 1, "totals line skipped")
eq(rows[1].event_date, "2025-11-01") eq(rows[1].city, "Москва") eq(rows[1].event_id, "24089")
eq(rows[1].tickets_sold, 1205) eq(rows[1].revenue_cents, 147254615) eq(rows[1].currency, "RUB")
eq(rows[3].event_name, 'Концерт "AC/DC"; трибьют')
local merged = sales.merge(rows)
eq(#merged, 2, "same key summed") eq(merged[1].tickets_sold, 1210) eq(sales.from_cents(merged[1].revenue_cents), "1478656.30")
eq(sales.from_cents(merged[1].refunds_cents), "305.51")

-- UTF-8 with BOM, ',' and English headers in another order, no refunds/id columns
header, grid = sales.csv_grid("\239\187\191City,Event_Date,Event,Tickets_Sold,Revenue\nKazan,2025-11-03,Show,2,1000.5\n")
rows = assert(sales.report_rows(header, grid))
eq(rows[1].city, "Kazan") eq(rows[1].event_date, "2025-11-03") eq(rows[1].event_id, "") eq(rows[1].refunds_cents, 0)
eq(rows[1].revenue_cents, 100050)

-- not a sales report
header, grid = sales.csv_grid("name,email\nx,y\n")
local none, err = sales.report_rows(header, grid)
assert(none == nil and err:find("no date column"), err)

-- Headers with units and punctuation, as spreadsheets write them: the columns are found (read as
-- missing, every line would load 0 tickets and 0 revenue, zeroing the day in v_sales_latest).
header, grid = sales.csv_grid("Дата;Город;Кол-во билетов;Сумма, руб.;Возвраты (руб.)\n01.11.2025;Томск;3;1 500,50;100\n")
rows = assert(sales.report_rows(header, grid))
eq(rows[1].tickets_sold, 3, "Кол-во билетов") eq(rows[1].revenue_cents, 150050, "Сумма, руб.")
eq(rows[1].refunds_cents, 10000, "Возвраты (руб.)")
header, grid = sales.csv_grid("Date,City,Quantity,\"Amount, RUB\"\n2025-11-01,Tomsk,2,99.90\n")
rows = assert(sales.report_rows(header, grid))
eq(rows[1].tickets_sold, 2, "Quantity") eq(rows[1].revenue_cents, 9990, "Amount, RUB")
header, grid = sales.csv_grid("Date,Event,Sum,City\n2025-11-01,Show,1500,Tomsk\n") -- gmail.md's sample header
eq(assert(sales.report_rows(header, grid))[1].revenue_cents, 150000, "Sum")
-- date and city but neither a tickets nor a revenue column: not a report (zeros otherwise)
header, grid = sales.csv_grid("Дата;Город;Посетителей;Итог\n01.11.2025;Томск;3;1500\n")
none, err = sales.report_rows(header, grid)
assert(none == nil and err:find("no tickets or revenue column", 1, true), tostring(err))

-- a bad number skips the line and says why
header, grid = sales.csv_grid("date;city;event;tickets_sold;revenue\n2025-11-01;Томск;A;два;10\n2025-11-01;Томск;B;2;10\n")
rows, stats = sales.report_rows(header, grid)
eq(#rows, 1) eq(stats.skipped, 1) assert(stats.problems[1]:find("bad tickets 'два'"), stats.problems[1])

-- refund lines: the same key's lines are summed, so the day is net of its refunds
header, grid = sales.csv_grid("Дата;Город;Событие;Билетов;Сумма;Возвраты\n01.11.2025;Москва;A;5;5 000,00 ₽;-   ₽\n" ..
  "01.11.2025;Москва;A;(2);(2 000,00 ₽);2 000,00 ₽\n01.11.2025;Москва;A;-1;−1 000,00;1 000,00\n" ..
  "02.11.2025;Москва;A;-1;1 000,00-;1 000,00\n")
rows, stats = assert(sales.report_rows(header, grid))
eq(#rows, 4) eq(#stats.problems, 0)
merged = sales.merge(rows)
eq(#merged, 2) eq(merged[1].tickets_sold, 2) eq(sales.from_cents(merged[1].revenue_cents), "2000.00")
eq(sales.from_cents(merged[1].refunds_cents), "3000.00")
eq(merged[2].tickets_sold, -1, "a day of refunds only") eq(sales.from_cents(merged[2].revenue_cents), "-1000.00")

-- a title above the header, or Excel's "sep=;" line: the header used to be taken from line 1 (and the
-- separator guessed from it), so the report was "not a sales report" and the message loaded nothing
for _, src in ipairs{
  "Отчёт о продажах за 01.11.2025 - 02.11.2025\r\n\r\nДата;Город;Событие;Билетов;Выручка\r\n01.11.2025;Москва;A;1;1 500,50\r\n",
  "Отчёт о продажах, ноябрь;;;;\nДата;Город;Событие;Билетов;Выручка\n01.11.2025;Москва;A;1;1 500,50\n",
  "sep=;\r\nДата;Город;Событие;Билетов;Выручка\r\n01.11.2025;Москва;A;1;1 500,50\r\n",
  "\239\187\191sep=;\nДата;Город;Событие;Билетов;Выручка\n01.11.2025;Москва;A;1;1 500,50\n"} do
  header, grid = assert(sales.csv_grid(src))
  rows, stats = assert(sales.report_rows(header, grid))
  eq(#rows, 1, src) eq(rows[1].city, "Москва", src) eq(rows[1].revenue_cents, 150050, src) eq(stats.skipped, 0, src)
end

-- UTF-16: Excel's "Unicode Text" save is UTF-16LE with a BOM, tab-separated, CRLF, numbers as shown
-- (NBSP thousands), a field with a tab, quote or line break quoted. UTF-16 passes text.is_utf8 (a
-- Cyrillic letter is bytes such as 14 04), so it was read as UTF-8 garbage: "no date column in header".
local u16 = "Дата продажи\tГород\tМероприятие\tПродано билетов\tСумма, руб.\tВозвраты\r\n" ..
  "01.11.2024 19:00\tМосква\t\"Щелкунчик\t(балет)\"\t1\194\160205\t1\194\160472\194\160546,15\t0,00\r\n" ..
  "02.11.2024 12:30\tКазань\tШоу\t3\t2\194\160970,00\t148,50\r\n"
local function utf16_rows(bytes, charset, what)
  local h, g = sales.csv_grid(bytes, charset)
  assert(h, what .. ": " .. tostring(g))
  local r = assert(sales.report_rows(h, g))
  eq(#r, 2, what) eq(r[1].event_date, "2024-11-01", what) eq(r[1].city, "Москва", what)
  eq(r[1].event_name, "Щелкунчик\t(балет)", what) eq(r[1].tickets_sold, 1205, what)
  eq(r[1].revenue_cents, 147254615, what) eq(r[2].refunds_cents, 14850, what)
end
local le = assert(text.iconv(u16, "UTF-8", "UTF-16LE"))
local be = assert(text.iconv(u16, "UTF-8", "UTF-16BE"))
utf16_rows("\255\254" .. le, nil, "UTF-16LE with a BOM")
utf16_rows("\254\255" .. be, nil, "UTF-16BE with a BOM")
utf16_rows(le, nil, "UTF-16LE without a BOM (NULs at every second byte of ASCII)")
utf16_rows(be, nil, "UTF-16BE without a BOM")
utf16_rows("\255\254" .. le, "windows-1251", "the BOM wins over a wrong charset= hint")
utf16_rows("\255\254" .. assert(text.iconv("sep=\t\r\n" .. u16, "UTF-8", "UTF-16LE")), nil, "sep= line")
-- English headers, no BOM: every second byte is 0
header, grid = assert(sales.csv_grid(assert(text.iconv("Date\tCity\tTickets\tRevenue\n2024-11-01\tTomsk\t2\t10.5\n",
  "UTF-8", "UTF-16LE"))))
eq(assert(sales.report_rows(header, grid))[1].revenue_cents, 1050, "ASCII UTF-16LE")
-- a truncated UTF-16 file is an error naming the encoding, not garbage
none, err = sales.csv_grid("\255\254" .. le .. "\0")
assert(none == nil and err:find("UTF-16LE", 1, true), tostring(err))
-- bytes with NULs at both places of a pair (a binary file) are not taken for UTF-16
eq(sales.to_utf8("a\0\0b"), "a\0\0b", "binary: left as it is")

-- a header cell with a line break (Excel quotes it: "Продано<Alt+Enter>билетов") below a title, or a title
-- after the "sep=;" line: the header was searched line by line, or not at all after "sep=", so the report
-- was "not a sales report" (the header taken was the title)
for _, src in ipairs{
  'Отчёт о продажах\r\nДата;Город;Событие;"Продано\nбилетов";"Сумма,\nруб."\r\n01.11.2025;Москва;A;1;1 500,50\r\n',
  'sep=;\r\nОтчёт о продажах за ноябрь\r\nДата;Город;Событие;Билетов;Выручка\r\n01.11.2025;Москва;A;1;1 500,50\r\n',
  'sep=;\nОтчёт;;;;\n\nДата;Город;Событие;"Продано\r\nбилетов";Выручка\n01.11.2025;Москва;A;1;1 500,50\n'} do
  header, grid = assert(sales.csv_grid(src))
  rows, stats = assert(sales.report_rows(header, grid))
  eq(#rows, 1, src) eq(rows[1].tickets_sold, 1, src) eq(rows[1].revenue_cents, 150050, src) eq(stats.skipped, 0, src)
end
-- a quote left open in a title line joins at most ten lines: the header below is still found
header, grid = assert(sales.csv_grid('Отчёт "за ноябрь\n' .. string.rep("\n", 1) ..
  "Дата;Город;Билетов\n01.11.2025;Москва;1\n"))
eq(#assert(sales.report_rows(header, grid)), 1, "open quote in a title")

-- a line break inside a cell is a space: "Шоу<CR LF>вечер" was stored with the break, a key apart
-- from "Шоу вечер" of the same day in an HTML report, and both counted
header, grid = assert(sales.csv_grid('Дата;Город;Событие;Билетов;Выручка\r\n01.11.2025;"Нижний\nНовгород";' ..
  '"Шоу\r\n  вечер";1;1 500,50\r\n01.11.2025;Нижний Новгород;Шоу вечер;2;100\r\n01.11.2025;Омск;A;1;"1\n500"\r\n'))
rows, stats = assert(sales.report_rows(header, grid))
eq(rows[1].event_name, "Шоу вечер") eq(rows[1].city, "Нижний Новгород") eq(rows[1].revenue_cents, 150050)
eq(#sales.merge(rows), 1, "one key")
eq(stats.problems[1], "row 3: bad revenue '1\n500'", "a break in a number is not read past")

-- a quoted cell with a line break (Excel's Alt+Enter) in a file that also has a stray quote: RFC 4180
-- refuses the file, and the lenient reader, line by line, made the cell two broken lines (the first
-- without tickets or revenue, the second "bad date 'вечер\"'"), so the message was refused
local stray = 'Дата;Город;Событие;Билетов;Выручка\r\n01.11.2025;Москва;"Щелкунчик". Балет;2;4 000\r\n' ..
  '01.11.2025;Казань;"Шоу\r\nвечер";1;100\r\n' ..
  '01.11.2025;Омск;"Шоу; часть 1\nчасть 2\nчасть 3";3;300\r\n' ..
  '02.11.2025;Омск;"Осень;1;50\r\n' .. -- a quote never closed, on a line of a whole record
  '02.11.2025;Омск;Зима";1;60\r\n' .. -- a later stray quote that would close it: still two lines
  '02.11.2025;Томск;"Ночь\r\nмузеев";2;70\r\n'
header, grid = assert(sales.csv_grid(stray))
rows, stats = assert(sales.report_rows(header, grid))
eq(#stats.problems, 0, "no broken line: " .. tostring(stats.problems[1])) eq(#rows, 6)
eq(rows[1].event_name, '"Щелкунчик". Балет', "the stray-quote line as before") eq(rows[1].revenue_cents, 400000)
eq(rows[2].event_name, "Шоу вечер", "a two-line cell") eq(rows[2].city, "Казань") eq(rows[2].tickets_sold, 1)
eq(rows[2].revenue_cents, 10000)
eq(rows[3].event_name, "Шоу; часть 1 часть 2 часть 3", "a three-line cell") eq(rows[3].revenue_cents, 30000)
eq(rows[4].event_name, '"Осень') eq(rows[4].revenue_cents, 5000)
eq(rows[5].event_name, 'Зима"') eq(rows[5].revenue_cents, 6000)
eq(rows[6].event_name, "Ночь музеев", "a cell after the open quote") eq(rows[6].revenue_cents, 7000)
-- a quote never closed joins at most ten lines: a closing quote twelve lines below does not make
-- the lines between one event's name (all of them would be one line, their sales lost)
local far = {"Дата;Город;Событие;Билетов;Выручка", '01.11.2025;Москва;"Щелкунчик". Балет;2;4 000', '01.11.2025;"Москва'}
for k = 1, 11 do far[#far + 1] = string.format("%02d.11.2025;Омск;Шоу;1;10", k) end
far[#far + 1] = 'x";Шоу;1;10'
header, grid = assert(sales.csv_grid(table.concat(far, "\n") .. "\n"))
rows, stats = assert(sales.report_rows(header, grid))
local omsk = 0
for _, r in ipairs(rows) do if r.city == "Омск" then omsk = omsk + 1 end end
eq(omsk, 11, "the lines below an open quote are read")

-- the same in a file RFC 4180 reads without complaint: a quote left open and closed by a stray one
-- lines later made every line between one cell, and their sales were gone without a word
for _, case in ipairs{
  -- the last line's date is "x\"": a bad date, said; the three above it load
  {rows = 3, tickets = 3, '01.11.2025;"Москва;Шоу;1;10', "02.11.2025;Омск;Шоу;1;10", "03.11.2025;Омск;Шоу;1;10",
   'x";Шоу;1;10'},
  {rows = 2, tickets = 3, '01.11.2025;"Москва;Шоу;1;10', '02.11.2025;Казань";Шоу;2;20'}, -- nothing between
} do
  header, grid = assert(sales.csv_grid("Дата;Город;Событие;Билетов;Выручка\n" .. table.concat(case, "\n") .. "\n"))
  rows, stats = assert(sales.report_rows(header, grid))
  eq(#grid, #case, "one record per line: " .. case[#case])
  local tickets = 0
  for _, r in ipairs(rows) do tickets = tickets + r.tickets_sold end
  eq(#rows, case.rows, "rows: " .. case[#case]) eq(tickets, case.tickets, "tickets: " .. case[#case])
end
-- a wrapped name in a file RFC 4180 reads stays one cell (no stray quote anywhere)
header, grid = assert(sales.csv_grid('Дата;Город;Событие;Билетов;Выручка\n01.11.2025;Омск;"Шоу\nвечер; часть 2";1;10\n'))
eq(#grid, 1) eq(grid[1][3], "Шоу\nвечер; часть 2")

-- two-digit years: Excel's "ДД.ММ.ГГ" format exports "01.11.25", and every line was a bad date. Read
-- as 20YY in the dotted day-first form only, within a year of the mail's date (ref_date)
header, grid = assert(sales.csv_grid("Дата;Город;Событие;Билетов;Выручка\n01.11.25;Москва;A;1;10\n" ..
  "1.11.25 19:00;Москва;B;1;10\n31.12.24;Омск;C;1;10\n05.01.26;Омск;D;1;10\n"))
rows, stats = assert(sales.report_rows(header, grid, {ref_date = "2025-11-07"}))
eq(#stats.problems, 0, tostring(stats.problems[1])) eq(#rows, 4)
eq(rows[1].event_date, "2025-11-01") eq(rows[2].event_date, "2025-11-01", "with a time")
eq(rows[3].event_date, "2024-12-31") eq(rows[4].event_date, "2026-01-05")
-- what stays refused: a year-first shape (read day first it is 2001), dashes (the parser reads them
-- year first) and slashes (month first in en-US), a date that does not exist, text after the date
for v, why in pairs{["25.11.01"] = "bad date '25.11.01' (a two-digit year: 2001-11-25 is more than a year from 2025-11-07)",
    ["01-11-25"] = "bad date '01-11-25'", ["25-11-01"] = "bad date '25-11-01'", ["01/11/25"] = "bad date '01/11/25'",
    ["29.02.25"] = "bad date '29.02.25'", ["01.11.25 г."] = "bad date '01.11.25 г.'", ["01.11.025"] = "bad date '01.11.025'",
    ["001.11.25"] = "bad date '001.11.25'"} do
  header, grid = assert(sales.csv_grid("Дата;Город;Билетов\n" .. v .. ";Москва;1\n"))
  rows, stats = assert(sales.report_rows(header, grid, {ref_date = "2025-11-07"}))
  eq(#rows, 0, v) eq(stats.problems[1], "row 1: " .. why, v)
end
header, grid = assert(sales.csv_grid("Дата;Город;Билетов\n01.11.25;Москва;1\n"))
eq(select(2, sales.report_rows(header, grid, {ref_date = "2027-01-15"})).problems[1],
  "row 1: bad date '01.11.25' (a two-digit year: 2025-11-01 is more than a year from 2027-01-15)", "reload years later")
-- without ref_date, today is the reference
local today = time.date(time.now())
header, grid = assert(sales.csv_grid("Дата;Город;Билетов\n" .. today:sub(9, 10) .. "." .. today:sub(6, 7) .. "." ..
  today:sub(3, 4) .. ";Москва;1\n"))
eq(assert(sales.report_rows(header, grid))[1].event_date, today, "today's date in dd.mm.yy")
-- the report parser's alone: time.parse_date (API data, --since) and sales plans take no two-digit year
eq(time.parse_date("01.11.25"), nil)
eq(select(2, sales.plan_rows("Дата;Город;ИД события;План билетов;План выручки\n01.11.25;Москва;1;3;10\n")),
  "line 2: bad sales_date '01.11.25'")

-- the ruble sign in a CP1251 export: Excel writes "?" for ₽, which CP1251 has no byte for, so every
-- line of a report formatted in rubles was "bad revenue '1 234,50 ?'" and the message was refused.
-- A single "?" where a ruble sign stands is dropped and counted; the currency column's "?" is RUB.
local lostcsv = "Дата;Город;Событие;Билетов;Сумма;Возвраты;Валюта\r\n" ..
  "01.11.2025;Москва;A;2;1 234,50 ?;-   ?;?\r\n" ..
  "01.11.2025;Москва;B;1;? 1 234,50;(500,00 ?);RUB\r\n" ..
  "01.11.2025;Омск;C;1;1234,50?;0,00;р.\r\n" ..
  "01.11.2025;Омск;D;-1;-1 234,50 ?;;руб.\r\n" ..
  "01.11.2025;Омск;E;1;100;;\r\n"
header, grid = assert(sales.csv_grid(assert(text.iconv(lostcsv, "UTF-8", "CP1251"))))
rows, stats = assert(sales.report_rows(header, grid))
eq(#stats.problems, 0, tostring(stats.problems[1])) eq(#rows, 5)
eq(rows[1].revenue_cents, 123450) eq(rows[1].refunds_cents, 0, "accounting zero") eq(rows[1].currency, "RUB")
eq(rows[2].revenue_cents, 123450) eq(rows[2].refunds_cents, -50000, "(500,00 ?)")
eq(rows[3].revenue_cents, 123450) eq(rows[3].currency, "RUB", "р. in the currency column is RUB")
eq(rows[4].revenue_cents, -123450) eq(rows[4].currency, "RUB", "руб.") eq(rows[5].currency, "RUB")
eq(stats.signs_lost, 7, "six amount cells and one currency cell had a '?'")
header, grid = assert(sales.csv_grid("Дата;Город;Сумма;Валюта\n01.11.2025;Москва;1 234,50 ₽;₽\n"))
rows, stats = assert(sales.report_rows(header, grid))
eq(rows[1].currency, "RUB", "₽ in the currency column (it was stored as '₽')") eq(stats.signs_lost, 0)
-- any other "?" stays an error: in a count, between digits, twice, alone, beside another currency mark
for v, col in pairs{["3 ?"] = "tickets", ["1?234"] = "revenue", ["??"] = "revenue", ["?"] = "revenue",
    ["1 234 руб. ?"] = "revenue", ["1 234,50 ? ?"] = "revenue", ["10 $ ?"] = "revenue"} do
  local line = col == "tickets" and "01.11.2025;Москва;" .. v .. ";1" or "01.11.2025;Москва;1;" .. v
  header, grid = assert(sales.csv_grid("Дата;Город;Билетов;Сумма\n" .. line .. "\n"))
  rows, stats = assert(sales.report_rows(header, grid))
  eq(stats.problems[1], "row 1: bad " .. col .. " '" .. v .. "'", v) eq(stats.signs_lost, 0, v)
end
-- cents itself (counts, plans) keeps refusing it
eq(sales.cents("1 234,50 ?"), nil) eq(sales.whole("3 ?"), nil)

-- HTML table report (the text/html alternative of a mail)
local html = [[<html><body><p>Продажи:</p><TABLE border="1"><tr><th>Дата</th><th>ИД события</th><th>Событие</th>
<th>Город</th><th>Билетов</th><th>Выручка</th><th>Возвраты</th></tr>
<tr><td>01.11.2025</td><td>24089</td><td>Концерт &quot;AC/DC&quot; &amp; друзья</td><td><b>Москва</b></td>
<td>1&nbsp;300</td><td>1 588 639,00</td><td>0,00</td></tr></TABLE></body></html>]]
local grids = sales.html_grids(html)
eq(#grids, 1)
rows = assert(sales.report_rows(grids[1].header, grids[1].rows))
eq(rows[1].event_name, 'Концерт "AC/DC" & друзья') eq(rows[1].city, "Москва") eq(rows[1].tickets_sold, 1300)
eq(rows[1].revenue_cents, 158863900)

-- &minus; (U+2212) in an HTML report's refund line
grids = sales.html_grids("<table><tr><td>Дата</td><td>Город</td><td>Сумма</td></tr><tr><td>01.11.2025</td>" ..
  "<td>Москва</td><td>&minus;1&nbsp;500,00</td></tr></table>")
rows, stats = assert(sales.report_rows(grids[1].header, grids[1].rows))
eq(#stats.problems, 0, "&minus;") eq(rows[1].revenue_cents, -150000, "&minus;")

-- an HTML mail puts the report table in a cell of a layout table: the outer cell used to swallow the
-- report's header ("Отчёт о продажах Дата"), so the message had "no report"; a totals line spans
-- three columns, a date spans the lines of its day
html = [[<html><body><table width="100%"><tr><td align="center"><p>Отчёт о продажах</p>
<table border="1"><thead><tr><th>Дата</th><th>Город</th><th>Мероприятие</th><th>Продано билетов</th>
<th>Сумма, руб.</th></tr></thead><tbody>
<tr><td rowspan="2">01.11.2025</td><td>Москва</td><td>Шоу А</td><td>3</td><td>1&nbsp;500,00</td></tr>
<tr><td>Казань</td><td>Шоу Б</td><td>2</td><td>900,00</td></tr>
<tr><td>02.11.2025</td><td colspan=2>Омск</td><td>1</td><td>100</td></tr>
<tr><td colspan="3"><b>Итого</b></td><td>6</td><td>2&nbsp;500,00</td></tr></tbody>
</table></td></tr><tr><td><table><tr><td>footer</td></tr></table></td></tr></table></body></html>]]
grids = sales.html_grids(html)
eq(#grids, 3, "report, footer, layout")
rows, stats = assert(sales.report_rows(grids[1].header, grids[1].rows))
eq(#rows, 3) eq(stats.skipped, 1, "the totals line") eq(#stats.problems, 0, "the totals line is no problem")
eq(rows[1].city, "Москва") eq(rows[1].revenue_cents, 150000)
eq(rows[2].event_date, "2025-11-01", "rowspan") eq(rows[2].city, "Казань") eq(rows[2].tickets_sold, 2)
eq(rows[3].city, "Омск") eq(rows[3].event_name, "", "colspan") eq(rows[3].tickets_sold, 1)
eq(sales.report_rows(grids[2].header, grids[2].rows), nil, "the footer is no report")
-- a caption row above the header
grids = sales.html_grids([[<table><tr><th colspan="5">Продажи за 01.11.2025</th></tr><tr><td>Дата</td><td>Город</td>
<td>Событие</td><td>Билетов</td><td>Выручка</td></tr><tr><td>01.11.2025</td><td>Уфа</td><td>A</td><td>4</td><td>40</td></tr></table>]])
rows = assert(sales.report_rows(grids[1].header, grids[1].rows))
eq(#rows, 1) eq(rows[1].city, "Уфа") eq(rows[1].tickets_sold, 4)

-- which parts are CSV attachments
eq(sales.is_csv_part({mimeType = "application/octet-stream", filename = "Отчёт о продажах.CSV"}), true)
eq(sales.is_csv_part({mimeType = "application/vnd.ms-excel", filename = "x.csv"}), true)
eq(sales.is_csv_part({mimeType = "text/csv", filename = ""}), true)
eq(sales.is_csv_part({mimeType = "application/pdf", filename = "act.pdf"}), false)
eq(sales.is_csv_part({mimeType = "application/octet-stream", filename = "sales.TSV"}), true)
eq(sales.is_csv_part({mimeType = "text/tab-separated-values", filename = ""}), true)
-- a .txt may be Excel's "Unicode Text" save of a report: the loader tries it, and names it as unread if not
eq(sales.is_text_part({mimeType = "text/plain", filename = "Продажи.TXT"}), true)
eq(sales.is_text_part({mimeType = "text/plain", filename = ""}), false, "a body part")
eq(sales.is_csv_part({mimeType = "text/plain", filename = "Продажи.txt"}), false)
eq(sales.unread_attachment({mimeType = "text/plain", filename = "notes.txt"}), ".txt")
-- attachments zhost does not read: a spreadsheet (a report in a format it cannot parse) or anything else
eq(sales.unread_attachment({mimeType = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  filename = "Отчёт.XLSX"}), ".xlsx")
eq(select(2, sales.unread_attachment({mimeType = "application/octet-stream", filename = "report.xlsx"})), true)
eq(select(2, sales.unread_attachment({mimeType = "application/vnd.ms-excel", filename = "old.xls"})), true)
eq(select(2, sales.unread_attachment({mimeType = "application/vnd.oasis.opendocument.spreadsheet",
  filename = "=?UTF-8?B?" .. text.base64_encode("отчёт.ods") .. "?="})), true)
eq(sales.unread_attachment({mimeType = "application/vnd.ms-excel", filename = "noext"}), "application/vnd.ms-excel")
eq(select(2, sales.unread_attachment({mimeType = "application/vnd.ms-excel", filename = "noext"})), true)
eq(sales.unread_attachment({mimeType = "application/pdf", filename = "act.pdf"}), ".pdf")
eq(select(2, sales.unread_attachment({mimeType = "application/pdf", filename = "act.pdf"})), false)
eq(sales.unread_attachment({mimeType = "application/vnd.ms-excel", filename = "x.csv"}), nil, "a CSV is read")
eq(sales.unread_attachment({mimeType = "text/html", filename = ""}), nil, "a body part is no attachment")
eq(sales.unread_attachment({mimeType = "text/plain"}), nil)
eq(sales.part_charset({headers = {{name = "Content-Type", value = 'text/csv; charset="windows-1251"; name="a.csv"'}}}),
  "windows-1251")

-- plan rows and their line numbers
local plan = assert(sales.plan_rows("sales_date,city,event_id,plan_tickets,plan_revenue\n2025-11-01,Москва,1,5,\"500,5\"\n"))
eq(plan[1].plan_revenue, "500.50") eq(plan[1].line, 2)
local bad
bad, err = sales.plan_rows("Дата;Город;ИД события;План билетов;План выручки\n\n01.11.2025;Москва;1;-3;10\n")
assert(bad == nil and err == "line 3: bad plan_tickets '-3'", err)
-- a plan has no negative figures, in any form
bad, err = sales.plan_rows("Дата;Город;ИД события;План билетов;План выручки\n01.11.2025;Москва;1;3;(10,00)\n")
assert(bad == nil and err == "line 2: bad plan_revenue '(10,00)'", err)
-- a plan saved as Excel "Unicode Text" (UTF-16LE, tab-separated) is read as well
plan = assert(sales.plan_rows("\255\254" .. assert(text.iconv(
  "Дата\tГород\tИД события\tПлан билетов\tПлан выручки\r\n01.11.2025\tМосква\t7\t5\t1\194\160500,50\r\n",
  "UTF-8", "UTF-16LE"))))
eq(#plan, 1) eq(plan[1].city, "Москва") eq(plan[1].plan_tickets, 5) eq(plan[1].plan_revenue, "1500.50")
print("gmail_reports_spec ok")
