"""VK Ads and Yandex Direct loaders against hand-written payloads in the documented wire formats
(/work/shared/api/vk_ads.md, yandex_direct.md), not against the fakes' generated data.

The payloads live in spec/fixtures/ads_real/ and are served verbatim by the fake (fault rules with a
200 status and the file as body), so every documented field, type drift and pitfall reaches the real
loader exactly as written. Expected figures are computed by hand from the files (see each test).
"""
import json
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

FIX = os.path.join(zhtest.SOURCE_DIR, "spec", "fixtures", "ads_real")


def fixture(name):
    with open(os.path.join(FIX, name), encoding="utf-8") as fh:
        return fh.read()


def serve(path_re, body, status=200, headers=None, times=-1, after=0):
    rule = {"path": path_re, "status": status, "body": body, "times": times, "after": after}
    if headers:
        rule["headers"] = headers
    return rule


class RealFormatCase(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        self.f = self.fake("--set", "direct.retry_in=[0]")

    def run_job(self, script, *args, ok=True):
        r = self.zhost("run", script, *args)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        else:
            self.assertNotEqual(r.returncode, 0, r.stderr)
        return r

    def last_run(self, job):
        run = self.runs(job)[-1]
        run["metrics"] = json.loads(run["metrics"] or "{}")
        return run


class TestVkAdsV2RealFormat(RealFormatCase):
    WINDOW = ["--since", "2025-11-01", "--to", "2025-11-03"]

    def vk_secrets(self, **extra):
        values = {"VK_ADS_BASE_URL": self.f.url + "/vkads", "VK_ADS_CLIENT_ID": "vk-client-id",
                  "VK_ADS_CLIENT_SECRET": "vk-client-secret", "VK_ADS_RPS": "50"}
        values.update(extra)
        self.write_secret("vk", values)

    def serve_account(self):
        self.f.faults([
            serve(r"/api/v2/ad_plans\.json", fixture("vk_ad_plans.json")),
            serve(r"/api/v2/ad_groups\.json", fixture("vk_ad_groups.json")),
            serve(r"/api/v2/banners\.json", fixture("vk_banners.json")),
            serve(r"/api/v2/statistics/banners/day\.json", fixture("vk_stats_banners.json")),
        ])

    def rows(self):
        return self.q("SELECT toString(stat_date) AS d, campaign_id, ad_group_id, ad_id, campaign_name, impressions, "
                      "clicks, toString(spent) AS spent, utm_source, utm_medium, utm_campaign, utm_content, utm_term, "
                      "utm_city, utm_day, utm_month FROM v_vk_ads_latest ORDER BY ad_id, d")

    def test_banners_level_lands_as_written(self):
        # vk_stats_banners.json by hand: four banners x three days, every day listed (zeros too).
        self.vk_secrets()
        self.serve_account()
        self.run_job("scripts/vk_ads.lua", *self.WINDOW)
        rows = self.rows()
        self.assertEqual(len(rows), 12)
        got = {(r["ad_id"] if isinstance(r["ad_id"], str) else str(r["ad_id"]), r["d"]):
               (int(r["impressions"]), int(r["clicks"]), r["spent"]) for r in rows}
        self.assertEqual(got[("155000001", "2025-11-01")], (75881, 270, "23328.92"))
        self.assertEqual(got[("155000001", "2025-11-02")], (0, 0, "0.00"))
        self.assertEqual(got[("155000001", "2025-11-03")], (1204, 9, "311.50"))
        self.assertEqual(got[("155000002", "2025-11-01")], (10, 0, "0.07"))
        self.assertEqual(got[("155000002", "2025-11-02")], (2, 1, "0.01"))
        self.assertEqual(got[("155000003", "2025-11-01")], (500, 5, "1000.00"))
        self.assertEqual(got[("155000004", "2025-11-03")], (0, 0, "0.00"))
        b1 = [r for r in rows if str(r["ad_id"]) == "155000001"][0]
        self.assertEqual((str(b1["campaign_id"]), str(b1["ad_group_id"])), ("9100001", "120000001"))
        self.assertEqual(b1["campaign_name"], "Щелкунчик — Москва «зима»")
        self.assertEqual((b1["utm_source"], b1["utm_medium"], b1["utm_campaign"], b1["utm_content"], b1["utm_term"]),
                         ("vk", "cpc", "nutcracker_msk", "msk_05_12", "билеты"))
        self.assertEqual((b1["utm_city"], int(b1["utm_day"]), int(b1["utm_month"])), ("msk", 5, 12))
        b4 = [r for r in rows if str(r["ad_id"]) == "155000004"][0]
        self.assertEqual((str(b4["campaign_id"]), b4["campaign_name"], b4["utm_source"]),
                         ("9100002", 'Brand & Co "old"', ""))
        # Totals by hand: 23328.92 + 311.5 + 0.07 + 0.01 + 1000 = 24640.50 (the payload's own total).
        tot = self.q("SELECT sum(impressions) AS i, sum(clicks) AS c, toString(sum(spent)) AS s FROM v_vk_ads_latest")[0]
        self.assertEqual((int(tot["i"]), int(tot["c"]), tot["s"]), (77597, 285, "24640.50"))
        # What operators and DataLens read.
        md = {r["d"]: Decimal(r["s"]) for r in self.q(
            "SELECT toString(d) AS d, toString(spend_total) AS s FROM v_marketing_daily "
            "WHERE d BETWEEN '2025-11-01' AND '2025-11-03' ORDER BY d")}
        self.assertEqual(md, {"2025-11-01": Decimal("24328.99"), "2025-11-02": Decimal("0.01"),
                              "2025-11-03": Decimal("311.50")})
        fr = self.q("SELECT toString(latest_date) AS l, total_rows FROM v_data_freshness WHERE source = 'vk_ads'")[0]
        self.assertEqual((fr["l"], int(fr["total_rows"])), ("2025-11-03", 12))
        run = self.last_run("vk_ads")
        self.assertEqual((run["status"], int(run["rows_processed"])), ("success", 12))
        self.assertIn("12 rows", run["message"])
        # banner 155000003 has urls {} and 155000004 only {"primary": {"id": …}}: named, UTM empty
        self.assertEqual(run["metrics"].get("banners_without_link"), 2)
        # The same window again: the views hold the same figures, nothing doubles.
        self.run_job("scripts/vk_ads.lua", *self.WINDOW)
        tot2 = self.q("SELECT count() AS n, toString(sum(spent)) AS s FROM v_vk_ads_latest")[0]
        self.assertEqual((int(tot2["n"]), tot2["s"]), (12, "24640.50"))
        md2 = self.scalar("SELECT toString(sum(spend_total)) FROM v_marketing_daily "
                          "WHERE d BETWEEN '2025-11-01' AND '2025-11-03'")
        self.assertEqual(Decimal(md2), Decimal("24640.50"))


class TestVkLegacyRealFormat(RealFormatCase):
    WINDOW = ["--since", "2025-11-01", "--to", "2025-11-03"]

    def vk_secrets(self, **extra):
        values = {"VK_API_URL": self.f.url + "/vkapi/method", "VK_TOKEN": "vk1.a.fake-user-token",
                  "VK_ACCOUNT_IDS": "1900001234", "VK_API_RETRY_PAUSE": "0.2", "VK_API_RPS": "50"}
        values.update(extra)
        self.write_secret("vk", values)

    def serve_account(self, stats="vkapi_stats.json"):
        self.f.faults([
            serve(r"/ads\.getCampaigns$", fixture("vkapi_campaigns.json")),
            serve(r"/ads\.getAds$", fixture("vkapi_ads.json")),
            serve(r"/ads\.getAdsLayout$", fixture("vkapi_ads_layout.json")),
            serve(r"/ads\.getStatistics$", fixture(stats)),
        ])

    def test_legacy_answers_land_as_written(self):
        # By hand from vkapi_stats.json: ad 52345678 has 2025-11-01 (1200, 7, "150.00", counts as
        # digit strings) and 2025-11-03 (640, 2, 75.5 as a JSON number); 2025-11-02 and ad 52345679
        # are omitted (no delivery) and are not rows.
        self.vk_secrets()
        # A flood-control error in a 200 body first: paused and asked again.
        self.f.faults([serve(r"/ads\.getStatistics$", json.dumps(
            {"error": {"error_code": 9, "error_msg": "Flood control",
                       "request_params": [{"key": "method", "value": "ads.getStatistics"}]}}), times=1)])
        self.serve_account()
        self.run_job("scripts/vk_ads.lua", *self.WINDOW)
        rows = self.q("SELECT toString(stat_date) AS d, account_id, campaign_id, ad_group_id, ad_id, campaign_name, "
                      "impressions, clicks, toString(spent) AS spent, utm_source, utm_medium, utm_campaign, "
                      "utm_content, utm_city, utm_day, utm_month FROM v_vk_ads_latest ORDER BY d")
        self.assertEqual([(r["d"], int(r["impressions"]), int(r["clicks"]), r["spent"]) for r in rows],
                         [("2025-11-01", 1200, 7, "150.00"), ("2025-11-03", 640, 2, "75.50")])
        r = rows[0]
        self.assertEqual((str(r["account_id"]), str(r["campaign_id"]), str(r["ad_group_id"]), str(r["ad_id"])),
                         ("1900001234", "1012345", "0", "52345678"))
        self.assertEqual(r["campaign_name"], 'Rock & Roll "Live"')
        self.assertEqual((r["utm_source"], r["utm_medium"], r["utm_campaign"], r["utm_content"]),
                         ("vk", "post", "rock_live", "spb_01_11"))
        self.assertEqual((r["utm_city"], int(r["utm_day"]), int(r["utm_month"])), ("spb", 1, 11))
        run = self.last_run("vk_ads")
        self.assertEqual((run["status"], int(run["rows_processed"])), ("success", 2))
        self.assertEqual(run["metrics"].get("api_slowdowns"), 1)
        md = self.scalar("SELECT toString(sum(spend_total)) FROM v_marketing_daily "
                         "WHERE d BETWEEN '2025-11-01' AND '2025-11-03'")
        self.assertEqual(Decimal(md), Decimal("225.50"))
        self.run_job("scripts/vk_ads.lua", *self.WINDOW)
        self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), "225.50")


