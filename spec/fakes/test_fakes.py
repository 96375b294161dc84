#!/usr/bin/env python3
"""Tests of the fakes themselves, over real HTTP/SMTP against running processes.

  python3 -m unittest spec/fakes/test_fakes.py        (or: python3 spec/fakes/test_fakes.py -v)
"""

import base64
import csv
import gzip
import http.client
import io
import json
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datagen  # noqa: E402

QT = "/qtickets/api/rest/v1"
QT_AUTH = {"Authorization": "Bearer qt-test-token"}
G_CLIENT = {"client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret"}
VK_CLIENT = {"client_id": "vk-client-id", "client_secret": "vk-client-secret"}
VK_STATIC = {"Authorization": "Bearer vkads-static-token"}
VKAPI = {"access_token": "vk1.a.fake-user-token", "v": "5.131", "account_id": "1900001234"}
DIRECT_AUTH = {"Authorization": "Bearer y0_fake-direct-token", "Client-Login": "fake-client-login",
               "Accept-Language": "ru"}


def start_process(args, ready_re, timeout=10):
    p = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    line = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.match(ready_re, line or "")
        if m:
            return p, m
        if p.poll() is not None:
            break
    p.kill()
    raise RuntimeError("process did not become ready: %r %s" % (line, p.stderr.read()))


def stop_process(p):
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for f in (p.stdout, p.stderr):
        f.close()


class FakeAPITestCase(unittest.TestCase):
    data = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fakes-test-")
        cls.data = datagen.generate(seed=7, orders=240, events=8, days=10, start="2025-11-01")
        cls.expected = datagen.expected(cls.data)
        path = os.path.join(cls.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cls.data, f, ensure_ascii=False)
        cls.proc, m = start_process([os.path.join(HERE, "fakeapi.py"), "--port", "0", "--data", path],
                                    r"READY http://127\.0\.0\.1:(\d+)$")
        cls.port = int(m.group(1))

    @classmethod
    def tearDownClass(cls):
        stop_process(cls.proc)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.call("POST", "/_fake/reset")

    # ---------------------------------------------------------------- helpers
    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, method, path, body=None, headers=None, conn=None, params=None, form=None, timeout=10):
        if params:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
        headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        own = conn is None
        c = conn or self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if hdrs.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            return r.status, hdrs, raw
        finally:
            if own:
                c.close()

    def jcall(self, *a, **kw):
        status, hdrs, raw = self.call(*a, **kw)
        return status, hdrs, json.loads(raw.decode("utf-8")) if raw else None

    def faults(self, rules):
        s, _, b = self.jcall("POST", "/_fake/faults", rules)
        self.assertEqual(s, 200, b)

    def config(self, **kw):
        s, _, b = self.jcall("POST", "/_fake/config", {k.replace("__", "."): v for k, v in kw.items()})
        self.assertEqual(s, 200, b)


# =========================================================================== QTickets


