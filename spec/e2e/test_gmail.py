"""End-to-end: scripts/gmail.lua (Gmail backup channel) against the fake Gmail + Google OAuth and a real
ClickHouse; and the API-over-Gmail precedence of v_sales_latest together with scripts/qtickets.lua."""
import json
import os
import stat
import sys
import time
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

START = "2025-11-01"


def msg_id(r):
    return "%016x" % (0x18c1f2a3b4c5d600 + r * 0x1111)


class GmailCase(zhtest.ZhostCase):
    seed = 3

    def setUp(self):
        super().setUp()
        self.data = datagen.generate(seed=self.seed, orders=200, events=8, days=14, start=START)
        self.exp = datagen.expected(self.data)
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.data, f, ensure_ascii=False)
        self.api = self.fake("--data", path)
        self.gdir = os.path.join(self.secrets, "gmail")
        os.makedirs(self.gdir)
        self.write_google(refresh="1//fake-refresh-token")
        self.write_secret("gmail", {"GMAIL_BASE_URL": self.api.url + "/gmail", "GMAIL_QUERY": "in:inbox"})

    def write_google(self, refresh):
        base = self.api.url
        creds = {"installed": {"client_id": "1234-fake.apps.googleusercontent.com", "project_id": "p",
                               "auth_uri": base + "/google/auth", "token_uri": base + "/google/token",
                               "client_secret": "GOCSPX-fake-secret", "redirect_uris": ["http://localhost"]}}
        token = {"token": "ya29.expired-token", "refresh_token": refresh, "token_uri": base + "/google/token",
                 "client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret",
                 "scopes": ["https://www.googleapis.com/auth/gmail.readonly"], "universe_domain": "googleapis.com",
                 "account": "", "expiry": "2020-01-01T00:00:00Z"}
        for name, obj in (("credentials.json", creds), ("token.json", token)):
            p = os.path.join(self.gdir, name)
            with open(p, "w") as f:
                json.dump(obj, f)
            os.chmod(p, 0o600)

    def gmail(self, *extra):
        return self.zhost("run", "scripts/gmail.lua", *extra)

    def assert_ok(self, r):
        self.assertEqual(r.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))

    def gmail_rows(self):
        rows = self.q("SELECT toString(event_date) AS d, city, event_name, tickets_sold, toString(revenue) AS rv, "
                      "toString(refunds) AS rf FROM v_qtickets_gmail_latest")
        out = {}
        for r in rows:
            k = (r["d"], r["city"], r["event_name"])
            t, rv, rf = out.get(k, (0, Decimal(0), Decimal(0)))
            out[k] = (t + int(r["tickets_sold"]), rv + Decimal(r["rv"]), rf + Decimal(r["rf"]))
        return out

    def metrics(self):
        # the latest run: several runs can start in the same second, _ver is in milliseconds
        return json.loads(self.q("SELECT metrics FROM meta_job_runs WHERE job = 'gmail_ingest' ORDER BY _ver DESC "
                                 "LIMIT 1")[0]["metrics"])


