-- money: amounts as integer kopecks, so sums and comparisons stay exact, and back to the decimal
-- text a Decimal(18,2) column takes. Used by qtickets_map (API payloads) and sales_csv (reports).
local M = {}

-- Plain decimal text ("-1234.5", ".05", "7"; what text.decimal returns) -> kopecks. More than two
-- fraction digits are rounded half away from zero; the second result is "rounded" then, so callers
-- can count it. nil, err when it is not such a number or is too large.
function M.cents(s)
  local sign, ip, fp = s:match("^([-+]?)(%d*)%.?(%d*)$")
  if not sign or (ip == "" and fp == "") then return nil, "invalid decimal '" .. s .. "'" end
  if #ip > 16 then return nil, "amount too large '" .. s .. "'" end
  local n = math.tointeger(tonumber(ip ~= "" and ip or "0")) * 100 + math.tointeger(tonumber((fp .. "00"):sub(1, 2)))
  local rounded
  if #fp > 2 then
    if fp:sub(3):find("[1-9]") then rounded = "rounded" end
    if tonumber(fp:sub(3, 3)) >= 5 then n = n + 1 end
  end
  if sign == "-" then n = -n end
  return n, rounded
end

-- Kopecks -> decimal text with two fraction digits ("1222.03", "-0.50").
function M.from_cents(n)
  local neg = n < 0
  if neg then n = -n end
  return string.format("%s%d.%02d", neg and "-" or "", n // 100, n % 100)
end

return M
