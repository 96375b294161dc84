"""The operator at 3 a.m.: what each CLI command does when its setting, file or argument is wrong.

Every case expects a non-zero exit, one line on stderr naming what is wrong (and no retries
against a default address that was never configured), and nothing written anywhere.
Most commands' usage errors are covered next to their features (test_core, test_serve,
test_backup*, test_spool*, test_oauth2); this file holds the cases found missing there.
"""
import re
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import serve_helpers  # noqa: E402
import zhtest  # noqa: E402


def stderr_lines(r):
    return [line for line in r.stderr.splitlines() if line.strip()]


class BadClickHouseSettingsFile(zhtest.ZhostCase):
    """secrets/.env.ch that cannot be read or parsed. The variables the test environment sets win
    over the file, so before the fix every command went on (and migrate changed the database)."""

    # Commands that reach ClickHouse, each with arguments that would otherwise succeed or at
    # least try to connect.
    def commands(self):
        noop = self.script("noop.lua", "-- zhost: job=noop\n")
        return [
            ("migrate",),
            ("migrate", "--status"),
            ("spool", "status"),
            ("run", noop, "--dry-run"),
            ("backup", "full", "--to", os.path.join(self.tmp, "backups")),
        ]

    def check_refused(self, r, what):
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        lines = stderr_lines(r)
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("cannot read the ClickHouse settings: " + os.path.join(self.secrets, ".env.ch"), lines[0])
        self.assertIn(what, lines[0])
        self.assertNotIn("8123", r.stderr)
        self.assertNotIn("pw-must-not-show", r.stderr + r.stdout)

    def test_a_malformed_file_is_refused_by_every_command(self):
        path = self.write_secret("ch", {"CLICKHOUSE_USER": "default"})
        with open(path, "a") as fh:
            fh.write("CLICKHOUSE_DB zakaz_other\n")  # '=' forgotten
        fresh = "zakaz_fresh" + self.db[len("zakaz_t"):]
        for args in self.commands():
            with self.subTest(args=args[:2]):
                r = self.zhost(*args, env={"CLICKHOUSE_DB": fresh})
                self.check_refused(r, ".env.ch:2: expected '=' after the key")
        # migrate did not create the database it was pointed at, backup left no folder
        self.assertEqual(zhtest.ch_value("SELECT count() FROM system.databases WHERE name = '%s'" % fresh), "0")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "backups")))

    def test_an_unreadable_file_is_refused(self):
        if os.geteuid() != 0:
            path = self.write_secret("ch", {"CLICKHOUSE_PASSWORD": "pw-must-not-show"})
            os.chmod(path, 0)
            prefix = []
        elif shutil.which("setpriv"):
            # root reads any file: run zhost as nobody, who can enter the folders but not read the file
            path = self.write_secret("ch", {"CLICKHOUSE_PASSWORD": "pw-must-not-show"})
            os.chmod(path, 0o600)
            for d in (self.tmp, self.secrets):
                os.chmod(d, 0o755)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        else:
            self.skipTest("needs a non-root user or setpriv")
        e = dict(self.env, HOME=self.tmp)
        r = subprocess.run([*prefix, zhtest.ZHOST, "migrate", "--status"], env=e, capture_output=True, text=True,
                           timeout=60, cwd=self.tmp)
        self.check_refused(r, "Permission denied")
        self.assertEqual(r.stdout, "")

    def test_a_missing_file_is_fine_when_the_environment_has_the_settings(self):
        self.assertFalse(os.path.exists(os.path.join(self.secrets, ".env.ch")))
        r = self.zhost("migrate", "--status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0 pending", r.stdout)


class MigrateStatus(zhtest.ZhostCase):
    """`migrate --status` must not report "everything pending" for a server it could not ask."""

    def test_wrong_password_is_an_error_not_all_pending(self):
        r = self.zhost("migrate", "--status", env={"CLICKHOUSE_PASSWORD": "pw-must-not-show"})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(r.stdout, "")
        lines = stderr_lines(r)
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertRegex(lines[0], r"^zhost migrate: ClickHouse error (193|516)")
        self.assertNotIn("pw-must-not-show", r.stderr)

    def test_unreachable_server_is_an_error_not_all_pending(self):
        port = zhtest.free_ports(1)[0]
        r = self.zhost("migrate", "--status", env={"CLICKHOUSE_URL": "http://127.0.0.1:%d" % port})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(r.stdout, "")
        self.assertRegex(stderr_lines(r)[-1], r"^zhost migrate: ClickHouse unreachable at http://127.0.0.1:%d/" % port)

    def test_a_fresh_database_lists_everything_pending(self):
        fresh = "zakaz_fresh" + self.db[len("zakaz_t"):]
        r = self.zhost("migrate", "--status", env={"CLICKHOUSE_DB": fresh})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\n0 applied, \d+ pending \(database %s\)\n$" % fresh)
        self.assertEqual(zhtest.ch_value("SELECT count() FROM system.databases WHERE name = '%s'" % fresh), "0")  # --status creates nothing


