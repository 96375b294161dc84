"""scripts/direct.lua against Direct behaviour the main tests do not cover (Direct fake + ClickHouse)."""
import os
import sys
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


if __name__ == "__main__":
    unittest.main()
