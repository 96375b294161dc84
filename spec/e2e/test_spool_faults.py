"""End-to-end tests of the spool under faults: a batch ClickHouse rejects for its content, and a
spool that cannot take a batch. Real binary, real ClickHouse."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402


class PoisonBatch(zhtest.ZhostCase):
    """A spooled batch with one row ClickHouse cannot take (a string too long for its FixedString)
    must not block the spool: the row is set aside with the error, every other row is delivered."""

    def setUp(self):
        super().setUp()
        zhtest.ch("CREATE TABLE %s.narrow (id UInt32, code FixedString(2), _ver UInt64) "
                  "ENGINE = MergeTree ORDER BY id" % self.db)
        os.makedirs(self.spool, exist_ok=True)

    def spool_file(self, name, rows):
        with open(os.path.join(self.spool, name), "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))

    def test_a_poison_row_is_set_aside_and_the_rest_delivered(self):
        rows = [{"id": i, "code": "ok", "_ver": 1} for i in range(1, 11)]
        rows[4]["code"] = "far too long for two bytes"
        self.spool_file("%s.narrow~run1.jsonl" % self.db, rows)
        # a later file of the same table must not wait behind the poison one
        self.spool_file("%s.narrow~run2.jsonl" % self.db, [{"id": 11, "code": "ok", "_ver": 1}])
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("ClickHouse error 131", r.stderr)
        self.assertIn("%s.narrow" % self.db, r.stderr)
        self.assertIn("1 rows rejected", r.stderr)
        self.assertIn("quarantine", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM narrow"), "10")
        self.assertEqual(self.scalar("SELECT groupArray(id) FROM (SELECT id FROM narrow ORDER BY id)"),
                         "[1,2,3,4,6,7,8,9,10,11]")
        # the rejected row is kept, with the reason, outside what replay reads
        qdir = os.path.join(self.spool, "quarantine")
        kept = [n for n in os.listdir(qdir) if n.endswith(".jsonl")]
        self.assertEqual(len(kept), 1, os.listdir(qdir))
        with open(os.path.join(qdir, kept[0])) as fh:
            self.assertEqual([json.loads(l)["id"] for l in fh], [5])
        with open(os.path.join(qdir, kept[0][:-len(".jsonl")] + ".errors")) as fh:
            self.assertIn("ClickHouse error 131", fh.read())
        # scripts (the alerts job) see the quarantine too
        probe = self.script("probe.lua", "local s = ch.spool_status()\nprint('quarantined', s.quarantined_rows, s.files)\n")
        pr = self.zhost("run", probe, "--dry-run")
        self.assertIn("quarantined\t1\t0", pr.stdout, pr.stderr)
        st = self.zhost("spool", "status")
        self.assertIn("total: 0 files", st.stdout)
        self.assertIn("quarantine: 1 rows", st.stdout)
        # a second replay has nothing left to do and succeeds; nothing is doubled
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM narrow"), "10")

    def test_an_outage_is_not_mistaken_for_a_poison_row(self):
        self.spool_file("%s.narrow~run1.jsonl" % self.db, [{"id": 1, "code": "ok", "_ver": 1}])
        r = self.zhost("spool", "replay", env={"CLICKHOUSE_URL": "http://127.0.0.1:9", "ZHOST_CH_ATTEMPTS": "1"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("unreachable", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.spool, "quarantine")))
        self.assertIn("1 rows", self.zhost("spool", "status").stdout)

    def test_a_missing_table_blocks_rather_than_quarantines(self):
        self.spool_file("%s.gone~run1.jsonl" % self.db, [{"id": 1, "_ver": 1}])
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ClickHouse error 60", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.spool, "quarantine")))


class SpoolRefuses(zhtest.ZhostCase):
    """A batch neither ClickHouse nor the spool takes is lost: the run must say so, not claim the
    rows wait in the spool."""

    def test_rows_the_spool_refuses_are_reported_lost(self):
        zhtest.ch("CREATE TABLE %s.narrow (id UInt32, code FixedString(2), _ver UInt64) "
                  "ENGINE = MergeTree ORDER BY id" % self.db)
        path = self.script("lost.lua", """
            local s = assert(ch.sink("narrow"))
            for i = 1, 3 do s:add{id = i, code = "too long for two bytes", _ver = 1} end
        """)
        r = self.zhost("run", path, env={"ZHOST_SPOOL_MAX_BYTES": "10"})
        self.assertEqual(r.returncode, 1, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("3 rows LOST", last)
        self.assertNotIn("spooled", last)
        self.assertIn("ClickHouse error 131", last)
        self.assertIn("is full", last)
        self.assertIn("3 rows LOST", self.runs()[-1]["message"])


    def test_a_full_disk_leaves_no_partial_batch_in_the_spool(self):
        # A 16 KiB tmpfs stands in for a full disk; mounting needs root, as in the CI container.
        tiny = os.path.join(self.tmp, "tiny")
        os.makedirs(tiny)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", tiny], capture_output=True).returncode:
            self.skipTest("cannot mount a tmpfs here")
        try:
            self.fill_tiny_spool(tiny)
        finally:
            # before tearDown removes self.tmp (cleanups run after it: the mount point was left behind)
            subprocess.run(["umount", "-l", tiny], capture_output=True)

    def fill_tiny_spool(self, tiny):
        zhtest.ch("CREATE TABLE %s.narrow (id UInt32, code FixedString(2), _ver UInt64) "
                  "ENGINE = MergeTree ORDER BY id" % self.db)
        path = self.script("big.lua", """
            local s = assert(ch.sink("narrow", {max_rows = 100000}))
            for i = 1, 500 do s:add{id = i, code = string.rep("x", 100), _ver = 1} end
        """)
        r = self.zhost("run", path, env={"ZHOST_SPOOL": tiny, "ZHOST_CH_ATTEMPTS": "1"})
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("500 rows LOST", r.stderr)
        self.assertIn("No space left on device", r.stderr)
        spooled = [n for n in os.listdir(tiny) if n.endswith(".jsonl") and "narrow" in n]
        for n in spooled:
            self.assertEqual(os.path.getsize(os.path.join(tiny, n)), 0, "a partial batch was left in " + n)


if __name__ == "__main__":
    unittest.main()
