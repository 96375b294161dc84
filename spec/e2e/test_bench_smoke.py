"""Smoke test of the ingest benchmark's jobs (bench/README.md), so they cannot rot between benchmark
runs: bench/ingest.lua (both decoders) and the Python contender bench/py_ingest.py load a small
bench/pagefake.py into ClickHouse, and each table then holds exactly the expected basket rows, every
basket id once. Only correctness: nothing is timed here, and the benchmark itself is not run."""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

BENCH = os.path.join(zhtest.SOURCE_DIR, "bench")
ORDERS = 1000  # 20 pages of 50 orders: every one of the fake's 20 page templates once


class PageFake:
    """bench/pagefake.py on a free port; .url is its base URL."""

    def __init__(self, orders):
        self.proc = subprocess.Popen([sys.executable, os.path.join(BENCH, "pagefake.py"), "--orders", str(orders),
                                      "--port", "0", "--workers", "4"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"^READY (http://\S+)$", line.strip())
        if not m:
            self.stop()
            raise RuntimeError("bench/pagefake.py did not start: %r" % line)
        self.url = m.group(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # its SIGTERM handler stops the pre-forked workers too
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.stdout.close()


class BenchJobs(zhtest.ZhostCase):
    @classmethod
    def setUpClass(cls):
        with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
            subprocess.run([sys.executable, os.path.join(BENCH, "pagefake.py"), "--orders", str(ORDERS),
                            "--expected", f.name], check=True, timeout=60)
            cls.expected = json.load(f)

    def setUp(self):
        super().setUp()
        self.fake = PageFake(ORDERS)

    def tearDown(self):
        self.fake.stop()
        super().tearDown()

    def table(self, name):
        """A table with the bench's layout (as bench/ingest.py makes it) in this test's database."""
        full = "%s.%s" % (self.db, name)
        zhtest.ch("CREATE TABLE %s AS %s.stg_qtickets_api_baskets_raw ENGINE = MergeTree ORDER BY basket_id"
                  % (full, self.db))
        return full

    def assert_loaded(self, table):
        rows = self.expected["rows"]
        self.assertGreater(rows, ORDERS)  # 1-4 baskets per order
        got = zhtest.ch_value("SELECT count(), uniqExact(basket_id), uniqExact(order_id) FROM %s" % table)
        self.assertEqual([int(x) for x in got.split()], [rows, rows, ORDERS], table)

    def test_zhost_job_both_decoders(self):
        # --batch 100: many INSERTs, so workers wait on the sink's backpressure in the middle of
        # an order; the job's own counters must still add up (a `rows = rows + f()` whose f
        # waits loses the other workers' additions).
        # --map: the row template (sink:template, the default with views) and the Lua mapping
        # must load identical tables.
        dumps = {}
        for decode, mapping, batch in (("view", "template", "10000"), ("view", "lua", "10000"),
                                       ("cjson", "lua", "10000"), ("view", "template", "100"),
                                       ("view", "lua", "100")):
            with self.subTest(decode=decode, mapping=mapping, batch=batch):
                table = self.table("baskets_%s_%s_%s" % (decode, mapping, batch))
                r = self.zhost("run", os.path.join(BENCH, "ingest.lua"), "--base", self.fake.url, "--table", table,
                               "--concurrency", "4", "--decode", decode, "--map", mapping, "--batch", batch,
                               timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assert_loaded(table)
                run = self.runs("bench_ingest")[-1]
                self.assertEqual((run["status"], int(run["rows_processed"])), ("success", self.expected["rows"]))
                self.assertEqual(run["message"], "%d pages, %d orders, %d basket rows (%s, %s)" % (
                    self.expected["pages"], ORDERS, self.expected["rows"], decode, mapping))
                dumps[(decode, mapping, batch)] = zhtest.ch(
                    "SELECT basket_id, order_id, event_id, show_id, price, original_price, quantity, deleted_at, "
                    "refunded_at, refunded_amount, sale_ts FROM %s ORDER BY basket_id FORMAT JSONEachRow" % table)
        first = dumps[("view", "template", "10000")]
        self.assertGreater(len(first.splitlines()), ORDERS)
        for key, dump in dumps.items():
            self.assertEqual(dump.splitlines(), first.splitlines(), key)

    def test_python_contender(self):
        table = self.table("baskets_py")
        r = subprocess.run([sys.executable, os.path.join(BENCH, "py_ingest.py"), "--base", self.fake.url,
                            "--ch", zhtest.CH_URL, "--table", table], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        counts = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual((counts["pages"], counts["orders"], counts["rows"]),
                         (self.expected["pages"], ORDERS, self.expected["rows"]))
        self.assert_loaded(table)

    def test_runner_rounds_and_paired_ratio(self):
        """bench/ingest.py itself, at 1,000 orders and two rounds: every contender's runs verified,
        the tables written, and zhost ÷ floor given per round as well as fastest against fastest."""
        table = "%s.baskets_runner" % self.db
        with tempfile.TemporaryDirectory() as work:
            out = os.path.join(work, "results.md")
            env = dict(self.env)  # this test's databases and spool, for the runs the runner makes
            r = subprocess.run([sys.executable, os.path.join(BENCH, "ingest.py"), "--ch", zhtest.CH_URL,
                                "--zhost", zhtest.ZHOST, "--sizes", str(ORDERS), "--scenarios", "cpu",
                                "--repeat", "2", "--table", table, "--schema-db", self.db, "--out", out],
                               capture_output=True, text=True, timeout=300, env=env)
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            self.assertEqual(r.stdout.count("-- round "), 2, r.stdout)
            for who in ("zhost", "python", "floor"):
                self.assertEqual(len(re.findall(r"^   %s +.* ok$" % who, r.stdout, re.M)), 2, (who, r.stdout))
            self.assertNotIn("FAILED", r.stdout + r.stderr)
            with open(out) as f:
                text = f.read()
        self.assertIn("| same round: median (range) |", text)
        ratio = re.search(r"^\| CPU-bound \| 1,000 \| .* \| ([0-9.]+)× \| ([0-9.]+)× \(([0-9.]+)–([0-9.]+)\) \|$",
                          text, re.M)
        self.assertIsNotNone(ratio, text)
        median, lo, hi = (float(ratio.group(i)) for i in (2, 3, 4))
        self.assertTrue(lo <= median <= hi, text)
        self.assertEqual(len(re.findall(r"^\| CPU-bound \| 1,000 \| [0-9,]+ \| (zhost \(concurrency 8\)|python|floor) \| [0-9]",
                                        text, re.M)), 3, text)
        self.assert_loaded(table)  # the last run's rows: the floor's, every basket once


if __name__ == "__main__":
    unittest.main()
