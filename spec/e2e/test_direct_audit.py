"""scripts/direct.lua against Direct behaviour the main tests do not cover (Direct fake + ClickHouse)."""
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


if __name__ == "__main__":
    unittest.main()
