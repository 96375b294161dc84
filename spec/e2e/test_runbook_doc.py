"""Keeps docs/runbook.ru.md honest.

Every `zhost …` command line in the runbook's shell code blocks is run, with the production paths
mapped to a test layout, against a real ClickHouse, the fake APIs and a `zhost serve` daemon built
from the shipped conf/zhost.conf (so job names and aliases are the real ones): loaders against the
fakes, the spool procedure after a simulated outage, backups, the REPL snippets, the operator
commands, the Gmail consent flow (`zhost auth google`, the browser played by urllib) and
`zhost serve --check`. Each must exit 0, and every command it names must have `zhost help CMD`.
Options of `zhost run` that the host does not know go to the script, so each of them must be read by
the script (`args.NAME`): a misspelled option would otherwise pass silently.

Every ```sql block runs against the migrated test database after those commands loaded data
(`zakaz.`/`bi.` mapped to the test databases; on 18.16 the documented variants of docs/schema.md §6
are applied if a block uses the newer forms). The `curl http://localhost:8080/…` lines are asked of
the daemon's health server; unit names given to systemctl/journalctl must be units zhost ships or
ClickHouse. Finally, every command line of the old runbook (runbook-integrations.ru.md) must appear in
the mapping table "Старая команда → команда zhost".
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from zhtest import SOURCE_DIR, ZHOST  # noqa: E402
from serve_helpers import Daemon, free_port, request  # noqa: E402

RUNBOOK = os.path.join(SOURCE_DIR, "docs", "runbook.ru.md")
OLD_RUNBOOK = os.environ.get("ZHOST_RUNBOOK") or os.path.join(SOURCE_DIR, "spec", "fixtures",
                                                                "runbook-integrations.ru.md")

# Options `zhost run` handles itself (host/main.c); any other --NAME reaches the script as job.args.NAME.
RUN_HOST_OPTIONS = {"days", "since", "to", "dry-run", "secrets", "job", "spool", "timeout", "cpu-budget",
                    "v", "verbose"}
OPERATOR = {"status", "logs", "enable", "disable", "trigger", "restart"}
# The order the commands run in: each phase needs what the one before made.
PHASES = ["migrate", "check", "run", "spool", "backup", "repl", "operator", "auth", "serve", "help"]
SHIPPED_UNITS = {"zhost", "zhost.service"}
OTHER_UNITS = {"clickhouse-server", "clickhouse-server.service"}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def code_blocks(text):
    """[(lang, body)] of fenced blocks, indented ones (inside list items) included and dedented."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, body = len(m.group(1)), m.group(2), []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            i += 1
        out.append((lang, "\n".join(body)))
        i += 1
    return out


class Cmd:
    def __init__(self, argv, stdin, raw):
        self.argv, self.stdin, self.raw = argv, stdin, raw

    @property
    def name(self):
        return self.argv[1] if len(self.argv) > 1 else ""

    def __repr__(self):
        return self.raw


def shell_lines(body):
    """Logical lines of a shell block: continuations joined, heredoc bodies attached as stdin."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        stdin = None
        m = re.search(r"<<-?\s*'?(\w+)'?", line)
        if m:
            tag, doc = m.group(1), []
            while i < len(lines) and lines[i].strip() != tag:
                doc.append(lines[i])
                i += 1
            i += 1
            stdin = "\n".join(doc) + "\n"
            line = line[:m.start()] + line[m.end():]
        if line.strip():
            yield line.strip(), stdin


def segments(line):
    """The simple commands of a line (split at | || && ; &), each without sudo and VAR=value prefixes."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    toks = list(lex)
    segs, cur = [], []
    for t in toks + [";"]:
        if t in ("|", "||", "&&", ";", "&", ";;"):
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(t)
    out = []
    for s in segs:
        while s and (s[0] == "sudo" or re.match(r"^[A-Za-z_]\w*=", s[0])):
            if s[0] == "sudo":
                s = s[1:]
                while s and s[0].startswith("-"):
                    s = s[2:] if s[0] in ("-u", "-g") else s[1:]
            else:
                s = s[1:]
        if s:
            out.append(s)
    return out