class QTicketsTest(FakeAPITestCase):
    def qt_all(self, where, order=None):
        out, page = [], 1
        while True:
            body = {"where": where, "orderBy": order or {"id": "asc"}, "page": page}
            s, _, b = self.jcall("GET", QT + "/orders", body, QT_AUTH)
            self.assertEqual(s, 200, b)
            self.assertEqual(b["paging"]["perPage"], 50)
            out += b["data"]
            if not b["data"] or page * b["paging"]["perPage"] >= b["paging"]["total"]:
                return out, b["paging"]["total"]
            page += 1

    def test_auth(self):
        s, _, b = self.jcall("GET", QT + "/orders")
        self.assertEqual((s, b), (401, {"error": "Unauthorized", "status": 401}))
        s, _, b = self.jcall("GET", QT + "/orders", headers={"Authorization": "Bearer qt-forbidden-token"})
        self.assertEqual((s, b["status"]), (403, 403))

    def test_paging_with_body_filters(self):
        orders, total = self.qt_all([{"column": "payed", "value": 1}])
        want = [o["id"] for o in self.data["qtickets"]["orders"] if o["payed"]]
        self.assertEqual([o["id"] for o in orders], want)
        self.assertEqual(total, len(want))
        self.assertGreater(total, 50)

    def test_query_string_is_ignored(self):
        s, _, b = self.jcall("GET", QT + "/orders?payed=1&page=2&per_page=200", headers=QT_AUTH)
        self.assertEqual(b["paging"], {"perPage": 50, "currentPage": 1, "total": len(self.data["qtickets"]["orders"])})
        self.assertEqual(b["data"][0]["id"], min(o["id"] for o in self.data["qtickets"]["orders"]))

    def test_operators_and_dates(self):
        lo, hi = "2025-11-03T00:00:00+03:00", "2025-11-04T00:00:00+03:00"
        orders, _ = self.qt_all([{"column": "payed", "value": 1},
                                 {"column": "payed_at", "operator": ">=", "value": lo},
                                 {"column": "payed_at", "operator": "<", "value": hi},
                                 {"column": "deleted_at", "operator": "null"}])
        self.assertTrue(orders)
        for o in orders:
            self.assertTrue(lo <= o["payed_at"] < hi and o["deleted_at"] is None)
        ids = [o["id"] for o in self.data["qtickets"]["orders"][:5]]
        got, _ = self.qt_all([{"column": "id", "operator": "in", "value": ids}])
        self.assertEqual([o["id"] for o in got], ids)
        got, total = self.qt_all([{"column": "id", "operator": "not in", "value": ids}])
        self.assertEqual(total, len(self.data["qtickets"]["orders"]) - 5)
        got, _ = self.qt_all([{"column": "deleted_at", "operator": "not null"}], {"id": "desc"})
        self.assertTrue(got and all(o["deleted_at"] for o in got))
        self.assertEqual([o["id"] for o in got], sorted((o["id"] for o in got), reverse=True))
        s, _, b = self.jcall("GET", QT + "/orders", {"where": [{"column": "id", "operator": "~", "value": 1}]}, QT_AUTH)
        self.assertEqual(s, 400)

    def test_ignore_filters_option(self):
        self.config(qtickets__ignore_filters=True)
        _, total = self.qt_all([{"column": "payed", "value": 1}])
        self.assertEqual(total, len(self.data["qtickets"]["orders"]))

    def test_php_json_and_single_objects(self):
        s, h, raw = self.call("GET", QT + "/orders/%d" % self.data["qtickets"]["orders"][0]["id"], headers=QT_AUTH)
        self.assertEqual(s, 200)
        text = raw.decode("ascii")  # pure ASCII
        self.assertIn("\\u04", text)
        self.assertIn("\\/", text)
        self.assertNotIn("://", text)
        self.assertEqual(json.loads(text)["data"]["id"], self.data["qtickets"]["orders"][0]["id"])
        s, _, b = self.jcall("GET", QT + "/orders/1", headers=QT_AUTH)
        self.assertEqual(s, 404)
        s, _, b = self.jcall("GET", QT + "/events", {"page": 1}, QT_AUTH)
        ev = b["data"][0]
        self.assertIsInstance(ev["city"], dict)
        self.assertTrue(ev["shows"])
        s, _, b = self.jcall("GET", QT + "/events/%d" % ev["id"], headers=QT_AUTH)
        self.assertEqual(b["data"]["name"], ev["name"])

    def test_post_orders_is_creation(self):
        s, _, b = self.jcall("POST", QT + "/orders", {"where": [{"column": "payed", "value": 1}]}, QT_AUTH)
        self.assertEqual((s, b), (503, {"error": "Unknown error", "status": 503, "code": "UNKNOWN_ERROR", "info": []}))

    def test_data_coverage(self):
        orders = self.data["qtickets"]["orders"]
        baskets = [b for o in orders for b in o["baskets"]]
        self.assertTrue(any(isinstance(o["price"], float) for o in orders))
        self.assertTrue(any(isinstance(o["price"], int) for o in orders))
        self.assertTrue(any(o["utm"] == [] for o in orders) and any(isinstance(o["utm"], dict) for o in orders))
        self.assertTrue(any(o["custom"] == "" for o in orders) and any(isinstance(o["custom"], dict) for o in orders))
        self.assertEqual({repr(o["reserved"]) for o in orders if o["payed"]}, {"0", "False"})
        self.assertTrue(any(o["payed"] and o["deleted_at"] for o in orders))
        self.assertTrue(any(b["deleted_at"] for b in baskets))
        ref = [b for b in baskets if b["refunded_at"]]
        self.assertTrue(any(b["refunded_amount"] is None for b in ref))
        self.assertTrue(any(b["refunded_amount"] is not None and
                            Decimal(repr(b["refunded_amount"])) < Decimal(repr(b["price"])) * b["quantity"] for b in ref))
        times = [o["payed_at"][11:19] for o in orders if o["payed_at"]]
        self.assertTrue({"23:59:59", "00:00:00", "00:00:01"} & set(times))
        self.assertTrue(all(o["payed_at"].endswith("+03:00") for o in orders if o["payed_at"]))
        evs = self.data["qtickets"]["events"]
        self.assertEqual((evs[0]["name"], evs[0]["city"]["name"]), (evs[1]["name"], evs[1]["city"]["name"]))
        merged = [r for r in self.expected["qtickets"]["sales_daily"] if len(r["event_ids"]) > 1]
        self.assertTrue(merged, "two events with one name in one city must merge on some day")

    def test_expected_matches_api_data(self):
        """Re-derive tickets per Moscow day from what the API returns and compare with datagen.expected."""
        orders, _ = self.qt_all([{"column": "payed", "value": 1}, {"column": "deleted_at", "operator": "null"}])
        from datetime import datetime, timedelta, timezone
        msk = timezone(timedelta(hours=3))
        per_day = {}
        for o in orders:
            d = datetime.fromisoformat(o["payed_at"]).astimezone(msk).date().isoformat()
            n = sum(b["quantity"] for b in o["baskets"] if not b["deleted_at"] and not b["refunded_at"])
            per_day[d] = per_day.get(d, 0) + n
        exp = {}
        for r in self.expected["qtickets"]["sales_daily"]:
            exp[r["date"]] = exp.get(r["date"], 0) + r["tickets_sold"]
        self.assertEqual({k: v for k, v in per_day.items() if v}, {k: v for k, v in exp.items() if v})


