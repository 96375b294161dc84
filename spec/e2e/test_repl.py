"""End-to-end tests of `zhost repl`: the real binary driven through a pseudo-terminal (line
editing, Ctrl-C, Ctrl-D, history) and through a pipe."""
import fcntl
import http.server
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
import unittest

ZHOST = os.environ.get("ZHOST_BIN", "zhost")
PROMPT = b"> "


def clean_env(tmp, **extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({
        "TERM": "xterm",
        "HOME": tmp,
        "ZHOST_SECRETS": os.path.join(tmp, "secrets"),
        "ZHOST_HISTORY": os.path.join(tmp, "history"),
        "ZHOST_LOG_LEVEL": "warn",
    })
    env.update(extra)
    return env


class Session:
    """One `zhost repl` on a pty: send keys, wait for output."""

    def __init__(self, env, cwd, args=()):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the pty is its controlling terminal, so ^C is a SIGINT
            try:
                # wide enough that no typed line wraps (libedit redraws a wrapped line)
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 300, 0, 0))
                os.chdir(cwd)
                os.execve(ZHOST, [ZHOST, "repl", *args], env)
            finally:
                os._exit(127)
        self.out = b""
        self.mark = 0
        self.status = None

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            return None
        self.out += data
        return True

    def expect(self, pattern, timeout=10.0):
        """Waits until pattern (regex, bytes) appears after the mark; moves the mark past it."""
        rx = re.compile(pattern, re.S)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, self.mark)
            if m:
                self.mark = m.end()
                return m
            left = end - time.monotonic()
            if left <= 0 or self._read(min(left, 0.1)) is None:
                m = rx.search(self.out, self.mark)
                if m:
                    self.mark = m.end()
                    return m
                raise AssertionError("did not see %r; output since mark: %r" % (pattern, self.out[self.mark:]))

    def send(self, text):
        os.write(self.fd, text.encode() if isinstance(text, str) else text)

    def line(self, text):
        """Types a line and waits for its echo, so what follows is the input's own output."""
        self.send(text + "\r")
        self.expect(re.escape(text.encode()) + rb"\r\n")

    def prompt(self, timeout=10.0):
        return self.expect(rb"(?<![^\n])" + re.escape(PROMPT), timeout)

    def wait(self, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            self._read(0.05)
        raise AssertionError("zhost repl did not exit; output: %r" % self.out[self.mark:])

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


class PingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ReplTestBase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zhost-repl-")
        os.makedirs(os.path.join(self.tmp, "secrets"), mode=0o700)
        self.env = clean_env(self.tmp)
        self.sessions = []

    def tearDown(self):
        for s in self.sessions:
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, *args):
        s = Session(self.env, self.tmp, args)
        self.sessions.append(s)
        s.prompt()
        return s

    def result(self, s, code):
        """Evaluates one line and returns what it printed before the next prompt."""
        s.line(code)
        m = s.expect(rb"(.*?)\r\n" + re.escape(PROMPT))
        return m.group(1).decode()


