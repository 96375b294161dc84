"""ClickHouse 18.16 (what the tests run on) vs current releases (23.x-25.x, production): the parts
of a current server's HTTP answers that 18.16 cannot show, played by a proxy in front of the real
18.16. The proxy passes every request through and rewrites the answers a test picks into the shape
a current server sends. See docs/clickhouse-compat.md."""
import http.server
import os
import re
import sys
import threading
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402


class CurrentServer:
    """A proxy to the real ClickHouse. `answer(query)` may return (status, body, headers) to send
    instead of the real answer; `rewrite(query, status, body)` may return a new body for a real
    answer; `rewrite_query(query)` may change the SQL sent on; `rewrite_path(path)` the URL path and
    query string. Every query is kept in .queries, the URL of the latest request in .last_path."""

    def __init__(self, answer=None, rewrite=None, rewrite_query=None, rewrite_path=None):
        real = zhtest.CH_URL
        self.queries = []
        outer = self

        class Proxy(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, body, headers):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [""])[0]
                q = query or body.decode("utf-8", "replace")
                outer.queries.append(q)
                outer.last_path = self.path
                if rewrite_path:
                    self.path = rewrite_path(self.path)
                canned = answer(q) if answer else None
                if canned:
                    self.send(*canned)
                    return
                if rewrite_query:
                    new = rewrite_query(q)
                    if new != q:
                        outer.queries.append(new)
                        if query:
                            parts = urllib.parse.urlsplit(self.path)
                            qs = urllib.parse.parse_qs(parts.query)
                            qs["query"] = [new]
                            self.path = parts.path + "?" + urllib.parse.urlencode(qs, doseq=True)
                        else:
                            body = new.encode()
                req = urllib.request.Request(real + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower().startswith("x-clickhouse")
                                                      or k.lower() in ("content-encoding", "accept-encoding")})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        code, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    code, data = e.code, e.read()
                if rewrite:
                    data = rewrite(q, code, data)
                self.send(code, data, {"X-ClickHouse-Summary": '{"read_rows":"0","read_bytes":"0"}'})

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class ClickHouseCompat(zhtest.ZhostCase):
    def run_via(self, server, path, **env):
        e = {"CLICKHOUSE_URL": server.url, "ZHOST_CH_BACKOFF_CAP": "0.2"}
        e.update(env)
        try:
            return self.zhost("run", path, env=e)
        finally:
            server.stop()

    def test_error_inside_a_json_format_is_not_retried(self):
        # Since 23.9 a failing query with a JSON output format gets its exception inside the JSON
        # (http_write_exception_in_output_format) and the code in X-ClickHouse-Exception-Code. It is
        # the script's error, not an outage: one request, the code and text in the error.
        path = self.script("jsonerr.lua", """-- zhost: job=jsonerr
local body, err = ch.query("SELECT throwIf(1) AS x FORMAT JSON")
assert(body == nil)
print("ERR " .. err)
""")
        body = (b'{\n\t"meta":\n\t[\n\t\t{\n\t\t\t"name": "x",\n\t\t\t"type": "UInt8"\n\t\t}\n\t],\n\n\t"data":\n\t[\n\n\t],\n\n'
                b'\t"rows": 0,\n\n\t"exception": "Code: 395. DB::Exception: Value passed to \'throwIf\' function is '
                b'non-zero. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version 24.8.4.13 (official build))"\n}\n')

        def answer(q):
            if "throwIf" in q:
                return 500, body, {"Content-Type": "application/json; charset=UTF-8",
                                   "X-ClickHouse-Exception-Code": "395"}
            return None
        srv = CurrentServer(answer=answer)
        r = self.run_via(srv, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ERR ClickHouse error 395: Value passed to 'throwIf' function is non-zero. "
                      "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)\n", r.stdout)
        self.assertEqual(len([q for q in srv.queries if "throwIf" in q]), 1, srv.queries)
        self.assertNotIn("clickhouse retry", r.stderr)

    def test_bool_columns_are_lua_booleans(self):
        # Current servers have a Bool type (TSV text "true"/"false"); 18.16 has none. As a string,
        # "false" would be truthy in a script's `if row.active then`.
        path = self.script("booltype.lua", """-- zhost: job=booltype
local rows = assert(ch.query("SELECT 1 AS yes, 0 AS no, NULL AS unknown"))
local r = rows[1]
print("VALUES", type(r.yes), tostring(r.yes), type(r.no), tostring(r.no), tostring(r.unknown))
""")

        def answer(q):
            if "AS yes" in q:
                return 200, (b"yes\tno\tunknown\nBool\tBool\tNullable(Bool)\ntrue\tfalse\t\\N\n"), \
                    {"Content-Type": "text/tab-separated-values; charset=UTF-8"}
            return None
        srv = CurrentServer(answer=answer)
        r = self.run_via(srv, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("VALUES\tboolean\ttrue\tboolean\tfalse\tnil\n", r.stdout)

    def test_error_code_only_in_the_header(self):
        # 23.9-24.2 with wait_end_of_query=1 (which zhost always sends) and a JSON format answer an
        # error with an empty body: the header alone says it is ClickHouse's error 62.
        path = self.script("hdrerr.lua", """-- zhost: job=hdrerr
local body, err = ch.query("SELECT nonsense( FORMAT JSONCompact")
print("ERR " .. tostring(err))
""")

        def answer(q):
            if "nonsense" in q:
                return 400, b"", {"X-ClickHouse-Exception-Code": "62"}
            return None
        srv = CurrentServer(answer=answer)
        r = self.run_via(srv, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ERR ClickHouse error 62 (HTTP 400, no message)\n", r.stdout)

    def test_server_error_with_the_header_is_not_retried_but_one_without_is(self):
        # A 500 that carries an exception code is an answer (memory limit, bad data): retrying it
        # four times only delays the error. A bare 500 (no code: a proxy, a crash) is retried.
        path = self.script("five.lua", """-- zhost: job=five
local _, err1 = ch.query("SELECT 'coded'")
local _, err2 = ch.query("SELECT 'bare'")
print("ERR1 " .. tostring(err1))
print("ERR2 " .. tostring(err2))
""")

        def answer(q):
            if "'coded'" in q:
                return 500, b"Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED) " \
                            b"(version 25.3.2.39 (official build))\n", {"X-ClickHouse-Exception-Code": "241"}
            if "'bare'" in q:
                return 500, b"", {}
            return None
        srv = CurrentServer(answer=answer)
        r = self.run_via(srv, path, ZHOST_CH_ATTEMPTS="3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ERR1 ClickHouse error 241: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)\n", r.stdout)
        self.assertIn("ERR2 ClickHouse HTTP 500\n", r.stdout)
        self.assertEqual(len([q for q in srv.queries if "'coded'" in q]), 1)
        self.assertEqual(len([q for q in srv.queries if "'bare'" in q]), 3)

    def test_fresh_migrate_on_a_server_that_requires_join_aliases(self):
        # Since 20.3 a subquery in a JOIN needs an alias (joined_subquery_requires_alias, checked at
        # CREATE VIEW by the 24.3+ analyzer). 0004-0007 have none and cannot change; 0008 re-creates
        # their views with aliases. So on such a server migrate applies the files with the check off
        # (when system.settings has it) and ends with every view aliased.
        for d in (self.db, self.bi):  # setUp migrated through 18.16 directly: start from nothing
            zhtest.ch("DROP DATABASE IF EXISTS " + d)
        unaliased = re.compile(r"\)\s*(?:(?:ALL|ANY)\s+)?(?:(?:INNER|LEFT)\s+)?JOIN\b|\)\s*USING\b", re.I)
        refused = []

        def answer(q):
            if "system.settings" in q and "joined_subquery_requires_alias" in q:
                return 200, b"1\n", {}
            if q.lstrip().upper().startswith("CREATE VIEW") and unaliased.search(q) \
                    and "joined_subquery_requires_alias=0" not in srv.last_path:
                refused.append(q)
                return 500, (b"Code: 206. DB::Exception: No alias for subquery or table function in JOIN (set "
                             b"joined_subquery_requires_alias=0 to disable restriction). (ALIAS_REQUIRED) "
                             b"(version 24.8.4.13 (official build))\n"), {"X-ClickHouse-Exception-Code": "206"}
            return None

        def strip_setting(path):  # 18.16 behind the proxy does not know the setting
            return path.replace("&joined_subquery_requires_alias=0", "")
        srv = CurrentServer(answer=answer, rewrite_path=strip_setting)
        e = {"CLICKHOUSE_URL": srv.url}
        try:
            r = self.zhost("migrate", env=e)
        finally:
            srv.stop()
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertEqual(refused, [])
        self.assertIn("applied 0008_join_aliases", r.stdout)
        # what is left in force has an alias on every joined subquery (0008), on the real server
        views = self.q("SELECT name, create_table_query FROM system.tables WHERE database = '%s' AND engine = 'View'"
                       % self.db)
        self.assertTrue(views)
        bad = [v["name"] for v in views if unaliased.search(v["create_table_query"])]
        self.assertEqual(bad, [])

    def test_sink_with_a_current_describe(self):
        # Current servers answer DESCRIBE with three more columns (comment, codec_expression,
        # ttl_expression). zhost reads the first four by position; the rows still go in.
        path = self.script("desc.lua", """-- zhost: job=desc
local s = assert(ch.sink("dim_events"))
s:add{event_id = "1", event_name = "E", city = "X", is_active = 1, _ver = 7}
assert(s:flush())
""")

        def rewrite(q, status, data):
            if q.startswith("DESCRIBE TABLE") and status == 200:
                lines = data.decode().splitlines()
                out = []
                for ln in lines:
                    f = ln.split("\t")[:4]
                    f += ["a comment" if f[0] == "event_name" else "", "CODEC(ZSTD(1))" if f[0] == "_ver" else "", ""]
                    out.append("\t".join(f))
                return ("\n".join(out) + "\n").encode()
            return data
        srv = CurrentServer(rewrite=rewrite)
        r = self.run_via(srv, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(any(q.startswith("DESCRIBE TABLE") for q in srv.queries))
        self.assertEqual(self.q("SELECT event_id, event_name, city, toString(_ver) AS v FROM dim_events"),
                         [{"event_id": "1", "event_name": "E", "city": "X", "v": "7"}])

    def test_a_proxy_that_drops_chunked_bodies_gets_whole_inserts(self):
        # Large batches are streamed as chunked request bodies. This proxy, like many small ones,
        # reads a body by its Content-Length only and would pass an empty INSERT on - ClickHouse
        # answers 200 and the rows are gone. zhost asks first (a chunked SELECT whose answer must
        # come back) and sends whole INSERTs when the answer does not.
        path = self.script("bigbatch.lua", """-- zhost: job=bigbatch
local s = assert(ch.sink("dim_events"))
local name = string.rep("n", 120)
for i = 1, 6000 do
  s:add{event_id = tostring(i), event_name = name, city = "X", _ver = 1}
  if i % 500 == 0 then sleep(0.01) end
end
""")
        srv = CurrentServer()
        r = self.run_via(srv, path, ZHOST_LOG_LEVEL="debug")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("a chunked request body did not reach ClickHouse whole", r.stderr)
        self.assertNotIn("insert stream started", r.stderr)
        self.assertEqual(self.q("SELECT count() AS n, uniqExact(event_id) AS u FROM dim_events"), [{"n": "6000", "u": "6000"}])

    def test_restore_of_an_18_16_backup_on_a_current_server(self):
        # 21.9 stopped writing Decimal trailing zeros, toString included: 12.50 became 12.5. The
        # content checksum hashes toString(tuple(*)), so a backup made on 18.16 and restored on a
        # current server (an upgrade, a move) showed MISMATCH for every table with money in it
        # although every row was there. The proxy plays such a server: its version() and its
        # Decimal text; the table without Decimal columns is still compared.
        zhtest.ch("INSERT INTO %s.fact_vk_ads_daily (stat_date, account_id, spent, _ver) VALUES "
                  "('2025-11-01', 1, 12.50, 1), ('2025-11-02', 1, 3.00, 1), ('2025-11-03', 1, 0.07, 1)" % self.db)
        zhtest.ch("INSERT INTO %s.dim_events (event_id, event_name, _ver) VALUES ('1', 'E', 1)" % self.db)
        bdir = os.path.join(self.tmp, "backups")
        r = self.zhost("backup", "full", "--dir", bdir)
        self.assertEqual(r.returncode, 0, r.stderr)
        name = sorted(n for n in os.listdir(bdir) if n.startswith("chbk_"))[0]

        def answer(q):
            if q.strip().startswith("SELECT version()"):
                return 200, b"24.8.4.13\n", {}
            return None

        def untrail(q):
            return q.replace("toString(tuple(*))", "replaceRegexpAll(replaceRegexpAll(toString(tuple(*)), "
                                                   "'(\\\\.[0-9]*?)0+([,)])', '\\\\1\\\\2'), '\\\\.([,)])', '\\\\1')")

        srv = CurrentServer(answer=answer, rewrite_query=untrail)
        into, bi_into = self.db + "_r", self.bi + "_r"
        try:
            r = self.zhost("backup", "restore", name, "--dir", bdir, "--into", into, "--bi-into", bi_into,
                           env={"CLICKHOUSE_URL": srv.url})
        finally:
            srv.stop()
            for d in (into, bi_into):
                zhtest.ch("DROP DATABASE IF EXISTS " + d)
        self.assertTrue(any("replaceRegexpAll" in q for q in srv.queries), (r.stdout, r.stderr, srv.queries[:5]))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        line = [ln for ln in r.stdout.splitlines() if ".fact_vk_ads_daily" in ln][0]
        self.assertIn("not checked (Decimal/Float text differs between ClickHouse 18.16", line)
        self.assertIn(" 3 ", line)
        line = [ln for ln in r.stdout.splitlines() if ".dim_events" in ln][0]
        self.assertTrue(line.rstrip().endswith(" ok"), line)
        self.assertIn(" 0 mismatches", r.stdout)


class NoDateTimeVsDate(unittest.TestCase):
    """18.16 compares a DateTime with a Date as raw numbers (seconds against days), so
    `started_at >= today() - 7` keeps every row there and filters on current releases (schema.md
    §6). No query zhost sends or tells an operator to run may do it."""

    def test_sources(self):
        pat = re.compile(r"\b\w+_(at|ts)\s*(>=|<=|>|<|=)\s*today\(\)")
        hits = []
        for top in ("host", "scripts"):
            for d, _, files in os.walk(os.path.join(zhtest.SOURCE_DIR, top)):
                for f in files:
                    if f.endswith((".c", ".lua")):
                        path = os.path.join(d, f)
                        with open(path, encoding="utf-8") as fh:
                            for n, line in enumerate(fh, 1):
                                if pat.search(line):
                                    hits.append("%s:%d: %s" % (os.path.relpath(path, zhtest.SOURCE_DIR), n, line.strip()))
        self.assertEqual(hits, [])


if __name__ == "__main__":
    unittest.main()
