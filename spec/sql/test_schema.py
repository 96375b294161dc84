"""End-to-end tests of the ClickHouse schema in sql/ against a real server.

Run:  python3 -m unittest spec/sql/test_schema.py -v
Env:  ZHOST_TEST_CH_URL (default http://127.0.0.1:18200), a server with timezone Europe/Moscow;
      ZHOST_TEST_CH_SETTINGS extra URL settings for every query (e.g. join_use_nulls=1);
      ZHOST_TEST_KEEP_DB=1 keeps the test databases for inspection.

What it does:
  * applies every sql/NNNN_*.sql the way `zhost migrate` does (split on a line ending in ';'
    outside quotes, whole-line '--' comments stripped, `zakaz.` and `bi.` rewritten to fresh
    database names zakaz_t<rand> / bi_t<rand>), records versions in schema_migrations, applies
    again (no-op), and re-executes every statement once more ignoring bookkeeping (harmless);
  * loads hand-made staging rows: duplicates at higher _ver, spool replays at the same _ver,
    a refund arriving later, a refund undone, deleted baskets and orders, unpaid orders, two
    events with the same name/city/day, Gmail rows on days with and without API rows,
    VK and Direct rows re-loaded with different values;
  * asserts exact figures in every view, runs the operators' runbook SQL unchanged, then
    re-loads everything at a higher _ver and merges all tables (OPTIMIZE FINAL) and asserts
    the same figures again.
Only the Python 3 standard library is used.
"""
import datetime
import glob
import hashlib
import json
import os
import random
import re
import unittest
import urllib.error
import urllib.request

URL = os.environ.get("ZHOST_TEST_CH_URL", "http://127.0.0.1:18200")
# extra settings for every query, e.g. ZHOST_TEST_CH_SETTINGS=join_use_nulls=1
SETTINGS = os.environ.get("ZHOST_TEST_CH_SETTINGS", "")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SQL_DIR = os.path.join(ROOT, "sql")
# The original system's operators' runbook, kept in the repo: its queries are the schema's contract.
RUNBOOK = os.environ.get("ZHOST_RUNBOOK") or os.path.join(ROOT, "spec", "fixtures", "runbook-integrations.ru.md")

SUFFIX = "%06d" % random.randrange(10 ** 6)
DB = "zakaz_t" + SUFFIX
BI = "bi_t" + SUFFIX


class CHError(Exception):
    pass


def ch(sql, body=None):
    """POST one statement; returns the response text, raises CHError on non-200."""
    data = (sql if body is None else sql + "\n" + body).encode("utf-8")
    base, _, query = URL.partition("?")
    params = "&".join(p for p in (query, "wait_end_of_query=1", SETTINGS) if p)
    req = urllib.request.Request(base.rstrip("/") + "/?" + params, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        raise CHError("%s\n--- statement:\n%s" % (e.read().decode("utf-8", "replace")[:1500], sql[:1500]))


def rows(sql):
    """SELECT -> list of tuples of strings (TSV, NULL as None)."""
    out = ch(sql.rstrip().rstrip(";") + "\nFORMAT TSV")
    res = []
    for line in out.split("\n"):
        if line == "":
            continue
        res.append(tuple(None if f == "\\N" else f.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")
                         for f in line.split("\t")))
    return res


def subst(text, db=None, bi=None):
    """The applier's textual substitution of database qualifiers."""
    return text.replace("zakaz.", (db or DB) + ".").replace("bi.", (bi or BI) + ".")


def split_statements(text):
    """The applier's splitter: whole-line -- comments dropped, a statement ends at a line
    ending in ';' when not inside a quoted string."""
    stmts, cur, quote = [], [], None
    for line in text.split("\n"):
        if line.strip().startswith("--"):
            continue
        i = 0
        while i < len(line):
            ch_ = line[i]
            if quote:
                if ch_ == "\\":
                    i += 1
                elif ch_ == quote:
                    quote = None
            elif ch_ in "'\"`":
                quote = ch_
            i += 1
        cur.append(line)
        if quote is None and line.rstrip().endswith(";"):
            s = "\n".join(cur).strip()
            s = s[:-1].strip()
            if s:
                stmts.append(s)
            cur = []
    rest = "\n".join(cur).strip()
    if rest:
        stmts.append(rest)
    return stmts


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def migration_files():
    files = sorted(glob.glob(os.path.join(SQL_DIR, "*.sql")))
    out = []
    for f in files:
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", os.path.basename(f))
        if not m:
            raise AssertionError("bad migration file name: %s" % f)
        out.append((int(m.group(1)), m.group(2), f))
    return out


def view_definitions(max_version=None):
    """{view: (version, CREATE VIEW statement)}: the definition in force after applying the
    migrations up to max_version (all when None), i.e. the last file that creates each view."""
    out = {}
    for version, _, path in migration_files():
        if max_version is not None and version > max_version:
            break
        for st in split_statements(read_text(path)):
            m = re.match(r"CREATE VIEW IF NOT EXISTS ((?:zakaz|bi)\.\w+) AS", st)
            if m:
                out[m.group(1)] = (version, st)
    return out


# A subquery in a JOIN must have an alias: current ClickHouse (joined_subquery_requires_alias=1,
# the default since 20.3) rejects the query with ALIAS_REQUIRED otherwise, 18.16 accepts both.
# The views are written "(subquery) AS name" on both sides of every JOIN, so a closing parenthesis
# right before a JOIN keyword, USING or ON is a subquery without an alias.
UNALIASED_JOIN_SIDE = re.compile(r"\)\s*(?:(?:GLOBAL|ALL|ANY|ASOF|SEMI|ANTI)\s+)*(?:(?:INNER|LEFT|RIGHT|FULL|CROSS)\s+)?"
                                 r"(?:OUTER\s+)?JOIN\b|\)\s*(?:USING|ON)\b", re.I)


def migrate():
    """What `zhost migrate` does: create databases and bookkeeping, apply pending files."""
    ch("CREATE DATABASE IF NOT EXISTS %s" % DB)
    ch("CREATE DATABASE IF NOT EXISTS %s" % BI)
    ch("CREATE TABLE IF NOT EXISTS %s.schema_migrations (version UInt32, name String, checksum String, "
       "applied_at DateTime) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version" % DB)
    done = {int(r[0]) for r in rows("SELECT version FROM %s.schema_migrations GROUP BY version" % DB)}
    applied = []
    for version, name, path in migration_files():
        if version in done:
            continue
        text = read_text(path)
        for st in split_statements(subst(text)):
            ch(st)
        ch("INSERT INTO %s.schema_migrations FORMAT JSONEachRow" % DB,
           json.dumps({"version": version, "name": name,
                       "checksum": hashlib.sha256(text.encode()).hexdigest(),
                       "applied_at": ch("SELECT toString(now())").strip()}))
        applied.append(version)
    return applied


def insert(table, recs):
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in recs)
    ch("INSERT INTO %s.%s FORMAT JSONEachRow" % (DB, table), body)