class TestReplTerminal(ReplTestBase):
    def test_expression_prints_its_value(self):
        s = self.start()
        self.assertEqual(self.result(s, "1+1"), "2")
        self.assertEqual(self.result(s, "'a' .. 'b', 2.5, nil, true"), '"ab"\t2.5\tnil\ttrue')

    def test_globals_persist_between_inputs(self):
        s = self.start()
        s.line("x = 20")
        s.prompt()
        self.assertEqual(self.result(s, "x + 1"), "21")

    def test_multi_line_function_then_call(self):
        s = self.start()
        s.line("function add(a, b)")
        s.expect(re.escape(b">> "))
        s.line("  local sum = a + b")
        s.expect(re.escape(b">> "))
        s.line("  return sum")
        s.expect(re.escape(b">> "))
        s.line("end")
        s.prompt()
        self.assertEqual(self.result(s, "add(40, 2)"), "42")

    def test_table_prints_with_sorted_keys(self):
        s = self.start()
        self.assertEqual(self.result(s, "{zeta = 1, alpha = {3, 2, 1}, mid = {b = true, a = 'x'}}"),
                         '{"alpha": [3, 2, 1], "mid": {"a": "x", "b": true}, "zeta": 1}')

    def test_http_get_against_local_server(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PingHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        with open(os.path.join(self.tmp, "secrets", ".env.qtickets"), "w") as f:
            f.write("QTICKETS_BASE_URL=http://127.0.0.1:%d/api\nQTICKETS_TOKEN=tok-123\n" % srv.server_port)
        os.chmod(os.path.join(self.tmp, "secrets", ".env.qtickets"), 0o600)
        s = self.start()
        s.line('q = secrets("qtickets")')
        s.prompt()
        s.line('r = http.get(q.QTICKETS_BASE_URL .. "/events", {headers = {Authorization = "Bearer " .. q.QTICKETS_TOKEN}})')
        s.prompt()
        self.assertEqual(self.result(s, "r.status"), "200")
        self.assertEqual(self.result(s, "(r:json())"), '{"auth": "Bearer tok-123", "path": "/api/events"}')
        # printing a whole response shows its body (kept in C until read: the printer walks raw)
        s.line('r2 = http.get(q.QTICKETS_BASE_URL .. "/orders")')
        s.prompt()
        self.assertIn('"body": "{\\"path\\": \\"/api/orders\\"', self.result(s, "r2"))

    def test_runtime_error_prints_and_prompt_returns(self):
        s = self.start()
        s.line('local t = nil; return t.field')
        m = s.expect(rb"(.*?)\r\n" + re.escape(PROMPT))
        self.assertIn(b"attempt to index a nil value", m.group(1))
        self.assertIn(b"stack traceback", m.group(1))
        s.line('error("boom")')
        m = s.expect(rb"(.*?)\r\n" + re.escape(PROMPT))
        self.assertIn(b"stdin:1: boom", m.group(1))
        self.assertEqual(self.result(s, "6 * 7"), "42")

    def test_syntax_error_prints_and_prompt_returns(self):
        s = self.start()
        s.line("x = = 1")
        m = s.expect(rb"(.*?)\r\n" + re.escape(PROMPT))
        self.assertIn(b"stdin:1:", m.group(1))
        self.assertEqual(self.result(s, "1"), "1")

    def _interrupt(self, code):
        s = self.start()
        s.line(code)
        time.sleep(0.4)  # it is running (busy or waiting), not just started
        t0 = time.monotonic()
        s.send(b"\x03")
        m = s.expect(rb"(.*?)\r\n" + re.escape(PROMPT), timeout=5)
        elapsed = time.monotonic() - t0
        self.assertIn(b"interrupted", m.group(1))
        # the interrupted code would run 30 s or for ever; 2 s leaves room for a loaded machine
        self.assertLess(elapsed, 2.0, "Ctrl-C took %.2f s to return to the prompt" % elapsed)
        self.assertEqual(self.result(s, "'still alive'"), '"still alive"')
        return s

    def test_ctrl_c_cancels_a_waiting_input(self):
        self._interrupt("sleep(30)")

    def test_ctrl_c_cancels_a_busy_loop(self):
        self._interrupt("while true do end")

    def test_ctrl_c_cancels_tasks_the_input_waits_for(self):
        self._interrupt("task.map({1, 2, 3}, 3, function(i) sleep(30) return i end)")

    def test_pcall_cannot_swallow_ctrl_c(self):
        self._interrupt("while true do pcall(function() while true do end end) end")

    def test_ctrl_c_at_the_prompt_clears_the_line(self):
        s = self.start()
        s.send("1 + ")
        s.expect(re.escape(b"1 + "))
        s.send(b"\x03")
        s.prompt()
        self.assertEqual(self.result(s, "5"), "5")
        # and drops an unfinished multi-line input
        s.line("function broken(")
        s.expect(re.escape(b">> "))
        s.send(b"\x03")
        s.prompt()
        self.assertEqual(self.result(s, "7"), "7")

    def test_ctrl_d_exits_zero(self):
        s = self.start()
        self.assertEqual(self.result(s, "1"), "1")
        s.send(b"\x04")
        self.assertEqual(s.wait(), 0)

    def test_history_persists_across_sessions(self):
        hist = os.path.join(self.tmp, "history")
        s = self.start()
        self.assertEqual(self.result(s, "'hist' .. 'ory' .. 42"), '"history42"')
        s.line("function two()")
        s.line("return 2 end")
        s.prompt()
        s.send(b"\x04")
        self.assertEqual(s.wait(), 0)
        with open(hist, "rb") as f:
            saved = f.read()
        self.assertIn(b"'hist'", saved)
        self.assertIn(b"function", saved)
        self.assertEqual(os.stat(hist).st_mode & 0o077, 0, "the history file must be private")
        # A new session recalls the entries with the Up key.
        s2 = self.start()
        s2.send(b"\x1b[A\x1b[A\r")  # two entries back: the expression, not the function
        s2.expect(re.escape(b'"history42"') + rb"\r\n" + re.escape(PROMPT))

    def test_history_option_overrides_environment(self):
        other = os.path.join(self.tmp, "other_history")
        s = self.start("--history", other)
        self.assertEqual(self.result(s, "'via option'"), '"via option"')
        s.send(b"\x04")
        self.assertEqual(s.wait(), 0)
        with open(other, "rb") as f:
            self.assertIn(b"option", f.read())
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "history")))


