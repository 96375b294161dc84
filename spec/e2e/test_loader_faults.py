"""The fault matrix on the four real loaders (scripts/qtickets.lua, vk_ads.lua, direct.lua, gmail.lua)
against the bundled fakes: ClickHouse stopped mid-run, SIGKILL, SIGTERM/SIGINT, and a script error
half-way. "Mid-run" is made deterministic with a fake gate: one request of the loader is held until
the test opens the gate, while the rows added before it reach ClickHouse by the sink's age timer.

After each fault and its recovery (spool replay, or a re-run) the loader's latest views must hold
exactly what one clean run of the same loader gives (compared column by column, minus the columns
that say when a row was loaded)."""
import json
import os
import random
import signal
import string
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from zhtest import ch_at  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

START, END = "2025-11-01", "2025-11-14"
WINDOW = ("--since", START, "--to", END)

# Per loader: the script, its job, the request held mid-run (a fault rule with a gate), the raw
# tables it writes and the latest views compared with a clean run.
LOADERS = {
    "qtickets": {
        "script": "scripts/qtickets.lua", "job": "qtickets", "args": WINDOW,
        # page 1 of the orders is mapped first; the held page is one of the next chunk
        "gate": {"path": r"/qtickets/api/rest/v1/orders$", "after": 1},
        "tables": ["dim_events", "stg_qtickets_api_orders_raw", "stg_qtickets_api_baskets_raw"],
        "views": ["v_qtickets_events_latest", "v_qtickets_orders_latest", "v_qtickets_baskets_latest",
                  "v_sales_latest"],
    },
    "vk_ads": {
        # two agency clients load concurrently: the first one's rows are added while the second
        # one's statistics request is held
        "script": "scripts/vk_ads.lua", "job": "vk_ads", "args": WINDOW,
        "gate": {"path": r"/vkads/api/v2/statistics/", "after": 1},
        "tables": ["fact_vk_ads_daily"],
        "views": ["v_vk_ads_latest"],
    },
    "direct": {
        # DIRECT_CHUNK_DAYS=7: two reports; the second one is held after the first one's rows
        "script": "scripts/direct.lua", "job": "direct", "args": WINDOW,
        "gate": {"path": r"/direct/json/v5/reports$", "after": 2},
        "tables": ["fact_direct_daily"],
        "views": ["v_direct_latest"],
    },
    "gmail": {
        # messages are loaded one after the other: the fourth is held
        "script": "scripts/gmail.lua", "job": "gmail_ingest", "args": (),
        "gate": {"path": r"/gmail/v1/users/me/messages/[0-9a-f]+\?", "after": 3},
        "tables": ["stg_qtickets_sales_raw"],
        "views": ["v_qtickets_gmail_latest"],
    },
}

# Columns that say when a row was loaded, not what it says.
WHEN_COLUMNS = {"loaded_at", "last_ver", "_loaded_at", "ingested_at"}

_DATA = None
_REFERENCE = {}


def data_set():
    global _DATA
    if _DATA is None:
        _DATA = datagen.generate(seed=11, orders=400, events=8, days=14, start=START)
        _DATA["auth"]["vkads"]["clients"][0]["agency_clients"] = ["agency_client_1", "agency_client_2"]
    return _DATA


class EachLoader:
    """The four real loaders, one test each, through the class's check(name)."""

    def test_qtickets(self):
        self.check("qtickets")

    def test_vk_ads(self):
        self.check("vk_ads")

    def test_direct(self):
        self.check("direct")

    def test_gmail(self):
        self.check("gmail")


