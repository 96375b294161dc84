-- text module through Lua: values, nil-err failures, misuse raising.
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- base64
eq(text.base64_encode("foobar"), "Zm9vYmFy", "b64")
eq(text.base64_encode("fo"), "Zm8=", "b64 padding")
eq(text.base64_decode("Zm8="), "fo", "b64 decode")
eq(text.base64url_encode("\251\255\254"), "-__-", "b64url")
eq(text.base64url_encode("fo"), "Zm8", "b64url has no padding")
eq(text.base64url_decode("Zm8"), "fo", "b64url missing padding")
eq(text.base64url_decode("Zm8="), "fo", "b64url with padding")
local v, err = text.base64url_decode("Zm9v*")
assert(v == nil and err == "invalid base64url at byte 5", err)
v, err = text.base64_decode("Zm9vY")
assert(v == nil and err:find("truncated"), err)
-- a Gmail attachment body: CSV bytes in base64url
local csv_bytes = "Дата;Сумма\n01.11.2025;1 234,50\n"
eq(text.base64url_decode(text.base64url_encode(csv_bytes)), csv_bytes, "attachment round trip")

-- URLs
eq(text.url_encode("вк cpc&x=1"), "%D0%B2%D0%BA%20cpc%26x%3D1", "url_encode")
eq(text.url_decode("%D0%B2%D0%BA+cpc"), "вк cpc", "url_decode")
local q = text.parse_query("?utm_source=vk&utm_campaign=%D0%9D%D0%BE%D0%B2%D1%8B%D0%B9+%D0%B3%D0%BE%D0%B4&flag&utm_source=dup#frag")
eq(q.utm_source, "vk", "first value wins")
eq(q.utm_campaign, "Новый год", "cyrillic utm")
eq(q.flag, "", "key without value")
local u = text.parse_url("HTTPS://Tickets.Example.ru:8443/event/42?utm_source=vk&utm_medium=cpc#top")
eq(u.scheme, "https") eq(u.host, "tickets.example.ru") eq(u.port, 8443) eq(u.path, "/event/42")
eq(u.query.utm_medium, "cpc") eq(u.raw_query, "utm_source=vk&utm_medium=cpc") eq(u.fragment, "top")
u = text.parse_url("https://vk.com")
eq(u.port, 443, "default https port") eq(u.path, "/", "default path")
u = text.parse_url("vk.com/club1?utm_source=vk_ads")
eq(u.host, "vk.com", "scheme-less host") eq(u.scheme, nil) eq(u.query.utm_source, "vk_ads")
u = text.parse_url("/relative/path?a=1")
eq(u.host, nil) eq(u.path, "/relative/path") eq(u.query.a, "1")
u = text.parse_url("http://user:pw@[::1]:8080/x")
eq(u.host, "::1") eq(u.port, 8080) eq(u.user, "user:pw")
v, err = text.parse_url("http://host:99999/")
assert(v == nil and err:find("bad port"), err)
v, err = text.parse_url("")
assert(v == nil and err:find("empty"), err)
v, err = text.parse_url("http:///x")
assert(v == nil and err:find("empty host"), err)