# =========================================================================== Google + Gmail


class GmailTest(FakeAPITestCase):
    def token(self, **extra):
        form = dict(G_CLIENT, grant_type="refresh_token", refresh_token="1//fake-refresh-token")
        form.update(extra)
        return self.jcall("POST", "/google/token", form=form)

    def g(self, path, token, **params):
        return self.jcall("GET", "/gmail/gmail/v1/users/me" + path, headers={"Authorization": "Bearer " + token},
                          params=params or None)

    def test_token_endpoint(self):
        s, _, b = self.token()
        self.assertEqual(s, 200)
        self.assertEqual(b["expires_in"], 3599)
        self.assertEqual(b["token_type"], "Bearer")
        self.assertNotIn("refresh_token", b)
        s, _, b = self.token(refresh_token="1//revoked-refresh-token")
        self.assertEqual((s, b), (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}))
        s, _, b = self.token(client_secret="wrong")
        self.assertEqual((s, b["error"]), (401, "invalid_client"))

    def test_loopback_consent_flow(self):
        redirect = "http://127.0.0.1:55555/"
        s, h, _ = self.call("GET", "/google/auth", params=dict(client_id=G_CLIENT["client_id"], redirect_uri=redirect,
                                                               response_type="code", scope="gmail.readonly",
                                                               state="xyz", access_type="offline"))
        self.assertEqual(s, 302)
        loc = urllib.parse.urlsplit(h["location"])
        q = dict(urllib.parse.parse_qsl(loc.query))
        self.assertEqual((loc.port, q["state"]), (55555, "xyz"))
        form = dict(G_CLIENT, grant_type="authorization_code", code=q["code"], redirect_uri=redirect)
        s, _, b = self.jcall("POST", "/google/token", form=form)
        self.assertEqual(s, 200, b)
        self.assertTrue(b["refresh_token"])
        s, _, b2 = self.jcall("POST", "/google/token", form=form)
        self.assertEqual((s, b2["error"]), (400, "invalid_grant"))
        s, _, b3 = self.token(refresh_token=b["refresh_token"])
        self.assertEqual(s, 200)

    def test_list_paging_and_query(self):
        _, _, t = self.token()
        tok = t["access_token"]
        ids, page = [], None
        while True:
            params = {"q": "has:attachment", "maxResults": 2}
            if page:
                params["pageToken"] = page
            s, _, b = self.g("/messages", tok, **params)
            self.assertEqual(s, 200, b)
            ids += [m["id"] for m in b.get("messages", [])]
            page = b.get("nextPageToken")
            if not page:
                break
        want = [m for m in self.data["gmail"]["messages"] if "SPAM" not in m["labelIds"]
                and re.search(r'"filename": "[^"]', json.dumps(m["payload"]))]
        self.assertEqual(sorted(ids), sorted(m["id"] for m in want))
        s, _, b = self.g("/messages", tok, q="subject:nothing-like-this")
        self.assertEqual(b, {"resultSizeEstimate": 0})
        s, _, b = self.g("/messages", tok, q="after:2025-11-01")  # ISO dates match nothing
        self.assertNotIn("messages", b)
        s, _, b = self.g("/messages", tok, q="after:%d filename:csv" % 1700000000)
        self.assertEqual(len(b["messages"]), self.expected_csv_messages())

    def expected_csv_messages(self):
        return sum(1 for m in self.data["gmail"]["messages"] if m["sales_rows"] and re.search(r'"filename": "[^"]', json.dumps(m)))

    def test_token_expiry(self):
        _, _, t = self.token()
        s, _, b = self.g("/messages", t["access_token"])
        self.assertEqual(s, 200)
        self.jcall("POST", "/_fake/clock", {"advance_s": 3600})
        s, h, b = self.g("/messages", t["access_token"])
        self.assertEqual(s, 401)
        self.assertEqual(b["error"]["errors"][0]["reason"], "authError")
        _, _, t2 = self.token()
        s, _, _ = self.g("/messages", t2["access_token"])
        self.assertEqual(s, 200)

    def test_attachments_csv_variants(self):
        tok = "ya29.fake-static-token"
        seen = {"cp1251": 0, "inline": 0, "attachment_id": 0, "rfc822": 0, "octet": 0, "html": 0}
        for m in self.data["gmail"]["messages"]:
            if not m["sales_rows"]:
                continue
            s, _, msg = self.g("/messages/" + m["id"], tok, format="full")
            self.assertEqual(s, 200)
            self.assertIsInstance(msg["internalDate"], str)
            found = []

            def walk(p):
                if p["mimeType"] == "message/rfc822":
                    seen["rfc822"] += 1
                if p["filename"].lower().endswith(".csv"):
                    found.append(p)
                for c in p.get("parts", []):
                    walk(c)
            walk(msg["payload"])
            if "<table" in json.dumps(m["payload"]):  # the HTML-table report has no attachment
                seen["html"] = 1
                self.assertEqual(found, [])
                continue
            self.assertEqual(len(found), 1)
            part = found[0]
            if "data" in part["body"]:
                seen["inline"] += 1
                data = part["body"]["data"]
            else:
                seen["attachment_id"] += 1
                s, _, att = self.g("/messages/%s/attachments/%s" % (m["id"], part["body"]["attachmentId"]), tok)
                self.assertEqual(s, 200)
                data = att["data"]
                self.assertEqual(att["size"], part["body"]["size"])
            if part["mimeType"] == "application/octet-stream":
                seen["octet"] += 1
            self.assertNotIn("=", data)
            self.assertFalse(set("+/") & set(data))
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = raw.decode("cp1251")
                seen["cp1251"] += 1
            delim = ";" if text.split("\n")[0].count(";") else ","
            rows = list(csv.reader(io.StringIO(text), delimiter=delim))
            self.assertEqual(len(rows) - 1, len(m["sales_rows"]))
            header = [h.lower() for h in rows[0]]
            self.assertTrue({"date", "дата", "дата события", "event_date"} & set(header), header)
        self.assertTrue(all(seen.values()), seen)


