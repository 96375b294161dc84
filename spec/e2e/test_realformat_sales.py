"""Real-format audit of the sales loaders: hand-written payloads in the documented wire formats
(/work/shared/api/qtickets.md, gmail.md), served verbatim by the fake, the real loader run as an
operator would, and what lands in ClickHouse (staging, views, meta_job_runs) compared with values
worked out by hand from the payloads (spec/fixtures/qtickets_real/, spec/fixtures/gmail_real/)."""
import json
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

QT = os.path.join(zhtest.SOURCE_DIR, "spec", "fixtures", "qtickets_real")


def fixture(name):
    with open(os.path.join(QT, name), encoding="utf-8") as f:
        return f.read()


def page_rule(path, page, body):
    """Serve `body` verbatim for the list page `page` (told apart by the GET body's "page")."""
    return {"path": path, "body_re": r'"page"\s*:\s*%d\b' % page, "status": 200, "times": -1, "body": body,
            "headers": {"Content-Type": "application/json"}}


class RealQTickets(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        data = datagen.generate(seed=1, orders=1, events=1, days=3, start="2025-11-01")
        data["qtickets"] = {"events": [], "orders": []}
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        self.api = self.fake("--data", path)
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": self.api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "qt-test-token"})

    def serve_pages(self, p1=None):
        self.api.faults([
            page_rule("/events$", 1, fixture("events_p1.json")),
            page_rule("/orders$", 1, p1 or fixture("orders_p1.json")),
            page_rule("/orders$", 2, fixture("orders_p2.json")),
            page_rule("/orders$", 3, fixture("orders_p3.json")),
            {"path": "/orders/4367$", "status": 200, "times": -1, "body": fixture("order_4367.json")},
        ])

    def load(self, *extra):
        return self.zhost("run", "scripts/qtickets.lua", "--since", "2025-11-01", "--to", "2025-11-03", *extra)

    def sales(self):
        return {(r["d"], r["city"], r["event_name"]): (int(r["tickets_sold"]), Decimal(r["revenue"]), Decimal(r["refunds"]))
                for r in self.q("SELECT toString(event_date) AS d, city, event_name, tickets_sold, "
                                "toString(revenue) AS revenue, toString(refunds) AS refunds FROM v_sales_latest")}

    # Worked out by hand from the fixtures (Moscow date of payed_at, live baskets, price x quantity).
    SALES = {
        ("2025-11-01", "Томск", "Детская интерактивная выставка"): (3, Decimal("2022.03"), Decimal(0)),  # 4360, 4361
        ("2025-11-02", "Москва", "Концерт «Осень»"): (3, Decimal("3000.00"), Decimal(0)),  # 4362 (21:30Z), promo 2^53+1
        ("2025-11-03", "Томск", "Детская интерактивная выставка"): (1, Decimal("600.00"), Decimal("500.00")),  # 4366
        ("2025-11-03", "Москва", "Концерт «Осень»"): (1, Decimal("700.50"), Decimal(0)),  # 4367 refetched
    }

    def test_documented_pages_land_as_computed_by_hand(self):
        self.serve_pages()
        r = self.load()
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(self.sales(), self.SALES)
        r = self.load()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.sales(), self.SALES)

    def test_a_basket_gone_from_its_order_stops_counting(self):
        # Order 4360 had baskets 63993 and 63994. Later QTickets lists it with 63993 filtered out, the
        # way PHP encodes a list after array_filter ({"1": …}). The latest snapshot of the order is the
        # truth: the basket that is no longer in it must not stay a sale through its older row.
        self.serve_pages()
        r = self.load()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # A run stopped after its order rows went in but before its baskets did (or with the baskets in
        # the spool) leaves the previous snapshot of the baskets counting.
        cols = [c["name"] for c in self.q("SELECT name FROM system.columns WHERE database = currentDatabase() AND "
                                          "table = 'stg_qtickets_api_orders_raw' AND default_kind != 'MATERIALIZED'")]
        zhtest.ch("INSERT INTO stg_qtickets_api_orders_raw (%s) SELECT %s FROM stg_qtickets_api_orders_raw" % (
            ", ".join(cols), ", ".join("_ver + 1" if c == "_ver" else c for c in cols)), self.db)
        self.assertEqual(self.sales(), self.SALES)
        page = fixture("orders_p1.json")
        start = page.index('"baskets":[{"id":63993')
        end = page.index('{"id":63994')
        later = page[:start] + '"baskets":{"1":' + page[end:]
        close = later.index(']', later.index('"passbook_url":null}', later.index('{"id":63994')))
        later = later[:close] + '}' + later[close + 1:]
        json.loads(later)  # still a valid page
        self.api.clear_faults()
        self.serve_pages(p1=later)
        r = self.load()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        want = dict(self.SALES)
        want[("2025-11-01", "Томск", "Детская интерактивная выставка")] = (2, Decimal("1622.03"), Decimal(0))
        self.assertEqual(self.sales(), want)
        daily = self.q("SELECT toString(sales_date) AS d, tickets_sold, toString(revenue) AS r FROM fact_qtickets_sales_daily "
                       "WHERE event_id = '24089' ORDER BY d")
        self.assertEqual(daily[0], {"d": "2025-11-01", "tickets_sold": "2", "r": "1622.03"})


