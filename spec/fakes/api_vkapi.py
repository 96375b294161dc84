"""Legacy VK API (api.vk.com/method) under /vkapi/method/<name>. Always HTTP 200; errors in the body."""

import html
import json
import time
from collections import defaultdict
from decimal import Decimal

from fakecore import json_response, parse_date, date_range

PREFIX = "/vkapi"

MESSAGES = {
    3: "Unknown method passed",
    5: "User authorization failed: invalid access_token (4).",
    6: "Too many requests per second",
    8: "Invalid request: v (version) is required",
    9: "Flood control",
    100: "One of the parameters specified was missing or invalid",
    600: "Permission denied. You have no access to operations specified with given object(s)",
    601: "Permission denied. You have requested too many actions this day. Try later.",
    603: "Some ads error occurs",
}


def _request_params(req):
    p = req.params()
    out = [{"key": k, "value": v} for k, v in p.items() if k != "access_token"]
    out.append({"key": "oauth", "value": "1"})
    out.append({"key": "method", "value": req.sub.rsplit("/", 1)[-1]})
    return out


def vkerr(req, code, msg=None):
    return json_response({"error": {"error_code": int(code), "error_msg": msg or MESSAGES.get(int(code), "Error"),
                                    "request_params": _request_params(req)}})


def api_error(code, req, st):
    return vkerr(req, code)


def ok(obj):
    return json_response({"response": obj})


def _ids(raw):
    """VK accepts '1,2' or a JSON array '[1,2]'."""
    raw = (raw or "").strip()
    if not raw:
        return None
    if raw.startswith("["):
        return [int(x) for x in json.loads(raw)]
    return [int(x) for x in raw.split(",") if x.strip()]


def _status(s):
    return {"active": 1, "blocked": 0, "deleted": 2}.get(s, 1)


def campaigns(vk):
    return [{"id": p["id"], "type": "normal", "name": p["name"], "status": _status(p["status"]),
             "day_limit": p.get("budget_limit_day", "0").split(".")[0], "all_limit": p.get("budget_limit", "0").split(".")[0],
             "start_time": "0", "stop_time": "0", "create_time": "1727770000", "update_time": "1727780000"}
            for p in vk.get("ad_plans", [])]


def ads(vk, layout=False):
    plan_of_group = {g["id"]: g["ad_plan_id"] for g in vk.get("ad_groups", [])}
    out = []
    for b in vk.get("banners", []):
        url = ((b.get("urls") or {}).get("primary") or {}).get("url", "")
        a = {"id": b["id"], "campaign_id": plan_of_group[b["ad_group_id"]], "ad_format": 9, "cost_type": 0,
             "cpm": "12000", "impressions_limit": 0, "ad_platform": "all", "all_limit": "0", "day_limit": "0",
             "status": _status(b.get("status")), "approved": "2", "name": b.get("name", ""), "link_url": url}
        if layout:
            a = {"id": b["id"], "campaign_id": a["campaign_id"], "ad_format": 9, "cost_type": 0, "video": 0,
                 "title": b.get("name", ""), "description": "", "link_url": url,
                 "link_domain": url.split("/")[2] if "//" in url else "", "preview_link": ""}
        out.append(a)
    return out