# =========================================================================== VK Ads


class VKAdsTest(FakeAPITestCase):
    def issue(self, **extra):
        return self.jcall("POST", "/vkads/api/v2/oauth2/token.json",
                          form=dict(VK_CLIENT, grant_type="client_credentials", **extra))

    def test_token_cap_refresh_delete(self):
        toks = []
        for i in range(5):
            s, _, b = self.issue()
            self.assertEqual(s, 200, b)
            self.assertIsInstance(b["expires_in"], str)
            toks.append(b)
        s, _, b = self.issue()
        self.assertEqual(s, 403)
        s, _, b = self.jcall("POST", "/vkads/api/v2/oauth2/token.json",
                             form=dict(VK_CLIENT, grant_type="refresh_token", refresh_token=toks[0]["refresh_token"]))
        self.assertEqual(s, 200)
        s, h, _ = self.jcall("GET", "/vkads/api/v2/ad_plans.json",
                             headers={"Authorization": "Bearer " + toks[0]["access_token"]})
        self.assertEqual(s, 401)
        self.assertIn('error="invalid_token"', h["www-authenticate"])
        s, _, _ = self.jcall("GET", "/vkads/api/v2/ad_plans.json", headers={"Authorization": "Bearer " + b["access_token"]})
        self.assertEqual(s, 200)
        s, _, _ = self.call("POST", "/vkads/api/v2/oauth2/token/delete.json", form=VK_CLIENT)
        self.assertEqual(s, 204)
        s, _, b2 = self.issue()
        self.assertEqual(s, 200)
        self.jcall("POST", "/_fake/clock", {"advance_s": 86400})
        s, h, body = self.jcall("GET", "/vkads/api/v2/ad_plans.json", headers={"Authorization": "Bearer " + b2["access_token"]})
        self.assertEqual((s, body["code"]), (401, "expired_token"))
        self.assertIn('error="expired_token"', h["www-authenticate"])
        s, _, b3 = self.jcall("POST", "/vkads/api/v2/oauth2/token.json",
                              form=dict(VK_CLIENT, grant_type="agency_client_credentials",
                                        agency_client_name="agency_client_1"))
        self.assertEqual(s, 200)

    def test_list_paging(self):
        ids, offset = [], 0
        while True:
            s, h, b = self.jcall("GET", "/vkads/api/v2/banners.json", headers=VK_STATIC,
                                 params={"fields": "id,name,urls,ad_group_id", "limit": 5, "offset": offset})
            self.assertEqual(s, 200)
            self.assertIn("x-ratelimit-rps-remaining", h)
            ids += [i["id"] for i in b["items"]]
            self.assertIn("utm_content=", b["items"][0]["urls"]["primary"]["url"])
            offset += len(b["items"])
            if offset >= b["count"]:
                break
        self.assertEqual(ids, sorted(x["id"] for x in self.data["vk"]["banners"]))
        s, _, b = self.jcall("GET", "/vkads/api/v2/banners.json", headers=VK_STATIC, params={"limit": 51})
        self.assertEqual(s, 400)
        s, _, b = self.jcall("GET", "/vkads/api/v2/ad_groups.json", headers=VK_STATIC,
                             params={"_ad_plan_id": 101, "fields": "id,ad_plan_id"})
        self.assertTrue(b["items"] and all(i["ad_plan_id"] == 101 for i in b["items"]))

    def test_statistics(self):
        plans = [p["id"] for p in self.data["vk"]["ad_plans"]]
        d1, d2 = self.data["meta"]["date_from"], self.data["meta"]["date_to"]
        s, _, b = self.jcall("GET", "/vkads/api/v2/statistics/ad_plans/day.json", headers=VK_STATIC,
                             params={"id": ",".join(map(str, plans)), "date_from": d1, "date_to": d2, "metrics": "base"})
        self.assertEqual(s, 200, b)
        got = {}
        for item in b["items"]:
            self.assertEqual(len(item["rows"]), 10)  # every day present, also without delivery
            for r in item["rows"]:
                self.assertIsInstance(r["base"]["spent"], str)
                self.assertIsInstance(r["base"]["shows"], int)
                if r["base"]["shows"]:
                    got[(r["date"], item["id"])] = (r["base"]["shows"], r["base"]["clicks"], Decimal(r["base"]["spent"]))
        want = {(r["date"], r["campaign_id"]): (r["impressions"], r["clicks"], Decimal(r["spent"]))
                for r in self.expected["vk"]["daily"]}
        self.assertEqual(got, want)
        s, _, b = self.jcall("GET", "/vkads/api/v2/statistics/banners/day.json", headers=VK_STATIC,
                             params={"id": ",".join(str(i) for i in range(1, 202)), "date_from": d1, "date_to": d2})
        self.assertEqual((s, b["error"]["code"]), (400, "ERR_LIMIT_EXCEEDED"))
        s, _, b = self.jcall("GET", "/vkads/api/v2/statistics/banners/day.json", headers=VK_STATIC,
                             params={"id": "1", "date_from": d1, "date_to": d2})
        self.assertEqual((s, b["error"]["code"]), (400, "ERR_WRONG_BANNERS"))
        s, _, b = self.jcall("GET", "/vkads/api/v2/statistics/ad_plans/day.json", headers=VK_STATIC,
                             params={"id": plans[0], "date_from": "2025-01-01", "date_to": "2025-04-30"})
        self.assertEqual((s, b["error"]["code"]), (400, "ERR_WRONG_DATE"))

    def test_rate_limit(self):
        self.config(vkads__rps_limit=2)
        statuses = [self.call("GET", "/vkads/api/v2/ad_plans.json", headers=VK_STATIC)[0] for _ in range(6)]
        self.assertIn(429, statuses)

    def test_legacy_vk_api(self):
        s, _, b = self.jcall("GET", "/vkapi/method/ads.getStatistics", params=dict(
            VKAPI, ids_type="campaign", ids="101,102,103", period="day",
            date_from=self.data["meta"]["date_from"], date_to=self.data["meta"]["date_to"]))
        self.assertEqual(s, 200)
        got = {(st["day"], i["id"]): (st["impressions"], st["clicks"], Decimal(st["spent"]))
               for i in b["response"] for st in i["stats"]}
        want = {(r["date"], r["campaign_id"]): (r["impressions"], r["clicks"], Decimal(r["spent"]))
                for r in self.expected["vk"]["daily"]}
        self.assertEqual(got, want)
        s, _, b = self.jcall("GET", "/vkapi/method/ads.getAds", params=VKAPI)
        self.assertIn("utm_content=", b["response"][0]["link_url"])
        s, _, b = self.jcall("GET", "/vkapi/method/ads.getCampaigns", params=dict(VKAPI, access_token="bad"))
        self.assertEqual((s, b["error"]["error_code"]), (200, 5))
        self.faults([{"path": "ads\\.getStatistics", "api_error": 9}])
        s, _, b = self.jcall("POST", "/vkapi/method/ads.getStatistics", form=dict(VKAPI, ids_type="ad", ids="1",
                                                                                   period="day"))
        self.assertEqual((s, b["error"]["error_code"], b["error"]["error_msg"]), (200, 9, "Flood control"))
        self.assertIn({"key": "method", "value": "ads.getStatistics"}, b["error"]["request_params"])
        self.assertNotIn("access_token", json.dumps(b))


