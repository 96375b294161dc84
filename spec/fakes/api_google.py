"""Google OAuth 2.0 (installed-app) under /google: token endpoint, loopback consent, revoke.

  POST /google/token    grant_type=refresh_token | authorization_code   (form-encoded)
  GET  /google/auth     consent: 302 to the loopback redirect_uri with ?code=&state=&scope=
  POST /google/revoke   token=<refresh or access token>

Issued access tokens live `google.access_token_lifetime` seconds of the fake clock; api_gmail checks them.
"""

import base64
import hashlib
import itertools
import urllib.parse

from fakecore import Response, json_response

PREFIX = "/google"
_counter = itertools.count(1)


def rt(st):
    return st.runtime("google", lambda: {"access": {}, "refresh": [], "revoked": [], "codes": {}})


def oerr(status, error, description=None):
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return json_response(body, status, "google")


def api_error(code, req, st):
    if str(code) in ("invalid_client", "401"):
        return oerr(401, "invalid_client", "Unauthorized")
    if str(code) in ("invalid_grant", "400"):
        return oerr(400, "invalid_grant", "Token has been expired or revoked.")
    return oerr(int(code) if str(code).isdigit() else 400, str(code), "Injected error")


def _client_ok(st, cid, secret, need_secret=True):
    for c in st.auth("google").get("clients", []):
        if c["client_id"] == cid and (not need_secret or c.get("client_secret") == secret):
            return True
    return False


def issue_access(st, scope):
    tok = "ya29.a0Af%06d%s" % (next(_counter), hashlib.sha1(str(st.now()).encode()).hexdigest()[:24])
    rt(st)["access"][tok] = {"issued": st.now(), "scope": scope}
    return tok


def access_token_state(st, tok):
    """'ok' | 'expired' | 'unknown'."""
    if tok in st.auth("google").get("static_access_tokens", []):
        return "ok"
    info = rt(st)["access"].get(tok)
    if info is None:
        return "unknown"
    if st.now() - info["issued"] >= float(st.cfg("google.access_token_lifetime")):
        return "expired"
    return "ok"


def _refresh_valid(st, token):
    r = rt(st)
    if token in r["revoked"] or token in st.auth("google").get("revoked_refresh_tokens", []):
        return False
    return token in r["refresh"] or token in st.auth("google").get("refresh_tokens", [])


def token(req, st):
    if req.method != "POST":
        return oerr(405, "invalid_request", "Method not allowed")
    f = req.form()
    # client_secret_basic is accepted as well as client_secret_post
    auth = req.header("Authorization") or ""
    if auth.lower().startswith("basic "):
        try:
            cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
            f.setdefault("client_id", urllib.parse.unquote(cid))
            f.setdefault("client_secret", urllib.parse.unquote(sec))
        except (ValueError, UnicodeDecodeError):
            pass
    gt = f.get("grant_type")
    if gt not in ("refresh_token", "authorization_code"):
        return oerr(400, "unsupported_grant_type", "Invalid grant_type: %s" % (gt or ""))
    if not _client_ok(st, f.get("client_id"), f.get("client_secret")):
        return oerr(401, "invalid_client", "Unauthorized")
    scope = st.auth("google").get("scope", "https://www.googleapis.com/auth/gmail.readonly")
    if gt == "refresh_token":
        if not f.get("refresh_token"):
            return oerr(400, "invalid_request", "Missing required parameter: refresh_token")
        if not _refresh_valid(st, f["refresh_token"]):
            return oerr(400, "invalid_grant", "Token has been expired or revoked.")
        return json_response({"access_token": issue_access(st, scope), "expires_in": 3599, "scope": scope,
                              "token_type": "Bearer"}, 200, "google")
    code = f.get("code")
    with st.lock:
        info = rt(st)["codes"].pop(code, None)
    if info is None and code in st.auth("google").get("codes", []):
        info = {"redirect_uri": f.get("redirect_uri"), "scope": scope, "client_id": f.get("client_id")}
    if info is None:
        return oerr(400, "invalid_grant", "Bad Request")
    if info.get("redirect_uri") != f.get("redirect_uri") or info.get("client_id") != f.get("client_id"):
        return oerr(400, "redirect_uri_mismatch", "Bad Request")
    if info.get("code_challenge"):
        ver = f.get("code_verifier") or ""
        calc = base64.urlsafe_b64encode(hashlib.sha256(ver.encode()).digest()).decode().rstrip("=") \
            if info.get("code_challenge_method") == "S256" else ver
        if calc != info["code_challenge"]:
            return oerr(400, "invalid_grant", "Invalid code verifier.")
    refresh = "1//0g%06dfake-refresh" % next(_counter)
    rt(st)["refresh"].append(refresh)
    return json_response({"access_token": issue_access(st, info.get("scope") or scope), "expires_in": 3599,
                          "refresh_token": refresh, "scope": info.get("scope") or scope, "token_type": "Bearer"},
                         200, "google")


def consent(req, st):
    p = {k: v[0] for k, v in req.query.items()}
    if not _client_ok(st, p.get("client_id"), None, need_secret=False):
        return Response(400, "Error 401: invalid_client\nThe OAuth client was not found.", None,
                        "text/plain; charset=utf-8")
    redirect = p.get("redirect_uri", "")
    u = urllib.parse.urlsplit(redirect)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost", "::1"):
        return Response(400, "Error 400: invalid_request\nredirect_uri must be a loopback address "
                             "(OOB is blocked since 2023)", None, "text/plain; charset=utf-8")
    code = "4/0Ab%06dfake-code" % next(_counter)
    rt(st)["codes"][code] = {"redirect_uri": redirect, "scope": p.get("scope"), "client_id": p.get("client_id"),
                             "code_challenge": p.get("code_challenge"),
                             "code_challenge_method": p.get("code_challenge_method", "plain")}
    q = {"code": code, "scope": p.get("scope", "")}
    if "state" in p:
        q = {"state": p["state"], **q}
    loc = redirect + ("&" if "?" in redirect else "?") + urllib.parse.urlencode(q)
    return Response(302, "", [("Location", loc)], "text/html; charset=utf-8")


def revoke(req, st):
    tok = req.params().get("token") or req.form().get("token")
    r = rt(st)
    if tok in r["access"]:
        del r["access"][tok]
    elif tok in r["refresh"] or tok in st.auth("google").get("refresh_tokens", []):
        r["revoked"].append(tok)
    else:
        return oerr(400, "invalid_token", "Token expired or revoked")
    return json_response({}, 200, "google")


def handle(req, st):
    sub = req.sub.rstrip("/")
    if sub == "/token":
        return token(req, st)
    if sub in ("/auth", "/o/oauth2/auth", "/o/oauth2/v2/auth"):
        return consent(req, st)
    if sub == "/revoke" and req.method == "POST":
        return revoke(req, st)
    return None