def statistics(req, st, vk, p):
    ids_type = p.get("ids_type")
    period = p.get("period")
    if ids_type not in ("ad", "campaign", "client", "office"):
        return vkerr(req, 100, MESSAGES[100] + ": ids_type is invalid")
    if period not in ("day", "overall"):
        return vkerr(req, 100, MESSAGES[100] + ": period (only day and overall are implemented by the fake)")
    try:
        ids = _ids(p.get("ids"))
    except ValueError:
        return vkerr(req, 100, MESSAGES[100] + ": ids")
    if not ids:
        return vkerr(req, 100, MESSAGES[100] + ": ids is undefined")
    stats = vk.get("stats") or {}
    plan_of_group = {g["id"]: g["ad_plan_id"] for g in vk.get("ad_groups", [])}
    members = defaultdict(list)
    for b in vk.get("banners", []):
        members[("ad", b["id"])].append(b["id"])
        members[("campaign", plan_of_group[b["ad_group_id"]])].append(b["id"])
        members[("client", vk.get("account_id"))].append(b["id"])
        members[("office", vk.get("account_id"))].append(b["id"])
    if period == "day":
        d1, d2 = parse_date(p.get("date_from")), parse_date(p.get("date_to"))
        if d1 is None or d2 is None or d1 > d2:
            return vkerr(req, 100, MESSAGES[100] + ": date_from/date_to")
        days = [d.isoformat() for d in date_range(d1, d2)]
    else:
        days = sorted({d for per in stats.values() for d in per})
    out = []
    for i in ids:
        bs = members.get((ids_type if ids_type != "office" else "client", i))
        if bs is None:
            continue  # unknown ids are silently skipped
        rows = []
        acc_all = [0, 0, 0, Decimal(0)]
        for d in days:
            acc = [0, 0, 0, Decimal(0)]
            for b in bs:
                s = stats.get(str(b), {}).get(d)
                if s:
                    acc = [acc[0] + s["shows"], acc[1] + s["clicks"], acc[2] + s["shows"] * 3 // 4,
                           acc[3] + Decimal(s["spent"])]
            if acc[0] == 0 and acc[3] == 0:
                continue  # days without data are omitted
            acc_all = [x + y for x, y in zip(acc_all, acc)]
            if period == "day":
                rows.append({"day": d, "spent": format(acc[3], "f"), "impressions": acc[0], "clicks": acc[1],
                             "reach": acc[2]})
        if period == "overall" and acc_all[0]:
            rows.append({"overall": 0, "spent": format(acc_all[3], "f"), "impressions": acc_all[0],
                         "clicks": acc_all[1], "reach": acc_all[2]})
        out.append({"id": i, "type": ids_type, "stats": rows})
    return ok(out)


def _escaper(st):
    """vkapi.html_escape: string fields as api.vk.com sends them ("&" -> "&amp;", '"' -> "&quot;")."""
    def esc(obj, *fields):
        if st.cfg("vkapi.html_escape"):
            for f in fields:
                if isinstance(obj.get(f), str):
                    obj[f] = html.escape(obj[f], quote=True)
        return obj
    return esc


def handle(req, st):
    if not req.sub.startswith("/method/"):
        return None
    name = req.sub[len("/method/"):]
    p = req.params()
    if p.get("access_token") is None and req.bearer():
        p["access_token"] = req.bearer()
    if p.get("access_token") not in st.auth("vkapi").get("tokens", []):
        return vkerr(req, 5)
    if not p.get("v"):
        return vkerr(req, 8)
    limit = int(st.cfg("vkapi.rps_limit"))
    if limit > 0:
        with st.lock:
            c = st.runtime("vkapi", dict)
            slot = (p["access_token"], int(time.time()))
            c[str(slot)] = c.get(str(slot), 0) + 1
            if c[str(slot)] > limit:
                return vkerr(req, 6)
    vk = st.data.get("vk") or {}
    if name == "ads.getAccounts":
        return ok([{"account_id": vk.get("account_id"), "account_type": "general", "account_status": 1,
                    "account_name": "Fake account", "access_role": "admin"}])
    if name not in ("ads.getCampaigns", "ads.getAds", "ads.getAdsLayout", "ads.getStatistics"):
        return vkerr(req, 3)
    try:
        account = int(p.get("account_id") or 0)
    except ValueError:
        account = 0
    if account != vk.get("account_id"):
        return vkerr(req, 600)
    esc = _escaper(st)
    if name == "ads.getCampaigns":
        want = _ids(p.get("campaign_ids"))
        return ok([esc(c, "name") for c in campaigns(vk) if want is None or c["id"] in want])
    if name in ("ads.getAds", "ads.getAdsLayout"):
        cids, aids = _ids(p.get("campaign_ids")), _ids(p.get("ad_ids"))
        rows = [esc(a, "name", "title", "link_url") for a in ads(vk, name == "ads.getAdsLayout")
                if (cids is None or a["campaign_id"] in cids) and (aids is None or a["id"] in aids)]
        # dev.vk.com: at most 2000 ads are returned; limit/offset apply only without ad_ids and with
        # exactly one campaign in campaign_ids. Anything else is cut at the cap, without an error.
        cap = int(st.cfg("vkapi.ads_cap"))
        if aids is None and cids is not None and len(cids) == 1:
            off = int(p.get("offset") or 0)
            lim = min(int(p.get("limit") or cap), cap)
            return ok(rows[off:off + lim])
        return ok(rows[:cap])
    return statistics(req, st, vk, p)
