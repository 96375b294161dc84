"""QA: scripts/plan_sales.lua with spreadsheet-exported plan files (ClickHouse)."""
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
import test_plan_sales  # noqa: E402


class QaPlanSales(zhtest.ZhostCase):
    write = test_plan_sales.TestPlanSales.write
    plan = test_plan_sales.TestPlanSales.plan

    def test_excel_blank_rows_and_grouped_amounts(self):
        # Excel writes emptied rows as bare separators; they are not plan lines
        p = self.write("plan.csv", "sales_date;city;event_id;plan_tickets;plan_revenue\r\n"
                                   "2025-11-01;Москва;1;5;500\r\n;;;;\r\n ; ; ; ; \r\n", "cp1251")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        p = self.write("plan_en.csv", 'sales_date,city,event_id,plan_tickets,plan_revenue\n'
                                      '2025-11-02,Томск,2,"1,200","1,500.50"\n,,,,\n')
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.plan(), {("2025-11-01", "Москва", "1"): (5, Decimal("500.00")),
                                       ("2025-11-02", "Томск", "2"): (1200, Decimal("1500.50"))})
        # a half-filled row is still an error naming its line
        p = self.write("bad.csv", "sales_date;city;event_id;plan_tickets;plan_revenue\n"
                                  "2025-11-01;Москва;1;5;500\n;Москва;;;\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.csv line 3: bad sales_date ''", r.stderr)

    def test_header_only_file_loads_nothing(self):
        p = self.write("empty.csv", "sales_date,city,event_id,plan_tickets,plan_revenue\r\n")
        r = self.zhost("run", "scripts/plan_sales.lua", "--csv", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.scalar("SELECT count() FROM plan_sales"), "0")


if __name__ == "__main__":
    unittest.main()
