"""End-to-end tests of `zhost backup` against a real ClickHouse (18.16 on the dev machines).

Env: ZHOST_BIN (the binary; ctest sets it), ZHOST_TEST_CH_URL (a server to use; without it the
test starts its own with tools/clickhouse-local.sh on a free loopback port and stops it after).

What it does, with its own zakaz_bk<rand> / bi_bk<rand> databases:
  * loads a ReplacingMergeTree with monthly partitions (Decimal, Nullable, Array, awkward
    strings), an unpartitioned MergeTree, a TinyLog, a materialized view, views on views and a bi
    view over zakaz, plus the run tables (meta_job_runs_raw, backup_runs);
  * full backup -> restore into scratch databases: every table's row count, content checksum and
    (for the main table) every row equal the source; views answer from the scratch databases;
  * changes data (a new partition, a changed partition, rows deleted by a new version, a merged
    but unchanged partition) -> incremental holds only the changed partitions -> restore equals
    the source again, and the full still restores to the old state;
  * verify: OK on the good set; a corrupted file, a missing file, a half-written backup, a broken
    chain and a stale backup each fail it and name the culprit (text and --json);
  * prune keeps fulls 28 d / incrementals 7 d and the base of every kept incremental;
  * runs are recorded (success and failure) in meta_job_runs_raw and backup_runs.
"""
import glob
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZHOST_BIN") or os.path.join(ROOT, "build", "zhost")
SUFFIX = "%06d" % random.randrange(10 ** 6)
DB = "zakaz_bk" + SUFFIX
BI = "bi_bk" + SUFFIX


class CHError(Exception):
    pass


def free_port():
    for _ in range(50):
        port = random.randrange(18600, 19600)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def stop_server(server_dir):
    """18.16 writes no pid file when it is not a daemon, so the helper's `stop` may find nothing:
    end the server we started, found by its own config path, and only that one."""
    mark = ("--config-file=%s/config.xml" % server_dir).encode()
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        try:
            os.kill(int(pid), 15)
            for _ in range(120):
                os.kill(int(pid), 0)
                time.sleep(0.25)
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass


