"""Shared machinery for the fake API servers (stdlib only).

- JSON encoders (PHP-style, compact, Google-style pretty)
- Request / Response objects
- the fault-injection engine
- the shared state (data set, config, fake clock, request log)
- the HTTP/1.1 keep-alive handler that ties the API modules together

API modules (api_*.py) expose `PREFIX`, `handle(req, st) -> Response | None` and
`api_error(code, req, st) -> Response` (used by fault rules with "api_error").
"""

import base64
import copy
import datetime as dt
import gzip
import http.server
import json
import re
import select
import socket
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from decimal import Decimal, ROUND_HALF_UP

MSK = dt.timezone(dt.timedelta(hours=3), "MSK")

# --------------------------------------------------------------------------- JSON


def php_json(obj):
    """json_encode() of PHP: ASCII only (\\uXXXX, lower-case hex), '/' escaped as '\\/'."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def compact_json(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def google_json(obj):
    """Google front ends pretty-print with two spaces."""
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def dec(value):
    """Decimal from int/float/str without binary-float artefacts."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def dec_str(value, places=2, strip=True):
    """Decimal -> plain string with `places` decimals; strip=True drops trailing zeros ('86.4', '0')."""
    q = dec(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    s = format(q, "f")
    if strip and "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s


def b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def parse_iso(s):
    """ISO-8601 with offset ('Z' accepted) -> aware datetime, or None."""
    if not isinstance(s, str):
        return None
    try:
        d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d


def parse_date(s):
    try:
        return dt.date.fromisoformat(s) if isinstance(s, str) and len(s) == 10 else None
    except ValueError:
        return None


def date_range(d1, d2):
    d = d1
    while d <= d2:
        yield d
        d += dt.timedelta(days=1)


# --------------------------------------------------------------------------- HTTP objects


class Request:
    def __init__(self, method, raw_path, headers, body, client):
        self.method = method
        self.raw_path = raw_path
        parts = urllib.parse.urlsplit(raw_path)
        self.path = urllib.parse.unquote(parts.path)
        self.query_string = parts.query
        self.query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        self.headers = headers  # email.message.Message (case-insensitive)
        self.body = body
        self.client = client
        self.seq = 0
        self.sub = ""  # path below the API prefix, set by the dispatcher

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        """Parsed JSON body; raises ValueError if the body is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def form(self):
        d = urllib.parse.parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in d.items()}

    def params(self):
        """Query string merged with a form-encoded body (VK style)."""
        out = {k: v[0] for k, v in self.query.items()}
        ctype = (self.header("Content-Type") or "").lower()
        if self.body and "application/x-www-form-urlencoded" in ctype:
            out.update(self.form())
        return out

    def bearer(self):
        auth = self.header("Authorization") or ""
        m = re.match(r"(?i)bearer\s+(\S+)", auth)
        return m.group(1) if m else None

    def log_record(self):
        try:
            body = self.body.decode("utf-8")
            body_b64 = None
        except UnicodeDecodeError:
            body, body_b64 = None, base64.b64encode(self.body).decode()
        rec = {
            "seq": self.seq,
            "ts": time.time(),
            "method": self.method,
            "path": self.path,
            "raw_path": self.raw_path,
            "query": self.query_string,
            "query_params": self.query,
            "headers": {k: v for k, v in self.headers.items()},
            "header_list": [[k, v] for k, v in self.headers.items()],
            "body": body,
            "body_length": len(self.body),
        }
        if body_b64 is not None:
            rec["body_b64"] = body_b64
        return rec


class Response:
    def __init__(self, status=200, body=b"", headers=None, content_type=None):
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = list(headers or [])
        if content_type and not self.get_header("Content-Type"):
            self.headers.append(("Content-Type", content_type))

    def get_header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_header(self, name, value):
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        self.headers.append((name, str(value)))


def json_response(obj, status=200, style="compact", headers=None):
    enc = {"php": php_json, "compact": compact_json, "google": google_json}[style]
    return Response(status, enc(obj), headers, "application/json; charset=utf-8" if style != "php" else "application/json")


def text_response(text, status=200, ctype="text/plain; charset=utf-8", headers=None):
    return Response(status, text, headers, ctype)


# --------------------------------------------------------------------------- faults

FAULT_ACTIONS = ("reset", "truncate", "malformed", "hang", None)


class FaultRule:
    def __init__(self, spec):
        if not isinstance(spec, dict) or "path" not in spec:
            raise ValueError("fault rule needs at least a 'path' regex")
        self.spec = dict(spec)
        self.path_re = re.compile(spec["path"])
        # Optional: a regex the request body must contain too (QTickets pages differ only by the
        # "page" of their GET body), so a test can serve hand-written pages verbatim, one rule per page.
        self.body_re = re.compile(spec["body_re"]) if spec.get("body_re") else None
        self.method = spec.get("method")
        self.times = int(spec.get("times", 1))
        self.after = int(spec.get("after", 0))
        self.action = spec.get("action")
        if self.action not in FAULT_ACTIONS:
            raise ValueError("unknown action %r" % self.action)
        self.status = spec.get("status")
        self.headers = spec.get("headers") or {}
        self.body = spec.get("body")
        if spec.get("body_b64") is not None:  # bytes a JSON string cannot carry (invalid UTF-8)
            self.body = base64.b64decode(spec["body_b64"])
        self.delay_ms = int(spec.get("delay_ms", 0))
        self.api_error = spec.get("api_error")
        self.gate = spec.get("gate")
        if self.gate is not None and not isinstance(self.gate, str):
            raise ValueError("gate must be a name (a string)")
        self.seen = 0
        self.fired = 0

    def exhausted(self):
        return self.times >= 0 and self.fired >= self.times

    def matches(self, req):
        if self.method and self.method.upper() != req.method:
            return False
        target = req.path + ("?" + req.query_string if req.query_string else "")
        if self.body_re and not self.body_re.search(req.body.decode("utf-8", "replace")):
            return False
        return bool(self.path_re.search(target))

    def describe(self):
        d = dict(self.spec)
        d.update(seen=self.seen, fired=self.fired, exhausted=self.exhausted())
        return d


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        # Gates hold requests until a test opens them: "mid-run" without guessing at timing.
        self.gate_cond = threading.Condition()
        self.open_gates = set()
        self.waiting = {}  # gate name -> requests held there now

    def open_gate(self, name):
        with self.gate_cond:
            self.open_gates.add(name)
            self.gate_cond.notify_all()

    def gates(self):
        with self.gate_cond:
            return {"open": sorted(self.open_gates), "waiting": dict(self.waiting)}

    def wait_gate(self, name, limit_s=600):
        """Blocks until the gate `name` is open (or limit_s passed)."""
        deadline = time.time() + limit_s
        with self.gate_cond:
            self.waiting[name] = self.waiting.get(name, 0) + 1
            try:
                while name not in self.open_gates and time.time() < deadline:
                    self.gate_cond.wait(0.5)
            finally:
                self.waiting[name] -= 1

    def add(self, specs):
        if isinstance(specs, dict):
            specs = [specs]
        rules = [FaultRule(s) for s in specs]
        with self.lock:
            self.rules.extend(rules)
        return len(rules)

    def clear(self):
        with self.lock:
            self.rules = []
        with self.gate_cond:
            self.open_gates.clear()
            self.gate_cond.notify_all()

    def describe(self):
        with self.lock:
            return [r.describe() for r in self.rules]

    def pick(self, req):
        """First live rule that matches and whose `after` budget is used up; counts it as fired."""
        with self.lock:
            for r in self.rules:
                if r.exhausted() or not r.matches(req):
                    continue
                r.seen += 1
                if r.seen <= r.after:
                    continue
                r.fired += 1
                return r
        return None


# --------------------------------------------------------------------------- state

DEFAULT_CONFIG = {
    # QTickets
    "qtickets.ignore_filters": False,   # true: `where` is ignored (paging/orderBy still apply)
    "qtickets.per_page": 50,
    "qtickets.php_keyed_pages": False,  # true: even pages send data (and baskets) as {"0":…,"2":…} objects
    "qtickets.hidden_ids": [],  # ids counted in paging.total but dropped from their page after paging
    "qtickets.list_without_baskets": False,  # true: /orders lists orders without `baskets` (/orders/{id} has them)
    # Google / Gmail
    "google.access_token_lifetime": 3599,
    "gmail.max_results_cap": 500,
    "gmail.b64_padding": False,     # true: body.data and attachment data keep their "=" padding
    # VK Ads v2
    "vkads.token_lifetime": 86400,
    "vkads.max_tokens": 5,
    "vkads.rps_limit": 10,          # per token per calendar second; 0 = unlimited
    "vkads.hourly_limit": 10000,
    "vkads.daily_limit": 100000,
    "vkads.max_days": 92,
    "vkads.max_ids": 200,
    "vkads.max_limit": 50,
    "vkads.omit_count": False,      # list answers without "count" (seen in some API versions)
    # legacy VK API
    "vkapi.rps_limit": 0,           # >0: error 6 above this many calls per second per token
    "vkapi.html_escape": False,     # names and link_url HTML-escaped ("&amp;"), as api.vk.com writes strings
    "vkapi.ads_cap": 2000,          # ads.getAds/getAdsLayout answer at most this many ads (dev.vk.com: 2000)
    # Yandex Direct
    "direct.auto_offline": True,    # processingMode auto behaves like offline
    "direct.offline_polls": 2,      # number of 202 answers after the 201 before the 200
    "direct.retry_in": [1, 2, 1],   # retryIn values handed out in turn (201, 202, 202, ...)
    "direct.enforce_retry_in": False,  # polls earlier than retryIn do not advance the report
    "direct.queue_limit": 5,
    "direct.units_daily": 64000,
    "direct.freeze_reports": False,  # a stored report keeps its first figures (as Direct's stored reports do)
    # generic
    "gzip_min_bytes": 512,
}


class State:
    """Everything mutable. Modules keep their runtime state in `st.rt[<module>]`."""

    def __init__(self, data, config_overrides=None, latency_ms=0, default_auth=None):
        self.lock = threading.RLock()
        self.default_auth = default_auth or {}
        self.initial_data = copy.deepcopy(data)
        self.initial_config = dict(DEFAULT_CONFIG)
        self.initial_config.update(data.get("config") or {})
        self.initial_config.update(config_overrides or {})
        self.latency_ms = latency_ms
        self.faults = Faults()
        self.reset()

    def reset(self):
        with self.lock:
            self.data = copy.deepcopy(self.initial_data)
            self.config = dict(self.initial_config)
            self.clock_offset = 0.0
            self.requests = []
            self.seq = 0
            self.rt = {}
            self.faults.clear()

    def now(self):
        return time.time() + self.clock_offset

    def now_msk(self):
        return dt.datetime.fromtimestamp(self.now(), MSK)

    def cfg(self, key):
        return self.config.get(key, DEFAULT_CONFIG.get(key))

    def runtime(self, name, factory):
        with self.lock:
            if name not in self.rt:
                self.rt[name] = factory()
            return self.rt[name]

    def auth(self, section):
        return (self.data.get("auth") or self.default_auth).get(section) or {}

    def log(self, req):
        with self.lock:
            self.seq += 1
            req.seq = self.seq
            self.requests.append(req.log_record())


# --------------------------------------------------------------------------- control endpoints


def control(req, st, apis):
    p, m = req.path, req.method
    try:
        body = req.json() if req.body.strip() else None
    except ValueError:
        return json_response({"error": "body is not JSON"}, 400)
    if p == "/_fake/health":
        return json_response({"ok": True, "apis": [a.PREFIX for a in apis]})
    if p == "/_fake/faults":
        if m == "POST":
            try:
                n = st.faults.add(body if body is not None else [])
            except (ValueError, re.error, TypeError) as e:
                return json_response({"error": str(e)}, 400)
            return json_response({"added": n, "rules": st.faults.describe()})
        if m == "DELETE":
            st.faults.clear()
            return json_response({"cleared": True})
        return json_response({"rules": st.faults.describe()})
    if p == "/_fake/gates":
        if m == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("open"), str):
                return json_response({"error": 'body must be {"open": "<gate name>"}'}, 400)
            st.faults.open_gate(body["open"])
        return json_response(st.faults.gates())
    if p == "/_fake/requests":
        if m == "DELETE":
            with st.lock:
                st.requests = []
            return json_response({"cleared": True})
        with st.lock:
            reqs = list(st.requests)
        pat, since = req.q("path"), int(req.q("since", "0") or 0)
        if pat:
            reqs = [r for r in reqs if re.search(pat, r["path"])]
        reqs = [r for r in reqs if r["seq"] > since]
        return json_response({"count": len(reqs), "requests": reqs})
    if p == "/_fake/data":
        if m == "POST":
            if not isinstance(body, dict):
                return json_response({"error": "data must be a JSON object"}, 400)
            with st.lock:
                if req.q("merge") in ("1", "true"):
                    st.data.update(body)
                else:
                    st.data = body
                st.rt = {}  # derived caches and issued objects depend on the data
            return json_response({"ok": True, "sections": sorted(st.data)})
        with st.lock:
            return json_response(st.data)
    if p == "/_fake/reset" and m == "POST":
        st.reset()
        return json_response({"ok": True})
    if p == "/_fake/clock":
        if m == "POST":
            body = body or {}
            with st.lock:
                if "now" in body:
                    v = body["now"]
                    ts = v if isinstance(v, (int, float)) else parse_iso(v).timestamp()
                    st.clock_offset = ts - time.time()
                if "offset_s" in body:
                    st.clock_offset = float(body["offset_s"])
                if "advance_s" in body:
                    st.clock_offset += float(body["advance_s"])
        return json_response({"now": st.now(), "now_msk": st.now_msk().isoformat(), "offset_s": st.clock_offset})
    if p == "/_fake/config":
        if m == "POST":
            if not isinstance(body, dict):
                return json_response({"error": "config must be a JSON object"}, 400)
            unknown = [k for k in body if k not in DEFAULT_CONFIG]
            if unknown:
                return json_response({"error": "unknown config keys", "keys": unknown}, 400)
            with st.lock:
                st.config.update(body)
        return json_response(st.config)
    if p == "/_fake/state":
        with st.lock:
            return json_response(json.loads(json.dumps(st.rt, default=str)))
    return json_response({"error": "unknown control endpoint"}, 404)


# --------------------------------------------------------------------------- HTTP handler


def accepts_gzip(header):
    """True if Accept-Encoding lists gzip (or *) with a non-zero q."""
    for item in (header or "").lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            m = re.search(r"q\s*=\s*([\d.]+)", params)
            try:
                return not m or float(m.group(1)) > 0
            except ValueError:
                return False
    return False



class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeapi/1.0"
    timeout = 300  # idle keep-alive connections
    st = None      # set by make_server
    apis = ()

    def log_message(self, fmt, *args):  # quiet; enable with --verbose
        if getattr(self.server, "verbose", False):
            sys.stderr.write("fakeapi: " + (fmt % args) + "\n")

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self):
        st = self.st
        body = self._read_body()
        req = Request(self.command, self.path, self.headers, body, self.client_address)
        if req.path.startswith("/_fake/"):
            return self._send(control(req, st, self.apis), req)
        st.log(req)
        if st.latency_ms:
            time.sleep(st.latency_ms / 1000.0)
        rule = st.faults.pick(req)
        if rule and rule.delay_ms:
            time.sleep(rule.delay_ms / 1000.0)
        if rule and rule.gate:
            st.faults.wait_gate(rule.gate)
        api = next((a for a in self.apis if req.path == a.PREFIX or req.path.startswith(a.PREFIX + "/")), None)
        if api:
            req.sub = req.path[len(api.PREFIX):] or "/"
        if rule and rule.action == "reset":
            return self._reset()
        if rule and rule.action == "hang":
            return self._hang(rule)
        if rule and (rule.status is not None or rule.api_error is not None) and rule.action is None:
            resp = self._injected(rule, req, api)
        else:
            resp = self._route(req, api)
            for k, v in (rule.headers.items() if rule else ()):
                resp.set_header(k, v)
        if rule and rule.action == "truncate":
            return self._truncate(resp)
        if rule and rule.action == "malformed":
            resp = self._malformed(rule, resp)
        self._send(resp, req)

    def _route(self, req, api):
        try:
            resp = api.handle(req, self.st) if api else None
        except Exception:  # a bug in the fake must be visible, not a hang
            traceback.print_exc()
            return json_response({"error": "fakeapi internal error", "trace": traceback.format_exc()}, 500)
        return resp or json_response({"error": "Not found", "status": 404}, 404)

    def _injected(self, rule, req, api):
        if rule.api_error is not None and api is not None:
            resp = api.api_error(rule.api_error, req, self.st)
        else:
            body = rule.body if rule.body is not None else ""
            resp = Response(int(rule.status or 200), body)
        if rule.status is not None:
            resp.status = int(rule.status)
        if rule.body is not None and rule.api_error is not None:
            resp.body = rule.body if isinstance(rule.body, bytes) else rule.body.encode("utf-8")
        for k, v in rule.headers.items():
            resp.set_header(k, v)
        if not resp.get_header("Content-Type") and resp.body[:1] in (b"{", b"["):
            resp.set_header("Content-Type", "application/json")
        return resp

    def _malformed(self, rule, resp):
        body = (rule.body if isinstance(rule.body, bytes) else rule.body.encode()) if rule.body is not None else (resp.body[: max(1, len(resp.body) // 2)] or b"{\"data\":[")
        out = Response(200, body, [h for h in resp.headers if h[0].lower() not in ("content-encoding",)])
        if not out.get_header("Content-Type"):
            out.set_header("Content-Type", "application/json")
        return out

    def _reset(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _hang(self, rule):
        """Never answer; return when the client goes away (or after 10 minutes)."""
        deadline = time.time() + 600
        sock = self.connection
        while time.time() < deadline:
            r, _, _ = select.select([sock], [], [], 0.5)
            if r:
                try:
                    if not sock.recv(65536, socket.MSG_PEEK):
                        break
                except OSError:
                    break
        self.close_connection = True

    def _truncate(self, resp):
        body = resp.body
        self.send_response(resp.status)
        for k, v in resp.headers:
            if k.lower() not in ("content-length", "content-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) * 2 + 100))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True  # graceful FIN: the client sees EOF before Content-Length is reached
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _send(self, resp, req):
        body = resp.body
        if (body and len(body) >= int(self.st.cfg("gzip_min_bytes")) and not resp.get_header("Content-Encoding")
                and accepts_gzip(req.header("Accept-Encoding"))):
            body = gzip.compress(body, 6)
            resp.set_header("Content-Encoding", "gzip")
            resp.set_header("Vary", "Accept-Encoding")
        self.send_response(resp.status)
        for k, v in resp.headers:
            if k.lower() not in ("content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class FakeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(port, st, apis, verbose=False):
    handler = type("Handler", (FakeHandler,), {"st": st, "apis": tuple(apis)})
    srv = FakeServer(("127.0.0.1", port), handler)
    srv.verbose = verbose
    return srv
