"""Gmail API v1 under /gmail (base URL = http://127.0.0.1:PORT/gmail, paths /gmail/v1/users/me/...).

Messages are authored in the data set as a MIME tree (see docs/fakes.md); this module renders them to the
Gmail wire format: partIds, headers, body.size, inline body.data or body.attachmentId, base64url w/o padding.
"""

import base64
import datetime as dt
import email.header
import hashlib
import re
import shlex

import api_google
from fakecore import b64url_nopad, json_response

PREFIX = "/gmail"
PST = dt.timezone(dt.timedelta(hours=-8))


# --------------------------------------------------------------------------- errors


def gerr(code, message, reason, status=None, domain="global", location=None, headers=None):
    e = {"domain": domain, "reason": reason, "message": message}
    if location:
        e.update(locationType="header" if location == "Authorization" else "parameter", location=location)
    body = {"error": {"code": code, "message": message, "errors": [e]}}
    if status:
        body["error"]["status"] = status
    return json_response(body, code, "google", headers)


def auth_error():
    return gerr(401, "Invalid Credentials", "authError", "UNAUTHENTICATED", location="Authorization",
                headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')])


ERRORS = {
    400: ("Bad Request", "badRequest", "INVALID_ARGUMENT", "global"),
    403: ("Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user'", "rateLimitExceeded",
          "PERMISSION_DENIED", "usageLimits"),
    404: ("Requested entity was not found.", "notFound", "NOT_FOUND", "global"),
    429: ("Too many concurrent requests for user", "rateLimitExceeded", "RESOURCE_EXHAUSTED", "usageLimits"),
    500: ("Backend Error", "backendError", "INTERNAL", "global"),
    503: ("The service is currently unavailable.", "backendError", "UNAVAILABLE", "global"),
}
REASONS = {"dailyLimitExceeded": 403, "userRateLimitExceeded": 403, "rateLimitExceeded": 403, "domainPolicy": 403}


def api_error(code, req, st):
    if code in (401, "401", "authError"):
        return auth_error()
    if isinstance(code, str) and code in REASONS:
        return gerr(REASONS[code], code, code, "PERMISSION_DENIED",
                    "usageLimits" if code != "domainPolicy" else "global")
    c = int(code)
    msg, reason, status, domain = ERRORS.get(c, ("Error", "backendError", "UNKNOWN", "global"))
    return gerr(c, msg, reason, status, domain)


# --------------------------------------------------------------------------- rendering


def _hdr_list(h):
    if isinstance(h, dict):
        return [{"name": k, "value": v} for k, v in h.items()]
    return [x if isinstance(x, dict) else {"name": x[0], "value": x[1]} for x in (h or [])]


def _enc_word(s):
    try:
        s.encode("ascii")
        return s
    except UnicodeEncodeError:
        return email.header.Header(s, "utf-8").encode()


def b64url(st, data):
    """base64url of data: without padding, or with it when gmail.b64_padding is set (gmail.md: "padding
    may be absent", so both occur)."""
    if st.cfg("gmail.b64_padding"):
        return base64.urlsafe_b64encode(data).decode()
    return b64url_nopad(data)


class Renderer:
    def __init__(self, msg_id, st):
        self.msg_id = msg_id
        self.st = st
        self.attachments = {}

    def part(self, p, pid):
        mime = p.get("mimeType", "text/plain")
        fname = p.get("filename", "")
        out = {"partId": pid, "mimeType": mime, "filename": fname}
        headers = _hdr_list(p.get("headers"))
        if mime.startswith("multipart/"):
            boundary = "00000000000%s" % hashlib.md5((self.msg_id + pid).encode()).hexdigest()[:16]
            headers = headers or [{"name": "Content-Type", "value": '%s; boundary="%s"' % (mime, boundary)}]
            kids = [self.part(c, str(i) if pid == "" else "%s.%d" % (pid, i)) for i, c in enumerate(p.get("parts", []))]
            out.update(headers=headers, body={"size": 0}, parts=[k[0] for k in kids])
            return out, sum(k[1] for k in kids)
        if mime == "message/rfc822":
            inner = p["message"]
            ip = dict(inner["payload"])
            ip["headers"] = _hdr_list(inner.get("headers")) + _mime_headers(ip, self.msg_id, pid + ".0")
            child, size = self.part(ip, (pid + ".0") if pid else "0")
            headers = headers or [{"name": "Content-Type", "value": "message/rfc822"},
                                  {"name": "Content-Disposition", "value": "inline"}]
            out.update(headers=headers, body={"size": size}, parts=[child])
            return out, size
        if "text" in p:
            content = p["text"].encode(_pycodec(p.get("charset", "utf-8")))
        else:
            content = base64.b64decode(p.get("content_b64", ""))
        if not headers:
            charset = '; charset="%s"' % p["charset"] if p.get("charset") else ""
            if fname:
                headers = [{"name": "Content-Type", "value": '%s%s; name="%s"' % (mime, charset, _enc_word(fname))},
                           {"name": "Content-Disposition", "value": 'attachment; filename="%s"' % _enc_word(fname)},
                           {"name": "Content-Transfer-Encoding", "value": "base64"},
                           {"name": "X-Attachment-Id", "value": "f_%s" % hashlib.md5(fname.encode()).hexdigest()[:9]}]
            else:
                headers = [{"name": "Content-Type", "value": mime + (charset or '; charset="UTF-8"')},
                           {"name": "Content-Transfer-Encoding", "value": "quoted-printable"}]
        body = {"size": len(content)}
        if fname and not p.get("inline"):
            aid = "ANGjdJ" + b64url_nopad(hashlib.sha512((self.msg_id + "/" + pid).encode()).digest() * 2)[:160]
            self.attachments[aid] = content
            body = {"attachmentId": aid, "size": len(content)}
        else:
            body["data"] = b64url(self.st, content)
        out.update(headers=headers, body=body)
        return out, len(content)


def _mime_headers(payload, msg_id, pid):
    mime = payload.get("mimeType", "text/plain")
    if mime.startswith("multipart/"):
        boundary = "00000000000%s" % hashlib.md5((msg_id + pid).encode()).hexdigest()[:16]
        return [{"name": "MIME-Version", "value": "1.0"},
                {"name": "Content-Type", "value": '%s; boundary="%s"' % (mime, boundary)}]
    return [{"name": "MIME-Version", "value": "1.0"}, {"name": "Content-Type", "value": mime + '; charset="UTF-8"'}]


def _pycodec(charset):
    return {"windows-1251": "cp1251", "koi8-r": "koi8_r"}.get(charset.lower(), charset)


def render(st, msg):
    cache = st.runtime("gmail", lambda: {"rendered": {}})["rendered"]
    if msg["id"] in cache:
        return cache[msg["id"]]
    r = Renderer(msg["id"], st)
    payload = dict(msg["payload"])
    payload["headers"] = _hdr_list(msg.get("headers")) + _mime_headers(payload, msg["id"], "")
    top, size = r.part(payload, "")
    full = {"id": msg["id"], "threadId": msg.get("threadId", msg["id"]), "labelIds": msg.get("labelIds", []),
            "snippet": msg.get("snippet", ""), "sizeEstimate": size + 1500 + len(str(msg.get("headers"))),
            "historyId": str(msg.get("historyId", 100000 + int(msg["id"][-4:], 16))),
            "internalDate": str(msg["internalDate"]), "payload": top}
    cache[msg["id"]] = (full, r.attachments)
    return cache[msg["id"]]


# --------------------------------------------------------------------------- search


def _header(msg, name):
    h = msg.get("headers") or {}
    items = h.items() if isinstance(h, dict) else h
    return next((v for k, v in items if k.lower() == name.lower()), "")


def _filenames(p):
    out = [p.get("filename")] if p.get("filename") else []
    for c in p.get("parts", []):
        out += _filenames(c)
    if "message" in p:
        out += _filenames(p["message"]["payload"])
    return out


def _epoch(v, default_tz=PST):
    if re.fullmatch(r"\d+", v):
        return int(v)
    m = re.fullmatch(r"(\d{4})/(\d{1,2})/(\d{1,2})", v)
    if m:  # Gmail reads YYYY/MM/DD as midnight Pacific time
        return int(dt.datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=default_tz).timestamp())
    return None  # e.g. ISO dates: Gmail returns nothing