class RunDates(zhtest.ZhostCase):
    migrate = False

    def test_a_day_the_month_does_not_have_is_a_usage_error(self):
        noop = self.script("noop.lua", "-- zhost: job=noop\n")
        # The date is well written; the message says the day does not exist, not "dates are YYYY-MM-DD".
        for args, msg in ((("--since", "2024-02-30"), "--since 2024-02-30 is not a date: February 2024 has 29 days"),
                          (("--since", "2025-02-29"), "--since 2025-02-29 is not a date: February 2025 has 28 days"),
                          (("--since", "2025-02-30"), "--since 2025-02-30 is not a date: February 2025 has 28 days"),
                          (("--since", "2024-01-01", "--to", "2024-04-31"), "--to 2024-04-31 is not a date: April 2024 has 30 days"),
                          (("--since", "2024-13-01"), "--since 2024-13-01 is not a date: there is no month 13"),
                          (("--since", "2024-01-00"), "--since 2024-01-00 is not a date: January 2024 has 31 days")):
            with self.subTest(args=args):
                r = self.zhost("run", noop, *args, "--dry-run")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(stderr_lines(r), ["zhost run: " + msg])
        for args in (("--since", "2024-2-3"), ("--since", "01.02.2024"), ("--since", "2024-01-01", "--to", "2024-01-01x")):
            with self.subTest(args=args):
                r = self.zhost("run", noop, *args, "--dry-run")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(stderr_lines(r), ["zhost run: %s takes a date YYYY-MM-DD (got '%s')" % (args[-2], args[-1])])
        r = self.zhost("run", noop, "--since", "2024-02-29", "--to", "2024-04-30", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)


class RunLimitsAndOptionValues(zhtest.ZhostCase):
    migrate = False

    def test_timeout_and_cpu_budget_are_checked(self):
        """--timeout/--cpu-budget were read with atof: '5m' became 5 seconds, 'abc' and '-1' no limit."""
        noop = self.script("noop.lua", "-- zhost: job=noop\n")
        for opt, val in (("--timeout", "abc"), ("--timeout", "-1"), ("--timeout", "5x"), ("--timeout", "nan"),
                         ("--cpu-budget", "abc"), ("--cpu-budget", "0"), ("--cpu-budget", "1e30")):
            with self.subTest(opt=opt, val=val):
                r = self.zhost("run", noop, opt, val, "--dry-run")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(stderr_lines(r)), 1, r.stderr)
                self.assertRegex(stderr_lines(r)[0], r"^zhost run: %s takes seconds or a duration like .* \(got '%s'\)$" % (opt, re.escape(val)))
        slow = self.script("slow.lua", "-- zhost: job=slow\nsleep(30)\n")
        r = self.zhost("run", slow, "--timeout", "0.02m", "--dry-run")   # 1.2 s, not 0.02 s
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(stderr_lines(r)[-1], "zhost: slow failed: timed out after 1 s")
        r = self.zhost("run", noop, "--timeout", "0", "--dry-run")       # 0: no timeout, as in the serve configuration
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_an_option_is_not_taken_as_the_value_of_the_one_before(self):
        """`--secrets --dry-run` used to read '--dry-run' as the secrets folder and run a real load."""
        noop = self.script("noop.lua", "-- zhost: job=noop\n")
        for opt in ("--secrets", "--job", "--spool", "--days", "--since", "--timeout"):
            with self.subTest(opt=opt):
                r = self.zhost("run", noop, opt, "--dry-run")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(stderr_lines(r), ["zhost: %s needs a value" % opt])


