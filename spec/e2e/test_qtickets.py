"""End-to-end: scripts/qtickets.lua against the fake QTickets API and a real ClickHouse.

Figures are compared with datagen.expected(), which computes them independently from the wire objects.
"""
import datetime as dt
import json
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

START = "2025-11-01"
DAYS = 14
END = (dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 1)).isoformat()


def sales_rows(case):
    rows = case.q("SELECT toString(event_date) AS d, city, event_name, tickets_sold, toString(revenue) AS revenue, "
                  "toString(refunds) AS refunds FROM v_sales_latest ORDER BY d, city, event_name")
    return {(r["d"], r["city"], r["event_name"]): (int(r["tickets_sold"]), Decimal(r["revenue"]), Decimal(r["refunds"]))
            for r in rows}


def expected_rows(exp):
    return {(r["date"], r["city"], r["event_name"]): (r["tickets_sold"], Decimal(r["revenue"]), Decimal(r["refunds"]))
            for r in exp["qtickets"]["sales_daily"]}


def last_metrics(case, job="qtickets"):
    """Metrics of the latest run (several runs can start in the same second; _ver is in milliseconds)."""
    return json.loads(case.q("SELECT metrics FROM meta_job_runs WHERE job = '%s' ORDER BY _ver DESC LIMIT 1"
                             % job)[0]["metrics"])


class QTicketsCase(zhtest.ZhostCase):
    orders = 400
    seed = 11
    fake_args = ()

    def setUp(self):
        super().setUp()
        self.data = datagen.generate(seed=self.seed, orders=self.orders, events=8, days=DAYS, start=START)
        self.exp = datagen.expected(self.data)
        self.customize(self.data)
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.data, f, ensure_ascii=False)
        self.api = self.fake("--data", path, *self.fake_args)
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": self.api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "qt-test-token"})

    def customize(self, data):
        pass

    def load(self, *extra, env=None):
        return self.zhost("run", "scripts/qtickets.lua", "--since", START, "--to", END, *extra, env=env)

    def assert_ok(self, r):
        self.assertEqual(r.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))

    def assert_exact_totals(self):
        got, want = sales_rows(self), expected_rows(self.exp)
        self.assertTrue(want, "the data set has sales")
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        self.assertEqual(missing, [], "rows missing from v_sales_latest")
        self.assertEqual(extra, [], "rows v_sales_latest should not have")
        for k in sorted(want):
            self.assertEqual(got[k], want[k], "tickets/revenue/refunds for %s" % (k,))

    def last_metrics(self):
        return last_metrics(self)


