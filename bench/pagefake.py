#!/usr/bin/env python3
"""Fast fake of QTickets' GET /orders for the ingest benchmark (Python 3 standard library only).

spec/fakes/fakeapi.py filters, sorts and JSON-encodes every page on every request: fine for tests, far
too slow to feed a loader at full speed. This server renders pages from a few pre-encoded templates:

* At start it builds TEMPLATES pages of 50 paid orders each with spec/fakes/datagen.py (the same
  generator the tests use: clients, baskets, refunds, UTM, Cyrillic), encoded like PHP's
  json_encode (every non-ASCII character as \\uXXXX, '/' as '\\/'), so a page is ~100 KB and an
  order with its client and baskets ~2 KB.
* Pre-forked worker processes (--workers, default 16), each serving one keep-alive connection at a
  time with blocking sockets: an asyncio server was 4x slower with 8 connections than with one.
* Order ids and basket ids are cut out of the encoded text; page P of N is template (P-1) % TEMPLATES
  with ids made unique for P by a join of the pieces, so N can be a million without holding a
  million orders in memory and every order id / basket id in the whole run is distinct.

Page number: the JSON body's "page" (what the zhost and Python jobs send, like the real API), else
the query string's ?page= (for curl, whose URL globbing cannot put a counter in a body).

    python3 bench/pagefake.py --orders 100000 [--latency-ms 150] [--port 0] [--expected FILE]

Prints "READY http://127.0.0.1:PORT" once listening; stops (with its workers) on SIGTERM. --expected writes
{"orders": N, "pages": P, "rows": basket rows a loader must insert} and exits without serving.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "spec", "fakes"))

import datagen  # noqa: E402
from fakecore import php_json  # noqa: E402

PER_PAGE = 50
TEMPLATES = 20
# Sentinels put in place of ids before encoding, then cut out of the text. Digits no other
# field of the generated data can contain as a whole JSON number.
ORDER_SENT = 987650000
BASKET_SENT = 876540000
SENT_RE = re.compile(rb"(?<=[:\[,])(98765|87654)(\d{4})(?=[,}\]])")


def build_templates(seed=7):
    """Returns (list of (parts, kinds, idx), rows per template)."""
    want = TEMPLATES * PER_PAGE
    rng = datagen.random.Random(seed)
    evs = datagen._gen_events(rng, 8, datagen.dt.date(2025, 11, 1), 14)
    # ~80% of generated orders are paid; the API filters payed=1 server-side, so keep only those.
    orders = [o for o in datagen._gen_orders(rng, want * 3 // 2, evs, datagen.dt.date(2025, 11, 1), 14) if o["payed"]]
    assert len(orders) >= want
    orders = orders[:want]
    templates = []
    for t in range(TEMPLATES):
        page = orders[t * PER_PAGE:(t + 1) * PER_PAGE]
        nb = 0
        for k, o in enumerate(page):
            o["id"] = ORDER_SENT + k
            for b in o["baskets"]:
                b["id"] = BASKET_SENT + nb
                nb += 1
        text = php_json({"data": page, "paging": {"perPage": PER_PAGE, "currentPage": 0, "total": 0}})
        # Cut: literal pieces and (kind, index) holes between them.
        parts, holes, pos = [], [], 0
        for m in SENT_RE.finditer(text):
            parts.append(text[pos:m.start()])
            holes.append((m.group(1) == b"98765", int(m.group(2))))
            pos = m.end()
        tail = text[pos:]
        # The paging block is at the end: make it a format hole too.
        cut = tail.rindex(b'"paging":')
        parts.append(tail[:cut])
        templates.append((parts, holes, nb))
        assert len(holes) == PER_PAGE + nb, (len(holes), nb)
    return templates


def expected(templates, n_orders):
    pages = n_orders // PER_PAGE
    rows = sum(templates[(p - 1) % TEMPLATES][2] for p in range(1, pages + 1))
    return {"orders": n_orders, "pages": pages, "rows": rows}


def render(templates, page, pages, total):
    """Bytes of page `page` (1-based); an empty data array past the end."""
    if page < 1 or page > pages:
        return b'{"data":[],"paging":{"perPage":%d,"currentPage":%d,"total":%d}}' % (PER_PAGE, page, total)
    parts, holes, _ = templates[(page - 1) % TEMPLATES]
    obase = 10_000_000 + (page - 1) * PER_PAGE
    bbase = 100_000_000 + (page - 1) * 1000  # a page never has 1000 baskets (at most 4 per order)
    out = [parts[0]]
    for i, (is_order, k) in enumerate(holes):
        out.append(b"%d" % ((obase if is_order else bbase) + k))
        out.append(parts[i + 1])
    out.append(b'"paging":{"perPage":%d,"currentPage":%d,"total":%d}}' % (PER_PAGE, page, total))
    return b"".join(out)


PAGE_RE = re.compile(rb'"page"\s*:\s*"?(\d+)')
QPAGE_RE = re.compile(rb"[?&]page=(\d+)")


def read_request(sock, buf):
    """One request off a blocking socket: (request line, body, close?, rest of buf), or None at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    line, _, rest = head.partition(b"\r\n")
    clen, close = 0, False
    for h in rest.split(b"\r\n"):
        name, _, v = h.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            clen = int(v)
        elif name == b"connection" and v.strip().lower() == b"close":
            close = True
        elif name == b"expect" and v.strip().lower() == b"100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    while len(buf) < clen:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return line, buf[:clen], close, buf[clen:]


def serve_connection(sock, templates, pages, total, latency):
    buf = b""
    while True:
        req = read_request(sock, buf)
        if req is None:
            return
        line, body, close, buf = req
        m = PAGE_RE.search(body) or QPAGE_RE.search(line)
        page = int(m.group(1)) if m else 1
        if latency:
            time.sleep(latency)
        parts = line.split(b" ")
        if len(parts) > 1 and b"/orders" in parts[1]:
            payload, status = render(templates, page, pages, total), b"200 OK"
        else:
            payload, status = b'{"error":"Not found","status":404}', b"404 Not Found"
        sock.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
            status, len(payload), b"Connection: close\r\n" if close else b"") + payload)
        if close:
            return


def worker(lsock, templates, pages, total, latency):
    """A pre-forked process: one connection at a time, blocking I/O (no event loop in the way)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        try:
            sock, _ = lsock.accept()
        except OSError:
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            serve_connection(sock, templates, pages, total, latency)
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()


def serve(args, templates):
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(256)
    kids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            try:
                worker(lsock, templates, args.orders // PER_PAGE, args.orders, args.latency_ms / 1000.0)
            finally:
                os._exit(0)
        kids.append(pid)

    def stop(*_):
        for k in kids:
            try:
                os.kill(k, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for k in kids:
            os.waitpid(k, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY http://127.0.0.1:%d" % lsock.getsockname()[1], flush=True)
    while True:
        signal.pause()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, required=True, help="multiple of 50")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--workers", type=int, default=16, help="pre-forked processes = connections served at once")
    ap.add_argument("--expected", help="write the expected counts as JSON to this file and exit")
    ap.add_argument("--dump-page", type=int, help="print this page and exit")
    args = ap.parse_args()
    if args.orders <= 0 or args.orders % PER_PAGE:
        ap.error("--orders must be a positive multiple of %d" % PER_PAGE)
    templates = build_templates()
    if args.expected:
        with open(args.expected, "w") as f:
            json.dump(expected(templates, args.orders), f)
        return
    if args.dump_page:
        sys.stdout.buffer.write(render(templates, args.dump_page, args.orders // PER_PAGE, args.orders))
        return
    serve(args, templates)


if __name__ == "__main__":
    main()