# ---------------------------------------------------------------------------------------------
# Test data. Dates are relative to the server's today() (Moscow).
# ---------------------------------------------------------------------------------------------

def day(n):
    return (TODAY - datetime.timedelta(days=n)).isoformat()


def ts(n, hhmm):
    return "%s %s:00" % (day(n), hhmm)


TODAY = None
NOW = None

E1, E2, E3, E4 = "101", "102", "103", "104"
UTM_CAMP1 = {"utm_source": "vk", "utm_medium": "cpc", "utm_campaign": "camp1", "utm_content": "msk_01_12", "utm_term": ""}
UTM_CAMP1_UPPER = dict(UTM_CAMP1, utm_source="VK")
UTM_NONE = {"utm_source": "", "utm_medium": "", "utm_campaign": "", "utm_content": "", "utm_term": ""}


def event(eid, name, city, ver, total=None, left=None, start=None, deleted=0):
    return {"event_id": eid, "event_name": name, "city": city, "city_id": "", "place_name": "Зал",
            "start_date": start, "end_date": start, "tickets_total": total, "tickets_left": left,
            "is_active": 1, "is_deleted": deleted, "currency": "RUB", "_ver": ver}


def order(oid, eid, ver, sale, payed=1, deleted_at=None, price=0, utm=UTM_NONE, baskets=(0, 0)):
    r = {"order_id": oid, "event_id": eid, "payed": payed, "payed_at": sale if payed else None,
         "created_at": sale, "deleted_at": deleted_at, "sale_ts": sale, "price": price,
         "original_price": price, "currency": "RUB", "client_id": "c" + oid, "promo_code_id": "",
         "baskets_total": baskets[0], "baskets_live": baskets[1], "_ver": ver}
    r.update(utm)
    return r


def basket(bid, oid, eid, ver, sale, price, qty, deleted_at=None, refunded_at=None, refunded_amount=None):
    return {"basket_id": bid, "order_id": oid, "event_id": eid, "show_id": "s" + eid, "price": price,
            "original_price": price, "quantity": qty, "deleted_at": deleted_at, "refunded_at": refunded_at,
            "refunded_amount": refunded_amount, "sale_ts": sale, "_ver": ver}


def gmail(msg, ver, d, city, name, eid, tickets, revenue, refunds=0):
    return {"src_msg_id": msg, "ingested_at": NOW, "event_date": d, "event_id": eid, "event_name": name,
            "city": city, "tickets_sold": tickets, "revenue": revenue, "refunds": refunds, "currency": "RUB",
            "_ver": ver}


def vk(d, ad, ver, imp, clk, spent, utm, city, campaign=10, group=100):
    r = {"stat_date": d, "account_id": "1", "campaign_id": str(campaign), "ad_group_id": str(group),
         "ad_id": str(ad), "campaign_name": "c%d" % campaign, "impressions": imp, "clicks": clk, "spent": spent,
         "utm_city": city, "utm_day": 1, "utm_month": 12, "_ver": ver}
    r.update(utm)
    return r


def direct(d, campaign, ver, imp, clk, cost, utm, city):
    r = {"stat_date": d, "account_login": "acc", "campaign_id": campaign, "campaign_name": "d%d" % campaign,
         "ad_group_id": 0, "ad_id": 0, "impressions": imp, "clicks": clk, "cost": cost, "utm_city": city,
         "utm_day": 0, "utm_month": 0, "_ver": ver}
    r.update(utm)
    return r


def final_state(ver):
    """The latest state of every API/ads row, all at one _ver: used to re-load everything."""
    return {
        "dim_events": [event(E1, "Шоу A", "Москва", ver, 100, 40, day(-10)),
                       event(E2, "Шоу A", "москва", ver), event(E3, "Шоу B", "Санкт-Петербург", ver),
                       event(E4, "Шоу C", "Tomsk", ver, 50, 50)],
        "stg_qtickets_api_orders_raw": [
            order("1", E1, ver, ts(1, "10:00"), price=2500, utm=UTM_CAMP1),
            order("2", E2, ver, ts(1, "15:00"), price=1600, utm=UTM_CAMP1_UPPER),
            order("3", E1, ver, ts(1, "16:00"), payed=0, price=900, utm=UTM_CAMP1),
            order("4", E3, ver, ts(0, "00:05"), price=1822.03),
            order("5", E3, ver, ts(2, "12:00"), deleted_at=ts(1, "12:00"), price=300),
            order("6", E1, ver, ts(20, "12:00"), price=1000),
            order("7", E1, ver, ts(40, "12:00"), price=100),
        ],
        "stg_qtickets_api_baskets_raw": [
            basket("b1", "1", E1, ver, ts(1, "10:00"), 1000, 2),
            basket("b2", "1", E1, ver, ts(1, "10:00"), 500, 1, refunded_at=ts(0, "00:01"), refunded_amount=450),
            basket("b3", "2", E2, ver, ts(1, "15:00"), 700, 1),
            basket("b4", "2", E2, ver, ts(1, "15:00"), 700, 1, deleted_at=ts(1, "15:10")),
            basket("b12", "2", E2, ver, ts(1, "15:00"), 200, 1),
            basket("b5", "3", E1, ver, ts(1, "16:00"), 900, 1),
            basket("b6", "4", E3, ver, ts(0, "00:05"), 1222.03, 1),
            basket("b7", "4", E3, ver, ts(0, "00:05"), 300, 2, refunded_at=ts(0, "00:06")),
            basket("b8", "5", E3, ver, ts(2, "12:00"), 100, 3),
            basket("b9", "6", E1, ver, ts(20, "12:00"), 250, 4),
            basket("b10", "7", E1, ver, ts(40, "12:00"), 100, 1),
        ],
        "fact_vk_ads_daily": [
            vk(day(1), 1000, ver, 1100, 11, 150.50, UTM_CAMP1, "msk"),
            vk(day(1), 1001, ver, 500, 5, 49.50, dict(UTM_CAMP1, utm_campaign="camp2", utm_content="spb_01_12"), "spb"),
            vk(day(0), 1000, ver, 10, 0, 0, UTM_CAMP1, "msk"),
            vk(day(2), 1002, ver, 100, 1, 5000, dict(UTM_CAMP1, utm_campaign="camp3", utm_content="kazan_02_12"),
               "kazan", campaign=11, group=101),
        ],
        "fact_direct_daily": [
            direct(day(1), 20, ver, 2000, 21, 310.00, {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "dcamp",
                                                        "utm_content": "msk_01_12", "utm_term": "kw"}, "msk"),
            direct(day(1), 21, ver, 400, 4, 100.00, {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "dcamp",
                                                      "utm_content": "spb_01_12", "utm_term": "kw"}, "spb"),
            direct(day(3), 22, ver, 1000, 10, 5000.00, {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "dcamp2",
                                                         "utm_content": "", "utm_term": ""}, ""),
        ],
        "plan_sales": [
            {"sales_date": day(1), "event_id": E1, "city": "Москва", "plan_tickets": 5, "plan_revenue": 2500, "_ver": ver},
            {"sales_date": day(5), "event_id": E4, "city": "tomsk", "plan_tickets": 10, "plan_revenue": 1000, "_ver": ver},
        ],
    }


