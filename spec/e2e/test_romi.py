"""ROMI views on a small hand-checked data set: QTickets sales staging rows with UTM (inserted here), VK Ads
and Direct spend loaded by the real loaders from a tiny fake data set. Every expected figure below is worked
out by hand in the comments.
"""
import json
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402

VER = 1762154100000


def order(oid, sale_ts, utm, payed=1, deleted_at=None):
    src, med, camp, cont, term = utm
    return {"order_id": oid, "event_id": "E1", "payed": payed, "payed_at": sale_ts if payed else None,
            "created_at": sale_ts, "deleted_at": deleted_at, "sale_ts": sale_ts, "price": 0, "original_price": 0,
            "currency": "RUB", "utm_source": src, "utm_medium": med, "utm_campaign": camp, "utm_content": cont,
            "utm_term": term, "client_id": "1", "promo_code_id": "", "baskets_total": 1, "baskets_live": 1, "_ver": VER}


def basket(bid, oid, sale_ts, price, qty, refunded_at=None):
    return {"basket_id": bid, "order_id": oid, "event_id": "E1", "show_id": "S1", "price": price,
            "original_price": price, "quantity": qty, "deleted_at": None, "refunded_at": refunded_at,
            "refunded_amount": None, "sale_ts": sale_ts, "_ver": VER}


VK_UTM = ("vk", "cpc", "plan_101", "msk_19_11", "")
YA_UTM = ("yandex", "cpc", "promo_24089", "msk_05_11", "")

ORDERS = [
    order("O1", "2025-11-03 12:00:00", VK_UTM),                                  # 2 x 1500 live, 1 x 990.50 refunded
    order("O2", "2025-11-03 18:00:00", ("VK", "CPC", "Plan_101", "MSK_19_11", "")),  # case differs: same key
    order("O3", "2025-11-03 20:00:00", YA_UTM),                                  # 3 x 800
    order("O4", "2025-11-04 10:00:00", ("", "", "", "", "")),                    # no UTM: 'unknown'
    order("O5", "2025-11-03 11:00:00", VK_UTM, payed=0),                         # unpaid: not a sale
    order("O6", "2025-11-03 11:30:00", VK_UTM, deleted_at="2025-11-03 13:00:00"),  # cancelled: not a sale
]
BASKETS = [
    basket("B1", "O1", "2025-11-03 12:00:00", 1500, 2),
    basket("B2", "O1", "2025-11-03 12:00:00", 990.50, 1, refunded_at="2025-11-05 09:00:00"),
    basket("B3", "O2", "2025-11-03 18:00:00", 1222.03, 1),
    basket("B4", "O3", "2025-11-03 20:00:00", 800, 3),
    basket("B5", "O4", "2025-11-04 10:00:00", 500, 1),
    basket("B6", "O5", "2025-11-03 11:00:00", 10000, 1),
    basket("B7", "O6", "2025-11-03 11:30:00", 7000, 1),
]
EVENT = {"event_id": "E1", "event_name": "Шоу", "city": "Москва", "city_id": "1", "place_name": "ДК",
         "start_date": "2025-11-19", "end_date": "2025-11-19", "tickets_total": None, "tickets_left": None,
         "is_active": 1, "is_deleted": 0, "currency": "RUB", "_ver": VER}

# Spend. VK: banner 1 links to the msk_19_11 campaign, banner 2 to spb_20_11 (no sales at all).
LINK = "https://msk.qtickets.events/1?utm_source=vk&utm_medium=cpc&utm_campaign=plan_101&utm_content=%s"
VK_DATA = {
    "account_id": 1900001234,
    "ad_plans": [{"id": 101, "name": "Осень", "status": "active"}],
    "ad_groups": [{"id": 5001, "name": "Группа", "status": "active", "ad_plan_id": 101}],
    "banners": [
        {"id": 1, "ad_group_id": 5001, "campaign_id": 5001, "status": "active", "name": "b1",
         "urls": {"primary": {"id": 11, "url": LINK % "msk_19_11"}}},
        {"id": 2, "ad_group_id": 5001, "campaign_id": 5001, "status": "active", "name": "b2",
         "urls": {"primary": {"id": 12, "url": LINK % "spb_20_11"}}},
    ],
    "stats": {
        "1": {"2025-11-03": {"shows": 1000, "clicks": 10, "goals": 0, "spent": "1000.50"},
              "2025-11-04": {"shows": 500, "clicks": 5, "goals": 0, "spent": "250.25"}},
        "2": {"2025-11-03": {"shows": 300, "clicks": 3, "goals": 0, "spent": "99.99"}},
    },
}
# Direct: one campaign mapped to the yandex UTM by DIRECT_UTM_555; 600,000,000 micros = 600.00 roubles.
DIRECT_DATA = {
    "login": "fake-client-login",
    "campaigns": [{"Id": 555, "Name": "Поиск", "State": "ON", "Status": "ACCEPTED", "Type": "TEXT_CAMPAIGN"}],
    "ad_groups": [{"Id": 7, "CampaignId": 555, "Name": "g"}],
    "stats": [{"Date": "2025-11-03", "CampaignId": 555, "AdGroupId": 7, "AdId": 9, "Impressions": 100, "Clicks": 4,
               "Cost": 600000000, "Conversions": None}],
}