class TestQTicketsLoad(QTicketsCase):
    def test_multi_page_exact_totals_idempotent_and_wire_format(self):
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()
        m = self.last_metrics()
        counted = self.exp["qtickets"]["counts"]["counted"] + self.exp["qtickets"]["counts"].get("paid_deleted", 0)
        self.assertEqual(m["orders"], counted, "every paid order of the window is stored")
        self.assertGreaterEqual(m["pages"], 7, "several order pages were read")
        self.assertEqual(m["events"], 8)
        self.assertEqual(m["filtered_out"], 0)
        self.assertEqual(int(self.scalar("SELECT count() FROM stg_qtickets_api_orders_raw")), counted)
        # every basket of a stored order is stored, with its refund facts
        paid = [o for o in self.data["qtickets"]["orders"] if o["payed"]]
        n_baskets = sum(len(o["baskets"]) for o in paid)
        self.assertEqual(int(self.scalar("SELECT count() FROM stg_qtickets_api_baskets_raw")), n_baskets)
        refunded = [b for o in paid for b in o["baskets"] if b["refunded_at"]]
        self.assertEqual(int(self.scalar("SELECT count() FROM stg_qtickets_api_baskets_raw WHERE refunded_at IS NOT NULL")),
                         len(refunded))
        # an exact float amount survives digit for digit
        floats = [b for o in paid for b in o["baskets"] if isinstance(b["price"], float)]
        self.assertTrue(floats)
        b = floats[0]
        self.assertEqual(Decimal(self.scalar("SELECT toString(price) FROM stg_qtickets_api_baskets_raw WHERE basket_id = '%d'"
                                             % b["id"])), Decimal(repr(b["price"])))
        # times converted by their offset: payed_at as Moscow wall time
        o = paid[0]
        want_ts = dt.datetime.fromisoformat(o["payed_at"]).astimezone(datagen.MSK).strftime("%Y-%m-%d %H:%M:%S")
        self.assertEqual(self.scalar("SELECT toString(payed_at) FROM stg_qtickets_api_orders_raw WHERE order_id = '%d'"
                                     % o["id"]), want_ts)
        # events: city from the nested object, dates from shows
        ev = self.data["qtickets"]["events"][0]
        row = self.q("SELECT city, city_id, toString(start_date) AS s, is_deleted FROM dim_events WHERE event_id = '%d'"
                     % ev["id"])[0]
        self.assertEqual(row["city"], ev["city"]["name"])
        self.assertEqual(row["city_id"], str(ev["city"]["id"]))
        self.assertEqual(row["s"], min(s["start_date"][:10] for s in ev["shows"]))
        self.assertEqual(int(self.scalar("SELECT max(is_deleted) FROM dim_events")), 1, "the deleted event is kept")

        # UTM facts feed v_qtickets_sales_utm_daily
        got_utm = {(x["d"], x["event_id"], x["utm_source"], x["utm_campaign"], x["utm_content"], x["utm_term"]):
                   (int(x["tickets_sold"]), Decimal(x["revenue"])) for x in self.q(
            "SELECT toString(d) AS d, event_id, utm_source, utm_campaign, utm_content, utm_term, tickets_sold, "
            "toString(revenue) AS revenue FROM v_qtickets_sales_utm_daily")}
        want_utm = {}
        for x in self.exp["qtickets"]["sales_utm_daily"]:
            if x["tickets_sold"] == 0 and Decimal(x["revenue"]) == 0:
                continue
            k = (x["date"], str(x["event_id"]), x["utm_source"], x["utm_campaign"], x["utm_content"], x["utm_term"])
            t, rv = want_utm.get(k, (0, Decimal(0)))
            want_utm[k] = (t + x["tickets_sold"], rv + Decimal(x["revenue"]))
        got_utm = {k: v for k, v in got_utm.items() if v != (0, Decimal(0))}
        self.assertEqual(got_utm, want_utm)

        # the request log: filters in the GET body, token only in the header
        reqs = self.api.requests()["requests"]
        orders = [q for q in reqs if q["path"].endswith("/orders")]
        self.assertGreaterEqual(len(orders), 7)
        pages = set()
        for q in orders:
            self.assertEqual(q["method"], "GET")
            body = json.loads(q["body"])
            pages.add(body["page"])
            self.assertEqual(body["orderBy"], {"id": "asc"})
            where = {(w["column"], w.get("operator", "=")): w["value"] for w in body["where"]}
            self.assertEqual(where[("payed", "=")], 1)
            self.assertEqual(where[("payed_at", ">=")], START + "T00:00:00+03:00")
            end_excl = (dt.date.fromisoformat(END) + dt.timedelta(days=1)).isoformat()
            self.assertEqual(where[("payed_at", "<")], end_excl + "T00:00:00+03:00")
        self.assertEqual(pages, set(range(1, len(pages) + 1)), "pages 1..N each fetched")
        for q in reqs:
            self.assertNotIn("qt-test-token", q["raw_path"], "token in a URL")
            hdr = {k.lower(): v for k, v in q["headers"].items()}
            self.assertEqual(hdr.get("authorization"), "Bearer qt-test-token")

        # loading the same window again (twice) changes no figure
        for _ in range(2):
            self.assert_ok(self.load())
        self.assert_exact_totals()
        self.assertEqual(int(self.scalar("SELECT count() FROM v_qtickets_orders_latest")), counted)
        runs = self.runs("qtickets")
        self.assertEqual([x["status"] for x in runs], ["success"] * 3)

    def test_dry_run_writes_nothing_and_prints_counts(self):
        tables = [t["name"] for t in self.q("SELECT name FROM system.tables WHERE database = '%s' AND engine NOT LIKE '%%View'"
                                            % self.db)]
        self.assertIn("stg_qtickets_api_orders_raw", tables)

        def counts():
            return {t: int(self.scalar("SELECT count() FROM `%s`" % t)) for t in tables}
        before = counts()
        r = self.load("--dry-run")
        self.assert_ok(r)
        self.assertEqual(counts(), before)
        counted = self.exp["qtickets"]["counts"]["counted"] + self.exp["qtickets"]["counts"].get("paid_deleted", 0)
        self.assertIn("dry run: nothing was written", r.stdout)
        self.assertIn("stg_qtickets_api_orders_raw: %d rows" % counted, r.stdout)
        self.assertIn("dim_events: 8 rows", r.stdout)

    def test_429_and_503_mid_pagination_are_retried(self):
        self.api.faults([
            {"path": "/orders$", "after": 2, "times": 1, "status": 429, "headers": {"Retry-After": "1"}},
            {"path": "/orders$", "after": 4, "times": 1, "api_error": 503},
        ])
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()
        fired = [f["fired"] for f in self.api.control("/_fake/faults")["rules"]]
        self.assertEqual(fired, [1, 1], "both faults hit a page request")
        self.assertGreaterEqual(self.last_metrics()["retries"], 2)

    def test_malformed_page_fails_run_and_keeps_earlier_pages(self):
        self.api.faults([{"path": "/orders$", "after": 2, "times": -1, "action": "malformed"}])
        r = self.load(env={"QTICKETS_CONCURRENCY": "1"})
        self.assertEqual(r.returncode, 1, r.stderr)
        paid = sorted(o["id"] for o in self.data["qtickets"]["orders"] if o["payed"])
        pages = (len(paid) + 49) // 50
        self.assertIn("orders page 3 of %d: invalid JSON" % pages, r.stderr)
        runs = self.runs("qtickets")
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0]["status"], "error")
        self.assertIn("orders page 3 of %d: invalid JSON" % pages, runs[0]["message"])
        self.assertIn("2 orders pages before it were loaded and kept", runs[0]["message"])
        got = sorted(int(x["order_id"]) for x in self.q("SELECT order_id FROM stg_qtickets_api_orders_raw"))
        self.assertEqual(got, paid[:100], "exactly the orders of pages 1 and 2 are stored")
        self.assertEqual(int(runs[0]["rows_processed"]), int(self.scalar(
            "SELECT (SELECT count() FROM stg_qtickets_api_orders_raw) + (SELECT count() FROM stg_qtickets_api_baskets_raw)"
            " + (SELECT count() FROM dim_events)")))
        m = json.loads(runs[0]["metrics"])
        self.assertEqual(m["orders_pages_ok"], 2)

    def test_bad_token_is_a_clear_error(self):
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": self.api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "wrong"})
        r = self.load()
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 401", r.stderr)
        self.assertIn("QTICKETS_TOKEN", r.stderr)
        self.assertEqual(self.runs("qtickets")[0]["status"], "error")

    def test_old_variable_names_are_accepted_with_a_warning(self):
        self.write_secret("qtickets", {"QTICKETS_API_BASE_URL": self.api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_API_TOKEN": "qt-test-token"})
        r = self.load()
        self.assert_ok(r)
        self.assertIn("QTICKETS_API_TOKEN is an old name", r.stderr)
        self.assertIn("QTICKETS_API_BASE_URL is an old name", r.stderr)
        self.assert_exact_totals()


class TestQTicketsIgnoredFilters(QTicketsCase):
    fake_args = ("--qtickets-ignore-filters",)

    def test_local_refilter_gives_exact_totals(self):
        # A two-day window first: the server returns every order of the account, the loader keeps the window.
        r = self.zhost("run", "scripts/qtickets.lua", "--since", "2025-11-03", "--to", "2025-11-04")
        self.assert_ok(r)
        days = [x["d"] for x in self.q("SELECT DISTINCT toString(toDate(sale_ts)) AS d FROM stg_qtickets_api_orders_raw "
                                       "ORDER BY d")]
        self.assertEqual(days, ["2025-11-03", "2025-11-04"])
        want = {k: v for k, v in expected_rows(self.exp).items() if k[0] in ("2025-11-03", "2025-11-04")}
        self.assertEqual(sales_rows(self), want)
        reqs = [q for q in self.api.requests()["requests"] if q["path"].endswith("/orders")]
        self.assertIn('"payed_at"', reqs[0]["body"], "the filters were still sent")
        m = self.last_metrics()
        self.assertEqual(m["filtered_out"], self.orders - m["orders"])
        # then the whole period: exact figures, no unpaid order stored
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()
        m = self.last_metrics()
        self.assertEqual(m["filtered_out"], self.exp["qtickets"]["counts"]["unpaid"])
        self.assertEqual(int(self.scalar("SELECT countIf(payed = 0) FROM stg_qtickets_api_orders_raw")), 0)


class TestQTicketsPhpKeyedPages(QTicketsCase):
    # Even pages come as PHP encodes a filtered array: {"data": {"50": {...}, "52": {...}}}, and each
    # order's baskets as {"0": {...}, "2": {...}}. Read as "no items", such a page would end the walk
    # and the run would succeed with half the sales missing.
    fake_args = ("--set", "qtickets.php_keyed_pages=true")

    def test_keyed_objects_are_read_as_lists(self):
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()
        even = 0
        for q in self.api.requests()["requests"]:
            if q["path"].endswith("/orders") or q["path"].endswith("/events"):
                page = json.loads(q["body"] or "{}").get("page", 1)
                even += page % 2 == 0
        self.assertGreaterEqual(even, 2, "the data set spans several pages")
        self.assertEqual(self.last_metrics()["pages_data_as_object"], even)


class TestQTicketsDrift(QTicketsCase):
    orders = 120

    def customize(self, data):
        evs = data["qtickets"]["events"]
        evs[0]["name"] = {"ru": evs[0]["name"], "en": "Interactive exhibition"}
        self.dropped = data["qtickets"]["orders"][5]
        self.dropped["payed"] = 1
        self.dropped["payed_at"] = self.dropped["payed_at"] or self.dropped["created_at"]
        self.dropped["deleted_at"] = None
        del self.dropped["baskets"]

    def test_drift_and_refetch(self):
        r = self.load()
        self.assert_ok(r)
        name = self.q("SELECT event_name FROM dim_events WHERE event_id = '%d'" % self.data["qtickets"]["events"][0]["id"])
        self.assertEqual(name[0]["event_name"], self.data["qtickets"]["events"][0]["name"]["ru"])
        reqs = [q["path"] for q in self.api.requests()["requests"]]
        self.assertIn("/qtickets/api/rest/v1/orders/%d" % self.dropped["id"], reqs, "order without baskets re-fetched")
        self.assertEqual(self.last_metrics()["order_refetches"], 1)
        self.assertEqual(self.scalar("SELECT baskets_total FROM stg_qtickets_api_orders_raw WHERE order_id = '%d'"
                                     % self.dropped["id"]), "0")

    def test_refetch_of_an_order_gone_meanwhile_keeps_the_listed_order(self):
        # The order listed without baskets was deleted before it could be fetched alone: the run
        # keeps what the list said instead of failing (it would fail every run for three days).
        self.api.faults([{"path": "/orders/%d$" % self.dropped["id"], "times": 1, "status": 404,
                          "body": '{"error":"Not found","status":404}'}])
        r = self.load()
        self.assert_ok(r)
        m = self.last_metrics()
        self.assertEqual((m["order_refetches"], m["order_refetch_gone"]), (1, 1))
        self.assertEqual(self.scalar("SELECT baskets_total FROM stg_qtickets_api_orders_raw WHERE order_id = '%d'"
                                     % self.dropped["id"]), "0")
        # a refetch that fails otherwise still fails the run, naming the order
        self.api.faults([{"path": "/orders/%d$" % self.dropped["id"], "times": -1, "status": 500, "body": "boom"}])
        r = self.load()
        self.assertNotEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("order %d: HTTP 500" % self.dropped["id"], r.stderr)


class TestQTicketsUnreadableValues(QTicketsCase):
    """A price QTickets sends that is not money (or a quantity that is not a count) must not sit in
    the dashboards as 0.00 with nobody told: the rest loads, the run fails naming order, basket,
    field and value, and the run after QTickets fixes it stores the right figures."""
    orders = 120

    def customize(self, data):
        paid = [o for o in data["qtickets"]["orders"] if o["payed"] and not o["deleted_at"] and o.get("baskets")]
        self.bad_price, self.bad_qty = paid[3], paid[7]
        self.good_price = self.bad_price["baskets"][0]["price"]
        self.good_qty = self.bad_qty["baskets"][0]["quantity"]
        self.bad_price["baskets"][0]["price"] = "abc"
        self.bad_qty["baskets"][0]["quantity"] = {"n": 2}

    def test_rest_loads_and_the_run_fails_naming_each_value(self):
        r = self.load()
        self.assertEqual(r.returncode, 1, r.stderr[-3000:])
        b1, b2 = self.bad_price["baskets"][0]["id"], self.bad_qty["baskets"][0]["id"]
        line = r.stderr.strip().splitlines()[-1]
        self.assertIn("2 value(s) in QTickets orders could not be read", line)
        self.assertIn("order %d basket %d price: invalid decimal 'abc'" % (self.bad_price["id"], b1), line)
        self.assertIn("order %d basket %d quantity: not a whole number: a JSON object or array"
                      % (self.bad_qty["id"], b2), line)
        runs = self.runs("qtickets")
        self.assertEqual(runs[0]["status"], "error")
        self.assertIn("basket %d price" % b1, runs[0]["message"])
        self.assertEqual(json.loads(runs[0]["metrics"])["value_unreadable"], 2)
        # everything was loaded, the unreadable values with the columns' defaults
        counted = self.exp["qtickets"]["counts"]["counted"] + self.exp["qtickets"]["counts"].get("paid_deleted", 0)
        self.assertEqual(int(self.scalar("SELECT count() FROM v_qtickets_orders_latest")), counted)
        self.assertEqual(self.scalar("SELECT toString(price) FROM v_qtickets_baskets_latest WHERE basket_id = '%d'" % b1),
                         "0.00")
        # QTickets fixes the price: the next run succeeds and replaces the row
        data = self.api.control("/_fake/data")
        for o in data["qtickets"]["orders"]:
            if o["id"] == self.bad_price["id"]:
                o["baskets"][0]["price"] = self.good_price
            if o["id"] == self.bad_qty["id"]:
                o["baskets"][0]["quantity"] = self.good_qty
        self.api.control("/_fake/data?merge=1", {"qtickets": data["qtickets"]})
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()


class TestQTicketsConcurrentPages(QTicketsCase):
    orders = 1500
    fake_args = ("--latency-ms", "400")

    def test_pages_are_fetched_concurrently_over_a_slow_link(self):
        import time as _time
        t0 = _time.monotonic()
        r = self.load()
        elapsed = _time.monotonic() - t0
        self.assert_ok(r)
        self.assert_exact_totals()
        n = len([q for q in self.api.requests()["requests"] if q["path"].endswith("/orders")])
        self.assertGreaterEqual(n, 20)
        # one page at a time would take at least n * 0.4 s; eight at a time about an eighth of that
        self.assertLess(elapsed, 0.75 * n * 0.4, "%d order pages took %.1f s" % (n, elapsed))

    def test_default_concurrency_is_eight(self):
        r = self.load()
        self.assert_ok(r)
        ts = sorted(q["ts"] for q in self.api.requests()["requests"] if q["path"].endswith("/orders"))
        self.assertGreaterEqual(len(ts), 20)
        # The fake answers no request before 0.4 s: requests that arrived less than 0.4 s apart were
        # in flight together. At most QTICKETS_CONCURRENCY (default 8) are, and the chunks keep 8 going.
        most = max(sum(1 for u in ts if t - 0.4 < u <= t) for t in ts)
        self.assertEqual(most, 8, "order page requests in flight at once")


class TestQTicketsListedWithoutBaskets(QTicketsCase):
    """A cabinet whose list comes without baskets (api/qtickets.md pitfall 7): every order of the
    window is fetched again alone. They are fetched QTICKETS_CONCURRENCY at a time per page, not one
    by one: one by one, a first-run backfill could outlast the job's timeout."""
    orders = 200
    fake_args = ("--latency-ms", "300", "--set", "qtickets.list_without_baskets=true")

    def test_refetches_are_concurrent_and_totals_exact(self):
        r = self.load()
        self.assert_ok(r)
        self.assert_exact_totals()
        ts = sorted(q["ts"] for q in self.api.requests()["requests"]
                    if "/orders/" in q["path"])
        self.assertEqual(self.last_metrics()["order_refetches"], len(ts))
        self.assertGreaterEqual(len(ts), 20)
        most = max(sum(1 for u in ts if t - 0.3 < u <= t) for t in ts)
        self.assertEqual(most, 8, "order refetches in flight at once")

class TestQTicketsFirstRun(zhtest.ZhostCase):
    def test_first_run_backfills_then_trailing_window(self):
        today = dt.datetime.now(datagen.MSK).date()
        start = (today - dt.timedelta(days=20)).isoformat()
        data = datagen.generate(seed=5, orders=150, events=5, days=20, start=start)
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        api = self.fake("--data", path)
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "qt-test-token"})
        r = self.zhost("run", "scripts/qtickets.lua")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = last_metrics(self)
        self.assertTrue(m.get("backfill"))
        self.assertEqual(m["window"], "%s..%s" % ((today - dt.timedelta(days=29)).isoformat(), today.isoformat()))
        exp = datagen.expected(data)["qtickets"]["totals"]
        tot = self.q("SELECT sum(tickets_sold) AS t, toString(sum(revenue)) AS r FROM v_sales_latest")[0]
        self.assertEqual(int(tot["t"]), exp["tickets_sold"])
        self.assertEqual(Decimal(tot["r"]), Decimal(exp["revenue"]))
        r = self.zhost("run", "scripts/qtickets.lua")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = last_metrics(self)
        self.assertFalse(m.get("backfill"))
        self.assertEqual(m["window"], "%s..%s" % ((today - dt.timedelta(days=2)).isoformat(), today.isoformat()))
        tot2 = self.q("SELECT sum(tickets_sold) AS t, toString(sum(revenue)) AS r FROM v_sales_latest")[0]
        self.assertEqual(tot2, tot, "a trailing re-load changes no figure")


if __name__ == "__main__":
    unittest.main()