-- charsets
local cp = text.iconv("Привет", "UTF-8", "CP1251")
eq(#cp, 6, "one byte per letter") eq(text.is_utf8(cp), false, "cp1251 is not utf8")
eq(text.iconv(cp, "CP1251", "UTF-8"), "Привет", "cp1251 round trip")
eq(text.is_utf8("Привет"), true)
v, err = text.iconv("x", "KLINGON", "UTF-8")
assert(v == nil and err:find("unsupported"), err)
v, err = text.iconv("\255", "UTF-8", "CP1251")
assert(v == nil and err:find("byte 0"), err)

-- CSV
eq(text.detect_csv("a;b\n"), ";") eq(text.detect_csv("a,b\n"), ",") eq(text.detect_csv("a\tb\n"), "\t")
local rows = text.csv('\239\187\191Имя;Сумма\r\n"Иванов; И.";"1 234,50"\r\n\r\n"say ""hi""";"a\nb"\r\n')
eq(#rows, 3, "rows (empty line skipped)")
eq(rows[1][1], "Имя", "BOM stripped")
eq(rows[2][1], "Иванов; И.", "quoted separator") eq(rows[2][2], "1 234,50")
eq(rows[3][1], 'say "hi"', "doubled quotes") eq(rows[3][2], "a\nb", "newline in quotes")
rows = text.csv("a;b,c\n", {sep = ","})
eq(rows[1][1], "a;b", "explicit sep")
v, err = text.csv('a,b\n1,"open\n')
assert(v == nil and err == "line 2: unterminated quoted field", err)
assert(not pcall(text.csv, "a", {sep = ";;"}), "bad sep is misuse")
local recs, header = text.csv_records(' Дата мероприятия ;СУММА;Extra\n01.11.2025;1 234,50\n')
eq(header[1], "дата мероприятия", "header trimmed and lower-cased")
eq(recs[1]["дата мероприятия"], "01.11.2025") eq(recs[1]["сумма"], "1 234,50")
eq(recs[1].extra, nil, "missing field is nil")
eq(text.decimal(recs[1]["сумма"]), "1234.50", "money from CSV stays exact")
eq(time.parse_date(recs[1]["дата мероприятия"]), "2025-11-01", "day-first date from CSV")
-- a CP1251 export
local win = text.iconv("Дата;Сумма\n01.11.2025;5,00\n", "UTF-8", "CP1251")
recs = text.csv_records(win, {encoding = "CP1251"})
eq(recs[1]["сумма"], "5,00", "cp1251 csv")
recs = text.csv_records(win, {encoding = "auto"})
eq(recs[1]["дата"], "01.11.2025", "auto encoding")
eq(#text.csv(""), 0, "empty csv")
v, err = text.csv("\255", {encoding = "UTF-16"})
assert(v == nil and err:find("cannot convert"), err)
v, err = text.csv_records("a", {encoding = "NO-SUCH"})
assert(v == nil and err:find("unsupported"), err)

-- strings
eq(text.trim(" \t\194\160 x y \r\n"), "x y", "trim with NBSP")
eq(text.lower("МОСКВА Ёлка ABC"), "москва ёлка abc", "lower cyrillic")
local parts = text.split("a, b,,c", ",%s*")
eq(#parts, 4) eq(parts[2], "b") eq(parts[3], "")
parts = text.split("1.2.3", ".", true)
eq(#parts, 3) eq(parts[3], "3")
eq(#text.split("", ","), 1, "empty string gives one empty field")
assert(not pcall(text.split, "abc", ""), "empty separator raises")
assert(not pcall(text.split, "abc", "x*"), "pattern matching empty raises")
eq(text.starts_with("utm_source", "utm_"), true) eq(text.starts_with("ut", "utm_"), false)
eq(text.ends_with("file.csv", ".csv"), true)

-- decimals
eq(text.decimal("1 234,50"), "1234.50") eq(text.decimal("1234.5"), "1234.5") eq(text.decimal("1 234"), "1234")
eq(text.decimal("1\194\160234,00"), "1234.00", "NBSP") eq(text.decimal("1\226\128\175234"), "1234", "narrow NBSP")
eq(text.decimal("-12,00"), "-12.00") eq(text.decimal(42), "42") eq(text.decimal(12.5), "12.5")
eq(text.decimal("12345678901234567890.12"), "12345678901234567890.12", "no float")
v, err = text.decimal("12 руб.")
assert(v == nil and err == "invalid decimal '12 руб.'", err)
assert(text.decimal("1,234.50") == nil, "mixed separators are ambiguous")
-- decimals with a scale: exact rounding half away from zero, "rounded" when digits were dropped
local function dec(x, scale, want, want_note)
  local got, note = text.decimal(x, scale)
  eq(got, want, string.format("text.decimal(%s, %s)", tostring(x), tostring(scale)))
  eq(note, want_note, string.format("note of text.decimal(%s, %s)", tostring(x), tostring(scale)))
end
dec("1222.03", 2, "1222.03") dec(1222.03, 2, "1222.03") dec(1500, 2, "1500.00") dec(749.99, 2, "749.99")
dec("0.005", 2, "0.01", "rounded") dec("-0.004", 2, "0.00", "rounded") dec("0.004", 2, "0.00", "rounded")
dec("9.995", 2, "10.00", "rounded") dec("-9.995", 2, "-10.00", "rounded") dec("99.5", 0, "100", "rounded")
dec("999.999", 2, "1000.00", "rounded") dec(".5", 0, "1", "rounded") dec("12.3400", 2, "12.34")
dec("12.3450", 2, "12.35", "rounded") dec("1 234,5", 2, "1234.50") dec("-0", 2, "0.00") dec("7", 0, "7")
dec(0.1 + 0.2, 2, "0.30", "rounded") dec(-12.5, 1, "-12.5") dec(1e20, 2, "100000000000000000000.00")
dec(-0.0, 2, "0.00") dec(0.07, 2, "0.07") dec(-1333.33, 2, "-1333.33") dec(2^53, 2, "9007199254740992.00")
dec("12345678901234567890.125", 2, "12345678901234567890.13", "rounded")
eq(text.decimal(0.1 + 0.2), "0.30000000000000004", "shortest round-trip text of a float")
eq(text.decimal(1e-7), "0.0000001", "tiny floats in fixed notation, shortest digits")
-- floats printf writes with an exponent: the point moves in the shortest digits. "%.2f"/"%.20f" made
-- 1e20 "100000000000000000000.00", 1.5e-7 "0.00000015000000000000", -1e-300 zero, and 1e300 a
-- 63-digit number (its 304 characters cut at the buffer's end)
eq(text.decimal(1e20), "100000000000000000000") eq(text.decimal(-2.5e21), "-2500000000000000000000")
eq(text.decimal(1.5e-7), "0.00000015") eq(text.decimal(1.25e-5), "0.0000125")
eq(text.decimal(1e62), "1" .. string.rep("0", 62)) eq(text.decimal(1e20, 2), "100000000000000000000.00")
v, err = text.decimal(1e300) eq(v, nil) eq(err, "decimal too long '1e+300'")
v, err = text.decimal(-1e-300) eq(v, nil) eq(err, "decimal too long '-1e-300'")
v, err = text.decimal(0/0, 2) eq(v, nil) eq(err, "not a finite number")
v, err = text.decimal(math.huge) eq(v, nil) eq(err, "not a finite number")
v, err = text.decimal(string.rep("9", 97)) eq(v, nil) assert(err:find("decimal too long", 1, true), err)
assert(not pcall(text.decimal, {}, 2), "a table is misuse")
assert(not pcall(text.decimal, "1", 39), "scale out of range is misuse")
-- every float a page can carry for money: k/100 round-trips and the fast path agrees with printf
for k = -100000, 100000, 7 do
  local x = k / 100
  local want = string.format("%.2f", x)
  if want == "-0.00" then want = "0.00" end
  eq(text.decimal(x, 2), want, "kopecks " .. k)
end

-- ids as text, whatever type they came in
eq(text.id(12345), "12345") eq(text.id(-7), "-7") eq(text.id(0), "0") eq(text.id(math.mininteger), tostring(math.mininteger))
eq(text.id(123456789012.0), "123456789012", "integral float") eq(text.id(1.5), "1.5") eq(text.id(2^60), tostring(2^60))
eq(text.id("0042"), "0042", "strings as they are") eq(text.id(nil), "") eq(text.id(json.null), "")
eq(text.id({}), "") eq(text.id(true), "") eq(text.id(json.view('{"a":1}')), "")

-- hashes
eq(text.md5(""), "d41d8cd98f00b204e9800998ecf8427e")
eq(text.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
print("text_spec ok")
