"""Fixes found while writing docs/lua-api.md, each with its test."""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import zhtest
from zhtest import SOURCE_DIR, ZHOST

def offline_env(tmp, secrets):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKHOUSE_", "CH_", "ZHOST_"))}
    env.update({
        "CLICKHOUSE_URL": "http://127.0.0.1:9/",   # nothing listens there: examples must not need ClickHouse
        "ZHOST_CH_ATTEMPTS": "1",
        "ZHOST_SECRETS": secrets,
        "ZHOST_SPOOL": os.path.join(tmp, "spool"),
    })
    return env


# ---- fixes found while documenting ----

class TestRequireCache(unittest.TestCase):
    """require() caches per run: a library required by the script and by another library loads once."""

    def test_nested_require_shares_the_run_cache(self):
        tmp = tempfile.mkdtemp(prefix="zhost-docs-")
        try:
            os.makedirs(os.path.join(tmp, "lib"))
            with open(os.path.join(tmp, "lib", "counter.lua"), "w") as fh:
                fh.write("print('loading counter')\nreturn { n = 0 }\n")
            with open(os.path.join(tmp, "lib", "user.lua"), "w") as fh:
                fh.write("local c = require('counter')\nreturn { c = c }\n")
            with open(os.path.join(tmp, "main.lua"), "w") as fh:
                fh.write("local c = require('counter')\nlocal u = require('user')\n"
                         "assert(u.c == c, 'user.lua got another counter table')\n"
                         "assert(require('user') == u)\n")
            env = offline_env(tmp, os.path.join(tmp, "secrets"))
            r = subprocess.run([ZHOST, "run", os.path.join(tmp, "main.lua"), "--dry-run"], env=env, cwd=tmp,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.count("loading counter"), 1, r.stdout)
            # A second run reloads (no caching across runs).
            r2 = subprocess.run([ZHOST, "run", os.path.join(tmp, "main.lua"), "--dry-run"], env=env, cwd=tmp,
                                capture_output=True, text=True, timeout=60)
            self.assertEqual(r2.stdout.count("loading counter"), 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TestExecDryRun(zhtest.ZhostCase):
    """--dry-run writes nothing: ch.exec is logged, not sent; a real run sends it."""

    SCRIPT = ("assert(ch.exec('CREATE TABLE zakaz.docs_dry (id UInt64) ENGINE = Memory') == true)\n"
              "local rows = assert(ch.query('EXISTS TABLE zakaz.docs_dry'))\n"
              "io.write('exists=', rows[1].result, '\\n')\n")

    def test_exec_is_skipped_in_a_dry_run(self):
        path = self.script("dry.lua", self.SCRIPT)
        r = self.zhost("run", path, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("exists=0", r.stdout)
        self.assertIn('msg="dry run: ch.exec statement not sent" sql="CREATE TABLE zakaz.docs_dry', r.stderr)
        self.assertEqual(self.scalar("EXISTS TABLE docs_dry"), "0")

    def test_exec_runs_in_a_real_run(self):
        path = self.script("real.lua", self.SCRIPT)
        r = self.zhost("run", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("exists=1", r.stdout)
        self.assertEqual(self.scalar("EXISTS TABLE docs_dry"), "1")


if __name__ == "__main__":
    unittest.main()
