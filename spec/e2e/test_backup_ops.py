"""End-to-end tests of backups as operated: the backup jobs of `zhost serve` and the backup alert
rules (scripts/alerts/backup_failed.lua, backup_stale.lua), with the real binary, a real
ClickHouse (ZHOST_TEST_CH_URL) and the SMTP sink (spec/fakes/smtp_sink.py).

  * a `backup_incr` command job on a 2-second schedule, its folder set only by BACKUP_DIR in
    secrets/.env.backup, makes an incremental on top of a full: the folder, its manifest, the
    `backup` run row and the backup_runs row;
  * the same job without a configured folder fails with the reason, and writes nothing to the
    daemon's working directory;
  * a failed backup -> one alert mail naming it, stored in zakaz.alerts -> no repeat on the next
    cycle -> a successful backup resolves it with one "РЕШЕНО" mail;
  * backup_stale is quiet where backups never ran, and fires then when ALERT_BACKUP_REQUIRED=1.
"""
import email
import email.policy
import glob
import json
import os
import re
import subprocess
import sys
import unittest

from zhtest import SOURCE_DIR, ZhostCase
from serve_helpers import Daemon, free_port, write

SINK = os.path.join(SOURCE_DIR, "spec", "fakes", "smtp_sink.py")
ALERTS = os.path.join(SOURCE_DIR, "scripts", "alerts.lua")


class BackupOpsCase(ZhostCase):
    def setUp(self):
        super().setUp()
        # Settings from the developer's shell must not leak into the runs under test.
        for k in list(self.env):
            if k in ("ZHOST_BACKUP_DIR", "BACKUP_DIR", "ZHOST_JOB", "ZHOST_RUN_ID", "ZHOST_CONF") or \
                    k.startswith(("SMTP_", "ALERT_")):
                del self.env[k]
        self.bdir = os.path.join(self.tmp, "backups")
        self.daemons = []
        self.sink = None

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        if self.sink:
            self.sink.terminate()
            self.sink.wait(10)
            self.sink.stdout.close()
            self.sink.stderr.close()
        super().tearDown()

    # ---- helpers ----
    def backup(self, *args, expect):
        r = self.zhost("backup", *args)
        self.assertEqual(r.returncode, expect, "zhost backup %s\nstdout:\n%s\nstderr:\n%s" % (args, r.stdout, r.stderr))
        return r

    def folders(self, suffix=""):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.bdir, "chbk_*" + suffix)))

    def serve(self, jobs):
        port = free_port()
        conf = write(os.path.join(self.tmp, "conf", "zhost.conf"),
                     "[zhost]\nroot = ..\nstate_dir = state\ngrace = 5s\ntimezone = Europe/Moscow\n"
                     "[health]\nlisten = 127.0.0.1:%d\nidle_timeout = 2s\n%s" % (port, jobs))
        d = Daemon(self, conf)
        self.daemons.append(d)
        d.ready()
        return d

    def start_sink(self):
        self.mail_dir = os.path.join(self.tmp, "mail")
        os.makedirs(self.mail_dir)
        self.sink = subprocess.Popen([sys.executable, SINK, "--port", "0", "--out", self.mail_dir],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = re.match(r"READY (\d+)", self.sink.stdout.readline() or "")
        self.assertTrue(m, "the SMTP sink did not start")
        return int(m.group(1))

    def alert_settings(self, port, **more):
        values = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USER": "alerts@zakaz.example",
                  "SMTP_PASSWORD": "pw", "SMTP_USE_TLS": "false", "ALERT_EMAIL_TO": "ops@zakaz.example"}
        values.update(more)
        self.write_secret("alerts", values)

    def alerts_cycle(self, only="backup_failed,backup_stale"):
        r = self.zhost("run", ALERTS, "--only", only)
        self.assertEqual(r.returncode, 0, "alerts:\nstdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))
        return r

    def mails(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.mail_dir, "msg-*.eml"))):
            with open(path, "rb") as f:
                out.append(email.message_from_binary_file(f, policy=email.policy.default))
        return out

    @staticmethod
    def body(msg):
        return msg.get_body(preferencelist=("plain",)).get_content()

    def stored(self):
        return [(r["rule"], r["subject"], r["alert_type"], int(r["delivered"])) for r in self.q(
            "SELECT rule, subject, alert_type, max(delivered) AS delivered FROM alerts "
            "GROUP BY alert_id, rule, subject, alert_type ORDER BY min(created_at), alert_type = 'resolved', rule, subject")]


