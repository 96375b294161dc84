"""End-to-end tests of the daemon's own spool replay (job spool_replay, host/autoreplay.c): rows
spooled while ClickHouse was down reach ClickHouse without any operator command once it answers
again, exactly once as the views see them; nothing runs (and nothing is recorded) while nothing
is spooled; `auto_replay = false` and `zhost disable spool_replay` leave the spool alone; files of
a run still going are left to it and taken after it ends; a file ClickHouse keeps refusing is
retried less and less often (replay_max_every), reported each time, never deleted, and sooner for
a new file of another table, after `zhost enable` or an operator's trigger (the pace itself:
spec/unit/test_autoreplay.c); run messages name the daemon's job where it delivers the spool.

The outage test has a private ClickHouse (tools/clickhouse-local.sh on free ports, as
test_loader_faults.py), really stopped mid-run and started again; the others use the shared one
and make their spool files with a real `zhost run` against a port nobody listens on."""
import json
import os
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import zhtest
from zhtest import ZHOST, ZhostCase, ch_at
from serve_helpers import Daemon, free_port, request_json, write


# Five ad rows for fact_vk_ads_daily (v_vk_ads_latest keeps one row per key: count them there).
ROWS_LUA = """
local function rows(s, n, ver)
  for i = 1, n do
    assert(s:add({stat_date = "2026-03-01", account_id = 7, campaign_id = i, ad_group_id = 0, ad_id = 0,
                  campaign_name = "c" .. i, impressions = 10 * i, clicks = i, spent = "1.50", utm_source = "",
                  utm_medium = "", utm_campaign = "", utm_content = "", utm_term = "", utm_city = "", utm_day = 0,
                  utm_month = 0, _ver = ver}))
  end
end
"""


