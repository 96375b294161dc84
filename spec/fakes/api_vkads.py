"""VK Ads API v2 (myTarget engine) under /vkads (base URL http://127.0.0.1:PORT/vkads, paths /vkads/api/v2/...)."""

import datetime as dt
import hashlib
import itertools
import re
import time
from collections import defaultdict
from decimal import Decimal

from fakecore import Response, dec, dec_str, json_response, parse_date, date_range

PREFIX = "/vkads"
_counter = itertools.count(1)

LIST_RESOURCES = {
    # resource: (data key, default fields)
    "ad_plans": ("ad_plans", ["id", "name", "status"]),
    "ad_groups": ("ad_groups", ["id", "name", "status"]),
    "campaigns": ("ad_groups", ["id", "name", "status"]),  # legacy name, answers with ad-group ids
    "banners": ("banners", ["id", "ad_group_id", "status"]),
}
STAT_OBJECTS = {"banners": "ERR_WRONG_BANNERS", "ad_groups": "ERR_WRONG_ADGROUPS",
                "campaigns": "ERR_WRONG_CAMPAIGNS", "ad_plans": "ERR_WRONG_ADPLANS"}
METRIC_SETS = {"all", "base", "events", "video", "uniques", "tps", "playable", "romi", "carousel", "moat",
               "uniques_video"}


def rt(st):
    return st.runtime("vkads", lambda: {"tokens": {}, "refresh": {}, "rate": {}})


def verr(status, code, message, headers=None):
    return json_response({"error": {"message": message, "code": code}}, status, "compact", headers)