class SecretInAnErrorMessage(zhtest.ZhostCase):
    """A script error that quotes a secret (a URL with ?token=..., say): the log lines always hid
    it, but the traceback print, `zhost run`'s last line and meta_job_runs.message did not."""

    def test_the_secret_is_hidden_everywhere_the_message_goes(self):
        secret = "qt-SECRET-must-not-show"
        self.write_secret("leak", {"LEAK_TOKEN": secret})
        script = self.script("leak.lua", "-- zhost: job=leak\n"
                                         "local t = job:need('LEAK_TOKEN')\n"
                                         "error('GET https://api.example/x?token=' .. t)\n")
        r = self.zhost("run", script)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn(secret, r.stderr + r.stdout)
        self.assertEqual(stderr_lines(r)[-1], "zhost: leak failed: %s:3: GET https://api.example/x?token=***" % script)
        self.assertIn("stack traceback:", r.stderr)  # still there, only redacted
        runs = self.runs("leak")
        self.assertEqual([x["status"] for x in runs], ["error"])
        self.assertEqual(runs[0]["message"], "%s:3: GET https://api.example/x?token=***" % script)


class AddressesInErrorMessages(zhtest.ZhostCase):
    """Every secrets-file value used to be redacted, addresses too: an unreachable API was
    reported as `cannot reach ***/orders`, useless at 3 a.m. Settings named as addresses, users,
    database names, switches or sizes are printed; everything else, and the password or query
    values inside an address, stay hidden."""

    def test_the_address_shows_and_its_secrets_do_not(self):
        token = "qt-token-must-not-show"
        password = "url-password-hidden"
        self.write_secret("addr", {
            "ADDR_TOKEN": token,
            "ADDR_BASE_URL": "http://operator:%s@127.0.0.1:9/api?key=querysecret1" % password,
            "ADDR_MIRROR_URL": "http://127.0.0.1:9/mirror",
            "ADDR_LOGIN": "zakaz-operator",
            "ADDR_CLIENT_KEY": "client-key-hidden",
        })
        script = self.script("addr.lua", "-- zhost: job=addr\n"
                                         "local t = job:need('ADDR_TOKEN')\n"
                                         "error(table.concat({job:need('ADDR_BASE_URL'), job:need('ADDR_MIRROR_URL'),"
                                         " job:need('ADDR_LOGIN'), job:need('ADDR_CLIENT_KEY'), t}, ' '))\n")
        r = self.zhost("run", script)
        self.assertEqual(r.returncode, 1, r.stderr)
        for hidden in (token, password, "querysecret1", "client-key-hidden"):
            self.assertNotIn(hidden, r.stderr + r.stdout)
        expected = ("http://operator:***@127.0.0.1:9/api?key=*** http://127.0.0.1:9/mirror zakaz-operator *** ***")
        self.assertEqual(stderr_lines(r)[-1], "zhost: addr failed: %s:3: %s" % (script, expected))
        self.assertEqual(self.runs("addr")[0]["message"], "%s:3: %s" % (script, expected))

    def test_an_address_from_the_environment_shows_too(self):
        script = self.script("envaddr.lua", "-- zhost: job=envaddr\n"
                                            "error(job:env('ENVADDR_API_URL') .. ' ' .. job:env('ENVADDR_SECRET'))\n")
        r = self.zhost("run", script, env={"ENVADDR_API_URL": "http://127.0.0.1:9/v1",
                                           "ENVADDR_SECRET": "env-secret-hidden"})
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(stderr_lines(r)[-1], "zhost: envaddr failed: %s:2: http://127.0.0.1:9/v1 ***" % script)


class SpoolReplayFromAFolderItCannotWrite(zhtest.ZhostCase):
    """`zhost spool replay` by a user who can read the spool but not write it (another account
    than the daemon's, or a read-only mount): it delivered every file, could delete none, said
    "0 files left", exited 0 - and the next replay delivered the same rows again."""

    def test_nothing_is_delivered_and_the_reason_is_one_line(self):
        if os.geteuid() == 0 and not shutil.which("setpriv"):
            self.skipTest("needs a non-root user or setpriv")
        # a run while ClickHouse is down: its meta_job_runs rows are spooled (the final one; the
        # "running" one too when its insert failed before the run ended, else it was dropped)
        script = self.script("spooltest.lua", "-- zhost: job=spooltest\n")
        down = "http://127.0.0.1:%d" % zhtest.free_ports(1)[0]
        self.zhost("run", script, env={"CLICKHOUSE_URL": down, "ZHOST_CH_ATTEMPTS": "1"})
        files = sorted(os.listdir(self.spool))
        self.assertTrue(any(f.endswith(".jsonl") for f in files), files)
        spooled = 0
        for f in files:
            if f.endswith(".jsonl"):
                with open(os.path.join(self.spool, f)) as fh:
                    spooled += sum(1 for line in fh if line.startswith("{"))
        self.assertIn(spooled, (1, 2), files)
        prefix = []
        if os.geteuid() == 0:
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            for d in (self.tmp, self.secrets):
                os.chmod(d, 0o755)
            for root, dirs, names in os.walk(self.spool):
                for n in names:
                    os.chmod(os.path.join(root, n), 0o444)
        os.chmod(self.spool, 0o555)
        count = "SELECT count() FROM %s.meta_job_runs_raw WHERE job = 'spooltest'" % self.db
        try:
            for attempt in range(2):
                r = subprocess.run([*prefix, zhtest.ZHOST, "spool", "replay"], env=dict(self.env, HOME=self.tmp),
                                   capture_output=True, text=True, timeout=120, cwd=self.tmp)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertEqual(stderr_lines(r), ["zhost spool: cannot replay %s: Permission denied; nothing delivered "
                                                   "(run it as the spool's owner, e.g. sudo -u zhost zhost spool replay)"
                                                   % self.spool])
                self.assertEqual(self.scalar(count), "0")
            self.assertEqual(sorted(os.listdir(self.spool)), files)
        finally:
            os.chmod(self.spool, 0o700)  # so that tearDown can remove it
        # its owner delivers it
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.scalar(count), str(spooled))