class AutoReplayCase(ZhostCase):
    ch_url = zhtest.CH_URL

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.daemons = []
        # a ClickHouse that does not answer gives up quickly (the spooling is what is tested)
        self.env["ZHOST_CH_ATTEMPTS"] = "2"
        self.env["ZHOST_CH_BACKOFF_CAP"] = "0.2"

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        super().tearDown()

    def q(self, sql):
        out = ch_at(self.ch_url, sql.rstrip().rstrip(";") + " FORMAT JSON", self.db)
        return json.loads(out)["data"]

    def scalar(self, sql):
        return ch_at(self.ch_url, sql, self.db).strip()

    def conf(self, jobs="", spool="check_every = 1s\nreplay_every = 3s\n"):
        text = ("[zhost]\nroot = ..\nstate_dir = state\ngrace = 5s\ntimezone = Europe/Moscow\n"
                "[health]\nlisten = 127.0.0.1:%d\nidle_timeout = 2s\n[spool]\n%s\n%s\n" % (self.port, spool, jobs))
        self.conf_path = write(os.path.join(self.tmp, "conf", "zhost.conf"), text)
        return self.conf_path

    def start(self):
        d = Daemon(self, self.conf_path)
        self.daemons.append(d)
        d.ready()
        return d

    def cli(self, *args):
        e = dict(self.env)
        e["ZHOST_CONF"] = self.conf_path
        return subprocess.run([ZHOST, *args], env=e, capture_output=True, text=True, timeout=60, cwd="/")

    def spool_files(self):
        if not os.path.isdir(self.spool):
            return []
        return sorted(n for n in os.listdir(self.spool) if n.endswith(".jsonl"))

    def replays(self):
        return self.q("SELECT run_id, status, rows_processed, message FROM meta_job_runs "
                      "WHERE job = 'spool_replay' ORDER BY started_at")

    def wait(self, what, cond, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = cond()
            if last:
                return last
            time.sleep(0.2)
        self.fail("%s: not within %ss (last: %r)" % (what, timeout, last))

    def spool_by_a_run(self, n=5, ver=1, hold=None):
        """`zhost run` of a script that adds n rows while ClickHouse is unreachable: its batch and its
        run row go to the spool. With hold, the run then sleeps that long (its files stay locked)."""
        path = self.script("spooler.lua", "-- zhost: job=spooler\n" + ROWS_LUA +
                           'local s = assert(ch.sink("zakaz.fact_vk_ads_daily"))\nrows(s, %d, %d)\n'
                           's:flush()\nlog.info("spooled")\n%s' % (n, ver, "sleep(%d)\n" % hold if hold else ""))
        # the sink reads the table's columns from the schema cache beside the spool
        warm = self.script("warm.lua", '-- zhost: job=warm\nassert(ch.sink("zakaz.fact_vk_ads_daily"))\n')
        r = self.zhost("run", warm)
        self.assertEqual(r.returncode, 0, r.stderr)
        dead = {"CLICKHOUSE_URL": "http://127.0.0.1:%d" % free_port()}
        if hold:
            return self.zhost_bg("run", path, env=dead)
        r = self.zhost("run", path, env=dead)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("rows spooled", r.stderr)
        self.assertTrue(self.spool_files())
        return r

    def view_rows(self):
        return int(self.scalar("SELECT count() FROM v_vk_ads_latest WHERE account_id = 7"))


class ClickHouseComesBack(zhtest.PrivateClickHouse, AutoReplayCase):
    """A private ClickHouse, stopped while a daemon job holds rows, started again."""
    migrate = False

    def test_rows_spooled_in_an_outage_arrive_once_without_an_operator(self):
        flag = os.path.join(self.tmp, "clickhouse-stopped")
        # rows buffered in the sink (max_age: no flush by age) when ClickHouse stops
        write(os.path.join(self.tmp, "scripts", "loader.lua"), ROWS_LUA +
              'local s = assert(ch.sink("zakaz.fact_vk_ads_daily", {max_age = 600}))\nrows(s, 5, 1)\n'
              'log.info("rows added")\n'
              'while not io.read_file(%r) do sleep(0.1) end\n' % flag)
        self.conf("[job loader]\nscript = scripts/loader.lua\nschedule = 0 0 1 1 *\n")
        d = self.start()
        self.assertEqual(self.cli("trigger", "loader").returncode, 0)
        d.wait_for(r'job=loader msg="?rows added')
        # ClickHouse stops in the middle of the run; the run ends and spools its rows.
        self.stop_ch()
        write(flag, "1")
        d.wait_for(r'job=loader msg="run finished".*status=error', timeout=60)
        self.wait("spooled", lambda: [n for n in self.spool_files() if ".fact_vk_ads_daily~" in n])
        # While ClickHouse is down, nothing is replayed (rows wait; the daemon only asks ClickHouse).
        time.sleep(4)
        self.assertFalse(d.grep(r'job=spool_replay msg="run started"'), "\n".join(d.log()[-30:]))
        self.assertTrue(self.spool_files())
        # ClickHouse is back: no operator command, the rows arrive.
        self.start_ch()
        back = time.time()
        self.wait("rows in v_vk_ads_latest", lambda: self.view_rows() == 5, timeout=30)
        self.assertLess(time.time() - back, 15, "within a few check intervals of ClickHouse answering")
        runs = self.wait("the replay's run row", lambda: self.replays(), timeout=30)
        self.assertEqual(len(runs), 1, runs)
        self.assertEqual(runs[0]["status"], "success", runs)
        self.assertGreaterEqual(int(runs[0]["rows_processed"]), 6, runs)  # 5 ad rows + the loader's run row
        self.assertRegex(runs[0]["message"], r"^replay: \d+ rows delivered, 0 files left, 0 rows quarantined$")
        # the loader's own final row was spooled too, and is in the run log now; under the daemon it
        # says the daemon delivers the rows, the operator's command only as the fallback
        loader = self.wait("the loader's run row", lambda: [r for r in self.q(
            "SELECT status, message FROM meta_job_runs WHERE job = 'loader'") if r["status"] == "error"])
        self.assertRegex(loader[0]["message"], r"^5 rows spooled to .*; job spool_replay delivers them once ClickHouse "
                                               r"answers \(by hand: `zhost spool replay`\)$")
        self.assertEqual(self.spool_files(), [])
        # Exactly once: the table itself holds each row once, and nothing runs again.
        time.sleep(4)
        self.assertEqual(self.view_rows(), 5)
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily WHERE account_id = 7"), "5")
        self.assertEqual(len(self.replays()), 1)
        self.assertEqual(len(d.grep(r'job=spool_replay msg="run started"')), 1)
        # Visible: zhost.log, zhost status, the health answer, /metrics.
        with open(os.path.join(self.tmp, "state", "zhost.log")) as f:
            log = f.read()
        self.assertIn('job=spool_replay msg="ClickHouse answers and rows wait in the spool: replaying it"', log)
        self.assertRegex(log, r'job=spool_replay msg="run finished" run_id=\S+ status=success')
        st = json.loads(self.cli("status", "spool_replay", "--json").stdout)
        self.assertEqual((st["last_run"]["status"], st["last_run"]["rows"]), ("success", int(runs[0]["rows_processed"])))
        logs = self.cli("logs", "spool_replay")
        self.assertEqual(logs.returncode, 0, logs.stderr)
        self.assertIn(runs[0]["run_id"], logs.stdout)
        _, _, doc = request_json(self.port, "/healthz/detailed")
        self.assertEqual(doc["checks"]["spool"]["files"], 0)
        self.assertTrue(doc["checks"]["spool"]["auto_replay"])
        self.assertEqual(doc["checks"]["job_runs"]["spool_replay"]["last_status"], "success")
        self.assertEqual(d.stop(), 0)


class SpoolAlone(AutoReplayCase):
    def test_nothing_spooled_means_no_replay_and_no_row(self):
        write(os.path.join(self.tmp, "scripts", "tick.lua"), 'log.info("tick")\n')
        self.conf("[job tick]\nscript = scripts/tick.lua\nschedule = every 1s\n",
                  spool="check_every = 250ms\nreplay_every = 1s\n")
        d = self.start()
        d.wait_for(r'job=tick msg="run finished".*status=success', count=4, timeout=20)
        self.assertEqual(d.stop(), 0)
        self.assertFalse(d.grep(r"job=spool_replay"), "\n".join(d.grep("spool")))
        self.assertTrue(self.q("SELECT run_id FROM meta_job_runs WHERE job = 'tick'"))
        self.assertEqual(self.replays(), [])

    def test_a_trigger_before_anything_was_ever_spooled(self):
        # the spool folder does not exist yet: an operator's replay finds it empty, it is no error
        self.conf()
        d = self.start()
        self.assertFalse(os.path.exists(self.spool))
        r = self.cli("trigger", "spool_replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        runs = self.wait("the trigger's row", self.replays)
        self.assertEqual([(x["status"], x["message"]) for x in runs],
                         [("success", "replay: 0 rows delivered, 0 files left, 0 rows quarantined")])
        self.assertEqual(d.stop(), 0)

    def test_auto_replay_off_leaves_the_spool_alone_until_an_operator_asks(self):
        self.spool_by_a_run()
        files = self.spool_files()
        self.conf(spool="auto_replay = false\ncheck_every = 250ms\nreplay_every = 1s\n")
        d = self.start()
        time.sleep(3)
        self.assertEqual(self.spool_files(), files)
        self.assertEqual(self.view_rows(), 0)
        self.assertFalse(d.grep(r'job=spool_replay msg="run started"'))
        self.assertEqual(self.replays(), [])
        st = json.loads(self.cli("status", "spool_replay", "--json").stdout)
        self.assertFalse(st["enabled"])
        _, _, doc = request_json(self.port, "/healthz/detailed")
        self.assertFalse(doc["checks"]["spool"]["auto_replay"])
        self.assertIn("`zhost spool replay`", doc["checks"]["spool"]["hint"])
        # An operator's trigger replays now, and is recorded.
        self.assertEqual(self.cli("trigger", "spool_replay").returncode, 0)
        self.wait("rows delivered by the trigger", lambda: self.view_rows() == 5)
        runs = self.wait("the trigger's run row", self.replays)
        self.assertEqual([r["status"] for r in runs], ["success"])
        self.assertEqual(self.spool_files(), [])
        # and so is a trigger with nothing to deliver (an operator asked)
        self.assertEqual(self.cli("trigger", "spool_replay").returncode, 0)
        self.wait("the second trigger's row", lambda: len(self.replays()) == 2)
        self.assertEqual(d.stop(), 0)

    def test_disable_at_run_time_then_enable(self):
        # a `zhost run` child of the daemon is told whether the daemon replays its spool (run messages)
        write(os.path.join(self.tmp, "scripts", "env.lua"),
              'print("auto_replay=" .. tostring(os.getenv("ZHOST_AUTO_REPLAY")))\n')
        self.conf(jobs="[job envrun]\ncommand = run scripts/env.lua\nschedule = 0 0 1 1 *\n",
                  spool="check_every = 250ms\nreplay_every = 1s\n")
        d = self.start()
        r = self.cli("disable", "spool_replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cli("trigger", "envrun").returncode, 0)
        d.wait_for(r'job=envrun msg="output" line="auto_replay=nil"')
        self.spool_by_a_run()
        files = self.spool_files()
        time.sleep(2)
        self.assertEqual(self.spool_files(), files)
        self.assertEqual(self.replays(), [])
        # the switch survives a restart, like any job's
        self.assertEqual(d.stop(), 0)
        d = self.start()
        time.sleep(2)
        self.assertEqual(self.spool_files(), files)
        self.assertEqual(self.cli("enable", "spool_replay").returncode, 0)
        self.wait("rows delivered after enable", lambda: self.view_rows() == 5)
        self.assertEqual([r["status"] for r in self.wait("row", self.replays)], ["success"])
        self.assertEqual(self.cli("trigger", "envrun").returncode, 0)
        d.wait_for(r'job=envrun msg="output" line="auto_replay=%s"' % self.spool)
        self.assertEqual(d.stop(), 0)

    def test_files_of_a_run_still_going_are_taken_after_it_ends(self):
        self.conf(spool="check_every = 250ms\nreplay_every = 1s\n")
        d = self.start()
        p = self.spool_by_a_run(hold=60)
        try:
            self.wait("the run spooled", lambda: self.spool_files())
            time.sleep(2.5)
            # its file is locked by the live run: no replay starts, nothing is recorded
            self.assertFalse(d.grep(r'job=spool_replay msg="run started"'), "\n".join(d.log()[-20:]))
            self.assertEqual(self.view_rows(), 0)
        finally:
            p.terminate()
            p.communicate(timeout=30)
        self.wait("rows delivered once the run ended", lambda: self.view_rows() == 5)
        runs = self.wait("row", self.replays)
        self.assertEqual([r["status"] for r in runs], ["success"], runs)
        self.assertEqual(d.stop(), 0)

    def test_a_file_clickhouse_keeps_refusing_is_retried_backing_off_and_kept(self):
        os.makedirs(self.spool, exist_ok=True)
        bad = os.path.join(self.spool, "%s.gone_table~run1.jsonl" % self.db)
        write(bad, '{"id":1}\n')
        self.conf(spool="check_every = 250ms\nreplay_every = 1s\nreplay_max_every = 8s\nreplay_timeout = 2m\n")
        d = self.start()
        failed = r'job=spool_replay msg="rows stay in the spool: the replay failed; the next automatic replay is in %d s" failures=%d'
        # Each failure in a row doubles the wait (1 s, 2 s, 4 s ... up to 8 s), never hot.
        d.wait_for(failed % (4, 3), timeout=30)
        self.assertEqual(len(d.grep(failed % (1, 1))), 1, "\n".join(d.grep("spool_replay")))
        self.assertEqual(len(d.grep(failed % (2, 2))), 1, "\n".join(d.grep("spool_replay")))
        runs = self.wait("three run rows", lambda: len(self.replays()) == 3 and self.replays())
        for r in runs:
            self.assertEqual(r["status"], "error", r)
            self.assertIn("gone_table", r["message"])
            self.assertIn("the files stay in the spool", r["message"])
        self.assertTrue(os.path.exists(bad), "a refused file is never deleted")
        # Every failure is still a failed run: three in a row make the job an error.
        st = json.loads(self.cli("status", "spool_replay", "--json").stdout)
        self.assertEqual(st["consecutive_failures"], 3)
        self.assertEqual(st["timeout"], 120)
        self.assertEqual(st["replay_backoff"]["failed_in_a_row"], 3)
        self.assertGreaterEqual(st["replay_backoff"]["next_in"], 0)
        _, _, doc = request_json(self.port, "/healthz/detailed")
        self.assertEqual(doc["checks"]["job_runs"]["spool_replay"]["status"], "error")
        self.assertEqual(doc["checks"]["spool"]["replay_failures"], 3)
        self.assertRegex(doc["checks"]["spool"]["hint"], r"3 replays in a row failed, the next (in about \d+ s|at its next look)")
        text = self.cli("status", "spool_replay").stdout
        self.assertRegex(text, r"back-off: +3 failed replays in a row; the next automatic one in about \d+ s")
        # Rows of a fresh outage (another table) do not wait out the back-off, only replay_every.
        fresh = "%s.other_gone~run2.jsonl" % self.db
        write(os.path.join(self.spool, fresh), '{"id":2}\n')
        d.wait_for(r'job=spool_replay msg="ClickHouse answers and rows wait in the spool: replaying it" .*new_file=%s'
                   % fresh.replace(".", r"\."), timeout=20)
        d.wait_for(failed % (8, 4), timeout=20)
        # `zhost enable spool_replay` starts the count afresh ...
        self.assertEqual(self.cli("enable", "spool_replay").returncode, 0)
        d.wait_for(failed % (1, 1), count=2, timeout=20)
        # ... and so does an operator's replay: failed, it is the first failure again, not the second.
        # (The next automatic replay is due a second after that failure: on a loaded machine it may
        # be running when the trigger comes, which refuses; the operator tries again, so do we.)
        deadline = time.time() + 20
        while True:
            r = self.cli("trigger", "spool_replay")
            if r.returncode == 0 or "already running" not in r.stderr or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_for(failed % (1, 1), count=3, timeout=20)
        # Once the cause is fixed, the next replay delivers it.
        self.scalar("CREATE TABLE gone_table (id UInt32) ENGINE = MergeTree ORDER BY id")
        self.scalar("CREATE TABLE other_gone (id UInt32) ENGINE = MergeTree ORDER BY id")
        self.wait("the row delivered", lambda: self.scalar("SELECT count() FROM gone_table") == "1", timeout=20)
        self.wait("a successful replay", lambda: self.replays()[-1]["status"] == "success")
        self.assertFalse(os.path.exists(bad))
        self.assertEqual(self.scalar("SELECT count() FROM other_gone"), "1")
        _, _, doc = request_json(self.port, "/healthz/detailed")
        self.assertEqual(doc["checks"]["spool"]["replay_failures"], 0)
        self.assertEqual(d.stop(), 0)

    def test_the_operator_commands_still_work_by_hand(self):
        r = self.spool_by_a_run()
        # a plain `zhost run` names the operator's command
        self.assertRegex(r.stderr.strip().splitlines()[-1], r"rows spooled to .*; deliver them with `zhost spool replay`$")
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        # the 5 rows and the run's final row; its `running` row too unless it was still in flight when
        # the final row replaced it (run.c drops it then, by design): 6 or 7, by timing
        self.assertRegex(r.stdout, r"replay: [67] rows delivered, 0 files left, 0 rows quarantined")
        self.assertEqual(self.view_rows(), 5)
        # one the daemon started for its own spool (ZHOST_AUTO_REPLAY, serve.c) names the daemon's job ...
        dead = {"CLICKHOUSE_URL": "http://127.0.0.1:%d" % free_port(), "ZHOST_AUTO_REPLAY": self.spool}
        r = self.zhost("run", os.path.join(self.tmp, "spooler.lua"), env=dead)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr.strip().splitlines()[-1], r"rows spooled to .*; job spool_replay delivers them once "
                                                            r"ClickHouse answers \(by hand: `zhost spool replay`\)$")
        # ... but not when it spools to another folder than the daemon replays
        dead["ZHOST_AUTO_REPLAY"] = self.spool + "-other"
        r = self.zhost("run", os.path.join(self.tmp, "spooler.lua"), env=dead)
        self.assertRegex(r.stderr.strip().splitlines()[-1], r"; deliver them with `zhost spool replay`$")


class Configuration(unittest.TestCase):
    def check(self, text):
        with tempfile.TemporaryDirectory() as d:
            path = write(os.path.join(d, "conf", "zhost.conf"), text)
            return subprocess.run([ZHOST, "serve", "--check", "--conf", path], capture_output=True, text=True, timeout=30)

    def test_the_spool_section_and_the_reserved_name(self):
        r = self.check("[spool]\nauto_replay = false\nreplay_every = 10m\ncheck_every = 1m\nreplay_max_every = 2h\n"
                       "replay_timeout = 3h\n[job a]\nscript = a.lua\nschedule = every 1h\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("spool_replay ")]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertRegex(line[0], r"^spool_replay\s+disabled\s+when spooled\s+zhost spool replay: .*at most every 600 s, "
                                  r"up to 7200 s after failures \(looks every 60 s; timeout 10800 s\)$")
        r = self.check("[job a]\nscript = a.lua\nschedule = every 1h\n")
        self.assertRegex([l for l in r.stdout.splitlines() if l.startswith("spool_replay ")][0],
                         r"^spool_replay\s+enabled\s+.*at most every 300 s, up to 3600 s after failures "
                         r"\(looks every 30 s; timeout 3600 s\)$")
        for bad, msg in (("[spool]\nauto_replay = maybe\n", ":2: auto_replay: true or false"),
                         ("[spool]\nreplay_every = 0\n", ":2: replay_every: a duration"),
                         ("[spool]\ncheck_every = 2h\n", ":2: check_every: a duration"),
                         ("[spool]\nreplay_max_every = 2d\n", ":2: replay_max_every: a duration"),
                         ("[spool]\nreplay_timeout = 0\n", ":2: replay_timeout: a duration"),
                         ("[spool]\nreplay = true\n", ":2: unknown key 'replay' in [spool]"),
                         ("[job spool_replay]\ncommand = spool replay\nschedule = every 5m\n",
                          ":1: job name 'spool_replay' is the daemon's own spool replay (set it up in [spool])"),
                         ("[job a]\nscript = a.lua\nschedule = every 1h\naliases = spool_replay\n",
                          "alias 'spool_replay' is not a free job name")):
            r = self.check(bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn(msg, r.stderr)


if __name__ == "__main__":
    unittest.main()
