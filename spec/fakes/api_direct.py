"""Yandex Direct API v5 under /direct/json/v5: reports (TSV, online/offline 201/202/200) and campaigns.get."""

import datetime as dt
import itertools
import json
import time
import weakref
from collections import defaultdict
from decimal import Decimal, ROUND_HALF_UP

from fakecore import Response, json_response, parse_date

PREFIX = "/direct"
_rid = itertools.count(8695244274068608439)
# direct.freeze_reports: built reports per fake state, kept apart from st.rt so that they outlive data
# changes (POST /_fake/data), as reports stored on Direct's side do.
_stored = weakref.WeakKeyDictionary()

ERROR_STRINGS = {
    52: "Authorization server temporarily unavailable",
    53: "Authorization error",
    54: "No rights",
    56: "Request limit exceeded",
    58: "Incomplete registration",
    152: "Not enough units",
    506: "Exceeded limit on number of connections",
    513: "Your login is not connected to Yandex Direct",
    1000: "Server temporarily unavailable",
    1001: "Service initialization error",
    1002: "Operation error",
    3000: "No API access",
    3001: "No access to the method",
    4000: "Invalid request parameters",
    8000: "Invalid request",
    9000: "Offline report queue limit exceeded",
}
SERVER_ERRORS = {52, 1000, 1001, 1002}

DIMENSIONS = {"Date", "Week", "Month", "CampaignId", "CampaignName", "CampaignType", "AdGroupId", "AdGroupName",
              "AdId"}
METRICS = {"Impressions", "Clicks", "Cost", "Ctr", "AvgCpc", "AvgCpm", "Conversions", "CostPerConversion",
           "ConversionRate"}
MONEY = {"Cost", "AvgCpc", "AvgCpm", "CostPerConversion"}
REPORT_TYPES = {"ACCOUNT_PERFORMANCE_REPORT", "CAMPAIGN_PERFORMANCE_REPORT", "ADGROUP_PERFORMANCE_REPORT",
                "AD_PERFORMANCE_REPORT", "CRITERIA_PERFORMANCE_REPORT", "CUSTOM_REPORT",
                "SEARCH_QUERY_PERFORMANCE_REPORT"}
RELATIVE_RANGES = {"TODAY": (0, 0), "YESTERDAY": (1, 1), "LAST_3_DAYS": (3, 1), "LAST_5_DAYS": (5, 1),
                   "LAST_7_DAYS": (7, 1), "LAST_14_DAYS": (14, 1), "LAST_30_DAYS": (30, 1), "LAST_90_DAYS": (90, 1),
                   "LAST_365_DAYS": (365, 1)}
VAT = Decimal("1.2")


class DirectError(Exception):
    def __init__(self, code, detail=""):
        super().__init__(detail)
        self.code, self.detail = code, detail


def rt(st):
    return st.runtime("direct", lambda: {"reports": {}, "units_spent": {}})


def error_response(code, detail, json_service=False):
    rid = str(next(_rid))
    body = {"error": {"request_id": rid, "error_code": int(code), "error_string": ERROR_STRINGS.get(int(code), "Error"),
                      "error_detail": detail}}
    # Reports: 400 for request errors, 500 for server errors. JSON services answer errors with HTTP 200 (assumption).
    status = 200 if json_service else (500 if int(code) in SERVER_ERRORS else 400)
    return json_response(body, status, "compact", [("RequestId", rid)])


def api_error(code, req, st):
    return error_response(int(code), "Injected error", json_service=req.sub.endswith("/campaigns"))


def _login(req, st):
    tok = req.bearer()
    info = (st.auth("direct").get("tokens") or {}).get(tok) if tok else None
    if info is None:
        raise DirectError(53, "Invalid OAuth token")
    cl = req.header("Client-Login")
    if info.get("agency"):
        if not cl:
            raise DirectError(54, "Client-Login header is required for an agency token")
        if cl not in info.get("clients", []):
            raise DirectError(54, "The login %s is not a client of the agency" % cl)
        return cl
    if cl and cl != info.get("login"):
        raise DirectError(54, "Client-Login %s is not accessible with this token" % cl)
    return info.get("login")


def _units(req, st, login, cost):
    daily = int(st.cfg("direct.units_daily"))
    with st.lock:
        spent = rt(st)["units_spent"].get(login, 0) + cost
        rt(st)["units_spent"][login] = spent
    return [("Units", "%d/%d/%d" % (cost, max(0, daily - spent), daily)), ("Units-Used-Login", login)]


# --------------------------------------------------------------------------- report building


