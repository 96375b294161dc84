"""Shared helpers for zhost end-to-end tests (Python 3 standard library only).

Every test talks to the real `zhost` binary ($ZHOST_BIN), a real ClickHouse ($ZHOST_TEST_CH_URL,
started by .ci/run) and, where it needs an upstream API, the fakes in spec/fakes started on a free
loopback port. Each test case gets its own databases (zakaz_t<rand>, bi_t<rand>) with the real
migrations applied, and drops them afterwards.
"""
import json
import os
import random
import re
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SOURCE_DIR = os.environ.get("ZHOST_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ZHOST = os.environ.get("ZHOST_BIN") or os.path.join(SOURCE_DIR, "build", "zhost")
CH_URL = os.environ.get("ZHOST_TEST_CH_URL", "http://127.0.0.1:18123").rstrip("/")
FAKES = os.path.join(SOURCE_DIR, "spec", "fakes")


def ch(sql, database=None, data=None, timeout=60):
    """Runs one statement against the test ClickHouse; returns the body as text. Raises on error."""
    params = {}
    if database:
        params["database"] = database
    url = CH_URL + "/?" + urllib.parse.urlencode(params)
    body = sql.encode() if data is None else data
    if data is not None:
        url += "&" + urllib.parse.urlencode({"query": sql})
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        raise RuntimeError("ClickHouse: %s\n%s" % (e.read().decode(errors="replace"), sql)) from None


def ch_rows(sql, database=None):
    """Rows of a SELECT as dicts (JSON output; 64-bit ints may come back quoted on 18.16)."""
    out = ch(sql.rstrip().rstrip(";") + " FORMAT JSON", database)
    return json.loads(out)["data"]


def ch_value(sql, database=None):
    out = ch(sql, database).strip()
    return out


def free_ports(n):
    """n distinct loopback ports free right now (for a private ClickHouse: HTTP and TCP).

    Taken below Linux's ephemeral range (32768-60999), not from it: a server that a test stops and
    starts again on the same port must find it free, and while it was down any outgoing connection
    on the machine (four tests run at a time) could be given that port as its local one."""
    rng = random.SystemRandom()
    ports, socks = [], []
    try:
        while len(ports) < n:
            port = rng.randrange(20000, 32768)
            if port in ports:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
            ports.append(port)
        return ports
    finally:
        for sock in socks:
            sock.close()


def ch_alive():
    try:
        return ch("SELECT 1").strip() == "1"
    except Exception:
        return False


class FakeAPI:
    """spec/fakes/fakeapi.py on a free port; .url is its base URL."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(FAKES, "fakeapi.py"), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"^READY (http://\S+)$", line.strip())
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError("fake API did not start: " + err)

    def control(self, path, payload=None, method=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data is not None else "GET"))
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read().decode()
            return json.loads(body) if body.strip().startswith(("{", "[")) else body

    def faults(self, rules):
        return self.control("/_fake/faults", rules)

    def clear_faults(self):
        return self.control("/_fake/faults", method="DELETE")

    def requests(self):
        return self.control("/_fake/requests")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def ch_at(url, sql, database=None):
    """One statement on the ClickHouse at url (the shared one, or a test's private one)."""
    params = {"database": database} if database else {}
    req = urllib.request.Request(url + "/?" + urllib.parse.urlencode(params), data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        raise RuntimeError("ClickHouse: %s\n%s" % (e.read().decode(errors="replace"), sql)) from None


class PrivateClickHouse:
    """Mixin for a test class that stops and starts ClickHouse: a ClickHouse of the class's own
    (tools/clickhouse-local.sh, on free ports: cls.ch_port), so the shared one stays up."""
    chdir = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.chdir = tempfile.mkdtemp(prefix="zhost-ch-")
        cls.ch_port, cls.tcp_port = free_ports(2)
        cls.start_ch()

    @classmethod
    def tearDownClass(cls):
        cls.stop_ch()
        shutil.rmtree(cls.chdir, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def start_ch(cls):
        out = subprocess.run([os.path.join(SOURCE_DIR, "tools", "clickhouse-local.sh"), "start", cls.chdir,
                              str(cls.ch_port), str(cls.tcp_port)], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)

    @classmethod
    def stop_ch(cls):
        # An outage, not a shutdown: SIGKILL after 1 s (18.16 waits ~11 s for a client that
        # holds an unfinished INSERT open).
        subprocess.run([os.path.join(SOURCE_DIR, "tools", "clickhouse-local.sh"), "stop", cls.chdir, "1"],
                       capture_output=True, timeout=120)

    def setUp(self):
        super().setUp()
        self.ch_url = "http://127.0.0.1:%d" % self.ch_port
        self.env["CLICKHOUSE_URL"] = self.ch_url
        r = self.zhost("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)

    def tearDown(self):
        try:
            ch_at(self.ch_url, "SELECT 1")
        except Exception:
            self.start_ch()  # a failed test left it stopped
        for d in (self.db, self.bi):
            try:
                ch_at(self.ch_url, "DROP DATABASE IF EXISTS " + d)
            except Exception:
                pass
        super().tearDown()


class ZhostCase(unittest.TestCase):
    """A test case with its own databases, secrets dir, spool dir and zhost runner."""

    migrate = True

    def setUp(self):
        if not ch_alive():
            self.fail("ClickHouse is not reachable at %s (set ZHOST_TEST_CH_URL; .ci/run starts one)" % CH_URL)
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(8))
        self.db = "zakaz_t" + suffix
        self.bi = "bi_t" + suffix
        self.tmp = tempfile.mkdtemp(prefix="zhost-test-")
        self.secrets = os.path.join(self.tmp, "secrets")
        self.spool = os.path.join(self.tmp, "spool")
        os.makedirs(self.secrets, mode=0o700)
        self.env = dict(os.environ)
        self.env.update({
            "CLICKHOUSE_URL": CH_URL,
            "CLICKHOUSE_DB": self.db,
            "CLICKHOUSE_BI_DB": self.bi,
            "ZHOST_SECRETS": self.secrets,
            "ZHOST_SPOOL": self.spool,
            "ZHOST_SQL_DIR": os.path.join(SOURCE_DIR, "sql"),
            "ZHOST_HISTORY": os.path.join(self.tmp, "history"),
        })
        self.fakes = []
        if self.migrate:
            r = self.zhost("migrate")
            self.assertEqual(r.returncode, 0, r.stderr)

    def tearDown(self):
        for f in self.fakes:
            f.stop()
        if not os.environ.get("ZHOST_TEST_KEEP_DB"):
            for d in (self.db, self.bi):
                try:
                    ch("DROP DATABASE IF EXISTS " + d)
                except Exception:
                    pass
            shutil.rmtree(self.tmp, ignore_errors=True)

    def fake(self, *args):
        f = FakeAPI(*args)
        self.fakes.append(f)
        return f

    def write_secret(self, name, values):
        path = os.path.join(self.secrets, ".env." + name)
        with open(path, "w") as fh:
            for k, v in values.items():
                fh.write("%s=%s\n" % (k, v))
        os.chmod(path, 0o600)
        return path

    def zhost(self, *args, timeout=300, env=None, input=None):
        e = dict(self.env)
        if env:
            e.update(env)
        return subprocess.run([ZHOST, *args], env=e, capture_output=True, text=True, timeout=timeout,
                              input=input, cwd=SOURCE_DIR)

    def zhost_bg(self, *args, env=None):
        e = dict(self.env)
        if env:
            e.update(env)
        return subprocess.Popen([ZHOST, *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=SOURCE_DIR)

    def script(self, name, text):
        """Writes a Lua script into the test's temp dir and returns its path."""
        path = os.path.join(self.tmp, name)
        with open(path, "w") as fh:
            fh.write(text)
        return path

    def q(self, sql):
        return ch_rows(sql, self.db)

    def scalar(self, sql):
        return ch_value(sql, self.db)

    def runs(self, job=None):
        """Runs in start order. started_at has whole seconds, so ties are broken by the version of
        each run's first row (microseconds)."""
        where = "WHERE job = '%s'" % job if job else ""
        return self.q("SELECT job, run_id, status, rows_processed, message, metrics FROM %s.meta_job_runs "
                      "ANY LEFT JOIN (SELECT run_id, min(_ver) AS first_ver FROM %s.meta_job_runs_raw GROUP BY run_id) "
                      "USING run_id %s ORDER BY started_at, first_ver" % (self.db, self.db, where))