class SpoolFolderItCannotRead(zhtest.ZhostCase):
    """`zhost spool status --spool TYPO` and a spool this user may not read both said
    "total: 0 files, 0 rows" and exited 0 - an operator would conclude nothing was waiting."""

    def test_a_mistyped_folder_is_named(self):
        typo = os.path.join(self.tmp, "spoool")
        for verb in ("status", "replay"):
            with self.subTest(verb=verb):
                r = self.zhost("spool", verb, "--spool", typo)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertEqual(stderr_lines(r), [
                    "zhost spool: cannot read %s: No such file or directory (is the folder name right? without "
                    "--spool and $ZHOST_SPOOL the daemon's spool is used)" % typo])
        self.assertFalse(os.path.exists(typo))

    def test_a_spool_it_may_not_read_is_not_empty(self):
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root and setpriv to run as another user")
        os.makedirs(self.spool, exist_ok=True)
        with open(os.path.join(self.spool, "zakaz.t~x.jsonl"), "w") as f:
            f.write('{"a":1}\n')
        os.chmod(self.spool, 0o700)
        for d in (self.tmp, self.secrets):
            os.chmod(d, 0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", zhtest.ZHOST, "spool",
                            "status"], env=dict(self.env, HOME=self.tmp), capture_output=True, text=True,
                           timeout=120, cwd=self.tmp)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("0 files", r.stdout)
        self.assertEqual(stderr_lines(r), ["zhost spool: cannot read %s: Permission denied (run it as the spool's "
                                           "owner, e.g. sudo -u zhost zhost spool status)" % self.spool])
        r = self.zhost("spool", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("total: 1 files, 1 rows", r.stdout)


class ServeStateFolder(zhtest.ZhostCase):
    """Two ways `zhost serve` cannot take its state folder, which used to read alike:
    "another zhost serve uses DIR (No such file or directory)" for a folder it could not create."""

    migrate = False

    def conf(self, state_dir):
        path = os.path.join(self.tmp, "zhost.conf")
        with open(path, "w") as fh:
            fh.write("[zhost]\nroot = %s\nstate_dir = %s\nspool_dir = %s\n[health]\nlisten = 127.0.0.1:%d\n"
                     "[job noop]\nscript = %s\nschedule = every 1d\nenabled = false\n"
                     % (zhtest.SOURCE_DIR, state_dir, self.spool, serve_helpers.free_port(),
                        self.script("noop.lua", "-- zhost: job=noop\n")))
        return path

    def test_a_state_folder_that_cannot_be_made_is_not_another_daemon(self):
        blocker = os.path.join(self.tmp, "not-a-folder")
        with open(blocker, "w") as fh:
            fh.write("x")
        conf = self.conf(os.path.join(blocker, "state"))
        r = self.zhost("serve", "--conf", conf, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(stderr_lines(r), ["zhost serve: cannot use the state folder %s/state: Not a directory "
                                           "(state_dir in %s; it must be writable by this user)" % (blocker, conf)])

    def test_a_second_daemon_names_the_first_ones_pid(self):
        conf = self.conf(os.path.join(self.tmp, "state"))
        first = serve_helpers.Daemon(self, conf)
        self.addCleanup(first.stop)
        first.ready()
        r = self.zhost("serve", "--conf", conf, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(stderr_lines(r), ["zhost serve: another zhost serve (pid %d) uses %s (locked); stop it first "
                                           "(systemctl stop zhost)" % (first.proc.pid, os.path.join(self.tmp, "state"))])
        self.assertIsNone(first.proc.poll())  # the first one goes on
        first.stop()
        # its lock file stays behind with its pid; a new daemon takes it over
        second = serve_helpers.Daemon(self, conf)
        self.addCleanup(second.stop)
        second.ready()


class MissingSetting(zhtest.ZhostCase):
    """job:need() naming a variable that is set nowhere: the message says what to set where; the
    stack dump printed under it (job:need, main chunk) only buried that."""

    def test_no_stack_dump_under_the_missing_setting(self):
        script = self.script("needy.lua", "-- zhost: job=needy\nlocal t = job:need('NEEDY_TOKEN')\n")
        r = self.zhost("run", script)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("stack traceback", r.stderr)
        msg = "missing NEEDY_TOKEN: set it in %s/.env.needy or the environment" % self.secrets
        self.assertEqual(stderr_lines(r)[-1], "zhost: needy failed: " + msg)
        # the bare message appears only inside the log line and the last line
        self.assertFalse([l for l in stderr_lines(r) if l.startswith("missing ")], r.stderr)
        self.assertEqual(self.runs("needy")[0]["message"], msg)

    def test_several_missing_settings_are_named_together(self):
        script = self.script("needy2.lua", "-- zhost: job=needy2\nlocal a, b = job:need('NEEDY_A', 'NEEDY_B')\n")
        r = self.zhost("run", script)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(stderr_lines(r)[-1], "zhost: needy2 failed: missing NEEDY_A, NEEDY_B: set them in "
                                              "%s/.env.needy2 or the environment" % self.secrets)

    def test_a_script_error_after_a_caught_need_keeps_its_traceback(self):
        script = self.script("optional.lua", "-- zhost: job=optional\n"
                                             "local ok = pcall(job.need, job, 'OPTIONAL_TOKEN')\n"
                                             "error('boom')\n")
        r = self.zhost("run", script)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("stack traceback:", r.stderr)
        self.assertIn("optional.lua:3: in main chunk", r.stderr)


class BackupPruneFolder(zhtest.ZhostCase):
    """`backup prune --dir` with a folder that does not exist (a typo, the default var/backups of
    another working directory) created it and reported "0 deleted, 0 kept", exit 0."""

    def test_a_missing_folder_is_an_error_and_is_not_created(self):
        missing = os.path.join(self.tmp, "backups-typo")
        r = self.zhost("backup", "prune", "--dir", missing)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(stderr_lines(r), ["zhost backup prune: %s: No such file or directory (the backups folder: "
                                           "--dir, $ZHOST_BACKUP_DIR or BACKUP_DIR)" % missing])
        self.assertFalse(os.path.exists(missing))
        empty = os.path.join(self.tmp, "backups")
        os.mkdir(empty)
        r = self.zhost("backup", "prune", "--dir", empty)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("prune: 0 deleted, 0 kept", r.stdout)


if __name__ == "__main__":
    unittest.main()


class UsageErrors(zhtest.ZhostCase):
    """Usage errors name the command as `zhost CMD:` and the value they refused; `version` took any
    arguments silently."""

    def test_each_names_command_and_value(self):
        cases = [
            (("version", "--json"), "zhost version: unexpected argument '--json'"),
            (("logs", "-n", "lots"), "zhost logs: -n is a number of lines from 1 to 5000 (got 'lots')"),
            (("trigger", "qtickets", "--days", "0"), "zhost trigger: --days must be a whole number from 1 to 3660 (got '0')"),
        ]
        for args, line in cases:
            with self.subTest(args=args):
                r = self.zhost(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertEqual(stderr_lines(r), [line])
                self.assertEqual(r.stdout, "")
        r = self.zhost("version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("zhost "), r.stdout)


class OperatorCommandWithABrokenConf(zhtest.ZhostCase):
    """`zhost status --conf FILE` finds the socket from FILE's [zhost] lines alone (a half-edited file
    still reaches a running daemon). When no daemon answers, a broken FILE was not mentioned."""

    def test_the_conf_error_is_named_when_the_daemon_is_not_reached(self):
        conf = os.path.join(self.tmp, "zhost.conf")
        with open(conf, "w") as f:
            f.write("[zhost]\nstate_dir = %s\n[job qtickets\n" % os.path.join(self.tmp, "state"))
        r = self.zhost("status", "--conf", conf)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        lines = stderr_lines(r)
        self.assertTrue(lines[0].startswith("zhost: cannot reach zhost serve at %s/state/zhost.sock" % self.tmp), lines)
        self.assertTrue(lines[-1].startswith("  (and the configuration does not load: %s:3: " % conf), lines)
