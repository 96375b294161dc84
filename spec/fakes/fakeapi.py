#!/usr/bin/env python3
"""One process serving fake QTickets, Google OAuth + Gmail, VK Ads v2, legacy VK API and Yandex Direct.

  python3 spec/fakes/fakeapi.py --port 0 [--data FILE.json] [--latency-ms N] [--set key=value ...]

Prints exactly one line `READY http://127.0.0.1:PORT` on stdout when listening. See docs/fakes.md.
"""

import argparse
import json
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api_direct  # noqa: E402
import api_gmail  # noqa: E402
import api_google  # noqa: E402
import api_qtickets  # noqa: E402
import api_vkads  # noqa: E402
import api_vkapi  # noqa: E402
import datagen  # noqa: E402
from fakecore import DEFAULT_CONFIG, State, make_server  # noqa: E402

APIS = (api_qtickets, api_google, api_gmail, api_vkads, api_vkapi, api_direct)


def _parse_set(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        if k not in DEFAULT_CONFIG:
            raise SystemExit("unknown config key %r (known: %s)" % (k, ", ".join(sorted(DEFAULT_CONFIG))))
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def write_env(directory, base, data):
    """secrets/.env.<source> files (+ gmail credentials/token json) pointing at this fake, for demos and tests."""
    auth = data.get("auth") or datagen.default_auth()  # same fallback as State.auth
    g = auth["google"]
    gdir = os.path.join(directory, "gmail")
    os.makedirs(gdir, exist_ok=True)
    vk = data.get("vk") or {}
    direct_tok = next(iter(auth["direct"]["tokens"]))
    vkc = auth["vkads"]["clients"][0]
    files = {
        ".env.qtickets": ["QTICKETS_BASE_URL=%s/qtickets/api/rest/v1" % base,
                          "QTICKETS_TOKEN=%s" % auth["qtickets"]["tokens"][0]],
        ".env.vk": ["VK_API_URL=%s/vkapi/method" % base, "VK_TOKEN=%s" % auth["vkapi"]["tokens"][0],
                    "VK_ACCOUNT_IDS=%s" % vk.get("account_id", ""), "VK_API_VERSION=5.131",
                    "VK_ADS_BASE_URL=%s/vkads" % base, "VK_ADS_CLIENT_ID=%s" % vkc["client_id"],
                    "VK_ADS_CLIENT_SECRET=%s" % vkc["client_secret"]],
        ".env.direct": ["DIRECT_BASE_URL=%s/direct/json/v5" % base, "DIRECT_TOKEN=%s" % direct_tok,
                        "DIRECT_LOGIN=%s" % auth["direct"]["tokens"][direct_tok].get("login", "")],
        ".env.gmail": ["GMAIL_BASE_URL=%s/gmail" % base,
                       "GMAIL_CREDENTIALS_PATH=%s" % os.path.join(gdir, "credentials.json"),
                       "GMAIL_TOKEN_PATH=%s" % os.path.join(gdir, "token.json")],
    }
    for name, lines in files.items():
        path = os.path.join(directory, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            f.write("# written by spec/fakes/fakeapi.py --write-env\n" + "\n".join(lines) + "\n")
        os.chmod(path, 0o600)
    client = g["clients"][0]
    creds = {"installed": {"client_id": client["client_id"], "project_id": "fake-project",
                           "auth_uri": base + "/google/auth", "token_uri": base + "/google/token",
                           "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                           "client_secret": client["client_secret"], "redirect_uris": ["http://localhost"]}}
    token = {"token": "ya29.expired-demo-token", "refresh_token": g["refresh_tokens"][0],
             "token_uri": base + "/google/token", "client_id": client["client_id"],
             "client_secret": client["client_secret"], "scopes": [g["scope"]], "universe_domain": "googleapis.com",
             "account": "", "expiry": "2020-01-01T00:00:00Z"}
    for name, obj in (("credentials.json", creds), ("token.json", token)):
        path = os.path.join(gdir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
        os.chmod(path, 0o600)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--data", help="data set JSON (default: datagen.generate(seed=--seed))")
    ap.add_argument("--seed", type=int, default=1, help="seed for the built-in data set when --data is absent")
    ap.add_argument("--latency-ms", type=int, default=0, help="added to every API request")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (JSON value), repeatable")
    ap.add_argument("--qtickets-ignore-filters", action="store_true", help="same as --set qtickets.ignore_filters=true")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    ap.add_argument("--write-env", metavar="DIR", help="write DIR/.env.<source> and DIR/gmail/*.json for this fake")
    a = ap.parse_args(argv)
    if a.data:
        with open(a.data, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = datagen.generate(seed=a.seed)
    overrides = _parse_set(a.set)
    if a.qtickets_ignore_filters:
        overrides["qtickets.ignore_filters"] = True
    st = State(data, overrides, a.latency_ms, datagen.default_auth())
    srv = make_server(a.port, st, APIS, a.verbose)
    if a.write_env:
        os.makedirs(a.write_env, exist_ok=True)
        write_env(a.write_env, "http://127.0.0.1:%d" % srv.server_address[1], data)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    sys.stdout.write("READY http://127.0.0.1:%d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