def api_error(code, req, st):
    code = str(code)
    if code in ("invalid_token", "expired_token", "revoked_token", "invalid_client", "invalid_user"):
        return unauthorized(code, {"expired_token": "Access token is expired"}.get(code, "Unknown access token"))
    if code == "429":
        return verr(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
    status = {"ERR_ACCESS_DENIED": 403, "ERR_WRONG_RESOURCE": 404, "ERR_INTERNAL": 500}.get(code, 400)
    if code.isdigit():
        status, code = int(code), "ERR_INTERNAL" if int(code) >= 500 else "ERR_WRONG_PARAMETER"
    return verr(status, code, "Injected error")


def unauthorized(code, text):
    return json_response({"code": code, "message": text}, 401, "compact", [
        ("WWW-Authenticate", 'Bearer realm="api", error="%s", error_description="%s"' % (code, text))])


# --------------------------------------------------------------------------- OAuth


def _client(st, cid, secret):
    return next((c for c in st.auth("vkads").get("clients", [])
                 if c["client_id"] == cid and c["client_secret"] == secret), None)


def _issue(st, cid, user):
    n = next(_counter)
    at = "vkat" + hashlib.sha256(("%s%s%s" % (cid, user, n)).encode()).hexdigest()[:40]
    rf = "vkrt" + hashlib.sha256(("r%s%s%s" % (cid, user, n)).encode()).hexdigest()[:40]
    r = rt(st)
    r["tokens"][at] = {"client_id": cid, "user": user, "issued": st.now(), "refresh_token": rf}
    r["refresh"][rf] = at
    return at, rf


def _live(st, cid, user):
    return [t for t, i in rt(st)["tokens"].items() if i["client_id"] == cid and i["user"] == user]


def _token_body(st, at, rf, tokens_left):
    return {"access_token": at, "token_type": "bearer", "scope": "read_ads read_payments create_ads",
            "expires_in": str(int(st.cfg("vkads.token_lifetime"))), "refresh_token": rf, "tokens_left": tokens_left}


def oauth_token(req, st):
    f = req.form()
    gt = f.get("grant_type")
    client = _client(st, f.get("client_id"), f.get("client_secret"))
    if client is None:
        return json_response({"error": "invalid_client", "error_description": "Invalid client id or secret"}, 401)
    cap = int(st.cfg("vkads.max_tokens"))
    with st.lock:
        if gt == "refresh_token":
            old = rt(st)["refresh"].pop(f.get("refresh_token"), None)
            info = rt(st)["tokens"].pop(old, None) if old else None
            if info is None or info["client_id"] != client["client_id"]:
                return json_response({"error": "invalid_grant", "error_description": "Invalid refresh token"}, 400)
            at, rf = _issue(st, info["client_id"], info["user"])
            return json_response(_token_body(st, at, rf, cap - len(_live(st, info["client_id"], info["user"]))))
        if gt == "client_credentials":
            user = "self"
        elif gt == "agency_client_credentials":
            user = f.get("agency_client_name") or f.get("agency_client_id")
            if user not in [str(x) for x in client.get("agency_clients", [])]:
                return json_response({"error": "invalid_request",
                                      "error_description": "Unknown agency client: %s" % user}, 400)
        else:
            return json_response({"error": "unsupported_grant_type",
                                  "error_description": "Grant type %s is not supported" % gt}, 400)
        live = _live(st, client["client_id"], user)
        if len(live) >= cap:
            return json_response({"error": "invalid_request",
                                  "error_description": "Active access token limit reached"}, 403)
        at, rf = _issue(st, client["client_id"], user)
        return json_response(_token_body(st, at, rf, cap - len(live) - 1))


def oauth_delete(req, st):
    f = req.form()
    client = _client(st, f.get("client_id"), f.get("client_secret"))
    if client is None:
        return json_response({"error": "invalid_client", "error_description": "Invalid client id or secret"}, 401)
    user = f.get("username") or f.get("user_id") or f.get("agency_client_name") or "self"
    with st.lock:
        r = rt(st)
        for t in _live(st, client["client_id"], user):
            r["refresh"].pop(r["tokens"].pop(t)["refresh_token"], None)
    return Response(204, b"")


def check_token(req, st):
    tok = req.bearer()
    if tok and tok in st.auth("vkads").get("static_tokens", []):
        return None
    info = rt(st)["tokens"].get(tok) if tok else None
    if info is None:
        return unauthorized("invalid_token", "Unknown access token")
    if st.now() - info["issued"] >= float(st.cfg("vkads.token_lifetime")):
        return unauthorized("expired_token", "Access token is expired")
    return None


# --------------------------------------------------------------------------- rate limits


def rate_limit(req, st):
    """Count this request; returns (headers, over_limit)."""
    key = req.bearer() or req.client[0]
    now = time.time()
    windows = {"RPS": (int(now), int(st.cfg("vkads.rps_limit"))),
               "Hourly": (int(now // 3600), int(st.cfg("vkads.hourly_limit"))),
               "Daily": (int((now + 3 * 3600) // 86400), int(st.cfg("vkads.daily_limit")))}  # MSK days
    headers, over = [], False
    with st.lock:
        counters = rt(st)["rate"].setdefault(key, {})
        for name, (slot, limit) in windows.items():
            c = counters.get(name)
            if not c or c[0] != slot:
                c = counters[name] = [slot, 0]
            c[1] += 1
            if limit > 0:
                over = over or c[1] > limit
                headers += [("X-RateLimit-%s-Limit" % name, str(limit)),
                            ("X-RateLimit-%s-Remaining" % name, str(max(0, limit - c[1])))]
    return headers, over


# --------------------------------------------------------------------------- lists


def _coerce(sample, v):
    if isinstance(sample, int) and not isinstance(sample, bool):
        try:
            return int(v)
        except ValueError:
            return v
    return v


def _filter(items, req):
    for key, vals in req.query.items():
        if not key.startswith("_"):
            continue
        field, _, op = key[1:].partition("__")
        raw = vals[0]

        def ok(it, field=field, op=op, raw=raw):
            cur = it.get(field)
            if op == "in":
                return cur in [_coerce(cur, x) for x in raw.split(",")]
            v = _coerce(cur, raw)
            try:
                return {"": cur == v, "ne": cur != v, "lt": cur < v, "lte": cur <= v, "gt": cur > v,
                        "gte": cur >= v}[op]
            except (TypeError, KeyError):
                return False
        items = [it for it in items if ok(it)]
    return items


def list_resource(req, st, resource):
    key, default_fields = LIST_RESOURCES[resource]
    items = list((st.data.get("vk") or {}).get(key, []))
    try:
        limit = int(req.q("limit", "20"))
        offset = int(req.q("offset", "0"))
    except ValueError:
        return verr(400, "ERR_WRONG_PARAMETER", "limit/offset must be integers")
    if limit < 1 or limit > int(st.cfg("vkads.max_limit")):
        return verr(400, "ERR_WRONG_PARAMETER", "limit: Ensure this value is less than or equal to %d."
                    % int(st.cfg("vkads.max_limit")))
    if offset < 0:
        return verr(400, "ERR_WRONG_PARAMETER", "offset: Ensure this value is greater than or equal to 0.")
    fields = [f for f in (req.q("fields") or "").split(",") if f] or default_fields
    known = set().union(*[set(i) for i in items]) if items else set(fields)
    bad = [f for f in fields if f not in known]
    if bad:
        return verr(400, "ERR_WRONG_PARAMETER", "fields: unknown field(s) %s" % ",".join(bad))
    items = _filter(items, req)
    for s in reversed([s for s in (req.q("sorting") or "id").split(",") if s]):
        name = s.lstrip("-")
        items.sort(key=lambda it: (it.get(name) is None, it.get(name) if it.get(name) is not None else 0),
                   reverse=s.startswith("-"))
    page = items[offset: offset + limit]
    out = [{f: it.get(f) for f in (["id"] + [f for f in fields if f != "id"])} for it in page]
    body = {"count": len(items), "offset": offset, "limit": limit, "items": out}
    if st.cfg("vkads.omit_count"):
        del body["count"]
    return json_response(body)


# --------------------------------------------------------------------------- statistics


def _members(vk, obj):
    """object id -> list of banner ids."""
    groups_of_plan = defaultdict(list)
    for g in vk.get("ad_groups", []):
        groups_of_plan[g["ad_plan_id"]].append(g["id"])
    banners_of_group = defaultdict(list)
    for b in vk.get("banners", []):
        banners_of_group[b["ad_group_id"]].append(b["id"])
    if obj == "banners":
        return {b["id"]: [b["id"]] for b in vk.get("banners", [])}
    if obj in ("ad_groups", "campaigns"):
        return {g["id"]: banners_of_group[g["id"]] for g in vk.get("ad_groups", [])}
    return {p["id"]: [b for g in groups_of_plan[p["id"]] for b in banners_of_group[g]] for p in vk.get("ad_plans", [])}


def base_block(shows, clicks, goals, spent):
    spent = dec(spent)
    return {"shows": shows, "clicks": clicks, "goals": goals, "spent": dec_str(spent), "not_ad_spent": "0",
            "cpm": dec_str(spent / shows * 1000) if shows else "0",
            "cpc": dec_str(spent / clicks) if clicks else "0",
            "cpa": dec_str(spent / goals) if goals else "0",
            "ctr": clicks / shows * 100 if shows else 0,
            "cr": goals / clicks * 100 if clicks else 0,
            "vk": {"goals": 0, "cpa": "0", "cr": 0}}


def _blocks(sets, acc):
    out = {}
    for s in sets:
        if s in ("base", "all"):
            out["base"] = base_block(*acc)
        if s != "base":
            for extra in ([s] if s != "all" else sorted(METRIC_SETS - {"all", "base"})):
                out[extra] = {}
    return out


def statistics(req, st, obj, period):
    vk = st.data.get("vk") or {}
    ids_raw = req.q("id")
    if not ids_raw:
        return verr(400, "ERR_WRONG_PARAMETER", "id: This field is required.")
    try:
        ids = [int(x) for x in ids_raw.split(",") if x.strip()]
    except ValueError:
        return verr(400, "ERR_WRONG_PARAMETER", "id: must be a comma-separated list of integers")
    if len(ids) > int(st.cfg("vkads.max_ids")):
        return verr(400, "ERR_LIMIT_EXCEEDED", "Too many objects requested: %d > %d" % (len(ids), int(st.cfg("vkads.max_ids"))))
    members = _members(vk, obj)
    unknown = [i for i in ids if i not in members]
    if unknown:
        return verr(400, STAT_OBJECTS[obj], "Wrong %s ids: %s" % (obj, ",".join(map(str, unknown))))
    sets = [s for s in (req.q("metrics") or "base").split(",") if s]
    if any(s not in METRIC_SETS for s in sets):
        return verr(400, "ERR_WRONG_PARAMETER", "metrics: unknown metric set")
    d1, d2 = parse_date(req.q("date_from")), parse_date(req.q("date_to"))
    stats = vk.get("stats") or {}
    if period == "day":
        if d1 is None or d2 is None:
            return verr(400, "ERR_WRONG_DATE", "date_from and date_to are required (YYYY-MM-DD)")
        if d1 > d2:
            return verr(400, "ERR_WRONG_DATE", "date_from is greater than date_to")
        if (d2 - d1).days + 1 > int(st.cfg("vkads.max_days")):
            return verr(400, "ERR_WRONG_DATE", "Period is too long: max %d days" % int(st.cfg("vkads.max_days")))
    else:  # summary: whole history unless bounded
        d1 = d1 or dt.date(2000, 1, 1)
        d2 = d2 or dt.date(2100, 1, 1)

    def acc_for(banners, days):
        a = [0, 0, 0, Decimal(0)]
        for b in banners:
            per = stats.get(str(b), {})
            for d in days:
                s = per.get(d)
                if s:
                    a[0] += s["shows"]
                    a[1] += s["clicks"]
                    a[2] += s.get("goals", 0)
                    a[3] += Decimal(s["spent"])
        return a

    items, grand = [], [0, 0, 0, Decimal(0)]
    if period == "day":
        days = [d.isoformat() for d in date_range(d1, d2)]
    else:
        days = sorted({d for per in stats.values() for d in per if d1.isoformat() <= d <= d2.isoformat()})
    for i in ids:
        total = acc_for(members[i], days)
        grand = [x + y for x, y in zip(grand, total)]
        item = {"id": i}
        if period == "day":
            item["rows"] = [dict(date=d, **_blocks(sets, acc_for(members[i], [d]))) for d in days]
        item["total"] = _blocks(sets, total)
        items.append(item)
    return json_response({"items": items, "total": _blocks(sets, grand)})


# --------------------------------------------------------------------------- dispatch


def handle(req, st):
    sub = req.sub
    if not sub.startswith("/api/"):
        return None
    rl_headers, over = rate_limit(req, st)
    resp = _route(req, st, sub, over)
    for k, v in rl_headers:
        resp.set_header(k, v)
    return resp


def _route(req, st, sub, over):
    if sub == "/api/v2/oauth2/token.json" and req.method == "POST":
        return oauth_token(req, st)
    if sub == "/api/v2/oauth2/token/delete.json" and req.method == "POST":
        return oauth_delete(req, st)
    bad = check_token(req, st)
    if bad:
        return bad
    if over:
        return verr(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
    if req.method != "GET":
        return verr(405, "ERR_WRONG_PARAMETER", "Method not allowed")
    m = re.fullmatch(r"/api/v2/(ad_plans|ad_groups|campaigns|banners)\.json", sub)
    if m:
        return list_resource(req, st, m.group(1))
    m = re.fullmatch(r"/api/v2/statistics/(banners|ad_groups|campaigns|ad_plans)/(day|summary)\.json", sub)
    if m:
        return statistics(req, st, m.group(1), m.group(2))
    if sub == "/api/v2/throttling.json":
        lim = int(st.cfg("vkads.rps_limit"))
        return json_response({"STATISTICS": {"v2": {"READ": {"remaining": {"1": lim}, "limits": {"1": lim}}}}})
    if re.fullmatch(r"/api/v2/statistics/\w+/(day|summary)\.json", sub):
        return verr(404, "ERR_WRONG_RESOURCE", "Unknown statistics object")
    return verr(404, "ERR_WRONG_RESOURCE", "Not found")