def _date_range(params, st):
    rng = params.get("DateRangeType")
    sc = params.get("SelectionCriteria") or {}
    if rng == "CUSTOM_DATE":
        d1, d2 = parse_date(sc.get("DateFrom")), parse_date(sc.get("DateTo"))
        if d1 is None or d2 is None:
            raise DirectError(8000, "SelectionCriteria.DateFrom and DateTo are required for CUSTOM_DATE")
        if d1 > d2:
            raise DirectError(4000, "DateFrom is later than DateTo")
        return d1, d2
    if "DateFrom" in sc or "DateTo" in sc:
        raise DirectError(4000, "DateFrom/DateTo may be set only with DateRangeType CUSTOM_DATE")
    today = st.now_msk().date()
    if rng in RELATIVE_RANGES:
        back, end = RELATIVE_RANGES[rng]
        return today - dt.timedelta(days=back), today - dt.timedelta(days=end)
    if rng == "ALL_TIME":
        return dt.date(2000, 1, 1), today
    raise DirectError(8000, "Invalid value of DateRangeType: %s" % rng)


def validate(params):
    if not isinstance(params, dict):
        raise DirectError(8000, "params is required")
    for f in ("SelectionCriteria", "FieldNames", "ReportName", "ReportType", "DateRangeType", "Format", "IncludeVAT"):
        if f not in params:
            raise DirectError(8000, "Required field %s is missing" % f)
    if params["Format"] != "TSV":
        raise DirectError(8000, "Format must be TSV")
    if params["ReportType"] not in REPORT_TYPES:
        raise DirectError(8000, "Invalid value of ReportType")
    if params["IncludeVAT"] not in ("YES", "NO"):
        raise DirectError(8000, "IncludeVAT must be YES or NO")
    fields = params["FieldNames"]
    if not isinstance(fields, list) or not fields:
        raise DirectError(8000, "FieldNames must be a non-empty array")
    bad = [f for f in fields if f not in DIMENSIONS | METRICS]
    if bad:
        raise DirectError(4000, "Field(s) not supported by the fake or invalid: %s" % ", ".join(bad))
    if len([f for f in fields if f in ("Date", "Week", "Month")]) > 1:
        raise DirectError(4000, "Date, Week and Month are mutually exclusive")


def _round_micros(x):
    return (x / 10000).quantize(Decimal(1), ROUND_HALF_UP) * 10000


def _money(micros, in_micros):
    if micros is None:
        return "--"
    m = _round_micros(Decimal(micros))
    if in_micros:
        return str(int(m))
    return format((m / Decimal(1000000)).quantize(Decimal("0.01"), ROUND_HALF_UP), "f")


