"""QA: scripts/direct.lua against hand-made report bodies and faults (Direct fake + ClickHouse)."""
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from test_direct import DirectCase, WINDOW  # noqa: E402

HDR = "Date\tCampaignId\tCampaignName\tAdGroupId\tAdId\tImpressions\tClicks\tCost"
DAY = ["--since", "2025-11-03", "--to", "2025-11-03"]


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


if __name__ == "__main__":
    unittest.main()
