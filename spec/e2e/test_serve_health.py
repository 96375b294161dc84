"""End-to-end tests of the health server of `zhost serve`: the four endpoints' shapes and codes with
ClickHouse up and down, the HTML status page in headless Chromium, and robustness against
malformed, slow and numerous clients while jobs keep their schedule."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import http.client
import unittest

from serve_helpers import raw, request, request_json
from test_serve import ServeCase

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00$")


def jq_ok(text):
    jq = shutil.which("jq")
    if not jq:
        return True
    return subprocess.run([jq, "."], input=text, capture_output=True, text=True).returncode == 0


class Health(ServeCase):
    def jobs(self):
        self.lua("ok.lua", 'job:message("loaded fine")\n')
        self.lua("bad.lua", 'error("upstream said no")\n')
        return ("[job good]\nscript = scripts/ok.lua\nschedule = 0 0 1 1 *\n"
                "[job broken]\nscript = scripts/bad.lua\nschedule = 0 0 1 1 *\n"
                "[job gmail_ingest]\nscript = scripts/ok.lua\nschedule = 0 */4 * * *\nenabled = false\n")

    def test_endpoints_with_clickhouse_up(self):
        self.conf(self.jobs(), extra="[freshness]\ndefault = 10000 10000\nvk_ads = 1 2\n")
        d = self.start()
        self.assertEqual(self.cli("trigger", "good").returncode, 0)
        self.assertEqual(self.cli("trigger", "broken").returncode, 0)
        self.wait_idle("good")
        self.wait_idle("broken")

        st, h, body = request(self.port, "/healthz")
        self.assertEqual(st, 200)
        self.assertEqual(h["access-control-allow-origin"], "*")
        self.assertTrue(h["content-type"].startswith("application/json"))
        self.assertTrue(jq_ok(body))
        j = json.loads(body)
        self.assertEqual(j["status"], "ok")
        self.assertEqual(j["checks"], {"clickhouse": "ok"})
        self.assertRegex(j["timestamp"], ISO)

        # vk_ads has no rows (9999 days behind) and a strict threshold: error, first in the list.
        st, _, f = request_json(self.port, "/healthz/freshness")
        self.assertEqual(st, 503)
        self.assertEqual(f["status"], "error")
        self.assertRegex(f["timestamp"], ISO)
        self.assertEqual(sorted(x["source"] for x in f["data"]), ["direct", "qtickets_sales", "vk_ads"])
        days = [x["days_behind"] for x in f["data"]]
        self.assertEqual(days, sorted(days, reverse=True))
        vk = [x for x in f["data"] if x["source"] == "vk_ads"][0]
        self.assertEqual(vk["status"], "error")
        self.assertEqual(vk["threshold"], {"warn": 1, "error": 2})
        self.assertIsNone(vk["latest_date"])
        other = [x for x in f["data"] if x["source"] == "direct"][0]
        self.assertEqual((other["status"], other["threshold"]["error"]), ("ok", 10000))
        for x in f["data"]:
            self.assertEqual(set(x), {"source", "latest_date", "days_behind", "total_rows", "threshold", "status"})

        # Detailed: the broken job is a warning (one failure), not a reason for 503 by itself.
        self.conf(self.jobs(), extra="[freshness]\ndefault = 10000 10000\n")
        d.signal(1)  # SIGHUP: thresholds reloaded
        d.wait_for(r'msg="configuration reloaded"')
        st, _, f = request_json(self.port, "/healthz/freshness")
        self.assertEqual((st, f["status"]), (200, "ok"))
        st, _, det = request_json(self.port, "/healthz/detailed")
        self.assertEqual(st, 200, det)
        self.assertEqual(det["status"], "warning")
        self.assertRegex(det["timestamp"], ISO)
        c = det["checks"]
        self.assertEqual(c["clickhouse"]["status"], "ok")
        self.assertTrue(c["clickhouse"]["version"].startswith("18."))
        self.assertIsInstance(c["clickhouse"]["latency_ms"], (int, float))
        self.assertEqual(set(c["data_freshness"]), {"direct", "qtickets_sales", "vk_ads"})
        jr = c["job_runs"]
        self.assertEqual(jr["good"]["status"], "ok")
        self.assertEqual(jr["good"]["last_status"], "success")
        self.assertEqual(jr["good"]["job"]["last_run"]["message"], "loaded fine")
        self.assertRegex(jr["good"]["last_run"], ISO)
        self.assertEqual(jr["broken"]["status"], "warning")
        self.assertEqual(jr["broken"]["job"]["consecutive_failures"], 1)
        self.assertIn("upstream said no", jr["broken"]["job"]["last_run"]["message"])
        self.assertEqual(jr["gmail_ingest"]["status"], "disabled")
        self.assertFalse(jr["gmail_ingest"]["job"]["enabled"])
        self.assertIn("next_run", jr["good"]["job"])
        self.assertEqual(c["spool"]["files"], 0)
        # Three failures in a row make the job an error: 503.
        for _ in range(2):
            self.wait_idle("broken")
            self.assertEqual(self.cli("trigger", "broken").returncode, 0)
        self.wait_idle("broken")
        st, _, det = request_json(self.port, "/healthz/detailed")
        self.assertEqual((st, det["status"], det["checks"]["job_runs"]["broken"]["status"]), (503, "error", "error"))

        st, h, m = request(self.port, "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        self.assertIn('zhost_job_runs_total{job="good",status="success"} 1', m)
        self.assertIn('zhost_job_runs_total{job="broken",status="error"} 3', m)
        self.assertIn('zhost_job_consecutive_failures{job="broken"} 3', m)
        self.assertIn("zhost_clickhouse_up 1", m)
        self.assertRegex(m, r'zhost_job_last_success_timestamp_seconds\{job="good"\} 1\d{9}')
        self.assertIn('zhost_job_enabled{job="gmail_ingest"} 0', m)
        self.assertIn("zhost_spool_rows 0", m)
        self.assertIn("# TYPE zhost_job_http_requests_total counter", m)
        for line in m.splitlines():
            self.assertTrue(line.startswith("#") or re.match(r'^[a-z_]+(\{[^}]*\})? -?[0-9.e+]+$', line), line)

        st, _, body = request(self.port, "/nope")
        self.assertEqual(st, 404)
        st, h, body = request(self.port, "/healthz", method="POST", body="x")
        self.assertEqual(st, 405)
        self.assertIn("GET", h["allow"])
        # No secrets in answers: ClickHouse's password never appears.
        self.assertNotIn("secret-pw", json.dumps(det))
        self.assertEqual(d.stop(), 0)

    def test_a_switched_off_source_is_disabled_not_stale(self):
        # VK not bought: its job is configured off, its table is empty (9999 days behind) and its
        # threshold strict. It must not turn the health answers red — until it is switched on.
        self.lua("ok.lua", 'job:message("loaded fine")\n')
        self.conf("[job vk_ads]\nscript = scripts/ok.lua\nschedule = 0 0 1 1 *\nenabled = false\n",
                  extra="[freshness]\ndefault = 10000 10000\nvk_ads = 1 2\n")
        d = self.start()
        st, _, f = request_json(self.port, "/healthz/freshness")
        self.assertEqual((st, f["status"]), (200, "ok"), f)
        vk = [x for x in f["data"] if x["source"] == "vk_ads"][0]
        self.assertEqual((vk["status"], vk["days_behind"]), ("disabled", 9999))
        st, _, det = request_json(self.port, "/healthz/detailed")
        self.assertEqual((st, det["checks"]["data_freshness"]["vk_ads"]["status"]), (200, "disabled"), det)
        self.assertEqual(self.cli("enable", "vk_ads").returncode, 0)
        st, _, f = request_json(self.port, "/healthz/freshness")
        self.assertEqual((st, f["status"]), (503, "error"))
        self.assertEqual(d.stop(), 0)

    def test_endpoints_with_clickhouse_down(self):
        self.conf(self.jobs())
        dead = "http://127.0.0.1:%d" % self.free_dead_port()
        d = self.start(env={"CLICKHOUSE_URL": dead, "CLICKHOUSE_PASSWORD": "secret-pw-123"})
        for path in ("/healthz", "/healthz/detailed", "/healthz/freshness"):
            t0 = time.time()
            st, _, body = request(self.port, path)
            self.assertLess(time.time() - t0, 5, path)
            self.assertEqual(st, 503, path)
            self.assertTrue(jq_ok(body))
            j = json.loads(body)
            self.assertEqual(j["status"], "error", path)
            self.assertRegex(j["timestamp"], ISO)
            self.assertNotIn("secret-pw-123", body)
        st, _, j = request_json(self.port, "/healthz")
        self.assertIn("ClickHouse", j["error"])
        self.assertEqual(j["checks"], {"clickhouse": "error"})
        st, _, det = request_json(self.port, "/healthz/detailed")
        self.assertEqual(det["checks"]["clickhouse"]["status"], "error")
        self.assertIn("job_runs", det["checks"])
        st, _, f = request_json(self.port, "/healthz/freshness")
        self.assertIn("error", f)
        self.assertEqual(f["data"], [])
        st, _, m = request(self.port, "/metrics")
        self.assertEqual(st, 200)
        self.assertIn("zhost_clickhouse_up 0", m)
        # The page still renders for people.
        st, _, page = request(self.port, "/")
        self.assertEqual(st, 200)
        self.assertIn("unreachable", page)
        self.assertEqual(d.stop(), 0)

    def free_dead_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p

    def test_status_page_in_headless_chromium(self):
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            self.skipTest("chromium is not installed (tools/install-deps.sh test installs it)")
        self.conf(self.jobs(), extra="[freshness]\ndefault = 10000 10000\n")
        self.scalar("CREATE TABLE IF NOT EXISTS t_any (x UInt8) ENGINE = Memory")
        self.lua("rows.lua", 'local s = ch.sink("t_any")\nfor i = 1, 7 do s:add({x = i}) end\n')
        with open(self.conf_path, "a") as fh:
            fh.write("[job rowsy]\nscript = scripts/rows.lua\nschedule = 0 0 1 1 *\n")
        d = self.start()
        self.assertEqual(self.cli("trigger", "rowsy").returncode, 0)
        d.wait_for(r'job=rowsy msg="run finished".*status=success')
        self.wait_idle("rowsy")
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-dev-shm-usage", "--user-data-dir=" + os.path.join(self.tmp, "chrome"),
                            "--dump-dom", "http://127.0.0.1:%d/" % self.port],
                           capture_output=True, text=True, timeout=120)
        dom = r.stdout
        self.assertIn("<title>zhost status</title>", dom, r.stderr[-2000:])
        self.assertRegex(dom, r'<span id="overall" class="st-(ok|warning|error)">')
        self.assertRegex(dom, r'<tr data-job="rowsy"><td class="name">rowsy</td>')
        row = re.search(r'<tr data-job="rowsy">(.*?)</tr>', dom, re.S).group(1)
        self.assertIn('<td class="rows">7</td>', row)
        self.assertRegex(row, r'<svg class="spark"[^>]*data-total="7"')
        self.assertRegex(row, r'<polyline [^>]*points="4\.0,[0-9.]+( [0-9.]+,[0-9.]+){13}"')
        self.assertRegex(dom, r'<tr data-job="gmail_ingest">[^\n]*?<td class="enabled">no</td>')
        self.assertRegex(dom, r'(?s)<table id="freshness">.*data-source="vk_ads"')
        self.assertRegex(dom, r'(?s)<table id="runs">.*<td>rowsy</td>')
        self.assertIn('id="clickhouse" class="st-ok"', dom)
        self.assertNotRegex(dom, r'src="https?://')  # no external assets
        self.assertEqual(d.stop(), 0)


class Robustness(ServeCase):
    def test_malformed_slow_and_many_clients_do_not_stall_the_server_or_jobs(self):
        self.lua("tick.lua", 'log.info("tick")\n')
        self.conf("[job tick]\nscript = scripts/tick.lua\nschedule = every 1s\n")
        with open(self.conf_path) as fh:
            text = fh.read().replace("idle_timeout = 2s", "idle_timeout = 2s\nmax_connections = 40")
        with open(self.conf_path, "w") as fh:
            fh.write(text)
        d = self.start()
        # malformed requests get a 4xx and the connection is closed
        cases = [
            (b"GARBAGE\r\n\r\n", b" 400 "),
            (b"GET nohost HTTP/1.1\r\n\r\n", b" 400 "),
            (b"GET / HTTP/9.9\r\n\r\n", b" 400 "),
            (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", b" 400 "),
            (b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b" 400 "),
            (b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b" 400 "),
            (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b" 501 "),
            (b"POST /healthz HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b" 413 "),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b" 4"),
            (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n", b" 431 "),
            (b"\x00\xff\xfe binary junk \r\n\r\n", b" 400 "),
        ]
        for payload, want in cases:
            out = raw(self.port, payload)
            self.assertTrue(out.startswith(b"HTTP/1.1") and want in out[:20], (payload[:60], out[:200]))
        # slow clients: hold 20 connections sending half a request byte by byte
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        # ... while many fast requests are answered quickly (keep-alive)
        t0 = time.time()
        ticks_before = len(d.grep(r'job=tick msg="run finished"'))
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        while time.time() - t0 < 3:
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            n += 1
        c.close()
        self.assertGreater(n / 3.0, 300, "only %d requests in 3 s" % n)
        # more connections than max_connections: the extras are closed, the server stays up
        extra = []
        for _ in range(60):
            try:
                extra.append(socket.create_connection(("127.0.0.1", self.port), timeout=2))
            except OSError:
                pass
        for s in extra:
            s.close()
        # the slow clients are cut after idle_timeout (2 s)
        time.sleep(2.5)
        for s in slow:
            s.settimeout(2)
            try:
                data = s.recv(100)
            except (ConnectionResetError, socket.timeout):
                data = b""
            self.assertEqual(data, b"", "a slow client was kept past the idle timeout")
            s.close()
        st, _, body = request(self.port, "/healthz")
        self.assertEqual(st, 200)
        # the scheduler kept firing during all this
        ticks_after = len(d.grep(r'job=tick msg="run finished"'))
        self.assertGreaterEqual(ticks_after - ticks_before, 3)
        late = [l for l in d.grep(r'job=tick msg="job due"')]
        self.assertTrue(late)
        st, _, m = request(self.port, "/metrics")
        self.assertRegex(m, r"zhost_health_timeouts_total [1-9]")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