def _term(msg, term, now):
    secs = int(msg["internalDate"]) / 1000.0
    labels = [x.upper() for x in msg.get("labelIds", [])]
    key, _, val = term.partition(":") if ":" in term else ("", "", term)
    key, vl = key.lower(), val.lower()
    if key == "from":
        return vl in _header(msg, "From").lower()
    if key == "to":
        return vl in _header(msg, "To").lower()
    if key == "subject":
        return vl in _header(msg, "Subject").lower()
    if key == "has":
        return vl == "attachment" and bool(_filenames(msg["payload"]))
    if key == "filename":
        return any(f.lower().endswith("." + vl) or vl in f.lower() for f in _filenames(msg["payload"]))
    if key in ("after", "before"):
        e = _epoch(val)
        if e is None:
            return False
        return secs >= e if key == "after" else secs < e
    if key in ("newer_than", "older_than"):
        m = re.fullmatch(r"(\d+)([dmy])", vl)
        if not m:
            return False
        span = int(m[1]) * {"d": 86400, "m": 30 * 86400, "y": 365 * 86400}[m[2]]
        return secs >= now - span if key == "newer_than" else secs < now - span
    if key in ("label", "in"):
        return vl == "anywhere" or vl.upper() in labels
    if key == "is":
        return {"unread": "UNREAD" in labels, "read": "UNREAD" not in labels,
                "starred": "STARRED" in labels}.get(vl, False)
    hay = " ".join([_header(msg, "Subject"), _header(msg, "From"), msg.get("snippet", "")] +
                   _filenames(msg["payload"])).lower()
    return term.lower() in hay