class LoaderFaults(zhtest.ZhostCase):
    """Shared setup: the fakes with one data set, every loader's secrets, helpers for the matrix."""
    migrate = True

    def setUp(self):
        super().setUp()
        self.ch_url = zhtest.CH_URL
        # rows added before a held request reach ClickHouse in 0.5 s, not the default 5 s
        self.env["ZHOST_SINK_MAX_AGE"] = "0.5"
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data_set(), f, ensure_ascii=False)
        self.api = self.fake("--data", path, "--set", "direct.retry_in=[0]", "--set", "direct.offline_polls=0")
        u = self.api.url
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": u + "/qtickets/api/rest/v1", "QTICKETS_TOKEN": "qt-test-token"})
        self.write_secret("vk", {"VK_ADS_BASE_URL": u + "/vkads", "VK_ADS_CLIENT_ID": "vk-client-id",
                                 "VK_ADS_CLIENT_SECRET": "vk-client-secret", "VK_ADS_RPS": "50",
                                 "VK_ADS_AGENCY_CLIENT_NAME": "agency_client_1,agency_client_2"})
        self.write_secret("direct", {"DIRECT_BASE_URL": u + "/direct/json/v5", "DIRECT_TOKEN": "y0_fake-direct-token",
                                     "DIRECT_LOGIN": "fake-client-login", "DIRECT_RETRY_BASE": "0.1",
                                     "DIRECT_CHUNK_DAYS": "7"})
        self.write_secret("gmail", {"GMAIL_BASE_URL": u + "/gmail", "GMAIL_QUERY": "in:inbox"})
        gdir = os.path.join(self.secrets, "gmail")
        os.makedirs(gdir)
        creds = {"installed": {"client_id": "1234-fake.apps.googleusercontent.com", "project_id": "p",
                               "auth_uri": u + "/google/auth", "token_uri": u + "/google/token",
                               "client_secret": "GOCSPX-fake-secret", "redirect_uris": ["http://localhost"]}}
        token = {"token": "ya29.expired-token", "refresh_token": "1//fake-refresh-token", "token_uri": u + "/google/token",
                 "client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret",
                 "scopes": ["https://www.googleapis.com/auth/gmail.readonly"], "expiry": "2020-01-01T00:00:00Z"}
        for name, obj in (("credentials.json", creds), ("token.json", token)):
            with open(os.path.join(gdir, name), "w") as f:
                json.dump(obj, f)
            os.chmod(os.path.join(gdir, name), 0o600)

    # ------------------------------------------------------------------ helpers

    def sql(self, query):
        return ch_at(self.ch_url, query, self.db)

    def q(self, query):  # zhtest's helpers (runs()) read the shared ClickHouse; this one reads ch_url
        return json.loads(self.sql(query.rstrip().rstrip(";") + " FORMAT JSON"))["data"]

    def snapshot(self, name, db=None):
        """The loader's latest views as sorted text, without the when-loaded columns."""
        db = db or self.db
        out = []
        for view in LOADERS[name]["views"]:
            cols = [line.split("\t")[0] for line in ch_at(self.ch_url, "DESCRIBE TABLE %s.%s" % (db, view)).splitlines()]
            keep = ", ".join("toString(%s)" % c for c in cols if c not in WHEN_COLUMNS)
            text = ch_at(self.ch_url, "SELECT %s FROM %s.%s ORDER BY %s FORMAT TSV" % (keep, db, view, keep))
            out.append("== %s (%d rows)\n%s" % (view, text.count("\n"), text))
        return "\n".join(out)

    def reference(self, name):
        """What one clean run of the loader leaves in its views (in databases of its own)."""
        if name not in _REFERENCE:
            suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(8))
            db, bi = "zakaz_ref" + suffix, "bi_ref" + suffix
            env = {"CLICKHOUSE_URL": self.ch_url, "CLICKHOUSE_DB": db, "CLICKHOUSE_BI_DB": bi,
                   "ZHOST_SPOOL": os.path.join(self.tmp, "ref-spool")}
            try:
                r = self.zhost("migrate", env=env)
                self.assertEqual(r.returncode, 0, r.stderr)
                r = self.run_loader(name, env=env)
                self.assertEqual(r.returncode, 0, r.stderr)
                _REFERENCE[name] = self.snapshot(name, db)
            finally:
                for d in (db, bi):
                    ch_at(self.ch_url, "DROP DATABASE IF EXISTS " + d)
        return _REFERENCE[name]

    def assert_same_as_clean_run(self, name):
        got = self.snapshot(name)
        self.assertIn("rows)\n", got)
        self.assertNotIn("(0 rows)", got.split("\n")[0])
        self.assertEqual(got, self.reference(name))

    def run_loader(self, name, script=None, env=None):
        spec = LOADERS[name]
        return self.zhost("run", script or spec["script"], *spec["args"], env=env, timeout=120)

    def start_loader(self, name, script=None, env=None):
        spec = LOADERS[name]
        return self.zhost_bg("run", script or spec["script"], *spec["args"], env=env)

    def hold(self, name):
        rule = dict(LOADERS[name]["gate"])
        rule.update(gate="g", times=1)
        self.api.faults(rule)

    def wait_held(self, p):
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.api.control("/_fake/gates")["waiting"].get("g"):
                return
            if p.poll() is not None:
                self.fail("the run ended before reaching the held request:\n" + p.stderr.read())
            time.sleep(0.05)
        self.fail("the held request never came")

    def release(self):
        self.api.control("/_fake/gates", {"open": "g"})

    def raw_rows(self, name):
        return sum(int(self.sql("SELECT count() FROM " + t).strip()) for t in LOADERS[name]["tables"])

    def wait_rows_in_clickhouse(self, name):
        """Rows added before the held request reach ClickHouse by the sink's age timer ($ZHOST_SINK_MAX_AGE)."""
        deadline = time.time() + 30
        while time.time() < deadline:
            n = self.raw_rows(name)
            if n > 0:
                return n
            time.sleep(0.2)
        self.fail("no row of %s reached ClickHouse while the run was held" % name)

    def held_run(self, name, script=None, env=None):
        """Starts the loader, waits until it is held mid-run with some rows delivered."""
        self.hold(name)
        p = self.start_loader(name, script, env)
        self.wait_held(p)
        n = self.wait_rows_in_clickhouse(name)
        return p, n

    def statuses(self, name):
        return [(r["status"], r["message"]) for r in self.runs(LOADERS[name]["job"])]

    def spool_rows(self):
        total = 0
        if os.path.isdir(self.spool):
            for fn in os.listdir(self.spool):
                if fn.endswith(".jsonl"):
                    with open(os.path.join(self.spool, fn)) as f:
                        total += sum(1 for line in f if line.strip())
        return total