GM = os.path.join(zhtest.SOURCE_DIR, "spec", "fixtures", "gmail_real")


def gfixture(name):
    with open(os.path.join(GM, name), encoding="utf-8") as f:
        return f.read()


class RealGmail(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        data = datagen.generate(seed=1, orders=1, events=1, days=3, start="2025-11-01")
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        self.api = self.fake("--data", path)
        base = self.api.url
        gdir = os.path.join(self.secrets, "gmail")
        os.makedirs(gdir)
        # credentials.json of a Desktop client and a google-auth token.json whose access token expired
        creds = {"installed": {"client_id": "1234-fake.apps.googleusercontent.com", "project_id": "zakaz-mail",
                               "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": base + "/google/token",
                               "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                               "client_secret": "GOCSPX-fake-secret", "redirect_uris": ["http://localhost"]}}
        token = {"token": "ya29.a0AfB_expired", "refresh_token": "1//fake-refresh-token", "token_uri": base + "/google/token",
                 "client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret",
                 "scopes": ["https://www.googleapis.com/auth/gmail.readonly"], "universe_domain": "googleapis.com",
                 "account": "", "expiry": "2025-06-27T08:38:04.924450Z"}
        for name, obj in (("credentials.json", creds), ("token.json", token)):
            with open(os.path.join(gdir, name), "w") as f:
                json.dump(obj, f)
            os.chmod(os.path.join(gdir, name), 0o600)
        self.write_secret("gmail", {"GMAIL_BASE_URL": base + "/gmail",
                                    "GMAIL_QUERY": "from:reports@qtickets.ru has:attachment after:1761944400"})

    def serve(self, rules):
        g = "/gmail/v1/users/me/messages"
        self.api.faults(rules + [
            {"path": g + r"\?.*pageToken=09876543210", "status": 200, "times": -1, "body": gfixture("list_p2.json")},
            {"path": g + r"\?", "status": 200, "times": -1, "body": gfixture("list_p1.json")},
            {"path": g + r"/18c1f2a3b4c5d6e7/attachments/ANGjdJ8wQz1kX_r-Tq3", "status": 200, "times": -1,
             "body": gfixture("att_ANGjdJ8wQz1kX_r-Tq3.json")},
        ] + [{"path": g + "/%s\\?" % m, "status": 200, "times": -1, "body": gfixture("msg_%s.json" % m)}
             for m in ("18c1f2a3b4c5d6e7", "18c1f2a3b4c5d6e8", "18c1f2a3b4c5d6e9")])

    def rows(self):
        return {(r["d"], r["city"], r["event_name"], r["event_id"]): (int(r["t"]), Decimal(r["rv"]), Decimal(r["rf"]))
                for r in self.q("SELECT toString(event_date) AS d, city, event_name, event_id, tickets_sold AS t, "
                                "toString(revenue) AS rv, toString(refunds) AS rf FROM v_qtickets_gmail_latest")}

    ROWS = {
        ("2025-11-01", "Томск", "Детская интерактивная выставка", "24089"): (3, Decimal("2022.03"), Decimal(0)),
        ("2025-11-02", "Москва", "Концерт «Осень»", "24090"): (3, Decimal("3000.00"), Decimal(0)),
        ("2025-11-03", "Томск", "Детская интерактивная выставка", "24089"): (1, Decimal("600.00"), Decimal("500.00")),
        ("2025-11-04", "Москва", "Концерт «Осень»", "24090"): (2, Decimal("1500.00"), Decimal(0)),
        ("2025-11-05", "Томск", "Детская интерактивная выставка", ""): (4, Decimal("1960.00"), Decimal(0)),
    }

    def test_documented_messages_land_as_computed_by_hand(self):
        self.serve([])
        r = self.zhost("run", "scripts/gmail.lua")
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(self.rows(), self.ROWS)
        r = self.zhost("run", "scripts/gmail.lua", "--reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.rows(), self.ROWS)


if __name__ == "__main__":
    unittest.main()
