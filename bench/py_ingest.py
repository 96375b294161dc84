#!/usr/bin/env python3
"""The ingest benchmark's Python contender: the same job as bench/ingest.lua, written the way the
original system was (Python 3 standard library only: http.client, json, datetime, decimal).

Pages are fetched one after another on one keep-alive connection (a GET with a JSON body, as the
QTickets API wants), each order is mapped like scripts/lib/qtickets_map.lua's order_rows (ids as
text, money as exact decimals, ISO times converted to Moscow wall time), and basket rows are posted
to ClickHouse as JSONEachRow in batches of 10,000 rows.

    python3 bench/py_ingest.py --base URL --ch URL --table DB.TABLE [--dump FILE]

--dump writes the JSONEachRow lines to FILE instead of ClickHouse (bench/ingest.py uses it to
prepare the curl floor's pre-mapped rows). Prints one JSON line with the counts at the end.
"""

import argparse
import datetime as dt
import http.client
import json
import sys
import time
import urllib.parse
from decimal import Decimal, ROUND_HALF_UP, InvalidOperation

MSK = dt.timezone(dt.timedelta(hours=3))
BATCH = 10000


def s(v):
    if v is None or isinstance(v, (dict, list, bool)):
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        return "%d" % v
    return str(v)


def money(v, default):
    if v is None or isinstance(v, bool):
        return default
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v).strip())
    except InvalidOperation:
        return default
    if not d.is_finite():
        return default
    return str(d.quantize(Decimal("0.01"), ROUND_HALF_UP))


def ts(v):
    if not isinstance(v, str) or not v:
        return None
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=MSK)
    return t.astimezone(MSK).strftime("%Y-%m-%d %H:%M:%S")


def truthy(v):
    if v is None or v is False:
        return False
    if v is True:
        return True
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, str):
        return v.lower() not in ("", "0", "false", "no")
    return False


def in_window(o, lo, hi):
    if not isinstance(o, dict) or not truthy(o.get("payed")):
        return False
    p = o.get("payed_at")
    if not isinstance(p, str):
        return False
    try:
        e = dt.datetime.fromisoformat(p).timestamp()
    except ValueError:
        return False
    return lo <= e < hi


def basket_rows(o, ver):
    order_id, event_id = s(o.get("id")), s(o.get("event_id"))
    payed_at = ts(o.get("payed_at"))
    created_at = ts(o.get("created_at")) or payed_at or "1970-01-01 03:00:00"
    sale_ts = payed_at or created_at
    rows = []
    for b in o.get("baskets") or []:
        if not isinstance(b, dict):
            continue
        q = b.get("quantity")
        try:
            qty = max(0, int(q)) if q is not None else 1
        except (TypeError, ValueError):
            qty = 1
        price = money(b.get("price"), "0.00")
        ra = money(b.get("refunded_amount"), None)
        rows.append({
            "basket_id": s(b.get("id")), "order_id": order_id, "event_id": event_id, "show_id": s(b.get("show_id")),
            "price": Decimal(price), "original_price": Decimal(money(b.get("original_price"), price)),
            "quantity": qty, "deleted_at": ts(b.get("deleted_at")), "refunded_at": ts(b.get("refunded_at")),
            "refunded_amount": None if ra is None else Decimal(ra), "sale_ts": sale_ts, "_ver": ver,
        })
    return rows


class DecimalText:
    """ClickHouse 18.16 wants Decimal columns as bare JSON numbers, digit for digit."""

    def encode_row(self, row):
        parts = []
        for k, v in row.items():
            if isinstance(v, Decimal):
                parts.append('"%s":%s' % (k, v))
            else:
                parts.append('"%s":%s' % (k, json.dumps(v, ensure_ascii=False)))
        return "{" + ",".join(parts) + "}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--ch")
    ap.add_argument("--table", required=True)
    ap.add_argument("--dump")
    args = ap.parse_args()
    u = urllib.parse.urlsplit(args.base)
    api = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    path = u.path.rstrip("/") + "/orders"
    headers = {"Authorization": "Bearer qt-test-token", "Accept": "application/json",
               "Content-Type": "application/json"}
    cu = None
    if not args.dump:
        cu = urllib.parse.urlsplit(args.ch)
        insert = "/?query=" + urllib.parse.quote("INSERT INTO %s FORMAT JSONEachRow" % args.table)
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    enc = DecimalText()
    ver = int(time.time() * 1000)
    lo = dt.datetime(2025, 1, 1, tzinfo=MSK).timestamp()
    hi = dt.datetime(2027, 1, 1, tzinfo=MSK).timestamp()
    batch, nbatch = [], 0
    counts = {"pages": 0, "orders": 0, "rows": 0, "filtered_out": 0}

    def flush():
        nonlocal batch, nbatch
        if not batch:
            return
        data = "".join(batch).encode("utf-8")
        if dump:
            dump.write(data.decode("utf-8"))
        else:
            # A connection per insert: ClickHouse drops keep-alive connections idle for 3 s, which
            # a slow source easily leaves between two batches.
            chc = http.client.HTTPConnection(cu.hostname, cu.port, timeout=120)
            chc.request("POST", insert, body=data)
            r = chc.getresponse()
            out = r.read()
            chc.close()
            if r.status != 200:
                sys.exit("ClickHouse: HTTP %d %s" % (r.status, out[:300]))
        batch, nbatch = [], 0

    page, pages = 1, 1
    while page <= pages:
        body = json.dumps({"where": [{"column": "payed", "value": 1}], "orderBy": {"id": "asc"}, "page": page})
        api.request("GET", path, body=body, headers=headers)
        r = api.getresponse()
        raw = r.read()
        if r.status != 200:
            sys.exit("page %d: HTTP %d" % (page, r.status))
        v = json.loads(raw)
        if page == 1:
            pages = max(1, (int(v["paging"]["total"]) + 49) // 50)
        counts["pages"] += 1
        for o in v["data"]:
            if not in_window(o, lo, hi):
                counts["filtered_out"] += 1
                continue
            rows = basket_rows(o, ver)
            counts["orders"] += 1
            counts["rows"] += len(rows)
            for row in rows:
                batch.append(enc.encode_row(row))
            nbatch += len(rows)
            if nbatch >= BATCH:
                flush()
        page += 1
    flush()
    if dump:
        dump.close()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