class TestRomi(zhtest.ZhostCase):
    def insert(self, table, rows):
        data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
        zhtest.ch("INSERT INTO %s FORMAT JSONEachRow" % table, database=self.db, data=data)

    def test_romi_views_by_hand(self):
        self.insert("dim_events", [EVENT])
        self.insert("stg_qtickets_api_orders_raw", ORDERS)
        self.insert("stg_qtickets_api_baskets_raw", BASKETS)
        f = self.fake("--set", "direct.retry_in=[0]")
        f.control("/_fake/data?merge=1", {"vk": VK_DATA, "direct": DIRECT_DATA})
        self.write_secret("vk", {"VK_ADS_BASE_URL": f.url + "/vkads", "VK_ADS_CLIENT_ID": "vk-client-id",
                                 "VK_ADS_CLIENT_SECRET": "vk-client-secret"})
        self.write_secret("direct", {"DIRECT_BASE_URL": f.url + "/direct/json/v5", "DIRECT_TOKEN": "y0_fake-direct-token",
                                     "DIRECT_LOGIN": "fake-client-login",
                                     "DIRECT_UTM_555": "utm_campaign=promo_24089&utm_content=msk_05_11"})
        for script in ("scripts/vk_ads.lua", "scripts/direct.lua"):
            r = self.zhost("run", script, "--since", "2025-11-03", "--to", "2025-11-04")
            self.assertEqual(r.returncode, 0, r.stderr)

        rows = self.q("SELECT toString(d) AS d, utm_source, utm_medium, utm_campaign, utm_content, utm_term, "
                      "toString(revenue) AS rev, tickets_sold, toString(spend) AS sp, roas FROM v_romi_daily "
                      "ORDER BY d, utm_source, utm_content")
        got = [(r["d"], r["utm_source"], r["utm_medium"], r["utm_campaign"], r["utm_content"], r["utm_term"],
                Decimal(r["rev"]), int(r["tickets_sold"]), Decimal(r["sp"]), r["roas"]) for r in rows]
        want = [
            # 11-03 unknown: nothing (O5 unpaid, O6 cancelled carry the vk UTM and are not sales anyway)
            # 11-03 vk msk_19_11: O1 2 x 1500 (B2 refunded, not revenue) + O2 1222.03 (upper-case UTM, same key)
            #   revenue 4222.03, tickets 3, spend banner 1 = 1000.50, roas 4222.03 / 1000.50 = 4.21992... -> 4.2199
            ("2025-11-03", "vk", "cpc", "plan_101", "msk_19_11", "", Decimal("4222.03"), 3, Decimal("1000.50"), 4.2199),
            # 11-03 vk spb_20_11: spend only (banner 2, 99.99): revenue 0, roas 0
            ("2025-11-03", "vk", "cpc", "plan_101", "spb_20_11", "", Decimal("0"), 0, Decimal("99.99"), 0),
            # 11-03 yandex: O3 3 x 800 = 2400 against Direct 600.00 -> roas 4
            ("2025-11-03", "yandex", "cpc", "promo_24089", "msk_05_11", "", Decimal("2400"), 3, Decimal("600"), 4),
            # 11-04 unknown: O4 500, no spend -> roas NULL
            ("2025-11-04", "unknown", "", "", "", "", Decimal("500"), 1, Decimal("0"), None),
            # 11-04 vk msk_19_11: spend 250.25 only
            ("2025-11-04", "vk", "cpc", "plan_101", "msk_19_11", "", Decimal("0"), 0, Decimal("250.25"), 0),
            # 11-04 vk spb_20_11: VK lists the zero day of banner 2 (0 spend) -> a zero row
            ("2025-11-04", "vk", "cpc", "plan_101", "spb_20_11", "", Decimal("0"), 0, Decimal("0"), None),
        ]
        self.assertEqual(got, want)

        # v_marketing_daily: 11-03 revenue 4222.03 + 2400 = 6622.03; spend 1000.50 + 99.99 + 600 = 1700.49;
        # romi = 6622.03 / 1700.49 = 3.89420... -> 3.8942. 11-04: 500 against 250.25 -> 1.998 (1.99800...)
        rows = self.q("SELECT toString(d) AS d, toString(net_revenue) AS r, toString(spend_total) AS s, romi "
                      "FROM v_marketing_daily ORDER BY d")
        self.assertEqual([(x["d"], Decimal(x["r"]), Decimal(x["s"]), x["romi"]) for x in rows],
                         [("2025-11-03", Decimal("6622.03"), Decimal("1700.49"), 3.8942),
                          ("2025-11-04", Decimal("500"), Decimal("250.25"), 1.998)])

        # v_marketing_costs_daily per source
        rows = self.q("SELECT toString(d) AS d, source, sum(impressions) AS i, sum(clicks) AS c, toString(sum(spend)) AS s "
                      "FROM v_marketing_costs_daily GROUP BY d, source ORDER BY d, source")
        self.assertEqual([(x["d"], x["source"], int(x["i"]), int(x["c"]), Decimal(x["s"])) for x in rows],
                         [("2025-11-03", "direct", 100, 4, Decimal("600")),
                          ("2025-11-03", "vk_ads", 1300, 13, Decimal("1100.49")),
                          ("2025-11-04", "vk_ads", 500, 5, Decimal("250.25"))])

        # bi.v_marketing_roi_daily per (d, city): utm_city msk/spb canonicalised through dim_city_alias.
        # 11-03 Москва: revenue 6622.03, tickets 6, spend 1000.50 + 600 = 1600.50, clicks 10 + 4 = 14
        #   roas 6622.03 / 1600.50 = 4.13747..., cpc 1600.50 / 14 = 114.32..., cpt 1600.50 / 6 = 266.75
        rows = zhtest.ch_rows("SELECT toString(d) AS d, city, toString(revenue) AS r, tickets_sold, clicks, "
                              "toString(spend) AS s, roas, cpc, cpt FROM %s.v_marketing_roi_daily ORDER BY d, city"
                              % self.bi)
        got = {(x["d"], x["city"]): x for x in rows}
        m = got[("2025-11-03", "Москва")]
        self.assertEqual((Decimal(m["r"]), int(m["tickets_sold"]), int(m["clicks"]), Decimal(m["s"])),
                         (Decimal("6622.03"), 6, 14, Decimal("1600.50")))
        self.assertAlmostEqual(m["roas"], 6622.03 / 1600.50, places=3)
        self.assertAlmostEqual(m["cpt"], 266.75, places=2)
        s = got[("2025-11-03", "Санкт-Петербург")]
        self.assertEqual((Decimal(s["r"]), Decimal(s["s"])), (Decimal("0"), Decimal("99.99")))

        # bi.v_vk_ads_daily: spend in roubles (not /100), per canonical city
        rows = zhtest.ch_rows("SELECT toString(d) AS d, city, impressions, toString(spend) AS s FROM %s.v_vk_ads_daily "
                              "WHERE d = '2025-11-03' ORDER BY city" % self.bi)
        self.assertEqual([(x["city"], int(x["impressions"]), Decimal(x["s"])) for x in rows],
                         [("Москва", 1000, Decimal("1000.50")), ("Санкт-Петербург", 300, Decimal("99.99"))])

        # freshness: both ad sources report their latest day
        rows = {x["source"]: x for x in self.q("SELECT source, toString(latest_date) AS l, total_rows FROM v_data_freshness")}
        self.assertEqual((rows["vk_ads"]["l"], int(rows["vk_ads"]["total_rows"])), ("2025-11-04", 4))
        self.assertEqual((rows["direct"]["l"], int(rows["direct"]["total_rows"])), ("2025-11-03", 1))


if __name__ == "__main__":
    unittest.main()