# =========================================================================== Yandex Direct


def report_body(name, d1="2025-11-01", d2="2025-11-10", fields=None):
    return {"params": {"SelectionCriteria": {"DateFrom": d1, "DateTo": d2},
                       "FieldNames": fields or ["Date", "CampaignId", "CampaignName", "Impressions", "Clicks", "Cost",
                                                "AvgCpc", "Conversions"],
                       "ReportName": name, "ReportType": "CUSTOM_REPORT", "DateRangeType": "CUSTOM_DATE",
                       "Format": "TSV", "IncludeVAT": "YES", "IncludeDiscount": "NO"}}


class DirectTest(FakeAPITestCase):
    def report(self, body, **headers):
        h = dict(DIRECT_AUTH)
        h.update({k: str(v) for k, v in headers.items()})
        return self.call("POST", "/direct/json/v5/reports", body, h)

    def test_offline_flow(self):
        self.config(direct__retry_in=[1, 3, 2], direct__offline_polls=2)
        body = report_body("flow")
        seq = []
        for _ in range(6):
            s, h, raw = self.report(body, processingMode="auto")
            self.assertIn("requestid", h)
            seq.append((s, h.get("retryin"), h.get("reportsinqueue")))
            if s == 200:
                break
        self.assertEqual(seq, [(201, "1", "1"), (202, "3", "1"), (202, "2", "1"), (200, None, None)])
        lines = raw.decode().rstrip("\n").split("\n")
        self.assertEqual(lines[0], '"flow (2025-11-01 - 2025-11-10)"')
        self.assertEqual(lines[1].split("\t")[:3], ["Date", "CampaignId", "CampaignName"])
        self.assertEqual(lines[-1], "Total rows: %d" % (len(lines) - 3))
        cost = sum(int(l.split("\t")[5]) for l in lines[2:-1])
        self.assertEqual(cost, sum(r["cost_micros"] for r in self.expected["direct"]["daily"]))
        self.assertIn("--", "\n".join(lines))  # Conversions without Metrica / AvgCpc with 0 clicks
        self.assertEqual(len(lines) - 3, len(self.expected["direct"]["daily"]))
        s, _, raw = self.report(body)  # stored report: immediately 200
        self.assertEqual(s, 200)
        s, _, raw = self.report(report_body("flow", d2="2025-11-09"))
        err = json.loads(raw)["error"]
        self.assertEqual((s, err["error_code"]), (400, 4000))

    def test_online_skip_headers_and_money(self):
        s, h, raw = self.report(report_body("online"), processingMode="online", returnMoneyInMicros="false",
                                skipReportHeader="true", skipColumnHeader="true", skipReportSummary="true")
        self.assertEqual(s, 200)
        lines = raw.decode().rstrip("\n").split("\n")
        self.assertTrue(re.fullmatch(r"2025-11-\d\d", lines[0].split("\t")[0]))
        total = sum(Decimal(l.split("\t")[5]) for l in lines)
        self.assertEqual(total, sum(Decimal(r["cost"]) for r in self.expected["direct"]["daily"]))
        self.assertTrue(re.fullmatch(r"\d+/\d+/\d+", h["units"]))

    def test_errors(self):
        s, h, raw = self.call("POST", "/direct/json/v5/reports", report_body("x"),
                              {"Authorization": "Bearer nope", "processingMode": "online"})
        e = json.loads(raw)["error"]
        self.assertEqual((s, e["error_code"]), (400, 53))
        self.assertEqual(h["requestid"], e["request_id"])
        self.faults([{"path": "/direct/json/v5/reports", "api_error": 152}])
        s, _, raw = self.report(report_body("y"), processingMode="online")
        self.assertEqual(json.loads(raw)["error"]["error_code"], 152)
        s, _, raw = self.report(report_body("y"), processingMode="online")
        self.assertEqual(s, 200)

    def test_campaigns_paging(self):
        ids, offset = [], 0
        while True:
            s, _, b = self.jcall("POST", "/direct/json/v5/campaigns", {"method": "get", "params": {
                "SelectionCriteria": {}, "FieldNames": ["Id", "Name", "State"], "Page": {"Limit": 2, "Offset": offset}}},
                DIRECT_AUTH)
            ids += [c["Id"] for c in b["result"]["Campaigns"]]
            if "LimitedBy" not in b["result"]:
                break
            offset = b["result"]["LimitedBy"]
        self.assertEqual(ids, sorted(c["Id"] for c in self.data["direct"]["campaigns"]))


