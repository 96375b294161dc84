"""End-to-end tests of the spool's locks: `zhost spool replay` leaves alone a file that a live run
(`zhost run`, or a script job inside `zhost serve`) may still append to, delivers every other file,
and delivers that one too, every row exactly once, once its run has ended; a writer killed with
SIGKILL blocks nothing. The writers meet an unreachable ClickHouse (a closed port) and spool; the
replays talk to the test's real ClickHouse. Real binary, real ClickHouse."""
import fcntl
import glob
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from serve_helpers import Daemon, free_port, write  # noqa: E402

DOWN = {"CLICKHOUSE_URL": "http://127.0.0.1:9", "ZHOST_CH_ATTEMPTS": "1"}

# Spools ids FROM..FROM+99 at once, then waits for FLAG, then spools FROM+100..FROM+199 at its end.
WRITER = """
local s = assert(ch.sink("locked", {max_rows = 100000, max_age = 600}))
for i = FROM, FROM + 99 do s:add{id = i, _ver = 1} end
assert(not s:flush(), "ClickHouse should be unreachable for the writer")
log.info("first batch spooled")
while not io.read_file("FLAG") do sleep(0.05) end
for i = FROM + 100, FROM + 199 do s:add{id = i, _ver = 1} end
"""


class SpoolLockCase(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        zhtest.ch("CREATE TABLE %s.locked (id UInt32, _ver UInt64) ENGINE = MergeTree ORDER BY id" % self.db)
        # One run with ClickHouse up caches the table's schema beside the spool, as a daemon's
        # earlier runs would have: the writers then open their sinks while it is unreachable.
        r = self.zhost("run", self.script("cache.lua", 'assert(ch.sink("locked"))\n'))
        self.assertEqual(r.returncode, 0, r.stderr)

    def writer_script(self, name, first):
        flag = os.path.join(self.tmp, name + ".go")
        text = WRITER.replace("FROM", str(first)).replace("FLAG", flag)
        return self.script(name + ".lua", "-- zhost: job=%s\n%s" % (name, text)), flag

    def files(self, table="locked"):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.spool, "%s.%s~*.jsonl" % (self.db, table))))

    def lines(self, name):
        with open(os.path.join(self.spool, name)) as fh:
            return sum(1 for l in fh if l.strip())

    def wait_spooled(self, proc, rows, known=()):
        """The file a writer spools to, once it holds `rows` rows."""
        deadline = time.time() + 60
        while time.time() < deadline:
            for name in self.files():
                if name not in known and self.lines(name) >= rows:
                    return name
            if proc is not None and proc.poll() is not None:
                self.fail("the writer exited early: %s" % (proc.communicate(),))
            time.sleep(0.05)
        self.fail("nothing spooled; spool has %s" % self.files())

    def counts(self):
        """(rows, distinct ids) in the table."""
        a, b = self.scalar("SELECT count(), uniqExact(id) FROM locked").split()
        return int(a), int(b)

    def replay(self):
        return self.zhost("spool", "replay")