def build_rows(params, st, in_micros):
    d1, d2 = _date_range(params, st)
    di = st.data.get("direct") or {}
    camps = {c["Id"]: c for c in di.get("campaigns", [])}
    groups = {g["Id"]: g for g in di.get("ad_groups", [])}
    sc = params.get("SelectionCriteria") or {}
    filters = sc.get("Filter") or []
    id_filters = [f for f in filters if f.get("Field") in ("CampaignId", "AdGroupId", "AdId")]
    metric_filters = [f for f in filters if f.get("Field") in METRICS]

    def passes(value, f):
        op, vals = f.get("Operator"), [str(v) for v in f.get("Values") or []]
        sv = str(value)
        if op in ("EQUALS", "IN"):
            return sv in vals
        if op in ("NOT_EQUALS", "NOT_IN"):
            return sv not in vals
        try:
            num = Decimal(sv)
            if op == "GREATER_THAN":
                return num > Decimal(vals[0])
            if op == "LESS_THAN":
                return num < Decimal(vals[0])
        except Exception:
            return False
        raise DirectError(4000, "Unsupported filter operator %s" % op)

    fields = params["FieldNames"]
    dims = [f for f in fields if f in DIMENSIONS]
    agg = defaultdict(lambda: {"Impressions": 0, "Clicks": 0, "Cost": 0, "Conversions": None})
    for s in di.get("stats", []):
        day = dt.date.fromisoformat(s["Date"])
        if not (d1 <= day <= d2):
            continue
        if not all(passes(s[f["Field"]], f) for f in id_filters):
            continue
        c = camps.get(s["CampaignId"], {})
        vals = {"Date": s["Date"], "Week": (day - dt.timedelta(days=day.weekday())).isoformat(),
                "Month": day.replace(day=1).isoformat(), "CampaignId": s["CampaignId"],
                "CampaignName": c.get("Name", ""), "CampaignType": c.get("Type", "TEXT_CAMPAIGN"),
                "AdGroupId": s.get("AdGroupId"), "AdGroupName": groups.get(s.get("AdGroupId"), {}).get("Name", ""),
                "AdId": s.get("AdId")}
        a = agg[tuple(vals[d] for d in dims)]
        a["Impressions"] += s["Impressions"]
        a["Clicks"] += s["Clicks"]
        a["Cost"] += s["Cost"]
        if s.get("Conversions") is not None:
            a["Conversions"] = (a["Conversions"] or 0) + s["Conversions"]
    vat = params["IncludeVAT"] == "YES"
    rows = []
    for key, a in agg.items():
        if a["Impressions"] == 0:
            continue  # rows without statistics are not listed
        cost = Decimal(a["Cost"]) if vat else Decimal(a["Cost"]) / VAT
        imp, clk, conv = a["Impressions"], a["Clicks"], a["Conversions"]
        m = {"Impressions": imp, "Clicks": clk,
             "Cost": _money(cost, in_micros),
             "Ctr": format((Decimal(clk) * 100 / imp).quantize(Decimal("0.01"), ROUND_HALF_UP), "f"),
             "AvgCpc": _money(cost / clk if clk else None, in_micros),
             "AvgCpm": _money(cost * 1000 / imp, in_micros),
             "Conversions": "--" if conv is None else conv,
             "CostPerConversion": _money(cost / conv if conv else None, in_micros),
             "ConversionRate": "--" if conv is None or not clk else
             format((Decimal(conv) * 100 / clk).quantize(Decimal("0.01"), ROUND_HALF_UP), "f")}
        if not all(passes(m[f["Field"]], f) for f in metric_filters):
            continue
        row = dict(zip(dims, key))
        row.update(m)
        rows.append(row)
    rows.sort(key=lambda r: tuple(str(r[d]) for d in dims))
    for ob in reversed(params.get("OrderBy") or []):
        f = ob.get("Field")
        if f not in fields:
            raise DirectError(4000, "OrderBy field %s must be in FieldNames" % f)

        def key(r, f=f):
            v = r[f]
            try:
                return (0, Decimal(str(v)), "")
            except Exception:
                return (1, Decimal(0), str(v))
        rows.sort(key=key, reverse=ob.get("SortOrder") == "DESCENDING")
    page = params.get("Page") or {}
    off = int(page.get("Offset", 0))
    rows = rows[off: off + int(page["Limit"])] if "Limit" in page else rows[off:]
    return rows, d1, d2


def _is_true(v):
    return (v or "").strip().lower() == "true"


def render_tsv(params, rows, d1, d2, req):
    lines = []
    if not _is_true(req.header("skipReportHeader")):
        lines.append('"%s (%s - %s)"' % (params["ReportName"], d1.isoformat(), d2.isoformat()))
    if not _is_true(req.header("skipColumnHeader")):
        lines.append("\t".join(params["FieldNames"]))
    for r in rows:
        lines.append("\t".join(str(r[f]) for f in params["FieldNames"]))
    if not _is_true(req.header("skipReportSummary")):
        lines.append("Total rows: %d" % len(rows))
    return ("\n".join(lines) + "\n") if lines else ""


# --------------------------------------------------------------------------- services


