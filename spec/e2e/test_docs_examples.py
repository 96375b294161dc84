"""docs/lua-api.md stays true: its runnable examples run, and every Lua function is documented.

Examples are the ```lua blocks right after a `<!-- run -->` comment (see "How the examples are
tested" at the end of docs/lua-api.md). Each runs as its own script with the real binary and must
exit 0; the asserts inside them are the documented results.

  <!-- run -->                 no network: --dry-run, ClickHouse unreachable
  <!-- run: http -->           https://api.example.com is this file's fake API
  <!-- run: ch [dry-run] -->   the test ClickHouse, in a fresh migrated database

Also here: the tests of two fixes the documentation work found (require's per-run cache shared
by nested modules; ch.exec sending nothing in a dry run).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import zhtest
from zhtest import SOURCE_DIR, ZHOST

DOC = os.path.join(SOURCE_DIR, "docs", "lua-api.md")
FRAGMENTS = sorted(glob.glob(os.path.join(SOURCE_DIR, "docs", "api", "*.md")))
FAKE_BASE = "https://api.example.com"
SECRETS = {"API_TOKEN": "docs-example-token-123", "API_LOGIN": "demo", "PLAN_API_TOKEN": "plan-token-456"}

MARKER = re.compile(r"^<!--\s*run(?::\s*([a-z\- ]*?))?\s*-->\s*$")


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def extract(path):
    """[(path, line, words, code)] for every ```lua block right after a run marker."""
    out = []
    lines = read(path).split("\n")
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i].strip())
        if m and i + 1 < len(lines) and lines[i + 1].strip() == "```lua":
            start = i + 2
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            words = set((m.group(1) or "").split())
            unknown = words - {"http", "ch", "dry-run"}
            if unknown:
                raise ValueError("%s:%d: unknown run marker words %s" % (path, i + 1, sorted(unknown)))
            out.append((path, start + 1, words, "\n".join(lines[start:end]) + "\n"))
            i = end
        elif m:
            raise ValueError("%s:%d: a run marker must be followed by a ```lua line" % (path, i + 1))
        i += 1
    return out


def all_examples():
    ex = extract(DOC)
    for f in FRAGMENTS:
        ex += extract(f)
    return ex


# ---- the fake API behind https://api.example.com ----

