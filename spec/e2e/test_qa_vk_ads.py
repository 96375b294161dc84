"""QA: scripts/vk_ads.lua against hand-made VK Ads v2 answers and faults (fake + ClickHouse)."""
import json
import os
import sys
import time
import unittest
import urllib.parse
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from test_vk_ads import VkCase, SCRIPT  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

DATA = datagen.generate()
DAYS = ["--since", "2025-11-03", "--to", "2025-11-05"]


class QaVk(VkCase):
    def test_numeric_spent_missing_days_and_token_without_expires_in(self):
        self.v2_secrets()
        bid = DATA["vk"]["banners"][0]["id"]
        self.f.faults([
            {"path": "oauth2/token.json$", "status": 200, "times": -1,
             "body": json.dumps({"access_token": "vkads-static-token", "token_type": "bearer"})},
            {"path": "statistics/banners/day.json", "status": 200, "times": -1, "body": json.dumps({"items": [
                {"id": bid, "rows": [{"date": "2025-11-03", "base": {"shows": 100, "clicks": 3, "spent": 86.4}},
                                     {"date": "2025-11-05", "base": {"shows": 7, "clicks": 0, "spent": 12}}],
                 "total": {"base": {}}}], "total": {"base": {}}})}])
        self.run_vk(*DAYS)
        got = {(r["d"], int(r["imp"]), int(r["clk"]), r["sp"]) for r in self.q(
            "SELECT toString(stat_date) AS d, impressions AS imp, clicks AS clk, toString(spent) AS sp "
            "FROM v_vk_ads_latest WHERE ad_id = %d" % bid)}
        # the day VK left out is written as a zero day
        self.assertEqual(got, {("2025-11-03", 100, 3, "86.40"), ("2025-11-04", 0, 0, "0.00"), ("2025-11-05", 7, 0, "12.00")})
        # the token without expires_in was used, and is reused by the next run rather than re-issued
        self.run_vk(*DAYS)

    def test_lists_without_count_are_read_to_the_end(self):
        data = json.loads(json.dumps(DATA))
        base = data["vk"]["banners"][0]
        for i in range(60):  # more than one page of 50
            clone = dict(base)
            clone["id"] = 9000000 + i
            data["vk"]["banners"].append(clone)
        self.f.control("/_fake/data", data)
        self.f.control("/_fake/config", {"vkads.omit_count": True})
        self.v2_secrets()
        self.run_vk(*DAYS)
        asked = set()
        for r in self.f.requests()["requests"]:
            if "statistics/banners/day.json" in r["path"]:
                for ids in urllib.parse.parse_qs(r.get("query") or "").get("id", []):
                    asked.update(i for i in ids.split(",") if i)
        want = {str(b["id"]) for b in data["vk"]["banners"]}
        self.assertEqual(want - asked, set())

    def test_5xx_mid_run_is_retried_and_a_persistent_one_fails_keeping_data(self):
        self.v2_secrets()
        self.f.faults([{"path": "statistics/banners/day.json", "status": 502, "body": "<html>bad gateway</html>",
                        "times": 1}])
        self.run_vk(*DAYS)
        before = self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest")
        self.assertNotEqual(before, "0.00")
        self.f.clear_faults()
        self.f.faults([{"path": "statistics/banners/day.json", "status": 500, "body": "oops", "times": -1}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("HTTP 500", r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), before)


    def test_a_value_that_is_not_a_number_fails_naming_object_day_and_field(self):
        self.v2_secrets()
        bid = DATA["vk"]["banners"][0]["id"]
        self.f.faults([{"path": "statistics/banners/day.json", "status": 200, "times": -1, "body": json.dumps({"items": [
            {"id": bid, "rows": [{"date": "2025-11-03", "base": {"shows": 100, "clicks": 3, "spent": "0E-8"}},
                                 {"date": "2025-11-04", "base": {"shows": "1 200", "clicks": 0, "spent": "1"}}]}]})}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("statistics/banners/day.json (own account): banner %d, 2025-11-04: base.shows not a whole number: "
                      "'1 200'" % bid, r.stderr)
        self.assertEqual(self.last_run()["status"], "error")

    def test_days_and_objects_vk_leaves_out_are_zeroed_on_reload(self):
        self.v2_secrets()
        self.run_vk(*DAYS)
        self.assertNotEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), "0.00")
        bid = DATA["vk"]["banners"][0]["id"]
        # VK now lists one banner and one day of it only: every other (banner, day) had no delivery
        self.f.faults([{"path": "statistics/banners/day.json", "status": 200, "times": -1, "body": json.dumps({"items": [
            {"id": bid, "rows": [{"date": "2025-11-04", "base": {"shows": 10, "clicks": 1, "spent": "5.5"}}]}]})}])
        self.run_vk(*DAYS)
        self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), "5.50")
        self.assertEqual(int(self.scalar("SELECT sum(impressions) FROM v_vk_ads_latest")), 10)
        self.assertEqual(int(self.scalar("SELECT count() FROM v_vk_ads_latest")), 12 * 3)
        self.assertEqual(self.last_run()["metrics"]["rows_zeroed"], 12 * 3 - 1)

    def test_statistics_answer_without_items_fails(self):
        self.v2_secrets()
        self.f.faults([{"path": "statistics/banners/day.json", "status": 200, "times": -1,
                        "body": json.dumps({"total": {"base": {}}})}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("the answer for 2025-11-03..2025-11-05 (12 banners from", r.stderr)
        self.assertIn("has no items list", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily"), "0")

    def test_a_list_page_cut_short_or_without_items_fails(self):
        data = json.loads(json.dumps(DATA))
        base = data["vk"]["banners"][0]
        for i in range(60):  # two pages of banners
            clone = dict(base)
            clone["id"] = 9000000 + i
            data["vk"]["banners"].append(clone)
        self.f.control("/_fake/data", data)
        self.v2_secrets()
        n = len(data["vk"]["banners"])
        self.f.faults([{"path": r"/banners\.json\?.*offset=50", "status": 200, "times": 1,
                        "body": json.dumps({"count": n, "offset": 50, "limit": 50, "items": []})}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("banners.json (own account): the page at offset 50 is empty, but count is %d" % n, r.stderr)
        self.f.clear_faults()
        self.f.faults([{"path": r"/ad_groups\.json", "status": 200, "times": 1, "body": json.dumps({"count": 6})}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("ad_groups.json (own account): the page at offset 0 has no items list", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily"), "0")
    def test_switching_the_level_replaces_figures_rather_than_adding_to_them(self):
        # Each level writes other keys (banner rows, ad-group rows with ad_id 0, plan rows with both
        # 0): a run at a new level used to leave the old level's rows in every view, doubling spend.
        self.v2_secrets()
        self.run_vk(*DAYS)
        total = self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest")
        clicks = self.scalar("SELECT sum(clicks) FROM v_vk_ads_latest")
        self.assertNotEqual(total, "0.00")
        daily = "SELECT toString(sum(spend_total)) FROM v_marketing_daily WHERE d BETWEEN '2025-11-03' AND '2025-11-05'"
        self.assertEqual(Decimal(self.scalar(daily)), Decimal(total))
        for level in ("ad_groups", "ad_plans", "banners"):
            with self.subTest(level=level):
                r = self.run_vk(*DAYS, "--level", level)
                self.assertIn("rows written earlier at another level than %s are zeroed" % level, r.stderr)
                self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), total)
                self.assertEqual(self.scalar("SELECT sum(clicks) FROM v_vk_ads_latest"), clicks)
                self.assertEqual(Decimal(self.scalar(daily)), Decimal(total))
                self.assertGreater(self.last_run()["metrics"]["rows_zeroed"], 0)
        # the same level again finds nothing to zero
        r = self.run_vk(*DAYS)
        self.assertNotIn("another level", r.stderr)
        self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), total)

    def test_ids_and_client_names_from_the_settings_are_not_masked_in_errors(self):
        # VK_ACCOUNT_IDS, VK_ADS_PLAN_IDS and VK_ADS_AGENCY_CLIENT_NAME used to count as secrets, so
        # an error about the one id or client they held said "ad plan ***", "agency client ***".
        self.v2_secrets(VK_ADS_PLAN_IDS="9100999")
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("VK Ads: ad plan 9100999 is not in own account (unknown id or no access)", r.stderr)
        self.v2_secrets(VK_ADS_AGENCY_CLIENT_NAME="agency_client_9", VK_ADS_CLIENT_SECRET="wrong-secret-value")
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("VK Ads token for agency client agency_client_9: ", r.stderr)
        self.assertNotIn("wrong-secret-value", r.stdout + r.stderr)

    def test_errors_name_the_account_client_and_dates_they_are_about(self):
        # a refusal that is not about an id names the dates of the chunk
        self.v2_secrets(VK_ADS_AGENCY_CLIENT_NAME="agency_client_1")
        self.f.faults([{"path": "statistics/banners/day.json", "status": 400, "times": -1, "body": json.dumps(
            {"error": {"code": "ERR_WRONG_DATE", "message": "Daily stats are available for the last 365 days"}})}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("VK Ads statistics/banners/day.json (agency client agency_client_1, 2025-11-03..2025-11-05): "
                      "HTTP 400 ERR_WRONG_DATE: Daily stats are available for the last 365 days", r.stderr)
        # legacy: every call names the account (several load at once), statistics also the dates
        self.f.clear_faults()
        self.write_secret("vk", {"VK_API_URL": self.f.url + "/vkapi/method", "VK_TOKEN": "vk1.a.fake-user-token",
                                 "VK_ACCOUNT_IDS": "1900001234,1900005678", "VK_API_RPS": "50"})
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("VK API ads.getCampaigns (account 1900005678) failed: error 600", r.stderr)
        self.write_secret("vk", {"VK_API_URL": self.f.url + "/vkapi/method", "VK_TOKEN": "vk1.a.fake-user-token",
                                 "VK_ACCOUNT_IDS": "1900001234", "VK_API_RPS": "50"})
        self.f.faults([{"path": "ads.getStatistics", "api_error": 601, "times": -1}])
        r = self.run_vk(*DAYS, ok=False)
        self.assertIn("VK API ads.getStatistics (account 1900001234, 2025-11-03..2025-11-05) failed: error 601", r.stderr)
        self.assertNotIn("vk1.a.fake-user-token", r.stdout + r.stderr)

    def test_settings_that_are_not_numbers_fail_naming_them(self):
        # VK_DAYS_BACK=abc used to load a single day (today) and report success; VK_ADS_RPS=abc lifted
        # the rate limit, VK_ADS_ACCOUNT_ID=abc wrote account 0, VK_API_RETRY_PAUSE=x crashed at the
        # first pause. Each now fails before anything is fetched, naming the setting.
        for name, value in (("VK_DAYS_BACK", "abc"), ("VK_DAYS_BACK", "0"), ("VK_ADS_RPS", "abc"),
                            ("VK_ADS_ACCOUNT_ID", "12x"), ("VK_API_RETRY_PAUSE", "x"), ("VK_TIMEOUT", "0")):
            with self.subTest(name=name, value=value):
                self.v2_secrets(**{name: value})
                self.f.control("/_fake/requests", method="DELETE")
                r = self.run_vk(ok=False)
                self.assertIn("%s must be a whole number" % name if name in ("VK_DAYS_BACK", "VK_ADS_ACCOUNT_ID",
                                                                             "VK_TIMEOUT")
                              else "%s must be a number" % name, r.stderr)
                self.assertIn("(got '%s')" % value, r.stderr)
                self.assertEqual(self.f.control("/_fake/requests?path=vkads")["requests"], [])
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily"), "0")
        self.v2_secrets(VK_DAYS_BACK="3")
        self.run_vk()
        self.assertEqual(self.scalar("SELECT count(DISTINCT stat_date) FROM fact_vk_ads_daily"), "3")

    def test_vk_timeout_bounds_a_hanging_api(self):
        self.v2_secrets(VK_TIMEOUT="1")
        self.f.faults([{"path": "statistics/banners/day.json", "action": "hang", "times": -1}])
        t0 = time.monotonic()
        r = self.run_vk(*DAYS, ok=False)
        # 4 attempts of 1 s plus backoff, not 4 of the default 60 s
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn("VK Ads statistics/banners/day.json", r.stderr)
        self.assertIn("after 4 attempts", r.stderr)

    def test_legacy_token_under_the_original_systems_other_names(self):
        for old in ("VK_API_TOKEN", "VK_ACCESS_TOKEN"):
            with self.subTest(old=old):
                self.write_secret("vk", {"VK_API_URL": self.f.url + "/vkapi/method", old: "vk1.a.fake-user-token",
                                         "VK_ACCOUNT_IDS": "1900001234", "VK_API_RETRY_PAUSE": "0.2",
                                         "VK_API_RPS": "50"})
                r = self.run_vk(*DAYS)
                self.assertIn("%s is an old name: rename it to VK_TOKEN" % old, r.stderr)
                self.assertNotIn("vk1.a.fake-user-token", r.stdout + r.stderr)
                self.assertEqual(self.last_run()["message"][:7], "legacy ")
        self.assertNotEqual(self.scalar("SELECT count() FROM v_vk_ads_latest"), "0")


if __name__ == "__main__":
    unittest.main()
