-- scripts/lib/utm.lua: UTM tags from ad links, utm_content = <city>_<dd>_<mm>.
local utm = require("utm")
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %q, got %q", what or "value", tostring(b), tostring(a)), 2) end
end

-- a VK banner link as the fake (and real cabinets) write it
local u = utm.parse("https://msk.qtickets.events/24089?utm_source=vk&utm_medium=cpc&utm_campaign=plan_101&utm_content=msk_19_11&utm_term=8372482")
eq(u.utm_source, "vk") eq(u.utm_medium, "cpc") eq(u.utm_campaign, "plan_101")
eq(u.utm_content, "msk_19_11") eq(u.utm_term, "8372482")
eq(u.utm_city, "msk", "city") eq(u.utm_day, 19, "day") eq(u.utm_month, 11, "month")

-- missing tags are '' and 0, never nil
u = utm.parse("https://example.ru/page")
for _, f in ipairs(utm.FIELDS) do eq(u[f], "", f) end
eq(u.utm_city, "") eq(u.utm_day, 0) eq(u.utm_month, 0)
u = utm.parse(nil)
eq(u.utm_source, "") eq(u.utm_day, 0)

-- URL-encoded Cyrillic, '+', spaces trimmed, fragment ignored, scheme-less link
u = utm.parse("vk.com/club1?utm_source=%20VK%20&utm_campaign=%D0%9D%D0%BE%D0%B2%D1%8B%D0%B9+%D0%B3%D0%BE%D0%B4&utm_content=%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0_05_12#x")
eq(u.utm_source, "VK", "trimmed, case kept") eq(u.utm_campaign, "Новый год")
eq(u.utm_city, "москва", "cyrillic city lower-cased") eq(u.utm_day, 5) eq(u.utm_month, 12)

-- utm_content forms
local c, d, m = utm.split_content("Spb_1_2")
eq(c, "spb") eq(d, 1) eq(m, 2)
c, d, m = utm.split_content("nizhny_novgorod_07_03")
eq(c, "nizhny_novgorod", "city with underscore") eq(d, 7) eq(m, 3)
c, d, m = utm.split_content("ekb-05-11")
eq(c, "ekb", "dashes") eq(d, 5) eq(m, 11)
eq(utm.split_content("msk_32_11"), nil, "day out of range")
eq(utm.split_content("msk_01_13"), nil, "month out of range")
eq(utm.split_content("_01_11"), nil, "no city")
eq(utm.split_content("banner_a"), nil, "not the pattern")
eq(utm.split_content("{{campaign_name}}"), nil, "macro")
u = utm.parse("https://x.ru/?utm_content=promo&utm_source={{campaign_id}}")
eq(u.utm_content, "promo") eq(u.utm_city, "") eq(u.utm_day, 0) eq(u.utm_source, "{{campaign_id}}", "macro kept")

-- from_query and common
u = utm.from_query("utm_source=yandex&utm_medium=cpc&utm_content=kzn_03_11")
eq(u.utm_source, "yandex") eq(u.utm_city, "kzn") eq(u.utm_day, 3)
u = utm.from_query({ utm_source = "yandex", utm_term = 5 })
eq(u.utm_term, "", "non-string values are ignored")
local common = utm.common({
  utm.parse("https://a/?utm_source=vk&utm_medium=cpc&utm_content=msk_19_11&utm_term=1"),
  utm.parse("https://b/?utm_source=vk&utm_medium=cpc&utm_content=msk_19_11&utm_term=2"),
})
eq(common.utm_source, "vk") eq(common.utm_content, "msk_19_11") eq(common.utm_term, "", "differs -> ''")
eq(common.utm_city, "msk") eq(common.utm_day, 19)
eq(utm.common({}).utm_source, "")
