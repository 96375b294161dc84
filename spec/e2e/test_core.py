"""End-to-end tests of the host core: concurrency, retries, script failures, ClickHouse outage and
the spool, dry runs. Real binary, real ClickHouse, a real local HTTP server."""
import http.server
import json
import os
import re
import shutil
import signal
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

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits = {}
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def count(self, key):
        with Handler.lock:
            Handler.hits[key] = Handler.hits.get(key, 0) + 1
            return Handler.hits[key]

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        n = self.count(path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/slow":
            time.sleep(0.1)
            self.reply(200, b'{"ok":true}', {"Content-Type": "application/json"})
        elif path == "/always503":
            self.reply(503, b"busy")
        elif path == "/429then200":
            if n == 1:
                self.reply(429, b"slow down", {"Retry-After": "1"})
            else:
                self.reply(200, b"fine")
        elif path.startswith("/retry-after/"):
            # 503 with Retry-After 100 s ahead, written in the form the path names, then 200
            form = path.rsplit("/", 1)[1]
            later = time.gmtime(time.time() + 100)
            value = {"imf": time.strftime("%a, %d %b %Y %H:%M:%S GMT", later),
                     "rfc850": time.strftime("%A, %d-%b-%y %H:%M:%S GMT", later),
                     "asctime": time.strftime("%a %b ", later) + ("%2d" % later.tm_mday) + time.strftime(" %H:%M:%S %Y", later),
                     "garbage": "in a while"}[form]
            if n == 1:
                self.reply(503, b"busy", {"Retry-After": value})
            else:
                self.reply(200, b"fine")
        elif path == "/reset-once":
            if n == 1:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.reply(200, b"after reset")
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"short")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path == "/big":
            items = ",".join('{"id":%d,"name":"\\u0418\\u0432\\u0430\\u043d %d"}' % (i, i) for i in range(40000))
            self.reply(200, ('{"data":[%s]}' % items).encode(), {"Content-Type": "application/json"})
        elif path == "/empty":
            self.reply(200, b"")
        elif path == "/malformed":
            self.reply(200, b'{"data": [1, 2,', {"Content-Type": "application/json"})
        elif path == "/echo":
            self.reply(200, json.dumps({"method": self.command, "body": body.decode(), "query": self.path}).encode())
        elif path == "/headers":
            self.reply(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())
        else:
            self.reply(404, b"no")

    do_POST = do_GET


class Server:
    def __init__(self):
        Handler.hits = {}
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ByteCountingRelay:
    """A TCP relay to a local port that notes when it passed how many bytes from client to server,
    and when it first passed the word 'midway' (a marker query)."""

    def __init__(self, port, answer_streamed_inserts=False, hold_stale_question=0):
        self.port = port
        self.marked_at = None
        self.hold_stale_question = hold_stale_question  # seconds the runs-left-running SELECT is held
        self.stale_question_at = None
        self.answer_streamed_inserts = answer_streamed_inserts
        self.answered = 0
        self.sent = []  # (time, bytes) client -> server
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.port))
            except OSError:  # the server is down: so is the relay's side
                c.close()
                continue
            threading.Thread(target=self.pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, False), daemon=True).start()

    def pipe(self, a, b, upstream):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if upstream:
                    head = data[:4096]
                    if (self.answer_streamed_inserts and not self.answered and head.startswith(b"POST ") and
                            b"query=INSERT" in head.split(b"\r\n", 1)[0] and b"transfer-encoding: chunked" in head.lower()):
                        # the first streamed INSERT: answered at once, as by a server that takes what it
                        # has and stops reading (shutting down, say); what follows is read and dropped
                        self.answered += 1
                        a.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        while a.recv(65536):
                            pass
                        break
                    if self.hold_stale_question and b"status = 'running'" in data:
                        self.stale_question_at = time.time()
                        time.sleep(self.hold_stale_question)
                    with self.lock:
                        self.sent.append((time.time(), len(data)))
                        if self.marked_at is None and b"midway" in data:
                            self.marked_at = time.time()
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes_before(self, t):
        with self.lock:
            return sum(n for at, n in self.sent if at < t)

    def stop(self):
        self.stopped = True
        self.sock.close()