# ---------------------------------------------------------------------- 2. SIGKILL mid-run

class KillMidRun(EachLoader, LoaderFaults):
    def check(self, name):
        p, delivered = self.held_run(name)
        p.kill()
        p.communicate(timeout=30)
        self.release()
        self.assertEqual([s for s, _ in self.statuses(name)], ["running"])
        r = self.run_loader(name)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(s for s, _ in self.statuses(name)), ["interrupted", "success"])
        self.assert_same_as_clean_run(name)



# ---------------------------------------------------------------------- 3. SIGTERM / SIGINT mid-run

class SignalMidRun(LoaderFaults):
    def check(self, name, sig):
        p, delivered = self.held_run(name)
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        self.release()
        self.assertEqual(p.returncode, 1, err)
        why = {signal.SIGTERM: "stopped (SIGTERM)", signal.SIGINT: "interrupted (SIGINT)"}[sig]
        self.assertEqual(err.strip().splitlines()[-1], "zhost: %s failed: %s" % (LOADERS[name]["job"], why))
        runs = self.runs(LOADERS[name]["job"])
        self.assertEqual([(r["status"], r["message"]) for r in runs], [("interrupted", why)])
        # every row the script had added is in ClickHouse (nothing spooled: ClickHouse was up)
        added = json.loads(runs[0]["metrics"]).get("rows", 0)
        self.assertGreater(added, 0)
        self.assertEqual(self.spool_rows(), 0)
        self.assertEqual(self.raw_rows(name), added)
        self.assertEqual(int(runs[0]["rows_processed"]), added)
        r = self.run_loader(name)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_same_as_clean_run(name)

    def test_qtickets_sigterm(self):
        self.check("qtickets", signal.SIGTERM)

    def test_vk_ads_sigint(self):
        self.check("vk_ads", signal.SIGINT)

    def test_direct_sigterm(self):
        self.check("direct", signal.SIGTERM)

    def test_gmail_sigint(self):
        self.check("gmail", signal.SIGINT)


# ---------------------------------------------------------------------- 4. a script error half-way

# Where each copy raises: a line of the real script, and the error inserted before it. Each point
# is after some rows were added.
INJECT = {
    "qtickets": ("  counts.orders = counts.orders + 1\n",
                 "  if counts.orders == 60 then local boom = nil; boom.x = 1 end\n"),
    "vk_ads": ("      n = n + 1\n",
               "      if rows_added == 100 then local boom = nil; boom.x = 1 end\n"),
    "direct": ("    add(r, campaign_utm(cid))\n",
               "    if added == 20 then local boom = nil; boom.x = 1 end\n"),
    "gmail": ("  counts.messages_loaded = counts.messages_loaded + 1\n",
              "  if counts.messages_loaded == 2 then local boom = nil; boom.x = 1 end\n"),
}