class ReplayAndLiveRuns(SpoolLockCase):
    def test_replay_skips_a_live_runs_file_and_takes_it_once_the_run_ended(self):
        # A batch of a run that ended earlier, waiting in the spool: replay must deliver it.
        with open(os.path.join(self.spool, "%s.locked~oldrun.jsonl" % self.db), "w") as fh:
            fh.write("".join(json.dumps({"id": 5000 + i, "_ver": 1}) + "\n" for i in range(10)))
        path, flag = self.writer_script("live", 1)
        p = self.zhost_bg("run", path, env=DOWN)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        live = self.wait_spooled(p, 100, known={"%s.locked~oldrun.jsonl" % self.db})

        st = self.zhost("spool", "status")
        self.assertEqual(st.returncode, 0, st.stderr)
        row = [l for l in st.stdout.splitlines() if live in l]
        self.assertEqual(len(row), 1, st.stdout)
        self.assertIn("being written (pid %d)" % p.pid, row[0])
        self.assertNotIn("being written", [l for l in st.stdout.splitlines() if "oldrun" in l][0])
        js = json.loads(self.zhost("spool", "status", "--json").stdout)
        mine = [f for f in js["files"] if f["file"] == live][0]
        self.assertTrue(mine["being_written"])
        self.assertEqual(mine["writer_pid"], p.pid)
        # the run's own "running" row is spooled (and held) too
        self.assertGreaterEqual(js["being_written_files"], 2)

        r = self.replay()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("%s: still being written by a running run (pid %d), skipped" % (os.path.join(self.spool, live), p.pid),
                      r.stderr)
        self.assertIn("still being written by running runs: replay again when they have ended", r.stdout)
        self.assertEqual(self.counts(), (10, 10))  # the other file was delivered
        self.assertEqual(self.files(), [live])
        self.assertEqual(self.lines(live), 100)

        with open(flag, "w") as fh:
            fh.write("go")
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("200 rows spooled", err)
        self.assertNotIn("being written", self.zhost("spool", "status").stdout)

        r = self.replay()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.counts(), (210, 210))
        self.assertEqual(self.scalar("SELECT min(id), max(id) FROM locked WHERE id < 5000"), "1\t200")
        self.assertIn("total: 0 files", self.zhost("spool", "status").stdout)
        # its run log rows came with it: one run, failed for the spooled rows
        self.assertEqual([(x["job"], x["status"]) for x in self.runs("live")], [("live", "error")])

    def test_a_killed_writer_blocks_nothing(self):
        live_path, live_flag = self.writer_script("alive", 1)
        dead_path, _ = self.writer_script("killed", 1001)
        live = self.zhost_bg("run", live_path, env=DOWN)
        self.addCleanup(lambda: live.poll() is None and live.kill())
        live_file = self.wait_spooled(live, 100)
        dead = self.zhost_bg("run", dead_path, env=DOWN)
        dead_file = self.wait_spooled(dead, 100, known={live_file})
        dead.send_signal(signal.SIGKILL)  # no chance to unlock anything itself
        dead.communicate(timeout=30)

        r = self.replay()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("%s: still being written by a running run (pid %d), skipped" % (os.path.join(self.spool, live_file),
                                                                                      live.pid), r.stderr)
        self.assertNotIn("pid %d" % dead.pid, r.stderr)
        self.assertNotIn(dead_file, r.stderr)
        self.assertEqual(self.scalar("SELECT count(), uniqExact(id), min(id), max(id) FROM locked"), "100\t100\t1001\t1100")
        self.assertEqual(self.files(), [live_file])

        with open(live_flag, "w") as fh:
            fh.write("go")
        live.communicate(timeout=120)
        r = self.replay()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.counts(), (300, 300))
        self.assertEqual(self.files(), [])

    def test_a_lock_a_helper_holds_is_honoured_and_a_second_replay_waits(self):
        # Any process's flock counts, not only zhost's own: here a Python helper's.
        name = "%s.locked~helper.jsonl" % self.db
        with open(os.path.join(self.spool, name), "w") as fh:
            fh.write(json.dumps({"id": 7, "_ver": 1}) + "\n")
        held = open(os.path.join(self.spool, name))
        fcntl.flock(held, fcntl.LOCK_EX)
        r = self.replay()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("%s: still being written by a running run (pid %d), skipped" % (os.path.join(self.spool, name),
                                                                                      os.getpid()), r.stderr)
        self.assertEqual(self.counts(), (0, 0))
        # A replay already at work (its lock on the spool) makes a second one stop at once.
        fcntl.flock(held, fcntl.LOCK_UN)
        rl = open(os.path.join(self.spool, "replay.lock"), "a")
        fcntl.flock(rl, fcntl.LOCK_EX)
        r = self.replay()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("another `zhost spool replay` (pid %d) is delivering" % os.getpid(), r.stderr)
        self.assertEqual(self.counts(), (0, 0))
        rl.close()
        held.close()
        r = self.replay()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.counts(), (1, 1))


class ReplayAndTheDaemon(SpoolLockCase):
    """A script job runs inside `zhost serve`: its lock must go when its run ends, though the
    daemon goes on, and the daemon must not keep a spool file open per past run."""

    def spool_fds(self, pid):
        out = []
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith(self.spool + "/"):
                out.append(target)
        return out

    def test_a_daemon_run_holds_its_file_until_it_ends_and_no_longer(self):
        port = free_port()
        path, flag = self.writer_script("daemonjob", 1)
        os.makedirs(os.path.join(self.tmp, "conf"))
        conf = write(os.path.join(self.tmp, "conf", "zhost.conf"),
                     "[zhost]\nroot = ..\nstate_dir = state\ngrace = 2s\n[health]\nlisten = 127.0.0.1:%d\n"
                     "[job daemonjob]\nscript = %s\nschedule = 0 0 1 1 *\n" % (port, path))
        d = Daemon(self, conf, env=DOWN)
        self.addCleanup(lambda: d.proc.poll() is None and d.kill())
        d.ready()
        cli_env = {"ZHOST_CONF": conf}
        self.assertEqual(self.zhost("trigger", "daemonjob", env=cli_env).returncode, 0)
        d.wait_for(r'job=daemonjob msg="?first batch spooled')
        held = self.files()
        self.assertEqual(len(held), 1)

        r = self.replay()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("%s: still being written by a running run (pid %d), skipped" % (os.path.join(self.spool, held[0]),
                                                                                      d.proc.pid), r.stderr)
        self.assertEqual(self.counts(), (0, 0))

        with open(flag, "w") as fh:
            fh.write("go")
        d.wait_for(r'job=daemonjob msg="run finished"')
        # The daemon lives on; the run's lock (and fd) went with the run.
        deadline = time.time() + 10
        while self.spool_fds(d.proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.spool_fds(d.proc.pid), [])
        r = self.replay()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.counts(), (200, 200))

        # More runs (the flag is there: each spools its 200 rows and ends): no fd left behind.
        for i in range(5):
            self.assertEqual(self.zhost("trigger", "daemonjob", env=cli_env).returncode, 0)
            d.wait_for(r'job=daemonjob msg="run finished"', count=2 + i)
            deadline = time.time() + 10
            while self.zhost("status", "daemonjob", "--json", env=cli_env).stdout.count('"running":true') and \
                    time.time() < deadline:
                time.sleep(0.05)
        deadline = time.time() + 10
        while self.spool_fds(d.proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.spool_fds(d.proc.pid), [])
        self.assertEqual(d.stop(), 0)
        r = self.replay()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.counts(), (1200, 200))


if __name__ == "__main__":
    unittest.main()