class TestDirectRealFormat(RealFormatCase):
    WINDOW = ["--since", "2025-11-01", "--to", "2025-11-03"]

    def direct_secrets(self, **extra):
        values = {"DIRECT_BASE_URL": self.f.url + "/direct/json/v5", "DIRECT_TOKEN": "y0_fake-direct-token",
                  "DIRECT_LOGIN": "fake-client-login", "DIRECT_RETRY_BASE": "0.1",
                  "DIRECT_UTM_70123456": "utm_campaign=nutcracker&utm_content=msk_05_12"}
        values.update(extra)
        self.write_secret("direct", values)

    def serve_report(self, report="direct_report.tsv", offline=True):
        rules = [serve(r"/direct/json/v5/campaigns$", fixture("direct_campaigns.json"),
                       headers={"RequestId": "8695244274068608439", "Units": "10/20828/64000"})]
        if offline:
            # 201 queued, 202 still building (retryIn changes between polls), then the report.
            rules += [serve(r"/reports$", "", status=201, times=1,
                            headers={"retryIn": "1", "reportsInQueue": "1", "RequestId": "1"}),
                      serve(r"/reports$", "", status=202, times=1,
                            headers={"retryIn": "0", "reportsInQueue": "1", "RequestId": "2"})]
        rules.append(serve(r"/reports$", fixture(report), headers={"Content-Type": "text/tab-separated-values",
                                                                  "RequestId": "3", "Units": "10/20818/64000"}))
        self.f.faults(rules)

    def rows(self):
        return self.q("SELECT toString(stat_date) AS d, account_login, toString(campaign_id) AS cid, campaign_name, "
                      "toString(ad_group_id) AS gid, toString(ad_id) AS aid, impressions, clicks, "
                      "toString(cost) AS cost, utm_source, utm_medium, utm_campaign, utm_content, utm_city, utm_day, "
                      "utm_month FROM v_direct_latest ORDER BY d, aid")

    def test_report_lands_as_written(self):
        # By hand from direct_report.tsv: Cost micros / 1e6; "--" is 0; 64-bit-range ids kept exact;
        # names from Campaigns.get.
        self.direct_secrets()
        self.serve_report()
        self.run_job("scripts/direct.lua", *self.WINDOW)
        got = [(r["d"], r["cid"], r["gid"], r["aid"], int(r["impressions"]), int(r["clicks"]), r["cost"])
               for r in self.rows()]
        self.assertEqual(got, [
            ("2025-11-01", "70123456", "5234567890", "16171234567", 1520, 31, "2480.00"),
            ("2025-11-01", "70123457", "5234567891", "16171234568", 88, 0, "0.00"),
            ("2025-11-02", "70123456", "5234567890", "16171234567", 3, 0, "0.00"),
            ("2025-11-03", "70123456", "5234567890", "16171234569", 410, 12, "345.67"),
        ])
        r = self.rows()
        self.assertEqual(r[0]["campaign_name"], "Щелкунчик | Поиск")
        self.assertEqual(r[1]["campaign_name"], 'Бренд "Zakaz"')
        self.assertEqual((r[0]["account_login"], r[0]["utm_source"], r[0]["utm_medium"], r[0]["utm_campaign"],
                          r[0]["utm_content"], r[0]["utm_city"], int(r[0]["utm_day"]), int(r[0]["utm_month"])),
                         ("fake-client-login", "yandex", "cpc", "nutcracker", "msk_05_12", "msk", 5, 12))
        self.assertEqual((r[1]["utm_source"], r[1]["utm_campaign"]), ("yandex", ""))
        md = {x["d"]: Decimal(x["s"]) for x in self.q(
            "SELECT toString(d) AS d, toString(spend_total) AS s FROM v_marketing_daily "
            "WHERE d BETWEEN '2025-11-01' AND '2025-11-03' ORDER BY d")}
        self.assertEqual(md, {"2025-11-01": Decimal("2480.00"), "2025-11-02": Decimal("0"),
                              "2025-11-03": Decimal("345.67")})
        fr = self.q("SELECT toString(latest_date) AS l, total_rows FROM v_data_freshness WHERE source = 'direct'")[0]
        self.assertEqual((fr["l"], int(fr["total_rows"])), ("2025-11-03", 4))
        run = self.last_run("direct")
        self.assertEqual((run["status"], int(run["rows_processed"])), ("success", 4))
        self.assertEqual(run["metrics"].get("report_polls"), 2)
        # Same window again (this time the report is ready at once): nothing doubles.
        self.f.clear_faults()
        self.serve_report(offline=False)
        self.run_job("scripts/direct.lua", *self.WINDOW)
        tot = self.q("SELECT count() AS n, toString(sum(cost)) AS c, sum(impressions) AS i FROM v_direct_latest")[0]
        self.assertEqual((int(tot["n"]), tot["c"], int(tot["i"])), (4, "2825.67", 2021))

    def test_empty_report_zeroes_the_window(self):
        # Documented empty report: column line + "Total rows: 0". Rows loaded before are replaced by zeros.
        self.direct_secrets()
        self.serve_report(offline=False)
        self.run_job("scripts/direct.lua", *self.WINDOW)
        self.f.clear_faults()
        self.serve_report("direct_report_empty.tsv", offline=False)
        self.run_job("scripts/direct.lua", *self.WINDOW)
        tot = self.q("SELECT count() AS n, toString(sum(cost)) AS c, sum(impressions) AS i FROM v_direct_latest")[0]
        self.assertEqual((int(tot["n"]), tot["c"], int(tot["i"])), (4, "0.00", 0))
        run = self.last_run("direct")
        self.assertEqual(run["status"], "success")
        self.assertEqual(run["metrics"].get("rows_zeroed"), 4)  # every row had impressions


if __name__ == "__main__":
    unittest.main()
