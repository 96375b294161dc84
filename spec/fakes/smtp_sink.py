#!/usr/bin/env python3
"""Minimal ESMTP sink for tests (stdlib sockets, one thread per connection).

  python3 spec/fakes/smtp_sink.py --port 0 --out DIR [--auth USER:PASS] [--tls-cert C --tls-key K]

Prints `READY <port>` when listening. Each accepted message becomes DIR/msg-NNNN.eml (written atomically):
X-Sink-* envelope headers (Helo, Mail-From, Rcpt-To per recipient, Auth-User, Tls) followed by the raw
DATA after dot-unstuffing. Commands: EHLO/HELO, AUTH PLAIN/LOGIN (any credentials unless --auth),
STARTTLS (only with --tls-cert/--tls-key), MAIL FROM, RCPT TO, DATA, RSET, NOOP, VRFY, QUIT.
"""

import argparse
import base64
import itertools
import os
import re
import socket
import ssl
import sys
import threading

MAX_LINE = 1 << 20


class Session:
    def __init__(self, conn, peer, opts):
        self.conn, self.peer, self.opts = conn, peer, opts
        self.rfile = conn.makefile("rb")
        self.helo = None
        self.auth_user = None
        self.tls = False
        self.reset()

    def reset(self):
        self.mail_from = None
        self.rcpts = []

    def send(self, line):
        self.conn.sendall((line + "\r\n").encode("utf-8"))

    def readline(self):
        line = self.rfile.readline(MAX_LINE)
        if not line:
            raise EOFError
        return line

    def run(self):
        self.send("220 fake-smtp ESMTP ready")
        while True:
            try:
                raw = self.readline()
            except (EOFError, OSError):
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "cmd_" + verb, None)
            if handler is None:
                self.send("502 5.5.2 Command not recognized")
                continue
            try:
                if handler(arg.strip()) == "quit":
                    return
            except (EOFError, OSError):
                return

    # ---- commands
    def cmd_EHLO(self, arg):
        self.helo = arg
        self.reset()
        ext = ["fake-smtp greets %s" % (arg or "client"), "8BITMIME", "SMTPUTF8", "PIPELINING",
               "SIZE 52428800", "AUTH PLAIN LOGIN"]
        if self.opts.tls_ctx and not self.tls:
            ext.append("STARTTLS")
        for i, e in enumerate(ext):
            self.send(("250-" if i < len(ext) - 1 else "250 ") + e)

    def cmd_HELO(self, arg):
        self.helo = arg
        self.reset()
        self.send("250 fake-smtp")

    def cmd_STARTTLS(self, arg):
        if not self.opts.tls_ctx or self.tls:
            self.send("502 5.5.1 STARTTLS not available")
            return
        self.send("220 2.0.0 Ready to start TLS")
        self.conn = self.opts.tls_ctx.wrap_socket(self.conn, server_side=True)
        self.rfile = self.conn.makefile("rb")
        self.tls = True
        self.helo = None
        self.reset()

    def _check(self, user, password):
        if self.opts.auth and (user, password) != self.opts.auth:
            self.send("535 5.7.8 Authentication credentials invalid")
            return
        self.auth_user = user
        self.send("235 2.7.0 Authentication successful")

    def _b64line(self):
        return base64.b64decode(self.readline().strip() or b"").decode("utf-8", "replace")

    def cmd_AUTH(self, arg):
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        try:
            if mech == "PLAIN":
                if not initial:
                    self.send("334 ")
                    blob = self._b64line()
                else:
                    blob = base64.b64decode(initial).decode("utf-8", "replace")
                parts = blob.split("\x00")
                return self._check(parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
            if mech == "LOGIN":
                if initial:
                    user = base64.b64decode(initial).decode("utf-8", "replace")
                else:
                    self.send("334 VXNlcm5hbWU6")
                    user = self._b64line()
                self.send("334 UGFzc3dvcmQ6")
                return self._check(user, self._b64line())
        except (ValueError, UnicodeDecodeError):
            self.send("501 5.5.2 Cannot decode response")
            return
        self.send("504 5.5.4 Unrecognized authentication type")

    def cmd_MAIL(self, arg):
        m = re.match(r"(?i)FROM:\s*<([^>]*)>", arg)
        if not m:
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        if self.opts.auth and not self.auth_user:
            self.send("530 5.7.0 Authentication required")
            return
        self.reset()
        self.mail_from = m.group(1)
        self.send("250 2.1.0 OK")

    def cmd_RCPT(self, arg):
        m = re.match(r"(?i)TO:\s*<([^>]+)>", arg)
        if self.mail_from is None:
            self.send("503 5.5.1 Need MAIL before RCPT")
        elif not m:
            self.send("501 5.5.4 Syntax: RCPT TO:<address>")
        else:
            self.rcpts.append(m.group(1))
            self.send("250 2.1.5 OK")

    def cmd_DATA(self, arg):
        if not self.rcpts:
            self.send("503 5.5.1 Need RCPT before DATA")
            return
        self.send("354 End data with <CR><LF>.<CR><LF>")
        lines = []
        while True:
            line = self.readline()
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]  # dot-unstuffing
            lines.append(line)
        path = self.opts.store(self, b"".join(lines))
        self.send("250 2.0.0 OK queued as %s" % os.path.basename(path))
        self.reset()

    def cmd_RSET(self, arg):
        self.reset()
        self.send("250 2.0.0 OK")

    def cmd_NOOP(self, arg):
        self.send("250 2.0.0 OK")

    def cmd_VRFY(self, arg):
        self.send("252 2.0.0 Cannot VRFY user")

    def cmd_QUIT(self, arg):
        self.send("221 2.0.0 Bye")
        return "quit"


class Sink:
    def __init__(self, out, auth=None, tls_ctx=None):
        self.out, self.auth, self.tls_ctx = out, auth, tls_ctx
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        os.makedirs(out, exist_ok=True)

    def store(self, sess, data):
        with self.lock:
            n = next(self.counter)
            while os.path.exists(os.path.join(self.out, "msg-%04d.eml" % n)):
                n = next(self.counter)
        env = ["X-Sink-Helo: %s" % (sess.helo or ""), "X-Sink-Mail-From: <%s>" % sess.mail_from]
        env += ["X-Sink-Rcpt-To: <%s>" % r for r in sess.rcpts]
        env += ["X-Sink-Auth-User: %s" % (sess.auth_user or ""), "X-Sink-Tls: %s" % ("yes" if sess.tls else "no"),
                "X-Sink-Peer: %s:%d" % sess.peer[:2]]
        path = os.path.join(self.out, "msg-%04d.eml" % n)
        tmp = os.path.join(self.out, ".msg-%04d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(("\r\n".join(env) + "\r\n").encode("utf-8") + data)
        os.replace(tmp, path)
        return path


def serve(port, sink):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(32)
    sys.stdout.write("READY %d\n" % ls.getsockname()[1])
    sys.stdout.flush()
    while True:
        conn, peer = ls.accept()
        threading.Thread(target=_session, args=(conn, peer, sink), daemon=True).start()


def _session(conn, peer, sink):
    try:
        Session(conn, peer, sink).run()
    except Exception as e:  # keep serving other clients
        sys.stderr.write("smtp_sink: session error: %r\n" % e)
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--auth", help="USER:PASS required for AUTH (default: any credentials accepted, AUTH optional)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    a = ap.parse_args(argv)
    ctx = None
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    auth = tuple(a.auth.split(":", 1)) if a.auth else None
    try:
        serve(a.port, Sink(a.out, auth, ctx))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