class BackupTest(unittest.TestCase):
    url = None
    server_dir = None

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(BIN):
            raise unittest.SkipTest("no zhost binary at %s (set ZHOST_BIN)" % BIN)
        cls.url = os.environ.get("ZHOST_TEST_CH_URL")
        if not cls.url:
            if not os.path.exists("/usr/sbin/clickhouse-server"):
                raise unittest.SkipTest("no ClickHouse: set ZHOST_TEST_CH_URL or install clickhouse-server")
            cls.server_dir = tempfile.mkdtemp(prefix="zh-bk-ch-")
            port = free_port()
            out = subprocess.run([os.path.join(ROOT, "tools", "clickhouse-local.sh"), "start", cls.server_dir, str(port)],
                                 capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise RuntimeError("cannot start ClickHouse: " + out.stderr)
            cls.url = out.stdout.strip().splitlines()[-1]
        cls.tmp = tempfile.mkdtemp(prefix="zh-bk-")
        cls.bdir = os.path.join(cls.tmp, "backups")
        cls.secrets = os.path.join(cls.tmp, "secrets")
        os.makedirs(cls.secrets)
        cls.scratch = []
        cls.create_schema()

    @classmethod
    def tearDownClass(cls):
        try:
            if os.environ.get("ZHOST_TEST_KEEP_DB") != "1":
                for db in [DB, BI] + cls.scratch:
                    try:
                        cls.ch("DROP DATABASE IF EXISTS " + db)
                    except Exception:
                        pass
        finally:
            if cls.server_dir:
                subprocess.run([os.path.join(ROOT, "tools", "clickhouse-local.sh"), "stop", cls.server_dir], timeout=120)
                stop_server(cls.server_dir)
                shutil.rmtree(cls.server_dir, ignore_errors=True)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ----

    @classmethod
    def ch(cls, sql):
        req = urllib.request.Request(cls.url.rstrip("/") + "/?wait_end_of_query=1", data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise CHError(e.read().decode("utf-8", "replace")[:1000] + "\n--- " + sql[:500])

    @classmethod
    def rows(cls, sql):
        out = cls.ch(sql + " FORMAT TSV")
        return [tuple(line.split("\t")) for line in out.split("\n") if line]

    def zhost(self, *args, env=None, expect=None):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith(("CLICKHOUSE_", "CH_", "ZHOST_BACKUP", "BACKUP_")):
                del e[k]
        e.update({"CLICKHOUSE_URL": self.url, "CLICKHOUSE_DB": DB, "CLICKHOUSE_BI_DB": BI,
                  "ZHOST_SECRETS": self.secrets, "ZHOST_LOG_LEVEL": "warn", "ZHOST_CH_ATTEMPTS": "2"})
        if env:
            e.update(env)
        p = subprocess.run([BIN, "backup"] + list(args), capture_output=True, text=True, env=e, cwd=self.tmp, timeout=300)
        if expect is not None:
            self.assertEqual(p.returncode, expect, "zhost backup %s\nstdout:\n%s\nstderr:\n%s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def backups(self, d=None):
        return sorted(n for n in os.listdir(d or self.bdir) if n.startswith("chbk_"))

    def manifest(self, name, d=None):
        with open(os.path.join(d or self.bdir, name, "manifest.json")) as f:
            return json.load(f)

    DATA_TABLES = [(DB, "sales"), (DB, "events"), (DB, "mv_city"), (BI, "dim_city")]

    def content(self, db, table):
        """(rows, checksum) computed independently of zhost: count and an order-free hash of rows."""
        r = self.rows("SELECT count(), groupBitXor(cityHash64(toString(tuple(*)))) FROM %s.%s" % (db, table))[0]
        return int(r[0]), r[1]

    def snapshot(self, zdb=DB, bdb=BI):
        out = {}
        for db, t in self.DATA_TABLES:
            d = zdb if db == DB else bdb
            out[t] = self.content(d, t)
        out["sales_rows"] = self.ch("SELECT * FROM %s.sales ORDER BY d, id, _ver FORMAT TSV" % zdb)
        out["v_sales_top"] = self.ch("SELECT * FROM %s.a_sales_top ORDER BY city FORMAT TSV" % zdb)
        out["bi_v_daily"] = self.ch("SELECT count(), sum(revenue) FROM %s.v_daily FORMAT TSV" % bdb)
        return out

    def restore(self, name, tag, *extra, expect=0):
        into, bi_into = "%s_r%s" % (DB, tag), "%s_r%s" % (BI, tag)
        self.__class__.scratch += [into, bi_into]
        p = self.zhost("restore", name, "--dir", self.bdir, "--into", into, "--bi-into", bi_into, *extra, expect=expect)
        return into, bi_into, p

    @classmethod
    def create_schema(cls):
        for db in (DB, BI):
            cls.ch("CREATE DATABASE IF NOT EXISTS " + db)
        cls.ch("""CREATE TABLE {db}.sales (d Date, id UInt32, city String, revenue Decimal(12,2), tickets Nullable(UInt32),
                  tags Array(String), note String, is_deleted UInt8, _ver UInt64)
                  ENGINE = ReplacingMergeTree(_ver) PARTITION BY toYYYYMM(d) ORDER BY (d, id)""".format(db=DB))
        cls.ch("CREATE TABLE {db}.events (event_id String, name String, ts DateTime) ENGINE = MergeTree ORDER BY event_id".format(db=DB))
        cls.ch("""CREATE MATERIALIZED VIEW {db}.mv_city ENGINE = SummingMergeTree ORDER BY city
                  AS SELECT city, count() AS n FROM {db}.sales GROUP BY city""".format(db=DB))
        cls.ch("""CREATE VIEW {db}.v_sales AS SELECT d, city, sum(revenue) AS revenue, count() AS orders
                  FROM (SELECT d, id, argMax(city, _ver) AS city, argMax(revenue, _ver) AS revenue, argMax(is_deleted, _ver) AS del
                        FROM {db}.sales GROUP BY d, id) WHERE del = 0 GROUP BY d, city""".format(db=DB))
        # named to sort before the view it reads: restore must order views by dependency
        cls.ch("CREATE VIEW {db}.a_sales_top AS SELECT city, sum(revenue) AS revenue FROM {db}.v_sales GROUP BY city".format(db=DB))
        cls.ch("CREATE TABLE {bi}.dim_city (alias String, city String) ENGINE = TinyLog".format(bi=BI))
        cls.ch("CREATE VIEW {bi}.v_daily AS SELECT d, revenue FROM {db}.v_sales".format(bi=BI, db=DB))
        cls.ch("""CREATE TABLE {db}.meta_job_runs_raw (job String, run_id String, started_at DateTime('Europe/Moscow'),
                  finished_at Nullable(DateTime('Europe/Moscow')), status String, rows_processed UInt64, message String,
                  metrics String, host String, _ver UInt64, _loaded_at DateTime MATERIALIZED now())
                  ENGINE = ReplacingMergeTree(_ver) PARTITION BY toYYYYMM(started_at) ORDER BY run_id""".format(db=DB))
        cls.ch("""CREATE TABLE {db}.backup_runs (ts DateTime('Europe/Moscow'), backup_name String, mode String,
                  base_backup String, target String, status String, bytes UInt64, duration_ms UInt64, details String,
                  error_msg String, _ver UInt64, _loaded_at DateTime MATERIALIZED now())
                  ENGINE = ReplacingMergeTree(_ver) PARTITION BY toYYYYMM(ts) ORDER BY backup_name""".format(db=DB))
        # keep every state row of a run (running, then the final one) for the assertions below
        cls.ch("SYSTEM STOP MERGES {db}.meta_job_runs_raw".format(db=DB))
        cls.ch("SYSTEM STOP MERGES {db}.backup_runs".format(db=DB))
        cls.ch("""INSERT INTO {db}.sales SELECT toDate('2024-01-01') + number % 90, number,
                  concat('city', toString(number % 7)), number * 1.25, if(number % 5 = 0, NULL, number % 13),
                  arrayMap(x -> toString(x), range(number % 3)), 'tab\\there\\nnewline \\'q\\' \\\\ юникод', 0, 1
                  FROM numbers(5000)""".format(db=DB))
        cls.ch("INSERT INTO {db}.events VALUES ('e1', 'Concert', '2024-01-05 19:00:00'), ('e2', 'Play', '2024-02-10 18:30:00')".format(db=DB))
        cls.ch("INSERT INTO {bi}.dim_city VALUES ('msk', 'Москва'), ('spb', 'Санкт-Петербург')".format(bi=BI))

    # ---- the tests, in order (unittest sorts by name) ----

    def test_1_full_backup_restores_to_the_source(self):
        self.__class__.snap_full = self.snapshot()
        p = self.zhost("full", "--to", self.bdir, expect=0)
        names = self.backups()
        self.assertEqual(len(names), 1, p.stdout)
        name = names[0]
        self.assertRegex(name, r"^chbk_\d{8}_\d{6}_full$")
        self.assertIn(name, p.stdout)
        self.__class__.full = name
        m = self.manifest(name)
        self.assertEqual(m["mode"], "full")
        self.assertIsNone(m["base"])
        self.assertTrue(m["server_version"])
        # every file's sha256 and size as recorded
        self.assertGreater(len(m["files"]), 8)
        for f in m["files"]:
            with open(os.path.join(self.bdir, name, f["path"]), "rb") as fh:
                data = fh.read()
            self.assertEqual(hashlib.sha256(data).hexdigest(), f["sha256"], f["path"])
            self.assertEqual(len(data), f["bytes"], f["path"])
        tables = {(t["database"], t["name"]): t for t in m["tables"]}
        sales = tables[(DB, "sales")]
        self.assertEqual(sales["rows"], self.snap_full["sales"][0])
        self.assertEqual(sales["checksum"], self.snap_full["sales"][1])
        self.assertEqual(sorted(p["id"] for p in sales["partitions"]), ["202401", "202402", "202403"])
        self.assertEqual(tables[(DB, "events")]["partitions"][0]["id"], "all")
        self.assertEqual(tables[(BI, "dim_city")]["rows"], 2)
        self.assertIn("CREATE VIEW", tables[(BI, "v_daily")]["create"])
        # tables before views, and a view after the view it reads
        order = [(t["database"], t["name"]) for t in m["tables"]]
        kinds = [t["kind"] for t in m["tables"]]
        self.assertLess(max(i for i, k in enumerate(kinds) if k == "table"), min(i for i, k in enumerate(kinds) if k == "view"))
        self.assertLess(order.index((DB, "v_sales")), order.index((DB, "a_sales_top")))
        self.assertLess(order.index((DB, "v_sales")), order.index((BI, "v_daily")))

        into, bi_into, p = self.restore(name, "full")
        self.assertIn("0 mismatches", p.stdout)
        self.assertEqual(self.snapshot(into, bi_into), self.snap_full)
        # the restored bi view reads the restored zakaz, not the live one
        create = self.rows("SELECT create_table_query FROM system.tables WHERE database = '%s' AND name = 'v_daily'" % bi_into)[0][0]
        self.assertIn(into + ".", create)
        self.assertNotIn(DB + ".v_sales", create)

        # the run is recorded: running then success, with duration and bytes
        runs = self.rows("SELECT status, metrics, message FROM %s.meta_job_runs_raw WHERE job = 'backup' ORDER BY _ver" % DB)
        self.assertEqual([r[0] for r in runs], ["running", "success"])
        metrics = json.loads(runs[-1][1].replace("\\\\", "\\"))
        self.assertGreater(metrics["duration"], 0)
        self.assertEqual(metrics["bytes"], sum(f["bytes"] for f in m["files"]))
        br = self.rows("SELECT status, mode, bytes, target FROM %s.backup_runs WHERE backup_name = '%s' ORDER BY _ver" % (DB, name))
        self.assertEqual([r[0] for r in br], ["running", "ok"])
        self.assertEqual(br[-1][1], "full")
        self.assertEqual(int(br[-1][2]), sum(f["bytes"] for f in m["files"]))
        self.assertEqual(br[-1][3], "local:" + self.bdir)

    def test_2_incremental_holds_changes_and_restores(self):
        full = self.full
        time.sleep(1.1)  # names are per second
        # a new partition (May), a changed one (January: new rows and rows deleted by a new version),
        # February untouched, March merged without a change of content (OPTIMIZE on rows without duplicates)
        self.ch("INSERT INTO {db}.sales VALUES ('2024-05-03', 90001, 'city1', 10.50, 2, ['x'], 'new month', 0, 1)".format(db=DB))
        self.ch("INSERT INTO {db}.sales VALUES ('2024-01-02', 90002, 'city2', 20.00, NULL, [], 'late order', 0, 1)".format(db=DB))
        self.ch("""INSERT INTO {db}.sales SELECT d, id, city, revenue, tickets, tags, note, 1, 2 FROM {db}.sales
                   WHERE toYYYYMM(d) = 202401 AND id % 10 = 1""".format(db=DB))
        self.ch("INSERT INTO {db}.sales SELECT * FROM {db}.sales WHERE 0".format(db=DB))
        self.ch("INSERT INTO {db}.events VALUES ('e3', 'Opera', '2024-03-01 19:00:00')".format(db=DB))
        parts_before = self.rows("SELECT name FROM system.parts WHERE active AND database = '%s' AND table = 'sales' AND partition_id = '202403'" % DB)
        self.ch("OPTIMIZE TABLE {db}.sales PARTITION 202403 FINAL".format(db=DB))
        parts_after = self.rows("SELECT name FROM system.parts WHERE active AND database = '%s' AND table = 'sales' AND partition_id = '202403'" % DB)
        self.assertNotEqual(parts_before, parts_after)  # the merge renamed the part
        snap = self.snapshot()
        self.assertNotEqual(snap["sales"], self.snap_full["sales"])
        self.__class__.snap_incr = snap

        p = self.zhost("incr", "--to", self.bdir, expect=0)
        incr = [n for n in self.backups() if n.endswith("_incr")]
        self.assertEqual(len(incr), 1, p.stdout)
        incr = incr[0]
        self.__class__.incr = incr
        m = self.manifest(incr)
        self.assertEqual(m["mode"], "incr")
        self.assertEqual(m["base"], full)
        sales = [t for t in m["tables"] if t["database"] == DB and t["name"] == "sales"][0]
        where = {p["id"]: p["in"] for p in sales["partitions"]}
        self.assertEqual(where, {"202401": incr, "202402": full, "202403": full, "202405": incr})
        self.assertEqual(sales["rows"], snap["sales"][0])
        self.assertEqual(sales["checksum"], snap["sales"][1])
        data = sorted(os.path.relpath(f, os.path.join(self.bdir, incr)) for f in glob.glob(os.path.join(self.bdir, incr, "data", "*", "*", "*")))
        self.assertEqual([d for d in data if "/sales/" in d], ["data/zakaz/sales/202401.native.gz", "data/zakaz/sales/202405.native.gz"])
        self.assertTrue(any("/events/" in d for d in data))
        self.assertFalse(any("dim_city" in d for d in data))  # unchanged TinyLog comes from the base

        into, bi_into, p = self.restore(incr, "incr")
        self.assertIn("0 mismatches", p.stdout)
        self.assertEqual(self.snapshot(into, bi_into), snap)
        # the full still restores the state it saw
        into, bi_into, p = self.restore(full, "full2")
        self.assertEqual(self.snapshot(into, bi_into), self.snap_full)

    def test_3_verify_names_the_broken_file(self):
        good = self.zhost("verify", "--dir", self.bdir, "--json", "--fresh-hours", "1000", "--full-hours", "1000", expect=0)
        rep = json.loads(good.stdout)
        self.assertTrue(rep["ok"])
        self.assertEqual([b["status"] for b in rep["backups"]], ["ok", "ok"])
        self.assertEqual(rep["newest"]["name"], self.incr)
        self.assertEqual(rep["newest_full"]["name"], self.full)

        def fresh_copy():
            d = tempfile.mkdtemp(dir=self.tmp)
            shutil.rmtree(d)
            shutil.copytree(self.bdir, d)
            return d

        # a corrupted data file in the incremental: one byte flipped, same size
        d = fresh_copy()
        f = os.path.join(d, self.incr, "data", "zakaz", "sales", "202405.native.gz")
        with open(f, "r+b") as fh:
            fh.seek(20)
            b = fh.read(1)
            fh.seek(20)
            fh.write(bytes([b[0] ^ 0xFF]))
        p = self.zhost("verify", "--dir", d, "--fresh-hours", "1000", "--full-hours", "1000", expect=1)
        self.assertIn(self.incr + "/data/zakaz/sales/202405.native.gz: sha256 mismatch", p.stdout)
        self.assertIn("202405.native.gz", p.stderr)
        p = self.zhost("verify", "--dir", d, "--json", "--fresh-hours", "1000", "--full-hours", "1000", expect=1)
        rep = json.loads(p.stdout)
        self.assertFalse(rep["ok"])
        bad = {b["name"]: b for b in rep["backups"]}
        self.assertEqual(bad[self.incr]["status"], "bad")
        self.assertEqual(bad[self.full]["status"], "ok")
        self.assertTrue(any("202405.native.gz" in x for x in bad[self.incr]["problems"]))
        # restoring from it fails too, naming the file
        self.__class__.scratch += [DB + "_rbad", BI + "_rbad"]
        p = self.zhost("restore", self.incr, "--dir", d, "--into", DB + "_rbad", "--bi-into", BI + "_rbad", expect=1)
        self.assertIn("202405.native.gz", p.stderr)

        # a missing schema file in the full: the full is bad and the incremental's chain is broken
        d = fresh_copy()
        os.unlink(os.path.join(d, self.full, "schema", "zakaz", "sales.sql"))
        p = self.zhost("verify", "--dir", d, "--fresh-hours", "1000", "--full-hours", "1000", expect=1)
        self.assertIn(self.full + "/schema/zakaz/sales.sql: missing", p.stdout)
        self.assertIn(self.incr + ": chain broken: its base " + self.full + " failed verification", p.stdout)

        # a full that is gone entirely
        d = fresh_copy()
        shutil.rmtree(os.path.join(d, self.full))
        p = self.zhost("verify", "--dir", d, "--fresh-hours", "1000", "--full-hours", "1000", expect=1)
        self.assertIn("chain broken: its base %s is missing" % self.full, p.stdout)

        # a half-written backup: data but no manifest
        d = fresh_copy()
        half = "chbk_20990101_000000_incr"
        shutil.copytree(os.path.join(d, self.incr), os.path.join(d, half))
        os.unlink(os.path.join(d, half, "manifest.json"))
        p = self.zhost("verify", "--dir", d, "--fresh-hours", "1000", "--full-hours", "1000", expect=1)
        self.assertIn(half + ": incomplete: no manifest.json", p.stdout)
        self.assertIn("`zhost backup prune` removes it 24 h after it started, or delete the folder", p.stdout)
        self.assertIn(half, p.stderr)

        # freshness: the newest full older than allowed
        time.sleep(1)
        p = self.zhost("verify", "--dir", self.bdir, "--fresh-hours", "1000", "--full-hours", "0.0001", expect=1)
        self.assertIn("the newest full backup %s is" % self.full, p.stdout)
        p = self.zhost("verify", "--dir", self.bdir, "--fresh-hours", "0.0001", "--full-hours", "1000", expect=1)
        self.assertIn("the newest backup %s is" % self.incr, p.stdout)
        # a failed verify is recorded for the alert rules
        st = self.rows("SELECT status FROM %s.meta_job_runs_raw WHERE job = 'backup_verify' ORDER BY _ver DESC LIMIT 1" % DB)
        self.assertEqual(st[0][0], "error")

    def test_4_prune_keeps_chains(self):
        d = os.path.join(self.tmp, "prune")
        os.makedirs(d)
        now = time.time()

        def stamp(days_ago, mode):
            return time.strftime("chbk_%Y%m%d_%H%M%S_", time.gmtime(now - days_ago * 86400)) + mode

        def clone(src, name, base=None):
            """A copy of a real backup under another name and time (manifest rewritten to match)."""
            shutil.copytree(os.path.join(self.bdir, src), os.path.join(d, name))
            path = os.path.join(d, name, "manifest.json")
            with open(path) as fh:
                m = json.load(fh)
            m["name"] = name
            m["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(name[5:20], "%Y%m%d_%H%M%S"))
            if base:
                m["base"] = base
            for t in m["tables"]:
                for p in t.get("partitions", []):
                    p["in"] = name if p["in"] == src else base
            with open(path, "w") as fh:
                json.dump(m, fh)
            return name

        old_full = clone(self.full, stamp(40, "full"))
        old_incr = clone(self.incr, stamp(39, "incr"), old_full)
        base_full = clone(self.full, stamp(35, "full"))             # old, but the base of a kept incr
        kept_incr = clone(self.incr, stamp(2, "incr"), base_full)
        stale_incr = clone(self.incr, stamp(10, "incr"), base_full)  # older than 7 d
        mid_full = clone(self.full, stamp(20, "full"))
        new_full = clone(self.full, stamp(0.5, "full"))
        new_incr = clone(self.incr, stamp(0.1, "incr"), new_full)
        half = stamp(3, "full")
        os.makedirs(os.path.join(d, half, "data"))
        everything = self.backups(d)
        self.zhost("verify", "--dir", d, "--quick", "--fresh-hours", "1000", "--full-hours", "1000", expect=1)  # the half

        p = self.zhost("prune", "--dir", d, "--dry-run", expect=0)
        self.assertEqual(self.backups(d), everything)
        self.assertIn("would delete " + old_full, p.stdout)

        p = self.zhost("prune", "--dir", d, expect=0)
        self.assertEqual(self.backups(d), sorted([base_full, kept_incr, mid_full, new_full, new_incr]))
        for gone in (old_full, old_incr, stale_incr, half):
            self.assertIn("deleted " + gone, p.stdout)
        # what is left verifies, chains included (verify re-hashes every file)
        self.zhost("verify", "--dir", d, "--fresh-hours", "1000", "--full-hours", "1000", expect=0)
        # a shorter window for fulls still keeps the newest full and the base of a kept incremental
        p = self.zhost("prune", "--dir", d, "--keep-days", "1", "--keep-incr-days", "1", expect=0)
        self.assertEqual(self.backups(d), sorted([new_full, new_incr]))
        self.zhost("prune", "--dir", d, "--keep-days", "0", "--keep-incr-days", "0", expect=0)
        self.assertEqual(self.backups(d), [new_full])
        br = self.rows("SELECT count() FROM %s.backup_runs WHERE status = 'deleted'" % DB)
        self.assertEqual(int(br[0][0]), 4 + 3 + 1)

    def test_5_failed_backup_is_recorded(self):
        empty = os.path.join(self.tmp, "empty")
        p = self.zhost("incr", "--to", empty, expect=1)
        self.assertIn("no complete full backup", p.stderr)
        self.assertEqual(self.backups(empty), [])
        br = self.rows("SELECT backup_name, status, error_msg FROM %s.backup_runs WHERE target = 'local:%s' ORDER BY _ver" % (DB, empty))
        self.assertEqual([r[1] for r in br], ["running", "fail"])
        self.assertIn("no complete full backup", br[-1][2])
        runs = self.rows("SELECT status, message FROM %s.meta_job_runs_raw WHERE job = 'backup' ORDER BY _ver DESC LIMIT 1" % DB)
        self.assertEqual(runs[0][0], "error")
        self.assertIn("no complete full backup", runs[0][1])

    def test_6_refuses_misuse(self):
        p = self.zhost("restore", self.full, "--dir", self.bdir, "--into", DB, "--bi-into", BI + "_x", expect=1)
        self.assertIn("refusing to restore into " + DB, p.stderr)
        self.assertEqual(self.rows("SELECT count() FROM system.databases WHERE name = '%s_x'" % BI)[0][0], "0")
        # a scratch database that is not empty
        self.__class__.scratch += [DB + "_rfull_again"]
        into = DB + "_rfull"  # made by test 1
        p = self.zhost("restore", self.full, "--dir", self.bdir, "--into", into, "--bi-into", BI + "_rfull", expect=1)
        self.assertIn("not empty", p.stderr)
        self.zhost("restore", self.full, "--dir", self.bdir, "--into", into, "--bi-into", BI + "_rfull", "--drop-existing", expect=0)
        self.zhost("restore", "nonsense", "--into", "x", expect=2)
        self.zhost("frobnicate", expect=2)
        p = self.zhost("restore", "chbk_20000101_000000_full", "--dir", self.bdir, "--into", DB + "_nx", expect=1)
        self.assertIn("no such complete backup", p.stderr)
        # a mistyped folder (--dir, or BACKUP_DIR in .env.backup) is named as missing, not "0 backups"
        gone = self.bdir + "-typo"
        for verb in ("verify", "list"):
            p = self.zhost(verb, "--dir", gone, expect=1)
            self.assertIn("%s: No such file or directory" % gone, p.stderr)
            self.assertFalse(os.path.exists(gone))


if __name__ == "__main__":
    unittest.main()