class CoreHTTP(zhtest.ZhostCase):
    migrate = False

    def setUp(self):
        super().setUp()
        self.srv = Server()

    def tearDown(self):
        self.srv.stop()
        super().tearDown()

    def run_lua(self, code, *args, env=None):
        path = self.script("t.lua", code)
        return self.zhost("run", path, "--dry-run", *args, env=env)

    def test_concurrency_200_requests_in_about_a_second(self):
        r = self.run_lua("""
            http.configure("slow", {concurrency = 20})
            local items = {}
            for i = 1, 200 do items[i] = i end
            local t0 = time.now()
            local res = assert(task.map(items, 20, function(i)
              local r = assert(http.get("BASE/slow", {source = "slow"}))
              assert(r.status == 200)
              return r:json().ok
            end))
            assert(#res == 200)
            print(string.format("elapsed %.3f", time.now() - t0))
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(Handler.hits.get("/slow"), 200)
        elapsed = float(r.stdout.split("elapsed ")[1].split()[0])
        # 10 rounds of 100 ms; sequential would take 20 s. Allow for a slow CI machine running four
        # tests at a time under ASan.
        self.assertLess(elapsed, 5.0, "200 requests at concurrency 20 took %.2f s" % elapsed)

    def test_json_view_parses_the_body_without_copying_it_into_lua(self):
        # A loader that only calls res:json_view() must not have its pages copied into Lua strings:
        # the body stays in C until res.body is read (the ingest benchmark's pages, ~10% of its
        # CPU). Reading it, pairs() and res:json() still see the whole body.
        r = self.run_lua("""
            local res = assert(http.get("BASE/big"))
            local v = assert(res:json_view())
            assert(#v.data == 40000 and v.data[40000].name == "Иван 39999", "view")
            assert(rawget(res, "body") == nil, "the body was copied into a Lua string")
            local body = res.body
            assert(#body > 1000000 and body:sub(1, 9) == '{"data":[', "body")
            assert(rawget(res, "body") == body)
            assert(#res:json().data == 40000 and #assert(res:json_view()).data == 40000)
            local other = assert(http.get("BASE/big"))
            local keys = {}
            for k, val in pairs(other) do keys[k] = val end
            assert(keys.body == body and keys.status == 200 and keys.headers and keys.url, "pairs")
            other.body = '{"replaced":true}'
            assert(other:json_view().replaced == true and other:json().replaced == true)
            local empty = assert(http.get("BASE/empty"))
            assert(empty.body == "" and rawget(empty, "body") == "")
            local e, err = empty:json_view()
            assert(e == nil and err:find("invalid JSON"), tostring(err))
            -- dropped responses free their bodies (the ASan build reports a leak otherwise)
            for _ = 1, 20 do assert(http.get("BASE/big")) end
            print("ok")
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ok", r.stdout)

    def test_bodies_kept_in_c_survive_garbage_collection(self):
        # Each response's body is found through a weak-keyed table (l_http.c): responses kept while
        # others are dropped and the collector runs must each still have their own body.
        r = self.run_lua("""
            local kept, junk = {}, {}
            local ws = {}
            for w = 1, 6 do
              ws[w] = task.spawn(function()
                for i = 1, 40 do
                  local n = w * 1000 + i
                  local res = assert(http.get("BASE/echo", {query = {n = n}}))
                  if i % 3 == 0 then kept[#kept + 1] = {res = res, n = n} end
                  for k = 1, 300 do junk[(k + i) % 700 + 1] = {tostring(k) .. "x", {k}} end
                end
              end)
            end
            for w = 1, 6 do local ok, err = task.wait(ws[w]); if ok == nil and err then error(err) end end
            for _, k in ipairs(kept) do
              local v = assert(k.res:json_view())
              assert(v.query == "/echo?n=" .. k.n, v.query)
              assert(json.decode(k.res.body).query == v.query)
            end
            print("kept " .. #kept)
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("kept 78", r.stdout)

    def test_concurrency_timing(self):
        # 200 x 100 ms at 20 at a time is 1 s of waiting; sequential would be 20 s.
        start = time.time()
        r = self.run_lua("""
            http.configure("slow", {concurrency = 20})
            local items = {}
            for i = 1, 200 do items[i] = i end
            assert(task.map(items, 20, function() return assert(http.get("BASE/slow", {source = "slow"})).status end))
        """.replace("BASE", self.srv.url))
        took = time.time() - start
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, 6.0, "200 requests at concurrency 20 took %.1f s" % took)

    def test_source_cap_limits_concurrency(self):
        # With a cap of 2, 10 requests of 100 ms need at least 0.5 s even if 10 tasks ask at once.
        start = time.time()
        r = self.run_lua("""
            http.configure("capped", {concurrency = 2})
            local items = {}
            for i = 1, 10 do items[i] = i end
            assert(task.map(items, 10, function() return assert(http.get("BASE/slow", {source = "capped"})).status end))
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(time.time() - start, 0.5)

    def test_retries_stop_at_the_cap(self):
        r = self.run_lua("""
            local r = assert(http.get("BASE/always503", {retry = {attempts = 3, base = 0.01, cap = 0.05}}))
            assert(r.status == 503, r.status)
            assert(r.attempts == 3, r.attempts)
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(Handler.hits.get("/always503"), 3)

    def test_429_retry_after_is_honoured(self):
        start = time.time()
        r = self.run_lua("""
            local r = assert(http.get("BASE/429then200", {retry = {attempts = 3, base = 0.01, cap = 0.02}}))
            assert(r.status == 200 and r.body == "fine")
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(time.time() - start, 0.9, "Retry-After: 1 was not honoured")
        self.assertEqual(Handler.hits.get("/429then200"), 2)

    def test_retry_after_is_read_in_all_three_http_date_forms(self):
        # RFC 9110 5.6.7: IMF-fixdate, the obsolete RFC 850 form and asctime's. A date 100 s ahead is
        # past retry_after_max, so the 503 comes back at once; an unread date would have counted as
        # absent and the request retried (as the garbage value is) -- only IMF-fixdate was read.
        r = self.run_lua("""
            for _, form in ipairs{"imf", "rfc850", "asctime"} do
              local r = assert(http.get("BASE/retry-after/" .. form, {retry = {attempts = 2, base = 0.01, cap = 0.02,
                                                                            retry_after_max = 10}}))
              assert(r.status == 503 and r.attempts == 1, form .. ": HTTP " .. r.status .. " after " .. r.attempts)
              local wait = r.headers["retry-after"]
              print(form, wait)
            end
            local r = assert(http.get("BASE/retry-after/garbage", {retry = {attempts = 2, base = 0.01, cap = 0.02,
                                                                          retry_after_max = 10}}))
            assert(r.status == 200 and r.attempts == 2, "garbage: HTTP " .. r.status)
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr.count('msg="http retry-after too long"'), 3, r.stderr)
        self.assertRegex(r.stdout, r"rfc850\t\w+day, \d\d-\w\w\w-\d\d ")
        self.assertRegex(r.stdout, r"asctime\t\w\w\w \w\w\w [ \d]\d \d\d:")

    def test_connection_reset_is_retried(self):
        r = self.run_lua("""
            local r = assert(http.get("BASE/reset-once", {timeout = 5, retry = {attempts = 3, base = 0.01, cap = 0.02}}))
            assert(r.body == "after reset", r.body)
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_truncated_and_malformed_bodies(self):
        r = self.run_lua("""
            local r, err = http.get("BASE/truncated", {timeout = 5, retry = {attempts = 2, base = 0.01, cap = 0.02}})
            assert(r == nil and err:find("truncated") or err:find("transfer closed") or err:find("Partial"), tostring(err))
            local m = assert(http.get("BASE/malformed"))
            local v, jerr = m:json()
            assert(v == nil and jerr:find("invalid JSON"), tostring(jerr))
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_get_with_body_query_and_form(self):
        r = self.run_lua("""
            local r = assert(http.request{method = "GET", url = "BASE/echo", json = {where = {{column = "payed", value = 1}}}, query = {b = "x y", a = 1}})
            local e = r:json()
            assert(e.method == "GET", e.method)
            local sent = assert(json.decode(e.body))
            assert(sent.where[1].column == "payed" and sent.where[1].value == 1, e.body)
            assert(e.query == "/echo?a=1&b=x%20y", e.query)
            local f = assert(http.post("BASE/echo", {form = {grant_type = "refresh_token", z = "a&b"}})):json()
            assert(f.body == "grant_type=refresh_token&z=a%26b", f.body)
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_header_with_an_empty_value_is_sent(self):
        """"X-Empty: " is how curl is told to drop a header: an empty value never left zhost."""
        r = self.run_lua("""
            local h = assert(http.get("BASE/headers", {headers = {["X-Empty"] = "", ["X-Full"] = "f"}})):json()
            assert(h["x-empty"] == "" and h["x-full"] == "f", json.encode(h))
        """.replace("BASE", self.srv.url))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_connection_refused_is_an_error_value(self):
        r = self.run_lua("""
            local r, err = http.get("http://127.0.0.1:9/", {retry = {attempts = 2, base = 0.01, cap = 0.01}})
            assert(r == nil and err:find("127.0.0.1:9"), tostring(err))
        """)
        self.assertEqual(r.returncode, 0, r.stderr)


class ScriptFailures(zhtest.ZhostCase):
    migrate = False

    def test_runtime_error_names_file_and_line(self):
        path = self.script("boom.lua", "local x = 1\nlocal t = nil\nprint(t.field)\n")
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 1)
        self.assertIn("boom.lua:3:", r.stderr)
        self.assertIn("stack traceback", r.stderr)
        self.assertIn("zhost: boom failed:", r.stderr.splitlines()[-1])

    def test_an_error_object_whose_tostring_fails_is_not_a_crash(self):
        """error(obj) whose __tostring raises (or waits) made the host call it unprotected: the
        process aborted with 'PANIC: unprotected error in call to Lua API'."""
        cases = {
            "raises.lua": ("error(setmetatable({}, {__tostring = function() error('again') end}))\n",
                           "(error object is a table value)"),
            "waits.lua": ("error(setmetatable({}, {__tostring = function() sleep(1) return 'slept' end}))\n",
                          "(error object is a table value)"),
            "named.lua": ("error(setmetatable({}, {__tostring = function() return 'custom message' end}))\n",
                          "custom message"),
            "sub.lua": ("local t = task.spawn(function() error(setmetatable({}, {__tostring = function() error('x') end})) end)\n"
                        "local v, err = t:wait()\nerror('sub: ' .. err, 0)\n", "sub: (error object is a table value)"),
        }
        for name, (body, msg) in cases.items():
            with self.subTest(script=name):
                r = self.zhost("run", self.script(name, "-- zhost: job=eo\n" + body), "--dry-run")
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertNotIn("PANIC", r.stderr)
                self.assertEqual(r.stderr.splitlines()[-1], "zhost: eo failed: " + msg)

    def test_a_script_saved_with_a_byte_order_mark_runs(self):
        """A script (or a required module) saved by a Windows editor with a UTF-8 BOM was a syntax
        error, "unexpected symbol near '<\\239>'"; lua(1) skips the mark."""
        os.makedirs(os.path.join(self.tmp, "lib"), exist_ok=True)
        with open(os.path.join(self.tmp, "lib", "bomlib.lua"), "wb") as fh:
            fh.write(b"\xef\xbb\xbfreturn { answer = 42 }\n")
        path = os.path.join(self.tmp, "bom.lua")
        with open(path, "wb") as fh:
            fh.write(b"\xef\xbb\xbf-- zhost: job=bomjob\nprint(job.name, require('bomlib').answer)\n")
        c = self.zhost("check", path)
        self.assertEqual((c.returncode, c.stdout), (0, path + ": ok\n"), c.stderr)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("bomjob\t42\n", r.stdout)

    def test_syntax_error(self):
        path = self.script("bad.lua", "local x = \nfunction(\n")
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.lua:", r.stderr)
        c = self.zhost("check", path)
        self.assertEqual(c.returncode, 1)
        self.assertRegex(c.stderr, r"bad\.lua:\d+:")

    def test_infinite_loop_is_stopped(self):
        path = self.script("spin.lua", "local n = 0\nwhile true do n = n + 1 end\n")
        start = time.time()
        r = self.zhost("run", path, "--dry-run", "--cpu-budget", "1")
        self.assertEqual(r.returncode, 1)
        self.assertLess(time.time() - start, 10)
        self.assertIn("CPU budget", r.stderr)

    def test_a_script_stuck_inside_one_c_call_still_ends(self):
        # A backtracking pattern runs in lstrlib without a VM instruction, so the budget's hook never
        # fires: the watchdog ends the process a few seconds after the stop was due.
        path = self.script("pattern.lua", 'print(("a"):rep(40):find(("a*"):rep(40) .. "b"))\n')
        start = time.time()
        r = self.zhost("run", path, "--dry-run", "--cpu-budget", "1", timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertLess(time.time() - start, 20)
        self.assertIn("the CPU budget was exceeded, but the script did not stop within 5 s", r.stderr)

    def test_pcall_cannot_swallow_the_budget(self):
        path = self.script("spin2.lua", "while true do pcall(function() while true do end end) end\n")
        r = self.zhost("run", path, "--dry-run", "--cpu-budget", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("CPU budget", r.stderr)

    def test_budget_reaches_loops_in_coroutines_and_subtasks(self):
        # The budget hook is set on whichever coroutine runs when the watchdog fires: a user
        # coroutine inside the task, or a sub-task, must be stopped as well.
        cases = {
            "co.lua": "coroutine.wrap(function() while true do end end)()\n",
            "co2.lua": "local co = coroutine.create(function() while true do coroutine.yield() end end)\n"
                       "while true do coroutine.resume(co) end\n",
            "sub.lua": "local t = task.spawn(function() local n = 0 while true do n = n + 1 end end)\n"
                       "local ok, err = task.wait(t)\nerror(err, 0)\n",
        }
        for name, body in cases.items():
            with self.subTest(script=name):
                start = time.time()
                r = self.zhost("run", self.script(name, body), "--dry-run", "--cpu-budget", "1")
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("CPU budget", r.stderr)
                self.assertLess(time.time() - start, 10)

    def test_a_long_busy_script_within_its_budget_finishes(self):
        # The watchdog looks in every 100 ms; a script busy for ~1.5 s under a 5 s budget must
        # not be stopped by the checks themselves.
        path = self.script("long.lua", "local t0 = os.clock() local n = 0\n"
                           "while os.clock() - t0 < 1.5 do n = n + 1 end\nprint('done', n > 0)\n")
        r = self.zhost("run", path, "--dry-run", "--cpu-budget", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("done\ttrue", r.stdout)

    def test_undeclared_global_is_refused(self):
        path = self.script("glob.lua", "counter = 1\n")
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 1)
        self.assertIn("assignment to undeclared global 'counter'", r.stderr)

    def test_io_in_a_non_yieldable_place_is_a_clear_error(self):
        path = self.script("sortio.lua", "local t = {3, 1, 2}\ntable.sort(t, function(a, b) sleep(0) return a < b end)\n")
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot wait", r.stderr)

    def test_usage_errors(self):
        self.assertEqual(self.zhost("run").returncode, 2)
        self.assertEqual(self.zhost("run", "x.lua", "--days", "zero").returncode, 2)
        self.assertEqual(self.zhost("run", "x.lua", "--days", "1", "--since", "2025-01-01").returncode, 2)
        self.assertEqual(self.zhost("run", "x.lua", "--since", "2025-13-01").returncode, 2)
        self.assertEqual(self.zhost("nonsense").returncode, 2)
        self.assertEqual(self.zhost("help", "run").returncode, 0)
        # a tuning variable that does not read stops every command before it runs (tunables.c):
        # ZHOST_SPOOL_MAX_BYTES=2G was read as 2 bytes, and an outage's batches were lost
        plain = self.script("never.lua", "-- zhost: job=never\nerror('must not run')\n")
        r = self.zhost("run", plain, env={"ZHOST_SPOOL_MAX_BYTES": "2 gigs"})
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(), "zhost: ZHOST_SPOOL_MAX_BYTES='2 gigs' does not read: it must be a size in "
                                           "bytes from 1 (1048576, 512M, 2G) (or unset for the default)")
        self.assertEqual(self.zhost("help", "run", env={"ZHOST_SPOOL_MAX_BYTES": "2 gigs"}).returncode, 0)
        r = self.zhost("spool", "status", "--spool", self.tmp, "--piece-bytes", "4 megs")
        self.assertEqual((r.returncode, r.stderr.strip()), (2, "zhost spool: --piece-bytes must be a size from 1K to 1G "
                                                               "(4M, 4194304), not '4 megs'"))
        self.assertEqual(self.zhost("spool", "status", "--spool", self.tmp, "--piece-bytes", "4M").returncode, 0)

    def test_unknown_script_option_is_refused(self):
        plain = self.script("plain.lua", "-- zhost: job=plain\nerror('must not run')\n")
        r = self.zhost("run", plain, "--dryrun")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option --dryrun", r.stderr)
        withopt = self.script("withopt.lua", "-- zhost: job=withopt options=csv,mode\nassert(job.args.csv == 'f.csv')\n")
        self.assertEqual(self.zhost("run", withopt, "--csv", "f.csv", "--dry-run").returncode, 0)
        r = self.zhost("run", withopt, "--cvs", "f.csv", "--dry-run")
        self.assertEqual(r.returncode, 2)
        self.assertIn("it takes --csv, --mode", r.stderr)

    def test_missing_script(self):
        r = self.zhost("run", "/nonexistent/x.lua")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)


class LocalClickHouseUnreachableFolder(unittest.TestCase):
    """tools/clickhouse-local.sh as root on a folder the clickhouse user cannot reach (a checkout
    under /root, mode 700 on Debian: `./dev demo` keeps its server in var/demo of the checkout)."""

    def test_starts_and_stops(self):
        if os.geteuid() != 0 or subprocess.run(["id", "clickhouse"], capture_output=True).returncode != 0:
            self.skipTest("needs root and a clickhouse user")
        tool = os.path.join(zhtest.SOURCE_DIR, "tools", "clickhouse-local.sh")
        private = tempfile.mkdtemp(prefix="zhost-private-")  # 0700, owned by root
        self.addCleanup(shutil.rmtree, private, True)
        chdir = os.path.join(private, "clickhouse")
        port, tcp = zhtest.free_ports(2)
        self.addCleanup(subprocess.run, [tool, "stop", chdir], capture_output=True, timeout=120)
        out = subprocess.run([tool, "start", chdir, str(port), str(tcp)], capture_output=True, text=True, timeout=120)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "http://127.0.0.1:%d" % port), out.stderr)
        with urllib.request.urlopen("http://127.0.0.1:%d/?query=SELECT%%2042" % port, timeout=30) as r:
            self.assertEqual(r.read().strip(), b"42")
        subprocess.run([tool, "stop", chdir], capture_output=True, timeout=120)
        with self.assertRaises(OSError):
            urllib.request.urlopen("http://127.0.0.1:%d/ping" % port, timeout=5)


class ClickHouseOutage(zhtest.ZhostCase):
    """ClickHouse stopped mid-run: rows go to the spool, the run fails with the count, and a replay
    after the restart delivers every row exactly once as the views see it."""
    migrate = False

    def setUp(self):
        super().setUp()
        self.chdir = tempfile.mkdtemp(prefix="zhost-ch-")
        self.port, self.tcp_port = zhtest.free_ports(2)
        self.start_ch()
        self.env["CLICKHOUSE_URL"] = "http://127.0.0.1:%d" % self.port
        self.env["ZHOST_CH_ATTEMPTS"] = "2"
        self.env["ZHOST_CH_BACKOFF_CAP"] = "0.2"
        r = self.zhost("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)

    def start_ch(self):
        out = subprocess.run([os.path.join(zhtest.SOURCE_DIR, "tools", "clickhouse-local.sh"), "start", self.chdir,
                              str(self.port), str(self.tcp_port)], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)

    def stop_ch(self):
        # An outage, not a shutdown: SIGKILL after 1 s (18.16 waits ~11 s for a client that
        # holds an unfinished INSERT open).
        subprocess.run([os.path.join(zhtest.SOURCE_DIR, "tools", "clickhouse-local.sh"), "stop", self.chdir, "1"],
                       capture_output=True, timeout=120)

    def tearDown(self):
        self.stop_ch()
        shutil.rmtree(self.chdir, ignore_errors=True)
        super().tearDown()

    def count_orders(self):
        """(rows the dedup view shows, distinct orders) on this test's own ClickHouse."""
        url = "http://127.0.0.1:%d/?query=%s" % (self.port, urllib.parse.quote(
            "SELECT count(), uniqExact(order_id) FROM %s.v_qtickets_orders_latest" % self.db))
        with urllib.request.urlopen(url, timeout=30) as r:
            a, b = r.read().decode().split()
            return int(a), int(b)

    def test_local_clickhouse_started_twice_still_stops(self):
        # tools/clickhouse-local.sh start on a folder whose server is up overwrote server.pid with
        # a server that died on the busy ports, so `stop` left the real one running.
        tool = os.path.join(zhtest.SOURCE_DIR, "tools", "clickhouse-local.sh")
        again = subprocess.run([tool, "start", self.chdir, str(self.port), str(self.tcp_port)],
                               capture_output=True, text=True, timeout=120)
        self.assertEqual((again.returncode, again.stdout.strip()), (0, "http://127.0.0.1:%d" % self.port), again.stderr)
        self.stop_ch()
        with self.assertRaises(OSError):
            urllib.request.urlopen("http://127.0.0.1:%d/ping" % self.port, timeout=5)

    def test_outage_during_a_streamed_insert_spools_the_whole_batch(self):
        # The INSERT of a large batch is running (streamed) when ClickHouse stops: every row of the
        # batch - sent or not yet - is spooled, and the replay gives each order once in the views,
        # whatever part of the cut stream the server kept.
        flag = os.path.join(self.tmp, "go")
        script = self.script("streamload.lua", """
            local s = assert(ch.sink("stg_qtickets_api_orders_raw", {max_age = 120}))
            local pad = string.rep("u", 300)
            local function add(i)
              s:add{order_id = tostring(i), event_id = "e1", payed = 1, created_at = "2025-11-01 10:00:00",
                    sale_ts = "2025-11-01 10:00:00", price = "100.50", original_price = "100.50", currency = "RUB",
                    utm_source = "", utm_medium = "", utm_campaign = "", utm_content = pad, utm_term = "",
                    client_id = "", promo_code_id = "", baskets_total = 1, baskets_live = 1, _ver = 1}
            end
            for i = 1, 2000 do add(i) end
            local f = "FLAG"
            while not io.read_file(f) do sleep(0.1) end
            for i = 2001, 3000 do add(i) end
        """.replace("FLAG", flag))
        relay = ByteCountingRelay(self.port)
        self.addCleanup(relay.stop)
        p = self.zhost_bg("run", script, env={"CLICKHOUSE_URL": relay.url})
        deadline = time.time() + 60
        while time.time() < deadline and relay.bytes_before(time.time()) < 1000000:
            time.sleep(0.1)
        self.assertGreater(relay.bytes_before(time.time()), 1000000, "the batch was not streamed")
        self.stop_ch()
        with open(flag, "w") as fh:
            fh.write("go")
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("3000 rows spooled", err)
        self.start_ch()
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.count_orders(), (3000, 3000))

    def test_clickhouse_down_at_the_streaming_question_is_not_a_proxy(self):
        # Before its first stream a process asks whether chunked bodies reach ClickHouse. When
        # ClickHouse does not answer at all, that says nothing about a proxy: no warning blaming
        # one, batches go whole (here: spooled) and the question is asked again later.
        path = self.script("nostream_down.lua", """
            local s = assert(ch.sink("dim_events"))
            local name = string.rep("n", 120)
            for i = 1, 4000 do
              s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1}
              if i % 1000 == 0 then sleep(0.05) end
            end
        """)
        r = self.zhost("run", path)  # ClickHouse up: the sink's schema is cached
        self.assertEqual(r.returncode, 0, r.stderr)
        self.stop_ch()
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug"})
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("could not ask whether chunked bodies reach ClickHouse", r.stderr)
        self.assertNotIn("did not reach ClickHouse whole", r.stderr)
        self.assertIn("4000 rows spooled", r.stderr)

    def test_outage_mid_run_spools_and_replays_exactly_once(self):
        flag = os.path.join(self.tmp, "go")
        script = self.script("load.lua", """
            local s = assert(ch.sink("stg_qtickets_api_orders_raw", {max_rows = 100}))
            local function add(i)
              s:add{order_id = tostring(i), event_id = "e1", payed = 1, created_at = "2025-11-01 10:00:00",
                    sale_ts = "2025-11-01 10:00:00", price = "100.50", original_price = "100.50", currency = "RUB",
                    utm_source = "", utm_medium = "", utm_campaign = "", utm_content = "", utm_term = "",
                    client_id = "", promo_code_id = "", baskets_total = 1, baskets_live = 1, _ver = 1}
            end
            for i = 1, 300 do add(i) end
            assert(s:flush())
            -- wait for the test to stop ClickHouse
            local f = "FLAG"
            while not io.read_file(f) do sleep(0.1) end
            for i = 301, 1000 do add(i) end
        """.replace("FLAG", flag))
        p = self.zhost_bg("run", script)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.count_orders()[0] >= 300:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        self.stop_ch()
        with open(flag, "w") as fh:
            fh.write("go")
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("700 rows spooled", err)
        st = self.zhost("spool", "status")
        self.assertIn("700 rows", st.stdout)
        self.start_ch()
        self.assertEqual(self.count_orders(), (300, 300))
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.count_orders(), (1000, 1000))
        # The run log rows were spooled too and arrive with the replay: one failed run.
        st = self.zhost("spool", "status")
        self.assertIn("total: 0 files", st.stdout)
        # Replaying the same rows again (a replay interrupted after delivery) does not double them.
        path = os.path.join(self.tmp, "again")
        os.makedirs(path)
        lines = "".join(json.dumps({"order_id": str(i), "event_id": "e1", "payed": 1, "created_at": "2025-11-01 10:00:00",
                                    "sale_ts": "2025-11-01 10:00:00", "price": 100.50, "original_price": 100.50,
                                    "currency": "RUB", "baskets_total": 1, "baskets_live": 1, "_ver": 1}) + "\n"
                        for i in range(301, 1001))
        with open(os.path.join(path, "%s.stg_qtickets_api_orders_raw~again.jsonl" % self.db), "w") as fh:
            fh.write(lines)
        r = self.zhost("spool", "replay", "--spool", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.count_orders(), (1000, 1000))


class HungClickHouse(zhtest.ZhostCase):
    """A ClickHouse that takes connections and never answers: what a script bounds with its own time
    limits ends within them, and the run's own meta_job_runs rows do not hold its end."""

    def setUp(self):
        super().setUp()
        self.hung = socket.socket()
        self.hung.bind(("127.0.0.1", 0))
        self.hung.listen(64)
        self.hung_url = "http://127.0.0.1:%d" % self.hung.getsockname()[1]

    def tearDown(self):
        self.hung.close()
        super().tearDown()

    def run_hung(self, path):
        t0 = time.time()
        r = self.zhost("run", path, env={"CLICKHOUSE_URL": self.hung_url, "ZHOST_LOG_LEVEL": "info"}, timeout=120)
        return r, time.time() - t0

    def test_a_sink_with_a_time_limit_spools_instead_of_waiting(self):
        # ch.sink(table, {timeout =, attempts =}) bounds its DESCRIBE and its INSERTs; without them
        # each waits 300 s per attempt on a hung server
        r = self.zhost("run", self.script("cache.lua", 'assert(ch.sink("dim_events"))\n'))
        self.assertEqual(r.returncode, 0, r.stderr)  # the schema is cached beside the spool
        path = self.script("hung.lua", """
            local t0 = time.now()
            local s = assert(ch.sink("dim_events", {timeout = 1, attempts = 1}))
            assert(time.now() - t0 < 3, "the DESCRIBE waited " .. (time.now() - t0))
            s:add{event_id = "1", event_name = "E", city = "X", _ver = 1}
            local ok, err = s:close()
            assert(ok == nil and err:find("1 rows spooled: ClickHouse unreachable", 1, true), tostring(err))
            assert(time.now() - t0 < 5, "the INSERT waited " .. (time.now() - t0))
        """)
        r, took = self.run_hung(path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("1 rows spooled to", r.stderr.strip().splitlines()[-1])
        self.assertTrue(any(f.startswith(self.db + ".dim_events~") for f in os.listdir(self.spool)), os.listdir(self.spool))
        self.assertLess(took, 20, r.stderr)

    def test_the_run_log_does_not_hold_the_end_of_a_run(self):
        # The final meta_job_runs row waited for the "running" row's insert, 4 x 300 s against a hung
        # server. The running row is now dropped (the final row replaces it), and once a request has
        # timed out the final row gets one 5 s attempt and goes to the spool.
        # ch.exec takes the same limits (it had none: 4 x 300 s)
        path = self.script("probe.lua", """
            local t0 = time.now()
            local ok, xerr = ch.exec("OPTIMIZE TABLE zakaz.dim_events", {timeout = 1, attempts = 1})
            assert(ok == nil and xerr:find("timeout", 1, true), tostring(xerr))
            assert(time.now() - t0 < 3, "ch.exec waited " .. (time.now() - t0))
            local r, err = ch.query("SELECT 1", {timeout = 1, attempts = 1})
            assert(r == nil and err:find("timeout", 1, true), tostring(err))
        """)
        r, took = self.run_hung(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, 15, r.stderr)
        self.assertIn('msg="run log row spooled"', r.stderr)
        logs = [f for f in os.listdir(self.spool) if f.startswith(self.db + ".meta_job_runs_raw~")]
        self.assertEqual(len(logs), 1, os.listdir(self.spool))
        with open(os.path.join(self.spool, logs[0])) as fh:
            rows = [json.loads(line) for line in fh if line.startswith("{")]
        self.assertEqual([row["status"] for row in rows], ["success"])


class Migrate(zhtest.ZhostCase):
    def test_bookkeeping_table_is_the_one_0001_defines(self):
        # The applier creates schema_migrations before 0001 runs, so its definition is the one that
        # counts: it made a plain MergeTree where 0001 (and docs/schema.md) say ReplacingMergeTree.
        self.assertEqual(self.scalar("SELECT engine FROM system.tables WHERE database = '%s' "
                                     "AND name = 'schema_migrations'" % self.db), "ReplacingMergeTree")


class RunLog(zhtest.ZhostCase):
    def kill_a_run_of(self, job):
        """Starts a run of job that sleeps, kills it (SIGKILL) once its "running" row is there."""
        p = self.zhost_bg("run", self.script(job + ".lua", "-- zhost: job=%s\nsleep(30)\n" % job))
        deadline = time.time() + 20
        while time.time() < deadline and not self.q("SELECT run_id FROM meta_job_runs WHERE job = '%s'" % job):
            time.sleep(0.1)
        p.kill()
        p.communicate()

    def test_a_huge_error_message_is_cut_where_it_is_recorded(self):
        """error("bad page: " .. body) put the whole body into meta_job_runs.message, the run's
        last line and the log (the alert mails and the status page show that message)."""
        path = self.script("huge.lua", "-- zhost: job=hugeerr\nerror('bad page: ' .. string.rep('\u044f', 500000), 0)\n")
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 1, r.stderr[-300:])
        last = r.stderr.splitlines()[-1]
        self.assertLess(len(last.encode()), 4100)
        self.assertTrue(last.startswith("zhost: hugeerr failed: bad page: \u044f\u044f"), last[:80])
        self.assertTrue(last.endswith("\u044f... (1000010 bytes in all)"), last[-80:])
        runs = self.runs("hugeerr")
        self.assertEqual([x["status"] for x in runs], ["error"])
        self.assertLess(len(runs[0]["message"].encode()), 4100)
        self.assertTrue(runs[0]["message"].endswith("... (1000010 bytes in all)"))

    def test_killed_run_is_marked_interrupted_by_the_next_run(self):
        self.kill_a_run_of("slowjob")
        self.assertEqual([r["status"] for r in self.runs("slowjob")], ["running"])
        quick = self.script("quick.lua", "-- zhost: job=slowjob\n")
        r = self.zhost("run", quick)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(r["status"] for r in self.runs("slowjob")), ["interrupted", "success"])

    def test_the_check_for_runs_left_running_does_not_hold_up_the_run(self):
        # `zhost run` asks for runs of its job left "running" by a dead process while the script
        # starts (it cost every run a round trip first), and does not exit before the marks are made.
        self.kill_a_run_of("slowjob2")
        relay = ByteCountingRelay(urllib.parse.urlparse(zhtest.CH_URL).port, hold_stale_question=1.5)
        try:
            quick = self.script("quick2.lua", "-- zhost: job=slowjob2\nassert(ch.query(\"SELECT 'midway' AS marker\"))\n")
            r = self.zhost("run", quick, env={"CLICKHOUSE_URL": relay.url})
        finally:
            relay.stop()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNotNone(relay.stale_question_at, "the runs-left-running question did not pass the relay")
        self.assertIsNotNone(relay.marked_at, "the script's query did not pass the relay")
        self.assertLess(relay.marked_at, relay.stale_question_at + 1.0, "the script waited for the question")
        self.assertIn("marking a run left running as interrupted", r.stderr)
        self.assertEqual(sorted(r["status"] for r in self.runs("slowjob2")), ["interrupted", "success"])

    def test_a_live_run_is_not_marked(self):
        path = self.script("live.lua", "-- zhost: job=livejob\nsleep(3)\n")
        p = self.zhost_bg("run", path)
        deadline = time.time() + 20
        while time.time() < deadline and not self.q("SELECT run_id FROM meta_job_runs WHERE job = 'livejob'"):
            time.sleep(0.1)
        r = self.zhost("run", self.script("other.lua", "-- zhost: job=livejob\n"))
        self.assertEqual(r.returncode, 0, r.stderr)
        p.communicate(timeout=30)
        self.assertEqual(sorted(r["status"] for r in self.runs("livejob")), ["success", "success"])

    def test_sigterm_mid_run_flushes_and_records_interrupted(self):
        path = self.script("term.lua", """-- zhost: job=termjob
            local s = assert(ch.sink("dim_events", {max_rows = 100000, max_age = 600}))
            for i = 1, 50 do s:add{event_id = tostring(i), event_name = "E", city = "Москва", _ver = 1} end
            sleep(60)
        """)
        p = self.zhost_bg("run", path)
        deadline = time.time() + 20
        while time.time() < deadline and not self.q("SELECT run_id FROM meta_job_runs WHERE job = 'termjob'"):
            time.sleep(0.1)
        time.sleep(0.3)
        p.terminate()
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "50")
        self.assertEqual([r["status"] for r in self.runs("termjob")], ["interrupted"])

    def test_insert_error_names_the_clickhouse_error(self):
        zhtest.ch("CREATE TABLE %s.narrow (code FixedString(2), _ver UInt64) ENGINE = MergeTree ORDER BY tuple()" % self.db)
        path = self.script("narrow.lua", """
            local s = assert(ch.sink("narrow"))
            s:add{code = "too long for two bytes", _ver = 1}
        """)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 1)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("1 rows spooled", last)
        self.assertRegex(last, r"ClickHouse error \d+")


    def test_a_day_the_calendar_does_not_have_is_refused_by_the_sink(self):
        """2025-02-30 passed the YYYY-MM-DD check and ClickHouse stored it as 2025-03-02 without a word."""
        zhtest.ch("CREATE TABLE %s.days (id UInt32, d Date, t DateTime) ENGINE = MergeTree ORDER BY id" % self.db)
        path = self.script("days.lua", """
            local s = assert(ch.sink("days"))
            local bad = {}
            for i, v in ipairs{"2025-02-29", "2025-04-31", "2025-13-01", "2025-00-05", "2025-01-00"} do
              local ok, err = pcall(s.add, s, {id = i, d = v})
              bad[#bad + 1] = (not ok) and err:find('"' .. v .. '" is no day of the calendar', 1, true) and "x" or "-"
            end
            for i, v in ipairs{"2025-02-30 10:00:00", "2025-01-01 24:00:00", "2025-01-01 12:60:00", "2025-01-01T12:00:60"} do
              local ok, err = pcall(s.add, s, {id = 10 + i, t = v})
              bad[#bad + 1] = (not ok) and err:find("is no time of the calendar", 1, true) and "x" or "-"
            end
            assert(table.concat(bad) == "xxxxxxxxx", table.concat(bad))
            local ok, err = pcall(s.add, s, {id = 30, d = "2025-1-5"})
            assert(not ok and err:find('expected YYYY-MM-DD, got "2025-1-5"', 1, true), err)
            s:add{id = 20, d = "2024-02-29", t = "2024-02-29T23:59:59"}
            s:add{id = 21, d = "0000-00-00", t = "0000-00-00 00:00:00"}     -- ClickHouse's zero date
            assert(s:close())
        """)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT id, toString(d) AS d, toString(t) AS t FROM days ORDER BY id"),
                         [{"id": 20, "d": "2024-02-29", "t": "2024-02-29 23:59:59"},
                          {"id": 21, "d": "0000-00-00", "t": "0000-00-00 00:00:00"}])


    def test_a_float_into_a_decimal_column_is_rounded_to_its_scale(self):
        """12.3 * 3 is 36.900000000000006: ClickHouse 18.16 refused it ("Decimal value is too small",
        also for 1e-05) and with it the whole batch, which went to the spool."""
        zhtest.ch("CREATE TABLE %s.money (id UInt32, m Decimal(18, 2), n Nullable(Decimal(18, 4))) "
                  "ENGINE = MergeTree ORDER BY id" % self.db)
        path = self.script("money.lua", """
            local s = assert(ch.sink("money"))
            s:add{id = 1, m = 12.3 * 3, n = 0.1 + 0.2}
            s:add{id = 2, m = 1e-5, n = 1.5e-7}
            s:add{id = 3, m = 0.125, n = -0.00005}
            s:add{id = 4, m = "7.5", n = 1e13}
            local ok, err = pcall(s.add, s, {id = 5, m = 1e300})
            assert(not ok and err:find("expected a decimal number that fits", 1, true), err)
            assert(s:close())
        """)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.q("SELECT id, toString(m) AS m, toString(n) AS n FROM money ORDER BY id"),
                         [{"id": 1, "m": "36.90", "n": "0.3000"}, {"id": 2, "m": "0.00", "n": "0.0000"},
                          {"id": 3, "m": "0.13", "n": "-0.0001"}, {"id": 4, "m": "7.50", "n": "10000000000000.0000"}])