class ScheduledBackups(BackupOpsCase):
    def test_scheduled_incremental_makes_a_backup_and_its_run_rows(self):
        self.write_secret("backup", {"BACKUP_DIR": self.bdir})
        self.backup("full", expect=0)  # what the incremental is based on; BACKUP_DIR comes from the file
        [full] = self.folders("_full")
        d = self.serve("[job backup_incr]\ncommand = backup incr\nschedule = every 2s\ntimeout = 2m\n")
        d.wait_for(r'job=backup_incr msg="run finished".*status=success', timeout=90)
        self.assertEqual(d.stop(), 0)

        incrs = self.folders("_incr")
        self.assertTrue(incrs, os.listdir(self.bdir))
        with open(os.path.join(self.bdir, incrs[0], "manifest.json")) as fh:
            m = json.load(fh)
        self.assertEqual((m["name"], m["mode"], m["base"]), (incrs[0], "incr", full))
        self.assertEqual(m["databases"][0]["name"], self.db)
        # The child's own run row (job `backup`) and backup_runs row, besides the daemon's backup_incr row.
        runs = self.q("SELECT status, message, metrics FROM meta_job_runs WHERE job = 'backup' "
                      "AND message = '%s'" % incrs[0])
        self.assertEqual([r["status"] for r in runs], ["success"])
        self.assertEqual(json.loads(runs[0]["metrics"])["mode"], "incr")
        br = self.q("SELECT backup_name, mode, status, base_backup FROM v_backup_runs WHERE backup_name = '%s'" % incrs[0])
        self.assertEqual([(r["mode"], r["status"], r["base_backup"]) for r in br], [("incr", "ok", full)])
        self.assertIn("success", [r["status"] for r in self.runs("backup_incr")])
        # the daemon's own run row says what was made (`zhost logs backup_incr`, `zhost status`)
        ok = [r for r in self.runs("backup_incr") if r["status"] == "success"]
        self.assertTrue(ok and all(re.fullmatch(re.escape(self.bdir) + r"/chbk_\d{8}_\d{6}_incr", r["message"])
                                   for r in ok), ok)
        self.assertTrue(d.grep(r'job=backup_incr msg="output" line="backup %s: ' % incrs[0]))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "var", "backups")))

    def test_scheduled_backup_without_a_folder_fails_with_the_reason(self):
        d = self.serve("[job backup_full]\ncommand = backup full\nschedule = every 2s\ntimeout = 2m\n")
        d.wait_for(r'job=backup_full msg="run finished".*status=error', timeout=60)
        self.assertEqual(d.stop(), 0)
        want = "no backup folder configured (set BACKUP_DIR in %s/.env.backup)" % self.secrets
        self.assertTrue(d.grep(re.escape(want)), "\n".join(d.log()[-20:]))
        runs = self.runs("backup_full")
        self.assertTrue(runs)
        self.assertEqual({r["status"] for r in runs}, {"error"})
        self.assertIn(want, runs[0]["message"])
        # Nothing was made in the daemon's working directory, and no backup was attempted.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "var", "backups")))
        self.assertEqual(self.runs("backup"), [])
        self.assertEqual(self.q("SELECT * FROM backup_runs"), [])


class BackupAlerts(BackupOpsCase):
    def test_failed_backup_one_mail_then_resolved_by_a_successful_one(self):
        self.alert_settings(self.start_sink())
        self.write_secret("backup", {"BACKUP_DIR": self.bdir})
        r = self.backup("incr", expect=1)  # no full to base it on
        self.assertIn("run `zhost backup full` first", r.stderr)

        self.alerts_cycle()
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        subject, body = str(mails[0]["Subject"]), self.body(mails[0])
        self.assertIn("ОШИБКА", subject)
        self.assertIn("backup_failed:incr (новый)", body)
        self.assertIn("резервная копия (инкрементальный) не создана", body)
        self.assertIn("run `zhost backup full` first", body)
        self.assertIn("zhost logs backup_incr", body)
        # Nothing has ever succeeded, so both staleness limits are broken too.
        self.assertIn("backup_stale:full", body)
        self.assertIn("backup_stale:any", body)
        self.assertEqual(sorted(self.stored()), [("backup_failed", "incr", "error", 1), ("backup_stale", "any", "error", 1),
                                                 ("backup_stale", "full", "error", 1)])
        row = self.q("SELECT message FROM alerts WHERE rule = 'backup_failed'")[0]
        self.assertIn("no complete full backup in %s" % self.bdir, row["message"])

        # Still failing, inside the repeat interval: no second mail.
        self.alerts_cycle()
        self.assertEqual(len(self.mails()), 1)
        self.assertEqual(len(self.stored()), 3)

        # A full and then an incremental succeed: one mail resolving all three.
        self.backup("full", expect=0)
        self.backup("incr", expect=0)
        self.alerts_cycle()
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        self.assertIn("РЕШЕНО", str(mails[1]["Subject"]))
        body = self.body(mails[1])
        self.assertIn("backup_failed:incr (решён)", body)
        self.assertIn("backup_stale:full (решён)", body)
        resolved = [s for s in self.stored() if s[2] == "resolved"]
        self.assertEqual(sorted(resolved), [("backup_failed", "incr", "resolved", 1),
                                            ("backup_stale", "any", "resolved", 1),
                                            ("backup_stale", "full", "resolved", 1)])
        state = {(r["rule"], r["subject"]): r["state"] for r in self.q("SELECT rule, subject, state FROM v_alert_state")}
        self.assertEqual(state[("backup_failed", "incr")], "resolved")

        # And quiet afterwards.
        self.alerts_cycle()
        self.assertEqual(len(self.mails()), 2)

    def test_stale_is_quiet_without_backups_unless_required(self):
        port = self.start_sink()
        self.alert_settings(port)
        self.alerts_cycle()
        self.assertEqual(self.mails(), [])
        self.assertEqual(self.stored(), [])

        self.alert_settings(port, ALERT_BACKUP_REQUIRED="1")
        self.alerts_cycle()
        mails = self.mails()
        self.assertEqual(len(mails), 1)
        body = self.body(mails[0])
        self.assertIn("backup_stale:full", body)
        self.assertIn("ни разу не запускались", body)
        self.assertIn("BACKUP_DIR", body)
        self.assertEqual(sorted(self.stored()), [("backup_stale", "any", "error", 1), ("backup_stale", "full", "error", 1)])


if __name__ == "__main__":
    unittest.main()
