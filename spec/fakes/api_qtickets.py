"""QTickets REST v1 under /qtickets/api/rest/v1.

GET lists read filters/paging from a JSON *body*; the query string is ignored like the real one.
Output is PHP json_encode style (\\uXXXX, \\/).
"""

import re

from fakecore import json_response, parse_iso

PREFIX = "/qtickets/api/rest/v1"

OPERATORS = ("=", "!=", "<", ">", "<=", ">=", "in", "not in", "in array", "not in array", "null", "not null")


def err(status, message, **extra):
    body = {"error": message, "status": status}
    body.update(extra)
    return json_response(body, status, "php")


def api_error(code, req, st):
    code = int(code)
    if code == 503:
        return err(503, "Unknown error", code="UNKNOWN_ERROR", info=[])
    return err(code, {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 429: "Too Many Requests"}.get(
        code, "Some error"))


def _norm(v):
    """Comparable form: bools->int, ISO datetimes->epoch, numeric strings->float."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        d = parse_iso(v) if len(v) > 10 else None
        if d is not None and d.tzinfo is not None:
            return d.timestamp()
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _get(obj, column):
    for part in column.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _cmp(a, b, op):
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return False
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    except TypeError:  # e.g. str vs number
        return {"=": str(a) == str(b), "!=": str(a) != str(b)}.get(op, False)


def _sort_key(v):
    n = _norm(v)
    if n is None:
        return (2, 0, "")
    if isinstance(n, (int, float)):
        return (0, n, "")
    return (1, 0, str(n))


def matches(item, cond):
    col, op, val = cond.get("column"), (cond.get("operator") or "=").lower(), cond.get("value")
    cur = _get(item, col)
    if op == "null":
        return cur is None
    if op == "not null":
        return cur is not None
    if op in ("in", "not in"):
        vals = val if isinstance(val, list) else [val]
        hit = any(_cmp(cur, v, "=") for v in vals)
        return hit if op == "in" else not hit
    if op in ("in array", "not in array"):
        arr = cur if isinstance(cur, list) else []
        hit = any(_cmp(x, val, "=") for x in arr)
        return hit if op == "in array" else not hit
    return _cmp(cur, val, op)


def list_items(req, st, items):
    try:
        body = req.json() if req.body.strip() else {}
    except ValueError:
        body = {}  # unverified what the real API does; a broken body acts like no body
    if not isinstance(body, dict):
        body = {}
    where = body.get("where") or []
    if isinstance(where, dict):
        where = [where]
    for c in where:
        if not isinstance(c, dict) or "column" not in c:
            return err(400, "Invalid where condition")
        if (c.get("operator") or "=").lower() not in OPERATORS:
            return err(400, "Unknown operator: %s" % c.get("operator"))
    if not st.cfg("qtickets.ignore_filters"):
        items = [it for it in items if all(matches(it, c) for c in where)]
    order = body.get("orderBy") or {"id": "asc"}
    if isinstance(order, dict):
        for col, direction in reversed(list(order.items())):
            items = sorted(items, key=lambda it: _sort_key(_get(it, col)), reverse=str(direction).lower() == "desc")
    per = int(st.cfg("qtickets.per_page"))
    try:
        page = max(1, int(body.get("page") or 1))
    except (TypeError, ValueError):
        page = 1
    chunk = items[(page - 1) * per: page * per]
    if st.cfg("qtickets.list_without_baskets"):
        chunk = [{k: v for k, v in it.items() if k != "baskets"} for it in chunk]
    data = chunk
    hidden = set(st.cfg("qtickets.hidden_ids") or [])
    if hidden:
        # Items dropped after paging (PHP array_filter on the page): paging.total still counts them,
        # a page with some left is a keyed object, a page with none left is [].
        kept = {str((page - 1) * per + i): it for i, it in enumerate(chunk) if it.get("id") not in hidden}
        data = list(kept.values()) if len(kept) == len(chunk) else (kept or [])
        return json_response({"data": data, "paging": {"perPage": per, "currentPage": page, "total": len(items)}},
                             200, "php")
    if st.cfg("qtickets.php_keyed_pages") and page % 2 == 0 and chunk:
        # PHP's json_encode of an array whose keys are not 0..n-1 (a list after array_filter): an
        # object keyed by the kept indexes, baskets likewise.
        data = {}
        for i, it in enumerate(chunk):
            it = dict(it)
            if isinstance(it.get("baskets"), list) and it["baskets"]:
                it["baskets"] = {str(2 * j): b for j, b in enumerate(it["baskets"])}
            data[str((page - 1) * per + 2 * i)] = it
    return json_response({"data": data, "paging": {"perPage": per, "currentPage": page, "total": len(items)}},
                         200, "php")


def handle(req, st):
    auth = st.auth("qtickets")
    tok = req.bearer()
    if tok is None or tok not in set(auth.get("tokens", [])) | set(auth.get("forbidden_tokens", [])):
        return err(401, "Unauthorized")
    if tok in auth.get("forbidden_tokens", []):
        return err(403, "Forbidden")
    q = st.data.get("qtickets") or {}
    sub, m = req.sub.rstrip("/") or "/", req.method
    if sub == "/orders" and m == "POST":
        return err(503, "Unknown error", code="UNKNOWN_ERROR", info=[])
    if sub in ("/orders", "/events") and m == "GET":
        return list_items(req, st, list(q.get(sub[1:], [])))
    mo = re.fullmatch(r"/(orders|events)/(\d+)", sub)
    if mo and m == "GET":
        obj = next((x for x in q.get(mo.group(1), []) if x.get("id") == int(mo.group(2))), None)
        if obj is None:
            return err(404, "Not found")
        return json_response({"data": obj}, 200, "php")
    if sub.startswith(("/orders", "/events", "/clients", "/shows", "/discounts", "/promo-codes", "/color-themes")):
        return err(405 if m != "GET" else 404, "Not found" if m == "GET" else "Method not allowed")
    return err(404, "Not found")
