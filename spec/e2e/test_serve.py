"""End-to-end tests of `zhost serve`: schedules (with a fake clock), no overlap, catch-up, graceful
stop, interrupted runs, persistent enable/disable, trigger/restart, reload, child commands and
`zhost logs`. The jobs are small Lua scripts written into each test's temp dir."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

from zhtest import SOURCE_DIR, ZHOST, ZhostCase, ch
from serve_helpers import Daemon, free_port, request_json, write


class ServeCase(ZhostCase):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        super().tearDown()

    def conf(self, jobs, grace="2s", extra=""):
        """Writes <tmp>/conf/zhost.conf with the given [job] sections."""
        text = ("[zhost]\nroot = ..\nstate_dir = state\ngrace = %s\ntimezone = Europe/Moscow\n"
                "[health]\nlisten = 127.0.0.1:%d\nidle_timeout = 2s\n%s\n%s\n" % (grace, self.port, extra, jobs))
        self.conf_path = write(os.path.join(self.tmp, "conf", "zhost.conf"), text)
        return self.conf_path

    def lua(self, name, text):
        return write(os.path.join(self.tmp, "scripts", name), text)

    def start(self, env=None):
        d = Daemon(self, self.conf_path, env=env)
        self.daemons.append(d)
        d.ready()
        return d

    def cli(self, *args, cwd="/", env=None):
        e = dict(self.env)
        e["ZHOST_CONF"] = self.conf_path
        if env:
            e.update(env)
        return subprocess.run([ZHOST, *args], env=e, capture_output=True, text=True, timeout=60, cwd=cwd)

    def wait_idle(self, job, timeout=20):
        """Until the job's run is completely over (its final row written)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.cli("status", job, "--json")
            if r.returncode == 0 and not json.loads(r.stdout)["running"]:
                return
            time.sleep(0.1)
        self.fail("%s still running" % job)

    def wait_rows(self, sql, want, timeout=20):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            got = self.q(sql)
            if want(got):
                return got
            time.sleep(0.2)
        self.fail("condition not met for %s; last: %r" % (sql, got))


class Schedules(ServeCase):
    def test_cron_fires_at_moscow_times_across_the_date_boundary(self):
        # 60x clock: a virtual minute per real second, starting 90 s before midnight in Moscow.
        self.lua("tick.lua", 'log.info("tick")\n')
        self.conf("[job midnight]\nscript = scripts/tick.lua\nschedule = 0 0 * * *\n"
                  "[job five_past]\nscript = scripts/tick.lua\nschedule = 5 0 * * *\ntimezone = Europe/Moscow\n"
                  "[job utc_midnight]\nscript = scripts/tick.lua\nschedule = 0 0 * * *\ntimezone = UTC\n"
                  "[job quarter]\nscript = scripts/tick.lua\nschedule = */15 * * * *\n")
        d = self.start(env={"ZHOST_FAKE_NOW": "2026-03-31T23:58:30+03:00", "ZHOST_FAKE_SPEED": "60"})
        d.wait_for(r'job=five_past msg="run finished".*status=success', timeout=30)
        due = [l for l in d.log() if 'msg="job due"' in l]
        scheduled = [(l.split("job=")[1].split()[0], l.split("scheduled=")[1].strip()) for l in due]
        self.assertIn(("midnight", "2026-04-01T00:00:00+03:00"), scheduled)
        self.assertIn(("quarter", "2026-04-01T00:00:00+03:00"), scheduled)
        self.assertIn(("five_past", "2026-04-01T00:05:00+03:00"), scheduled)
        # UTC midnight is 03:00 in Moscow: not in this window.
        self.assertFalse([s for s in scheduled if s[0] == "utc_midnight"], scheduled)
        self.assertEqual(len([s for s in scheduled if s[0] == "midnight"]), 1, scheduled)
        self.assertLess(scheduled.index(("midnight", "2026-04-01T00:00:00+03:00")),
                        scheduled.index(("five_past", "2026-04-01T00:05:00+03:00")))
        st = json.loads(self.cli("status", "utc_midnight", "--json").stdout)
        self.assertEqual(st["next_run"], "2026-04-01T03:00:00+03:00")
        self.assertEqual(d.stop(), 0)
        runs = self.runs("five_past")
        self.assertEqual([r["status"] for r in runs], ["success"])

    def test_a_slow_job_never_overlaps_itself(self):
        self.lua("slow.lua", 'log.info("slow begins")\nsleep(2.2)\nlog.info("slow ends")\n')
        self.conf("[job slow]\nscript = scripts/slow.lua\nschedule = every 1s\n")
        d = self.start()
        d.wait_for(r'job=slow msg="run finished"', timeout=20, count=2)
        d.wait_for(r'job=slow msg="skipped: the previous run is still going"', timeout=10)
        self.assertEqual(d.stop(), 0)
        # Runs strictly alternate begin/end: never two at once.
        seq = [l for l in d.log() if 'job=slow msg="slow begins"' in l or 'job=slow msg="slow ends"' in l]
        kinds = ["b" if "begins" in l else "e" for l in seq]
        for i in range(1, len(kinds)):
            self.assertNotEqual(kinds[i], kinds[i - 1], seq)
        skipped = d.grep(r'job=slow msg="skipped: the previous run is still going".*running_run_id=')
        self.assertTrue(skipped)

    def test_a_missed_run_is_caught_up_exactly_once_at_start(self):
        self.lua("hourly.lua", 'log.info("hourly ran")\n')
        self.conf("[job hourly]\nscript = scripts/hourly.lua\nschedule = 0 * * * *\n"
                  "[job fresh]\nscript = scripts/hourly.lua\nschedule = 0 * * * *\n")
        # The daemon last fired `hourly` five hours ago: five runs were missed.
        write(os.path.join(self.tmp, "state", "state"), "hourly - %d\n" % (int(time.time()) - 5 * 3600))
        d = self.start()
        d.wait_for(r'job=hourly msg="run finished".*status=success', timeout=20)
        time.sleep(2)
        self.assertEqual(len(d.grep(r'job=hourly msg="catching up')), 1)
        self.assertEqual(len(d.grep(r'job=hourly msg="run started"')), 1)
        # A job with no recorded fire has nothing to catch up.
        self.assertFalse(d.grep(r'job=fresh msg="run started"'))
        self.assertEqual(d.stop(), 0)
        self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'hourly'", lambda r: len(r) == 1)
        # Restarting right away: nothing missed any more.
        d2 = self.start()
        time.sleep(2)
        self.assertFalse(d2.grep(r'catching up'))
        self.assertEqual(d2.stop(), 0)
        self.assertEqual(len(self.runs("hourly")), 1)