class TestGmail(GmailCase):
    def test_all_report_variants_load_exactly_with_a_refreshed_token(self):
        r = self.gmail()
        self.assert_ok(r)
        want = {(x["date"], x["city"], x["event_name"]): (x["tickets_sold"], Decimal(x["revenue"]), Decimal(x["refunds"]))
                for x in self.exp["gmail"]["daily"]}
        self.assertEqual(self.gmail_rows(), want)
        m = self.metrics()
        self.assertEqual(m["messages_loaded"], 6)
        self.assertEqual(m["messages_without_report"], 2, "the reminder and the PDF-only message")
        # the PDF is named (a run that loads nothing from a report must not look like one that had none)
        self.assertEqual((m["unreadable_attachments"], m["unreadable_types"], m["messages_report_unreadable"]),
                         (1, ".pdf", 0))
        self.assertIn("1 message(s) had only attachments zhost cannot read (.pdf): «Акт сверки» "
                      "(18c1f2a3b4c5e002: act.pdf)", self.runs("gmail_ingest")[-1]["message"])
        self.assertEqual(m["report_rows"], self.exp["gmail"]["rows"])
        # the forwarded message/rfc822 with a CP1251 ';' CSV (application/vnd.ms-excel) is in, by its id
        fwd = [x for x in self.data["gmail"]["messages"] if x["id"] == msg_id(3)][0]
        self.assertEqual(fwd["payload"]["parts"][1]["mimeType"], "message/rfc822")
        n = int(self.scalar("SELECT count() FROM stg_qtickets_sales_raw WHERE src_msg_id = '%s'" % msg_id(3)))
        self.assertEqual(n, len(fwd["sales_rows"]))
        self.assertGreater(n, 0)
        # the CP1251 ';' attachment with a Cyrillic name under application/octet-stream
        n1 = int(self.scalar("SELECT count() FROM stg_qtickets_sales_raw WHERE src_msg_id = '%s'" % msg_id(1)))
        self.assertEqual(n1, len(self.data["gmail"]["messages"][1]["sales_rows"]))
        # _ver is the message's internalDate
        v = self.scalar("SELECT max(_ver) FROM stg_qtickets_sales_raw WHERE src_msg_id = '%s'" % msg_id(1))
        self.assertEqual(v, self.data["gmail"]["messages"][1]["internalDate"])

        # the expired access token was refreshed and token.json rewritten in place (0600, refresh token kept)
        tp = os.path.join(self.gdir, "token.json")
        self.assertEqual(stat.S_IMODE(os.stat(tp).st_mode), 0o600)
        with open(tp) as f:
            tok = json.load(f)
        self.assertNotEqual(tok["token"], "ya29.expired-token")
        self.assertEqual(tok["refresh_token"], "1//fake-refresh-token")
        self.assertGreater(tok["expiry"], time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
        reqs = self.api.requests()["requests"]
        self.assertEqual(len([q for q in reqs if q["path"] == "/google/token"]), 1, "one refresh")
        for q in reqs:
            self.assertNotIn("ya29", q["raw_path"])

        # a second run skips the loaded messages (no messages.get for them) and changes nothing
        self.api.control("/_fake/requests", method="DELETE")
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.gmail_rows(), want)
        m = self.metrics()
        self.assertEqual(m["messages_skipped"], 6)
        self.assertEqual(m["messages_loaded"], 0)
        gets = [q["path"] for q in self.api.requests()["requests"] if "/messages/" in q["path"]]
        self.assertEqual(sorted(gets), sorted("/gmail/gmail/v1/users/me/messages/" + i
                                              for i in ("18c1f2a3b4c5e001", "18c1f2a3b4c5e002")))
        # --reload loads them again: same figures (the key and _ver make it harmless)
        self.assert_ok(self.gmail("--reload"))
        self.assertEqual(self.gmail_rows(), want)
        self.assertEqual(self.metrics()["messages_loaded"], 6)

    def test_stored_metrics_have_no_duplicate_keys(self):
        # The host writes its own "rows" (rows the sinks took) and "tables"; a script metric of the
        # same name made a second "rows" key: Python's json kept the script's, ClickHouse's
        # visitParamExtract the host's.
        self.assert_ok(self.gmail())
        raw = self.q("SELECT metrics FROM meta_job_runs WHERE job = 'gmail_ingest' ORDER BY _ver DESC LIMIT 1")[0]
        pairs = json.loads(raw["metrics"], object_pairs_hook=lambda kv: kv)
        keys = [k for k, _ in pairs]
        self.assertEqual(sorted(k for k in set(keys) if keys.count(k) > 1), [], raw["metrics"])
        m = dict(pairs)
        self.assertEqual(m["rows"], self.exp["gmail"]["rows"], "the host's count of rows written")
        self.assertEqual(m["report_rows"], self.exp["gmail"]["rows"])

    def test_revoked_refresh_token_says_how_to_reauthorize(self):
        self.write_google(refresh="1//revoked-refresh-token")
        r = self.gmail()
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid_grant", r.stderr)
        self.assertIn("zhost auth google", r.stderr)
        runs = self.runs("gmail_ingest")
        self.assertEqual([x["status"] for x in runs], ["error"])
        self.assertIn("Re-authorize", runs[0]["message"])

    def test_empty_search_result(self):
        self.write_secret("gmail", {"GMAIL_BASE_URL": self.api.url + "/gmail", "GMAIL_QUERY": "subject:nothing-matches"})
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.metrics()["messages"], 0)
        self.assertEqual(self.scalar("SELECT count() FROM stg_qtickets_sales_raw"), "0")

    def test_dry_run_writes_nothing(self):
        r = self.gmail("--dry-run")
        self.assert_ok(r)
        self.assertIn("stg_qtickets_sales_raw: %d rows" % self.exp["gmail"]["rows"], r.stdout)
        self.assertEqual(self.scalar("SELECT count() FROM stg_qtickets_sales_raw"), "0")
        self.assertEqual(self.runs("gmail_ingest"), [])


class TestGmailPrecedence(GmailCase):
    def test_gmail_rows_fill_only_days_without_api_data(self):
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": self.api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "qt-test-token"})
        api_to = "2025-11-06"
        r = self.zhost("run", "scripts/qtickets.lua", "--since", START, "--to", api_to)
        self.assert_ok(r)
        self.assert_ok(self.gmail())
        api = {(x["date"], x["city"], x["event_name"]): (x["tickets_sold"], Decimal(x["revenue"]), Decimal(x["refunds"]))
               for x in self.exp["qtickets"]["sales_daily"] if x["date"] <= api_to}
        api_dates = {k[0] for k in api}
        gm = {(x["date"], x["city"], x["event_name"]): (x["tickets_sold"], Decimal(x["revenue"]), Decimal(x["refunds"]))
              for x in self.exp["gmail"]["daily"] if x["date"] not in api_dates}
        self.assertTrue(gm, "Gmail has days the API load does not cover")
        self.assertTrue(any(x["date"] in api_dates for x in self.exp["gmail"]["daily"]),
                        "Gmail also has days the API covers (they must be ignored)")
        want = dict(api)
        want.update(gm)
        rows = self.q("SELECT toString(event_date) AS d, city, event_name, tickets_sold, toString(revenue) AS rv, "
                      "toString(refunds) AS rf FROM v_sales_latest")
        got = {(x["d"], x["city"], x["event_name"]): (int(x["tickets_sold"]), Decimal(x["rv"]), Decimal(x["rf"]))
               for x in rows}
        self.assertEqual(got, want)


if __name__ == "__main__":
    unittest.main()