class TestReplPipe(ReplTestBase):
    def run_repl(self, text, *args):
        return subprocess.run([ZHOST, "repl", *args], input=text.encode(), cwd=self.tmp, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

    def test_piped_lines_print_results(self):
        p = self.run_repl(
            "1+1\n"
            "x = {b = 1, a = {2, 3}}\n"
            "x\n"
            "function greet(name)\n"
            "  return 'hi ' .. name\n"
            "end\n"
            "greet('bob'), #x.a\n"
            "sleep(0.05) return 'slept'\n"
            "task.map({1, 2, 3}, 2, function(i) sleep(0.01) return i * 10 end)\n"
            "print('printed')\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(),
                         '2\n{"a": [2, 3], "b": 1}\n"hi bob"\t2\n"slept"\n[10, 20, 30]\nprinted\n')
        self.assertNotIn(b">", p.stdout)  # no prompts when stdin is not a terminal

    def test_piped_error_reports_and_continues_then_exits_1(self):
        p = self.run_repl("error('first')\n'after'\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"stdin:1: first", p.stderr)
        self.assertEqual(p.stdout, b'"after"\n')

    def test_piped_unfinished_input_is_an_error(self):
        p = self.run_repl("for i = 1, 3 do\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"<eof>", p.stderr)

    def test_pretty_printer_limits(self):
        p = self.run_repl(
            "t = {} t.self = t t.list = {t} return t\n"
            "local d = {} local c = d for i = 1, 40 do c.n = {} c = c.n end return d\n"
            "local big = {} for i = 1, 1000 do big[i] = i end return big\n"
            "string.rep('x', 5000)\n"
            "{['with \"quote\"'] = 'line\\nbreak', [1.5] = false, [true] = 1}\n"
            "local big = {} for i = 1, 40 do big['key' .. i] = i end return big\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn('{"list": [<cycle>], "self": <cycle>}\n', out)
        self.assertIn("{...}", out)
        self.assertIn("... (800 more)", out)
        self.assertIn("... (5000 bytes)", out)
        self.assertIn('{1.5: false, "with \\"quote\\"": "line\\nbreak", true: 1}\n', out)
        self.assertIn('{\n  "key1": 1,\n  "key10": 10,\n', out)

    def test_secrets_helper(self):
        path = os.path.join(self.tmp, "secrets", ".env.vk")
        with open(path, "w") as f:
            f.write("VK_TOKEN='abc def'\n")
        os.chmod(path, 0o600)
        p = self.run_repl("secrets('vk').VK_TOKEN\nsecrets('missing')\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        self.assertEqual(lines[0], '"abc def"')
        self.assertRegex(lines[1], r'^nil\t".*/\.env\.missing: no such file"$')
        p = self.run_repl("secrets('../etc/passwd')\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"bad name", p.stderr)

    def test_secrets_option(self):
        d = os.path.join(self.tmp, "elsewhere")
        os.makedirs(d, mode=0o700)
        with open(os.path.join(d, ".env.x"), "w") as f:
            f.write("K=v\n")
        os.chmod(os.path.join(d, ".env.x"), 0o600)
        p = self.run_repl("secrets('x').K\n", "--secrets", d)
        self.assertEqual((p.returncode, p.stdout), (0, b'"v"\n'), p.stderr)

    def test_sigint_cancels_the_running_piped_input_only(self):
        p = subprocess.Popen([ZHOST, "repl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=self.tmp, env=self.env)
        p.stdin.write(b"sleep(30)\n'after'\n")
        p.stdin.flush()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 1)  # the interrupted input counts as a failure
        self.assertEqual(out, b'"after"\n')
        self.assertIn(b"interrupted", err)

    def test_sigint_while_waiting_for_piped_input_exits_130(self):
        p = subprocess.Popen([ZHOST, "repl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=self.tmp, env=self.env)
        p.stdin.write(b"1\n")
        p.stdin.flush()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=10)
        finally:
            p.kill()
        self.assertEqual((p.returncode, out), (130, b"1\n"))

    def test_bad_argument_is_a_usage_error(self):
        p = self.run_repl("", "--bogus")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"usage: zhost repl", p.stderr)


if __name__ == "__main__":
    unittest.main()