def load_history():
    """Loads the rows the way several runs would have written them over time."""
    # run 1 (_ver 1000): first sight of everything, some values that later runs correct
    insert("dim_events", [event(E1, "Шоу Старое", "Москва", 100), event(E2, "Шоу A", "москва", 100, 10, 5),
                          event(E3, "Шоу B", "Санкт-Петербург", 100), event(E4, "Шоу C", "Tomsk", 100, 50, 50)])
    insert("dim_events", [event(E1, "Шоу A", "Москва", 200, 90, 30, day(-10))])
    insert("dim_events", [event(E1, "Шоу A", "Москва", 300, 100, 40, day(-10))])
    # the latest row wins, NULL included: E2 inventory 10/5 is erased by a run without inventory
    insert("dim_events", [event(E2, "Шоу A", "москва", 150)])

    st = final_state(1000)
    orders = st["stg_qtickets_api_orders_raw"]
    baskets = st["stg_qtickets_api_baskets_raw"]
    # at run 1 order 5 was not deleted yet, b2 was not refunded yet, b12 was refunded (undone later)
    v1_orders = [dict(o, deleted_at=None) if o["order_id"] == "5" else o for o in orders]
    v1_baskets = []
    for b in baskets:
        if b["basket_id"] == "b2":
            b = dict(b, refunded_at=None, refunded_amount=None)
        if b["basket_id"] == "b12":
            b = dict(b, refunded_at=ts(1, "15:30"), refunded_amount=200)
        v1_baskets.append(b)
    insert("stg_qtickets_api_orders_raw", v1_orders)
    insert("stg_qtickets_api_baskets_raw", v1_baskets)
    # spool replay of run 1 order 4 and its baskets: identical rows, same _ver
    insert("stg_qtickets_api_orders_raw", [o for o in v1_orders if o["order_id"] == "4"])
    insert("stg_qtickets_api_baskets_raw", [b for b in v1_baskets if b["order_id"] == "4"])

    # run 2 (_ver 2000): the same window again (orders 1, 2 and 5 change)
    st2 = final_state(2000)
    insert("stg_qtickets_api_orders_raw", [o for o in st2["stg_qtickets_api_orders_raw"] if o["order_id"] in ("1", "2", "5")])
    insert("stg_qtickets_api_baskets_raw",
           [dict(b, refunded_at=None, refunded_amount=None) if b["basket_id"] == "b2" else b
            for b in st2["stg_qtickets_api_baskets_raw"] if b["order_id"] in ("1", "2", "5")])
    # run 3 (_ver 3000): the refund of b2 arrives
    st3 = final_state(3000)
    insert("stg_qtickets_api_orders_raw", [o for o in st3["stg_qtickets_api_orders_raw"] if o["order_id"] == "1"])
    insert("stg_qtickets_api_baskets_raw", [b for b in st3["stg_qtickets_api_baskets_raw"] if b["order_id"] == "1"])

    # ads: first load with other values, re-load with the final ones
    first_vk = [dict(r, impressions=1000, clicks=10, spent=100.00) if r["ad_id"] == "1000" and r["stat_date"] == day(1) else r
                for r in final_state(1000)["fact_vk_ads_daily"]]
    insert("fact_vk_ads_daily", first_vk)
    insert("fact_vk_ads_daily", [r for r in final_state(2000)["fact_vk_ads_daily"] if r["stat_date"] == day(1)])
    first_direct = [dict(r, clicks=20, cost=300.00) if r["campaign_id"] == 20 else r
                    for r in final_state(1000)["fact_direct_daily"]]
    insert("fact_direct_daily", first_direct)
    insert("fact_direct_daily", [r for r in final_state(2000)["fact_direct_daily"] if r["campaign_id"] == 20])
    # spool replay of a whole VK batch
    insert("fact_vk_ads_daily", [r for r in final_state(2000)["fact_vk_ads_daily"] if r["stat_date"] == day(1)])

    # plan: loaded twice, the second CSV corrects plan_tickets 4 -> 5
    insert("plan_sales", [dict(p, plan_tickets=4) if p["event_id"] == E1 else p for p in final_state(1)["plan_sales"]])
    insert("plan_sales", final_state(2)["plan_sales"])

    load_gmail()


def load_gmail():
    # day 1 has API rows: the Gmail row must be ignored
    insert("stg_qtickets_sales_raw", [gmail("m1", 5000, day(1), "Москва", "Шоу A", E1, 99, 9999)])
    # day 2 has no API sales line (order 5 was deleted): Gmail counts. m1 then a newer m2 with
    # the city spelled in lower case (same key), then an older m0 loaded late (must not win)
    insert("stg_qtickets_sales_raw", [gmail("m1", 5000, day(2), "Казань", "Шоу D", "", 5, 5000, 100)])
    insert("stg_qtickets_sales_raw", [gmail("m1", 5000, day(2), "Казань", "Шоу D", "", 5, 5000, 100)])
    insert("stg_qtickets_sales_raw", [gmail("m2", 6000, day(2), "казань", "Шоу D", "", 6, 6000, 0)])
    insert("stg_qtickets_sales_raw", [gmail("m0", 4000, day(2), "Казань", "Шоу D", "", 1, 100, 0)])
    # day 3: two events with the same name in the same city on one day
    insert("stg_qtickets_sales_raw", [gmail("m3", 7000, day(3), "Москва", "Шоу A", E1, 3, 1500),
                                      gmail("m3", 7000, day(3), "Москва", "Шоу A", E2, 2, 1000)])


