"""scripts/vk_ads.lua end to end: the real zhost against the VK fakes (spec/fakes) and a real ClickHouse.

Expected figures come from spec/fakes/datagen.py (the data set the fake serves by default), computed
there independently of the loader.
"""
import json
import os
import stat
import sys
import time
import unittest
import urllib.parse
import urllib.request
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

sys.path.insert(0, zhtest.FAKES)
import datagen  # noqa: E402

SCRIPT = "scripts/vk_ads.lua"
WINDOW = ["--since", "2025-11-01", "--to", "2025-11-14"]
EXPECTED = datagen.expected(datagen.generate())["vk"]


def dec(x):
    return Decimal(str(x))


class VkCase(zhtest.ZhostCase):
    def setUp(self):
        super().setUp()
        self.f = self.fake()

    def v2_secrets(self, **extra):
        values = {"VK_ADS_BASE_URL": self.f.url + "/vkads", "VK_ADS_CLIENT_ID": "vk-client-id",
                  "VK_ADS_CLIENT_SECRET": "vk-client-secret", "VK_ADS_RPS": "50"}
        values.update(extra)
        self.write_secret("vk", values)

    def legacy_secrets(self, **extra):
        values = {"VK_API_URL": self.f.url + "/vkapi/method", "VK_TOKEN": "vk1.a.fake-user-token",
                  "VK_ACCOUNT_IDS": "1900001234", "VK_API_RETRY_PAUSE": "0.2", "VK_API_RPS": "50"}
        values.update(extra)
        self.write_secret("vk", values)

    def run_vk(self, *args, ok=True):
        r = self.zhost("run", SCRIPT, *args)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        else:
            self.assertNotEqual(r.returncode, 0, r.stderr)
        return r

    def check_damaged_answer_asked_again(self, once, always, message):
        """A 200 mangled on the way (the fake's `malformed`: half the body) once at `once` is asked
        for again; mangled for good at `always`, it fails the run naming it, figures kept."""
        self.f.faults([{"path": once, "action": "malformed", "times": 1}])
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["api_retries"], 1)
        self.f.clear_faults()
        self.f.faults([{"path": always, "action": "malformed", "times": -1}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn(message, r.stderr)
        self.assertIn("gave up after 4 attempts", r.stderr)
        self.assertEqual(self.daily(), self.expected_daily(), "figures kept")

    def daily(self, where="1"):
        """Per (date, campaign) figures from the deduplicated view, non-zero days only."""
        rows = self.q("SELECT toString(stat_date) AS d, campaign_id, sum(impressions) AS imp, sum(clicks) AS clk, "
                      "toString(sum(spent)) AS sp FROM v_vk_ads_latest WHERE %s GROUP BY d, campaign_id "
                      "HAVING imp > 0 OR clk > 0 OR sum(spent) > 0 ORDER BY d, campaign_id" % where)
        return [(r["d"], int(r["campaign_id"]), int(r["imp"]), int(r["clk"]), dec(r["sp"])) for r in rows]

    def expected_daily(self, exp=None):
        exp = exp or EXPECTED
        return [(e["date"], e["campaign_id"], e["impressions"], e["clicks"], dec(e["spent"])) for e in exp["daily"]
                if e["impressions"] or e["clicks"] or dec(e["spent"])]

    def token_requests(self, grant):
        reqs = self.f.control("/_fake/requests?path=" + urllib.parse.quote("oauth2/token.json$"))["requests"]
        return [r for r in reqs if ("grant_type=" + grant) in (r.get("body") or "")]

    def last_run(self):
        runs = self.runs("vk_ads")
        self.assertTrue(runs)
        run = runs[-1]
        run["metrics"] = json.loads(run["metrics"] or "{}")
        return run


class TestVkAdsV2(VkCase):
    def test_exact_figures_utm_and_reload_changes_nothing(self):
        self.v2_secrets()
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        # per banner and day, spend exactly as the decimal strings summed
        rows = self.q("SELECT toString(stat_date) AS d, ad_id, impressions, clicks, toString(spent) AS sp "
                      "FROM v_vk_ads_latest WHERE impressions > 0 ORDER BY d, ad_id")
        got = [(r["d"], int(r["ad_id"]), int(r["impressions"]), int(r["clicks"]), dec(r["sp"])) for r in rows]
        want = [(e["date"], e["banner_id"], e["impressions"], e["clicks"], dec(e["spent"]))
                for e in EXPECTED["banner_daily"] if e["impressions"]]
        self.assertEqual(got, want)
        # every day of the window is written, zero days too: 12 banners x 14 days
        self.assertEqual(int(self.scalar("SELECT count() FROM v_vk_ads_latest")), 12 * 14)
        # keys: plan -> group -> banner from the lists; names; UTM from the banner link
        r = self.q("SELECT campaign_id, ad_group_id, ad_id, campaign_name, utm_source, utm_medium, utm_campaign, "
                   "utm_content, utm_term, utm_city, utm_day, utm_month, city FROM v_vk_ads_latest "
                   "WHERE ad_id = 8372482 LIMIT 1")[0]
        self.assertEqual((int(r["campaign_id"]), int(r["ad_group_id"])), (101, 5001))
        self.assertEqual(r["campaign_name"], "Кампания 1 / зима")
        self.assertEqual((r["utm_source"], r["utm_medium"], r["utm_campaign"], r["utm_term"]),
                         ("vk", "cpc", "plan_101", "8372482"))
        city, day, month = r["utm_content"].split("_")
        self.assertEqual((r["utm_city"], int(r["utm_day"]), int(r["utm_month"])), (city, int(day), int(month)))
        self.assertEqual(r["city"], "Москва")  # msk through dim_city_alias
        run = self.last_run()
        self.assertEqual(run["status"], "success")
        self.assertEqual(int(run["rows_processed"]), 168)
        self.assertEqual(run["metrics"]["pages"], 3)
        self.assertEqual(run["metrics"]["mode"], "v2")
        # lists are paged in id order, so objects created or edited meanwhile cannot shift a page
        lists = self.f.control("/_fake/requests?path=" + urllib.parse.quote("(ad_plans|ad_groups|banners)\\.json"))
        self.assertTrue(lists["requests"])
        for q in lists["requests"]:
            self.assertEqual(q["query_params"].get("sorting"), ["id"], q["raw_path"])

        # re-load an overlapping window and the whole window again: no figure changes
        self.run_vk("--since", "2025-11-05", "--to", "2025-11-10")
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(int(self.scalar("SELECT count() FROM v_vk_ads_latest")), 12 * 14)
        self.assertEqual(self.scalar("SELECT toString(sum(spent)) FROM v_vk_ads_latest"), EXPECTED["totals"]["spent"])

        # the token is persisted (0600, next to the secrets) and reused: one client_credentials grant in 3 runs
        self.assertEqual(len(self.token_requests("client_credentials")), 1)
        cache = os.path.join(self.secrets, ".vk_ads_token.vk-client-id.json")
        self.assertEqual(stat.S_IMODE(os.stat(cache).st_mode), 0o600)
        with open(cache) as fh:
            self.assertTrue(json.load(fh)["refresh_token"])

    def test_dry_run_writes_nothing(self):
        self.v2_secrets()
        r = self.run_vk(*WINDOW, "--dry-run")
        self.assertIn("fact_vk_ads_daily", r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily"), "0")

    def test_ad_plan_level(self):
        self.v2_secrets()
        self.run_vk(*WINDOW, "--level", "ad_plans")
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.scalar("SELECT count() FROM v_vk_ads_latest WHERE ad_group_id != 0 OR ad_id != 0"), "0")
        reqs = self.f.control("/_fake/requests?path=statistics")["requests"]
        self.assertTrue(reqs and all("/statistics/ad_plans/day.json" in r["path"] for r in reqs))
        # plan-level UTM keeps what the plan's banners agree on
        r = self.q("SELECT utm_source, utm_campaign, utm_term FROM v_vk_ads_latest WHERE campaign_id = 101 LIMIT 1")[0]
        self.assertEqual((r["utm_source"], r["utm_campaign"], r["utm_term"]), ("vk", "plan_101", ""))

    def test_expired_token_is_refreshed_mid_run(self):
        self.v2_secrets()
        self.f.faults([{"path": "statistics/banners/day", "api_error": "expired_token", "times": 1}])
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(len(self.token_requests("refresh_token")), 1)
        self.assertEqual(len(self.token_requests("client_credentials")), 1)
        self.assertEqual(self.last_run()["metrics"]["token_refreshes"], 1)

    def test_token_expired_between_runs_is_refreshed_not_reissued(self):
        self.v2_secrets()
        self.run_vk("--since", "2025-11-01", "--to", "2025-11-02")
        self.f.control("/_fake/clock", {"advance_s": 2 * 86400})  # the cached token is dead upstream
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(len(self.token_requests("client_credentials")), 1)
        self.assertEqual(len(self.token_requests("refresh_token")), 1)

    def test_five_token_cap_deletes_tokens_once(self):
        self.v2_secrets()
        for _ in range(5):  # other workers hold the five live tokens
            body = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "vk-client-id",
                                           "client_secret": "vk-client-secret"}).encode()
            with urllib.request.urlopen(self.f.url + "/vkads/api/v2/oauth2/token.json", body, timeout=10) as r:
                self.assertEqual(r.status, 200)
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        deletes = self.f.control("/_fake/requests?path=" + urllib.parse.quote("token/delete.json"))["requests"]
        self.assertEqual(len(deletes), 1)
        self.assertIn("client_id=vk-client-id", deletes[0]["body"])
        self.assertEqual(len(self.token_requests("client_credentials")), 5 + 2)  # ours: refused, then issued
        self.assertEqual(self.last_run()["metrics"]["token_deletes"], 1)

    def test_forbidden_id_fails_naming_it(self):
        self.v2_secrets()
        # VK refuses any statistics request that contains banner 8372483, without naming it
        self.f.faults([{"path": r"statistics/banners/day\.json\?.*8372483", "api_error": "ERR_ACCESS_DENIED",
                        "times": -1}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("access denied to banner 8372483 (ERR_ACCESS_DENIED", r.stderr)
        run = self.last_run()
        self.assertEqual(run["status"], "error")
        self.assertIn("banner 8372483", run["message"])
        self.assertNotIn("8372482", run["message"])

    def test_unknown_id_named_by_vk(self):
        self.v2_secrets()
        self.f.faults([{"path": r"statistics/banners/day", "status": 400, "times": 1,
                        "body": '{"error":{"message":"Wrong banners ids: 8372490","code":"ERR_WRONG_BANNERS"}}'}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("unknown or foreign banner 8372490 (ERR_WRONG_BANNERS", r.stderr)

    def test_unknown_plan_option_fails_naming_it(self):
        self.v2_secrets()
        r = self.run_vk(*WINDOW, "--plans", "101,999", ok=False)
        self.assertIn("ad plan 999 is not in own account", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM fact_vk_ads_daily"), "0")
        # and a valid subset loads only that plan
        self.run_vk(*WINDOW, "--plans", "102")
        self.assertEqual(self.daily(), [e for e in self.expected_daily() if e[1] == 102])

    def test_429_with_rate_limit_headers_is_retried(self):
        self.v2_secrets()
        self.f.faults([{"path": "statistics/banners/day", "status": 429, "times": 2,
                        "headers": {"X-RateLimit-RPS-Limit": "10", "X-RateLimit-RPS-Remaining": "0"},
                        "body": '{"error":{"code":"RATE_LIMIT_EXCEEDED","message":"Rate limit exceeded"}}'}])
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        m = self.last_run()["metrics"]
        self.assertGreaterEqual(m["retries"], 2)
        stats = self.f.control("/_fake/requests?path=statistics")["requests"]
        self.assertEqual(len(stats), 3)

    def test_statistics_answer_damaged_once_is_asked_again_then_named(self):
        # as Direct's loader does; the statistics are VK's to give again
        self.v2_secrets(VK_API_RETRY_PAUSE="0.1")
        self.check_damaged_answer_asked_again("statistics/banners/day", "statistics/banners/day",
                                              "the 200 answer is not valid JSON")

    def test_real_rps_limit_is_respected(self):
        # the fake allows 2 requests per second; the script's own limit keeps it under
        self.f.control("/_fake/config", {"vkads.rps_limit": 2})
        self.v2_secrets(VK_ADS_RPS="1.5")
        self.run_vk(*WINDOW, "--level", "ad_groups")
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["retries"], 0)


class TestVkLegacy(VkCase):
    def test_exact_figures_token_only_in_post_bodies(self):
        self.legacy_secrets()
        r = self.run_vk(*WINDOW)  # mode chosen automatically: only VK_TOKEN is configured
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["mode"], "legacy")
        reqs = self.f.control("/_fake/requests?path=/vkapi/")["requests"]
        self.assertTrue(reqs)
        for q in reqs:
            self.assertEqual(q["method"], "POST")
            self.assertNotIn("fake-user-token", q["raw_path"])
            self.assertIn("access_token=vk1.a.fake-user-token", q["body"])
        self.assertNotIn("fake-user-token", r.stderr + r.stdout)
        row = self.q("SELECT account_id, ad_group_id, utm_campaign, utm_city FROM v_vk_ads_latest WHERE ad_id = 8372482 "
                     "LIMIT 1")[0]
        self.assertEqual((int(row["account_id"]), int(row["ad_group_id"]), row["utm_campaign"]), (1900001234, 0, "plan_101"))
        # reload: same figures
        self.run_vk("--since", "2025-11-03", "--to", "2025-11-09")
        self.assertEqual(self.daily(), self.expected_daily())

    def test_answer_damaged_once_is_asked_again_then_named(self):
        self.legacy_secrets()
        self.check_damaged_answer_asked_again("ads.getStatistics", "ads.getCampaigns",
                                              "VK API ads.getCampaigns (account 1900001234): the 200 answer is not valid JSON")

    def test_account_with_more_ads_than_getads_returns(self):
        # dev.vk.com: ads.getAds (and getAdsLayout) return at most 2000 ads, silently; limit/offset
        # only work for one campaign. With include_deleted=1 an old cabinet passes 2000 easily, and
        # every ad past the cap lost its statistics without an error. The fake cuts at 5 here (12
        # ads in 3 campaigns); VK_API_ADS_CAP tells the loader the same cap.
        self.f.control("/_fake/config", {"vkapi.ads_cap": 5})
        self.legacy_secrets(VK_API_ADS_CAP="5")
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        n = self.scalar("SELECT uniqExact(ad_id) FROM v_vk_ads_latest")
        self.assertEqual(int(n), 12)

    def test_day_that_lost_its_figures_is_zeroed_on_reload(self):
        self.legacy_secrets()
        self.run_vk(*WINDOW)
        data = self.f.control("/_fake/data")
        bid, day = "8372482", "2025-11-03"
        if day not in data["vk"]["stats"][bid]:
            day = sorted(data["vk"]["stats"][bid])[0]
        del data["vk"]["stats"][bid][day]
        self.f.control("/_fake/data?merge=1", {"vk": data["vk"]})
        self.run_vk("--since", "2025-11-01", "--to", "2025-11-07")
        row = self.q("SELECT impressions, toString(spent) AS s FROM v_vk_ads_latest WHERE ad_id = %s AND stat_date = '%s'"
                     % (bid, day))
        self.assertEqual((int(row[0]["impressions"]), dec(row[0]["s"])), (0, Decimal(0)))
        self.assertEqual(self.daily(), self.expected_daily(datagen.expected(data)["vk"]))

    def test_flood_control_is_retried(self):
        self.legacy_secrets()
        self.f.faults([{"path": "ads.getStatistics", "api_error": 9, "times": 2}])
        t0 = time.time()
        self.run_vk(*WINDOW)
        self.assertGreaterEqual(time.time() - t0, 0.2 + 0.4)  # paused 0.2 s, then 0.4 s
        self.assertEqual(self.daily(), self.expected_daily())
        self.assertEqual(self.last_run()["metrics"]["api_slowdowns"], 2)

    def test_601_stops_with_the_message(self):
        self.legacy_secrets()
        self.f.faults([{"path": "ads.getStatistics", "api_error": 601, "times": -1}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("error 601: Permission denied. You have requested too many actions this day", r.stderr)
        self.assertIn("retry tomorrow", r.stderr)
        stats = self.f.control("/_fake/requests?path=ads.getStatistics")["requests"]
        self.assertEqual(len(stats), 1)  # no hammering after 601
        self.assertEqual(self.last_run()["status"], "error")

    def test_bad_token_is_an_auth_error(self):
        self.legacy_secrets(VK_TOKEN="wrong-token")
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("error 5: User authorization failed", r.stderr)
        self.assertIn("check VK_TOKEN", r.stderr)
        self.assertNotIn("wrong-token", r.stderr)


    def test_answer_without_response_fails_and_zeroes_nothing(self):
        self.legacy_secrets()
        self.run_vk(*WINDOW)
        self.f.faults([{"path": "ads.getStatistics", "status": 200, "times": -1, "body": "{}"}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("VK API ads.getStatistics (account 1900001234, 2025-11-01..2025-11-14): the answer has no response "
                      "list and no error: {}", r.stderr)
        self.assertEqual(self.daily(), self.expected_daily())
        self.f.clear_faults()
        self.f.faults([{"path": "ads.getAds$", "status": 200, "times": -1, "body": '{"response":null}'}])
        r = self.run_vk(*WINDOW, ok=False)
        self.assertIn("VK API ads.getAds (account 1900001234): the answer has no response list and no error", r.stderr)
        self.assertEqual(self.daily(), self.expected_daily())

    def test_html_escaped_links_and_names_are_unescaped(self):
        self.f.control("/_fake/config", {"vkapi.html_escape": True})
        data = self.f.control("/_fake/data")
        data["vk"]["ad_plans"][0]["name"] = 'Rock & Roll "Зима"'
        self.f.control("/_fake/data?merge=1", {"vk": data["vk"]})
        self.legacy_secrets()
        self.run_vk(*WINDOW)
        self.assertEqual(self.daily(), self.expected_daily())
        row = self.q("SELECT campaign_name, utm_source, utm_medium, utm_campaign, utm_term FROM v_vk_ads_latest "
                     "WHERE ad_id = 8372482 LIMIT 1")[0]
        self.assertEqual((row["campaign_name"], row["utm_source"], row["utm_medium"], row["utm_campaign"],
                          row["utm_term"]), ('Rock & Roll "Зима"', "vk", "cpc", "plan_101", "8372482"))

if __name__ == "__main__":
    unittest.main()