def runbook_parts(text):
    cmds, curls, units, sqls = [], [], [], []
    for lang, body in code_blocks(text):
        if lang in ("bash", "sh", "shell", "console"):
            for line, stdin in shell_lines(body):
                for seg in segments(line):
                    if seg[0] == "zhost":
                        cmds.append(Cmd(seg, stdin, line))
                    elif seg[0] == "curl":
                        curls += [m.group(1) or "/" for t in seg
                                  for m in [re.match(r"^http://localhost:8080(/\S*)?$", t)] if m]
                    elif seg[0] == "systemctl" and len(seg) > 2:
                        units += [(line, u) for u in seg[2:] if not u.startswith("-")]
                    elif seg[0] == "journalctl":
                        units += [(line, seg[k + 1]) for k, t in enumerate(seg[:-1]) if t == "-u"]
        elif lang == "sql":
            cur = []
            for line in body.splitlines():
                if line.strip().startswith("--"):
                    continue
                cur.append(line)
                if line.rstrip().endswith(";"):
                    sqls.append("\n".join(cur).strip().rstrip(";"))
                    cur = []
            if "".join(cur).strip():
                sqls.append("\n".join(cur).strip())
    return cmds, curls, units, sqls


def phase_of(cmd):
    n = cmd.name
    if n in OPERATOR:
        return PHASES.index("operator")
    if n in ("version",):
        return PHASES.index("help")
    return PHASES.index(n) if n in PHASES else len(PHASES)


def run_script_options(argv):
    """(script, [script-specific option names]) of a `zhost run` argv."""
    script, opts = None, []
    i = 2
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") or a == "-v":
            name = a[2:].split("=", 1)[0] if a.startswith("--") else "v"
            if name not in RUN_HOST_OPTIONS:
                opts.append(name)
            takes_value = "=" not in a and name not in ("dry-run", "v", "verbose") and \
                i + 1 < len(argv) and not argv[i + 1].startswith("--")
            i += 2 if takes_value else 1
        else:
            script = script or a
            i += 1
    return script, opts


def normalize_shell(s):
    s = s.replace("\\|", "|")
    s = re.sub(r"\bsudo\s+", "", s)
    return re.sub(r"\s+", " ", s).strip()


class TestRunbookParsing(unittest.TestCase):
    """The extraction itself (so that a parser finding nothing cannot pass the real test)."""

    def test_segments_and_heredoc(self):
        lines = list(shell_lines("sudo -u zhost zhost spool status --spool /x  # note\n"
                                 "curl -s http://localhost:8080/healthz | jq .\n"
                                 "zhost repl --secrets /s <<'EOF'\nprint(1)\nEOF\n"
                                 "zhost run a.lua \\\n    --days 1\n"))
        self.assertEqual([segments(l) for l, _ in lines], [
            [["zhost", "spool", "status", "--spool", "/x"]],
            [["curl", "-s", "http://localhost:8080/healthz"], ["jq", "."]],
            [["zhost", "repl", "--secrets", "/s"]],
            [["zhost", "run", "a.lua", "--days", "1"]]])
        self.assertEqual(lines[2][1], "print(1)\n")

    def test_run_options(self):
        self.assertEqual(run_script_options(["zhost", "run", "s.lua", "--days", "1", "--dry-run", "--secrets", "/s",
                                             "--query", "from:x", "--reload", "-v"]), ("s.lua", ["query", "reload"]))


