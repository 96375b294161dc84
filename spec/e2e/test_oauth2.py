"""End-to-end tests of the oauth2 module and `zhost auth google`, against a fake token server.

Each test runs the real binary (ZHOST_BIN) on a small Lua script and checks what the fake token
endpoint received, what the script printed, and the token cache files on disk."""
import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ZHOST = os.environ.get("ZHOST_BIN") or os.path.join(HERE, "..", "..", "build", "zhost")
GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"


class FakeOAuth:
    """A token endpoint (Google- and VK-shaped) plus a bearer-protected /api resource."""

    def __init__(self):
        self.lock = threading.Lock()
        self.token_requests = []   # parsed forms, in order
        self.api_auth = []         # Authorization headers seen by /api
        self.delete_requests = []
        self.delay = 0.0
        self.responses = []        # queued (status, body dict) for the next token requests
        self.issued = 0
        self.valid_token = None    # the one token /api accepts
        self.refresh_token_in_reply = None
        self.expires_in = 3599
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, obj):
                data = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
                if self.path.endswith("/token/delete.json"):
                    with fake.lock:
                        fake.delete_requests.append(form)
                    self.reply(204, None)
                    return
                with fake.lock:
                    fake.token_requests.append(form)
                    queued = fake.responses.pop(0) if fake.responses else None
                if fake.delay:
                    time.sleep(fake.delay)
                if queued:
                    self.reply(*queued)
                    return
                with fake.lock:
                    fake.issued += 1
                    tok = "ya29.issued-%d" % fake.issued
                    fake.valid_token = tok
                    body = {"access_token": tok, "expires_in": fake.expires_in,
                            "scope": GMAIL_SCOPE, "token_type": "Bearer"}
                    if fake.refresh_token_in_reply:
                        body["refresh_token"] = fake.refresh_token_in_reply % fake.issued
                self.reply(200, body)

            def do_GET(self):
                auth = self.headers.get("Authorization")
                with fake.lock:
                    fake.api_auth.append(auth)
                    good = fake.valid_token and auth == "Bearer " + fake.valid_token
                if self.path.startswith("/api-always-401") or not good:
                    self.reply(401, {"error": {"code": 401, "message": "Invalid Credentials"}})
                else:
                    self.reply(200, {"ok": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class OAuth2Test(unittest.TestCase):
    def setUp(self):
        self.fake = FakeOAuth()
        self.dir = tempfile.mkdtemp(prefix="zh_oauth2_e2e_")
        self.secrets = os.path.join(self.dir, "secrets")
        os.makedirs(os.path.join(self.secrets, "gmail"))
        self.token_path = os.path.join(self.secrets, "gmail", "token.json")
        self.creds_path = os.path.join(self.secrets, "gmail", "credentials.json")

    def tearDown(self):
        self.fake.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- helpers ----

    def write_json(self, path, obj, mode=0o644):
        with open(path, "w") as f:
            json.dump(obj, f)
        os.chmod(path, mode)

    def google_files(self, expiry, token="ya29.old"):
        self.write_json(self.creds_path, {"installed": {
            "client_id": "1234-abc.apps.googleusercontent.com", "project_id": "p",
            "auth_uri": "http://127.0.0.1:9/o/oauth2/auth", "token_uri": self.fake.url + "/token",
            "client_secret": "GOCSPX-secret-value", "redirect_uris": ["http://localhost"]}})
        self.write_json(self.token_path, {
            "token": token, "refresh_token": "1//refresh-to-keep", "token_uri": self.fake.url + "/token",
            "client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "GOCSPX-secret-value",
            "scopes": [GMAIL_SCOPE], "universe_domain": "googleapis.com", "account": "",
            "rapt_token": "rapt-unknown-field", "expiry": expiry})

    def run_script(self, body, *args):
        path = os.path.join(self.dir, "script.lua")
        with open(path, "w") as f:
            f.write(body)
        p = subprocess.run([ZHOST, "run", path, "--dry-run", "-v"] + list(args), capture_output=True, text=True,
                           timeout=120, cwd=self.dir)
        return p

    def google_script(self, body):
        return ("local c = assert(oauth2.google{ credentials = %s, token = %s })\n" %
                (json.dumps(self.creds_path), json.dumps(self.token_path))) + body

    def read_token_json(self):
        with open(self.token_path) as f:
            return json.load(f)

    @staticmethod
    def parse_expiry(s):
        s = s.rstrip("Z").split(".")[0]
        return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S")) - time.timezone

    # ---- tests ----

    def test_google_refresh_rewrites_token_json_atomically_and_reuses_cache(self):
        self.google_files("2020-01-01T00:00:00.123456Z")
        before = os.stat(self.token_path)
        p = self.run_script(self.google_script(
            "local t, err = c:token()\n"
            "print('TOKEN', t, err)\n"
            "print('SAME', c:token() == t, c:info().refreshes)\n"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("TOKEN\tya29.issued-1\tnil", p.stdout)
        self.assertIn("SAME\ttrue\t1", p.stdout)
        self.assertEqual(len(self.fake.token_requests), 1)
        form = self.fake.token_requests[0]
        self.assertEqual(form["grant_type"], "refresh_token")
        self.assertEqual(form["refresh_token"], "1//refresh-to-keep")
        self.assertEqual(form["client_id"], "1234-abc.apps.googleusercontent.com")
        self.assertEqual(form["client_secret"], "GOCSPX-secret-value")

        after = os.stat(self.token_path)
        self.assertEqual(stat.S_IMODE(after.st_mode), 0o600)
        self.assertNotEqual(after.st_ino, before.st_ino, "the file must be replaced by rename, not rewritten")
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.token_path))), ["credentials.json", "token.json"])
        tj = self.read_token_json()
        self.assertEqual(tj["token"], "ya29.issued-1")
        self.assertEqual(tj["refresh_token"], "1//refresh-to-keep")
        self.assertEqual(tj["rapt_token"], "rapt-unknown-field")
        self.assertEqual(tj["universe_domain"], "googleapis.com")
        self.assertEqual(tj["account"], "")
        self.assertEqual(tj["scopes"], [GMAIL_SCOPE])
        self.assertTrue(tj["expiry"].endswith("Z"))
        self.assertAlmostEqual(self.parse_expiry(tj["expiry"]), time.time() + 3599, delta=120)
        for secret in ("GOCSPX-secret-value", "1//refresh-to-keep", "ya29.issued-1"):
            self.assertNotIn(secret, p.stderr)

        # A second process finds the token valid in token.json: no token request.
        p = self.run_script(self.google_script("print('TOKEN', c:token(), c:info().refreshes)\n"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("TOKEN\tya29.issued-1\t0", p.stdout)
        self.assertEqual(len(self.fake.token_requests), 1)

    def test_expiry_without_microseconds_and_margin(self):
        # Valid for 10 more minutes: with the default margin of 300 s the cached token is used...
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
        self.google_files(soon)
        p = self.run_script(self.google_script("print('TOKEN', c:token())\n"))
        self.assertIn("TOKEN\tya29.old", p.stdout, p.stderr)
        self.assertEqual(len(self.fake.token_requests), 0)
        # ...while 2 minutes left is inside the margin and refreshes ahead of expiry.
        self.google_files(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120)))
        p = self.run_script(self.google_script("print('TOKEN', c:token())\n"))
        self.assertIn("TOKEN\tya29.issued-1", p.stdout, p.stderr)
        self.assertEqual(len(self.fake.token_requests), 1)

    def test_twenty_concurrent_callers_share_one_refresh(self):
        self.google_files("2020-01-01T00:00:00Z")
        self.fake.delay = 0.5
        p = self.run_script(self.google_script(
            "local handles, seen = {}, {}\n"
            "for i = 1, 20 do handles[i] = task.spawn(function() return c:token() end) end\n"
            "local victim = task.spawn(function() return c:token() end)\n"
            "sleep(0.1)\n"
            "print('REFRESHING', c:info().refreshing)\n"
            "task.cancel(victim, 'test')\n"
            "local ok, distinct = 0, 0\n"
            "for i = 1, 20 do\n"
            "  local t = task.wait(handles[i])\n"
            "  if t then ok = ok + 1; if not seen[t] then seen[t] = true; distinct = distinct + 1 end end\n"
            "end\n"
            "print('OK', ok, 'DISTINCT', distinct, 'REFRESHES', c:info().refreshes)\n"
            "print('VICTIM', task.wait(victim))\n"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("REFRESHING\ttrue", p.stdout)
        self.assertIn("OK\t20\tDISTINCT\t1\tREFRESHES\t1", p.stdout)
        self.assertIn("VICTIM\tnil\tcancelled: test", p.stdout)
        self.assertEqual(len(self.fake.token_requests), 1)

    def test_request_refreshes_once_on_401_and_retries_once(self):
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3000))
        self.google_files(future, token="ya29.revoked-but-unexpired")
        p = self.run_script(self.google_script(
            "local r, err = c:request{ url = '%s/api/items', headers = { authorization = 'Bearer nope' } }\n"
            "print('FIRST', r and r.status, err)\n"
            "local r2 = c:get('%s/api-always-401')\n"
            "print('SECOND', r2 and r2.status)\n" % (self.fake.url, self.fake.url)))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("FIRST\t200\tnil", p.stdout)
        # The first call: stale token -> 401, one refresh, one retry with the new token.
        self.assertEqual(self.fake.api_auth[:2], ["Bearer ya29.revoked-but-unexpired", "Bearer ya29.issued-1"])
        # A resource that always answers 401: one more refresh and one retry, then the 401 is returned.
        self.assertIn("SECOND\t401", p.stdout)
        self.assertEqual(self.fake.api_auth[2:], ["Bearer ya29.issued-1", "Bearer ya29.issued-2"])
        self.assertEqual(len(self.fake.token_requests), 2)

    def test_invalid_grant_tells_how_to_reauthorize(self):
        self.google_files("2020-01-01T00:00:00Z")
        with open(self.token_path, "rb") as f:
            original = f.read()
        self.fake.responses.append(
            (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}))
        p = self.run_script(self.google_script(
            "local t, err, info = c:token()\n"
            "print('RESULT', t, info.status, info.error)\n"
            "print('ERR', err)\n"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("RESULT\tnil\t400\tinvalid_grant", p.stdout)
        self.assertIn("ERR\tGoogle refused the refresh token (invalid_grant: Token has been expired or revoked.). "
                      "Re-authorize: zhost auth google --credentials %s --token %s"
                      % (self.creds_path, self.token_path), p.stdout)
        self.assertIn("7 days", p.stdout)
        self.assertEqual(len(self.fake.token_requests), 1, "a 4xx from the token endpoint is not retried")
        with open(self.token_path, "rb") as f:
            self.assertEqual(f.read(), original)

    def test_invalid_client_names_the_client_id(self):
        self.fake.responses.append((401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}))
        p = self.run_script(
            "local c = oauth2.client{ token_url = '%s/token', client_id = 'my-client-42', client_secret = 'abcdefgh',\n"
            "  refresh_token = 'rt-123456' }\n"
            "local t, err, info = c:token()\n"
            "print('ERR', err, info.status)\n" % self.fake.url)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("rejected client_id my-client-42 (invalid_client: The OAuth client was not found.)", p.stdout)
        self.assertIn("\t401\n", p.stdout)

    def test_vk_agency_grant_string_expires_in_then_refresh_token_grant(self):
        cache = os.path.join(self.dir, "vk_token.json")
        self.fake.expires_in = "86400"
        self.fake.refresh_token_in_reply = "vk-refresh-%d"
        script = (
            "local c = oauth2.client{ token_url = '%s/api/v2/oauth2/token.json', client_id = 'vkid',\n"
            "  client_secret = 'vk-secret-1', grant = 'agency_client_credentials',\n"
            "  extra = { agency_client_name = 'client_login' }, cache = '%s' }\n"
            "local t, err = c:token()\n"
            "print('TOKEN', t, err, math.floor(c:info().expires_in / 3600))\n" % (self.fake.url, cache))
        p = self.run_script(script)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("TOKEN\tya29.issued-1\tnil\t23", p.stdout)
        form = self.fake.token_requests[0]
        self.assertEqual(form, {"grant_type": "agency_client_credentials", "client_id": "vkid",
                                "client_secret": "vk-secret-1", "agency_client_name": "client_login"})
        self.assertEqual(stat.S_IMODE(os.stat(cache).st_mode), 0o600)
        with open(cache) as f:
            cj = json.load(f)
        self.assertEqual(cj["access_token"], "ya29.issued-1")
        self.assertEqual(cj["refresh_token"], "vk-refresh-1")
        self.assertAlmostEqual(cj["expires_at"], time.time() + 86400, delta=120)

        # Expired cache: the stored refresh token is used, and the new one VK returns is kept.
        cj["expires_at"] = int(time.time()) - 10
        cj["expiry"] = "2020-01-01T00:00:00Z"
        self.write_json(cache, cj, 0o600)
        p = self.run_script(script)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("TOKEN\tya29.issued-2", p.stdout)
        self.assertEqual(self.fake.token_requests[1],
                         {"grant_type": "refresh_token", "refresh_token": "vk-refresh-1", "client_id": "vkid",
                          "client_secret": "vk-secret-1"})
        with open(cache) as f:
            self.assertEqual(json.load(f)["refresh_token"], "vk-refresh-2")

        # A refused refresh token falls back to issuing a new token with the configured grant.
        with open(cache) as f:
            cj = json.load(f)
        cj["expires_at"] = 0
        cj.pop("expiry")
        self.write_json(cache, cj, 0o600)
        self.fake.responses.append((401, {"error": "invalid_grant", "error_description": "refresh token revoked"}))
        p = self.run_script(script)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("TOKEN\tya29.issued-3", p.stdout)
        self.assertEqual([r["grant_type"] for r in self.fake.token_requests[2:]],
                         ["refresh_token", "agency_client_credentials"])
        self.assertIn("refused the stored refresh token (HTTP 401)", p.stderr)
        with open(cache) as f:
            self.assertEqual(json.load(f)["refresh_token"], "vk-refresh-3")

    def test_vk_token_cap_403_is_exposed_and_delete_tokens_works(self):
        self.fake.responses.append((403, {"error": "token_limit_exceeded", "error_description": "too many tokens"}))
        p = self.run_script(
            "local c = oauth2.client{ token_url = '%s/api/v2/oauth2/token.json', client_id = 'vkid',\n"
            "  client_secret = 'vk-secret-1', grant = 'client_credentials' }\n"
            "local t, err, info = c:token()\n"
            "print('FIRST', t, info.status, info.error, info.error_description)\n"
            "if info.status == 403 then print('DELETE', c:delete_tokens{ username = 'client_login' }) end\n"
            "print('SECOND', c:token())\n" % self.fake.url)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("FIRST\tnil\t403\ttoken_limit_exceeded\ttoo many tokens", p.stdout)
        self.assertIn("DELETE\ttrue", p.stdout)
        self.assertIn("SECOND\tya29.issued-1", p.stdout)
        self.assertEqual(self.fake.delete_requests,
                         [{"client_id": "vkid", "client_secret": "vk-secret-1", "username": "client_login"}])

    def test_misuse_raises(self):
        p = self.run_script(
            "print('A', pcall(oauth2.client, { token_url = 'http://x/t', client_id = 'a', grant = 'password' }))\n"
            "print('B', pcall(oauth2.client, { token_url = 'http://x/t', client_id = 'a', cahce = 'x' }))\n"
            "print('C', pcall(oauth2.client, { client_id = 'a' }))\n"
            "print('D', oauth2.google{ token = '/nonexistent/token.json' })\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("A\tfalse\toauth2.client: 'grant' must be", p.stdout)
        self.assertIn("B\tfalse\toauth2.client: unknown option 'cahce'", p.stdout)
        self.assertIn("C\tfalse\toauth2.client: 'token_url'", p.stdout)
        self.assertIn("D\tnil\toauth2.google: /nonexistent/token.json does not exist: authorize once with "
                      "zhost auth google", p.stdout)

    def test_unreadable_token_says_whose_it_is_not_reauthorize(self):
        # The runbook's Gmail dry run by an operator: token.json is the service user's (0600). The answer
        # is to run as that user; re-authorizing would replace a good token.
        d = tempfile.mkdtemp(prefix="zh-oauth-perm-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        self.google_files("2099-01-01T00:00:00Z")
        token = os.path.join(d, "token.json")
        shutil.copy(self.token_path, token)
        os.chmod(token, 0o600 if os.getuid() == 0 else 0o000)
        script = os.path.join(d, "script.lua")
        with open(script, "w") as f:
            f.write("print('R', oauth2.google{ token = %s })\n" % json.dumps(token))
        os.chmod(script, 0o644)
        argv = [ZHOST, "run", script, "--dry-run", "--secrets", d]
        if os.getuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=d)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("R\tnil\toauth2.google: cannot read %s: Permission denied" % token, p.stdout)
        self.assertIn("sudo -u", p.stdout)
        self.assertNotIn("re-authorize", p.stdout)

    def start_auth(self, token_path, *extra):
        proc = subprocess.Popen([ZHOST, "auth", "google", "--credentials", self.creds_path, "--token", token_path,
                                 "--no-browser", "--port", "0", "--timeout", "60"] + list(extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.time() + 20
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("  http"):
                url = line.strip()
                break
        self.assertIsNotNone(url, "no consent URL printed")
        return proc, url

    def test_auth_google_loopback_consent_writes_token_json(self):
        self.google_files("2020-01-01T00:00:00Z")
        os.remove(self.token_path)
        token_path = os.path.join(self.dir, "fresh", "token.json")  # directory does not exist yet
        self.fake.refresh_token_in_reply = "1//consent-refresh-%d"
        proc, url = self.start_auth(token_path)
        try:
            u = urllib.parse.urlparse(url)
            self.assertNotIn("?&", url)
            self.assertNotIn("&&", url)
            self.assertEqual("%s://%s%s" % (u.scheme, u.netloc, u.path), "http://127.0.0.1:9/o/oauth2/auth")
            q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
            self.assertEqual(q["client_id"], "1234-abc.apps.googleusercontent.com")
            self.assertEqual(q["response_type"], "code")
            self.assertEqual(q["access_type"], "offline")
            self.assertEqual(q["prompt"], "consent")
            self.assertEqual(q["scope"], GMAIL_SCOPE)
            self.assertEqual(q["code_challenge_method"], "S256")
            self.assertRegex(q["redirect_uri"], r"^http://127\.0\.0\.1:\d+$")
            redirect = q["redirect_uri"]

            # Stray requests are answered and ignored: no code, or a state from another run.
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(redirect + "/favicon.ico", timeout=10)
            self.assertEqual(e.exception.code, 404)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(redirect + "/?code=evil&state=forged", timeout=10)
            self.assertEqual(e.exception.code, 400)

            code = "4/0AeanS0-test_code"
            with urllib.request.urlopen("%s/?state=%s&code=%s&scope=%s" % (
                    redirect, urllib.parse.quote(q["state"]), urllib.parse.quote(code, safe=""),
                    urllib.parse.quote(GMAIL_SCOPE, safe="")), timeout=10) as r:
                self.assertEqual(r.status, 200)
                self.assertIn(b"authorized", r.read())
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("Saved %s" % token_path, out)

        self.assertEqual(len(self.fake.token_requests), 1)
        form = self.fake.token_requests[0]
        self.assertEqual(form["grant_type"], "authorization_code")
        self.assertEqual(form["code"], code)
        self.assertEqual(form["redirect_uri"], redirect)
        self.assertEqual(form["client_id"], "1234-abc.apps.googleusercontent.com")
        self.assertEqual(form["client_secret"], "GOCSPX-secret-value")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
        self.assertEqual(challenge.decode(), q["code_challenge"])

        self.assertEqual(stat.S_IMODE(os.stat(token_path).st_mode), 0o600)
        with open(token_path) as f:
            tj = json.load(f)
        self.assertEqual(tj["token"], "ya29.issued-1")
        self.assertEqual(tj["refresh_token"], "1//consent-refresh-1")
        self.assertEqual(tj["token_uri"], self.fake.url + "/token")
        self.assertEqual(tj["client_id"], "1234-abc.apps.googleusercontent.com")
        self.assertEqual(tj["client_secret"], "GOCSPX-secret-value")
        self.assertEqual(tj["scopes"], [GMAIL_SCOPE])
        self.assertAlmostEqual(self.parse_expiry(tj["expiry"]), time.time() + 3599, delta=120)

        # The file is what oauth2.google reads: the fresh token is used without another request.
        self.token_path = token_path
        p = self.run_script(self.google_script("print('TOKEN', c:token())\n"))
        self.assertIn("TOKEN\tya29.issued-1", p.stdout, p.stderr)
        self.assertEqual(len(self.fake.token_requests), 1)

    def test_auth_google_access_denied_fails(self):
        self.google_files("2020-01-01T00:00:00Z")
        proc, url = self.start_auth(self.token_path)
        try:
            q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()}
            with urllib.request.urlopen("%s/?error=access_denied&state=%s" % (q["redirect_uri"], q["state"]),
                                        timeout=10) as r:
                self.assertEqual(r.status, 200)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 1)
        self.assertIn("error=access_denied", err)
        self.assertEqual(len(self.fake.token_requests), 0)

    def test_auth_usage_errors(self):
        p = subprocess.run([ZHOST, "auth", "github"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: zhost auth google", p.stderr)
        p = subprocess.run([ZHOST, "auth", "google", "--credentials", os.path.join(self.dir, "none.json"),
                            "--no-browser"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("none.json not found", p.stderr)


if __name__ == "__main__":
    unittest.main()