class DryRun(zhtest.ZhostCase):
    def test_dry_run_writes_nothing(self):
        before = self.scalar("SELECT count() FROM meta_job_runs_raw")
        path = self.script("dry.lua", """
            local s = assert(ch.sink("dim_events"))
            for i = 1, 5 do s:add{event_id = tostring(i), event_name = "Событие " .. i, city = "Москва", _ver = 1} end
        """)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("dim_events: 5 rows", r.stdout)
        self.assertIn("Событие 1", r.stdout)
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "0")
        self.assertEqual(self.scalar("SELECT count() FROM meta_job_runs_raw"), before)

    def test_query_types(self):
        path = self.script("types.lua", """
            local r = assert(ch.query("SELECT toUInt64(18446744073709551615) AS big, toInt32(-5) AS i, " ..
              "toDecimal64('12.50', 2) AS d, toNullable(toInt8(1)) AS n, CAST(NULL AS Nullable(String)) AS z, " ..
              "toLowCardinality(toNullable(toInt32(5))) AS lc, 'a\\tb' AS s, toFloat64(1.5) AS f"))[1]
            assert(r.big == "18446744073709551615", tostring(r.big))
            assert(math.type(r.i) == "integer" and r.i == -5)
            assert(r.d == "12.50", tostring(r.d))
            assert(math.type(r.n) == "integer" and r.n == 1)
            assert(r.z == nil)
            assert(math.type(r.lc) == "integer" and r.lc == 5, tostring(r.lc))
            assert(r.s == "a\tb", r.s)
            assert(r.f == 1.5)
        """)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_format_in_a_comment_or_a_string_is_not_the_querys(self):
        # ch.query returns rows unless the SQL ends with a FORMAT clause of its own. The check was
        # textual: "-- FORMAT CSV" in a trailing comment gave the raw body, a comment after the
        # query's own FORMAT (or a tab before its name) added a second FORMAT, and so did a trailing ';'.
        path = self.script("fmt.lua", """
            local function rows(sql)
              local r, err = ch.query(sql)
              assert(type(r) == "table", sql .. " -> " .. tostring(r or err))
              return r
            end
            local function raw(sql)
              local r, err = ch.query(sql)
              assert(type(r) == "string", sql .. " -> " .. tostring(err or type(r)))
              return r
            end
            assert(rows("SELECT 1 AS a -- FORMAT CSV")[1].a == 1)
            assert(rows("SELECT 1 AS a /* FORMAT CSV */")[1].a == 1)
            assert(rows("SELECT 'use FORMAT CSV' AS s")[1].s == "use FORMAT CSV")
            assert(rows("SELECT 1 AS a;")[1].a == 1)
            assert(rows("SELECT 2 AS a; -- done")[1].a == 2)
            assert(raw("SELECT 1 AS a FORMAT CSV -- as CSV") == "1\\n")
            assert(raw("SELECT 1 AS a FORMAT CSV /* as CSV */") == "1\\n")
            assert(raw("SELECT 1 AS a\\nFORMAT\\tCSV") == "1\\n")
            assert(raw("SELECT 1 AS a FORMAT CSV;") == "1\\n")
        """)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_real_run_records_one_run(self):
        path = self.script("real.lua", """
            local s = assert(ch.sink("dim_events"))
            for i = 1, 5 do s:add{event_id = tostring(i), event_name = "E" .. i, city = "Москва", _ver = 1} end
            job:metric("pages", 2)
        """)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        runs = self.runs("real")
        self.assertEqual(len(runs), 1, runs)
        self.assertEqual(runs[0]["status"], "success")
        self.assertEqual(int(runs[0]["rows_processed"]), 5)
        m = json.loads(runs[0]["metrics"])
        self.assertEqual(m["pages"], 2)
        self.assertEqual(m["tables"]["dim_events"], 5)
        self.assertIn("duration", m)
        self.assertEqual(self.scalar("SELECT visitParamExtractInt(metrics, 'pages') FROM meta_job_runs WHERE job = 'real'"), "2")

    def test_default_batch_is_one_insert_per_50000_rows(self):
        # Every INSERT makes ClickHouse write a MergeTree part: 10,000-row batches spent twice the
        # ClickHouse CPU of 50,000-row ones on the ingest benchmark. 60,000 small rows with the
        # default options: one INSERT of 50,000 when the batch fills, one of 10,000 at the end.
        path = self.script("batch.lua", """
            local s = assert(ch.sink("dim_events"))
            for i = 1, 60000 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        inserts = re.findall(r'msg="insert" table=\S*dim_events rows=(\d+)', r.stderr)
        self.assertEqual(inserts, ["50000", "10000"], r.stderr[-2000:])
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "60000")

    def test_a_large_batch_is_sent_while_it_is_made(self):
        # From 256 KiB on, the batch's INSERT starts and reads rows as they are added; the run's end
        # no longer waits for a whole batch to be sent. A relay in front of ClickHouse counts the
        # bytes it passes on: while the script sleeps mid-batch, the first rows are already through.
        relay = ByteCountingRelay(urllib.parse.urlsplit(zhtest.CH_URL).port)
        self.addCleanup(relay.stop)
        path = self.script("stream.lua", """
            local s = assert(ch.sink("dim_events"))
            local name = string.rep("n", 120)
            for i = 1, 4000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            sleep(0.5)
            assert(ch.query("SELECT 'midway' AS marker"))
            for i = 4001, 8000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            assert(s:close())
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug", "CLICKHOUSE_URL": relay.url}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNotNone(relay.marked_at, "the marker query did not pass the relay")
        self.assertGreater(relay.bytes_before(relay.marked_at), 256 << 10, r.stderr[-2000:])
        self.assertEqual(re.findall(r'msg="insert" table=\S*dim_events rows=(\d+) bytes=\d+ streamed=true', r.stderr),
                         ["8000"], r.stderr[-2000:])
        self.assertEqual(self.scalar("SELECT count(), uniqExact(event_id) FROM dim_events"), "8000\t8000")

    def test_an_insert_answered_before_its_end_is_not_taken_as_delivered(self):
        # A server that answers 200 while the batch is still being streamed has not got all of it:
        # the INSERT is retried (the retry goes through) - no row of it counts as delivered before.
        relay = ByteCountingRelay(urllib.parse.urlsplit(zhtest.CH_URL).port, answer_streamed_inserts=True)
        self.addCleanup(relay.stop)
        path = self.script("early.lua", """
            local s = assert(ch.sink("dim_events"))
            local name = string.rep("n", 120)
            for i = 1, 4000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            sleep(0.3)
            for i = 4001, 6000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
        """)
        r = self.zhost("run", path, env={"CLICKHOUSE_URL": relay.url, "ZHOST_CH_ATTEMPTS": "2",
                                         "ZHOST_CH_BACKOFF_CAP": "0.1"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(relay.answered, 1)
        self.assertIn('msg="clickhouse retry" attempt=2 of=2', r.stderr)
        self.assertIn("answered 200 before the end of the request (", r.stderr)
        self.assertEqual(self.scalar("SELECT count(), uniqExact(event_id) FROM dim_events"), "6000\t6000")

    def test_rows_added_while_an_insert_finishes_keep_their_order_and_count(self):
        # Rows added while an INSERT is being answered go to the other buffer, then move to the
        # buffer that INSERT gives back (so the other stays small): none lost, none doubled.
        path = self.script("moved.lua", """
            local s = assert(ch.sink("dim_events", {max_rows = 3000}))
            local name = string.rep("n", 120)
            for i = 1, 20000 do
              s:add{event_id = tostring(i), event_name = name, city = "X", _ver = i}
              if i % 50 == 0 then sleep(0.001) end
            end
            assert(s:close())
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rows added meanwhile moved to the sent batch's buffer", r.stderr)
        rows = [int(n) for n in re.findall(r'msg="insert" table=\S*dim_events rows=(\d+)', r.stderr)]
        self.assertEqual(sum(rows), 20000, rows)
        self.assertEqual(self.scalar("SELECT count(), uniqExact(event_id), sum(toUInt64(event_id) = _ver) "
                                     "FROM dim_events"), "20000\t20000\t20000")

    def test_streaming_can_be_turned_off(self):
        # For a proxy in front of ClickHouse that cannot pass a chunked request body.
        path = self.script("nostream.lua", """
            local s = assert(ch.sink("dim_events"))
            local name = string.rep("n", 120)
            for i = 1, 4000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug", "ZHOST_CH_STREAM_BYTES": "0"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("insert stream started", r.stderr)
        self.assertEqual(re.findall(r'msg="insert" table=\S*dim_events rows=(\d+) bytes=\d+\n', r.stderr + "\n"), ["4000"])
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "4000")

    def test_a_sink_with_a_timeout_sends_whole_batches(self):
        # A stream stays open while rows are added (up to 20 s): under a sink's own per-statement
        # timeout it would be cut, so such a sink never streams. The same rows without one do (the
        # sleep lets the one-off question whether chunked bodies reach ClickHouse be answered).
        code = """
            local s = assert(ch.sink("dim_events"OPTS))
            local name = string.rep("n", 120)
            for i = 1, 4000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            sleep(0.5)
            for i = 4001, 8000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            assert(s:close())
        """
        env = {"ZHOST_LOG_LEVEL": "debug", "ZHOST_CH_STREAM_BYTES": "1000"}
        r = self.zhost("run", self.script("timed.lua", code.replace("OPTS", ", {timeout = 60, attempts = 2}")), env=env,
                       timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("insert stream started", r.stderr)
        self.assertEqual(re.findall(r'msg="insert" table=\S*dim_events rows=(\d+) bytes=\d+\n', r.stderr + "\n"), ["8000"])
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "8000")
        r = self.zhost("run", self.script("untimed.lua", code.replace("OPTS", "")), env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("insert stream started", r.stderr)

    def test_a_stream_ends_within_its_time_whatever_max_age_says(self):
        # A server stops waiting for a request body that stays silent (current releases'
        # http_receive_timeout is 30 s); a stream ends within $ZHOST_CH_STREAM_SECONDS (default 20)
        # even when the sink's max_age is longer. Here 1 s, max_age 60 s.
        path = self.script("streamtime.lua", """
            local s = assert(ch.sink("dim_events", {max_age = 60}))
            local name = string.rep("n", 120)
            for i = 1, 4000 do s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1} end
            sleep(2)
            log.info("after the pause")
            s:add{event_id = "4001", event_name = name, city = "X", _ver = 1}
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug", "ZHOST_CH_STREAM_SECONDS": "1"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        inserts = [m.start() for m in re.finditer(r'msg="insert" table=\S*dim_events rows=4000 bytes=\d+ streamed=true', r.stderr)]
        self.assertEqual(len(inserts), 1, r.stderr[-3000:])
        self.assertLess(inserts[0], r.stderr.index("after the pause"))
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "4001")

    def test_sinks_that_do_not_set_max_age_take_the_operators(self):
        # $ZHOST_SINK_MAX_AGE: how long a row waits in a batch when the script's sink does not say
        # (default 5 s). The row must be in ClickHouse while the script still sleeps.
        path = self.script("age.lua", """
            local s = assert(ch.sink("dim_events"))
            s:add{event_id = "1", event_name = "E", city = "X", _ver = 1}
            sleep(2.5)
            job:set("seen", ch.query("SELECT count() AS n FROM dim_events")[1].n)
        """)
        r = self.zhost("run", path, env={"ZHOST_SINK_MAX_AGE": "0.2"}, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([json.loads(x["metrics"]).get("seen") for x in self.runs()], [1], self.runs())

    def test_a_small_batch_is_sent_whole(self):
        # A run-log row or a day of ad statistics is sent in one piece when the batch is flushed.
        path = self.script("small.lua", """
            local s = assert(ch.sink("dim_events"))
            for i = 1, 100 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
        """)
        r = self.zhost("run", path, env={"ZHOST_LOG_LEVEL": "debug"}, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("insert stream started", r.stderr)
        self.assertEqual(re.findall(r'msg="insert" table=\S*dim_events rows=(\d+)', r.stderr), ["100"])

    def test_flush_while_an_insert_is_in_flight_waits_for_the_rest(self):
        # max_rows = 2: the second add starts an INSERT; the third row is buffered while it runs, and
        # flush() must send that row too once the first INSERT is done (it used to wait forever).
        path = self.script("inflight.lua", """
            local s = assert(ch.sink("dim_events", {max_rows = 2}))
            for i = 1, 3 do s:add{event_id = tostring(i), event_name = "E" .. i, city = "X", _ver = 1} end
            assert(s:flush())
            job:set("flushed", s:count())
        """)
        r = self.zhost("run", path, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("internal error", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "3")


class RunEndings(zhtest.ZhostCase):
    """Every way a `zhost run` ends — success, script error, a stall, SIGINT while waiting or busy —
    flushes its rows, records the run and exits without touching freed memory (these tests also
    run in the ASan+UBSan build, where such a touch aborts with a report on stderr). The scripts'
    finalizers call job functions after the run is over: refused, not a use-after-free."""

    FINALIZER = 'local keep = setmetatable({}, {__gc = function() job:set("collected", true) end})\n'

    def assert_clean(self, stderr):
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "internal error"):
            self.assertNotIn(bad, stderr)

    def wait_running(self, job):
        deadline = time.time() + 20
        while time.time() < deadline and not self.q("SELECT run_id FROM meta_job_runs WHERE job = '%s'" % job):
            time.sleep(0.1)

    def test_tasks_waiting_on_each_other_fail_the_run_with_one_line(self):
        # The loop runs out of work with the script still waiting: the run used to end with
        # "internal error: the loop ended before the run finished" and a use-after-free (the
        # __close handler called job:metric on the freed run).
        path = self.script("stall.lua", """-- zhost: job=stalljob
local s = assert(ch.sink("dim_events"))
for i = 1, 7 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
assert(s:flush()) -- rows still buffered would keep the loop busy until their age timer
local guard <close> = setmetatable({}, {__close = function() job:metric("closed") end})
""" + self.FINALIZER + """local a
local b = task.spawn(function() return task.wait(a) end)
a = task.spawn(function() return task.wait(b) end)
task.wait(a)
""")
        r = self.zhost("run", path, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assert_clean(r.stderr)
        self.assertRegex(r.stderr.splitlines()[-1],
                         r"^zhost: stalljob failed: stalled: the script waits at \S*stall\.lua:10 and nothing is left "
                         r"that could wake it \(3 of its tasks waiting\)$")
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "7")
        runs = self.runs("stalljob")
        self.assertEqual([(x["status"], int(x["rows_processed"])) for x in runs], [("error", 7)])
        self.assertTrue(runs[0]["message"].startswith("stalled: the script waits at"), runs[0]["message"])
        self.assertEqual(json.loads(runs[0]["metrics"])["closed"], 1)

    def test_sigint_while_waiting_flushes_and_records_interrupted(self):
        path = self.script("intr.lua", """-- zhost: job=intrjob
local s = assert(ch.sink("dim_events", {max_rows = 100000, max_age = 600}))
for i = 1, 5 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
""" + self.FINALIZER + """task.spawn(function() sleep(60) end)
sleep(60)
""")
        p = self.zhost_bg("run", path)
        self.wait_running("intrjob")
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 1, err)
        self.assert_clean(err)
        self.assertEqual(err.splitlines()[-1], "zhost: intrjob failed: interrupted (SIGINT)")
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "5")
        self.assertEqual([x["status"] for x in self.runs("intrjob")], ["interrupted"])

    def proxy(self, hangs, stop, answer=None, delay=None):
        """A ClickHouse in front of the real one: requests whose query `hangs(query)` selects are
        held without an answer until `stop` is set; `answer(query)` may return (status, body) to
        send instead; `delay(query, body)` may return seconds to wait before passing a request
        through; the rest pass through at once."""
        real = zhtest.CH_URL

        class Proxy(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [""])[0]
                if hangs(query or body.decode("utf-8", "replace")):
                    stop.wait(60)
                    return
                if delay:
                    time.sleep(delay(query, body.decode("utf-8", "replace")) or 0)
                canned = answer(query or body.decode("utf-8", "replace")) if answer else None
                if canned:
                    self.send_response(canned[0])
                    self.send_header("Content-Length", str(len(canned[1])))
                    self.end_headers()
                    self.wfile.write(canned[1])
                    return
                req = urllib.request.Request(real + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower().startswith("x-clickhouse")})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        code, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    code, data = e.code, e.read()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    def test_429_from_a_proxy_in_front_of_clickhouse_is_retried(self):
        # A load balancer in front of ClickHouse may answer 429: the INSERT is tried again, not
        # spooled at once.
        path = self.script("busy.lua", """-- zhost: job=busyjob
local s = assert(ch.sink("dim_events"))
for i = 1, 3 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
assert(s:flush())
""")
        refused = []

        def answer(q):
            if "dim_events" in q and q.lstrip().upper().startswith("INSERT") and len(refused) < 2:
                refused.append(q)
                return 429, b"Too Many Requests"
            return None
        stop = threading.Event()
        srv = self.proxy(lambda q: False, stop, answer)
        try:
            r = self.zhost("run", path, env={"CLICKHOUSE_URL": "http://127.0.0.1:%d" % srv.server_address[1]})
        finally:
            stop.set()
            srv.shutdown()
            srv.server_close()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(refused), 2)
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "3")
        self.assertFalse([n for n in os.listdir(self.spool) if n.endswith(".jsonl")] if os.path.isdir(self.spool) else [])

    def interrupt_with_the_look_for_killed_runs_held(self, job, ready, delay=None):
        """Runs a one-line script of `job` through a proxy that holds zhost run's look for killed
        runs of its job (a query of at most 5 s) and delays requests as `delay` says, sends Ctrl-C
        once `ready(process)` returns, and gives (return code, stderr, seconds from Ctrl-C to exit)."""
        path = self.script(job + ".lua", "-- zhost: job=%s\njob:set('ran', true)\n" % job)
        stop = threading.Event()
        srv = self.proxy(lambda q: "status = 'running'" in q, stop, delay=delay)
        try:
            p = self.zhost_bg("run", path, env={"CLICKHOUSE_URL": "http://127.0.0.1:%d" % srv.server_address[1]})
            ready(p)
            p.send_signal(signal.SIGINT)
            t0 = time.time()
            out, err = p.communicate(timeout=30)
            return p.returncode, err, time.time() - t0
        finally:
            stop.set()
            srv.shutdown()
            srv.server_close()

    def test_sigint_while_only_the_look_for_killed_runs_is_left(self):
        # Once the run is over, Ctrl-C must not be ignored while the look for killed runs is still
        # out: the process exits at once with the run's own result (the next start asks again).
        def run_recorded(p):
            deadline = time.time() + 20
            while time.time() < deadline and [r["status"] for r in self.runs("earlyjob")] != ["success"]:
                time.sleep(0.1)
            self.assertEqual(p.poll(), None, "exited before the question was answered")

        code, err, took = self.interrupt_with_the_look_for_killed_runs_held("earlyjob", run_recorded)
        self.assertEqual(code, 0, err)
        self.assertLess(took, 3.0, "waited for the held question after Ctrl-C")
        self.assert_clean(err)
        self.assertEqual([r["status"] for r in self.runs("earlyjob")], ["success"])

    def test_sigint_while_the_final_row_is_written_does_not_wait_for_the_look_for_killed_runs(self):
        # Ctrl-C that lands while the run's final row is on its way (the run has not ended yet, a
        # moment later it has) must not leave the process waiting out the look either.
        final_sent = threading.Event()

        def slow_final_row(query, body):
            if "meta_job_runs" in query and '"status":"success"' in body.replace(" ", ""):
                final_sent.set()
                return 1.0
            return 0

        code, err, took = self.interrupt_with_the_look_for_killed_runs_held(
            "latejob", lambda p: self.assertTrue(final_sent.wait(20), "the final row never came"), delay=slow_final_row)
        self.assertLess(took, 3.0, "waited for the held look for killed runs after Ctrl-C")
        self.assertEqual([r["status"] for r in self.runs("latejob")], ["success"], err)
        self.assertEqual(code, 0, err)

    def test_second_sigint_stops_waiting_for_clickhouse(self):
        # The first Ctrl-C cancels the run, which then flushes its rows to a ClickHouse that takes
        # INSERTs and never answers them (queries pass through to the real server). The second one
        # must give the prompt back at once, with the rows in the spool rather than lost.
        path = self.script("hang.lua", """-- zhost: job=hangjob
local s = assert(ch.sink("dim_events", {max_rows = 100000, max_age = 600}))
for i = 1, 5 do s:add{event_id = tostring(i), event_name = "E", city = "X", _ver = 1} end
job:set("added", true)
sleep(60)
""")
        stop = threading.Event()
        srv = self.proxy(lambda q: q.lstrip().upper().startswith("INSERT"), stop)
        try:
            url = "http://127.0.0.1:%d" % srv.server_address[1]
            p = self.zhost_bg("run", path, env={"CLICKHOUSE_URL": url})
            time.sleep(3)  # started, schema read through the proxy, rows added, sleeping
            self.assertIsNone(p.poll())
            p.send_signal(signal.SIGINT)
            time.sleep(1.5)
            self.assertIsNone(p.poll(), "still flushing to a ClickHouse that does not answer")
            t0 = time.time()
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
            self.assertLess(time.time() - t0, 5)
        finally:
            stop.set()
            srv.shutdown()
            srv.server_close()
        self.assertEqual(p.returncode, 1, err)
        self.assert_clean(err)
        self.assertTrue(any(line.startswith("zhost: hangjob interrupted again: not waiting for ClickHouse")
                            for line in err.splitlines()), err)
        spooled = 0
        for name in os.listdir(self.spool):
            if name.endswith(".jsonl") and ".dim_events~" in name:
                with open(os.path.join(self.spool, name)) as f:
                    spooled += sum(1 for line in f if line.strip())
        self.assertEqual(spooled, 5, os.listdir(self.spool))
        # and `zhost spool replay` delivers them once the server answers again
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM dim_events"), "5")

    def test_sigint_in_a_busy_script(self):
        path = self.script("spin.lua", "-- zhost: job=spinjob\n" + self.FINALIZER +
                           'job:set("started", true)\nio.write("spinning\\n")\nlocal n = 0\nwhile true do n = n + 1 end\n')
        p = self.zhost_bg("run", path)
        # Not wait_running: the busy script never lets the loop send the run's `running` row.
        self.assertEqual(p.stdout.readline(), "spinning\n")
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 1, err)
        self.assert_clean(err)
        self.assertEqual(err.splitlines()[-1], "zhost: spinjob failed: interrupted (SIGINT)")
        # The hook stops the busy script before the loop can run the signal's handler; the run is
        # still recorded as interrupted, like a waiting one.
        self.assertEqual([(x["status"], x["message"]) for x in self.runs("spinjob")],
                         [("interrupted", "interrupted (SIGINT)")])

    def test_success_and_script_error_with_finalizers(self):
        ok = self.script("fin_ok.lua", "-- zhost: job=finok\n" + self.FINALIZER + 'job:metric("pages", 1)\n')
        r = self.zhost("run", ok)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_clean(r.stderr)
        bad = self.script("fin_bad.lua", "-- zhost: job=finbad\n" + self.FINALIZER + 'error("boom")\n')
        r = self.zhost("run", bad)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assert_clean(r.stderr)
        self.assertIn("zhost: finbad failed: ", r.stderr.splitlines()[-1])
        self.assertIn("fin_bad.lua:3: boom", r.stderr.splitlines()[-1])
        self.assertEqual(sorted((x["job"], x["status"]) for x in self.runs()), [("finbad", "error"), ("finok", "success")])


if __name__ == "__main__":
    unittest.main()
