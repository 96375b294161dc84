"""End-to-end: scripts/plan_sales.lua loads a sales plan CSV into plan_sales (and v_plan_vs_fact)."""
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402


class TestPlanSales(zhtest.ZhostCase):
    def write(self, name, text, encoding="utf-8"):
        p = os.path.join(self.tmp, name)
        with open(p, "wb") as f:
            f.write(text.encode(encoding))
        return p

    def plan(self):
        return {(r["d"], r["city"], r["event_id"]): (int(r["plan_tickets"]), Decimal(r["rv"])) for r in self.q(
            "SELECT toString(sales_date) AS d, city, event_id, argMax(plan_tickets, _ver) AS plan_tickets, "
            "toString(argMax(plan_revenue, _ver)) AS rv FROM plan_sales GROUP BY d, city, event_id")}

    def test_english_and_russian_headers(self):
        p = self.write("plan.csv", "sales_date,city,event_id,plan_tickets,plan_revenue\n"
                                   "2025-11-01,Москва,24089,50,25000\n2025-11-02,Томск,24117,7,3499.93\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        # a CP1251 ';' file with Russian headers, day-first dates and decimal commas corrects one line
        p2 = self.write("plan_ru.csv", "Дата;Город;ИД события;План билетов;План выручки\r\n"
                                       "01.11.2025;Москва;24089;60;30 000,50\r\n", "cp1251")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p2)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.plan(), {("2025-11-01", "Москва", "24089"): (60, Decimal("30000.50")),
                                       ("2025-11-02", "Томск", "24117"): (7, Decimal("3499.93"))})
        v = self.q("SELECT plan_tickets, toString(plan_revenue) AS rv, fact_tickets FROM v_plan_vs_fact "
                   "WHERE sales_date = '2025-11-02' AND event_id = '24117'")
        self.assertEqual(len(v), 1)
        self.assertEqual(int(v[0]["plan_tickets"]), 7)
        self.assertEqual(Decimal(v[0]["rv"]), Decimal("3499.93"))
        self.assertEqual(int(v[0]["fact_tickets"]), 0)
        self.assertEqual([x["status"] for x in self.runs("plan_sales")], ["success", "success"])

    def test_bad_row_names_the_line_and_writes_nothing(self):
        p = self.write("bad.csv", "sales_date;city;event_id;plan_tickets;plan_revenue\n"
                                  "2025-11-01;Москва;1;5;500\n\n2025-11-02;Москва;1;пять;500\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.csv line 4: bad plan_tickets 'пять'", r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM plan_sales"), "0")
        self.assertIn("line 4", self.runs("plan_sales")[0]["message"])
        p = self.write("bad2.csv", "sales_date,city,event_id,plan_tickets,plan_revenue\n31.02.2025,Москва,1,5,500\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertIn("line 2: bad sales_date '31.02.2025'", r.stderr)
        p = self.write("bad3.csv", "date,city,tickets\n2025-11-01,Москва,5\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertIn("line 1: missing column(s) event_id, plan_revenue", r.stderr)
        r = self.zhost("run", "scripts/plan_sales.lua")
        self.assertIn("usage: zhost run scripts/plan_sales.lua --csv FILE", r.stderr)


if __name__ == "__main__":
    unittest.main()
