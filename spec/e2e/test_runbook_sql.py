"""The operators' runbook SQL (runbook-integrations.ru.md) after real loads by scripts/qtickets.lua,
scripts/gmail.lua and scripts/plan_sales.lua: every query runs unchanged and returns the figures the
loads caused (runs per job and status, rows, freshness, no duplicates, success rate, durations).

The runbook writes `zakaz.`; like `zhost migrate`, the test substitutes the test database for that
qualifier and nothing else. Two documented 18.16 caveats (docs/schema.md §6): JSONExtractInt is
replaced by visitParamExtractInt when the server lacks it, and where the server compares DateTime
with Date as raw numbers the figures are checked with the documented toDateTime(today() - 7) form
(the unchanged text still has to run).
"""
import datetime as dt
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

RUNBOOK = os.environ.get("ZHOST_RUNBOOK") or os.path.join(zhtest.SOURCE_DIR, "spec", "fixtures",
                                                            "runbook-integrations.ru.md")


def runbook_sql():
    with open(RUNBOOK, encoding="utf-8") as f:
        text = f.read()
    out = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        cur = []
        for line in block.splitlines():
            if line.strip().startswith("--"):
                continue
            cur.append(line)
            if line.rstrip().endswith(";"):
                out.append("\n".join(cur).strip().rstrip(";"))
                cur = []
        if "".join(cur).strip():
            out.append("\n".join(cur).strip())
    return out