# =========================================================================== shared machinery


class MachineryTest(FakeAPITestCase):
    def test_get_body_and_request_log(self):
        self.call("GET", QT + "/orders", {"where": [{"column": "payed", "value": 1}]}, QT_AUTH)
        s, _, b = self.jcall("GET", "/_fake/requests", params={"path": "orders"})
        r = b["requests"][-1]
        self.assertEqual(r["method"], "GET")
        self.assertEqual(json.loads(r["body"])["where"][0]["column"], "payed")
        self.assertEqual(r["headers"]["Authorization"], "Bearer qt-test-token")

    def test_keepalive_gzip_and_close(self):
        c = self.conn()
        try:
            s1, h1, b1 = self.call("GET", QT + "/orders", b"{}", dict(QT_AUTH, **{"Accept-Encoding": "gzip"}), conn=c)
            sock1 = c.sock
            s2, h2, b2 = self.call("GET", QT + "/nope", None, QT_AUTH, conn=c)  # error response, same socket
            s3, h3, b3 = self.call("GET", QT + "/orders", b"{}", QT_AUTH, conn=c)
            self.assertIs(c.sock, sock1)
            self.assertEqual(h1["content-encoding"], "gzip")
            self.assertEqual(b1, b3)
            self.assertEqual(s2, 404)
            s4, h4, _ = self.call("GET", QT + "/orders", b"{}", dict(QT_AUTH, Connection="close"), conn=c)
            self.assertEqual(h4.get("connection"), "close")
        finally:
            c.close()

    def test_status_faults_times_after(self):
        self.faults([{"path": "^/qtickets/.*/orders$", "method": "GET", "after": 1, "times": 2, "status": 502,
                      "body": "<html>bad gateway</html>", "headers": {"Content-Type": "text/html"}}])
        got = [self.call("GET", QT + "/orders", b"{}", QT_AUTH)[0] for _ in range(5)]
        self.assertEqual(got, [200, 502, 502, 200, 200])
        s, _, b = self.jcall("GET", "/_fake/faults")
        self.assertEqual(b["rules"][0]["fired"], 2)

    def test_body_re_tells_list_pages_apart(self):
        self.faults([{"path": "orders$", "body_re": r'"page"\s*:\s*2\b', "status": 200, "times": -1,
                      "body": '{"data":[],"paging":{"perPage":50,"currentPage":2,"total":0}}'}])
        s2, _, got2 = self.call("GET", QT + "/orders", json.dumps({"page": 2}), QT_AUTH)
        s1, _, got1 = self.jcall("GET", QT + "/orders", {"page": 1}, QT_AUTH)
        s12, _, _ = self.jcall("GET", QT + "/orders", {"page": 12}, QT_AUTH)
        self.assertEqual((s2, got2), (200, b'{"data":[],"paging":{"perPage":50,"currentPage":2,"total":0}}'))
        self.assertEqual((s1, got1["paging"]["currentPage"], s12), (200, 1, 200))
        s, _, b = self.jcall("GET", "/_fake/faults")
        self.assertEqual(b["rules"][0]["fired"], 1)

    def test_body_b64_sends_raw_bytes(self):
        raw = b'{"data":["\xff"]}'
        self.faults([{"path": "orders$", "status": 200, "body_b64": base64.b64encode(raw).decode()},
                     {"path": "orders$", "action": "malformed", "body_b64": base64.b64encode(raw[:5]).decode()}])
        s, _, got = self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.assertEqual((s, got), (200, raw))
        s, _, got = self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.assertEqual((s, got), (200, raw[:5]))

    def test_reset_truncate_malformed_hang_delay(self):
        self.faults([{"path": "orders", "action": "reset"}])
        with self.assertRaises((ConnectionError, http.client.RemoteDisconnected)):
            self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.faults([{"path": "orders", "action": "truncate"}])
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.faults([{"path": "orders", "action": "malformed"}])
        s, _, raw = self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.assertEqual(s, 200)
        with self.assertRaises(ValueError):
            json.loads(raw)
        self.faults([{"path": "orders", "action": "hang"}])
        with self.assertRaises(socket.timeout):
            self.call("GET", QT + "/orders", b"{}", QT_AUTH, timeout=0.5)
        self.faults([{"path": "orders", "delay_ms": 300}])
        t = time.time()
        s, _, _ = self.call("GET", QT + "/orders", b"{}", QT_AUTH)
        self.assertEqual(s, 200)
        self.assertGreaterEqual(time.time() - t, 0.3)

    def test_gate_holds_a_request_until_opened(self):
        self.faults([{"path": "orders$", "after": 1, "gate": "g1"}])
        self.assertEqual(self.call("GET", QT + "/orders", b"{}", QT_AUTH)[0], 200)  # before the gate
        done = []
        t = threading.Thread(target=lambda: done.append(self.call("GET", QT + "/orders", b"{}", QT_AUTH)[0]))
        t.start()
        deadline = time.time() + 10
        while time.time() < deadline and not self.jcall("GET", "/_fake/gates")[2]["waiting"].get("g1"):
            time.sleep(0.05)
        self.assertEqual(self.jcall("GET", "/_fake/gates")[2]["waiting"], {"g1": 1})
        time.sleep(0.3)
        self.assertEqual(done, [], "held until the gate opens")
        s, _, b = self.jcall("POST", "/_fake/gates", {"open": "g1"})
        self.assertEqual((s, b["open"]), (200, ["g1"]))
        t.join(10)
        self.assertEqual(done, [200])
        self.assertEqual(self.jcall("POST", "/_fake/gates", {"close": "g1"})[0], 400)
        s, _, _ = self.jcall("POST", "/_fake/faults", [{"path": "orders", "gate": 5}])
        self.assertEqual(s, 400)

    def test_replace_data(self):
        small = datagen.generate(seed=3, orders=5, events=3, days=2)
        s, _, _ = self.jcall("POST", "/_fake/data", small)
        self.assertEqual(s, 200)
        _, _, b = self.jcall("GET", QT + "/orders", {}, QT_AUTH)
        self.assertEqual(b["paging"]["total"], 5)
        self.call("POST", "/_fake/reset")
        _, _, b = self.jcall("GET", QT + "/orders", {}, QT_AUTH)
        self.assertEqual(b["paging"]["total"], len(self.data["qtickets"]["orders"]))


