#!/usr/bin/env python3
"""End-to-end tests of the alert rules as an operator sees them at 3 a.m.: the inputs that must
fire, must stay quiet and must resolve (a run interrupted after a failure, a switched-off source,
the Gmail channel when it is on). Same setup as test_alerts.py (its AlertsCase and ClickHouse)."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_alerts  # noqa: E402
from test_alerts import AlertsCase, setUpModule, tearDownModule  # noqa: E402,F401


def ch(sql):
    return test_alerts.ch(sql)


class TestAlertsOps(AlertsCase):
    def freshness(self, rows, table="v_data_freshness"):
        ch("TRUNCATE TABLE %s.%s" % (self.db, table))
        for src, days, total in rows:
            latest = "NULL" if total == 0 else "today() - %d" % days
            ch("INSERT INTO %s.%s VALUES ('%s', %s, %d, %d)" % (self.db, table, src, latest, days, total))

    def open_alerts(self):
        return sorted("%s:%s" % k for k, v in self.state().items() if v["state"] == "open")

    def test_interrupted_run_does_not_resolve_a_failure(self):
        # A restart of the daemon interrupts the retry of a failing job: nothing was fixed, so the
        # alert stays open and no "РЕШЕНО" is mailed (then a new "новый" for the same failure).
        port = self.start_sink()
        self.write_secrets(port)
        self.add_run("qtickets", "error", minutes_ago=30, message="HTTP 503 from QTickets")
        self.run_alerts("--only", "failed_run", expect=0)
        self.assertEqual(self.open_alerts(), ["failed_run:qtickets"])
        self.add_run("qtickets", "interrupted", minutes_ago=5)
        self.run_alerts("--only", "failed_run", expect=0)
        self.assertEqual(self.open_alerts(), ["failed_run:qtickets"])
        self.assertEqual([r["alert_type"] for r in self.alerts()], ["error"])
        self.assertEqual(len(self.mails()), 1)
        # a success resolves it
        self.add_run("qtickets", "success", minutes_ago=1)
        self.run_alerts("--only", "failed_run", expect=0)
        self.assertEqual(self.open_alerts(), [])
        self.assertEqual([r["alert_type"] for r in self.alerts()], ["error", "resolved"])

    def test_jobs_the_daemon_switched_off_are_not_watched(self):
        # `zhost disable vk_ads`, and Direct off in the configuration: the daemon's state file says
        # so (last column), and the job rules stay quiet about them until they are on again.
        port = self.start_sink()
        self.write_secrets(port)
        state = os.path.join(self.tmp, "state")
        os.makedirs(state)

        def write_state(lines):
            with open(os.path.join(state, "state"), "w") as f:
                f.write("# zhost scheduler state\n# job  enabled  last fire  in effect\n" + lines)
        write_state("qtickets - 0 1\nvk_ads 0 0 0\ndirect - 0 0\n")
        for job in ("vk_ads", "direct"):
            for ago in (300, 200, 30):
                self.add_run(job, "error", minutes_ago=ago, message="boom")
        rules = ("--only", "failed_run,no_recent_success,repeated_failures")
        env = {"ZHOST_STATE_DIR": state}
        self.run_alerts(*rules, env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), [])
        # on again: watched again
        write_state("qtickets - 0 1\nvk_ads 1 0 1\ndirect - 0 1\n")
        self.run_alerts(*rules, env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), ["failed_run:direct", "failed_run:vk_ads", "no_recent_success:direct",
                                              "no_recent_success:vk_ads", "repeated_failures:direct",
                                              "repeated_failures:vk_ads"])
        # and switched off once more: their alerts resolve (the operator has taken the job out)
        write_state("qtickets - 0 1\nvk_ads 0 0 0\ndirect - 0 1\n")
        self.run_alerts(*rules, env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), ["failed_run:direct", "no_recent_success:direct",
                                              "repeated_failures:direct"])

    def test_spool_files_under_the_daemon_s_own_replay(self):
        # The daemon replays the spool by itself (its state file lists spool_replay, in effect): files
        # it delivers within minutes are no alert; files that stay for 30 min are, and the hint is the
        # replay job's log. With spool_replay switched off, any file is, with the manual replay.
        port = self.start_sink()
        self.write_secrets(port)
        state = os.path.join(self.tmp, "state")
        os.makedirs(state)
        os.makedirs(self.spool)
        path = os.path.join(self.spool, "%s.fact_vk_ads_daily~r1.jsonl" % self.db)
        with open(path, "w") as f:
            f.write('{"a":1}\n{"a":2}\n')

        def write_state(replay):
            with open(os.path.join(state, "state"), "w") as f:
                f.write("qtickets - 0 1\nspool_replay %s 0 %s\n" % (replay, "0" if replay == "0" else "1"))
        env = {"ZHOST_STATE_DIR": state}
        write_state("-")
        self.run_alerts("--only", "spool_not_empty", env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), [])
        t = time.time() - 40 * 60
        os.utime(path, (t, t))
        self.run_alerts("--only", "spool_not_empty", env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), ["spool_not_empty:spool"])
        body = self.body(self.mails()[-1])
        self.assertIn("zhost logs spool_replay", body)
        self.assertIn("задание spool_replay", body)
        self.assertIn("40 мин. назад", body)
        # delivered (the file is gone): resolved
        os.remove(path)
        self.run_alerts("--only", "spool_not_empty", env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), [])
        # switched off: a fresh file is an alert at once, and the manual replay is the hint
        with open(path, "w") as f:
            f.write('{"a":1}\n')
        write_state("0")
        self.run_alerts("--only", "spool_not_empty", env_extra=env, expect=0)
        self.assertEqual(self.open_alerts(), ["spool_not_empty:spool"])
        body = self.body(self.mails()[-1])
        self.assertIn("zhost spool replay", body)
        self.assertIn("zhost enable spool_replay", body)

    def test_switched_off_source_is_not_stale(self):
        # Direct was switched off 5 days ago (its last run), VK is loading but stale: only VK fires.
        port = self.start_sink()
        self.write_secrets(port)
        self.freshness([("qtickets_sales", 0, 50), ("vk_ads", 5, 40), ("direct", 6, 30)])
        self.add_run("qtickets", "success", minutes_ago=10)
        self.add_run("vk_ads", "success", minutes_ago=120)
        self.add_run("direct", "success", minutes_ago=5 * 24 * 60)
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), ["stale_data:vk_ads"])
        # a source that never had a loader run (not configured) with no rows: quiet too
        self.freshness([("qtickets_sales", 0, 50), ("vk_ads", 0, 40), ("direct", 9999, 0)])
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), [])
        # switched on again and still behind: fires
        self.add_run("direct", "error", minutes_ago=3, message="token expired")
        self.freshness([("qtickets_sales", 0, 50), ("vk_ads", 0, 40), ("direct", 6, 30)])
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), ["stale_data:direct"])

    def test_gmail_channel_stale_only_when_on(self):
        port = self.start_sink()
        self.write_secrets(port)
        ch("CREATE TABLE %s.v_data_freshness_gmail (source String, latest_date Nullable(Date), days_behind Int32, "
           "total_rows UInt64) ENGINE = MergeTree ORDER BY source" % self.db)
        self.freshness([("qtickets_gmail", 4, 12)], table="v_data_freshness_gmail")
        self.freshness([("qtickets_sales", 0, 50)])
        self.add_run("qtickets", "success", minutes_ago=10)
        # off (never ran): quiet
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), [])
        # on: its reports stopped coming 4 days ago
        self.add_run("gmail_ingest", "success", minutes_ago=30)
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), ["stale_data:qtickets_gmail"])
        body = self.body(self.mails()[-1])
        self.assertIn("qtickets_gmail: данные устарели на 4 дн.", body)
        self.assertIn("zhost logs gmail_ingest", body)
        # a new report arrived: resolved
        self.freshness([("qtickets_gmail", 1, 13)], table="v_data_freshness_gmail")
        self.run_alerts("--only", "stale_data", expect=0)
        self.assertEqual(self.open_alerts(), [])
        self.assertEqual([r["alert_type"] for r in self.alerts()], ["warning", "resolved"])


if __name__ == "__main__":
    unittest.main()