class TestRunbookSQL(zhtest.ZhostCase):
    def test_runbook_queries_after_loads(self):
        today = dt.date.fromisoformat(zhtest.ch("SELECT toString(today())").strip())
        start = today - dt.timedelta(days=13)
        data = datagen.generate(seed=21, orders=250, events=6, days=14, start=start.isoformat())
        exp = datagen.expected(data)
        path = os.path.join(self.tmp, "data.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        api = self.fake("--data", path)
        self.write_secret("qtickets", {"QTICKETS_BASE_URL": api.url + "/qtickets/api/rest/v1",
                                       "QTICKETS_TOKEN": "qt-test-token"})
        gdir = os.path.join(self.secrets, "gmail")
        os.makedirs(gdir)
        with open(os.path.join(gdir, "token.json"), "w") as f:
            json.dump({"token": "x", "refresh_token": "1//fake-refresh-token", "token_uri": api.url + "/google/token",
                       "client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret",
                       "expiry": "2020-01-01T00:00:00Z"}, f)
        self.write_secret("gmail", {"GMAIL_BASE_URL": api.url + "/gmail", "GMAIL_QUERY": "in:inbox"})
        plan = os.path.join(self.tmp, "plan.csv")
        with open(plan, "w") as f:
            f.write("sales_date,city,event_id,plan_tickets,plan_revenue\n%s,Москва,1,10,1000\n" % today)

        def run(*a, env=None, ok=True):
            r = self.zhost("run", *a, env=env)
            self.assertEqual(r.returncode, 0 if ok else 1, r.stderr)
        run("scripts/qtickets.lua", "--days", "14")
        run("scripts/qtickets.lua", "--days", "14")
        run("scripts/qtickets.lua", "--days", "1", env={"QTICKETS_TOKEN": "revoked"}, ok=False)
        run("scripts/gmail.lua")
        run("scripts/plan_sales.lua", "--csv", plan)
        runs = self.q("SELECT job, status, rows_processed, metrics FROM meta_job_runs")
        self.assertEqual(len(runs), 5)
        rows_of = {}
        for r in runs:
            rows_of.setdefault((r["job"], r["status"]), []).append(int(r["rows_processed"]))

        # one alert raised today and one from 40 days ago (what the alert engine writes, docs/schema.md §3.2)
        for aid, when in (("a-new", "now()"), ("a-old", "now() - 40 * 86400")):
            zhtest.ch("INSERT INTO %s.alerts (alert_id, created_at, job, rule, subject, alert_type, title, message, details, "
                      "channel, delivered, acknowledged, acknowledged_at, acknowledged_by) SELECT '%s', %s, 'qtickets', "
                      "'job_failed', 'qtickets', 'error', 'qtickets failed', 'HTTP 401', '{}', 'email', 1, 0, NULL, ''"
                      % (self.db, aid, when))
        new_ch = True
        try:
            zhtest.ch("SELECT JSONExtractInt('{\"a\":1}', 'a')")
        except RuntimeError:
            new_ch = False
        date_bug = zhtest.ch("SELECT toDateTime('2000-01-01 00:00:00') >= toDate('2000-01-02')").strip() == "1"

        stmts = runbook_sql()
        self.assertEqual(len(stmts), 8, "the runbook's SQL changed: %r" % stmts)
        results = []
        for st in stmts:
            sql = st.replace("zakaz.", self.db + ".")
            if "JSONExtractInt" in sql and not new_ch:
                sql = sql.replace("JSONExtractInt(", "visitParamExtractInt(")
            got = zhtest.ch_rows(sql)  # the text as written runs
            if date_bug and re.search(r"_at >= today\(\) - 7", sql):
                got = zhtest.ch_rows(re.sub(r"(\w+_at) >= today\(\) - 7", r"\1 >= toDateTime(today() - 7)", sql))
            results.append(got)
        last20, stats, recent, dups, freshness, success, perf, alerts = results

        # Последние запуски задач: our five runs, newest first
        self.assertEqual(len(last20), 5)
        starts = [r["started_at"] for r in last20]
        self.assertEqual(starts, sorted(starts, reverse=True))
        self.assertEqual(sorted((r["job"], r["status"]) for r in last20), sorted([
            ("qtickets", "success"), ("qtickets", "success"), ("qtickets", "error"), ("gmail_ingest", "success"),
            ("plan_sales", "success")]))
        self.assertTrue(all(r["finished_at"] for r in last20))
        err = [r for r in last20 if r["status"] == "error"][0]
        self.assertIn("HTTP 401", err["message"])

        # Статистика за последние 7 дней: runs and average rows per job and status
        st = {(r["job"], r["status"]): (int(r["runs"]), float(r["avg_rows"])) for r in stats}
        self.assertEqual(set(st), set(rows_of))
        for k, v in rows_of.items():
            self.assertEqual(st[k], (len(v), sum(v) / len(v)), k)
        counted = exp["qtickets"]["counts"]["counted"] + exp["qtickets"]["counts"].get("paid_deleted", 0)
        self.assertGreater(st[("qtickets", "success")][1], counted)  # orders + baskets + events
        self.assertEqual(st[("gmail_ingest", "success")], (1, float(exp["gmail"]["rows"])))
        self.assertEqual(st[("plan_sales", "success")], (1, 1.0))

        # v_sales_latest: rows of today and yesterday, and no duplicates
        api = {(x["date"], x["city"], x["event_name"]) for x in exp["qtickets"]["sales_daily"]}
        api_dates = {k[0] for k in api}
        combined = api | {(x["date"], x["city"], x["event_name"]) for x in exp["gmail"]["daily"]
                          if x["date"] not in api_dates}
        yesterday = (today - dt.timedelta(days=1)).isoformat()
        self.assertEqual(int(list(recent[0].values())[0]), len([k for k in combined if k[0] >= yesterday]))
        self.assertEqual(dups, [])

        # Свежесть данных: QTickets fresh, the ad sources never loaded (9999, sorted first)
        fr = {r["source"]: r for r in freshness}
        self.assertEqual(set(fr), {"qtickets_sales", "vk_ads", "direct"})
        latest = max(x["date"] for x in exp["qtickets"]["sales_daily"])
        self.assertEqual(fr["qtickets_sales"]["latest_date"], latest)
        self.assertEqual(int(fr["qtickets_sales"]["days_behind"]), (today - dt.date.fromisoformat(latest)).days)
        self.assertEqual(int(fr["qtickets_sales"]["total_rows"]), exp["qtickets"]["counts"]["counted"])
        self.assertEqual(int(fr["vk_ads"]["days_behind"]), 9999)
        self.assertEqual(freshness[-1]["source"], "qtickets_sales")

        # Успешность запусков
        sr = {r["job"]: (int(r["success"]), int(r["errors"]), round(float(r["success_rate"]), 2)) for r in success}
        self.assertEqual(sr, {"qtickets": (2, 1, 66.67), "gmail_ingest": (1, 0, 100.0), "plan_sales": (1, 0, 100.0)})

        # Производительность: durations of successful runs from metrics.duration (whole seconds)
        dur = {}
        for r in runs:
            if r["status"] == "success":
                dur.setdefault(r["job"], []).append(json.loads(r["metrics"])["duration"])
        pf = {r["job"]: (float(r["avg_duration"]), int(float(r["max_duration"]))) for r in perf}
        self.assertEqual(pf, {j: (sum(v) / len(v), max(v)) for j, v in dur.items()})

        # Алерты за 7 дней: the recent one only
        self.assertEqual([a["alert_id"] for a in alerts], ["a-new"])
        self.assertEqual(alerts[0]["alert_type"], "error")


if __name__ == "__main__":
    unittest.main()