class ScriptErrorHalfWay(EachLoader, LoaderFaults):
    def check(self, name):
        spec = LOADERS[name]
        with open(os.path.join(zhtest.SOURCE_DIR, spec["script"])) as f:
            src = f.read()
        anchor, bad = INJECT[name]
        self.assertEqual(src.count(anchor), 1, "the injection point is unique")
        src = src.replace(anchor, bad + anchor)
        line = src[:src.index(bad)].count("\n") + 1
        # The copy gets a lib/ of its own (the real helpers): require() looks next to the script
        # first, and then in its ../lib, which would be the temp root's.
        d = os.path.join(self.tmp, "inject")
        os.makedirs(d)
        os.symlink(os.path.join(zhtest.SOURCE_DIR, "scripts", "lib"), os.path.join(d, "lib"))
        script = os.path.join(d, os.path.basename(spec["script"]))
        with open(script, "w") as f:
            f.write(src)
        r = self.run_loader(name, script)
        self.assertEqual(r.returncode, 1, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        where = "%s:%d: attempt to index a nil value (local 'boom')" % (os.path.basename(script), line)
        self.assertRegex(last, r"^zhost: %s failed: \S*%s" % (spec["job"], where.replace("(", r"\(").replace(")", r"\)")))
        runs = self.runs(spec["job"])
        self.assertEqual([r_["status"] for r_ in runs], ["error"])
        self.assertIn(where, runs[0]["message"])
        # the rows added before the error are kept (flushed), as docs/loaders/*.md say
        added = json.loads(runs[0]["metrics"]).get("rows", 0)
        self.assertGreater(added, 0)
        self.assertEqual(self.raw_rows(name), added)
        self.assertEqual(self.spool_rows(), 0)
        r = self.run_loader(name)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_same_as_clean_run(name)



class OneLineErrors(LoaderFaults):
    def test_vk_ads_error_is_not_prefixed_with_work_item_numbers(self):
        # task.map's "item <i>: " (the index in an internal work list, twice over for the
        # statistics of an account) is no help to an operator: the loader's text names the account.
        self.api.faults({"path": "statistics/", "api_error": "ERR_ACCESS_DENIED", "status": 403, "times": -1})
        r = self.run_loader("vk_ads")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr.strip().splitlines()[-1],
                         r"^zhost: vk_ads failed: VK Ads statistics/banners/day\.json \(agency client agency_client_\d\): "
                         r"access denied to banner \d+ \(ERR_ACCESS_DENIED")


# ---------------------------------------------------------------------- 1. ClickHouse stops mid-run

class ClickHouseStopsMidRun(zhtest.PrivateClickHouse, EachLoader, LoaderFaults):
    """A private ClickHouse for the class (test_core.py's ClickHouseOutage pattern), stopped while a
    loader is held mid-run with some of its rows delivered, started again before the replay."""
    migrate = False

    def setUp(self):
        super().setUp()
        self.env["ZHOST_CH_ATTEMPTS"] = "2"
        self.env["ZHOST_CH_BACKOFF_CAP"] = "0.2"

    def check(self, name):
        p, delivered = self.held_run(name)
        self.stop_ch()
        self.release()
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1, err)
        last = err.strip().splitlines()[-1]
        self.assertRegex(last, r"^zhost: %s failed: " % LOADERS[name]["job"])
        self.assertRegex(last, r"[1-9]\d* rows spooled.*deliver them with `zhost spool replay`$")
        st = self.zhost("spool", "status")
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertRegex(st.stdout, r"[1-9]\d* rows")
        self.start_ch()
        r = self.zhost("spool", "replay")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = self.zhost("spool", "status")
        self.assertIn("total: 0 files", st.stdout)
        self.assert_same_as_clean_run(name)
        # the run log has the failed run (its final row was spooled and replayed)
        statuses = self.statuses(name)
        self.assertEqual([s for s, _ in statuses], ["error"], statuses)
        self.assertIn("rows spooled", statuses[0][1])



if __name__ == "__main__":
    unittest.main()