class FakeState:
    def __init__(self):
        self.reset()

    def reset(self):
        self.counts = {}
        self.tokens = 0

    def bump(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj, headers=None):
        body = (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        st = self.server.state
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        page = int(q.get("page", ["1"])[0])
        if u.path == "/v1/echo":
            return self.reply(200, {"method": self.command, "path": u.path, "query": u.query, "body": body,
                                    "headers": {k.lower(): v for k, v in self.headers.items()}})
        if u.path == "/v1/events":
            return self.reply(200, {"data": [{"id": page * 10 + 1, "name": "Concert A"},
                                             {"id": page * 10 + 2, "name": "Concert B"}],
                                    "next_page": page + 1 if page < 2 else None})
        if u.path == "/v1/flaky":
            if st.bump("flaky") % 3 != 0:
                return self.reply(503, {"error": "busy"}, {"Retry-After": "0"})
            return self.reply(200, {"ok": True})
        if u.path == "/v1/plan":
            if self.headers.get("Authorization") != "Bearer " + SECRETS["PLAN_API_TOKEN"]:
                return self.reply(401, {"error": "unauthorized"})
            items = [{"date": "01.11.2025", "event_id": 101, "city": " Москва ", "tickets": 120, "revenue": "1 234,50"},
                     {"date": "2025-11-02", "event_id": 102, "city": "Казань", "tickets": 80, "revenue": "990"}]
            if page == 1:
                return self.reply(200, {"items": items, "next_page": 2})
            return self.reply(200, {"items": items[:1], "next_page": None})
        if self.command == "POST" and u.path == "/oauth/token":
            form = urllib.parse.parse_qs(body)
            if "grant_type" not in form or form.get("client_id") != ["demo"]:
                return self.reply(400, {"error": "invalid_request"})
            st.tokens += 1
            return self.reply(200, {"access_token": "docs-access-token-%d" % st.tokens, "expires_in": 3600,
                                    "token_type": "Bearer"})
        if self.command == "POST" and u.path.endswith("/token/delete.json"):
            return self.reply(200, {})
        return self.reply(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class FakeServer:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.state = FakeState()
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self):
        self.httpd.state.reset()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- running examples ----

def prepare_dir(tmp):
    """Example scripts live in tmp/ with lib/ pointing at scripts/lib, so require() finds the libraries."""
    os.symlink(os.path.join(SOURCE_DIR, "scripts", "lib"), os.path.join(tmp, "lib"))
    secrets = os.path.join(tmp, "secrets")
    os.makedirs(secrets, mode=0o700, exist_ok=True)
    for name in ("docs_example", "plan_api"):
        path = os.path.join(secrets, ".env." + name)
        with open(path, "w") as fh:
            for k, v in SECRETS.items():
                fh.write("%s=%s\n" % (k, v))
        os.chmod(path, 0o600)
    return secrets


def run_example(tmp, env, example, fake_url=None, dry_run=True):
    path, line, words, code = example
    if "http" in words:
        code = code.replace(FAKE_BASE, fake_url)
    script = os.path.join(tmp, "example_%s_%d.lua" % (os.path.basename(path).replace(".md", ""), line))
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(code)
    args = [ZHOST, "run", script, "--job", "docs_example"]
    if dry_run:
        args.append("--dry-run")
    return subprocess.run(args, env=env, cwd=SOURCE_DIR, capture_output=True, text=True, timeout=120)


def describe(example, r):
    path, line, words, code = example
    return "%s:%d (%s) exited %d\n--- code ---\n%s--- stdout ---\n%s\n--- stderr ---\n%s" % (
        os.path.relpath(path, SOURCE_DIR), line, " ".join(sorted(words)) or "offline", r.returncode, code,
        r.stdout[-2000:], stderr_summary(r.stderr))


def stderr_summary(err):
    """The log and error lines first (a sanitizer's leak report would push them out)."""
    lines = err.split("\n")
    keep = [l for l in lines if not l.startswith("    #") and "leak of" not in l]
    return "\n".join(keep)[:4000]


def offline_env(tmp, secrets):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKHOUSE_", "CH_", "ZHOST_"))}
    env.update({
        "CLICKHOUSE_URL": "http://127.0.0.1:9/",   # nothing listens there: examples must not need ClickHouse
        "ZHOST_CH_ATTEMPTS": "1",
        "ZHOST_SECRETS": secrets,
        "ZHOST_SPOOL": os.path.join(tmp, "spool"),
    })
    return env


class TestExtraction(unittest.TestCase):
    def test_examples_are_found(self):
        ex = all_examples()
        offline = [e for e in ex if not e[2]]
        self.assertGreaterEqual(len(offline), 60, "the run markers are no longer recognised")
        self.assertTrue(any("http" in e[2] for e in ex))
        self.assertTrue(any("ch" in e[2] for e in ex))

    def test_marker_without_block_is_an_error(self):
        with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as fh:
            fh.write("<!-- run -->\n\ntext\n")
        try:
            with self.assertRaises(ValueError):
                extract(fh.name)
        finally:
            os.unlink(fh.name)


class TestOfflineExamples(unittest.TestCase):
    """Examples that need no ClickHouse: offline ones and those against the fake API."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="zhost-docs-")
        cls.secrets = prepare_dir(cls.tmp)
        cls.env = offline_env(cls.tmp, cls.secrets)
        cls.fake = FakeServer()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_offline_and_http_examples(self):
        ran = 0
        for ex in all_examples():
            if "ch" in ex[2]:
                continue
            with self.subTest(example="%s:%d" % (os.path.basename(ex[0]), ex[1])):
                self.fake.reset()
                r = run_example(self.tmp, self.env, ex, self.fake.url)
                self.assertEqual(r.returncode, 0, describe(ex, r))
                ran += 1
        self.assertGreater(ran, 0)

    def test_a_failing_example_fails(self):
        ex = (DOC, 0, set(), "assert(1 == 2, 'documented value is wrong')\n")
        r = run_example(self.tmp, self.env, ex)
        self.assertEqual(r.returncode, 1)
        self.assertIn("documented value is wrong", r.stderr)

    def test_log_example_redacts(self):
        ex = [e for e in all_examples() if 'log.warn("token refreshed"' in e[3]]
        self.assertEqual(len(ex), 1)
        r = run_example(self.tmp, self.env, ex[0])
        self.assertEqual(r.returncode, 0, describe(ex[0], r))
        self.assertIn('WARN job=docs_example msg="token refreshed" access_token=***', r.stderr)
        self.assertIn('msg="orders loaded" pages=3 rows=1200 source="qtickets api"', r.stderr)
        self.assertNotIn("abc123", r.stderr)
        self.assertNotIn("page fetched", r.stderr)   # debug is below the default level


class TestClickHouseExamples(zhtest.ZhostCase):
    """Examples against the test ClickHouse (a fresh migrated database per run)."""

    def setUp(self):
        super().setUp()
        prepare_dir(self.tmp)
        self.fake = FakeServer()

    def tearDown(self):
        self.fake.stop()
        super().tearDown()

    def test_clickhouse_examples(self):
        ran = 0
        for ex in all_examples():
            if "ch" not in ex[2]:
                continue
            with self.subTest(example="%s:%d" % (os.path.basename(ex[0]), ex[1])):
                self.fake.reset()
                r = run_example(self.tmp, self.env, ex, self.fake.url, dry_run="dry-run" in ex[2])
                self.assertEqual(r.returncode, 0, describe(ex, r))
                ran += 1
        self.assertGreater(ran, 0)

    def test_walkthrough_dry_run_prints_the_mapped_rows(self):
        ex = [e for e in all_examples() if "-- zhost: job=plan_api" in e[3]]
        self.assertEqual(len(ex), 1)
        r = run_example(self.tmp, self.env, ex[0], self.fake.url, dry_run=True)
        self.assertEqual(r.returncode, 0, describe(ex[0], r))
        self.assertIn("%s.plan_sales: 3 rows" % self.db, r.stdout)
        self.assertIn('"plan_revenue":1234.50', r.stdout)
        self.assertIn('"sales_date":"2025-11-01"', r.stdout)
        self.assertIn('"city":"Москва"', r.stdout)
        self.assertEqual(self.scalar("SELECT count() FROM plan_sales"), "0")


# ---- every registered function has a heading ----

INTROSPECT = r"""
local out = {}
local function add(s) out[#out + 1] = s end
for _, m in ipairs({ "json", "http", "task", "log", "ch", "time", "text", "oauth2", "mail", "fs", "io" }) do
  for k, v in pairs(_G[m]) do add((type(v) == "function" and "fn " or "val ") .. m .. "." .. k) end
end
for k in pairs(getmetatable(job).__index) do add("fn job:" .. k) end
local h = task.spawn(function() end)
for k in pairs(getmetatable(h).__index) do add("fn handle:" .. k) end
local c = oauth2.client{ token_url = "https://x.example/token", client_id = "x" }
for k in pairs(getmetatable(c).__index) do add("fn client:" .. k) end
for k in pairs(_G) do add("global " .. k) end
table.sort(out)
io.write(table.concat(out, "\n"), "\n")
"""


class TestCoverage(unittest.TestCase):
    def test_every_function_has_a_heading(self):
        tmp = tempfile.mkdtemp(prefix="zhost-docs-")
        try:
            secrets = prepare_dir(tmp)
            r = run_example(tmp, offline_env(tmp, secrets), (DOC, 0, set(), INTROSPECT))
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        texts = [read(p) for p in [DOC] + FRAGMENTS]
        headings = "\n".join(l for t in texts for l in t.split("\n") if l.startswith("#"))
        whole = "\n".join(texts)
        names = [l.split(" ", 1) for l in r.stdout.strip().split("\n") if l]
        self.assertGreater(len(names), 80)
        missing = []
        for kind, name in names:
            if kind == "fn" and "`%s(" % name not in headings:
                missing.append(name + "()")
            elif kind == "val" and "`%s`" % name not in headings:
                missing.append(name)
            elif kind == "global" and not re.search(r"\b%s\b" % re.escape(name), whole):
                missing.append("global " + name)
        self.assertEqual(missing, [], "not documented in docs/lua-api.md (a ### heading per function)")

    def test_sink_and_response_methods_have_headings(self):
        # Their objects need ClickHouse or a server; the method names are fixed in l_ch.c and l_http.c.
        text = read(DOC)
        for m in ("sink:add(", "sink:flush(", "sink:close(", "sink:count(", "sink:template(", "template:add(",
                  "template:rows(", "template:stats(", "res:json(", "res:header("):
            self.assertRegex(text, r"\n###[^\n]*`%s" % re.escape(m))


# ---- fixes found while documenting ----

class TestRequireCache(unittest.TestCase):
    """require() caches per run: a library required by the script and by another library loads once."""

    def test_nested_require_shares_the_run_cache(self):
        tmp = tempfile.mkdtemp(prefix="zhost-docs-")
        try:
            os.makedirs(os.path.join(tmp, "lib"))
            with open(os.path.join(tmp, "lib", "counter.lua"), "w") as fh:
                fh.write("print('loading counter')\nreturn { n = 0 }\n")
            with open(os.path.join(tmp, "lib", "user.lua"), "w") as fh:
                fh.write("local c = require('counter')\nreturn { c = c }\n")
            with open(os.path.join(tmp, "main.lua"), "w") as fh:
                fh.write("local c = require('counter')\nlocal u = require('user')\n"
                         "assert(u.c == c, 'user.lua got another counter table')\n"
                         "assert(require('user') == u)\n")
            env = offline_env(tmp, os.path.join(tmp, "secrets"))
            r = subprocess.run([ZHOST, "run", os.path.join(tmp, "main.lua"), "--dry-run"], env=env, cwd=tmp,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.count("loading counter"), 1, r.stdout)
            # A second run reloads (no caching across runs).
            r2 = subprocess.run([ZHOST, "run", os.path.join(tmp, "main.lua"), "--dry-run"], env=env, cwd=tmp,
                                capture_output=True, text=True, timeout=60)
            self.assertEqual(r2.stdout.count("loading counter"), 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TestExecDryRun(zhtest.ZhostCase):
    """--dry-run writes nothing: ch.exec is logged, not sent; a real run sends it."""

    SCRIPT = ("assert(ch.exec('CREATE TABLE zakaz.docs_dry (id UInt64) ENGINE = Memory') == true)\n"
              "local rows = assert(ch.query('EXISTS TABLE zakaz.docs_dry'))\n"
              "io.write('exists=', rows[1].result, '\\n')\n")

    def test_exec_is_skipped_in_a_dry_run(self):
        path = self.script("dry.lua", self.SCRIPT)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("exists=0", r.stdout)
        self.assertIn('msg="dry run: ch.exec statement not sent" sql="CREATE TABLE zakaz.docs_dry', r.stderr)
        self.assertEqual(self.scalar("EXISTS TABLE docs_dry"), "0")

    def test_exec_runs_in_a_real_run(self):
        path = self.script("real.lua", self.SCRIPT)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("exists=1", r.stdout)
        self.assertEqual(self.scalar("EXISTS TABLE docs_dry"), "1")


class TestShortRuns(zhtest.ZhostCase):
    """A run that ends before its "running" meta_job_runs insert has answered drops that insert (the
    final row replaces it) before writing the final row and exiting. It used to exit with the request
    in flight (a leak and a torn-down curl transfer), then to wait for it, which held the end of every
    run against a hung ClickHouse; dropping one still connecting made libuv abort (curl_uv.c). All
    caught by the sanitizer build."""

    def test_very_short_runs_finish_cleanly(self):
        path = self.script("short.lua", "local x = 1\n")
        for _ in range(5):
            r = self.zhost("run", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("LeakSanitizer", r.stderr)
        runs = self.runs("short")
        self.assertEqual(len(runs), 5)
        self.assertEqual({x["status"] for x in runs}, {"success"})


if __name__ == "__main__":
    unittest.main()
