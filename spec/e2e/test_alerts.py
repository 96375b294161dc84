#!/usr/bin/env python3
"""End-to-end tests of the alerts job: the real zhost binary running scripts/alerts.lua against a
real ClickHouse and the SMTP sink (spec/fakes/smtp_sink.py).

Env: ZHOST_BIN (the binary), ZHOST_SOURCE_DIR (the repository), ZHOST_TEST_CH_URL (a ClickHouse
with timezone Europe/Moscow; when unset or not answering, one is started with
tools/clickhouse-local.sh on a free port and stopped at the end).

Every test gets its own database, so tests do not see each other's alerts.
"""

import email
import email.header
import email.policy
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SRC = os.environ.get("ZHOST_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("ZHOST_BIN") or os.path.join(SRC, "build", "zhost")
SINK = os.path.join(SRC, "spec", "fakes", "smtp_sink.py")
SCRIPT = os.path.join(SRC, "scripts", "alerts.lua")

CH_URL = None
_CH_DIR = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ch_alive(url):
    try:
        with urllib.request.urlopen(url + "/?query=SELECT%201", timeout=3) as r:
            return r.read().strip() == b"1"
    except Exception:
        return False


def setUpModule():
    global CH_URL, _CH_DIR
    url = os.environ.get("ZHOST_TEST_CH_URL")
    if url and ch_alive(url):
        CH_URL = url.rstrip("/")
        return
    _CH_DIR = tempfile.mkdtemp(prefix="zt-alerts-ch-")
    port = free_port()
    out = subprocess.run([os.path.join(SRC, "tools", "clickhouse-local.sh"), "start", _CH_DIR, str(port)],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError("cannot start ClickHouse: %s %s" % (out.stdout, out.stderr))
    CH_URL = out.stdout.strip().splitlines()[-1]


def _server_pids(ch_dir):
    """PIDs of the ClickHouse started on ch_dir (its config path is unique to this test run)."""
    needle = ("--config-file=%s/config.xml" % ch_dir).encode()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def tearDownModule():
    if _CH_DIR:
        subprocess.run([os.path.join(SRC, "tools", "clickhouse-local.sh"), "stop", _CH_DIR], capture_output=True,
                       timeout=60)
        # 18.16 does not always write the pid file the stop command relies on: stop it by PID.
        pids = _server_pids(_CH_DIR)
        for pid in pids:
            os.kill(pid, 15)
        deadline = time.time() + 30
        while pids and time.time() < deadline:
            pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
            time.sleep(0.2)
        for pid in pids:
            os.kill(pid, 9)
        shutil.rmtree(_CH_DIR, ignore_errors=True)


def ch(sql, db=None):
    q = {"query": sql}
    if db:
        q["database"] = db
    req = urllib.request.Request(CH_URL + "/?" + urllib.parse.urlencode(q), data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        raise RuntimeError("%s\n%s" % (e.read().decode(errors="replace")[:800], sql))


def ch_rows(sql):
    text = ch(sql + " FORMAT JSONEachRow")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# The tables the alert engine relies on, as in sql/0001_meta.sql. When that file is in the tree it
# is applied instead, so the test follows the canonical schema.
FALLBACK_DDL = [
    """CREATE TABLE IF NOT EXISTS zakaz.meta_job_runs_raw (job String, run_id String,
       started_at DateTime('Europe/Moscow'), finished_at Nullable(DateTime('Europe/Moscow')), status String,
       rows_processed UInt64, message String, metrics String, host String, _ver UInt64,
       _loaded_at DateTime MATERIALIZED now())
       ENGINE = ReplacingMergeTree(_ver) PARTITION BY toYYYYMM(started_at) ORDER BY run_id""",
    """CREATE VIEW IF NOT EXISTS zakaz.meta_job_runs AS
       SELECT job, run_id, started_at, finished_at,
              multiIf(raw_status = 'ok', 'success', raw_status = 'failed', 'error', raw_status) AS status,
              rows_processed, message, metrics, host, last_ver AS _ver
       FROM (SELECT run_id, argMax(job, _ver) AS job, argMax(started_at, _ver) AS started_at,
                    tupleElement(argMax(tuple(finished_at), _ver), 1) AS finished_at,
                    argMax(status, _ver) AS raw_status, argMax(rows_processed, _ver) AS rows_processed,
                    argMax(message, _ver) AS message, argMax(metrics, _ver) AS metrics, argMax(host, _ver) AS host,
                    max(_ver) AS last_ver
             FROM zakaz.meta_job_runs_raw GROUP BY run_id)""",
    """CREATE TABLE IF NOT EXISTS zakaz.alerts (alert_id String, created_at DateTime('Europe/Moscow'), job String,
       rule String, subject String, alert_type String, title String, message String, details String,
       channel String, delivered UInt8, acknowledged UInt8, acknowledged_at Nullable(DateTime('Europe/Moscow')),
       acknowledged_by String)
       ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(created_at) ORDER BY (created_at, alert_id)""",
    """CREATE TABLE IF NOT EXISTS zakaz.alert_state (rule String, subject String, state String, severity String,
       first_seen DateTime('Europe/Moscow'), last_seen DateTime('Europe/Moscow'),
       last_sent Nullable(DateTime('Europe/Moscow')), sent_count UInt32,
       resolved_at Nullable(DateTime('Europe/Moscow')), last_alert_id String, fingerprint String, details String,
       _ver UInt64, _loaded_at DateTime MATERIALIZED now())
       ENGINE = ReplacingMergeTree(_ver) ORDER BY (rule, subject)""",
    """CREATE VIEW IF NOT EXISTS zakaz.v_alert_state AS
       SELECT rule, subject, argMax(state, _ver) AS state, argMax(severity, _ver) AS severity,
              argMax(first_seen, _ver) AS first_seen, argMax(last_seen, _ver) AS last_seen,
              tupleElement(argMax(tuple(last_sent), _ver), 1) AS last_sent, argMax(sent_count, _ver) AS sent_count,
              tupleElement(argMax(tuple(resolved_at), _ver), 1) AS resolved_at,
              argMax(last_alert_id, _ver) AS last_alert_id, argMax(fingerprint, _ver) AS fingerprint,
              argMax(details, _ver) AS details, max(_ver) AS last_ver
       FROM zakaz.alert_state GROUP BY rule, subject""",
]

# v_data_freshness is a view over the loaders' tables in the real schema; the rules only read its
# four columns, so the tests use a table of the same shape and write the freshness they need.
FRESHNESS_DDL = """CREATE TABLE zakaz.v_data_freshness (source String, latest_date Nullable(Date),
                   days_behind Int32, total_rows UInt64) ENGINE = MergeTree ORDER BY source"""


def schema_statements():
    path = os.path.join(SRC, "sql", "0001_meta.sql")
    if not os.path.exists(path):
        return FALLBACK_DDL
    stmts, cur = [], []
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("--"):
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmts.append("".join(cur).rstrip().rstrip(";"))
            cur = []
    return stmts


class HangAfterProbe:
    """A relay to ClickHouse that passes requests until it has answered the alerts job's probe
    (SELECT 1 AS ok), then takes connections and requests without ever answering: a server that
    hangs in the middle of a cycle."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlparse(upstream)
        self.hung = False
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        # one request per connection is enough for zhost's requests (it reconnects after Connection: close)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                c.close()
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = c.recv(65536)
            if not chunk:
                break
            body += chunk
        with self.lock:
            if self.hung:
                self.held.append(c)  # never answered
                return
        line, _, rest = head.partition(b"\r\n")
        method, target, _ = line.split(b" ", 2)
        req = urllib.request.Request("http://%s%s" % (self.upstream.netloc, target.decode()), data=body, method=method.decode())
        for h in rest.split(b"\r\n"):
            k, _, v = h.decode().partition(":")
            if k.lower().startswith("x-clickhouse"):
                req.add_header(k, v.strip())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, out = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read()
        c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(out)) + out)
        c.close()
        if b"SELECT 1 AS ok" in body:
            with self.lock:
                self.hung = True

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


class Sink:
    """The SMTP sink as a subprocess."""

    def __init__(self, outdir, extra=()):
        self.outdir = outdir
        self.p = subprocess.Popen([sys.executable, SINK, "--port", "0", "--out", outdir] + list(extra),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.match(r"READY (\d+)", line or "")
        if not m:
            self.p.kill()
            raise RuntimeError("smtp sink did not start: %r %s" % (line, self.p.stderr.read()))
        self.port = int(m.group(1))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()
        self.p.stderr.close()


class AlertsCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zt-alerts-")
        self.db = "zt_alerts_%d_%d" % (os.getpid(), int(time.time() * 1000) % 10 ** 8)
        ch("CREATE DATABASE IF NOT EXISTS " + self.db)
        for s in schema_statements():
            ch(s.replace("zakaz.", self.db + "."))
        ch(FRESHNESS_DDL.replace("zakaz.", self.db + "."))
        self.set_freshness({"qtickets_sales": 0, "vk_ads": 1, "direct": 1})
        self.mail_dir = os.path.join(self.tmp, "mail")
        os.makedirs(self.mail_dir)
        self.secrets = os.path.join(self.tmp, "secrets")
        os.makedirs(self.secrets)
        self.spool = os.path.join(self.tmp, "spool")
        self.sink = None
        self.smtp_env = {}

    def tearDown(self):
        if self.sink:
            self.sink.stop()
        ch("DROP DATABASE IF EXISTS " + self.db)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----
    def start_sink(self, extra=()):
        self.sink = Sink(self.mail_dir, extra)
        return self.sink.port

    def write_secrets(self, port, **more):
        env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USER": "alerts@zakaz.example",
               "SMTP_PASSWORD": "s3cret-pass", "SMTP_USE_TLS": "false",
               "ALERT_EMAIL_TO": "ops@zakaz.example, boss@zakaz.example"}
        env.update(more)
        path = os.path.join(self.secrets, ".env.alerts")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for k, v in env.items():
                if v is not None:
                    f.write("%s=%s\n" % (k, v))

    def set_freshness(self, behind):
        ch("TRUNCATE TABLE %s.v_data_freshness" % self.db)
        for src, days in behind.items():
            ch("INSERT INTO %s.v_data_freshness VALUES ('%s', today() - %d, %d, 100)" % (self.db, src, days, days))

    def add_run(self, job, status, minutes_ago=10, message=""):
        run_id = "%s-%s-%d" % (job, status, time.time_ns())
        t = int(time.time()) - minutes_ago * 60
        ch("INSERT INTO %s.meta_job_runs_raw (job, run_id, started_at, finished_at, status, rows_processed, "
           "message, metrics, host, _ver) VALUES ('%s', '%s', %d, %d, '%s', 0, '%s', '{}', 'test', %d)"
           % (self.db, job, run_id, t, t + 5, status, message.replace("'", "\\'"), t * 1000))
        return run_id

    def run_alerts(self, *args, ch_url=None, env_extra=None, expect=None):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("SMTP_", "ALERT_", "CLICKHOUSE_", "CH_")):
                del env[k]
        env.update({"CLICKHOUSE_URL": ch_url or CH_URL, "CLICKHOUSE_DB": self.db, "ZHOST_CH_ATTEMPTS": "1",
                    "ZHOST_LOG_LEVEL": "info"})
        env.update(env_extra or {})
        p = subprocess.run([BIN, "run", SCRIPT, "--secrets", self.secrets, "--spool", self.spool] + list(args),
                           cwd=SRC, env=env, capture_output=True, text=True, timeout=120)
        if expect is not None:
            self.assertEqual(p.returncode, expect, "exit %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, p.stdout,
                                                                                         p.stderr))
        return p

    def mails(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.mail_dir, "msg-*.eml"))):
            with open(path, "rb") as f:
                out.append(email.message_from_binary_file(f, policy=email.policy.default))
        return out

    def alerts(self, where="1"):
        return ch_rows("SELECT alert_id, rule, subject, alert_type, title, message, max(delivered) AS delivered, "
                       "count() AS copies FROM %s.alerts WHERE %s GROUP BY alert_id, rule, subject, alert_type, "
                       "title, message ORDER BY min(created_at), alert_type = 'resolved', rule, subject" % (self.db, where))

    def state(self):
        return {(r["rule"], r["subject"]): r for r in ch_rows("SELECT * FROM %s.v_alert_state" % self.db)}

    def body(self, msg):
        return msg.get_body(preferencelist=("plain",)).get_content()


class TestAlerts(AlertsCase):
    def test_failing_job_one_mail_then_none_then_resolved(self):
        port = self.start_sink()
        self.write_secrets(port)
        self.add_run("qtickets", "success", minutes_ago=50)
        self.add_run("qtickets", "error", minutes_ago=10, message="HTTP 503 from QTickets")
        self.run_alerts(expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        m = mails[0]
        subject = str(m["Subject"])
        self.assertIn("qtickets", subject)
        self.assertIn("ОШИБКА", subject)
        self.assertTrue(m["Message-ID"] and m["Date"])
        self.assertEqual(m.get_content_type(), "text/plain")
        self.assertEqual(m.get_content_charset(), "utf-8")
        self.assertEqual(m["X-Sink-Mail-From"].strip("<>"), "alerts@zakaz.example")
        self.assertEqual(sorted(a.strip("<>") for a in m.get_all("X-Sink-Rcpt-To")), ["boss@zakaz.example", "ops@zakaz.example"])
        self.assertEqual(m["X-Sink-Auth-User"], "alerts@zakaz.example")
        body = self.body(m)
        self.assertIn("failed_run:qtickets", body)
        self.assertIn("HTTP 503 from QTickets", body)
        self.assertIn("zhost logs qtickets", body)
        self.assertIn("zhost run scripts/qtickets.lua --days 1", body)
        self.assertIn("FROM zakaz.meta_job_runs WHERE job = 'qtickets'", body)
        rows = self.alerts()
        self.assertEqual([(r["rule"], r["subject"], r["alert_type"], r["delivered"]) for r in rows],
                         [("failed_run", "qtickets", "error", 1)])
        st = self.state()[("failed_run", "qtickets")]
        self.assertEqual(st["state"], "open")
        self.assertEqual(int(st["sent_count"]), 1)

        # Second cycle: still failing, inside the repeat interval: nothing is sent or stored.
        self.run_alerts(expect=0)
        self.assertEqual(len(self.mails()), 1)
        self.assertEqual(len(self.alerts()), 1)

        # The job recovers: one "resolved" mail.
        self.add_run("qtickets", "success", minutes_ago=1)
        self.run_alerts(expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        self.assertIn("РЕШЕНО", str(mails[1]["Subject"]))
        self.assertIn("qtickets", str(mails[1]["Subject"]))
        self.assertIn("failed_run:qtickets", self.body(mails[1]))
        rows = self.alerts()
        self.assertEqual([(r["rule"], r["alert_type"], r["delivered"]) for r in rows],
                         [("failed_run", "error", 1), ("failed_run", "resolved", 1)])
        self.assertEqual(self.state()[("failed_run", "qtickets")]["state"], "resolved")

        # And quiet afterwards.
        self.run_alerts(expect=0)
        self.assertEqual(len(self.mails()), 2)

    def test_repeat_interval_resends_open_alert(self):
        port = self.start_sink()
        self.write_secrets(port)
        self.add_run("direct", "error", message="token expired")
        self.run_alerts("--only", "failed_run", expect=0)
        self.run_alerts("--only", "failed_run", expect=0)
        self.assertEqual(len(self.mails()), 1)
        self.run_alerts("--only", "failed_run", "--repeat-hours", "0", expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        self.assertIn("повтор", self.body(mails[1]))
        self.assertEqual(int(self.state()[("failed_run", "direct")]["sent_count"]), 2)

    def test_stale_data_per_source(self):
        port = self.start_sink()
        self.write_secrets(port)
        self.set_freshness({"qtickets_sales": 0, "vk_ads": 5, "direct": 3})
        for job in ("qtickets", "vk_ads", "direct"):  # switched on: their loaders run
            self.add_run(job, "success", minutes_ago=60)
        self.run_alerts("--only", "stale_data", expect=0)
        rows = self.alerts()
        self.assertEqual(sorted((r["subject"], r["alert_type"]) for r in rows),
                         [("direct", "warning"), ("vk_ads", "warning")])
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        body = self.body(mails[0])
        self.assertIn("stale_data:vk_ads", body)
        self.assertIn("stale_data:direct", body)
        self.assertIn("отставание 5 дн.", body)
        self.assertNotIn("stale_data:qtickets_sales", body)
        # A per-source threshold: direct may be 3 days behind.
        self.set_freshness({"qtickets_sales": 0, "vk_ads": 5, "direct": 3})
        self.run_alerts("--only", "stale_data", env_extra={"ALERT_STALE_DATA_MAX_DAYS_DIRECT": "3"}, expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        self.assertIn("РЕШЕНО", str(mails[1]["Subject"]))
        self.assertIn("stale_data:direct", self.body(mails[1]))
        self.assertNotIn("stale_data:vk_ads", self.body(mails[1]))

    def test_smtp_down_nothing_lost(self):
        dead = free_port()
        self.write_secrets(dead)
        self.add_run("vk_ads", "error", message="VK 401 invalid token")
        p = self.run_alerts("--only", "failed_run", expect=1)
        self.assertIn("not delivered", p.stderr)
        rows = self.alerts()
        self.assertEqual([(r["rule"], r["subject"], r["delivered"]) for r in rows], [("failed_run", "vk_ads", 0)])
        first_id = rows[0]["alert_id"]
        # Still down: the alert is retried, not duplicated.
        self.run_alerts("--only", "failed_run", expect=1)
        self.assertEqual(len(self.alerts()), 1)
        # SMTP is back: the stored alert goes out, once, and is marked delivered.
        port = self.start_sink()
        self.write_secrets(port)
        self.run_alerts("--only", "failed_run", expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        self.assertIn("VK 401 invalid token", self.body(mails[0]))
        rows = self.alerts()
        self.assertEqual([(r["alert_id"], r["delivered"]) for r in rows], [(first_id, 1)])
        self.run_alerts("--only", "failed_run", expect=0)
        self.assertEqual(len(self.mails()), 1)

    def test_no_smtp_settings_still_stored(self):
        self.add_run("qtickets", "error", message="boom")
        p = self.run_alerts("--only", "failed_run", expect=0)
        self.assertIn("no SMTP settings", p.stderr)
        rows = self.alerts()
        self.assertEqual([(r["rule"], r["subject"], r["delivered"]) for r in rows], [("failed_run", "qtickets", 0)])

    def test_repeated_failures_and_no_recent_success(self):
        port = self.start_sink()
        self.write_secrets(port)
        for i in range(3):
            self.add_run("vk_ads", "error", minutes_ago=30 - i, message="fail %d" % i)
        self.add_run("direct", "success", minutes_ago=30 * 60)  # 30 h ago; expected every 26 h
        self.add_run("qtickets", "success", minutes_ago=20)
        self.run_alerts("--only", "repeated_failures,no_recent_success", expect=0)
        got = sorted((r["rule"], r["subject"]) for r in self.alerts())
        self.assertEqual(got, [("no_recent_success", "direct"), ("no_recent_success", "vk_ads"),
                               ("repeated_failures", "vk_ads")])
        body = self.body(self.mails()[0])
        self.assertIn("vk_ads: 3 неудачных запуска подряд", body)
        self.assertIn("fail 2", body)

    def test_broken_rule_alerts_and_others_still_run(self):
        port = self.start_sink()
        self.write_secrets(port)
        rules = os.path.join(self.tmp, "rules")
        os.makedirs(rules)
        shutil.copy(os.path.join(SRC, "scripts", "alerts", "failed_run.lua"), rules)
        with open(os.path.join(rules, "typo.lua"), "w") as f:
            f.write("return { check = function(ctx) return ctx.query('SELECT nope FROM nowhere') end }\n")
        self.add_run("qtickets", "error", message="boom")
        self.run_alerts("--rules", rules, expect=0)
        got = sorted((r["rule"], r["subject"]) for r in self.alerts())
        self.assertEqual(got, [("failed_run", "qtickets"), ("rule_error", "typo")])
        # The rule is fixed: its rule_error alert resolves (rules are read at run time).
        with open(os.path.join(rules, "typo.lua"), "w") as f:
            f.write("return { check = function(ctx) return {} end }\n")
        self.run_alerts("--rules", rules, expect=0)
        last = self.mails()[-1]
        self.assertIn("РЕШЕНО", str(last["Subject"]))
        self.assertIn("rule_error:typo", self.body(last))

    def test_a_setting_that_does_not_read_is_an_alert_and_its_default_is_used(self):
        # Settings were read with tonumber(...) or default: "24h" was silently 24, and SMTP_USE_TLS=Y
        # meant plain SMTP, password and all. Now the default is used (TLS required: this sink offers
        # none, so nothing is sent) and each setting is an alert of its own, resolved once it reads.
        port = self.start_sink()
        self.write_secrets(port, SMTP_USE_TLS="Y", ALERT_REPEAT_HOURS="24h", ALERT_FAILED_RUN_WINDOW_HOURS="2d")
        self.add_run("qtickets", "error", message="boom")
        p = self.run_alerts("--only", "failed_run", expect=1)
        self.assertEqual(self.mails(), [])
        self.assertIn('default=24 setting=ALERT_REPEAT_HOURS value=24h', p.stderr)
        got = sorted((r["rule"], r["subject"]) for r in self.alerts())
        self.assertEqual(got, [("failed_run", "qtickets"), ("setting_error", "ALERT_FAILED_RUN_WINDOW_HOURS"),
                               ("setting_error", "ALERT_REPEAT_HOURS"), ("setting_error", "SMTP_USE_TLS")])
        msg = {r["subject"]: r["message"] for r in self.alerts("rule = 'setting_error'")}
        self.assertEqual(msg["ALERT_REPEAT_HOURS"], "ALERT_REPEAT_HOURS='24h' не читается (нужно: число от 0 до 8760); "
                                                    "действует значение по умолчанию: 24")
        # fixed: the undelivered alerts go out with the three settings' resolutions
        self.write_secrets(port)
        self.run_alerts("--only", "failed_run", expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        body = self.body(mails[0])
        for name in ("SMTP_USE_TLS", "ALERT_REPEAT_HOURS", "ALERT_FAILED_RUN_WINDOW_HOURS"):
            self.assertEqual(self.state()[("setting_error", name)]["state"], "resolved", name)
            self.assertIn("setting_error:" + name, body)
        # a mistyped option of a run by hand fails it
        p = self.run_alerts("--only", "failed_run", "--repeat-hours", "1d", expect=1)
        self.assertIn("--repeat-hours must be a number from 0 to 8760 (got '1d')", p.stderr)

    def test_removed_rule_closes_its_alerts(self):
        port = self.start_sink()
        self.write_secrets(port)
        rules = os.path.join(self.tmp, "rules")
        os.makedirs(rules)
        for name in ("failed_run.lua", "stale_data.lua"):
            shutil.copy(os.path.join(SRC, "scripts", "alerts", name), rules)
        self.add_run("qtickets", "error", message="boom")
        self.run_alerts("--rules", rules, expect=0)
        self.assertIn(("failed_run", "qtickets"), [(r["rule"], r["subject"]) for r in self.alerts()])
        # --only narrows the set: the other rules' alerts stay open
        os.remove(os.path.join(rules, "failed_run.lua"))
        sent = len(self.mails())
        self.run_alerts("--rules", rules, "--only", "stale_data", expect=0)
        self.assertEqual(len(self.mails()), sent, "nothing to send")
        # the whole directory again, without the rule: its alert is closed, and the notice says why
        self.run_alerts("--rules", rules, expect=0)
        last = self.mails()[-1]
        self.assertIn("РЕШЕНО", str(last["Subject"]))
        self.assertIn("failed_run удалено из набора правил", self.body(last))
        self.assertEqual(self.state()[("failed_run", "qtickets")]["state"], "resolved")

    def test_clickhouse_down_mailed_then_stored_later(self):
        port = self.start_sink()
        self.write_secrets(port)
        # A first cycle with ClickHouse up caches the table schemas beside the spool.
        self.run_alerts(expect=0)
        self.assertEqual(len(self.mails()), 0)
        dead = "http://127.0.0.1:%d" % free_port()
        p = self.run_alerts(ch_url=dead, expect=1)
        mails = self.mails()
        self.assertEqual(len(mails), 1, p.stderr)
        self.assertIn("ClickHouse недоступен", str(mails[0]["Subject"]))
        self.assertIn("clickhouse_down:clickhouse", self.body(mails[0]))
        spooled = glob.glob(os.path.join(self.spool, self.db + ".alerts~*.jsonl"))
        self.assertEqual(len(spooled), 1)
        # Still down: the spooled state dedups it.
        self.run_alerts(ch_url=dead, expect=1)
        self.assertEqual(len(self.mails()), 1)
        # ClickHouse is back; the spool is replayed into zakaz.alerts.
        env = dict(os.environ, CLICKHOUSE_URL=CH_URL, CLICKHOUSE_DB=self.db)
        r = subprocess.run([BIN, "spool", "replay", "--secrets", self.secrets, "--spool", self.spool], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = self.alerts("rule = 'clickhouse_down'")
        self.assertEqual([(r["subject"], r["alert_type"], r["delivered"]) for r in rows],
                         [("clickhouse", "error", 1)])
        self.run_alerts(expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        self.assertIn("РЕШЕНО", str(mails[1]["Subject"]))
        self.assertIn("clickhouse_down:clickhouse", self.body(mails[1]))

    def test_clickhouse_that_never_answers_is_mailed_quickly(self):
        # A hung ClickHouse takes connections and never answers: the probe must give up quickly, so
        # clickhouse_down is e-mailed long before the daemon's 5-minute timeout for the job.
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        self.addCleanup(hung.close)
        port = self.start_sink()
        self.write_secrets(port, ALERT_CLICKHOUSE_TIMEOUT="2")
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("SMTP_", "ALERT_", "CLICKHOUSE_", "CH_")):
                del env[k]
        env.update({"CLICKHOUSE_URL": "http://127.0.0.1:%d" % hung.getsockname()[1], "CLICKHOUSE_DB": self.db,
                    "ZHOST_LOG_LEVEL": "info"})
        errf = open(os.path.join(self.tmp, "stderr"), "w+")
        self.addCleanup(errf.close)
        p = subprocess.Popen([BIN, "run", SCRIPT, "--secrets", self.secrets, "--spool", self.spool, "--timeout", "40"],
                             cwd=SRC, env=env, stdout=subprocess.DEVNULL, stderr=errf)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        t0 = time.time()
        while time.time() - t0 < 30 and not self.mails():
            time.sleep(0.2)
        mails = self.mails()
        self.assertEqual(len(mails), 1, "no mail within 30 s")
        self.assertIn("ClickHouse недоступен", str(mails[0]["Subject"]))
        self.assertIn("clickhouse_down:clickhouse", self.body(mails[0]))
        # ... and the run ends soon after, not at its timeout (storing the rows and the run's own
        # meta_job_runs rows waited 4 x 300 s per statement). No cycle ever cached the table
        # schemas here, so the rows cannot even be spooled: the message says so.
        try:
            rc = p.wait(30 - (time.time() - t0) + 5)
        except subprocess.TimeoutExpired:
            rc = None
        errf.seek(0)
        err = errf.read()
        self.assertEqual(rc, 1, "still running %.0f s after the start\n%s" % (time.time() - t0, err))
        last = err.strip().splitlines()[-1]
        self.assertIn("zhost: alerts failed: ClickHouse did not answer (", last)
        self.assertIn("1 notification e-mailed, the alert rows not stored: cannot open a sink for %s.alerts" % self.db, last)

    def hung_clickhouse(self):
        """A ClickHouse that takes connections and never answers."""
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        self.addCleanup(hung.close)
        return "http://127.0.0.1:%d" % hung.getsockname()[1]

    def run_alerts_timed(self, ch_url, *args):
        # the production defaults: ZHOST_CH_ATTEMPTS left unset (4 attempts)
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("SMTP_", "ALERT_", "CLICKHOUSE_", "CH_", "ZHOST_CH_")):
                del env[k]
        env.update({"CLICKHOUSE_URL": ch_url, "CLICKHOUSE_DB": self.db, "ZHOST_LOG_LEVEL": "info"})
        t0 = time.time()
        p = subprocess.run([BIN, "run", SCRIPT, "--secrets", self.secrets, "--spool", self.spool] + list(args),
                           cwd=SRC, env=env, capture_output=True, text=True, timeout=300)
        return p, time.time() - t0

    def test_hung_clickhouse_run_ends_quickly_rows_spooled_and_not_mailed_again(self):
        # A hung ClickHouse: the probe gives up after 2 x ALERT_CLICKHOUSE_TIMEOUT and clickhouse_down
        # is e-mailed, but storing its rows waited 4 x 300 s per statement, and so did the run's own
        # meta_job_runs rows: the run never ended within the daemon's 5-minute timeout, its rows were
        # never spooled, and the next cycle, with no state to read, mailed the alert again.
        port = self.start_sink()
        self.write_secrets(port, ALERT_CLICKHOUSE_TIMEOUT="2")
        self.run_alerts(expect=0)  # ClickHouse up: the table schemas are cached beside the spool
        hung = self.hung_clickhouse()
        p, took = self.run_alerts_timed(hung)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertLess(took, 30, "the run against a hung ClickHouse took %.0f s\n%s" % (took, p.stderr))
        mails = self.mails()
        self.assertEqual(len(mails), 1, p.stderr)
        self.assertIn("clickhouse_down:clickhouse", self.body(mails[0]))
        last = p.stderr.strip().splitlines()[-1]
        self.assertRegex(last, r"^zhost: alerts failed: ClickHouse did not answer \(ClickHouse unreachable at \S+: "
                               r"timeout\): 1 notification e-mailed, the alert rows not stored; "
                               r"2 rows spooled, deliver them with `zhost spool replay`$")
        for table in ("alerts", "alert_state"):
            files = glob.glob(os.path.join(self.spool, "%s.%s~*.jsonl" % (self.db, table)))
            self.assertEqual(len(files), 1, (table, os.listdir(self.spool)))
        # the run's own row is spooled too, not lost
        self.assertTrue(glob.glob(os.path.join(self.spool, self.db + ".meta_job_runs_raw~*.jsonl")), os.listdir(self.spool))
        # Still hung two hours later: the spooled state says the alert was sent; no second mail.
        p, took = self.run_alerts_timed(hung)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertLess(took, 30, p.stderr)
        self.assertEqual(len(self.mails()), 1, "clickhouse_down was e-mailed again\n" + p.stderr)
        self.assertIn("): nothing to e-mail, the alert rows not stored; 1 rows spooled", p.stderr.strip().splitlines()[-1])
        # Once the repeat interval has passed (here 0 hours) it is e-mailed again as a reminder.
        p, took = self.run_alerts_timed(hung, "--repeat-hours", "0")
        self.assertLess(took, 30, p.stderr)
        mails = self.mails()
        self.assertEqual(len(mails), 2, p.stderr)
        self.assertIn("повтор", self.body(mails[1]))
        self.assertIn("clickhouse_down:clickhouse", self.body(mails[1]))
        # ClickHouse answers again: the spool is replayed, the next cycle resolves the alert.
        env = dict(os.environ, CLICKHOUSE_URL=CH_URL, CLICKHOUSE_DB=self.db)
        r = subprocess.run([BIN, "spool", "replay", "--secrets", self.secrets, "--spool", self.spool], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.run_alerts(expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 3)
        self.assertIn("РЕШЕНО", str(mails[2]["Subject"]))

    def test_clickhouse_that_stops_answering_mid_cycle(self):
        # The probe is answered, then ClickHouse hangs: a rule's query gives up after
        # ALERT_QUERY_TIMEOUT (two attempts) instead of 4 x 300 s, the cycle is evaluated as one with
        # ClickHouse down (clickhouse_down, not a rule_error per rule), and the run ends.
        port = self.start_sink()
        self.write_secrets(port, ALERT_CLICKHOUSE_TIMEOUT="2", ALERT_QUERY_TIMEOUT="1")
        self.run_alerts(expect=0)  # caches the schemas
        relay = HangAfterProbe(CH_URL)
        self.addCleanup(relay.stop)
        p, took = self.run_alerts_timed(relay.url)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertLess(took, 30, p.stderr)
        self.assertIn("ClickHouse stopped answering during the cycle", p.stderr)
        mails = self.mails()
        self.assertEqual(len(mails), 1, p.stderr)
        body = self.body(mails[0])
        self.assertIn("clickhouse_down:clickhouse", body)
        self.assertNotIn("rule_error", body)

    def test_starttls_and_auth(self):
        key = os.path.join(self.tmp, "k.pem")
        cert = os.path.join(self.tmp, "c.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=localhost"], capture_output=True, timeout=60)
        if r.returncode != 0:
            self.skipTest("openssl cannot make a certificate")
        port = self.start_sink(["--tls-cert", cert, "--tls-key", key, "--auth", "alerts@zakaz.example:s3cret-pass"])
        self.write_secrets(port, SMTP_USE_TLS="true", SMTP_CAFILE=cert, SMTP_HOST="localhost")
        self.add_run("qtickets", "error", message="boom")
        p = self.run_alerts("--only", "failed_run", expect=0)
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        self.assertEqual(mails[0]["X-Sink-Tls"], "yes")
        self.assertEqual(mails[0]["X-Sink-Auth-User"], "alerts@zakaz.example")
        self.assertNotIn("s3cret-pass", p.stderr)


class TestMailModule(unittest.TestCase):
    """mail.send against a server that accepts connections and never answers."""

    def setUp(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.tmp = tempfile.mkdtemp(prefix="zt-mail-")

    def tearDown(self):
        self.srv.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_lua(self, code, *args):
        path = os.path.join(self.tmp, "m.lua")
        with open(path, "w") as f:
            f.write(code)
        t0 = time.time()
        p = subprocess.run([BIN, "run", path, "--dry-run"] + list(args), capture_output=True, text=True, timeout=60)
        return p, time.time() - t0

    def test_timeout_returns_nil_err(self):
        p, took = self.run_lua('local ok, err = mail.send{host="127.0.0.1", port=%d, tls="none", from="a@b.cc", '
                               'to="x@y.zz", subject="s", text="t", timeout=1}\n'
                               'assert(ok == nil and err:find("timeout"), err)\n' % self.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertLess(took, 10)

    def test_cancelled_run_does_not_wait_for_the_server(self):
        p, took = self.run_lua('mail.send{host="127.0.0.1", port=%d, tls="none", from="a@b.cc", to="x@y.zz", '
                               'subject="s", text="t", timeout=30}\n' % self.port, "--timeout", "1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("timed out after 1 s", p.stderr)
        self.assertLess(took, 8)

    def test_a_server_that_never_answers_quit_does_not_block_the_loop(self):
        # The relay takes the message (250 after DATA) and then never answers QUIT: libcurl's QUIT
        # waits blocking the whole loop, 120 s by default whatever the send's timeout was.
        got = []

        def serve():
            c, _ = self.srv.accept()
            f = c.makefile("rb")
            c.sendall(b"220 quiet ESMTP\r\n")
            data = False
            for line in f:
                if data:
                    if line == b".\r\n":
                        data = False
                        c.sendall(b"250 2.0.0 queued\r\n")
                    continue
                verb = line[:4].upper()
                got.append(verb)
                if verb == b"EHLO":
                    c.sendall(b"250-quiet\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    data = True
                    c.sendall(b"354 go on\r\n")
                elif verb == b"QUIT":
                    time.sleep(30)
                    break
                else:
                    c.sendall(b"250 ok\r\n")
            c.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        p, took = self.run_lua(
            'local ticks = 0\n'
            'task.spawn(function() while true do task.sleep(0.1); ticks = ticks + 1 end end)\n'
            'local t0 = os.time()\n'
            'local ok, err = mail.send{host="127.0.0.1", port=%d, tls="none", from="a@b.cc", to="x@y.zz", '
            'subject="s", text="t", timeout=20}\n'
            'assert(ok, err)\n'
            'task.sleep(0.5)\n'
            'print("ticks", ticks)\n' % self.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"QUIT", got)
        self.assertLess(took, 6)

    def test_misuse_raises(self):
        p, _ = self.run_lua('mail.send{host="127.0.0.1", tls="ssl", from="a@b.cc", to="x@y.zz", subject="s", text="t"}\n')
        self.assertEqual(p.returncode, 1)
        self.assertIn('tls must be "starttls", "smtps" or "none"', p.stderr)
        p, _ = self.run_lua('mail.send{host="127.0.0.1", from="a@b.cc", to="x@y.zz\\r\\nRCPT TO:<e@vil.cc>", '
                            'subject="s", text="t"}\n')
        self.assertEqual(p.returncode, 1)
        self.assertIn("not an e-mail address", p.stderr)


if __name__ == "__main__":
    unittest.main()
