"""scripts/direct.lua against Direct behaviour the main tests do not cover: error 56, retryIn 0, stored
reports on a same-day re-run (Direct fake + ClickHouse)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from test_direct import DirectCase, WINDOW  # noqa: E402


class TestDirectAudit(DirectCase):
    def test_error_56_request_limit_is_retried(self):
        # 56 "request limit exceeded" is a per-method rate limit: waiting fixes it (tapi-yandex-direct
        # retries it after 10 s), so it must not fail the run.
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "api_error": 56, "times": 2},
                       {"path": "/campaigns$", "api_error": 56, "times": 1}])
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 3)

    def test_retry_in_zero_forever_is_bounded_by_the_wait_cap(self):
        # A report that never gets ready while Direct keeps saying retryIn: 0 must still hit
        # DIRECT_REPORT_MAX_WAIT instead of polling for ever.
        self.f.control("/_fake/config", {"direct.retry_in": [0], "direct.offline_polls": 10 ** 9})
        self.direct_secrets(DIRECT_REPORT_MAX_WAIT="3")
        t0 = time.time()
        r = self.zhost("run", "scripts/direct.lua", "--since", "2025-11-01", "--to", "2025-11-02", timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.time() - t0, 30)
        self.assertIn("is still not ready after", r.stderr)
        self.assertLessEqual(len(self.reports()), 5, "bounded number of polls")
        self.assertEqual(self.scalar("SELECT count() FROM fact_direct_daily"), "0")

    def test_same_day_rerun_is_not_served_the_stored_report(self):
        # Direct answers a repeated request for a stored report with that report, figures frozen at
        # the time it was built. A second run on the same day (an operator's re-run after a
        # correction) must get today's figures, not the morning's.
        self.f.control("/_fake/config", {"direct.freeze_reports": True})
        self.direct_secrets()
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        data = self.f.control("/_fake/data")
        st = data["direct"]["stats"][0]
        st["Impressions"] += 1000
        st["Clicks"] += 7
        st["Cost"] += 12340000
        self.f.control("/_fake/data?merge=1", {"direct": data["direct"]})
        self.f.control("/_fake/config", {"direct.retry_in": [0], "direct.freeze_reports": True})
        self.run_direct(*WINDOW)
        row = self.q("SELECT impressions, clicks, toString(cost) AS c FROM v_direct_latest WHERE stat_date = '%s' "
                     "AND ad_id = %d" % (st["Date"], st["AdId"]))[0]
        self.assertEqual((int(row["impressions"]), int(row["clicks"])), (st["Impressions"], st["Clicks"]))
        names = {__import__("json").loads(r["body"])["params"]["ReportName"] for r in self.reports()}
        self.assertEqual(len(names), 2, names)


    def test_report_body_damaged_once_is_fetched_again(self):
        # A 200 whose body was cut on the way (right length, half the text: no 'Total rows' trailer)
        # is not the report. The report is stored on Direct's side, so it is asked for again rather
        # than failing the run; a body that stays damaged still fails, naming what was wrong.
        self.direct_secrets()
        # 201, 202, 202, then the 200 is cut in half
        self.f.faults([{"path": "/reports$", "action": "malformed", "after": 3, "times": 1}])
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 1)
        self.f.clear_faults()
        self.f.faults([{"path": "/reports$", "status": 200, "body": "Date\tCampaignId\n", "times": -1}])
        r = self.run_direct(*WINDOW, ok=False)
        self.assertIn("no column header line", r.stderr)
        self.assertIn("gave up after 5 attempts", r.stderr)
        self.assertEqual(self.daily(), self.expected_daily(), "figures kept")

    def test_campaigns_answer_cut_in_half_is_asked_again_then_named(self):
        self.direct_secrets()
        self.f.faults([{"path": "/campaigns$", "action": "malformed", "times": 1}])
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.f.clear_faults()
        self.f.faults([{"path": "/campaigns$", "action": "malformed", "times": -1}])
        r = self.run_direct(*WINDOW, ok=False)
        self.assertIn("Direct campaigns: the 200 answer is not valid JSON", r.stderr)
        self.assertIn("gave up after 5 attempts", r.stderr)

if __name__ == "__main__":
    unittest.main()