class Stopping(ServeCase):
    def test_sigterm_mid_run_keeps_every_row_and_exits_0(self):
        self.scalar("CREATE TABLE t_rows (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
        self.lua("writer.lua", """
local s = ch.sink("t_rows")
for i = 1, 500 do s:add({id = i, name = "row" .. i}) end
log.info("rows added")
sleep(60)
""")
        self.conf("[job writer]\nscript = scripts/writer.lua\nschedule = 0 0 1 1 *\n", grace="1s")
        d = self.start()
        r = self.cli("trigger", "writer")
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_for(r'job=writer msg="rows added"')
        t0 = time.time()
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(30), 0, "\n".join(d.log()[-20:]))
        self.assertLess(time.time() - t0, 15)
        self.assertEqual(self.scalar("SELECT count() FROM t_rows"), "500")
        runs = self.runs("writer")
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0]["status"], "interrupted")
        self.assertEqual(int(runs[0]["rows_processed"]), 500)
        self.assertTrue(d.grep(r'grace period over'))

    def test_a_run_whose_tasks_wait_for_each_other_fails_at_once(self):
        # Without the daemon's check such a run stayed "running" until its timeout (10 minutes
        # here), and no-overlap kept the job from running meanwhile. Tasks waiting for a task
        # that sleeps are not a stall.
        self.lua("stall.lua", """local a
local b = task.spawn(function() return task.wait(a) end)
a = task.spawn(function() return task.wait(b) end)
log.info("waiting")
task.wait(a)
""")
        self.lua("patient.lua", """local t = task.spawn(function() sleep(4) return 7 end)
local u = task.spawn(function() return task.wait(t) end)
assert(task.wait(u) == 7)
""")
        self.conf("[job stall]\nscript = scripts/stall.lua\nschedule = 0 0 1 1 *\ntimeout = 10m\n"
                  "[job patient]\nscript = scripts/patient.lua\nschedule = 0 0 1 1 *\ntimeout = 10m\n")
        d = self.start()
        t0 = time.time()
        self.assertEqual(self.cli("trigger", "patient").returncode, 0)
        self.assertEqual(self.cli("trigger", "stall").returncode, 0)
        self.wait_idle("stall", timeout=20)
        self.assertLess(time.time() - t0, 15)
        run = self.runs("stall")[-1]
        self.assertEqual(run["status"], "error")
        self.assertRegex(run["message"], r"^stalled: the script waits at \S*stall\.lua:5 and nothing is left that "
                                         r"could wake it \(3 of its tasks waiting\)$")
        self.assertTrue(d.grep(r'job=stall msg="run stalled: its tasks wait for each other"'))
        self.wait_idle("patient", timeout=20)
        self.assertEqual(self.runs("patient")[-1]["status"], "success")
        # the daemon goes on, and so does the job
        self.assertEqual(self.cli("trigger", "stall").returncode, 0)
        self.wait_idle("stall", timeout=20)
        self.assertEqual([r["status"] for r in self.runs("stall")], ["error", "error"])

    def kill_a_daemon_mid_run(self):
        """Starts a daemon, triggers a job that sleeps, SIGKILLs the daemon (no chance to write a
        final row) and returns the run_id left `running`."""
        self.lua("sleeper.lua", 'log.info("sleeping")\nsleep(120)\n')
        self.conf("[job sleeper]\nscript = scripts/sleeper.lua\nschedule = 0 0 1 1 *\n")
        d = self.start()
        self.assertEqual(self.cli("trigger", "sleeper").returncode, 0)
        d.wait_for(r'job=sleeper msg="?sleeping')
        rows = self.wait_rows("SELECT run_id, status FROM meta_job_runs WHERE job = 'sleeper'",
                              lambda r: len(r) == 1 and r[0]["status"] == "running")
        d.kill()
        return rows[0]["run_id"]

    def test_a_run_left_running_by_a_kill_is_marked_interrupted_at_the_next_start(self):
        run_id = self.kill_a_daemon_mid_run()
        self.assertEqual(self.runs("sleeper")[0]["status"], "running")
        d2 = self.start()
        self.assertTrue(d2.grep(r'job=sleeper msg="marking a run left running as interrupted" run_id=' + run_id))
        runs = self.runs("sleeper")
        self.assertEqual([(r["run_id"], r["status"]) for r in runs], [(run_id, "interrupted")])
        st = json.loads(self.cli("status", "sleeper", "--json").stdout)
        self.assertEqual(st["last_run"]["status"], "interrupted")
        self.assertEqual(d2.stop(), 0)

    def test_runs_left_running_are_marked_once_clickhouse_answers_after_the_start(self):
        # A power cut brings ClickHouse and zhost back together; ClickHouse answers later than the
        # daemon starts. The runs left `running` must still be marked, not at the next restart.
        run_id = self.kill_a_daemon_mid_run()
        port = free_port()
        url = urllib.parse.urlsplit(self.env["CLICKHOUSE_URL"])
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        # 30 s between questions, 30 times faster with the fake clock's speed
        d2 = self.start(env={"CLICKHOUSE_URL": "http://127.0.0.1:%d" % port, "ZHOST_FAKE_NOW": now,
                             "ZHOST_FAKE_SPEED": "30"})
        self.assertEqual(self.runs("sleeper")[0]["status"], "running")
        # ClickHouse "comes up": a forwarder on the daemon's port
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", port))
        lst.listen(16)
        self.addCleanup(lst.close)

        def pipe(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for x in (a, b):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def forward():
            while True:
                try:
                    c, _ = lst.accept()
                except OSError:
                    return
                u = socket.create_connection((url.hostname, url.port))
                threading.Thread(target=pipe, args=(c, u), daemon=True).start()
                threading.Thread(target=pipe, args=(u, c), daemon=True).start()

        threading.Thread(target=forward, daemon=True).start()
        d2.wait_for(r'job=sleeper msg="marking a run left running as interrupted" run_id=' + run_id, timeout=20)
        self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'sleeper'",
                       lambda r: [x["status"] for x in r] == ["interrupted"])
        self.assertTrue(d2.grep("asking again every 30 s"))
        self.assertEqual(d2.stop(), 0)