def reload_everything(ver):
    for table, recs in final_state(ver).items():
        insert(table, recs)
    load_gmail()


ALL_TABLES = ["dim_city_alias", "dim_events", "stg_qtickets_api_orders_raw", "stg_qtickets_api_baskets_raw",
              "stg_qtickets_sales_raw", "plan_sales", "fact_vk_ads_daily", "fact_direct_daily",
              "meta_job_runs_raw", "alerts", "alert_state", "backup_runs"]


def load_meta():
    now = datetime.datetime.strptime(NOW, "%Y-%m-%d %H:%M:%S")

    def t(hours_ago):
        return (now - datetime.timedelta(hours=hours_ago)).strftime("%Y-%m-%d %H:%M:%S")

    def run(job, rid, start_h, status, ver, rows=0, dur=None, fin=True, msg=""):
        return {"job": job, "run_id": rid, "started_at": t(start_h), "finished_at": t(start_h - 0.01) if fin else None,
                "status": status, "rows_processed": rows, "message": msg,
                "metrics": json.dumps({"duration": dur, "pages": 1}, separators=(",", ":")) if dur is not None else "{}",
                "host": "h1", "_ver": ver}

    recs = [
        run("qtickets", "r1", 5, "running", 1, fin=False), run("qtickets", "r1", 5, "success", 2, rows=10, dur=30),
        run("qtickets", "r2", 4, "running", 1, fin=False), run("qtickets", "r2", 4, "error", 2, dur=10, msg="HTTP 503"),
        run("qtickets", "r3", 1, "running", 1, fin=False),
        run("vk_ads", "r4", 3, "running", 1, fin=False), run("vk_ads", "r4", 3, "ok", 2, rows=20, dur=50),
        run("vk_ads", "r5", 2, "running", 1, fin=False), run("vk_ads", "r5", 2, "success", 2, rows=40, dur=70),
        run("vk_ads", "r6", 240, "success", 2, rows=99, dur=999),
        run("direct", "r7", 6, "running", 1, fin=False), run("direct", "r7", 6, "interrupted", 3),
    ]
    insert("meta_job_runs_raw", recs)
    insert("meta_job_runs_raw", [r for r in recs if r["run_id"] == "r5"])  # spool replay
    insert("alerts", [
        {"alert_id": "a1", "created_at": t(1), "job": "alerts", "rule": "job_failed", "subject": "qtickets",
         "alert_type": "error", "title": "qtickets failed", "message": "HTTP 503", "details": "{}", "channel": "email",
         "delivered": 1, "acknowledged": 0, "acknowledged_at": None, "acknowledged_by": ""},
        {"alert_id": "a0", "created_at": t(24 * 10), "job": "alerts", "rule": "stale", "subject": "direct",
         "alert_type": "warning", "title": "old", "message": "", "details": "{}", "channel": "email",
         "delivered": 1, "acknowledged": 1, "acknowledged_at": t(24 * 9), "acknowledged_by": "ops"},
    ])
    insert("alert_state", [
        {"rule": "job_failed", "subject": "qtickets", "state": "open", "severity": "error", "first_seen": t(1),
         "last_seen": t(1), "last_sent": t(1), "sent_count": 1, "resolved_at": None, "last_alert_id": "a1",
         "fingerprint": "f", "details": "{}", "_ver": 1},
        {"rule": "job_failed", "subject": "qtickets", "state": "resolved", "severity": "error", "first_seen": t(1),
         "last_seen": t(0.5), "last_sent": None, "sent_count": 1, "resolved_at": t(0.5), "last_alert_id": "a1",
         "fingerprint": "f", "details": "{}", "_ver": 2},
    ])
    insert("backup_runs", [
        {"ts": t(2), "backup_name": "chbk_1_full", "mode": "full", "base_backup": "", "target": "local",
         "status": "running", "bytes": 0, "duration_ms": 0, "details": "", "error_msg": "", "_ver": 1},
        {"ts": t(2), "backup_name": "chbk_1_full", "mode": "full", "base_backup": "", "target": "local",
         "status": "ok", "bytes": 12345, "duration_ms": 5000, "details": "", "error_msg": "", "_ver": 2},
    ])


def runbook_sql():
    """Every ```sql block of the runbook, split into statements."""
    with open(RUNBOOK, encoding="utf-8") as f:
        text = f.read()
    out = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        out.extend(split_statements(block))
    return out


def setUpModule():
    global TODAY, NOW
    TODAY = datetime.date.fromisoformat(ch("SELECT toString(today())").strip())
    NOW = ch("SELECT toString(now())").strip()
    tz = ch("SELECT timezone()").strip()
    if tz != "Europe/Moscow":
        raise unittest.SkipTest("server timezone is %s, tests need Europe/Moscow" % tz)


def tearDownModule():
    if os.environ.get("ZHOST_TEST_KEEP_DB"):
        return
    ch("DROP DATABASE IF EXISTS %s" % BI)
    ch("DROP DATABASE IF EXISTS %s" % DB)


def D(x):
    return "%.2f" % x