# =========================================================================== SMTP


class SMTPSinkTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="smtp-sink-")
        self.out = os.path.join(self.tmp, "mail")
        args = [os.path.join(HERE, "smtp_sink.py"), "--port", "0", "--out", self.out]
        self.cert = None
        if shutil.which("openssl"):
            cert, key = os.path.join(self.tmp, "c.pem"), os.path.join(self.tmp, "k.pem")
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                                cert, "-days", "1", "-subj", "/CN=127.0.0.1"], capture_output=True)
            if r.returncode == 0:
                self.cert = cert
                args += ["--tls-cert", cert, "--tls-key", key]
        self.proc, m = start_process(args, r"READY (\d+)$")
        self.port = int(m.group(1))

    def tearDown(self):
        stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_send_and_store(self):
        body = "Subject: Алерт\r\nFrom: etl@example.com\r\nTo: ops@example.com\r\n\r\n.line starting with a dot\r\nok\r\n"
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
            s.ehlo("zhost")
            s.login("etl@example.com", "secret")
            s.sendmail("etl@example.com", ["ops@example.com", "dev@example.com"], body.encode("utf-8"))
            s.noop()
            s.rset()
        files = sorted(f for f in os.listdir(self.out) if f.endswith(".eml"))
        self.assertEqual(len(files), 1)
        with open(os.path.join(self.out, files[0]), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("X-Sink-Mail-From: <etl@example.com>", text)
        self.assertIn("X-Sink-Rcpt-To: <dev@example.com>", text)
        self.assertIn("X-Sink-Auth-User: etl@example.com", text)
        self.assertIn("\n.line starting with a dot", text)
        self.assertIn("Subject: Алерт", text)

    def test_starttls(self):
        if not self.cert:
            self.skipTest("openssl not available")
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
            s.starttls(context=ctx)
            s.login("u", "p")
            s.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nhi\r\n")
        with open(os.path.join(self.out, "msg-0001.eml"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("X-Sink-Tls: yes", text)


if __name__ == "__main__":
    unittest.main()
