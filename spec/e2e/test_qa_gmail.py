"""QA: scripts/gmail.lua against hand-made report mails (fake Gmail + ClickHouse)."""
import base64
import json
import os
import sys
import time
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
import zhtest  # noqa: E402
from test_gmail import GmailCase  # noqa: E402


def mail(mid, filename, content, mime="application/octet-stream", ts=1762495322000, inline=False, nest=False):
    att = {"mimeType": mime, "filename": filename, "content_b64": base64.b64encode(content).decode(),
           "inline": inline}
    if nest:
        att = {"mimeType": "message/rfc822", "message": {
            "headers": {"From": "a@b", "Subject": "Fwd", "Date": "Fri, 07 Nov 2025 09:00:00 +0300"},
            "payload": {"mimeType": "multipart/mixed", "parts": [{"mimeType": "text/plain", "text": "fwd"}, att]}}}
    return {"id": mid, "threadId": mid, "labelIds": ["INBOX"], "internalDate": str(ts), "snippet": "report",
            "headers": {"From": "reports@qtickets.ru", "To": "sales@example.com", "Subject": "Report",
                        "Date": "Fri, 07 Nov 2025 09:00:00 +0300", "Message-ID": "<%s@x>" % mid},
            "payload": {"mimeType": "multipart/mixed", "parts": [{"mimeType": "text/plain", "text": "see"}, att]}}


