-- QA: sales_csv money with thousands grouping and RFC 2047 attachment names.
local s = require("sales_csv")
local function eq(a, b, m) assert(a == b, (m or "") .. ": " .. tostring(a) .. " ~= " .. tostring(b)) end
eq(s.cents("1,234.50"), 123450, "en grouping")
eq(s.cents("1,234,567.5"), 123456750, "en grouping, two groups")
eq(s.cents("1.234,50"), 123450, "de grouping")
eq(s.cents("-1,234.50"), -123450, "negative")
eq(s.cents("1,5"), 150, "decimal comma")
eq(s.cents("1 234,50"), 123450, "space grouping")
eq(s.cents("12,34.5"), nil, "bad grouping is not a number")
eq(s.mime_words("=?UTF-8?B?0J7RgtGH0ZHRgi5jc3Y=?="), "Отчёт.csv")
eq(s.mime_words("=?windows-1251?Q?=CE=F2=F7=B8=F2_1.csv?="), "Отчёт 1.csv")
eq(s.mime_words("=?UTF-8?B?0J7RgtGH?= =?UTF-8?B?0ZHRgi5jc3Y=?="), "Отчёт.csv", "adjacent words")
eq(s.mime_words("plain.csv"), "plain.csv")
eq(s.mime_words("=?bogus-charset?B?eA==?="), "=?bogus-charset?B?eA==?=", "unknown charset left alone")
assert(s.is_csv_part({mimeType = "application/octet-stream", filename = "=?UTF-8?B?0J7RgtGH0ZHRgi5jc3Y=?="}))
assert(s.is_csv_part({mimeType = "text/csv; charset=utf-8", filename = ""}))
-- counts: a thousands mark is the only reading of "1,200" / "1.200"
eq(s.whole("1,200"), 1200) eq(s.whole("1.200"), 1200) eq(s.whole("12,345,678"), 12345678)
eq(s.whole("1 200"), 1200) eq(s.whole("12"), 12) eq(s.whole("-1,200"), -1200)
eq(s.whole("1,5"), nil, "a fraction is not a count") eq(s.whole("1,2000"), nil)
eq(s.whole("1,200.5"), nil) eq(s.whole("1.200,000"), 1200, "de grouping with a zero fraction")
-- blank spreadsheet rows in a plan are not lines
local rows = assert(s.plan_rows("sales_date;city;event_id;plan_tickets;plan_revenue\n2025-11-01;M;1;5;5\n;;;;\n"))
eq(#rows, 1)
-- money in en-US "#,##0" (or de "#.##0") has one mark before groups of three digits: a thousands
-- mark. It used to be read as a decimal mark: "1,500" loaded as 15.00 instead of 1500.00.
eq(s.cents("1,500"), 150000, "en grouping, whole rubles") eq(s.cents("1.500"), 150000, "de grouping")
eq(s.cents("-12,345"), -1234500) eq(s.cents("1,472,546"), 147254600, "two groups")
eq(s.cents("1.472.546"), 147254600) eq(s.cents("0,500"), 50, "a leading 0 is a fraction")
eq(s.cents("1,50"), 150) eq(s.cents("1234,500"), 123450, "four digits before the mark: a fraction")
local h, g = s.csv_grid('Date,City,Event,Tickets,Revenue\r\n2025-11-01,Moscow,Show,"1,205","1,500"\r\n')
local got = assert(s.report_rows(h, g))
eq(got[1].tickets_sold, 1205) eq(got[1].revenue_cents, 150000, "en-US report line")
-- a currency-formatted cell (Excel writes what it shows: "1 234,50 ₽", "1234,50р.") is rubles; a count
-- may say "шт."; other currencies stay unreadable. These lines used to stop their message.
eq(s.cents("1\194\160234,50\194\160₽"), 123450) eq(s.cents("1234,50р."), 123450) eq(s.cents("₽ 1 234"), 123400)
eq(s.cents("12 руб."), 1200) eq(s.cents("-5 RUB"), -500) eq(s.cents("10 $"), nil) eq(s.cents("12 рубль"), nil)
eq(s.whole("3 шт."), 3) eq(s.whole("1 205 шт"), 1205) eq(s.whole("3 штук"), nil)
-- totals lines: "Итого" in the date or the city column is no sales line (a day's subtotal with a date
-- loaded as a city named "Итого" and doubled the day); "Итоговый концерт" is an event
h, g = s.csv_grid("Дата;Город;Событие;Билетов;Выручка\n01.11.2025;Москва;Итоговый концерт;2;1 000,00 ₽\n" ..
  "01.11.2025;Итого за день;;2;1 000,00 ₽\nИтого:;Все города;;2;1 000,00\nВсего;;;2;1000\n")
local st
got, st = assert(s.report_rows(h, g))
eq(#got, 1) eq(got[1].event_name, "Итоговый концерт") eq(got[1].revenue_cents, 100000)
eq(st.skipped, 3) eq(#st.problems, 0, "totals lines are no problem")
-- a report with the event's date and the sale date: the sale date is the line's date (the event's
-- date used to win when its column came first, moving the sales to the show day)
h, g = s.csv_grid("Дата мероприятия;Город;Событие;Дата продажи;Билетов;Выручка\n20.12.2025;Москва;A;01.11.2025;2;100\n")
got = assert(s.report_rows(h, g))
eq(got[1].event_date, "2025-11-01", "sale date")
h, g = s.csv_grid("Date;Event date;City;Tickets\n2025-11-02;2025-12-20;Москва;1\n")
eq(assert(s.report_rows(h, g))[1].event_date, "2025-11-02", "first date column otherwise")
-- a count's header with its unit: "Продано, шт." is the tickets column (the lines loaded 0 tickets)
h, g = s.csv_grid("Дата;Город;Продано, шт.;Сумма, руб.\n01.11.2025;Сочи;3 шт.;4 500,00 р.\n")
got = assert(s.report_rows(h, g))
eq(got[1].tickets_sold, 3, "tickets") eq(got[1].revenue_cents, 450000)
eq(s.norm("Кол-во билетов, шт"), "кол во билетов")
-- a writer that quotes nothing: an event name that starts with a quote made RFC 4180 refuse the
-- whole file ("unexpected character after a closing quote"), and the report was "not a sales report"
h, g = assert(s.csv_grid('Дата;Город;Событие;Билетов;Выручка\n01.11.2025;Москва;"Щелкунчик". Балет;2;4 000\n' ..
  '01.11.2025;Казань;"Шоу; вечер";1;100\n02.11.2025;Омск;"Осень;1;50\n'))
got = assert(s.report_rows(h, g))
eq(#got, 3) eq(got[1].event_name, '"Щелкунчик". Балет') eq(got[1].revenue_cents, 400000)
eq(got[2].event_name, "Шоу; вечер", "a well-quoted line is parsed as before") eq(got[3].event_name, '"Осень')
eq(got[3].tickets_sold, 1)
-- a city's subtotal of a day in the event column loaded as one more event and doubled the city's day
h, g = s.csv_grid("Дата;Город;Событие;Билетов;Выручка\n01.11.2025;Москва;A;2;200\n01.11.2025;Москва;B;1;100\n" ..
  "01.11.2025;Москва;Итого:;3;300\n01.11.2025;Москва;Итого по городу;3;300\n01.11.2025;Казань;Total Recall;1;10\n" ..
  "01.11.2025;Казань;Всего лишь шоу;1;10\n")
got, st = assert(s.report_rows(h, g))
eq(#got, 4) eq(st.skipped, 2) eq(got[3].event_name, "Total Recall") eq(got[4].event_name, "Всего лишь шоу")
