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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--data", help="data set JSON (default: datagen.generate(seed=--seed))")
    ap.add_argument("--seed", type=int, default=1, help="seed for the built-in data set when --data is absent")
    ap.add_argument("--latency-ms", type=int, default=0, help="added to every API request")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (JSON value), repeatable")
    ap.add_argument("--qtickets-ignore-filters", action="store_true", help="same as --set qtickets.ignore_filters=true")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    a = ap.parse_args(argv)
    if a.data:
        with open(a.data, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = datagen.generate(seed=a.seed)
    overrides = _parse_set(a.set)
    if a.qtickets_ignore_filters:
        overrides["qtickets.ignore_filters"] = True
    st = State(data, overrides, a.latency_ms)
    srv = make_server(a.port, st, APIS, a.verbose)
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