def search(st, q, label_ids, include_spam_trash):
    msgs = (st.data.get("gmail") or {}).get("messages", [])
    try:
        terms = shlex.split(q or "")
    except ValueError:
        terms = (q or "").split()
    if any(t.lower() in ("in:anywhere", "in:spam", "in:trash", "label:spam", "label:trash") for t in terms):
        include_spam_trash = True
    out = []
    for m in msgs:
        labels = [x.upper() for x in m.get("labelIds", [])]
        if not include_spam_trash and ("SPAM" in labels or "TRASH" in labels):
            continue
        if any(l.upper() not in labels for l in label_ids):
            continue
        ok = True
        for t in terms:
            neg = t.startswith("-") and len(t) > 1
            hit = _term(m, t[1:] if neg else t, st.now())
            if hit == neg:
                ok = False
                break
        if ok:
            out.append(m)
    return sorted(out, key=lambda m: -int(m["internalDate"]))


# --------------------------------------------------------------------------- handlers


def _page_token(offset):
    return "1%010d" % offset


def _offset(tok):
    if not re.fullmatch(r"1\d{10}", tok or ""):
        return None
    return int(tok[1:])


def handle(req, st):
    m = re.fullmatch(r"/gmail/v1/users/([^/]+)(/.*)?", req.sub)
    if not m:
        return None
    tok = req.bearer()
    state = api_google.access_token_state(st, tok) if tok else "unknown"
    if state != "ok":
        return auth_error()
    user, rest = m.group(1), (m.group(2) or "").rstrip("/")
    gm = st.data.get("gmail") or {}
    if user not in ("me", gm.get("email", "sales@example.com")):
        return gerr(403, "Delegation denied for %s" % user, "forbidden", "PERMISSION_DENIED")
    if req.method != "GET":
        return gerr(405, "Method not allowed", "badRequest")
    msgs = {x["id"]: x for x in gm.get("messages", [])}
    if rest == "/profile":
        return json_response({"emailAddress": gm.get("email", "sales@example.com"), "messagesTotal": len(msgs),
                              "threadsTotal": len(msgs), "historyId": "123456"}, 200, "google")
    if rest == "/messages":
        try:
            max_results = int(req.q("maxResults", "100"))
        except ValueError:
            return gerr(400, "Invalid value for maxResults", "invalid", "INVALID_ARGUMENT", location="maxResults")
        if max_results < 1:
            return gerr(400, "Invalid value for maxResults", "invalid", "INVALID_ARGUMENT", location="maxResults")
        max_results = min(max_results, int(st.cfg("gmail.max_results_cap")))
        offset = 0
        if req.q("pageToken"):
            offset = _offset(req.q("pageToken"))
            if offset is None:
                return gerr(400, "Invalid pageToken", "invalid", "INVALID_ARGUMENT", location="pageToken")
        found = search(st, req.q("q", ""), req.query.get("labelIds", []),
                       (req.q("includeSpamTrash", "false") or "").lower() == "true")
        page = found[offset: offset + max_results]
        body = {}
        if page:
            body["messages"] = [{"id": x["id"], "threadId": x.get("threadId", x["id"])} for x in page]
        if offset + max_results < len(found):
            body["nextPageToken"] = _page_token(offset + max_results)
        body["resultSizeEstimate"] = len(found) if page else 0
        return json_response(body, 200, "google")
    mm = re.fullmatch(r"/messages/([^/]+)(?:/attachments/([^/]+))?", rest)
    if not mm:
        return gerr(404, "Not Found", "notFound", "NOT_FOUND")
    msg = msgs.get(mm.group(1))
    if msg is None:
        return gerr(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
    full, atts = render(st, msg)
    if mm.group(2):
        data = atts.get(mm.group(2))
        if data is None:
            return gerr(400, "Invalid attachment token", "invalidArgument", "INVALID_ARGUMENT")
        return json_response({"attachmentId": mm.group(2), "size": len(data), "data": b64url(st, data)},
                             200, "google")
    fmt = (req.q("format", "full") or "full").lower()
    if fmt == "full":
        return json_response(full, 200, "google")
    if fmt == "minimal":
        return json_response({k: v for k, v in full.items() if k != "payload"}, 200, "google")
    if fmt == "metadata":
        want = [h.lower() for h in req.query.get("metadataHeaders", [])]
        hdrs = [h for h in full["payload"]["headers"] if not want or h["name"].lower() in want]
        out = {k: v for k, v in full.items() if k != "payload"}
        out["payload"] = {"partId": "", "mimeType": full["payload"]["mimeType"], "filename": "", "headers": hdrs,
                          "body": {"size": 0}}
        return json_response(out, 200, "google")
    return gerr(400, "Invalid value for format: %s (raw is not implemented by the fake)" % fmt, "invalid",
                "INVALID_ARGUMENT", location="format")