class TestRunbookDoc(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        self.text = read(RUNBOOK)
        self.etc = os.path.join(self.tmp, "etc-zhost")
        self.varlib = os.path.join(self.tmp, "var-lib-zhost")
        sec = os.path.join(self.etc, "secrets")
        os.makedirs(sec, mode=0o750)
        os.makedirs(self.varlib)
        self.secrets = sec
        self.spool = os.path.join(self.varlib, "spool")
        self.env["ZHOST_SECRETS"] = sec
        self.env["ZHOST_SPOOL"] = self.spool
        self.port = free_port()
        self.daemon = None

    def tearDown(self):
        if self.daemon and self.daemon.proc.poll() is None:
            self.daemon.kill()
        for d in (self.db + "_restore", self.bi + "_restore"):
            try:
                zhtest.ch("DROP DATABASE IF EXISTS " + d)
            except Exception:
                pass
        super().tearDown()

    # --- mapping production paths and names to this test ---------------------------------------

    def subst(self, s):
        s = s.replace("/usr/local/share/zhost", SOURCE_DIR)
        s = s.replace("/etc/zhost", self.etc).replace("/var/lib/zhost", self.varlib)
        s = re.sub(r"\bchbk_\d{8}_\d{6}_(full|incr)\b", lambda m: self.backup_name, s)
        s = re.sub(r"\bzakaz_restore\b", self.db + "_restore", s)
        return re.sub(r"\bbi_restore\b", self.bi + "_restore", s)

    def sql_subst(self, s):
        s = self.subst(s)
        s = re.sub(r"\bzakaz\.", self.db + ".", s)
        return re.sub(r"\bbi\.", self.bi + ".", s)

    def write_conf(self):
        """The shipped conf/zhost.conf with this test's paths and port; schedules moved out of the way so
        that only the runbook's commands start runs."""
        text = read(os.path.join(SOURCE_DIR, "conf", "zhost.conf"))
        head = ("[zhost]\nroot = %s\nstate_dir = %s/state\nspool_dir = %s\nscripts_dir = scripts\n"
                "timezone = Europe/Moscow\ngrace = 5s\n\n" % (SOURCE_DIR, self.varlib, self.spool))
        text = re.sub(r"(?s)\A.*?\n\[zhost\]\n.*?(?=\n\[health\])", head, text)
        self.assertIn("[job qtickets]", text)
        text = re.sub(r"(?m)^listen\s*=.*$", "listen = 127.0.0.1:%d" % self.port, text)
        text = re.sub(r"(?m)^schedule\s*=.*$", "schedule = 0 0 1 1 *", text)
        path = os.path.join(self.etc, "zhost.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    # --- running one command ---------------------------------------------------------------------

    def exec(self, cmd, expect=0, timeout=300):
        argv = [self.subst(a) for a in cmd.argv[1:]]
        stdin = self.subst(cmd.stdin) if cmd.stdin is not None else ""
        r = subprocess.run([ZHOST, *argv], env=self.cli_env, capture_output=True, text=True, input=stdin,
                           timeout=timeout, cwd=self.tmp)
        self.assertEqual(r.returncode, expect, "runbook command `%s` exited %d:\n%s\n%s" %
                         (cmd.raw, r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def wait_idle(self, job, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run([ZHOST, "status", job, "--json"], env=self.cli_env, capture_output=True, text=True,
                               timeout=30, cwd=self.tmp)
            if r.returncode == 0 and not json.loads(r.stdout)["running"]:
                return
            time.sleep(0.2)
        self.fail("%s still running after %ss" % (job, timeout))

    def run_auth(self, cmd):
        """`zhost auth google … --port P --no-browser`: the browser is urllib following the consent URL
        through the fake Google to the loopback redirect."""
        argv = [self.subst(a) for a in cmd.argv[1:]]
        self.assertIn("--port", argv, cmd.raw)
        argv[argv.index("--port") + 1] = str(free_port())
        token = argv[argv.index("--token") + 1] if "--token" in argv else \
            os.path.join(self.secrets, "gmail", "token.json")
        if os.path.exists(token):
            os.remove(token)
        proc = subprocess.Popen([ZHOST, *argv], env=self.cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.tmp)
        try:
            url = None
            deadline = time.time() + 30
            while time.time() < deadline and not url:
                line = proc.stdout.readline()
                if not line:
                    break
                if line.strip().startswith("http"):
                    url = line.strip()
            self.assertIsNotNone(url, "`%s` printed no consent URL" % cmd.raw)
            with urllib.request.urlopen(url, timeout=30) as r:
                self.assertIn(b"authorized", r.read())
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, "`%s`: %s" % (cmd.raw, err))
        self.assertIn("Saved " + token, out)
        with open(token) as f:
            self.assertTrue(json.load(f).get("refresh_token"))

    # --- the test ----------------------------------------------------------------------------------

    def test_every_command_and_query_of_the_runbook_works(self):
        cmds, curls, units, sqls = runbook_parts(self.text)
        # The runbook is long; a parser that finds little is broken, not a runbook that got short.
        self.assertGreaterEqual(len(cmds), 60, cmds)
        self.assertGreaterEqual(len(sqls), 15, sqls)
        self.assertGreaterEqual(len(curls), 5, curls)
        names = sorted({c.name for c in cmds})
        for want in ("status", "logs", "trigger", "enable", "disable", "run", "spool", "backup", "auth", "repl",
                     "migrate", "serve"):
            self.assertIn(want, names)

        # Every command named anywhere in the document (code blocks, tables, text) exists.
        inline = set(re.findall(r"`(?:sudo -u zhost )?zhost ([a-z][a-z-]*)", self.text))
        for n in sorted(set(names) | inline):
            r = subprocess.run([ZHOST, "help", n], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, "`zhost help %s` exited %d: %s" % (n, r.returncode, r.stderr))
        unknown = [c for c in cmds if phase_of(c) >= len(PHASES)]
        self.assertEqual(unknown, [], "runbook commands this test does not know how to run")

        # Script options of `zhost run` lines must be read by the script.
        for c in cmds:
            if c.name != "run":
                continue
            script, opts = run_script_options(c.argv)
            self.assertTrue(script and script.endswith(".lua"), c.raw)
            src = read(self.subst(script))
            for o in opts:
                self.assertTrue(re.search(r"args(\.%s\b|\[\"%s\"\])" % (re.escape(o), re.escape(o)), src),
                                "`%s`: %s does not read --%s (a misspelled option?)" % (c.raw, script, o))

        # Unit names given to systemctl/journalctl.
        self.assertTrue(os.path.exists(os.path.join(SOURCE_DIR, "ops", "systemd", "zhost.service")))
        self.assertIn("SyslogIdentifier=zhost", read(os.path.join(SOURCE_DIR, "ops", "systemd", "zhost.service")))
        for line, u in units:
            self.assertIn(u, SHIPPED_UNITS | OTHER_UNITS | {"start", "stop", "restart", "reload", "status",
                                                             "daemon-reload", "enable", "disable"}, line)

        # The test layout: the fakes' secrets in <etc>/secrets, backups in <varlib>/backups.
        api = self.fake("--write-env", self.secrets)
        with open(os.path.join(self.secrets, ".env.backup"), "w") as f:
            f.write("ZHOST_BACKUP_DIR=%s/backups\n" % self.varlib)
        os.chmod(os.path.join(self.secrets, ".env.backup"), 0o600)
        conf = self.write_conf()
        self.cli_env = dict(self.env)
        self.cli_env["ZHOST_CONF"] = conf
        self.backup_name = None
        self.assertTrue(api.url)

        ordered = sorted(cmds, key=phase_of)  # stable: document order within a phase
        done = set()
        for c in ordered:
            ph = PHASES[phase_of(c)]
            if ph not in done:
                done.add(ph)
                self.enter_phase(ph)
            if ph == "operator":
                if c.argv[1] in ("trigger", "restart"):
                    self.wait_idle(c.argv[2])
                self.exec(c)
            elif ph == "auth":
                self.run_auth(c)
            elif ph == "serve" and "--check" not in c.argv:
                # the daemon itself: check the same options without starting a second one
                self.exec(Cmd(c.argv + ["--check"], None, c.raw + " --check"))
            elif ph == "spool" and c.argv[2] == "status" and self.spool_replayed:
                r = self.exec(c)
                self.assertIn("total: 0 files", r.stdout)
            else:
                r = self.exec(c, timeout=600)
                if os.environ.get("ZHOST_TEST_VERBOSE"):
                    sys.stderr.write("ok: %s\n" % c.raw)
                if ph == "spool" and c.argv[2] == "replay" and not self.spool_replayed:
                    self.assertRegex(r.stdout, r"replay: [1-9]\d* rows delivered, 0 files left")
                    self.spool_replayed = True
                if ph == "repl" and "QTICKETS_TOKEN" in (c.stdin or ""):
                    self.assertEqual(r.stdout.strip(), "200", "the QTickets check in the REPL")
                if ph == "repl" and "INSERT INTO" in (c.stdin or ""):
                    self.assertIn("скопирована", r.stdout)
        self.leave_daemon()
        left_running = self.q("SELECT job, run_id FROM meta_job_runs WHERE status = 'running'")
        self.assertEqual(left_running, [], "runs still 'running' after the daemon stopped")

        # SQL blocks, in document order, after the loads.
        new_ch = True
        try:
            zhtest.ch("SELECT JSONExtractInt('{\"a\":1}', 'a')")
        except RuntimeError:
            new_ch = False
        date_bug = zhtest.ch("SELECT toDateTime('2000-01-01 00:00:00') >= toDate('2000-01-02')").strip() == "1"
        for st in sqls:
            sql = self.sql_subst(st)
            if not new_ch:
                sql = sql.replace("JSONExtractInt(", "visitParamExtractInt(")
            if date_bug:
                sql = re.sub(r"(\w+_at) >= today\(\) - (\d+)", r"\1 >= toDateTime(today() - \2)", sql)
            if re.match(r"(?i)^\s*(DROP|INSERT|ALTER|CREATE)\b", sql):
                zhtest.ch(sql)
                continue
            rows = zhtest.ch_rows(sql)
            if "HAVING count() > 1" in sql:
                self.assertEqual(rows, [], "duplicates in v_sales_latest")
            if "LIMIT 20" in sql:
                self.assertTrue(rows, "no runs listed by: " + st)
            if "v_data_freshness ORDER BY" in sql:
                fr = {r["source"]: r for r in rows}
                self.assertEqual(set(fr), {"qtickets_sales", "vk_ads", "direct"})
                self.assertEqual(fr["qtickets_sales"]["latest_date"][:7], "2025-11")  # the fake's data, restored
        self.assertEqual(zhtest.ch("SELECT count() FROM system.databases WHERE name = '%s_restore'" % self.db).strip(), "0",
                         "the runbook's last step drops the scratch databases")

    # --- phases --------------------------------------------------------------------------------

    def enter_phase(self, ph):
        if ph == "spool":
            # A ClickHouse outage: a real run spools its rows; the runbook's procedure must deliver them.
            self.spool_replayed = False
            r = self.zhost("run", os.path.join(SOURCE_DIR, "scripts", "qtickets.lua"), "--since", "2025-11-01",
                           "--to", "2025-11-03", "--secrets", self.secrets, "--spool", self.spool,
                           env={"CLICKHOUSE_URL": "http://127.0.0.1:%d" % free_port()})
            self.assertIn("spooled", r.stderr + r.stdout)
            self.assertTrue(os.listdir(self.spool))
        elif ph == "backup":
            # What `zhost trigger backup_full` makes at 02:30; restore and verify need one.
            r = self.zhost("backup", "full", "--secrets", self.secrets)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.backup_name = re.search(r"chbk_\d{8}_\d{6}_full", r.stdout).group(0)
        elif ph == "operator":
            self.daemon = Daemon(self, os.path.join(self.etc, "zhost.conf"))
            self.daemon.ready()
            # the health server answers every /healthz… path the runbook curls
            for path in curls_of(self.text):
                status, headers, body = request(self.port, path)
                self.assertIn(status, (200, 503), "%s → %d %s" % (path, status, body))
                if path.startswith("/healthz"):
                    doc = json.loads(body)
                    self.assertIn(doc["status"], ("ok", "warning", "error"))
                    if path == "/healthz":
                        self.assertEqual((status, doc["checks"]), (200, {"clickhouse": "ok"}))
            status, _, _ = request(self.port, "/healthz/qtickets_api")
            self.assertEqual(status, 404)  # as the runbook says
        if ph in ("auth", "serve", "help"):
            self.leave_daemon()

    def leave_daemon(self):
        if not self.daemon or self.daemon.proc.poll() is not None:
            return
        triggered = ("qtickets", "vk_ads", "direct", "gmail_ingest", "alerts", "backup_full")
        for job in triggered:
            self.wait_idle(job)
        self.assertEqual(self.daemon.stop(), 0)
        last = {r["job"]: r for r in self.q(
            "SELECT job, argMax(status, started_at) AS status, argMax(message, started_at) AS message "
            "FROM meta_job_runs GROUP BY job")}
        for job in triggered:
            if job in self.trigger_jobs():
                self.assertIn(job, last, "`zhost trigger %s` left no run" % job)
                self.assertEqual(last[job]["status"], "success", "%s: %s" % (job, last[job]["message"]))

    def trigger_jobs(self):
        cmds, _, _, _ = runbook_parts(self.text)
        return {c.argv[2] for c in cmds if c.name in ("trigger", "restart") and len(c.argv) > 2}


def curls_of(text):
    return sorted(set(runbook_parts(text)[1]))


class TestRunbookBackupAges(unittest.TestCase):
    def test_the_ages_the_runbook_gives_are_the_defaults_of_verify(self):
        # «verify сообщает об ошибке, если самому свежему бэкапу больше N часов (`--fresh-hours`…) или
        # последнему полному — больше M часов (`--full-hours`)»: N and M are what verify applies.
        text = read(RUNBOOK)
        fresh = re.search(r"больше (\d+) часов \(`--fresh-hours`", text)
        full = re.search(r"больше (\d+) часов\s+\(`--full-hours`\)", text)
        self.assertTrue(fresh and full, "the runbook no longer states verify's age limits")
        with tempfile.TemporaryDirectory() as d:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ZHOST_BACKUP_", "BACKUP_DIR"))}
            r = subprocess.run([ZHOST, "backup", "verify", "--json", "--no-record", "--dir", d, "--secrets", d],
                               env=env, capture_output=True, text=True, timeout=60)
        got = json.loads(r.stdout)
        self.assertEqual((int(fresh.group(1)), int(full.group(1))), (got["fresh_hours"], got["full_hours"]))


class TestOldRunbookCovered(unittest.TestCase):
    def test_every_old_command_is_in_the_mapping_table(self):
        text = read(RUNBOOK)
        m = re.search(r"(?ms)^## Старая команда → команда zhost\n(.*?)(?=^## )", text)
        self.assertIsNotNone(m, "no mapping section")
        left = []
        for row in m.group(1).splitlines():
            if row.startswith("|") and not row.startswith("|---"):
                cells = re.split(r"(?<!\\)\|", row)
                left += [normalize_shell(x) for x in re.findall(r"`([^`]+)`", cells[1])]
        self.assertGreaterEqual(len(left), 30)
        missing = []
        for lang, body in code_blocks(read(OLD_RUNBOOK)):
            if lang not in ("bash", "sh"):
                continue
            for line, _ in shell_lines(body):
                line = normalize_shell(re.sub(r"^\s*#.*$", "", line))
                if not line or line == "done":
                    continue
                if not any(line == x or line in x for x in left):
                    missing.append(line)
        self.assertEqual(missing, [], "old runbook commands missing from the mapping table")


if __name__ == "__main__":
    unittest.main()