def reports(req, st):
    login = _login(req, st)
    try:
        body = req.json()
    except ValueError:
        raise DirectError(8000, "Request body is not valid JSON")
    params = body.get("params") if isinstance(body, dict) else None
    validate(params)
    in_micros = not (req.header("returnMoneyInMicros", "") or "").strip().lower() == "false"
    mode = (req.header("processingMode") or "auto").strip().lower()
    if mode not in ("auto", "online", "offline"):
        raise DirectError(8000, "Invalid processingMode header")
    offline = mode == "offline" or (mode == "auto" and st.cfg("direct.auto_offline"))
    canon = json.dumps(params, sort_keys=True, ensure_ascii=False)
    key = "%s\x00%s" % (login, params["ReportName"])
    rid = str(next(_rid))
    base_headers = [("RequestId", rid)]
    retry_seq = list(st.cfg("direct.retry_in")) or [1]
    with st.lock:
        reps = rt(st)["reports"]
        rep = reps.get(key)
        if rep is None and st.cfg("direct.freeze_reports") and (key, canon, in_micros) in _stored.get(st, {}):
            rep = reps[key] = {"login": login, "name": params["ReportName"], "definition": canon, "ready": True,
                               "polls_left": 0, "retry_idx": 0, "not_before": 0.0, "requests": 0}
        if rep is not None and rep["definition"] != canon:
            raise DirectError(4000, "A report named '%s' with different parameters is already queued or stored; "
                                    "use a unique ReportName" % params["ReportName"])
        if rep is None:
            if offline:
                queued = sum(1 for r in reps.values() if r["login"] == login and not r["ready"])
                if queued >= int(st.cfg("direct.queue_limit")):
                    raise DirectError(9000, "The limit of %d offline reports in the queue is exceeded"
                                      % int(st.cfg("direct.queue_limit")))
            rep = reps[key] = {"login": login, "name": params["ReportName"], "definition": canon,
                               "ready": not offline, "polls_left": int(st.cfg("direct.offline_polls")),
                               "retry_idx": 0, "not_before": 0.0, "requests": 0}
            if offline:
                return _pending(201, rep, retry_seq, reps, login, base_headers, req, st)
        rep["requests"] += 1
        if not rep["ready"]:
            early = st.cfg("direct.enforce_retry_in") and time.monotonic() < rep["not_before"]
            if early or rep["polls_left"] > 0:
                if not early:
                    rep["polls_left"] -= 1
                return _pending(202, rep, retry_seq, reps, login, base_headers, req, st)
            rep["ready"] = True
    skey = (key, canon, in_micros)
    with st.lock:
        frozen = _stored.get(st, {}).get(skey) if st.cfg("direct.freeze_reports") else None
    if frozen is None:
        frozen = build_rows(params, st, in_micros)
        if st.cfg("direct.freeze_reports"):
            with st.lock:
                _stored.setdefault(st, {})[skey] = frozen
    rows, d1, d2 = frozen
    tsv = render_tsv(params, rows, d1, d2, req)
    headers = base_headers + _units(req, st, login, 10 + len(rows) // 2000)
    return Response(200, tsv, headers, "text/tab-separated-values; charset=utf-8")


def _pending(status, rep, retry_seq, reps, login, headers, req, st):
    retry = int(retry_seq[min(rep["retry_idx"], len(retry_seq) - 1)])
    rep["retry_idx"] += 1
    rep["not_before"] = time.monotonic() + retry
    in_queue = sum(1 for r in reps.values() if r["login"] == login and not r["ready"])
    h = headers + [("retryIn", str(retry)), ("reportsInQueue", str(in_queue))] + _units(req, st, login, 0)
    return Response(status, b"", h)


CAMPAIGN_FIELDS = {"Id", "Name", "State", "Status", "Type", "StatusPayment", "Currency", "StartDate"}


def campaigns(req, st):
    login = _login(req, st)
    try:
        body = req.json()
    except ValueError:
        raise DirectError(8000, "Request body is not valid JSON")
    if not isinstance(body, dict) or body.get("method") != "get":
        raise DirectError(8000, "Only method get is implemented by the fake")
    params = body.get("params") or {}
    fields = params.get("FieldNames")
    if not fields:
        raise DirectError(8000, "params.FieldNames is required")
    bad = [f for f in fields if f not in CAMPAIGN_FIELDS]
    if bad:
        raise DirectError(8000, "Invalid FieldNames: %s" % ", ".join(bad))
    sc = params.get("SelectionCriteria") or {}
    items = [c for c in (st.data.get("direct") or {}).get("campaigns", [])
             if (not sc.get("Ids") or c["Id"] in [int(x) for x in sc["Ids"]])
             and (not sc.get("States") or c["State"] in sc["States"])
             and (not sc.get("Statuses") or c["Status"] in sc["Statuses"])
             and (not sc.get("Types") or c["Type"] in sc["Types"])]
    items.sort(key=lambda c: c["Id"])
    page = params.get("Page") or {}
    limit, off = min(int(page.get("Limit", 10000)), 10000), int(page.get("Offset", 0))
    chunk = items[off: off + limit]
    result = {"Campaigns": [{f: c.get(f) for f in fields} for c in chunk]}
    if off + limit < len(items):
        result["LimitedBy"] = off + limit
    rid = str(next(_rid))
    return json_response({"result": result}, 200, "compact", [("RequestId", rid)] + _units(req, st, login, 10 + len(chunk)))


def handle(req, st):
    sub = req.sub.rstrip("/")
    service = {"/json/v5/reports": reports, "/json/v5/campaigns": campaigns}.get(sub)
    if service is None:
        return None
    if req.method != "POST":
        return error_response(8000, "Use POST", json_service=service is campaigns)
    try:
        return service(req, st)
    except DirectError as e:
        return error_response(e.code, e.detail, json_service=service is campaigns)
