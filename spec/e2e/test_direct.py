"""scripts/direct.lua end to end: the real zhost against the Direct fake (spec/fakes) and a real ClickHouse.

Expected figures come from spec/fakes/datagen.py (cost = micros / 1e6 with decimal.Decimal).
"""
import json
import os
import sys
import time
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

SCRIPT = "scripts/direct.lua"
WINDOW = ["--since", "2025-11-01", "--to", "2025-11-14"]
EXPECTED = datagen.expected(datagen.generate())["direct"]


class DirectCase(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        self.f = self.fake("--set", "direct.retry_in=[0]")

    def direct_secrets(self, **extra):
        values = {"DIRECT_BASE_URL": self.f.url + "/direct/json/v5", "DIRECT_TOKEN": "y0_fake-direct-token",
                  "DIRECT_LOGIN": "fake-client-login", "DIRECT_RETRY_BASE": "0.1"}
        values.update(extra)
        self.write_secret("direct", {k: v for k, v in values.items() if v is not None})

    def run_direct(self, *args, ok=True, env=None):
        r = self.zhost("run", SCRIPT, *args, env=env)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        else:
            self.assertNotEqual(r.returncode, 0, r.stderr)
        return r

    def daily(self):
        rows = self.q("SELECT toString(stat_date) AS d, campaign_id, any(campaign_name) AS name, sum(impressions) AS imp, "
                      "sum(clicks) AS clk, toString(sum(cost)) AS c FROM v_direct_latest GROUP BY d, campaign_id "
                      "HAVING imp > 0 OR clk > 0 OR sum(cost) > 0 ORDER BY d, campaign_id")
        return [(r["d"], int(r["campaign_id"]), r["name"], int(r["imp"]), int(r["clk"]), Decimal(r["c"])) for r in rows]

    def expected_daily(self, exp=None):
        exp = exp or EXPECTED
        return [(e["date"], e["campaign_id"], e["campaign_name"], e["impressions"], e["clicks"], Decimal(e["cost"]))
                for e in exp["daily"]]

    def reports(self):
        return self.f.control("/_fake/requests?path=/direct/json/v5/reports")["requests"]

    def last_run(self):
        run = self.runs("direct")[-1]
        run["metrics"] = json.loads(run["metrics"] or "{}")
        return run


class TestDirectLoad(DirectCase):
    def test_exact_figures_utm_and_reload_changes_nothing(self):
        self.direct_secrets(DIRECT_UTM_70000000="utm_campaign=promo_24089&utm_content=msk_05_11&utm_term=билеты")
        self.run_direct(*WINDOW)
        want = self.expected_daily()
        self.assertEqual(self.daily(), want)
        # cost is exact to the kopeck, micros converted without floats
        self.assertEqual(self.scalar("SELECT toString(sum(cost)) FROM v_direct_latest"), EXPECTED["totals"]["cost"])
        # keys down to the ad, login recorded
        self.assertEqual(self.scalar("SELECT count() FROM v_direct_latest WHERE ad_id = 0 OR ad_group_id = 0"), "0")
        self.assertEqual(self.scalar("SELECT groupUniqArray(account_login) FROM v_direct_latest"), "['fake-client-login']")
        # campaign-level UTM: the mapping for one campaign, the defaults for the rest
        r = self.q("SELECT utm_source, utm_medium, utm_campaign, utm_content, utm_term, utm_city, utm_day, utm_month, city "
                   "FROM v_direct_latest WHERE campaign_id = 70000000 LIMIT 1")[0]
        self.assertEqual((r["utm_source"], r["utm_medium"], r["utm_campaign"], r["utm_content"], r["utm_term"]),
                         ("yandex", "cpc", "promo_24089", "msk_05_11", "билеты"))
        self.assertEqual((r["utm_city"], int(r["utm_day"]), int(r["utm_month"]), r["city"]), ("msk", 5, 11, "Москва"))
        r = self.q("SELECT utm_source, utm_medium, utm_campaign FROM v_direct_latest WHERE campaign_id = 70000111 LIMIT 1")[0]
        self.assertEqual((r["utm_source"], r["utm_medium"], r["utm_campaign"]), ("yandex", "cpc", ""))
        run = self.last_run()
        self.assertEqual(run["status"], "success")
        self.assertEqual(int(run["rows_processed"]), int(self.scalar("SELECT count() FROM v_direct_latest")))
        self.assertEqual(run["metrics"]["report_polls"], 3)  # 201, 202, 202, then 200
        # the request carried what the report needs
        body = json.loads(self.reports()[0]["body"])["params"]
        self.assertEqual((body["ReportType"], body["Format"], body["IncludeVAT"], body["DateRangeType"]),
                         ("CUSTOM_REPORT", "TSV", "YES", "CUSTOM_DATE"))
        self.assertEqual(body["SelectionCriteria"], {"DateFrom": "2025-11-01", "DateTo": "2025-11-14"})
        headers = {k.lower(): v for k, v in self.reports()[0]["headers"].items()}
        self.assertEqual(headers["client-login"], "fake-client-login")
        self.assertEqual(headers["skipreportheader"], "true")

        # overlapping re-loads, one of them with the title, column header and trailer in the body
        self.run_direct("--since", "2025-11-04", "--to", "2025-11-09")
        self.direct_secrets(DIRECT_UTM_70000000="utm_campaign=promo_24089&utm_content=msk_05_11&utm_term=билеты",
                     DIRECT_SKIP_REPORT_HEADERS="false")
        self.f.control("/_fake/requests", method="DELETE")
        self.run_direct(*WINDOW)
        self.assertNotIn("skipreportheader", {k.lower() for k in self.reports()[0]["headers"]})
        self.assertEqual(self.daily(), want)
        self.assertEqual(self.scalar("SELECT toString(sum(cost)) FROM v_direct_latest"), EXPECTED["totals"]["cost"])

    def test_missing_row_on_reload_is_zeroed(self):
        self.direct_secrets()
        self.run_direct(*WINDOW)
        data = self.f.control("/_fake/data")
        gone = data["direct"]["stats"].pop(0)  # Direct stops listing a row (e.g. clicks written off)
        self.f.control("/_fake/data?merge=1", {"direct": data["direct"]})
        self.f.control("/_fake/config", {"direct.retry_in": [0]})
        self.run_direct("--since", gone["Date"], "--to", "2025-11-14")
        row = self.q("SELECT impressions, clicks, toString(cost) AS c FROM v_direct_latest WHERE stat_date = '%s' "
                     "AND ad_id = %d" % (gone["Date"], gone["AdId"]))
        self.assertEqual((int(row[0]["impressions"]), int(row[0]["clicks"]), Decimal(row[0]["c"])), (0, 0, Decimal(0)))
        self.assertEqual(self.daily(), self.expected_daily(datagen.expected(data)["direct"]))
        self.assertEqual(self.last_run()["metrics"]["rows_zeroed"], 1)

    def test_dry_run_writes_nothing(self):
        self.direct_secrets()
        r = self.run_direct(*WINDOW, "--dry-run")
        self.assertIn("fact_direct_daily", r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM fact_direct_daily"), "0")
        self.assertEqual(self.runs("direct"), [])

    def test_deprecated_names_work_with_a_warning(self):
        self.direct_secrets(DIRECT_TOKEN=None, DIRECT_BASE_URL=None, DIRECT_OAUTH_TOKEN="y0_fake-direct-token",
                     DIRECT_API_URL=self.f.url + "/direct/json/v5")
        r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-02")
        self.assertIn("DIRECT_OAUTH_TOKEN is deprecated", r.stderr)
        self.assertIn("DIRECT_API_URL is deprecated", r.stderr)
        self.assertEqual(self.daily(), [e for e in self.expected_daily() if e[0] <= "2025-11-02"])

    def test_agency_token_sends_client_login(self):
        self.direct_secrets(DIRECT_TOKEN="y0_fake-agency-token")
        self.run_direct("--since", "2025-11-01", "--to", "2025-11-03")
        self.assertEqual(self.daily(), [e for e in self.expected_daily() if e[0] <= "2025-11-03"])


class TestDirectPolling(DirectCase):
    def test_polling_honours_retry_in_with_identical_requests(self):
        # 201 (retryIn 1) -> 202 (2) -> 202 (1) -> 200; an early poll would get another 202
        self.f.control("/_fake/config", {"direct.retry_in": [1, 2, 1], "direct.offline_polls": 2,
                                         "direct.enforce_retry_in": True})
        self.direct_secrets()
        t0 = time.time()
        self.run_direct("--since", "2025-11-01", "--to", "2025-11-03")
        elapsed = time.time() - t0
        self.assertGreaterEqual(elapsed, 4.0)
        self.assertLess(elapsed, 9.0)
        reqs = self.reports()
        self.assertEqual(len(reqs), 4)
        self.assertEqual(len({r["body"] for r in reqs}), 1, "every poll repeats the identical body")
        skip = {"content-length", "date", "connection"}
        self.assertEqual(len({json.dumps({k: v for k, v in r["headers"].items() if k.lower() not in skip},
                                         sort_keys=True) for r in reqs}), 1, "and the identical headers")
        gaps = [b["ts"] - a["ts"] for a, b in zip(reqs, reqs[1:])]
        for gap, retry_in in zip(gaps, [1, 2, 1]):
            self.assertGreaterEqual(gap, retry_in - 0.05, gaps)
        m = self.last_run()["metrics"]
        self.assertEqual((m["report_wait_seconds"], m["report_polls"]), (4, 3))
        self.assertEqual(self.daily(), [e for e in self.expected_daily() if e[0] <= "2025-11-03"])

    def test_bad_settings_fail_naming_the_variable(self):
        for var, value, want in (("DIRECT_CHUNK_DAYS", "0", "DIRECT_CHUNK_DAYS must be a whole number from 1 to 366 (got '0')"),
                                 ("DIRECT_REPORT_MAX_WAIT", "ten", "DIRECT_REPORT_MAX_WAIT must be a whole number"),
                                 ("DIRECT_RETRY_BASE", "-1", "DIRECT_RETRY_BASE must be a number from 0 to 3600")):
            with self.subTest(var=var):
                self.direct_secrets(**{var: value})
                r = self.run_direct("--days", "2", ok=False)
                self.assertIn(want, r.stderr.splitlines()[-1])

    def test_gives_up_past_the_wait_cap(self):
        self.f.control("/_fake/config", {"direct.retry_in": [2], "direct.offline_polls": 100})
        self.direct_secrets(DIRECT_REPORT_MAX_WAIT="5")
        t0 = time.time()
        r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-03", ok=False)
        self.assertLess(time.time() - t0, 9)
        self.assertIn("is still not ready after 4 s of waiting and 3 polls (DIRECT_REPORT_MAX_WAIT=5 s)", r.stderr)
        run = self.last_run()
        self.assertEqual(run["status"], "error")
        self.assertIn("still not ready", run["message"])
        self.assertEqual(self.scalar("SELECT count() FROM fact_direct_daily"), "0")


class TestDirectErrors(DirectCase):
    def test_fatal_codes_fail_fast_with_the_reason(self):
        self.direct_secrets()
        for code, words in ((53, "Authorization error"), (54, "check DIRECT_LOGIN"), (152, "API units")):
            with self.subTest(code=code):
                self.f.clear_faults()
                self.f.control("/_fake/requests", method="DELETE")
                self.f.faults([{"path": "/reports$", "api_error": code, "times": -1}])
                r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-02", ok=False)
                self.assertIn("error %d (" % code, r.stderr)
                self.assertIn(words, r.stderr)
                self.assertIn("[request_id ", r.stderr)
                self.assertEqual(len(self.reports()), 1, "no retry for %d" % code)

    def test_bad_token_from_the_service(self):
        self.direct_secrets(DIRECT_TOKEN="y0_wrong")
        r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-02", ok=False)
        self.assertIn("Direct campaigns: error 53 (", r.stderr)
        self.assertIn("set DIRECT_TOKEN", r.stderr)
        self.assertNotIn("y0_wrong", r.stderr)

    def test_transient_codes_are_retried(self):
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "api_error": 1000, "times": 2},
                       {"path": "/reports$", "api_error": 9000, "times": 1},
                       {"path": "/campaigns$", "api_error": 506, "times": 1}])
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 4)

    def test_transient_code_that_persists_gives_up(self):
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "api_error": 52, "times": -1}])
        r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-02", ok=False)
        self.assertIn("error 52 (", r.stderr)
        self.assertIn("gave up after 5 attempts", r.stderr)
        self.assertEqual(len(self.reports()), 5)


if __name__ == "__main__":
    unittest.main()