class Operators(ServeCase):
    def test_disable_survives_a_restart_and_aliases_work(self):
        self.lua("g.lua", 'log.info("gmail ran")\n')
        self.conf("[job gmail_ingest]\naliases = gmail\nscript = scripts/g.lua\nschedule = 0 */4 * * *\n")
        d = self.start()
        st = json.loads(self.cli("status", "gmail_ingest", "--json").stdout)
        self.assertTrue(st["enabled"])
        self.assertIsNotNone(st["next_run"])
        r = self.cli("disable", "gmail")  # the old timer name, from another directory
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("gmail_ingest disabled", r.stdout)
        # the state file says what is in effect (the alert rules read its last column)
        with open(os.path.join(self.tmp, "state", "state")) as fh:
            self.assertRegex(fh.read(), r"(?m)^gmail_ingest 0 \d+ 0$")
        self.assertEqual(d.stop(), 0)
        d2 = self.start()
        st = json.loads(self.cli("status", "gmail_ingest", "--json").stdout)
        self.assertFalse(st["enabled"])
        self.assertIsNone(st["next_run"])
        text = self.cli("status").stdout
        self.assertRegex(text, r"gmail_ingest\s+no\s")
        r = self.cli("enable", "gmail_ingest")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(self.cli("status", "gmail", "--json").stdout)["enabled"])
        r = self.cli("disable", "no_such_job")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown job 'no_such_job'", r.stderr)
        self.assertEqual(d2.stop(), 0)
        with open(os.path.join(self.tmp, "state", "state")) as fh:
            self.assertRegex(fh.read(), r"(?m)^gmail_ingest 1 \d+ 1$")

    def test_alerts_under_the_daemon_skip_switched_off_jobs_whatever_zhost_state_dir_says(self):
        # The systemd unit sets ZHOST_STATE_DIR=/var/lib/zhost (token caches) while state_dir is
        # /var/lib/zhost/state: the alerts job must still read the daemon's own state file.
        elsewhere = os.path.join(self.tmp, "tokens")
        os.makedirs(elsewhere)
        self.lua("noop.lua", 'log.info("noop")\n')
        text = ("[zhost]\nroot = ..\nstate_dir = state\nscripts_dir = %s\ntimezone = Europe/Moscow\n"
                "[health]\nlisten = 127.0.0.1:%d\n"
                "[job vk_ads]\nscript = scripts/noop.lua\nschedule = 0 0 1 1 *\nenabled = false\n"
                "[job direct]\nscript = scripts/noop.lua\nschedule = 0 0 1 1 *\n"
                "[job alerts]\nscript = %s\nschedule = 0 0 1 1 *\nargs = --only failed_run\n"
                % (os.path.join(SOURCE_DIR, "scripts"), self.port, os.path.join(SOURCE_DIR, "scripts", "alerts.lua")))
        self.conf_path = write(os.path.join(self.tmp, "conf", "zhost.conf"), text)
        t = int(time.time()) - 600
        for job in ("vk_ads", "direct"):
            ch("INSERT INTO meta_job_runs_raw (job, run_id, started_at, finished_at, status, rows_processed, "
                   "message, metrics, host, _ver) VALUES ('%s', '%s-1', %d, %d, 'error', 0, 'boom', '{}', 'test', %d)"
                   % (job, job, t, t + 5, t * 1000), self.db)
        d = self.start(env={"ZHOST_STATE_DIR": elsewhere})
        r = self.cli("trigger", "alerts")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_idle("alerts")
        rows = self.q("SELECT rule, subject, state FROM v_alert_state ORDER BY subject")
        self.assertEqual([(x["rule"], x["subject"], x["state"]) for x in rows], [("failed_run", "direct", "open")])
        self.assertEqual(d.stop(), 0)

    def test_status_table_columns_line_up_with_a_long_job_name(self):
        # the shipped conf has qtickets_refunds (16 characters): every column starts where its header does
        self.lua("g.lua", 'log.info("ran")\n')
        self.conf("[job qtickets]\nscript = scripts/g.lua\nschedule = */15 * * * *\n"
                  "[job qtickets_refunds]\nscript = scripts/g.lua\nschedule = 40 3 * * *\n")
        d = self.start()
        lines = self.cli("status").stdout.splitlines()
        # the two jobs and the daemon's own spool_replay, last
        self.assertEqual([l.split()[0] for l in lines[1:]], ["qtickets", "qtickets_refunds", "spool_replay"], lines)
        col = lines[0].index("ENABLED")
        for line in lines[1:]:
            self.assertEqual(line[col - 1:col + 4], " yes ", lines)
        self.assertEqual(d.stop(), 0)

    def test_trigger_runs_once_restart_reruns_and_logs_show_history(self):
        self.lua("qt.lua", 'log.info("qtickets ran", {days = job.args.days})\nsleep(1)\n')
        self.lua("long.lua", 'log.info("long begins")\nsleep(60)\n')
        self.conf("[job qtickets]\nscript = scripts/qt.lua\nschedule = 0 0 1 1 *\n"
                  "[job long]\nscript = scripts/long.lua\nschedule = 0 0 1 1 *\n"
                  "[job ver]\ncommand = version\nschedule = 0 0 1 1 *\n")
        d = self.start()
        r = self.cli("trigger", "qtickets", "--days", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("qtickets started", r.stdout)
        again = self.cli("trigger", "qtickets")
        self.assertEqual(again.returncode, 1)
        self.assertIn("already running", again.stderr)
        d.wait_for(r'job=qtickets msg="run finished".*status=success')
        self.assertTrue(d.grep(r'job=qtickets msg="qtickets ran" days=3'))
        time.sleep(1)
        self.assertEqual(len(d.grep(r'job=qtickets msg="run started"')), 1)
        runs = self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'qtickets'",
                              lambda r: len(r) == 1 and r[0]["status"] == "success")
        # restart: the running run is stopped (interrupted) and a new one starts
        self.assertEqual(self.cli("trigger", "long").returncode, 0)
        d.wait_for(r'job=long msg="long begins"')
        r = self.cli("restart", "long")
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_for(r'job=long msg="long begins"', count=2)
        runs = self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'long' ORDER BY _ver",
                              lambda r: [x["status"] for x in r] == ["interrupted", "running"])
        # a command job: `zhost version` in a child process, its output logged under the job
        self.assertEqual(self.cli("trigger", "ver").returncode, 0)
        d.wait_for(r'job=ver msg="run finished".*status=success')
        self.assertTrue(d.grep(r'job=ver msg="output" line="zhost '))
        self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'ver'", lambda r: [x["status"] for x in r] == ["success"])
        # logs: run history from ClickHouse plus the job's log lines
        r = self.cli("logs", "qtickets", "--since", "1h", "-n", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Runs of qtickets", r.stdout)
        self.assertRegex(r.stdout, r"success")
        self.assertIn('msg="qtickets ran"', r.stdout)
        self.assertNotIn("job=long", r.stdout)
        self.assertEqual(self.cli("logs", "qtickets", "--since", "soon").returncode, 2)
        self.assertEqual(d.stop(), 0)

    def test_logs_show_a_run_s_duration_to_the_tenth_of_a_second(self):
        # metrics.duration is whole seconds (the runbook's SQL); `zhost logs` reads duration_ms
        self.lua("half.lua", 'sleep(0.6)\n')
        self.conf("[job half]\nscript = scripts/half.lua\nschedule = 0 0 1 1 *\n")
        d = self.start()
        self.assertEqual(self.cli("trigger", "half").returncode, 0)
        d.wait_for(r'job=half msg="run finished".*status=success')
        self.wait_rows("SELECT status FROM meta_job_runs WHERE job = 'half'", lambda r: [x["status"] for x in r] == ["success"])
        r = self.cli("logs", "half", "-n", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"success\s+0\.[6-9]s\s", r.stdout)
        self.assertEqual(d.stop(), 0)

    def test_sighup_reloads_and_bad_files_are_refused(self):
        self.lua("a.lua", 'log.info("a")\n')
        self.conf("[job a]\nscript = scripts/a.lua\nschedule = 0 0 1 1 *\n")
        d = self.start()
        self.conf("[job a]\nscript = scripts/a.lua\nschedule = 0 0 1 1 *\n[job b]\nscript = scripts/a.lua\nschedule = 5 4 * * *\n")
        d.signal(signal.SIGHUP)
        d.wait_for(r'msg="configuration reloaded"')
        st = json.loads(self.cli("status", "--json").stdout)
        # a job added by reload comes after the others, the daemon's own spool_replay stays last
        self.assertEqual([j["name"] for j in st["jobs"]], ["a", "b", "spool_replay"])
        self.assertTrue(st["jobs"][1]["next_run"].endswith(":04:05:00+03:00") or "T04:05:00+03:00" in st["jobs"][1]["next_run"])
        self.conf("[job a]\nscript = scripts/a.lua\nschedule = every banana\n")
        d.signal(signal.SIGHUP)
        d.wait_for(r'msg="reload failed; keeping the running configuration"')
        self.assertEqual(len(json.loads(self.cli("status", "--json").stdout)["jobs"]), 3)
        self.assertEqual(d.stop(), 0)
        bad = self.zhost("serve", "--conf", self.conf_path, "--check")
        self.assertEqual(bad.returncode, 2)
        self.assertRegex(bad.stderr, r"zhost.conf:\d+: bad interval 'every banana'")


class RefusedStart(ServeCase):
    def test_a_bad_fake_clock_is_refused_before_anything_is_taken(self):
        # It used to be checked after the state lock and the log file were taken, and that path
        # returned with zhost.log still open.
        self.lua("a.lua", "")
        self.conf("[job a]\nscript = scripts/a.lua\nschedule = 0 0 1 1 *\n")
        r = self.zhost("serve", "--conf", self.conf_path, env={"ZHOST_FAKE_NOW": "yesterday"})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("ZHOST_FAKE_NOW must be ISO-8601 with an offset (got 'yesterday')", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "state")), os.listdir(self.tmp))


if __name__ == "__main__":
    unittest.main()
