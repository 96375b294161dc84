"""QA: scripts/direct.lua against hand-made report bodies and faults (Direct fake + ClickHouse)."""
import json
import os
import sys
import time
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from test_direct import DirectCase, WINDOW  # noqa: E402

HDR = "Date\tCampaignId\tCampaignName\tAdGroupId\tAdId\tImpressions\tClicks\tCost"
DAY = ["--since", "2025-11-03", "--to", "2025-11-03"]
XML_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<reports:reportDownloadError xmlns:reports="http://api.direct.yandex.com/v5/reports">
  <reports:ApiError>
    <reports:requestId>8695244274068608439</reports:requestId>
    <reports:errorCode>%d</reports:errorCode>
    <reports:errorMessage>%s</reports:errorMessage>
    <reports:errorDetail>%s</reports:errorDetail>
  </reports:ApiError>
</reports:reportDownloadError>"""


class QaDirect(DirectCase):
    def serve_report(self, body, times=-1):
        self.f.clear_faults()
        self.f.faults([{"path": "/reports$", "status": 200, "body": body, "times": times}])

    def total(self):
        return self.scalar("SELECT toString(sum(cost)) FROM v_direct_latest")

    def test_crlf_dashes_and_empty_reports(self):
        self.direct_secrets()
        body = ('"r (2025-11-03 - 2025-11-03)"\r\n' + HDR + "\r\n" +
                "2025-11-03\t70000000\tA\t1\t2\t--\t--\t--\r\n" +
                "2025-11-03\t70000000\tA\t1\t3\t10\t2\t1230000\r\nTotal rows: 2\r\n")
        self.serve_report(body)
        self.run_direct(*DAY)
        self.assertEqual(self.total(), "1.23")
        self.assertEqual(self.scalar("SELECT sum(impressions) FROM v_direct_latest"), "10")
        for empty in [HDR + "\nTotal rows: 0\n", '"r (x)"\r\n' + HDR + "\r\nTotal rows: 0\r\n"]:
            self.serve_report(empty)
            r = self.run_direct(*DAY)
            self.assertIn("rows=0 ", r.stdout + r.stderr, repr(empty))
            self.assertEqual(self.total(), "0.00", "a confirmed empty report zeroes the day")
        for garbled in ["", "\r\n", "Total rows: 0\n", "<html>ok</html>"]:
            self.serve_report(garbled)
            r = self.run_direct(*DAY, ok=False)
            self.assertIn("no column header", r.stdout + r.stderr, repr(garbled))

    def test_empty_200_after_a_load_keeps_the_figures_unless_confirmed(self):
        """An empty 200 that does not say 'Total rows: 0' must not zero rows already loaded."""
        self.direct_secrets()
        self.run_direct(*WINDOW)
        before = self.total()
        self.assertNotEqual(before, "0.00")
        self.serve_report("")
        r = self.run_direct(*WINDOW, ok=False)
        self.assertIn("no column header", r.stdout + r.stderr)
        self.assertEqual(self.total(), before, r.stdout + r.stderr)

    def test_body_cut_at_a_line_break_is_not_taken_as_complete(self):
        """zhost keeps the 'Total rows' trailer, so a report cut after a whole line fails instead of
        loading part of the day (and zeroing the rest)."""
        self.direct_secrets()
        self.run_direct(*WINDOW)
        before = self.total()
        self.serve_report(HDR + "\r\n2025-11-03\t70000000\tA\t1\t3\t10\t2\t1230000\r\n")
        r = self.run_direct(*WINDOW, ok=False)
        self.assertIn("no 'Total rows' line", r.stdout + r.stderr)
        self.assertEqual(self.total(), before)
        self.assertNotIn("skipreportsummary", {k.lower() for k in self.reports()[-1]["headers"]})

    def test_500_then_200_and_error_json_on_400(self):
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "status": 500, "body": "<html>oops</html>", "times": 1}])
        self.run_direct(*WINDOW)
        self.assertNotEqual(self.total(), "0.00")
        self.f.faults([{"path": "/reports$", "api_error": 8000, "times": 1}])
        r = self.run_direct(*WINDOW, ok=False)
        self.assertIn("8000", r.stdout + r.stderr)

    def test_header_in_another_column_order_is_not_silently_misread(self):
        self.direct_secrets()
        hdr = "Date\tCampaignId\tCampaignName\tAdGroupId\tAdId\tClicks\tImpressions\tCost"
        self.serve_report(hdr + "\n2025-11-03\t70000000\tA\t1\t3\t2\t10\t1230000\nTotal rows: 1\n")
        self.run_direct(*DAY)
        self.assertEqual(self.scalar("SELECT sum(impressions) FROM v_direct_latest"), "10")
        self.assertEqual(self.scalar("SELECT sum(clicks) FROM v_direct_latest"), "2")
        self.assertEqual(self.total(), "1.23")


    def test_error_envelopes_with_null_fields_xml_or_a_200(self):
        """Direct's error bodies as documented: JSON with null fields, the XML variant, and an
        envelope that came with a 200 are read as the error they name, not as junk or a cut report."""
        self.direct_secrets()
        cases = [
            ({"status": 400, "headers": {"RequestId": "42"}, "body": json.dumps({"error": {
                "request_id": None, "error_code": 53, "error_string": "Authorization error", "error_detail": None}})},
             "error 53 (Authorization error) — the OAuth token", "[request_id 42]"),
            ({"status": 400, "body": XML_ERROR % (8000, "Invalid request", "Field &quot;Foo&quot; is unknown")},
             'error 8000 (Invalid request): Field "Foo" is unknown', "[request_id 8695244274068608439]"),
            ({"status": 200, "body": json.dumps({"error": {"request_id": "77", "error_code": 54,
                                                            "error_string": "No rights", "error_detail": "x"}})},
             "error 54 (No rights): x — no rights", "[request_id 77]"),
        ]
        for fault, want, rid in cases:
            with self.subTest(want=want):
                self.f.clear_faults()
                self.f.control("/_fake/requests", method="DELETE")
                self.f.faults([dict(fault, path="/reports$", times=-1)])
                r = self.run_direct(*DAY, ok=False)
                last = r.stderr.strip().splitlines()[-1]
                self.assertIn(want, last)
                self.assertIn(rid, last)
                self.assertNotIn("userdata", last)
                self.assertEqual(len(self.reports()), 1, "not retried")
        # XML 9000 (offline queue full) is transient like its JSON twin
        self.f.clear_faults()
        self.f.faults([{"path": "/reports$", "status": 400, "body": XML_ERROR % (9000, "Queue full", ""), "times": 1}])
        self.run_direct(*DAY)
        self.assertNotEqual(self.total(), "0.00")

    def test_500_is_retried_whatever_code_its_body_carries(self):
        """HTTP 500 is "server error while building the report": retry, even when the envelope carries
        a code zhost does not list as transient."""
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "status": 500, "api_error": 1003, "times": 2}])
        self.run_direct(*DAY)
        self.assertNotEqual(self.total(), "0.00")
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 2)

    def test_500_from_the_campaigns_service_is_retried_whatever_code_its_body_carries(self):
        self.direct_secrets()
        self.f.faults([{"path": "/campaigns$", "status": 500, "api_error": 1003, "times": 2}])
        self.run_direct(*DAY)
        self.assertNotEqual(self.total(), "0.00")
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 2)

    def test_direct_timeout_bounds_a_hanging_report_request(self):
        """DIRECT_TIMEOUT (the original system's setting) bounds each request; unread, a hanging
        Reports service held the run for 4 × 300 s."""
        self.direct_secrets(DIRECT_TIMEOUT="1")
        self.f.faults([{"path": "/reports$", "action": "hang", "times": -1}])
        t0 = time.monotonic()
        r = self.run_direct(*DAY, ok=False)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn("Direct report", r.stderr.strip().splitlines()[-1])
        self.direct_secrets(DIRECT_TIMEOUT="soon")
        r = self.run_direct(*DAY, ok=False)
        self.assertIn("DIRECT_TIMEOUT", r.stderr.strip().splitlines()[-1])

    def test_single_dash_and_null_campaign_name(self):
        self.direct_secrets()
        self.serve_report(HDR + "\n2025-11-03\t70000000\tИз отчёта\t1\t2\t-\t-\t-\n"
                          "2025-11-03\t70000001\tB\t1\t3\t10\t2\t1230000\nTotal rows: 2\n")
        # (after serve_report, which clears the rules)
        self.f.faults([{"path": "/campaigns$", "status": 200, "times": -1, "body": json.dumps(
            {"result": {"Campaigns": [{"Id": 70000000, "Name": None}, {"Id": 70000001, "Name": "Из сервиса"}]}})}])
        self.run_direct(*DAY)
        rows = self.q("SELECT campaign_id, campaign_name, impressions, toString(cost) AS c FROM v_direct_latest "
                      "ORDER BY campaign_id")
        self.assertEqual([(int(r["campaign_id"]), r["campaign_name"], int(r["impressions"]), r["c"]) for r in rows],
                         [(70000000, "Из отчёта", 0, "0.00"), (70000001, "Из сервиса", 10, "1.23")])

    def test_rows_with_a_bad_date_or_outside_the_window_fail_naming_the_row(self):
        self.direct_secrets()
        self.run_direct(*DAY)
        before = self.total()
        for date, want in (("2025-10-31", "row for campaign 70000000 is dated 2025-10-31, outside the dates asked for"),
                           ("03.11.2025", "row for campaign 70000000 has Date '03.11.2025', not YYYY-MM-DD")):
            with self.subTest(date=date):
                self.serve_report(HDR + "\n%s\t70000000\tA\t1\t3\t10\t2\t1230000\nTotal rows: 1\n" % date)
                r = self.run_direct(*DAY, ok=False)
                self.assertIn("Direct report 2025-11-03..2025-11-03: " + want, r.stderr.strip().splitlines()[-1])
                self.assertEqual(self.total(), before, "figures kept")

    def test_502_timeout_loads_the_window_in_halves(self):
        """502 is "processing timed out" and the documented remedy is a shorter period: the loader asks
        for the two halves itself instead of failing the nightly 30-day run every night."""
        self.direct_secrets()
        self.f.faults([{"path": "/reports$", "status": 502, "body": "Bad gateway", "times": 1}])
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["report_splits"], 1)
        ranges = [json.loads(r["body"])["params"]["SelectionCriteria"] for r in self.reports()]
        self.assertEqual([(x["DateFrom"], x["DateTo"]) for x in ranges if x != ranges[0]][:1],
                         [("2025-11-01", "2025-11-07")])
        self.assertIn({"DateFrom": "2025-11-08", "DateTo": "2025-11-14"}, ranges)
        # a 502 that persists down to a single day fails, naming it; figures kept
        before = self.total()
        self.f.clear_faults()
        self.f.faults([{"path": "/reports$", "status": 502, "body": "Bad gateway", "times": -1}])
        r = self.run_direct("--since", "2025-11-01", "--to", "2025-11-02", ok=False)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("zhost_direct_2025-11-01_2025-11-01_", last)
        self.assertIn("HTTP 502: Bad gateway — the report timed out on Yandex's side even for a single day", last)
        self.assertEqual(self.total(), before)

    def test_utm_setting_may_be_a_whole_link_and_typos_are_named(self):
        self.direct_secrets(
            DIRECT_UTM_70000000="https://example.ru/afisha?utm_campaign=promo_24089&utm_content=msk_05_11&yclid={yclid}",
            DIRECT_UTM_DEFAULT="utm_source=yandex&utm_medium=cpc&utm_campaing=typo")
        self.serve_report(HDR + "\n2025-11-03\t70000000\tA\t1\t3\t10\t2\t1230000\nTotal rows: 1\n")
        r = self.run_direct(*DAY)
        row = self.q("SELECT utm_source, utm_medium, utm_campaign, utm_content, utm_city, utm_day, utm_month "
                     "FROM v_direct_latest")[0]
        self.assertEqual((row["utm_source"], row["utm_medium"], row["utm_campaign"], row["utm_content"],
                          row["utm_city"], int(row["utm_day"]), int(row["utm_month"])),
                         ("yandex", "cpc", "promo_24089", "msk_05_11", "msk", 5, 11))
        self.assertIn("DIRECT_UTM_DEFAULT: 'utm_campaing' is not a UTM field", r.stderr)
        self.assertNotIn("yclid", r.stderr)

    def test_report_at_the_row_cap_is_loaded_in_halves_not_zero_filled(self):
        """Direct caps a report body at 1,000,000 rows (the docs: split by date range). A report that
        reaches the cap may be cut there, and taking it as complete would zero every key past the cap."""
        stats = self.f.control("/_fake/data")["direct"]["stats"]
        per_day = {}
        for st in stats:
            if st["Impressions"] > 0 and "2025-11-01" <= st["Date"] <= "2025-11-14":
                per_day[st["Date"]] = per_day.get(st["Date"], 0) + 1
        cap = max(per_day.values()) + 1
        self.assertGreater(sum(per_day.values()), cap)
        self.f.control("/_fake/config", {"direct.auto_offline": False})  # 200 at once: fewer requests at 5 rps
        self.direct_secrets(DIRECT_REPORT_ROW_CAP=str(cap))
        self.run_direct(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertGreaterEqual(self.last_run()["metrics"]["report_splits"], 1)
        self.assertEqual(self.last_run()["metrics"].get("rows_zeroed"), None)
        # a single day at the cap cannot be split: the run fails, naming it, figures kept
        before = self.total()
        self.direct_secrets(DIRECT_REPORT_ROW_CAP="1")
        r = self.run_direct(*DAY, ok=False)
        self.assertIn("Direct report for 2025-11-03 has %d rows, Direct's cap (DIRECT_REPORT_ROW_CAP=1)"
                      % per_day["2025-11-03"], r.stderr.strip().splitlines()[-1])
        self.assertEqual(self.total(), before)

if __name__ == "__main__":
    unittest.main()