class T01Migrations(unittest.TestCase):
    """Runs first (classes run in name order): creates the schema used by the other tests."""

    def test_1_files_follow_the_rules(self):
        files = migration_files()
        self.assertGreaterEqual(len(files), 6)
        self.assertEqual([v for v, _, _ in files], list(range(1, len(files) + 1)), "versions are 1..N without gaps")
        for version, name, path in files:
            text = read_text(path)
            for n, line in enumerate(text.split("\n"), 1):
                where = "%s:%d" % (os.path.basename(path), n)
                if line.strip().startswith("--"):
                    self.assertNotRegex(line, r"['\";`]", where + ": quote or semicolon in a comment")
                    self.assertNotRegex(line, r"(zakaz|bi)\.", where + ": database qualifier in a comment")
                code = line.split("--")[0] if "'" not in line else line
                self.assertNotRegex(code, r"[A-Za-z0-9_](zakaz|bi)\.", where + ": zakaz./bi. inside an identifier")
                self.assertNotRegex(code, r"(?i)\bFINAL\b|LowCardinality|JSONExtract|\bBool\b|OR REPLACE",
                                    where + ": construct not allowed")
            stmts = split_statements(text)
            for i, st in enumerate(stmts):
                head = " ".join(st.split()[:6]).upper()
                if head.startswith("DROP TABLE"):
                    # 18.16 has no DROP VIEW: a view is redefined by DROP TABLE IF EXISTS right before
                    # its CREATE VIEW. Nothing else may be dropped: migrations never lose data.
                    m = re.match(r"DROP TABLE IF EXISTS ((zakaz|bi)\.\w+)$", st.strip())
                    self.assertTrue(m, "%s: only views may be dropped: %s" % (path, st))
                    nxt = stmts[i + 1] if i + 1 < len(stmts) else ""
                    self.assertTrue(nxt.startswith("CREATE VIEW IF NOT EXISTS %s AS" % m.group(1)),
                                    "%s: %s is dropped but not re-created as a view right after" % (path, m.group(1)))
                    continue
                self.assertTrue(head.startswith("CREATE TABLE IF NOT EXISTS") or head.startswith("CREATE VIEW IF NOT EXISTS")
                                or head.startswith("INSERT INTO"),
                                "%s: unexpected statement %s" % (path, head))
                self.assertRegex(st.split("(")[0] if not head.startswith("INSERT") else st.split("VALUES")[0],
                                 r"(zakaz|bi)\.\w+", "%s: statement without a qualified name" % path)

    def test_1b_every_joined_subquery_has_an_alias(self):
        # 0004/0005/0007 joined unaliased subqueries: every view with a JOIN failed on current
        # servers (ALIAS_REQUIRED, at CREATE VIEW under the new analyzer). 0008 re-creates them.
        bad = []
        for name, (version, st) in sorted(view_definitions().items()):
            code = "\n".join(l for l in st.split("\n") if not l.strip().startswith("--"))
            for m in UNALIASED_JOIN_SIDE.finditer(code):
                bad.append("%s (%04d): ...%s..." % (name, version, " ".join(code[max(0, m.start() - 40):m.end()].split())))
        self.assertEqual(bad, [], "JOIN with a subquery without an alias")
        # the rule itself: it must see both sides of an unaliased join, and accept aliased ones
        self.assertEqual(len(UNALIASED_JOIN_SIDE.findall("FROM (SELECT 1) ALL INNER JOIN (SELECT 2) USING (k)")), 2)
        self.assertEqual(len(UNALIASED_JOIN_SIDE.findall("FROM (SELECT 1) AS a\nLEFT JOIN\n(SELECT 2) AS b USING (k)")), 0)

    def test_2_apply_twice_then_reapply_raw(self):
        ch("DROP DATABASE IF EXISTS %s" % BI)
        ch("DROP DATABASE IF EXISTS %s" % DB)
        first = migrate()
        self.assertEqual(first, [v for v, _, _ in migration_files()])
        self.assertEqual(migrate(), [], "second migrate must be a no-op")
        # re-executing every statement anyway must be harmless (IF NOT EXISTS everywhere)
        for _, _, path in migration_files():
            for st in split_statements(subst(read_text(path))):
                ch(st)
        names = {r[0] for r in rows("SELECT name FROM system.tables WHERE database = '%s'" % DB)}
        for t in ALL_TABLES + ["meta_job_runs", "v_sales_latest", "v_data_freshness", "v_romi_daily",
                               "fact_qtickets_sales_daily", "fact_qtickets_sales_utm_daily"]:
            self.assertIn(t, names)
        bnames = {r[0] for r in rows("SELECT name FROM system.tables WHERE database = '%s'" % BI)}
        self.assertEqual(bnames, {"v_sales_daily", "v_vk_ads_daily", "v_marketing_roi_daily", "v_ops_freshness"})
        # the alias seed was inserted twice: the view still has one row per alias
        self.assertEqual(rows("SELECT count(), uniqExact(alias) FROM %s.v_city_alias" % DB)[0][0],
                         rows("SELECT count(), uniqExact(alias) FROM %s.v_city_alias" % DB)[0][1])

    def test_2b_today_is_moscow_today(self):
        # "today" in the views is Moscow's date, whatever the server's time zone (0007): on a UTC
        # server today() lags it by three hours after midnight and freshness is a day off.
        for db in (DB, BI):
            bad = rows("SELECT name FROM system.tables WHERE database = '%s' AND engine = 'View' "
                       "AND positionCaseInsensitive(create_table_query, 'today()') > 0" % db)
            self.assertEqual(bad, [], "views of %s still use the server's today()" % db)

    def test_3_empty_schema_answers(self):
        # every view can be queried on empty tables
        for (name,) in rows("SELECT name FROM system.tables WHERE database = '%s' AND engine = 'View'" % DB):
            rows("SELECT * FROM %s.%s" % (DB, name))
        for (name,) in rows("SELECT name FROM system.tables WHERE database = '%s'" % BI):
            rows("SELECT * FROM %s.%s" % (BI, name))
        self.assertEqual(rows("SELECT source, latest_date, days_behind, total_rows FROM %s.v_data_freshness ORDER BY source" % DB),
                         [("direct", None, "9999", "0"), ("qtickets_sales", None, "9999", "0"), ("vk_ads", None, "9999", "0")])
        r = rows("SELECT loaded_at_sales, loaded_at_vk, freshness_hours_sales, freshness_hours_vk FROM %s.v_ops_freshness" % BI)
        self.assertEqual(r, [(None, None, "9999", "9999")])

    def test_4_decimal_and_types_contract(self):
        # the documented JSONEachRow contract on this server: decimals as numbers, ids as strings
        insert("fact_vk_ads_daily", [vk(day(100), 18446744073709551615, 1, 1, 0, 1222.03, UTM_NONE, "")])
        self.assertEqual(rows("SELECT toString(ad_id), spent FROM %s.fact_vk_ads_daily WHERE stat_date = '%s'" % (DB, day(100))),
                         [("18446744073709551615", "1222.03")])
        ch("ALTER TABLE %s.fact_vk_ads_daily DROP PARTITION %s" % (DB, day(100).replace("-", "")[:6]))
        with self.assertRaises(CHError):  # _loaded_at is MATERIALIZED: loaders must not send it
            insert("dim_events", [dict(event("x", "x", "x", 1), _loaded_at=NOW)])


