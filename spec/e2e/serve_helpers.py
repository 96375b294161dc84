"""Helpers for the `zhost serve` end-to-end tests: a daemon in the background whose log lines are
collected, a free port, and plain HTTP calls (standard library only)."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from zhtest import ZHOST


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """`zhost serve --conf CONF` with its stderr collected line by line."""

    def __init__(self, case, conf, env=None, extra_args=()):
        e = dict(case.env)
        if env:
            e.update(env)
        self.proc = subprocess.Popen([ZHOST, "serve", "--conf", conf, *extra_args], env=e, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=case.tmp)
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def log(self):
        with self.lock:
            return list(self.lines)

    def grep(self, pattern):
        rx = re.compile(pattern)
        return [l for l in self.log() if rx.search(l)]

    def wait_for(self, pattern, timeout=30, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = self.grep(pattern)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                time.sleep(0.2)
                found = self.grep(pattern)
                if len(found) >= count:
                    return found
                raise AssertionError("zhost serve exited (%s) before /%s/ x%d:\n%s" %
                                     (self.proc.returncode, pattern, count, "\n".join(self.log()[-40:])))
            time.sleep(0.05)
        raise AssertionError("no /%s/ x%d within %ss:\n%s" % (pattern, count, timeout, "\n".join(self.log()[-40:])))

    def ready(self, timeout=60):
        return self.wait_for(r'msg="zhost serve ready"', timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return self.proc.returncode

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)


def request(port, path, method="GET", body=None, headers=None, timeout=10):
    """Returns (status, headers dict (lower-case), body text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read().decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def request_json(port, path):
    status, headers, body = request(port, path)
    return status, headers, json.loads(body)


def raw(port, payload, timeout=5, read=True):
    """Sends raw bytes; returns what the server answered before closing (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    return path
