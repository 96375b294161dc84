"""End-to-end fault injection on `zhost backup`: what an operator meets after a crash or a bad disk.

  * a lock left by a killed backup whose pid now belongs to another live process (pids are reused,
    and after a container restart they repeat) neither blocks the next backup and prune nor makes
    verify call the dead backup "in progress"; a lock held by a live process still refuses;
  * an incremental refuses a base full whose files are missing or truncated, instead of reporting
    success for a backup whose unchanged partitions cannot be restored;
  * prune never deletes the newest sound full because a newer full is damaged, and does not treat a
    backup whose manifest is damaged as an unfinished folder to delete after a day.
"""
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
import unittest

from zhtest import ZHOST, ZhostCase, ch


class BackupFaultsCase(ZhostCase):
    migrate = False

    def setUp(self):
        super().setUp()
        for k in list(self.env):
            if k in ("ZHOST_BACKUP_DIR", "BACKUP_DIR", "ZHOST_JOB", "ZHOST_RUN_ID") or k.startswith("ZHOST_BACKUP_"):
                del self.env[k]
        self.env["ZHOST_LOG_LEVEL"] = "warn"
        self.bdir = os.path.join(self.tmp, "backups")
        ch("CREATE DATABASE " + self.db)
        ch("CREATE DATABASE " + self.bi)
        ch("CREATE TABLE %s.sales (d Date, id UInt32, v String) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY id"
           % self.db)
        ch("INSERT INTO %s.sales SELECT toDate('2024-01-01') + number %% 60, number, toString(number) FROM numbers(3000)"
           % self.db)

    def backup(self, *args, expect):
        r = self.zhost("backup", *args)
        self.assertEqual(r.returncode, expect, "zhost backup %s\nstdout:\n%s\nstderr:\n%s" % (args, r.stdout, r.stderr))
        return r

    def names(self, suffix=""):
        return sorted(n for n in os.listdir(self.bdir) if n.startswith("chbk_") and n.endswith(suffix))

    def clone(self, src, days_ago, mode):
        """A copy of a real backup under an older name and time (manifest rewritten to match)."""
        name = time.strftime("chbk_%Y%m%d_%H%M%S_", time.gmtime(time.time() - days_ago * 86400)) + mode
        shutil.copytree(os.path.join(self.bdir, src), os.path.join(self.bdir, name))
        path = os.path.join(self.bdir, name, "manifest.json")
        with open(path) as fh:
            m = json.load(fh)
        m["name"] = name
        m["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(name[5:20], "%Y%m%d_%H%M%S"))
        for t in m["tables"]:
            for p in t.get("partitions", []):
                p["in"] = name
        with open(path, "w") as fh:
            json.dump(m, fh)
        return name

    def truncate_a_data_file(self, name):
        d = os.path.join(self.bdir, name, "data", "zakaz", "sales")
        f = os.path.join(d, sorted(os.listdir(d))[0])
        with open(f, "r+b") as fh:
            fh.truncate(10)
        return os.path.relpath(f, self.bdir)

    def test_a_partition_written_to_in_bursts_is_dumped_once_it_is_still(self):
        # Jobs write to the run log while backup_full runs (qtickets every 15 minutes, 02:30 too):
        # a partition that changes for ~3 s must not fail the backup; it is dumped again until one
        # dump saw it still.
        ch("CREATE TABLE %s.live (d Date, id UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY id"
           % self.db)
        stop = threading.Event()

        def writer():
            n = 0
            t_end = time.time() + 3.5
            while time.time() < t_end and not stop.is_set():
                n += 1
                ch("INSERT INTO %s.live VALUES ('2026-11-01', %d)" % (self.db, n))
        t = threading.Thread(target=writer)
        t.start()
        try:
            time.sleep(0.2)
            self.backup("full", "--to", self.bdir, expect=0)
        finally:
            stop.set()
            t.join()
        full = self.names("_full")[-1]
        with open(os.path.join(self.bdir, full, "manifest.json")) as fh:
            m = json.load(fh)
        live = [x for x in m["tables"] if x.get("name", "").endswith("live") or x.get("table", "").endswith("live")]
        self.assertTrue(live, m["tables"][:2])
        self.backup("verify", "--dir", self.bdir, "--quick", expect=0)

    def test_stale_lock_with_a_reused_pid(self):
        self.backup("full", "--to", self.bdir, expect=0)
        # a backup killed mid-way: its folder without a manifest, and its lock naming a pid that is
        # alive again, as someone else (here: this test's own process)
        dead = time.strftime("chbk_%Y%m%d_%H%M%S_incr", time.gmtime(time.time() - 600))
        os.makedirs(os.path.join(self.bdir, dead, "data"))
        lock = os.path.join(self.bdir, ".zhost-backup.lock")
        with open(lock, "w") as fh:
            fh.write("%d %s\n" % (os.getpid(), dead))
        rep = json.loads(self.zhost("backup", "verify", "--dir", self.bdir, "--json").stdout)
        self.assertEqual({b["name"]: b["status"] for b in rep["backups"]}[dead], "incomplete")
        time.sleep(1.1)
        self.backup("incr", "--to", self.bdir, expect=0)
        self.assertEqual(len(self.names("_incr")), 2)
        self.assertFalse(os.path.exists(lock))
        self.backup("prune", "--dir", self.bdir, "--dry-run", expect=0)

        # a live holder still refuses a second backup and prune
        with open(lock, "w") as fh:
            fh.write("%d %s\n" % (os.getpid(), dead))
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = self.backup("full", "--to", self.bdir, expect=1)
            self.assertIn("another backup command is running", r.stderr)
            r = self.backup("prune", "--dir", self.bdir, expect=1)
            self.assertIn("another backup command is running", r.stderr)
            rep = json.loads(self.zhost("backup", "verify", "--dir", self.bdir, "--json").stdout)
            self.assertEqual({b["name"]: b["status"] for b in rep["backups"]}[dead], "in_progress")

    def test_prune_dry_run_takes_no_lock(self):
        # The runbook's `zhost backup prune --dry-run` is run by an operator of the service's group, who
        # cannot create the lock file in the service's folder; it deletes nothing, so it needs no lock,
        # and a backup running meanwhile (a live lock) is left alone: listed as kept, its lock in place.
        self.backup("full", "--to", self.bdir, expect=0)
        running = time.strftime("chbk_%Y%m%d_%H%M%S_incr", time.gmtime(time.time() - 2 * 86400))
        os.makedirs(os.path.join(self.bdir, running, "data"))
        lock = os.path.join(self.bdir, ".zhost-backup.lock")
        with open(lock, "w") as fh:
            fh.write("%d %s\n" % (os.getpid(), running))
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = self.backup("prune", "--dir", self.bdir, "--dry-run", "--keep-incr-days", "0", expect=0)
            self.assertIn("[dry run]", r.stdout)
            self.assertNotIn(running, r.stdout)
            self.assertTrue(os.path.exists(lock))
        if os.getuid() == 0:
            # as a member of the folder's group who may not write it (root ignores modes: drop to nobody)
            os.unlink(lock)
            gid = 4242
            for root, dirs, files in os.walk(self.bdir):
                os.chown(root, 0, gid)
                os.chmod(root, 0o750)
                for f in files:
                    os.chown(os.path.join(root, f), 0, gid)
                    os.chmod(os.path.join(root, f), 0o640)
            os.chmod(self.tmp, 0o755)
            os.chmod(self.secrets, 0o755)
            env = dict(self.env)
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=%d" % gid, "--clear-groups", ZHOST, "backup",
                                "prune", "--dir", self.bdir, "--dry-run", "--no-record", "--secrets", self.secrets],
                               env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("[dry run]", r.stdout)

    def test_a_view_that_cannot_be_made_is_a_warning_not_a_failed_restore(self):
        # A view of bi reads a database outside the backup (gone on a new server): the data restores and
        # is compared; the view is reported, and the other views are made.
        ext = self.db + "_ext"
        self.addCleanup(ch, "DROP DATABASE IF EXISTS " + ext)
        ch("CREATE DATABASE " + ext)
        ch("CREATE TABLE %s.t (x UInt8) ENGINE = Memory" % ext)
        ch("CREATE VIEW %s.v_outside AS SELECT x FROM %s.t" % (self.bi, ext))
        ch("CREATE VIEW %s.v_sales AS SELECT id FROM %s.sales" % (self.bi, self.db))
        self.backup("full", "--to", self.bdir, expect=0)
        ch("DROP DATABASE " + ext)
        into = self.db + "_rv"
        self.addCleanup(ch, "DROP DATABASE IF EXISTS " + into)
        self.addCleanup(ch, "DROP DATABASE IF EXISTS " + into + "_bi")
        r = self.backup("restore", self.names("_full")[0], "--dir", self.bdir, "--into", into, expect=0)
        self.assertRegex(r.stdout, r"warning: view %s_bi\.v_outside could not be made: .*%s" % (into, ext))
        self.assertRegex(r.stdout, r"restore: 1 tables, 3000 rows, 0 mismatches, 1 view warning,")
        self.assertEqual(ch("SELECT count() FROM %s_bi.v_sales" % into).strip(), "3000")

    def test_incremental_refuses_a_damaged_base(self):
        self.backup("full", "--to", self.bdir, expect=0)
        full = self.names("_full")[0]
        bad = self.truncate_a_data_file(full)
        ch("INSERT INTO %s.sales VALUES ('2024-05-01', 99999, 'new')" % self.db)
        time.sleep(1.1)
        r = self.backup("incr", "--to", self.bdir, expect=1)
        self.assertIn(bad, r.stderr)
        self.assertIn("zhost backup full", r.stderr)
        self.assertEqual(self.names("_incr"), [])
        # a missing file too
        os.unlink(os.path.join(self.bdir, bad))
        r = self.backup("incr", "--to", self.bdir, expect=1)
        self.assertIn(bad + ": missing", r.stderr)
        # a new full clears it
        time.sleep(1.1)
        self.backup("full", "--to", self.bdir, expect=0)
        time.sleep(1.1)
        self.backup("incr", "--to", self.bdir, expect=0)

    def test_prune_keeps_the_newest_sound_full(self):
        self.backup("full", "--to", self.bdir, expect=0)
        src = self.names("_full")[0]
        good = self.clone(src, 30, "full")
        newer = self.clone(src, 1, "full")
        shutil.rmtree(os.path.join(self.bdir, src))
        self.truncate_a_data_file(newer)
        r = self.backup("prune", "--dir", self.bdir, expect=0)
        self.assertEqual(self.names(), [good, newer], r.stdout)
        # a backup whose manifest is damaged is not an unfinished folder: kept by its age like the others
        damaged = self.clone(good, 2, "full")
        with open(os.path.join(self.bdir, damaged, "manifest.json"), "w") as fh:
            fh.write('{"format": "zhost-backup/1", "name": ')
        r = self.backup("prune", "--dir", self.bdir, expect=0)
        self.assertIn(damaged, self.names(), r.stdout)


if __name__ == "__main__":
    unittest.main()