class QaGmail(GmailCase):
    def serve(self, messages):
        data = dict(self.data)
        data["gmail"] = {"email": "sales@example.com", "messages": messages}
        self.api.control("/_fake/data", data)
        self.write_google(refresh="1//fake-refresh-token")

    def rows(self):
        return {(r["d"], r["city"], r["event_name"]): (int(r["t"]), Decimal(r["rv"]))
                for r in self.q("SELECT toString(event_date) AS d, city, event_name, sum(tickets_sold) AS t, "
                                "toString(sum(revenue)) AS rv FROM v_qtickets_gmail_latest GROUP BY d, city, event_name")}

    def test_encoded_names_separators_and_nesting(self):
        utf8 = "=?UTF-8?B?" + base64.b64encode("Отчёт продаж.csv".encode()).decode() + "?="
        q_cp = "=?windows-1251?Q?=CE=F2=F7=B8=F2.csv?="
        self.serve([
            mail("1000000000000001", utf8,
                 "\ufeffDate,City,Event,Tickets,Revenue\r\n2025-11-05,Москва,\"Шоу, часть 1\",3,1500.50\r\n\r\n".encode()),
            mail("1000000000000002", q_cp, "Дата;Город;Событие;Билетов;Выручка\r\n05.11.2025;Омск;A;2;1 234,50\r\n"
                 .encode("cp1251")),
            mail("1000000000000003", "en.csv", b'Date,City,Event,Tickets,Revenue\n2025-11-06,Testburg,B,4,"1,234.50"\n',
                 mime="text/csv", nest=True),
            mail("1000000000000004", "hdr.csv", b"Date,City,Tickets,Revenue\r\n", mime="text/csv", inline=True),
            mail("1000000000000005", "other.csv", b"Foo,Bar\n1,2\n", mime="text/csv"),
        ])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {
            ("2025-11-05", "Москва", "Шоу, часть 1"): (3, Decimal("1500.50")),
            ("2025-11-05", "Омск", "A"): (2, Decimal("1234.50")),
            ("2025-11-06", "Testburg", "B"): (4, Decimal("1234.50")),
        }, r.stdout + r.stderr)
        # The CSVs that were no report are named in the run's message, not only in a warning: a report
        # whose header zhost does not know would otherwise pass for a message without one.
        self.assertTrue(self.runs("gmail_ingest")[-1]["message"].endswith(
            "2 without a report; 1 CSV attachment(s) not read as a sales report: other.csv (1000000000000005: "
            "no date column in header: Foo, Bar)"), self.runs("gmail_ingest")[-1]["message"])

    def test_utf16_exports_load(self):
        # Excel's "Unicode Text" save: UTF-16LE with a BOM, tab-separated, CRLF, numbers as shown (NBSP
        # thousands), a field with a tab quoted. UTF-16 passed for UTF-8, so the report was read as
        # garbage and named "not a sales report"; the run succeeded with nothing loaded.
        tsv = ("Дата продажи\tГород\tМероприятие\tПродано билетов\tСумма, руб.\tВозвраты\r\n"
               "05.11.2025 19:00\tМосква\t\"Щелкунчик\t(балет)\"\t1\u00a0205\t1\u00a0472\u00a0546,15\t0,00\r\n"
               "06.11.2025 12:30\tКазань\tШоу\t3\t2\u00a0970,00\t148,50\r\n")
        self.serve([
            mail("1000000000000001", "Продажи.csv", b"\xff\xfe" + tsv.encode("utf-16-le")),
            mail("1000000000000002", "be.csv", b"\xfe\xff" + tsv.replace("Москва", "Омск").encode("utf-16-be"),
                 mime="text/csv"),
        ])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {
            ("2025-11-05", "Москва", "Щелкунчик\t(балет)"): (1205, Decimal("1472546.15")),
            ("2025-11-05", "Омск", "Щелкунчик\t(балет)"): (1205, Decimal("1472546.15")),
            ("2025-11-06", "Казань", "Шоу"): (3, Decimal("2970.00")),  # in both: the later message's line
        }, r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT toString(sum(refunds)) FROM stg_qtickets_sales_raw"), "297.00")
        m = self.metrics()
        self.assertEqual((m["messages_loaded"], m["attachments_ignored"]), (2, 0))

    def test_unicode_text_txt_and_tsv_attachments_are_read(self):
        # Excel names its "Unicode Text" save .txt (UTF-16LE, tabs), and a TSV is a CSV with tabs: both
        # were "attachments zhost cannot read" and loaded nothing. A .txt that is no report stays one.
        tsv = "Дата\tГород\tСобытие\tБилетов\tВыручка\r\n05.11.2025\tМосква\tA\t2\t1\u00a0234,50\r\n"
        notes = mail("1000000000000003", "notes.txt", "Добрый день, отчёт будет завтра.\r\n".encode(),
                     mime="text/plain")
        notes["headers"]["Subject"] = "Заметки"
        beside = mail("1000000000000004", "b.csv", b"Date,City,Tickets,Revenue\n2025-11-07,Testville,1,10\n")
        beside["payload"]["parts"].append({"mimeType": "text/plain", "filename": "ATT00001.txt",
                                           "content_b64": base64.b64encode(b"--\r\nSent from Outlook\r\n").decode(),
                                           "inline": False})
        self.serve([
            mail("1000000000000001", "Продажи ноябрь.txt", b"\xff\xfe" + tsv.encode("utf-16-le"), mime="text/plain"),
            mail("1000000000000002", "sales.tsv", tsv.replace("Москва", "Омск").encode(),
                 mime="text/tab-separated-values"),
            notes, beside,
        ])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Москва", "A"): (2, Decimal("1234.50")),
                                       ("2025-11-05", "Омск", "A"): (2, Decimal("1234.50")),
                                       ("2025-11-07", "Testville", ""): (1, Decimal("10.00"))}, r.stdout + r.stderr)
        # the text file that is no report is named as before, not as a CSV that is no sales report
        msg = self.runs("gmail_ingest")[-1]["message"]
        self.assertTrue(msg.endswith("1 without a report; 1 message(s) had only attachments zhost cannot read "
                                     "(.txt): «Заметки» (1000000000000003: notes.txt)"), msg)
        m = self.metrics()
        self.assertEqual((m["messages_loaded"], m["attachments"], m["attachments_ignored"],
                          m["unreadable_attachments"]), (3, 3, 0, 1))

    def test_refund_lines_count_negative_in_accounting_forms(self):
        # Refund lines of a sales export are negative amounts. Excel's accounting format writes them in
        # parentheses, "(2 000,00)", and its zero as a dash: such a line was refused and the whole message
        # stayed unloaded (the run failed); "−1,500" (U+2212) loaded as -1.50 where "-1,500" is -1500.00.
        csv = ("Дата;Город;Событие;Билетов;Сумма, руб.;Возвраты, руб.\r\n"
               "05.11.2025;Омск;A;5;5\u00a0000,00;-\r\n"
               "05.11.2025;Омск;A;(2);(2\u00a0000,00);2\u00a0000,00\r\n"
               "05.11.2025;Омск;B;3;1,500;-\r\n"
               "05.11.2025;Омск;B;-1;\u22121,500;1 500,00\r\n"
               "06.11.2025;Омск;A;-1;1\u00a0000,00-;1\u00a0000,00\r\n")
        bad = mail("1000000000000002", "b.csv", "Дата;Город;Билетов;Сумма\r\n06.11.2025;Уфа;1;(-100)\r\n".encode("cp1251"))
        self.serve([mail("1000000000000001", "a.csv", ("\ufeff" + csv).encode()), bad])  # Excel's "CSV UTF-8"
        r = self.gmail()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(self.rows(), {("2025-11-05", "Омск", "A"): (3, Decimal("3000.00")),
                                       ("2025-11-05", "Омск", "B"): (2, Decimal("0.00")),
                                       ("2025-11-06", "Омск", "A"): (-1, Decimal("-1000.00"))}, r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT toString(sum(refunds)) FROM stg_qtickets_sales_raw"), "4500.00")
        # a second sign is no form any program writes: that message is refused, as before
        self.assertIn("message 1000000000000002: b.csv row 1: bad revenue '(-100)'", r.stderr)

    def test_russian_excel_export_with_title_wrapped_cells_and_refunds(self):
        # What a Russian-locale Excel writes for "CSV (разделители — точки с запятой)": CP1251, a "sep=;"
        # line, a title, header cells with a line break (Alt+Enter; Excel quotes them), an event name
        # with one, trailing empty columns, NBSP thousands, dates with a time, an accounting-format
        # refund line and zero, a totals line. The header below the title was not found ("not a sales
        # report"); once found, "Щелкунчик.<LF>Вечерний показ" was a key apart from the same event's
        # refund line and both counted.
        cp = ("sep=;\r\n"
              "Отчёт о продажах за 01.11.2024 - 02.11.2024;;;;;;;\r\n"
              'Дата продажи;Город;Мероприятие;"Продано\nбилетов";"Сумма,\nруб.";Возвраты;;\r\n'
              '01.11.2024 19:00;Москва;"Щелкунчик.\nВечерний показ";2;3\u00a0000,00 р.;-;;\r\n'
              "01.11.2024 19:30;Москва;Щелкунчик. Вечерний показ;(1);(1\u00a0500,00 р.);1\u00a0500,00 р.;;\r\n"
              '02.11.2024 12:00;Казань;"Концерт ""Весна""";1\u00a0205;1\u00a0472\u00a0546,15 р.;-;;\r\n'
              "Итого;;;1\u00a0206;1\u00a0474\u00a0046,15 р.;1\u00a0500,00 р.;;\r\n"
              ";;;;;;;\r\n").encode("cp1251")
        # Excel's "CSV UTF-8" from a locale that groups with a narrow no-break space (U+202F)
        u8 = ("\ufeffДата;Город;Событие;Билетов;Сумма\r\n"
              "02.11.2024 18:00;Омск;Шоу;3;2\u202f970,50\u202f₽\r\n").encode()
        # Dates formatted "ДД.ММ.ГГ" ("05.11.25"), cells formatted in rubles whose ₽ the CP1251 save
        # wrote as "?" (a currency column too), and a writer that quotes nothing beside a wrapped cell:
        # each line was refused (bad date, bad revenue) or, with the stray quote, split in two.
        lost = ("Дата;Город;Мероприятие;Билетов;Сумма;Валюта\r\n"
                '05.11.25;Тула;"Щелкунчик". Балет;2;3\u00a0000,00 ?;?\r\n'
                '05.11.25 19:00;Тула;"Ночь\r\nмузеев";1;? 500,00;?\r\n'
                "06.11.25;Тула;Ночь музеев;(1);(500,00 ?);?\r\n").encode("cp1251")
        self.serve([mail("1000000000000001", "Продажи.csv", cp, mime="application/vnd.ms-excel"),
                    mail("1000000000000002", "sales.csv", u8, mime="text/csv"),
                    mail("1000000000000003", "Тула.csv", lost, mime="application/vnd.ms-excel")])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {
            ("2024-11-01", "Москва", "Щелкунчик. Вечерний показ"): (1, Decimal("1500.00")),
            ("2024-11-02", "Казань", 'Концерт "Весна"'): (1205, Decimal("1472546.15")),
            ("2024-11-02", "Омск", "Шоу"): (3, Decimal("2970.50")),
            ("2025-11-05", "Тула", '"Щелкунчик". Балет'): (2, Decimal("3000.00")),
            ("2025-11-05", "Тула", "Ночь музеев"): (1, Decimal("500.00")),
            ("2025-11-06", "Тула", "Ночь музеев"): (-1, Decimal("-500.00")),
        }, r.stdout + r.stderr)
        self.assertEqual(self.scalar("SELECT toString(sum(refunds)) FROM stg_qtickets_sales_raw"), "1500.00")
        self.assertEqual(self.scalar("SELECT arrayStringConcat(groupUniqArray(currency), ',') "
                                     "FROM stg_qtickets_sales_raw"), "RUB")
        m = self.metrics()
        self.assertEqual((m["messages_loaded"], m["report_rows"], m["rows_skipped"], m["attachments_ignored"],
                          m["currency_signs_lost"]), (3, 6, 2, 0, 6))
        msg = self.runs("gmail_ingest")[-1]["message"]
        self.assertTrue(msg.endswith("; 1 message(s) had '?' for the ruble sign (a CP1251 export cannot write ₽), "
                                     "read as rubles: 1000000000000003 (6)"), msg)

    def test_unreadable_line_keeps_the_message_for_the_next_run(self):
        good = mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n")
        bad = mail("1000000000000002", "b.csv",
                   "Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n2025-11-06,Omsk,1,10 $\n".encode())
        self.serve([good, bad])
        r = self.gmail()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("message 1000000000000002", r.stderr)
        self.assertIn("bad revenue", r.stderr)
        # The good message is loaded, nothing of the bad one (not even its readable line).
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00"))})
        # Once the report is fixed, the next run loads it: it was not marked loaded.
        fixed = mail("1000000000000002", "b.csv",
                     b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n2025-11-06,Omsk,1,10\n")
        self.serve([good, fixed])
        r = self.gmail()
        self.assert_ok(r)
        got = self.rows()
        self.assertEqual(got[("2025-11-06", "Testville", "")], (2, Decimal("20.00")))
        self.assertEqual(len(got), 3, got)

    def test_429_rate_limit_is_retried(self):
        self.serve([mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n")])
        # Fault paths are matched with the query string: messages.get has ?format=full, list has ?q=...
        self.api.faults([{"path": "/messages/1000000000000001\\?", "api_error": 429, "times": 2,
                          "headers": {"Retry-After": "1"}},
                         {"path": "/messages\\?", "api_error": "rateLimitExceeded", "status": 403, "times": 1}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00"))})
        self.assertEqual([f["fired"] for f in self.api.control("/_fake/faults")["rules"]], [2, 1])

    def test_403_rate_limit_reasons_are_retried_other_403s_are_not(self):
        # Gmail sends per-user rate limits as 403 with reason rateLimitExceeded / userRateLimitExceeded
        # (domain usageLimits): retryable with backoff, unlike a 403 domainPolicy.
        self.serve([mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n")])
        self.api.faults([{"path": "/messages\\?", "api_error": "rateLimitExceeded", "times": 1},
                         {"path": "/messages/1000000000000001\\?", "api_error": "userRateLimitExceeded", "times": 2}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00"))})
        self.assertEqual([f["fired"] for f in self.api.control("/_fake/faults")["rules"]], [1, 2])
        self.api.control("/_fake/faults", method="DELETE")
        self.api.faults([{"path": "/messages\\?", "api_error": "domainPolicy", "times": -1}])
        r = self.gmail()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("messages.list: HTTP 403", r.stderr)
        self.assertEqual([f["fired"] for f in self.api.control("/_fake/faults")["rules"]], [1])

    def test_message_gone_between_list_and_get_is_skipped(self):
        # A message deleted (or moved to Trash) after messages.list answers 404 to messages.get: the
        # other messages still load and the run succeeds, counting it.
        self.serve([mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n"),
                    mail("1000000000000002", "b.csv", b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n")])
        self.api.faults([{"path": "/messages/1000000000000001\\?", "api_error": 404, "times": -1}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-06", "Testville", ""): (2, Decimal("20.00"))})
        self.assertIn("1000000000000001", r.stderr)
        self.assertEqual(self.metrics()["messages_gone"], 1)

    def test_message_gone_between_get_and_its_attachment_is_skipped(self):
        # Deleted after messages.get but before attachments.get: the attachment answers 404. Like a
        # 404 on the message, it is skipped (nothing of it loaded, counted) and the run succeeds.
        self.serve([mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n"),
                    mail("1000000000000002", "b.csv", b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n")])
        self.api.faults([{"path": "/messages/1000000000000001/attachments/", "api_error": 404, "times": -1}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual([f["fired"] for f in self.api.control("/_fake/faults")["rules"]], [1])
        self.assertEqual(self.rows(), {("2025-11-06", "Testville", ""): (2, Decimal("20.00"))})
        self.assertEqual(self.metrics()["messages_gone"], 1)

    def test_the_same_report_attached_twice_counts_once(self):
        # "Forward as attachment" plus the file attached again: the message carries the report twice.
        # Its lines share their keys and are summed within a message, so the copy would double the day.
        csv = "Дата;Город;Событие;Билетов;Выручка\r\n05.11.2025;Омск;A;2;1 234,50\r\n".encode()
        m = mail("1000000000000001", "report.csv", csv, nest=True)
        m["payload"]["parts"].append({"mimeType": "text/csv", "filename": "report.csv",
                                      "content_b64": base64.b64encode(csv).decode(), "inline": False})
        other = "Дата;Город;Событие;Билетов;Выручка\r\n05.11.2025;Омск;A;1;100\r\n".encode()
        m["payload"]["parts"].append({"mimeType": "text/csv", "filename": "more.csv",
                                      "content_b64": base64.b64encode(other).decode(), "inline": False})
        self.serve([m])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Омск", "A"): (3, Decimal("1334.50"))}, r.stdout + r.stderr)
        self.assertEqual(self.metrics()["attachments_duplicate"], 1)

    def test_reports_zhost_cannot_read_are_named_and_fail_the_run(self):
        # An .xlsx report loads nothing; counted only as "without a report" it was a silent gap in the
        # days it covers. A spreadsheet fails the run (the failed_run alert), a PDF is only named.
        good = mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n")
        xlsx = mail("1000000000000002", "Продажи ноябрь.xlsx", b"PK\x03\x04fake-xlsx",
                    mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        xlsx["headers"]["Subject"] = "Продажи за ноябрь"
        xls = mail("1000000000000003", "old.xls", b"\xd0\xcf\x11\xe0fake-xls", nest=True)
        xls["headers"]["Subject"] = "Fwd: отчёт"
        pdf = mail("1000000000000004", "act.pdf", b"%PDF-1.4\n", mime="application/pdf")
        pdf["headers"]["Subject"] = "Акт сверки"
        # a CSV report with the same figures as .xlsx beside it: loaded, nothing to report
        both = mail("1000000000000005", "b.csv", b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n")
        both["payload"]["parts"].append({"mimeType": "application/vnd.ms-excel", "filename": "b.xlsx",
                                         "content_b64": base64.b64encode(b"PK\x03\x04").decode(), "inline": False})
        self.serve([good, xlsx, xls, pdf, both])
        r = self.gmail()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("2 message(s) had only a spreadsheet zhost cannot read (.xls, .xlsx), so nothing was loaded", last)
        self.assertIn("«Продажи за ноябрь» (1000000000000002: Продажи ноябрь.xlsx), «Fwd: отчёт» "
                      "(1000000000000003: old.xls)", last)
        self.assertIn("1 message(s) had only attachments zhost cannot read (.pdf): «Акт сверки» "
                      "(1000000000000004: act.pdf)", last)
        # one warning per message, none for the message whose CSV loaded
        warns = [x for x in r.stderr.splitlines() if " WARN " in x and ("zhost cannot read" in x or
                                                                        "zhost does not read" in x)]
        self.assertEqual(len(warns), 3, "\n".join(warns))
        self.assertEqual(sorted(w for w in ("1000000000000002", "1000000000000003", "1000000000000004")
                                if any(w in x for x in warns)), ["1000000000000002", "1000000000000003",
                                                                 "1000000000000004"])
        # the readable reports are in; the run is an error naming them
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00")),
                                       ("2025-11-06", "Testville", ""): (2, Decimal("20.00"))})
        runs = self.runs("gmail_ingest")
        self.assertEqual([x["status"] for x in runs], ["error"])
        self.assertIn("Продажи за ноябрь", runs[0]["message"])
        m = self.metrics()
        self.assertEqual((m["messages_report_unreadable"], m["unreadable_attachments"], m["unreadable_types"],
                          m["messages_without_report"], m["messages_loaded"]), (2, 3, ".pdf .xls .xlsx", 1, 2))
        # not marked loaded: once the sender mails a CSV and the .xlsx messages are archived, a run succeeds
        self.serve([good, pdf, both])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.runs("gmail_ingest")[-1]["status"], "success")
        m = self.metrics()
        self.assertEqual((m["messages_report_unreadable"], m["unreadable_attachments"]), (0, 1))
        self.assertIn("1 message(s) had only attachments zhost cannot read (.pdf): «Акт сверки»",
                      self.runs("gmail_ingest")[-1]["message"])

    def test_days_widens_the_default_window(self):
        # Recovery after an outage is `zhost run scripts/gmail.lua --days N`. The query used to be the
        # default "newer_than:7d" plus " newer_than:30d": Gmail ANDs the terms, so only 7 days loaded.
        now_ms = int(time.time() * 1000)
        self.serve([mail("1000000000000001", "old.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n",
                         ts=now_ms - 20 * 86400 * 1000),
                    mail("1000000000000002", "new.csv", b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n",
                         ts=now_ms - 2 * 86400 * 1000)])
        self.write_secret("gmail", {"GMAIL_BASE_URL": self.api.url + "/gmail"})  # no GMAIL_QUERY: newer_than:7d
        r = self.gmail("--days", "30", "--dry-run")
        self.assert_ok(r)
        self.assertIn("stg_qtickets_sales_raw: 2 rows", r.stdout)
        # a newer_than: of GMAIL_QUERY is replaced as well, its other terms stay
        self.write_secret("gmail", {"GMAIL_BASE_URL": self.api.url + "/gmail",
                                    "GMAIL_QUERY": "in:inbox newer_than:7d has:attachment"})
        self.api.control("/_fake/requests", method="DELETE")
        r = self.gmail("--days", "30")
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00")),
                                       ("2025-11-06", "Testville", ""): (2, Decimal("20.00"))})
        lists = [q["raw_path"] for q in self.api.requests()["requests"] if q["path"].endswith("/messages")]
        self.assertIn("q=in%3Ainbox%20has%3Aattachment%20newer_than%3A30d", lists[0])
        # without --days the default window stays 7 days
        self.write_secret("gmail", {"GMAIL_BASE_URL": self.api.url + "/gmail"})
        r = self.gmail("--reload", "--dry-run")
        self.assert_ok(r)
        self.assertIn("stg_qtickets_sales_raw: 1 rows", r.stdout)

    def test_html_report_inside_a_layout_table(self):
        # The usual HTML mail: the report table sits in a cell of an outer layout table, the date cell
        # spans the lines of its day and the totals line spans three columns. It used to be read as one
        # table whose header was "Отчёт о продажах Дата": "no report", the run a success.
        html = ('<html><body><table width="100%"><tr><td align="center"><p>Отчёт о продажах</p>'
                '<table border="1"><tr><th>Дата</th><th>Город</th><th>Мероприятие</th><th>Продано билетов</th>'
                '<th>Сумма, руб.</th></tr>'
                '<tr><td rowspan="2">05.11.2025</td><td>Москва</td><td>Шоу А</td><td>3</td><td>1&nbsp;500,00</td></tr>'
                '<tr><td>Казань</td><td>Шоу Б</td><td>2</td><td>900,00</td></tr>'
                '<tr><td colspan="3">Итого</td><td>5</td><td>2&nbsp;400,00</td></tr></table>'
                '</td></tr></table></body></html>')
        m = mail("1000000000000001", "x.csv", b"")
        m["payload"] = {"mimeType": "multipart/alternative", "parts": [
            {"mimeType": "text/plain", "text": "Отчёт о продажах"}, {"mimeType": "text/html", "text": html}]}
        self.serve([m])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Москва", "Шоу А"): (3, Decimal("1500.00")),
                                       ("2025-11-05", "Казань", "Шоу Б"): (2, Decimal("900.00"))}, r.stderr)
        self.assertEqual(self.metrics()["messages_loaded"], 1)

    def test_an_id_on_two_list_pages_is_loaded_once(self):
        # messages.list pages move when mail arrives while paging: page 2 can repeat an id of page 1.
        a = mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n", ts=1762495322000)
        b = mail("1000000000000002", "b.csv", b"Date,City,Tickets,Revenue\n2025-11-06,Testville,2,20\n", ts=1762495321000)
        self.serve([a, b])
        self.api.control("/_fake/config", {"gmail.max_results_cap": 1})
        page2 = json.dumps({"messages": [{"id": a["id"], "threadId": a["id"]}, {"id": b["id"], "threadId": b["id"]}],
                            "resultSizeEstimate": 2})
        self.api.faults([{"path": "/messages\\?.*pageToken=", "status": 200, "body": page2,
                          "headers": {"Content-Type": "application/json; charset=UTF-8"}, "times": -1}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00")),
                                       ("2025-11-06", "Testville", ""): (2, Decimal("20.00"))})
        m = self.metrics()
        self.assertEqual((m["messages"], m["messages_loaded"], m["list_pages"]), (2, 2, 2))
        gets = [q["path"] for q in self.api.requests()["requests"] if q["path"].endswith("/messages/" + a["id"])]
        self.assertEqual(len(gets), 1, gets)
        self.assertEqual(self.scalar("SELECT count() FROM stg_qtickets_sales_raw"), "2")

    def test_empty_data_beside_an_attachment_id_is_fetched(self):
        # MessagePartBody.data "may be empty ... when the body data is sent as a separate attachment":
        # a part with "data": "" and an attachmentId was read as an empty file and the report lost.
        mid, aid = "1000000000000001", "ANGjdJ8emptydata"
        self.serve([mail(mid, "a.csv", b"x")])
        csv = "Дата;Город;Билетов;Выручка\r\n05.11.2025;Омск;2;1 234,50\r\n".encode()
        full = {"id": mid, "threadId": mid, "labelIds": ["INBOX"], "internalDate": "1762495322000",
                "payload": {"partId": "", "mimeType": "multipart/mixed", "filename": "", "headers": [],
                            "body": {"size": 0}, "parts": [
                                {"partId": "0", "mimeType": "text/plain", "filename": "", "headers": [],
                                 "body": {"size": 3, "data": "aGkh"}},
                                {"partId": "1", "mimeType": "text/csv", "filename": "sales.csv", "headers": [],
                                 "body": {"attachmentId": aid, "size": len(csv), "data": ""}}]}}
        att = {"attachmentId": aid, "size": len(csv), "data": base64.urlsafe_b64encode(csv).decode()}
        g = "/gmail/v1/users/me/messages/" + mid
        self.api.faults([{"path": g + "\\?", "status": 200, "times": -1, "body": json.dumps(full)},
                         {"path": g + "/attachments/" + aid, "status": 200, "times": -1, "body": json.dumps(att)}])
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Омск", ""): (2, Decimal("1234.50"))}, r.stderr)

    def test_reload_replaces_the_rows_of_a_message_read_differently(self):
        # --reload writes a message's rows at the same _ver (its internalDate). After an upgrade that reads
        # the report differently the old and new rows tied in the views' argMax, and the old ones stayed.
        v1 = mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n")
        v2 = mail("1000000000000001", "a.csv", b"Date,City,Tickets,Revenue\n2025-11-05,Testville,3,30\n")
        self.serve([v1])
        self.assert_ok(self.gmail())
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00"))})
        self.serve([v2])
        self.assert_ok(self.gmail())
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00"))}, "skipped: loaded")
        for _ in range(3):
            self.assert_ok(self.gmail("--reload"))
            self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (3, Decimal("30.00"))})
        self.assertEqual(self.scalar("SELECT count() FROM stg_qtickets_sales_raw"), "1")

    def test_base64url_with_padding(self):
        # gmail.md: data is base64url, "padding may be absent" — and may be there. Lengths 1 and 2 mod 3
        # give "==" and "=", inline (body.data) and fetched (attachments.get).
        a = b"Date,City,Tickets,Revenue\n2025-11-05,Testville,1,10\n"
        b = "Дата;Город;Билетов;Выручка\r\n06.11.2025;Омск;2;20,50\r\n".encode("cp1251")
        self.assertEqual(sorted((len(a) % 3, len(b) % 3)), [1, 2])
        self.serve([mail("1000000000000001", "a.csv", a, inline=True), mail("1000000000000002", "b.csv", b)])
        self.api.control("/_fake/config", {"gmail.b64_padding": True})
        r = self.gmail()
        self.assert_ok(r)
        self.assertEqual(self.rows(), {("2025-11-05", "Testville", ""): (1, Decimal("10.00")),
                                       ("2025-11-06", "Омск", ""): (2, Decimal("20.50"))})

if __name__ == "__main__":
    unittest.main()