class T02Sales(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        load_history()

    def check_all(self):
        self.check_facts()
        self.check_sales_latest()
        self.check_sales_rollups()
        self.check_dashboard_and_plan()
        self.check_marketing()
        self.check_bi()
        self.check_freshness()

    def test_1_figures(self):
        self.check_all()

    def test_2_reload_everything_and_merge(self):
        reload_everything(9000)
        self.check_all()
        # a partial window reload (only today's order) at a newer version
        st = final_state(9500)
        insert("stg_qtickets_api_orders_raw", [o for o in st["stg_qtickets_api_orders_raw"] if o["order_id"] == "4"])
        insert("stg_qtickets_api_baskets_raw", [b for b in st["stg_qtickets_api_baskets_raw"] if b["order_id"] == "4"])
        self.check_all()
        for t in ALL_TABLES:
            ch("OPTIMIZE TABLE %s.%s FINAL" % (DB, t))
        self.check_all()

    def test_3_views_rewritten_with_join_aliases_give_the_same_rows(self):
        # 0008 only names the subqueries of every JOIN. Each view it re-creates must answer exactly
        # as its previous definition did (columns, types, rows), here after the reload and merges.
        # (0009 redefined v_qtickets_sales_lines again; these data have no basket missing from the
        # latest snapshot of its order, so the view in force still answers as 0007's did.)
        now = view_definitions(max_version=8)
        before = view_definitions(max_version=7)
        rewritten = sorted(n for n, (v, _) in now.items() if v == 8)
        self.assertEqual(rewritten, ["zakaz." + n for n in (
            "v_direct_latest", "v_plan_vs_fact", "v_qtickets_events_latest", "v_qtickets_gmail_latest",
            "v_qtickets_sales_dashboard", "v_qtickets_sales_lines", "v_vk_ads_latest")])
        for name in rewritten:
            short = name.split(".")[1]
            old = "%s.zh_before_0008_%s" % (DB, short)
            ch("DROP TABLE IF EXISTS %s" % old)
            ch(subst(before[name][1].replace("CREATE VIEW IF NOT EXISTS %s AS" % name, "CREATE VIEW %s AS" % old.replace(DB + ".", "zakaz."), 1)))
            try:
                self.assertEqual(rows("DESCRIBE TABLE %s.%s" % (DB, short)), rows("DESCRIBE TABLE %s" % old), name)
                got, want = sorted(rows("SELECT * FROM %s.%s" % (DB, short)), key=repr), sorted(rows("SELECT * FROM %s" % old), key=repr)
                self.assertGreater(len(want), 0, name + ": no rows to compare")
                self.assertEqual(got, want, name)
            finally:
                ch("DROP TABLE IF EXISTS %s" % old)

    # -- expectations -------------------------------------------------------------------------

    def check_facts(self):
        got = rows("SELECT sales_date, event_id, city, event_name, tickets_sold, revenue, tickets_refunded, refunds, currency "
                   "FROM %s.fact_qtickets_sales_daily ORDER BY sales_date, event_id" % DB)
        self.assertEqual(got, sorted([
            (day(40), E1, "Москва", "Шоу A", "1", "100.00", "0", "0.00", "RUB"),
            (day(20), E1, "Москва", "Шоу A", "4", "1000.00", "0", "0.00", "RUB"),
            (day(1), E1, "Москва", "Шоу A", "2", "2000.00", "1", "450.00", "RUB"),
            (day(1), E2, "Москва", "Шоу A", "2", "900.00", "0", "0.00", "RUB"),
            (day(0), E3, "Санкт-Петербург", "Шоу B", "1", "1222.03", "2", "600.00", "RUB"),
        ]))
        got = rows("SELECT sales_date, event_id, utm_source, utm_campaign, tickets_sold, revenue "
                   "FROM %s.fact_qtickets_sales_utm_daily ORDER BY sales_date, event_id" % DB)
        self.assertEqual(got, sorted([
            (day(40), E1, "", "", "1", "100.00"), (day(20), E1, "", "", "4", "1000.00"),
            (day(1), E1, "vk", "camp1", "2", "2000.00"), (day(1), E2, "VK", "camp1", "2", "900.00"),
            (day(0), E3, "", "", "1", "1222.03"),
        ]))
        got = rows("SELECT d, event_id, utm_group, tickets_sold, revenue FROM %s.v_qtickets_sales_utm_daily "
                   "WHERE d = '%s' ORDER BY event_id" % (DB, day(1)))
        self.assertEqual(got, [(day(1), E1, "vk", "2", "2000.00"), (day(1), E2, "VK", "2", "900.00")])
        self.assertEqual(rows("SELECT utm_group FROM %s.v_qtickets_sales_utm_daily WHERE d = '%s'" % (DB, day(0))), [("unknown",)])

    def check_sales_latest(self):
        got = rows("SELECT event_date, city, event_id, event_name, tickets_sold, revenue, refunds, refunds_amount, currency "
                   "FROM %s.v_sales_latest ORDER BY event_date, city" % DB)
        self.assertEqual(got, sorted([
            (day(40), "Москва", E1, "Шоу A", "1", "100.00", "0.00", "0.00", "RUB"),
            (day(20), "Москва", E1, "Шоу A", "4", "1000.00", "0.00", "0.00", "RUB"),
            # Gmail, two events with the same name in one city on one day: one row, summed
            (day(3), "Москва", E1, "Шоу A", "5", "2500.00", "0.00", "0.00", "RUB"),
            # Gmail, latest message m2 wins, city canonicalised
            (day(2), "Казань", "", "Шоу D", "6", "6000.00", "0.00", "0.00", "RUB"),
            # API: two events "Шоу A" in Москва (one spelled москва) summed, Gmail 99 tickets ignored
            (day(1), "Москва", E1, "Шоу A", "4", "2900.00", "450.00", "450.00", "RUB"),
            (day(0), "Санкт-Петербург", E3, "Шоу B", "1", "1222.03", "600.00", "600.00", "RUB"),
        ]))
        self.assertEqual(rows("SELECT count() FROM %s.v_sales_latest GROUP BY event_date, city, event_name HAVING count() > 1" % DB), [])
        src = rows("SELECT event_date, source, count() FROM %s.v_sales_combined_daily GROUP BY event_date, source ORDER BY event_date" % DB)
        self.assertEqual(src, sorted([(day(40), "qtickets_api", "1"), (day(20), "qtickets_api", "1"), (day(3), "qtickets_gmail", "2"),
                                      (day(2), "qtickets_gmail", "1"), (day(1), "qtickets_api", "2"), (day(0), "qtickets_api", "1")]))

    def check_sales_rollups(self):
        self.assertEqual(rows("SELECT d, tickets, net_revenue, refunds FROM %s.v_sales_14d ORDER BY d" % DB), sorted([
            (day(3), "5", "2500.00", "0.00"), (day(2), "6", "6000.00", "0.00"),
            (day(1), "4", "2900.00", "450.00"), (day(0), "1", "1222.03", "600.00")]))
        self.assertEqual(rows("SELECT city, total_tickets, net_revenue, refunds, days_with_sales, avg_tickets_per_day "
                              "FROM %s.v_sales_by_city ORDER BY city" % DB), sorted([
            ("Москва", "13", "6400.00", "450.00", "3", "4.33"),
            ("Казань", "6", "6000.00", "0.00", "1", "6"),
            ("Санкт-Петербург", "1", "1222.03", "600.00", "1", "1")]))

    def check_dashboard_and_plan(self):
        got = rows("SELECT event_id, event_name, city, tickets_sold_today, revenue_today, tickets_sold_14d, revenue_14d, "
                   "tickets_total, tickets_left, start_date FROM %s.v_qtickets_sales_dashboard ORDER BY event_id" % DB)
        self.assertEqual(got, [
            (E1, "Шоу A", "Москва", "0", "0.00", "2", "2000.00", "100", "40", day(-10)),
            (E2, "Шоу A", "Москва", "0", "0.00", "2", "900.00", None, None, None),
            (E3, "Шоу B", "Санкт-Петербург", "1", "1222.03", "1", "1222.03", None, None, None),
            (E4, "Шоу C", "Томск", "0", "0.00", "0", "0.00", "50", "50", None),
        ])
        self.assertEqual(rows("SELECT event_id, city, tickets_total, tickets_left FROM %s.fact_qtickets_inventory_latest ORDER BY event_id" % DB),
                         [(E1, "Москва", "100", "40"), (E4, "Томск", "50", "50")])
        got = rows("SELECT sales_date, event_id, city, plan_tickets, plan_revenue, fact_tickets, fact_revenue, diff_tickets, "
                   "diff_revenue, diff_tickets_pct, diff_revenue_pct FROM %s.v_plan_vs_fact "
                   "WHERE sales_date IN ('%s', '%s') ORDER BY sales_date, event_id" % (DB, day(1), day(5)))
        self.assertEqual(got, [
            (day(5), E4, "Томск", "10", "1000.00", "0", "0.00", "-10", "-1000.00", "-1", "-1"),
            (day(1), E1, "Москва", "5", "2500.00", "2", "2000.00", "-3", "-500.00", "-0.6", "-0.2"),
            (day(1), E2, "Москва", "0", "0.00", "2", "900.00", "2", "900.00", None, None),
        ])
        self.assertEqual(rows("SELECT count() FROM %s.v_plan_vs_fact" % DB), [("9",)])

    def check_marketing(self):
        got = rows("SELECT d, source, utm_source, utm_campaign, utm_content, utm_term, impressions, clicks, spend "
                   "FROM %s.v_marketing_costs_daily ORDER BY d, source, utm_campaign, utm_content" % DB)
        self.assertEqual(got, sorted([
            (day(3), "direct", "yandex", "dcamp2", "", "", "1000", "10", "5000.00"),
            (day(2), "vk_ads", "vk", "camp3", "kazan_02_12", "", "100", "1", "5000.00"),
            (day(1), "direct", "yandex", "dcamp", "msk_01_12", "kw", "2000", "21", "310.00"),
            (day(1), "direct", "yandex", "dcamp", "spb_01_12", "kw", "400", "4", "100.00"),
            (day(1), "vk_ads", "vk", "camp1", "msk_01_12", "", "1100", "11", "150.50"),
            (day(1), "vk_ads", "vk", "camp2", "spb_01_12", "", "500", "5", "49.50"),
            (day(0), "vk_ads", "vk", "camp1", "msk_01_12", "", "10", "0", "0.00"),
        ]))
        self.assertEqual(rows("SELECT d, net_revenue, spend_total, romi FROM %s.v_marketing_daily ORDER BY d" % DB), sorted([
            (day(40), "100.00", "0.00", None), (day(20), "1000.00", "0.00", None),
            (day(3), "2500.00", "5000.00", "0.5"), (day(2), "6000.00", "5000.00", "1.2"),
            (day(1), "2900.00", "610.00", "4.7541"), (day(0), "1222.03", "0.00", None)]))
        self.assertEqual(rows("SELECT d, romi_status FROM %s.v_romi_kpi ORDER BY d" % DB), sorted([
            (day(20), "red"), (day(3), "red"), (day(2), "yellow"), (day(1), "green"), (day(0), "red")]))
        got = rows("SELECT d, utm_source, utm_medium, utm_campaign, utm_content, utm_term, revenue, tickets_sold, spend, roas "
                   "FROM %s.v_romi_daily ORDER BY d, utm_source, utm_campaign, utm_content" % DB)
        self.assertEqual(got, sorted([
            (day(40), "unknown", "", "", "", "", "100.00", "1", "0.00", None),
            (day(20), "unknown", "", "", "", "", "1000.00", "4", "0.00", None),
            (day(3), "yandex", "cpc", "dcamp2", "", "", "0.00", "0", "5000.00", "0"),
            (day(2), "vk", "cpc", "camp3", "kazan_02_12", "", "0.00", "0", "5000.00", "0"),
            # sales of order 1 (vk) and order 2 (VK) on the same UTM meet the VK spend of camp1
            (day(1), "vk", "cpc", "camp1", "msk_01_12", "", "2900.00", "4", "150.50", "19.2691"),
            (day(1), "vk", "cpc", "camp2", "spb_01_12", "", "0.00", "0", "49.50", "0"),
            (day(1), "yandex", "cpc", "dcamp", "msk_01_12", "kw", "0.00", "0", "310.00", "0"),
            (day(1), "yandex", "cpc", "dcamp", "spb_01_12", "kw", "0.00", "0", "100.00", "0"),
            (day(0), "unknown", "", "", "", "", "1222.03", "1", "0.00", None),
            (day(0), "vk", "cpc", "camp1", "msk_01_12", "", "0.00", "0", "0.00", None),
        ]))

    def check_bi(self):
        got = rows("SELECT d, city, event_id, tickets_sold, revenue, currency FROM %s.v_sales_daily "
                   "WHERE d >= '%s' ORDER BY d, city, event_id" % (BI, day(3)))
        self.assertEqual(got, sorted([
            (day(3), "Москва", E1, "3", "1500.00", "RUB"), (day(3), "Москва", E2, "2", "1000.00", "RUB"),
            (day(2), "Казань", "", "6", "6000.00", "RUB"),
            (day(1), "Москва", E1, "2", "2000.00", "RUB"), (day(1), "Москва", E2, "2", "900.00", "RUB"),
            (day(0), "Санкт-Петербург", E3, "1", "1222.03", "RUB")]))
        self.assertEqual(rows("SELECT count() FROM %s.v_sales_daily WHERE _loaded_at < now() - 3600" % BI), [("0",)])
        self.assertEqual(rows("SELECT d, city, impressions, clicks, spend FROM %s.v_vk_ads_daily ORDER BY d, city" % BI), sorted([
            (day(2), "Казань", "100", "1", "5000.00"), (day(1), "Москва", "1100", "11", "150.50"),
            (day(1), "Санкт-Петербург", "500", "5", "49.50"), (day(0), "Москва", "10", "0", "0.00")]))
        got = rows("SELECT d, city, revenue, tickets_sold, impressions, clicks, spend, roas, cpc, cpt "
                   "FROM %s.v_marketing_roi_daily WHERE d >= '%s' ORDER BY d, city" % (BI, day(3)))
        self.assertEqual(got, sorted([
            (day(3), "", "0.00", "0", "1000", "10", "5000.00", "0", "500", None),
            (day(3), "Москва", "2500.00", "5", "0", "0", "0.00", None, None, "0"),
            (day(2), "Казань", "6000.00", "6", "100", "1", "5000.00", "1.2", "5000", "833.33"),
            # two events in Москва on day 1: spend counted once (VK 150.50 + Direct 310.00)
            (day(1), "Москва", "2900.00", "4", "3100", "32", "460.50", "6.2975", "14.39", "115.13"),
            (day(1), "Санкт-Петербург", "0.00", "0", "900", "9", "149.50", "0", "16.61", None),
            (day(0), "Москва", "0.00", "0", "10", "0", "0.00", None, None, None),
            (day(0), "Санкт-Петербург", "1222.03", "1", "0", "0", "0.00", None, None, "0"),
        ]))
        r = rows("SELECT d, freshness_hours_sales, freshness_hours_vk, freshness_hours_direct, "
                 "loaded_at_sales IS NOT NULL FROM %s.v_ops_freshness" % BI)
        self.assertEqual(r, [(TODAY.isoformat(), "0", "0", "0", "1")])

    def check_freshness(self):
        self.assertEqual(rows("SELECT source, latest_date, days_behind, total_rows FROM %s.v_data_freshness ORDER BY source" % DB), [
            ("direct", day(1), "1", "3"), ("qtickets_sales", day(0), "0", "5"), ("vk_ads", day(0), "0", "4")])
        self.assertEqual(rows("SELECT source, latest_date, days_behind, total_rows FROM %s.v_data_freshness_gmail" % DB),
                         [("qtickets_gmail", day(1), "1", "4")])


class T03MetaAndRunbook(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        load_meta()
        cls.new_ch = int(ch("SELECT version()").strip().split(".")[0]) >= 20
        cls.date_cmp_bug = ch("SELECT toDateTime('2020-01-01 00:00:00') >= toDate('2026-01-01')").strip() == "1"

    def q(self, sql):
        return rows(subst(sql))

    def test_1_one_row_per_run(self):
        got = self.q("SELECT run_id, job, status, finished_at IS NULL, rows_processed FROM zakaz.meta_job_runs ORDER BY run_id")
        self.assertEqual(got, [("r1", "qtickets", "success", "0", "10"), ("r2", "qtickets", "error", "0", "0"),
                               ("r3", "qtickets", "running", "1", "0"), ("r4", "vk_ads", "success", "0", "20"),
                               ("r5", "vk_ads", "success", "0", "40"), ("r6", "vk_ads", "success", "0", "99"),
                               ("r7", "direct", "interrupted", "0", "0")])

    def test_2_runbook_queries_run_unchanged(self):
        stmts = runbook_sql()
        self.assertEqual(len(stmts), 8, "runbook SQL blocks changed? %r" % stmts)
        results = []
        for st in stmts:
            if "JSONExtractInt" in st and not self.new_ch:
                # 18.16 has no JSONExtract*: the documented 18.16 form
                st = st.replace("JSONExtractInt(", "visitParamExtractInt(")
            got = self.q(st)
            if self.date_cmp_bug and re.search(r"_at >= today\(\) - 7", st):
                # 18.16 compares DateTime with Date as raw numbers (seconds vs days), so the
                # unchanged text runs but does not filter: check figures with the documented form
                got = self.q(re.sub(r"(\w+_at) >= today\(\) - 7", r"\1 >= toDateTime(today() - 7)", st))
            results.append(got)
        last20, stats, fresh_cnt, dups, freshness, success, perf, alerts = results
        self.assertEqual(len(last20), 7)
        # ORDER BY started_at DESC: r3 (1 h ago, still running), r5, r4, r2, r1, r7, r6
        self.assertEqual([(r[0], r[1]) for r in last20], [
            ("qtickets", "running"), ("vk_ads", "success"), ("vk_ads", "success"), ("qtickets", "error"),
            ("qtickets", "success"), ("direct", "interrupted"), ("vk_ads", "success")])
        self.assertEqual(last20[0][3], None)  # finished_at of the running run
        self.assertEqual(sorted((r[0], r[1], r[2], r[3]) for r in stats), sorted([
            ("direct", "interrupted", "1", "0"), ("qtickets", "error", "1", "0"), ("qtickets", "running", "1", "0"),
            ("qtickets", "success", "1", "10"), ("vk_ads", "success", "2", "30")]))
        self.assertEqual(fresh_cnt, [("2",)])  # v_sales_latest rows of today and yesterday
        self.assertEqual(dups, [])
        self.assertEqual(freshness[0], ("direct", day(1), "1", "3"))  # ORDER BY days_behind DESC
        self.assertEqual(sorted(r[0] for r in freshness), ["direct", "qtickets_sales", "vk_ads"])
        sr = {r[0]: (r[1], r[2], r[3]) for r in success}
        self.assertEqual(sr["qtickets"], ("1", "1", "50"))
        self.assertEqual(sr["vk_ads"], ("2", "0", "100"))
        self.assertEqual(sr["direct"][:2], ("0", "0"))
        self.assertEqual(sorted(perf), [("qtickets", "30", "30"), ("vk_ads", "60", "70")])
        self.assertEqual([r[0] for r in alerts], ["a1"])

    def test_3_alert_state_and_backups(self):
        got = self.q("SELECT rule, subject, state, last_sent, resolved_at IS NOT NULL, sent_count FROM zakaz.v_alert_state")
        self.assertEqual(got, [("job_failed", "qtickets", "resolved", None, "1", "1")])
        got = self.q("SELECT backup_name, status, bytes, duration_ms FROM zakaz.v_backup_runs")
        self.assertEqual(got, [("chbk_1_full", "ok", "12345", "5000")])


if __name__ == "__main__":
    unittest.main()
